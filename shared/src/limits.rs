//! Step Functions' limits that bound a run, and the arithmetic that keeps fleetpatch under
//! them. Pure.
//!
//! Invariants, each checked by a test against `statemachine/patching.asl.json`:
//! - plan's answer, as the state machine carries it (inside the `lambda:invoke` result),
//!   fits one state payload for the largest run plan accepts (`plan::MAX_LOCATIONS`
//!   locations, Region codes of [`MAX_REGION_CODE_BYTES`], the longest run ID);
//! - the Distributed Map's collected child results fit one state payload at that size: every
//!   child ends with a constant, empty output, and catches every error it can catch;
//! - no execution reaches the history limit (25,000 events), every retry counted. A location
//!   child polls through segments: each segment is an execution of its own (a one-item
//!   Distributed Map) of at most [`SEGMENT_ROUNDS`] dispatch rounds, and after the first
//!   segment a round waits at least [`LATER_POLL_FLOOR_SECONDS`], so that a child running
//!   for a Standard execution's whole year starts few enough segments.

/// Step Functions' largest state input or output, task results included: 256 KiB of UTF-8.
/// A state that passes it fails with `States.DataLimitExceeded`, which no Catch sees.
pub const STATE_PAYLOAD_LIMIT_BYTES: usize = 256 * 1024;

/// Room kept for what `lambda:invoke` wraps around a function's answer (`ExecutedVersion`,
/// the HTTP headers twice, the request ID, the status code): about 900 bytes on the shape AWS
/// documents (a test measures it).
pub const INVOKE_ENVELOPE_BYTES: usize = 2 * 1024;

/// The most bytes plan's answer may serialize to.
pub const PLAN_RESPONSE_BUDGET_BYTES: usize = STATE_PAYLOAD_LIMIT_BYTES - INVOKE_ENVELOPE_BYTES;

/// The longest run ID: the execution's name, at most 80 characters.
pub const MAX_RUN_ID_BYTES: usize = 80;

/// The Region code length the location cap is derived for. The commercial partition's
/// longest codes have 14 bytes (`ap-southeast-1`), `us-isof-south-1` has 15. The run-input
/// pattern bounds no length: a longer code AWS might add is still refused by plan's byte
/// check ([`PLAN_RESPONSE_BUDGET_BYTES`]), never carried over the limit.
pub const MAX_REGION_CODE_BYTES: usize = 15;

/// Step Functions' history limit: events per execution. An execution that reaches it fails
/// in a way no Catch sees.
pub const HISTORY_EVENTS_LIMIT: u64 = 25_000;

/// The share of the history limit fleetpatch allows itself (90%), every retry counted.
pub const HISTORY_EVENTS_BUDGET: u64 = HISTORY_EVENTS_LIMIT / 10 * 9;

/// The longest a Standard execution runs (one year, in seconds): a location child cannot
/// poll longer.
pub const MAX_EXECUTION_SECONDS: u64 = 365 * 24 * 3600;

/// Dispatch rounds in one poll segment: a segment execution of 600 rounds writes at most
/// 19,804 events with every Dispatch retried to its last attempt (a test counts them from
/// the state machine).
pub const SEGMENT_ROUNDS: u64 = 600;

/// The shortest wait between two rounds after the first segment (the default poll). A child
/// lasting a year then starts at most 2 + year / (600 x 30 s) = 1,754 segments (segment k
/// starts after k - 2 full later segments of at least 600 x 30 s), and writes at most 17,598
/// events (a test counts them).
pub const LATER_POLL_FLOOR_SECONDS: u64 = 30;

/// How long to wait before round `rounds + 1`, after `rounds` rounds: the configured poll,
/// and never less than [`LATER_POLL_FLOOR_SECONDS`] once the first segment is over. Only a
/// location polling for more than 600 rounds with a poll under 30 s waits longer than
/// configured.
pub fn poll_wait(poll_seconds: u64, rounds: u64) -> u64 {
    if rounds < SEGMENT_ROUNDS {
        poll_seconds
    } else {
        poll_seconds.max(LATER_POLL_FLOOR_SECONDS)
    }
}

