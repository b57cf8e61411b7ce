//! What a run records: one run record, one record per location, one per instance and one
//! per SendCommand batch. The store maps each to its DynamoDB item (`store::items`); the
//! handlers read and decide with these types only.

use super::{
    BatchState, Counts, InstanceState, Location, LocationOutcome, Phase, RunStatus, WaveStatus,
};
use crate::input::RunInput;
use serde::{Deserialize, Serialize};

/// At most this many skipped accounts are listed on the run item, in its summary and in the
/// events; the others are only counted (`skippedAccountsOmitted`). With the longest input,
/// 9,000 targeted accounts and 100 problem locations, the run item stays under DynamoDB's
/// 400 KB (`report`'s tests build that run and measure it).
pub const MAX_LISTED_SKIPPED_ACCOUNTS: usize = 200;

/// An account that a run's OU targets contained but that was not targeted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedAccount {
    pub account: String,
    /// Why: `SUSPENDED`, `PENDING_CLOSURE`, `excluded`.
    pub reason: String,
}

/// The run: its input, its targets, and the counters every location adds to.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The Step Functions execution name.
    pub run_id: String,
    pub status: RunStatus,
    /// The validated input, with the run's snapshot ID filled in.
    pub input: RunInput,
    /// Accounts targeted after OU resolution and excludes.
    pub accounts: Vec<String>,
    /// At most [`MAX_LISTED_SKIPPED_ACCOUNTS`]; the others are only counted.
    pub skipped_accounts: Vec<SkippedAccount>,
    pub skipped_accounts_omitted: u64,
    pub location_count: u64,
    /// Locations running at once (`locationConcurrency` as a number).
    pub location_window: u64,
    /// Failed locations tolerated (`locationErrorThreshold` as a number); None never stops.
    pub locations_tolerated: Option<u64>,
    /// Settled locations, counted atomically by settle.
    pub locations_done: u64,
    /// Settled locations whose outcome counts as a failure.
    pub locations_failed: u64,
    /// Instances sent a command, counted in the same transaction that records the send.
    pub instances_sent: u64,
    /// Instances that reached a final state, counted in the transaction that records it.
    pub instances_done: u64,
    /// Epoch seconds.
    pub created_at: i64,
    /// Why nothing new starts any more (window closed, alarm), recorded once.
    pub halt: Option<Halt>,
    /// When `stopOnAlarms` was last read (epoch ms): one read serves every location for
    /// [`crate::run::ALARM_READ_INTERVAL_MS`].
    pub alarms_read_at_ms: Option<i64>,
}

impl RunRecord {
    /// A run as plan first records it: `Running`, nothing targeted, counted or halted yet.
    /// Plan and tests fill in what they know with struct-update syntax.
    pub fn started(run_id: &str, input: RunInput, created_at: i64) -> Self {
        Self {
            run_id: run_id.to_string(),
            status: RunStatus::Running,
            input,
            accounts: vec![],
            skipped_accounts: vec![],
            skipped_accounts_omitted: 0,
            location_count: 0,
            location_window: 1,
            locations_tolerated: None,
            locations_done: 0,
            locations_failed: 0,
            instances_sent: 0,
            instances_done: 0,
            created_at,
            halt: None,
            alarms_read_at_ms: None,
        }
    }
}

/// Why a run starts nothing new any more, besides its location error threshold. Recorded
/// once on the run item (the first wins); stored as JSON, so the names are a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Halt {
    /// `notAfter` passed.
    #[serde(rename_all = "camelCase")]
    WindowClosed { not_after: String },
    /// An alarm of `stopOnAlarms` was seen in ALARM.
    #[serde(rename_all = "camelCase")]
    Alarm { alarm: String },
}

/// One wave of a run: which locations it holds, and how it went. A run without `waves` has
/// one wave over all its locations. Stored as JSON on the wave item (see `store::waves`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveRecord {
    /// Its place in the run, from 0.
    pub index: u32,
    pub name: String,
    pub status: WaveStatus,
    /// The accounts of this wave after OU resolution, excludes and earlier waves.
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
    pub location_count: u64,
    /// Locations this wave named that an earlier wave already held (found after OU
    /// resolution): they run in the earlier wave.
    pub overlaps: u64,
    /// Locations running at once (the wave's `locationConcurrency` as a number).
    pub location_window: u64,
    /// Failed locations the gate tolerates; None never fails it.
    pub locations_tolerated: Option<u64>,
    pub soak_seconds: u64,
    pub approval: bool,
    pub approval_timeout_seconds: u64,
    /// Epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateResult>,
    /// Why the wave was skipped or rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_decision: Option<ApprovalDecision>,
}

/// The gate of a settled wave: its failed locations against what it tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    pub passed: bool,
    pub locations_failed: u64,
    pub locations_tolerated: Option<u64>,
}

