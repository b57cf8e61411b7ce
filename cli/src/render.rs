//! The command's outputs as text: the report (per location, or the per-instance ledger) and
//! the list of runs, each as a table, CSV or JSON. Pure: built from the library's report
//! figures ([`fleetpatch::report`]) and ledger entries, so that every format shows the same
//! numbers. CSV has one header row and one row per record, and opens in a spreadsheet as it
//! is; JSON is one document.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use fleetpatch::model::{LedgerEntry, Location, LocationOutcome};
use fleetpatch::report::{LocationFigures, RunSummary};
use serde::Serialize;

/// One instance of the ledger, flattened for CSV and JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRow {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    pub platform: String,
    pub state: String,
    pub ssm_status: String,
    pub status_details: String,
    pub command_id: String,
    pub sent_at: String,
    pub ended_at: String,
    pub installed: Option<u64>,
    pub missing: Option<u64>,
    pub failed: Option<u64>,
    pub pending_reboot: Option<u64>,
}

impl LedgerRow {
    pub fn new(l: &Location, e: &LedgerEntry) -> Self {
        let r = &e.record;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        LedgerRow {
            account: l.account.clone(),
            region: l.region.clone(),
            instance_id: r.instance_id.clone(),
            platform: text(&r.platform),
            state: r.state.as_str().to_string(),
            ssm_status: text(&r.ssm_status),
            status_details: text(&r.status_details),
            command_id: text(&r.command_id),
            sent_at: text(&e.sent_at),
            ended_at: text(&e.ended_at),
            installed: e.compliance.map(|c| c.installed),
            missing: e.compliance.map(|c| c.missing),
            failed: e.compliance.map(|c| c.failed),
            pending_reboot: e.compliance.map(|c| c.installed_pending_reboot),
        }
    }
}

/// The per-location report as one JSON document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportDoc<'a> {
    pub summary: &'a RunSummary,
    pub locations: &'a [LocationFigures],
    /// The runs a resume links this one to (`resumeOf`, `resumedBy`), with their totals.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub linked: &'a [crate::resume::Linked],
}

/// One run of `list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunLine {
    pub run_id: String,
    /// The run record's status, else the execution's (a run that never reached plan).
    pub status: String,
    pub operation: String,
    pub resource_group: String,
    /// ISO 8601 UTC.
    pub started: String,
    /// Seconds, to the end or to now while it runs.
    pub duration_seconds: u64,
    pub locations: u64,
    pub locations_done: u64,
    pub locations_failed: u64,
    pub instances_sent: u64,
    pub instances_done: u64,
}

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(Cell::new));
    t
}

