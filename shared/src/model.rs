//! The domain: locations, instance and location outcomes, run statuses, and the mapping from
//! SSM's invocation statuses to fleetpatch's outcomes. Plain data, no AWS types.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One place fleetpatch works in: an account and a Region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    /// 12-digit account ID.
    pub account: String,
    /// Region code, e.g. `eu-west-1`.
    pub region: String,
}

impl Location {
    /// A location from its parts.
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Location {
            account: account.into(),
            region: region.into(),
        }
    }
}

/// The compact form used in state payloads: `ACCOUNT/REGION` (about 30 bytes, so that
/// 5,000 locations fit in Step Functions' 256 KiB payload).
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

impl FromStr for Location {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((a, r))
                if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) && !r.is_empty() =>
            {
                Ok(Location::new(a, r))
            }
            _ => Err(format!("location {s:?} is not ACCOUNT/REGION")),
        }
    }
}

/// The patching operation of AWS-RunPatchBaseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Report missing patches, change nothing.
    Scan,
    /// Install missing patches.
    Install,
}

impl Operation {
    /// The value of the document's `Operation` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Scan => "Scan",
            Operation::Install => "Install",
        }
    }
}

/// AWS-RunPatchBaseline's `RebootOption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RebootOption {
    /// Reboot when an installed patch needs it (the document's default).
    RebootIfNeeded,
    /// Never reboot; nodes stay non-compliant (pending reboot) until rebooted and scanned.
    NoReboot,
}

impl RebootOption {
    /// The value of the document's `RebootOption` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            RebootOption::RebootIfNeeded => "RebootIfNeeded",
            RebootOption::NoReboot => "NoReboot",
        }
    }
}

/// Where an instance is in a run. `Pending`, `Claimed` and `InFlight` are the live states;
/// everything else is a final outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Online and managed; waiting for a slot in the window.
    Pending,
    /// Claimed by a dispatch batch; SendCommand may or may not have happened yet.
    Claimed,
    /// A command was sent and has not reached a terminal status.
    InFlight,
    /// The command succeeded.
    Succeeded,
    /// The command failed (counts against the error threshold).
    Failed,
    /// The document ran past its execution timeout (counts against the error threshold).
    ExecutionTimedOut,
    /// The agent did not pick the command up before the delivery timeout (not counted).
    DeliveryTimedOut,
    /// SSM could not deliver the command (not counted).
    Undeliverable,
    /// The document does not support the instance's platform (not counted).
    InvalidPlatform,
    /// The instance profile or role refused the command (not counted).
    AccessDenied,
    /// The command was cancelled.
    Cancelled,
    /// SSM stopped the invocation because the command passed its error threshold.
    Terminated,
    /// Known to SSM but not connected (ConnectionLost / Inactive): never sent a command.
    Offline,
    /// In the group but unknown to SSM (stopped, or no agent): never sent a command.
    Unmanaged,
    /// Never started because the location's error threshold was passed or the run stopped.
    NotStarted,
}

