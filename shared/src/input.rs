//! The run input: the JSON a person pastes into "Start execution", the EventBridge schedule
//! payload and the Step Functions execution input are all this one document.
//!
//! [`validate`] reads it from untyped JSON and collects *every* violation, each naming its
//! field and the rule it broke, so that one failed execution tells the whole story. The
//! JSON Schema in `statemachine/run-input.schema.json` states the same rules.

use crate::model::{Operation, RebootOption};
use crate::ratecontrol::{Rate, MAX_CONCURRENCY_PATTERN, MAX_ERRORS_PATTERN};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

/// Default execution role name in target accounts (the name AWS's multi-account patching
/// setup uses).
pub const DEFAULT_EXECUTION_ROLE: &str = "AWS-SystemsManager-AutomationExecutionRole";
/// Default location concurrency: 10 locations at a time.
pub const DEFAULT_LOCATION_CONCURRENCY: &str = "10";
/// Default location error threshold: stop after more than 10% of locations failed.
pub const DEFAULT_LOCATION_ERROR_THRESHOLD: &str = "10%";
/// Default instance concurrency inside a location: 10% of its instances.
pub const DEFAULT_TARGET_CONCURRENCY: &str = "10%";
/// Default instance error threshold inside a location: more than 10% failed stops it.
pub const DEFAULT_TARGET_ERROR_THRESHOLD: &str = "10%";
/// Default delivery timeout of each command (SendCommand `TimeoutSeconds`).
pub const DEFAULT_DELIVERY_TIMEOUT_SECONDS: u64 = 600;
/// The most account/OU entries a run may name.
pub const MAX_ACCOUNT_ENTRIES: usize = 1000;
/// The most Regions a run may name.
pub const MAX_REGIONS: usize = 50;
/// The longest `installOverrideList` URL (an S3 key is at most 1,024 bytes; the run item
/// must stay under DynamoDB's 400 KB whatever the input holds).
pub const MAX_OVERRIDE_LIST_CHARS: usize = 2048;

/// One entry of `accounts`: an account, an OU (child OUs included) or an organization root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id")]
pub enum AccountTarget {
    /// A 12-digit account ID.
    Account(String),
    /// An Organizations OU ID (`ou-...`): every account below it.
    OrganizationalUnit(String),
    /// An organization root ID (`r-...`): every account of the organization.
    Root(String),
}

/// A validated run input, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInput {
    /// Scan or Install.
    pub operation: Operation,
    /// The resource group to patch in every location.
    pub resource_group: String,
    /// Accounts, OUs and roots to target.
    pub accounts: Vec<AccountTarget>,
    /// Accounts never targeted, even when an OU contains them.
    pub exclude_accounts: Vec<String>,
    /// Regions to target.
    pub regions: Vec<String>,
    /// The role assumed in each target account.
    pub execution_role_name: String,
    /// How many locations run at once (MaxConcurrency grammar).
    pub location_concurrency: String,
    /// How many failed locations stop the run (MaxErrors grammar).
    pub location_error_threshold: String,
    /// How many instances of a location run at once (MaxConcurrency grammar).
    pub target_concurrency: String,
    /// How many failed instances stop a location (MaxErrors grammar).
    pub target_error_threshold: String,
    /// The baseline snapshot shared by every instance; generated once per run when absent.
    pub snapshot_id: Option<String>,
    /// An https or s3 URL of a patch list to install instead of the baseline's.
    pub install_override_list: Option<String>,
    /// Reboot behaviour after installing.
    pub reboot_option: RebootOption,
    /// SendCommand `TimeoutSeconds`: how long a command may wait to be delivered.
    pub delivery_timeout_seconds: u64,
    /// CloudWatch Logs group for command output, when output should be kept.
    pub cloud_watch_log_group: Option<String>,
}

