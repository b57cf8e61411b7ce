//! `fleetpatch-report`: prints a run's report from the table, one line per location, then
//! totals and compliance. Not a Lambda function: a tool for people.
//!
//! Usage: `fleetpatch-report --table TABLE --run-id RUN_ID` (AWS credentials, Region and
//! `AWS_ENDPOINT_URL` come from the environment, as for any AWS tool).

use fleetpatch::clients::load_sdk_config;
use fleetpatch::report::{render_report, summarize};
use fleetpatch::store::Store;
use std::process::ExitCode;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let table = arg(&args, "--table").or_else(|| std::env::var("FLEETPATCH_TABLE").ok());
    let (Some(table), Some(run_id)) = (table, arg(&args, "--run-id")) else {
        eprintln!("usage: fleetpatch-report --table TABLE --run-id RUN_ID");
        return ExitCode::from(2);
    };
    let sdk = load_sdk_config("fleetpatch-report").await;
    let store = Store::new(aws_sdk_dynamodb::Client::new(&sdk), &table, 90);
    let run = match store.get_run(&run_id).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot read run {run_id}: {e}");
            return ExitCode::from(1);
        }
    };
    let locations = match store.list_locations(&run_id).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot read the locations of run {run_id}: {e}");
            return ExitCode::from(1);
        }
    };
    let summary = summarize(&run_id, run.status, &run, &locations);
    print!("{}", render_report(&summary, &locations));
    ExitCode::SUCCESS
}
