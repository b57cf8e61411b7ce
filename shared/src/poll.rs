//! How long dispatch waits before its next round: the configured poll, or longer when no
//! round before then can see anything new, or when rounds that often would cost more calls
//! than the refills they bring are worth. Pure: dispatch gathers what the round left behind
//! ([`PollView`]) and asks [`next_wait`].
//!
//! Two rules, the longer wins:
//! - **nothing new sooner**: an instance cannot end sooner after its batch was claimed than
//!   the shortest claim-to-end time observed so far in the location (a lower bound, see
//!   [`shortest_observed`]), nor later than its delivery timeout if it never starts. While
//!   instances wait for a slot, the next round is useful from the earliest moment any
//!   instance in flight could end; once none waits, from the moment every one could have.
//! - **a bounded refill lag**: a slot that frees waits on average half the interval before
//!   the next round refills it, so a location's makespan grows by about that half over the
//!   mean run, per run. With the mean run known ([`mean_run`], Little's law over the rounds
//!   since the first end), the interval is twice [`LAG_PER_MILLE`] of it: each refill waits
//!   about that share of a run, and a round at 5-30 minute runs finds about two ends (one
//!   ListCommands, and one SendCommand for the lot, instead of one call per end). The
//!   trade-off, calls against makespan, is `make bench`'s poll table.
//!
//! Invariants:
//! - never shorter than the configured poll ([`crate::limits::poll_wait`], which keeps the
//!   history guarantees), never longer than [`POLL_CEILING_SECONDS`] unless that poll is;
//! - the configured poll, unchanged, whenever a slot is free and instances wait for it (a
//!   refused or throttled send), or an instance in flight has no known claim (or is still
//!   Claimed, unsent: its recovery is due);
//! - before any end is seen, the configured poll, doubled for each round in a row that saw
//!   none (`Observed::quiet_rounds`): a window just sent is not asked about every poll
//!   while its first runs cannot have ended, and the first ends wait at most the ceiling.

/// The longest wait the adaptive rule asks for: a stop request, a command cancelled outside
/// fleetpatch, or an instance faster than any observed is noticed within this.
pub const POLL_CEILING_SECONDS: u64 = 300;

/// The refill lag the interval allows, in thousandths of the mean run: the interval is twice
/// this share of it (see the module header; chosen from `make bench`'s poll table).
pub const LAG_PER_MILLE: u64 = 45;

/// Ends the mean run needs before it is trusted.
pub const MIN_ENDS: u64 = 3;

/// Taken off every earliest-end time: covers clocks that disagree between Lambda and SSM,
/// and SendCommand's own latency against a delivery timeout.
pub const CLOCK_MARGIN_SECONDS: u64 = 10;

/// Seconds a location waits before its first dispatch round: a fixed share of one configured
/// poll, drawn from the run and the location (FNV-1a, so the same on every retry, build and
/// platform), in `0..poll_seconds`.
///
/// Why: a run starts every location of a wave at once, and without this their rounds would
/// stay in step: every poll, one dispatch invocation per location in the same second, which
/// takes that much of the account's Lambda concurrency and as many execution environments,
/// each caching its own credentials for each account it happens to serve (STS AssumeRole
/// grows with environments x accounts). Spread over one poll, the rounds of 400 locations
/// come about 13 a second, which a few warm environments serve. The cost is at most one poll
/// before a location's first send, once per run. (The local stack cannot show the
/// environments' side: `cargo lambda watch` starts its full `--concurrency` of processes
/// whatever the load; see the README's Scale section.)
pub fn start_offset(run_id: &str, location: &str, poll_seconds: u64) -> u64 {
    if poll_seconds <= 1 {
        return 0;
    }
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = run_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(location.bytes());
    let hash = bytes.fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    hash % poll_seconds
}

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
    /// The mean claim-to-end time observed in the location ([`mean_run`]).
    pub mean_run_seconds: Option<u64>,
    /// Rounds in a row that saw no end, before the first (`Observed::quiet_rounds`).
    pub quiet_rounds: u64,
}

