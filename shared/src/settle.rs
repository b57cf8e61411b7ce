//! The `settle` function, last step of every location: record the location's outcome once,
//! count it on the run atomically, and when failed locations pass `locationErrorThreshold`
//! move the run to Stopping, so that every location not yet started is skipped.

use crate::error::Result;
use crate::model::{LocationOutcome, RunStatus};
use crate::progress::{pending_ids, retire_pending};
use crate::run::{self, LOCATION_ERRORED};
use crate::store::Store;
use crate::task::LocationTask;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// What `settle` answers (the Map keeps nothing else per location).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// The recorded outcome.
    pub outcome: LocationOutcome,
    /// Whether this location's failure stopped the run.
    pub stopped_run: bool,
}

/// What `settle` needs.
pub struct Settler {
    pub store: Store,
}

/// The outcome and reason a task carries: its own, or Error with the caught error.
pub fn outcome_of(task: &LocationTask) -> (LocationOutcome, Option<String>) {
    if let Some(e) = &task.error {
        let cause: String = e.cause.chars().take(1000).collect();
        return (
            LocationOutcome::Error,
            Some(format!("{}: {cause}", e.error)),
        );
    }
    match task.outcome {
        Some(o) => (o, task.reason.clone()),
        None => (
            LocationOutcome::Error,
            Some("the location ended without an outcome".into()),
        ),
    }
}

impl Settler {
    /// Settles one location: a location that ended in error first retires its pending
    /// instances (nothing more will be sent there), then its outcome is recorded and counted
    /// once, and the run stops if the location error threshold is now passed.
    pub async fn handle(&self, task: LocationTask) -> Result<SettleResponse> {
        let loc = task.location()?;
        let run_id = task.run_id.as_str();
        let (outcome, reason) = outcome_of(&task);

        if outcome == LocationOutcome::Error {
            let (mut instances, _) = self.store.list_location_items(run_id, &loc).await?;
            let pending = pending_ids(&instances);
            retire_pending(
                &self.store,
                run_id,
                &loc,
                &mut instances,
                &pending,
                LOCATION_ERRORED,
            )
            .await?;
        }

        let settled = self
            .store
            .settle_location(run_id, &loc, outcome, reason.as_deref())
            .await?;

        let mut stopped_run = false;
        if settled.first_time && outcome.counts_as_failure() {
            let run = self.store.get_run(run_id).await?;
            if run::stops_run(&settled, outcome, &run) {
                stopped_run = self
                    .store
                    .set_run_status(run_id, RunStatus::Running, RunStatus::Stopping)
                    .await?;
            }
            if stopped_run {
                warn!(
                    run_id,
                    failed = settled.locations_failed,
                    threshold = %run.input.location_error_threshold,
                    "location error threshold passed: the run is stopping"
                );
            }
        }
        info!(run_id, location = %loc, outcome = outcome.as_str(), first_time = settled.first_time, "location settled");
        Ok(SettleResponse {
            outcome,
            stopped_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::CaughtError;

    #[test]
    fn a_caught_error_becomes_an_error_outcome_with_its_cause() {
        let t = LocationTask {
            run_id: "r".into(),
            location: "111111111111/us-east-1".into(),
            error: Some(CaughtError {
                error: "AwsError".into(),
                cause: "ssm:SendCommand failed".into(),
            }),
            ..LocationTask::default()
        };
        let (o, why) = outcome_of(&t);
        assert_eq!(o, LocationOutcome::Error);
        assert_eq!(why.as_deref(), Some("AwsError: ssm:SendCommand failed"));
        let t = LocationTask {
            outcome: Some(LocationOutcome::GroupNotFound),
            ..t
        };
        let t = LocationTask { error: None, ..t };
        assert_eq!(outcome_of(&t).0, LocationOutcome::GroupNotFound);
    }
}
