//! Fault injection: throttling (token bucket, fraction, next N calls), injected errors,
//! errors after the effect (the call takes effect, then answers an error such as HTTP 500),
//! and dropped responses (the call takes effect but the connection closes without an answer).
//! Rules match on service, operation, account and Region; unset fields match anything.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fleet::SplitMix64;

/// What a rule does to a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer the protocol's throttling error.
    Throttle,
    /// Answer an error (`status`, `code`, `message`).
    Error,
    /// Perform the call, then close the connection without a response.
    Drop,
    /// Perform the call, then answer an error (`status`, `code`, `message`) instead of its
    /// result: what a 500 or 503 after the service acted looks like to the caller.
    ErrorAfter,
    /// Perform the call, then hold its response for `delay_ms` before answering (the caller
    /// may give up first: the call has taken effect all the same).
    Delay,
    /// DynamoDB only: refuse a write that collides with a transaction in progress, as
    /// DynamoDB does (TransactWriteItems: `TransactionCanceledException` whose
    /// `CancellationReasons` say `TransactionConflict`; single-item writes:
    /// `TransactionConflictException`). Nothing is written.
    TransactionConflict,
}

/// One fault rule. Exactly how it triggers: `rate`/`burst` (token bucket per
/// (service, operation, account, Region), throttle only), else `fraction` of matching calls,
/// else the next `count` matching calls, else every matching call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// What to do.
    pub kind: FaultKind,
    /// Service signing name: `ssm`, `sts`, `resource-groups`, `organizations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Operation name, e.g. `SendCommand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Account the call acts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Token bucket refill, calls per real second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Token bucket size (defaults to `rate`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
    /// Probability per matching call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Remaining matching calls to affect (decremented as they fire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// HTTP status for `error` (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Error code for `error` (default: the service's internal error code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Error message for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long `delay` holds the response, in real milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Lambda Invoke only: the function name (after `function:`, qualifier dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// A substring the raw request body must contain (forwarded DynamoDB calls: a table
    /// name, a key such as `"S":"RUN"}`, a run id). For `transaction_conflict` on
    /// TransactWriteItems it also picks which items get the `TransactionConflict` reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Forwarded DynamoDB calls: a substring of the caller's ARN as IAM evaluated it (a
    /// role name such as `AggregateRole`), to fail one function's reads and not another's.
    /// Never matches when the local stack evaluates no IAM (no caller is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_contains: Option<String>,
}

/// Whether `body` contains `pattern`, ignoring ASCII whitespace in both (SDKs differ:
/// botocore writes `"S": "RUN"`, the Rust SDK `"S":"RUN"`).
pub fn body_contains(body: &[u8], pattern: &str) -> bool {
    let squeeze = |s: &str| -> String { s.chars().filter(|c| !c.is_ascii_whitespace()).collect() };
    squeeze(&String::from_utf8_lossy(body)).contains(&squeeze(pattern))
}

/// What a forwarded call (Lambda Invoke, DynamoDB) carries beyond its [`CallKey`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CallDetail<'a> {
    /// Lambda Invoke: the function name.
    pub function: Option<&'a str>,
    /// The raw request body.
    pub body: Option<&'a [u8]>,
    /// The caller's ARN, when IAM was evaluated.
    pub caller: Option<&'a str>,
}

/// What to do with a forwarded call before sending it upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardDecision {
    /// Forward it.
    Proceed,
    /// Answer the service's throttling error.
    Throttle,
    /// Answer this error: (status, code, message); code None = service default.
    Error(u16, Option<String>, String),
    /// Answer DynamoDB's transaction conflict; the pattern (if any) picks the conflicting
    /// items of a TransactWriteItems.
    TransactionConflict(Option<String>),
}

/// The call a decision is made for.
#[derive(Debug, Clone, Copy)]
pub struct CallKey<'a> {
    /// Service signing name.
    pub service: &'a str,
    /// Operation.
    pub operation: &'a str,
    /// Account.
    pub account: &'a str,
    /// Region.
    pub region: &'a str,
}

/// What to do before handling a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreDecision {
    /// Handle normally.
    Proceed,
    /// Answer the throttling error.
    Throttle,
    /// Answer this error: (status, code, message); code None = service default.
    Error(u16, Option<String>, String),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The active rules and their state.
#[derive(Debug)]
pub struct Faults {
    rules: Vec<FaultRule>,
    buckets: HashMap<(usize, String), Bucket>,
    rng: SplitMix64,
}

