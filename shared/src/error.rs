//! The one error type of fleetpatch. Each variant has a stable `error_type`: the name Step
//! Functions' Retry and Catch match on (`Transient` is retried with backoff; everything else
//! is caught per location, and `InvalidInput` fails the execution at planning).
//!
//! The `error_type` names are a contract with `statemachine/patching.asl.json`: renaming one
//! breaks a Retry or Catch there, and the tests below read the ASL to check them. An SDK error
//! becomes `Transient` only when retrying it as is can succeed (throttles, 5xx, no answer).

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use lambda_runtime::Diagnostic;

/// Everything that can go wrong in a handler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The run input broke one or more rules; the message names every field and rule.
    #[error("{0}")]
    InvalidInput(String),
    /// A throttle, a timeout or a 5xx: worth retrying as is.
    #[error("transient failure in {operation}: {message}")]
    Transient {
        /// The AWS operation (or fleetpatch step) that failed.
        operation: String,
        message: String,
    },
    /// An AWS call failed for a reason retrying will not fix.
    #[error("{operation} failed: {code}: {message}")]
    Aws {
        operation: String,
        code: String,
        message: String,
    },
    /// A stored record is missing or does not have the shape this code writes.
    #[error("bad record: {0}")]
    Record(String),
    /// A required environment variable is missing or malformed.
    #[error("configuration: {0}")]
    Config(String),
    /// The payload the function received does not have the expected shape.
    #[error("bad request payload: {0}")]
    Payload(String),
}

impl Error {
    /// The name Step Functions matches in Retry/Catch `ErrorEquals`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "InvalidInput",
            Error::Transient { .. } => "Transient",
            Error::Aws { .. } => "AwsError",
            Error::Record(_) => "RecordError",
            Error::Config(_) => "ConfigError",
            Error::Payload(_) => "PayloadError",
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(e: Error) -> Diagnostic {
        Diagnostic {
            error_type: e.error_type().to_string(),
            error_message: e.to_string(),
        }
    }
}

/// Codes that mean "slow down or try again": the same request can succeed later.
const TRANSIENT_CODES: [&str; 12] = [
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionConflictException",
    "InternalServerException",
];

/// Whether an AWS error code is a throttle or a server-side hiccup.
pub fn is_transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// Converts any SDK error into [`Error`], classifying throttles, timeouts, connection
/// failures and 5xx answers as transient.
pub fn from_sdk<E, R>(operation: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown").to_string();
            let message = se.err().message().unwrap_or("").to_string();
            if is_transient_code(&code) {
                Error::Transient {
                    operation: operation.to_string(),
                    message: format!("{code}: {message}"),
                }
            } else {
                Error::Aws {
                    operation: operation.to_string(),
                    code,
                    message,
                }
            }
        }
        _ => Error::Transient {
            operation: operation.to_string(),
            message: describe_chain(&err),
        },
    }
}

/// Whether the SDK error proves the request was refused before it took effect: an answer
/// with a 4xx status (a throttle, a validation error, an unknown instance), or a request that
/// was never built. A 5xx answer (InternalServerError, ServiceUnavailable), a timeout or a
/// lost connection proves nothing: the service may have carried the request out before it
/// failed to answer, so the caller must treat the effect as unknown.
pub fn refused_before_effect<E>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::ConstructionFailure(_) => true,
        SdkError::ServiceError(se) => se.raw().status().is_client_error(),
        _ => false,
    }
}

/// The error and all its sources, joined by `: `. An SDK error's own message is only its kind
/// ("dispatch failure", "request has timed out"); the cause is in its sources.
fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut src = err.source();

    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_the_names_the_state_machine_uses() {
        let asl = include_str!("../../statemachine/patching.asl.json");
        let t = Error::Transient {
            operation: "x".into(),
            message: "y".into(),
        };
        assert_eq!(t.error_type(), "Transient");
        assert!(
            asl.contains("\"Transient\""),
            "the ASL must retry Transient"
        );
        let d: Diagnostic = Error::InvalidInput("operation: is required".into()).into();
        assert_eq!(d.error_type, "InvalidInput");
        assert_eq!(d.error_message, "operation: is required");
    }

    #[test]
    fn every_lambda_task_retries_timeouts_throttles_and_transient_errors() {
        // What Step Functions sees when Lambda times a function out, when Lambda refuses an
        // invoke with 429, and what our functions raise for throttles and conflicts.
        fn tasks<'a>(
            states: &'a serde_json::Value,
            out: &mut Vec<(&'a str, &'a serde_json::Value)>,
        ) {
            for (name, st) in states.as_object().into_iter().flatten() {
                if st["Type"] == "Task" {
                    out.push((name, st));
                }
                if let Some(inner) = st.get("ItemProcessor").and_then(|p| p.get("States")) {
                    tasks(inner, out);
                }
            }
        }
        let asl: serde_json::Value =
            serde_json::from_str(include_str!("../../statemachine/patching.asl.json")).unwrap();
        let mut found = Vec::new();
        tasks(&asl["States"], &mut found);
        assert_eq!(
            found.len(),
            11,
            "plan, wave start, await approval, wave approved, wave rejected, expand, dispatch, settle, wave end, aggregate, aggregate from records"
        );
        for (name, st) in found {
            let retried: Vec<&str> = st["Retry"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["ErrorEquals"].as_array().into_iter().flatten())
                .filter_map(|e| e.as_str())
                .collect();
            for must in [
                "Sandbox.Timedout",
                "Lambda.TooManyRequestsException",
                "Transient",
            ] {
                assert!(retried.contains(&must), "{name} does not retry {must}");
            }
        }
    }

    #[test]
    fn throttling_codes_are_transient() {
        assert!(is_transient_code("ThrottlingException"));
        assert!(is_transient_code("ProvisionedThroughputExceededException"));
        assert!(!is_transient_code("AccessDenied"));
        assert!(!is_transient_code("InvalidInstanceId"));
    }
}
