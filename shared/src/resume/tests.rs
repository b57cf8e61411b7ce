use super::*;
use crate::input::validate;
use crate::model::{count_states, Phase};
use serde_json::json;

const SNAPSHOT: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

fn input(extra: serde_json::Value) -> RunInput {
    let mut raw = json!({"operation": "Install", "resourceGroup": "g",
        "accounts": ["111111111111", "222222222222"], "regions": ["us-east-1"]});
    raw.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    validate(&raw).unwrap()
}

fn ended_run(status: RunStatus) -> RunRecord {
    RunRecord {
        run_id: "orig".into(),
        status,
        input: input(json!({ "snapshotId": SNAPSHOT })),
        accounts: vec!["111111111111".into(), "222222222222".into()],
        skipped_accounts: vec![],
        skipped_accounts_omitted: 0,
        location_count: 2,
        location_window: 1,
        locations_tolerated: None,
        locations_done: 2,
        locations_failed: 0,
        instances_sent: 0,
        instances_done: 0,
        created_at: 0,
        halt: None,
        alarms_read_at_ms: None,
    }
}

fn loc(account: &str) -> Location {
    Location::new(account, "us-east-1")
}

/// A settled location of the original, its instances in these states.
fn settled(account: &str, outcome: LocationOutcome, states: &[InstanceState]) -> LocationRecord {
    let mut l = LocationRecord::pending(loc(account));
    l.phase = Phase::Done;
    l.outcome = Some(outcome);
    l.counts = count_states(states.iter().copied());
    l
}

fn resumed(extra: serde_json::Value) -> RunInput {
    let mut i = input(json!({ "resumeOf": "orig" }));
    let more = input(extra);
    i.resume_delivery_timeouts = more.resume_delivery_timeouts;
    i.snapshot_id = more.snapshot_id;
    i
}

#[test]
fn every_state_has_a_resume_answer_and_success_is_never_sent_again() {
    // GIVEN every instance state an ended run can leave
    for state in InstanceState::ALL {
        // WHEN a resume asks, with and without delivery timeouts
        let (without, with) = (resumable(state, false), resumable(state, true));
        // THEN a success is never sent again, and only undelivered ones depend on the flag
        if state == InstanceState::Succeeded || state.in_flight() {
            assert!(!without && !with, "{state:?}");
        }
        let undelivered = matches!(
            state,
            InstanceState::DeliveryTimedOut | InstanceState::Undeliverable
        );
        assert_eq!(without != with, undelivered, "{state:?}");
    }
    assert!(resumable(InstanceState::Failed, false));
    assert!(resumable(InstanceState::ExecutionTimedOut, false));
    assert!(resumable(InstanceState::NotStarted, false));
    assert!(!resumable(InstanceState::Offline, true));
}

#[test]
fn a_location_is_resumed_when_it_left_work_or_never_listed_its_group() {
    use InstanceState::*;
    let ok = settled(
        "111111111111",
        LocationOutcome::Succeeded,
        &[Succeeded, Offline],
    );
    let failed = settled(
        "111111111111",
        LocationOutcome::CompletedWithErrors,
        &[Succeeded, Failed],
    );
    let undelivered = settled(
        "111111111111",
        LocationOutcome::Incomplete,
        &[DeliveryTimedOut],
    );
    assert!(!needs_resume(&ok, true));
    assert!(needs_resume(&failed, false));
    assert!(!needs_resume(&undelivered, false));
    assert!(needs_resume(&undelivered, true));
    for never_listed in [
        LocationOutcome::Skipped,
        LocationOutcome::AccessDenied,
        LocationOutcome::GroupNotFound,
        LocationOutcome::Error,
    ] {
        assert!(needs_resume(
            &settled("111111111111", never_listed, &[]),
            false
        ));
    }
    assert!(needs_resume(
        &LocationRecord::pending(loc("111111111111")),
        false
    ));
}

#[test]
fn only_an_ended_run_not_resumed_by_another_may_be_resumed() {
    let run = ended_run(RunStatus::CompletedWithErrors);
    assert!(may_resume(&run, None, "new").is_ok());
    // a retried plan finds its own name in resumedBy
    assert!(may_resume(&run, Some("new"), "new").is_ok());
    let other = may_resume(&run, Some("first"), "new").unwrap_err();
    assert_eq!(other.field, "resumeOf");
    assert!(
        other.rule.contains("already resumed by first"),
        "{}",
        other.rule
    );
    for live in [
        RunStatus::Running,
        RunStatus::Stopping,
        RunStatus::Cancelling,
    ] {
        let e = may_resume(&ended_run(live), None, "new").unwrap_err();
        assert!(e.rule.contains("has not ended"), "{}", e.rule);
    }
    assert!(may_resume(&run, None, "orig").is_err());
}

