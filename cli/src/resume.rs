//! `fleetpatch resume RUN`: a new run over what did not succeed in an ended one. The CLI
//! writes the original's stored input again with `resumeOf` (and `resumeDeliveryTimeouts`)
//! and starts it; plan and expand do the narrowing. Before starting, the CLI asks the same
//! decisions plan will ([`fleetpatch::resume::original`]), so a refused resume exits 2 with
//! nothing started.

use crate::aws::Aws;
use crate::CliError;
use fleetpatch::clock::now_epoch_ms;
use fleetpatch::model::RunStatus;
use fleetpatch::report::{summarize, RunSummary};
use fleetpatch::{input, plan, resume};
use serde::Serialize;

/// The input of the resume of `run_id`, checked as plan will check it: the text to start.
pub async fn input_of(
    aws: &Aws,
    run_id: &str,
    new_id: &str,
    delivery_timeouts: bool,
) -> Result<String, CliError> {
    let failed = |e: fleetpatch::Error| CliError::Failed(format!("cannot read run {run_id}: {e}"));
    let original = aws.store.get_run(run_id).await.map_err(|e| match e {
        fleetpatch::Error::Record(m) => CliError::Usage(m),
        e => failed(e),
    })?;
    let resumed_by = aws.store.resumed_by(run_id).await.map_err(failed)?;
    let locations = aws.store.list_locations(run_id).await.map_err(failed)?;

    let doc = input::resume_document(&original.input, run_id, delivery_timeouts);
    let refused = |errs: Vec<input::FieldError>| {
        CliError::Usage(format!(
            "cannot resume {run_id}: {}; nothing was started",
            input::describe(&errs)
        ))
    };
    let run_input = input::validate(&doc).map_err(refused)?;
    let late = input::timing_violations(&run_input, now_epoch_ms());
    if !late.is_empty() {
        return Err(refused(late));
    }
    let planned = plan::locations(&original.accounts, &run_input.regions);
    let what = resume::original(
        new_id,
        &run_input,
        &original,
        resumed_by.as_deref(),
        &locations,
        &planned,
    )
    .map_err(|e| refused(vec![e]))?;

    println!(
        "resuming {run_id} ({}): {} of its {} location(s), snapshot {}",
        original.status.as_str(),
        what.locations.len(),
        original.location_count,
        what.snapshot_id.as_deref().unwrap_or("-")
    );
    Ok(doc.to_string())
}

/// A run linked to the one reported: the run it resumes, or the run that resumed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Linked {
    /// `resumeOf` or `resumedBy`.
    pub relation: &'static str,
    pub summary: RunSummary,
}

/// The runs linked to `run_id` by a resume, each with its summary.
pub async fn linked(
    aws: &Aws,
    run_id: &str,
    resume_of: Option<&str>,
) -> Result<Vec<Linked>, CliError> {
    let failed = |e: fleetpatch::Error| CliError::Failed(format!("cannot read run {run_id}: {e}"));
    let resumed_by = aws.store.resumed_by(run_id).await.map_err(failed)?;
    let mut out = Vec::new();
    for (relation, other) in [
        ("resumeOf", resume_of),
        ("resumedBy", resumed_by.as_deref()),
    ] {
        let Some(other) = other else { continue };
        let Ok(run) = aws.store.get_run(other).await else {
            continue;
        };
        let locations = aws.store.list_locations(other).await.map_err(failed)?;
        let status = run.status;
        out.push(Linked {
            relation,
            summary: summarize(other, status, &run, &locations),
        });
    }
    Ok(out)
}

/// The linked runs under a report table: each one's title and totals.
pub fn linked_text(linked: &[Linked]) -> String {
    linked
        .iter()
        .map(|l| {
            let s = &l.summary;
            let how = match l.relation {
                "resumeOf" => "This run resumes",
                _ => "This run was resumed by",
            };
            let ended = if matches!(s.status, RunStatus::Running | RunStatus::Cancelling) {
                " (not ended)"
            } else {
                ""
            };
            format!(
                "\n{how} {}{ended}:\n{}\n{}",
                s.run_id,
                crate::render::title(s),
                crate::render::totals(s)
            )
        })
        .collect()
}
