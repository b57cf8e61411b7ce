//! A dispatch round's bounded read of a location's partition ([`crate::band`]): the
//! location's watermark (`settledThrough`, `settledCounts`, `batchesFrom` on its location
//! item), the batches from `batchesFrom` on, and the instances after `settledThrough` as far
//! as [`band::enough`] asks, each a strongly consistent Query bounded by its key condition.
//! The watermark moves only forward, in one conditional write.

use super::items::{counts_attr, counts_named, get_n, get_s, n, s};
use super::keys::{
    batch_sk, instance_sk, key, location_key, location_pk, BATCH_PREFIX, INSTANCE_PREFIX,
};
use super::{Item, Store};
use crate::band::{self, Band, Watermark};
use crate::error::{from_sdk, Result};
use crate::model::{BatchRecord, InstanceRecord, Location, LocationRecord};

/// Instances per Query page of the band: a page costs at most a few read units.
pub const BAND_PAGE: i32 = 100;

/// The SK just past every key with `prefix` (`#` + 1 is `$`).
fn past(prefix: &str) -> String {
    format!("{}$", prefix.trim_end_matches('#'))
}

impl Store {
    /// The location's watermark (the default before any round wrote one).
    pub async fn get_watermark(&self, run_id: &str, l: &Location) -> Result<Watermark> {
        let Some(item) = self.get(location_key(run_id, l)).await? else {
            return Ok(Watermark::default());
        };
        Ok(Watermark {
            through: get_s(&item, "settledThrough"),
            counts: counts_named(&item, "settledCounts")?,
            batches_from: get_n(&item, "batchesFrom").unwrap_or(0),
        })
    }

    /// Moves the watermark forward to `w`; a write that would not move it past the stored one
    /// is refused (false). Any watermark computed from a read is true for every later round.
    pub async fn set_watermark(&self, run_id: &str, l: &Location, w: &Watermark) -> Result<bool> {
        let Some(through) = &w.through else {
            return Ok(false);
        };
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(location_key(run_id, l)))
            .update_expression("SET settledThrough = :w, settledCounts = :c, batchesFrom = :b")
            .condition_expression("attribute_not_exists(settledThrough) OR settledThrough < :w")
            .expression_attribute_values(":w", s(through))
            .expression_attribute_values(":c", counts_attr(&w.counts))
            .expression_attribute_values(":b", n(w.batches_from))
            .send()
            .await;
        super::client::conditional("dynamodb:UpdateItem", r)
    }

    /// What a dispatch round works on: the watermark, the band read after it (with
    /// `location.window` Pending instances past the claimed ones), and the watermark moved
    /// forward over what this read found final.
    pub async fn load_band(
        &self,
        run_id: &str,
        l: &Location,
        location: &LocationRecord,
    ) -> Result<Band> {
        let prefix = self.get_watermark(run_id, l).await?;
        let mut band = self.read_band(run_id, l, &prefix, location.window).await?;
        if let Some(next) = band::advance(&prefix, &band, crate::clock::now_epoch()) {
            self.set_watermark(run_id, l, &next).await?;
        }
        let known = prefix.counts.values().sum::<u64>() + band.instances.len() as u64;
        band.unread = match band.complete {
            true => 0,
            false => location.targeted.saturating_sub(known).max(1),
        };
        band.prefix = prefix;
        Ok(band)
    }

    /// Reads the rest of the location after the band in `instances` (or after `prefix` when
    /// it is empty), for a round that retires every pending instance.
    pub async fn extend_to_end(
        &self,
        run_id: &str,
        l: &Location,
        prefix: &Watermark,
        instances: &mut Vec<InstanceRecord>,
    ) -> Result<()> {
        let after = instances
            .last()
            .map(|i| i.instance_id.clone())
            .or_else(|| prefix.through.clone());
        let pk = location_pk(run_id, l);
        let (tail, _) = self.read_instances(&pk, after.as_deref(), None).await?;
        instances.extend(tail);
        Ok(())
    }

    /// One round's read: the batches from `w.batches_from` on, then the instances after
    /// `w.through`, page by page, until [`band::enough`] (with `need` Pending) or the end.
    pub async fn read_band(
        &self,
        run_id: &str,
        l: &Location,
        w: &Watermark,
        need: u64,
    ) -> Result<Band> {
        let pk = location_pk(run_id, l);
        let lo = batch_sk(w.batches_from);
        let (items, _) = self
            .query_range(&pk, &lo, &past(BATCH_PREFIX), None, None, None)
            .await?;
        let batches = items
            .iter()
            .map(BatchRecord::try_from)
            .collect::<Result<Vec<_>>>()?;
        let claimed = band::claimed_through(&batches).map(str::to_string);
        let (instances, complete) = self
            .read_instances(&pk, w.through.as_deref(), Some((claimed.as_deref(), need)))
            .await?;
        Ok(Band {
            instances,
            batches,
            complete,
            ..Band::default()
        })
    }

    /// Instances after `after` in ID order, until `stop` (claimed through, need) says
    /// enough, or the end. Returns them and whether the end was reached.
    async fn read_instances(
        &self,
        pk: &str,
        after: Option<&str>,
        stop: Option<(Option<&str>, u64)>,
    ) -> Result<(Vec<InstanceRecord>, bool)> {
        let hi = past(INSTANCE_PREFIX);
        let limit = stop.map(|_| BAND_PAGE);
        let mut read: Vec<InstanceRecord> = Vec::new();
        // The read starts just after the watermark's own item.
        let mut start = after.map(|id| key(pk.to_string(), instance_sk(id)));
        loop {
            let (items, next) = self
                .query_range(pk, INSTANCE_PREFIX, &hi, limit, start.take(), Some(()))
                .await?;
            for item in &items {
                read.push(InstanceRecord::try_from(item)?);
            }
            match next {
                None => return Ok((read, true)),
                Some(k) => start = Some(k),
            }
            if let Some((claimed, need)) = stop {
                if band::enough(&read, claimed, need) {
                    return Ok((read, false));
                }
            }
        }
    }

    /// One or every page of `PK = pk AND SK BETWEEN lo AND hi`, strongly consistent. With
    /// `one_page`, returns after the first page with the key to continue from.
    async fn query_range(
        &self,
        pk: &str,
        lo: &str,
        hi: &str,
        limit: Option<i32>,
        mut start: Option<Item>,
        one_page: Option<()>,
    ) -> Result<(Vec<Item>, Option<Item>)> {
        let mut items = Vec::new();
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND SK BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":lo", s(lo))
                .expression_attribute_values(":hi", s(hi))
                .consistent_read(true)
                .set_limit(limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk("dynamodb:Query", e))?;
            items.extend(out.items.unwrap_or_default());
            let next = out.last_evaluated_key.filter(|k| !k.is_empty());
            match (next, one_page) {
                (Some(k), Some(())) => return Ok((items, Some(k))),
                (Some(k), None) => start = Some(k),
                (None, _) => return Ok((items, None)),
            }
        }
    }
}
