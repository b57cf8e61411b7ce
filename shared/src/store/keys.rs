//! Key construction: the only place that knows how PK and SK are spelled (see the table in
//! the `store` module's header).

use super::Item;
use crate::model::Location;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

pub const RUN_SK: &str = "RUN";
pub const LOCATION_PREFIX: &str = "LOC#";
pub const INSTANCE_PREFIX: &str = "INST#";
pub const BATCH_PREFIX: &str = "BATCH#";
pub const WAVE_PREFIX: &str = "WAVE#";

pub fn run_pk(run_id: &str) -> String {
    format!("RUN#{run_id}")
}

pub fn location_sk(l: &Location) -> String {
    format!("{LOCATION_PREFIX}{}#{}", l.account, l.region)
}

/// The partition of a location's instances and batches.
pub fn location_pk(run_id: &str, l: &Location) -> String {
    format!("LOC#{run_id}#{}#{}", l.account, l.region)
}

pub fn instance_sk(id: &str) -> String {
    format!("{INSTANCE_PREFIX}{id}")
}

/// Six digits, so that a location's batches sort in order.
pub fn batch_sk(seq: u64) -> String {
    format!("{BATCH_PREFIX}{seq:06}")
}

/// Three digits, so that a run's waves sort in order.
pub fn wave_sk(index: u32) -> String {
    format!("{WAVE_PREFIX}{index:03}")
}

pub fn key(pk: String, sk: String) -> Item {
    HashMap::from([
        ("PK".to_string(), AttributeValue::S(pk)),
        ("SK".to_string(), AttributeValue::S(sk)),
    ])
}

pub fn run_key(run_id: &str) -> Item {
    key(run_pk(run_id), RUN_SK.into())
}

pub fn location_key(run_id: &str, l: &Location) -> Item {
    key(run_pk(run_id), location_sk(l))
}

pub fn instance_key(run_id: &str, l: &Location, id: &str) -> Item {
    key(location_pk(run_id, l), instance_sk(id))
}

pub fn batch_key(run_id: &str, l: &Location, seq: u64) -> Item {
    key(location_pk(run_id, l), batch_sk(seq))
}
