//! The run summary and each location's figures: what aggregate stores on the run item and
//! sends in the "Patch Run Completed" event, and what every format of `fleetpatch report`
//! shows (the command renders them). Pure: built from the run and location records, bounded
//! so that the largest run's summary fits its item and its event.

use crate::model::{
    cut_text, first, Compliance, Counts, InstanceState, LocationOutcome, LocationRecord, RunRecord,
    RunStatus, SkippedAccount, MAX_LISTED_SKIPPED_ACCOUNTS,
};
pub use crate::waves::{wave_lines, wave_text, WaveLine};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// At most this many problem locations are listed in the summary and the event; the rest are
/// in the table (`problemLocationsOmitted` counts them).
pub const MAX_LISTED_LOCATIONS: usize = 100;
/// A listed location's reason is cut to this many bytes in the summary (the location item
/// keeps it whole). With [`MAX_LISTED_LOCATIONS`] and [`MAX_LISTED_SKIPPED_ACCOUNTS`], the
/// summary of the largest run stays far under EventBridge's 256 KB entry and leaves the run
/// item under DynamoDB's 400 KB (a test builds that run and measures both).
pub const MAX_REASON_BYTES: usize = 300;

/// One location in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationLine {
    /// `ACCOUNT/REGION`.
    pub location: String,
    pub outcome: LocationOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Instances in the group.
    pub targeted: u64,
    /// Instances per state, as the location's items say at the end.
    pub instances: Counts,
}

/// The run summary: stored on the run item, sent in the "Patch Run Completed" event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub run_id: String,
    pub status: RunStatus,
    pub operation: String,
    pub resource_group: String,
    /// The baseline snapshot every instance used.
    pub snapshot_id: Option<String>,
    pub locations: u64,
    pub location_outcomes: BTreeMap<LocationOutcome, u64>,
    /// Instances found in the groups.
    pub instances_targeted: u64,
    /// Instances per final state, over every location.
    pub instance_states: Counts,
    /// Compliance after the run, over the instances that ran.
    pub compliance: Compliance,
    /// Accounts left out of the run, and why (at most [`MAX_LISTED_SKIPPED_ACCOUNTS`]).
    pub skipped_accounts: Vec<SkippedAccount>,
    /// Accounts left out of the run but not listed.
    pub skipped_accounts_omitted: u64,
    /// Locations that did not succeed (at most [`MAX_LISTED_LOCATIONS`]).
    pub problem_locations: Vec<LocationLine>,
    /// True when more problem locations exist than are listed.
    pub problem_locations_truncated: bool,
    /// Problem locations not listed (each is in the table).
    pub problem_locations_omitted: u64,
    /// Set when the run was finished from its records alone (aggregate failed for good):
    /// compliance and the last SSM status of instances left in flight were not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_read: Option<String>,
    /// The run's waves, in order (none for a run without `waves`): at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveLine>,
}

/// A reason cut to [`MAX_REASON_BYTES`], saying how much was left out.
pub(crate) fn listed_reason(reason: &str) -> String {
    match cut_text(reason, MAX_REASON_BYTES) {
        (r, 0) => r,
        (r, cut) => format!("{r}... ({cut} more bytes in the location item)"),
    }
}

/// A location that did not succeed, as the summary lists it.
fn problem_line(l: &LocationRecord, outcome: LocationOutcome) -> LocationLine {
    LocationLine {
        location: l.location.to_string(),
        outcome,
        reason: l
            .reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(listed_reason),
        targeted: l.targeted,
        instances: l.counts.clone(),
    }
}

