//! The `dispatch` function, called again and again (a Wait loop) for one location until it
//! answers `done`. Each call:
//! 1. recovers batches that were claimed but whose send was never recorded (a crash, a lost
//!    answer or a 5xx between SendCommand and the write), by finding the command by its
//!    Comment (unique per batch, see [`comment`]) and adopting it only if it was sent to
//!    exactly the batch's instances;
//! 2. follows the commands in flight with ListCommandInvocations and records each instance's
//!    status, counting finished ones on the run in the same transaction;
//! 3. decides, with the pure [`plan_round`], what to start: at most `window` instances in
//!    flight (a sliding window), nothing new once counted errors pass the threshold;
//! 4. claims each new batch of at most 50 instances with a conditional DynamoDB transaction
//!    *before* SendCommand, so that no retry or repeat ever sends an instance a second command.

use crate::clients::{AssumeError, ClientFactory};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::expand::count_states;
use crate::fleet::{self, CommandSpec, FoundCommand, SendOutcome, SEND_CHUNK};
use crate::model::{location_outcome_from_instances, InstanceState, Location, LocationOutcome};
use crate::ratecontrol::threshold_passed;
use crate::store::{
    now_epoch, now_epoch_ms, BatchRecord, BatchState, InstanceMove, InstanceRecord, Phase,
    RunRecord, Store,
};
use crate::task::LocationTask;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use tracing::{info, warn};

/// A claimed batch whose command cannot be found is given back after this many seconds
/// (Run Command is eventually consistent: a just-sent command may not be listed yet).
pub const RECOVERY_GRACE_SECONDS: i64 = 120;

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

/// The command a claimed batch may adopt among those carrying its Comment: the one sent to
/// exactly the batch's instances. A command with the same Comment and other instances is
/// not the batch's (pure).
pub fn own_command<'a>(batch: &BatchRecord, found: &'a [FoundCommand]) -> Option<&'a FoundCommand> {
    let mut want: Vec<&String> = batch.instance_ids.iter().collect();
    want.sort();
    want.dedup();
    found.iter().find(|c| {
        let mut got: Vec<&String> = c.instance_ids.iter().collect();
        got.sort();
        got.dedup();
        got == want
    })
}

/// What became of a batch still Claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimResolution {
    /// Its command was found and recorded: the instances are InFlight.
    Adopted(String),
    /// No command: the instances went to the release state.
    Released,
    /// No command yet, still within the grace period: left as it is.
    Waiting,
    /// Someone else resolved it first.
    Raced,
}

/// Resolves a batch still Claimed (its send was never recorded): adopts its own command,
/// found by Comment with ListCommands ([`own_command`]); otherwise, when `release_to` is
/// given, releases the batch, its instances going to that state (Pending: to be sent again;
/// NotStarted: the location has ended). With `release_to` None it waits.
pub async fn resolve_claim(
    store: &Store,
    run_id: &str,
    loc: &Location,
    ssm: &aws_sdk_ssm::Client,
    b: &BatchRecord,
    release_to: Option<InstanceState>,
) -> Result<ClaimResolution> {
    let found = fleet::find_commands_by_comment(ssm, &b.comment, b.claimed_at - 300).await?;
    if let Some(cmd) = own_command(b, &found) {
        info!(run_id, location = %loc, batch = b.seq, command_id = %cmd.command_id, "recovered an unrecorded send");
        return Ok(
            if store
                .mark_batch_sent(run_id, loc, b, &cmd.command_id)
                .await?
            {
                ClaimResolution::Adopted(cmd.command_id.clone())
            } else {
                ClaimResolution::Raced
            },
        );
    }
    for other in &found {
        warn!(run_id, location = %loc, batch = b.seq, command_id = %other.command_id, "a command carries the batch's Comment but not its instances: not adopted");
    }
    let Some(to) = release_to else {
        return Ok(ClaimResolution::Waiting);
    };
    warn!(run_id, location = %loc, batch = b.seq, to = to.as_str(), "claimed batch has no command: releasing it");
    let finals: HashMap<String, InstanceState> = if to == InstanceState::Pending {
        HashMap::new()
    } else {
        b.instance_ids.iter().map(|i| (i.clone(), to)).collect()
    };
    let why = "no command carrying the batch's Comment and instances was found";
    Ok(
        if store.release_batch(run_id, loc, b, why, &finals).await? {
            ClaimResolution::Released
        } else {
            ClaimResolution::Raced
        },
    )
}

