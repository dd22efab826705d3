//! ARCHITECTURE.md's crate graph is the Cargo graph: the table under "Dependencies
//! point one way" lists, for every crate of the workspace, exactly the `maildr-*`
//! crates its Cargo.toml depends on (`[dependencies]`, not dev or build ones). A
//! crate added, removed or given a new arrow without the map changing fails here,
//! naming the difference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The heading of the section that holds the table.
const SECTION: &str = "## Dependencies point one way";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root exists")
}

/// `maildr-*` normal dependencies of every crate under `crates/`, read from its manifest.
fn cargo_graph(root: &Path) -> Graph {
    let mut graph = Graph::new();
    let crates = std::fs::read_dir(root.join("crates")).expect("crates/ is readable");
    for entry in crates {
        let manifest_path = entry.expect("a directory entry").path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest_path) else { continue };
        let manifest: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", manifest_path.display()));
        let name = manifest["package"]["name"].as_str().expect("every crate has a package name").to_string();
        let deps = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| d.keys().filter(|k| k.starts_with("maildr-")).cloned().collect())
            .unwrap_or_default();
        graph.insert(name, deps);
    }
    graph
}

/// The table rows of [`SECTION`]: `| `maildr-x` | `maildr-y`, `maildr-z` |` (or `—`).
fn documented_graph(architecture: &str) -> Graph {
    let section =
        architecture.split_once(SECTION).unwrap_or_else(|| panic!("ARCHITECTURE.md has no section {SECTION:?}")).1;
    let section = section.split("\n## ").next().expect("split yields at least one part");
    let mut graph = Graph::new();
    for line in section.lines().filter(|l| l.starts_with("| `maildr")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [name, deps, ..] = cells.as_slice() else { panic!("a table row needs two cells: {line}") };
        let deps = deps.split(',').map(|d| d.trim().trim_matches('`')).filter(|d| d.starts_with("maildr-"));
        let previous = graph.insert(name.trim_matches('`').to_string(), deps.map(str::to_string).collect());
        assert!(previous.is_none(), "ARCHITECTURE.md lists {name} twice");
    }
    assert!(!graph.is_empty(), "ARCHITECTURE.md's {SECTION:?} has no table of crates");
    graph
}

/// Every way the two graphs differ, in words.
fn differences(documented: &Graph, cargo: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    for (name, deps) in cargo {
        let Some(listed) = documented.get(name) else {
            found.push(format!("{name} is a crate (Cargo.toml) but ARCHITECTURE.md does not list it"));
            continue;
        };
        for missing in deps.difference(listed) {
            found.push(format!("{name} depends on {missing} in its Cargo.toml, ARCHITECTURE.md does not say so"));
        }
        for extra in listed.difference(deps) {
            found.push(format!("ARCHITECTURE.md says {name} depends on {extra}, its Cargo.toml does not"));
        }
    }
    for name in documented.keys().filter(|n| !cargo.contains_key(*n)) {
        found.push(format!("ARCHITECTURE.md lists {name}, which is not a crate of the workspace"));
    }
    found
}

#[test]
fn the_crate_graph_in_architecture_md_is_the_cargo_graph() {
    let root = workspace_root();
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md is readable");
    let found = differences(&documented_graph(&architecture), &cargo_graph(&root));
    assert!(found.is_empty(), "ARCHITECTURE.md and Cargo.toml disagree:\n  {}", found.join("\n  "));
}

#[test]
fn a_difference_is_named_in_both_directions() {
    let graph = |rows: &[(&str, &[&str])]| -> Graph {
        rows.iter().map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect())).collect()
    };
    let documented = graph(&[("maildr-a", &["maildr-b"]), ("maildr-gone", &[])]);
    let cargo = graph(&[("maildr-a", &["maildr-c"]), ("maildr-new", &[])]);
    let found = differences(&documented, &cargo);
    assert_eq!(
        found,
        vec![
            "maildr-a depends on maildr-c in its Cargo.toml, ARCHITECTURE.md does not say so",
            "ARCHITECTURE.md says maildr-a depends on maildr-b, its Cargo.toml does not",
            "maildr-new is a crate (Cargo.toml) but ARCHITECTURE.md does not list it",
            "ARCHITECTURE.md lists maildr-gone, which is not a crate of the workspace",
        ]
    );
}

#[test]
fn the_table_is_read_from_its_section_only() {
    let text = "# A\n| `maildr-x` | `maildr-y` |\n## Dependencies point one way\n\n| crate | depends on |\n|---|---|\n\
                | `maildr-a` | `maildr-b`, `maildr-c` |\n| `maildr-b` | — |\n## Next\n| `maildr-z` | — |\n";
    let graph = documented_graph(text);
    assert_eq!(graph.keys().collect::<Vec<_>>(), ["maildr-a", "maildr-b"]);
    assert_eq!(graph["maildr-a"].iter().collect::<Vec<_>>(), ["maildr-b", "maildr-c"]);
    assert!(graph["maildr-b"].is_empty());
}