/// Builds the summary from the location records (pure).
pub fn summarize(
    run_id: &str,
    status: RunStatus,
    run: &RunRecord,
    locations: &[LocationRecord],
) -> RunSummary {
    let mut location_outcomes = BTreeMap::new();
    let mut instance_states = Counts::new();
    let mut compliance = Compliance::default();
    let mut problems = Vec::new();
    let mut targeted = 0;
    for l in locations {
        let outcome = l.outcome.unwrap_or(LocationOutcome::Error);
        *location_outcomes.entry(outcome).or_insert(0) += 1;
        for (state, n) in &l.counts {
            *instance_states.entry(*state).or_insert(0) += n;
        }
        targeted += l.targeted;
        if let Some(c) = &l.compliance {
            compliance.add(c);
        }
        if !matches!(
            outcome,
            LocationOutcome::Succeeded | LocationOutcome::NoTargets
        ) {
            problems.push(problem_line(l, outcome));
        }
    }
    let (problems, problems_omitted) = first(problems, MAX_LISTED_LOCATIONS);
    // plan lists at most as many; a record written before that bound is cut here
    let (skipped, more_skipped) = first(run.skipped_accounts.clone(), MAX_LISTED_SKIPPED_ACCOUNTS);
    RunSummary {
        run_id: run_id.to_string(),
        status,
        operation: run.input.operation.as_str().to_string(),
        resource_group: run.input.resource_group.clone(),
        snapshot_id: run.input.snapshot_id.clone(),
        locations: locations.len() as u64,
        location_outcomes,
        instances_targeted: targeted,
        instance_states,
        compliance,
        skipped_accounts: skipped,
        skipped_accounts_omitted: run.skipped_accounts_omitted + more_skipped,
        problem_locations: problems,
        problem_locations_truncated: problems_omitted > 0,
        problem_locations_omitted: problems_omitted,
        not_read: None,
        waves: Vec::new(),
    }
}

/// Instance states shown as SKIPPED: never sent, or not delivered, and not counted as errors.
pub const SKIPPED_STATES: [InstanceState; 8] = [
    InstanceState::Unmanaged,
    InstanceState::NotStarted,
    InstanceState::DeliveryTimedOut,
    InstanceState::Undeliverable,
    InstanceState::AccessDenied,
    InstanceState::InvalidPlatform,
    InstanceState::Cancelled,
    InstanceState::Terminated,
];

/// One location's figures as every report shows them (the `fleetpatch` command's table, CSV,
/// JSON and HTML): failed counts `Failed` and `ExecutionTimedOut`,
/// skipped counts [`SKIPPED_STATES`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationFigures {
    pub location: String,
    /// None while the location runs.
    pub outcome: Option<LocationOutcome>,
    pub targeted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub offline: u64,
    pub skipped: u64,
    /// Patches missing after the run, over the location's instances.
    pub missing: u64,
    pub pending_reboot: u64,
    pub reason: Option<String>,
}

