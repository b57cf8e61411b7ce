//! One function per subcommand: read what it needs, ask the library, print. The exit code
//! follows from what each returns ([`Outcome`], or the kind of [`CliError`]).

use crate::approvals::answer;
use crate::aws::{self, Aws};
use crate::render::{self, LedgerRow, RunLine};
use crate::watch;
use crate::{html, Cli, CliError, Command, Format, Include, Outcome, ReportArgs};
use fleetpatch::clock::iso;
use fleetpatch::input;
use fleetpatch::model::{LocationRecord, RunStatus};
use fleetpatch::report::{location_figures, summarize, LocationFigures, RunSummary};
use fleetpatch::run;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub async fn run(cli: Cli) -> Result<Outcome, CliError> {
    match cli.command {
        Command::Validate { file } => validate(&file).map(|_| Outcome::Done),
        Command::Preview { file, format } => {
            let raw = validate(&file)?;
            let aws = aws::connect_sdk(&cli.aws).await?;
            preview(&aws, &raw, format).await
        }
        Command::Start { file, name, watch } => {
            let raw = validate(&file)?;
            let aws = aws::connect(&cli.aws).await?;
            let run_id = start(&aws, &raw, name).await?;
            if watch {
                watch_run(&aws, &run_id, Duration::from_secs(2)).await
            } else {
                Ok(Outcome::Done)
            }
        }
        Command::Resume {
            run,
            include,
            name,
            watch,
        } => {
            let aws = aws::connect(&cli.aws).await?;
            let new_id = name.unwrap_or_else(new_run_id);
            let delivery = include.contains(&Include::DeliveryTimeouts);
            let doc = crate::resume::input_of(&aws, &run, &new_id, delivery).await?;
            let run_id = start(&aws, &doc, Some(new_id)).await?;
            if watch {
                watch_run(&aws, &run_id, Duration::from_secs(2)).await
            } else {
                Ok(Outcome::Done)
            }
        }
        Command::Watch { run, interval } => {
            let aws = aws::connect(&cli.aws).await?;
            watch_run(&aws, &run, Duration::from_secs(interval.max(1))).await
        }
        Command::Stop {
            run,
            cancel_commands,
        } => {
            let aws = aws::connect(&cli.aws).await?;
            stop(&aws, &run, cancel_commands).await?;
            if cancel_commands {
                cancel_commands_of(&aws, &run).await?;
            }
            Ok(Outcome::Done)
        }
        c @ (Command::Approve { .. } | Command::Reject { .. }) => answer(&cli.aws, c).await,
        Command::Report(args) => report(&aws::connect(&cli.aws).await?, &args).await,
        Command::List { last, format } => {
            let aws = aws::connect(&cli.aws).await?;
            list(&aws, last, format).await
        }
    }
}

/// Reads a run input and validates it with the library's validation (the one `plan` runs).
/// Every violation goes to standard error; the input's text comes back when it is valid.
fn validate(file: &Path) -> Result<String, CliError> {
    let raw = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let value: Value = serde_json::from_str(&raw)
        .map_err(|e| CliError::Usage(format!("{}: not JSON: {e}", file.display())))?;

    match input::validate(&value) {
        Ok(run) => {
            eprintln!(
                "{}: valid: {} on group {}, {} account target(s) x {} Region(s)",
                file.display(),
                run.operation.as_str(),
                run.resource_group,
                run.accounts.len(),
                run.regions.len()
            );
            Ok(raw)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("  {e}");
            }
            Err(CliError::Usage(format!(
                "{}: {} invalid field(s); nothing was started",
                file.display(),
                errors.len()
            )))
        }
    }
}

/// A run ID from the clock: `run-20261130-162400-1a2b`.
fn new_run_id() -> String {
    let stamp: String = iso(fleetpatch::clock::now_epoch())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let (date, time) = stamp.split_at(stamp.len().min(8));
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    format!("run-{date}-{time}-{suffix}")
}

