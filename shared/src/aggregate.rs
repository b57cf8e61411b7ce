//! The `aggregate` function: read every location's outcome, fetch post-run patch compliance
//! (DescribeInstancePatchStates, 50 instances a call) for the instances that ran (after
//! recording the last SSM status of any instance a failed location left in flight), write the
//! run summary and final status, and announce the run's end.

use crate::clients::{AssumeError, ClientFactory};
use crate::config::Config;
use crate::dispatch::follow_commands;
use crate::error::Result;
use crate::events;
use crate::expand::count_states;
use crate::fleet;
use crate::model::{InstanceState, Location, LocationOutcome, RunStatus};
use crate::store::{
    now_epoch_ms, Compliance, InstanceRecord, LocationRecord, Phase, SkippedAccount, Store,
};
use crate::task::AggregateRequest;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tracing::{info, warn};

/// Locations read for compliance at once.
pub const COMPLIANCE_CONCURRENCY: usize = 8;
/// At most this many problem locations are listed in the summary and the event; the rest are
/// in the table.
pub const MAX_LISTED_LOCATIONS: usize = 100;

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
    /// Accounts left out of the run, and why.
    pub skipped_accounts: Vec<SkippedAccount>,
    /// Locations that did not succeed (at most 100).
    pub problem_locations: Vec<LocationLine>,
    /// True when more problem locations exist than are listed.
    pub problem_locations_truncated: bool,
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
                reason: l.reason.clone().filter(|r| !r.is_empty()),
                targeted: l.targeted,
                instances: l.counts.clone(),
            });
        }
    }
    let truncated = problems.len() > MAX_LISTED_LOCATIONS;
    problems.truncate(MAX_LISTED_LOCATIONS);
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
        skipped_accounts: run.skipped_accounts.clone(),
        problem_locations: problems,
        problem_locations_truncated: truncated,
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
        let (mut instances, _) = self.store.list_location_items(run_id, &loc).await?;
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
            self.record_last_states(run_id, &loc, &clients.ssm, &mut instances)
                .await?;
            let states: Vec<InstanceState> = instances.iter().map(|i| i.state).collect();
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
        }
        // The summary counts what the instance items say now.
        let counts = Some(count_states(instances.iter().map(|i| &i.state)));
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

    /// Records what SSM last said of instances still in flight, and turns Pending ones into
    /// NotStarted: nothing more will be sent in this run.
    async fn record_last_states(
        &self,
        run_id: &str,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        instances: &mut [InstanceRecord],
    ) -> Result<()> {
        follow_commands(&self.store, run_id, loc, ssm, instances).await?;
        for inst in instances
            .iter_mut()
            .filter(|i| i.state == InstanceState::Pending)
        {
            let mut r = InstanceRecord::new(&inst.instance_id, InstanceState::NotStarted);
            r.status_details = Some("the location ended before it started".into());
            if self
                .store
                .update_instance(run_id, loc, &r, InstanceState::Pending)
                .await?
            {
                inst.state = InstanceState::NotStarted;
            }
        }
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
        let _ = writeln!(
            out,
            "Accounts not targeted: {}",
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
        assert!(serde_json::to_vec(&s).unwrap().len() < events::MAX_DETAIL_BYTES);
    }
}
