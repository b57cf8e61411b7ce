//! The run item: created once by plan (or recorded as rejected), its status moved by
//! settle and aggregate, its counters added to by every location.

use super::client::{build_err, conditional};
use super::items::{json, n, run_item, s};
use super::keys::run_key;
use super::{Store, MAX_LISTED_REASONS, MAX_RAW_INPUT_BYTES};
use crate::clock::{iso, now_epoch};
use crate::error::{from_sdk, Error, Result};
use crate::model::{cut_text, first, Halt, RunRecord, RunStatus};
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use serde::Serialize;

impl Store {
    /// The run item as [`Store::create_run`] writes it.
    pub fn run_item(&self, run: &RunRecord) -> Result<super::Item> {
        let mut item = run_item(run)?;
        item.insert("expiresAt".into(), self.expires());
        Ok(item)
    }

    /// Writes a new run item. Returns false when the run already exists (a retried plan).
    pub async fn create_run(&self, run: &RunRecord) -> Result<bool> {
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.run_item(run)?))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        conditional("dynamodb:PutItem", r)
    }

    /// Records a rejected run: its reasons and the raw input, nothing else (both bounded:
    /// [`MAX_RAW_INPUT_BYTES`], [`MAX_LISTED_REASONS`]).
    pub async fn put_rejected_run(
        &self,
        run_id: &str,
        raw_input: &str,
        reasons: &[String],
    ) -> Result<()> {
        let now = now_epoch();
        let (raw, raw_cut) = cut_text(raw_input, MAX_RAW_INPUT_BYTES);
        let (listed, omitted) = first(reasons.to_vec(), MAX_LISTED_REASONS);

        let mut item = run_key(run_id);
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

    /// Reads a run (strongly consistent). A rejected run is an error naming its reasons.
    pub async fn get_run(&self, run_id: &str) -> Result<RunRecord> {
        let item = self
            .get(run_key(run_id))
            .await?
            .ok_or_else(|| Error::Record(format!("run {run_id} not found")))?;
        RunRecord::try_from(&item)
    }

    /// Moves the run from `from` to `to`. Returns false when it was not in `from`.
    pub async fn set_run_status(
        &self,
        run_id: &str,
        from: RunStatus,
        to: RunStatus,
    ) -> Result<bool> {
        self.update_run_if(
            run_id,
            "SET #st = :to, updatedAt = :now",
            "#st = :from",
            vec![(":to", s(to.as_str())), (":from", s(from.as_str()))],
        )
        .await
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
        self.update_run_if(
            run_id,
            "SET #st = :st, summary = :sum, finishedAt = :now",
            "attribute_not_exists(finishedAt)",
            vec![(":st", s(status.as_str())), (":sum", json(summary)?)],
        )
        .await
    }

    /// Records why the run starts nothing new, once: the first halt stands. Returns false
    /// when one was recorded already, or the run is no longer running.
    pub async fn record_halt(&self, run_id: &str, halt: &Halt) -> Result<bool> {
        self.update_run_if(
            run_id,
            "SET halt = :h, haltedAt = :now",
            "attribute_not_exists(halt) AND #st IN (:running, :stopping)",
            vec![
                (":h", json(halt)?),
                (":running", s(RunStatus::Running.as_str())),
                (":stopping", s(RunStatus::Stopping.as_str())),
            ],
        )
        .await
    }

    /// Claims this alarm read for the whole run: true when the last read is still the one
    /// `previous` names (no other location read the alarms meanwhile).
    pub async fn claim_alarm_read(
        &self,
        run_id: &str,
        previous: Option<i64>,
        now_ms: i64,
    ) -> Result<bool> {
        let mut values = vec![
            (":ms", n(now_ms)),
            (":running", s(RunStatus::Running.as_str())),
            (":stopping", s(RunStatus::Stopping.as_str())),
        ];
        let condition = match previous {
            Some(p) => {
                values.push((":prev", n(p)));
                "#st IN (:running, :stopping) AND alarmsReadAt = :prev"
            }
            None => "#st IN (:running, :stopping) AND attribute_not_exists(alarmsReadAt)",
        };
        self.update_run_if(
            run_id,
            "SET alarmsReadAt = :ms, alarmsReadTime = :now",
            condition,
            values,
        )
        .await
    }

    /// Gives back a claimed alarm read that failed, so that the next round reads them.
    pub async fn release_alarm_read(&self, run_id: &str, claimed_ms: i64) -> Result<bool> {
        self.update_run_if(
            run_id,
            "SET alarmsReadTime = :now REMOVE alarmsReadAt",
            "alarmsReadAt = :ms AND #st IN (:running, :stopping)",
            vec![
                (":ms", n(claimed_ms)),
                (":running", s(RunStatus::Running.as_str())),
                (":stopping", s(RunStatus::Stopping.as_str())),
            ],
        )
        .await
    }

    /// Asks every location of a cancelling run to cancel its commands in flight
    /// (`fleetpatch stop --cancel-commands`): false when the run is not Cancelling.
    pub async fn request_command_cancel(&self, run_id: &str) -> Result<bool> {
        self.update_run_if(
            run_id,
            "SET cancelCommands = :yes, cancelCommandsAt = :now",
            "#st = :cancelling",
            vec![
                (":yes", AttributeValue::Bool(true)),
                (":cancelling", s(RunStatus::Cancelling.as_str())),
            ],
        )
        .await
    }

    /// Whether the run's commands in flight are to be cancelled (`cancelCommands`).
    pub async fn cancels_commands(&self, run_id: &str) -> Result<bool> {
        let value = self.run_attribute(run_id, "cancelCommands").await?;
        Ok(matches!(value, Some(AttributeValue::Bool(true))))
    }

    /// Whether the "Patch Run Completed" event of the run was sent (`completedEventAt`).
    pub async fn completed_event_sent(&self, run_id: &str) -> Result<bool> {
        Ok(self
            .run_attribute(run_id, "completedEventAt")
            .await?
            .is_some())
    }

    /// The summary a finished run stored, if any.
    pub async fn run_summary<T: serde::de::DeserializeOwned>(
        &self,
        run_id: &str,
    ) -> Result<Option<T>> {
        let Some(AttributeValue::S(raw)) = self.run_attribute(run_id, "summary").await? else {
            return Ok(None);
        };
        serde_json::from_str(&raw)
            .map(Some)
            .map_err(|e| Error::Record(format!("attribute summary: {e}")))
    }

    pub async fn mark_completed_event_sent(&self, run_id: &str) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(run_key(run_id)))
            .update_expression("SET completedEventAt = :now")
            .expression_attribute_values(":now", s(iso(now_epoch())))
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    /// Updates the run item when `condition` holds (`#st` names `status`, `:now` is now):
    /// Ok(false) when it did not.
    pub(super) async fn update_run_if(
        &self,
        run_id: &str,
        set: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(run_key(run_id)))
            .update_expression(set)
            .condition_expression(condition)
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":now", s(iso(now_epoch())));
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        conditional("dynamodb:UpdateItem", req.send().await)
    }

    /// One attribute of the run item (strongly consistent), if the item has it.
    async fn run_attribute(&self, run_id: &str, name: &str) -> Result<Option<AttributeValue>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(run_key(run_id)))
            .projection_expression(name)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk("dynamodb:GetItem", e))?;
        Ok(out.item.and_then(|mut i| i.remove(name)))
    }

    /// The run item's instance counters, as one transaction item (atomic ADD): every
    /// transaction that records a send or an ending carries it.
    pub(super) fn run_counters(
        &self,
        run_id: &str,
        sent: u64,
        done: u64,
    ) -> Result<TransactWriteItem> {
        let u = Update::builder()
            .table_name(&self.table)
            .set_key(Some(run_key(run_id)))
            .update_expression("ADD instancesSent :s, instancesDone :d")
            .expression_attribute_values(":s", n(sent))
            .expression_attribute_values(":d", n(done))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().update(u).build())
    }
}
