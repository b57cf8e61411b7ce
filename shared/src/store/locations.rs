//! Location items: written Pending by plan, moved to Dispatching once by expand, their
//! progress rewritten by each dispatch round, settled (and counted on the run) once.

use super::client::{build_err, conditional};
use super::items::{counts_attr, get_n, json, location_item, n, s};
use super::keys::{location_key, run_key, run_pk, LOCATION_PREFIX};
use super::Store;
use crate::clock::{iso, now_epoch};
use crate::error::{from_sdk, Error, Result};
use crate::model::{
    Compliance, Counts, ExpandCursor, Expansion, Location, LocationOutcome, LocationRecord, Phase,
    Settled,
};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};

impl Store {
    /// Writes one Pending item per location of a new run, only for locations not recorded
    /// yet: a plan that timed out and finishes late (beside its retry, whose Map may already
    /// be running) never resets a location.
    /// Each location comes with the index of its wave.
    pub async fn put_locations(&self, run_id: &str, locations: &[(Location, u32)]) -> Result<()> {
        let items = locations
            .iter()
            .map(|(l, wave)| {
                let record = LocationRecord {
                    wave: *wave,
                    ..LocationRecord::pending(l.clone())
                };
                let mut item = location_item(run_id, &record)?;
                item.insert("expiresAt".into(), self.expires());
                Ok(item)
            })
            .collect::<Result<Vec<_>>>()?;
        self.put_new(items).await
    }

    /// Reads a location (strongly consistent).
    pub async fn get_location(&self, run_id: &str, l: &Location) -> Result<LocationRecord> {
        let item = self
            .get(location_key(run_id, l))
            .await?
            .ok_or_else(|| Error::Record(format!("location {l} of run {run_id} not found")))?;
        LocationRecord::try_from(&item)
    }

    /// Every location of a run.
    pub async fn list_locations(&self, run_id: &str) -> Result<Vec<LocationRecord>> {
        let items = self.query_all(run_pk(run_id), LOCATION_PREFIX).await?;
        items.iter().map(LocationRecord::try_from).collect()
    }

    /// Records what expansion found and moves the location to Dispatching, once: a later
    /// expansion of the same location (a retry, or a timed-out one finishing late) changes
    /// nothing.
    pub async fn set_expanded(&self, run_id: &str, l: &Location, found: &Expansion) -> Result<()> {
        let mut set = String::from(
            "SET phase = :ph, targeted = :t, dispatchable = :d, #w = :w, errors = :z, \
             stopping = :f, counts = :c, startedAt = :now",
        );
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(location_key(run_id, l)))
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
            set.push_str(", tolerated = :tol");
            req = req.expression_attribute_values(":tol", n(t));
        }
        conditional(
            "dynamodb:UpdateItem",
            req.update_expression(set).send().await,
        )?;
        Ok(())
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
        counts: &Counts,
        errors: u64,
        stopping: bool,
        read_from_ms: i64,
    ) -> Result<bool> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(location_key(run_id, l)))
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
        conditional("dynamodb:UpdateItem", r)
    }

    /// Records how far expansion got, while the location is still Pending and only forward
    /// (a retry running beside a late attempt never moves the cursor back). Returns false
    /// when the cursor was not moved.
    pub async fn set_expand_cursor(
        &self,
        run_id: &str,
        l: &Location,
        cursor: &ExpandCursor,
    ) -> Result<bool> {
        let set = match cursor.next_token {
            Some(_) => "SET expandPages = :p, expandToken = :t",
            None => "SET expandPages = :p REMOVE expandToken",
        };
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(location_key(run_id, l)))
            .update_expression(set)
            .condition_expression(
                "phase = :pending AND (attribute_not_exists(expandPages) OR expandPages < :p)",
            )
            .expression_attribute_values(":pending", s(Phase::Pending.as_str()))
            .expression_attribute_values(":p", n(cursor.pages));
        if let Some(t) = &cursor.next_token {
            req = req.expression_attribute_values(":t", s(t));
        }
        conditional("dynamodb:UpdateItem", req.send().await)
    }

    /// Lowers the location's shortest observed run to `seconds`, never raises it (a
    /// conditional write: two rounds side by side keep the lower). Returns false when it
    /// was already as low.
    pub async fn lower_shortest_run(
        &self,
        run_id: &str,
        l: &Location,
        seconds: u64,
    ) -> Result<bool> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(location_key(run_id, l)))
            .update_expression("SET shortestRunSeconds = :v")
            .condition_expression(
                "attribute_exists(PK) AND (attribute_not_exists(shortestRunSeconds) OR shortestRunSeconds > :v)",
            )
            .expression_attribute_values(":v", n(seconds))
            .send()
            .await;
        conditional("dynamodb:UpdateItem", r)
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
        let loc = Update::builder()
            .table_name(&self.table)
            .set_key(Some(location_key(run_id, l)))
            .update_expression("SET phase = :done, outcome = :o, finishedAt = :now, reason = :r")
            .condition_expression("attribute_exists(PK) AND phase <> :done")
            .expression_attribute_values(":done", s(Phase::Done.as_str()))
            .expression_attribute_values(":o", s(outcome.as_str()))
            .expression_attribute_values(":now", s(iso(now_epoch())))
            .expression_attribute_values(":r", s(reason.unwrap_or("")))
            .build()
            .map_err(build_err)?;
        let run = Update::builder()
            .table_name(&self.table)
            .set_key(Some(run_key(run_id)))
            .update_expression("ADD locationsDone :one, locationsFailed :f")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":f", n(u64::from(outcome.counts_as_failure())))
            .build()
            .map_err(build_err)?;

        let first_time = self
            .transact(vec![
                TransactWriteItem::builder().update(loc).build(),
                TransactWriteItem::builder().update(run).build(),
            ])
            .await?;

        let r = self.get_run(run_id).await?;
        Ok(Settled {
            first_time,
            locations_failed: r.locations_failed,
            locations_done: r.locations_done,
        })
    }

    /// Takes the next batch sequence number of a location (atomic counter).
    pub async fn next_batch_seq(&self, run_id: &str, l: &Location) -> Result<u64> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(location_key(run_id, l)))
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

    /// Writes a location's compliance totals, after the run.
    pub async fn set_location_compliance(
        &self,
        run_id: &str,
        l: &Location,
        c: &Compliance,
    ) -> Result<()> {
        self.set_compliance(location_key(run_id, l), c).await
    }

    /// Sets the `compliance` attribute of the item at `key` (unconditional: aggregate is the
    /// only writer, and a retry writes the same counts).
    pub(super) async fn set_compliance(&self, key: super::Item, c: &Compliance) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET compliance = :c")
            .expression_attribute_values(":c", json(c)?)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:UpdateItem", e))?;
        Ok(())
    }
}
