//! `bench-scale --mode direct` (issue 8): runs the real handlers in-process, in the order
//! `statemachine/patching.asl.json` calls them, against the same emulators as the local
//! stack, on fleetsim's frozen clock: issue 8's shortcut for fleet sizes that moto's Step
//! Functions interpreter cannot run in time on 2 cores (the handler code is the same).
//!
//! ```text
//! cargo run -p fleetpatch --example scale_driver -- --input RUN.json --name EXEC_NAME \
//!     --out RESULT.json [--max-in-flight 24] [--max-wall-seconds S] \
//!     [--lambda-timeout dispatch=120]...
//! ```
//! with the functions' environment (`AWS_ENDPOINT_URL` = fleetsim, `FLEETPATCH_TABLE`, ...).
//! `FLEETPATCH_SIM_URL` names fleetsim's oracle when it is not `AWS_ENDPOINT_URL`.
//!
//! Invariants:
//! - each handler is built as `fleetpatch::wiring` builds its Lambda function: the same
//!   configuration from the environment, the same clients, the same SDK app name (the local
//!   stack evaluates each call against that function's IAM role);
//! - the path is the ASL's: Plan; the location Map with Plan's MaxConcurrency; per location
//!   Expand, ReadyToDispatch, poll segments (NextSegment, PollSegment, then per round
//!   WaitForInvocations, Dispatch, Continue, and SegmentEnd), SegmentDone, Settle (Unsettled
//!   when it fails); LocationsDone; Aggregate (AggregateFromRecords when it fails). Retry is
//!   read from the ASL and applied on the wall clock (as the contract says); Catch is
//!   modelled where the ASL has one. The Map-level Catches (a child failing outside its own
//!   Catches) are not modelled: an in-process child cannot fail that way;
//! - every state entered is one transition, retries included (as AWS bills Standard
//!   workflows); a test walks the ASL itself and fails if the driver's path differs;
//! - the simulated clock moves only when no handler call is in flight and every location
//!   is waiting or finished; it then jumps to the earliest wake time. Never the wall clock.

use fleetpatch::wiring::{self, Handler};
use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const ASL: &str = include_str!("../../statemachine/patching.asl.json");

type AnyError = Box<dyn std::error::Error>;

// ---------------------------------------------------------------------------------------
// The path through the state machine (pure: a test checks it against the ASL)
// ---------------------------------------------------------------------------------------

/// The Lambda functions the state machine invokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Function {
    Plan,
    Expand,
    Dispatch,
    Settle,
    Gate,
    Aggregate,
}

impl Function {
    const ALL: [Function; 6] = [
        Function::Plan,
        Function::Expand,
        Function::Dispatch,
        Function::Settle,
        Function::Gate,
        Function::Aggregate,
    ];

    fn name(self) -> &'static str {
        match self {
            Function::Plan => "plan",
            Function::Expand => "expand",
            Function::Dispatch => "dispatch",
            Function::Settle => "settle",
            Function::Gate => "gate",
            Function::Aggregate => "aggregate",
        }
    }
}

/// A task's error after its retries, as a Catch hands it on (`{"Error", "Cause"}`).
#[derive(Debug, Clone, PartialEq)]
struct Caught {
    error: String,
    cause: String,
}

impl Caught {
    fn to_value(&self) -> Value {
        json!({"Error": self.error, "Cause": self.cause})
    }
}

/// How a task or a wait ended.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Waited,
    Ok(Value),
    Failed(Caught),
}

/// What a location child asks for next.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Invoke `function` with `payload`, from the Task state `state`.
    Call {
        state: &'static str,
        function: Function,
        payload: Value,
    },
    /// Wait this many simulated seconds.
    Wait(u64),
    /// The child execution has ended.
    Finished,
}

/// States entered, by name.
#[derive(Debug, Default, Clone, PartialEq)]
struct Transitions {
    by_state: BTreeMap<String, u64>,
}

impl Transitions {
    fn enter(&mut self, state: &str) {
        *self.by_state.entry(state.to_string()).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.by_state.values().sum()
    }
}

fn flag(v: &Value, field: &str) -> Option<bool> {
    v.get(field).and_then(Value::as_bool)
}

/// One location's child execution: where it is (a Task or a Wait it awaits) and its data.
struct Child {
    at: &'static str,
    data: Value,
}

impl Child {
    /// The child as the Map starts it (`ItemSelector`: the run ID and the location): it
    /// enters Expand.
    fn start(run_id: &str, location: &str, t: &mut Transitions) -> (Child, Step) {
        let data = json!({"runId": run_id, "location": location});
        let child = Child {
            at: "Expand",
            data: data.clone(),
        };
        (child, enter_task(t, "Expand", Function::Expand, data))
    }

    /// Takes the answer to the last step, runs the states that need nothing from outside
    /// (Choice, Pass, Map, Succeed), and returns the next step. Every state entered is
    /// counted in `t`.
    fn advance(&mut self, answer: Answer, t: &mut Transitions) -> Step {
        let Some(mut state) = self.take(answer) else {
            return Step::Finished;
        };
        loop {
            t.enter(state);
            match self.leave(state) {
                Ok(next) => state = next,
                Err(step) => return step,
            }
        }
    }

