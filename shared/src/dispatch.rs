//! The `dispatch` function, called again and again (a Wait loop) for one location until it
//! answers `done`. Each round:
//! 1. loads the run, the location and its instance and batch records, once;
//! 2. brings the records up to date with SSM ([`crate::progress`]): batches claimed but never
//!    recorded as sent adopt their own command (found by its Comment, see [`comment`]) or are
//!    released after a grace period; the commands in flight are followed, each instance's
//!    status recorded and finished ones counted on the run in the same transaction;
//! 3. decides, with the pure [`plan_round`], what to start and what will never start: at
//!    most `window` instances in flight (a sliding window), nothing new once counted errors
//!    pass the threshold;
//! 4. applies it: retires what will never start, then claims each new batch of at most 50
//!    instances with a conditional transaction *before* SendCommand, so that no retry or
//!    repeat ever sends an instance a second command;
//! 5. records the location's progress and answers: again later, or finished with an outcome
//!    ([`crate::run::location_finished`]).

use crate::clients::{AssumeError, ClientFactory};
use crate::clock::{now_epoch, now_epoch_ms};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fleet::{self, CommandSpec, SendOutcome, SEND_CHUNK};
use crate::model::{
    count_states, BatchRecord, BatchState, InstanceRecord, InstanceState, Location, LocationRecord,
    RunRecord,
};
use crate::progress::{follow_commands, recover_claims, retire_pending, set_state, Release};
use crate::ratecontrol::threshold_passed;
use crate::run::{self, Entry, THRESHOLD_PASSED};
use crate::store::Store;
use crate::task::LocationTask;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tracing::{info, warn};

pub struct Dispatcher<F> {
    /// `poll_seconds`: how long the state machine waits between rounds.
    pub config: Config,
    pub store: Store,
    pub factory: F,
}

/// What one round decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Round {
    /// Counted errors (Failed, Execution Timed Out).
    pub errors: u64,
    /// Whether the error threshold is passed: nothing new starts.
    pub stopping: bool,
    /// Instances in flight (claimed or sent, not terminal).
    pub in_flight: u64,
    /// Instances to start now, in batches of at most 50.
    pub start: Vec<Vec<String>>,
    /// Pending instances that will never start (threshold passed).
    pub not_started: Vec<String>,
    /// Whether the location is finished once this round is applied.
    pub done: bool,
}

/// Decides one round from the instances' current states. Pure: the rules of the sliding
/// window and of the error threshold live here.
pub fn plan_round(instances: &[InstanceRecord], window: u64, tolerated: Option<u64>) -> Round {
    let errors = instances
        .iter()
        .filter(|i| i.state.counts_as_error())
        .count() as u64;
    let stopping = threshold_passed(errors, tolerated);
    let in_flight = instances.iter().filter(|i| i.state.in_flight()).count() as u64;
    let mut pending: Vec<&String> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .map(|i| &i.instance_id)
        .collect();
    pending.sort();
    let (start, not_started) = if stopping {
        (Vec::new(), pending.into_iter().cloned().collect())
    } else {
        let free = window.saturating_sub(in_flight) as usize;
        let ids: Vec<String> = pending.into_iter().take(free).cloned().collect();
        (
            ids.chunks(SEND_CHUNK).map(<[String]>::to_vec).collect(),
            Vec::new(),
        )
    };
    let pending_left = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .count()
        - not_started.len()
        - start.iter().map(Vec::len).sum::<usize>();
    let done = in_flight == 0 && start.is_empty() && pending_left == 0;
    Round {
        errors,
        stopping,
        in_flight,
        start,
        not_started,
        done,
    }
}

/// SendCommand's Comment is at most 100 characters.
pub const MAX_COMMENT_CHARS: usize = 100;
const COMMENT_PREFIX: &str = "fleetpatch ";

