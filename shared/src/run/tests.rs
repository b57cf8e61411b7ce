//! The run lifecycle's decisions, tested without mocks.

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