/// Whether round `rounds` (counted from 1) is the last of its segment.
pub fn ends_segment(rounds: u64) -> bool {
    rounds > 0 && rounds.is_multiple_of(SEGMENT_ROUNDS)
}

/// Whether a payload of `bytes` fits plan's budget.
pub fn plan_response_fits(bytes: usize) -> bool {
    bytes <= PLAN_RESPONSE_BUDGET_BYTES
}

/// Bytes of the Distributed Map's collected results (a JSON array, one element per child)
/// when each of `children` ends with `output_bytes` of output.
pub fn collected_results_bytes(children: usize, output_bytes: usize) -> usize {
    // `[` `]`, the elements, a comma between two.
    2 + children * output_bytes + children.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LocationOutcome;
    use crate::plan::MAX_LOCATIONS;
    use serde_json::{json, Value};

    fn asl() -> Value {
        serde_json::from_str(include_str!("../../statemachine/patching.asl.json")).unwrap()
    }

    /// The bytes of the output a state ends a child with, when that output is a constant
    /// (`OutputPath: null`, or a Pass with a literal `Result`); `None` when it depends on the
    /// state's input or a function's answer.
    fn constant_output_bytes(state: &Value) -> Option<usize> {
        if state.get("OutputPath") == Some(&Value::Null) {
            return Some(2);
        }
        let literal = state["Type"] == "Pass" && state.get("ResultPath").is_none();
        match state.get("Result") {
            Some(result) if literal && state.get("OutputPath").is_none() => {
                Some(serde_json::to_vec(result).unwrap().len())
            }
            _ => None,
        }
    }

    #[test]
    fn the_maps_collected_child_results_fit_a_state_payload() {
        // GIVEN the location Map's child workflow
        let asl = asl();
        let children = &asl["States"]["Locations"]["ItemProcessor"]["States"];
        let states = children.as_object().unwrap();

        // THEN every state that ends a child ends it with a constant output
        let mut largest = 0;
        for (name, st) in states {
            if st["End"] == true || st["Type"] == "Succeed" {
                let bytes = constant_output_bytes(st).unwrap_or_else(|| {
                    panic!("{name} ends a child with an output that grows with its input or answer")
                });
                largest = largest.max(bytes);
            }
        }
        // AND no child fails on an error a Catch can see: a failed child's result carries
        // its input, error and cause, which no bound holds
        for (name, st) in states.iter().filter(|(_, st)| st["Type"] == "Task") {
            let catches_all = st["Catch"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["ErrorEquals"] == json!(["States.ALL"]));
            assert!(catches_all, "{name} lets its child fail");
        }
        // AND the collected array of the largest run fits the payload
        let bytes = collected_results_bytes(MAX_LOCATIONS, largest);
        assert!(
            bytes <= STATE_PAYLOAD_LIMIT_BYTES,
            "{MAX_LOCATIONS} children collect {bytes} bytes"
        );
    }

    #[test]
    fn an_outcome_per_child_would_not_fit() {
        // GIVEN each child answering its outcome, as settle's answer once did
        let longest = [
            LocationOutcome::Succeeded,
            LocationOutcome::CompletedWithErrors,
            LocationOutcome::ThresholdExceeded,
        ]
        .iter()
        .map(|o| json!({ "outcome": o.as_str() }).to_string().len())
        .max()
        .unwrap();
        // THEN the largest run's collected results would pass the payload limit
        let bytes = collected_results_bytes(MAX_LOCATIONS, longest);
        assert!(bytes > STATE_PAYLOAD_LIMIT_BYTES, "{bytes} bytes");
    }

    #[test]
    fn a_caught_map_failure_keeps_the_payload_bounded() {
        // GIVEN the Map's Catch: its ResultPath adds the error to the state's input (the
        // plan's answer, up to the budget), and a cause can be 32,768 characters
        let asl = asl();
        let catches = asl["States"]["Locations"]["Catch"].as_array().unwrap();
        // THEN it discards the error: the Map's output stays its input
        for c in catches {
            assert_eq!(c.get("ResultPath"), Some(&Value::Null), "{c}");
        }
    }

    #[test]
    fn what_follows_the_map_carries_the_run_id_and_wave_alone() {
        // GIVEN the states the Map leads to, done or caught: the Map's output is the wave's
        // start answer (up to the budget)
        let asl = asl();
        let map = &asl["States"]["Locations"];
        let mut next: Vec<&str> = vec![map["Next"].as_str().unwrap()];
        next.extend(
            map["Catch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["Next"].as_str().unwrap()),
        );
        // THEN each hands on only the run ID and the wave, so nothing after the Map nears
        // the limit, and the gate's Catch leads to a Pass that keeps the run ID alone
        for n in next {
            let st = &asl["States"][n];
            assert_eq!(st["Type"], "Task", "{n}");
            assert_eq!(
                st["Parameters"]["Payload"],
                json!({"runId.$": "$.runId", "wave.$": "$.wave", "action": "end"}),
                "{n}"
            );
            for c in st["Catch"].as_array().unwrap() {
                let caught = &asl["States"][c["Next"].as_str().unwrap()];
                assert_eq!(caught["Parameters"], json!({"runId.$": "$.runId"}), "{n}");
            }
        }
    }

    #[test]
    fn a_run_of_the_most_waves_stays_under_the_history_limit() {
        // GIVEN the run's own execution, looping over crate::waves::MAX_WAVES waves
        let asl = asl();
        // WHEN its events are counted from the state machine, every retry taken
        let events = worst_case_events(&asl["States"], crate::waves::MAX_WAVES);
        // THEN it stays within 90% of the limit
        assert!(events <= HISTORY_EVENTS_BUDGET, "{events} events");
    }

    // -- history: events per state, as aws-facts lists them ------------------------------
    /// A Task: Entered, Scheduled, Started, Succeeded, Exited.
    const TASK_EVENTS: u64 = 5;
    /// Each retry attempt: Failed, then Scheduled and Started again.
    const RETRY_EVENTS: u64 = 3;
    /// A Distributed Map: Entered, Started, MapRunStarted, MapRunSucceeded, Succeeded, Exited.
    const MAP_EVENTS: u64 = 6;
    /// Choice, Wait, Pass, Succeed: Entered, Exited.
    const OTHER_EVENTS: u64 = 2;
    /// ExecutionStarted, ExecutionSucceeded.
    const EXECUTION_EVENTS: u64 = 2;

    /// The most events one pass through `st` writes: every retry taken to its last attempt
    /// (MaxAttempts defaults to 3).
    fn state_events(st: &Value) -> u64 {
        let retries: u64 = st["Retry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["MaxAttempts"].as_u64().unwrap_or(3))
            .sum();
        match st["Type"].as_str() {
            Some("Task") => TASK_EVENTS + RETRY_EVENTS * retries,
            Some("Map") => MAP_EVENTS,
            _ => OTHER_EVENTS,
        }
    }

    fn successors(st: &Value) -> Vec<&str> {
        let mut out: Vec<&str> = ["Next", "Default"]
            .iter()
            .filter_map(|k| st[*k].as_str())
            .collect();
        for list in ["Choices", "Catch"] {
            let items = st[list].as_array().into_iter().flatten();
            out.extend(items.filter_map(|c| c["Next"].as_str()));
        }
        out
    }

    /// The states on a cycle (the poll loop), found from the transitions.
    fn loop_states(states: &Value) -> Vec<&str> {
        let all = states.as_object().unwrap();
        let reaches_itself = |start: &str| {
            let mut seen = std::collections::HashSet::new();
            let mut todo = successors(&all[start]);
            while let Some(n) = todo.pop() {
                if n == start {
                    return true;
                }
                if seen.insert(n) {
                    todo.extend(successors(&all[n]));
                }
            }
            false
        };
        all.keys()
            .map(String::as_str)
            .filter(|n| reaches_itself(n))
            .collect()
    }

    /// The most events an execution of `states` writes when its loop runs `loops` times:
    /// every state outside the loop once, every retry taken.
    fn worst_case_events(states: &Value, loops: u64) -> u64 {
        let in_loop = loop_states(states);
        let all = states.as_object().unwrap();
        let once: u64 = all
            .iter()
            .filter(|(n, _)| !in_loop.contains(&n.as_str()))
            .map(|(_, st)| state_events(st))
            .sum();
        let per_loop: u64 = in_loop.iter().map(|n| state_events(&all[*n])).sum();
        EXECUTION_EVENTS + once + loops * per_loop
    }

    /// The Distributed Maps on the location child's loop: its poll segments.
    fn segments(child: &Value) -> Vec<&Value> {
        loop_states(child)
            .into_iter()
            .map(|n| &child[n])
            .filter(|st| st["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED")
            .collect()
    }

    #[test]
    fn a_location_child_polling_for_a_year_stays_under_the_history_limit() {
        // GIVEN the location child, polling for a Standard execution's whole year: in
        // segments of SEGMENT_ROUNDS rounds waiting at least LATER_POLL_FLOOR_SECONDS after
        // the first, or, without segments, every round in the child at the default 30 s
        let asl = asl();
        let child = &asl["States"]["Locations"]["ItemProcessor"]["States"];
        let loops = if segments(child).is_empty() {
            MAX_EXECUTION_SECONDS / 30
        } else {
            2 + MAX_EXECUTION_SECONDS / (SEGMENT_ROUNDS * LATER_POLL_FLOOR_SECONDS)
        };
        // WHEN its events are counted from the state machine, every retry taken
        let events = worst_case_events(child, loops);
        // THEN it stays within 90% of the limit
        assert!(
            events <= HISTORY_EVENTS_BUDGET,
            "a location child may write {events} events ({loops} loops of {:?})",
            loop_states(child)
        );
        assert_eq!(
            events, 17_598,
            "the figure LATER_POLL_FLOOR_SECONDS documents"
        );
    }

    #[test]
    fn a_poll_segment_stays_under_the_history_limit() {
        // GIVEN the location child's poll segments
        let asl = asl();
        let child = &asl["States"]["Locations"]["ItemProcessor"]["States"];
        let found = segments(child);
        assert_eq!(found.len(), 1, "one poll segment on the child's loop");
        for seg in found {
            let states = &seg["ItemProcessor"]["States"];
            let in_loop = loop_states(states);
            // THEN its loop waits on dispatch's answer and ends on segmentEnd
            let waits = in_loop
                .iter()
                .any(|n| states[*n]["SecondsPath"] == "$.waitSeconds");
            let ends = in_loop.iter().any(|n| {
                let choices = states[*n]["Choices"].as_array().into_iter().flatten();
                choices
                    .filter(|c| c["Variable"] == "$.segmentEnd")
                    .any(|c| !in_loop.contains(&c["Next"].as_str().unwrap()))
            });
            assert!(waits && ends, "the segment loop {in_loop:?}");
            // AND SEGMENT_ROUNDS rounds, every retry taken, stay within 90% of the limit
            let events = worst_case_events(states, SEGMENT_ROUNDS);
            assert!(
                events <= HISTORY_EVENTS_BUDGET,
                "a segment may write {events} events"
            );
            assert_eq!(events, 19_804, "the figure SEGMENT_ROUNDS documents");
        }
    }

    #[test]
    fn rounds_wait_at_least_the_floor_after_the_first_segment() {
        // GIVEN a 2 s poll (the local stack's)
        // THEN the first segment polls at 2 s, every later round waits 30 s
        assert_eq!(poll_wait(2, 1), 2);
        assert_eq!(poll_wait(2, SEGMENT_ROUNDS - 1), 2);
        assert_eq!(poll_wait(2, SEGMENT_ROUNDS), LATER_POLL_FLOOR_SECONDS);
        assert_eq!(poll_wait(60, 5 * SEGMENT_ROUNDS), 60);
        // AND a segment ends every SEGMENT_ROUNDS rounds
        let ends: Vec<u64> = (0..=1800).filter(|r| ends_segment(*r)).collect();
        assert_eq!(ends, [600, 1200, 1800]);
    }
}
