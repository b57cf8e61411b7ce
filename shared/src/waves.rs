//! Waves, as pure decisions: which locations each wave holds, whether a settled wave passes
//! its gate, whether the next wave may start, and what a failed gate makes of the run.
//!
//! Invariants:
//! - a location belongs to exactly one wave, the first that reaches it (waves in order,
//!   each wave's accounts in order, each account in the wave's Regions in order); a run
//!   without `waves` is one wave, `all`, over every location, with the run's rates;
//! - the assignment is a function of the waves' resolved accounts and Regions alone, so a
//!   retried plan that reads the wave records back finds the same locations;
//! - a wave that fails its gate starts nothing after it: every later wave is Skipped, and
//!   each of its locations is settled Skipped with [`gate_failed_reason`] before any
//!   account of it is called;
//! - the summary lists a run's waves ([`wave_lines`], none for a run without `waves`), each
//!   caller-given word (who approved, why) cut to `report::MAX_REASON_BYTES`.

use crate::input::{AccountTarget, RunInput};
use crate::model::{
    ApprovalDecision, GateResult, Location, LocationRecord, Phase, RunRecord, RunStatus,
    WaveRecord, WaveStatus,
};
use crate::ratecontrol::threshold_passed;
use crate::task::CaughtError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// The name of the one wave of a run without `waves`.
pub const SINGLE_WAVE: &str = "all";

/// The most waves a run may have (the schema's `maxItems`): each wave adds a few dozen
/// events to the run's history (`limits` counts them).
pub const MAX_WAVES: u64 = 20;

/// Why the locations of the waves after a failed gate never start.
pub fn gate_failed_reason(wave: &str) -> String {
    format!("wave {wave} failed its gate")
}

/// One wave's targets after OU resolution: its accounts (excludes applied) and Regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveTargets {
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
}

/// Each wave's locations, and how many it named that an earlier wave already held.
pub fn assign(targets: &[WaveTargets]) -> Vec<(Vec<Location>, u64)> {
    let mut claimed: HashSet<(String, String)> = HashSet::new();
    targets
        .iter()
        .map(|t| {
            let mut mine = Vec::new();
            let mut overlaps = 0;
            for a in &t.accounts {
                for r in &t.regions {
                    if claimed.insert((a.clone(), r.clone())) {
                        mine.push(Location::new(a.clone(), r.clone()));
                    } else {
                        overlaps += 1;
                    }
                }
            }
            (mine, overlaps)
        })
        .collect()
}

/// The waves of a run as plan records them (Pending), with each wave's locations. `targets`
/// holds one entry per wave of the input (one for a run without `waves`).
pub fn plan(input: &RunInput, targets: &[WaveTargets]) -> Vec<(WaveRecord, Vec<Location>)> {
    let assigned = assign(targets);
    assigned
        .into_iter()
        .zip(targets)
        .enumerate()
        .map(|(i, ((locations, overlaps), t))| {
            let n = locations.len() as u64;
            let record = match input.waves.get(i) {
                Some(w) => WaveRecord {
                    name: w.name.clone(),
                    location_window: w.location_concurrency.window(n),
                    locations_tolerated: w.location_error_threshold.tolerated_errors(n),
                    soak_seconds: w.soak_minutes * 60,
                    approval: w.approval,
                    approval_timeout_seconds: w.approval_timeout_minutes * 60,
                    ..pending_wave(i as u32, t, n, overlaps)
                },
                None => WaveRecord {
                    location_window: input.location_concurrency.window(n),
                    locations_tolerated: input.location_error_threshold.tolerated_errors(n),
                    ..pending_wave(i as u32, t, n, overlaps)
                },
            };
            (record, locations)
        })
        .collect()
}

fn pending_wave(index: u32, t: &WaveTargets, n: u64, overlaps: u64) -> WaveRecord {
    WaveRecord {
        index,
        name: SINGLE_WAVE.into(),
        status: WaveStatus::Pending,
        accounts: t.accounts.clone(),
        regions: t.regions.clone(),
        location_count: n,
        overlaps,
        location_window: 1,
        locations_tolerated: None,
        soak_seconds: 0,
        approval: false,
        approval_timeout_seconds: 0,
        started_at: None,
        ended_at: None,
        gate: None,
        reason: None,
        approval_decision: None,
    }
}

/// The waves' records, and their locations in wave order with each one's wave index.
pub fn flatten(
    planned: Vec<(WaveRecord, Vec<Location>)>,
) -> (Vec<WaveRecord>, Vec<Location>, Vec<u32>) {
    let indices = planned
        .iter()
        .flat_map(|(w, l)| std::iter::repeat_n(w.index, l.len()))
        .collect();
    let (records, locations): (Vec<WaveRecord>, Vec<Vec<Location>>) = planned.into_iter().unzip();
    (records, locations.into_iter().flatten().collect(), indices)
}