impl InstanceState {
    /// Whether the state is final.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            InstanceState::Pending | InstanceState::Claimed | InstanceState::InFlight
        )
    }

    /// Whether the state occupies a slot of the concurrency window.
    pub fn in_flight(self) -> bool {
        matches!(self, InstanceState::Claimed | InstanceState::InFlight)
    }

    /// Whether SSM counts this outcome against `MaxErrors` (Failed, Execution Timed Out).
    pub fn counts_as_error(self) -> bool {
        matches!(
            self,
            InstanceState::Failed | InstanceState::ExecutionTimedOut
        )
    }

    /// Whether a command was actually sent to the instance.
    pub fn was_sent(self) -> bool {
        !matches!(
            self,
            InstanceState::Pending
                | InstanceState::Claimed
                | InstanceState::Offline
                | InstanceState::Unmanaged
                | InstanceState::NotStarted
        )
    }

    /// All states, for reports that list every count.
    pub const ALL: [InstanceState; 15] = [
        InstanceState::Pending,
        InstanceState::Claimed,
        InstanceState::InFlight,
        InstanceState::Succeeded,
        InstanceState::Failed,
        InstanceState::ExecutionTimedOut,
        InstanceState::DeliveryTimedOut,
        InstanceState::Undeliverable,
        InstanceState::InvalidPlatform,
        InstanceState::AccessDenied,
        InstanceState::Cancelled,
        InstanceState::Terminated,
        InstanceState::Offline,
        InstanceState::Unmanaged,
        InstanceState::NotStarted,
    ];

    /// The stable name stored in DynamoDB and shown in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "Pending",
            InstanceState::Claimed => "Claimed",
            InstanceState::InFlight => "InFlight",
            InstanceState::Succeeded => "Succeeded",
            InstanceState::Failed => "Failed",
            InstanceState::ExecutionTimedOut => "ExecutionTimedOut",
            InstanceState::DeliveryTimedOut => "DeliveryTimedOut",
            InstanceState::Undeliverable => "Undeliverable",
            InstanceState::InvalidPlatform => "InvalidPlatform",
            InstanceState::AccessDenied => "AccessDenied",
            InstanceState::Cancelled => "Cancelled",
            InstanceState::Terminated => "Terminated",
            InstanceState::Offline => "Offline",
            InstanceState::Unmanaged => "Unmanaged",
            InstanceState::NotStarted => "NotStarted",
        }
    }
}

impl FromStr for InstanceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstanceState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown instance state {s:?}"))
    }
}

/// Maps an invocation's `Status` and `StatusDetails` (as SSM reports them) to fleetpatch's
/// state. `StatusDetails` is the finer field and wins where it is known; `Status` decides
/// otherwise. Anything not terminal is `InFlight`.
pub fn map_invocation_status(status: &str, details: &str) -> InstanceState {
    match details {
        "Success" => return InstanceState::Succeeded,
        "Failed" => return InstanceState::Failed,
        "Execution Timed Out" => return InstanceState::ExecutionTimedOut,
        "Delivery Timed Out" => return InstanceState::DeliveryTimedOut,
        "Undeliverable" => return InstanceState::Undeliverable,
        "Invalid Platform" => return InstanceState::InvalidPlatform,
        "Access Denied" => return InstanceState::AccessDenied,
        "Cancelled" => return InstanceState::Cancelled,
        "Terminated" => return InstanceState::Terminated,
        _ => {}
    }
    match status {
        "Success" => InstanceState::Succeeded,
        "Failed" => InstanceState::Failed,
        // A TimedOut status without details: the safer reading is an execution timeout,
        // which counts as an error.
        "TimedOut" => InstanceState::ExecutionTimedOut,
        "Cancelled" => InstanceState::Cancelled,
        // Pending, InProgress, Delayed, Cancelling and anything new.
        _ => InstanceState::InFlight,
    }
}

/// How a location ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LocationOutcome {
    /// Every instance that was sent a command succeeded.
    Succeeded,
    /// The group had no instance fleetpatch could send a command to.
    NoTargets,
    /// No counted error, but some commands were not delivered (delivery timeout, access
    /// denied on the node, invalid platform, cancelled).
    Incomplete,
    /// Some instances failed (Failed, Execution Timed Out), but no more than the instance
    /// error threshold tolerates: the location did what it was allowed to do.
    CompletedWithErrors,
    /// The instance error threshold was passed: nothing new started after it.
    ThresholdExceeded,
    /// The execution role could not be assumed in the account.
    AccessDenied,
    /// The resource group does not exist in the account and Region.
    GroupNotFound,
    /// The location's error threshold (or a stop) came first: the account was not called.
    Skipped,
    /// An unexpected error ended the location (caught by the state machine).
    Error,
}

