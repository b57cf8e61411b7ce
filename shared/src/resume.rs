//! Resuming a run (`resumeOf`): a new run, linked to an ended one, over what did not
//! succeed there, against the same baseline snapshot. Pure: plan and expand load the
//! original's records and ask these functions; the CLI asks the same ones before it starts.
//!
//! Invariants:
//! - An instance the original recorded in a state [`resumable`] refuses (Succeeded above
//!   all) is never targeted again. An instance the original never recorded is targeted only
//!   where the original never finished expanding the location (skipped, AccessDenied,
//!   GroupNotFound, an error): there it cannot have been sent a command.
//! - A location is resumed only if the original left something in it to do
//!   ([`needs_resume`]); the others are not planned at all.
//! - Only an ended run is resumed, and at most once (`resumedBy`, written conditionally by
//!   plan): two resumes of one run would send the same instances twice.

use crate::input::{FieldError, RunInput};
use crate::model::{
    ExpandCursor, InstanceRecord, InstanceState, Location, LocationOutcome, LocationRecord,
    RunRecord, RunStatus,
};
use std::collections::{HashMap, HashSet};

/// Whether a resumed run sends a command again to an instance the original left in `state`.
/// Failed, timed out during execution, cancelled, terminated by SSM, or never started: yes.
/// Undelivered (DeliveryTimedOut, Undeliverable) only when asked for: the agent was not
/// there, which a resume rarely changes. Succeeded never; neither InvalidPlatform and
/// AccessDenied (a resume does not change the platform or the instance's role), nor Offline
/// and Unmanaged (never tried: not a failure of the run), nor Claimed and InFlight (the
/// command may have run).
pub fn resumable(state: InstanceState, delivery_timeouts: bool) -> bool {
    use InstanceState::*;
    match state {
        Failed | ExecutionTimedOut | Cancelled | Terminated | NotStarted | Pending => true,
        DeliveryTimedOut | Undeliverable => delivery_timeouts,
        Succeeded | InvalidPlatform | AccessDenied | Offline | Unmanaged | Claimed | InFlight => {
            false
        }
    }
}

/// Whether the original left something to do in a location: it never listed the group
/// (skipped, AccessDenied, GroupNotFound, an error, or not settled), or it recorded an
/// instance in a [`resumable`] state.
pub fn needs_resume(location: &LocationRecord, delivery_timeouts: bool) -> bool {
    let unknown = matches!(
        location.outcome,
        None | Some(
            LocationOutcome::Skipped
                | LocationOutcome::AccessDenied
                | LocationOutcome::GroupNotFound
                | LocationOutcome::Error
        )
    );
    unknown
        || location
            .counts
            .iter()
            .any(|(state, n)| *n > 0 && resumable(*state, delivery_timeouts))
}

/// The run being resumed, as plan needs it: its ID, its snapshot, and the locations it
/// left something to do in.
#[derive(Debug, Clone, PartialEq)]
pub struct Original {
    pub run_id: String,
    pub snapshot_id: Option<String>,
    pub locations: Vec<Location>,
}

/// Whether the run may be resumed at all: it has ended, and no other run resumed it.
/// `resumed_by` is the original's `resumedBy`; `run_id` the resuming run (a retried plan
/// finds its own name there).
pub fn may_resume(
    original: &RunRecord,
    resumed_by: Option<&str>,
    run_id: &str,
) -> Result<(), FieldError> {
    let refuse = |rule: String| {
        Err(FieldError {
            field: "resumeOf".into(),
            rule,
        })
    };
    let name = &original.run_id;
    if name == run_id {
        return refuse(format!("a run cannot resume itself ({name})"));
    }
    if matches!(
        original.status,
        RunStatus::Running | RunStatus::Stopping | RunStatus::Cancelling
    ) {
        let status = original.status.as_str();
        return refuse(format!(
            "run {name} has not ended ({status}): wait for its end, or stop it, then resume it"
        ));
    }
    match resumed_by {
        Some(other) if other != run_id => refuse(format!(
            "run {name} was already resumed by {other}: a run is resumed once; resume {other} instead"
        )),
        _ => Ok(()),
    }
}

/// Decides what a resume of `original` covers: the planned locations (the new input's
/// accounts x Regions) that the original left something to do in, and the snapshot, which
/// must be the original's. Refused when it [`may_resume`] not, or when nothing is left.
pub fn original(
    run_id: &str,
    input: &RunInput,
    original: &RunRecord,
    resumed_by: Option<&str>,
    locations: &[LocationRecord],
    planned: &[Location],
) -> Result<Original, FieldError> {
    may_resume(original, resumed_by, run_id)?;

    let snapshot = original.input.snapshot_id.clone();
    if input.snapshot_id.is_some() && input.snapshot_id != snapshot {
        return Err(FieldError {
            field: "snapshotId".into(),
            rule: format!(
                "a resumed run patches against its original's baseline: leave it out, or give {}",
                snapshot.as_deref().unwrap_or("(none)")
            ),
        });
    }

    let dt = input.resume_delivery_timeouts;
    let planned: HashSet<&Location> = planned.iter().collect();
    let left: Vec<Location> = locations
        .iter()
        .filter(|l| planned.contains(&l.location) && needs_resume(l, dt))
        .map(|l| l.location.clone())
        .collect();
    if left.is_empty() {
        return Err(FieldError {
            field: "resumeOf".into(),
            rule: format!(
                "run {} left nothing to resume in these accounts and Regions: every instance it targeted succeeded or cannot be retried (offline, unmanaged, invalid platform{})",
                original.run_id,
                if dt { "" } else { "; add delivery timeouts to send undelivered commands again" }
            ),
        });
    }

    Ok(Original {
        run_id: original.run_id.clone(),
        snapshot_id: snapshot,
        locations: left,
    })
}

/// The planned locations a run covers: all of them, or, resuming, those the original left
/// something to do in (in the planned order).
pub fn locations(planned: Vec<Location>, original: Option<&Original>) -> Vec<Location> {
    let Some(original) = original else {
        return planned;
    };
    let left: HashSet<&Location> = original.locations.iter().collect();
    planned.into_iter().filter(|l| left.contains(l)).collect()
}

/// What the original knew of one location, as expand needs it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OriginalLocation {
    /// Whether it recorded every instance of the group (its expansion's last page).
    pub expanded: bool,
    /// The state it left each recorded instance in.
    pub states: HashMap<String, InstanceState>,
}

impl OriginalLocation {
    /// From the original's location record (None: it never planned the location) and its
    /// instance records.
    pub fn new(record: Option<&LocationRecord>, instances: &[InstanceRecord]) -> Self {
        let expanded = matches!(
            record.and_then(|r| r.expand_cursor.as_ref()),
            Some(ExpandCursor {
                next_token: None,
                ..
            })
        );
        OriginalLocation {
            expanded,
            states: instances
                .iter()
                .map(|i| (i.instance_id.clone(), i.state))
                .collect(),
        }
    }
}

/// The instances a resumed location records, of those its group holds now: those the
/// original left in a [`resumable`] state, and, where the original never listed the whole
/// group, those it never recorded.
pub fn narrow(
    found: Vec<InstanceRecord>,
    original: &OriginalLocation,
    delivery_timeouts: bool,
) -> Vec<InstanceRecord> {
    found
        .into_iter()
        .filter(|i| match original.states.get(&i.instance_id) {
            Some(state) => resumable(*state, delivery_timeouts),
            None => !original.expanded,
        })
        .collect()
}

#[cfg(test)]
mod tests;
