//! The command's AWS side: its configuration (profile, Region, endpoint), where the state
//! machine and the table are (the stack's outputs, or given), and the Step Functions calls
//! it makes. The only module of the command that sees SDK types besides the library's store.

use crate::CliError;
pub use aws_config::SdkConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sfn::error::ProvideErrorMetadata;
use aws_sdk_sfn::types::ExecutionStatus;
use clap::Args;
use fleetpatch::store::Store;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The user agent's app name: CloudTrail records it (and the local stack treats it as the
/// operator).
pub const APP_NAME: &str = "fleetpatch-cli";

/// Run records kept this many days (the store needs it only to write; the command reads).
const TTL_DAYS: u64 = 90;

#[derive(Debug, Args)]
pub struct AwsArgs {
    /// The AWS profile (else `AWS_PROFILE`, else the default chain).
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// The Region of the fleetpatch stack (else `AWS_REGION` or the profile's).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// The CloudFormation stack whose outputs name the state machine and the table.
    #[arg(
        long,
        global = true,
        env = "FLEETPATCH_STACK",
        default_value = "fleetpatch"
    )]
    pub stack: String,
    /// The patching state machine's ARN (instead of the stack's `StateMachineArn` output).
    #[arg(long, global = true, env = "FLEETPATCH_STATE_MACHINE")]
    pub state_machine: Option<String>,
    /// The run table's name (instead of the stack's `TableName` output).
    #[arg(long, global = true, env = "FLEETPATCH_TABLE")]
    pub table: Option<String>,
}

/// Where the runs are: the state machine that starts them, the table that records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub state_machine_arn: String,
    pub table: String,
}

/// The clients a command needs.
pub struct Aws {
    pub sfn: aws_sdk_sfn::Client,
    pub store: Store,
    pub targets: Targets,
}

pub async fn sdk_config(args: &AwsArgs) -> SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Ok(name) = aws_config::AppName::new(APP_NAME) {
        loader = loader.app_name(name);
    }
    if let Some(p) = &args.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &args.region {
        loader = loader.region(Region::new(r.clone()));
    }
    loader.load().await
}

/// The configuration alone (for commands that need no stack: preview), with a Region.
pub async fn connect_sdk(args: &AwsArgs) -> Result<SdkConfig, CliError> {
    let sdk = sdk_config(args).await;
    if sdk.region().is_none() {
        return Err(CliError::Usage(
            "no AWS Region: pass --region, or set AWS_REGION or a profile's region".into(),
        ));
    }
    Ok(sdk)
}

/// Connects: the configuration, then the state machine and table (given, or read from the
/// stack's outputs).
pub async fn connect(args: &AwsArgs) -> Result<Aws, CliError> {
    let sdk = connect_sdk(args).await?;

    let targets = match (&args.state_machine, &args.table) {
        (Some(sm), Some(t)) => Targets {
            state_machine_arn: sm.clone(),
            table: t.clone(),
        },
        (sm, t) => {
            let outputs = stack_outputs(&sdk, &args.stack).await?;
            Targets {
                state_machine_arn: sm.clone().or(outputs.0).ok_or_else(|| {
                    missing_output(&args.stack, "StateMachineArn", "--state-machine")
                })?,
                table: t
                    .clone()
                    .or(outputs.1)
                    .ok_or_else(|| missing_output(&args.stack, "TableName", "--table"))?,
            }
        }
    };

    Ok(Aws {
        sfn: aws_sdk_sfn::Client::new(&sdk),
        store: Store::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            &targets.table,
            TTL_DAYS,
        ),
        targets,
    })
}

fn missing_output(stack: &str, output: &str, flag: &str) -> CliError {
    CliError::Usage(format!(
        "stack {stack} has no output {output}: pass {flag} (or --stack with the right name)"
    ))
}

/// The stack's `StateMachineArn` and `TableName` outputs (DescribeStacks).
async fn stack_outputs(
    sdk: &SdkConfig,
    stack: &str,
) -> Result<(Option<String>, Option<String>), CliError> {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let out = cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot read the outputs of stack {stack} ({}); pass --stack, or --state-machine and --table",
                aws_message(&e)
            ))
        })?;

    let outputs = out
        .stacks()
        .first()
        .map(|s| s.outputs().to_vec())
        .unwrap_or_default();
    let find = |key: &str| {
        outputs
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value().map(str::to_string))
    };
    Ok((find("StateMachineArn"), find("TableName")))
}

