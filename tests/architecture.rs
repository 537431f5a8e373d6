//! The layers of the service, bottom to top, and the rule that keeps them readable: a module
//! may import (`crate::…`) only from its own layer or a lower one.
//!
//! 0. domain: value types (`src/domain/`);
//! 1. Redis access and plumbing: connections, key schema, scripts (`src/store/`), settings
//!    (`src/config.rs`), metrics counters (`src/metrics.rs`);
//! 2. capabilities: cities, drivers, search, ranking, lock, dispatch, auth, rate limits,
//!    events, webhooks;
//! 3. HTTP: handlers' plumbing, errors, extractors, middleware, OpenAPI (`src/http/`);
//! 4. the app: wiring, `serve`, seed loading (`src/app/`), `src/lib.rs`, `src/main.rs`.
//!
//! A new file belongs to the lowest layer whose imports it needs. Imports that still point up
//! are listed in [`KNOWN_UPWARD`]: the list may only shrink (an entry that no longer occurs
//! fails the test, so it is removed when its import is).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const LAYERS: [&str; 5] = ["domain", "redis access", "capabilities", "http", "app"];

/// The layer of a top-level module of the crate.
fn layer_of_module(module: &str) -> Option<usize> {
    Some(match module {
        "domain" => 0,
        "store" | "config" | "metrics" => 1,
        "cities" | "drivers" | "search" | "ranking" | "lock" | "dispatch" | "auth"
        | "ratelimit" | "events" | "webhooks" => 2,
        "http" => 3,
        "app" => 4,
        _ => return None,
    })
}

/// The top-level module a source file belongs to (`src/drivers/routes.rs` → `drivers`).
fn module_of_file(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).expect("under src");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

/// Upward imports not yet removed: (importing module, imported module). Capability modules
/// still hold their own HTTP handlers and answer with the HTTP error type.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<module>` a file names outside comments.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let prefix_ok = at == 0
                || !rest[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if prefix_ok && !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

fn upward_imports() -> BTreeSet<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = BTreeSet::new();
    for file in files {
        let module = module_of_file(&root, &file);
        if module == "lib" || module == "main" {
            continue; // the crate root and the binary sit above every layer
        }
        let Some(own) = layer_of_module(&module) else {
            panic!(
                "{}: module `{module}` is in no layer; add it to layer_of_module in tests/architecture.rs",
                file.display()
            );
        };
        let text = std::fs::read_to_string(&file).expect("readable source");
        for imported in imported_modules(&text) {
            let Some(theirs) = layer_of_module(&imported) else {
                continue;
            };
            if theirs > own {
                found.insert((module.clone(), imported));
            }
        }
    }
    found
}

#[test]
fn imports_point_down_the_layers() {
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let found = upward_imports();
    let new: Vec<String> = found
        .difference(&known)
        .map(|(from, to)| {
            format!(
                "`{from}` ({}) imports `{to}` ({})",
                LAYERS[layer_of_module(from).unwrap()],
                LAYERS[layer_of_module(to).unwrap()]
            )
        })
        .collect();
    assert!(
        new.is_empty(),
        "imports that point up the layers: {new:?}; move the code to the layer it needs"
    );
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "these upward imports are gone: remove them from KNOWN_UPWARD: {gone:?}"
    );
}

#[test]
fn the_domain_imports_nothing_from_the_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        let imported = imported_modules(&text);
        assert!(
            imported.is_empty(),
            "{} imports {imported:?}",
            file.display()
        );
    }
}

#[test]
fn the_import_scanner_sees_paths_and_skips_comments() {
    let text = "use crate::store::Keys;\n// crate::http::error\nlet x = crate::domain::GeoPoint { };\nlet y = notcrate::http;\n";
    let found: Vec<String> = imported_modules(text).into_iter().collect();
    assert_eq!(found, ["domain", "store"]);
}