    /// The answer of the Task or Wait the child is in: its data, and the state it leads to
    /// (None: the child has ended).
    fn take(&mut self, answer: Answer) -> Option<&'static str> {
        Some(match (self.at, answer) {
            ("Expand", Answer::Ok(v)) => {
                self.data = v; // OutputPath $.Payload
                "ReadyToDispatch"
            }
            ("Expand", Answer::Failed(e)) => {
                self.data["error"] = e.to_value(); // Catch, ResultPath $.error
                "Settle"
            }
            ("WaitForInvocations", Answer::Waited) => "Dispatch",
            ("Dispatch", Answer::Ok(v)) => {
                self.data = v;
                "Continue"
            }
            ("Dispatch", Answer::Failed(e)) => {
                self.data["error"] = e.to_value();
                "SegmentEnd"
            }
            ("Settle", Answer::Ok(_)) => return None,
            ("Settle", Answer::Failed(_)) => "Unsettled", // Catch, ResultPath null
            (at, answer) => panic!("driver bug: answer {answer:?} in state {at}"),
        })
    }

    /// Leaves the state just entered: Ok(the next state), or Err(the step it waits on).
    fn leave(&mut self, state: &'static str) -> Result<&'static str, Step> {
        let done = flag(&self.data, "done");
        match state {
            "ReadyToDispatch" if done == Some(false) => Ok("NextSegment"),
            "ReadyToDispatch" => Ok("Settle"),
            "NextSegment" => Ok("PollSegment"),
            "PollSegment" => Ok("WaitForInvocations"),
            "WaitForInvocations" => {
                self.at = state;
                Err(Step::Wait(self.data["waitSeconds"].as_u64().unwrap_or(0)))
            }
            "Dispatch" => {
                self.at = state;
                Err(call(state, Function::Dispatch, self.data.clone()))
            }
            "Settle" => {
                self.at = state;
                Err(call(state, Function::Settle, self.data.clone()))
            }
            "Continue" if done == Some(true) || flag(&self.data, "segmentEnd") == Some(true) => {
                Ok("SegmentEnd")
            }
            "Continue" => Ok("WaitForInvocations"),
            // The segment execution ends; PollSegment's output is its one item's output.
            "SegmentEnd" => Ok("SegmentDone"),
            "SegmentDone" if self.data.get("error").is_some() || done == Some(true) => Ok("Settle"),
            "SegmentDone" => Ok("NextSegment"),
            "Unsettled" => Err(Step::Finished),
            other => panic!("driver bug: no transition from {other}"),
        }
    }
}

fn call(state: &'static str, function: Function, payload: Value) -> Step {
    Step::Call {
        state,
        function,
        payload,
    }
}

fn enter_task(
    t: &mut Transitions,
    state: &'static str,
    function: Function,
    payload: Value,
) -> Step {
    t.enter(state);
    call(state, function, payload)
}

/// The parent execution's states around the Map, in order: before it, and after it on
/// success, for a run of one wave (the driver runs no `waves`: its wave loop goes round
/// once). Aggregate's Catch leads to AggregateFromRecords.
const PARENT_BEFORE_MAP: [&str; 4] = ["Plan", "FirstWave", "WaveStart", "WaveReady"];
const PARENT_MAP: &str = "Locations";
const PARENT_AFTER_MAP: [&str; 4] = ["WaveEnd", "WaveGate", "LocationsDone", "Aggregate"];
const PARENT_AGGREGATE_CAUGHT: &str = "AggregateFromRecords";

// ---------------------------------------------------------------------------------------
// Retry, as the ASL says
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Retrier {
    errors: Vec<String>,
    interval_seconds: f64,
    max_attempts: u64,
    backoff_rate: f64,
    max_delay_seconds: Option<f64>,
}

/// Each Task state's Retry, by state name (nested ItemProcessors included).
fn retriers(asl: &Value) -> BTreeMap<String, Vec<Retrier>> {
    let mut out = BTreeMap::new();
    collect_retriers(asl, &mut out);
    out
}

