//! The DynamoDB adapter: the only module that knows items. One table, keys `PK`/`SK`:
//!
//! | item      | PK                              | SK                     |
//! |-----------|---------------------------------|------------------------|
//! | run       | `RUN#<runId>`                   | `RUN`                  |
//! | location  | `RUN#<runId>`                   | `LOC#<account>#<region>` |
//! | instance  | `LOC#<runId>#<account>#<region>` | `INST#<instanceId>`   |
//! | batch     | `LOC#<runId>#<account>#<region>` | `BATCH#<seq, 6 digits>` |
//! | wave      | `RUN#<runId>`                   | `WAVE#<index, 3 digits>` |
//!
//! A run's locations share the run's partition (one Query lists them); each location's
//! instances and SendCommand batches live in a partition of their own, so a large run spreads
//! its writes. Every item carries `expiresAt` (epoch seconds, the table's TTL attribute).
//! See `docs/table.md` for every attribute.
//!
//! - [`keys`]: key construction; [`items`]: item <-> record mapping;
//! - `client`: query all pages, transactions (retried on conflict), the one `conditional`;
//! - one module per record family: `runs`, `locations`, `instances` (with their batches),
//!   `waves`;
//! - `band`: dispatch's bounded read of a location's partition and its watermark.
//!
//! Invariants every write keeps: a run's counters (`locationsDone`, `instancesSent`,
//! `instancesDone`...) change in the same transaction as the items they count; every move of
//! an instance or batch is conditional on the state it leaves, so a retried or late
//! invocation can never undo a fresher one.

mod band;
mod client;
mod instances;
pub mod items;
pub mod keys;
mod locations;
mod resume;
mod runs;
pub mod waves;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::time::Duration;

pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's largest item: 400 KB, attribute names and values together.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// A rejected run keeps at most this much of its raw input (`rawInputOmittedBytes` says how
/// much was cut; Step Functions accepts inputs up to 256 KiB).
pub const MAX_RAW_INPUT_BYTES: usize = 64 * 1024;
/// A rejected run lists at most this many reasons (`rejectReasonsOmitted` counts the others).
pub const MAX_LISTED_REASONS: usize = 100;
/// TransactWriteItems takes at most 100 items.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

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

#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    table: String,
    /// How long records are kept (the table's TTL attribute; `FLEETPATCH_RECORD_TTL_DAYS`).
    ttl: Duration,
}

impl Store {
    pub fn new(client: Client, table: &str, ttl_days: u64) -> Self {
        Store {
            client,
            table: table.to_string(),
            ttl: Duration::from_secs(ttl_days * 86_400),
        }
    }

    fn expires(&self) -> AttributeValue {
        items::n(crate::clock::now_epoch() + self.ttl.as_secs() as i64)
    }
}
