//! The domain: where fleetpatch works ([`Location`]), what it sends (`Operation`,
//! `RebootOption`), the states of instances, locations and runs ([`states`]) and the records a
//! run keeps of them ([`records`]). Plain data and pure functions, no AWS types: the store maps
//! these to items, the handlers decide with them.

mod records;
mod states;

pub use records::*;
pub use states::*;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One place fleetpatch works in: an account and a Region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    /// 12-digit account ID.
    pub account: String,
    /// Region code, e.g. `eu-west-1`.
    pub region: String,
}

impl Location {
    /// A location from its parts.
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Location {
            account: account.into(),
            region: region.into(),
        }
    }
}

/// The compact form used in state payloads: `ACCOUNT/REGION` (about 30 bytes, so that
/// 5,000 locations fit in Step Functions' 256 KiB payload).
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

impl FromStr for Location {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((a, r))
                if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) && !r.is_empty() =>
            {
                Ok(Location::new(a, r))
            }
            _ => Err(format!("location {s:?} is not ACCOUNT/REGION")),
        }
    }
}

/// The patching operation of AWS-RunPatchBaseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Report missing patches, change nothing.
    Scan,
    /// Install missing patches.
    Install,
}

impl Operation {
    /// The value of the document's `Operation` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Scan => "Scan",
            Operation::Install => "Install",
        }
    }
}

/// AWS-RunPatchBaseline's `RebootOption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RebootOption {
    /// Reboot when an installed patch needs it (the document's default).
    RebootIfNeeded,
    /// Never reboot; nodes stay non-compliant (pending reboot) until rebooted and scanned.
    NoReboot,
}

impl RebootOption {
    /// The value of the document's `RebootOption` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            RebootOption::RebootIfNeeded => "RebootIfNeeded",
            RebootOption::NoReboot => "NoReboot",
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, and how many bytes were cut.
pub fn cut_text(s: &str, max: usize) -> (String, usize) {
    if s.len() <= max {
        return (s.to_string(), 0);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), s.len() - end)
}

/// The first `max` entries of `all`, and how many were left out.
pub fn first<T>(mut all: Vec<T>, max: usize) -> (Vec<T>, u64) {
    let omitted = all.len().saturating_sub(max) as u64;
    all.truncate(max);
    (all, omitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_compact_form_round_trips() {
        let l = Location::new("123456789012", "eu-west-1");
        assert_eq!(l.to_string(), "123456789012/eu-west-1");
        assert_eq!("123456789012/eu-west-1".parse::<Location>(), Ok(l));
        assert!("12345/eu-west-1".parse::<Location>().is_err());
        assert!("123456789012".parse::<Location>().is_err());
    }
}