/// Each wave's targets from the run's resolved accounts alone, for when the waves were not
/// resolved one by one (the CLI's preview): a wave keeps the accounts it names by ID, and
/// the accounts only OUs or roots reach go to the first wave that names one. A run without
/// waves is one wave over every account.
pub fn targets_from(input: &RunInput, resolved: &[String]) -> Vec<WaveTargets> {
    if input.waves.is_empty() {
        return vec![WaveTargets {
            accounts: resolved.to_vec(),
            regions: input.regions.clone(),
        }];
    }
    let by_id = |t: &AccountTarget| match t {
        AccountTarget::Account(id) => Some(id.clone()),
        _ => None,
    };
    let named: HashSet<String> = input
        .waves
        .iter()
        .flat_map(|w| w.accounts.iter().filter_map(by_id))
        .collect();
    let mut rest_given = false;
    input
        .waves
        .iter()
        .map(|w| {
            let mine: HashSet<String> = w.accounts.iter().filter_map(by_id).collect();
            let takes_rest = !rest_given && w.accounts.iter().any(|t| by_id(t).is_none());
            rest_given |= takes_rest;
            let accounts = resolved
                .iter()
                .filter(|a| mine.contains(*a) || (takes_rest && !named.contains(*a)))
                .cloned()
                .collect();
            WaveTargets {
                accounts,
                regions: w.regions.clone(),
            }
        })
        .collect()
}

/// The locations of recorded waves, each with its wave index: what plan wrote.
pub fn locations_of(waves: &[WaveRecord]) -> Vec<(Location, u32)> {
    let targets: Vec<WaveTargets> = waves
        .iter()
        .map(|w| WaveTargets {
            accounts: w.accounts.clone(),
            regions: w.regions.clone(),
        })
        .collect();
    assign(&targets)
        .into_iter()
        .zip(waves)
        .flat_map(|((locs, _), w)| locs.into_iter().map(move |l| (l, w.index)))
        .collect()
}

/// The gate of a wave whose Map is over. A location not settled yet (its child ended
/// early; aggregate will give it Error) counts as failed.
pub fn gate(wave: &WaveRecord, locations: &[LocationRecord]) -> GateResult {
    let failed = locations
        .iter()
        .filter(|l| l.wave == wave.index)
        .filter(|l| l.phase != Phase::Done || l.outcome.is_none_or(|o| o.counts_as_failure()))
        .count() as u64;
    GateResult {
        passed: !threshold_passed(failed, wave.locations_tolerated),
        locations_failed: failed,
        locations_tolerated: wave.locations_tolerated,
    }
}

/// The wave's locations not settled yet: what a skipped wave settles Skipped.
pub fn unsettled(locations: &[LocationRecord], wave: u32) -> Vec<Location> {
    locations
        .iter()
        .filter(|l| l.wave == wave && l.phase != Phase::Done)
        .map(|l| l.location.clone())
        .collect()
}

/// The wave's locations, in plan's order, as the Map's items (`ACCOUNT/REGION`).
pub fn items(waves: &[WaveRecord], wave: u32) -> Vec<String> {
    locations_of(waves)
        .into_iter()
        .filter(|(_, w)| *w == wave)
        .map(|(l, _)| l.to_string())
        .collect()
}

/// The final status of a run in which a wave failed its gate before a later wave, or was
/// not approved: `StoppedByGate`, unless a halt or an operator's stop already says why the run ended. A
/// failed gate on the last wave stops nothing (a run without waves is one wave): the
/// status stands.
pub fn final_status(status: RunStatus, waves: &[WaveRecord]) -> RunStatus {
    let last = waves.iter().map(|w| w.index).max().unwrap_or(0);
    let gate_failed = waves.iter().any(|w| {
        (w.status == WaveStatus::GateFailed && w.index < last) || w.status == WaveStatus::Rejected
    });
    match status {
        RunStatus::Succeeded | RunStatus::CompletedWithErrors | RunStatus::StoppedByThreshold
            if gate_failed =>
        {
            RunStatus::StoppedByGate
        }
        s => s,
    }
}

/// Who approved, from the output SendTaskSuccess was given: `fleetpatch approve` sends
/// `{"approvedBy": ARN, "via": "cli"}`; any other caller (the console, a tool) is recorded
/// as `console`, by whom it says if it says so. The identity is the caller's own word:
/// CloudTrail's SendTaskSuccess event holds the verified principal.
pub fn approval_from(output: Option<&Value>, at: i64) -> ApprovalDecision {
    let text = |k: &str| {
        output
            .and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .map(bounded)
    };
    ApprovalDecision {
        approved: true,
        by: text("approvedBy").unwrap_or_else(|| "unknown".into()),
        at,
        via: text("via").unwrap_or_else(|| "console".into()),
        reason: text("reason"),
    }
}

/// A caller's words, cut to what a summary line keeps (the caller chooses their length).
fn bounded(s: &str) -> String {
    crate::model::cut_text(s, crate::report::MAX_REASON_BYTES).0
}

