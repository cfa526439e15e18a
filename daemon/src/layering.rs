//! The dependency rules of `daemon/src`, checked on the sources (a test
//! only): three tiers, the inference stack (knows no family and no HTTP),
//! the platform (knows no family) and the families (each knows the two
//! tiers below and no other family); no import cycle among the top-level
//! modules, each family counting as a module of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The inference stack; of the platform it may use only `metrics`.
const INFERENCE: &[&str] = &[
    "frame", "batch", "backend", "gpu", "model", "imaging", "detect",
];
/// The platform shared by every family.
const PLATFORM: &[&str] = &[
    "app", "audit", "http", "auth", "store", "config", "metrics", "jobs", "webhooks", "events",
    "outbound", "offline",
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .expect("daemon/src is readable")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The node a file belongs to: its top-level module, or `families/<name>`.
fn node_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" || one == "layering" => None,
        [one] => Some(one.clone()),
        [fam, name, ..] if fam == "families" && parts.len() > 2 => Some(format!("families/{name}")),
        [fam, _] if fam == "families" => Some("families".into()),
        [top, ..] => Some(top.clone()),
        [] => None,
    }
}

/// The module path of `file` under `src`: `a/b.rs` is `[a, b]`,
/// `a/mod.rs` is `[a]`, `lib.rs` is `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if matches!(
        segs.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segs.pop();
    }
    segs
}

/// Every absolute path `text` names through `crate::`, `super::` or
/// `self::` (use trees with nested groups included), resolved from the
/// module `here`. Line comments are skipped.
fn paths(text: &str, here: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .any(|k| b[i..].starts_with(k.as_bytes()));
        if starts && (i == 0 || !is_ident(b[i - 1])) {
            i = tree(&code, i, Vec::new(), here, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Parse one use tree at `i` under `prefix`; returns where it ended.
fn tree(
    code: &str,
    mut i: usize,
    mut prefix: Vec<String>,
    here: &[String],
    out: &mut Vec<Vec<String>>,
) -> usize {
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i < b.len() && b[i] == b'{' {
            i += 1;
            loop {
                i = skip_ws(i);
                if i >= b.len() || b[i] == b'}' {
                    return (i + 1).min(b.len());
                }
                if b[i] == b',' {
                    i += 1;
                    continue;
                }
                let before = i;
                i = tree(code, i, prefix.clone(), here, out);
                if i == before {
                    i += 1;
                }
            }
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        if start == i {
            if !prefix.is_empty() {
                out.push(prefix);
            }
            return i;
        }
        let seg = &code[start..i];
        match seg {
            "crate" if prefix.is_empty() => {}
            "self" if prefix.is_empty() => prefix = here.to_vec(),
            "super"
                if prefix.is_empty() || prefix.len() < here.len() && here.starts_with(&prefix) =>
            {
                if prefix.is_empty() {
                    prefix = here.to_vec();
                }
                prefix.pop();
            }
            "self" => {}
            _ => prefix.push(seg.to_string()),
        }
        if b[i..].starts_with(b"::") {
            i += 2;
        } else {
            out.push(prefix);
            return i;
        }
    }
}

/// The node an absolute path lands in, if it is a module of the graph.
fn node_of_path(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let first = path.first()?;
    if first == "families" {
        return match path.get(1) {
            Some(f) if modules.contains(&format!("families/{f}")) => Some(format!("families/{f}")),
            _ => Some("families".into()),
        };
    }
    modules.contains(first).then(|| first.clone())
}

/// The nodes `text` (in module `here`) names.
fn references(text: &str, here: &[String], modules: &BTreeSet<String>) -> BTreeSet<String> {
    paths(text, here)
        .iter()
        .filter_map(|p| node_of_path(p, modules))
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let nodes: BTreeSet<String> = files.iter().filter_map(|f| node_of(&src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(node) = node_of(&src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).expect("source is readable");
        let refs = references(&text, &module_path(&src, f), &nodes);
        g.entry(node.clone())
            .or_default()
            .extend(refs.into_iter().filter(|r| *r != node));
    }
    g
}

/// A cycle through `start`, if any, as the path of nodes.
fn cycle_from(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(g, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

/// Which nodes `node` may not import, and why.
fn forbidden(node: &str, dep: &str) -> Option<&'static str> {
    let is_family = |n: &str| n.starts_with("families/");
    let in_inference = INFERENCE.contains(&node);
    let in_platform = PLATFORM.contains(&node);
    if in_inference && !(INFERENCE.contains(&dep) || dep == "metrics") {
        return Some("the inference stack knows no family, no HTTP and no platform but metrics");
    }
    if in_platform && (is_family(dep) || dep == "families" || dep == "cli" || dep == "train") {
        return Some("the platform knows no family");
    }
    if is_family(node) && is_family(dep) {
        return Some("a family never uses another family");
    }
    if is_family(node) && (dep == "cli" || dep == "train") {
        return Some("a family does not reach up into the command line");
    }
    None
}

#[test]
fn no_import_cycle_among_top_level_modules() {
    let g = graph();
    for node in g.keys() {
        if let Some(c) = cycle_from(&g, node) {
            panic!("import cycle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn imports_point_down_the_tiers() {
    let g = graph();
    let mut bad = Vec::new();
    for (node, deps) in &g {
        for dep in deps {
            if let Some(why) = forbidden(node, dep) {
                bad.push(format!("{node} -> {dep}: {why}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
    // The reader sees real edges (a reader that finds none passes the rest).
    for (from, to) in [
        ("families/faces", "batch"),
        ("families/pbs", "jobs"),
        ("http", "app"),
    ] {
        assert!(
            g[from].contains(to),
            "{from} -> {to} not seen: {:?}",
            g[from]
        );
    }
    for tier in [INFERENCE, PLATFORM] {
        for m in tier {
            assert!(
                g.contains_key(*m),
                "{m} is listed in a tier but is not a module"
            );
        }
    }
}

/// The checker itself finds a cycle, a family-to-family import (however it
/// is written) and a platform-to-family import when the sources have them.
#[test]
fn the_checks_catch_what_they_are_for() {
    let nodes: BTreeSet<String> = [
        "http",
        "batch",
        "store",
        "families",
        "families/faces",
        "families/pbs",
    ]
    .map(String::from)
    .into();
    let faces: Vec<String> = vec!["families".into(), "faces".into(), "api".into()];
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        references(
            "use crate::{batch::Batcher, store::{a, b}, families::pbs::Clinic};\nfn f() { crate::http::x(); }",
            &faces,
            &nodes
        ),
        set(&["batch", "store", "families/pbs", "http"])
    );
    assert_eq!(
        references(
            "use crate::families::{faces::X, pbs::{Y, Z}};",
            &faces,
            &nodes
        ),
        set(&["families/faces", "families/pbs"])
    );
    assert_eq!(
        references(
            "use super::super::pbs::Clinic; use super::Faces;",
            &faces,
            &nodes
        ),
        set(&["families/pbs", "families/faces"])
    );
    assert_eq!(
        references(
            "// crate::http::x in a comment\nlet s = self::y;",
            &faces,
            &nodes
        ),
        set(&["families/faces"])
    );
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("families/faces".into(), set(&["families/pbs", "http"]));
    g.insert("http".into(), set(&["families/faces"]));
    assert!(cycle_from(&g, "http").is_some());
    assert!(forbidden("families/faces", "families/pbs").is_some());
    assert!(forbidden("http", "families/faces").is_some());
    assert!(forbidden("batch", "http").is_some());
    assert!(forbidden("families/faces", "batch").is_none());
}