/// What the rounds of a location have observed of its runs, from counts and waits alone (no
/// clock: the waits are the state machine's, so it reads the same on any clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Instances in flight (less those counted free) when the last round answered.
    pub in_flight: u64,
    /// Since the first end seen: the sum over waits of the instances in flight x the wait.
    pub in_flight_seconds: u64,
    /// Since the first end seen (that round's excluded): instances seen ending.
    pub ended: u64,
    /// Whether an end was seen yet.
    pub started: bool,
    /// Instances the last round left unread, their slots counted free ([`crate::reading`]).
    pub unread: u64,
    /// Before the first end: the rounds that followed instances in flight and saw none end.
    pub quiet_rounds: u64,
}

/// `previous` after a round that followed a wait of `waited` seconds and found `in_flight`
/// instances still in flight (before it starts any). The span before the first end is left
/// out: every instance in it was young, and it would lengthen the mean.
pub fn observe(previous: Observed, waited: u64, in_flight: u64) -> Observed {
    let ended = previous.in_flight.saturating_sub(in_flight);
    if !previous.started {
        let quiet = previous.in_flight > 0 && ended == 0;
        return Observed {
            started: ended > 0,
            quiet_rounds: previous.quiet_rounds + u64::from(quiet),
            ..previous
        };
    }
    Observed {
        in_flight_seconds: previous.in_flight_seconds + previous.in_flight * waited,
        ended: previous.ended + ended,
        ..previous
    }
}

/// The mean run (Little's law: time in flight over ends), once [`MIN_ENDS`] are seen.
pub fn mean_run(o: &Observed) -> Option<u64> {
    (o.ended >= MIN_ENDS).then(|| o.in_flight_seconds / o.ended)
}

