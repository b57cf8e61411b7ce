//! The `dispatch` function, called again and again (a Wait loop) for one location until it
//! answers `done`. Each round:
//! 1. loads the run, the location and the band of its records it needs, once ([`band`]);
//! 2. brings the records up to date with SSM ([`crate::progress`]): batches claimed but never
//!    recorded as sent adopt their own command (found by its Comment, see [`comment`]) or are
//!    released after a grace period; the commands in flight are followed (one ListCommands;
//!    successes of multi-instance commands may stay unread a while, their slots free:
//!    [`crate::reading`]), finished ones counted on the run in the same transaction;
//! 3. decides, with the pure [`plan_round`], what to start and what will never start: at
//!    most `window` instances in flight (a sliding window), nothing new once counted errors
//!    pass the threshold, nor once the run is halted ([`crate::halt`]: the maintenance
//!    window closed, or an alarm is in ALARM), nor this round while the alarms cannot be read;
//! 4. applies it: retires what will never start, then claims each new batch of at most 50
//!    instances with a conditional transaction *before* SendCommand, so that no retry or
//!    repeat ever sends an instance a second command; in a cancelling run whose operator
//!    asked for it (`stop --cancel-commands`), cancels the commands in flight ([`crate::cancel`]);
//! 5. records the location's progress and answers: finished with an outcome
//!    ([`crate::run::location_finished`]), or again after the wait [`crate::poll`] decides
//!    from the runs observed (carried in the task, and the shortest on the location).

use crate::alarms::Alarms;
use crate::band::{self, Watermark};
use crate::clients::{AssumeError, ClientFactory};
use crate::clock::{now_epoch, now_epoch_ms};
use crate::comment::comment;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fleet::{self, CommandSpec, SendOutcome};
use crate::halt::{self, Check};
use crate::model::{
    count_states, BatchRecord, BatchState, InstanceRecord, InstanceState, Location, LocationRecord,
    RunRecord, RunStatus,
};
use crate::poll::{mean_run, next_wait, observe, shortest_observed, Observed, PollView};
use crate::progress::{
    claim_times, follow_commands, in_flight_batches, pending_ids, recover_claims, retire_pending,
    set_state, Release,
};
use crate::run::{self, Entry, THRESHOLD_PASSED};
use crate::store::Store;
use crate::task::LocationTask;
use crate::window::{plan_round_after, Round};
use std::collections::HashMap;
use tracing::{info, warn};

pub struct Dispatcher<F> {
    /// `poll_seconds`: how long the state machine waits between rounds.
    pub config: Config,
    pub store: Store,
    pub factory: F,
    pub alarms: Alarms,
}

fn command_spec(run: &RunRecord) -> CommandSpec {
    CommandSpec {
        operation: run.input.operation,
        snapshot_id: run.input.snapshot_id.clone().unwrap_or_default(),
        install_override_list: run.input.install_override_list.clone(),
        reboot_option: run.input.reboot_option,
        timeout_seconds: i32::try_from(run.input.delivery_timeout_seconds).unwrap_or(i32::MAX),
        log_group: run.input.cloud_watch_log_group.clone(),
        hooks: run.input.hooks(),
    }
}

/// What a round works on: loaded once, then kept up to date in memory as each recorded
/// write lands.
struct Loaded {
    run: RunRecord,
    location: LocationRecord,
    instances: Vec<InstanceRecord>,
    batches: Vec<BatchRecord>,
    /// The settled prefix before `instances`, and how many instances after them were not read.
    prefix: Watermark,
    unread: u64,
    /// Epoch ms taken before the instances were read (see `Store::set_location_progress`).
    read_from_ms: i64,
    /// Instances Run Command counts final that this round left unread: free slots.
    freed: u64,
    observed: Observed,
}

/// Whether to go on starting batches after one.
enum Next {
    Go,
    Stop,
}

