//! Which part of a location's partition a dispatch round reads (issue 8: the read must not
//! grow with the instances already settled). Instances are claimed in instance-ID order, and
//! a final state never changes, so a location's instances split into:
//! - a *settled prefix*: every instance up to `through` is final. The location item keeps
//!   `through` and the count of each final state below it ([`Watermark`]); a round never reads
//!   those instances again;
//! - the *band*: from after `through` up to the highest instance any batch claimed (every
//!   instance claimed or in flight is in it), then on until `need` Pending ones are read;
//! - an unread tail, never claimed, which a round reads only when it must retire every
//!   pending instance (threshold, halt, cancel) or when the band reaches it.
//!
//! Batches are read from `batches_from` on: no batch below it holds an instance that is not
//! final. Pure: the store reads what [`enough`] allows, and [`advance`] computes the next
//! watermark from what was read (before this round's writes), so any watermark ever written
//! is true for every later round, whichever invocation wrote it.

use crate::model::{BatchRecord, BatchState, Counts, InstanceRecord, InstanceState};

/// The settled prefix of a location, as stored on its location item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Watermark {
    /// Every instance with an ID up to and including this one is final; None: none known.
    pub through: Option<String>,
    /// How many instances of the prefix ended in each final state.
    pub counts: Counts,
    /// The lowest batch that may still hold an instance that is not final.
    pub batches_from: u64,
}

/// What one round read of a location's instances and batches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Band {
    /// The instances after the settled prefix, in ID order, as far as the read went.
    pub instances: Vec<InstanceRecord>,
    /// The batches from `batches_from` on.
    pub batches: Vec<BatchRecord>,
    /// Whether the read reached the location's last instance (no unread tail).
    pub complete: bool,
    /// The watermark the read started after.
    pub prefix: Watermark,
    /// Instances after the band, not read (at least 1 when the read stopped short).
    pub unread: u64,
}

/// The highest instance ID that any of `batches` claimed: the band reads at least this far.
pub fn claimed_through(batches: &[BatchRecord]) -> Option<&str> {
    batches
        .iter()
        .flat_map(|b| b.instance_ids.iter())
        .map(String::as_str)
        .max()
}

/// Whether a band read so far (`read`, in ID order) may stop: it went past every claimed
/// instance and holds at least `need` Pending instances after the last claimed one.
pub fn enough(read: &[InstanceRecord], claimed_through: Option<&str>, need: u64) -> bool {
    let Some(last) = read.last() else {
        return false;
    };
    if claimed_through.is_some_and(|c| last.instance_id.as_str() < c) {
        return false;
    }
    let pending = read
        .iter()
        .filter(|i| claimed_through.is_none_or(|c| i.instance_id.as_str() > c))
        .filter(|i| i.state == InstanceState::Pending)
        .count() as u64;
    pending >= need.max(1)
}

/// A batch claimed less than this long ago (epoch seconds) may have a lower sequence number
/// still unclaimed: its invocation took the number and has not landed the claim yet (the
/// claim follows at once; recovery allows such a claim 120 s). `batches_from` never passes
/// a batch claimed this recently.
pub const RECENT_CLAIM_SECONDS: i64 = 600;

/// The watermark after a read at `now` (epoch seconds): the prefix extended over the band's
/// leading final instances (in ID order, as read, before this round's writes), with their
/// states counted, and the lowest batch that may still hold an instance not final (any open
/// instance's, any claimed batch, and none past a recent claim). None when nothing moves.
pub fn advance(settled: &Watermark, band: &Band, now: i64) -> Option<Watermark> {
    let mut next = settled.clone();
    for i in band.instances.iter().take_while(|i| i.state.is_terminal()) {
        next.through = Some(i.instance_id.clone());
        *next.counts.entry(i.state).or_insert(0) += 1;
    }
    let open = band
        .instances
        .iter()
        .filter(|i| !i.state.is_terminal())
        .filter_map(|i| i.batch);
    let claimed = band
        .batches
        .iter()
        .filter(|b| b.state == BatchState::Claimed)
        .map(|b| b.seq);
    let recent = band
        .batches
        .iter()
        .filter(|b| now - b.claimed_at < RECENT_CLAIM_SECONDS)
        .map(|b| b.seq);
    let after_read = band.batches.iter().map(|b| b.seq + 1).max();
    next.batches_from = open
        .chain(claimed)
        .chain(recent)
        .min()
        .or(after_read)
        .unwrap_or(settled.batches_from)
        .max(settled.batches_from);
    (next.through != settled.through).then_some(next)
}

/// Every instance's state: the settled prefix's (from its counts), then the band's, then
/// `unread` Pending ones for the tail not read.
pub fn all_states(settled: &Watermark, band: &[InstanceRecord], unread: u64) -> Vec<InstanceState> {
    let prefix = settled
        .counts
        .iter()
        .flat_map(|(s, n)| std::iter::repeat_n(*s, *n as usize));
    prefix
        .chain(band.iter().map(|i| i.state))
        .chain(std::iter::repeat_n(InstanceState::Pending, unread as usize))
        .collect()
}

