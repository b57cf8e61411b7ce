//! The run's halt conditions, checked before a location starts anything (expand) and before
//! each dispatch round: the maintenance window's end (`notAfter`) and the alarms of
//! `stopOnAlarms`. The decisions are `run`'s; this step reads the alarms when a read is due
//! (one read serves every location for [`run::ALARM_READ_INTERVAL_MS`], claimed on the run
//! item) and records an alarm's halt on the run item, where every location sees it.

use crate::alarms::Alarms;
use crate::error::Result;
use crate::model::{Halt, RunRecord};
use crate::run;
use crate::store::Store;
use tracing::warn;

/// What the halt conditions say about starting something now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Nothing stands in the way.
    Go,
    /// Start nothing this round, but this is no halt: the alarms could not be read (as SSM's
    /// AlarmConfiguration without IgnorePollAlarmFailure, an unknown alarm state is not an
    /// all-clear). The next round reads them again.
    Hold(String),
    /// The run is halted: nothing new starts anywhere, from now on.
    Halt(Halt),
}

/// Checks the run's halt conditions at `now_ms`; reads the alarms when a read is due.
pub async fn check(store: &Store, alarms: &Alarms, run: &RunRecord, now_ms: i64) -> Result<Check> {
    if let Some(h) = run::halt_at(run, now_ms) {
        return Ok(Check::Halt(h));
    }
    if !run::alarms_due(run, now_ms) {
        return Ok(Check::Go);
    }
    if !store
        .claim_alarm_read(&run.run_id, run.alarms_read_at_ms, now_ms)
        .await?
    {
        // Another location read them within the interval; its answer is on the run item,
        // which the next round loads.
        return Ok(Check::Go);
    }

    match alarms.first_in_alarm(&run.input.stop_on_alarms).await {
        Ok(None) => Ok(Check::Go),
        Ok(Some(alarm)) => {
            let halt = Halt::Alarm { alarm };
            store.record_halt(&run.run_id, &halt).await?;
            Ok(Check::Halt(halt))
        }
        Err(e) => {
            warn!(run_id = %run.run_id, error = %e, "stopOnAlarms could not be read; starting nothing this round");
            store.release_alarm_read(&run.run_id, now_ms).await?;
            Ok(Check::Hold(format!("stopOnAlarms could not be read: {e}")))
        }
    }
}