impl<F: ClientFactory> Dispatcher<F> {
    /// One dispatch round for one location (the steps of the module header).
    pub async fn handle(&self, task: LocationTask) -> Result<LocationTask> {
        let loc = task.location()?;
        let run_id = task.run_id.as_str();

        // 1. Load.
        let run = self.store.get_run(run_id).await?;
        let location = self.store.get_location(run_id, &loc).await?;
        if let Entry::Finish(outcome, reason) = run::may_continue(&location) {
            return Ok(task.finished(outcome, reason));
        }
        let ssm = self.ssm_for(&loc, &run, run_id).await?;
        let read_from_ms = now_epoch_ms();
        let band = self.store.load_band(run_id, &loc, &location).await?;
        let mut state = Loaded {
            run,
            location,
            instances: band.instances,
            batches: band.batches,
            prefix: band.prefix,
            unread: band.unread,
            read_from_ms,
            freed: 0,
            observed: task.observed,
        };

        // 2. Bring the records up to date with SSM.
        self.follow(run_id, &loc, &ssm, &mut state).await?;
        state.observed = observe(task.observed, task.wait_seconds, in_flight(&state));

        // 3. Decide.
        let check = halt::check(&self.store, &self.alarms, &state.run, now_epoch_ms()).await?;
        let (mut round, mut why) = decide(&state, &check);
        if !round.not_started.is_empty() && state.unread > 0 {
            self.store
                .extend_to_end(run_id, &loc, &state.prefix, &mut state.instances)
                .await?;
            state.unread = 0;
            (round, why) = decide(&state, &check);
        }

        // 4. Apply.
        if let (Check::Halt(h), false) = (&check, round.not_started.is_empty()) {
            self.store.record_halt(run_id, h).await?;
            state.run.halt = Some(h.clone());
        }
        let (store, instances) = (&self.store, &mut state.instances);
        retire_pending(store, run_id, &loc, instances, &round.not_started, &why).await?;
        let started = self
            .start_batches(&state.run, &loc, &ssm, instances, &round.start)
            .await?;
        crate::cancel::if_asked(store, &state.run, &ssm, instances).await?;
        state.batches.extend(started);

        // 5. Record progress and answer.
        self.answer(task, &loc, &state, &round).await
    }

    /// SSM clients in the location. A refused role is an error here (it was assumable at
    /// expansion): the state machine retries, then settles the location as Error.
    async fn ssm_for(
        &self,
        loc: &Location,
        run: &RunRecord,
        run_id: &str,
    ) -> Result<aws_sdk_ssm::Client> {
        let role = &run.input.execution_role_name;
        match self.factory.clients(loc, role, run_id).await {
            Ok(c) => Ok(c.ssm),
            Err(AssumeError::AccessDenied { role_arn, message }) => {
                let (code, message) = code_and_message(&message);
                Err(Error::Aws {
                    operation: "sts:AssumeRole".into(),
                    code,
                    message: format!("{role_arn} refused during dispatch: {message}"),
                })
            }
            Err(AssumeError::Other(e)) => Err(e),
        }
    }

    /// Step 2: adopts or releases claimed batches, follows the commands in flight, and
    /// lowers the shortest observed run by the instances seen ending.
    async fn follow(
        &self,
        run_id: &str,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        state: &mut Loaded,
    ) -> Result<()> {
        let release = Release::AfterGrace { now: now_epoch() };
        let (store, instances) = (&self.store, &mut state.instances);
        recover_claims(store, run_id, loc, ssm, instances, &state.batches, release).await?;
        let was_in_flight = in_flight_batches(instances);
        let sweep = Some(crate::reading::sweep_at(state.location.window));
        state.freed = follow_commands(store, run_id, loc, ssm, instances, &state.batches, sweep)
            .await?
            .freed;
        if state.observed.unread > 0 {
            return Ok(()); // read now but unread last round, it may have ended before that
        }
        self.observe_ended(run_id, loc, state, &was_in_flight).await
    }

    /// Lowers the location's shortest observed run by the instances that `follow_commands`
    /// saw end this round (`was_in_flight`: their batches before it).
    async fn observe_ended(
        &self,
        run_id: &str,
        loc: &Location,
        state: &mut Loaded,
        was_in_flight: &HashMap<String, Option<u64>>,
    ) -> Result<()> {
        let claimed = claim_times(&state.batches);
        let ended: Vec<i64> = state
            .instances
            .iter()
            .filter(|i| i.state.is_terminal())
            .filter_map(|i| was_in_flight.get(&i.instance_id))
            .map(|seq| {
                seq.and_then(|s| claimed.get(&s).copied())
                    .unwrap_or(i64::MAX)
            })
            .collect();
        let previous_round_at = state.location.progress_from_ms.map(|ms| ms / 1000);
        let known = state.location.shortest_run_seconds;
        let shortest = shortest_observed(known, previous_round_at, &ended);
        if let Some(secs) = shortest.filter(|s| known.is_none_or(|k| *s < k)) {
            self.store.lower_shortest_run(run_id, loc, secs).await?;
            state.location.shortest_run_seconds = Some(secs);
        }
        Ok(())
    }