#[test]
fn the_resume_covers_the_locations_left_to_do_with_the_original_snapshot() {
    use InstanceState::*;
    // GIVEN an original with one location all succeeded and one with a failure
    let run = ended_run(RunStatus::CompletedWithErrors);
    let recorded = [
        settled("111111111111", LocationOutcome::Succeeded, &[Succeeded]),
        settled(
            "222222222222",
            LocationOutcome::CompletedWithErrors,
            &[Failed],
        ),
    ];
    let planned = vec![loc("111111111111"), loc("222222222222")];
    // WHEN a resume without a snapshot of its own is decided
    let o = original("new", &resumed(json!({})), &run, None, &recorded, &planned).unwrap();
    // THEN it covers the failed location only, with the original's snapshot
    assert_eq!(o.locations, vec![loc("222222222222")]);
    assert_eq!(o.snapshot_id.as_deref(), Some(SNAPSHOT));
    assert_eq!(
        locations(planned.clone(), Some(&o)),
        vec![loc("222222222222")]
    );
    assert_eq!(locations(planned.clone(), None), planned);
    // AND another snapshot is refused, naming the field
    let other = json!({"snapshotId": "00000000-0000-4000-8000-000000000000"});
    let e = original("new", &resumed(other), &run, None, &recorded, &planned).unwrap_err();
    assert_eq!(e.field, "snapshotId");
    // AND a run that left nothing to do is refused
    let all_ok = [settled(
        "111111111111",
        LocationOutcome::Succeeded,
        &[Succeeded],
    )];
    let e = original("new", &resumed(json!({})), &run, None, &all_ok, &planned).unwrap_err();
    assert!(e.rule.contains("nothing to resume"), "{}", e.rule);
}

fn found(ids: &[&str]) -> Vec<InstanceRecord> {
    ids.iter()
        .map(|id| InstanceRecord::new(id, InstanceState::Pending))
        .collect()
}

fn ids(records: &[InstanceRecord]) -> Vec<&str> {
    records.iter().map(|r| r.instance_id.as_str()).collect()
}

#[test]
fn an_expanded_location_resumes_only_its_unsuccessful_instances() {
    use InstanceState::*;
    // GIVEN an original that listed the whole group and left each instance in a state
    let mut record = settled("111111111111", LocationOutcome::Incomplete, &[]);
    record.expand_cursor = Some(ExpandCursor {
        pages: 1,
        next_token: None,
    });
    let mut before = Vec::new();
    for (id, state) in [
        ("i-ok", Succeeded),
        ("i-failed", Failed),
        ("i-late", DeliveryTimedOut),
        ("i-never", NotStarted),
        ("i-off", Offline),
    ] {
        before.push(InstanceRecord::new(id, state));
    }
    let original = OriginalLocation::new(Some(&record), &before);
    assert!(original.expanded);
    // WHEN the group now holds those and one new instance
    let now = found(&["i-ok", "i-failed", "i-late", "i-never", "i-off", "i-new"]);
    // THEN only the failed and never-started ones are recorded (and the undelivered with
    // the flag): never the succeeded one, nor one the original did not target
    assert_eq!(
        ids(&narrow(now.clone(), &original, false)),
        ["i-failed", "i-never"]
    );
    assert_eq!(
        ids(&narrow(now, &original, true)),
        ["i-failed", "i-late", "i-never"]
    );
}

#[test]
fn a_location_never_listed_is_expanded_again_except_what_it_recorded_as_done() {
    // GIVEN an original whose location ended AccessDenied (nothing recorded), and one whose
    // expansion stopped after a first page with one success
    let denied = settled("111111111111", LocationOutcome::AccessDenied, &[]);
    let nothing = OriginalLocation::new(Some(&denied), &[]);
    let mut errored = settled("111111111111", LocationOutcome::Error, &[]);
    errored.expand_cursor = Some(ExpandCursor {
        pages: 1,
        next_token: Some("page-2".into()),
    });
    let partial = OriginalLocation::new(
        Some(&errored),
        &[InstanceRecord::new("i-ok", InstanceState::Succeeded)],
    );
    // WHEN their groups are listed again
    let now = found(&["i-ok", "i-a", "i-b"]);
    // THEN every instance is recorded, except the one that succeeded
    assert_eq!(
        ids(&narrow(now.clone(), &nothing, false)),
        ["i-ok", "i-a", "i-b"]
    );
    assert_eq!(ids(&narrow(now, &partial, false)), ["i-a", "i-b"]);
}