/// Whether a run ID can stand for itself in a Comment: no whitespace, no `~` (Step Functions
/// execution names allow neither), nothing outside printable ASCII.
fn plain_run_id(run_id: &str) -> bool {
    !run_id.is_empty() && run_id.bytes().all(|b| b.is_ascii_graphic() && b != b'~')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Comment that tags a batch's command: `fleetpatch <run> <account>/<region> b<seq>`, at
/// most 100 characters, and different for every (run, location, batch), so that recovery
/// finds a batch's own command and no other. The location and the sequence number are never
/// cut. `<run>` is the run ID when everything fits; otherwise (execution names may be 80
/// characters) it is the run ID's first characters, `~`, and 16 hex digits of its SHA-256.
/// A run ID never contains `~`, so the two forms cannot meet.
pub fn comment(run_id: &str, loc: &Location, seq: u64) -> String {
    let tail = format!(" {}/{} b{seq}", loc.account, loc.region);
    let full = format!("{COMMENT_PREFIX}{run_id}{tail}");
    if plain_run_id(run_id) && full.chars().count() <= MAX_COMMENT_CHARS {
        return full;
    }
    let digest = hex(&Sha256::digest(run_id.as_bytes())[..8]);
    let room = MAX_COMMENT_CHARS
        .saturating_sub(COMMENT_PREFIX.len() + tail.chars().count() + 1 + digest.len());
    let head: String = run_id
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '~')
        .take(room)
        .collect();
    let short = format!("{COMMENT_PREFIX}{head}~{digest}{tail}");
    if short.chars().count() <= MAX_COMMENT_CHARS {
        return short;
    }
    // Only a location far longer than any real one gets here: one digest of everything.
    let all = format!("{run_id}\n{}\n{}\n{seq}", loc.account, loc.region);
    format!("{COMMENT_PREFIX}~{}", hex(&Sha256::digest(all.as_bytes())))
}

fn command_spec(run: &RunRecord) -> CommandSpec {
    CommandSpec {
        operation: run.input.operation,
        snapshot_id: run.input.snapshot_id.clone().unwrap_or_default(),
        install_override_list: run.input.install_override_list.clone(),
        reboot_option: run.input.reboot_option,
        timeout_seconds: i32::try_from(run.input.delivery_timeout_seconds).unwrap_or(i32::MAX),
        log_group: run.input.cloud_watch_log_group.clone(),
    }
}

/// What a round works on: loaded once, then kept up to date in memory as each recorded
/// write lands.
struct Loaded {
    run: RunRecord,
    location: LocationRecord,
    instances: Vec<InstanceRecord>,
    batches: Vec<BatchRecord>,
    /// Epoch ms taken before the instances were read (see `Store::set_location_progress`).
    read_from_ms: i64,
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
        let (instances, batches) = self.store.list_location_items(run_id, &loc).await?;
        let mut state = Loaded {
            run,
            location,
            instances,
            batches,
            read_from_ms,
        };

        // 2. Bring the records up to date with SSM.
        let release = Release::AfterGrace { now: now_epoch() };
        let (store, instances) = (&self.store, &mut state.instances);
        recover_claims(
            store,
            run_id,
            &loc,
            &ssm,
            instances,
            &state.batches,
            release,
        )
        .await?;
        follow_commands(store, run_id, &loc, &ssm, instances).await?;

        // 3. Decide.
        let round = plan_round(
            &state.instances,
            state.location.window,
            state.location.tolerated,
        );

        // 4. Apply.
        let (store, instances) = (&self.store, &mut state.instances);
        retire_pending(
            store,
            run_id,
            &loc,
            instances,
            &round.not_started,
            THRESHOLD_PASSED,
        )
        .await?;
        self.start_batches(&state.run, &loc, &ssm, instances, &round.start)
            .await?;

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

