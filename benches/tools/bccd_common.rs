//! What the BCCD tools (`bccd_eval`, `bccd_scale`) share: their command
//! line's data folder, split and photo ids. Included by `#[path]`, as the
//! examples are separate crates.

use std::path::PathBuf;

use argus::backend::{cpu::CpuBackend, Backend, Batch, BatchOutput, TileMaps};
use argus::imaging::smear::Tiles;

/// Every tile of `tiles` through the three cell UNets, 8 at a time, in order.
pub fn run_unets(unets: &mut CpuBackend, tiles: &Tiles) -> anyhow::Result<Vec<TileMaps>> {
    let mut maps = Vec::with_capacity(tiles.count);
    for chunk in tiles.data.chunks(8 * tiles.tile(0).len()) {
        let count = chunk.len() / tiles.tile(0).len();
        match unets.run(Batch::CellTiles {
            data: chunk.to_vec(),
            count,
        })? {
            BatchOutput::CellTiles(m) => maps.extend(m),
            _ => anyhow::bail!("unexpected output"),
        }
    }
    Ok(maps)
}

/// The value after `name` on the command line.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--data` (default `../shared/data/bccd`), `--split` (default
/// `default_split`) and that split's photo ids, at most `--limit` of them;
/// with `--id`, that photo alone.
pub fn photos(
    args: &[String],
    default_split: &str,
) -> anyhow::Result<(PathBuf, String, Vec<String>)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let data = PathBuf::from(arg(args, "--data").unwrap_or(format!("{root}/../shared/data/bccd")));
    let split = arg(args, "--split").unwrap_or(default_split.into());
    let limit: usize = arg(args, "--limit")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(usize::MAX);
    let only = arg(args, "--id");
    let ids = std::fs::read_to_string(data.join(format!("{split}.txt")))?
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && only
                    .as_deref()
                    .is_none_or(|o| o.split(',').any(|x| x == *l))
        })
        .map(String::from)
        .take(limit)
        .collect();
    Ok((data, split, ids))
}
