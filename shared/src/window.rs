//! The sliding window and the instance error threshold of one location, as SSM defines
//! them for `MaxConcurrency` and `MaxErrors`: at most `window` instances in flight (claimed
//! or sent, not final), and nothing new once counted errors (Failed, Execution Timed Out)
//! pass the tolerated number. Pure: dispatch loads the instances, asks [`plan_round`], and
//! applies the answer.

use crate::model::{InstanceRecord, InstanceState};
use crate::ratecontrol::threshold_passed;

/// SendCommand accepts at most 50 instance IDs: a round starts instances in batches of at
/// most this many.
pub const SEND_CHUNK: usize = 50;

/// What one round decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Round {
    /// Counted errors (Failed, Execution Timed Out).
    pub errors: u64,
    /// Whether the error threshold is passed: nothing new starts.
    pub stopping: bool,
    /// Instances in flight (claimed or sent, not terminal).
    pub in_flight: u64,
    /// Instances to start now, in batches of at most 50.
    pub start: Vec<Vec<String>>,
    /// Pending instances that will never start (threshold passed).
    pub not_started: Vec<String>,
    /// Whether the location is finished once this round is applied.
    pub done: bool,
}

/// Decides one round from the instances' current states. Pure: the rules of the sliding
/// window and of the error threshold live here.
pub fn plan_round(instances: &[InstanceRecord], window: u64, tolerated: Option<u64>) -> Round {
    plan_round_after(0, instances, window, tolerated)
}

