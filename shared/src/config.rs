//! Configuration read once per cold start from the environment. Every variable the
//! functions read is named here, and `infra/template.yaml` sets the same names.
//!
//! A variable that is set but malformed or out of range is a `ConfigError` naming it, never
//! a silent default: a misconfigured function fails its first invocation, visibly.

use crate::error::{Error, Result};

/// Table name (required).
pub const ENV_TABLE: &str = "FLEETPATCH_TABLE";
/// Event bus for run events (default `default`).
pub const ENV_EVENT_BUS: &str = "FLEETPATCH_EVENT_BUS";
/// Seconds the state machine waits between two dispatch polls (default 30, 1 to 3600).
pub const ENV_POLL_SECONDS: &str = "FLEETPATCH_POLL_SECONDS";
/// Days a run's records are kept before DynamoDB's TTL removes them (default 90, 1 to 3650).
pub const ENV_RECORD_TTL_DAYS: &str = "FLEETPATCH_RECORD_TTL_DAYS";
/// AWS partition of the target role ARNs (default `aws`).
pub const ENV_PARTITION: &str = "FLEETPATCH_PARTITION";
/// How many times faster than the wall clock the clock that a wave's minutes (its soak,
/// its approval timeout) are measured on runs (default 1, 1 to 3600): only the local stack
/// sets it, to its fleet simulator's speed, so that they last their minutes on the
/// simulated clock.
pub const ENV_CLOCK_SPEED: &str = "FLEETPATCH_CLOCK_SPEED";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// DynamoDB table holding runs, locations and instances.
    pub table: String,
    /// EventBridge bus for "run started" / "run completed".
    pub event_bus: String,
    /// Wait between dispatch polls, in seconds.
    pub poll_seconds: u64,
    /// Record lifetime in days (TTL attribute `expiresAt`).
    pub record_ttl_days: u64,
    /// Partition for ARNs (`aws`, `aws-us-gov`, `aws-cn`).
    pub partition: String,
    /// Soak and approval waits are divided by this (see [`ENV_CLOCK_SPEED`]).
    pub clock_speed: u64,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (the environment in production, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let table = get(ENV_TABLE)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Config(format!("{ENV_TABLE} is required (the table name)")))?;

        let number = |name: &str, default: u64, min: u64, max: u64| -> Result<u64> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{name} must be a number from {min} to {max}, got {v:?}"
                        ))
                    }),
            }
        };

        Ok(Config {
            table,
            event_bus: get(ENV_EVENT_BUS).unwrap_or_else(|| "default".to_string()),
            poll_seconds: number(ENV_POLL_SECONDS, 30, 1, 3600)?,
            record_ttl_days: number(ENV_RECORD_TTL_DAYS, 90, 1, 3650)?,
            partition: get(ENV_PARTITION).unwrap_or_else(|| "aws".to_string()),
            clock_speed: number(ENV_CLOCK_SPEED, 1, 1, 3600)?,
        })
    }

    /// A configuration for tests: table `fleetpatch-test`, defaults elsewhere.
    pub fn for_tests() -> Config {
        Config {
            table: "fleetpatch-test".into(),
            event_bus: "default".into(),
            poll_seconds: 5,
            record_ttl_days: 90,
            partition: "aws".into(),
            clock_speed: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_and_required_table() {
        let env: HashMap<&str, &str> = [(ENV_TABLE, "runs")].into();
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.table, "runs");
        assert_eq!(c.event_bus, "default");
        assert_eq!(c.poll_seconds, 30);
        assert_eq!(c.record_ttl_days, 90);
        let missing = Config::from_lookup(|_| None).unwrap_err();
        assert!(missing.to_string().contains(ENV_TABLE));
    }

    #[test]
    fn malformed_numbers_name_the_variable() {
        let env: HashMap<&str, &str> = [(ENV_TABLE, "t"), (ENV_POLL_SECONDS, "0")].into();
        let e = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(e.to_string().contains(ENV_POLL_SECONDS));
    }
}
