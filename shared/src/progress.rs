//! Progress that several handlers share: bringing a location's records up to date with
//! SSM (adopting or releasing claimed batches, following commands in flight) and retiring
//! instances that will never start. Dispatch does this every round; aggregate does it once
//! more for a location that ended early; settle retires what a failed location left
//! pending. Every write is conditional on the state it leaves (see `store`), so any of them
//! may run beside another, or again, without undoing the other.

use crate::error::Result;
use crate::fleet::{self, FoundCommand};
use crate::model::{
    BatchRecord, BatchState, InstanceMove, InstanceRecord, InstanceState, Location,
};
use crate::store::Store;
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

/// The commands in flight (some instance of theirs is InFlight).
fn commands_in_flight(instances: &[InstanceRecord]) -> BTreeSet<String> {
    instances
        .iter()
        .filter(|i| i.state == InstanceState::InFlight)
        .filter_map(|i| i.command_id.clone())
        .collect()
}

/// When the oldest batch in flight was claimed (epoch seconds): every command in flight was
/// invoked after it. None when an in-flight instance's batch is not known.
pub fn in_flight_since(instances: &[InstanceRecord], batches: &[BatchRecord]) -> Option<i64> {
    let claimed: HashMap<u64, i64> = batches.iter().map(|b| (b.seq, b.claimed_at)).collect();
    instances
        .iter()
        .filter(|i| i.state == InstanceState::InFlight)
        .map(|i| i.batch.and_then(|seq| claimed.get(&seq).copied()))
        .try_fold(i64::MAX, |oldest, at| at.map(|t| oldest.min(t)))
}

/// Whether a command may hold news: SSM counts more of its invocations final than the
/// records do, or SSM does not list it (yet). Pure.
pub fn may_have_changed(
    command_id: &str,
    instances: &[InstanceRecord],
    completed: &HashMap<String, u64>,
) -> bool {
    let Some(&done) = completed.get(command_id) else {
        return true;
    };
    let recorded = instances
        .iter()
        .filter(|i| i.command_id.as_deref() == Some(command_id) && i.state.is_terminal())
        .count() as u64;
    done > recorded
}

/// The commands in flight worth a ListCommandInvocations this round. With two or more in
/// flight and their claim times known, one ListCommands for the location tells which have
/// news; with one, reading it costs the same one call.
async fn commands_to_read(
    ssm: &aws_sdk_ssm::Client,
    instances: &[InstanceRecord],
    batches: &[BatchRecord],
) -> Result<BTreeSet<String>> {
    let commands = commands_in_flight(instances);
    let since = match in_flight_since(instances, batches) {
        Some(t) if commands.len() >= 2 => t,
        _ => return Ok(commands),
    };
    // The claim is written before SendCommand; the margin covers clocks that disagree.
    let completed = fleet::completed_counts(ssm, &commands, since - 300).await?;
    Ok(commands
        .into_iter()
        .filter(|c| may_have_changed(c, instances, &completed))
        .collect())
}

/// Records, command by command, each instance in flight whose SSM status changed
/// (ListCommandInvocations, all pages, only for the commands that may have news: see
/// [`may_have_changed`]), with a write conditional on it still being InFlight that also
/// counts finished ones on the run (so a round that fails part-way leaves records and
/// counters in agreement). Updates `instances` in place; returns how many reached a final
/// state.
pub async fn follow_commands(
    store: &Store,
    run_id: &str,
    loc: &Location,
    ssm: &aws_sdk_ssm::Client,
    instances: &mut [InstanceRecord],
    batches: &[BatchRecord],
) -> Result<u64> {
    let mut finished = 0;
    for cmd in commands_to_read(ssm, instances, batches).await? {
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

    fn in_flight(id: &str, cmd: &str, batch: Option<u64>) -> InstanceRecord {
        let mut r = InstanceRecord::new(id, InstanceState::InFlight);
        r.command_id = Some(cmd.into());
        r.batch = batch;
        r
    }

    fn batch(seq: u64, claimed_at: i64) -> BatchRecord {
        BatchRecord {
            seq,
            instance_ids: vec![],
            comment: String::new(),
            claimed_at,
            state: BatchState::Sent,
            command_id: None,
        }
    }

    #[test]
    fn commands_are_listed_from_the_oldest_claim_in_flight_or_not_at_all() {
        let batches = [batch(1, 500), batch(2, 300), batch(3, 100)];
        let mut done = in_flight("i-3", "c3", Some(3));
        done.state = InstanceState::Succeeded;
        // the oldest batch still in flight decides; a finished one does not
        let instances = [
            in_flight("i-1", "c1", Some(1)),
            in_flight("i-2", "c2", Some(2)),
            done,
        ];
        assert_eq!(in_flight_since(&instances, &batches), Some(300));
        // an in-flight instance whose batch is unknown: no listing, every command is read
        let unknown = [
            in_flight("i-1", "c1", Some(1)),
            in_flight("i-9", "c9", None),
        ];
        assert_eq!(in_flight_since(&unknown, &batches), None);
    }

    #[test]
    fn a_command_has_news_when_ssm_counts_more_of_it_final_than_the_records() {
        let mut first = in_flight("i-1", "c1", Some(1));
        first.state = InstanceState::Succeeded;
        let instances = [first, in_flight("i-2", "c1", Some(1))];
        let counts = |n: u64| HashMap::from([("c1".to_string(), n)]);
        assert!(!may_have_changed("c1", &instances, &counts(1)));
        assert!(may_have_changed("c1", &instances, &counts(2)));
        // not listed yet (eventual consistency): read it
        assert!(may_have_changed("c1", &instances, &HashMap::new()));
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
