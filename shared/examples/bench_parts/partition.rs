//! What one dispatch round reads. Before: the location's whole partition (every instance and
//! batch item), a strongly consistent Query each round. After (`shared/src/band.rs`): the
//! location item's watermark, the batches from the oldest open one, and the instances after
//! the settled prefix in pages of 100, until a window of Pending ones past the claimed ones. The items are
//! built by the store's own item writers, with the attributes the store adds on the way
//! (timestamps, TTL, SSM's status), and sized by DynamoDB's rules (attribute names plus
//! values; a Query page holds at most 1 MB; a strongly consistent read costs one read unit
//! per 4 KB of a page, rounded up).

use aws_sdk_dynamodb::types::AttributeValue;
use fleetpatch::model::{BatchRecord, BatchState, InstanceRecord, InstanceState, Location};
use fleetpatch::store::items::{batch_item, instance_item};
use fleetpatch::store::Item;

const RUN_ID: &str = "0b7c3a2e-3e1d-4c55-9a51-8c0e2b1d7f00";
const PAGE_BYTES: usize = 1024 * 1024;
const UNIT_BYTES: usize = 4 * 1024;

fn value_bytes(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        // DynamoDB: about one byte per two significant digits, plus one.
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|x| 1 + value_bytes(x)).sum::<usize>(),
        AttributeValue::Ss(l) => l.iter().map(String::len).sum(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + value_bytes(x))
                .sum::<usize>()
        }
        _ => 0,
    }
}

fn item_bytes(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

/// An instance item as the store leaves it: sent a command, then ended (the largest shape).
fn ended_instance(loc: &Location, i: usize) -> Item {
    let mut r = InstanceRecord::new(&format!("i-{i:017x}"), InstanceState::Succeeded);
    r.ping_status = Some("Online".into());
    r.platform = Some("Linux".into());
    r.batch = Some(i as u64 / 50);
    r.command_id = Some("3f2a9c1e-5b7d-4e21-9a0c-6d8e4f1b2a37".into());
    r.ssm_status = Some("Success".into());
    r.status_details = Some("Success".into());
    let mut item = instance_item(RUN_ID, loc, &r);
    for k in ["updatedAt", "sentAt", "endedAt"] {
        item.insert(k.into(), s("2026-11-30T16:00:00Z"));
    }
    item.insert("expiresAt".into(), AttributeValue::N("1772294400".into()));
    item
}

/// A sent batch of 50 instances.
fn sent_batch(loc: &Location, seq: u64) -> Item {
    let b = BatchRecord {
        seq,
        instance_ids: (0..50)
            .map(|i| format!("i-{:017x}", seq * 50 + i))
            .collect(),
        comment:
            "fleetpatch 0b7c3a2e-3e1d-4c55-9a51-8c0e2b1d7f00 111111111111/ap-southeast-1 #000001"
                .into(),
        claimed_at: 1_764_518_400,
        state: BatchState::Sent,
        command_id: Some("3f2a9c1e-5b7d-4e21-9a0c-6d8e4f1b2a37".into()),
    };
    let mut item = batch_item(RUN_ID, loc, &b);
    item.insert("expiresAt".into(), AttributeValue::N("1772294400".into()));
    item
}

/// Read units of one Query page per `page_items` items of `sizes` (each page rounded up).
fn paged_units(sizes: &[usize], page_items: usize) -> usize {
    sizes
        .chunks(page_items)
        .map(|c| c.iter().sum::<usize>().div_ceil(UNIT_BYTES))
        .sum()
}

/// A round's bounded read in the steady state of a location of `n` instances with a 10%
/// window `w`: the band holds the `w` in flight and as many settled between them (instances
/// end out of order), then `w` Pending ones; the batches cover the band's claimed `2w`; plus
/// the location item (its watermark, one unit).
fn band_units(loc: &Location, n: usize) -> (usize, usize) {
    let w = (n / 10).max(1);
    let mut band: Vec<usize> = (0..2 * w)
        .map(|i| item_bytes(&ended_instance(loc, i)))
        .collect();
    let pending = InstanceRecord::new("i-0000000000000000a", InstanceState::Pending);
    let pending = item_bytes(&instance_item(RUN_ID, loc, &pending)) + 40;
    band.extend(std::iter::repeat_n(pending, w));
    let batches: Vec<usize> = (0..(2 * w).div_ceil(50) as u64)
        .map(|b| item_bytes(&sent_batch(loc, b)))
        .collect();
    let units = paged_units(&band, 100) + paged_units(&batches, usize::MAX) + 1;
    (band.len(), units)
}

pub fn print() {
    let loc = Location::new("111111111111", "ap-southeast-1");
    println!("\ndispatch: one round's Query of a location's partition (strongly consistent)");
    println!(
        "{:>10} {:>8} {:>12} {:>12} {:>8} {:>12} {:>11} {:>12}",
        "instances",
        "batches",
        "bytes",
        "bytes/inst",
        "queries",
        "read_units",
        "band_items",
        "band_units"
    );
    for n in [250usize, 1_000, 10_000] {
        let batches = n.div_ceil(50);
        let mut sizes: Vec<usize> = (0..n)
            .map(|i| item_bytes(&ended_instance(&loc, i)))
            .collect();
        sizes.extend((0..batches as u64).map(|b| item_bytes(&sent_batch(&loc, b))));
        let (mut pages, mut units, mut page) = (0usize, 0usize, 0usize);
        for size in &sizes {
            if page + size > PAGE_BYTES {
                pages += 1;
                units += page.div_ceil(UNIT_BYTES);
                page = 0;
            }
            page += size;
        }
        pages += 1;
        units += page.div_ceil(UNIT_BYTES);
        let bytes: usize = sizes.iter().sum();
        let (band_items, band) = band_units(&loc, n);
        println!(
            "{n:>10} {batches:>8} {bytes:>12} {:>12} {pages:>8} {units:>12} {band_items:>11} {band:>12}",
            bytes / n
        );
    }
    println!("read_units: before (the whole partition, every round); band_units: after, a round");
    println!("in the steady state of a 10% window (window in flight, as many settled among them,");
    println!("a window of Pending; the watermark's location item) whatever has settled before it");
}