impl LocationOutcome {
    /// Whether the outcome counts against the location error threshold: the location could
    /// not run, or its instance errors passed `targetErrorThreshold`. Instance errors within
    /// that tolerance do not fail the location: the inner threshold is the user's own
    /// statement of what a location may tolerate.
    pub fn counts_as_failure(self) -> bool {
        matches!(
            self,
            LocationOutcome::ThresholdExceeded
                | LocationOutcome::AccessDenied
                | LocationOutcome::GroupNotFound
                | LocationOutcome::Error
        )
    }

    /// All outcomes, for reports.
    pub const ALL: [LocationOutcome; 9] = [
        LocationOutcome::Succeeded,
        LocationOutcome::NoTargets,
        LocationOutcome::Incomplete,
        LocationOutcome::CompletedWithErrors,
        LocationOutcome::ThresholdExceeded,
        LocationOutcome::AccessDenied,
        LocationOutcome::GroupNotFound,
        LocationOutcome::Skipped,
        LocationOutcome::Error,
    ];

    /// The stable name stored in DynamoDB.
    pub fn as_str(self) -> &'static str {
        match self {
            LocationOutcome::Succeeded => "Succeeded",
            LocationOutcome::NoTargets => "NoTargets",
            LocationOutcome::Incomplete => "Incomplete",
            LocationOutcome::CompletedWithErrors => "CompletedWithErrors",
            LocationOutcome::ThresholdExceeded => "ThresholdExceeded",
            LocationOutcome::AccessDenied => "AccessDenied",
            LocationOutcome::GroupNotFound => "GroupNotFound",
            LocationOutcome::Skipped => "Skipped",
            LocationOutcome::Error => "Error",
        }
    }
}

impl FromStr for LocationOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LocationOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown location outcome {s:?}"))
    }
}

/// The outcome of a location whose instances all reached a final state.
pub fn location_outcome_from_instances(
    states: impl IntoIterator<Item = InstanceState>,
    threshold_passed: bool,
) -> LocationOutcome {
    let mut sent = 0u64;
    let mut errors = 0u64;
    let mut not_succeeded = 0u64;
    for s in states {
        if s.was_sent() {
            sent += 1;
            if s.counts_as_error() {
                errors += 1;
            } else if s != InstanceState::Succeeded {
                not_succeeded += 1;
            }
        }
    }
    if threshold_passed {
        LocationOutcome::ThresholdExceeded
    } else if errors > 0 {
        LocationOutcome::CompletedWithErrors
    } else if sent == 0 {
        LocationOutcome::NoTargets
    } else if not_succeeded > 0 {
        LocationOutcome::Incomplete
    } else {
        LocationOutcome::Succeeded
    }
}

/// The status of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Locations are being worked on.
    Running,
    /// The location error threshold was passed: locations not yet started are skipped.
    Stopping,
    /// Every location succeeded (or had nothing to patch).
    Succeeded,
    /// The run finished, but some locations or instances did not succeed.
    CompletedWithErrors,
    /// The location error threshold stopped the run.
    StoppedByThreshold,
    /// The input was invalid; nothing was dispatched.
    Rejected,
}

impl RunStatus {
    /// The stable name stored in DynamoDB and sent in events.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "Running",
            RunStatus::Stopping => "Stopping",
            RunStatus::Succeeded => "Succeeded",
            RunStatus::CompletedWithErrors => "CompletedWithErrors",
            RunStatus::StoppedByThreshold => "StoppedByThreshold",
            RunStatus::Rejected => "Rejected",
        }
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RunStatus::Running,
            RunStatus::Stopping,
            RunStatus::Succeeded,
            RunStatus::CompletedWithErrors,
            RunStatus::StoppedByThreshold,
            RunStatus::Rejected,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

/// `s` cut to at most `max` bytes on a character boundary, and how many bytes were cut.
pub fn cut_text(s: &str, max: usize) -> (String, usize) {
    if s.len() <= max {
        return (s.to_string(), 0);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), s.len() - end)
}

