//! The DynamoDB adapter: the only module that knows item shapes. One table, keys `PK`/`SK`:
//!
//! | item      | PK                              | SK                     |
//! |-----------|---------------------------------|------------------------|
//! | run       | `RUN#<runId>`                   | `RUN`                  |
//! | location  | `RUN#<runId>`                   | `LOC#<account>#<region>` |
//! | instance  | `LOC#<runId>#<account>#<region>` | `INST#<instanceId>`   |
//! | batch     | `LOC#<runId>#<account>#<region>` | `BATCH#<seq, 6 digits>` |
//!
//! A run's locations share the run's partition (one Query lists them); each location's
//! instances and SendCommand batches live in a partition of their own, so a large run spreads
//! its writes. Every item carries `expiresAt` (epoch seconds, the table's TTL attribute).
//! See `docs/table.md` for every attribute.

use crate::error::{from_sdk, Error, Result};
use crate::input::RunInput;
use crate::model::{cut_text, first, InstanceState, Location, LocationOutcome, RunStatus};
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's largest item: 400 KB, attribute names and values together.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// At most this many skipped accounts are listed on the run item, in its summary and in the
/// events; the others are only counted (`skippedAccountsOmitted`). With the longest input,
/// 9,000 targeted accounts and 100 problem locations, the run item stays under
/// [`MAX_ITEM_BYTES`] (a test builds that run and measures it).
pub const MAX_LISTED_SKIPPED_ACCOUNTS: usize = 200;
/// A rejected run keeps at most this much of its raw input (`rawInputOmittedBytes` says how
/// much was cut; Step Functions accepts inputs up to 256 KiB).
pub const MAX_RAW_INPUT_BYTES: usize = 64 * 1024;
/// A rejected run lists at most this many reasons (`rejectReasonsOmitted` counts the others).
pub const MAX_LISTED_REASONS: usize = 100;

/// An item's size as DynamoDB counts it: every attribute name and value, in UTF-8 bytes
/// (numbers and list/map overheads rounded up).
pub fn item_size(item: &Item) -> usize {
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::Ss(l) | AttributeValue::Ns(l) => l.iter().map(String::len).sum(),
            AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<usize>(),
            AttributeValue::M(m) => {
                3 + m.iter().map(|(k, v)| 1 + k.len() + value(v)).sum::<usize>()
            }
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// Milliseconds since the epoch.
pub fn now_epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds since the epoch.
pub fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An ISO 8601 UTC timestamp for `epoch`.
pub fn iso(epoch: i64) -> String {
    aws_smithy_types::DateTime::from_secs(epoch)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// Partition key of a run.
pub fn run_pk(run_id: &str) -> String {
    format!("RUN#{run_id}")
}
/// Sort key of a run's own item.
pub const RUN_SK: &str = "RUN";
/// Sort key of a location item.
pub fn location_sk(l: &Location) -> String {
    format!("LOC#{}#{}", l.account, l.region)
}
/// Partition key of a location's instances and batches.
pub fn location_pk(run_id: &str, l: &Location) -> String {
    format!("LOC#{run_id}#{}#{}", l.account, l.region)
}
fn instance_sk(id: &str) -> String {
    format!("INST#{id}")
}
fn batch_sk(seq: u64) -> String {
    format!("BATCH#{seq:06}")
}

/// An account that a run's OU targets contained but that was not targeted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedAccount {
    /// The account ID.
    pub account: String,
    /// Why: `SUSPENDED`, `excluded`.
    pub reason: String,
}

/// The run item.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The run ID (the execution name).
    pub run_id: String,
    /// Current status.
    pub status: RunStatus,
    /// The validated input, with the run's snapshot ID filled in.
    pub input: RunInput,
    /// Accounts targeted after OU resolution and excludes.
    pub accounts: Vec<String>,
    /// Accounts left out, with the reason (at most [`MAX_LISTED_SKIPPED_ACCOUNTS`]).
    pub skipped_accounts: Vec<SkippedAccount>,
    /// Skipped accounts not listed.
    pub skipped_accounts_omitted: u64,
    /// Number of locations.
    pub location_count: u64,
    /// Locations running at once.
    pub location_window: u64,
    /// Failed locations tolerated (None: never stop).
    pub locations_tolerated: Option<u64>,
    /// Locations settled so far (atomic counter).
    pub locations_done: u64,
    /// Locations that failed so far (atomic counter).
    pub locations_failed: u64,
    /// When the run was planned (epoch seconds).
    pub created_at: i64,
}

/// Phases of a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Planned, not started.
    Pending,
    /// Instances listed; commands being sent and followed.
    Dispatching,
    /// Outcome recorded.
    Done,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Dispatching => "Dispatching",
            Phase::Done => "Done",
        }
    }
    fn parse(s: &str) -> Phase {
        match s {
            "Dispatching" => Phase::Dispatching,
            "Done" => Phase::Done,
            _ => Phase::Pending,
        }
    }
}

/// The location item.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LocationRecord {
    /// Where.
    pub location: Option<Location>,
    /// Phase.
    pub phase: Option<Phase>,
    /// Final outcome, once settled.
    pub outcome: Option<LocationOutcome>,
    /// Why the outcome (error message, skip reason).
    pub reason: Option<String>,
    /// Instances found in the group.
    pub targeted: u64,
    /// Instances online and managed.
    pub dispatchable: u64,
    /// Instances in flight at most (the window).
    pub window: u64,
    /// Instance errors tolerated (None: never stop).
    pub tolerated: Option<u64>,
    /// Counted instance errors so far.
    pub errors: u64,
    /// Whether the instance error threshold was passed.
    pub stopping: bool,
    /// Instances per state, as last written.
    pub counts: BTreeMap<String, u64>,
    /// Compliance totals, written by aggregate.
    pub compliance: Option<Compliance>,
}

