//! Figures the scale benchmark reads from the oracle (`GET /_fleetsim/stats`, key `bench`):
//! Lambda invocations and their wall time per function, forwarded DynamoDB requests with
//! their bytes and an estimate of the capacity units on-demand would bill, and SSM calls per
//! location per simulated instant (under a frozen clock, one instant is one dispatch round).
//!
//! The capacity estimate reads item sizes from the request and response bodies as sent on
//! the wire (DynamoDB JSON, type descriptors included, so it is an upper estimate of the
//! item's size), rounded up per request as DynamoDB does: a write unit per started KB of
//! each item written (twice in a transaction), a read unit per started 4 KB read (half when
//! eventually consistent, twice in a transaction). An UpdateItem is sized by its request,
//! since the stored item is not seen here.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Per-function Lambda figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct LambdaTiming {
    /// Invocations forwarded.
    pub invocations: u64,
    /// Sum of their wall-clock milliseconds, as the caller waited for them.
    pub ms: f64,
}

/// Per-operation DynamoDB volume.
#[derive(Debug, Default, Clone, Copy)]
pub struct DdbVolume {
    /// Requests forwarded.
    pub calls: u64,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
    /// Estimated read request units.
    pub read_units: f64,
    /// Estimated write request units.
    pub write_units: f64,
}

/// Everything the benchmark reads.
#[derive(Debug, Default)]
pub struct BenchStats {
    /// Keyed by function name.
    pub lambda: BTreeMap<String, LambdaTiming>,
    /// Keyed by DynamoDB operation.
    pub dynamodb: BTreeMap<String, DdbVolume>,
    /// SSM calls keyed by (`account/region`, simulated epoch ms).
    pub ssm_instants: BTreeMap<(String, i64), u64>,
}

impl BenchStats {
    /// Records one Lambda invocation.
    pub fn lambda_invoked(&mut self, function: &str, ms: f64) {
        let t = self.lambda.entry(function.to_string()).or_default();
        t.invocations += 1;
        t.ms += ms;
    }

    /// Records one forwarded DynamoDB request and its response size.
    pub fn dynamodb_call(&mut self, op: &str, request: &[u8], response_bytes: u64) {
        let (read, write) = capacity_units(op, request, response_bytes);
        let v = self.dynamodb.entry(op.to_string()).or_default();
        v.calls += 1;
        v.request_bytes += request.len() as u64;
        v.response_bytes += response_bytes;
        v.read_units += read;
        v.write_units += write;
    }

    /// Records one SSM call by a location at a simulated instant.
    pub fn ssm_call(&mut self, location: String, sim_ms: i64) {
        *self.ssm_instants.entry((location, sim_ms)).or_default() += 1;
    }

    /// The oracle's view.
    pub fn to_json(&self) -> Value {
        let lambda: BTreeMap<&String, Value> = self
            .lambda
            .iter()
            .map(|(k, t)| (k, json!({"invocations": t.invocations, "ms": t.ms})))
            .collect();
        let dynamodb: BTreeMap<&String, Value> = self
            .dynamodb
            .iter()
            .map(|(k, v)| {
                (
                    k,
                    json!({"calls": v.calls, "request_bytes": v.request_bytes,
                           "response_bytes": v.response_bytes, "read_units": v.read_units,
                           "write_units": v.write_units}),
                )
            })
            .collect();
        json!({"lambda": lambda, "dynamodb": dynamodb, "ssm_rate": self.ssm_rate()})
    }

    /// The peak SSM calls of one location in one instant and in one simulated minute, and
    /// the mean per minute over the minutes in which the location made calls.
    fn ssm_rate(&self) -> Value {
        let mut peak_instant: Option<(&String, i64, u64)> = None;
        let mut minutes: BTreeMap<(&String, i64), u64> = BTreeMap::new();
        for ((loc, ms), n) in &self.ssm_instants {
            if peak_instant.is_none_or(|(_, _, best)| *n > best) {
                peak_instant = Some((loc, *ms, *n));
            }
            *minutes.entry((loc, ms.div_euclid(60_000))).or_default() += n;
        }
        let peak_minute = minutes.iter().max_by_key(|(_, n)| **n);
        let total: u64 = minutes.values().sum();
        let mean = if minutes.is_empty() {
            0.0
        } else {
            total as f64 / minutes.len() as f64
        };
        json!({
            "instants": self.ssm_instants.len(),
            "peak_per_instant": peak_instant.map(|(l, ms, n)| json!({"location": l, "sim_ms": ms, "calls": n})),
            "peak_per_minute": peak_minute.map(|((l, m), n)| json!({"location": l, "sim_minute": m, "calls": n})),
            "mean_per_active_minute": mean,
        })
    }
}