impl RunInput {
    /// The parsed location concurrency (validated, so parsing cannot fail).
    pub fn location_concurrency_rate(&self) -> Rate {
        Rate::parse_concurrency(&self.location_concurrency).unwrap_or(Rate::Count(1))
    }
    /// The parsed location error threshold.
    pub fn location_error_rate(&self) -> Rate {
        Rate::parse_errors(&self.location_error_threshold).unwrap_or(Rate::Count(0))
    }
    /// The parsed instance concurrency.
    pub fn target_concurrency_rate(&self) -> Rate {
        Rate::parse_concurrency(&self.target_concurrency).unwrap_or(Rate::Count(1))
    }
    /// The parsed instance error threshold.
    pub fn target_error_rate(&self) -> Rate {
        Rate::parse_errors(&self.target_error_threshold).unwrap_or(Rate::Count(0))
    }
}

/// One violation: the field (a JSON path such as `accounts[2]`) and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field, as a path into the input.
    pub field: String,
    /// The rule, in words.
    pub rule: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// A violation's text is cut to this many bytes in messages and records (a field's name,
/// an unknown one included, can be any length).
pub const MAX_REASON_BYTES: usize = 300;
/// The `InvalidInput` message lists at most this many violations (Step Functions keeps an
/// error's cause up to 32,768 characters).
pub const MAX_DESCRIBED: usize = 100;

/// Joins violations into the one message of the `InvalidInput` error: the first
/// [`MAX_DESCRIBED`], each cut to [`MAX_REASON_BYTES`], then how many more there are.
pub fn describe(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .take(MAX_DESCRIBED)
        .map(|e| crate::model::cut_text(&e.to_string(), MAX_REASON_BYTES).0)
        .collect();
    let more = match errors.len().saturating_sub(MAX_DESCRIBED) {
        0 => String::new(),
        n => format!("; and {n} more"),
    };
    format!(
        "{} invalid field(s): {}{more}",
        errors.len(),
        parts.join("; ")
    )
}