/// An instance item.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// `i-...` or `mi-...`.
    pub instance_id: String,
    /// Where it stands.
    pub state: InstanceState,
    /// SSM's PingStatus at expansion.
    pub ping_status: Option<String>,
    /// Platform type at expansion.
    pub platform: Option<String>,
    /// Batch that claimed it.
    pub batch: Option<u64>,
    /// Command sent to it.
    pub command_id: Option<String>,
    /// SSM invocation status.
    pub ssm_status: Option<String>,
    /// SSM invocation status details.
    pub status_details: Option<String>,
}

impl InstanceRecord {
    /// A fresh record in `state`.
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

/// One instance's move as a handler decided it: `record` holds the new state and SSM's
/// status; it is written only if the instance is still in `from`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMove {
    /// The instance's new record (state, SSM status and details).
    pub record: InstanceRecord,
    /// The state it must still be in.
    pub from: InstanceState,
}

/// TransactWriteItems takes at most 100 items.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// State of a SendCommand batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Instances claimed; the send may or may not have happened.
    Claimed,
    /// SendCommand answered with a command ID.
    Sent,
    /// The send was refused; the instances went back to Pending.
    Released,
}

/// A SendCommand batch item: the claim that makes dispatch idempotent.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// Sequence number within the location.
    pub seq: u64,
    /// Instances in the batch (at most 50).
    pub instance_ids: Vec<String>,
    /// The command's Comment (finds the command again with ListCommands).
    pub comment: String,
    /// When the claim was written (epoch seconds).
    pub claimed_at: i64,
    /// State.
    pub state: BatchState,
    /// Command ID once known.
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
    /// InstalledCount.
    pub installed: u64,
    /// InstalledOtherCount.
    pub installed_other: u64,
    /// InstalledPendingRebootCount.
    pub installed_pending_reboot: u64,
    /// MissingCount.
    pub missing: u64,
    /// FailedCount.
    pub failed: u64,
    /// NotApplicableCount.
    pub not_applicable: u64,
}

impl Compliance {
    /// Adds `other` into `self`.
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

/// Result of recording a location's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// False when the location had already been settled (a retry): nothing was counted.
    pub first_time: bool,
    /// Failed locations after this one.
    pub locations_failed: u64,
    /// Settled locations after this one.
    pub locations_done: u64,
}

/// The DynamoDB store.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    table: String,
    ttl: Duration,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}
fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}
fn get_bool(item: &Item, k: &str) -> bool {
    item.get(k)
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false)
}
fn get_json<T: for<'de> Deserialize<'de>>(item: &Item, k: &str) -> Result<T> {
    let raw = get_s(item, k).ok_or_else(|| Error::Record(format!("attribute {k} missing")))?;
    serde_json::from_str(&raw).map_err(|e| Error::Record(format!("attribute {k}: {e}")))
}
fn json<T: Serialize>(v: &T) -> Result<AttributeValue> {
    serde_json::to_string(v)
        .map(AttributeValue::S)
        .map_err(|e| Error::Record(e.to_string()))
}
fn build_err(e: impl std::fmt::Display) -> Error {
    Error::Record(format!("building a DynamoDB request: {e}"))
}

fn put_condition_failed(e: &aws_sdk_dynamodb::operation::put_item::PutItemError) -> bool {
    e.is_conditional_check_failed_exception()
}

fn update_condition_failed(e: &aws_sdk_dynamodb::operation::update_item::UpdateItemError) -> bool {
    e.is_conditional_check_failed_exception()
}

/// A transaction cancelled because one of its conditions failed (not a conflict or a throttle).
fn transaction_condition_failed(
    e: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match e {
        E::TransactionCanceledException(c) => {
            c.cancellation_reasons()
                .iter()
                .any(|r| r.code() == Some("ConditionalCheckFailed"))
                || c.message()
                    .unwrap_or_default()
                    .contains("ConditionalCheckFailed")
        }
        _ => false,
    }
}

/// Which items of a cancelled transaction failed their condition, when the service says
/// (one flag per item, in order); None when it does not say, or names none.
fn failed_conditions(
    e: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
) -> Option<Vec<bool>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    let E::TransactionCanceledException(c) = e else {
        return None;
    };
    let flags: Vec<bool> = c
        .cancellation_reasons()
        .iter()
        .map(|r| r.code() == Some("ConditionalCheckFailed"))
        .collect();
    flags.iter().any(|f| *f).then_some(flags)
}

/// How a transaction ended, short of an error.
enum Transacted {
    Done,
    /// Cancelled by failed conditions: per-item flags when the service named them.
    ConditionsFailed(Option<Vec<bool>>),
}