/// [`plan_round`] for the instances after a settled prefix that counted `prefix_errors`
/// (see [`crate::band`]).
pub fn plan_round_after(
    prefix_errors: u64,
    instances: &[InstanceRecord],
    window: u64,
    tolerated: Option<u64>,
) -> Round {
    let errors = prefix_errors
        + instances
            .iter()
            .filter(|i| i.state.counts_as_error())
            .count() as u64;
    let stopping = threshold_passed(errors, tolerated);
    let in_flight = instances.iter().filter(|i| i.state.in_flight()).count() as u64;
    let mut pending: Vec<&String> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .map(|i| &i.instance_id)
        .collect();
    pending.sort();
    let (start, not_started) = if stopping {
        (Vec::new(), pending.into_iter().cloned().collect())
    } else {
        let free = window.saturating_sub(in_flight) as usize;
        let ids: Vec<String> = pending.into_iter().take(free).cloned().collect();
        (
            ids.chunks(SEND_CHUNK).map(<[String]>::to_vec).collect(),
            Vec::new(),
        )
    };
    let pending_left = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .count()
        - not_started.len()
        - start.iter().map(Vec::len).sum::<usize>();
    let done = in_flight == 0 && start.is_empty() && pending_left == 0;
    Round {
        errors,
        stopping,
        in_flight,
        start,
        not_started,
        done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::set_state;
    use crate::ratecontrol::Rate;

    fn fleet(n: usize) -> Vec<InstanceRecord> {
        (0..n)
            .map(|i| InstanceRecord::new(&format!("i-{i:017}"), InstanceState::Pending))
            .collect()
    }

    /// Drives plan_round as the state machine would, finishing `per_round` in-flight
    /// instances between rounds (with `fail` deciding which fail), and returns the most
    /// instances ever in flight, the final states and the number of batches.
    fn simulate(
        mut instances: Vec<InstanceRecord>,
        window: u64,
        tolerated: Option<u64>,
        per_round: usize,
        fail: impl Fn(&str) -> bool,
    ) -> (u64, Vec<InstanceRecord>, usize) {
        let mut max_in_flight = 0;
        let mut batches = 0;
        for _ in 0..10_000 {
            // Finish some in-flight ones.
            for i in instances
                .iter_mut()
                .filter(|i| i.state == InstanceState::InFlight)
                .take(per_round)
            {
                i.state = if fail(&i.instance_id) {
                    InstanceState::Failed
                } else {
                    InstanceState::Succeeded
                };
            }
            let round = plan_round(&instances, window, tolerated);
            for id in &round.not_started {
                set_state(
                    &mut instances,
                    std::slice::from_ref(id),
                    InstanceState::NotStarted,
                    None,
                );
            }
            for ids in &round.start {
                assert!(
                    ids.len() <= SEND_CHUNK,
                    "a batch of {} instances",
                    ids.len()
                );
                batches += 1;
                set_state(&mut instances, ids, InstanceState::InFlight, Some("cmd"));
            }
            let now = instances.iter().filter(|i| i.state.in_flight()).count() as u64;
            max_in_flight = max_in_flight.max(now);
            if instances.iter().all(|i| i.state.is_terminal()) {
                return (max_in_flight, instances, batches);
            }
        }
        panic!("the simulation did not finish");
    }

    #[test]
    fn window_of_ten_percent_of_120_never_exceeds_12() {
        // GIVEN 120 online instances and targetConcurrency 10%
        let window = Rate::parse_concurrency("10%").unwrap().window(120);
        assert_eq!(window, 12);
        // WHEN every round finishes 5 of the instances in flight
        let (max, states, batches) = simulate(fleet(120), window, None, 5, |_| false);
        // THEN at most 12 were ever in flight, every instance succeeded, in several commands
        assert_eq!(max, 12);
        assert!(states.iter().all(|i| i.state == InstanceState::Succeeded));
        assert!(batches > 10, "{batches} batches");
    }

    #[test]
    fn large_windows_are_sent_in_chunks_of_50() {
        let round = plan_round(&fleet(120), 120, None);
        let sizes: Vec<usize> = round.start.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![50, 50, 20]);
        assert!(!round.done);
    }

    #[test]
    fn threshold_stops_new_starts_and_lets_in_flight_finish() {
        // GIVEN 50 instances, window 10, MaxErrors 10% (5 tolerated), every 3rd one fails
        let tolerated = Rate::parse_errors("10%").unwrap().tolerated_errors(50);
        let fail = |id: &str| id.trim_start_matches("i-").parse::<u64>().unwrap() % 3 == 0;
        let (_, states, _) = simulate(fleet(50), 10, tolerated, 10, fail);
        let count = |s: InstanceState| states.iter().filter(|i| i.state == s).count();
        // THEN it stopped: some never started, none is left pending or in flight,
        // and errors passed 5 (the in-flight ones finished and may add to the count)
        assert!(count(InstanceState::NotStarted) > 0);
        assert!(count(InstanceState::Failed) > 5);
        assert_eq!(
            count(InstanceState::Pending) + count(InstanceState::InFlight),
            0
        );
        assert_eq!(
            count(InstanceState::NotStarted)
                + count(InstanceState::Failed)
                + count(InstanceState::Succeeded),
            50
        );
    }

    #[test]
    fn zero_tolerance_stops_at_the_first_error() {
        let mut instances = fleet(5);
        instances[0].state = InstanceState::Failed;
        let round = plan_round(&instances, 2, Some(0));
        assert!(round.stopping);
        assert!(round.start.is_empty());
        assert_eq!(round.not_started.len(), 4);
        assert!(round.done);
    }

    #[test]
    fn uncounted_failures_do_not_stop() {
        let mut instances = fleet(5);
        instances[0].state = InstanceState::DeliveryTimedOut;
        instances[1].state = InstanceState::AccessDenied;
        instances[2].state = InstanceState::InvalidPlatform;
        let round = plan_round(&instances, 2, Some(0));
        assert!(!round.stopping);
        assert_eq!(
            round.start,
            vec![vec![
                "i-00000000000000003".to_string(),
                "i-00000000000000004".to_string()
            ]]
        );
    }

    #[test]
    fn claimed_instances_hold_their_slot() {
        let mut instances = fleet(10);
        instances[0].state = InstanceState::Claimed;
        instances[1].state = InstanceState::InFlight;
        let round = plan_round(&instances, 3, None);
        assert_eq!(round.in_flight, 2);
        assert_eq!(round.start.iter().map(Vec::len).sum::<usize>(), 1);
    }
}