/// Reads the invocations of every command in flight (ListCommandInvocations, all pages) and
/// records, command by command, each instance whose SSM status changed, with a write
/// conditional on it still being InFlight that also counts finished ones on the run (so a
/// round that fails part-way leaves records and counters in agreement). Updates `instances`
/// in place; returns how many reached a final state.
pub async fn follow_commands(
    store: &Store,
    run_id: &str,
    loc: &Location,
    ssm: &aws_sdk_ssm::Client,
    instances: &mut [InstanceRecord],
) -> Result<u64> {
    let mut finished = 0;
    let commands: BTreeSet<String> = instances
        .iter()
        .filter(|i| i.state == InstanceState::InFlight)
        .filter_map(|i| i.command_id.clone())
        .collect();
    for cmd in commands {
        let invocations = fleet::list_invocations(ssm, &cmd).await?;
        let moves: Vec<InstanceMove> = instances
            .iter()
            .filter(|i| {
                i.state == InstanceState::InFlight && i.command_id.as_deref() == Some(cmd.as_str())
            })
            .filter_map(|inst| {
                let inv = invocations.get(&inst.instance_id)?;
                let changed = inst.ssm_status.as_deref() != Some(inv.status.as_str())
                    || inst.status_details.as_deref() != Some(inv.details.as_str());
                changed.then(|| {
                    let mut updated = inst.clone();
                    updated.state = inv.state;
                    updated.ssm_status = Some(inv.status.clone());
                    updated.status_details = Some(inv.details.clone());
                    InstanceMove {
                        record: updated,
                        from: InstanceState::InFlight,
                    }
                })
            })
            .collect();
        let recorded: BTreeSet<String> = store
            .record_instances(run_id, loc, &moves)
            .await?
            .into_iter()
            .collect();
        for m in moves {
            if !recorded.contains(&m.record.instance_id) {
                continue;
            }
            if m.record.state.is_terminal() {
                finished += 1;
            }
            if let Some(inst) = instances
                .iter_mut()
                .find(|i| i.instance_id == m.record.instance_id)
            {
                *inst = m.record;
            }
        }
    }
    Ok(finished)
}

/// Moves every instance of `ids` still Pending to NotStarted with `why` (counted on the run
/// in the same transaction). Updates `instances` in place; returns how many moved.
pub async fn mark_not_started(
    store: &Store,
    run_id: &str,
    loc: &Location,
    instances: &mut [InstanceRecord],
    ids: &[String],
    why: &str,
) -> Result<u64> {
    let moves: Vec<InstanceMove> = ids
        .iter()
        .map(|id| {
            let mut r = InstanceRecord::new(id, InstanceState::NotStarted);
            r.status_details = Some(why.to_string());
            InstanceMove {
                record: r,
                from: InstanceState::Pending,
            }
        })
        .collect();
    let recorded = store.record_instances(run_id, loc, &moves).await?;
    set_state(instances, &recorded, InstanceState::NotStarted, None);
    Ok(recorded.len() as u64)
}

