//! Step Functions' limits that bound a run, and the arithmetic that keeps fleetpatch under
//! them. Pure.
//!
//! Invariants, each checked by a test against `statemachine/patching.asl.json`:
//! - plan's answer, as the state machine carries it (inside the `lambda:invoke` result),
//!   fits one state payload for the largest run plan accepts ([`crate::plan::MAX_LOCATIONS`]
//!   locations, Region codes of [`MAX_REGION_CODE_BYTES`], the longest run ID);
//! - the Distributed Map's collected child results fit one state payload at that size: every
//!   child ends with a constant, empty output, and catches every error it can catch.

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
}
