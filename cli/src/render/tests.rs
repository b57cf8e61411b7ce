//! Snapshot tests of the output shapes: the table, CSV and JSON of the report, the ledger
//! and the run list, compared with the files in `cli/snapshots/`. A change of shape fails
//! here first; `FLEETPATCH_UPDATE_SNAPSHOTS=1 cargo test -p fleetpatch-cli` rewrites the
//! files, and the diff is reviewed like code.

use super::*;
use fleetpatch::input;
use fleetpatch::model::{
    Compliance, InstanceRecord, InstanceState, LocationRecord, Phase, RunRecord, RunStatus,
    SkippedAccount,
};
use fleetpatch::report::{location_figures, summarize};
use serde_json::json;
use std::path::PathBuf;

pub(crate) fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(name);
    if std::env::var_os("FLEETPATCH_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (FLEETPATCH_UPDATE_SNAPSHOTS=1 writes it)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "snapshot {name} changed");
}

/// A finished run of two locations: one succeeded with an offline instance, one failed
/// with a reason that needs quoting in CSV.
pub(crate) fn finished_run() -> (RunSummary, Vec<LocationFigures>, Vec<LedgerRow>) {
    let input = input::validate(&json!({
        "operation": "Install", "resourceGroup": "patch-group-a",
        "accounts": ["111111111111", "222222222222"], "regions": ["us-east-1"],
        "snapshotId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    }))
    .unwrap();
    let run = RunRecord {
        status: RunStatus::CompletedWithErrors,
        accounts: vec!["111111111111".into(), "222222222222".into()],
        skipped_accounts: vec![SkippedAccount {
            account: "999999999999".into(),
            reason: "SUSPENDED".into(),
        }],
        location_count: 2,
        location_window: 2,
        locations_tolerated: Some(1),
        locations_done: 2,
        locations_failed: 1,
        instances_sent: 4,
        instances_done: 4,
        ..RunRecord::started("run-1", input, 0)
    };
    let ok = LocationRecord {
        phase: Phase::Done,
        outcome: Some(LocationOutcome::Succeeded),
        targeted: 3,
        dispatchable: 2,
        counts: [(InstanceState::Succeeded, 2), (InstanceState::Offline, 1)]
            .into_iter()
            .collect(),
        compliance: Some(Compliance {
            instances: 2,
            compliant_instances: 2,
            installed: 40,
            ..Compliance::default()
        }),
        ..LocationRecord::pending(Location::new("111111111111", "us-east-1"))
    };
    let bad = LocationRecord {
        phase: Phase::Done,
        outcome: Some(LocationOutcome::ThresholdExceeded),
        reason: Some("2 failed, 1 tolerated, \"stop\"".into()),
        targeted: 2,
        dispatchable: 2,
        counts: [(InstanceState::Failed, 2)].into_iter().collect(),
        ..LocationRecord::pending(Location::new("222222222222", "us-east-1"))
    };
    let locations = vec![ok, bad];
    let summary = summarize("run-1", run.status, &run, &locations);
    let figures = locations.iter().map(location_figures).collect();
    (summary, figures, ledger())
}

/// The ledger of that run: one instance that succeeded, one that failed.
fn ledger() -> Vec<LedgerRow> {
    let failed = LedgerEntry {
        record: InstanceRecord {
            platform: Some("Linux".into()),
            command_id: Some("cmd-2".into()),
            ssm_status: Some("Failed".into()),
            status_details: Some("Failed, exit 1".into()),
            ..InstanceRecord::new("i-0000000000000000b", InstanceState::Failed)
        },
        sent_at: Some("2026-11-30T10:00:00Z".into()),
        ended_at: Some("2026-11-30T10:05:00Z".into()),
        compliance: None,
    };
    let succeeded = LedgerEntry {
        record: InstanceRecord {
            platform: Some("Windows".into()),
            command_id: Some("cmd-1".into()),
            ssm_status: Some("Success".into()),
            status_details: Some("Success".into()),
            ..InstanceRecord::new("i-0000000000000000a", InstanceState::Succeeded)
        },
        sent_at: Some("2026-11-30T10:00:00Z".into()),
        ended_at: Some("2026-11-30T10:03:00Z".into()),
        compliance: Some(Compliance {
            instances: 1,
            compliant_instances: 1,
            installed: 20,
            installed_pending_reboot: 1,
            ..Compliance::default()
        }),
    };
    vec![
        LedgerRow::new(&Location::new("111111111111", "us-east-1"), &succeeded),
        LedgerRow::new(&Location::new("222222222222", "us-east-1"), &failed),
    ]
}

fn runs() -> Vec<RunLine> {
    vec![RunLine {
        run_id: "run-1".into(),
        status: "CompletedWithErrors".into(),
        operation: "Install".into(),
        resource_group: "patch-group-a".into(),
        started: "2026-11-30T10:00:00Z".into(),
        duration_seconds: 3725,
        locations: 2,
        locations_done: 2,
        locations_failed: 1,
        instances_sent: 4,
        instances_done: 4,
    }]
}

#[test]
fn report_table_shape() {
    let (summary, figures, _) = finished_run();
    check("report.table.txt", &report_table(&summary, &figures));
}

#[test]
fn report_csv_shape_opens_as_is() {
    let (_, figures, _) = finished_run();
    let csv = csv_of(&figures, &LOCATION_CSV).unwrap();
    // THEN the header is the documented columns, and a reason with quotes and commas
    // stays one field
    assert!(csv.starts_with(&LOCATION_CSV.join(",")));
    assert!(csv.contains("\"2 failed, 1 tolerated, \"\"stop\"\"\""));
    check("report.csv", &csv);
}

#[test]
fn empty_csv_still_has_its_header() {
    assert_eq!(
        csv_of::<LedgerRow>(&[], &LEDGER_CSV).unwrap(),
        LEDGER_CSV.join(",") + "\n"
    );
}

#[test]
fn report_json_shape() {
    let (summary, figures, _) = finished_run();
    let doc = serde_json::to_string_pretty(&ReportDoc {
        summary: &summary,
        locations: &figures,
        linked: &[],
    })
    .unwrap();
    check("report.json", &doc);
}

#[test]
fn ledger_shapes() {
    let (_, _, ledger) = finished_run();
    check("instances.table.txt", &ledger_table(&ledger));
    let csv = csv_of(&ledger, &LEDGER_CSV).unwrap();
    assert!(csv.starts_with(&LEDGER_CSV.join(",")));
    check("instances.csv", &csv);
    check(
        "instances.json",
        &serde_json::to_string_pretty(&ledger).unwrap(),
    );
}

#[test]
fn run_list_shapes() {
    check("list.table.txt", &runs_table(&runs()));
    let csv = csv_of(&runs(), &RUN_CSV).unwrap();
    assert!(csv.starts_with(&RUN_CSV.join(",")));
    check("list.csv", &csv);
    check("list.json", &serde_json::to_string_pretty(&runs()).unwrap());
}

#[test]
fn durations_read_as_people_write_them() {
    assert_eq!(duration(45), "45s");
    assert_eq!(duration(125), "2m05s");
    assert_eq!(duration(3725), "1h02m05s");
}

#[test]
fn long_reasons_are_cut_in_tables_only() {
    // GIVEN a reason longer than a table cell shows
    let long = "é".repeat(MAX_CELL_CHARS + 5);
    // THEN the table shows its first characters and says it was cut
    let cut = cell_text(&long);
    assert_eq!(cut.chars().count(), MAX_CELL_CHARS + 3);
    assert!(cut.ends_with("..."));
    assert_eq!(cell_text("short"), "short");
}

#[test]
fn totals_say_how_many_skipped_accounts_are_not_listed() {
    // GIVEN a summary that lists one skipped account of 21
    let (mut summary, _, _) = finished_run();
    summary.skipped_accounts_omitted = 20;
    // THEN the totals name the listed one and count the others
    assert!(totals(&summary).contains("999999999999 (SUSPENDED), and 20 more"));
}
