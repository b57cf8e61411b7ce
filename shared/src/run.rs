//! The run lifecycle, as pure decisions: when a location may start or must stop, how a
//! location ends, when the run stops, and its final status. Handlers load state, ask these
//! functions, and apply the answer; the store's conditional writes make each transition
//! happen once.
//!
//! A location moves Pending -> Dispatching -> Done (`Phase`): plan writes it Pending, expand
//! moves it to Dispatching (or straight to an outcome), settle records its outcome once. A
//! run moves Running -> Stopping (the location error threshold was passed: locations not yet
//! started are skipped, those running finish) -> a final status written once by aggregate.
//! An operator's stop moves Running or Stopping -> Cancelling ([`CANCELLABLE`]): locations
//! not yet started are skipped, and each running location starts nothing new from its next
//! dispatch round (its pending instances end NotStarted, [`RUN_CANCELLED`]; commands in
//! flight run to their end); aggregate then writes `Cancelled`.
//!
//! A run can also be *halted* ([`Halt`]): its maintenance window (`notAfter`) closed, or an
//! alarm of `stopOnAlarms` was seen in ALARM. From then on nothing new starts anywhere:
//! locations not started are Skipped, pending instances end NotStarted with the halt's
//! reason, commands in flight finish, and the run ends StoppedByWindow / StoppedByAlarm. The
//! first halt is recorded on the run item and stands; a window that closes after everything
//! started changes nothing.
//!
//! New run-level behaviour (waves, cancel, resume) belongs here: a new status or transition,
//! a new reason a location may not start, a new final status.

use crate::model::InstanceRecord;
use crate::model::{
    Halt, InstanceState, LocationOutcome, LocationRecord, Phase, RunRecord, RunStatus, Settled,
};
use crate::ratecontrol::threshold_passed;
use crate::window::Round;

/// Why pending instances end NotStarted (recorded as their `statusDetails`).
pub const THRESHOLD_PASSED: &str = "instance error threshold passed";
pub const LOCATION_ERRORED: &str = "the location ended with an error";
pub const LOCATION_ENDED_EARLY: &str = "the location ended before it started";
pub const RUN_CANCELLED: &str = "run cancelled";

/// The statuses an operator's stop moves to [`RunStatus::Cancelling`].
pub const CANCELLABLE: [RunStatus; 2] = [RunStatus::Running, RunStatus::Stopping];
/// Why aggregate settles a location the Map never settled.
pub const NEVER_FINISHED: &str = "the location never finished (its child execution ended early)";

/// One read of `stopOnAlarms` serves every location of the run for this long, so that a run
/// of hundreds of locations reads the alarms a few times a minute, far under CloudWatch's
/// DescribeAlarms quota, however many locations poll.
pub const ALARM_READ_INTERVAL_MS: i64 = 10_000;

/// The words a halt is recorded with (the NotStarted instances' `statusDetails`, the
/// skipped and stopped locations' reason).
pub fn halt_reason(halt: &Halt) -> String {
    match halt {
        Halt::WindowClosed { .. } => "maintenance window closed".into(),
        Halt::Alarm { alarm } => format!("alarm {alarm} in ALARM"),
    }
}

/// The halt in force at `now_ms`: the recorded one, else the window's end once it passed.
pub fn halt_at(run: &RunRecord, now_ms: i64) -> Option<Halt> {
    if let Some(h) = &run.halt {
        return Some(h.clone());
    }
    let closes = run.input.not_after_ms()?;
    (now_ms >= closes).then(|| Halt::WindowClosed {
        not_after: run.input.not_after.clone().unwrap_or_default(),
    })
}

/// Whether this round must read the alarms: the run names some, is not halted yet, and no
/// location read them in the last [`ALARM_READ_INTERVAL_MS`].
pub fn alarms_due(run: &RunRecord, now_ms: i64) -> bool {
    !run.input.stop_on_alarms.is_empty()
        && run.halt.is_none()
        && run
            .alarms_read_at_ms
            .is_none_or(|t| now_ms - t >= ALARM_READ_INTERVAL_MS)
}

/// What a location handler does on entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Go on with the location.
    Proceed,
    /// Answer this outcome without touching the account.
    Finish(LocationOutcome, Option<String>),
}

