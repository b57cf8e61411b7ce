//! The oracle under `/_fleetsim/`: what the simulator saw (commands, API call counts,
//! throttles, in-flight maxima, commands per instance, AssumeRole calls, final instance
//! state) and the controls tests use (faults, clock, reset). Plain JSON, no auth.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::faults::FaultRule;
use crate::protocol::{iso8601, json_response, HttpResponse};
use crate::services::ssm::patch_state_json;
use crate::sim::{command_view, view, Sim};
use crate::state::{lock, AppState};

/// Per-(service, operation) counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpCounters {
    /// Calls received (including throttled ones).
    pub calls: u64,
    /// Answered with a throttling error.
    pub throttled: u64,
    /// Answered with an injected error.
    pub injected_errors: u64,
    /// Handled but the response was dropped.
    pub dropped: u64,
    /// Handled, and the response held back by a `delay` rule.
    pub delayed: u64,
    /// Forwarded DynamoDB calls refused with a transaction conflict.
    pub conflicts: u64,
}

/// API call statistics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Keyed by `service:Operation`.
    pub ops: BTreeMap<String, OpCounters>,
    /// Calls forwarded upstream, keyed by `service` (or `lambda`).
    pub forwarded: BTreeMap<String, u64>,
    /// Forwarded calls that fault rules looked at (Lambda Invoke, DynamoDB), keyed by
    /// `service:Operation`.
    pub forwarded_ops: BTreeMap<String, OpCounters>,
    /// Lambda invocations answered `Sandbox.Timedout`, by function.
    pub lambda_timed_out: BTreeMap<String, u64>,
    /// The scale benchmark's figures (Lambda timings, DynamoDB volume, SSM per round).
    pub bench: crate::bench_stats::BenchStats,
}

impl Stats {
    /// The counters of one forwarded operation.
    pub fn forwarded_op(&mut self, service: &str, op: &str) -> &mut OpCounters {
        self.forwarded_ops
            .entry(format!("{service}:{op}"))
            .or_default()
    }

    /// The counters of one operation.
    pub fn op(&mut self, service: &str, op: &str) -> &mut OpCounters {
        self.ops.entry(format!("{service}:{op}")).or_default()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    #[serde(default)]
    faults: Vec<FaultRule>,
    #[serde(default)]
    append: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    advance_seconds: Option<f64>,
    speed: Option<f64>,
}

/// `POST /_fleetsim/lambda-timeouts`: seconds per function; `{}` restores the template's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LambdaTimeoutsBody {
    #[serde(default)]
    overrides: BTreeMap<String, f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    #[serde(default)]
    full: bool,
}

fn bad(msg: String) -> HttpResponse {
    json_response(400, &json!({"message": msg}))
}

/// Serves one oracle request.
pub fn handle(state: &AppState, method: &hyper::Method, path: &str, body: &[u8]) -> HttpResponse {
    let route = path.split('?').next().unwrap_or_default();
    match (method.as_str(), route) {
        ("GET", "/_fleetsim/health") => json_response(200, &json!({"ok": true})),
        ("GET", "/_fleetsim/commands") => json_response(200, &commands(state)),
        ("GET", "/_fleetsim/stats") => json_response(200, &stats(state)),
        ("GET", "/_fleetsim/instances") => json_response(200, &instances(state)),
        ("GET", "/_fleetsim/iam") => json_response(200, &iam_log(state)),
        ("GET", "/_fleetsim/assumed") => json_response(200, &json!(lock(&state.sessions).log)),
        ("GET", "/_fleetsim/faults") => {
            json_response(200, &json!({"faults": lock(&state.faults).rules()}))
        }
        ("POST", "/_fleetsim/faults") => set_faults(state, body),
        ("GET", "/_fleetsim/clock") => json_response(200, &clock(state)),
        ("POST", "/_fleetsim/clock") => set_clock(state, body),
        ("GET", "/_fleetsim/lambda-timeouts") => {
            json_response(200, &json!(state.forwarder.lambda_timeouts()))
        }
        ("POST", "/_fleetsim/lambda-timeouts") => set_lambda_timeouts(state, body),
        ("POST", "/_fleetsim/reset") => post_reset(state, body),
        _ => json_response(
            404,
            &json!({"message": format!("no oracle route {method} {route}")}),
        ),
    }
}

