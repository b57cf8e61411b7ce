//! The payloads the state machine passes between steps. They stay small and never grow with
//! the number of instances: everything else lives in DynamoDB. Step Functions caps a
//! payload at 256 KiB; the largest, plan's list of locations, is bounded by
//! [`crate::plan::MAX_LOCATIONS`].

use crate::error::{Error, Result};
use crate::limits;
use crate::model::{Location, LocationOutcome};
use serde::{Deserialize, Serialize};

/// What `plan` receives: the execution input and the execution's name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRequest {
    /// The run input, unvalidated.
    pub input: serde_json::Value,
    /// `$$.Execution.Name`: becomes the run ID. A fresh UUID when absent (local invokes).
    #[serde(default)]
    pub execution_name: Option<String>,
}

/// What `plan` answers: what the Distributed Map needs, nothing more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanResponse {
    pub run_id: String,
    /// How many locations run at once (MaxConcurrencyPath).
    pub location_concurrency: u64,
    /// Every location, as `ACCOUNT/REGION`.
    pub locations: Vec<String>,
}

/// The error a step reported, as the state machine's Catch hands it on (`ResultPath: $.error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaughtError {
    /// The error type (e.g. `AwsError`, `States.Timeout`).
    #[serde(rename = "Error", default, deserialize_with = "null_as_empty")]
    pub error: String,
    /// Absent or null when the sender gave none (SendTaskFailure without a cause).
    #[serde(rename = "Cause", default, deserialize_with = "null_as_empty")]
    pub cause: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// The state of one location between steps: expand's answer is dispatch's question, and
/// dispatch's answer is its own next question, until `done`; then settle takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocationTask {
    pub run_id: String,
    /// `ACCOUNT/REGION`.
    pub location: String,
    /// True when nothing more is to be sent or followed.
    #[serde(default)]
    pub done: bool,
    /// Seconds the state machine waits before the next dispatch.
    #[serde(default)]
    pub wait_seconds: u64,
    /// The location's outcome, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<LocationOutcome>,
    /// Why, in words (errors, skips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set by the state machine's Catch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CaughtError>,
    /// Dispatch rounds so far.
    #[serde(default)]
    pub rounds: u64,
    /// True when this round was the last of its poll segment: the segment execution ends,
    /// and the location child starts the next one ([`crate::limits`]).
    #[serde(default)]
    pub segment_end: bool,
    /// What the location's rounds observed of its runs so far ([`crate::poll::Observed`]):
    /// carried from round to round, so the poll interval can follow the runs' lengths.
    #[serde(default)]
    pub observed: crate::poll::Observed,
}

impl LocationTask {
    /// The parsed location; a malformed one is a `PayloadError`.
    pub fn location(&self) -> Result<Location> {
        self.location.parse().map_err(Error::Payload)
    }

    /// The same task, finished with `outcome`.
    pub fn finished(&self, outcome: LocationOutcome, reason: Option<String>) -> LocationTask {
        LocationTask {
            run_id: self.run_id.clone(),
            location: self.location.clone(),
            done: true,
            wait_seconds: 0,
            outcome: Some(outcome),
            reason,
            error: None,
            rounds: self.rounds,
            segment_end: false,
            observed: crate::poll::Observed::default(),
        }
    }

    /// The same task, to be called again after `wait_seconds`.
    pub fn again(&self, wait_seconds: u64) -> LocationTask {
        LocationTask {
            run_id: self.run_id.clone(),
            location: self.location.clone(),
            done: false,
            wait_seconds,
            outcome: None,
            reason: None,
            error: None,
            rounds: self.rounds,
            segment_end: false,
            observed: self.observed,
        }
    }

    /// The same task after one more dispatch round: called again after the poll interval
    /// ([`limits::poll_wait`]), in a new segment when this round ends one.
    pub fn next_round(&self, poll_seconds: u64) -> LocationTask {
        let rounds = self.rounds + 1;
        LocationTask {
            rounds,
            segment_end: limits::ends_segment(rounds),
            ..self.again(limits::poll_wait(poll_seconds, rounds))
        }
    }
}

/// Which step of a wave the `gate` function takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum WaveAction {
    /// Before the wave: may it start? Answers its locations.
    #[default]
    Start,
    /// After the wave's Map: did it pass its gate? Answers the soak before the next.
    End,
    /// The wave waits for its approval: store the task token, announce the wait.
    Await,
    /// SendTaskSuccess came: record the approval (the callback's output says by whom).
    Approved,
    /// SendTaskFailure or the timeout came: record the rejection, skip the wave and the
    /// later ones.
    Rejected,
}