/// A location already settled answers its recorded outcome (a retry, or a late duplicate).
fn settled(location: &LocationRecord) -> Option<Entry> {
    (location.phase == Phase::Done).then(|| {
        Entry::Finish(
            location.outcome.unwrap_or(LocationOutcome::Error),
            location.reason.clone(),
        )
    })
}

/// Whether a location may start (expand). A stopping run starts nothing new: the location is
/// Skipped and its account never called.
pub fn may_start(run: &RunRecord, location: &LocationRecord) -> Entry {
    if let Some(done) = settled(location) {
        return done;
    }
    if run.status == RunStatus::Cancelling {
        let why = format!("not started: {RUN_CANCELLED}");
        return Entry::Finish(LocationOutcome::Skipped, Some(why));
    }
    if let Some(halt) = &run.halt {
        let why = format!("not started: {}", halt_reason(halt));
        return Entry::Finish(LocationOutcome::Skipped, Some(why));
    }
    if run.status != RunStatus::Running {
        let why = format!(
            "not started: the run's location error threshold ({}) was passed",
            run.input.location_error_threshold
        );
        return Entry::Finish(LocationOutcome::Skipped, Some(why));
    }
    Entry::Proceed
}

/// Whether a started location goes on (dispatch). A stopping run lets running locations
/// finish, as SSM lets running invocations finish.
pub fn may_continue(location: &LocationRecord) -> Entry {
    settled(location).unwrap_or(Entry::Proceed)
}

/// A dispatch round of a cancelled run: nothing new starts and every pending instance ends
/// NotStarted (with [`RUN_CANCELLED`]); instances in flight are still followed. The round of
/// any other run comes back as it was, with the reason its not-started instances get.
pub fn round_for(
    run: &RunRecord,
    instances: &[InstanceRecord],
    round: Round,
) -> (Round, &'static str) {
    if run.status != RunStatus::Cancelling {
        return (round, THRESHOLD_PASSED);
    }

    let mut pending: Vec<String> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .map(|i| i.instance_id.clone())
        .collect();
    pending.sort();
    let cancelled = Round {
        start: Vec::new(),
        not_started: pending,
        done: round.in_flight == 0,
        ..round
    };
    (cancelled, RUN_CANCELLED)
}

/// The outcome of a location whose instances all reached a final state.
pub fn location_outcome(
    states: impl IntoIterator<Item = InstanceState>,
    threshold_passed: bool,
) -> LocationOutcome {
    let mut sent = 0u64;
    let mut errors = 0u64;
    let mut not_succeeded = 0u64;
    for s in states {
        if s.was_sent() {
            sent += 1;
            if s.counts_as_error() {
                errors += 1;
            } else if s != InstanceState::Succeeded {
                not_succeeded += 1;
            }
        }
    }
    if threshold_passed {
        LocationOutcome::ThresholdExceeded
    } else if errors > 0 {
        LocationOutcome::CompletedWithErrors
    } else if sent == 0 {
        LocationOutcome::NoTargets
    } else if not_succeeded > 0 {
        LocationOutcome::Incomplete
    } else {
        LocationOutcome::Succeeded
    }
}

/// A location's outcome once every instance is final, with its reason; None while some are
/// still live. `stopping`: the instance error threshold was passed. A halted run's location
/// that left instances not started is Stopped, with the halt's reason.
pub fn location_finished(
    run: &RunRecord,
    states: &[InstanceState],
    errors: u64,
    stopping: bool,
) -> Option<(LocationOutcome, Option<String>)> {
    if !states.iter().all(|s| s.is_terminal()) {
        return None;
    }
    if let (Some(halt), false) = (&run.halt, stopping) {
        let left = states
            .iter()
            .filter(|s| **s == InstanceState::NotStarted)
            .count();
        if left > 0 {
            let why = format!("{}: {left} instance(s) not started", halt_reason(halt));
            return Some((LocationOutcome::Stopped, Some(why)));
        }
    }
    let outcome = location_outcome(states.iter().copied(), stopping);
    if let Some(cancelled) = cancelled_outcome(run, states, outcome) {
        return Some(cancelled);
    }
    let reason = (outcome == LocationOutcome::ThresholdExceeded).then(|| {
        format!(
            "{errors} counted error(s) passed targetErrorThreshold {}; remaining instances not started",
            run.input.target_error_threshold
        )
    });
    Some((outcome, reason))
}

