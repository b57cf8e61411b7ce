//! Progress that several handlers share: bringing a location's records up to date with
//! SSM (adopting or releasing claimed batches, following commands in flight) and retiring
//! instances that will never start. Dispatch does this every round; aggregate does it once
//! more for a location that ended early; settle retires what a failed location left
//! pending. Every write is conditional on the state it leaves (see `store`), so any of them
//! may run beside another, or again, without undoing the other.

use crate::clock::now_epoch;
use crate::error::Result;
use crate::fleet::{self, FoundCommand, InvocationStatus};
use crate::model::{
    BatchRecord, BatchState, InstanceMove, InstanceRecord, InstanceState, Location,
};
use crate::reading::{command_records, in_flight_since, plan_reads, Reads};
use crate::store::Store;
use crate::tracking;
use std::collections::{BTreeSet, HashMap};
use tracing::{info, warn};

/// A claimed batch whose command cannot be found is given back after this many seconds
/// (Run Command is eventually consistent: a just-sent command may not be listed yet).
pub const RECOVERY_GRACE_SECONDS: i64 = 120;

/// The IDs of the instances still Pending.
pub fn pending_ids(instances: &[InstanceRecord]) -> Vec<String> {
    instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .map(|i| i.instance_id.clone())
        .collect()
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

/// What to do with a claimed batch whose command cannot be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Dispatch: wait [`RECOVERY_GRACE_SECONDS`] after the claim (`now` in epoch seconds),
    /// then give the instances back as Pending, to be sent again.
    AfterGrace { now: i64 },
    /// The location has ended: its instances end in this state now.
    Now(InstanceState),
}

/// Resolves every batch still Claimed (its send never recorded: a crash, a lost answer or a
/// 5xx between SendCommand and the write) and updates `instances` to match. Returns true
/// when another invocation resolved one first (the caller may read the records again).
pub async fn recover_claims(
    store: &Store,
    run_id: &str,
    loc: &Location,
    ssm: &aws_sdk_ssm::Client,
    instances: &mut [InstanceRecord],
    batches: &[BatchRecord],
    release: Release,
) -> Result<bool> {
    let mut raced = false;
    for b in batches.iter().filter(|b| b.state == BatchState::Claimed) {
        let release_to = match release {
            Release::AfterGrace { now } => {
                (now - b.claimed_at > RECOVERY_GRACE_SECONDS).then_some(InstanceState::Pending)
            }
            Release::Now(to) => Some(to),
        };
        match resolve_claim(store, run_id, loc, ssm, b, release_to).await? {
            ClaimResolution::Adopted(cmd) => set_state(
                instances,
                &b.instance_ids,
                InstanceState::InFlight,
                Some(&cmd),
            ),
            ClaimResolution::Released => {
                let to = release_to.unwrap_or(InstanceState::Pending);
                set_state(instances, &b.instance_ids, to, None)
            }
            ClaimResolution::Waiting => {}
            ClaimResolution::Raced => raced = true,
        }
    }
    Ok(raced)
}

/// When each batch was claimed (epoch seconds), by sequence number.
pub fn claim_times(batches: &[BatchRecord]) -> HashMap<u64, i64> {
    batches.iter().map(|b| (b.seq, b.claimed_at)).collect()
}

/// The batch of each instance in flight (InFlight), by instance ID.
pub fn in_flight_batches(instances: &[InstanceRecord]) -> HashMap<String, Option<u64>> {
    instances
        .iter()
        .filter(|i| i.state == InstanceState::InFlight)
        .map(|i| (i.instance_id.clone(), i.batch))
        .collect()
}

/// What following the commands in flight found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Followed {
    /// Instances recorded in a final state this round.
    pub finished: u64,
    /// Instances Run Command counts final that were left unread: their slots are free.
    pub freed: u64,
}

/// The round's reads ([`plan_reads`]): with two or more commands in flight and their claim
/// times known, one ListCommands for the location decides them; with one, reading it costs
/// the same one call.
async fn reads(
    ssm: &aws_sdk_ssm::Client,
    instances: &[InstanceRecord],
    batches: &[BatchRecord],
    sweep_at: Option<u64>,
) -> Result<Reads> {
    let records = command_records(instances, batches);
    let since = match in_flight_since(instances, batches) {
        Some(t) if records.len() >= 2 => t,
        _ => {
            return Ok(Reads {
                by_command: records.into_keys().collect(),
                ..Reads::default()
            })
        }
    };
    // The claim is written before SendCommand; the margin covers clocks that disagree.
    let wanted: BTreeSet<String> = records.keys().cloned().collect();
    let listing = tracking::command_progress(ssm, &wanted, since - 300).await?;
    Ok(plan_reads(
        &records,
        &listing,
        now_epoch(),
        RECOVERY_GRACE_SECONDS,
        sweep_at,
    ))
}

