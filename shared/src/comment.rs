//! The Comment that tags each SendCommand batch. It is how a batch finds its own command
//! again after a lost answer (ListCommands filtered by Comment), so it must be unique per
//! (run, location, batch) and fit SendCommand's 100 characters.

use crate::model::Location;
use sha2::{Digest, Sha256};

/// SendCommand's Comment is at most 100 characters.
pub const MAX_COMMENT_CHARS: usize = 100;
const COMMENT_PREFIX: &str = "fleetpatch ";

/// Whether a run ID can stand for itself in a Comment: no whitespace, no `~` (Step Functions
/// execution names allow neither), nothing outside printable ASCII.
fn plain_run_id(run_id: &str) -> bool {
    !run_id.is_empty() && run_id.bytes().all(|b| b.is_ascii_graphic() && b != b'~')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Comment that tags a batch's command: `fleetpatch <run> <account>/<region> b<seq>`, at
/// most 100 characters, and different for every (run, location, batch), so that recovery
/// finds a batch's own command and no other. The location and the sequence number are never
/// cut. `<run>` is the run ID when everything fits; otherwise (execution names may be 80
/// characters) it is the run ID's first characters, `~`, and 16 hex digits of its SHA-256.
/// A run ID never contains `~`, so the two forms cannot meet.
pub fn comment(run_id: &str, loc: &Location, seq: u64) -> String {
    let tail = format!(" {}/{} b{seq}", loc.account, loc.region);
    let full = format!("{COMMENT_PREFIX}{run_id}{tail}");
    if plain_run_id(run_id) && full.chars().count() <= MAX_COMMENT_CHARS {
        return full;
    }
    let digest = hex(&Sha256::digest(run_id.as_bytes())[..8]);
    let room = MAX_COMMENT_CHARS
        .saturating_sub(COMMENT_PREFIX.len() + tail.chars().count() + 1 + digest.len());
    let head: String = run_id
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '~')
        .take(room)
        .collect();
    let short = format!("{COMMENT_PREFIX}{head}~{digest}{tail}");
    if short.chars().count() <= MAX_COMMENT_CHARS {
        return short;
    }
    // Only a location far longer than any real one gets here: one digest of everything.
    let all = format!("{run_id}\n{}\n{}\n{seq}", loc.account, loc.region);
    format!("{COMMENT_PREFIX}~{}", hex(&Sha256::digest(all.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn comments_fit_in_100_characters_and_name_run_and_location() {
        let loc = Location::new("123456789012", "ap-southeast-2");
        let c = comment("0b7c3a2e-3e1d-4c55-9a51-8c0e2b1d7f00", &loc, 123456);
        assert!(c.chars().count() <= 100, "{} chars", c.chars().count());
        assert_eq!(
            c,
            "fleetpatch 0b7c3a2e-3e1d-4c55-9a51-8c0e2b1d7f00 123456789012/ap-southeast-2 b123456"
        );
    }

    /// An execution name of the longest allowed length (80 characters).
    fn long_run_id(last: char) -> String {
        let mut id = "patch-tuesday-".repeat(6);
        id.truncate(79);
        id.push(last);
        assert_eq!(id.len(), 80);
        id
    }

    #[test]
    fn an_80_character_run_id_still_gives_every_batch_its_own_comment() {
        // GIVEN an 80-character run ID and the longest Region code
        let run = long_run_id('a');
        let loc = Location::new("123456789012", "ap-southeast-2");
        // WHEN batches 1 to 1,000,000 of the location are tagged
        let comments: Vec<String> = [1, 2, 10, 11, 100, 999_999, 1_000_000]
            .iter()
            .map(|seq| comment(&run, &loc, *seq))
            .collect();
        // THEN every Comment fits SendCommand's 100 characters, keeps the location and the
        // batch number whole, and no two are alike
        for (c, seq) in comments.iter().zip([1, 2, 10, 11, 100, 999_999, 1_000_000]) {
            assert!(
                c.chars().count() <= MAX_COMMENT_CHARS,
                "{c}: {} chars",
                c.len()
            );
            assert!(
                c.ends_with(&format!(" 123456789012/ap-southeast-2 b{seq}")),
                "{c}"
            );
            assert!(c.starts_with("fleetpatch patch-tuesday-"), "{c}");
        }
        let distinct: BTreeSet<&String> = comments.iter().collect();
        assert_eq!(distinct.len(), comments.len(), "{comments:#?}");
    }

    #[test]
    fn run_ids_that_differ_only_past_the_cut_get_different_comments() {
        // GIVEN two 80-character run IDs that differ only in their last character
        let loc = Location::new("123456789012", "us-east-1");
        let (a, b) = (long_run_id('a'), long_run_id('b'));
        // WHEN the same batch of the same location is tagged in each run
        let (ca, cb) = (comment(&a, &loc, 1), comment(&b, &loc, 1));
        // THEN the Comments differ, and neither is the other run's
        assert_ne!(ca, cb);
        assert!(ca.len() <= 100 && cb.len() <= 100);
        // and a shortened run ID can never equal a run ID written out (`~` is not allowed
        // in execution names)
        assert!(ca.contains('~'));
        assert!(!comment("short-run", &loc, 1).contains('~'));
    }

    #[test]
    fn a_run_id_with_spaces_or_tildes_is_never_written_out() {
        let loc = Location::new("123456789012", "us-east-1");
        let a = comment("run 1", &loc, 1);
        let b = comment("run~1", &loc, 1);
        assert_ne!(a, b);
        assert_eq!(a.split(' ').count(), 4, "{a}");
        assert!(
            comment(
                &"x".repeat(500),
                &Location::new("123456789012", "r".repeat(200)),
                7
            )
            .chars()
            .count()
                <= MAX_COMMENT_CHARS
        );
    }
}
