//! The layout's rules, checked on the sources (see docs/architecture.md):
//!
//! - no import cycle between the top-level modules of any crate;
//! - every Redis command lives in the distributed crate's `broker` module;
//! - `routine-core` depends on no broker, object store or command-line crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const CRATES: [&str; 5] = [
    "routine-core",
    "routine-distributed",
    "routine-cli",
    "routine-macros",
    "routine-ui",
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The code of a file without its comments, so that a doc link such as
/// ``[`crate::entry`]`` is not taken for an import.
fn code_of(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each top-level module of a crate (`src/x.rs` with `src/x/`) and its code.
fn modules(krate: &str) -> BTreeMap<String, String> {
    let src = workspace().join(krate).join("src");
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let name = Path::new(first.as_os_str())
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if name == "lib" {
            continue;
        }
        let code = modules.entry(name).or_default();
        code.push_str(&code_of(&file));
        code.push('\n');
    }
    modules
}

/// `crate::<module>` references of `code` to modules other than `own`.
fn uses<'a>(code: &str, own: &str, modules: &'a BTreeMap<String, String>) -> BTreeSet<&'a str> {
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `routine_core::x` is another crate's path, not this one's.
            !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        })
        .filter_map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            modules
                .get_key_value(&rest[..end])
                .map(|(name, _)| name.as_str())
        })
        .filter(|name| *name != own)
        .collect()
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<&str, BTreeSet<&str>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| *n == node).unwrap();
                let mut cycle: Vec<String> = path[start..].iter().map(|n| n.to_string()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node, Mark::Open);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn no_crate_has_a_cycle_between_its_top_level_modules() {
    for krate in CRATES {
        let modules = modules(krate);
        assert!(modules.len() > 2, "{krate}: no modules found");
        let graph: BTreeMap<&str, BTreeSet<&str>> = modules
            .iter()
            .map(|(name, code)| (name.as_str(), uses(code, name, &modules)))
            .collect();
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "{krate}: the modules {} import each other in a cycle",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<&str, BTreeSet<&str>> = [
        ("a", BTreeSet::from(["b"])),
        ("b", BTreeSet::from(["c"])),
        ("c", BTreeSet::from(["a"])),
        ("d", BTreeSet::new()),
    ]
    .into_iter()
    .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let acyclic: BTreeMap<&str, BTreeSet<&str>> =
        [("a", BTreeSet::from(["b"])), ("b", BTreeSet::new())]
            .into_iter()
            .collect();
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn redis_is_spoken_only_by_the_broker() {
    for krate in CRATES {
        for (module, code) in modules(krate) {
            let speaks_redis = code.contains("redis::");
            let is_broker = krate == "routine-distributed" && module == "broker";
            assert!(
                !speaks_redis || is_broker,
                "{krate}'s `{module}` module uses the redis crate; Redis commands belong in the broker"
            );
        }
    }
}

#[test]
fn the_core_depends_on_no_broker_object_store_or_command_line() {
    let manifest = fs::read_to_string(workspace().join("routine-core/Cargo.toml")).unwrap();
    let dependencies: Vec<&str> = manifest
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name.trim()))
        .collect();
    for forbidden in [
        "redis",
        "object_store",
        "clap",
        "indicatif",
        "toml",
        "axum",
        "maud",
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry-otlp",
        "tracing-opentelemetry",
    ] {
        assert!(
            !dependencies.contains(&forbidden),
            "routine-core depends on {forbidden}"
        );
    }
}