/// Replaces the fault rules, or appends to them (`append`).
fn set_faults(state: &AppState, body: &[u8]) -> HttpResponse {
    match serde_json::from_slice::<FaultsBody>(body) {
        Ok(b) => {
            let mut f = lock(&state.faults);
            if b.append {
                f.extend(b.faults);
            } else {
                f.replace(b.faults);
            }
            json_response(200, &json!({"faults": f.rules()}))
        }
        Err(e) => bad(format!("invalid faults body: {e}")),
    }
}

/// Sets the clock's speed and/or moves it forward.
fn set_clock(state: &AppState, body: &[u8]) -> HttpResponse {
    match serde_json::from_slice::<ClockBody>(body) {
        Ok(b) => {
            if let Some(s) = b.speed {
                state.clock.set_speed(s);
            }
            if let Some(a) = b.advance_seconds {
                state.clock.advance_ms((a * 1000.0) as i64);
            }
            json_response(200, &clock(state))
        }
        Err(e) => bad(format!("invalid clock body: {e}")),
    }
}

fn set_lambda_timeouts(state: &AppState, body: &[u8]) -> HttpResponse {
    match serde_json::from_slice::<LambdaTimeoutsBody>(body) {
        Ok(b) => {
            state.forwarder.set_lambda_timeout_overrides(b.overrides);
            json_response(200, &json!(state.forwarder.lambda_timeouts()))
        }
        Err(e) => bad(format!("invalid lambda-timeouts body: {e}")),
    }
}

/// An empty body is a partial reset (`full: false`).
fn post_reset(state: &AppState, body: &[u8]) -> HttpResponse {
    let b = if body.is_empty() {
        Ok(ResetBody::default())
    } else {
        serde_json::from_slice::<ResetBody>(body)
    };
    match b {
        Ok(b) => {
            reset(state, b.full);
            json_response(200, &json!({"reset": true, "full": b.full}))
        }
        Err(e) => bad(format!("invalid reset body: {e}")),
    }
}

fn clock(state: &AppState) -> Value {
    let now = state.clock.now_ms();
    json!({"now": iso8601(now), "now_ms": now, "speed": state.clock.speed()})
}

fn iam_log(state: &AppState) -> Value {
    let Some(gate) = &state.iam else {
        return json!({"enabled": false, "decisions": [], "denied": []});
    };
    let decisions = gate.decisions();
    let denied: Vec<_> = decisions.iter().filter(|d| !d.allowed).collect();
    json!({"enabled": true, "decisions": decisions, "denied": denied})
}

fn reset(state: &AppState, full: bool) {
    *lock(&state.stats) = Stats::default();
    if let Some(gate) = &state.iam {
        gate.reset();
    }
    lock(&state.sessions).log.clear();
    let mut sim = lock(&state.sim);
    if full {
        *sim = Sim::new(state.fleet.clone(), state.sim_config, state.clock.now_ms());
    } else {
        sim.reset_counters();
    }
}

fn commands(state: &AppState) -> Value {
    let (sim, now) = state.settled_sim();
    let list: Vec<Value> = sim.commands[sim.oracle_since..]
        .iter()
        .map(|c| {
            let v = command_view(c, now);
            json!({
                "account": c.account,
                "region": c.region,
                "command_id": c.id,
                "document_name": c.document_name,
                "instance_ids": c.instance_ids,
                "parameters": c.parameters,
                "comment": c.comment,
                "timeout_seconds": c.timeout_seconds,
                "max_concurrency": c.max_concurrency,
                "max_errors": c.max_errors,
                "requested_at": iso8601(c.requested_ms),
                "received_wall_ms": c.received_wall_ms,
                "ended_at": ended_at(c, now),
                "status": v.status,
                "status_details": v.details,
                "hooks": hooks_ran(c),
            })
        })
        .collect();
    json!(list)
}

