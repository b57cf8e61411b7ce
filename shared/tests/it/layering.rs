//! The direction of dependencies ARCHITECTURE.md draws, checked on the sources: handlers
//! never import one another, and the pure modules never reach an adapter or the AWS SDK.

use std::path::PathBuf;

const HANDLERS: [&str; 5] = ["plan", "expand", "dispatch", "settle", "aggregate"];
const PURE: [&str; 11] = [
    "resume",
    "run",
    "reading",
    "limits",
    "window",
    "poll",
    "ratecontrol",
    "report",
    "comment",
    "input",
    "model",
];
const ADAPTERS: [&str; 9] = [
    "store", "fleet", "tracking", "orgs", "regions", "events", "clients", "wiring", "cancel",
];

/// A module's code, outside its tests: its file, or every file of its folder, each cut at
/// its first `#[cfg(test)]` (test-only files, `tests.rs`, are left out).
fn source(module: &str) -> String {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let file = src.join(format!("{module}.rs"));
    let files: Vec<PathBuf> = if file.exists() {
        vec![file]
    } else {
        std::fs::read_dir(src.join(module))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
            .collect()
    };
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The crate modules a module's code names (`crate::x`).
fn uses(module: &str) -> Vec<String> {
    let code = source(module);
    let mut found: Vec<String> = code
        .match_indices("crate::")
        .map(|(i, _)| {
            code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn no_handler_imports_another_handler() {
    for h in HANDLERS {
        let wrong: Vec<String> = uses(h)
            .into_iter()
            .filter(|m| HANDLERS.contains(&m.as_str()) && m != h)
            .collect();
        assert!(wrong.is_empty(), "{h} imports handler(s) {wrong:?}");
    }
}

#[test]
fn pure_modules_reach_no_adapter_and_no_sdk() {
    for p in PURE {
        let wrong: Vec<String> = uses(p)
            .into_iter()
            .filter(|m| ADAPTERS.contains(&m.as_str()) || HANDLERS.contains(&m.as_str()))
            .collect();
        assert!(wrong.is_empty(), "{p} imports {wrong:?}");
        assert!(!source(p).contains("aws_sdk_"), "{p} names an AWS SDK type");
    }
}
