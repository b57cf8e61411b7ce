//! Which of a location's commands in flight a round reads, and how, from one ListCommands
//! listing (pure: [`crate::progress::follow_commands`] gathers the records and the listing,
//! asks [`plan_reads`], and makes the reads it answers).
//!
//! A round needs two things from Run Command: how many slots are free (the window), and
//! each instance's outcome (the records, the error threshold, the location's end). The
//! listing gives the first for every command, and the second for a single-instance command
//! that succeeded (its status is its invocation's). The rest is read as it matters:
//! - a command whose `ErrorCount` passed its recorded errors is read now (the threshold
//!   counts errors by instance);
//! - so is any other single-instance command that ended, and a command Run Command does
//!   not list although it was claimed more than the grace period ago;
//! - a multi-instance command that only finished more instances successfully is left
//!   unread: its finished instances free their slots by count ([`Reads::freed`]) until
//!   enough are waiting for one listing across commands (`sweep_at`), or nothing is left
//!   running (the location cannot end before its records do).
//!
//! Invariants: a finished instance is either read this round or counted in `freed`, never
//! neither (so the window never holds a slot that is free, nor frees one twice); nothing is
//! left unread once no command of the location is running; with `sweep_at` None every
//! command with news is read now.

use crate::model::{BatchRecord, InstanceRecord, InstanceState};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A command's progress as ListCommands reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandProgress {
    /// `TargetCount`: the instances it was sent to.
    pub target: u64,
    /// `CompletedCount`: its invocations in a final state.
    pub completed: u64,
    /// `ErrorCount`: Failed or Execution Timed Out.
    pub errors: u64,
    /// `Status` and `StatusDetails` (for a single-instance command, its invocation's).
    pub status: String,
    pub details: String,
    /// `RequestedDateTime`, epoch seconds, on Run Command's clock.
    pub requested: Option<i64>,
}

/// What the records say of one command in flight.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandRecords {
    /// Its instances recorded InFlight.
    pub in_flight: Vec<String>,
    /// Its instances recorded in a final state.
    pub terminal: u64,
    /// Of those, the ones counted as errors (Failed, Execution Timed Out).
    pub errors: u64,
    /// When its batch was claimed (epoch seconds), if known.
    pub claimed_at: Option<i64>,
}

/// How many unread instances dispatch lets wait before one listing reads them: a page's
/// worth, or a window's when the window is larger (that listing also pages through the
/// instances in flight, so each sweep then costs about two calls per window of ends,
/// whatever the window).
pub fn sweep_at(window: u64) -> u64 {
    window.max(50)
}

/// The reads a round makes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reads {
    /// Instances whose command (theirs alone) the listing shows succeeded: recorded from it.
    pub succeeded: Vec<(String, String)>,
    /// Commands whose invocations are read one command at a time.
    pub by_command: BTreeSet<String>,
    /// Every invocation since this moment (Run Command's clock) is read in one listing (the
    /// commands of `by_command` excepted: they are recorded from their own read).
    pub sweep_since: Option<i64>,
    /// Instances Run Command counts final and the records do not, left unread: free slots.
    pub freed: u64,
}