fn collect_retriers(machine: &Value, out: &mut BTreeMap<String, Vec<Retrier>>) {
    let Some(states) = machine.get("States").and_then(Value::as_object) else {
        return;
    };
    for (name, state) in states {
        let list = state["Retry"].as_array().cloned().unwrap_or_default();
        let parsed = list
            .iter()
            .map(|r| Retrier {
                errors: r["ErrorEquals"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                interval_seconds: r["IntervalSeconds"].as_f64().unwrap_or(1.0),
                max_attempts: r["MaxAttempts"].as_u64().unwrap_or(3),
                backoff_rate: r["BackoffRate"].as_f64().unwrap_or(2.0),
                max_delay_seconds: r["MaxDelaySeconds"].as_f64(),
            })
            .collect();
        out.insert(name.clone(), parsed);
        if let Some(inner) = state.get("ItemProcessor") {
            collect_retriers(inner, out);
        }
    }
}

/// The wall-clock wait before retry `attempt` (1-based) of `r`, or None when `error` is not
/// retried by it any more. Full jitter is left out: the delay is its upper bound.
fn retry_delay(
    rs: &[Retrier],
    error: &str,
    attempts: &mut BTreeMap<usize, u64>,
) -> Option<Duration> {
    let (i, r) = rs
        .iter()
        .enumerate()
        .find(|(_, r)| r.errors.iter().any(|e| e == error || e == "States.ALL"))?;
    let n = attempts.entry(i).or_default();
    if *n >= r.max_attempts {
        return None;
    }
    *n += 1;
    let mut delay = r.interval_seconds * r.backoff_rate.powi(*n as i32 - 1);
    if let Some(max) = r.max_delay_seconds {
        delay = delay.min(max);
    }
    Some(Duration::from_secs_f64(delay))
}

// ---------------------------------------------------------------------------------------
// The handlers, built as the Lambda functions build them
// ---------------------------------------------------------------------------------------

struct Handlers {
    planner: fleetpatch::plan::Planner,
    expander: fleetpatch::expand::Expander<fleetpatch::clients::AssumeRoleFactory>,
    dispatcher: fleetpatch::dispatch::Dispatcher<fleetpatch::clients::AssumeRoleFactory>,
    settler: fleetpatch::settle::Settler,
    gate: fleetpatch::gate::Gate,
    aggregator: fleetpatch::aggregate::Aggregator<fleetpatch::clients::AssumeRoleFactory>,
}

async fn built<H: Handler>(
    build: impl FnOnce(fleetpatch::config::Config, &aws_config::SdkConfig) -> H,
) -> Result<H, AnyError> {
    let (config, sdk) = wiring::init(H::APP_NAME).await?;
    Ok(build(config, &sdk))
}

impl Handlers {
    async fn from_env() -> Result<Handlers, AnyError> {
        Ok(Handlers {
            planner: built(wiring::planner).await?,
            expander: built(wiring::expander).await?,
            dispatcher: built(wiring::dispatcher).await?,
            settler: built(wiring::settler).await?,
            gate: built(wiring::gate).await?,
            aggregator: built(wiring::aggregator).await?,
        })
    }

    async fn invoke(&self, function: Function, payload: Value) -> Result<Value, Caught> {
        match function {
            Function::Plan => invoke_one(&self.planner, payload).await,
            Function::Expand => invoke_one(&self.expander, payload).await,
            Function::Dispatch => invoke_one(&self.dispatcher, payload).await,
            Function::Settle => invoke_one(&self.settler, payload).await,
            Function::Gate => invoke_one(&self.gate, payload).await,
            Function::Aggregate => invoke_one(&self.aggregator, payload).await,
        }
    }
}

/// One invocation as Lambda runs it: the payload decoded into the handler's request, the
/// answer encoded; an error carries its stable error type, as Step Functions sees it.
async fn invoke_one<H: Handler>(h: &H, payload: Value) -> Result<Value, Caught> {
    let caught = |error: &str, cause: String| Caught {
        error: error.to_string(),
        cause: json!({"errorType": error, "errorMessage": cause}).to_string(),
    };
    let req: H::Request = serde_json::from_value(payload)
        .map_err(|e| caught("Runtime.UnmarshalError", e.to_string()))?;
    let resp = h
        .call(req)
        .await
        .map_err(|e| caught(e.error_type(), e.to_string()))?;
    serde_json::to_value(resp).map_err(|e| caught("Runtime.MarshalError", e.to_string()))
}

// ---------------------------------------------------------------------------------------
// fleetsim's oracle: the simulated clock
// ---------------------------------------------------------------------------------------

/// A minimal HTTP/1.1 exchange with fleetsim's oracle (plain JSON on loopback), made only
/// while no handler call is in flight.
fn oracle(base: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, AnyError> {
    let hostport = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = std::net::TcpStream::connect(&hostport)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or("fleetsim oracle: malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("fleetsim oracle {method} {path}: {head}").into());
    }
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok(serde_json::from_str(&payload)?)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

struct SimClock {
    url: String,
    now_ms: i64,
}

impl SimClock {
    fn connect(url: &str) -> Result<SimClock, AnyError> {
        let c = oracle(url, "GET", "/_fleetsim/clock", None)?;
        if c["speed"].as_f64() != Some(0.0) {
            return Err(format!(
                "fleetsim's clock runs (speed {}); the driver needs it frozen (--speed 0)",
                c["speed"]
            )
            .into());
        }
        let now_ms = c["now_ms"].as_i64().ok_or("fleetsim clock: no now_ms")?;
        Ok(SimClock {
            url: url.to_string(),
            now_ms,
        })
    }

    /// Moves fleetsim's clock to `to_ms` (never back).
    fn advance_to(&mut self, to_ms: i64) -> Result<(), AnyError> {
        if to_ms <= self.now_ms {
            return Ok(());
        }
        let seconds = (to_ms - self.now_ms) as f64 / 1000.0;
        let c = oracle(
            &self.url,
            "POST",
            "/_fleetsim/clock",
            Some(&json!({"advance_seconds": seconds})),
        )?;
        self.now_ms = c["now_ms"].as_i64().unwrap_or(to_ms);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct LambdaStats {
    invocations: u64,
    ms: f64,
    max_ms: f64,
}

struct Driver {
    handlers: Handlers,
    retry: BTreeMap<String, Vec<Retrier>>,
    timeouts: BTreeMap<String, Duration>,
    stats: RefCell<BTreeMap<Function, LambdaStats>>,
    /// `--max-wall-seconds`: when the Map stops early (the run stays Running in the table,
    /// and RESULT.json says `Incomplete`).
    deadline: Option<Instant>,
    transitions: RefCell<Transitions>,
    retries: RefCell<u64>,
}

impl Driver {
    /// A Task state's invocation with the state's Retry: each attempt timed and counted,
    /// each retry one more transition. The error after the last attempt is what Catch sees.
    async fn task(
        &self,
        state: &'static str,
        function: Function,
        payload: Value,
    ) -> Result<Value, Caught> {
        let mut attempts = BTreeMap::new();
        loop {
            let started = Instant::now();
            let timeout = self.timeouts.get(function.name()).copied();
            let result = match timeout {
                Some(limit) => {
                    tokio::time::timeout(limit, self.handlers.invoke(function, payload.clone()))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Caught {
                                error: "Sandbox.Timedout".into(),
                                cause: format!("{} timed out after {limit:?}", function.name()),
                            })
                        })
                }
                None => self.handlers.invoke(function, payload.clone()).await,
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            {
                let mut stats = self.stats.borrow_mut();
                let s = stats.entry(function).or_default();
                s.invocations += 1;
                s.ms += ms;
                s.max_ms = s.max_ms.max(ms);
            }
            let Err(e) = result else { return result };
            let rs = self.retry.get(state).map(Vec::as_slice).unwrap_or(&[]);
            match retry_delay(rs, &e.error, &mut attempts) {
                Some(delay) => {
                    eprintln!(
                        "scale_driver: {state} failed ({}: {}); retrying in {delay:?}",
                        e.error, e.cause
                    );
                    *self.retries.borrow_mut() += 1;
                    self.transitions.borrow_mut().enter(state);
                    tokio::time::sleep(delay).await;
                }
                None => {
                    eprintln!(
                        "scale_driver: {state} failed for good ({}: {})",
                        e.error, e.cause
                    );
                    return Err(e);
                }
            }
        }
    }

    /// Per function: invocations, and the sum and maximum of their wall-clock ms.
    fn lambda_figures(&self) -> Value {
        let stats = self.stats.borrow();
        let figures: BTreeMap<&str, Value> = Function::ALL
            .iter()
            .map(|f| {
                let s = stats.get(f);
                let figure = json!({"invocations": s.map_or(0, |s| s.invocations),
                    "ms": s.map_or(0.0, |s| s.ms), "max_ms": s.map_or(0.0, |s| s.max_ms)});
                (f.name(), figure)
            })
            .collect();
        json!(figures)
    }

    fn enter(&self, state: &str) {
        self.transitions.borrow_mut().enter(state);
    }
}

type InFlight<'a> = FuturesUnordered<LocalBoxFuture<'a, (usize, Answer)>>;

/// The location Map's children: which are started, in flight, waiting (by wake time on the
/// simulated clock), finished.
struct MapRun<'a> {
    driver: &'a Driver,
    run_id: &'a str,
    locations: &'a [String],
    /// Children at once (Plan's locationConcurrency; 0: all).
    limit: usize,
    max_in_flight: usize,
    children: Vec<Option<Child>>,
    ready: VecDeque<(usize, Step)>,
    waiting: BinaryHeap<Reverse<(i64, usize)>>,
    started: usize,
    running: usize,
    finished: usize,
}

impl<'a> MapRun<'a> {
    fn new(
        driver: &'a Driver,
        run_id: &'a str,
        locations: &'a [String],
        max_concurrency: usize,
        max_in_flight: usize,
    ) -> Self {
        MapRun {
            driver,
            run_id,
            locations,
            limit: if max_concurrency == 0 {
                usize::MAX
            } else {
                max_concurrency
            },
            max_in_flight,
            children: Vec::with_capacity(locations.len()),
            ready: VecDeque::new(),
            waiting: BinaryHeap::new(),
            started: 0,
            running: 0,
            finished: 0,
        }
    }

    /// Starts children, in item order, while the Map has room.
    fn start_children(&mut self) {
        while self.running < self.limit && self.started < self.locations.len() {
            let mut t = self.driver.transitions.borrow_mut();
            let (child, step) = Child::start(self.run_id, &self.locations[self.started], &mut t);
            self.children.push(Some(child));
            self.ready.push_back((self.started, step));
            self.started += 1;
            self.running += 1;
        }
    }

    /// Routes the ready steps: calls go in flight (at most `max_in_flight`), waits to the
    /// heap, a finished child frees its slot.
    fn route(&mut self, in_flight: &mut InFlight<'a>, now_ms: i64) {
        while let Some((i, step)) = self.ready.pop_front() {
            match step {
                Step::Call { .. } if in_flight.len() >= self.max_in_flight => {
                    self.ready.push_front((i, step));
                    return;
                }
                Step::Call {
                    state,
                    function,
                    payload,
                } => {
                    let driver = self.driver;
                    in_flight.push(Box::pin(async move {
                        let answer = match driver.task(state, function, payload).await {
                            Ok(v) => Answer::Ok(v),
                            Err(e) => Answer::Failed(e),
                        };
                        (i, answer)
                    }));
                }
                Step::Wait(seconds) => self
                    .waiting
                    .push(Reverse((now_ms + seconds as i64 * 1000, i))),
                Step::Finished => {
                    self.children[i] = None;
                    self.finished += 1;
                    self.running -= 1;
                }
            }
        }
    }

    /// Hands child `i` the answer to its last step; its next step becomes ready.
    fn answer(&mut self, i: usize, answer: Answer) -> Result<(), AnyError> {
        let child = self.children[i]
            .as_mut()
            .ok_or("driver bug: an answer for a finished child")?;
        let step = child.advance(answer, &mut self.driver.transitions.borrow_mut());
        self.ready.push_back((i, step));
        Ok(())
    }

    fn progress(&self, sim_elapsed_ms: i64, wall: Instant) {
        eprintln!(
            "scale_driver: sim +{:.0}s wall {:.0}s: {}/{} locations finished, {} running, {} transitions",
            sim_elapsed_ms as f64 / 1000.0,
            wall.elapsed().as_secs_f64(),
            self.finished,
            self.locations.len(),
            self.running,
            self.driver.transitions.borrow().total(),
        );
    }

    /// Quiescent: jumps the clock to the earliest wake time and wakes every child due by
    /// then. False when no child waits (the Map is over).
    fn wake(&mut self, clock: &mut SimClock) -> Result<bool, AnyError> {
        let Some(Reverse((wake, _))) = self.waiting.peek().copied() else {
            return Ok(false);
        };
        clock.advance_to(wake)?;
        while let Some(Reverse((t, i))) = self.waiting.peek().copied() {
            if t > clock.now_ms {
                break;
            }
            self.waiting.pop();
            self.answer(i, Answer::Waited)?;
        }
        Ok(true)
    }
}

/// The location Map: children started in item order, at most `max_concurrency` at once
/// (0: all), handler calls at most `max_in_flight` at once; the clock advanced only when
/// nothing is in flight or ready.
async fn run_map(
    driver: &Driver,
    clock: &mut SimClock,
    run_id: &str,
    locations: &[String],
    max_concurrency: usize,
    max_in_flight: usize,
) -> Result<bool, AnyError> {
    let mut map = MapRun::new(driver, run_id, locations, max_concurrency, max_in_flight);
    let mut in_flight: InFlight<'_> = FuturesUnordered::new();
    let (wall, sim_start) = (Instant::now(), clock.now_ms);
    let mut last_progress = Instant::now();

    loop {
        map.start_children();
        map.route(&mut in_flight, clock.now_ms);
        if map.running < map.limit && map.started < locations.len() {
            continue;
        }
        if let Some((i, answer)) = in_flight.next().await {
            map.answer(i, answer)?;
            continue;
        }
        if !map.ready.is_empty() {
            continue;
        }
        if !map.wake(clock)? {
            break;
        }
        if driver.deadline.is_some_and(|d| Instant::now() >= d) {
            map.progress(clock.now_ms - sim_start, wall);
            eprintln!("scale_driver: --max-wall-seconds reached: stopping the Map, no aggregate");
            return Ok(false);
        }

        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            map.progress(clock.now_ms - sim_start, wall);
        }
    }
    if map.finished != locations.len() {
        let n = locations.len();
        return Err(format!("driver bug: {} of {n} locations finished", map.finished).into());
    }
    Ok(true)
}

struct Args {
    input: String,
    name: String,
    out: String,
    max_in_flight: usize,
    max_wall: Option<Duration>,
    timeouts: BTreeMap<String, Duration>,
}

fn parse_args() -> Result<Args, AnyError> {
    let mut a = Args {
        input: String::new(),
        name: String::new(),
        out: String::new(),
        max_in_flight: 24,
        max_wall: None,
        timeouts: BTreeMap::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--input" => a.input = v()?,
            "--name" => a.name = v()?,
            "--out" => a.out = v()?,
            "--max-in-flight" => a.max_in_flight = v()?.parse()?,
            "--max-wall-seconds" => a.max_wall = Some(Duration::from_secs(v()?.parse()?)),
            "--lambda-timeout" => {
                let kv = v()?;
                let (f, s) = kv
                    .split_once('=')
                    .ok_or("--lambda-timeout FUNCTION=SECONDS")?;
                a.timeouts
                    .insert(f.to_string(), Duration::from_secs(s.parse()?));
            }
            _ => return Err(format!("unknown argument {k}").into()),
        }
    }
    if a.input.is_empty() || a.name.is_empty() || a.out.is_empty() || a.max_in_flight == 0 {
        return Err("usage: scale_driver --input RUN.json --name EXEC_NAME --out RESULT.json [--max-in-flight N] [--max-wall-seconds S] [--lambda-timeout FN=S]...".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<(), AnyError> {
    let args = parse_args()?;
    let input: Value = serde_json::from_str(&std::fs::read_to_string(&args.input)?)?;
    let sim_url = std::env::var("FLEETPATCH_SIM_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .map_err(|_| "set AWS_ENDPOINT_URL (fleetsim) or FLEETPATCH_SIM_URL")?;
    let mut clock = SimClock::connect(&sim_url)?;
    let asl: Value = serde_json::from_str(ASL)?;
    let driver = Driver {
        handlers: Handlers::from_env().await?,
        retry: retriers(&asl),
        timeouts: args.timeouts,
        stats: RefCell::new(BTreeMap::new()),
        transitions: RefCell::new(Transitions::default()),
        retries: RefCell::new(0),
        deadline: args.max_wall.map(|d| Instant::now() + d),
    };
    let wall = Instant::now();
    let sim_started_ms = clock.now_ms;

    let (run_id, status, summary) =
        run(&driver, &mut clock, input, &args.name, args.max_in_flight).await?;

    let t = driver.transitions.borrow();
    let result = json!({
        "run_id": run_id,
        "execution_name": args.name,
        "sim_started_ms": sim_started_ms,
        "sim_ended_ms": clock.now_ms,
        "transitions": t.total(),
        "transitions_by_state": t.by_state,
        "retries": *driver.retries.borrow(),
        "lambda": driver.lambda_figures(),
        "final_status": status,
        "run_status": summary.get("status").cloned().unwrap_or(Value::Null),
        "instances_targeted": summary.get("instancesTargeted").cloned().unwrap_or(Value::Null),
        "instance_states": summary.get("instanceStates").cloned().unwrap_or(Value::Null),
        "location_outcomes": summary.get("locationOutcomes").cloned().unwrap_or(Value::Null),
        "wall_seconds": wall.elapsed().as_secs_f64(),
        "max_in_flight": args.max_in_flight,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)?;
    eprintln!(
        "scale_driver: {status} in {:.1}s wall, {:.0}s simulated, {} transitions; wrote {}",
        wall.elapsed().as_secs_f64(),
        (clock.now_ms - sim_started_ms) as f64 / 1000.0,
        t.total(),
        args.out
    );
    Ok(())
}

/// The parent execution: Plan, the Map, LocationsDone, Aggregate (or AggregateFromRecords).
/// Answers the run ID, the execution's status (`Incomplete` when `--max-wall-seconds`
/// stopped the Map) and aggregate's summary.
async fn run(
    driver: &Driver,
    clock: &mut SimClock,
    input: Value,
    name: &str,
    max_in_flight: usize,
) -> Result<(String, &'static str, Value), AnyError> {
    for state in PARENT_BEFORE_MAP {
        driver.enter(state);
    }
    let plan = match driver
        .task(
            "Plan",
            Function::Plan,
            json!({"input": input, "executionName": name}),
        )
        .await
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "scale_driver: Plan failed: the execution fails ({})",
                e.cause
            );
            return Ok((name.to_string(), "Failed", Value::Null));
        }
    };
    let run_id = plan["runId"].as_str().ok_or("plan: no runId")?.to_string();
    let wave = |action: &str| json!({"runId": run_id, "wave": 0, "action": action});
    let start = driver
        .task("WaveStart", Function::Gate, wave("start"))
        .await
        .map_err(|e| format!("WaveStart failed: {}", e.cause))?;
    let concurrency = start["locationConcurrency"].as_u64().unwrap_or(0) as usize;
    let locations: Vec<String> = serde_json::from_value(start["locations"].clone())?;
    eprintln!(
        "scale_driver: run {run_id}: {} locations, {concurrency} at once",
        locations.len()
    );

    driver.enter(PARENT_MAP);
    let complete = run_map(
        driver,
        clock,
        &run_id,
        &locations,
        concurrency,
        max_in_flight,
    )
    .await?;
    if !complete {
        return Ok((run_id, "Incomplete", Value::Null));
    }

    for state in PARENT_AFTER_MAP {
        driver.enter(state);
    }
    driver
        .task("WaveEnd", Function::Gate, wave("end"))
        .await
        .map_err(|e| format!("WaveEnd failed: {}", e.cause))?;
    let (status, summary) = aggregate(driver, &run_id).await;
    Ok((run_id, status, summary))
}

/// Aggregate, and AggregateFromRecords when it fails for good (its Catch): the execution's
/// status and the run's summary.
async fn aggregate(driver: &Driver, run_id: &str) -> (&'static str, Value) {
    let full = driver
        .task("Aggregate", Function::Aggregate, json!({"runId": run_id}))
        .await;
    let e = match full {
        Ok(summary) => return ("Succeeded", summary),
        Err(e) => e,
    };
    driver.enter(PARENT_AGGREGATE_CAUGHT);
    let req = json!({"runId": run_id, "recordsOnly": true, "error": e.to_value()});
    match driver
        .task(PARENT_AGGREGATE_CAUGHT, Function::Aggregate, req)
        .await
    {
        Ok(summary) => ("Succeeded", summary),
        Err(_) => ("Failed", Value::Null),
    }
}

#[cfg(test)]
mod tests {
    //! The driver's path against the ASL: a small walker follows the state machine itself
    //! (Task, Choice, Pass, Map, Wait, Succeed, Catch) with scripted answers, and the
    //! driver must enter the same states, in the same order, with the same calls and waits.

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        Entered(String),
        Called(String),
        Waited(u64),
    }

    fn asl() -> Value {
        serde_json::from_str(ASL).unwrap()
    }

    fn function_of(task: &Value) -> String {
        let arn = task["Parameters"]["FunctionName"].as_str().unwrap();
        arn.trim_start_matches("${")
            .trim_end_matches("FunctionArn}")
            .to_lowercase()
    }

    fn set_path(data: &mut Value, path: &Value, value: Value) {
        match path.as_str() {
            Some("$") => *data = value,
            Some(p) => {
                let field = p.strip_prefix("$.").unwrap();
                assert!(!field.contains('.'), "walker: nested ResultPath {p}");
                data[field] = value;
            }
            None => {} // ResultPath null: the input passes through
        }
    }

    fn choose(state: &Value, data: &Value) -> String {
        for rule in state["Choices"].as_array().unwrap() {
            let field = rule["Variable"]
                .as_str()
                .unwrap()
                .strip_prefix("$.")
                .unwrap();
            let got = data.get(field);
            let hit = if let Some(b) = rule.get("BooleanEquals") {
                got == Some(b)
            } else if let Some(p) = rule.get("IsPresent") {
                got.is_some() == p.as_bool().unwrap()
            } else {
                panic!("walker: unsupported Choice rule {rule}")
            };
            if hit {
                return rule["Next"].as_str().unwrap().to_string();
            }
        }
        state["Default"].as_str().unwrap().to_string()
    }

    /// A Task state: its scripted answer applied to `data` as the state's paths say; Some(the
    /// Catch's Next) when it failed.
    fn walk_task(
        state: &Value,
        data: &mut Value,
        script: &mut VecDeque<(String, Answer)>,
        log: &mut Vec<Event>,
    ) -> Option<String> {
        let function = function_of(state);
        log.push(Event::Called(function.clone()));
        let (f, answer) = script.pop_front().expect("script ran out");
        assert_eq!(f, function, "script out of order");
        match answer {
            Answer::Ok(_) if state.get("OutputPath") == Some(&Value::Null) => *data = json!({}),
            Answer::Ok(v) if state.get("ResultPath").is_some() => {
                set_path(data, &state["ResultPath"], v)
            }
            Answer::Ok(v) => *data = v,
            Answer::Failed(e) => {
                let catch = state["Catch"]
                    .as_array()
                    .and_then(|c| c.first())
                    .expect("a failed task without Catch");
                set_path(data, &catch["ResultPath"], e.to_value());
                return Some(catch["Next"].as_str().unwrap().to_string());
            }
            Answer::Waited => unreachable!(),
        }
        None
    }

    /// Walks `machine` from its StartAt with `data`; answers each Task from `script` (by
    /// function name, in order). Returns the machine's output.
    fn walk(
        machine: &Value,
        mut data: Value,
        script: &mut VecDeque<(String, Answer)>,
        log: &mut Vec<Event>,
    ) -> Value {
        let mut name = machine["StartAt"].as_str().unwrap().to_string();
        loop {
            let state = &machine["States"][&name];
            log.push(Event::Entered(name.clone()));
            let mut next = state["Next"].as_str().map(String::from);
            let mut caught = None;
            match state["Type"].as_str().unwrap() {
                "Task" => caught = walk_task(state, &mut data, script, log),
                "Choice" => next = Some(choose(state, &data)),
                "Pass" => {
                    if let Some(r) = state.get("Result") {
                        data = r.clone();
                    }
                    // Parameters with ResultPath (NextSegment) add a field no Choice reads.
                }
                "Wait" => {
                    let field = state["SecondsPath"]
                        .as_str()
                        .unwrap()
                        .strip_prefix("$.")
                        .unwrap();
                    log.push(Event::Waited(data[field].as_u64().unwrap()));
                }
                "Map" => {
                    // A one-item Map (the poll segment): its output is the item's output.
                    let out = walk(&state["ItemProcessor"], data.clone(), script, log);
                    assert_eq!(state["OutputPath"], "$[0]");
                    data = out;
                }
                "Succeed" => return data,
                other => panic!("walker: unsupported state type {other}"),
            }
            if caught.is_some() {
                next = caught;
            } else if state["End"] == true {
                return data;
            }
            name = next.expect("a state without Next or End");
        }
    }

    /// The driver's child for one location, run against `script`: its calls and waits, and
    /// the states it counted.
    fn drive(script: &mut VecDeque<(String, Answer)>) -> (Vec<Event>, Transitions) {
        let mut t = Transitions::default();
        let (mut child, mut step) = Child::start("r", "111111111111/us-east-1", &mut t);
        let mut order = Vec::new();
        loop {
            order.push(step.clone());
            let answer = match &step {
                Step::Call { function, .. } => {
                    let (f, a) = script.pop_front().expect("script ran out");
                    assert_eq!(f, function.name());
                    a
                }
                Step::Wait(_) => Answer::Waited,
                Step::Finished => break,
            };
            step = child.advance(answer, &mut t);
        }
        (steps_as_events(&order), t)
    }

    fn steps_as_events(steps: &[Step]) -> Vec<Event> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Call { function, .. } => Some(Event::Called(function.name().to_string())),
                Step::Wait(s) => Some(Event::Waited(*s)),
                Step::Finished => None,
            })
            .collect()
    }

    fn counts(log: &[Event]) -> Transitions {
        let mut t = Transitions::default();
        for e in log {
            if let Event::Entered(s) = e {
                t.enter(s);
            }
        }
        t
    }

    fn task(done: bool, segment_end: bool, wait: u64) -> Answer {
        Answer::Ok(
            json!({"runId": "r", "location": "111111111111/us-east-1", "done": done,
                          "segmentEnd": segment_end, "waitSeconds": wait}),
        )
    }

    fn failed(error: &str) -> Answer {
        Answer::Failed(Caught {
            error: error.into(),
            cause: "{}".into(),
        })
    }

    /// Scripts, each a location's answers in order: (function, answer).
    fn scripts() -> Vec<(&'static str, Vec<(&'static str, Answer)>)> {
        vec![
            (
                "nothing to dispatch",
                vec![
                    ("expand", task(true, false, 0)),
                    ("settle", task(true, false, 0)),
                ],
            ),
            (
                "three rounds",
                vec![
                    ("expand", task(false, false, 30)),
                    ("dispatch", task(false, false, 30)),
                    ("dispatch", task(false, false, 30)),
                    ("dispatch", task(true, false, 0)),
                    ("settle", Answer::Ok(json!({}))),
                ],
            ),
            (
                "two segments",
                vec![
                    ("expand", task(false, false, 5)),
                    ("dispatch", task(false, true, 30)),
                    ("dispatch", task(false, false, 30)),
                    ("dispatch", task(true, false, 0)),
                    ("settle", Answer::Ok(json!({}))),
                ],
            ),
            (
                "dispatch fails, settle fails",
                vec![
                    ("expand", task(false, false, 30)),
                    ("dispatch", failed("AwsError")),
                    ("settle", failed("Transient")),
                ],
            ),
            (
                "expand fails",
                vec![
                    ("expand", failed("AwsError")),
                    ("settle", Answer::Ok(json!({}))),
                ],
            ),
        ]
    }

    #[test]
    fn the_driver_enters_the_states_the_asl_enters_for_every_location_path() {
        let asl = asl();
        let child = &asl["States"]["Locations"]["ItemProcessor"];
        for (name, script) in scripts() {
            // GIVEN a location's scripted answers
            let script: VecDeque<(String, Answer)> = script
                .into_iter()
                .map(|(f, a)| (f.to_string(), a))
                .collect();

            // WHEN the ASL walker and the driver run them
            let mut log = Vec::new();
            let data = json!({"runId": "r", "location": "111111111111/us-east-1"});
            walk(child, data, &mut script.clone(), &mut log);
            let (driver_calls, driver_counts) = drive(&mut script.clone());

            // THEN they make the same calls and waits, and count the same states
            let asl_calls: Vec<Event> = log
                .iter()
                .filter(|e| !matches!(e, Event::Entered(_)))
                .cloned()
                .collect();
            assert_eq!(driver_calls, asl_calls, "{name}: calls and waits");
            assert_eq!(driver_counts, counts(&log), "{name}: states entered");
        }
    }

    #[test]
    fn a_poll_round_and_a_location_cost_what_the_asl_says() {
        // GIVEN the ASL walked for a location of one round and one of three rounds
        let asl = asl();
        let child = &asl["States"]["Locations"]["ItemProcessor"];
        let rounds = |n: usize| {
            let mut script: VecDeque<(String, Answer)> = VecDeque::new();
            script.push_back(("expand".into(), task(false, false, 30)));
            for i in 0..n {
                script.push_back(("dispatch".into(), task(i + 1 == n, false, 30)));
            }
            script.push_back(("settle".into(), Answer::Ok(json!({}))));
            let mut log = Vec::new();
            walk(child, json!({}), &mut script.clone(), &mut log);
            (counts(&log).total(), drive(&mut script).1.total())
        };

        // WHEN the transitions are counted both ways
        let (one, one_driver) = rounds(1);
        let (three, three_driver) = rounds(3);

        // THEN a round is WaitForInvocations, Dispatch, Continue (3 states), a location's
        // fixed part is the rest, and the driver agrees on both
        let per_round = (three - one) / 2;
        assert_eq!(per_round, 3);
        assert_eq!(
            one - per_round,
            7,
            "Expand ReadyToDispatch NextSegment PollSegment SegmentEnd SegmentDone Settle"
        );
        assert_eq!((one_driver, three_driver), (one, three));
    }

    #[test]
    fn the_parent_path_is_the_asls() {
        // GIVEN the parent machine, its Map taken as one state
        let asl = asl();
        let mut name = asl["StartAt"].as_str().unwrap().to_string();
        let mut path = Vec::new();

        // WHEN it is followed by Next to its end on success
        loop {
            path.push(name.clone());
            let state = &asl["States"][&name];
            if state["End"] == true {
                break;
            }
            // A Choice: before the Map the wave starts (Default); after it, the one wave
            // was the last (the `done` choice).
            let next = match state["Type"].as_str() {
                Some("Choice") if path.iter().any(|s| s == PARENT_MAP) => {
                    &state["Choices"][0]["Next"]
                }
                Some("Choice") => &state["Default"],
                _ => &state["Next"],
            };
            name = next.as_str().unwrap().to_string();
        }

        // THEN the driver enters the same states, and Aggregate's Catch is its fallback
        let mut driver: Vec<&str> = PARENT_BEFORE_MAP.to_vec();
        driver.push(PARENT_MAP);
        driver.extend(PARENT_AFTER_MAP);
        assert_eq!(path, driver);
        assert_eq!(asl["States"][PARENT_MAP]["Type"], "Map");
        assert_eq!(
            asl["States"]["Aggregate"]["Catch"][0]["Next"],
            PARENT_AGGREGATE_CAUGHT
        );
        assert!(
            asl["States"]["Plan"].get("Catch").is_none(),
            "the driver fails the run when Plan fails"
        );
    }

    #[test]
    fn retry_follows_the_asl_and_stops_after_max_attempts() {
        // GIVEN Dispatch's Retry from the ASL
        let rs = retriers(&asl());
        let dispatch = &rs["Dispatch"];
        let mut attempts = BTreeMap::new();

        // WHEN Transient fails every attempt
        let delays: Vec<Duration> =
            std::iter::from_fn(|| retry_delay(dispatch, "Transient", &mut attempts)).collect();

        // THEN it is retried MaxAttempts times with backoff capped at MaxDelaySeconds, and
        // an error no retrier names is not retried at all
        assert_eq!(delays.len() as u64, dispatch[0].max_attempts);
        assert_eq!(delays[0], Duration::from_secs(2));
        assert_eq!(delays[1], Duration::from_secs(4));
        assert!(delays
            .iter()
            .all(|d| d.as_secs_f64() <= dispatch[0].max_delay_seconds.unwrap()));
        assert_eq!(
            retry_delay(dispatch, "AwsError", &mut BTreeMap::new()),
            None
        );
    }
}