/// Cancellation reasons that mean "try again": another transaction holds one of the items,
/// or the table's throughput was exceeded. Retried like throttling, never an error.
const RETRYABLE_CANCELLATIONS: [&str; 3] = [
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// Attempts of a transaction cancelled for a retryable reason, before the handler fails
/// with `Transient` (and the state machine retries the whole step).
const TRANSACT_ATTEMPTS: u32 = 4;

/// A transaction cancelled only for reasons worth retrying (no failed condition).
fn transaction_retryable(
    e: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match e {
        E::TransactionCanceledException(c) => {
            !transaction_condition_failed(e)
                && (c.cancellation_reasons().iter().any(|r| {
                    r.code()
                        .is_some_and(|code| RETRYABLE_CANCELLATIONS.contains(&code))
                }) || RETRYABLE_CANCELLATIONS
                    .iter()
                    .any(|code| c.message().unwrap_or_default().contains(code)))
        }
        E::TransactionInProgressException(_) => true,
        _ => false,
    }
}

/// Exponential backoff with jitter before transaction attempt `attempt + 1`: 25-50 ms,
/// 50-100 ms, 100-200 ms.
fn transact_backoff(attempt: u32) -> Duration {
    let base = 25u64 << attempt.saturating_sub(1).min(6);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(base + nanos % (base + 1))
}

impl Store {
    /// A store over `table`, writing records that expire after `ttl_days`.
    pub fn new(client: Client, table: &str, ttl_days: u64) -> Self {
        Store {
            client,
            table: table.to_string(),
            ttl: Duration::from_secs(ttl_days * 86_400),
        }
    }

    fn expires(&self) -> AttributeValue {
        n(now_epoch() + self.ttl.as_secs() as i64)
    }

    fn key(pk: String, sk: String) -> Item {
        HashMap::from([("PK".to_string(), s(pk)), ("SK".to_string(), s(sk))])
    }

    /// The run item as [`Store::create_run`] writes it.
    pub fn run_item(&self, run: &RunRecord) -> Result<Item> {
        let mut item = Self::key(run_pk(&run.run_id), RUN_SK.into());
        item.insert("entity".into(), s("Run"));
        item.insert("runId".into(), s(&run.run_id));
        item.insert("status".into(), s(run.status.as_str()));
        item.insert("input".into(), json(&run.input)?);
        item.insert("accounts".into(), json(&run.accounts)?);
        item.insert("skippedAccounts".into(), json(&run.skipped_accounts)?);
        item.insert(
            "skippedAccountsOmitted".into(),
            n(run.skipped_accounts_omitted),
        );
        item.insert("locationCount".into(), n(run.location_count));
        item.insert("locationWindow".into(), n(run.location_window));
        if let Some(t) = run.locations_tolerated {
            item.insert("locationsTolerated".into(), n(t));
        }
        item.insert("locationsDone".into(), n(0));
        item.insert("locationsFailed".into(), n(0));
        item.insert("instancesSent".into(), n(0));
        item.insert("instancesDone".into(), n(0));
        item.insert("createdAt".into(), s(iso(run.created_at)));
        item.insert("createdEpoch".into(), n(run.created_at));
        item.insert("expiresAt".into(), self.expires());
        Ok(item)
    }

    /// Writes a new run item. Returns false when the run already exists (a retried plan).
    pub async fn create_run(&self, run: &RunRecord) -> Result<bool> {
        let item = self.run_item(run)?;
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(put_condition_failed) => Ok(false),
            Err(e) => Err(from_sdk("dynamodb:PutItem", e)),
        }
    }

    /// Records a rejected run: its reasons and the raw input, nothing else (both bounded:
    /// [`MAX_RAW_INPUT_BYTES`], [`MAX_LISTED_REASONS`]).
    pub async fn put_rejected_run(
        &self,
        run_id: &str,
        raw_input: &str,
        reasons: &[String],
    ) -> Result<()> {
        let mut item = Self::key(run_pk(run_id), RUN_SK.into());
        let now = now_epoch();
        let (raw, raw_cut) = cut_text(raw_input, MAX_RAW_INPUT_BYTES);
        let (listed, omitted) = first(reasons.to_vec(), MAX_LISTED_REASONS);
        item.insert("entity".into(), s("Run"));
        item.insert("runId".into(), s(run_id));
        item.insert("status".into(), s(RunStatus::Rejected.as_str()));
        item.insert("rawInput".into(), s(raw));
        item.insert(
            "rejectReasons".into(),
            AttributeValue::L(listed.iter().map(s).collect()),
        );
        if raw_cut > 0 {
            item.insert("rawInputOmittedBytes".into(), n(raw_cut));
        }
        if omitted > 0 {
            item.insert("rejectReasonsOmitted".into(), n(omitted));
        }
        item.insert("createdAt".into(), s(iso(now)));
        item.insert("finishedAt".into(), s(iso(now)));
        item.insert("expiresAt".into(), self.expires());
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:PutItem", e))?;
        Ok(())
    }

    /// Reads a run item (strongly consistent).
    pub async fn get_run(&self, run_id: &str) -> Result<RunRecord> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), RUN_SK.into())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:GetItem", e))?;
        let item = out
            .item
            .ok_or_else(|| Error::Record(format!("run {run_id} not found")))?;
        let status = get_s(&item, "status")
            .unwrap_or_default()
            .parse::<RunStatus>()
            .map_err(Error::Record)?;
        if status == RunStatus::Rejected {
            let reasons: Vec<String> = item
                .get("rejectReasons")
                .and_then(|v| v.as_l().ok())
                .map(|l| l.iter().filter_map(|r| r.as_s().ok().cloned()).collect())
                .unwrap_or_default();
            return Err(Error::Record(format!(
                "run {run_id} was rejected: {}",
                reasons.join("; ")
            )));
        }
        Ok(RunRecord {
            run_id: run_id.to_string(),
            status,
            input: get_json(&item, "input")?,
            accounts: get_json(&item, "accounts")?,
            skipped_accounts: get_json(&item, "skippedAccounts").unwrap_or_default(),
            skipped_accounts_omitted: get_n(&item, "skippedAccountsOmitted").unwrap_or(0),
            location_count: get_n(&item, "locationCount").unwrap_or(0),
            location_window: get_n(&item, "locationWindow").unwrap_or(1),
            locations_tolerated: get_n(&item, "locationsTolerated"),
            locations_done: get_n(&item, "locationsDone").unwrap_or(0),
            locations_failed: get_n(&item, "locationsFailed").unwrap_or(0),
            created_at: get_n(&item, "createdEpoch").map(|v| v as i64).unwrap_or(0),
        })
    }

    /// Writes one Pending item per location of a new run, only for locations not recorded
    /// yet: a plan that timed out and finishes late (beside its retry, whose Map may already
    /// be running) never resets a location.
    pub async fn put_locations(&self, run_id: &str, locations: &[Location]) -> Result<()> {
        let items = locations
            .iter()
            .map(|l| {
                let mut item = Self::key(run_pk(run_id), location_sk(l));
                item.insert("entity".into(), s("Location"));
                item.insert("account".into(), s(&l.account));
                item.insert("region".into(), s(&l.region));
                item.insert("phase".into(), s(Phase::Pending.as_str()));
                item.insert("expiresAt".into(), self.expires());
                item
            })
            .collect();
        self.put_new(items).await
    }

    fn location_from_item(item: &Item) -> LocationRecord {
        let location = match (get_s(item, "account"), get_s(item, "region")) {
            (Some(a), Some(r)) => Some(Location::new(a, r)),
            _ => None,
        };
        let counts = item
            .get("counts")
            .and_then(|v| v.as_m().ok())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_n().ok()?.parse().ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        LocationRecord {
            location,
            phase: get_s(item, "phase").map(|p| Phase::parse(&p)),
            outcome: get_s(item, "outcome").and_then(|o| o.parse().ok()),
            reason: get_s(item, "reason"),
            targeted: get_n(item, "targeted").unwrap_or(0),
            dispatchable: get_n(item, "dispatchable").unwrap_or(0),
            window: get_n(item, "window").unwrap_or(1),
            tolerated: get_n(item, "tolerated"),
            errors: get_n(item, "errors").unwrap_or(0),
            stopping: get_bool(item, "stopping"),
            counts,
            compliance: get_json(item, "compliance").ok(),
        }
    }

    /// Reads a location item (strongly consistent).
    pub async fn get_location(&self, run_id: &str, l: &Location) -> Result<LocationRecord> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), location_sk(l))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:GetItem", e))?;
        let item = out
            .item
            .ok_or_else(|| Error::Record(format!("location {l} of run {run_id} not found")))?;
        Ok(Self::location_from_item(&item))
    }

    async fn query_all(&self, pk: String, sk_prefix: &str) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            // A key condition may not hold an empty string (DynamoDB and moto answer
            // ValidationException): no prefix means the whole partition.
            let query = if sk_prefix.is_empty() {
                self.client.query().key_condition_expression("PK = :pk")
            } else {
                self.client
                    .query()
                    .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
                    .expression_attribute_values(":p", s(sk_prefix))
            };
            let out = query
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk("dynamodb:Query", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Every location of a run.
    pub async fn list_locations(&self, run_id: &str) -> Result<Vec<LocationRecord>> {
        let items = self.query_all(run_pk(run_id), "LOC#").await?;
        Ok(items.iter().map(Self::location_from_item).collect())
    }

    /// Records what expansion found and moves the location to Dispatching, once: a later
    /// expansion of the same location (a retry, or a timed-out one finishing late) changes
    /// nothing.
    pub async fn set_expanded(
        &self,
        run_id: &str,
        l: &Location,
        found: &LocationRecord,
    ) -> Result<()> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), location_sk(l))))
            .update_expression(
                "SET phase = :ph, targeted = :t, dispatchable = :d, #w = :w, errors = :z, stopping = :f, counts = :c, startedAt = :now",
            )
            .condition_expression("attribute_not_exists(phase) OR phase = :pending")
            .expression_attribute_names("#w", "window")
            .expression_attribute_values(":ph", s(Phase::Dispatching.as_str()))
            .expression_attribute_values(":pending", s(Phase::Pending.as_str()))
            .expression_attribute_values(":t", n(found.targeted))
            .expression_attribute_values(":d", n(found.dispatchable))
            .expression_attribute_values(":w", n(found.window))
            .expression_attribute_values(":z", n(0))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .expression_attribute_values(":c", counts_attr(&found.counts))
            .expression_attribute_values(":now", s(iso(now_epoch())));
        if let Some(t) = found.tolerated {
            req = req
                .update_expression(
                    "SET phase = :ph, targeted = :t, dispatchable = :d, #w = :w, errors = :z, stopping = :f, counts = :c, startedAt = :now, tolerated = :tol",
                )
                .expression_attribute_values(":tol", n(t));
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(update_condition_failed) => Ok(()),
            Err(e) => Err(from_sdk("dynamodb:UpdateItem", e)),
        }
    }

    fn instance_item(&self, run_id: &str, l: &Location, r: &InstanceRecord) -> Item {
        let mut item = Self::key(location_pk(run_id, l), instance_sk(&r.instance_id));
        item.insert("entity".into(), s("Instance"));
        item.insert("instanceId".into(), s(&r.instance_id));
        item.insert("state".into(), s(r.state.as_str()));
        if let Some(p) = &r.ping_status {
            item.insert("pingStatus".into(), s(p));
        }
        if let Some(p) = &r.platform {
            item.insert("platform".into(), s(p));
        }
        item.insert("updatedAt".into(), s(iso(now_epoch())));
        item.insert("expiresAt".into(), self.expires());
        item
    }

    /// Writes the instances found by expansion, only those not recorded yet: an expansion
    /// that timed out and finishes late (beside its retry, whose dispatch may already have
    /// claimed and sent them) never puts an instance back to Pending.
    pub async fn put_instances(
        &self,
        run_id: &str,
        l: &Location,
        instances: &[InstanceRecord],
    ) -> Result<()> {
        let items: Vec<Item> = instances
            .iter()
            .map(|r| self.instance_item(run_id, l, r))
            .collect();
        self.put_new(items).await
    }

    /// Writes the items that do not exist yet and leaves existing ones as they are: up to
    /// 100 conditional Puts per transaction; a chunk in which some item exists already is
    /// written item by item.
    async fn put_new(&self, items: Vec<Item>) -> Result<()> {
        const NEW: &str = "attribute_not_exists(PK)";
        for chunk in items.chunks(100) {
            let ops = chunk
                .iter()
                .map(|i| {
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(i.clone()))
                        .condition_expression(NEW)
                        .build()
                        .map(|p| TransactWriteItem::builder().put(p).build())
                        .map_err(build_err)
                })
                .collect::<Result<Vec<_>>>()?;
            if self.transact(ops).await? {
                continue;
            }
            for item in chunk {
                let r = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item.clone()))
                    .condition_expression(NEW)
                    .send()
                    .await;
                match r {
                    Ok(_) => {}
                    Err(e) if e.as_service_error().is_some_and(put_condition_failed) => {}
                    Err(e) => return Err(from_sdk("dynamodb:PutItem", e)),
                }
            }
        }
        Ok(())
    }

    /// Every instance and batch of a location.
    pub async fn list_location_items(
        &self,
        run_id: &str,
        l: &Location,
    ) -> Result<(Vec<InstanceRecord>, Vec<BatchRecord>)> {
        let items = self.query_all(location_pk(run_id, l), "").await?;
        let mut instances = Vec::new();
        let mut batches = Vec::new();
        for item in items {
            let sk = get_s(&item, "SK").unwrap_or_default();
            if sk.starts_with("INST#") {
                let state = get_s(&item, "state")
                    .unwrap_or_default()
                    .parse::<InstanceState>()
                    .map_err(Error::Record)?;
                instances.push(InstanceRecord {
                    instance_id: get_s(&item, "instanceId").unwrap_or_default(),
                    state,
                    ping_status: get_s(&item, "pingStatus"),
                    platform: get_s(&item, "platform"),
                    batch: get_n(&item, "batch"),
                    command_id: get_s(&item, "commandId"),
                    ssm_status: get_s(&item, "ssmStatus"),
                    status_details: get_s(&item, "statusDetails"),
                });
            } else if sk.starts_with("BATCH#") {
                let state = match get_s(&item, "state").as_deref() {
                    Some("Sent") => BatchState::Sent,
                    Some("Released") => BatchState::Released,
                    _ => BatchState::Claimed,
                };
                batches.push(BatchRecord {
                    seq: get_n(&item, "seq").unwrap_or(0),
                    instance_ids: item
                        .get("instanceIds")
                        .and_then(|v| v.as_ss().ok())
                        .cloned()
                        .unwrap_or_default(),
                    comment: get_s(&item, "comment").unwrap_or_default(),
                    claimed_at: get_n(&item, "claimedAt").map(|v| v as i64).unwrap_or(0),
                    state,
                    command_id: get_s(&item, "commandId"),
                });
            }
        }
        Ok((instances, batches))
    }

    /// Takes the next batch sequence number of a location (atomic counter).
    pub async fn next_batch_seq(&self, run_id: &str, l: &Location) -> Result<u64> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), location_sk(l))))
            .update_expression("ADD nextBatch :one")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:UpdateItem", e))?;
        out.attributes
            .as_ref()
            .and_then(|a| get_n(a, "nextBatch"))
            .ok_or_else(|| Error::Record("nextBatch counter missing".into()))
    }

    fn instance_update(
        &self,
        run_id: &str,
        l: &Location,
        id: &str,
        set: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<TransactWriteItem> {
        let mut u = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(location_pk(run_id, l), instance_sk(id))))
            .update_expression(set)
            .condition_expression(condition)
            .expression_attribute_names("#st", "state");
        // `batch` is a DynamoDB reserved word: expressions name it `#batch`.
        if set.contains("#batch") || condition.contains("#batch") {
            u = u.expression_attribute_names("#batch", "batch");
        }
        for (k, v) in values {
            u = u.expression_attribute_values(k, v);
        }
        Ok(TransactWriteItem::builder()
            .update(u.build().map_err(build_err)?)
            .build())
    }

    /// Runs a transaction. Cancelled by a conflict with another transaction or by
    /// throttling, it is retried a few times with backoff, then reported `Transient`: never a
    /// failure of the location. Cancelled by failed conditions (someone else got there
    /// first), it answers which items failed when the service says.
    async fn transact_detailed(&self, items: Vec<TransactWriteItem>) -> Result<Transacted> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match r {
                Ok(_) => return Ok(Transacted::Done),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(transaction_condition_failed) =>
                {
                    return Ok(Transacted::ConditionsFailed(
                        e.as_service_error().and_then(failed_conditions),
                    ))
                }
                Err(e) if e.as_service_error().is_some_and(transaction_retryable) => {
                    if attempt >= TRANSACT_ATTEMPTS {
                        let why = e
                            .as_service_error()
                            .map(|se| se.to_string())
                            .unwrap_or_default();
                        return Err(Error::Transient {
                            operation: "dynamodb:TransactWriteItems".into(),
                            message: format!("cancelled {attempt} times: {why}"),
                        });
                    }
                    tokio::time::sleep(transact_backoff(attempt)).await;
                }
                Err(e) => return Err(from_sdk("dynamodb:TransactWriteItems", e)),
            }
        }
    }

    /// The run item's instance counters, as one transaction item (atomic ADD).
    fn run_counters(&self, run_id: &str, sent: u64, done: u64) -> Result<TransactWriteItem> {
        let u = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), RUN_SK.into())))
            .update_expression("ADD instancesSent :s, instancesDone :d")
            .expression_attribute_values(":s", n(sent))
            .expression_attribute_values(":d", n(done))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().update(u).build())
    }

    /// Runs a transaction (retried as [`Store::transact_detailed`] says). Ok(false): a
    /// condition failed (someone else got there first).
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<bool> {
        Ok(matches!(
            self.transact_detailed(items).await?,
            Transacted::Done
        ))
    }

    /// Claims `batch.instance_ids` (all Pending) for a new batch, atomically. Returns false
    /// when any of them was no longer Pending (another invocation got there first).
    pub async fn claim_batch(
        &self,
        run_id: &str,
        l: &Location,
        batch: &BatchRecord,
    ) -> Result<bool> {
        let mut item = Self::key(location_pk(run_id, l), batch_sk(batch.seq));
        item.insert("entity".into(), s("Batch"));
        item.insert("seq".into(), n(batch.seq));
        item.insert(
            "instanceIds".into(),
            AttributeValue::Ss(batch.instance_ids.clone()),
        );
        item.insert("comment".into(), s(&batch.comment));
        item.insert("claimedAt".into(), n(batch.claimed_at));
        item.insert("state".into(), s("Claimed"));
        item.insert("expiresAt".into(), self.expires());
        let mut ops = vec![TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(PK)")
                    .build()
                    .map_err(build_err)?,
            )
            .build()];
        for id in &batch.instance_ids {
            ops.push(self.instance_update(
                run_id,
                l,
                id,
                "SET #st = :claimed, #batch = :seq, updatedAt = :now",
                "#st = :pending",
                vec![
                    (":claimed", s(InstanceState::Claimed.as_str())),
                    (":pending", s(InstanceState::Pending.as_str())),
                    (":seq", n(batch.seq)),
                    (":now", s(iso(now_epoch()))),
                ],
            )?);
        }
        self.transact(ops).await
    }

    fn batch_update(
        &self,
        run_id: &str,
        l: &Location,
        seq: u64,
        set: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<TransactWriteItem> {
        let mut u = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(location_pk(run_id, l), batch_sk(seq))))
            .update_expression(set)
            .condition_expression("#st = :claimed")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":claimed", s("Claimed"));
        for (k, v) in values {
            u = u.expression_attribute_values(k, v);
        }
        Ok(TransactWriteItem::builder()
            .update(u.build().map_err(build_err)?)
            .build())
    }

    /// Records that a claimed batch was sent as `command_id`: its instances become InFlight,
    /// and the run's `instancesSent` counts them, in the same transaction.
    pub async fn mark_batch_sent(
        &self,
        run_id: &str,
        l: &Location,
        batch: &BatchRecord,
        command_id: &str,
    ) -> Result<bool> {
        let mut ops = vec![self.batch_update(
            run_id,
            l,
            batch.seq,
            "SET #st = :sent, commandId = :cmd",
            vec![(":sent", s("Sent")), (":cmd", s(command_id))],
        )?];
        for id in &batch.instance_ids {
            ops.push(self.instance_update(
                run_id,
                l,
                id,
                "SET #st = :inflight, commandId = :cmd, sentAt = :now, updatedAt = :now",
                "#st = :claimed AND #batch = :seq",
                vec![
                    (":inflight", s(InstanceState::InFlight.as_str())),
                    (":claimed", s(InstanceState::Claimed.as_str())),
                    (":seq", n(batch.seq)),
                    (":cmd", s(command_id)),
                    (":now", s(iso(now_epoch()))),
                ],
            )?);
        }
        ops.push(self.run_counters(run_id, batch.instance_ids.len() as u64, 0)?);
        self.transact(ops).await
    }

    /// Gives a batch's instances back (the send was refused, or no command was ever made):
    /// they become Pending again, except those listed in `final_states`, which take that state
    /// (e.g. now Unmanaged, or NotStarted when the location has ended); the run's
    /// `instancesDone` counts those final ones in the same transaction.
    pub async fn release_batch(
        &self,
        run_id: &str,
        l: &Location,
        batch: &BatchRecord,
        reason: &str,
        final_states: &HashMap<String, InstanceState>,
    ) -> Result<bool> {
        let mut ops = vec![self.batch_update(
            run_id,
            l,
            batch.seq,
            "SET #st = :rel, reason = :why",
            vec![(":rel", s("Released")), (":why", s(reason))],
        )?];
        for id in &batch.instance_ids {
            let target = final_states
                .get(id)
                .copied()
                .unwrap_or(InstanceState::Pending);
            let set = if target.is_terminal() {
                "SET #st = :to, updatedAt = :now, endedAt = :now REMOVE #batch"
            } else {
                "SET #st = :to, updatedAt = :now REMOVE #batch"
            };
            ops.push(self.instance_update(
                run_id,
                l,
                id,
                set,
                "#st = :claimed AND #batch = :seq",
                vec![
                    (":to", s(target.as_str())),
                    (":claimed", s(InstanceState::Claimed.as_str())),
                    (":seq", n(batch.seq)),
                    (":now", s(iso(now_epoch()))),
                ],
            )?);
        }
        let ended = batch
            .instance_ids
            .iter()
            .filter(|id| final_states.get(*id).is_some_and(|st| st.is_terminal()))
            .count() as u64;
        if ended > 0 {
            ops.push(self.run_counters(run_id, 0, ended)?);
        }
        self.transact(ops).await
    }

    /// Moves one instance from `from` to `to`, recording SSM's status (and counting it on the
    /// run, see [`Store::record_instances`]). Returns false when the instance was no longer in
    /// `from` (someone else recorded it).
    pub async fn update_instance(
        &self,
        run_id: &str,
        l: &Location,
        rec: &InstanceRecord,
        from: InstanceState,
    ) -> Result<bool> {
        let moves = [InstanceMove {
            record: rec.clone(),
            from,
        }];
        Ok(!self.record_instances(run_id, l, &moves).await?.is_empty())
    }

    fn instance_move(
        &self,
        run_id: &str,
        l: &Location,
        m: &InstanceMove,
    ) -> Result<TransactWriteItem> {
        let rec = &m.record;
        let mut values = vec![
            (":to", s(rec.state.as_str())),
            (":from", s(m.from.as_str())),
            (":now", s(iso(now_epoch()))),
        ];
        let mut set = String::from("SET #st = :to, updatedAt = :now");
        if let Some(v) = &rec.ssm_status {
            set.push_str(", ssmStatus = :ss");
            values.push((":ss", s(v)));
        }
        if let Some(v) = &rec.status_details {
            set.push_str(", statusDetails = :sd");
            values.push((":sd", s(v)));
        }
        if rec.state.is_terminal() {
            set.push_str(", endedAt = :now");
        }
        self.instance_update(run_id, l, &rec.instance_id, &set, "#st = :from", values)
    }

    /// Records instance moves, each conditional on the instance still being in its `from`
    /// state, and adds the ones that reach a final state to the run's `instancesDone` in the
    /// same transaction (at most 99 moves a transaction): the counter can never disagree with
    /// the instance items, whatever fails or is retried. Moves whose condition failed
    /// (another invocation recorded them first) are left out and not counted. Returns the IDs
    /// of the instances recorded.
    pub async fn record_instances(
        &self,
        run_id: &str,
        l: &Location,
        moves: &[InstanceMove],
    ) -> Result<Vec<String>> {
        let mut recorded = Vec::new();
        let mut queue: std::collections::VecDeque<Vec<&InstanceMove>> = moves
            .chunks(MAX_TRANSACTION_ITEMS - 1)
            .map(|c| c.iter().collect())
            .collect();
        while let Some(group) = queue.pop_front() {
            if group.is_empty() {
                continue;
            }
            let ended = group
                .iter()
                .filter(|m| m.record.state.is_terminal() && !m.from.is_terminal())
                .count() as u64;
            let mut ops = group
                .iter()
                .map(|m| self.instance_move(run_id, l, m))
                .collect::<Result<Vec<_>>>()?;
            if ended > 0 {
                ops.push(self.run_counters(run_id, 0, ended)?);
            }
            match self.transact_detailed(ops).await? {
                Transacted::Done => {
                    recorded.extend(group.iter().map(|m| m.record.instance_id.clone()));
                }
                Transacted::ConditionsFailed(Some(flags)) => {
                    // Retry without the moves someone else already made.
                    let left: Vec<&InstanceMove> = group
                        .iter()
                        .zip(flags.iter().chain(std::iter::repeat(&false)))
                        .filter(|(_, failed)| !**failed)
                        .map(|(m, _)| *m)
                        .collect();
                    if left.len() < group.len() {
                        queue.push_back(left);
                    } else if group.len() > 1 {
                        queue.extend(group.into_iter().map(|m| vec![m]));
                    }
                }
                Transacted::ConditionsFailed(None) if group.len() > 1 => {
                    // The service did not say which: one at a time.
                    queue.extend(group.into_iter().map(|m| vec![m]));
                }
                Transacted::ConditionsFailed(None) => {}
            }
        }
        Ok(recorded)
    }

    /// Writes a location's progress: counts per state, counted errors, stopping flag, as
    /// seen by a round that read the instance items after `read_from_ms` (epoch ms, taken
    /// before the read). The write is refused when a round that started later already wrote:
    /// an older round (a timed-out invocation still running beside its retry) never
    /// overwrites a fresher view. Returns false when refused.
    pub async fn set_location_progress(
        &self,
        run_id: &str,
        l: &Location,
        counts: &BTreeMap<String, u64>,
        errors: u64,
        stopping: bool,
        read_from_ms: i64,
    ) -> Result<bool> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), location_sk(l))))
            .update_expression(
                "SET counts = :c, errors = :e, stopping = :s, progressFrom = :from, updatedAt = :now",
            )
            .condition_expression("attribute_not_exists(progressFrom) OR progressFrom < :from")
            .expression_attribute_values(":c", counts_attr(counts))
            .expression_attribute_values(":e", n(errors))
            .expression_attribute_values(":s", AttributeValue::Bool(stopping))
            .expression_attribute_values(":from", n(read_from_ms))
            .expression_attribute_values(":now", s(iso(now_epoch())))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(update_condition_failed) => Ok(false),
            Err(e) => Err(from_sdk("dynamodb:UpdateItem", e)),
        }
    }

    /// Records a location's outcome once, and counts it on the run in the same transaction
    /// (`locationsDone`, and `locationsFailed` when it failed). A repeated call counts nothing.
    pub async fn settle_location(
        &self,
        run_id: &str,
        l: &Location,
        outcome: LocationOutcome,
        reason: Option<&str>,
    ) -> Result<Settled> {
        let mut loc = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), location_sk(l))))
            .update_expression("SET phase = :done, outcome = :o, finishedAt = :now, reason = :r")
            .condition_expression("attribute_exists(PK) AND phase <> :done")
            .expression_attribute_values(":done", s(Phase::Done.as_str()))
            .expression_attribute_values(":o", s(outcome.as_str()))
            .expression_attribute_values(":now", s(iso(now_epoch())));
        loc = loc.expression_attribute_values(":r", s(reason.unwrap_or("")));
        let failed = u64::from(outcome.counts_as_failure());
        let run = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), RUN_SK.into())))
            .update_expression("ADD locationsDone :one, locationsFailed :f")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":f", n(failed));
        let first_time = self
            .transact(vec![
                TransactWriteItem::builder()
                    .update(loc.build().map_err(build_err)?)
                    .build(),
                TransactWriteItem::builder()
                    .update(run.build().map_err(build_err)?)
                    .build(),
            ])
            .await?;
        let r = self.get_run(run_id).await?;
        Ok(Settled {
            first_time,
            locations_failed: r.locations_failed,
            locations_done: r.locations_done,
        })
    }

    /// Moves the run from `from` to `to`. Returns false when it was not in `from`.
    pub async fn set_run_status(
        &self,
        run_id: &str,
        from: RunStatus,
        to: RunStatus,
    ) -> Result<bool> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), RUN_SK.into())))
            .update_expression("SET #st = :to, updatedAt = :now")
            .condition_expression("#st = :from")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":from", s(from.as_str()))
            .expression_attribute_values(":now", s(iso(now_epoch())))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(update_condition_failed) => Ok(false),
            Err(e) => Err(from_sdk("dynamodb:UpdateItem", e)),
        }
    }

    /// Writes an instance's compliance after the run.
    pub async fn set_instance_compliance(
        &self,
        run_id: &str,
        l: &Location,
        id: &str,
        c: &Compliance,
    ) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(location_pk(run_id, l), instance_sk(id))))
            .update_expression("SET compliance = :c")
            .expression_attribute_values(":c", json(c)?)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    /// Writes a location's compliance totals.
    pub async fn set_location_compliance(
        &self,
        run_id: &str,
        l: &Location,
        c: &Compliance,
    ) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), location_sk(l))))
            .update_expression("SET compliance = :c")
            .expression_attribute_values(":c", json(c)?)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    /// Writes the run's final status and summary, once. Returns false when another attempt
    /// of aggregate (a retry, or a timed-out one finishing late) already finished the run:
    /// its summary stands.
    pub async fn finish_run<T: Serialize>(
        &self,
        run_id: &str,
        status: RunStatus,
        summary: &T,
    ) -> Result<bool> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), RUN_SK.into())))
            .update_expression("SET #st = :st, summary = :sum, finishedAt = :now")
            .condition_expression("attribute_not_exists(finishedAt)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(status.as_str()))
            .expression_attribute_values(":sum", json(summary)?)
            .expression_attribute_values(":now", s(iso(now_epoch())))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(update_condition_failed) => Ok(false),
            Err(e) => Err(from_sdk("dynamodb:UpdateItem", e)),
        }
    }

    /// Whether the "Patch Run Completed" event of the run was sent (`completedEventAt`).
    pub async fn completed_event_sent(&self, run_id: &str) -> Result<bool> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), RUN_SK.into())))
            .projection_expression("completedEventAt")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:GetItem", e))?;
        Ok(out.item.is_some_and(|i| i.contains_key("completedEventAt")))
    }

    /// Records that the "Patch Run Completed" event was sent.
    pub async fn mark_completed_event_sent(&self, run_id: &str) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run_pk(run_id), RUN_SK.into())))
            .update_expression("SET completedEventAt = :now")
            .expression_attribute_values(":now", s(iso(now_epoch())))
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:UpdateItem", e))?;
        Ok(())
    }
}

fn counts_attr(counts: &BTreeMap<String, u64>) -> AttributeValue {
    AttributeValue::M(counts.iter().map(|(k, v)| (k.clone(), n(*v))).collect())
}