async fn preview(sdk: &aws::SdkConfig, raw: &str, format: Format) -> Result<Outcome, CliError> {
    let value: Value =
        serde_json::from_str(raw).map_err(|e| CliError::Usage(format!("not JSON: {e}")))?;
    let run_input =
        input::validate(&value).map_err(|errors| CliError::Usage(input::describe(&errors)))?;
    let p = crate::preview::preview(sdk, run_input).await?;
    let text = match format {
        Format::Table => crate::preview::table(&p),
        Format::Json => json(&p)?,
        Format::Csv | Format::Html => {
            return Err(CliError::Usage("preview writes table or json".into()))
        }
    };
    print!("{text}");
    Ok(Outcome::Done)
}

async fn start(aws: &Aws, input: &str, name: Option<String>) -> Result<String, CliError> {
    let run_id = name.unwrap_or_else(new_run_id);
    let arn = aws.start(&run_id, input).await?;
    println!("run ID:  {run_id}");
    println!("console: {}", aws::console_url(&arn));
    Ok(run_id)
}

async fn watch_run(aws: &Aws, run_id: &str, interval: Duration) -> Result<Outcome, CliError> {
    let (execution, _) = watch::follow(aws, run_id, interval).await?;
    let status = aws.store.get_run(run_id).await.ok().map(|r| r.status);
    let shown = status.map_or("(no run record)", RunStatus::as_str);
    match &execution.failure {
        Some(f) => println!(
            "run {run_id} ended {shown}; execution {}: {f}",
            execution.status
        ),
        None => println!("run {run_id} ended {shown}; execution {}", execution.status),
    }
    Ok(match status {
        Some(RunStatus::Succeeded) => Outcome::Done,
        _ => Outcome::RunHadProblems,
    })
}

/// Moves the run to Cancelling, from whichever status that may happen from
/// ([`run::CANCELLABLE`]); each write is conditional on the status it leaves.
async fn stop(aws: &Aws, run_id: &str, cancel: bool) -> Result<(), CliError> {
    let failed = |e: fleetpatch::Error| CliError::Failed(format!("cannot stop run {run_id}: {e}"));
    for from in run::CANCELLABLE {
        if aws
            .store
            .set_run_status(run_id, from, RunStatus::Cancelling)
            .await
            .map_err(failed)?
        {
            let flight = match cancel {
                true => "commands in flight are cancelled",
                false => "commands in flight run to their end",
            };
            let from = from.as_str();
            println!("run {run_id}: {from} -> Cancelling; nothing new starts, {flight}");
            return Ok(());
        }
    }

    let status = aws.store.get_run(run_id).await.map_err(|e| match e {
        fleetpatch::Error::Record(m) if m.contains("not found") => CliError::Usage(m),
        e => failed(e),
    })?;
    match status.status {
        RunStatus::Cancelling => {
            println!("run {run_id} is already Cancelling");
            Ok(())
        }
        s => Err(CliError::Usage(format!(
            "run {run_id} has already ended ({}); nothing to stop",
            s.as_str()
        ))),
    }
}

/// What a report shows: the run's summary, its locations' figures, the ledger when asked
/// for, and the runs a resume links it to.
struct Report {
    summary: RunSummary,
    figures: Vec<LocationFigures>,
    ledger: Vec<LedgerRow>,
    linked: Vec<crate::resume::Linked>,
}

/// Asks a cancelling run's locations to cancel their commands in flight.
async fn cancel_commands_of(aws: &Aws, run_id: &str) -> Result<(), CliError> {
    let asked = aws.store.request_command_cancel(run_id).await;
    match asked.map_err(|e| CliError::Failed(format!("cannot stop run {run_id}: {e}")))? {
        true => println!(
            "run {run_id}: commands in flight are cancelled (CancelCommand) from each location's next round"
        ),
        false => println!("run {run_id} has ended meanwhile: no command left to cancel"),
    }
    Ok(())
}

