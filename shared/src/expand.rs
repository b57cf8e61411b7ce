//! The `expand` function: in one location, assume the execution role, list the resource
//! group's instances and ask SSM which are managed and online. Each instance is recorded
//! as Pending (will be dispatched), Offline (ConnectionLost / Inactive) or Unmanaged (in the
//! group but unknown to SSM: stopped, or no agent). A missing group or an unassumable role
//! ends the location with its own outcome, never the run; so does a hook document of the run
//! that cannot run there ([`crate::hookdocs`]: checked first, nothing is sent there).
//!
//! Invariants: expansion is incremental. The group is listed a page (50 IDs) at a time;
//! each page is recorded, then a cursor on the location item moves past it, so a retry
//! (after a timeout, the first attempt perhaps still running) resumes at the first page not
//! recorded. An instance is only ever written if it is not recorded yet: nothing claimed or
//! sent goes back to Pending. The window and counts are taken from the recorded instances,
//! whichever attempt recorded them.

use crate::alarms::Alarms;
use crate::clients::{AssumeError, ClientFactory, TargetClients};
use crate::clock::now_epoch_ms;
use crate::config::Config;
use crate::error::Result;
use crate::fleet::{self, GroupError, ManagedInfo};
use crate::halt::{self, Check};
use crate::hookdocs;
use crate::model::{
    count_states, ExpandCursor, Expansion, InstanceRecord, InstanceState, Location,
    LocationOutcome, Phase, RunRecord,
};
use crate::poll;
use crate::resume::{self, OriginalLocation};
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
/// (pure: SSM's rate-control meaning, applied to the instances online and managed), with
/// the run's target rates.
pub fn expansion(run: &RunRecord, instances: &[InstanceRecord]) -> Expansion {
    let rates = (
        run.input.target_concurrency,
        run.input.target_error_threshold,
    );
    expansion_with(rates, instances)
}

/// The same, with the target rates of the location's wave (the run's, without waves).
pub fn expansion_in_wave(run: &RunRecord, wave: u32, instances: &[InstanceRecord]) -> Expansion {
    expansion_with(run.input.target_rates(wave), instances)
}

fn expansion_with(
    (concurrency, errors): (crate::ratecontrol::Rate, crate::ratecontrol::Rate),
    instances: &[InstanceRecord],
) -> Expansion {
    let dispatchable = instances
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .count() as u64;
    Expansion {
        targeted: instances.len() as u64,
        dispatchable,
        window: concurrency.window(dispatchable),
        tolerated: errors.tolerated_errors(dispatchable),
        counts: count_states(instances.iter().map(|i| i.state)),
    }
}

/// How recording the group went, short of an error.
enum Recorded {
    /// Every page of the group is recorded.
    All,
    /// The location ends here (role refused, group missing).
    Ended(LocationOutcome, String),
}

impl<F: ClientFactory> Expander<F> {
    /// Expands one location: load the run and the location, decide whether it may start,
    /// record the group's instances a page at a time (from where an earlier attempt
    /// stopped), then what the recorded instances make of the window.
    pub async fn handle(&self, task: LocationTask) -> Result<LocationTask> {
        let loc = task.location()?;
        let run_id = task.run_id.as_str();
        let mut run = self.store.get_run(run_id).await?;
        let record = self.store.get_location(run_id, &loc).await?;
        if record.phase != Phase::Done {
            self.record_halt(run_id, &mut run).await?;
        }
        if let Entry::Finish(outcome, reason) = run::may_start(&run, &record) {
            info!(run_id, location = %loc, outcome = outcome.as_str(), "location not started");
            return Ok(task.finished(outcome, reason));
        }

        let cursor = record.expand_cursor;
        let original = self.store.original_location(&run, &loc).await?;
        let recorded = self.record_group(run_id, &run, &loc, cursor, original.as_ref());
        if let Recorded::Ended(outcome, why) = recorded.await? {
            return Ok(task.finished(outcome, Some(why)));
        }

        let (instances, _) = self.store.list_location_items(run_id, &loc).await?;
        let found = expansion_in_wave(&run, record.wave, &instances);
        self.store.set_expanded(run_id, &loc, &found).await?;
        info!(
            run_id,
            location = %loc,
            targeted = found.targeted,
            dispatchable = found.dispatchable,
            window = found.window,
            "location expanded"
        );

        if found.dispatchable == 0 {
            let why = format!(
                "{} instance(s) in the group, none online and managed",
                found.targeted
            );
            return Ok(task.finished(LocationOutcome::NoTargets, Some(why)));
        }
        // The first round waits a share of one poll that is this location's own, so that a
        // wave's locations do not all poll in the same second ([`poll::start_offset`]).
        let offset = poll::start_offset(run_id, &task.location, self.config.poll_seconds);
        Ok(task.again(offset))
    }

