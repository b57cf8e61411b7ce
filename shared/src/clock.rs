//! The wall clock, in the units the table and the decisions use: epoch seconds, epoch
//! milliseconds, and ISO 8601 text for the timestamps people read.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `epoch` (seconds) as ISO 8601 UTC, e.g. `2026-12-08T02:00:00Z`.
pub fn iso(epoch: i64) -> String {
    aws_smithy_types::DateTime::from_secs(epoch)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// An RFC 3339 date-time with its zone (`2026-12-13T06:00:00Z`, `...+02:00`) in epoch
/// milliseconds; None when it is not one (February 30th included).
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    // The SDK's parser reads UTC (`Z`) only: an offset is taken off by hand.
    let (utc, offset_ms) = match text.len().checked_sub(6).map(|i| text.split_at(i)) {
        Some((base, zone)) if zone.starts_with(['+', '-']) && zone.as_bytes()[3] == b':' => {
            let hours: i64 = zone.get(1..3)?.parse().ok()?;
            let minutes: i64 = zone.get(4..6)?.parse().ok()?;
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            (format!("{base}Z"), sign * (hours * 60 + minutes) * 60_000)
        }
        _ => (text.to_string(), 0),
    };

    let t =
        aws_smithy_types::DateTime::from_str(&utc, aws_smithy_types::date_time::Format::DateTime)
            .ok()?;
    Some(t.to_millis().ok()? - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_a_zone_is_read_and_an_impossible_day_is_not() {
        // GIVEN the same instant written in UTC and with an offset, and a day that does not exist
        // WHEN they are read
        // THEN both give the same milliseconds, and the impossible day none
        let utc = parse_rfc3339_ms("2026-12-13T06:00:00Z");
        assert_eq!(utc, Some(1_797_141_600_000));
        assert_eq!(parse_rfc3339_ms("2026-12-13T08:00:00+02:00"), utc);
        assert_eq!(parse_rfc3339_ms("2026-12-13T01:30:00-04:30"), utc);
        assert_eq!(parse_rfc3339_ms("2026-02-30T06:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("tomorrow"), None);
    }
}