/// Counted errors (Failed, Execution Timed Out) in the settled prefix.
pub fn prefix_errors(settled: &Watermark) -> u64 {
    crate::model::count_where(&settled.counts, |s| s.counts_as_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(n: usize, state: InstanceState, batch: Option<u64>) -> InstanceRecord {
        let mut r = InstanceRecord::new(&format!("i-{n:017}"), state);
        r.batch = batch;
        r
    }

    const NOW: i64 = 1_000_000;

    fn batch(seq: u64, ids: &[usize], state: BatchState) -> BatchRecord {
        BatchRecord {
            seq,
            instance_ids: ids.iter().map(|n| format!("i-{n:017}")).collect(),
            comment: String::new(),
            claimed_at: NOW - RECENT_CLAIM_SECONDS,
            state,
            command_id: None,
        }
    }

    use InstanceState::{Failed, InFlight, Pending, Succeeded};

    #[test]
    fn the_prefix_grows_over_leading_final_instances_only() {
        // GIVEN a band: two final, one in flight, one final after it
        let band = Band {
            instances: vec![
                inst(1, Succeeded, Some(1)),
                inst(2, Failed, Some(1)),
                inst(3, InFlight, Some(2)),
                inst(4, Succeeded, Some(2)),
            ],
            batches: vec![
                batch(1, &[1, 2], BatchState::Sent),
                batch(2, &[3, 4], BatchState::Sent),
            ],
            complete: true,
            ..Band::default()
        };
        // WHEN the watermark advances
        let next = advance(&Watermark::default(), &band, NOW).unwrap();
        // THEN it stops before the instance in flight, counts the two, and batches start at 2
        assert_eq!(next.through.as_deref(), Some("i-00000000000000002"));
        assert_eq!(next.counts, Counts::from([(Succeeded, 1), (Failed, 1)]));
        assert_eq!(next.batches_from, 2);
        assert_eq!(prefix_errors(&next), 1);
    }

    #[test]
    fn a_band_that_starts_in_flight_moves_nothing() {
        // GIVEN a settled prefix and a band whose first instance is in flight
        let settled = Watermark {
            through: Some("i-00000000000000002".into()),
            counts: Counts::from([(Succeeded, 2)]),
            batches_from: 2,
        };
        let band = Band {
            instances: vec![inst(3, InFlight, Some(2)), inst(4, Succeeded, Some(2))],
            batches: vec![batch(2, &[3, 4], BatchState::Sent)],
            complete: true,
            ..Band::default()
        };
        // WHEN / THEN nothing is written
        assert_eq!(advance(&settled, &band, NOW), None);
    }

    #[test]
    fn batches_never_move_back_and_pass_every_settled_batch() {
        // GIVEN every instance read final, the last batch read 3
        let settled = Watermark {
            batches_from: 2,
            ..Watermark::default()
        };
        let band = Band {
            instances: vec![inst(1, Succeeded, Some(2)), inst(2, Succeeded, Some(3))],
            batches: vec![
                batch(2, &[1], BatchState::Sent),
                batch(3, &[2], BatchState::Sent),
            ],
            complete: true,
            ..Band::default()
        };
        // WHEN it advances THEN the next round reads batches from 4 on
        assert_eq!(advance(&settled, &band, NOW).unwrap().batches_from, 4);
    }

    #[test]
    fn a_claimed_batch_keeps_batches_from_at_its_seq() {
        // GIVEN a batch claimed but not sent, whose instance was read before the claim
        let band = Band {
            instances: vec![inst(1, Succeeded, Some(1)), inst(2, Pending, None)],
            batches: vec![
                batch(1, &[1], BatchState::Sent),
                batch(5, &[2], BatchState::Claimed),
            ],
            complete: true,
            ..Band::default()
        };
        // WHEN / THEN the claimed batch is still read next round
        assert_eq!(
            advance(&Watermark::default(), &band, NOW)
                .unwrap()
                .batches_from,
            5
        );
    }

    #[test]
    fn batches_from_never_passes_a_recent_claim() {
        // GIVEN every instance read final, batch 3 claimed a moment ago (seq 2 may have been
        // taken by an invocation that has not landed its claim yet)
        let mut recent = batch(3, &[2], BatchState::Sent);
        recent.claimed_at = NOW - 5;
        let band = Band {
            instances: vec![inst(1, Succeeded, Some(1)), inst(2, Succeeded, Some(3))],
            batches: vec![batch(1, &[1], BatchState::Sent), recent],
            complete: true,
            ..Band::default()
        };
        // WHEN it advances THEN batches are still read from 3 on
        assert_eq!(
            advance(&Watermark::default(), &band, NOW)
                .unwrap()
                .batches_from,
            3
        );
    }

    #[test]
    fn a_read_stops_past_the_claimed_and_a_page_of_pending() {
        // GIVEN instances 1..=3 claimed, then pending ones
        let read: Vec<InstanceRecord> = (1..=3)
            .map(|n| inst(n, InFlight, Some(1)))
            .chain((4..=6).map(|n| inst(n, Pending, None)))
            .collect();
        let claimed = Some("i-00000000000000003");
        // WHEN / THEN it needs three pending after the claimed ones, and not before
        assert!(!enough(&read[..3], claimed, 1));
        assert!(!enough(&read[..5], claimed, 3));
        assert!(enough(&read, claimed, 3));
        // AND a released instance below the claimed ones does not count toward the page
        let mut released = read.clone();
        released[0].state = Pending;
        assert!(!enough(&released[..5], claimed, 3));
    }

    #[test]
    fn all_states_puts_the_prefix_band_and_tail_together() {
        // GIVEN a prefix of 3, a band of 1 and a tail of 2
        let settled = Watermark {
            through: Some("x".into()),
            counts: Counts::from([(Succeeded, 2), (Failed, 1)]),
            batches_from: 1,
        };
        let states = all_states(&settled, &[inst(9, InFlight, Some(1))], 2);
        // THEN six states, the tail Pending
        assert_eq!(states.len(), 6);
        assert_eq!(states.iter().filter(|s| **s == Pending).count(), 2);
        assert_eq!(states.iter().filter(|s| **s == Failed).count(), 1);
    }
}