impl FaultRule {
    fn matches(&self, k: &CallKey<'_>) -> bool {
        self.matches_detail(k, &CallDetail::default())
    }

    /// Whether the rule matches; a rule naming a function or a body substring matches only
    /// calls that carry one.
    fn matches_detail(&self, k: &CallKey<'_>, d: &CallDetail<'_>) -> bool {
        fn ok(f: &Option<String>, v: &str) -> bool {
            f.as_deref().is_none_or(|f| f == v)
        }
        let function_ok = match (&self.function, d.function) {
            (None, _) => true,
            (Some(f), Some(v)) => f == v,
            (Some(_), None) => false,
        };
        let body_ok = match (&self.body_contains, d.body) {
            (None, _) => true,
            (Some(p), Some(b)) => body_contains(b, p),
            (Some(_), None) => false,
        };
        let caller_ok = match (&self.caller_contains, d.caller) {
            (None, _) => true,
            (Some(p), Some(c)) => c.contains(p.as_str()),
            (Some(_), None) => false,
        };
        ok(&self.service, k.service)
            && ok(&self.operation, k.operation)
            && ok(&self.account, k.account)
            && ok(&self.region, k.region)
            && function_ok
            && body_ok
            && caller_ok
    }
}

impl Faults {
    /// Rules with a PRNG seed for fractions.
    pub fn new(rules: Vec<FaultRule>, seed: u64) -> Self {
        Self {
            rules,
            buckets: HashMap::new(),
            rng: SplitMix64::new(seed),
        }
    }

    /// The active rules (counts show what is left).
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Replaces every rule.
    pub fn replace(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules;
        self.buckets.clear();
    }

    /// Adds rules to the active ones.
    pub fn extend(&mut self, rules: Vec<FaultRule>) {
        self.rules.extend(rules);
    }

