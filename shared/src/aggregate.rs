//! The `aggregate` function, once per run after every location: give every location an
//! outcome, record the last SSM status of anything a location left live, read post-run patch
//! compliance (DescribeInstancePatchStates, 50 instances a call) for the instances that ran,
//! then write the run's summary and final status and announce the end, each exactly once.
//!
//! An execution that ends before aggregate runs (stopped with the console's "Stop
//! execution", or timed out) still leaves a record: an EventBridge rule on the state
//! machine's ABORTED and TIMED_OUT executions invokes aggregate with `executionEnded`, and
//! the run is finished from the table alone, as the fallback does: locations never settled
//! end Error, pending instances NotStarted (the reason names the execution's end), the
//! summary says what was not read, and the completion event is sent. A stopped execution
//! is an operator's stop: the run ends Cancelled. A run already finished keeps its summary.

use crate::clients::{AssumeError, ClientFactory};
use crate::clock::now_epoch_ms;
use crate::config::Config;
use crate::error::Result;
use crate::events;
use crate::fleet;
use crate::model::{
    count_states, count_where, Compliance, Counts, InstanceRecord, InstanceState, Location,
    LocationOutcome, LocationRecord, Phase, RunRecord, RunStatus,
};
use crate::progress::{follow_commands, pending_ids, recover_claims, retire_pending, Release};
use crate::report::{summarize, wave_lines, RunSummary};
use crate::run::{self, LOCATION_ENDED_EARLY, NEVER_FINISHED};
use crate::store::Store;
use crate::task::{AggregateRequest, CaughtError};
use futures::stream::{self, StreamExt};
use tracing::{info, warn};

/// Locations read for compliance at once.
pub const COMPLIANCE_CONCURRENCY: usize = 8;

pub struct Aggregator<F> {
    /// `event_bus`: where the "Patch Run Completed" event goes.
    pub config: Config,
    pub store: Store,
    /// Compliance is read in the target accounts, through the execution role.
    pub factory: F,
    pub events: aws_sdk_eventbridge::Client,
}

/// Why a run's summary lacks compliance and last states: aggregate failed for good.
fn records_only_reason(error: Option<&CaughtError>) -> String {
    let why = match error {
        Some(e) => {
            let cause: String = e.cause.chars().take(300).collect();
            format!("{}: {cause}", e.error)
        }
        None => "unknown error".into(),
    };
    format!("finished from the table alone after aggregate failed ({why}): compliance and the last SSM status of instances left in flight were not read")
}

/// Why pending instances end NotStarted when the execution ended first (`status`: Step
/// Functions' ABORTED, TIMED_OUT).
fn execution_ended_reason(status: &str) -> String {
    match status {
        "ABORTED" => "execution stopped (Step Functions ABORTED)".into(),
        s => format!("execution ended (Step Functions {s})"),
    }
}

/// The summary's `notRead` of a run whose execution ended before aggregate ran.
fn ended_not_read(status: &str) -> String {
    format!("the execution ended {status} before aggregate ran: finished from the table alone; commands in flight were not followed to their end and compliance was not read")
}

/// The status the final one is decided from: an execution stopped in Step Functions
/// (ABORTED) is an operator's stop, as `fleetpatch stop` (Cancelling, hence Cancelled);
/// otherwise the run's own.
fn settled_from(status: RunStatus, execution_ended: Option<&str>) -> RunStatus {
    match execution_ended {
        Some("ABORTED") => RunStatus::Cancelling,
        _ => status,
    }
}

/// What finishing a location learned: compliance, and the counts when the instance items
/// say otherwise than the last dispatch round wrote.
#[derive(Debug, Default)]
struct Finished {
    compliance: Option<Compliance>,
    counts: Option<Counts>,
}