    /// Claims and sends each batch in turn; stops at the first batch that could not be
    /// claimed or whose send was refused or lost.
    async fn start_batches(
        &self,
        run: &RunRecord,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        instances: &mut [InstanceRecord],
        batches: &[Vec<String>],
    ) -> Result<()> {
        let spec = command_spec(run);
        for ids in batches {
            if let Next::Stop = self
                .start_batch(run, loc, ssm, &spec, instances, ids)
                .await?
            {
                break;
            }
        }
        Ok(())
    }

    /// Claims one batch, then sends it. The claim comes first: whatever happens after it,
    /// no later round sends these instances another command.
    async fn start_batch(
        &self,
        run: &RunRecord,
        loc: &Location,
        ssm: &aws_sdk_ssm::Client,
        spec: &CommandSpec,
        instances: &mut [InstanceRecord],
        ids: &[String],
    ) -> Result<Next> {
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
            return Ok(Next::Stop);
        }
        set_state(instances, ids, InstanceState::Claimed, None);

        match fleet::send_command(ssm, ids, spec, &batch.comment).await {
            SendOutcome::Sent(cmd) => {
                info!(run_id, location = %loc, batch = seq, command_id = %cmd, instances = ids.len(), "command sent");
                if self
                    .store
                    .mark_batch_sent(run_id, loc, &batch, &cmd)
                    .await?
                {
                    set_state(instances, ids, InstanceState::InFlight, Some(&cmd));
                }
                Ok(Next::Go)
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
                    .await
            }
            SendOutcome::Unknown(why) => {
                // The command may exist (no answer, or a 5xx that does not prove it was not
                // made): keep the claim; the next round finds it by its Comment or releases
                // it after the grace period.
                warn!(run_id, location = %loc, batch = seq, %why, "SendCommand answer lost; claim kept for recovery");
                Ok(Next::Stop)
            }
        }
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
            retired_instances(ids, &fleet::describe_managed(ssm, ids).await?)
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
    /// instance is final, otherwise again after the poll interval.
    async fn answer(
        &self,
        task: LocationTask,
        loc: &Location,
        state: &Loaded,
        round: &Round,
    ) -> Result<LocationTask> {
        let run_id = task.run_id.as_str();
        let states: Vec<InstanceState> = state.instances.iter().map(|i| i.state).collect();
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
            None => Ok(task.again(self.config.poll_seconds)),
        }
    }
}

/// What SendCommand's refusal said.
struct Refusal {
    reason: String,
    invalid_instances: bool,
    throttled: bool,
}

