//! The `expand` function: in one location, assume the execution role, list the resource
//! group's instances and ask SSM which are managed and online. Each instance is recorded
//! as Pending (will be dispatched), Offline (ConnectionLost / Inactive) or Unmanaged (in the
//! group but unknown to SSM: stopped, or no agent). A missing group or an unassumable role
//! ends the location with its own outcome, never the run.

use crate::clients::{AssumeError, ClientFactory};
use crate::config::Config;
use crate::error::Result;
use crate::fleet::{self, GroupError, ManagedInfo};
use crate::model::{InstanceState, LocationOutcome, RunStatus};
use crate::store::{InstanceRecord, LocationRecord, Phase, Store};
use crate::task::LocationTask;
use std::collections::{BTreeMap, HashMap};
use tracing::{info, warn};

/// What `expand` needs.
pub struct Expander<F> {
    /// Configuration.
    pub config: Config,
    /// The table.
    pub store: Store,
    /// Clients per location.
    pub factory: F,
}

/// Classifies the group's instances by what SSM knows of them.
pub fn classify(ids: &[String], managed: &HashMap<String, ManagedInfo>) -> Vec<InstanceRecord> {
    ids.iter()
        .map(|id| match managed.get(id) {
            Some(info) => {
                let state = if info.ping_status == "Online" {
                    InstanceState::Pending
                } else {
                    InstanceState::Offline
                };
                let mut r = InstanceRecord::new(id, state);
                r.ping_status = Some(info.ping_status.clone());
                r.platform = info.platform.clone();
                r
            }
            None => InstanceRecord::new(id, InstanceState::Unmanaged),
        })
        .collect()
}

/// Counts instances per state, by the states' stored names.
pub fn count_states<'a>(
    states: impl IntoIterator<Item = &'a InstanceState>,
) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for s in states {
        *counts.entry(s.as_str().to_string()).or_insert(0) += 1;
    }
    counts
}

impl<F: ClientFactory> Expander<F> {
    /// Expands one location.
    pub async fn handle(&self, task: LocationTask) -> Result<LocationTask> {
        let loc = task.location()?;
        let run = self.store.get_run(&task.run_id).await?;
        let record = self.store.get_location(&task.run_id, &loc).await?;
        if record.phase == Some(Phase::Done) {
            return Ok(task.finished(
                record.outcome.unwrap_or(LocationOutcome::Error),
                record.reason,
            ));
        }
        if run.status != RunStatus::Running {
            info!(run_id = %task.run_id, location = %loc, "run is stopping: location skipped");
            return Ok(task.finished(
                LocationOutcome::Skipped,
                Some(format!(
                    "not started: the run's location error threshold ({}) was passed",
                    run.input.location_error_threshold
                )),
            ));
        }
        let clients = match self
            .factory
            .clients(&loc, &run.input.execution_role_name, &task.run_id)
            .await
        {
            Ok(c) => c,
            Err(AssumeError::AccessDenied { role_arn, message }) => {
                warn!(run_id = %task.run_id, location = %loc, %role_arn, "execution role refused");
                return Ok(task.finished(
                    LocationOutcome::AccessDenied,
                    Some(format!("cannot assume {role_arn}: {message}")),
                ));
            }
            Err(AssumeError::Other(e)) => return Err(e),
        };
        let ids =
            match fleet::list_group_instances(&clients.groups, &run.input.resource_group).await {
                Ok(ids) => ids,
                Err(GroupError::NotFound(g)) => {
                    return Ok(task.finished(
                        LocationOutcome::GroupNotFound,
                        Some(format!("resource group {g} does not exist in {loc}")),
                    ));
                }
                Err(GroupError::Other(e)) => return Err(e),
            };
        let managed = fleet::describe_managed(&clients.ssm, &ids).await?;
        let instances = classify(&ids, &managed);
        self.store
            .put_instances(&task.run_id, &loc, &instances)
            .await?;
        let dispatchable = instances
            .iter()
            .filter(|i| i.state == InstanceState::Pending)
            .count() as u64;
        let found = LocationRecord {
            targeted: instances.len() as u64,
            dispatchable,
            window: run.input.target_concurrency_rate().window(dispatchable),
            tolerated: run.input.target_error_rate().tolerated_errors(dispatchable),
            counts: count_states(instances.iter().map(|i| &i.state)),
            ..LocationRecord::default()
        };
        self.store.set_expanded(&task.run_id, &loc, &found).await?;
        info!(
            run_id = %task.run_id,
            location = %loc,
            targeted = found.targeted,
            dispatchable,
            window = found.window,
            "location expanded"
        );
        if dispatchable == 0 {
            return Ok(task.finished(
                LocationOutcome::NoTargets,
                Some(format!(
                    "{} instance(s) in the group, none online and managed",
                    instances.len()
                )),
            ));
        }
        Ok(task.again(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_classified_by_ping_status() {
        let ids: Vec<String> = [
            "i-00000001",
            "i-00000002",
            "i-00000003",
            "mi-00000000000000004",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let managed = HashMap::from([
            (
                "i-00000001".to_string(),
                ManagedInfo {
                    ping_status: "Online".into(),
                    platform: Some("Linux".into()),
                },
            ),
            (
                "i-00000002".to_string(),
                ManagedInfo {
                    ping_status: "ConnectionLost".into(),
                    platform: None,
                },
            ),
            (
                "mi-00000000000000004".to_string(),
                ManagedInfo {
                    ping_status: "Inactive".into(),
                    platform: None,
                },
            ),
        ]);
        let states: Vec<InstanceState> = classify(&ids, &managed).iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            vec![
                InstanceState::Pending,
                InstanceState::Offline,
                InstanceState::Unmanaged,
                InstanceState::Offline
            ]
        );
        let counts = count_states(&states);
        assert_eq!(counts.get("Offline"), Some(&2));
    }
}