// Every class is spelled out in ASCII: the regex crate's `\d` and `\w` are Unicode-aware
// (full-width digits would pass), and so are Python's, which JSON Schema tools use.
static ACCOUNT_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]{12}$"));
static OU_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}$"));
static ROOT_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^r-[0-9a-z]{4,32}$"));
static REGION_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$"));
static GROUP_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^([a-zA-Z0-9_.-]{1,300}|[a-zA-Z0-9_.-]{1,150}/[a-z0-9]{26})$"));
static ROLE_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_+=,.@-]{1,64}$"));
static SNAPSHOT_RE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
});
static OVERRIDE_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(https://.+|s3://([^/]+)/(.*?([^/]+)))$"));
static LOG_GROUP_RE: LazyLock<Regex> = LazyLock::new(|| re(r"^[\.\-_/#A-Za-z0-9]{1,512}$"));

#[allow(clippy::expect_used)] // the patterns are constants, checked by every test run
fn re(p: &str) -> Regex {
    Regex::new(p).expect("constant pattern")
}

/// Every field of the run input.
pub const KNOWN_FIELDS: [&str; 15] = [
    "operation",
    "resourceGroup",
    "accounts",
    "excludeAccounts",
    "regions",
    "executionRoleName",
    "locationConcurrency",
    "locationErrorThreshold",
    "targetConcurrency",
    "targetErrorThreshold",
    "snapshotId",
    "installOverrideList",
    "rebootOption",
    "deliveryTimeoutSeconds",
    "cloudWatchLogGroup",
];

/// Validates a run input, applying defaults. Returns every violation at once.
pub fn validate(input: &Value) -> Result<RunInput, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut err = |field: &str, rule: &str| {
        errs.push(FieldError {
            field: field.to_string(),
            rule: rule.to_string(),
        })
    };
    let Some(obj) = input.as_object() else {
        err("(input)", "must be a JSON object");
        return Err(errs);
    };
    for key in obj.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            err(
                key,
                "unknown field (check its spelling; fields are camelCase)",
            );
        }
    }

    let operation = match obj.get("operation") {
        None | Some(Value::Null) => {
            err("operation", "is required: Scan or Install");
            None
        }
        Some(Value::String(s)) if s == "Scan" => Some(Operation::Scan),
        Some(Value::String(s)) if s == "Install" => Some(Operation::Install),
        Some(_) => {
            err("operation", "must be Scan or Install");
            None
        }
    };

    let resource_group = required_string(obj, "resourceGroup", &mut err).and_then(|g| {
        if GROUP_RE.is_match(&g) {
            Some(g)
        } else {
            err(
                "resourceGroup",
                "must be a group name: 1-300 of letters, digits, '_', '.', '-'",
            );
            None
        }
    });

    let mut accounts = Vec::new();
    if let Some(items) = string_list(obj, "accounts", true, MAX_ACCOUNT_ENTRIES, &mut err) {
        let mut first_seen: std::collections::HashMap<&str, usize> = Default::default();
        for (i, s) in items.iter().enumerate() {
            let field = format!("accounts[{i}]");
            if let Some(j) = first_seen.get(s.as_str()) {
                err(
                    &field,
                    &format!("duplicate of accounts[{j}]: name each account, OU or root once"),
                );
                continue;
            }
            first_seen.insert(s, i);
            if ACCOUNT_RE.is_match(s) {
                accounts.push(AccountTarget::Account(s.clone()));
            } else if OU_RE.is_match(s) {
                accounts.push(AccountTarget::OrganizationalUnit(s.clone()));
            } else if ROOT_RE.is_match(s) {
                accounts.push(AccountTarget::Root(s.clone()));
            } else {
                err(
                    &field,
                    "must be a 12-digit account ID, an OU ID (ou-xxxx-xxxxxxxx) or a root ID (r-xxxx)",
                );
            }
        }
    }

    let mut exclude_accounts = Vec::new();
    if let Some(items) = string_list(obj, "excludeAccounts", false, MAX_ACCOUNT_ENTRIES, &mut err) {
        for (i, s) in items.iter().enumerate() {
            if ACCOUNT_RE.is_match(s) {
                exclude_accounts.push(s.clone());
            } else {
                err(
                    &format!("excludeAccounts[{i}]"),
                    "must be a 12-digit account ID",
                );
            }
        }
    }

    let mut regions: Vec<String> = Vec::new();
    if let Some(items) = string_list(obj, "regions", true, MAX_REGIONS, &mut err) {
        for (i, s) in items.iter().enumerate() {
            if !REGION_RE.is_match(s) {
                err(
                    &format!("regions[{i}]"),
                    "must be a Region code such as us-east-1",
                );
            } else if !regions.contains(s) {
                regions.push(s.clone());
            }
        }
    }

    let execution_role_name = optional_string(obj, "executionRoleName", &mut err)
        .inspect(|r| {
            if !ROLE_RE.is_match(r) {
                err(
                    "executionRoleName",
                    "must be an IAM role name: 1-64 of letters, digits and +=,.@_-",
                );
            }
        })
        .unwrap_or_else(|| DEFAULT_EXECUTION_ROLE.to_string());

    let mut rate = |field: &str, default: &str, concurrency: bool| -> String {
        let s = optional_string(obj, field, &mut err).unwrap_or_else(|| default.to_string());
        let ok = if concurrency {
            Rate::parse_concurrency(&s).is_ok()
        } else {
            Rate::parse_errors(&s).is_ok()
        };
        if !ok {
            let rule = if concurrency {
                format!("must be a number of at least 1 or a percentage 1%-100%, as SSM's MaxConcurrency ({MAX_CONCURRENCY_PATTERN}); got {s:?}")
            } else {
                format!("must be a number (0 allowed) or a percentage 0%-100%, as SSM's MaxErrors ({MAX_ERRORS_PATTERN}); got {s:?}")
            };
            err(field, &rule);
        }
        s
    };
    let location_concurrency = rate("locationConcurrency", DEFAULT_LOCATION_CONCURRENCY, true);
    let location_error_threshold = rate(
        "locationErrorThreshold",
        DEFAULT_LOCATION_ERROR_THRESHOLD,
        false,
    );
    let target_concurrency = rate("targetConcurrency", DEFAULT_TARGET_CONCURRENCY, true);
    let target_error_threshold = rate(
        "targetErrorThreshold",
        DEFAULT_TARGET_ERROR_THRESHOLD,
        false,
    );

    let snapshot_id = optional_string(obj, "snapshotId", &mut err).and_then(|s| {
        if SNAPSHOT_RE.is_match(&s) {
            Some(s)
        } else {
            err(
                "snapshotId",
                "must be a GUID such as 3f2504e0-4f89-41d3-9a0c-0305e82c3301",
            );
            None
        }
    });

    let install_override_list =
        optional_string(obj, "installOverrideList", &mut err).and_then(|s| {
            if s.is_empty() {
                None
            } else if s.chars().count() > MAX_OVERRIDE_LIST_CHARS {
                err(
                    "installOverrideList",
                    &format!("must be at most {MAX_OVERRIDE_LIST_CHARS} characters"),
                );
                None
            } else if OVERRIDE_RE.is_match(&s) {
                Some(s)
            } else {
                err(
                    "installOverrideList",
                    "must be an https:// URL or an s3://bucket/key URL of a YAML file",
                );
                None
            }
        });

    let reboot_option = match obj.get("rebootOption") {
        None | Some(Value::Null) => Some(RebootOption::RebootIfNeeded),
        Some(Value::String(s)) if s == "RebootIfNeeded" => Some(RebootOption::RebootIfNeeded),
        Some(Value::String(s)) if s == "NoReboot" => Some(RebootOption::NoReboot),
        Some(_) => {
            err("rebootOption", "must be RebootIfNeeded or NoReboot");
            None
        }
    };

    let delivery_timeout_seconds = match obj.get("deliveryTimeoutSeconds") {
        None | Some(Value::Null) => DEFAULT_DELIVERY_TIMEOUT_SECONDS,
        // JSON does not tell 600 from 600.0 (nor does JSON Schema's "integer"): a whole
        // number written with a fraction or an exponent is that number.
        Some(v) => match v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
                .map(|f| f as u64)
        }) {
            Some(n) if (30..=2_592_000).contains(&n) => n,
            _ => {
                err(
                    "deliveryTimeoutSeconds",
                    "must be a whole number of seconds from 30 to 2592000 (SendCommand TimeoutSeconds)",
                );
                DEFAULT_DELIVERY_TIMEOUT_SECONDS
            }
        },
    };

    let cloud_watch_log_group =
        optional_string(obj, "cloudWatchLogGroup", &mut err).and_then(|s| {
            if LOG_GROUP_RE.is_match(&s) {
                Some(s)
            } else {
                err(
                    "cloudWatchLogGroup",
                    "must be a log group name: 1-512 of letters, digits and ._-/#",
                );
                None
            }
        });

    if let (Some(ops), Some(_)) = (operation, &install_override_list) {
        if ops == Operation::Scan {
            err(
                "installOverrideList",
                "only applies to operation Install (Scan ignores it); remove it or use Install",
            );
        }
    }

    match (operation, resource_group, reboot_option) {
        (Some(operation), Some(resource_group), Some(reboot_option)) if errs.is_empty() => {
            Ok(RunInput {
                operation,
                resource_group,
                accounts,
                exclude_accounts,
                regions,
                execution_role_name,
                location_concurrency,
                location_error_threshold,
                target_concurrency,
                target_error_threshold,
                snapshot_id,
                install_override_list,
                reboot_option,
                delivery_timeout_seconds,
                cloud_watch_log_group,
            })
        }
        _ => Err(errs),
    }
}