impl<F: ClientFactory> Aggregator<F> {
    /// Aggregates a finished run.
    pub async fn handle(&self, req: AggregateRequest) -> Result<RunSummary> {
        let run_id = req.run_id.as_str();

        // 1. Load, and give every location an outcome.
        let run = self.store.get_run(run_id).await?;
        let mut locations = self.store.list_locations(run_id).await?;
        self.settle_unfinished(run_id, &mut locations).await?;

        // 2. Finish each location: last states, compliance; or, as the fallback after
        // aggregate failed for good, end what the table alone can end.
        let ended = req.execution_ended.as_deref();
        let not_read = if req.records_only || ended.is_some() {
            let why = ended.map_or(LOCATION_ENDED_EARLY.into(), execution_ended_reason);
            self.retire_pending_everywhere(run_id, &mut locations, &why)
                .await?;
            Some(ended.map_or_else(|| records_only_reason(req.error.as_ref()), ended_not_read))
        } else {
            self.finish_locations(run_id, &run, &mut locations).await;
            None
        };

        // 3. Decide the final status (the run item is read again: settle may have moved it
        // to Stopping since step 1).
        let run = self.store.get_run(run_id).await?;
        let outcomes: Vec<LocationOutcome> = locations
            .iter()
            .map(|l| l.outcome.unwrap_or(LocationOutcome::Error))
            .collect();
        let waves = self.store.list_waves(run_id).await?;
        let from = settled_from(run.status, ended);
        let status = run::run_final_status(from, run.halt.as_ref(), &outcomes);
        let status = crate::waves::final_status(status, &waves);
        let mut summary = summarize(run_id, status, &run, &locations);
        summary.not_read = not_read;
        summary.waves = wave_lines(&run, &waves);

        // 4. Record and announce, once.
        self.record_and_announce(run_id, status, summary).await
    }

    /// A location the Map never settled (its child execution ended early) still gets an
    /// outcome: Error.
    async fn settle_unfinished(
        &self,
        run_id: &str,
        locations: &mut [LocationRecord],
    ) -> Result<()> {
        for l in locations.iter_mut().filter(|l| l.phase != Phase::Done) {
            self.store
                .settle_location(
                    run_id,
                    &l.location,
                    LocationOutcome::Error,
                    Some(NEVER_FINISHED),
                )
                .await?;
            l.outcome = Some(LocationOutcome::Error);
            l.reason = Some(NEVER_FINISHED.into());
        }
        Ok(())
    }

    /// Finishes every location, [`COMPLIANCE_CONCURRENCY`] at a time. A location whose last
    /// states or compliance cannot be read keeps what its record says (logged): the run's
    /// summary is still written.
    async fn finish_locations(
        &self,
        run_id: &str,
        run: &RunRecord,
        locations: &mut [LocationRecord],
    ) {
        let finished: Vec<(usize, Finished)> = stream::iter(locations.iter().enumerate())
            .map(|(i, l)| async move { (i, self.finish_location(run_id, run, l).await) })
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
    }

    /// The fallback's step 2: Pending instances end NotStarted (a DynamoDB write only);
    /// instances left in flight keep their last recorded state, named in the summary.
    async fn retire_pending_everywhere(
        &self,
        run_id: &str,
        locations: &mut [LocationRecord],
        why: &str,
    ) -> Result<()> {
        for l in locations.iter_mut() {
            if count_where(&l.counts, |s| s == InstanceState::Pending) == 0 {
                continue;
            }
            let (mut instances, _) = self.store.list_location_items(run_id, &l.location).await?;
            let pending = pending_ids(&instances);
            retire_pending(
                &self.store,
                run_id,
                &l.location,
                &mut instances,
                &pending,
                why,
            )
            .await?;
            l.counts = count_states(instances.iter().map(|i| i.state));
        }
        Ok(())
    }

    /// Writes the summary and final status once; sends the completion event unless another
    /// attempt (a retry beside this timed-out one) already finished and announced the run.
    /// The event always carries the summary the record holds.
    async fn record_and_announce(
        &self,
        run_id: &str,
        status: RunStatus,
        summary: RunSummary,
    ) -> Result<RunSummary> {
        let first = self.store.finish_run(run_id, status, &summary).await?;
        let summary = if first {
            summary
        } else {
            if self.store.completed_event_sent(run_id).await? {
                info!(
                    run_id,
                    "run already finished and announced by another attempt"
                );
                return Ok(summary);
            }
            // An earlier attempt finished the run but did not announce it: the event says
            // what the record says.
            self.store.run_summary(run_id).await?.unwrap_or(summary)
        };

        let bus = &self.config.event_bus;
        events::put_event(&self.events, bus, events::RUN_COMPLETED, &summary).await?;
        self.store.mark_completed_event_sent(run_id).await?;
        info!(
            run_id,
            status = status.as_str(),
            locations = summary.locations,
            "run completed"
        );
        Ok(summary)
    }