/// A location of a cancelled run that left instances NotStarted did not do all it was
/// asked: Incomplete, saying how many never started, unless errors already make it worse.
fn cancelled_outcome(
    run: &RunRecord,
    states: &[InstanceState],
    outcome: LocationOutcome,
) -> Option<(LocationOutcome, Option<String>)> {
    let not_started = states
        .iter()
        .filter(|s| **s == InstanceState::NotStarted)
        .count();
    let benign = matches!(
        outcome,
        LocationOutcome::Succeeded | LocationOutcome::NoTargets | LocationOutcome::Incomplete
    );
    (run.status == RunStatus::Cancelling && not_started > 0 && benign).then(|| {
        let why = format!("{RUN_CANCELLED}: {not_started} instance(s) not started");
        (LocationOutcome::Incomplete, Some(why))
    })
}

/// Whether settling this location moves the run to Stopping: its first settlement, a failed
/// outcome, and the failed locations now pass `locationErrorThreshold`.
pub fn stops_run(settled: &Settled, outcome: LocationOutcome, run: &RunRecord) -> bool {
    settled.first_time
        && outcome.counts_as_failure()
        && run.status == RunStatus::Running
        && threshold_passed(settled.locations_failed, run.locations_tolerated)
}

/// The final status of a run from its locations. Rule: a halted run stopped by its alarm or
/// its window; the run stopped by the location threshold if it was stopping; succeeded if
/// every location succeeded or had nothing to patch; otherwise completed with errors.
pub fn final_status(
    stopping: bool,
    halt: Option<&Halt>,
    outcomes: &[LocationOutcome],
) -> RunStatus {
    if let Some(h) = halt {
        return match h {
            Halt::Alarm { .. } => RunStatus::StoppedByAlarm,
            Halt::WindowClosed { .. } => RunStatus::StoppedByWindow,
        };
    }
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

/// The final status of a run from the status it ends in, its halt and its locations:
/// `Cancelled` when an operator stopped it, otherwise [`final_status`].
pub fn run_final_status(
    status: RunStatus,
    halt: Option<&Halt>,
    outcomes: &[LocationOutcome],
) -> RunStatus {
    match status {
        RunStatus::Cancelling | RunStatus::Cancelled => RunStatus::Cancelled,
        s => final_status(s == RunStatus::Stopping, halt, outcomes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_outcome_follows_its_instances() {
        use InstanceState::*;
        assert_eq!(
            location_outcome([Succeeded, Offline, Unmanaged], false),
            LocationOutcome::Succeeded
        );
        assert_eq!(
            location_outcome([Succeeded, DeliveryTimedOut], false),
            LocationOutcome::Incomplete
        );
        assert_eq!(
            location_outcome([Succeeded, Failed], false),
            LocationOutcome::CompletedWithErrors
        );
        assert_eq!(
            location_outcome([Offline, Unmanaged], false),
            LocationOutcome::NoTargets
        );
        assert_eq!(
            location_outcome([Failed, NotStarted], true),
            LocationOutcome::ThresholdExceeded
        );
        assert!(LocationOutcome::AccessDenied.counts_as_failure());
        assert!(LocationOutcome::ThresholdExceeded.counts_as_failure());
        assert!(!LocationOutcome::CompletedWithErrors.counts_as_failure());
        assert!(!LocationOutcome::Incomplete.counts_as_failure());
        assert!(!LocationOutcome::Skipped.counts_as_failure());
    }

    #[test]
    fn final_status_for_each_outcome_mix() {
        use LocationOutcome::*;
        assert_eq!(
            final_status(false, None, &[Succeeded, NoTargets]),
            RunStatus::Succeeded
        );
        assert_eq!(
            final_status(false, None, &[Succeeded, CompletedWithErrors]),
            RunStatus::CompletedWithErrors
        );
        assert_eq!(
            final_status(false, None, &[Succeeded, AccessDenied]),
            RunStatus::CompletedWithErrors
        );
        assert_eq!(
            final_status(false, None, &[GroupNotFound]),
            RunStatus::CompletedWithErrors
        );
        assert_eq!(
            final_status(false, None, &[Incomplete]),
            RunStatus::CompletedWithErrors
        );
        assert_eq!(
            final_status(true, None, &[ThresholdExceeded, Skipped, Skipped]),
            RunStatus::StoppedByThreshold
        );
        assert_eq!(final_status(false, None, &[]), RunStatus::Succeeded);
    }

    fn run_with(extra: serde_json::Value) -> RunRecord {
        let mut raw = serde_json::json!({"operation": "Install", "resourceGroup": "g",
            "accounts": ["111111111111"], "regions": ["us-east-1"]});
        raw.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        RunRecord {
            location_count: 1,
            ..RunRecord::started("r", crate::input::validate(&raw).unwrap(), 0)
        }
    }

    #[test]
    fn the_window_halts_the_run_from_its_end_on() {
        // GIVEN a run whose window ends at T
        let run = run_with(serde_json::json!({"notAfter": "2026-12-13T06:00:00Z"}));
        let end = crate::clock::parse_rfc3339_ms("2026-12-13T06:00:00Z").unwrap();

        // WHEN the halt is asked a second before, and at T
        // THEN nothing halts before T; from T on the window is closed, in those words
        assert_eq!(halt_at(&run, end - 1000), None);
        let h = halt_at(&run, end).unwrap();
        assert_eq!(halt_reason(&h), "maintenance window closed");
        // and a run without a window never closes
        assert_eq!(halt_at(&run_with(serde_json::json!({})), i64::MAX), None);
    }

    #[test]
    fn a_recorded_halt_skips_new_locations_and_stops_running_ones() {
        // GIVEN a run halted by an alarm
        let mut run = run_with(serde_json::json!({}));
        let alarm = "arn:aws:cloudwatch:us-east-1:111111111111:alarm:api-5xx".to_string();
        run.halt = Some(Halt::Alarm {
            alarm: alarm.clone(),
        });

        // WHEN a location asks to start, and a running one finishes with instances left
        let start = may_start(
            &run,
            &LocationRecord::pending(crate::model::Location::new("111111111111", "us-east-1")),
        );
        use InstanceState::*;
        let finished = location_finished(&run, &[Succeeded, NotStarted, NotStarted], 0, false);

        // THEN the first is Skipped and the second Stopped, both naming the alarm
        let Entry::Finish(LocationOutcome::Skipped, Some(why)) = start else {
            panic!("not skipped: {start:?}");
        };
        assert!(why.contains(&alarm), "{why}");
        let (outcome, why) = finished.unwrap();
        assert_eq!(outcome, LocationOutcome::Stopped);
        assert_eq!(
            why.unwrap(),
            format!("alarm {alarm} in ALARM: 2 instance(s) not started")
        );
        // and the run ends StoppedByAlarm whatever its locations did
        assert_eq!(
            final_status(false, run.halt.as_ref(), &[LocationOutcome::Succeeded]),
            RunStatus::StoppedByAlarm
        );
        // while a location that had nothing left to start keeps its own outcome
        assert_eq!(
            location_finished(&run, &[Succeeded], 0, false).unwrap().0,
            LocationOutcome::Succeeded
        );
    }

    #[test]
    fn alarms_are_read_once_per_interval_for_the_whole_run() {
        // GIVEN a run with an alarm, last read at t
        let mut run = run_with(serde_json::json!({
            "stopOnAlarms": ["arn:aws:cloudwatch:us-east-1:111111111111:alarm:api-5xx"]}));
        assert!(alarms_due(&run, 0), "never read: due");
        run.alarms_read_at_ms = Some(1_000);

        // WHEN a round asks within the interval and after it
        // THEN only the later one reads; a halted run or one without alarms never does
        assert!(!alarms_due(&run, 1_000 + ALARM_READ_INTERVAL_MS - 1));
        assert!(alarms_due(&run, 1_000 + ALARM_READ_INTERVAL_MS));
        run.halt = Some(Halt::WindowClosed {
            not_after: "x".into(),
        });
        assert!(!alarms_due(&run, i64::MAX));
        assert!(!alarms_due(&run_with(serde_json::json!({})), i64::MAX));
    }

    fn run(status: RunStatus) -> RunRecord {
        RunRecord {
            status,
            ..run_with(serde_json::json!({}))
        }
    }

    fn instances(states: &[(&str, InstanceState)]) -> Vec<InstanceRecord> {
        states
            .iter()
            .map(|(id, s)| InstanceRecord::new(id, *s))
            .collect()
    }

    #[test]
    fn a_cancelled_run_starts_no_location() {
        // GIVEN a location not yet started, in a run an operator stopped
        let location =
            LocationRecord::pending(crate::model::Location::new("111111111111", "us-east-1"));
        // WHEN expand asks whether it may start
        let entry = may_start(&run(RunStatus::Cancelling), &location);
        // THEN it is skipped, saying why, and its account is never called
        assert_eq!(
            entry,
            Entry::Finish(
                LocationOutcome::Skipped,
                Some("not started: run cancelled".into())
            )
        );
    }

    #[test]
    fn a_cancelled_run_starts_nothing_new_and_follows_what_is_in_flight() {
        // GIVEN a location with one command in flight and three instances pending, whose
        // round would start two of them
        let all = instances(&[
            ("i-1", InstanceState::InFlight),
            ("i-3", InstanceState::Pending),
            ("i-2", InstanceState::Pending),
            ("i-4", InstanceState::Pending),
        ]);
        let round = crate::window::plan_round(&all, 3, None);
        assert_eq!(
            round.start,
            vec![vec!["i-2".to_string(), "i-3".to_string()]]
        );
        // WHEN the run is cancelled
        let (cancelled, why) = round_for(&run(RunStatus::Cancelling), &all, round.clone());
        // THEN nothing starts, every pending instance ends NotStarted with the reason, and
        // the location is not done while its command runs
        assert!(cancelled.start.is_empty());
        assert_eq!(cancelled.not_started, vec!["i-2", "i-3", "i-4"]);
        assert_eq!(why, RUN_CANCELLED);
        assert!(!cancelled.done);
        // AND once nothing is in flight, the location is done
        let ended = instances(&[
            ("i-1", InstanceState::Succeeded),
            ("i-2", InstanceState::Pending),
        ]);
        let last = crate::window::plan_round(&ended, 3, None);
        assert!(round_for(&run(RunStatus::Cancelling), &ended, last).0.done);
        // AND a running run's round is unchanged
        assert_eq!(
            round_for(&run(RunStatus::Running), &all, round.clone()).0,
            round
        );
    }

    #[test]
    fn a_location_a_stop_cut_short_is_incomplete() {
        use InstanceState::*;
        // GIVEN a location whose sent instances succeeded and whose others never started
        let states = [Succeeded, NotStarted, NotStarted, Offline];
        // WHEN the run was cancelled, THEN the location is Incomplete and says why
        assert_eq!(
            location_finished(&run(RunStatus::Cancelling), &states, 0, false),
            Some((
                LocationOutcome::Incomplete,
                Some("run cancelled: 2 instance(s) not started".into())
            ))
        );
        // AND a failure stays a failure
        let failed = [Failed, NotStarted];
        assert_eq!(
            location_finished(&run(RunStatus::Cancelling), &failed, 1, false).map(|r| r.0),
            Some(LocationOutcome::CompletedWithErrors)
        );
        // AND without a cancel, nothing changes
        assert_eq!(
            location_finished(&run(RunStatus::Running), &states, 0, false).map(|r| r.0),
            Some(LocationOutcome::Succeeded)
        );
    }

    #[test]
    fn a_cancelled_run_ends_cancelled_whatever_its_locations() {
        use LocationOutcome::*;
        assert_eq!(
            run_final_status(RunStatus::Cancelling, None, &[Succeeded, Skipped]),
            RunStatus::Cancelled
        );
        assert_eq!(
            run_final_status(RunStatus::Stopping, None, &[ThresholdExceeded]),
            RunStatus::StoppedByThreshold
        );
        assert_eq!(
            run_final_status(RunStatus::Running, None, &[Succeeded]),
            RunStatus::Succeeded
        );
        assert!(CANCELLABLE.contains(&RunStatus::Stopping));
        assert!(!CANCELLABLE.contains(&RunStatus::Succeeded));
    }
}