/// The first `max` entries of `all`, and how many were left out.
pub fn first<T>(mut all: Vec<T>, max: usize) -> (Vec<T>, u64) {
    let omitted = all.len().saturating_sub(max) as u64;
    all.truncate(max);
    (all, omitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_terminal_invocation_status_is_mapped() {
        let cases = [
            ("Success", "Success", InstanceState::Succeeded),
            ("Failed", "Failed", InstanceState::Failed),
            (
                "TimedOut",
                "Execution Timed Out",
                InstanceState::ExecutionTimedOut,
            ),
            (
                "TimedOut",
                "Delivery Timed Out",
                InstanceState::DeliveryTimedOut,
            ),
            ("Failed", "Undeliverable", InstanceState::Undeliverable),
            ("Failed", "Invalid Platform", InstanceState::InvalidPlatform),
            ("Failed", "Access Denied", InstanceState::AccessDenied),
            ("Cancelled", "Cancelled", InstanceState::Cancelled),
            ("Cancelled", "Terminated", InstanceState::Terminated),
            ("Pending", "Pending", InstanceState::InFlight),
            ("InProgress", "In Progress", InstanceState::InFlight),
            ("Delayed", "Delayed", InstanceState::InFlight),
            ("Cancelling", "Cancelling", InstanceState::InFlight),
            ("TimedOut", "", InstanceState::ExecutionTimedOut),
        ];
        for (status, details, want) in cases {
            assert_eq!(
                map_invocation_status(status, details),
                want,
                "{status}/{details}"
            );
        }
    }

    #[test]
    fn only_failed_and_execution_timeout_count_as_errors() {
        let counted: Vec<_> = InstanceState::ALL
            .into_iter()
            .filter(|s| s.counts_as_error())
            .collect();
        assert_eq!(
            counted,
            vec![InstanceState::Failed, InstanceState::ExecutionTimedOut]
        );
    }

    #[test]
    fn names_round_trip() {
        for s in InstanceState::ALL {
            assert_eq!(s.as_str().parse::<InstanceState>(), Ok(s));
        }
        for o in LocationOutcome::ALL {
            assert_eq!(o.as_str().parse::<LocationOutcome>(), Ok(o));
        }
        assert_eq!("Rejected".parse::<RunStatus>(), Ok(RunStatus::Rejected));
        assert!("bogus".parse::<RunStatus>().is_err());
    }

    #[test]
    fn location_outcome_follows_its_instances() {
        use InstanceState::*;
        assert_eq!(
            location_outcome_from_instances([Succeeded, Offline, Unmanaged], false),
            LocationOutcome::Succeeded
        );
        assert_eq!(
            location_outcome_from_instances([Succeeded, DeliveryTimedOut], false),
            LocationOutcome::Incomplete
        );
        assert_eq!(
            location_outcome_from_instances([Succeeded, Failed], false),
            LocationOutcome::CompletedWithErrors
        );
        assert_eq!(
            location_outcome_from_instances([Offline, Unmanaged], false),
            LocationOutcome::NoTargets
        );
        assert_eq!(
            location_outcome_from_instances([Failed, NotStarted], true),
            LocationOutcome::ThresholdExceeded
        );
        assert!(LocationOutcome::AccessDenied.counts_as_failure());
        assert!(LocationOutcome::ThresholdExceeded.counts_as_failure());
        assert!(!LocationOutcome::CompletedWithErrors.counts_as_failure());
        assert!(!LocationOutcome::Incomplete.counts_as_failure());
        assert!(!LocationOutcome::Skipped.counts_as_failure());
    }

    #[test]
    fn location_compact_form_round_trips() {
        let l = Location::new("123456789012", "eu-west-1");
        assert_eq!(l.to_string(), "123456789012/eu-west-1");
        assert_eq!("123456789012/eu-west-1".parse::<Location>(), Ok(l));
        assert!("12345/eu-west-1".parse::<Location>().is_err());
        assert!("123456789012".parse::<Location>().is_err());
    }
}
