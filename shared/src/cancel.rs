//! `fleetpatch stop --cancel-commands`: the commands still in flight in a location are
//! cancelled with SSM CancelCommand, through the location's assumed role (dispatch's
//! clients), in each dispatch round of a cancelling run that asked for it. SSM then
//! reports their invocations `Cancelled` (or `Success` / `Failed` when they ended first),
//! and the round that follows records them as usual.
//!
//! Invariants: only commands with an instance still InFlight are cancelled, whole (every
//! instance of one command belongs to the same location and run). A call that fails
//! (throttled, refused, a 5xx before or after it took effect) fails nothing: the instance
//! is still InFlight, so the next round calls again; a command cancelled twice, or one that
//! ended meanwhile, is no error for SSM. At most one call per command per round.

use crate::error::{from_sdk, Result};
use crate::model::{InstanceRecord, InstanceState, RunRecord, RunStatus};
use crate::store::Store;
use std::collections::BTreeSet;
use tracing::{info, warn};

/// The commands (IDs) that still have an instance in flight (pure).
pub fn commands_in_flight(instances: &[InstanceRecord]) -> Vec<String> {
    let ids: BTreeSet<&String> = instances
        .iter()
        .filter(|i| i.state == InstanceState::InFlight)
        .filter_map(|i| i.command_id.as_ref())
        .collect();
    ids.into_iter().cloned().collect()
}

/// A dispatch round's step: when `run` is cancelling and its commands are to be cancelled
/// (`cancelCommands`, read only then), cancels those still in flight.
pub async fn if_asked(
    store: &Store,
    run: &RunRecord,
    ssm: &aws_sdk_ssm::Client,
    instances: &[InstanceRecord],
) -> Result<()> {
    if run.status == RunStatus::Cancelling && store.cancels_commands(&run.run_id).await? {
        cancel_in_flight(ssm, instances).await;
    }
    Ok(())
}

/// Cancels each command in flight (CancelCommand, every instance of it). Returns how many
/// calls SSM accepted; a failed call is logged and left to the next round.
pub async fn cancel_in_flight(ssm: &aws_sdk_ssm::Client, instances: &[InstanceRecord]) -> usize {
    let mut accepted = 0;
    for command_id in commands_in_flight(instances) {
        match ssm.cancel_command().command_id(&command_id).send().await {
            Ok(_) => {
                info!(%command_id, "command cancelled");
                accepted += 1;
            }
            Err(e) => {
                let e = from_sdk("ssm:CancelCommand", e);
                warn!(%command_id, error = %e, "could not cancel the command; the next round tries again");
            }
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(id: &str, state: InstanceState, command: Option<&str>) -> InstanceRecord {
        let mut r = InstanceRecord::new(id, state);
        r.command_id = command.map(String::from);
        r
    }

    #[test]
    fn only_commands_with_an_instance_in_flight_are_cancelled_once_each() {
        // GIVEN two commands with instances in flight, one whose instances all ended, and
        // instances never sent
        let instances = [
            sent("i-1", InstanceState::InFlight, Some("c-1")),
            sent("i-2", InstanceState::InFlight, Some("c-1")),
            sent("i-3", InstanceState::Succeeded, Some("c-2")),
            sent("i-4", InstanceState::InFlight, Some("c-3")),
            sent("i-5", InstanceState::Succeeded, Some("c-3")),
            sent("i-6", InstanceState::Pending, None),
            sent("i-7", InstanceState::Claimed, None),
        ];
        // THEN each command with one in flight is named once, the others never
        assert_eq!(commands_in_flight(&instances), ["c-1", "c-3"]);
        assert!(commands_in_flight(&instances[2..3]).is_empty());
    }
}