fn kb_units(bytes: usize, unit: usize) -> f64 {
    bytes.div_ceil(unit).max(1) as f64
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0)
}

/// Write units of one transaction or batch entry: a Put by its item, an Update by its
/// request, a Delete or ConditionCheck one unit.
fn entry_write_units(entry: &Value) -> f64 {
    if let Some(item) = entry.get("Put").and_then(|p| p.get("Item")) {
        return kb_units(json_len(item), 1024);
    }
    if let Some(item) = entry.get("PutRequest").and_then(|p| p.get("Item")) {
        return kb_units(json_len(item), 1024);
    }
    if let Some(update) = entry.get("Update") {
        return kb_units(json_len(update), 1024);
    }
    1.0
}

/// Estimated (read units, write units) of one DynamoDB request.
pub fn capacity_units(op: &str, request: &[u8], response_bytes: u64) -> (f64, f64) {
    let body: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    let resp = response_bytes as usize;
    let consistent = body.get("ConsistentRead") == Some(&Value::Bool(true));
    let read_factor = if consistent { 1.0 } else { 0.5 };
    match op {
        "GetItem" | "Query" | "Scan" | "BatchGetItem" => (kb_units(resp, 4096) * read_factor, 0.0),
        "TransactGetItems" => {
            let n = body["TransactItems"].as_array().map_or(1, Vec::len);
            (2.0 * kb_units(resp, 4096).max(n as f64), 0.0)
        }
        "PutItem" => (0.0, kb_units(json_len(&body["Item"]), 1024)),
        "UpdateItem" => (0.0, kb_units(request.len(), 1024)),
        "DeleteItem" => (0.0, 1.0),
        "TransactWriteItems" => {
            let items = body["TransactItems"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (0.0, 2.0 * items.iter().map(entry_write_units).sum::<f64>())
        }
        "BatchWriteItem" => {
            let units = body["RequestItems"]
                .as_object()
                .map(|tables| {
                    tables
                        .values()
                        .filter_map(Value::as_array)
                        .flatten()
                        .map(entry_write_units)
                        .sum::<f64>()
                })
                .unwrap_or(0.0);
            (0.0, units)
        }
        _ => (0.0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_count_a_unit_per_started_kb_and_twice_in_a_transaction() {
        // GIVEN a 1.5 KB item put alone, and the same item plus a delete in a transaction
        let big = "x".repeat(1500);
        let put = json!({"TableName": "t", "Item": {"PK": {"S": big}}}).to_string();
        let tx = json!({"TransactItems": [
            {"Put": {"TableName": "t", "Item": {"PK": {"S": big}}}},
            {"Delete": {"TableName": "t", "Key": {"PK": {"S": "a"}}}}
        ]})
        .to_string();

        // WHEN their units are estimated
        // THEN the put is 2 write units, the transaction 2 x (2 + 1)
        assert_eq!(capacity_units("PutItem", put.as_bytes(), 10), (0.0, 2.0));
        assert_eq!(
            capacity_units("TransactWriteItems", tx.as_bytes(), 10),
            (0.0, 6.0)
        );
    }

    #[test]
    fn reads_count_a_unit_per_started_4_kb_halved_when_eventually_consistent() {
        let consistent = json!({"TableName": "t", "ConsistentRead": true}).to_string();
        let eventual = json!({"TableName": "t"}).to_string();
        assert_eq!(
            capacity_units("Query", consistent.as_bytes(), 9000),
            (3.0, 0.0)
        );
        assert_eq!(
            capacity_units("Query", eventual.as_bytes(), 100),
            (0.5, 0.0)
        );
        assert_eq!(
            capacity_units("GetItem", consistent.as_bytes(), 0),
            (1.0, 0.0)
        );
    }

    #[test]
    fn ssm_rate_finds_the_busiest_instant_and_minute_of_one_location() {
        // GIVEN location A calls 3 times at t=0 and twice at t=30 s, B 4 times at t=90 s
        let mut s = BenchStats::default();
        for (loc, ms, n) in [("A", 0, 3), ("A", 30_000, 2), ("B", 90_000, 4)] {
            for _ in 0..n {
                s.ssm_call(loc.to_string(), ms);
            }
        }

        // WHEN the rate is summarised
        let r = s.ssm_rate();

        // THEN the peak instant is B's 4, the peak minute A's 5, the mean (5 + 4) / 2
        assert_eq!(r["peak_per_instant"]["calls"], 4);
        assert_eq!(r["peak_per_instant"]["location"], "B");
        assert_eq!(r["peak_per_minute"]["calls"], 5);
        assert_eq!(r["peak_per_minute"]["location"], "A");
        assert_eq!(r["mean_per_active_minute"], 4.5);
    }
}
