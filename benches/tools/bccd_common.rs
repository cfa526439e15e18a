//! What the BCCD tools (`bccd_eval`, `bccd_scale`) share: their command
//! line's data folder, split and photo ids. Included by `#[path]`, as the
//! examples are separate crates.

use std::path::PathBuf;

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
        .filter(|l| !l.is_empty() && only.as_deref().is_none_or(|o| *l == o))
        .map(String::from)
        .take(limit)
        .collect();
    Ok((data, split, ids))
}