/// Seconds to wait before the next round (the rules of the module header).
pub fn next_wait(v: &PollView) -> u64 {
    let poll = v.poll_seconds;
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

    let lag = v.mean_run_seconds.map(|m| m * 2 * LAG_PER_MILLE / 1000);
    let until = v.shortest_seconds.and_then(|shortest| {
        let soonest_end = shortest.min(v.delivery_timeout_seconds) as i64;
        let ends = claims
            .iter()
            .map(|claimed| claimed + soonest_end - CLOCK_MARGIN_SECONDS as i64);
        let useful_from = if v.pending > 0 {
            ends.min()
        } else {
            ends.max()
        }?;
        Some(u64::try_from(useful_from - v.now).unwrap_or(0))
    });
    let quiet = poll.saturating_mul(1 << v.quiet_rounds.min(16));
    let wait = lag.into_iter().chain(until).max().unwrap_or(quiet);
    wait.clamp(poll, poll.max(POLL_CEILING_SECONDS))
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
            mean_run_seconds: None,
            quiet_rounds: 0,
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

    #[test]
    fn with_the_mean_run_known_rounds_come_at_a_share_of_it() {
        // GIVEN a full window, instances waiting, and a mean run of 1,000 s observed
        let v = PollView {
            mean_run_seconds: Some(1000),
            ..full_window(&[NOW - 1000; 25])
        };
        // WHEN the next wait is decided, though some instance could already have ended
        // THEN it is twice the allowed lag share of the mean run, not the configured poll
        assert_eq!(next_wait(&v), 1000 * 2 * LAG_PER_MILLE / 1000);
        // AND the nothing-new-sooner rule still wins when it asks for longer
        let young = PollView {
            mean_run_seconds: Some(1000),
            ..full_window(&[NOW; 25])
        };
        assert_eq!(next_wait(&young), 300 - CLOCK_MARGIN_SECONDS);
    }

    #[test]
    fn the_mean_run_never_delays_a_refill_or_a_recovery() {
        // GIVEN a mean run known, and a free slot with instances waiting for it
        let free = PollView {
            mean_run_seconds: Some(1000),
            free_slots: 1,
            ..full_window(&[NOW - 1000; 24])
        };
        // THEN the configured poll
        assert_eq!(next_wait(&free), 30);
        // AND likewise with a batch claimed but not yet sent
        let mut unsent = PollView {
            mean_run_seconds: Some(1000),
            ..full_window(&[NOW - 1000; 24])
        };
        unsent.in_flight_claimed.push(None);
        assert_eq!(next_wait(&unsent), 30);
        // AND a long mean run stops at the ceiling
        let long = PollView {
            mean_run_seconds: Some(100_000),
            ..full_window(&[NOW - 1000; 25])
        };
        assert_eq!(next_wait(&long), POLL_CEILING_SECONDS);
    }

    #[test]
    fn the_mean_run_is_time_in_flight_over_ends_after_the_first_end() {
        // GIVEN 25 in flight, and rounds 300 s apart where nothing ends, then 2 end
        let mut o = Observed {
            in_flight: 25,
            ..Observed::default()
        };
        o = observe(o, 300, 25);
        assert_eq!(
            o,
            Observed {
                in_flight: 25,
                quiet_rounds: 1,
                ..Observed::default()
            }
        );
        o = observe(o, 300, 23);
        // THEN the span before the first end is left out
        assert!(o.started);
        assert_eq!((o.in_flight_seconds, o.ended), (0, 0));
        // WHEN the window is refilled to 25 and rounds of 100 s see 1, 1, then 2 end
        for gone in [1, 1, 2] {
            o.in_flight = 25;
            o = observe(o, 100, 25 - gone);
        }
        // THEN 3 x 25 x 100 instance-seconds over 4 ends: a mean run of 1,875 s
        assert_eq!((o.in_flight_seconds, o.ended), (7500, 4));
        assert_eq!(mean_run(&o), Some(1875));
        // AND fewer than MIN_ENDS ends tell nothing
        assert_eq!(
            mean_run(&Observed {
                ended: MIN_ENDS - 1,
                in_flight_seconds: 9,
                ..o
            }),
            None
        );
    }

    #[test]
    fn before_the_first_end_each_quiet_round_doubles_the_wait() {
        // GIVEN a window in flight, nothing observed, and rounds that see nothing end
        let mut o = Observed::default();
        o = observe(o, 0, 0);
        o.in_flight = 25;
        let mut waits = Vec::new();
        for _ in 0..5 {
            o = observe(o, 30, 25);
            let v = PollView {
                shortest_seconds: None,
                quiet_rounds: o.quiet_rounds,
                ..full_window(&[NOW - 100; 25])
            };
            waits.push(next_wait(&v));
        }
        // THEN the waits double from the configured poll, up to the ceiling
        assert_eq!(waits, vec![60, 120, 240, 300, 300]);
        // AND once an end is seen the count stops
        let seen = observe(o, 30, 24);
        assert!(seen.started);
        assert_eq!(observe(seen, 30, 24).quiet_rounds, o.quiet_rounds);
    }

    #[test]
    fn start_offsets_stay_inside_one_poll_and_never_change() {
        for poll in [1, 2, 5, 30, 3600] {
            for i in 0..50 {
                let loc = format!("{:012}/us-east-1", 100_000_000_000u64 + i);
                let o = start_offset("run-1", &loc, poll);
                assert!(o < poll.max(1), "offset {o} of a {poll} s poll");
                assert_eq!(o, start_offset("run-1", &loc, poll), "the same on a retry");
            }
        }
        assert_eq!(start_offset("run-1", "111111111111/us-east-1", 1), 0);
        // A fixed value: the hash is FNV-1a, not the standard library's (whose output may
        // change between Rust releases, moving a retried location's offset).
        assert_eq!(
            start_offset("r", "a", 1_000_000),
            0x8a66_b719_615e_484a % 1_000_000
        );
    }

    #[test]
    fn start_offsets_spread_a_large_run_over_the_poll() {
        // 100 accounts x 4 Regions over a 30 s poll: about 13 locations a second
        let regions = ["us-east-1", "eu-west-1", "ap-southeast-2", "ap-northeast-1"];
        let mut per_second = [0u32; 30];
        for a in 0..100u64 {
            for r in regions {
                let loc = format!("{}/{r}", 200_000_000_000u64 + a);
                per_second[start_offset("scale-100k-1", &loc, 30) as usize] += 1;
            }
        }
        let busiest = *per_second.iter().max().unwrap();
        let idle = per_second.iter().filter(|n| **n == 0).count();
        assert_eq!(idle, 0, "every second of the poll is used: {per_second:?}");
        assert!(
            busiest <= 26,
            "at most twice the mean (13.3) in one second: {per_second:?}"
        );
        // and a different run draws different offsets for the same location
        let same = (0..100u64)
            .filter(|a| {
                let loc = format!("{}/us-east-1", 200_000_000_000u64 + a);
                start_offset("run-a", &loc, 30) == start_offset("run-b", &loc, 30)
            })
            .count();
        assert!(
            same < 20,
            "{same} of 100 locations kept their offset across runs"
        );
    }
}
