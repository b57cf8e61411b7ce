//! Rate control with SSM's grammar and meaning.
//!
//! `MaxConcurrency` and `MaxErrors` are strings that hold either an absolute number or a
//! percentage. fleetpatch uses the same grammar twice: once for locations (account x Region)
//! and once for instances inside a location. This module parses them and turns them into
//! absolute numbers once the number of targets is known.
//!
//! Rounding rules (chosen here, documented in the README, pinned by tests):
//! - concurrency `p%` of `n` targets is `floor(p * n / 100)`, at least 1: the window never
//!   exceeds the percentage, and a run always makes progress.
//! - error threshold `p%` of `n` targets allows `floor(p * n / 100)` errors; the run stops
//!   starting new targets when the error count goes *past* that number (SSM's meaning: with
//!   `MaxErrors` 0 the first error stops it; with 10% of 50 the 6th error stops it).
//!   `100%` never stops.
//!
//! A [`Rate`] is read and written as the text a person wrote (`"10%"`, `"0"`, `"50"`): the
//! grammar has one spelling per value, so the text round-trips byte for byte.

use serde::{Deserialize, Deserializer, Serializer};
use std::borrow::Cow;
use std::fmt;

/// A parsed rate-control value: an absolute number or a percentage of the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// An absolute count.
    Count(u64),
    /// A percentage of the number of targets, 0..=100.
    Percent(u8),
}

/// Why a rate-control string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// The string does not match the grammar.
    #[error("must be a number{zero} or a percentage such as 10% ({rule})", zero = if *.zero_allowed { " (0 allowed)" } else { " of at least 1" })]
    Grammar {
        /// Whether 0 / 0% are allowed (MaxErrors) or not (MaxConcurrency).
        zero_allowed: bool,
        /// The regular expression SSM documents for this field.
        rule: &'static str,
    },
}

/// SSM's pattern for `MaxConcurrency`.
pub const MAX_CONCURRENCY_PATTERN: &str = "^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$";
/// SSM's pattern for `MaxErrors`.
pub const MAX_ERRORS_PATTERN: &str = "^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$";

impl Rate {
    /// Parses a `MaxConcurrency` string: `^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$`.
    pub fn parse_concurrency(s: &str) -> Result<Rate, RateError> {
        parse(s, false).ok_or(RateError::Grammar {
            zero_allowed: false,
            rule: MAX_CONCURRENCY_PATTERN,
        })
    }

    /// Parses a `MaxErrors` string: `^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$`.
    pub fn parse_errors(s: &str) -> Result<Rate, RateError> {
        parse(s, true).ok_or(RateError::Grammar {
            zero_allowed: true,
            rule: MAX_ERRORS_PATTERN,
        })
    }

    /// The concurrency window for `targets` targets: never more than the value allows,
    /// at least 1 (and never more than the targets when there are any).
    pub fn window(self, targets: u64) -> u64 {
        let raw = match self {
            Rate::Count(n) => n,
            Rate::Percent(p) => u64::from(p) * targets / 100,
        };
        let capped = if targets > 0 { raw.min(targets) } else { raw };
        capped.max(1)
    }

    /// The number of errors tolerated among `targets` targets. The run stops starting new
    /// targets once the error count is greater than this number. `None` means never stop
    /// (100%).
    pub fn tolerated_errors(self, targets: u64) -> Option<u64> {
        match self {
            Rate::Percent(100) => None,
            Rate::Count(n) => Some(n),
            Rate::Percent(p) => Some(u64::from(p) * targets / 100),
        }
    }
}

/// Whether `errors` errors pass the threshold `tolerated` (see [`Rate::tolerated_errors`]).
pub fn threshold_passed(errors: u64, tolerated: Option<u64>) -> bool {
    tolerated.is_some_and(|t| errors > t)
}