    /// Whether rule `i` fires for `key` (consuming a token or a count).
    fn fires(&mut self, i: usize, key: &CallKey<'_>) -> bool {
        let rule = &self.rules[i];
        if let (FaultKind::Throttle, Some(rate)) = (rule.kind, rule.rate) {
            let burst = rule.burst.unwrap_or(rate).max(1.0);
            let bucket_key = (
                i,
                format!(
                    "{}/{}/{}/{}",
                    key.service, key.operation, key.account, key.region
                ),
            );
            let now = Instant::now();
            let b = self.buckets.entry(bucket_key).or_insert(Bucket {
                tokens: burst,
                last: now,
            });
            b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
            b.last = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return false;
            }
            return true;
        }
        if let Some(f) = rule.fraction {
            return self.rng.next_f64() < f;
        }
        if let Some(c) = rule.count {
            if c == 0 {
                return false;
            }
            self.rules[i].count = Some(c - 1);
            return true;
        }
        true
    }

    /// Decides throttling / error injection for a call about to be handled.
    pub fn before(&mut self, key: &CallKey<'_>) -> PreDecision {
        for i in 0..self.rules.len() {
            let kind = self.rules[i].kind;
            if !matches!(kind, FaultKind::Throttle | FaultKind::Error)
                || !self.rules[i].matches(key)
            {
                continue;
            }
            if self.fires(i, key) {
                let r = &self.rules[i];
                return match kind {
                    FaultKind::Throttle => PreDecision::Throttle,
                    _ => PreDecision::Error(
                        r.status.unwrap_or(500),
                        r.code.clone(),
                        r.message
                            .clone()
                            .unwrap_or_else(|| "Injected by fleetsim".to_string()),
                    ),
                };
            }
        }
        PreDecision::Proceed
    }

    /// The error to answer, instead of the result, for a call that was just handled
    /// (`error_after` rules): (status, code, message); code None = service default.
    pub fn error_after(&mut self, key: &CallKey<'_>) -> Option<(u16, Option<String>, String)> {
        for i in 0..self.rules.len() {
            if self.rules[i].kind == FaultKind::ErrorAfter
                && self.rules[i].matches(key)
                && self.fires(i, key)
            {
                let r = &self.rules[i];
                return Some((
                    r.status.unwrap_or(500),
                    r.code.clone(),
                    r.message.clone().unwrap_or_else(|| {
                        "Injected by fleetsim after the call took effect".into()
                    }),
                ));
            }
        }
        None
    }

    /// Whether the response of a call that was just handled must be dropped.
    pub fn drop_response(&mut self, key: &CallKey<'_>) -> bool {
        for i in 0..self.rules.len() {
            if self.rules[i].kind == FaultKind::Drop
                && self.rules[i].matches(key)
                && self.fires(i, key)
            {
                return true;
            }
        }
        false
    }

    /// How long the response of a call that was just handled must be held (`delay` rules).
    pub fn delay_response(
        &mut self,
        key: &CallKey<'_>,
        detail: &CallDetail<'_>,
    ) -> Option<Duration> {
        for i in 0..self.rules.len() {
            if self.rules[i].kind == FaultKind::Delay
                && self.rules[i].matches_detail(key, detail)
                && self.fires(i, key)
            {
                return Some(Duration::from_millis(self.rules[i].delay_ms.unwrap_or(0)));
            }
        }
        None
    }

    /// Decides throttling / errors / transaction conflicts for a call about to be forwarded
    /// (Lambda Invoke, DynamoDB). `drop` and `delay` rules do not apply to forwarded calls.
    pub fn before_forwarded(
        &mut self,
        key: &CallKey<'_>,
        detail: &CallDetail<'_>,
    ) -> ForwardDecision {
        for i in 0..self.rules.len() {
            let kind = self.rules[i].kind;
            let applies = match kind {
                FaultKind::Throttle | FaultKind::Error => true,
                FaultKind::TransactionConflict => key.service == "dynamodb",
                _ => false,
            };
            if !applies || !self.rules[i].matches_detail(key, detail) || !self.fires(i, key) {
                continue;
            }
            let r = &self.rules[i];
            return match kind {
                FaultKind::Throttle => ForwardDecision::Throttle,
                FaultKind::TransactionConflict => {
                    ForwardDecision::TransactionConflict(r.body_contains.clone())
                }
                _ => ForwardDecision::Error(
                    r.status.unwrap_or(500),
                    r.code.clone(),
                    r.message
                        .clone()
                        .unwrap_or_else(|| "Injected by fleetsim".to_string()),
                ),
            };
        }
        ForwardDecision::Proceed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CallKey<'static> {
        CallKey {
            service: "ssm",
            operation: "SendCommand",
            account: "222222222222",
            region: "us-east-1",
        }
    }

    fn rule(kind: FaultKind) -> FaultRule {
        FaultRule {
            kind,
            service: Some("ssm".into()),
            operation: Some("SendCommand".into()),
            account: None,
            region: None,
            rate: None,
            burst: None,
            fraction: None,
            count: None,
            status: None,
            code: None,
            message: None,
            delay_ms: None,
            function: None,
            body_contains: None,
            caller_contains: None,
        }
    }

    #[test]
    fn token_bucket_allows_burst_then_throttles() {
        let mut r = rule(FaultKind::Throttle);
        r.rate = Some(0.001);
        r.burst = Some(3.0);
        let mut f = Faults::new(vec![r], 1);
        let d: Vec<_> = (0..5).map(|_| f.before(&key())).collect();
        assert_eq!(
            &d[..3],
            &[
                PreDecision::Proceed,
                PreDecision::Proceed,
                PreDecision::Proceed
            ]
        );
        assert_eq!(d[3], PreDecision::Throttle);
        assert_eq!(d[4], PreDecision::Throttle);
    }

    #[test]
    fn count_rules_fire_exactly_n_times() {
        let mut r = rule(FaultKind::Drop);
        r.count = Some(2);
        let mut f = Faults::new(vec![r], 1);
        let drops = (0..5).filter(|_| f.drop_response(&key())).count();
        assert_eq!(drops, 2);
        let other = CallKey {
            operation: "ListCommands",
            ..key()
        };
        let mut r = rule(FaultKind::Drop);
        r.count = Some(2);
        let mut f = Faults::new(vec![r], 1);
        assert!(!f.drop_response(&other));
    }

    #[test]
    fn error_after_fires_after_the_call_and_never_before_it() {
        // GIVEN a rule answering the next SendCommand with a 503 after it took effect
        let mut r = rule(FaultKind::ErrorAfter);
        r.count = Some(1);
        r.status = Some(503);
        r.code = Some("ServiceUnavailable".into());
        let mut f = Faults::new(vec![r], 1);
        // THEN the call is not stopped before it is handled
        assert_eq!(f.before(&key()), PreDecision::Proceed);
        // and its answer is replaced, once
        let e = f
            .error_after(&key())
            .expect("the first call is answered with an error");
        assert_eq!((e.0, e.1.as_deref()), (503, Some("ServiceUnavailable")));
        assert_eq!(f.error_after(&key()), None);
        assert!(!f.drop_response(&key()));
    }

    #[test]
    fn fraction_is_roughly_respected() {
        let mut r = rule(FaultKind::Error);
        r.fraction = Some(0.25);
        let mut f = Faults::new(vec![r], 7);
        let n = (0..4000)
            .filter(|_| f.before(&key()) != PreDecision::Proceed)
            .count();
        assert!((800..1200).contains(&n), "got {n}");
    }

    #[test]
    fn forwarded_rules_match_the_callers_arn() {
        // GIVEN an error on DynamoDB Query for aggregate's session only
        let mut r = rule(FaultKind::Error);
        r.service = Some("dynamodb".into());
        r.operation = Some("Query".into());
        r.caller_contains = Some("/fleetpatch-aggregate".into());
        let mut f = Faults::new(vec![r], 1);
        let query = CallKey {
            service: "dynamodb",
            operation: "Query",
            ..key()
        };
        let by = |caller: Option<&'static str>| CallDetail {
            function: None,
            body: None,
            caller,
        };
        let role = "arn:aws:sts::111111111111:assumed-role/fleetpatch-orchestrator-us-east-1";
        let gate = format!("{role}/fleetpatch-gate");
        let aggregate = format!("{role}/fleetpatch-aggregate");
        // WHEN the gate, an unknown caller, then aggregate query
        let decide = |f: &mut Faults, d| f.before_forwarded(&query, &d);
        let gate_read = decide(&mut f, by(Some(gate.leak())));
        let unknown_read = decide(&mut f, by(None));
        let aggregate_read = decide(&mut f, by(Some(aggregate.leak())));
        // THEN only aggregate's read fails
        assert_eq!(gate_read, ForwardDecision::Proceed);
        assert_eq!(unknown_read, ForwardDecision::Proceed);
        assert!(
            matches!(aggregate_read, ForwardDecision::Error(..)),
            "{aggregate_read:?}"
        );
    }

    #[test]
    fn forwarded_rules_match_function_and_body() {
        // GIVEN a throttle on the dispatch function and a conflict on the run item
        let mut lambda = rule(FaultKind::Throttle);
        lambda.service = Some("lambda".into());
        lambda.operation = None;
        lambda.function = Some("dispatch".into());
        let mut ddb = rule(FaultKind::TransactionConflict);
        ddb.service = Some("dynamodb".into());
        ddb.operation = Some("TransactWriteItems".into());
        ddb.body_contains = Some(r#""S":"RUN"}"#.into());
        let mut f = Faults::new(vec![lambda, ddb], 1);
        let invoke = CallKey {
            service: "lambda",
            operation: "Invoke",
            ..key()
        };
        let dispatch = CallDetail {
            function: Some("dispatch"),
            body: None,
            caller: None,
        };
        let plan = CallDetail {
            function: Some("plan"),
            body: None,
            caller: None,
        };
        // THEN only the named function is throttled
        assert_eq!(
            f.before_forwarded(&invoke, &dispatch),
            ForwardDecision::Throttle
        );
        assert_eq!(f.before_forwarded(&invoke, &plan), ForwardDecision::Proceed);
        // AND only a transaction touching the run item conflicts
        let tx = CallKey {
            service: "dynamodb",
            operation: "TransactWriteItems",
            ..key()
        };
        let run_item =
            br#"{"TransactItems":[{"Update":{"Key":{"PK":{"S":"RUN#r"},"SK":{"S":"RUN"}}}}]}"#;
        let other =
            br#"{"TransactItems":[{"Update":{"Key":{"PK":{"S":"LOC#r"},"SK":{"S":"INST#i-1"}}}}]}"#;
        let d = |b: &'static [u8]| CallDetail {
            function: None,
            body: Some(b),
            caller: None,
        };
        assert!(matches!(
            f.before_forwarded(&tx, &d(run_item)),
            ForwardDecision::TransactionConflict(Some(_))
        ));
        assert_eq!(f.before_forwarded(&tx, &d(other)), ForwardDecision::Proceed);
        // AND a served call never sees these rules
        assert_eq!(f.before(&key()), PreDecision::Proceed);
    }

    #[test]
    fn delay_rules_hold_the_response_and_never_refuse() {
        let mut r = rule(FaultKind::Delay);
        r.delay_ms = Some(1500);
        r.count = Some(1);
        let mut f = Faults::new(vec![r], 1);
        assert_eq!(f.before(&key()), PreDecision::Proceed);
        let none = CallDetail::default();
        assert_eq!(
            f.delay_response(&key(), &none),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(f.delay_response(&key(), &none), None);
    }
}