    /// Claims and sends each batch in turn; stops at the first batch that could not be
    /// claimed or whose send was refused or lost. Returns the batches claimed.
    async fn start_batches(
        &self,
        run: &RunRecord,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        instances: &mut [InstanceRecord],
        batches: &[Vec<String>],
    ) -> Result<Vec<BatchRecord>> {
        let spec = command_spec(run);
        let mut claimed = Vec::new();
        for ids in batches {
            let (next, batch) = self
                .start_batch(run, loc, ssm, &spec, instances, ids)
                .await?;
            claimed.extend(batch);
            if let Next::Stop = next {
                break;
            }
        }
        Ok(claimed)
    }

    /// Claims one batch, then sends it. The claim comes first: whatever happens after it,
    /// no later round sends these instances another command. Returns the batch when it was
    /// claimed.
    async fn start_batch(
        &self,
        run: &RunRecord,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        spec: &CommandSpec,
        instances: &mut [InstanceRecord],
        ids: &[String],
    ) -> Result<(Next, Option<BatchRecord>)> {
        let run_id = run.run_id.as_str();
        let seq = self.store.next_batch_seq(run_id, loc).await?;
        let batch = BatchRecord {
            seq,
            instance_ids: ids.to_vec(),
            comment: comment(run_id, loc, seq),
            claimed_at: now_epoch(),
            state: BatchState::Claimed,
            command_id: None,
        };
        if !self.store.claim_batch(run_id, loc, &batch).await? {
            warn!(run_id, location = %loc, batch = seq, "instances already claimed elsewhere: not sending");
            return Ok((Next::Stop, None));
        }
        set_claimed(instances, ids, seq);

        let next = match fleet::send_command(ssm, ids, spec, &batch.comment).await {
            SendOutcome::Sent(cmd) => {
                info!(run_id, location = %loc, batch = seq, command_id = %cmd, instances = ids.len(), "command sent");
                if self
                    .store
                    .mark_batch_sent(run_id, loc, &batch, &cmd)
                    .await?
                {
                    set_state(instances, ids, InstanceState::InFlight, Some(&cmd));
                }
                Next::Go
            }
            SendOutcome::Refused {
                reason,
                invalid_instances,
                throttled,
            } => {
                let refusal = Refusal {
                    reason,
                    invalid_instances,
                    throttled,
                };
                self.release_refused(run_id, loc, ssm, instances, &batch, refusal)
                    .await?
            }
            SendOutcome::Unknown(why) => {
                // The command may exist (no answer, or a 5xx that does not prove it was not
                // made): keep the claim; the next round finds it by its Comment or releases
                // it after the grace period.
                warn!(run_id, location = %loc, batch = seq, %why, "SendCommand answer lost; claim kept for recovery");
                Next::Stop
            }
        };
        Ok((next, Some(batch)))
    }

    /// A refused send proves nothing was sent: the batch is released. Instances that left SSM
    /// since expansion (InvalidInstanceId) end Offline or Unmanaged; the others go back to
    /// Pending. A throttle, or a refusal explained by retired instances, waits for the next
    /// round; any other refusal is an error of the location.
    async fn release_refused(
        &self,
        run_id: &str,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        instances: &mut [InstanceRecord],
        batch: &BatchRecord,
        refusal: Refusal,
    ) -> Result<Next> {
        let ids = &batch.instance_ids;
        let finals = if refusal.invalid_instances {
            fleet::retired_instances(ids, &fleet::describe_managed(ssm, ids).await?)
        } else {
            HashMap::new()
        };
        warn!(run_id, location = %loc, batch = batch.seq, reason = %refusal.reason, "SendCommand refused; batch released");
        self.store
            .release_batch(run_id, loc, batch, &refusal.reason, &finals)
            .await?;
        for i in instances
            .iter_mut()
            .filter(|i| ids.contains(&i.instance_id))
        {
            i.state = finals
                .get(&i.instance_id)
                .copied()
                .unwrap_or(InstanceState::Pending);
        }

        if refusal.throttled || refusal.invalid_instances && !finals.is_empty() {
            return Ok(Next::Stop);
        }
        let (code, message) = code_and_message(&refusal.reason);
        Err(Error::Aws {
            operation: "ssm:SendCommand".into(),
            code,
            message,
        })
    }

