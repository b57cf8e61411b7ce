//! Instance and batch items, in each location's own partition. Expand writes instances
//! once; dispatch claims them in batches (a conditional transaction, before SendCommand),
//! records each send, and records every change of an instance's state with a write
//! conditional on the state it leaves, counting the endings on the run in the same
//! transaction.

use super::client::{build_err, Transacted};
use super::items::{batch_item, instance_item, n, s};
use super::keys::{batch_key, instance_key, location_pk, BATCH_PREFIX, INSTANCE_PREFIX};
use super::{Store, MAX_TRANSACTION_ITEMS};
use crate::clock::{iso, now_epoch};
use crate::error::Result;
use crate::model::{
    BatchRecord, BatchState, Compliance, InstanceMove, InstanceRecord, InstanceState, LedgerEntry,
    Location,
};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use std::collections::{HashMap, VecDeque};

impl Store {
    /// Writes the instances found by expansion, only those not recorded yet: an expansion
    /// that timed out and finishes late (beside its retry, whose dispatch may already have
    /// claimed and sent them) never puts an instance back to Pending.
    pub async fn put_instances(
        &self,
        run_id: &str,
        l: &Location,
        instances: &[InstanceRecord],
    ) -> Result<()> {
        let items = instances
            .iter()
            .map(|r| {
                let mut item = instance_item(run_id, l, r);
                item.insert("updatedAt".into(), s(iso(now_epoch())));
                item.insert("expiresAt".into(), self.expires());
                item
            })
            .collect();
        self.put_new(items).await
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
        for item in &items {
            let sk = item.get("SK").and_then(|v| v.as_s().ok());
            match sk {
                Some(sk) if sk.starts_with(INSTANCE_PREFIX) => {
                    instances.push(InstanceRecord::try_from(item)?)
                }
                Some(sk) if sk.starts_with(BATCH_PREFIX) => {
                    batches.push(BatchRecord::try_from(item)?)
                }
                _ => {}
            }
        }
        Ok((instances, batches))
    }

    /// Every instance of a location with its times and compliance: the run's ledger.
    pub async fn list_ledger(&self, run_id: &str, l: &Location) -> Result<Vec<LedgerEntry>> {
        let items = self
            .query_all(location_pk(run_id, l), INSTANCE_PREFIX)
            .await?;
        items.iter().map(LedgerEntry::try_from).collect()
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
            .set_key(Some(instance_key(run_id, l, id)))
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

    /// Claims `batch.instance_ids` (all Pending) for a new batch, atomically. Returns false
    /// when any of them was no longer Pending (another invocation got there first).
    pub async fn claim_batch(
        &self,
        run_id: &str,
        l: &Location,
        batch: &BatchRecord,
    ) -> Result<bool> {
        let claimed = BatchRecord {
            state: BatchState::Claimed,
            command_id: None,
            ..batch.clone()
        };
        let mut item = batch_item(run_id, l, &claimed);
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
            .set_key(Some(batch_key(run_id, l, seq)))
            .update_expression(set)
            .condition_expression("#st = :claimed")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":claimed", s(BatchState::Claimed.as_str()));
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
            vec![
                (":sent", s(BatchState::Sent.as_str())),
                (":cmd", s(command_id)),
            ],
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
            vec![
                (":rel", s(BatchState::Released.as_str())),
                (":why", s(reason)),
            ],
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
        let mut queue: VecDeque<Vec<&InstanceMove>> = moves
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

    /// Writes an instance's compliance after the run.
    pub async fn set_instance_compliance(
        &self,
        run_id: &str,
        l: &Location,
        id: &str,
        c: &Compliance,
    ) -> Result<()> {
        self.set_compliance(instance_key(run_id, l, id), c).await
    }
}
