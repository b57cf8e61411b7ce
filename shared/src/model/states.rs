//! The states of an instance, a location and a run, with their stable names (stored in
//! DynamoDB, sent in events: never rename one), and the mapping from SSM's invocation
//! statuses to fleetpatch's.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

/// Where an instance is in a run. `Pending`, `Claimed` and `InFlight` are the live states;
/// everything else is a final outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

/// Instances per state. Serialized as an object keyed by the states' stored names, so an
/// unknown name read back is an error, never a silent zero.
pub type Counts = BTreeMap<InstanceState, u64>;

/// Counts instances per state.
pub fn count_states(states: impl IntoIterator<Item = InstanceState>) -> Counts {
    let mut counts = Counts::new();
    for s in states {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts
}

/// How many of `counts` are in a state for which `pred` holds.
pub fn count_where(counts: &Counts, pred: impl Fn(InstanceState) -> bool) -> u64 {
    counts
        .iter()
        .filter(|(s, _)| pred(**s))
        .map(|(_, n)| n)
        .sum()
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// The run was halted while the location ran (the maintenance window closed, or an alarm
    /// went into ALARM): nothing new started, commands in flight finished.
    Stopped,
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
    pub const ALL: [LocationOutcome; 10] = [
        LocationOutcome::Succeeded,
        LocationOutcome::NoTargets,
        LocationOutcome::Incomplete,
        LocationOutcome::CompletedWithErrors,
        LocationOutcome::ThresholdExceeded,
        LocationOutcome::AccessDenied,
        LocationOutcome::GroupNotFound,
        LocationOutcome::Skipped,
        LocationOutcome::Stopped,
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
            LocationOutcome::Stopped => "Stopped",
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
    /// An alarm of `stopOnAlarms` went into ALARM: nothing new started after it.
    StoppedByAlarm,
    /// The maintenance window (`notAfter`) closed before everything had started.
    StoppedByWindow,
    /// A wave failed its gate (its failed locations passed its `locationErrorThreshold`):
    /// no later wave started.
    StoppedByGate,
    /// The input was invalid; nothing was dispatched.
    Rejected,
    /// An operator stopped the run (`fleetpatch stop`): nothing new starts, commands in
    /// flight run to their end, pending instances end NotStarted.
    Cancelling,
    /// The run was stopped by an operator and has settled.
    Cancelled,
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
            RunStatus::StoppedByAlarm => "StoppedByAlarm",
            RunStatus::StoppedByWindow => "StoppedByWindow",
            RunStatus::StoppedByGate => "StoppedByGate",
            RunStatus::Rejected => "Rejected",
            RunStatus::Cancelling => "Cancelling",
            RunStatus::Cancelled => "Cancelled",
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
            RunStatus::StoppedByAlarm,
            RunStatus::StoppedByWindow,
            RunStatus::StoppedByGate,
            RunStatus::Rejected,
            RunStatus::Cancelling,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

/// Where a location is in its run: Pending (planned) -> Dispatching (expanded; commands being
/// sent and followed) -> Done (outcome recorded, counted once on the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Dispatching,
    Done,
}

/// Where a SendCommand batch is: Claimed (its instances are held; the send may or may not
/// have happened) -> Sent (a command ID is recorded) or Released (no command: its instances
/// went back, or ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchState {
    Claimed,
    Sent,
    Released,
}

/// Stable names for the enums stored in the table: `as_str` writes them, `FromStr` reads them
/// back and refuses any other value.
macro_rules! stored_names {
    ($t:ty, $what:literal, [$($v:ident),+ $(,)?]) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => stringify!($v)),+ }
            }
        }

        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $(stringify!($v) => Ok(Self::$v),)+
                    _ => Err(format!("unknown {} {s:?}", $what)),
                }
            }
        }
    };
}

/// Where a wave is: Pending (planned) -> [AwaitingApproval] -> Running (its locations
/// started) -> Passed or GateFailed (settled; the gate decided); or Skipped (never started:
/// an earlier wave failed its gate, the run was halted or stopped) or Rejected (its
/// approval was refused or timed out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaveStatus {
    Pending,
    AwaitingApproval,
    Running,
    Passed,
    GateFailed,
    Skipped,
    Rejected,
}

stored_names!(Phase, "location phase", [Pending, Dispatching, Done]);
stored_names!(
    WaveStatus,
    "wave status",
    [
        Pending,
        AwaitingApproval,
        Running,
        Passed,
        GateFailed,
        Skipped,
        Rejected
    ]
);
stored_names!(BatchState, "batch state", [Claimed, Sent, Released]);

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
}