pub(crate) fn right_align(t: &mut Table, columns: std::ops::Range<usize>) {
    for i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

const LOCATION_HEADER: [&str; 10] = [
    "LOCATION",
    "OUTCOME",
    "TARGETED",
    "SUCCEEDED",
    "FAILED",
    "OFFLINE",
    "SKIPPED",
    "MISSING",
    "PENDING REBOOT",
    "WHY",
];

/// A table cell shows at most this many characters of a reason (CSV, JSON and HTML keep it
/// whole): a table stays readable in a terminal.
pub const MAX_CELL_CHARS: usize = 120;

/// `text` cut to [`MAX_CELL_CHARS`] characters, with `...` when cut.
pub fn cell_text(text: &str) -> String {
    match text.char_indices().nth(MAX_CELL_CHARS) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

fn outcome(o: Option<LocationOutcome>) -> &'static str {
    o.map(LocationOutcome::as_str).unwrap_or("(running)")
}

/// The per-location report: a title line, the table, then the totals.
pub fn report_table(summary: &RunSummary, locations: &[LocationFigures]) -> String {
    let mut t = table(&LOCATION_HEADER);
    for f in locations {
        t.add_row(vec![
            f.location.clone(),
            outcome(f.outcome).to_string(),
            f.targeted.to_string(),
            f.succeeded.to_string(),
            f.failed.to_string(),
            f.offline.to_string(),
            f.skipped.to_string(),
            f.missing.to_string(),
            f.pending_reboot.to_string(),
            cell_text(f.reason.as_deref().unwrap_or_default()),
        ]);
    }
    right_align(&mut t, 2..9);
    format!("{}\n{t}\n{}", title(summary), totals(summary))
}

pub fn title(s: &RunSummary) -> String {
    format!(
        "Run {}: {} on group {}, snapshot {} -> {}",
        s.run_id,
        s.operation,
        s.resource_group,
        s.snapshot_id.as_deref().unwrap_or("-"),
        s.status.as_str()
    )
}

/// The totals under the table: outcomes, states, compliance, accounts left out.
pub fn totals(s: &RunSummary) -> String {
    let pairs = |it: Vec<(&str, u64)>| {
        it.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let outcomes = pairs(
        s.location_outcomes
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect(),
    );
    let states = pairs(
        s.instance_states
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect(),
    );
    let c = &s.compliance;
    let mut out = format!(
        "Locations: {} ({outcomes})\nInstances targeted: {} ({states})\n\
         Compliance: {}/{} instances compliant; installed {}, missing {}, failed {}, pending reboot {}\n",
        s.locations,
        s.instances_targeted,
        c.compliant_instances,
        c.instances,
        c.installed,
        c.missing,
        c.failed,
        c.installed_pending_reboot
    );
    if !s.skipped_accounts.is_empty() {
        let listed: Vec<String> = s
            .skipped_accounts
            .iter()
            .map(|a| format!("{} ({})", a.account, a.reason))
            .collect();
        let more = match s.skipped_accounts_omitted {
            0 => String::new(),
            n => format!(", and {n} more"),
        };
        out.push_str(&format!(
            "Accounts not targeted: {}{more}\n",
            listed.join(", ")
        ));
    }
    for w in &s.waves {
        out.push_str(&format!("Wave {}\n", fleetpatch::report::wave_text(w)));
    }
    out
}

const LEDGER_HEADER: [&str; 14] = [
    "ACCOUNT",
    "REGION",
    "INSTANCE",
    "PLATFORM",
    "STATE",
    "SSM STATUS",
    "DETAILS",
    "COMMAND",
    "SENT",
    "ENDED",
    "INSTALLED",
    "MISSING",
    "FAILED",
    "PENDING REBOOT",
];

fn count(v: Option<u64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_default()
}

pub fn ledger_table(rows: &[LedgerRow]) -> String {
    let mut t = table(&LEDGER_HEADER);
    for r in rows {
        t.add_row(vec![
            r.account.clone(),
            r.region.clone(),
            r.instance_id.clone(),
            r.platform.clone(),
            r.state.clone(),
            r.ssm_status.clone(),
            cell_text(&r.status_details),
            r.command_id.clone(),
            r.sent_at.clone(),
            r.ended_at.clone(),
            count(r.installed),
            count(r.missing),
            count(r.failed),
            count(r.pending_reboot),
        ]);
    }
    right_align(&mut t, 10..14);
    format!("{t}\n")
}

/// Rows as CSV with a header row (the serde field names).
pub fn csv_of<T: Serialize>(rows: &[T], header: &[&str]) -> Result<String, String> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(true)
        .from_writer(Vec::new());
    if rows.is_empty() {
        w.write_record(header).map_err(|e| e.to_string())?;
    }
    for r in rows {
        w.serialize(r).map_err(|e| e.to_string())?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// CSV column names: the JSON field names, in order.
pub const LOCATION_CSV: [&str; 10] = [
    "location",
    "outcome",
    "targeted",
    "succeeded",
    "failed",
    "offline",
    "skipped",
    "missing",
    "pendingReboot",
    "reason",
];

pub const LEDGER_CSV: [&str; 14] = [
    "account",
    "region",
    "instanceId",
    "platform",
    "state",
    "ssmStatus",
    "statusDetails",
    "commandId",
    "sentAt",
    "endedAt",
    "installed",
    "missing",
    "failed",
    "pendingReboot",
];

pub const RUN_CSV: [&str; 11] = [
    "runId",
    "status",
    "operation",
    "resourceGroup",
    "started",
    "durationSeconds",
    "locations",
    "locationsDone",
    "locationsFailed",
    "instancesSent",
    "instancesDone",
];

/// Seconds as `1h02m03s`, `2m03s` or `45s`.
pub fn duration(secs: u64) -> String {
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

pub fn runs_table(runs: &[RunLine]) -> String {
    let mut t = table(&[
        "RUN",
        "STATUS",
        "OPERATION",
        "GROUP",
        "STARTED",
        "DURATION",
        "LOCATIONS DONE",
        "FAILED",
        "INSTANCES SENT",
        "DONE",
    ]);
    for r in runs {
        t.add_row(vec![
            r.run_id.clone(),
            r.status.clone(),
            r.operation.clone(),
            r.resource_group.clone(),
            r.started.clone(),
            duration(r.duration_seconds),
            format!("{}/{}", r.locations_done, r.locations),
            r.locations_failed.to_string(),
            r.instances_sent.to_string(),
            r.instances_done.to_string(),
        ]);
    }
    right_align(&mut t, 5..10);
    format!("{t}\n")
}

#[cfg(test)]
pub(crate) mod tests;
