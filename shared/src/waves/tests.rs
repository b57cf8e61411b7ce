use super::*;
use crate::model::LocationOutcome;
use serde_json::json;

fn targets(accounts: &[&str], regions: &[&str]) -> WaveTargets {
    WaveTargets {
        accounts: accounts.iter().map(|s| s.to_string()).collect(),
        regions: regions.iter().map(|s| s.to_string()).collect(),
    }
}

fn three_waves() -> RunInput {
    crate::input::validate(&json!({
        "operation": "Install",
        "resourceGroup": "g",
        "regions": ["us-east-1", "eu-west-1"],
        "locationErrorThreshold": "50%",
        "waves": [
            {"name": "canary", "accounts": ["111111111111"], "regions": ["us-east-1"], "soakMinutes": 60, "locationErrorThreshold": "0"},
            {"name": "nonprod", "accounts": ["ou-ab12-nonprod1"]},
            {"name": "prod", "accounts": ["ou-ab12-prod0001"], "approval": true}
        ]
    }))
    .unwrap()
}

#[test]
fn a_location_belongs_to_the_first_wave_that_reaches_it() {
    // GIVEN a canary account in us-east-1, then an OU that also holds it, in two Regions
    let t = [
        targets(&["111111111111"], &["us-east-1"]),
        targets(
            &["111111111111", "222222222222"],
            &["us-east-1", "eu-west-1"],
        ),
    ];
    // WHEN the locations are assigned
    let a = assign(&t);
    // THEN the canary keeps its location, the OU's wave gets the other three, and the
    // overlap found after resolution is counted on the later wave
    assert_eq!(a[0].0, vec![Location::new("111111111111", "us-east-1")]);
    assert_eq!(
        a[1].0,
        vec![
            Location::new("111111111111", "eu-west-1"),
            Location::new("222222222222", "us-east-1"),
            Location::new("222222222222", "eu-west-1"),
        ]
    );
    assert_eq!((a[0].1, a[1].1), (0, 1));
}

#[test]
fn planned_waves_carry_their_own_rates_soak_and_approval() {
    // GIVEN three waves, the canary with its own threshold and a soak
    let input = three_waves();
    let t = [
        targets(&["111111111111"], &["us-east-1"]),
        targets(
            &["222222222222", "333333333333"],
            &["us-east-1", "eu-west-1"],
        ),
        targets(&["444444444444"], &["us-east-1", "eu-west-1"]),
    ];
    // WHEN plan decides them
    let planned = plan(&input, &t);
    // THEN each record says its name, size, gate tolerance, soak and approval
    let w: Vec<&WaveRecord> = planned.iter().map(|(w, _)| w).collect();
    assert_eq!(w[0].name, "canary");
    assert_eq!(
        (w[0].location_count, w[0].locations_tolerated),
        (1, Some(0))
    );
    assert_eq!(w[0].soak_seconds, 3600);
    assert_eq!(
        (w[1].location_count, w[1].locations_tolerated),
        (4, Some(2))
    );
    assert!(w[2].approval && !w[1].approval);
    assert_eq!(w[2].approval_timeout_seconds, 24 * 3600);
    // AND reading the records back finds the same locations, each with its wave
    let records: Vec<WaveRecord> = w.into_iter().cloned().collect();
    let again = locations_of(&records);
    assert_eq!(again.len(), 7);
    assert_eq!(again[0], (Location::new("111111111111", "us-east-1"), 0));
    assert_eq!(
        items(&records, 2),
        ["444444444444/us-east-1", "444444444444/eu-west-1"]
    );
}

#[test]
fn a_run_without_waves_is_one_wave_with_the_runs_rates() {
    // GIVEN a run without waves
    let input = crate::input::validate(&json!({
        "operation": "Install", "resourceGroup": "g",
        "accounts": ["111111111111"], "regions": ["us-east-1"]
    }))
    .unwrap();
    // WHEN plan decides its waves
    let planned = plan(&input, &[targets(&["111111111111"], &["us-east-1"])]);
    // THEN there is one, "all", that never soaks nor waits for an approval
    assert_eq!(planned.len(), 1);
    let (w, locs) = &planned[0];
    assert_eq!(
        (w.name.as_str(), w.soak_seconds, w.approval),
        (SINGLE_WAVE, 0, false)
    );
    assert_eq!(w.location_window, 1);
    assert_eq!(locs.len(), 1);
}