/// Decides the round's reads (the rules of the module header). `grace` is how long a
/// claimed command may go unlisted before it is read by its ID.
pub fn plan_reads(
    commands: &BTreeMap<String, CommandRecords>,
    listing: &HashMap<String, CommandProgress>,
    now: i64,
    grace: i64,
    sweep_at: Option<u64>,
) -> Reads {
    let mut reads = Reads::default();
    let mut unread: Vec<(&String, u64, Option<i64>)> = Vec::new();
    let mut running = 0;
    for (cmd, rec) in commands {
        let Some(p) = listing.get(cmd) else {
            running += rec.in_flight.len() as u64;
            if rec.claimed_at.is_none_or(|at| now - at > grace) {
                reads.by_command.insert(cmd.clone());
            }
            continue;
        };
        running += p.target.saturating_sub(p.completed);
        let news = p.completed.saturating_sub(rec.terminal);
        if news == 0 {
            continue;
        }
        match (p.target, rec.in_flight.as_slice()) {
            (1, [only]) if p.status == "Success" => {
                reads.succeeded.push((only.clone(), cmd.clone()));
            }
            (1, _) => {
                reads.by_command.insert(cmd.clone());
            }
            _ if p.errors > rec.errors || sweep_at.is_none() => {
                reads.by_command.insert(cmd.clone());
            }
            _ => unread.push((cmd, news, p.requested)),
        }
    }

    let waiting: u64 = unread.iter().map(|(_, n, _)| n).sum();
    let sweep = sweep_at.is_some_and(|at| waiting >= at) || running == 0;
    if !sweep {
        reads.freed = waiting;
        return reads;
    }
    // One listing across commands costs at least a call: worth it from three commands on.
    let since = unread
        .iter()
        .map(|(_, _, at)| *at)
        .collect::<Option<Vec<_>>>();
    match since.and_then(|at| at.into_iter().min()) {
        Some(oldest) if unread.len() >= 3 => reads.sweep_since = Some(oldest - 1),
        _ => reads
            .by_command
            .extend(unread.into_iter().map(|(c, _, _)| c.clone())),
    }
    reads
}

