//! ARCHITECTURE.md's crate edges are the workspace's: a crate that gains or loses a
//! dependency on another qgate crate must say so there, and the edges never form a cycle.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `crate → qgate crates it depends on`, from each `crates/*/Cargo.toml` `[dependencies]`.
fn cargo_edges() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let toml: toml::Table = toml::from_str(&text).unwrap();
        let name = toml["package"]["name"].as_str().unwrap().to_string();
        let deps = toml
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|t| {
                t.keys()
                    .filter(|k| k.starts_with("qgate"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        edges.insert(name, deps);
    }
    edges
}

/// The ```` ```text edges ```` block of ARCHITECTURE.md.
fn documented_edges() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let block = text
        .split("```text edges\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has a ```text edges block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, deps) = l.split_once(':').unwrap();
            (
                name.trim().to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect()
}

#[test]
fn architecture_md_lists_every_crate_edge() {
    let actual = cargo_edges();
    let documented = documented_edges();
    assert!(actual.len() >= 10, "{actual:?}");
    for (name, deps) in &actual {
        let doc = documented
            .get(name)
            .unwrap_or_else(|| panic!("ARCHITECTURE.md's edges lack crate {name}"));
        let added: Vec<_> = deps.difference(doc).collect();
        let removed: Vec<_> = doc.difference(deps).collect();
        assert!(
            added.is_empty() && removed.is_empty(),
            "{name}: Cargo.toml adds {added:?} and drops {removed:?} against ARCHITECTURE.md"
        );
    }
    let extra: Vec<_> = documented
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    assert!(
        extra.is_empty(),
        "ARCHITECTURE.md lists crates that do not exist: {extra:?}"
    );
}

#[test]
fn crate_edges_form_no_cycle() {
    let edges = cargo_edges();
    // Depth-first search with colours: grey on the stack, black done.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        grey: &mut Vec<String>,
        black: &mut BTreeSet<String>,
    ) {
        if black.contains(n) {
            return;
        }
        assert!(
            !grey.iter().any(|g| g == n),
            "cycle: {} → {n}",
            grey.join(" → ")
        );
        grey.push(n.to_string());
        for d in edges.get(n).into_iter().flatten() {
            visit(d, edges, grey, black);
        }
        grey.pop();
        black.insert(n.to_string());
    }
    let mut black = BTreeSet::new();
    for n in edges.keys() {
        visit(n, &edges, &mut Vec::new(), &mut black);
    }
}

/// Packages reachable from `from` in Cargo.lock (every kind of dependency: the lock file
/// does not tell dev-dependencies apart, which makes this check stricter, not weaker).
fn reachable(lock: &toml::Table, from: &str) -> BTreeSet<String> {
    let packages = lock["package"].as_array().unwrap();
    let deps_of = |name: &str| -> Vec<String> {
        packages
            .iter()
            .filter(|p| p["name"].as_str() == Some(name))
            .flat_map(|p| {
                p.get("dependencies")
                    .and_then(|d| d.as_array())
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|d| d.as_str().unwrap().split(' ').next().unwrap().to_string())
            .collect()
    };
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(n) = todo.pop() {
        for d in deps_of(&n) {
            if seen.insert(d.clone()) {
                todo.push(d);
            }
        }
    }
    seen
}

#[test]
fn only_the_gateway_and_the_binary_reach_tokio() {
    let lock: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.lock")).unwrap()).unwrap();
    let edges = cargo_edges();
    for name in edges.keys() {
        let has = reachable(&lock, name).contains("tokio");
        let allowed = name == "qgate-serve" || name == "qgate";
        assert!(
            allowed || !has,
            "{name} depends on tokio (only qgate-serve may)"
        );
    }
    assert!(reachable(&lock, "qgate-serve").contains("tokio"));
    // The binary reaches it only through qgate-serve.
    let manifest = std::fs::read_to_string(root().join("crates/qgate/Cargo.toml")).unwrap();
    assert!(!manifest.contains("tokio") && !manifest.contains("axum"));
}
