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
mod tests;