/// What `gate` receives: the run, the wave (its index) and the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveTask {
    pub run_id: String,
    pub wave: u32,
    #[serde(default)]
    pub action: WaveAction,
    /// `await`: the task token (`$$.Task.Token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_token: Option<String>,
    /// `approved`: the output SendTaskSuccess was given, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<serde_json::Value>,
    /// `rejected`: the error SendTaskFailure gave, or `States.Timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CaughtError>,
}

/// What `gate` answers. To `start`: the wave's locations for the Map (at most
/// [`crate::plan::MAX_LOCATIONS`], the same budget as plan's answer), or `done` when
/// nothing more starts. To `end`: the next wave and the soak before it, or `done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct WaveAnswer {
    pub run_id: String,
    pub wave: u32,
    pub done: bool,
    #[serde(default)]
    pub locations: Vec<String>,
    /// MaxConcurrencyPath of the wave's Map (at least 1).
    pub location_concurrency: u64,
    /// Seconds the state machine waits before the next wave starts.
    pub soak_seconds: u64,
    /// `start`: the wave waits for an approval first (TimeoutSecondsPath below).
    #[serde(default)]
    pub await_approval: bool,
    #[serde(default)]
    pub approval_timeout_seconds: u64,
}

/// What `aggregate` receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregateRequest {
    pub run_id: String,
    /// The fallback after aggregate failed for good (the state machine's Catch): finish the
    /// run from the table alone, with no call to a target account.
    #[serde(default)]
    pub records_only: bool,
    /// What made the full aggregation fail, named in the summary.
    #[serde(default)]
    pub error: Option<CaughtError>,
    /// Set by the EventBridge rule on the state machine's executions: the Step Functions
    /// status (ABORTED, TIMED_OUT) that ended the execution before aggregate ran. The run
    /// is then finished from the table alone, as with `records_only`.
    #[serde(default)]
    pub execution_ended: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_event_parses_as_its_payload() {
        let plan: PlanRequest =
            serde_json::from_str(include_str!("../../events/plan.json")).unwrap();
        assert!(
            crate::input::validate(&plan.input).is_ok(),
            "the sample plan input is valid"
        );
        let bad: PlanRequest =
            serde_json::from_str(include_str!("../../events/plan-invalid.json")).unwrap();
        assert_eq!(crate::input::validate(&bad.input).unwrap_err().len(), 4);
        for raw in [
            include_str!("../../events/expand.json"),
            include_str!("../../events/dispatch.json"),
            include_str!("../../events/settle.json"),
            include_str!("../../events/settle-caught-error.json"),
        ] {
            let t: LocationTask = serde_json::from_str(raw).unwrap();
            t.location().unwrap();
        }
        let s: LocationTask =
            serde_json::from_str(include_str!("../../events/settle.json")).unwrap();
        assert_eq!(s.outcome, Some(LocationOutcome::Succeeded));
        let e: LocationTask =
            serde_json::from_str(include_str!("../../events/settle-caught-error.json")).unwrap();
        assert_eq!(e.error.unwrap().error, "AwsError");
        let _: AggregateRequest =
            serde_json::from_str(include_str!("../../events/aggregate.json")).unwrap();
        let start: WaveTask =
            serde_json::from_str(include_str!("../../events/gate-start.json")).unwrap();
        let end: WaveTask =
            serde_json::from_str(include_str!("../../events/gate-end.json")).unwrap();
        assert_eq!(
            (start.action, end.action),
            (WaveAction::Start, WaveAction::End)
        );
    }

    #[test]
    fn a_caught_error_without_a_cause_is_read() {
        // GIVEN a SendTaskFailure that gave an error and a null cause, as the Catch hands it on
        let t: WaveTask = serde_json::from_value(serde_json::json!({
            "runId": "r", "wave": 1, "action": "rejected",
            "error": {"Error": "WaveRejected", "Cause": null}
        }))
        .unwrap();
        // THEN the rejection is read, with an empty cause
        let e = t.error.unwrap();
        assert_eq!((e.error.as_str(), e.cause.as_str()), ("WaveRejected", ""));
    }

    #[test]
    fn the_last_round_of_a_segment_ends_it_and_later_rounds_wait_the_floor() {
        // GIVEN a task 599 rounds into its location, with a 2 s poll
        let t = LocationTask {
            run_id: "r".into(),
            location: "111111111111/us-east-1".into(),
            rounds: limits::SEGMENT_ROUNDS - 1,
            ..LocationTask::default()
        };
        // WHEN dispatch answers round 600, then round 601
        let last = t.next_round(2);
        let next = last.next_round(2);
        // THEN round 600 ends the segment, and round 601 starts a new one waiting 30 s
        assert_eq!((last.rounds, last.segment_end), (600, true));
        assert_eq!((next.rounds, next.segment_end), (601, false));
        assert_eq!(next.wait_seconds, limits::LATER_POLL_FLOOR_SECONDS);
        assert_eq!(t.finished(LocationOutcome::Succeeded, None).rounds, 599);
    }
}
