//! The direction of dependencies ARCHITECTURE.md draws, checked on the sources: handlers
//! never import one another, and the pure modules never reach an adapter or the AWS SDK.

use std::path::PathBuf;

const HANDLERS: [&str; 5] = ["plan", "expand", "dispatch", "settle", "aggregate"];
const PURE: [&str; 7] = [
    "run",
    "window",
    "ratecontrol",
    "report",
    "comment",
    "input",
    "model",
];
const ADAPTERS: [&str; 7] = [
    "store", "fleet", "orgs", "regions", "events", "clients", "wiring",
];

fn source(module: &str) -> String {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        return std::fs::read_to_string(file).unwrap();
    }
    // A module folder: every file in it.
    let mut all = String::new();
    for entry in std::fs::read_dir(src.join(module)).unwrap() {
        all.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    all
}

/// The crate modules a source names (`crate::x`), outside its tests.
fn uses(module: &str) -> Vec<String> {
    let text = source(module);
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
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
        let text = source(p);
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        assert!(!code.contains("aws_sdk_"), "{p} names an AWS SDK type");
    }
}
