//! `fleetpatch`: the operator's command line. Validate a run input offline, start a run,
//! watch it, read its report, list recent runs.
//!
//! Built on the `fleetpatch` library: `validate` calls the very validation `plan` runs
//! ([`fleetpatch::input::validate`]), and every report is built by
//! [`fleetpatch::report`]. AWS configuration follows the usual conventions (`AWS_PROFILE` or
//! `--profile`, `--region`, `AWS_ENDPOINT_URL`); the state machine and the table come from
//! the stack's outputs (`--stack`) or are given (`--state-machine`, `--table`).
//!
//! Exit codes, the same for every subcommand: 0 done, or the run succeeded; 1 the run ended
//! with problems (or AWS could not be reached or refused a call); 2 bad usage or bad input.

mod approvals;
mod aws;
mod commands;
mod html;
mod preview;
mod render;
mod resume;
mod watch;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_CODES: &str = "Exit codes: 0 done, or the run succeeded; 1 the run ended with problems \
(or an AWS call failed); 2 bad usage or bad input.";

/// Patch fleets across AWS accounts and Regions: the operator's command line.
#[derive(Debug, Parser)]
#[command(name = "fleetpatch", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub aws: aws::AwsArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a run input offline, with the validation plan runs; every violation listed.
    #[command(after_help = EXIT_CODES)]
    Validate {
        /// The run input (JSON); `-` reads standard input.
        file: PathBuf,
    },
    /// What a run would touch, read-only: writes nothing, sends no command.
    ///
    /// Accounts resolved and skipped, and per location the instances targeted, online,
    /// offline and unmanaged, the window, the tolerated errors, and AccessDenied or
    /// GroupNotFound where they would occur.
    #[command(after_help = EXIT_CODES)]
    Preview {
        /// The run input (JSON); `-` reads standard input.
        file: PathBuf,
        /// table or json.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Start a run: print its run ID and the Step Functions console URL of its execution.
    #[command(after_help = EXIT_CODES)]
    Start {
        /// The run input (JSON), validated before anything is started.
        file: PathBuf,
        /// The run ID (the execution's name); generated when absent.
        #[arg(long)]
        name: Option<String>,
        /// Follow the run until it ends (as `watch`); the exit code follows its status.
        #[arg(long)]
        watch: bool,
    },
    /// Follow a run until it ends; the exit code follows its final status.
    ///
    /// Locations done and failed, instances sent and done of the total, outcomes, and an
    /// estimate of the time left.
    #[command(after_help = EXIT_CODES)]
    Watch {
        /// The run ID (the execution's name).
        run: String,
        /// Seconds between two reads of the run.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Stop a run cleanly: Cancelling, then Cancelled.
    ///
    /// Every location starts nothing new from its next round (pending instances end
    /// NotStarted, "run cancelled"), commands in flight run to their end (or, with
    /// --cancel-commands, are cancelled and end Cancelled), then the run settles as
    /// Cancelled with its completion event.
    #[command(after_help = EXIT_CODES)]
    Stop {
        /// The run ID (the execution's name).
        run: String,
        /// Cancel the commands in flight (SSM CancelCommand, from each location's next
        /// dispatch round) instead of letting them run to their end.
        #[arg(long)]
        cancel_commands: bool,
    },
    /// Start a run over what did not succeed in an ended run, linked both ways.
    ///
    /// Failed, execution-timed-out, cancelled and never-started instances, and every
    /// instance of a location that was skipped or never expanded (AccessDenied,
    /// GroupNotFound, an error), with the same input and snapshot. Nothing is sent to an
    /// instance that succeeded. A run is resumed once (resume the resume to go on).
    #[command(after_help = EXIT_CODES)]
    Resume {
        /// The run ID of the ended run.
        run: String,
        /// Also send again what was never delivered: delivery-timeouts (DeliveryTimedOut,
        /// Undeliverable).
        #[arg(long, value_enum)]
        include: Vec<Include>,
        /// The new run's ID (the execution's name); generated when absent.
        #[arg(long)]
        name: Option<String>,
        /// Follow the new run until it ends (as `watch`).
        #[arg(long)]
        watch: bool,
    },
    /// Approve a wave that waits for its approval (`approval: true`): it starts.
    #[command(after_help = EXIT_CODES)]
    Approve {
        /// The run ID (the execution's name).
        run: String,
        /// The wave's name.
        #[arg(long)]
        wave: String,
    },
    /// Reject a wave that waits for its approval: it and every later wave are skipped.
    #[command(after_help = EXIT_CODES)]
    Reject {
        /// The run ID (the execution's name).
        run: String,
        /// The wave's name.
        #[arg(long)]
        wave: String,
        /// Why, recorded on the wave.
        #[arg(long)]
        reason: Option<String>,
    },
    /// The report of a run.
    #[command(after_help = EXIT_CODES)]
    Report(ReportArgs),
    /// Recent runs, newest first: status, operation, group, start, duration and counts.
    #[command(after_help = EXIT_CODES)]
    List {
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        last: i32,
        /// table, csv or json.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run ID (the execution's name).
    pub run: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The per-instance ledger instead of the per-location report.
    #[arg(long)]
    pub instances: bool,
    /// Write the report to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// What `resume --include` adds to the failed and never-started instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Include {
    /// Commands never delivered: DeliveryTimedOut and Undeliverable instances.
    DeliveryTimeouts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    /// One self-contained HTML file (no network fetches).
    Html,
}

/// Why a command failed, and the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or bad input (exit 2).
    #[error("{0}")]
    Usage(String),
    /// An AWS call failed, or a run ended with problems (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// What a command achieved: done (0), or a run that ended with problems (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    RunHadProblems,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::RunHadProblems) => ExitCode::from(1),
        Err(CliError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}
