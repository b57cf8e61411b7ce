//! Wave items: written Pending by plan (before the run item, so that a retried plan finds
//! them), each moved forward by the `gate` function with a write conditional on the status
//! it leaves, so a retried or late invocation never moves a wave back.
//!
//! The record is stored whole as JSON (`wave`), beside its `status`, which the conditions
//! read; `status` is the truth when the two differ.

use super::client::conditional;
use super::items::{json, s};
use super::keys::{key, run_pk, wave_sk, WAVE_PREFIX};
use super::{Item, Store};
use crate::clock::{iso, now_epoch};
use crate::error::{Error, Result};
use crate::model::{GateResult, WaveRecord, WaveStatus};

/// The wave item for `w`.
pub fn wave_item(run_id: &str, w: &WaveRecord) -> Result<Item> {
    let mut item = key(run_pk(run_id), wave_sk(w.index));
    item.insert("entity".into(), s("Wave"));
    item.insert("name".into(), s(&w.name));
    item.insert("status".into(), s(w.status.as_str()));
    item.insert("wave".into(), json(w)?);
    Ok(item)
}

fn wave_of(item: &Item) -> Result<WaveRecord> {
    let text = item
        .get("wave")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| Error::Record("wave item without its record".into()))?;
    let mut w: WaveRecord =
        serde_json::from_str(text).map_err(|e| Error::Record(format!("wave record: {e}")))?;
    if let Some(st) = item.get("status").and_then(|v| v.as_s().ok()) {
        w.status = st.parse().map_err(Error::Record)?;
    }
    Ok(w)
}

impl Store {
    /// Writes the waves of a new run, only those not recorded yet (a retried plan leaves
    /// the first attempt's waves as they are).
    pub async fn put_waves(&self, run_id: &str, waves: &[WaveRecord]) -> Result<()> {
        let items = waves
            .iter()
            .map(|w| {
                let mut item = wave_item(run_id, w)?;
                item.insert("expiresAt".into(), self.expires());
                Ok(item)
            })
            .collect::<Result<Vec<_>>>()?;
        self.put_new(items).await
    }

    /// The run's waves, in order (empty for a run planned before waves existed).
    pub async fn list_waves(&self, run_id: &str) -> Result<Vec<WaveRecord>> {
        let items = self.query_all(run_pk(run_id), WAVE_PREFIX).await?;
        let mut waves = items.iter().map(wave_of).collect::<Result<Vec<_>>>()?;
        waves.sort_by_key(|w| w.index);
        Ok(waves)
    }

    /// Moves a wave from one of `from` to `to`, rewriting its record as `w` says (with
    /// `to` as its status). Returns false when the wave was in none of `from`.
    pub async fn move_wave(
        &self,
        run_id: &str,
        w: &WaveRecord,
        from: &[WaveStatus],
        to: WaveStatus,
    ) -> Result<bool> {
        let record = WaveRecord {
            status: to,
            ..w.clone()
        };
        let names: Vec<String> = (0..from.len()).map(|i| format!(":from{i}")).collect();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(run_pk(run_id), wave_sk(w.index))))
            .update_expression("SET #st = :to, wave = :w, updatedAt = :now")
            .condition_expression(format!("#st IN ({})", names.join(", ")))
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":w", json(&record)?)
            .expression_attribute_values(":now", s(iso(now_epoch())));
        for (name, st) in names.iter().zip(from) {
            req = req.expression_attribute_values(name, s(st.as_str()));
        }
        conditional("dynamodb:UpdateItem", req.send().await)
    }

    /// Records a settled wave's gate: Running -> Passed or GateFailed.
    pub async fn end_wave(&self, run_id: &str, w: &WaveRecord, gate: GateResult) -> Result<bool> {
        let ended = WaveRecord {
            ended_at: Some(now_epoch()),
            gate: Some(gate),
            ..w.clone()
        };
        let to = if gate.passed {
            WaveStatus::Passed
        } else {
            WaveStatus::GateFailed
        };
        self.move_wave(run_id, &ended, &[WaveStatus::Running], to)
            .await
    }

    /// Skips a wave that never started, saying why: Pending or AwaitingApproval -> Skipped.
    pub async fn skip_wave(&self, run_id: &str, w: &WaveRecord, reason: &str) -> Result<bool> {
        let skipped = WaveRecord {
            reason: Some(reason.to_string()),
            ended_at: Some(now_epoch()),
            ..w.clone()
        };
        self.move_wave(
            run_id,
            &skipped,
            &[WaveStatus::Pending, WaveStatus::AwaitingApproval],
            WaveStatus::Skipped,
        )
        .await
    }

    /// Records the task token of the wave's approval: Pending or AwaitingApproval ->
    /// AwaitingApproval. The token is an attribute of its own (`taskToken`), never part of
    /// the record that reports and events show: whoever holds it can approve the wave.
    pub async fn await_approval(&self, run_id: &str, w: &WaveRecord, token: &str) -> Result<bool> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(run_pk(run_id), wave_sk(w.index))))
            .update_expression("SET #st = :to, taskToken = :tok, updatedAt = :now")
            .condition_expression("#st IN (:pending, :to)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":to", s(WaveStatus::AwaitingApproval.as_str()))
            .expression_attribute_values(":pending", s(WaveStatus::Pending.as_str()))
            .expression_attribute_values(":tok", s(token))
            .expression_attribute_values(":now", s(iso(now_epoch())))
            .send()
            .await;
        conditional("dynamodb:UpdateItem", r)
    }

    /// The task token of a wave waiting for its approval (None when it waits for none).
    pub async fn approval_token(&self, run_id: &str, index: u32) -> Result<Option<String>> {
        let item = self.get(key(run_pk(run_id), wave_sk(index))).await?;
        Ok(item
            .filter(|i| {
                i.get("status")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some(WaveStatus::AwaitingApproval.as_str())
            })
            .and_then(|i| i.get("taskToken").and_then(|v| v.as_s().ok()).cloned()))
    }

    /// Counts a wave's started time: Pending or AwaitingApproval -> Running.
    pub async fn start_wave(&self, run_id: &str, w: &WaveRecord) -> Result<bool> {
        let started = WaveRecord {
            started_at: Some(now_epoch()),
            ..w.clone()
        };
        self.move_wave(
            run_id,
            &started,
            &[WaveStatus::Pending, WaveStatus::AwaitingApproval],
            WaveStatus::Running,
        )
        .await
    }
}