fn settled(account: &str, wave: u32, outcome: Option<LocationOutcome>) -> LocationRecord {
    LocationRecord {
        wave,
        phase: if outcome.is_some() {
            Phase::Done
        } else {
            Phase::Dispatching
        },
        outcome,
        ..LocationRecord::pending(Location::new(account, "us-east-1"))
    }
}

#[test]
fn a_wave_fails_its_gate_when_its_failed_locations_pass_its_threshold() {
    // GIVEN a canary that tolerates no failed location
    let input = three_waves();
    let planned = plan(&input, &[targets(&["111111111111"], &["us-east-1"])]);
    let canary = &planned[0].0;
    // WHEN its one location ended AccessDenied (a failure), beside another wave's
    let locations = [
        settled("111111111111", 0, Some(LocationOutcome::AccessDenied)),
        settled("222222222222", 1, Some(LocationOutcome::AccessDenied)),
    ];
    let g = gate(canary, &locations);
    // THEN the gate failed on its own wave's count
    assert!(!g.passed);
    assert_eq!((g.locations_failed, g.locations_tolerated), (1, Some(0)));
    // AND CompletedWithErrors is no failed location: the gate passes
    let ok = [settled(
        "111111111111",
        0,
        Some(LocationOutcome::CompletedWithErrors),
    )];
    assert!(gate(canary, &ok).passed);
    // AND a location its Map never settled counts as failed
    let lost = [settled("111111111111", 0, None)];
    assert!(!gate(canary, &lost).passed);
}

#[test]
fn a_failed_gate_ends_the_run_stopped_by_gate_unless_a_halt_or_a_stop_says_more() {
    // GIVEN three planned waves
    let input = three_waves();
    let t = [
        targets(&["111111111111"], &["us-east-1"]),
        targets(&["222222222222"], &["us-east-1"]),
        targets(&["333333333333"], &["us-east-1"]),
    ];
    let mut waves: Vec<WaveRecord> = plan(&input, &t).into_iter().map(|(w, _)| w).collect();
    assert_eq!(
        final_status(RunStatus::Succeeded, &waves),
        RunStatus::Succeeded
    );
    // WHEN the last wave fails its gate, THEN it stopped nothing: the status stands (a run
    // without waves is one wave, and ends StoppedByThreshold as before)
    waves[2].status = WaveStatus::GateFailed;
    assert_eq!(
        final_status(RunStatus::StoppedByThreshold, &waves),
        RunStatus::StoppedByThreshold
    );
    // WHEN the canary fails its gate, THEN the run stopped by it, unless halted or stopped
    waves[0].status = WaveStatus::GateFailed;
    assert_eq!(
        final_status(RunStatus::Succeeded, &waves),
        RunStatus::StoppedByGate
    );
    assert_eq!(
        final_status(RunStatus::CompletedWithErrors, &waves),
        RunStatus::StoppedByGate
    );
    assert_eq!(
        final_status(RunStatus::StoppedByWindow, &waves),
        RunStatus::StoppedByWindow
    );
    assert_eq!(
        final_status(RunStatus::Cancelled, &waves),
        RunStatus::Cancelled
    );
    assert_eq!(gate_failed_reason("canary"), "wave canary failed its gate");
    // AND a wave that was not approved stops the run at its gate too, even the last
    waves[0].status = WaveStatus::Passed;
    waves[2].status = WaveStatus::Rejected;
    assert_eq!(
        final_status(RunStatus::CompletedWithErrors, &waves),
        RunStatus::StoppedByGate
    );
}

#[test]
fn a_soak_waits_its_minutes_on_the_clock_it_is_measured_on() {
    // GIVEN an hour of soak
    // THEN production waits the hour; a clock 60 times faster waits a minute, rounded up
    assert_eq!(soak_wait_seconds(3600, 1), 3600);
    assert_eq!(soak_wait_seconds(3600, 60), 60);
    assert_eq!(soak_wait_seconds(90, 60), 2);
    assert_eq!(soak_wait_seconds(0, 60), 0);
}

