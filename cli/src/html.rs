//! The HTML report: one self-contained file (inline CSS, no script, no fetch of anything)
//! that a person opens in a browser to understand a run at a glance: the summary, the
//! locations, and the instances that failed or were skipped, with their reasons. Pure, and
//! every text from the records is escaped.

use crate::render::{self, LedgerRow};
use fleetpatch::model::{InstanceState, LocationOutcome};
use fleetpatch::report::{LocationFigures, RunSummary};
use std::fmt::Write;

/// At most this many failed or skipped instances are listed (the CSV ledger has them all).
pub const MAX_LISTED_INSTANCES: usize = 2_000;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
td.n{text-align:right}td:first-child{white-space:nowrap}th{background:#f3f3f3}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:9em}\
.card b{display:block;font-size:1.6em}.ok{color:#1a7f37}.bad{color:#b42318}.warn{color:#9a6700}";

/// Whether an instance belongs in the "failed or skipped" list: anything but success and
/// the states still in progress.
fn listed(state: &str) -> bool {
    ![
        InstanceState::Succeeded,
        InstanceState::Pending,
        InstanceState::Claimed,
        InstanceState::InFlight,
    ]
    .iter()
    .any(|s| s.as_str() == state)
}

fn class_of(o: Option<LocationOutcome>) -> &'static str {
    match o {
        Some(LocationOutcome::Succeeded | LocationOutcome::NoTargets) => "ok",
        Some(LocationOutcome::Incomplete | LocationOutcome::Skipped) | None => "warn",
        _ => "bad",
    }
}

fn card(out: &mut String, label: &str, value: &str, class: &str) {
    let _ = write!(
        out,
        "<div class=\"card\"><span>{}</span><b class=\"{class}\">{}</b></div>",
        escape(label),
        escape(value)
    );
}

fn summary_cards(out: &mut String, s: &RunSummary) {
    let status_class = match s.status.as_str() {
        "Succeeded" => "ok",
        "Running" | "Stopping" | "Cancelling" => "warn",
        _ => "bad",
    };
    let state = |k: InstanceState| s.instance_states.get(&k).copied().unwrap_or(0);
    out.push_str("<div class=\"cards\">");
    card(out, "Status", s.status.as_str(), status_class);
    card(out, "Locations", &s.locations.to_string(), "");
    card(
        out,
        "Instances targeted",
        &s.instances_targeted.to_string(),
        "",
    );
    card(
        out,
        "Succeeded",
        &state(InstanceState::Succeeded).to_string(),
        "ok",
    );
    let failed = state(InstanceState::Failed) + state(InstanceState::ExecutionTimedOut);
    card(out, "Failed", &failed.to_string(), "bad");
    let c = &s.compliance;
    card(
        out,
        "Compliant",
        &format!("{}/{}", c.compliant_instances, c.instances),
        "",
    );
    out.push_str("</div>");
}

fn locations_table(out: &mut String, locations: &[LocationFigures]) {
    out.push_str("<h2>Locations</h2><table><tr><th>Location</th><th>Outcome</th><th>Targeted</th><th>Succeeded</th><th>Failed</th><th>Offline</th><th>Skipped</th><th>Missing</th><th>Pending reboot</th><th>Why</th></tr>");
    for f in locations {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{}\">{}</td>",
            escape(&f.location),
            class_of(f.outcome),
            f.outcome
                .map(LocationOutcome::as_str)
                .unwrap_or("(running)")
        );
        for n in [
            f.targeted,
            f.succeeded,
            f.failed,
            f.offline,
            f.skipped,
            f.missing,
            f.pending_reboot,
        ] {
            let _ = write!(out, "<td class=\"n\">{n}</td>");
        }
        let _ = write!(
            out,
            "<td>{}</td></tr>",
            escape(f.reason.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
}

fn instances_table(out: &mut String, rows: &[LedgerRow]) {
    let problems: Vec<&LedgerRow> = rows.iter().filter(|r| listed(&r.state)).collect();
    let _ = write!(
        out,
        "<h2>Failed and skipped instances ({})</h2>",
        problems.len()
    );
    if problems.is_empty() {
        out.push_str("<p>None.</p>");
        return;
    }
    out.push_str("<table><tr><th>Account</th><th>Region</th><th>Instance</th><th>Platform</th><th>State</th><th>SSM status</th><th>Reason</th><th>Command</th></tr>");
    for r in problems.iter().take(MAX_LISTED_INSTANCES) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.account),
            escape(&r.region),
            escape(&r.instance_id),
            escape(&r.platform),
            escape(&r.state),
            escape(&r.ssm_status),
            escape(&r.status_details),
            escape(&r.command_id)
        );
    }
    out.push_str("</table>");
    if problems.len() > MAX_LISTED_INSTANCES {
        let _ = write!(
            out,
            "<p>{} more: see <code>fleetpatch report --instances --format csv</code>.</p>",
            problems.len() - MAX_LISTED_INSTANCES
        );
    }
}

/// The whole page.
/// `linked`: the totals of the runs a resume links this one to, as text (empty for none).
pub fn report(
    s: &RunSummary,
    locations: &[LocationFigures],
    instances: &[LedgerRow],
    linked: &str,
) -> String {
    let mut out = String::from("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(
        out,
        "<title>fleetpatch run {}</title><style>{STYLE}</style></head><body>",
        escape(&s.run_id)
    );
    let _ = write!(out, "<h1>{}</h1>", escape(&render::title(s)));
    summary_cards(&mut out, s);
    let _ = write!(out, "<pre>{}</pre>", escape(&render::totals(s)));
    if !linked.is_empty() {
        let _ = write!(out, "<pre>{}</pre>", escape(linked.trim_start()));
    }
    locations_table(&mut out, locations);
    instances_table(&mut out, instances);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::finished_run;

    #[test]
    fn the_page_holds_the_runs_figures_and_fetches_nothing() {
        // GIVEN a finished run with a failed location and a failed instance
        let (summary, figures, ledger) = finished_run();
        // WHEN its HTML report is rendered
        let page = report(&summary, &figures, &ledger, "");
        // THEN it names the run, its status, each location and the failed instance with its
        // reason, escaped, and refers to nothing outside itself
        assert!(page.contains("<title>fleetpatch run run-1</title>"));
        assert!(page.contains("CompletedWithErrors"));
        assert!(page.contains("222222222222/us-east-1"));
        assert!(page.contains("2 failed, 1 tolerated, &quot;stop&quot;"));
        assert!(page.contains("i-0000000000000000b"));
        assert!(
            !page.contains("i-0000000000000000a"),
            "a success is not a problem"
        );
        assert!(page.contains("Failed and skipped instances (1)"));
        for outside in ["http:", "https:", "<script", "src=", "@import"] {
            assert!(!page.contains(outside), "{outside}");
        }
    }

    #[test]
    fn record_text_cannot_inject_markup() {
        assert_eq!(
            escape("<img src=x onerror='a'>&"),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;"
        );
    }
}