fn parse(s: &str, zero_allowed: bool) -> Option<Rate> {
    let (digits, percent) = match s.strip_suffix('%') {
        Some(d) => (d, true),
        None => (s, false),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // No leading zeros, except the single digit "0".
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    if percent {
        let p: u8 = match digits.len() {
            1 | 2 => digits.parse().ok()?,
            3 if digits == "100" => 100,
            _ => return None,
        };
        if p == 0 && !zero_allowed {
            return None;
        }
        Some(Rate::Percent(p))
    } else {
        let n: u64 = digits.parse().ok()?;
        if n == 0 && !zero_allowed {
            return None;
        }
        Some(Rate::Count(n))
    }
}

/// The text a person wrote: `10%`, `0`, `50`.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Count(n) => write!(f, "{n}"),
            Rate::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Serde for a field in `MaxConcurrency` grammar (`#[serde(with = "...::concurrency")]`).
pub mod concurrency {
    use super::*;

    /// Writes the rate as its text.
    pub fn serialize<S: Serializer>(rate: &Rate, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(rate)
    }

    /// Reads the text; a value outside the grammar is an error, never a default.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        Rate::parse_concurrency(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for a field in `MaxErrors` grammar (`#[serde(with = "...::errors")]`).
pub mod errors {
    use super::*;

    /// Writes the rate as its text.
    pub fn serialize<S: Serializer>(rate: &Rate, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(rate)
    }

    /// Reads the text; a value outside the grammar is an error, never a default.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        Rate::parse_errors(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_grammar_accepts_ssm_examples() {
        for (s, want) in [
            ("1", Rate::Count(1)),
            ("10", Rate::Count(10)),
            ("50", Rate::Count(50)),
            ("1000", Rate::Count(1000)),
            ("1%", Rate::Percent(1)),
            ("9%", Rate::Percent(9)),
            ("10%", Rate::Percent(10)),
            ("99%", Rate::Percent(99)),
            ("100%", Rate::Percent(100)),
        ] {
            assert_eq!(Rate::parse_concurrency(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn concurrency_grammar_refuses_what_ssm_refuses() {
        for s in [
            "", "0", "0%", "00", "01", "05%", "101%", "200%", "1000%", "-1", "1.5", "10 %", " 10",
            "%", "ten", "1e3", "+5",
        ] {
            assert!(
                Rate::parse_concurrency(s).is_err(),
                "{s:?} should be refused"
            );
        }
    }

    #[test]
    fn error_grammar_accepts_zero_and_ssm_examples() {
        for (s, want) in [
            ("0", Rate::Count(0)),
            ("0%", Rate::Percent(0)),
            ("3", Rate::Count(3)),
            ("5%", Rate::Percent(5)),
            ("10%", Rate::Percent(10)),
            ("100%", Rate::Percent(100)),
            ("250", Rate::Count(250)),
        ] {
            assert_eq!(Rate::parse_errors(s), Ok(want), "{s}");
        }
        for s in ["", "00", "01", "101%", "-1", "1.0", "x%", "10%%"] {
            assert!(Rate::parse_errors(s).is_err(), "{s:?} should be refused");
        }
    }

    /// The threshold table. Rule: stop when errors > tolerated; tolerated = floor(p*n/100).
    #[test]
    fn threshold_table() {
        let e = |s: &str| Rate::parse_errors(s).unwrap();
        // MaxErrors 0: the first error stops the run.
        assert_eq!(e("0").tolerated_errors(50), Some(0));
        assert!(!threshold_passed(0, e("0").tolerated_errors(50)));
        assert!(threshold_passed(1, e("0").tolerated_errors(50)));
        // MaxErrors 3: the 4th error stops it.
        assert!(!threshold_passed(3, e("3").tolerated_errors(50)));
        assert!(threshold_passed(4, e("3").tolerated_errors(50)));
        // 10% of 50 = 5 tolerated: the 6th error stops it.
        assert_eq!(e("10%").tolerated_errors(50), Some(5));
        assert!(!threshold_passed(5, e("10%").tolerated_errors(50)));
        assert!(threshold_passed(6, e("10%").tolerated_errors(50)));
        // 10% of 45 = 4.5, rounded down to 4: the 5th error stops it.
        assert_eq!(e("10%").tolerated_errors(45), Some(4));
        // 100%: never stops, even when every target fails.
        assert_eq!(e("100%").tolerated_errors(50), None);
        assert!(!threshold_passed(50, e("100%").tolerated_errors(50)));
    }

    /// Window sizes. Rule: floor(p*n/100), at least 1, at most the number of targets.
    #[test]
    fn window_sizes() {
        let c = |s: &str| Rate::parse_concurrency(s).unwrap();
        assert_eq!(c("10%").window(120), 12);
        assert_eq!(c("10%").window(125), 12);
        assert_eq!(c("10%").window(5), 1);
        assert_eq!(c("1%").window(0), 1);
        assert_eq!(c("100%").window(37), 37);
        assert_eq!(c("50").window(120), 50);
        assert_eq!(c("50").window(7), 7);
        assert_eq!(c("3").window(0), 3);
    }

    /// Every string of up to five characters over digits and `%`: the parser accepts
    /// exactly what the schema's pattern accepts, the pattern is SSM's, and what it reads
    /// is written back as the same text.
    #[test]
    fn the_parsers_agree_with_the_schema_patterns() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../statemachine/run-input.schema.json")).unwrap();
        type Parse = fn(&str) -> Result<Rate, RateError>;
        let grammars: [(&str, &str, Parse); 2] = [
            (
                "targetConcurrency",
                MAX_CONCURRENCY_PATTERN,
                Rate::parse_concurrency,
            ),
            (
                "targetErrorThreshold",
                MAX_ERRORS_PATTERN,
                Rate::parse_errors,
            ),
        ];

        for (field, ssm_pattern, parse) in grammars {
            let pattern = &schema["properties"][field]["pattern"];
            assert_eq!(pattern, ssm_pattern);
            let matches =
                jsonschema::validator_for(&serde_json::json!({ "pattern": pattern })).unwrap();

            let mut texts = vec![String::new()];
            for _ in 0..5 {
                let longer: Vec<String> = texts
                    .iter()
                    .flat_map(|t| "01239%".chars().map(move |c| format!("{t}{c}")))
                    .collect();
                texts.extend(longer);
            }
            texts.sort_unstable();
            texts.dedup();

            for text in &texts {
                let parsed = parse(text);
                assert_eq!(
                    parsed.is_ok(),
                    matches.is_valid(&serde_json::json!(text)),
                    "{field} {text:?}"
                );
                if let Ok(rate) = parsed {
                    assert_eq!(&rate.to_string(), text);
                }
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["7", "0", "15%", "100%"] {
            assert_eq!(Rate::parse_errors(s).unwrap().to_string(), s);
        }
    }
}
