//! The `expand` function: in one location, assume the execution role, list the resource
//! group's instances and ask SSM which are managed and online. Each instance is recorded
//! as Pending (will be dispatched), Offline (ConnectionLost / Inactive) or Unmanaged (in the
//! group but unknown to SSM: stopped, or no agent). A missing group or an unassumable role
//! ends the location with its own outcome, never the run.

use crate::alarms::Alarms;
use crate::clients::{AssumeError, ClientFactory, TargetClients};
use crate::clock::now_epoch_ms;
use crate::config::Config;
use crate::error::Result;
use crate::fleet::{self, GroupError, ManagedInfo};
use crate::halt::{self, Check};
use crate::model::{
    count_states, Expansion, InstanceRecord, InstanceState, Location, LocationOutcome, Phase,
    RunRecord,
};
use crate::run::{self, Entry};
use crate::store::Store;
use crate::task::LocationTask;
use std::collections::HashMap;
use tracing::{info, warn};

/// What `expand` needs.
pub struct Expander<F> {
    pub config: Config,
    pub store: Store,
    pub factory: F,
    pub alarms: Alarms,
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

/// What expansion found, with the location's window and tolerated errors as numbers
/// (pure: SSM's rate-control meaning, applied to the instances online and managed).
pub fn expansion(run: &RunRecord, instances: &[InstanceRecord]) -> Expansion {
    let dispatchable = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .count() as u64;
    Expansion {
        targeted: instances.len() as u64,
        dispatchable,
        window: run.input.target_concurrency_rate().window(dispatchable),
        tolerated: run.input.target_error_rate().tolerated_errors(dispatchable),
        counts: count_states(instances.iter().map(|i| i.state)),
    }
}

/// How a location's instances were found, short of an error.
enum Found {
    Instances(Vec<InstanceRecord>),
    /// The location ends here (role refused, group missing).
    Ended(LocationOutcome, String),
}

impl<F: ClientFactory> Expander<F> {
    /// Expands one location: load the run and the location, decide whether it may start,
    /// find its instances, record them and what they make of the window.
    pub async fn handle(&self, task: LocationTask) -> Result<LocationTask> {
        let loc = task.location()?;
        let mut run = self.store.get_run(&task.run_id).await?;
        let record = self.store.get_location(&task.run_id, &loc).await?;
        if record.phase != Phase::Done {
            // A halted run (window closed, alarm in ALARM) starts no location: recorded here
            // when this location is the first it stops.
            let now = now_epoch_ms();
            if let Check::Halt(h) = halt::check(&self.store, &self.alarms, &run, now).await? {
                self.store.record_halt(&task.run_id, &h).await?;
                run.halt = Some(h);
            }
        }
        if let Entry::Finish(outcome, reason) = run::may_start(&run, &record) {
            info!(run_id = %task.run_id, location = %loc, outcome = outcome.as_str(), "location not started");
            return Ok(task.finished(outcome, reason));
        }

        let instances = match self.find(&task.run_id, &run, &loc).await? {
            Found::Instances(i) => i,
            Found::Ended(outcome, why) => return Ok(task.finished(outcome, Some(why))),
        };

        let found = expansion(&run, &instances);
        self.store
            .put_instances(&task.run_id, &loc, &instances)
            .await?;
        self.store.set_expanded(&task.run_id, &loc, &found).await?;
        info!(
            run_id = %task.run_id,
            location = %loc,
            targeted = found.targeted,
            dispatchable = found.dispatchable,
            window = found.window,
            "location expanded"
        );

        if found.dispatchable == 0 {
            let why = format!(
                "{} instance(s) in the group, none online and managed",
                instances.len()
            );
            return Ok(task.finished(LocationOutcome::NoTargets, Some(why)));
        }
        Ok(task.again(0))
    }

    /// Assumes the execution role, lists the group and asks SSM about its instances.
    async fn find(&self, run_id: &str, run: &RunRecord, loc: &Location) -> Result<Found> {
        let role = &run.input.execution_role_name;
        let clients: TargetClients = match self.factory.clients(loc, role, run_id).await {
            Ok(c) => c,
            Err(AssumeError::AccessDenied { role_arn, message }) => {
                warn!(run_id, location = %loc, %role_arn, "execution role refused");
                let why = format!("cannot assume {role_arn}: {message}");
                return Ok(Found::Ended(LocationOutcome::AccessDenied, why));
            }
            Err(AssumeError::Other(e)) => return Err(e),
        };

        let ids =
            match fleet::list_group_instances(&clients.groups, &run.input.resource_group).await {
                Ok(ids) => ids,
                Err(GroupError::NotFound(g)) => {
                    let why = format!("resource group {g} does not exist in {loc}");
                    return Ok(Found::Ended(LocationOutcome::GroupNotFound, why));
                }
                Err(GroupError::Other(e)) => return Err(e),
            };

        let managed = fleet::describe_managed(&clients.ssm, &ids).await?;
        Ok(Found::Instances(classify(&ids, &managed)))
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
        let counts = count_states(states.iter().copied());
        assert_eq!(counts.get(&InstanceState::Offline), Some(&2));
    }
}
