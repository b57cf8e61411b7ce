//! Which inputs are refused, and why: the shipped JSON Schema, plus the one rule it cannot
//! word by place.
//!
//! Each violation names its field as a path into the input (`accounts[1]`, `targetConcurrency`,
//! `(input)` for the document itself) and its rule in words: the `errorMessage` of the
//! subschema it broke, for a type, pattern, enum or range; plain words for a missing, unknown,
//! too long or too short field. The schema's `uniqueItems` only says that `accounts` holds a
//! duplicate; [`duplicates`] names each one by its place instead, as the schema cannot.

use super::FieldError;
use jsonschema::error::ValidationErrorKind as Kind;
use jsonschema::paths::{Location, LocationSegment};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

/// The schema a person checks a payload with, exactly as shipped.
const TEXT: &str = include_str!("../../../statemachine/run-input.schema.json");

/// The schema as JSON (its words and defaults are read from it), and its validator.
pub(super) static SCHEMA: LazyLock<(Value, Validator)> = LazyLock::new(compile);

// The schema is a constant of the build, and every test run compiles it: it cannot fail
// here unless it fails there first.
#[allow(clippy::expect_used)]
fn compile() -> (Value, Validator) {
    let schema: Value = serde_json::from_str(TEXT).expect("the run-input schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("the run-input schema compiles");
    (schema, validator)
}

const UNKNOWN_FIELD: &str = "unknown field (check its spelling; fields are camelCase)";

/// Every violation of the input, schema and duplicates alike, in one list.
pub(super) fn violations(input: &Value) -> Vec<FieldError> {
    let (schema, validator) = &*SCHEMA;
    let duplicates = duplicates(input);

    // A duplicate is named as one; what else is wrong with it is said of its first entry.
    let named: BTreeSet<&str> = duplicates.iter().map(|e| e.field.as_str()).collect();
    let mut errors: Vec<FieldError> = validator
        .iter_errors(input)
        .flat_map(|e| field_errors(&e, schema))
        .filter(|e| !named.contains(e.field.as_str()))
        .collect();

    errors.extend(duplicates);
    errors
}

/// Each entry of `accounts` (of the run, or of a wave) equal to an earlier one of the same
/// list, named by its place.
fn duplicates(input: &Value) -> Vec<FieldError> {
    let mut lists: Vec<(String, &Value)> = Vec::new();
    if let Some(items) = input.get("accounts") {
        lists.push(("accounts".into(), items));
    }
    let waves = input.get("waves").and_then(Value::as_array);
    for (w, wave) in waves.into_iter().flatten().enumerate() {
        if let Some(items) = wave.get("accounts") {
            lists.push((format!("waves[{w}].accounts"), items));
        }
    }

    lists
        .iter()
        .flat_map(|(name, items)| duplicates_in(name, items))
        .collect()
}

fn duplicates_in(name: &str, items: &Value) -> Vec<FieldError> {
    let Some(items) = items.as_array() else {
        return Vec::new();
    };

    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut errors = Vec::new();
    for (i, id) in items.iter().enumerate() {
        let Some(id) = id.as_str() else { continue };
        match first_seen.get(id) {
            Some(j) => errors.push(FieldError {
                field: format!("{name}[{i}]"),
                rule: format!("duplicate of {name}[{j}]: name each account, OU or root once"),
            }),
            None => {
                first_seen.insert(id, i);
            }
        }
    }
    errors
}

/// Whether a list at `path` has its duplicates named by [`duplicates`].
fn is_accounts_list(path: &str) -> bool {
    path == "/accounts"
        || path
            .strip_prefix("/waves/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(i, tail)| i.parse::<usize>().is_ok() && tail == "accounts")
}

/// The violations one schema error stands for (an unknown-fields error names several).
fn field_errors(error: &ValidationError<'_>, schema: &Value) -> Vec<FieldError> {
    let at = |rule: String| FieldError {
        field: field_name(error.instance_path()),
        rule,
    };

    match error.kind() {
        Kind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| FieldError {
                field: within(error.instance_path(), name.clone()),
                rule: UNKNOWN_FIELD.into(),
            })
            .collect(),
        Kind::Required { property } => vec![FieldError {
            field: within(
                error.instance_path(),
                property
                    .as_str()
                    .map_or_else(|| property.to_string(), String::from),
            ),
            rule: "is required".into(),
        }],
        // The account lists' duplicates are named by place in `duplicates`.
        Kind::UniqueItems if is_accounts_list(error.instance_path().as_str()) => Vec::new(),
        Kind::UniqueItems => vec![at("must not repeat an entry".into())],
        Kind::MinItems { limit: 1 } => vec![at("must not be empty".into())],
        Kind::MinItems { limit } => vec![at(format!("must hold at least {limit} entries"))],
        Kind::MaxItems { limit } => vec![at(format!("must hold at most {limit} entries"))],
        Kind::MinLength { limit } => vec![at(format!("must be at least {limit} characters"))],
        Kind::MaxLength { limit } => vec![at(format!("must be at most {limit} characters"))],
        _ => vec![at(in_words(error, schema))],
    }
}

/// The `errorMessage` of the subschema the value broke, and the value when it is short;
/// the validator's own message where the schema has no words.
fn in_words(error: &ValidationError<'_>, schema: &Value) -> String {
    let keyword = error.schema_path().as_str();
    let subschema = keyword.rsplit_once('/').map_or("", |(parent, _)| parent);
    let words = schema
        .pointer(subschema)
        .and_then(|s| s.get("errorMessage"))
        .and_then(Value::as_str);
    let Some(words) = words else {
        return error.to_string();
    };

    let value = error.instance().to_string();
    if error.instance().is_array() || error.instance().is_object() || value.len() > 64 {
        words.to_string()
    } else {
        format!("{words} (got {value})")
    }
}

/// The field `name` of the object at `path`: `waves[0].name`, or `name` at the top.
fn within(path: &Location, name: String) -> String {
    match field_name(path).as_str() {
        "(input)" => name,
        object => format!("{object}.{name}"),
    }
}

/// `accounts[1]` for `/accounts/1`; `(input)` for the document itself.
fn field_name(path: &Location) -> String {
    let mut name = String::new();
    for segment in path.segments() {
        match segment {
            LocationSegment::Index(i) => name.push_str(&format!("[{i}]")),
            LocationSegment::Property(p) if name.is_empty() => name.push_str(&p),
            LocationSegment::Property(p) => name.push_str(&format!(".{p}")),
        }
    }

    if name.is_empty() {
        "(input)".into()
    } else {
        name
    }
}
