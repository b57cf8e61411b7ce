//! The run input: the JSON a person pastes into "Start execution", the EventBridge schedule
//! payload and the Step Functions execution input are all this one document.
//!
//! `statemachine/run-input.schema.json` is its only statement of rules. [`validate`] checks
//! the raw JSON against that very file (embedded at build time) and collects *every*
//! violation, each naming its field and the rule it broke, so that one failed execution
//! tells the whole story. Only then is the document read into a typed [`RunInput`], with the
//! schema's defaults applied: past [`validate`], nothing re-checks or re-parses a field.

mod document;
mod schema;
mod waves;

pub use waves::{Wave, DEFAULT_APPROVAL_TIMEOUT_MINUTES};

use crate::command::Hooks;
use crate::model::{Operation, RebootOption};
use crate::ratecontrol::{self, Rate};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;

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

/// A validated run input, with defaults applied. The run item stores it as JSON (`input`):
/// rates as the text the person wrote, accounts tagged by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInput {
    pub operation: Operation,
    /// The resource group to patch in every location.
    pub resource_group: String,
    /// Every target of the run; with waves, every entry the waves name, in wave order.
    pub accounts: Vec<AccountTarget>,
    /// The run's waves, in order; empty: the run is one wave over `accounts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Wave>,
    /// Accounts never targeted, even when an OU contains them.
    pub exclude_accounts: Vec<String>,
    /// Without duplicates, in the order first written.
    pub regions: Vec<String>,
    /// The role assumed in each target account.
    pub execution_role_name: String,
    /// How many locations run at once.
    #[serde(with = "ratecontrol::concurrency")]
    pub location_concurrency: Rate,
    /// How many failed locations stop the run.
    #[serde(with = "ratecontrol::errors")]
    pub location_error_threshold: Rate,
    /// How many instances of a location run at once.
    #[serde(with = "ratecontrol::concurrency")]
    pub target_concurrency: Rate,
    /// How many failed instances stop a location.
    #[serde(with = "ratecontrol::errors")]
    pub target_error_threshold: Rate,
    /// The baseline snapshot shared by every instance; generated once per run when absent.
    pub snapshot_id: Option<String>,
    /// An https or s3 URL of a patch list to install instead of the baseline's.
    pub install_override_list: Option<String>,
    pub reboot_option: RebootOption,
    /// SendCommand `TimeoutSeconds`: how long a command may wait to be delivered.
    pub delivery_timeout_seconds: u64,
    /// CloudWatch Logs group for command output, when output should be kept.
    pub cloud_watch_log_group: Option<String>,
    /// The maintenance window's end, RFC 3339 as written: no command starts after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// CloudWatch alarm ARNs: while any is in ALARM, nothing new starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_on_alarms: Vec<String>,
    /// SSM documents run before / after the install (AWS-RunPatchBaselineWithHooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_install_hook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_install_hook: Option<String>,
    /// The SSM document run last on each instance, whatever happened before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit_hook: Option<String>,
    /// The run this one resumes: only what did not succeed there is targeted (`resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_of: Option<String>,
    /// With `resume_of`: undelivered commands (DeliveryTimedOut, Undeliverable) are sent
    /// again too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume_delivery_timeouts: bool,
}

// The handlers' names for the four rates; each is the typed field itself.
impl RunInput {
    pub fn location_concurrency_rate(&self) -> Rate {
        self.location_concurrency
    }

    pub fn location_error_rate(&self) -> Rate {
        self.location_error_threshold
    }

    pub fn target_concurrency_rate(&self) -> Rate {
        self.target_concurrency
    }

    pub fn target_error_rate(&self) -> Rate {
        self.target_error_threshold
    }

    /// `targetConcurrency` and `targetErrorThreshold` of a location of wave `wave`: the
    /// wave's (which default to the run's), or the run's without waves.
    pub fn target_rates(&self, wave: u32) -> (Rate, Rate) {
        match self.waves.get(wave as usize) {
            Some(w) => (w.target_concurrency, w.target_error_threshold),
            None => (self.target_concurrency, self.target_error_threshold),
        }
    }

    /// `notAfter` in epoch milliseconds (None without one; validation refused a bad one).
    pub fn not_after_ms(&self) -> Option<i64> {
        self.not_after
            .as_deref()
            .and_then(crate::clock::parse_rfc3339_ms)
    }

    /// The run's install hooks, or None when it names none: then it installs through
    /// AWS-RunPatchBaseline, else through AWS-RunPatchBaselineWithHooks.
    pub fn hooks(&self) -> Option<Hooks> {
        Hooks::of(
            self.pre_install_hook.as_deref(),
            self.post_install_hook.as_deref(),
            self.on_exit_hook.as_deref(),
        )
    }
}

/// One violation: the field (a path such as `accounts[2]`) and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
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

/// Validates a run input against the schema and reads it, applying the schema's defaults.
/// Returns every violation at once.
pub fn validate(input: &Value) -> Result<RunInput, Vec<FieldError>> {
    let mut errors = schema::violations(input);
    errors.extend(waves::cross_wave_violations(input));
    if !errors.is_empty() {
        return Err(errors);
    }

    document::read(input).map_err(|e| vec![e])
}

/// The input of a run that resumes `original` (its stored input, same snapshot): every
/// field as the original had it, `resumeOf` naming it, and `resumeDeliveryTimeouts`.
pub fn resume_document(original: &RunInput, run_id: &str, delivery_timeouts: bool) -> Value {
    let mut resumed = original.clone();
    resumed.resume_of = Some(run_id.to_string());
    resumed.resume_delivery_timeouts = delivery_timeouts;
    document::write(&resumed)
}

/// Violations that depend on the clock: a `notAfter` that cannot be a date, or that has
/// already passed at `now_ms` (no command could start). Run after [`validate`] accepted the
/// input, when the run starts (`plan`) or is checked (`fleetpatch validate`).
pub fn timing_violations(input: &RunInput, now_ms: i64) -> Vec<FieldError> {
    let Some(text) = input.not_after.as_deref() else {
        return Vec::new();
    };

    let rule = match crate::clock::parse_rfc3339_ms(text) {
        None => format!("{text} is not a date-time (check the day of the month)"),
        Some(ms) if ms <= now_ms => format!(
            "{text} has already passed (now {}): no command could start; give the window's end",
            crate::clock::iso(now_ms / 1000)
        ),
        Some(_) => return Vec::new(),
    };
    vec![FieldError {
        field: "notAfter".into(),
        rule,
    }]
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

#[cfg(test)]
mod tests;
