//! `fleetpatch approve RUN --wave NAME` and `fleetpatch reject RUN --wave NAME`: decide a
//! wave that waits for its approval (`approval: true`).
//!
//! The wave's task token is read from its wave item (the token is never in an event), then
//! handed to Step Functions: SendTaskSuccess with `{"approvedBy", "via": "cli"}`, or
//! SendTaskFailure with the error `WaveRejected` and a JSON cause `{"rejectedBy", "via",
//! "reason"}`. The identity is the caller's own, from STS GetCallerIdentity; the gate
//! function records it on the wave (CloudTrail keeps the verified principal of the call).

use crate::aws::{self, AwsArgs};
use crate::{CliError, Outcome};
use fleetpatch::model::{WaveRecord, WaveStatus};
use serde_json::json;

/// The error a rejection is sent with (`fleetpatch::waves::rejection_from` reads its cause).
pub const REJECTED: &str = "WaveRejected";

/// `approve` or `reject`, as the command line gave it.
pub async fn answer(args: &AwsArgs, command: crate::Command) -> Result<Outcome, CliError> {
    match command {
        crate::Command::Approve { run, wave } => decide(args, &run, &wave, true, None).await,
        crate::Command::Reject { run, wave, reason } => {
            decide(args, &run, &wave, false, reason).await
        }
        _ => Err(CliError::Usage("not an approval".into())),
    }
}

/// Approves or rejects a wave of a run.
pub async fn decide(
    args: &AwsArgs,
    run_id: &str,
    wave: &str,
    approve: bool,
    reason: Option<String>,
) -> Result<Outcome, CliError> {
    let conn = aws::connect(args).await?;
    let sdk = aws::connect_sdk(args).await?;
    let failed = |e: fleetpatch::Error| CliError::Failed(format!("run {run_id}: {e}"));

    let waves = conn.store.list_waves(run_id).await.map_err(failed)?;
    let w = find(&waves, run_id, wave)?;
    let token = conn
        .store
        .approval_token(run_id, w.index)
        .await
        .map_err(failed)?
        .ok_or_else(|| CliError::Usage(not_waiting(run_id, w)))?;

    let who = aws_sdk_sts::Client::new(&sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot tell who you are (STS GetCallerIdentity): {e}"
            ))
        })?
        .arn
        .unwrap_or_else(|| "unknown".into());

    let sent = if approve {
        let output = json!({"approvedBy": who, "via": "cli", "reason": reason});
        conn.sfn
            .send_task_success()
            .task_token(token)
            .output(output.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.into_service_error().to_string())
    } else {
        let cause = json!({"rejectedBy": who, "via": "cli", "reason": reason});
        conn.sfn
            .send_task_failure()
            .task_token(token)
            .error(REJECTED)
            .cause(cause.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.into_service_error().to_string())
    };
    sent.map_err(|e| CliError::Failed(format!("run {run_id}, wave {wave}: {e}")))?;

    let verb = if approve { "approved" } else { "rejected" };
    println!("run {run_id}: wave {wave} {verb} by {who}");
    Ok(Outcome::Done)
}

fn find<'a>(waves: &'a [WaveRecord], run_id: &str, name: &str) -> Result<&'a WaveRecord, CliError> {
    waves.iter().find(|w| w.name == name).ok_or_else(|| {
        let names: Vec<&str> = waves.iter().map(|w| w.name.as_str()).collect();
        CliError::Usage(format!(
            "run {run_id} has no wave {name} (its waves: {})",
            names.join(", ")
        ))
    })
}

fn not_waiting(run_id: &str, w: &WaveRecord) -> String {
    match w.status {
        WaveStatus::Pending if w.approval => format!(
            "wave {} of run {run_id} does not wait for its approval yet (the waves before it are still running)",
            w.name
        ),
        s => format!(
            "wave {} of run {run_id} is {}: there is no approval to give",
            w.name,
            s.as_str()
        ),
    }
}