/// The path of AWS's public parameters that list every Region (SSM GetParametersByPath).
pub const REGIONS_PARAMETER_PATH: &str = "/aws/service/global-infrastructure/regions";

/// Violations for Region codes that are well formed but name no AWS Region: `known` is the
/// list AWS publishes under [`REGIONS_PARAMETER_PATH`]. Run after [`validate`] accepted the
/// input; the field is the entry's place in the input as written.
pub fn unknown_regions(input: &Value, known: &BTreeSet<String>) -> Vec<FieldError> {
    let Some(items) = input.get("regions").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.as_str().map(|s| (i, s)))
        .filter(|(_, s)| !known.contains(*s))
        .map(|(i, s)| FieldError {
            field: format!("regions[{i}]"),
            rule: format!(
                "{s} is not an AWS Region (not among the {} Regions AWS lists under {REGIONS_PARAMETER_PATH})",
                known.len()
            ),
        })
        .collect()
}

fn required_string(
    obj: &Map<String, Value>,
    field: &str,
    err: &mut impl FnMut(&str, &str),
) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => {
            err(field, "is required");
            None
        }
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) => {
            err(field, "must not be empty");
            None
        }
        Some(_) => {
            err(field, "must be a string");
            None
        }
    }
}

fn optional_string(
    obj: &Map<String, Value>,
    field: &str,
    err: &mut impl FnMut(&str, &str),
) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            err(field, "must be a string");
            None
        }
    }
}

