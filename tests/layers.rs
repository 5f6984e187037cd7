//! The module layers of `src/` (docs/ARCHITECTURE.md "Module layers"), checked from the source:
//! every top-level module belongs to a layer, no module depends on a module of a higher layer,
//! and the graph of top-level modules has no cycle. Test code (`tests.rs` files and
//! `#[cfg(test)] mod … { … }` blocks) is left out.
//!
//! Run it alone with `cargo test --test layers`; it prints the graph it checked.

#[cfg(test)]
mod checks {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The layers, lowest first: a module may depend on its own layer and the ones below.
    const LAYERS: [(&str, &[&str]); 3] = [
        ("storage and pure", &["ids", "domain", "config", "db", "telemetry", "metrics"]),
        (
            "services",
            &[
                "replication",
                "catalog",
                "llm",
                "mcp",
                "agent",
                "runner",
                "orgs",
                "auth",
                "bootstrap",
                "queue",
                "worker",
                "turns",
                "fleet",
                "admin",
            ],
        ),
        ("transport", &["app", "http", "server", "cli"]),
    ];

    /// Modules that depend on nothing else in the crate, or only on these.
    const LEAVES: [(&str, &[&str]); 2] = [("ids", &[]), ("domain", &["ids"])];

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|(_, modules)| modules.contains(&module))
    }

    /// The top-level modules `text` refers to through `crate::…` paths and `use crate::{…}` groups.
    fn references(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // Only the names at the group's first level are top-level modules.
                let (mut depth, mut name) = (0, String::new());
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => name.clear(),
                        c if depth == 0 && (c.is_alphanumeric() || c == '_') => name.push(c),
                        ':' if depth == 0 && !name.is_empty() => {
                            out.insert(std::mem::take(&mut name));
                        }
                        _ => {}
                    }
                }
                if !name.is_empty() {
                    out.insert(name);
                }
            } else {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
        out
    }

    /// `text` without its `#[cfg(test)] mod … { … }` blocks (code after one is still read).
    fn without_tests(text: &str) -> String {
        let (mut out, mut rest) = (String::new(), text);
        while let Some(at) = rest.find("#[cfg(test)]\nmod ") {
            out.push_str(&rest[..at]);
            let after = &rest[at..];
            let open = after.find('{');
            let semi = after.find(';');
            // `mod tests;` (a file of its own) has no block: skip just the declaration.
            if let Some(semi) = semi.filter(|s| open.is_none_or(|o| *s < o)) {
                rest = &after[semi + 1..];
                continue;
            }
            let Some(open) = open else { return out };
            let (mut depth, mut end) = (0usize, after.len());
            for (i, c) in after[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = open + i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &after[end..];
        }
        out.push_str(rest);
        out
    }

    /// Every `.rs` file under `dir`, with its path relative to `src/`.
    fn sources(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(base).expect("under src/").to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&path).expect("read a source file")));
            }
        }
    }

    /// The graph of top-level modules: module → the modules it refers to.
    fn graph() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (rel, text) in files {
            let module = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_owned();
            if ["lib", "main"].contains(&module.as_str()) || rel.ends_with("/tests.rs") {
                continue;
            }
            let code = without_tests(&text);
            let refs: Vec<String> = references(&code).into_iter().filter(|r| *r != module).collect();
            graph.entry(module).or_default().extend(refs);
        }
        graph
    }

    /// Only the transport speaks HTTP: no module below it names axum (the services return
    /// their own errors, which `http/error.rs` maps).
    #[test]
    fn only_the_transport_names_axum() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &src, &mut files);
        let transport = LAYERS[2].1;
        let wrong: Vec<String> = files
            .iter()
            .filter(|(rel, _)| {
                let module = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs");
                !transport.contains(&module) && !["lib", "main"].contains(&module)
            })
            .filter(|(_, text)| without_tests(text).contains("axum"))
            .map(|(rel, _)| rel.clone())
            .collect();
        assert!(wrong.is_empty(), "below the transport, these name axum: {wrong:?}");
    }

    #[test]
    fn every_module_has_a_layer_and_depends_only_downwards() {
        let graph = graph();
        for (module, deps) in &graph {
            eprintln!("{module} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", "));
        }
        let mut wrong = Vec::new();
        for (module, deps) in &graph {
            let Some(own) = layer_of(module) else {
                wrong.push(format!("`{module}` is in no layer: add it to LAYERS (and docs/ARCHITECTURE.md)"));
                continue;
            };
            for dep in deps {
                match layer_of(dep) {
                    Some(layer) if layer > own => wrong.push(format!(
                        "`{module}` ({}) depends on `{dep}` ({}), a higher layer",
                        LAYERS[own].0, LAYERS[layer].0
                    )),
                    Some(_) => {}
                    None => wrong.push(format!("`{module}` depends on `{dep}`, which is in no layer")),
                }
            }
        }
        for (leaf, allowed) in LEAVES {
            for dep in graph.get(leaf).into_iter().flatten() {
                if !allowed.contains(&dep.as_str()) {
                    wrong.push(format!("`{leaf}` may depend only on {allowed:?}, not on `{dep}`"));
                }
            }
        }
        assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));
    }

    #[test]
    fn the_module_graph_has_no_cycle() {
        let graph = graph();
        // Depth-first search; a module met again while still on the path closes a cycle.
        fn visit<'a>(
            module: &'a str,
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|m| *m == module) {
                let mut cycle: Vec<String> = path[at..].iter().map(|m| (*m).to_owned()).collect();
                cycle.push(module.to_owned());
                return Some(cycle);
            }
            if !done.insert(module) {
                return None;
            }
            path.push(module);
            for dep in graph.get(module).into_iter().flatten() {
                if let Some(cycle) = visit(dep, graph, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
                panic!("module cycle: {}", cycle.join(" -> "));
            }
        }
    }

    #[test]
    fn test_modules_are_skipped_but_code_after_them_is_read() {
        let text = "use crate::db::Db;\n#[cfg(test)]\nmod tests {\n    use crate::orgs::x;\n    fn f() { {} }\n}\n\
                    use crate::queue::Q;\n#[cfg(test)]\nmod more;\nfn g() { crate::llm::h(); }\n";
        let refs: Vec<String> = references(&without_tests(text)).into_iter().collect();
        assert_eq!(refs, ["db", "llm", "queue"]);
    }

    #[test]
    fn the_reference_parser_reads_paths_and_groups() {
        let refs = references(
            "use crate::db::{Db, now_ms};\nuse crate::{agent::x, ids::{A, B}, queue};\nx = crate::llm::f();",
        );
        let names: Vec<&str> = refs.iter().map(String::as_str).collect();
        assert_eq!(names, ["agent", "db", "ids", "llm", "queue"]);
    }
}