/// The commands in flight (some instance of theirs is InFlight), with what the records say
/// of each: its instances in flight, those final and those counted as errors, and when its
/// batch was claimed.
pub fn command_records(
    instances: &[InstanceRecord],
    batches: &[BatchRecord],
) -> BTreeMap<String, CommandRecords> {
    let claimed: HashMap<u64, i64> = batches.iter().map(|b| (b.seq, b.claimed_at)).collect();
    let mut out: BTreeMap<String, CommandRecords> = BTreeMap::new();
    for i in instances
        .iter()
        .filter(|i| i.state == InstanceState::InFlight)
    {
        if let Some(cmd) = &i.command_id {
            let rec = out.entry(cmd.clone()).or_default();
            rec.in_flight.push(i.instance_id.clone());
            rec.claimed_at = i.batch.and_then(|seq| claimed.get(&seq).copied());
        }
    }
    for i in instances.iter().filter(|i| i.state.is_terminal()) {
        if let Some(rec) = i.command_id.as_ref().and_then(|c| out.get_mut(c)) {
            rec.terminal += 1;
            rec.errors += u64::from(i.state.counts_as_error());
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 100_000;

    fn rec(in_flight: &[&str], terminal: u64, errors: u64) -> CommandRecords {
        CommandRecords {
            in_flight: in_flight.iter().map(|s| s.to_string()).collect(),
            terminal,
            errors,
            claimed_at: Some(NOW - 600),
        }
    }

    fn progress(
        target: u64,
        completed: u64,
        errors: u64,
        status: &str,
        at: i64,
    ) -> CommandProgress {
        CommandProgress {
            target,
            completed,
            errors,
            status: status.into(),
            details: status.into(),
            requested: Some(at),
        }
    }

    fn plan(
        commands: &[(&str, CommandRecords, Option<CommandProgress>)],
        sweep_at: Option<u64>,
    ) -> Reads {
        let recs = commands
            .iter()
            .map(|(c, r, _)| (c.to_string(), r.clone()))
            .collect();
        let listing = commands
            .iter()
            .filter_map(|(c, _, p)| p.clone().map(|p| (c.to_string(), p)))
            .collect();
        plan_reads(&recs, &listing, NOW, 120, sweep_at)
    }

    #[test]
    fn a_single_instance_command_that_succeeded_is_recorded_from_the_listing() {
        // GIVEN two single-instance commands that ended, one Success and one Failed, and a
        // third still running
        let reads = plan(
            &[
                (
                    "a",
                    rec(&["i-1"], 0, 0),
                    Some(progress(1, 1, 0, "Success", 1)),
                ),
                (
                    "b",
                    rec(&["i-2"], 0, 0),
                    Some(progress(1, 1, 1, "Failed", 2)),
                ),
                (
                    "c",
                    rec(&["i-3"], 0, 0),
                    Some(progress(1, 0, 0, "InProgress", 3)),
                ),
            ],
            Some(50),
        );
        // THEN the success needs no read, the failure is read by its ID, the third waits
        assert_eq!(reads.succeeded, vec![("i-1".to_string(), "a".to_string())]);
        assert_eq!(reads.by_command, BTreeSet::from(["b".to_string()]));
        assert_eq!((reads.sweep_since, reads.freed), (None, 0));
    }

    #[test]
    fn successes_of_multi_instance_commands_free_their_slots_unread() {
        // GIVEN two commands of three instances, one and two of them finished without error,
        // and a fourth command still running
        let reads = plan(
            &[
                (
                    "a",
                    rec(&["i-1", "i-2", "i-3"], 0, 0),
                    Some(progress(3, 1, 0, "InProgress", 1)),
                ),
                (
                    "b",
                    rec(&["i-4", "i-5", "i-6"], 0, 0),
                    Some(progress(3, 2, 0, "InProgress", 2)),
                ),
                (
                    "c",
                    rec(&["i-7"], 0, 0),
                    Some(progress(1, 0, 0, "InProgress", 3)),
                ),
            ],
            Some(50),
        );
        // THEN nothing is read, and three slots are free
        assert_eq!(reads.freed, 3);
        assert!(reads.by_command.is_empty() && reads.succeeded.is_empty());
        assert_eq!(reads.sweep_since, None);
        // AND with no sweep threshold (aggregate's reading) both are read now
        let eager = plan(
            &[
                (
                    "a",
                    rec(&["i-1", "i-2", "i-3"], 0, 0),
                    Some(progress(3, 1, 0, "InProgress", 1)),
                ),
                (
                    "b",
                    rec(&["i-4", "i-5", "i-6"], 0, 0),
                    Some(progress(3, 2, 0, "InProgress", 2)),
                ),
            ],
            None,
        );
        assert_eq!(eager.by_command.len(), 2);
        assert_eq!(eager.freed, 0);
    }

    #[test]
    fn a_new_error_is_read_now() {
        // GIVEN a command of two whose ErrorCount passed its recorded errors
        let reads = plan(
            &[
                (
                    "a",
                    rec(&["i-1", "i-2"], 0, 0),
                    Some(progress(2, 1, 1, "InProgress", 1)),
                ),
                (
                    "c",
                    rec(&["i-7"], 0, 0),
                    Some(progress(1, 0, 0, "InProgress", 3)),
                ),
            ],
            Some(50),
        );
        // THEN it is read (the threshold counts errors by instance), and frees nothing unread
        assert_eq!(reads.by_command, BTreeSet::from(["a".to_string()]));
        assert_eq!(reads.freed, 0);
    }

    #[test]
    fn enough_unread_instances_are_read_in_one_listing_from_the_oldest() {
        // GIVEN three commands with unread successes, 4 in all, and a sweep at 4
        let cmds = [
            (
                "a",
                rec(&["i-1", "i-2"], 0, 0),
                Some(progress(2, 1, 0, "InProgress", 500)),
            ),
            (
                "b",
                rec(&["i-3", "i-4"], 0, 0),
                Some(progress(2, 2, 0, "Success", 300)),
            ),
            (
                "c",
                rec(&["i-5", "i-6"], 0, 0),
                Some(progress(2, 1, 0, "InProgress", 700)),
            ),
            (
                "d",
                rec(&["i-7"], 0, 0),
                Some(progress(1, 0, 0, "InProgress", 900)),
            ),
        ];
        let reads = plan(&cmds, Some(4));
        // THEN one listing reads every invocation since the oldest of them
        assert_eq!(reads.sweep_since, Some(299));
        assert!(reads.by_command.is_empty());
        assert_eq!(reads.freed, 0);
        // AND below the threshold they stay unread
        assert_eq!(plan(&cmds, Some(5)).freed, 4);
    }

    #[test]
    fn a_command_with_a_new_error_is_read_by_its_id_even_in_a_sweep() {
        // GIVEN three commands with unread successes, enough for a sweep, and a fourth whose
        // ErrorCount moved
        let reads = plan(
            &[
                (
                    "a",
                    rec(&["i-1", "i-2"], 0, 0),
                    Some(progress(2, 1, 0, "InProgress", 500)),
                ),
                (
                    "b",
                    rec(&["i-3", "i-4"], 0, 0),
                    Some(progress(2, 1, 0, "InProgress", 600)),
                ),
                (
                    "c",
                    rec(&["i-5", "i-6"], 0, 0),
                    Some(progress(2, 1, 0, "InProgress", 700)),
                ),
                (
                    "e",
                    rec(&["i-7", "i-8"], 0, 0),
                    Some(progress(2, 1, 1, "InProgress", 800)),
                ),
            ],
            Some(3),
        );
        // THEN the sweep reads the successes, and the error's command is read by its ID
        // (its read names a failed hooks step, the sweep's does not)
        assert_eq!(reads.sweep_since, Some(499));
        assert_eq!(reads.by_command, BTreeSet::from(["e".to_string()]));
    }

    #[test]
    fn a_sweep_waits_for_a_page_or_a_window_of_unread_instances() {
        assert_eq!(sweep_at(25), 50);
        assert_eq!(sweep_at(1000), 1000);
    }

    #[test]
    fn nothing_is_left_unread_once_nothing_runs() {
        // GIVEN one command of two whose instances both succeeded, and nothing else running
        let reads = plan(
            &[(
                "a",
                rec(&["i-1", "i-2"], 0, 0),
                Some(progress(2, 2, 0, "Success", 1)),
            )],
            Some(50),
        );
        // THEN it is read now, by its ID (one command: one call)
        assert_eq!(reads.by_command, BTreeSet::from(["a".to_string()]));
        assert_eq!(reads.freed, 0);
    }

    #[test]
    fn an_unlisted_command_is_read_only_after_the_grace_period() {
        // GIVEN a command claimed just now and one claimed long ago, neither listed
        let mut fresh = rec(&["i-1"], 0, 0);
        fresh.claimed_at = Some(NOW - 5);
        let reads = plan(
            &[("new", fresh, None), ("old", rec(&["i-2"], 0, 0), None)],
            Some(50),
        );
        // THEN only the old one is read by its ID (the new one may simply not be listed yet)
        assert_eq!(reads.by_command, BTreeSet::from(["old".to_string()]));
    }

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
            state: crate::model::BatchState::Sent,
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
    fn each_command_in_flight_is_described_by_its_records() {
        // GIVEN command c1 with one instance in flight, one succeeded and one failed, and
        // command c2 finished entirely
        let mut ok = in_flight("i-2", "c1", Some(1));
        ok.state = InstanceState::Succeeded;
        let mut failed = in_flight("i-3", "c1", Some(1));
        failed.state = InstanceState::Failed;
        let mut other = in_flight("i-4", "c2", Some(2));
        other.state = InstanceState::Succeeded;
        let instances = [in_flight("i-1", "c1", Some(1)), ok, failed, other];
        // WHEN the records are gathered
        let recs = command_records(&instances, &[batch(1, 500), batch(2, 600)]);
        // THEN only c1 is in flight: one instance, two final, one error, claimed at 500
        assert_eq!(recs.len(), 1);
        let c1 = &recs["c1"];
        assert_eq!(c1.in_flight, vec!["i-1".to_string()]);
        assert_eq!((c1.terminal, c1.errors, c1.claimed_at), (2, 1, Some(500)));
    }
}
