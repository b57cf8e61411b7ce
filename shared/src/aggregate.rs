//! The `aggregate` function: read every location's outcome, fetch post-run patch compliance
//! (DescribeInstancePatchStates, 50 instances a call) for the instances that ran (after
//! recording the last SSM status of any instance a failed location left in flight), write the
//! run summary and final status, and announce the run's end.

use crate::clients::{AssumeError, ClientFactory};
use crate::config::Config;
use crate::dispatch::{
    follow_commands, mark_not_started, resolve_claim, set_state, ClaimResolution,
};
use crate::error::Result;
use crate::events;
use crate::expand::count_states;
use crate::fleet;
use crate::model::{cut_text, first};
use crate::model::{InstanceState, Location, LocationOutcome, RunStatus};
use crate::store::{
    now_epoch_ms, BatchState, Compliance, InstanceRecord, LocationRecord, Phase, SkippedAccount,
    Store, MAX_LISTED_SKIPPED_ACCOUNTS,
};
use crate::task::AggregateRequest;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tracing::{info, warn};

/// Locations read for compliance at once.
pub const COMPLIANCE_CONCURRENCY: usize = 8;
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
    /// Outcome.
    pub outcome: LocationOutcome,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Instances in the group.
    pub targeted: u64,
    /// Instances per state.
    pub instances: BTreeMap<String, u64>,
}

/// The run summary: stored on the run item, sent in the "Patch Run Completed" event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run ID.
    pub run_id: String,
    /// Final status.
    pub status: RunStatus,
    /// Scan or Install.
    pub operation: String,
    /// The resource group.
    pub resource_group: String,
    /// The baseline snapshot every instance used.
    pub snapshot_id: Option<String>,
    /// Number of locations.
    pub locations: u64,
    /// Locations per outcome.
    pub location_outcomes: BTreeMap<String, u64>,
    /// Instances found in the groups.
    pub instances_targeted: u64,
    /// Instances per final state.
    pub instance_states: BTreeMap<String, u64>,
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
}

/// A reason cut to [`MAX_REASON_BYTES`], saying how much was left out.
fn listed_reason(reason: &str) -> String {
    match cut_text(reason, MAX_REASON_BYTES) {
        (r, 0) => r,
        (r, cut) => format!("{r}... ({cut} more bytes in the location item)"),
    }
}

/// The final status of a run from its locations. Rule: the run stopped by the location
/// threshold if it was stopping; succeeded if every location succeeded or had nothing to
/// patch; otherwise completed with errors.
pub fn final_status(stopping: bool, outcomes: &[LocationOutcome]) -> RunStatus {
    if stopping {
        RunStatus::StoppedByThreshold
    } else if outcomes
        .iter()
        .all(|o| matches!(o, LocationOutcome::Succeeded | LocationOutcome::NoTargets))
    {
        RunStatus::Succeeded
    } else {
        RunStatus::CompletedWithErrors
    }
}