fn string_list(
    obj: &Map<String, Value>,
    field: &str,
    required: bool,
    max: usize,
    err: &mut impl FnMut(&str, &str),
) -> Option<Vec<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => {
            if required {
                err(field, "is required: a non-empty list");
            }
            None
        }
        Some(Value::Array(items)) => {
            if required && items.is_empty() {
                err(field, "must not be empty");
                return None;
            }
            if items.len() > max {
                err(field, &format!("must hold at most {max} entries"));
                return None;
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                match v {
                    Value::String(s) => out.push(s.clone()),
                    _ => err(&format!("{field}[{i}]"), "must be a string"),
                }
            }
            Some(out)
        }
        Some(_) => {
            err(field, "must be a list of strings");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "operation": "Install",
            "resourceGroup": "patch-group-a",
            "accounts": ["111122223333", "ou-ab12-cdef3456"],
            "regions": ["us-east-1", "eu-west-1"]
        })
    }

    fn with(field: &str, v: Value) -> Value {
        let mut g = good();
        g.as_object_mut().unwrap().insert(field.to_string(), v);
        g
    }

    fn without(field: &str) -> Value {
        let mut g = good();
        g.as_object_mut().unwrap().remove(field);
        g
    }

    #[test]
    fn minimal_input_gets_the_documented_defaults() {
        let r = validate(&good()).unwrap();
        assert_eq!(r.operation, Operation::Install);
        assert_eq!(r.execution_role_name, DEFAULT_EXECUTION_ROLE);
        assert_eq!(r.location_concurrency, "10");
        assert_eq!(r.location_error_threshold, "10%");
        assert_eq!(r.target_concurrency, "10%");
        assert_eq!(r.target_error_threshold, "10%");
        assert_eq!(r.reboot_option, RebootOption::RebootIfNeeded);
        assert_eq!(r.delivery_timeout_seconds, 600);
        assert_eq!(r.snapshot_id, None);
        assert_eq!(
            r.accounts,
            vec![
                AccountTarget::Account("111122223333".into()),
                AccountTarget::OrganizationalUnit("ou-ab12-cdef3456".into())
            ]
        );
    }

    #[test]
    fn duplicate_regions_are_removed() {
        let r = validate(&with(
            "regions",
            json!(["us-east-1", "us-east-1", "eu-west-1"]),
        ))
        .unwrap();
        assert_eq!(r.regions, vec!["us-east-1", "eu-west-1"]);
    }

    /// Each bad input names its field; (input, field expected in the message).
    #[test]
    fn every_bad_input_names_its_field() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([1, 2]), "(input)"),
            (without("operation"), "operation"),
            (with("operation", json!("Patch")), "operation"),
            (with("operation", json!("install")), "operation"),
            (without("resourceGroup"), "resourceGroup"),
            (with("resourceGroup", json!("")), "resourceGroup"),
            (with("resourceGroup", json!("has space")), "resourceGroup"),
            (with("resourceGroup", json!(42)), "resourceGroup"),
            (without("accounts"), "accounts"),
            (with("accounts", json!([])), "accounts"),
            (with("accounts", json!("111122223333")), "accounts"),
            (with("accounts", json!(["12345"])), "accounts[0]"),
            (
                with("accounts", json!(["111122223333", "ou-bad"])),
                "accounts[1]",
            ),
            (with("accounts", json!([111122223333u64])), "accounts[0]"),
            (
                with("excludeAccounts", json!(["abc"])),
                "excludeAccounts[0]",
            ),
            (without("regions"), "regions"),
            (with("regions", json!([])), "regions"),
            (with("regions", json!(["US-EAST-1"])), "regions[0]"),
            (with("regions", json!(["us-east-1", "mars"])), "regions[1]"),
            (
                with("executionRoleName", json!("bad role/name")),
                "executionRoleName",
            ),
            (
                with("locationConcurrency", json!("0")),
                "locationConcurrency",
            ),
            (
                with("locationConcurrency", json!(10)),
                "locationConcurrency",
            ),
            (
                with("locationErrorThreshold", json!("101%")),
                "locationErrorThreshold",
            ),
            (with("targetConcurrency", json!("0%")), "targetConcurrency"),
            (with("targetConcurrency", json!("05")), "targetConcurrency"),
            (
                with("targetErrorThreshold", json!("-1")),
                "targetErrorThreshold",
            ),
            (with("snapshotId", json!("not-a-guid")), "snapshotId"),
            (
                with("installOverrideList", json!("http://example.com/list.yaml")),
                "installOverrideList",
            ),
            (
                with("installOverrideList", json!("s3://bucket-only")),
                "installOverrideList",
            ),
            (with("rebootOption", json!("Always")), "rebootOption"),
            (
                with("deliveryTimeoutSeconds", json!(10)),
                "deliveryTimeoutSeconds",
            ),
            (
                with("deliveryTimeoutSeconds", json!("600")),
                "deliveryTimeoutSeconds",
            ),
            (
                with("deliveryTimeoutSeconds", json!(3_000_000)),
                "deliveryTimeoutSeconds",
            ),
            (
                with("cloudWatchLogGroup", json!("bad group!")),
                "cloudWatchLogGroup",
            ),
            (with("regoins", json!(["us-east-1"])), "regoins"),
            (
                {
                    let mut v = with("operation", json!("Scan"));
                    v["installOverrideList"] = json!("https://example.com/l.yaml");
                    v
                },
                "installOverrideList",
            ),
        ];
        assert!(cases.len() >= 20);
        for (input, field) in cases {
            let errs = validate(&input).expect_err(&format!("{input} should be refused"));
            let msg = describe(&errs);
            assert!(
                errs.iter().any(|e| e.field == field),
                "{input}: expected an error on {field}, got {msg}"
            );
            assert!(msg.contains(field), "{msg}");
        }
    }

    /// The table shared with the JSON Schema's test (tests/schema/test_run_input_schema.py).
    #[test]
    fn the_validation_agrees_with_the_shared_table_of_cases() {
        let table: Value =
            serde_json::from_str(include_str!("../../statemachine/run-input.cases.json")).unwrap();
        let cases = table["cases"].as_array().unwrap();
        assert!(cases.len() >= 50);
        let mut disagreements = Vec::new();
        for case in cases {
            // GIVEN a case of the shared table
            let name = case["name"].as_str().unwrap();
            // WHEN the validation reads its input
            let got = validate(&case["input"]);
            // THEN it accepts exactly the valid ones, and refuses the others naming the fields
            let mut want: Vec<&str> = case["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            want.sort_unstable();
            match (case["valid"].as_bool().unwrap(), got) {
                (true, Ok(_)) => {}
                (true, Err(errs)) => {
                    disagreements.push(format!("{name}: refused: {}", describe(&errs)))
                }
                (false, Ok(_)) => disagreements.push(format!("{name}: accepted")),
                (false, Err(errs)) => {
                    let mut fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
                    fields.sort_unstable();
                    fields.dedup();
                    if fields != want {
                        disagreements.push(format!("{name}: named {fields:?}, not {want:?}"));
                    }
                }
            }
        }
        assert!(disagreements.is_empty(), "{disagreements:#?}");
    }

    #[test]
    fn the_message_of_a_huge_bad_input_stays_under_a_step_functions_cause() {
        // GIVEN an input with 2,000 bad account entries and an unknown field of 100 KB
        let mut input = with("accounts", json!(vec!["x".repeat(50); 1_000]));
        input["excludeAccounts"] = json!(vec!["y"; 1_000]);
        input["f".repeat(100_000)] = json!(1);
        // WHEN it is validated
        let errs = validate(&input).unwrap_err();
        let msg = describe(&errs);
        // THEN the message counts every violation, lists the first ones, and fits a cause
        assert!(errs.len() > 2_000);
        assert!(
            msg.starts_with(&format!("{} invalid field(s)", errs.len())),
            "{}",
            &msg[..80]
        );
        assert!(msg.ends_with(&format!("and {} more", errs.len() - MAX_DESCRIBED)));
        assert!(msg.len() < 32_768, "{} bytes", msg.len());
    }

    #[test]
    fn a_whole_number_written_with_a_fraction_is_that_number() {
        let r = validate(&with("deliveryTimeoutSeconds", json!(600.0))).unwrap();
        assert_eq!(r.delivery_timeout_seconds, 600);
    }

    #[test]
    fn regions_aws_does_not_list_are_named_by_their_place() {
        // GIVEN the Regions AWS publishes, and an input naming two that do not exist
        let known: BTreeSet<String> = ["us-east-1", "eu-west-1"].map(String::from).into();
        let input = with("regions", json!(["us-east-1", "us-east-3", "eu-nowhere-1"]));
        assert!(validate(&input).is_ok(), "well formed");
        // WHEN they are checked against the list
        let errs = unknown_regions(&input, &known);
        // THEN each unknown one is named, with its place in the input
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["regions[1]", "regions[2]"]);
        assert!(
            errs[0].rule.contains("us-east-3 is not an AWS Region"),
            "{}",
            errs[0].rule
        );
        assert!(unknown_regions(&good(), &known).is_empty());
    }

    #[test]
    fn all_violations_are_reported_together() {
        let input = json!({
            "operation": "Patch",
            "accounts": ["123"],
            "regions": ["nowhere"],
            "targetConcurrency": "0",
            "snapshotId": "x"
        });
        let errs = validate(&input).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "operation",
            "resourceGroup",
            "accounts[0]",
            "regions[0]",
            "targetConcurrency",
            "snapshotId",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(describe(&errs).starts_with(&format!("{} invalid field(s)", errs.len())));
    }

    #[test]
    fn full_input_is_accepted() {
        let input = json!({
            "operation": "Install",
            "resourceGroup": "web-servers",
            "accounts": ["111122223333", "ou-ab12-cdef3456", "r-ab12"],
            "excludeAccounts": ["444455556666"],
            "regions": ["us-east-1", "ap-southeast-2"],
            "executionRoleName": "MyPatchRole",
            "locationConcurrency": "25%",
            "locationErrorThreshold": "0",
            "targetConcurrency": "50",
            "targetErrorThreshold": "5%",
            "snapshotId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
            "installOverrideList": "s3://my-bucket/lists/override.yaml",
            "rebootOption": "NoReboot",
            "deliveryTimeoutSeconds": 1800,
            "cloudWatchLogGroup": "/fleetpatch/commands"
        });
        let r = validate(&input).unwrap();
        assert_eq!(r.accounts[2], AccountTarget::Root("r-ab12".into()));
        assert_eq!(r.reboot_option, RebootOption::NoReboot);
        assert_eq!(r.target_error_rate(), Rate::Percent(5));
        assert_eq!(r.delivery_timeout_seconds, 1800);
    }
}
