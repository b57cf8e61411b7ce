//! Item mapping, written once per record type: `TryFrom<&Item>` reads a record back (an
//! unknown stored value or a missing identity attribute is an error, never a default), and
//! the `*_item` functions write one (key and the record's own attributes; the store adds
//! `expiresAt` and timestamps). The handler tests build their table contents with the same
//! functions, so a change of shape cannot leave them behind.

use super::keys::{batch_key, instance_key, location_key, run_key};
use super::Item;
use crate::clock::iso;
use crate::error::{Error, Result};
use crate::model::{
    BatchRecord, Counts, ExpandCursor, InstanceRecord, InstanceState, LedgerEntry, Location,
    LocationRecord, RunRecord,
};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

pub(crate) fn get_n(item: &Item, k: &str) -> Option<u64> {
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

fn required_s(item: &Item, k: &str) -> Result<String> {
    get_s(item, k).ok_or_else(|| Error::Record(format!("attribute {k} missing")))
}

/// A required attribute holding one of a stored enum's names.
fn parsed<T: FromStr<Err = String>>(item: &Item, k: &str) -> Result<T> {
    required_s(item, k)?.parse().map_err(Error::Record)
}

fn get_json<T: for<'de> Deserialize<'de>>(item: &Item, k: &str) -> Result<T> {
    let raw = required_s(item, k)?;
    serde_json::from_str(&raw).map_err(|e| Error::Record(format!("attribute {k}: {e}")))
}

/// An optional JSON attribute: absent is None, present but unreadable is an error.
fn optional_json<T: for<'de> Deserialize<'de>>(item: &Item, k: &str) -> Result<Option<T>> {
    match item.contains_key(k) {
        true => get_json(item, k).map(Some),
        false => Ok(None),
    }
}

pub(crate) fn json<T: Serialize>(v: &T) -> Result<AttributeValue> {
    serde_json::to_string(v)
        .map(AttributeValue::S)
        .map_err(|e| Error::Record(e.to_string()))
}

pub(crate) fn counts_attr(counts: &Counts) -> AttributeValue {
    AttributeValue::M(
        counts
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), n(*v)))
            .collect(),
    )
}

fn counts_of(item: &Item) -> Result<Counts> {
    counts_named(item, "counts")
}

/// The per-state counts held in map attribute `k` (none when absent).
pub(crate) fn counts_named(item: &Item, k: &str) -> Result<Counts> {
    let Some(m) = item.get(k).and_then(|v| v.as_m().ok()) else {
        return Ok(Counts::new());
    };
    m.iter()
        .map(|(k, v)| {
            let state = k.parse::<InstanceState>().map_err(Error::Record)?;
            let count = v
                .as_n()
                .ok()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| Error::Record(format!("counts.{k} is not a count")))?;
            Ok((state, count))
        })
        .collect()
}

/// The run item as plan creates it.
pub fn run_item(run: &RunRecord) -> Result<Item> {
    let mut item = run_key(&run.run_id);
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
    item.insert("locationsDone".into(), n(run.locations_done));
    item.insert("locationsFailed".into(), n(run.locations_failed));
    item.insert("instancesSent".into(), n(run.instances_sent));
    item.insert("instancesDone".into(), n(run.instances_done));
    item.insert("createdAt".into(), s(iso(run.created_at)));
    item.insert("createdEpoch".into(), n(run.created_at));
    if let Some(h) = &run.halt {
        item.insert("halt".into(), json(h)?);
    }
    if let Some(t) = run.alarms_read_at_ms {
        item.insert("alarmsReadAt".into(), n(t));
    }
    Ok(item)
}

/// Reads a run item. A rejected run is not a run to work on: its reasons make the error.
impl TryFrom<&Item> for RunRecord {
    type Error = Error;

    fn try_from(item: &Item) -> Result<Self> {
        let run_id = required_s(item, "runId")?;
        let status = parsed(item, "status")?;
        if status == crate::model::RunStatus::Rejected {
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
            status,
            input: get_json(item, "input")?,
            accounts: get_json(item, "accounts")?,
            skipped_accounts: optional_json(item, "skippedAccounts")?.unwrap_or_default(),
            skipped_accounts_omitted: get_n(item, "skippedAccountsOmitted").unwrap_or(0),
            location_count: get_n(item, "locationCount").unwrap_or(0),
            location_window: get_n(item, "locationWindow").unwrap_or(1),
            locations_tolerated: get_n(item, "locationsTolerated"),
            locations_done: get_n(item, "locationsDone").unwrap_or(0),
            locations_failed: get_n(item, "locationsFailed").unwrap_or(0),
            instances_sent: get_n(item, "instancesSent").unwrap_or(0),
            instances_done: get_n(item, "instancesDone").unwrap_or(0),
            created_at: get_n(item, "createdEpoch").map(|v| v as i64).unwrap_or(0),
            halt: optional_json(item, "halt")?,
            alarms_read_at_ms: get_n(item, "alarmsReadAt").map(|v| v as i64),
            run_id,
        })
    }
}

