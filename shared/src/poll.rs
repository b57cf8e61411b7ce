//! How long dispatch waits before its next round: the configured poll, or longer when no
//! round before then can see anything new. Pure: dispatch gathers what the round left
//! behind ([`PollView`]) and asks [`next_wait`].
//!
//! The rule: an instance cannot end sooner after its batch was claimed than the shortest
//! claim-to-end time observed so far in the location (a lower bound, see
//! [`shortest_observed`]), nor later than its delivery timeout if it never starts. So after
//! a round:
//! - while instances wait for a slot, the next round is useful from the earliest moment any
//!   instance in flight could end (a slot could free);
//! - once none waits, only the last end finishes the location: the next round is useful from
//!   the earliest moment every instance in flight could have ended.
//!
//! Invariants:
//! - never shorter than the configured poll ([`crate::limits::poll_wait`], which keeps the
//!   history guarantees), never longer than [`POLL_CEILING_SECONDS`] unless that poll is;
//! - the configured poll, unchanged, whenever a round could see news sooner: nothing observed
//!   yet, a free slot with instances waiting for it (a refused or throttled send), an
//!   instance in flight whose claim time is unknown (or still Claimed, unsent), or an
//!   instance that could already have ended.

/// The longest wait the adaptive rule asks for: a stop request, a command cancelled outside
/// fleetpatch, or an instance faster than any observed is noticed within this.
pub const POLL_CEILING_SECONDS: u64 = 300;

/// Taken off every earliest-end time: covers clocks that disagree between Lambda and SSM,
/// and SendCommand's own latency against a delivery timeout.
pub const CLOCK_MARGIN_SECONDS: u64 = 10;

/// What the round leaves behind, as the next wait is decided from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollView {
    /// Epoch seconds, when the round answers.
    pub now: i64,
    /// The configured poll for this round ([`crate::limits::poll_wait`]).
    pub poll_seconds: u64,
    /// For each instance in flight after the round: when its batch was claimed (epoch
    /// seconds), or None when it is not known or the batch is not sent yet.
    pub in_flight_claimed: Vec<Option<i64>>,
    /// Instances still waiting for a slot after the round.
    pub pending: u64,
    /// Slots free after the round (window less instances in flight).
    pub free_slots: u64,
    /// The shortest claim-to-end time observed in the location (a lower bound).
    pub shortest_seconds: Option<u64>,
    /// SendCommand's delivery timeout: an instance that never starts ends by then.
    pub delivery_timeout_seconds: u64,
}

/// Seconds to wait before the next round (the rule of the module header).
pub fn next_wait(v: &PollView) -> u64 {
    let poll = v.poll_seconds;
    let Some(shortest) = v.shortest_seconds else {
        return poll;
    };
    if v.pending > 0 && v.free_slots > 0 {
        return poll;
    }
    let Some(claims) = v
        .in_flight_claimed
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()
    else {
        return poll;
    };

    let soonest_end = shortest.min(v.delivery_timeout_seconds) as i64;
    let ends = claims
        .iter()
        .map(|claimed| claimed + soonest_end - CLOCK_MARGIN_SECONDS as i64);
    let useful_from = if v.pending > 0 {
        ends.min()
    } else {
        ends.max()
    };
    let Some(useful_from) = useful_from else {
        return poll;
    };

    let until = u64::try_from(useful_from - v.now).unwrap_or(0);
    until.clamp(poll, poll.max(POLL_CEILING_SECONDS))
}