#[test]
fn an_approval_and_a_rejection_say_who_when_and_how() {
    // GIVEN fleetpatch approve's output, and a console's SendTaskSuccess with no output
    let cli =
        json!({"approvedBy": "arn:aws:sts::111111111111:assumed-role/Approver/ana", "via": "cli"});
    let a = approval_from(Some(&cli), 1_000);
    assert!(a.approved);
    assert_eq!(
        (a.by.as_str(), a.via.as_str(), a.at),
        (cli["approvedBy"].as_str().unwrap(), "cli", 1_000)
    );
    let console = approval_from(Some(&json!("{}")), 7);
    assert_eq!(
        (console.by.as_str(), console.via.as_str()),
        ("unknown", "console")
    );

    // WHEN fleetpatch reject's error comes, THEN the rejection names its author and reason
    let err = CaughtError {
        error: "WaveRejected".into(),
        cause: json!({"rejectedBy": "arn:aws:iam::111111111111:user/bo", "via": "cli", "reason": "freeze"}).to_string(),
    };
    let r = rejection_from(Some(&err), 9);
    assert!(!r.approved);
    assert_eq!(
        (r.by.as_str(), r.via.as_str(), r.reason.as_deref()),
        ("arn:aws:iam::111111111111:user/bo", "cli", Some("freeze"))
    );
    assert_eq!(
        not_approved_reason("prod", &r),
        "wave prod was rejected by arn:aws:iam::111111111111:user/bo"
    );

    // WHEN the approval times out, THEN it counts as a rejection by the timeout
    let timeout = CaughtError {
        error: "States.Timeout".into(),
        cause: String::new(),
    };
    let t = rejection_from(Some(&timeout), 9);
    assert_eq!(
        (t.approved, t.by.as_str(), t.via.as_str()),
        (false, "timeout", "timeout")
    );
    assert_eq!(
        not_approved_reason("prod", &t),
        "wave prod was not approved in time"
    );
}

fn run_of(input: RunInput) -> crate::model::RunRecord {
    crate::model::RunRecord::started("r", input, 0)
}

#[test]
fn the_summary_lists_a_waved_runs_waves_in_words() {
    use crate::report::{wave_lines, wave_text};
    // GIVEN a run of three waves: the canary passed, the second failed its gate, the third
    // was skipped
    let input = three_waves();
    let t = [
        targets(&["111111111111"], &["us-east-1"]),
        targets(&["222222222222", "111111111111"], &["us-east-1"]),
        targets(&["333333333333"], &["us-east-1"]),
    ];
    let mut waves: Vec<WaveRecord> = plan(&input, &t).into_iter().map(|(w, _)| w).collect();
    waves[0].status = WaveStatus::Passed;
    waves[0].gate = Some(GateResult {
        passed: true,
        locations_failed: 0,
        locations_tolerated: Some(0),
    });
    waves[1].status = WaveStatus::GateFailed;
    waves[1].gate = Some(GateResult {
        passed: false,
        locations_failed: 1,
        locations_tolerated: Some(0),
    });
    waves[2].status = WaveStatus::Skipped;
    waves[2].reason = Some(gate_failed_reason("nonprod"));
    let run = run_of(input);
    // WHEN the summary's waves are built
    let lines = wave_lines(&run, &waves);
    // THEN each wave is listed with its gate, its overlap and why it was skipped
    let text: Vec<String> = lines.iter().map(wave_text).collect();
    assert_eq!(
        text[0],
        "canary: Passed, 1 location(s), gate passed (0 failed, 0 tolerated)"
    );
    assert_eq!(
        text[1],
        "nonprod: GateFailed, 1 location(s) (1 held by an earlier wave), gate failed (1 failed, 0 tolerated)"
    );
    assert_eq!(
        text[2],
        "prod: Skipped, 1 location(s): wave nonprod failed its gate"
    );
    // AND a run without waves lists none (its one wave is the run itself)
    let single = crate::model::RunRecord {
        input: crate::input::validate(&json!({
            "operation": "Install", "resourceGroup": "g",
            "accounts": ["111111111111"], "regions": ["us-east-1"]
        }))
        .unwrap(),
        ..run
    };
    assert!(wave_lines(&single, &waves).is_empty());
}