/// A location item with everything the record knows (plan writes only the Pending ones).
pub fn location_item(run_id: &str, l: &LocationRecord) -> Result<Item> {
    let mut item = location_key(run_id, &l.location);
    item.insert("entity".into(), s("Location"));
    item.insert("account".into(), s(&l.location.account));
    item.insert("region".into(), s(&l.location.region));
    item.insert("phase".into(), s(l.phase.as_str()));
    item.insert("wave".into(), n(l.wave));
    if let Some(c) = &l.expand_cursor {
        item.insert("expandPages".into(), n(c.pages));
        if let Some(t) = &c.next_token {
            item.insert("expandToken".into(), s(t));
        }
    }
    if l.phase == crate::model::Phase::Pending {
        return Ok(item);
    }
    item.insert("targeted".into(), n(l.targeted));
    item.insert("dispatchable".into(), n(l.dispatchable));
    item.insert("window".into(), n(l.window));
    if let Some(t) = l.tolerated {
        item.insert("tolerated".into(), n(t));
    }
    item.insert("errors".into(), n(l.errors));
    item.insert("stopping".into(), AttributeValue::Bool(l.stopping));
    item.insert("counts".into(), counts_attr(&l.counts));
    if let Some(o) = l.outcome {
        item.insert("outcome".into(), s(o.as_str()));
    }
    if let Some(r) = &l.reason {
        item.insert("reason".into(), s(r));
    }
    if let Some(c) = &l.compliance {
        item.insert("compliance".into(), json(c)?);
    }
    if let Some(ms) = l.progress_from_ms {
        item.insert("progressFrom".into(), AttributeValue::N(ms.to_string()));
    }
    if let Some(secs) = l.shortest_run_seconds {
        item.insert("shortestRunSeconds".into(), n(secs));
    }
    Ok(item)
}

impl TryFrom<&Item> for LocationRecord {
    type Error = Error;

    fn try_from(item: &Item) -> Result<Self> {
        let location = Location::new(required_s(item, "account")?, required_s(item, "region")?);
        let outcome = match get_s(item, "outcome") {
            Some(o) => Some(o.parse().map_err(Error::Record)?),
            None => None,
        };
        Ok(LocationRecord {
            location,
            wave: get_n(item, "wave").map_or(0, |w| w as u32),
            phase: parsed(item, "phase")?,
            outcome,
            reason: get_s(item, "reason"),
            targeted: get_n(item, "targeted").unwrap_or(0),
            dispatchable: get_n(item, "dispatchable").unwrap_or(0),
            window: get_n(item, "window").unwrap_or(1),
            tolerated: get_n(item, "tolerated"),
            errors: get_n(item, "errors").unwrap_or(0),
            stopping: get_bool(item, "stopping"),
            counts: counts_of(item)?,
            compliance: optional_json(item, "compliance")?,
            progress_from_ms: get_n(item, "progressFrom").and_then(|ms| i64::try_from(ms).ok()),
            shortest_run_seconds: get_n(item, "shortestRunSeconds"),
            expand_cursor: get_n(item, "expandPages").map(|pages| ExpandCursor {
                pages,
                next_token: get_s(item, "expandToken"),
            }),
        })
    }
}

/// An instance item with everything the record knows.
pub fn instance_item(run_id: &str, l: &Location, r: &InstanceRecord) -> Item {
    let mut item = instance_key(run_id, l, &r.instance_id);
    item.insert("entity".into(), s("Instance"));
    item.insert("instanceId".into(), s(&r.instance_id));
    item.insert("state".into(), s(r.state.as_str()));
    let optional = [
        ("pingStatus", &r.ping_status),
        ("platform", &r.platform),
        ("commandId", &r.command_id),
        ("ssmStatus", &r.ssm_status),
        ("statusDetails", &r.status_details),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            item.insert(k.into(), s(v));
        }
    }
    if let Some(b) = r.batch {
        item.insert("batch".into(), n(b));
    }
    item
}

impl TryFrom<&Item> for InstanceRecord {
    type Error = Error;