/// The shortest claim-to-end time known after a round (a lower bound on every one seen):
/// `previous`, lowered by each instance seen ended this round. Such an instance was still
/// in flight when the previous round started (`previous_round_at`, epoch seconds), so it
/// took at least that moment less its claim time; with no previous round known, nothing
/// bounds it but 0.
pub fn shortest_observed(
    previous: Option<u64>,
    previous_round_at: Option<i64>,
    ended_claimed: &[i64],
) -> Option<u64> {
    ended_claimed
        .iter()
        .map(|claimed| {
            previous_round_at
                .and_then(|at| u64::try_from(at - claimed).ok())
                .unwrap_or(0)
        })
        .chain(previous)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 10_000;

    /// A location whose window (25) is full and 100 instances wait, with a 30 s poll, a
    /// shortest observed run of 300 s and a one-hour delivery timeout.
    fn full_window(claimed: &[i64]) -> PollView {
        PollView {
            now: NOW,
            poll_seconds: 30,
            in_flight_claimed: claimed.iter().map(|c| Some(*c)).collect(),
            pending: 100,
            free_slots: 0,
            shortest_seconds: Some(300),
            delivery_timeout_seconds: 3600,
        }
    }

    #[test]
    fn with_nothing_observed_yet_the_configured_poll_is_kept() {
        // GIVEN a window just filled, and no instance ended yet in the location
        let v = PollView {
            shortest_seconds: None,
            ..full_window(&[NOW; 25])
        };
        // THEN the next round comes after the configured poll
        assert_eq!(next_wait(&v), 30);
    }

    #[test]
    fn a_window_sent_just_now_is_not_polled_before_its_shortest_run() {
        // GIVEN every instance in flight claimed 10 s ago, and 300 s the shortest run seen
        let v = full_window(&[NOW - 10; 25]);
        // WHEN the next wait is decided
        // THEN no round comes before one of them could end (300 - 10 - the margin)
        assert_eq!(next_wait(&v), 300 - 10 - CLOCK_MARGIN_SECONDS);
    }

    #[test]
    fn an_instance_that_could_already_have_ended_is_not_delayed() {
        // GIVEN a full window where one instance was claimed 400 s ago (past the shortest
        // run) and the others just now
        let mut claimed = vec![NOW - 5; 24];
        claimed.push(NOW - 400);
        // THEN the next round comes after the configured poll, no later
        assert_eq!(next_wait(&full_window(&claimed)), 30);
        // AND likewise when it could end within less than the poll
        claimed[24] = NOW - 290;
        assert_eq!(next_wait(&full_window(&claimed)), 30);
    }

    #[test]
    fn the_earliest_instance_decides_while_others_wait_for_a_slot() {
        // GIVEN claims 100 s, 50 s and 0 s ago
        let v = full_window(&[NOW - 100, NOW - 50, NOW]);
        // THEN the next round comes when the oldest could end
        assert_eq!(next_wait(&v), 300 - 100 - CLOCK_MARGIN_SECONDS);
    }

    #[test]
    fn once_none_waits_only_the_last_end_matters() {
        // GIVEN the same claims, and no instance waiting for a slot
        let v = PollView {
            pending: 0,
            free_slots: 22,
            ..full_window(&[NOW - 100, NOW - 50, NOW])
        };
        // THEN the next round comes when the newest could end: before that the location
        // cannot finish, and no slot needs filling
        assert_eq!(next_wait(&v), 300 - CLOCK_MARGIN_SECONDS);
    }

    #[test]
    fn a_free_slot_with_instances_waiting_is_refilled_at_the_next_poll() {
        // GIVEN a send that was refused (throttled): a slot is free, instances wait
        let v = PollView {
            free_slots: 1,
            ..full_window(&[NOW; 24])
        };
        // THEN the next round comes after the configured poll
        assert_eq!(next_wait(&v), 30);
    }

    #[test]
    fn an_unknown_or_unsent_claim_keeps_the_configured_poll() {
        // GIVEN one instance in flight whose batch is unknown or not sent yet
        let mut v = full_window(&[NOW; 24]);
        v.in_flight_claimed.push(None);
        // THEN the next round comes after the configured poll
        assert_eq!(next_wait(&v), 30);
    }

    #[test]
    fn a_short_delivery_timeout_is_noticed() {
        // GIVEN a delivery timeout of 60 s, shorter than any run observed
        let v = PollView {
            delivery_timeout_seconds: 60,
            ..full_window(&[NOW; 25])
        };
        // THEN the next round comes when an instance that never started would time out
        assert_eq!(next_wait(&v), 60 - CLOCK_MARGIN_SECONDS);
    }

    #[test]
    fn the_wait_stays_between_the_poll_and_the_ceiling() {
        // GIVEN runs of at least an hour observed, and a window sent just now
        let long = PollView {
            shortest_seconds: Some(3600),
            ..full_window(&[NOW; 25])
        };
        // THEN the wait stops at the ceiling
        assert_eq!(next_wait(&long), POLL_CEILING_SECONDS);
        // AND a configured poll above the ceiling is kept as it is
        let slow = PollView {
            poll_seconds: 900,
            ..long
        };
        assert_eq!(next_wait(&slow), 900);
    }

    #[test]
    fn the_shortest_run_is_a_lower_bound_from_the_previous_round() {
        // GIVEN a previous round that started at 1,000, a shortest run of 500 s so far
        // WHEN instances claimed at 200 and 700 are seen ended
        // THEN they took at least 800 s and 300 s: the shortest becomes 300
        assert_eq!(
            shortest_observed(Some(500), Some(1000), &[200, 700]),
            Some(300)
        );
        // AND one claimed after the previous round started bounds it to 0
        assert_eq!(shortest_observed(Some(500), Some(1000), &[1010]), Some(0));
        // AND with no previous round known, an ended instance bounds it to 0
        assert_eq!(shortest_observed(None, None, &[200]), Some(0));
        // AND nothing ended leaves it as it was
        assert_eq!(shortest_observed(Some(500), Some(1000), &[]), Some(500));
        assert_eq!(shortest_observed(None, Some(1000), &[]), None);
    }
}