/// An SDK error's code and message, or its display.
pub fn aws_message<E, R>(e: &aws_sdk_sfn::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => format!("{}", aws_sdk_sfn::error::DisplayErrorContext(e)),
    }
}

/// A run's execution ARN: runs are executions of the state machine named by their run ID.
pub fn execution_arn(state_machine_arn: &str, run_id: &str) -> String {
    format!(
        "{}:{run_id}",
        state_machine_arn.replacen(":stateMachine:", ":execution:", 1)
    )
}

/// The Step Functions console page of an execution.
pub fn console_url(execution_arn: &str) -> String {
    let region = execution_arn.split(':').nth(3).unwrap_or("us-east-1");
    format!(
        "https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"
    )
}

/// An execution as the command shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub name: String,
    /// RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, PENDING_REDRIVE.
    pub status: String,
    /// Epoch seconds.
    pub started: f64,
    pub stopped: Option<f64>,
    /// `error: cause`, when it failed.
    pub failure: Option<String>,
}

fn epoch(d: &aws_sdk_sfn::primitives::DateTime) -> f64 {
    d.as_secs_f64()
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Aws {
    pub async fn start(&self, run_id: &str, input: &str) -> Result<String, CliError> {
        let out = self
            .sfn
            .start_execution()
            .state_machine_arn(&self.targets.state_machine_arn)
            .name(run_id)
            .input(input)
            .send()
            .await
            .map_err(|e| {
                let refused = e
                    .as_service_error()
                    .is_some_and(|se| se.is_execution_already_exists() || se.is_invalid_name());
                let m = format!("cannot start run {run_id}: {}", aws_message(&e));
                if refused {
                    CliError::Usage(m)
                } else {
                    CliError::Failed(m)
                }
            })?;
        Ok(out.execution_arn().to_string())
    }

    pub async fn describe(&self, run_id: &str) -> Result<Execution, CliError> {
        let arn = execution_arn(&self.targets.state_machine_arn, run_id);
        let d = self
            .sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .map_err(|e| {
                let m = format!("cannot read run {run_id}: {}", aws_message(&e));
                if e.as_service_error()
                    .is_some_and(|se| se.is_execution_does_not_exist())
                {
                    CliError::Usage(m)
                } else {
                    CliError::Failed(m)
                }
            })?;
        let failure = d
            .error()
            .map(|err| format!("{err}: {}", d.cause().unwrap_or_default()));
        Ok(Execution {
            name: d.name().unwrap_or(run_id).to_string(),
            status: d.status().as_str().to_string(),
            started: epoch(d.start_date()),
            stopped: d.stop_date().map(epoch),
            failure,
        })
    }

    /// The newest `last` executions of the state machine.
    pub async fn list(&self, last: i32) -> Result<Vec<Execution>, CliError> {
        let out = self
            .sfn
            .list_executions()
            .state_machine_arn(&self.targets.state_machine_arn)
            .max_results(last.clamp(1, 1000))
            .send()
            .await
            .map_err(|e| CliError::Failed(format!("cannot list runs: {}", aws_message(&e))))?;
        Ok(out
            .executions()
            .iter()
            .map(|e| Execution {
                name: e.name().to_string(),
                status: e.status().as_str().to_string(),
                started: epoch(e.start_date()),
                stopped: e.stop_date().map(epoch),
                failure: None,
            })
            .collect())
    }
}

/// Whether an execution status is final.
pub fn ended(status: &str) -> bool {
    status != ExecutionStatus::Running.as_str() && status != "PENDING_REDRIVE"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_the_execution_of_its_name() {
        // GIVEN a state machine ARN and a run ID
        let sm = "arn:aws:states:eu-west-1:123456789012:stateMachine:fleetpatch-patching";
        // WHEN the execution ARN and console URL are built
        let arn = execution_arn(sm, "run-1");
        // THEN they name the execution in the state machine's Region
        assert_eq!(
            arn,
            "arn:aws:states:eu-west-1:123456789012:execution:fleetpatch-patching:run-1"
        );
        assert!(console_url(&arn)
            .starts_with("https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#"));
        assert!(console_url(&arn).ends_with(&arn));
    }
}