    fn try_from(item: &Item) -> Result<Self> {
        Ok(InstanceRecord {
            instance_id: required_s(item, "instanceId")?,
            state: parsed(item, "state")?,
            ping_status: get_s(item, "pingStatus"),
            platform: get_s(item, "platform"),
            batch: get_n(item, "batch"),
            command_id: get_s(item, "commandId"),
            ssm_status: get_s(item, "ssmStatus"),
            status_details: get_s(item, "statusDetails"),
        })
    }
}

impl TryFrom<&Item> for LedgerEntry {
    type Error = Error;

    fn try_from(item: &Item) -> Result<Self> {
        Ok(LedgerEntry {
            record: InstanceRecord::try_from(item)?,
            sent_at: get_s(item, "sentAt"),
            ended_at: get_s(item, "endedAt"),
            compliance: optional_json(item, "compliance")?,
        })
    }
}

pub fn batch_item(run_id: &str, l: &Location, b: &BatchRecord) -> Item {
    let mut item = batch_key(run_id, l, b.seq);
    item.insert("entity".into(), s("Batch"));
    item.insert("seq".into(), n(b.seq));
    item.insert(
        "instanceIds".into(),
        AttributeValue::Ss(b.instance_ids.clone()),
    );
    item.insert("comment".into(), s(&b.comment));
    item.insert("claimedAt".into(), n(b.claimed_at));
    item.insert("state".into(), s(b.state.as_str()));
    if let Some(c) = &b.command_id {
        item.insert("commandId".into(), s(c));
    }
    item
}

impl TryFrom<&Item> for BatchRecord {
    type Error = Error;

    fn try_from(item: &Item) -> Result<Self> {
        Ok(BatchRecord {
            seq: get_n(item, "seq").ok_or_else(|| Error::Record("attribute seq missing".into()))?,
            instance_ids: item
                .get("instanceIds")
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default(),
            comment: required_s(item, "comment")?,
            claimed_at: get_n(item, "claimedAt").map(|v| v as i64).unwrap_or(0),
            state: parsed(item, "state")?,
            command_id: get_s(item, "commandId"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatchState, Phase};

    #[test]
    fn an_unknown_stored_state_is_an_error_not_a_default() {
        // GIVEN items whose stored enum values this version does not know
        let l = Location::new("111111111111", "us-east-1");
        let mut inst = instance_item("r", &l, &InstanceRecord::new("i-1", InstanceState::Pending));
        inst.insert("state".into(), s("Paused"));
        let mut loc = location_item("r", &LocationRecord::pending(l.clone())).unwrap();
        loc.insert("phase".into(), s("Waiting"));
        let batch = BatchRecord {
            seq: 1,
            instance_ids: vec!["i-1".into()],
            comment: "c".into(),
            claimed_at: 5,
            state: BatchState::Claimed,
            command_id: None,
        };
        let mut b = batch_item("r", &l, &batch);
        b.insert("state".into(), s("Lost"));
        // THEN reading them back fails, naming the value
        let e = InstanceRecord::try_from(&inst).unwrap_err().to_string();
        assert!(e.contains("Paused"), "{e}");
        let e = LocationRecord::try_from(&loc).unwrap_err().to_string();
        assert!(e.contains("Waiting"), "{e}");
        let e = BatchRecord::try_from(&b).unwrap_err().to_string();
        assert!(e.contains("Lost"), "{e}");
        // and so does an unknown state in a location's counts
        let mut counted = location_item("r", &LocationRecord::pending(l)).unwrap();
        counted.insert(
            "counts".into(),
            AttributeValue::M([("Sleeping".to_string(), n(2))].into()),
        );
        assert!(LocationRecord::try_from(&counted).is_err());
    }

    #[test]
    fn records_round_trip_through_their_items() {
        let l = Location::new("111111111111", "us-east-1");
        let mut loc = LocationRecord::pending(l.clone());
        loc.phase = Phase::Dispatching;
        loc.targeted = 3;
        loc.dispatchable = 2;
        loc.window = 2;
        loc.tolerated = Some(0);
        loc.counts = crate::model::count_states([InstanceState::Pending, InstanceState::Offline]);
        let back = LocationRecord::try_from(&location_item("r", &loc).unwrap()).unwrap();
        assert_eq!(back, loc);
        let mut inst = InstanceRecord::new("i-1", InstanceState::InFlight);
        inst.command_id = Some("cmd".into());
        inst.batch = Some(4);
        let back = InstanceRecord::try_from(&instance_item("r", &l, &inst)).unwrap();
        assert_eq!(back, inst);
    }
}