/// Who decided a wave's approval, when and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalDecision {
    pub approved: bool,
    /// The caller's ARN (STS GetCallerIdentity), or `timeout`.
    pub by: String,
    /// Epoch seconds.
    pub at: i64,
    /// `cli`, `console` (SendTaskSuccess from anywhere else) or `timeout`.
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One location (account x Region) of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationRecord {
    pub location: Location,
    /// The wave it belongs to (0 in a run without waves).
    pub wave: u32,
    pub phase: Phase,
    /// Set once, when the location is settled.
    pub outcome: Option<LocationOutcome>,
    /// Why the outcome (error message, skip reason).
    pub reason: Option<String>,
    /// Instances found in the group.
    pub targeted: u64,
    /// Instances online and managed: the base of the window and of the tolerated errors.
    pub dispatchable: u64,
    /// Instances in flight at most (`targetConcurrency` as a number).
    pub window: u64,
    /// Counted instance errors tolerated (`targetErrorThreshold` as a number); None never stops.
    pub tolerated: Option<u64>,
    /// Counted instance errors (Failed, Execution Timed Out) as last written.
    pub errors: u64,
    /// Whether the instance error threshold was passed: nothing new starts.
    pub stopping: bool,
    /// Instances per state, as the last dispatch round (or aggregate) saw them.
    pub counts: Counts,
    /// Compliance totals, written by aggregate.
    pub compliance: Option<Compliance>,
    /// When the last dispatch round that wrote progress started (epoch ms).
    pub progress_from_ms: Option<i64>,
    /// The shortest claim-to-end time observed in the location, a lower bound in seconds
    /// (see `poll::shortest_observed`).
    pub shortest_run_seconds: Option<u64>,
    /// How far expansion got; None before its first page is recorded.
    pub expand_cursor: Option<ExpandCursor>,
}

/// How far a location's expansion got: the resource group's pages recorded so far, and
/// the token of the next page to list (None once the last page is recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandCursor {
    pub pages: u64,
    pub next_token: Option<String>,
}

impl LocationRecord {
    /// A location as plan records it: Pending, nothing known yet.
    pub fn pending(location: Location) -> Self {
        LocationRecord {
            location,
            wave: 0,
            phase: Phase::Pending,
            outcome: None,
            reason: None,
            targeted: 0,
            dispatchable: 0,
            window: 1,
            tolerated: None,
            errors: 0,
            stopping: false,
            counts: Counts::new(),
            compliance: None,
            progress_from_ms: None,
            shortest_run_seconds: None,
            expand_cursor: None,
        }
    }
}

/// What expansion found in a location: written once, when the location starts dispatching.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    pub targeted: u64,
    pub dispatchable: u64,
    pub window: u64,
    pub tolerated: Option<u64>,
    pub counts: Counts,
}

/// One instance of a location.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// `i-...` (EC2) or `mi-...` (hybrid).
    pub instance_id: String,
    pub state: InstanceState,
    /// SSM's PingStatus at expansion.
    pub ping_status: Option<String>,
    /// SSM's PlatformType at expansion.
    pub platform: Option<String>,
    /// Sequence number of the batch that claimed it.
    pub batch: Option<u64>,
    pub command_id: Option<String>,
    /// The invocation's `Status`, as SSM last reported it.
    pub ssm_status: Option<String>,
    /// The invocation's `StatusDetails`, or fleetpatch's reason for a state it set itself.
    pub status_details: Option<String>,
}

impl InstanceRecord {
    pub fn new(id: &str, state: InstanceState) -> Self {
        InstanceRecord {
            instance_id: id.to_string(),
            state,
            ping_status: None,
            platform: None,
            batch: None,
            command_id: None,
            ssm_status: None,
            status_details: None,
        }
    }
}

/// One instance as a run's ledger shows it (`fleetpatch report --instances`): its record,
/// when its command was sent and when it reached its final state (ISO 8601, as stored), and
/// its compliance after the run.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub record: InstanceRecord,
    pub sent_at: Option<String>,
    pub ended_at: Option<String>,
    pub compliance: Option<Compliance>,
}

/// One instance's move as a handler decided it: `record` holds the new state and SSM's
/// status; it is written only if the instance is still in `from`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMove {
    pub record: InstanceRecord,
    pub from: InstanceState,
}

impl InstanceMove {
    /// A Pending instance that will never start, and why.
    pub fn not_started(id: &str, why: &str) -> Self {
        let mut record = InstanceRecord::new(id, InstanceState::NotStarted);
        record.status_details = Some(why.to_string());
        InstanceMove {
            record,
            from: InstanceState::Pending,
        }
    }
}

/// A SendCommand batch: the claim, written before the send, that makes dispatch idempotent.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// Sequence number within the location (from the location's atomic counter).
    pub seq: u64,
    /// At most 50 (SendCommand's limit per call, see `fleet::SEND_CHUNK`).
    pub instance_ids: Vec<String>,
    /// The command's Comment: finds the command again with ListCommands.
    pub comment: String,
    /// Epoch seconds.
    pub claimed_at: i64,
    pub state: BatchState,
    pub command_id: Option<String>,
}

/// Patch compliance counts (DescribeInstancePatchStates), summed over instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Compliance {
    /// Instances with a patch state.
    pub instances: u64,
    /// Instances with nothing missing, failed or pending reboot.
    pub compliant_instances: u64,
    pub installed: u64,
    pub installed_other: u64,
    pub installed_pending_reboot: u64,
    pub missing: u64,
    pub failed: u64,
    pub not_applicable: u64,
}

impl Compliance {
    pub fn add(&mut self, other: &Compliance) {
        self.instances += other.instances;
        self.compliant_instances += other.compliant_instances;
        self.installed += other.installed;
        self.installed_other += other.installed_other;
        self.installed_pending_reboot += other.installed_pending_reboot;
        self.missing += other.missing;
        self.failed += other.failed;
        self.not_applicable += other.not_applicable;
    }
}

/// The result of recording a location's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// False when the location had already been settled (a retry): nothing was counted.
    pub first_time: bool,
    /// The run's counters after this location.
    pub locations_failed: u64,
    pub locations_done: u64,
}