/// The run's records: the run's summary, its locations' figures (sorted), and the ledger
/// when asked for.
async fn load_report(aws: &Aws, run_id: &str, with_instances: bool) -> Result<Report, CliError> {
    let failed = |e: fleetpatch::Error| CliError::Failed(format!("cannot read run {run_id}: {e}"));
    let run = aws.store.get_run(run_id).await.map_err(|e| match e {
        fleetpatch::Error::Record(m) if m.contains("not found") => CliError::Usage(m),
        e => failed(e),
    })?;
    let mut locations: Vec<LocationRecord> =
        aws.store.list_locations(run_id).await.map_err(failed)?;
    locations.sort_by(|a, b| a.location.cmp(&b.location));
    let mut summary = summarize(run_id, run.status, &run, &locations);
    let waves = aws.store.list_waves(run_id).await.map_err(failed)?;
    summary.waves = fleetpatch::report::wave_lines(&run, &waves);

    let mut ledger = Vec::new();
    if with_instances {
        for l in &locations {
            let entries = aws
                .store
                .list_ledger(run_id, &l.location)
                .await
                .map_err(failed)?;
            ledger.extend(entries.iter().map(|e| LedgerRow::new(&l.location, e)));
        }
    }
    let figures = locations.iter().map(location_figures).collect();
    let linked = crate::resume::linked(aws, run_id, run.input.resume_of.as_deref()).await?;
    Ok(Report {
        summary,
        figures,
        ledger,
        linked,
    })
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| CliError::Failed(e.to_string()))
}

async fn report(aws: &Aws, args: &ReportArgs) -> Result<Outcome, CliError> {
    let with_instances = args.instances || args.format == Format::Html;
    let Report {
        summary,
        figures,
        ledger,
        linked,
    } = load_report(aws, &args.run, with_instances).await?;
    let csv_failed = |e: String| CliError::Failed(format!("cannot write CSV: {e}"));

    let text = match (args.format, args.instances) {
        (Format::Html, _) => html::report(
            &summary,
            &figures,
            &ledger,
            &crate::resume::linked_text(&linked),
        ),
        (Format::Table, false) => {
            render::report_table(&summary, &figures) + &crate::resume::linked_text(&linked)
        }
        (Format::Table, true) => render::ledger_table(&ledger),
        (Format::Csv, false) => {
            render::csv_of(&figures, &render::LOCATION_CSV).map_err(csv_failed)?
        }
        (Format::Csv, true) => render::csv_of(&ledger, &render::LEDGER_CSV).map_err(csv_failed)?,
        (Format::Json, false) => json(&render::ReportDoc {
            summary: &summary,
            locations: &figures,
            linked: &linked,
        })?,
        (Format::Json, true) => json(&ledger)?,
    };

    match &args.output {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
            println!("report written to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(Outcome::Done)
}

async fn list(aws: &Aws, last: i32, format: Format) -> Result<Outcome, CliError> {
    let executions = aws.list(last).await?;
    let mut runs = Vec::new();
    for e in executions {
        let run = aws.store.get_run(&e.name).await.ok();
        let end = e.stopped.unwrap_or_else(aws::now);
        runs.push(RunLine {
            run_id: e.name.clone(),
            status: run
                .as_ref()
                .map_or(e.status.clone(), |r| r.status.as_str().to_string()),
            operation: run
                .as_ref()
                .map_or(String::new(), |r| r.input.operation.as_str().to_string()),
            resource_group: run
                .as_ref()
                .map_or(String::new(), |r| r.input.resource_group.clone()),
            started: iso(e.started as i64),
            duration_seconds: (end - e.started).max(0.0) as u64,
            locations: run.as_ref().map_or(0, |r| r.location_count),
            locations_done: run.as_ref().map_or(0, |r| r.locations_done),
            locations_failed: run.as_ref().map_or(0, |r| r.locations_failed),
            instances_sent: run.as_ref().map_or(0, |r| r.instances_sent),
            instances_done: run.as_ref().map_or(0, |r| r.instances_done),
        });
    }

    let text = match format {
        Format::Table => render::runs_table(&runs),
        Format::Csv => render::csv_of(&runs, &render::RUN_CSV)
            .map_err(|e| CliError::Failed(format!("cannot write CSV: {e}")))?,
        Format::Json => json(&runs)?,
        Format::Html => return Err(CliError::Usage("list has no html format".into())),
    };
    print!("{text}");
    Ok(Outcome::Done)
}
