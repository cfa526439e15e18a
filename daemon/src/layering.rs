//! The dependency rules of `daemon/src`, checked on the sources (a test
//! only): three tiers, the inference stack (knows no family and no HTTP),
//! the platform (knows no family) and the families (each knows the two
//! tiers below and no other family); no import cycle among the top-level
//! modules, each family counting as a module of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The inference stack; of the platform it may use only `metrics`.
const INFERENCE: &[&str] = &["frame", "batch", "backend", "gpu", "model", "imaging"];
/// The platform shared by every family.
const PLATFORM: &[&str] = &[
    "app", "http", "auth", "store", "config", "metrics", "jobs", "webhooks", "events", "outbound",
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

/// The nodes `text` names through `crate::` paths (`crate::a::b`,
/// `crate::{a, b::c}`); names of the crate root's own items are skipped.
fn references(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |path: &str| {
        let mut segs = path.split("::").map(str::trim);
        let Some(first) = segs.next() else { return };
        if first == "families" {
            match segs.next() {
                Some(f) if modules.contains(&format!("families/{f}")) => {
                    out.insert(format!("families/{f}"));
                }
                _ => {
                    out.insert("families".to_string());
                }
            }
        } else if modules.contains(first) {
            out.insert(first.to_string());
        }
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                add(item.trim().trim_start_matches('{'));
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            add(&rest[..end]);
        }
    }
    out
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
        let refs = references(&text, &nodes);
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
    for tier in [INFERENCE, PLATFORM] {
        for m in tier {
            assert!(
                g.contains_key(*m),
                "{m} is listed in a tier but is not a module"
            );
        }
    }
}

/// The checker itself finds a cycle, a family-to-family import and a
/// platform-to-family import when the sources have them.
#[test]
fn the_checks_catch_what_they_are_for() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let nodes: BTreeSet<String> = ["http", "batch", "families/faces", "families/pbs"]
        .map(String::from)
        .into();
    let r = references(
        "use crate::{batch::Batcher, families::pbs::Clinic};\nfn f() { crate::http::x(); }",
        &nodes,
    );
    assert_eq!(
        r,
        ["batch", "families/pbs", "http"].map(String::from).into()
    );
    g.insert("families/faces".into(), r);
    g.insert("http".into(), ["families/faces".to_string()].into());
    assert!(cycle_from(&g, "http").is_some());
    assert!(forbidden("families/faces", "families/pbs").is_some());
    assert!(forbidden("http", "families/faces").is_some());
    assert!(forbidden("batch", "http").is_some());
    assert!(forbidden("families/faces", "batch").is_none());
}