/// Builds the summary from the location records (pure).
pub fn summarize(
    run_id: &str,
    status: RunStatus,
    run: &crate::store::RunRecord,
    locations: &[LocationRecord],
) -> RunSummary {
    let mut location_outcomes = BTreeMap::new();
    let mut instance_states = BTreeMap::new();
    let mut compliance = Compliance::default();
    let mut problems = Vec::new();
    let mut targeted = 0;
    for l in locations {
        let outcome = l.outcome.unwrap_or(LocationOutcome::Error);
        *location_outcomes
            .entry(outcome.as_str().to_string())
            .or_insert(0) += 1;
        for (k, v) in &l.counts {
            *instance_states.entry(k.clone()).or_insert(0) += v;
        }
        targeted += l.targeted;
        if let Some(c) = &l.compliance {
            compliance.add(c);
        }
        if !matches!(
            outcome,
            LocationOutcome::Succeeded | LocationOutcome::NoTargets
        ) {
            problems.push(LocationLine {
                location: l
                    .location
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                outcome,
                reason: l
                    .reason
                    .as_deref()
                    .filter(|r| !r.is_empty())
                    .map(listed_reason),
                targeted: l.targeted,
                instances: l.counts.clone(),
            });
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
    }
}

/// What finishing a location learned.
#[derive(Debug, Default)]
struct Finished {
    compliance: Option<Compliance>,
    counts: Option<BTreeMap<String, u64>>,
}

/// What `aggregate` needs.
pub struct Aggregator<F> {
    /// Configuration.
    pub config: Config,
    /// The table.
    pub store: Store,
    /// Clients per location (compliance is read in the target accounts).
    pub factory: F,
    /// EventBridge.
    pub events: aws_sdk_eventbridge::Client,
}

impl<F: ClientFactory> Aggregator<F> {
    /// Aggregates a finished run.
    pub async fn handle(&self, req: AggregateRequest) -> Result<RunSummary> {
        let run_id = req.run_id.as_str();
        let run = self.store.get_run(run_id).await?;
        let mut locations = self.store.list_locations(run_id).await?;
        // A location the Map never settled still gets an outcome.
        for l in locations
            .iter_mut()
            .filter(|l| l.phase != Some(Phase::Done))
        {
            let Some(loc) = l.location.clone() else {
                continue;
            };
            let why = "the location never finished (its child execution ended early)";
            self.store
                .settle_location(run_id, &loc, LocationOutcome::Error, Some(why))
                .await?;
            l.outcome = Some(LocationOutcome::Error);
            l.reason = Some(why.into());
        }
        let run_ref = &run;
        let finished: Vec<(usize, Finished)> = stream::iter(locations.iter().enumerate())
            .map(|(i, l)| async move { (i, self.finish_location(run_id, run_ref, l).await) })
            .buffer_unordered(COMPLIANCE_CONCURRENCY)
            .filter_map(|(i, r)| async move {
                match r {
                    Ok(f) => Some((i, f)),
                    Err(e) => {
                        warn!(error = %e, "a location's last states or compliance could not be read");
                        None
                    }
                }
            })
            .collect()
            .await;
        for (i, f) in finished {
            if f.compliance.is_some() {
                locations[i].compliance = f.compliance;
            }
            if let Some(c) = f.counts {
                locations[i].counts = c;
            }
        }
        let run = self.store.get_run(run_id).await?;
        let outcomes: Vec<LocationOutcome> = locations
            .iter()
            .map(|l| l.outcome.unwrap_or(LocationOutcome::Error))
            .collect();
        let status = final_status(run.status == RunStatus::Stopping, &outcomes);
        let summary = summarize(run_id, status, &run, &locations);
        let first = self.store.finish_run(run_id, status, &summary).await?;
        if !first && self.store.completed_event_sent(run_id).await? {
            // Another attempt (a retry beside this timed-out one) finished and announced it.
            info!(
                run_id,
                "run already finished and announced by another attempt"
            );
            return Ok(summary);
        }
        events::put_event(
            &self.events,
            &self.config.event_bus,
            events::RUN_COMPLETED,
            &summary,
        )
        .await?;
        self.store.mark_completed_event_sent(run_id).await?;
        info!(
            run_id,
            status = status.as_str(),
            locations = summary.locations,
            "run completed"
        );
        Ok(summary)
    }

    /// Finishes one location: instances a failed location left in flight get their last
    /// status from SSM (and Pending ones become NotStarted), then compliance is read for
    /// every instance that was sent a command.
    async fn finish_location(
        &self,
        run_id: &str,
        run: &crate::store::RunRecord,
        l: &LocationRecord,
    ) -> Result<Finished> {
        let Some(loc) = l.location.clone() else {
            return Ok(Finished::default());
        };
        let count_of = |pred: fn(InstanceState) -> bool| {
            l.counts
                .iter()
                .filter(|(k, _)| k.parse::<InstanceState>().is_ok_and(pred))
                .map(|(_, v)| *v)
                .sum::<u64>()
        };
        let sent = count_of(InstanceState::was_sent);
        let live = count_of(|s| !s.is_terminal());
        if sent == 0 && live == 0 {
            return Ok(Finished::default());
        }
        let read_from_ms = now_epoch_ms();
        let (mut instances, batches) = self.store.list_location_items(run_id, &loc).await?;
        let clients = match self
            .factory
            .clients(&loc, &run.input.execution_role_name, run_id)
            .await
        {
            Ok(c) => c,
            Err(AssumeError::AccessDenied { .. }) => return Ok(Finished::default()),
            Err(AssumeError::Other(e)) => return Err(e),
        };
        if instances.iter().any(|i| !i.state.is_terminal()) {
            self.record_last_states(run_id, &loc, &clients.ssm, &mut instances, &batches)
                .await?;
        }
        // The stored counts are a snapshot of a dispatch round (settle may have moved
        // instances since): the summary reports what the instance items say.
        let states: Vec<InstanceState> = instances.iter().map(|i| i.state).collect();
        let c = count_states(&states);
        let counts = if c != l.counts {
            let errors = states.iter().filter(|s| s.counts_as_error()).count() as u64;
            self.store
                .set_location_progress(
                    run_id,
                    &loc,
                    &count_states(&states),
                    errors,
                    l.stopping,
                    read_from_ms,
                )
                .await?;
            Some(c)
        } else {
            None
        };
        let ids: Vec<String> = instances
            .iter()
            .filter(|i| i.state.was_sent())
            .map(|i| i.instance_id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(Finished {
                compliance: None,
                counts,
            });
        }
        let states = fleet::patch_states(&clients.ssm, &ids).await?;
        let mut total = Compliance::default();
        for (id, c) in &states {
            self.store
                .set_instance_compliance(run_id, &loc, id, c)
                .await?;
            total.add(c);
        }
        self.store
            .set_location_compliance(run_id, &loc, &total)
            .await?;
        Ok(Finished {
            compliance: Some(total),
            counts,
        })
    }

    /// Records what SSM last said of instances still in flight, and ends the rest: a batch
    /// left Claimed (its send never recorded) adopts its own command if SSM has it, else
    /// its instances end NotStarted; Pending ones end NotStarted. Nothing more will be sent
    /// in this run.
    async fn record_last_states(
        &self,
        run_id: &str,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        instances: &mut [InstanceRecord],
        batches: &[crate::store::BatchRecord],
    ) -> Result<()> {
        let mut raced = false;
        for b in batches.iter().filter(|b| b.state == BatchState::Claimed) {
            let to = InstanceState::NotStarted;
            match resolve_claim(&self.store, run_id, loc, ssm, b, Some(to)).await? {
                ClaimResolution::Adopted(cmd) => set_state(
                    instances,
                    &b.instance_ids,
                    InstanceState::InFlight,
                    Some(&cmd),
                ),
                ClaimResolution::Released => set_state(instances, &b.instance_ids, to, None),
                ClaimResolution::Waiting | ClaimResolution::Raced => raced = true,
            }
        }
        if raced {
            // Someone else resolved a claim first: read back what they recorded.
            let (fresh, _) = self.store.list_location_items(run_id, loc).await?;
            for f in fresh {
                if let Some(inst) = instances
                    .iter_mut()
                    .find(|i| i.instance_id == f.instance_id)
                {
                    *inst = f;
                }
            }
        }
        follow_commands(&self.store, run_id, loc, ssm, instances).await?;
        let pending: Vec<String> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Pending)
            .map(|i| i.instance_id.clone())
            .collect();
        mark_not_started(
            &self.store,
            run_id,
            loc,
            instances,
            &pending,
            "the location ended before it started",
        )
        .await?;
        Ok(())
    }
}

