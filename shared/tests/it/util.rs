//! Shared fixtures: items built with the store's own item mapping, mocked clients,
//! captured requests.

use aws_sdk_dynamodb::types::AttributeValue;
use fleetpatch::clients::FixedClients;
use fleetpatch::input;
use fleetpatch::model::{
    BatchRecord, BatchState, InstanceRecord, LocationRecord, Phase, RunRecord,
};
use fleetpatch::store::{items, Store};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub type Item = HashMap<String, AttributeValue>;

pub const RUN: &str = "run-0001";
pub const ACCOUNT: &str = "111111111111";
pub const REGION: &str = "us-east-1";
pub const LOC: &str = "111111111111/us-east-1";

/// A list of captured values, shared with mock closures.
#[derive(Clone)]
pub struct Captured<T>(pub Arc<Mutex<Vec<T>>>);

impl<T> Default for Captured<T> {
    fn default() -> Self {
        Captured(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T: Clone> Captured<T> {
    pub fn push(&self, v: T) {
        self.0.lock().unwrap().push(v);
    }
    pub fn all(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
}

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}
pub fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The run input used by most tests, with overrides.
pub fn run_input(overrides: Value) -> Value {
    let mut base = json!({
        "operation": "Install",
        "resourceGroup": "patch-group-a",
        "accounts": [ACCOUNT],
        "regions": [REGION],
        "snapshotId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    });
    for (k, v) in overrides.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// A run item as `Store::create_run` writes it (through the store's own item mapping).
pub fn run_item(status: &str, input_overrides: Value, tolerated: Option<u64>) -> Item {
    let input = input::validate(&run_input(input_overrides)).unwrap();
    let run = RunRecord {
        status: status.parse().unwrap(),
        accounts: vec![ACCOUNT.into()],
        location_count: 1,
        locations_tolerated: tolerated,
        ..RunRecord::started(RUN, input, 0)
    };
    items::run_item(&run).unwrap()
}

/// A location item in the Dispatching phase.
pub fn location_item(window: u64, tolerated: Option<u64>) -> Item {
    let mut l = LocationRecord::pending(LOC.parse().unwrap());
    l.phase = Phase::Dispatching;
    l.window = window;
    l.tolerated = tolerated;
    items::location_item(RUN, &l).unwrap()
}

/// An instance item; with a command, InFlight as SSM last reported it (In Progress).
pub fn instance_item(id: &str, state: &str, command: Option<&str>) -> Item {
    let mut r = InstanceRecord::new(id, state.parse().unwrap());
    if let Some(c) = command {
        r.command_id = Some(c.into());
        r.ssm_status = Some("InProgress".into());
        r.status_details = Some("In Progress".into());
    }
    items::instance_item(RUN, &LOC.parse().unwrap(), &r)
}

/// A claimed batch item without a recorded command.
pub fn claimed_batch_item(seq: u64, ids: &[String], comment: &str, claimed_at: i64) -> Item {
    let b = BatchRecord {
        seq,
        instance_ids: ids.to_vec(),
        comment: comment.into(),
        claimed_at,
        state: BatchState::Claimed,
        command_id: None,
    };
    items::batch_item(RUN, &LOC.parse().unwrap(), &b)
}

/// Instance IDs `i-000...0` to `i-000...{n-1}`, 17 hex digits like real ones.
pub fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("i-{i:017x}")).collect()
}

pub fn store(client: aws_sdk_dynamodb::Client) -> Store {
    Store::new(client, "fleetpatch-test", 90)
}

pub fn fixed(ssm: aws_sdk_ssm::Client, groups: aws_sdk_resourcegroups::Client) -> FixedClients {
    FixedClients::new(ssm, groups)
}

/// The sort key of a GetItem request.
pub fn sk_of(key: Option<&HashMap<String, AttributeValue>>) -> String {
    key.and_then(|k| k.get("SK"))
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

/// Instance IDs moved to `state` by the captured conditional single-item updates.
pub fn moved_to(
    updates: &Captured<aws_sdk_dynamodb::operation::update_item::UpdateItemInput>,
    state: &str,
) -> Vec<String> {
    updates
        .all()
        .into_iter()
        .filter(|u| {
            u.expression_attribute_values()
                .and_then(|v| v.get(":to"))
                .and_then(|v| v.as_s().ok())
                .is_some_and(|v| v == state)
        })
        .map(|u| sk_of(u.key()).trim_start_matches("INST#").to_string())
        .collect()
}

/// Instance IDs moved to `state` by the captured transactions' conditional updates.
pub fn transact_moved_to(
    transacts: &Captured<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput,
    >,
    state: &str,
) -> Vec<String> {
    transacts
        .all()
        .iter()
        .flat_map(|t| t.transact_items().to_vec())
        .filter_map(|t| t.update)
        .filter(|u| {
            u.expression_attribute_values
                .as_ref()
                .and_then(|v| v.get(":to"))
                .and_then(|v| v.as_s().ok())
                .is_some_and(|v| v == state)
        })
        .map(|u| sk_of(Some(&u.key)).trim_start_matches("INST#").to_string())
        .collect()
}

/// What the captured transactions added to the run's counter `counter` (`:s` for
/// instancesSent, `:d` for instancesDone), and what single updates added.
pub fn counted(
    updates: &Captured<aws_sdk_dynamodb::operation::update_item::UpdateItemInput>,
    transacts: &Captured<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput,
    >,
    value: &str,
) -> u64 {
    let add = |key: Option<&HashMap<String, AttributeValue>>,
               expr: Option<&str>,
               values: Option<&HashMap<String, AttributeValue>>| {
        if sk_of(key) != "RUN" || !expr.unwrap_or_default().contains("instancesDone") {
            return 0;
        }
        values
            .and_then(|v| v.get(value))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let single: u64 = updates
        .all()
        .iter()
        .map(|u| {
            add(
                u.key(),
                u.update_expression(),
                u.expression_attribute_values(),
            )
        })
        .sum();
    let in_tx: u64 = transacts
        .all()
        .iter()
        .flat_map(|t| t.transact_items().to_vec())
        .filter_map(|t| t.update)
        .map(|u| {
            add(
                Some(&u.key),
                Some(&u.update_expression),
                u.expression_attribute_values.as_ref(),
            )
        })
        .sum();
    single + in_tx
}

/// An alarm reader for runs without `stopOnAlarms`: never called.
pub fn no_alarms() -> fleetpatch::alarms::Alarms {
    fleetpatch::alarms::Alarms::new(&aws_config::SdkConfig::builder().build())
}

/// An alarm reader that cannot reach CloudWatch (nothing listens on its endpoint; no retry):
/// every read fails as an unreachable service does.
pub fn unreachable_alarms() -> fleetpatch::alarms::Alarms {
    let sdk = aws_config::SdkConfig::builder()
        .endpoint_url("http://127.0.0.1:1")
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::for_tests(),
            ),
        )
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    fleetpatch::alarms::Alarms::new(&sdk)
}