    /// Writes the location's progress, then answers: finished with its outcome once every
    /// instance is final, otherwise again after the poll interval (at least 30 s after the
    /// first poll segment, see [`crate::limits`]).
    async fn answer(
        &self,
        task: LocationTask,
        loc: &Location,
        state: &Loaded,
        round: &Round,
    ) -> Result<LocationTask> {
        let run_id = task.run_id.as_str();
        let states = band::all_states(&state.prefix, &state.instances, state.unread);
        let counts = count_states(states.iter().copied());
        self.store
            .set_location_progress(
                run_id,
                loc,
                &counts,
                round.errors,
                round.stopping,
                state.read_from_ms,
            )
            .await?;

        match run::location_finished(&state.run, &states, round.errors, round.stopping) {
            Some((outcome, reason)) => {
                info!(run_id, location = %loc, outcome = outcome.as_str(), "location finished");
                Ok(task.finished(outcome, reason))
            }
            None => {
                let mut next = task.next_round(self.config.poll_seconds);
                next.wait_seconds = next_wait(&poll_view(state, next.wait_seconds));
                next.observed = Observed {
                    in_flight: in_flight(state),
                    unread: state.freed,
                    ..state.observed
                };
                Ok(next)
            }
        }
    }
}

/// What the round leaves behind, for [`next_wait`].
fn poll_view(state: &Loaded, poll_seconds: u64) -> PollView {
    let claimed = claim_times(&state.batches);
    let in_flight: Vec<&InstanceRecord> = state
        .instances
        .iter()
        .filter(|i| i.state.in_flight())
        .collect();
    let pending = pending_ids(&state.instances).len() as u64;
    PollView {
        now: now_epoch(),
        poll_seconds,
        in_flight_claimed: in_flight
            .iter()
            .map(|i| match (i.state, i.batch) {
                (InstanceState::InFlight, Some(seq)) => claimed.get(&seq).copied(),
                _ => None,
            })
            .collect(),
        pending,
        free_slots: state.location.window.saturating_sub(self::in_flight(state)),
        shortest_seconds: state.location.shortest_run_seconds,
        delivery_timeout_seconds: state.run.input.delivery_timeout_seconds,
        mean_run_seconds: mean_run(&state.observed),
        quiet_rounds: state.observed.quiet_rounds,
    }
}

/// Instances in flight, less those Run Command counts final that were left unread.
fn in_flight(state: &Loaded) -> u64 {
    let recorded = state
        .instances
        .iter()
        .filter(|i| i.state.in_flight())
        .count() as u64;
    recorded.saturating_sub(state.freed)
}

/// Records in memory that batch `seq` claimed `ids`.
fn set_claimed(instances: &mut [InstanceRecord], ids: &[String], seq: u64) {
    set_state(instances, ids, InstanceState::Claimed, None);
    for i in instances
        .iter_mut()
        .filter(|i| ids.contains(&i.instance_id))
    {
        i.batch = Some(seq);
    }
}

/// The round: the sliding window's, unless the run is halted (nothing starts, every pending
/// instance ends NotStarted with the halt's reason) or on hold (nothing starts this round).
/// The instance threshold, once passed, keeps its own reason.
fn decide(state: &Loaded, check: &Check) -> (Round, String) {
    // Slots Run Command freed that the records do not show yet are free all the same.
    let mut round = plan_round_after(
        band::prefix_errors(&state.prefix),
        &state.instances,
        state.location.window + state.freed,
        state.location.tolerated,
    );
    // An operator's stop comes first: nothing new starts, whatever else holds.
    if state.run.status == RunStatus::Cancelling {
        let (round, why) = run::round_for(&state.run, &state.instances, round);
        return (round, why.to_string());
    }
    match check {
        Check::Halt(h) if !round.stopping => {
            round.start.clear();
            round.not_started = pending_ids(&state.instances);
            (round, run::halt_reason(h))
        }
        Check::Hold(_) => {
            round.start.clear();
            (round, THRESHOLD_PASSED.to_string())
        }
        _ => (round, THRESHOLD_PASSED.to_string()),
    }
}

/// What SendCommand's refusal said.
struct Refusal {
    reason: String,
    invalid_instances: bool,
    throttled: bool,
}

/// Splits a `code: message` reason (as `SendOutcome::Refused` and `AssumeError::AccessDenied`
/// carry it) so that the [`Error::Aws`] built from it names the code once.
fn code_and_message(reason: &str) -> (String, String) {
    match reason.split_once(": ") {
        Some((code, message)) if !code.is_empty() && !code.contains(char::is_whitespace) => {
            (code.to_string(), message.to_string())
        }
        _ => ("Unknown".to_string(), reason.to_string()),
    }
}