/// After InvalidInstanceId: which of `ids` left SSM, and the state each ends in (pure).
fn retired_instances(
    ids: &[String],
    managed: &HashMap<String, fleet::ManagedInfo>,
) -> HashMap<String, InstanceState> {
    ids.iter()
        .filter_map(|id| match managed.get(id) {
            Some(m) if m.ping_status == "Online" => None,
            Some(_) => Some((id.clone(), InstanceState::Offline)),
            None => Some((id.clone(), InstanceState::Unmanaged)),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::set_state;
    use crate::ratecontrol::Rate;
    use std::collections::BTreeSet;

    fn fleet(n: usize) -> Vec<InstanceRecord> {
        (0..n)
            .map(|i| InstanceRecord::new(&format!("i-{i:017}"), InstanceState::Pending))
            .collect()
    }

    /// Drives plan_round as the state machine would, finishing `per_round` in-flight
    /// instances between rounds (with `fail` deciding which fail), and returns the most
    /// instances ever in flight, the final states and the number of batches.
    fn simulate(
        mut instances: Vec<InstanceRecord>,
        window: u64,
        tolerated: Option<u64>,
        per_round: usize,
        fail: impl Fn(&str) -> bool,
    ) -> (u64, Vec<InstanceRecord>, usize) {
        let mut max_in_flight = 0;
        let mut batches = 0;
        for _ in 0..10_000 {
            // Finish some in-flight ones.
            for i in instances
                .iter_mut()
                .filter(|i| i.state == InstanceState::InFlight)
                .take(per_round)
            {
                i.state = if fail(&i.instance_id) {
                    InstanceState::Failed
                } else {
                    InstanceState::Succeeded
                };
            }
            let round = plan_round(&instances, window, tolerated);
            for id in &round.not_started {
                set_state(
                    &mut instances,
                    std::slice::from_ref(id),
                    InstanceState::NotStarted,
                    None,
                );
            }
            for ids in &round.start {
                assert!(
                    ids.len() <= SEND_CHUNK,
                    "a batch of {} instances",
                    ids.len()
                );
                batches += 1;
                set_state(&mut instances, ids, InstanceState::InFlight, Some("cmd"));
            }
            let now = instances.iter().filter(|i| i.state.in_flight()).count() as u64;
            max_in_flight = max_in_flight.max(now);
            if instances.iter().all(|i| i.state.is_terminal()) {
                return (max_in_flight, instances, batches);
            }
        }
        panic!("the simulation did not finish");
    }

    #[test]
    fn window_of_ten_percent_of_120_never_exceeds_12() {
        // GIVEN 120 online instances and targetConcurrency 10%
        let window = Rate::parse_concurrency("10%").unwrap().window(120);
        assert_eq!(window, 12);
        // WHEN every round finishes 5 of the instances in flight
        let (max, states, batches) = simulate(fleet(120), window, None, 5, |_| false);
        // THEN at most 12 were ever in flight, every instance succeeded, in several commands
        assert_eq!(max, 12);
        assert!(states.iter().all(|i| i.state == InstanceState::Succeeded));
        assert!(batches > 10, "{batches} batches");
    }

    #[test]
    fn large_windows_are_sent_in_chunks_of_50() {
        let round = plan_round(&fleet(120), 120, None);
        let sizes: Vec<usize> = round.start.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![50, 50, 20]);
        assert!(!round.done);
    }

    #[test]
    fn threshold_stops_new_starts_and_lets_in_flight_finish() {
        // GIVEN 50 instances, window 10, MaxErrors 10% (5 tolerated), every 3rd one fails
        let tolerated = Rate::parse_errors("10%").unwrap().tolerated_errors(50);
        let fail = |id: &str| id.trim_start_matches("i-").parse::<u64>().unwrap() % 3 == 0;
        let (_, states, _) = simulate(fleet(50), 10, tolerated, 10, fail);
        let count = |s: InstanceState| states.iter().filter(|i| i.state == s).count();
        // THEN it stopped: some never started, none is left pending or in flight,
        // and errors passed 5 (the in-flight ones finished and may add to the count)
        assert!(count(InstanceState::NotStarted) > 0);
        assert!(count(InstanceState::Failed) > 5);
        assert_eq!(
            count(InstanceState::Pending) + count(InstanceState::InFlight),
            0
        );
        assert_eq!(
            count(InstanceState::NotStarted)
                + count(InstanceState::Failed)
                + count(InstanceState::Succeeded),
            50
        );
    }

    #[test]
    fn zero_tolerance_stops_at_the_first_error() {
        let mut instances = fleet(5);
        instances[0].state = InstanceState::Failed;
        let round = plan_round(&instances, 2, Some(0));
        assert!(round.stopping);
        assert!(round.start.is_empty());
        assert_eq!(round.not_started.len(), 4);
        assert!(round.done);
    }

    #[test]
    fn uncounted_failures_do_not_stop() {
        let mut instances = fleet(5);
        instances[0].state = InstanceState::DeliveryTimedOut;
        instances[1].state = InstanceState::AccessDenied;
        instances[2].state = InstanceState::InvalidPlatform;
        let round = plan_round(&instances, 2, Some(0));
        assert!(!round.stopping);
        assert_eq!(
            round.start,
            vec![vec![
                "i-00000000000000003".to_string(),
                "i-00000000000000004".to_string()
            ]]
        );
    }

    #[test]
    fn claimed_instances_hold_their_slot() {
        let mut instances = fleet(10);
        instances[0].state = InstanceState::Claimed;
        instances[1].state = InstanceState::InFlight;
        let round = plan_round(&instances, 3, None);
        assert_eq!(round.in_flight, 2);
        assert_eq!(round.start.iter().map(Vec::len).sum::<usize>(), 1);
    }

    #[test]
    fn comments_fit_in_100_characters_and_name_run_and_location() {
        let loc = Location::new("123456789012", "ap-southeast-2");
        let c = comment("0b7c3a2e-3e1d-4c55-9a51-8c0e2b1d7f00", &loc, 123456);
        assert!(c.chars().count() <= 100, "{} chars", c.chars().count());
        assert_eq!(
            c,
            "fleetpatch 0b7c3a2e-3e1d-4c55-9a51-8c0e2b1d7f00 123456789012/ap-southeast-2 b123456"
        );
    }

    /// An execution name of the longest allowed length (80 characters).
    fn long_run_id(last: char) -> String {
        let mut id = "patch-tuesday-".repeat(6);
        id.truncate(79);
        id.push(last);
        assert_eq!(id.len(), 80);
        id
    }

    #[test]
    fn an_80_character_run_id_still_gives_every_batch_its_own_comment() {
        // GIVEN an 80-character run ID and the longest Region code
        let run = long_run_id('a');
        let loc = Location::new("123456789012", "ap-southeast-2");
        // WHEN batches 1 to 1,000,000 of the location are tagged
        let comments: Vec<String> = [1, 2, 10, 11, 100, 999_999, 1_000_000]
            .iter()
            .map(|seq| comment(&run, &loc, *seq))
            .collect();
        // THEN every Comment fits SendCommand's 100 characters, keeps the location and the
        // batch number whole, and no two are alike
        for (c, seq) in comments.iter().zip([1, 2, 10, 11, 100, 999_999, 1_000_000]) {
            assert!(
                c.chars().count() <= MAX_COMMENT_CHARS,
                "{c}: {} chars",
                c.len()
            );
            assert!(
                c.ends_with(&format!(" 123456789012/ap-southeast-2 b{seq}")),
                "{c}"
            );
            assert!(c.starts_with("fleetpatch patch-tuesday-"), "{c}");
        }
        let distinct: BTreeSet<&String> = comments.iter().collect();
        assert_eq!(distinct.len(), comments.len(), "{comments:#?}");
    }

    #[test]
    fn run_ids_that_differ_only_past_the_cut_get_different_comments() {
        // GIVEN two 80-character run IDs that differ only in their last character
        let loc = Location::new("123456789012", "us-east-1");
        let (a, b) = (long_run_id('a'), long_run_id('b'));
        // WHEN the same batch of the same location is tagged in each run
        let (ca, cb) = (comment(&a, &loc, 1), comment(&b, &loc, 1));
        // THEN the Comments differ, and neither is the other run's
        assert_ne!(ca, cb);
        assert!(ca.len() <= 100 && cb.len() <= 100);
        // and a shortened run ID can never equal a run ID written out (`~` is not allowed
        // in execution names)
        assert!(ca.contains('~'));
        assert!(!comment("short-run", &loc, 1).contains('~'));
    }

    #[test]
    fn a_run_id_with_spaces_or_tildes_is_never_written_out() {
        let loc = Location::new("123456789012", "us-east-1");
        let a = comment("run 1", &loc, 1);
        let b = comment("run~1", &loc, 1);
        assert_ne!(a, b);
        assert_eq!(a.split(' ').count(), 4, "{a}");
        assert!(
            comment(
                &"x".repeat(500),
                &Location::new("123456789012", "r".repeat(200)),
                7
            )
            .chars()
            .count()
                <= MAX_COMMENT_CHARS
        );
    }
}
