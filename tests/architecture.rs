//! The import rules of ARCHITECTURE.md ("Who imports whom"), checked on the source: the
//! ledger and the terminal never import each other, the pure cores import no adapter.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/<dir>`.
fn sources(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)];
    while let Some(d) = stack.pop() {
        if d.is_file() {
            out.push(d);
            continue;
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() || p.extension().is_some_and(|x| x == "rs") {
                stack.push(p);
            }
        }
    }
    assert!(!out.is_empty(), "no sources under src/{dir}");
    out
}

/// The code of a file without its comments (a doc comment may name any module).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each file under `src/<dir>` that names one of `paths`, with the path it names.
fn offenders(dir: &str, paths: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in sources(dir) {
        let text = code(&file);
        for p in paths {
            if text.contains(p) {
                found.push(format!("{} uses {p}", file.display()));
            }
        }
    }
    found
}

#[test]
fn the_ledger_and_the_terminal_never_import_each_other() {
    let ledger = offenders(
        "ledger",
        &["crate::terminal", "crate::tui", "crate::reader"],
    );
    assert!(ledger.is_empty(), "{ledger:#?}");
    for dir in ["terminal", "tui"] {
        let found = offenders(dir, &["crate::ledger"]);
        assert!(found.is_empty(), "{found:#?}");
    }
}

#[test]
fn protocol_and_domain_depend_on_nothing_but_domain() {
    let adapters = [
        "crate::ledger",
        "crate::terminal",
        "crate::tui",
        "crate::reader",
        "crate::cli",
        "crate::demo",
    ];
    for dir in ["protocol", "domain"] {
        let found = offenders(dir, &adapters);
        assert!(found.is_empty(), "{found:#?}");
    }
    let found = offenders("domain", &["crate::protocol"]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_pure_cores_import_no_adapter() {
    let terminal_adapters = [
        "crate::terminal::journal",
        "crate::terminal::tap",
        "crate::terminal::client",
        "crate::terminal::sync",
        "crate::terminal::session",
        "crate::terminal::daemon",
        "crate::terminal::export",
        "super::super::",
        "rusqlite",
        "reqwest",
        "tokio",
    ];
    let found = offenders("terminal/core", &terminal_adapters);
    assert!(found.is_empty(), "{found:#?}");
    let found = offenders(
        "ledger/rules.rs",
        &[
            "crate::ledger::store",
            "crate::ledger::api",
            "rusqlite",
            "axum",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn only_the_api_speaks_http_and_the_flow_never_touches_a_backend() {
    let http = ["axum", "hyper", "http::", "StatusCode"];
    for dir in [
        "ledger/store",
        "ledger/flow",
        "ledger/outcome.rs",
        "ledger/rules.rs",
    ] {
        let found = offenders(dir, &http);
        assert!(found.is_empty(), "{found:#?}");
    }
    for dir in ["ledger/flow", "ledger/outcome.rs"] {
        let found = offenders(
            dir,
            &["crate::ledger::store", "crate::ledger::api", "rusqlite"],
        );
        assert!(found.is_empty(), "{found:#?}");
    }
    let found = offenders("ledger/store", &["crate::ledger::api"]);
    assert!(found.is_empty(), "{found:#?}");
}