    /// Finishes one location: instances a failed location left live get their last status
    /// from SSM (and Pending ones become NotStarted), then compliance is read for every
    /// instance that was sent a command.
    async fn finish_location(
        &self,
        run_id: &str,
        run: &RunRecord,
        l: &LocationRecord,
    ) -> Result<Finished> {
        let sent = count_where(&l.counts, InstanceState::was_sent);
        let live = count_where(&l.counts, |s| !s.is_terminal());
        // Nothing ran; or an earlier attempt (one that timed out, before its retry) already
        // finished this location: its compliance is recorded and nothing is live.
        let finished_before = l.compliance.is_some() && live == 0;
        if sent == 0 && live == 0 || finished_before {
            return Ok(Finished::default());
        }

        let loc = &l.location;
        let read_from_ms = now_epoch_ms();
        let (mut instances, batches) = self.store.list_location_items(run_id, loc).await?;
        let role = &run.input.execution_role_name;
        let ssm = match self.factory.clients(loc, role, run_id).await {
            Ok(c) => c.ssm,
            Err(AssumeError::AccessDenied { .. }) => return Ok(Finished::default()),
            Err(AssumeError::Other(e)) => return Err(e),
        };
        if instances.iter().any(|i| !i.state.is_terminal()) {
            self.record_last_states(run_id, loc, &ssm, &mut instances, &batches)
                .await?;
        }

        // The stored counts are a snapshot of a dispatch round (settle may have moved
        // instances since): the summary reports what the instance items say.
        let states: Vec<InstanceState> = instances.iter().map(|i| i.state).collect();
        let counts = count_states(states.iter().copied());
        let changed = counts != l.counts;
        if changed {
            let errors = states.iter().filter(|s| s.counts_as_error()).count() as u64;
            self.store
                .set_location_progress(run_id, loc, &counts, errors, l.stopping, read_from_ms)
                .await?;
        }

        let compliance = self.read_compliance(run_id, loc, &ssm, &instances).await?;
        Ok(Finished {
            compliance,
            counts: changed.then_some(counts),
        })
    }

    /// Reads and records compliance for every instance that was sent a command, and the
    /// location's totals. None when none was sent.
    async fn read_compliance(
        &self,
        run_id: &str,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        instances: &[InstanceRecord],
    ) -> Result<Option<Compliance>> {
        let ids: Vec<String> = instances
            .iter()
            .filter(|i| i.state.was_sent())
            .map(|i| i.instance_id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(None);
        }

        let states = fleet::patch_states(ssm, &ids).await?;
        let mut total = Compliance::default();
        for (id, c) in &states {
            self.store
                .set_instance_compliance(run_id, loc, id, c)
                .await?;
            total.add(c);
        }
        self.store
            .set_location_compliance(run_id, loc, &total)
            .await?;
        Ok(Some(total))
    }

    /// Records what SSM last said of instances still live, and ends the rest: a batch left
    /// Claimed (its send never recorded) adopts its own command if SSM has it, else its
    /// instances end NotStarted; Pending ones end NotStarted. Nothing more will be sent in
    /// this run.
    async fn record_last_states(
        &self,
        run_id: &str,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        instances: &mut [InstanceRecord],
        batches: &[crate::model::BatchRecord],
    ) -> Result<()> {
        let ended = Release::Now(InstanceState::NotStarted);
        let raced =
            recover_claims(&self.store, run_id, loc, ssm, instances, batches, ended).await?;
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

        follow_commands(&self.store, run_id, loc, ssm, instances, batches, None).await?;
        let pending = pending_ids(instances);
        retire_pending(
            &self.store,
            run_id,
            loc,
            instances,
            &pending,
            LOCATION_ENDED_EARLY,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_execution_settles_as_an_operators_stop_and_a_timed_out_one_as_it_stands() {
        // GIVEN a running run whose execution ended before aggregate ran
        let final_status = |ended| {
            let from = settled_from(RunStatus::Running, ended);
            run::run_final_status(from, None, &[LocationOutcome::Succeeded])
        };
        // THEN stopped in the console it ends Cancelled; timed out, as its locations say
        assert_eq!(final_status(Some("ABORTED")), RunStatus::Cancelled);
        assert_eq!(final_status(Some("TIMED_OUT")), RunStatus::Succeeded);
        assert_eq!(final_status(None), RunStatus::Succeeded);
        // AND the instances it never started say why
        assert_eq!(
            execution_ended_reason("ABORTED"),
            "execution stopped (Step Functions ABORTED)"
        );
        assert!(ended_not_read("TIMED_OUT").contains("TIMED_OUT"));
    }
}