/// Renders a human report of a run: one line per location, then totals.
pub fn render_report(summary: &RunSummary, locations: &[LocationRecord]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run {}  {}  {} on group {}  -> {}",
        summary.run_id,
        summary.snapshot_id.as_deref().unwrap_or("-"),
        summary.operation,
        summary.resource_group,
        summary.status.as_str()
    );
    let _ = writeln!(
        out,
        "{:<28} {:<20} {:>8} {:>9} {:>7} {:>8} {:>8} {:>9} {:>10}  WHY",
        "LOCATION",
        "OUTCOME",
        "TARGETED",
        "SUCCEEDED",
        "FAILED",
        "OFFLINE",
        "SKIPPED",
        "MISSING",
        "PENDREBOOT",
    );
    let mut sorted: Vec<&LocationRecord> = locations.iter().collect();
    sorted.sort_by_key(|l| l.location.clone().map(|x: Location| x.to_string()));
    for l in sorted {
        let c = |k: InstanceState| l.counts.get(k.as_str()).copied().unwrap_or(0);
        let failed = c(InstanceState::Failed) + c(InstanceState::ExecutionTimedOut);
        let skipped = c(InstanceState::Unmanaged)
            + c(InstanceState::NotStarted)
            + c(InstanceState::DeliveryTimedOut)
            + c(InstanceState::Undeliverable)
            + c(InstanceState::AccessDenied)
            + c(InstanceState::InvalidPlatform)
            + c(InstanceState::Cancelled)
            + c(InstanceState::Terminated);
        let comp = l.compliance.unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<28} {:<20} {:>8} {:>9} {:>7} {:>8} {:>8} {:>9} {:>10}  {}",
            l.location
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            l.outcome
                .map(LocationOutcome::as_str)
                .unwrap_or("(running)"),
            l.targeted,
            c(InstanceState::Succeeded),
            failed,
            c(InstanceState::Offline),
            skipped,
            comp.missing,
            comp.installed_pending_reboot,
            l.reason.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "Locations: {}  Instances targeted: {}  States: {}",
        summary
            .location_outcomes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        summary.instances_targeted,
        summary
            .instance_states
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let comp = &summary.compliance;
    let _ = writeln!(
        out,
        "Compliance: {}/{} instances compliant; installed {}, missing {}, failed {}, pending reboot {}",
        comp.compliant_instances, comp.instances, comp.installed, comp.missing, comp.failed, comp.installed_pending_reboot
    );
    if !summary.skipped_accounts.is_empty() {
        let more = match summary.skipped_accounts_omitted {
            0 => String::new(),
            n => format!(", and {n} more"),
        };
        let _ = writeln!(
            out,
            "Accounts not targeted: {}{more}",
            summary
                .skipped_accounts
                .iter()
                .map(|s| format!("{} ({})", s.account, s.reason))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input;
    use crate::store::RunRecord;
    use serde_json::json;

    fn run() -> RunRecord {
        RunRecord {
            run_id: "r1".into(),
            status: RunStatus::Running,
            input: input::validate(&json!({
                "operation": "Install", "resourceGroup": "g",
                "accounts": ["111111111111"], "regions": ["us-east-1"]
            }))
            .unwrap(),
            accounts: vec!["111111111111".into()],
            skipped_accounts: vec![SkippedAccount {
                account: "999999999999".into(),
                reason: "SUSPENDED".into(),
            }],
            skipped_accounts_omitted: 0,
            location_count: 2,
            location_window: 1,
            locations_tolerated: Some(0),
            locations_done: 2,
            locations_failed: 1,
            created_at: 0,
        }
    }

    fn loc(
        acct: &str,
        outcome: LocationOutcome,
        counts: &[(&str, u64)],
        comp: Option<Compliance>,
    ) -> LocationRecord {
        LocationRecord {
            location: Some(Location::new(acct, "us-east-1")),
            phase: Some(Phase::Done),
            outcome: Some(outcome),
            targeted: counts.iter().map(|(_, v)| v).sum(),
            counts: counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            compliance: comp,
            ..LocationRecord::default()
        }
    }

    #[test]
    fn final_status_for_each_outcome_mix() {
        use LocationOutcome::*;
        assert_eq!(
            final_status(false, &[Succeeded, NoTargets]),
            RunStatus::Succeeded
        );
        assert_eq!(
            final_status(false, &[Succeeded, CompletedWithErrors]),
            RunStatus::CompletedWithErrors
        );
        assert_eq!(
            final_status(false, &[Succeeded, AccessDenied]),
            RunStatus::CompletedWithErrors
        );
        assert_eq!(
            final_status(false, &[GroupNotFound]),
            RunStatus::CompletedWithErrors
        );
        assert_eq!(
            final_status(false, &[Incomplete]),
            RunStatus::CompletedWithErrors
        );
        assert_eq!(
            final_status(true, &[ThresholdExceeded, Skipped, Skipped]),
            RunStatus::StoppedByThreshold
        );
        assert_eq!(final_status(false, &[]), RunStatus::Succeeded);
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
                &[("Succeeded", 2), ("Offline", 1)],
                Some(c1),
            ),
            loc("222222222222", LocationOutcome::AccessDenied, &[], None),
        ];
        let s = summarize("r1", RunStatus::CompletedWithErrors, &run(), &locations);
        assert_eq!(s.locations, 2);
        assert_eq!(s.location_outcomes.get("Succeeded"), Some(&1));
        assert_eq!(s.location_outcomes.get("AccessDenied"), Some(&1));
        assert_eq!(s.instance_states.get("Offline"), Some(&1));
        assert_eq!(s.instances_targeted, 3);
        assert_eq!(s.compliance.missing, 3);
        assert_eq!(s.problem_locations.len(), 1);
        assert_eq!(s.problem_locations[0].location, "222222222222/us-east-1");
        assert_eq!(s.skipped_accounts[0].reason, "SUSPENDED");
        let report = render_report(&s, &locations);
        assert!(report.contains("222222222222/us-east-1"));
        assert!(report.contains("AccessDenied"));
        assert!(report.contains("Compliance: 1/2 instances compliant"));
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
        let counts: Vec<(&str, u64)> = InstanceState::ALL
            .iter()
            .map(|s| (s.as_str(), 99_999))
            .collect();
        let locations = accounts
            .iter()
            .map(|a| {
                let mut l = loc(a, LocationOutcome::Error, &counts, None);
                l.location = Some(Location::new(a, "ap-southeast-49"));
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
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version_latest()
                .build(),
        );
        let store = Store::new(client, "fleetpatch-runs", 90);
        let mut item = store.run_item(&run).unwrap();
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
        let report = render_report(&summary, &[]);
        assert!(report.contains("and 19800 more"), "{report}");
    }
}
