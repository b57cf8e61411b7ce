//! The `gate` function: a run's waves, one step at a time. Before a wave (`start`): load
//! the run and its waves, ask whether the wave may start (the halt conditions, a stop, the
//! run's threshold), and apply: start it and answer its locations for the Map, or skip it
//! and every later wave. After the wave's Map (`end`): load its locations, ask
//! `waves::gate`, record the gate, and answer the soak before the next wave, or skip every
//! later wave when the gate failed.
//!
//! Invariants: a skipped wave's locations are settled Skipped here, before any of its
//! accounts is called (no AssumeRole); each wave moves forward once (the store's
//! conditional writes), so a retried step answers what the first one decided.

use crate::alarms::Alarms;
use crate::clock::now_epoch;
use crate::clock::now_epoch_ms;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events;
use crate::halt::{self, Check};
use crate::model::{Location, LocationOutcome, LocationRecord, RunRecord, WaveRecord, WaveStatus};
use crate::run::{self, Entry};
use crate::store::Store;
use crate::task::{WaveAction, WaveAnswer, WaveTask};
use crate::waves;
use serde_json::json;
use tracing::info;

/// What `gate` needs.
pub struct Gate {
    pub config: Config,
    pub store: Store,
    pub alarms: Alarms,
    /// "Patch Wave Awaiting Approval".
    pub events: aws_sdk_eventbridge::Client,
}

/// Why a wave may not start, as its locations' reason (`not started: ...`), from the run
/// lifecycle's own words for a location; None when it may.
pub fn blocked(run: &RunRecord) -> Option<String> {
    let probe = LocationRecord::pending(Location::new("000000000000", "wave"));
    match run::may_start(run, &probe) {
        Entry::Proceed => None,
        Entry::Finish(_, why) => Some(why.unwrap_or_else(|| "not started".into())),
    }
}

impl Gate {
    pub async fn handle(&self, task: WaveTask) -> Result<WaveAnswer> {
        match task.action {
            WaveAction::Start => self.start(&task).await,
            WaveAction::End => self.end(&task).await,
            WaveAction::Await => self.await_approval(&task).await,
            WaveAction::Approved => self.approved(&task).await,
            WaveAction::Rejected => self.rejected(&task).await,
        }
    }

    async fn start(&self, task: &WaveTask) -> Result<WaveAnswer> {
        let run_id = task.run_id.as_str();
        let mut run = self.store.get_run(run_id).await?;
        let waves = self.store.list_waves(run_id).await?;
        let done = done(task);
        let Some(wave) = waves.get(task.wave as usize) else {
            return Ok(done);
        };
        match wave.status {
            WaveStatus::Running => return Ok(self.items(task, &waves, wave)),
            WaveStatus::Pending | WaveStatus::AwaitingApproval => {}
            _ => return Ok(done),
        }

        self.check_halt(&mut run).await?;
        if let Some(why) = blocked(&run) {
            let wave_reason = why.trim_start_matches("not started: ").to_string();
            self.skip_from(run_id, &waves, task.wave, &wave_reason, &why)
                .await?;
            return Ok(done);
        }

        let approved = wave.approval_decision.as_ref().is_some_and(|d| d.approved);
        if wave.approval && !approved {
            return Ok(WaveAnswer {
                await_approval: true,
                approval_timeout_seconds: waves::soak_wait_seconds(
                    wave.approval_timeout_seconds,
                    self.config.clock_speed,
                )
                .max(1),
                ..done_with(task, false)
            });
        }
        self.store.start_wave(run_id, wave).await?;
        info!(run_id, wave = %wave.name, locations = wave.location_count, "wave started");
        Ok(self.items(task, &waves, wave))
    }

    async fn end(&self, task: &WaveTask) -> Result<WaveAnswer> {
        let run_id = task.run_id.as_str();
        let waves = self.store.list_waves(run_id).await?;
        let Some(wave) = waves.get(task.wave as usize) else {
            return Ok(done(task));
        };
        let locations = self.store.list_locations(run_id).await?;
        let gate = match (wave.status, wave.gate) {
            (WaveStatus::Running, _) | (_, None) => {
                let g = waves::gate(wave, &locations);
                self.store.end_wave(run_id, wave, g).await?;
                g
            }
            (_, Some(recorded)) => recorded,
        };
        info!(run_id, wave = %wave.name, passed = gate.passed, failed = gate.locations_failed, "wave gate");

        if !gate.passed {
            let why = waves::gate_failed_reason(&wave.name);
            self.skip_from(run_id, &waves, task.wave + 1, &why, &why)
                .await?;
            return Ok(done(task));
        }
        let next = task.wave + 1;
        if next as usize >= waves.len() {
            return Ok(done(task));
        }
        Ok(WaveAnswer {
            run_id: task.run_id.clone(),
            wave: next,
            done: false,
            locations: Vec::new(),
            location_concurrency: 1,
            soak_seconds: waves::soak_wait_seconds(wave.soak_seconds, self.config.clock_speed),
            ..WaveAnswer::default()
        })
    }

