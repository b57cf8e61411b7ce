//! The `waves` of a run input: ordered groups of accounts (canary, then wider), each with
//! optional Regions, rate control, a soak and an approval.
//!
//! The schema checks each wave's shape; this module reads a wave (the run's values fill
//! what it leaves out) and keeps the rules the schema cannot word: wave names are unique,
//! and an account, OU or root named again by a later wave, in Regions an earlier wave
//! already covers, is a duplicate named by its place. Overlaps that only OU resolution
//! reveals are not errors: a location belongs to the first wave that reaches it (plan
//! records how many a later wave lost, see `crate::waves`).

use super::{AccountTarget, FieldError};
use crate::ratecontrol::{self, Rate};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// The approval timeout when a wave gives none: 24 hours.
pub const DEFAULT_APPROVAL_TIMEOUT_MINUTES: u64 = 24 * 60;

/// One wave, as validated: its own values, or the run's where it gives none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    pub name: String,
    pub accounts: Vec<AccountTarget>,
    /// Without duplicates; the run's `regions` when the wave gives none.
    pub regions: Vec<String>,
    #[serde(with = "ratecontrol::concurrency")]
    pub location_concurrency: Rate,
    #[serde(with = "ratecontrol::errors")]
    pub location_error_threshold: Rate,
    #[serde(with = "ratecontrol::concurrency")]
    pub target_concurrency: Rate,
    #[serde(with = "ratecontrol::errors")]
    pub target_error_threshold: Rate,
    /// Minutes to wait after the wave settled, before the next one starts.
    pub soak_minutes: u64,
    /// Whether the wave waits for an approval before it starts.
    pub approval: bool,
    pub approval_timeout_minutes: u64,
}

/// A wave as written: every optional field may be absent or null.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct WaveDocument {
    name: String,
    accounts: Vec<String>,
    regions: Option<Vec<String>>,
    location_concurrency: Option<String>,
    location_error_threshold: Option<String>,
    target_concurrency: Option<String>,
    target_error_threshold: Option<String>,
    soak_minutes: Option<u64>,
    approval: Option<bool>,
    approval_timeout_minutes: Option<u64>,
}

/// The run's values a wave falls back on.
pub(super) struct RunDefaults<'a> {
    pub regions: &'a [String],
    pub location_concurrency: Rate,
    pub location_error_threshold: Rate,
    pub target_concurrency: Rate,
    pub target_error_threshold: Rate,
}

impl WaveDocument {
    /// The wave with the run's values filled in. The schema accepted every rate already;
    /// a rate it let through that the grammar refuses is reported on the wave's field.
    pub(super) fn read(self, at: usize, run: &RunDefaults<'_>) -> Result<Wave, FieldError> {
        let rate = |field: &str, text: Option<String>, default: Rate, errors: bool| {
            let Some(text) = text else { return Ok(default) };
            let parsed = if errors {
                Rate::parse_errors(&text)
            } else {
                Rate::parse_concurrency(&text)
            };
            parsed.map_err(|e| FieldError {
                field: format!("waves[{at}].{field}"),
                rule: e.to_string(),
            })
        };

        let regions = match self.regions {
            Some(listed) => dedup(listed),
            None => run.regions.to_vec(),
        };
        Ok(Wave {
            name: self.name,
            accounts: self
                .accounts
                .into_iter()
                .map(AccountTarget::from_id)
                .collect(),
            regions,
            location_concurrency: rate(
                "locationConcurrency",
                self.location_concurrency,
                run.location_concurrency,
                false,
            )?,
            location_error_threshold: rate(
                "locationErrorThreshold",
                self.location_error_threshold,
                run.location_error_threshold,
                true,
            )?,
            target_concurrency: rate(
                "targetConcurrency",
                self.target_concurrency,
                run.target_concurrency,
                false,
            )?,
            target_error_threshold: rate(
                "targetErrorThreshold",
                self.target_error_threshold,
                run.target_error_threshold,
                true,
            )?,
            soak_minutes: self.soak_minutes.unwrap_or(0),
            approval: self.approval.unwrap_or(false),
            approval_timeout_minutes: self
                .approval_timeout_minutes
                .unwrap_or(DEFAULT_APPROVAL_TIMEOUT_MINUTES),
        })
    }
}

/// The entries in the order first written, without duplicates.
pub(super) fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// The rules across waves, on the raw input the schema accepted: a wave name used twice,
/// and an entry of a later wave's `accounts` that an earlier wave already names for every
/// Region the later wave covers (the later wave would get nothing from it).
pub(super) fn cross_wave_violations(input: &Value) -> Vec<FieldError> {
    let Some(waves) = input.get("waves").and_then(Value::as_array) else {
        return Vec::new();
    };
    let run_regions = strings(input.get("regions"));

    let mut errors = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    // Each entry: every place it was named, with the Regions of that wave.
    let mut named: HashMap<&str, Vec<Named<'_>>> = HashMap::new();
    for (w, wave) in waves.iter().enumerate() {
        if let Some(name) = wave.get("name").and_then(Value::as_str) {
            match names.get(name) {
                Some(first) => errors.push(FieldError {
                    field: format!("waves[{w}].name"),
                    rule: format!("{name} is already the name of waves[{first}]: each wave needs its own name"),
                }),
                None => {
                    names.insert(name, w);
                }
            }
        }

        let regions = match wave.get("regions").filter(|r| !r.is_null()) {
            Some(r) => strings(Some(r)),
            None => run_regions.clone(),
        };
        for (i, id) in strings(wave.get("accounts")).into_iter().enumerate() {
            let earlier = named.entry(id).or_default();
            let covered = earlier
                .iter()
                .find(|(ew, _, er)| *ew != w && regions.iter().all(|r| er.contains(r)));
            if let Some((ew, ei, _)) = covered {
                errors.push(FieldError {
                    field: format!("waves[{w}].accounts[{i}]"),
                    rule: format!(
                        "duplicate of waves[{ew}].accounts[{ei}]: {id} in these Regions belongs to the earlier wave; name it once"
                    ),
                });
            }
            earlier.push((w, i, regions.clone()));
        }
    }
    errors
}

/// Where an account entry was named: (wave, entry, the wave's Regions).
type Named<'a> = (usize, usize, Vec<&'a str>);

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}