/// Records, command by command, each instance in flight whose SSM status changed, with a
/// write conditional on it still being InFlight that also counts finished ones on the run
/// (so a round that fails part-way leaves records and counters in agreement). Which commands
/// are read, and how, is [`crate::reading`]'s: with `sweep_at` None (aggregate) every
/// command with news is read; with `Some` (dispatch), successes of multi-instance commands
/// may be left unread, their slots counted free. Updates `instances` in place.
pub async fn follow_commands(
    store: &Store,
    run_id: &str,
    loc: &Location,
    ssm: &aws_sdk_ssm::Client,
    instances: &mut [InstanceRecord],
    batches: &[BatchRecord],
    sweep_at: Option<u64>,
) -> Result<Followed> {
    let reads = reads(ssm, instances, batches, sweep_at).await?;

    // What the listing told, and the one listing across commands, first.
    let mut seen: Seen = match reads.sweep_since {
        Some(since) => tracking::invocations_since(ssm, since).await?,
        None => HashMap::new(),
    };
    for (id, cmd) in &reads.succeeded {
        let success = InvocationStatus {
            status: "Success".into(),
            details: "Success".into(),
            state: InstanceState::Succeeded,
        };
        seen.entry(cmd.clone())
            .or_default()
            .insert(id.clone(), success);
    }
    let mut finished = 0;
    for (cmd, invocations) in seen.iter().filter(|(c, _)| !reads.by_command.contains(*c)) {
        finished += record_seen(store, run_id, loc, instances, cmd, invocations).await?;
    }

    // Then each command read by its ID, recorded as it is read.
    for cmd in &reads.by_command {
        let invocations = fleet::list_invocations(ssm, cmd).await?;
        finished += record_seen(store, run_id, loc, instances, cmd, &invocations).await?;
    }
    Ok(Followed {
        finished,
        freed: reads.freed,
    })
}

/// Invocations by command, then instance.
type Seen = HashMap<String, HashMap<String, InvocationStatus>>;

/// Records each instance of `cmd` in flight whose status in `invocations` differs from its
/// record; returns how many reached a final state.
async fn record_seen(
    store: &Store,
    run_id: &str,
    loc: &Location,
    instances: &mut [InstanceRecord],
    cmd: &str,
    invocations: &HashMap<String, InvocationStatus>,
) -> Result<u64> {
    let moves: Vec<InstanceMove> = instances
        .iter()
        .filter(|i| i.state == InstanceState::InFlight && i.command_id.as_deref() == Some(cmd))
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
    if moves.is_empty() {
        return Ok(0);
    }
    record_moves(store, run_id, loc, instances, moves).await
}

/// Records `moves` and applies the recorded ones to `instances`; returns how many reached a
/// final state.
async fn record_moves(
    store: &Store,
    run_id: &str,
    loc: &Location,
    instances: &mut [InstanceRecord],
    moves: Vec<InstanceMove>,
) -> Result<u64> {
    let recorded: BTreeSet<String> = store
        .record_instances(run_id, loc, &moves)
        .await?
        .into_iter()
        .collect();
    let mut finished = 0;
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
    Ok(finished)
}

/// Moves every instance of `ids` still Pending to NotStarted with `why` (counted on the run
/// in the same transaction). Updates `instances` in place; returns how many moved.
pub async fn retire_pending(
    store: &Store,
    run_id: &str,
    loc: &Location,
    instances: &mut [InstanceRecord],
    ids: &[String],
    why: &str,
) -> Result<u64> {
    let moves: Vec<InstanceMove> = ids
        .iter()
        .map(|id| InstanceMove::not_started(id, why))
        .collect();
    let recorded = store.record_instances(run_id, loc, &moves).await?;
    set_state(instances, &recorded, InstanceState::NotStarted, None);
    Ok(recorded.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

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