pub fn location_figures(l: &LocationRecord) -> LocationFigures {
    let c = |k: InstanceState| l.counts.get(&k).copied().unwrap_or(0);
    let comp = l.compliance.unwrap_or_default();
    LocationFigures {
        location: l.location.to_string(),
        outcome: l.outcome,
        targeted: l.targeted,
        succeeded: c(InstanceState::Succeeded),
        failed: c(InstanceState::Failed) + c(InstanceState::ExecutionTimedOut),
        offline: c(InstanceState::Offline),
        skipped: SKIPPED_STATES.iter().map(|s| c(*s)).sum(),
        missing: comp.missing,
        pending_reboot: comp.installed_pending_reboot,
        reason: l.reason.clone().filter(|r| !r.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events;
    use crate::input;
    use crate::model::{Location, Phase};
    use serde_json::json;

    fn run() -> RunRecord {
        let input = input::validate(&json!({
            "operation": "Install", "resourceGroup": "g",
            "accounts": ["111111111111"], "regions": ["us-east-1"]
        }))
        .unwrap();
        RunRecord {
            accounts: vec!["111111111111".into()],
            skipped_accounts: vec![SkippedAccount {
                account: "999999999999".into(),
                reason: "SUSPENDED".into(),
            }],
            location_count: 2,
            locations_tolerated: Some(0),
            locations_done: 2,
            locations_failed: 1,
            ..RunRecord::started("r1", input, 0)
        }
    }

    fn loc(
        acct: &str,
        outcome: LocationOutcome,
        counts: &[(InstanceState, u64)],
        comp: Option<Compliance>,
    ) -> LocationRecord {
        LocationRecord {
            phase: Phase::Done,
            outcome: Some(outcome),
            targeted: counts.iter().map(|(_, v)| v).sum(),
            counts: counts.iter().map(|(k, v)| (*k, *v)).collect(),
            compliance: comp,
            ..LocationRecord::pending(Location::new(acct, "us-east-1"))
        }
    }

    #[test]
    fn summary_counts_outcomes_states_and_compliance() {
        let c1 = Compliance {
            instances: 2,
            compliant_instances: 1,
            installed: 10,
            missing: 3,
            ..Compliance::default()
        };
        let locations = vec![
            loc(
                "111111111111",
                LocationOutcome::Succeeded,
                &[(InstanceState::Succeeded, 2), (InstanceState::Offline, 1)],
                Some(c1),
            ),
            loc("222222222222", LocationOutcome::AccessDenied, &[], None),
        ];
        let s = summarize("r1", RunStatus::CompletedWithErrors, &run(), &locations);
        assert_eq!(s.locations, 2);
        assert_eq!(
            s.location_outcomes.get(&LocationOutcome::Succeeded),
            Some(&1)
        );
        assert_eq!(
            s.location_outcomes.get(&LocationOutcome::AccessDenied),
            Some(&1)
        );
        assert_eq!(s.instance_states.get(&InstanceState::Offline), Some(&1));
        assert_eq!(s.instances_targeted, 3);
        assert_eq!(s.compliance.missing, 3);
        assert_eq!(s.problem_locations.len(), 1);
        assert_eq!(s.problem_locations[0].location, "222222222222/us-east-1");
        assert_eq!(s.skipped_accounts[0].reason, "SUSPENDED");
        let figures = location_figures(&locations[0]);
        assert_eq!(
            (figures.succeeded, figures.offline, figures.skipped),
            (2, 1, 0)
        );
    }

    #[test]
    fn problem_locations_are_capped() {
        let locations: Vec<LocationRecord> = (0..150)
            .map(|i| {
                loc(
                    &format!("{:012}", i),
                    LocationOutcome::GroupNotFound,
                    &[],
                    None,
                )
            })
            .collect();
        let s = summarize("r1", RunStatus::CompletedWithErrors, &run(), &locations);
        assert_eq!(s.problem_locations.len(), MAX_LISTED_LOCATIONS);
        assert!(s.problem_locations_truncated);
        assert_eq!(s.problem_locations_omitted, 50);
        assert!(serde_json::to_vec(&s).unwrap().len() < events::MAX_DETAIL_BYTES);
    }

    /// The largest run the input allows: every field at its longest (1,000 distinct OU IDs of
    /// the longest form, 1,000 excluded accounts, 50 Regions, the longest group, role, URL
    /// and log group), 9,000 targeted accounts, an organization of 20,000 more accounts that
    /// were skipped, and 9,000 failed locations with 4 KB reasons and every state counted.
    /// (More than one run can really have: 9,000 accounts with 50 Regions would pass the
    /// location cap. An upper bound.)
    fn largest_run() -> (RunRecord, Vec<LocationRecord>) {
        let accounts: Vec<String> = (0..9_000u64)
            .map(|i| format!("{:012}", 100_000_000_000 + i))
            .collect();
        let ous: Vec<String> = (0..1_000)
            .map(|i| format!("ou-{i:0>32}-{i:0>32}"))
            .collect();
        let excluded: Vec<String> = (0..1_000u64)
            .map(|i| format!("{:012}", 300_000_000_000 + i))
            .collect();
        let regions: Vec<String> = (0..50).map(|i| format!("ap-southeast-{i}")).collect();
        let input = input::validate(&json!({
            "operation": "Install",
            "resourceGroup": "g".repeat(300),
            "accounts": ous,
            "excludeAccounts": excluded,
            "regions": regions,
            "executionRoleName": "r".repeat(64),
            "snapshotId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
            "installOverrideList": format!("https://example.com/{}", "l".repeat(2_028)),
            "cloudWatchLogGroup": "/".repeat(512),
            "deliveryTimeoutSeconds": 2_592_000,
        }))
        .unwrap();
        let all_skipped: Vec<SkippedAccount> = (0..20_000u64)
            .map(|i| SkippedAccount {
                account: format!("{:012}", 500_000_000_000 + i),
                reason: "PENDING_CLOSURE".into(),
            })
            .collect();
        let (skipped, omitted) = first(all_skipped, MAX_LISTED_SKIPPED_ACCOUNTS);
        let run = RunRecord {
            accounts: accounts.clone(),
            input,
            skipped_accounts: skipped,
            skipped_accounts_omitted: omitted,
            location_count: 9_000,
            ..run()
        };
        let counts: Vec<(InstanceState, u64)> =
            InstanceState::ALL.iter().map(|s| (*s, 99_999)).collect();
        let locations = accounts
            .iter()
            .map(|a| {
                let mut l = loc(a, LocationOutcome::Error, &counts, None);
                l.location = Location::new(a, "ap-southeast-49");
                l.reason = Some("é".repeat(2_048));
                l
            })
            .collect();
        (run, locations)
    }

    #[test]
    fn the_largest_run_fits_its_item_and_its_event() {
        // GIVEN the largest run, finished
        let (run, locations) = largest_run();
        let summary = summarize("r1", RunStatus::CompletedWithErrors, &run, &locations);
        // WHEN its run item is written as plan writes it, plus the summary aggregate adds
        let mut item = crate::store::items::run_item(&run).unwrap();
        let detail = serde_json::to_string(&summary).unwrap();
        for (k, v) in [
            ("summary", detail.clone()),
            ("status", "CompletedWithErrors".into()),
            ("finishedAt", "2026-11-30T00:00:00Z".into()),
            ("updatedAt", "2026-11-30T00:00:00Z".into()),
        ] {
            item.insert(k.into(), aws_sdk_dynamodb::types::AttributeValue::S(v));
        }
        for k in [
            "expiresAt",
            "instancesSent",
            "instancesDone",
            "locationsDone",
            "locationsFailed",
        ] {
            item.insert(
                k.into(),
                aws_sdk_dynamodb::types::AttributeValue::N("99999999".into()),
            );
        }
        let item_bytes = crate::store::item_size(&item);
        // THEN the item stays under DynamoDB's 400 KB, and the event under EventBridge's 256 KB
        // (and fleetpatch's own margin below it)
        println!(
            "largest run item: {item_bytes} bytes; completed event detail: {} bytes",
            detail.len()
        );
        assert!(
            item_bytes < crate::store::MAX_ITEM_BYTES,
            "run item is {item_bytes} bytes"
        );
        assert!(
            detail.len() < events::MAX_DETAIL_BYTES,
            "event detail is {} bytes",
            detail.len()
        );
        // AND the lists that were cut say how many entries were left out
        assert_eq!(summary.skipped_accounts.len(), MAX_LISTED_SKIPPED_ACCOUNTS);
        assert_eq!(summary.skipped_accounts_omitted, 20_000 - 200);
        assert_eq!(summary.problem_locations.len(), MAX_LISTED_LOCATIONS);
        assert_eq!(summary.problem_locations_omitted, 9_000 - 100);
        let reason = summary.problem_locations[0].reason.as_deref().unwrap();
        assert!(
            reason.ends_with("(3796 more bytes in the location item)"),
            "{reason}"
        );
    }
}