    /// Stores the approval's task token on the wave and announces the wait, with the
    /// waves before it. The token is never in the event: anyone who holds it can approve
    /// (SendTaskSuccess is authorised by the token, not by the execution), and an event
    /// reaches every target of the bus (e-mail, chat, other accounts' rules).
    async fn await_approval(&self, task: &WaveTask) -> Result<WaveAnswer> {
        let run_id = task.run_id.as_str();
        let token = task
            .task_token
            .as_deref()
            .ok_or_else(|| Error::Payload("await without taskToken".into()))?;
        let waves = self.store.list_waves(run_id).await?;
        let wave = waves
            .get(task.wave as usize)
            .ok_or_else(|| Error::Payload(format!("run {run_id} has no wave {}", task.wave)))?;
        self.store.await_approval(run_id, wave, token).await?;

        let detail = json!({
            "runId": run_id,
            "wave": wave.name,
            "waveIndex": wave.index,
            "locations": wave.location_count,
            "approvalTimeoutSeconds": wave.approval_timeout_seconds,
            "previousWaves": waves::previous(&waves, wave.index),
            "approve": format!("fleetpatch approve {run_id} --wave {}", wave.name),
            "reject": format!("fleetpatch reject {run_id} --wave {} --reason TEXT", wave.name),
        });
        let bus = &self.config.event_bus;
        events::put_event(&self.events, bus, events::WAVE_AWAITING_APPROVAL, &detail).await?;
        info!(run_id, wave = %wave.name, "wave awaiting approval");
        Ok(done_with(task, false))
    }

    /// Records the approval (SendTaskSuccess came); the next `start` starts the wave.
    async fn approved(&self, task: &WaveTask) -> Result<WaveAnswer> {
        let run_id = task.run_id.as_str();
        let waves = self.store.list_waves(run_id).await?;
        let Some(wave) = waves.get(task.wave as usize) else {
            return Ok(done(task));
        };
        let decided = WaveRecord {
            approval_decision: Some(waves::approval_from(task.decision.as_ref(), now_epoch())),
            ..wave.clone()
        };
        let waiting = [WaveStatus::AwaitingApproval];
        self.store
            .move_wave(run_id, &decided, &waiting, WaveStatus::AwaitingApproval)
            .await?;
        info!(run_id, wave = %wave.name, "wave approved");
        Ok(done_with(task, false))
    }

    /// Records the rejection (SendTaskFailure, or the timeout): the wave and every later
    /// one are skipped, their locations settled Skipped.
    async fn rejected(&self, task: &WaveTask) -> Result<WaveAnswer> {
        let run_id = task.run_id.as_str();
        let waves = self.store.list_waves(run_id).await?;
        let Some(wave) = waves.get(task.wave as usize) else {
            return Ok(done(task));
        };
        let decision = waves::rejection_from(task.error.as_ref(), now_epoch());
        let why = waves::not_approved_reason(&wave.name, &decision);
        let rejected = WaveRecord {
            approval_decision: Some(decision),
            reason: Some(why.clone()),
            ended_at: Some(now_epoch()),
            ..wave.clone()
        };
        let waiting = [WaveStatus::Pending, WaveStatus::AwaitingApproval];
        self.store
            .move_wave(run_id, &rejected, &waiting, WaveStatus::Rejected)
            .await?;
        self.skip_from(run_id, &waves, task.wave, &why, &why)
            .await?;
        info!(run_id, wave = %wave.name, reason = %why, "wave not approved");
        Ok(done(task))
    }

    /// The wave's locations for the Map.
    fn items(&self, task: &WaveTask, waves: &[WaveRecord], wave: &WaveRecord) -> WaveAnswer {
        WaveAnswer {
            run_id: task.run_id.clone(),
            wave: task.wave,
            done: false,
            locations: waves::items(waves, wave.index),
            location_concurrency: wave.location_window.max(1),
            ..WaveAnswer::default()
        }
    }

    /// Reads the halt conditions before a wave; records a halt. Alarms that cannot be read
    /// hold the wave: a `Transient` error, which the state machine retries.
    async fn check_halt(&self, run: &mut RunRecord) -> Result<()> {
        match halt::check(&self.store, &self.alarms, run, now_epoch_ms()).await? {
            Check::Go => Ok(()),
            Check::Halt(h) => {
                self.store.record_halt(&run.run_id, &h).await?;
                run.halt = Some(h);
                Ok(())
            }
            Check::Hold(why) => Err(Error::Transient {
                operation: "gate".into(),
                message: why,
            }),
        }
    }

    /// Skips the waves from `from` on, and settles each of their locations Skipped with
    /// `location_reason`: none of their accounts is ever called.
    async fn skip_from(
        &self,
        run_id: &str,
        waves: &[WaveRecord],
        from: u32,
        wave_reason: &str,
        location_reason: &str,
    ) -> Result<()> {
        let later: Vec<&WaveRecord> = waves.iter().filter(|w| w.index >= from).collect();
        if later.is_empty() {
            return Ok(());
        }
        let locations = self.store.list_locations(run_id).await?;
        for w in later {
            self.store.skip_wave(run_id, w, wave_reason).await?;
            for l in waves::unsettled(&locations, w.index) {
                self.store
                    .settle_location(run_id, &l, LocationOutcome::Skipped, Some(location_reason))
                    .await?;
            }
            info!(run_id, wave = %w.name, reason = wave_reason, "wave skipped");
        }
        Ok(())
    }
}

/// The answer that ends the wave loop.
fn done(task: &WaveTask) -> WaveAnswer {
    done_with(task, true)
}

/// An answer without locations, which ends the wave loop or not.
fn done_with(task: &WaveTask, done: bool) -> WaveAnswer {
    WaveAnswer {
        run_id: task.run_id.clone(),
        wave: task.wave,
        done,
        location_concurrency: 1,
        ..WaveAnswer::default()
    }
}
