//! What every offline command (`detect`, `mask`, `pbs count`, `pbs
//! classify`, `skin analyze`) does with the files it is given: directories
//! expanded into the image files under them, output names that never
//! collide, and a progress bar when a person watches a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// One file to work on, and its path relative to the argument it came from:
/// a file given by name is just its file name; a directory `photos/` given
/// and `photos/a/b.jpg` found under it is `a/b.jpg`.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub path: PathBuf,
    pub rel: PathBuf,
}

/// Extensions (lower case) of the files taken from directories; a file
/// named on the command line is taken whatever its name.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "png", "webp", "gif", "bmp", "tif", "tiff",
];

/// The command line's paths as files: directories searched recursively for
/// files with an [`IMAGE_EXTENSIONS`] extension (hidden entries skipped,
/// in path order). Errors name the argument: one that does not exist, a
/// directory that cannot be read or holds no image file, or no argument.
pub fn expand(args: &[PathBuf]) -> Result<Vec<Input>, String> {
    if args.is_empty() {
        return Err("give at least one image file or directory".into());
    }
    let mut out = Vec::new();
    for arg in args {
        let meta = std::fs::metadata(arg).map_err(|e| format!("{}: {e}", arg.display()))?;
        if !meta.is_dir() {
            let name = arg.file_name().map(PathBuf::from).unwrap_or_default();
            out.push(Input {
                path: arg.clone(),
                rel: name,
            });
            continue;
        }
        let before = out.len();
        let walk = walkdir::WalkDir::new(arg)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walk {
            let entry = entry.map_err(|e| format!("{}: {e}", arg.display()))?;
            if entry.file_type().is_dir() || !is_image_name(entry.path()) {
                continue;
            }
            let rel = entry.path().strip_prefix(arg).unwrap_or(entry.path());
            out.push(Input {
                path: entry.path().to_path_buf(),
                rel: rel.to_path_buf(),
            });
        }
        if out.len() == before {
            return Err(format!(
                "{}: no image files in this directory (looked for .{})",
                arg.display(),
                IMAGE_EXTENSIONS.join(", .")
            ));
        }
    }
    Ok(out)
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Where each input's output goes under `out`: `{rel without extension}
/// {suffix}.{ext}` (`a/b.jpg`, `.masked`, `png`: `a/b.masked.png`). No two
/// outputs of one run share a path: inputs that would (`a.jpg` and `a.png`)
/// keep their own extension in the name (`a.jpg.masked.png`,
/// `a.png.masked.png`), and a clash left after that (the same name from two
/// directories) gets `-2`, `-3`, ... before the suffix.
pub fn output_paths(inputs: &[Input], out: &Path, suffix: &str, ext: &str) -> Vec<PathBuf> {
    output_stems(inputs, out)
        .into_iter()
        .map(|stem| {
            let mut name = stem.into_os_string();
            name.push(format!("{suffix}.{ext}"));
            PathBuf::from(name)
        })
        .collect()
}

/// The paths of [`output_paths`] before the suffix and extension, for a
/// command that writes several files per input (`skin analyze --out`:
/// `STEM.aligned.jpg`, `STEM.masks.svg`, ...).
pub fn output_stems(inputs: &[Input], out: &Path) -> Vec<PathBuf> {
    let plain = |i: &Input| i.rel.with_extension("");
    let mut uses: HashMap<PathBuf, usize> = HashMap::new();
    for i in inputs {
        *uses.entry(plain(i)).or_default() += 1;
    }
    let mut taken: HashMap<PathBuf, usize> = HashMap::new();
    inputs
        .iter()
        .map(|i| {
            let base = if uses[&plain(i)] > 1 {
                i.rel.clone()
            } else {
                plain(i)
            };
            let n = taken.entry(base.clone()).or_default();
            *n += 1;
            let mut name = base.file_name().unwrap_or_default().to_os_string();
            if *n > 1 {
                name.push(format!("-{n}"));
            }
            out.join(base.with_file_name(name))
        })
        .collect()
}

/// A progress bar on stderr with `len` steps of `unit`s, shown only when
/// stderr is a terminal (a pipe or a log file gets the per-file lines
/// alone). Print other lines through [`indicatif::ProgressBar::suspend`].
pub fn progress(len: u64, unit: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{bar:30}} {{pos}}/{{len}} {unit} [{{elapsed_precise}}, {{eta}} left] {{msg}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(rel: &str) -> Input {
        Input {
            path: PathBuf::from("/in").join(rel),
            rel: PathBuf::from(rel),
        }
    }

    #[test]
    fn outputs_never_share_a_path() {
        let ins = [
            input("a.jpg"),
            input("a.png"),
            input("b.jpg"),
            input("sub/a.jpg"),
            input("b.jpg"),
        ];
        let outs = output_paths(&ins, Path::new("/out"), ".masked", "png");
        let names: Vec<String> = outs.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "/out/a.jpg.masked.png",
                "/out/a.png.masked.png",
                "/out/b.jpg.masked.png",
                "/out/sub/a.masked.png",
                "/out/b.jpg-2.masked.png",
            ]
        );
    }

    #[test]
    fn directories_are_searched_for_images_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("x/y")).unwrap();
        std::fs::create_dir_all(d.join(".hidden")).unwrap();
        for f in [
            "b.JPG",
            "x/a.png",
            "x/y/c.webp",
            "notes.txt",
            ".hidden/d.jpg",
        ] {
            std::fs::write(d.join(f), b"").unwrap();
        }
        let got = expand(&[d.to_path_buf()]).unwrap();
        let rels: Vec<_> = got.iter().map(|i| i.rel.display().to_string()).collect();
        assert_eq!(rels, ["b.JPG", "x/a.png", "x/y/c.webp"]);
        let empty = tempfile::tempdir().unwrap();
        let err = expand(&[empty.path().to_path_buf()]).unwrap_err();
        assert!(err.contains("no image files"), "{err}");
        let err = expand(&[d.join("missing.jpg")]).unwrap_err();
        assert!(err.contains("missing.jpg"), "{err}");
        assert!(expand(&[]).is_err());
    }
}