    /// A halted run (window closed, alarm in ALARM) starts no location: recorded here when
    /// this location is the first it stops.
    async fn record_halt(&self, run_id: &str, run: &mut RunRecord) -> Result<()> {
        let now = now_epoch_ms();
        if let Check::Halt(h) = halt::check(&self.store, &self.alarms, run, now).await? {
            self.store.record_halt(run_id, &h).await?;
            run.halt = Some(h);
        }
        Ok(())
    }

    /// Assumes the execution role, then records the group's instances page by page from
    /// `cursor`: each page of at most 50 IDs is described by SSM, its instances written
    /// (only those not recorded yet), then the cursor moved past it. A retry resumes at the
    /// first page not recorded; a refused page token starts the listing over (what is
    /// recorded stays as it is). A resumed run records only what `original` left to do.
    async fn record_group(
        &self,
        run_id: &str,
        run: &RunRecord,
        loc: &Location,
        cursor: Option<ExpandCursor>,
        original: Option<&OriginalLocation>,
    ) -> Result<Recorded> {
        let (mut pages, mut token) = match cursor {
            Some(ExpandCursor {
                next_token: None, ..
            }) => return Ok(Recorded::All),
            Some(c) => (c.pages, c.next_token),
            None => (0, None),
        };
        let clients = match self.clients(run_id, run, loc).await? {
            Ok(c) => c,
            Err(ended) => return Ok(ended),
        };
        if let Some(ended) = check_hooks(run_id, run, loc, &clients).await? {
            return Ok(ended);
        }
        let group = &run.input.resource_group;
        loop {
            let (ids, next) = match fleet::list_group_page(&clients.groups, group, token.as_deref())
                .await
            {
                Ok(page) => page,
                Err(GroupError::NotFound(g)) => {
                    let why = format!("resource group {g} does not exist in {loc}");
                    return Ok(Recorded::Ended(LocationOutcome::GroupNotFound, why));
                }
                Err(GroupError::TokenRefused) => {
                    warn!(run_id, location = %loc, pages, "page token refused: listing the group again");
                    (pages, token) = (0, None);
                    continue;
                }
                Err(GroupError::Other(e)) => return Err(e),
            };
            let managed = fleet::describe_managed(&clients.ssm, &ids).await?;
            let mut found = classify(&ids, &managed);
            if let Some(o) = original {
                found = resume::narrow(found, o, run.input.resume_delivery_timeouts);
            }
            self.store.put_instances(run_id, loc, &found).await?;
            pages += 1;
            let cursor = ExpandCursor {
                pages,
                next_token: next.clone(),
            };
            self.store.set_expand_cursor(run_id, loc, &cursor).await?;
            match next {
                Some(t) => token = Some(t),
                None => return Ok(Recorded::All),
            }
        }
    }

    /// The target account's clients, or the location's end when the role is refused.
    async fn clients(
        &self,
        run_id: &str,
        run: &RunRecord,
        loc: &Location,
    ) -> Result<std::result::Result<TargetClients, Recorded>> {
        let role = &run.input.execution_role_name;
        match self.factory.clients(loc, role, run_id).await {
            Ok(c) => Ok(Ok(c)),
            Err(AssumeError::AccessDenied { role_arn, message }) => {
                warn!(run_id, location = %loc, %role_arn, "execution role refused");
                let why = format!("cannot assume {role_arn}: {message}");
                Ok(Err(Recorded::Ended(LocationOutcome::AccessDenied, why)))
            }
            Err(AssumeError::Other(e)) => Err(e),
        }
    }
}

/// The location's end when a hook document of the run cannot run there (missing, not a
/// Command document, or outside what the execution role may read): checked before the group
/// is listed, so nothing is recorded or sent in the location.
async fn check_hooks(
    run_id: &str,
    run: &RunRecord,
    loc: &Location,
    clients: &TargetClients,
) -> Result<Option<Recorded>> {
    let Some(hooks) = run.input.hooks() else {
        return Ok(None);
    };
    let Some(why) = hookdocs::unusable_hook(&clients.ssm, &hooks).await? else {
        return Ok(None);
    };
    warn!(run_id, location = %loc, %why, "hook document unusable: nothing sent here");
    Ok(Some(Recorded::Ended(LocationOutcome::Error, why)))
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