/// When the command's last invocation ended (simulated), once all of them have; else null.
fn ended_at(c: &crate::sim::Command, now: i64) -> Value {
    let ends: Option<Vec<i64>> = c.invocations.iter().map(|i| view(i, now).end_ms).collect();
    match ends.and_then(|e| e.into_iter().max()) {
        Some(ms) => json!(iso8601(ms)),
        None => Value::Null,
    }
}

/// What AWS-RunPatchBaselineWithHooks did on each instance whose invocation ended: the
/// hooks that ran (with their documents), the first failed step, whether it installed.
fn hooks_ran(c: &crate::sim::Command) -> Value {
    let per_instance: serde_json::Map<String, Value> = c
        .invocations
        .iter()
        .filter(|i| i.applied)
        .filter_map(|i| Some((i.instance_id.clone(), json!(i.hooks.as_ref()?))))
        .collect();
    Value::Object(per_instance)
}

fn key(k: &(String, String)) -> String {
    format!("{}/{}", k.0, k.1)
}

fn stats(state: &AppState) -> Value {
    let (sim, _now) = state.settled_sim();
    let mut per_instance: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &sim.commands[sim.oracle_since..] {
        for id in &c.instance_ids {
            *per_instance.entry(id.as_str()).or_default() += 1;
        }
    }
    let multiple: Vec<&str> = per_instance
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    let st = lock(&state.stats);
    let calls: BTreeMap<&String, Value> = st
        .ops
        .iter()
        .map(|(k, c)| {
            (
                k,
                json!({"calls": c.calls, "throttled": c.throttled, "injected_errors": c.injected_errors, "dropped": c.dropped, "delayed": c.delayed}),
            )
        })
        .collect();
    let forwarded_calls: BTreeMap<&String, Value> = st
        .forwarded_ops
        .iter()
        .map(|(k, c)| {
            (
                k,
                json!({"calls": c.calls, "throttled": c.throttled, "injected_errors": c.injected_errors, "conflicts": c.conflicts}),
            )
        })
        .collect();
    json!({
        "forwarded_calls": forwarded_calls,
        "lambda_timed_out": st.lambda_timed_out,
        "bench": st.bench.to_json(),
        "calls": calls,
        "total_calls": st.ops.values().map(|c| c.calls).sum::<u64>(),
        "total_throttled": st.ops.values().map(|c| c.throttled).sum::<u64>(),
        "forwarded": st.forwarded,
        "max_in_flight": sim.max_in_flight().iter().map(|(k, v)| (key(k), *v)).collect::<BTreeMap<_, _>>(),
        "in_flight": sim.in_flight().iter().map(|(k, v)| (key(k), *v)).collect::<BTreeMap<_, _>>(),
        "commands_sent": sim.commands.len() - sim.oracle_since,
        "commands_per_instance": per_instance,
        "instances_with_multiple_commands": multiple,
    })
}

fn instances(state: &AppState) -> Value {
    let (sim, now) = state.settled_sim();
    let mut last: BTreeMap<&str, (&str, Value)> = BTreeMap::new();
    let mut received: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &sim.commands {
        for inv in &c.invocations {
            let v = view(inv, now);
            *received.entry(inv.instance_id.as_str()).or_default() += 1;
            last.insert(
                inv.instance_id.as_str(),
                (c.id.as_str(), json!({"status": v.status, "status_details": v.details, "operation": c.param("Operation")})),
            );
        }
    }
    let list: Vec<Value> = sim
        .fleet
        .order
        .iter()
        .filter_map(|id| sim.fleet.instances.get(id))
        .map(|i| {
            let (cmd, status) = match last.get(i.id.as_str()) {
                Some((c, s)) => (json!(c), s.clone()),
                None => (Value::Null, Value::Null),
            };
            json!({
                "instance_id": i.id,
                "account": i.account,
                "region": i.region,
                "agent": i.agent,
                "install": i.install,
                "duration_seconds": i.duration,
                "commands_received": received.get(i.id.as_str()).copied().unwrap_or(0),
                "last_command_id": cmd,
                "last_invocation": status,
                "patch_state": sim.patch.get(&i.id).map(|ps| patch_state_json(&i.id, ps)),
            })
        })
        .collect();
    json!(list)
}