/// What `dispatch` needs.
pub struct Dispatcher<F> {
    /// Configuration (poll interval).
    pub config: Config,
    /// The table.
    pub store: Store,
    /// Clients per location.
    pub factory: F,
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

/// Sets the in-memory state (and command) of the instances `ids`, after a recorded write.
pub fn set_state(
    instances: &mut [InstanceRecord],
    ids: &[String],
    state: InstanceState,
    command_id: Option<&str>,
) {
    for i in instances
        .iter_mut()
        .filter(|i| ids.contains(&i.instance_id))
    {
        i.state = state;
        if let Some(c) = command_id {
            i.command_id = Some(c.to_string());
        }
    }
}

impl<F: ClientFactory> Dispatcher<F> {
    /// One dispatch round for one location.
    pub async fn handle(&self, task: LocationTask) -> Result<LocationTask> {
        let loc = task.location()?;
        let run_id = task.run_id.as_str();
        let run = self.store.get_run(run_id).await?;
        let record = self.store.get_location(run_id, &loc).await?;
        if record.phase == Some(Phase::Done) {
            return Ok(task.finished(
                record.outcome.unwrap_or(LocationOutcome::Error),
                record.reason,
            ));
        }
        let clients = match self
            .factory
            .clients(&loc, &run.input.execution_role_name, run_id)
            .await
        {
            Ok(c) => c,
            Err(AssumeError::AccessDenied { role_arn, message }) => {
                let (code, message) = code_and_message(&message);
                return Err(Error::Aws {
                    operation: "sts:AssumeRole".into(),
                    code,
                    message: format!("{role_arn} refused during dispatch: {message}"),
                });
            }
            Err(AssumeError::Other(e)) => return Err(e),
        };
        let ssm = &clients.ssm;
        // Taken before the read: a later-started round's progress is never overwritten by ours.
        let read_from_ms = now_epoch_ms();
        let (mut instances, batches) = self.store.list_location_items(run_id, &loc).await?;
        let now = now_epoch();

        // 1. Recover batches claimed but not recorded as sent.
        for b in batches.iter().filter(|b| b.state == BatchState::Claimed) {
            let release_to =
                (now - b.claimed_at > RECOVERY_GRACE_SECONDS).then_some(InstanceState::Pending);
            match resolve_claim(&self.store, run_id, &loc, ssm, b, release_to).await? {
                ClaimResolution::Adopted(cmd) => set_state(
                    &mut instances,
                    &b.instance_ids,
                    InstanceState::InFlight,
                    Some(&cmd),
                ),
                ClaimResolution::Released => set_state(
                    &mut instances,
                    &b.instance_ids,
                    InstanceState::Pending,
                    None,
                ),
                ClaimResolution::Waiting | ClaimResolution::Raced => {}
            }
        }

        // 2. Follow the commands in flight.
        follow_commands(&self.store, run_id, &loc, ssm, &mut instances).await?;

        // 3. Decide, then 4. claim and send.
        let round = plan_round(&instances, record.window, record.tolerated);
        mark_not_started(
            &self.store,
            run_id,
            &loc,
            &mut instances,
            &round.not_started,
            "instance error threshold passed",
        )
        .await?;
        let spec = command_spec(&run);
        for ids in &round.start {
            let seq = self.store.next_batch_seq(run_id, &loc).await?;
            let batch = BatchRecord {
                seq,
                instance_ids: ids.clone(),
                comment: comment(run_id, &loc, seq),
                claimed_at: now_epoch(),
                state: BatchState::Claimed,
                command_id: None,
            };
            if !self.store.claim_batch(run_id, &loc, &batch).await? {
                warn!(run_id, location = %loc, batch = seq, "instances already claimed elsewhere: not sending");
                break;
            }
            set_state(&mut instances, ids, InstanceState::Claimed, None);
            match fleet::send_command(ssm, ids, &spec, &batch.comment).await {
                SendOutcome::Sent(cmd) => {
                    info!(run_id, location = %loc, batch = seq, command_id = %cmd, instances = ids.len(), "command sent");
                    if self
                        .store
                        .mark_batch_sent(run_id, &loc, &batch, &cmd)
                        .await?
                    {
                        set_state(&mut instances, ids, InstanceState::InFlight, Some(&cmd));
                    }
                }
                SendOutcome::Refused {
                    reason,
                    invalid_instances,
                    throttled,
                } => {
                    let mut finals = HashMap::new();
                    if invalid_instances {
                        // Some instance left SSM since expansion: find which, retire them.
                        let managed = fleet::describe_managed(ssm, ids).await?;
                        for id in ids {
                            match managed.get(id) {
                                Some(m) if m.ping_status == "Online" => {}
                                Some(_) => {
                                    finals.insert(id.clone(), InstanceState::Offline);
                                }
                                None => {
                                    finals.insert(id.clone(), InstanceState::Unmanaged);
                                }
                            }
                        }
                    }
                    warn!(run_id, location = %loc, batch = seq, %reason, "SendCommand refused; batch released");
                    self.store
                        .release_batch(run_id, &loc, &batch, &reason, &finals)
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
                    if !(throttled || invalid_instances && !finals.is_empty()) {
                        let (code, message) = code_and_message(&reason);
                        return Err(Error::Aws {
                            operation: "ssm:SendCommand".into(),
                            code,
                            message,
                        });
                    }
                    break;
                }
                SendOutcome::Unknown(why) => {
                    // The command may exist (no answer, or a 5xx that does not prove it was
                    // not made): keep the claim; the next round finds it by its Comment or
                    // releases it after the grace period.
                    warn!(run_id, location = %loc, batch = seq, %why, "SendCommand answer lost; claim kept for recovery");
                    break;
                }
            }
        }

        // 5. Record progress; answer.
        let after = plan_round(&instances, record.window, record.tolerated);
        let states: Vec<InstanceState> = instances.iter().map(|i| i.state).collect();
        self.store
            .set_location_progress(
                run_id,
                &loc,
                &count_states(&states),
                after.errors,
                after.stopping || round.stopping,
                read_from_ms,
            )
            .await?;
        let all_final = instances.iter().all(|i| i.state.is_terminal());
        if all_final {
            let outcome = location_outcome_from_instances(states, round.stopping || after.stopping);
            let reason = (outcome == LocationOutcome::ThresholdExceeded).then(|| {
                format!(
                    "{} counted error(s) passed targetErrorThreshold {}; remaining instances not started",
                    after.errors, run.input.target_error_threshold
                )
            });
            info!(run_id, location = %loc, outcome = outcome.as_str(), "location finished");
            return Ok(task.finished(outcome, reason));
        }
        Ok(task.again(self.config.poll_seconds))
    }
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
    use crate::ratecontrol::Rate;

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

    fn found(id: &str, instances: &[&str]) -> FoundCommand {
        FoundCommand {
            command_id: id.into(),
            instance_ids: instances.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_a_command_sent_to_exactly_the_batch_is_adopted() {
        // GIVEN a batch of two instances and commands that carry its Comment
        let batch = BatchRecord {
            seq: 1,
            instance_ids: vec!["i-2".into(), "i-1".into()],
            comment: "c".into(),
            claimed_at: 0,
            state: BatchState::Claimed,
            command_id: None,
        };
        // THEN one sent to other instances, to fewer, or to more is not the batch's
        assert_eq!(own_command(&batch, &[found("a", &["i-1", "i-3"])]), None);
        assert_eq!(own_command(&batch, &[found("b", &["i-1"])]), None);
        assert_eq!(
            own_command(&batch, &[found("c", &["i-1", "i-2", "i-3"])]),
            None
        );
        assert_eq!(own_command(&batch, &[]), None);
        // and the one sent to exactly its instances (in any order) is
        let cands = [found("d", &["i-1", "i-9"]), found("e", &["i-1", "i-2"])];
        assert_eq!(
            own_command(&batch, &cands).map(|c| c.command_id.as_str()),
            Some("e")
        );
    }
}