/// Who rejected, from SendTaskFailure's error (`fleetpatch reject` sends the error
/// `WaveRejected` and a JSON cause `{"rejectedBy", "via": "cli", "reason"}`), or the
/// approval's timeout (`States.Timeout`), which counts as a rejection.
pub fn rejection_from(error: Option<&CaughtError>, at: i64) -> ApprovalDecision {
    let name = error.map_or("", |e| e.error.as_str());
    if name == "States.Timeout" || name == "States.HeartbeatTimeout" {
        return ApprovalDecision {
            approved: false,
            by: "timeout".into(),
            at,
            via: "timeout".into(),
            reason: Some("no approval before approvalTimeoutMinutes passed".into()),
        };
    }
    let cause: Option<Value> = error.and_then(|e| serde_json::from_str(&e.cause).ok());
    let text = |k: &str| {
        cause
            .as_ref()
            .and_then(|c| c.get(k))
            .and_then(Value::as_str)
            .map(bounded)
    };
    let plain = error.map(|e| bounded(&format!("{}: {}", e.error, e.cause)));
    ApprovalDecision {
        approved: false,
        by: text("rejectedBy").unwrap_or_else(|| "unknown".into()),
        at,
        via: text("via").unwrap_or_else(|| "console".into()),
        reason: text("reason").or(plain),
    }
}

/// Why a wave that was not approved, and the waves after it, never started.
pub fn not_approved_reason(wave: &str, decision: &ApprovalDecision) -> String {
    match decision.via.as_str() {
        "timeout" => format!("wave {wave} was not approved in time"),
        _ => format!("wave {wave} was rejected by {}", decision.by),
    }
}

/// The waves before `index`, as the awaiting-approval event shows them.
pub fn previous(waves: &[WaveRecord], index: u32) -> Vec<Value> {
    waves
        .iter()
        .filter(|w| w.index < index)
        .map(|w| {
            serde_json::json!({
                "name": w.name,
                "status": w.status.as_str(),
                "locations": w.location_count,
                "gate": w.gate,
            })
        })
        .collect()
}

/// How long the state machine waits for `seconds` of soak when the clock it is measured on
/// runs `speed` times faster than the wall clock (the local stack's simulated clock; 1 in
/// production): rounded up, so the soak is never shorter than asked.
pub fn soak_wait_seconds(seconds: u64, speed: u64) -> u64 {
    seconds.div_ceil(speed.max(1))
}

/// One wave in the summary and the completion event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveLine {
    pub name: String,
    pub status: WaveStatus,
    pub locations: u64,
    /// Locations it named that an earlier wave held.
    pub overlaps: u64,
    /// ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalDecision>,
}

/// The summary's waves: one line per wave of a run with `waves`; none for a run without
/// (its one wave, `all`, is the run itself).
pub fn wave_lines(run: &RunRecord, waves: &[WaveRecord]) -> Vec<WaveLine> {
    if run.input.waves.is_empty() {
        return Vec::new();
    }
    waves
        .iter()
        .map(|w| WaveLine {
            name: w.name.clone(),
            status: w.status,
            locations: w.location_count,
            overlaps: w.overlaps,
            started_at: w.started_at.map(crate::clock::iso),
            ended_at: w.ended_at.map(crate::clock::iso),
            gate: w.gate,
            reason: w.reason.as_deref().map(crate::report::listed_reason),
            approval: w.approval_decision.clone(),
        })
        .collect()
}

/// A wave in words, for the human report: `canary: Passed, 3 location(s), gate passed
/// (0 failed, 0 tolerated), 2026-12-08T02:00:00Z to 2026-12-08T02:40:00Z`.
pub fn wave_text(w: &WaveLine) -> String {
    let mut out = format!(
        "{}: {}, {} location(s)",
        w.name,
        w.status.as_str(),
        w.locations
    );
    if w.overlaps > 0 {
        out.push_str(&format!(" ({} held by an earlier wave)", w.overlaps));
    }
    if let Some(g) = &w.gate {
        let verdict = if g.passed { "passed" } else { "failed" };
        let tolerated = g
            .locations_tolerated
            .map_or("no limit".into(), |t| t.to_string());
        out.push_str(&format!(
            ", gate {verdict} ({} failed, {tolerated} tolerated)",
            g.locations_failed
        ));
    }
    if let Some(a) = &w.approval {
        let verdict = if a.approved { "approved" } else { "rejected" };
        out.push_str(&format!(
            ", {verdict} by {} via {} at {}",
            a.by,
            a.via,
            crate::clock::iso(a.at)
        ));
    }
    if let (Some(s), Some(e)) = (&w.started_at, &w.ended_at) {
        out.push_str(&format!(", {s} to {e}"));
    }
    if let Some(r) = &w.reason {
        out.push_str(&format!(": {r}"));
    }
    out
}

#[cfg(test)]
mod tests;
