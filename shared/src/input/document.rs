//! Reading an input the schema accepted into a [`RunInput`].
//!
//! The schema's `default`s fill what is absent or null, serde reads each field into its type
//! (rates into [`Rate`] by their grammar), and the few choices that are not rules are made:
//! an account entry's kind by its prefix, Regions without duplicates, an empty override list
//! as none.

use super::waves::{dedup, RunDefaults, WaveDocument};
use super::{schema, AccountTarget, FieldError, RunInput};
use crate::model::{Operation, RebootOption};
use crate::ratecontrol::{self, Rate};
use serde::{Deserialize, Deserializer};
use serde_json::{Number, Value};

/// The input as written. `deny_unknown_fields`: a property of the schema this struct does not
/// read fails every valid input, so a test catches it at once.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    operation: Operation,
    resource_group: String,
    /// Absent when `waves` name the accounts (the schema requires one or the other).
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    waves: Vec<WaveDocument>,
    #[serde(default)]
    exclude_accounts: Vec<String>,
    regions: Vec<String>,
    execution_role_name: String,
    #[serde(with = "ratecontrol::concurrency")]
    location_concurrency: Rate,
    #[serde(with = "ratecontrol::errors")]
    location_error_threshold: Rate,
    #[serde(with = "ratecontrol::concurrency")]
    target_concurrency: Rate,
    #[serde(with = "ratecontrol::errors")]
    target_error_threshold: Rate,
    snapshot_id: Option<String>,
    install_override_list: Option<String>,
    reboot_option: RebootOption,
    #[serde(deserialize_with = "whole_number")]
    delivery_timeout_seconds: u64,
    cloud_watch_log_group: Option<String>,
    not_after: Option<String>,
    #[serde(default)]
    stop_on_alarms: Vec<String>,
    pre_install_hook: Option<String>,
    post_install_hook: Option<String>,
    on_exit_hook: Option<String>,
    resume_of: Option<String>,
    resume_delivery_timeouts: bool,
}

/// Reads an input that [`schema::violations`] found nothing wrong with. An error here means
/// the schema and [`Document`] disagree: it is reported as a violation of the whole input.
pub(super) fn read(input: &Value) -> Result<RunInput, FieldError> {
    let document: Document =
        serde_json::from_value(with_defaults(input)).map_err(|e| FieldError {
            field: "(input)".into(),
            rule: format!("could not be read after validation: {e}"),
        })?;

    document.into_input()
}

/// The input without its nulls, each absent field that has a `default` in the schema set to it.
fn with_defaults(input: &Value) -> Value {
    let mut fields = input.as_object().cloned().unwrap_or_default();
    fields.retain(|_, value| !value.is_null());

    let (schema, _) = &*schema::SCHEMA;
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            if let Some(default) = property.get("default") {
                fields.entry(name).or_insert_with(|| default.clone());
            }
        }
    }

    Value::Object(fields)
}

/// The input as a person writes it (the run item stores the typed [`RunInput`]): accounts
/// as their IDs, rates as their text, `null`s left out. [`read`] gives the same input back.
/// With waves, each wave's accounts are written as IDs and the run's `accounts` (their union)
/// is left out, as the person wrote it.
pub(super) fn write(input: &RunInput) -> Value {
    let mut doc = serde_json::to_value(input).unwrap_or(Value::Null);
    if let Some(fields) = doc.as_object_mut() {
        let ids = |list: &[AccountTarget]| {
            Value::Array(list.iter().map(|a| Value::String(a.id().into())).collect())
        };
        if input.waves.is_empty() {
            fields.insert("accounts".into(), ids(&input.accounts));
        } else {
            fields.remove("accounts");
            let waves = fields.get_mut("waves").and_then(Value::as_array_mut);
            for (w, written) in input.waves.iter().zip(waves.into_iter().flatten()) {
                written["accounts"] = ids(&w.accounts);
            }
        }
        fields.retain(|_, v| !v.is_null());
    }
    doc
}

impl Document {
    /// The typed input. With waves, `accounts` is every entry the waves name, each once, in
    /// wave order (what the run targets as a whole).
    fn into_input(self) -> Result<RunInput, FieldError> {
        let d = self;
        let regions = dedup(d.regions);
        let defaults = RunDefaults {
            regions: &regions,
            location_concurrency: d.location_concurrency,
            location_error_threshold: d.location_error_threshold,
            target_concurrency: d.target_concurrency,
            target_error_threshold: d.target_error_threshold,
        };
        let waves = d
            .waves
            .into_iter()
            .enumerate()
            .map(|(i, w)| w.read(i, &defaults))
            .collect::<Result<Vec<_>, _>>()?;
        let accounts = if waves.is_empty() {
            d.accounts.into_iter().map(AccountTarget::from_id).collect()
        } else {
            let mut all: Vec<AccountTarget> = Vec::new();
            for t in waves.iter().flat_map(|w| w.accounts.iter()) {
                if !all.contains(t) {
                    all.push(t.clone());
                }
            }
            all
        };

        Ok(RunInput {
            operation: d.operation,
            resource_group: d.resource_group,
            accounts,
            waves,
            exclude_accounts: d.exclude_accounts,
            regions,
            execution_role_name: d.execution_role_name,
            location_concurrency: d.location_concurrency,
            location_error_threshold: d.location_error_threshold,
            target_concurrency: d.target_concurrency,
            target_error_threshold: d.target_error_threshold,
            snapshot_id: d.snapshot_id,
            install_override_list: d.install_override_list.filter(|url| !url.is_empty()),
            reboot_option: d.reboot_option,
            delivery_timeout_seconds: d.delivery_timeout_seconds,
            cloud_watch_log_group: d.cloud_watch_log_group,
            not_after: d.not_after,
            stop_on_alarms: d.stop_on_alarms,
            pre_install_hook: d.pre_install_hook,
            post_install_hook: d.post_install_hook,
            on_exit_hook: d.on_exit_hook,
            resume_of: d.resume_of,
            resume_delivery_timeouts: d.resume_delivery_timeouts,
        })
    }
}

impl AccountTarget {
    /// The ID as written in the input.
    pub fn id(&self) -> &str {
        match self {
            AccountTarget::Account(id)
            | AccountTarget::OrganizationalUnit(id)
            | AccountTarget::Root(id) => id,
        }
    }

    /// The kind of an entry the schema accepted: its pattern allows only these three shapes.
    pub(super) fn from_id(id: String) -> AccountTarget {
        if id.starts_with("ou-") {
            AccountTarget::OrganizationalUnit(id)
        } else if id.starts_with("r-") {
            AccountTarget::Root(id)
        } else {
            AccountTarget::Account(id)
        }
    }
}

/// JSON does not tell 600 from 600.0 (nor does JSON Schema's "integer"): a whole number
/// written with a fraction or an exponent is that number.
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
                .map(|f| f as u64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number")))
}
