//! `watch`: a run's progress until it ends. [`Progress`] and its line are pure (built from
//! the run and location records and the time elapsed); [`follow`] reads them every few
//! seconds and shows the line: rewritten in place on a terminal (indicatif), a new line
//! every few seconds otherwise.

use crate::aws::{self, Aws, Execution};
use crate::render::duration;
use crate::CliError;
use fleetpatch::model::{
    InstanceState, LocationOutcome, LocationRecord, Phase, RunRecord, WaveRecord, WaveStatus,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A non-terminal gets a line at most this often (and only when it changed).
const LINE_EVERY: Duration = Duration::from_secs(5);

/// What the line shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub status: String,
    pub locations: u64,
    pub locations_done: u64,
    pub locations_failed: u64,
    /// Instances in the groups of the locations expanded so far.
    pub instances: u64,
    pub instances_sent: u64,
    pub instances_done: u64,
    pub outcomes: BTreeMap<LocationOutcome, u64>,
    /// Seconds since the run started.
    pub elapsed: f64,
    /// Estimated seconds left, once something is done.
    pub left: Option<f64>,
    /// The wave under way, for a run with `waves`: `wave prod (3/3) AwaitingApproval`.
    pub wave: Option<String>,
}

/// The wave a run with `waves` is at: the first one running or awaiting approval, else the
/// last one that left `Pending`; None for a run without waves.
pub fn current_wave(run: &RunRecord, waves: &[WaveRecord]) -> Option<String> {
    if run.input.waves.is_empty() {
        return None;
    }
    let at = waves
        .iter()
        .find(|w| matches!(w.status, WaveStatus::Running | WaveStatus::AwaitingApproval))
        .or_else(|| waves.iter().rev().find(|w| w.status != WaveStatus::Pending))?;
    let mut text = format!(
        "wave {} ({}/{}) {}",
        at.name,
        at.index + 1,
        waves.len(),
        at.status.as_str()
    );
    if at.status == WaveStatus::AwaitingApproval {
        let run_id = &run.run_id;
        text.push_str(&format!(
            " (fleetpatch approve {run_id} --wave {})",
            at.name
        ));
    }
    Some(text)
}

/// The share of a location's work done: 1 when it ended, the share of its dispatchable
/// instances that ended while it runs, 0 before it was expanded.
fn location_share(l: &LocationRecord) -> f64 {
    if l.phase == Phase::Done {
        return 1.0;
    }
    if l.dispatchable == 0 {
        return 0.0;
    }
    let ended: u64 = l
        .counts
        .iter()
        .filter(|(s, _)| {
            s.is_terminal() && !matches!(s, InstanceState::Offline | InstanceState::Unmanaged)
        })
        .map(|(_, n)| n)
        .sum();
    (ended as f64 / l.dispatchable as f64).min(1.0)
}

impl Progress {
    /// Progress from the records; the time left is the time so far scaled by the work left,
    /// the work being the locations, each counted by the share of its instances done.
    pub fn of(status: &str, run: &RunRecord, locations: &[LocationRecord], elapsed: f64) -> Self {
        let mut outcomes = BTreeMap::new();
        for o in locations.iter().filter_map(|l| l.outcome) {
            *outcomes.entry(o).or_insert(0) += 1;
        }
        let total = run.location_count.max(locations.len() as u64);
        let done: f64 = locations.iter().map(location_share).sum();
        let share = if total == 0 { 0.0 } else { done / total as f64 };
        let left = (share > 0.0 && share < 1.0).then(|| elapsed * (1.0 - share) / share);
        Progress {
            status: status.to_string(),
            locations: total,
            locations_done: run.locations_done,
            locations_failed: run.locations_failed,
            instances: locations.iter().map(|l| l.targeted).sum(),
            instances_sent: run.instances_sent,
            instances_done: run.instances_done,
            outcomes,
            elapsed,
            left,
            wave: None,
        }
    }

    pub fn line(&self) -> String {
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{} {v}", k.as_str()))
            .collect();
        let left = self
            .left
            .map(|s| format!("  ~{} left", duration(s.round() as u64)))
            .unwrap_or_default();
        let wave = self
            .wave
            .as_ref()
            .map(|w| format!("  {w}"))
            .unwrap_or_default();
        format!(
            "[{}] {}{wave}  locations {}/{} done, {} failed  instances {} sent, {} done of {}{}{left}",
            duration(self.elapsed as u64),
            self.status,
            self.locations_done,
            self.locations,
            self.locations_failed,
            self.instances_sent,
            self.instances_done,
            self.instances,
            if outcomes.is_empty() {
                String::new()
            } else {
                format!("  | {}", outcomes.join(", "))
            }
        )
    }
}

/// A bar of `len` steps on a terminal's standard error; hidden elsewhere.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    let template = format!("{what} {{bar:30}} {{pos}}/{{len}} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        b.set_style(style);
    }
    b
}

/// One read of the run: its execution, and its progress once plan has recorded it.
async fn read(aws: &Aws, run_id: &str) -> Result<(Execution, Option<Progress>), CliError> {
    let execution = aws.describe(run_id).await?;
    let elapsed = execution.stopped.unwrap_or_else(aws::now) - execution.started;
    let Ok(run) = aws.store.get_run(run_id).await else {
        return Ok((execution, None));
    };
    let locations = aws
        .store
        .list_locations(run_id)
        .await
        .map_err(|e| CliError::Failed(format!("cannot read run {run_id}: {e}")))?;
    let mut progress = Progress::of(run.status.as_str(), &run, &locations, elapsed);
    if !run.input.waves.is_empty() {
        let waves = aws
            .store
            .list_waves(run_id)
            .await
            .map_err(|e| CliError::Failed(format!("cannot read run {run_id}'s waves: {e}")))?;
        progress.wave = current_wave(&run, &waves);
    }
    Ok((execution, Some(progress)))
}

/// Follows the run until its execution ends; returns the execution and the last progress.
pub async fn follow(
    aws: &Aws,
    run_id: &str,
    interval: Duration,
) -> Result<(Execution, Option<Progress>), CliError> {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    } else {
        ProgressBar::hidden()
    };
    let mut last = (String::new(), Instant::now() - LINE_EVERY);

    loop {
        let (execution, progress) = read(aws, run_id).await?;
        let line = progress.as_ref().map_or_else(
            || format!("{}: waiting for the plan", execution.status),
            Progress::line,
        );
        let finished = aws::ended(&execution.status);
        if tty {
            bar.set_message(line.clone());
        } else if finished || (line != last.0 && last.1.elapsed() >= LINE_EVERY) {
            eprintln!("{line}");
            last = (line.clone(), Instant::now());
        }
        if finished {
            bar.finish_and_clear();
            if tty {
                eprintln!("{line}");
            }
            return Ok((execution, progress));
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpatch::input;
    use fleetpatch::model::Location;
    use serde_json::json;

    fn run(count: u64) -> RunRecord {
        let input = input::validate(&json!({
            "operation": "Install", "resourceGroup": "g",
            "accounts": ["111111111111"], "regions": ["us-east-1"]
        }))
        .unwrap();
        RunRecord {
            location_count: count,
            locations_done: 1,
            instances_sent: 15,
            instances_done: 12,
            ..RunRecord::started("r1", input, 0)
        }
    }

    fn location(phase: Phase, dispatchable: u64, succeeded: u64) -> LocationRecord {
        LocationRecord {
            phase,
            targeted: dispatchable,
            dispatchable,
            outcome: (phase == Phase::Done).then_some(LocationOutcome::Succeeded),
            counts: [(InstanceState::Succeeded, succeeded)]
                .into_iter()
                .collect(),
            ..LocationRecord::pending(Location::new("111111111111", "us-east-1"))
        }
    }

    #[test]
    fn time_left_scales_the_time_so_far_by_the_work_left() {
        // GIVEN 4 locations: one done, one half done, two not expanded, after 60 s
        let locations = vec![
            location(Phase::Done, 10, 10),
            location(Phase::Dispatching, 10, 5),
        ];
        // WHEN the progress is computed
        let p = Progress::of("Running", &run(4), &locations, 60.0);
        // THEN 1.5 of 4 locations' work is done, so 100 s are left
        assert_eq!(p.left.map(|s| s.round()), Some(100.0));
        assert_eq!(p.locations, 4);
        assert_eq!(p.instances, 20);
        assert_eq!(
            p.line(),
            "[1m00s] Running  locations 1/4 done, 0 failed  instances 15 sent, 12 done of 20  | Succeeded 1  ~1m40s left"
        );
    }

    #[test]
    fn no_estimate_before_anything_is_done() {
        // GIVEN a run whose locations were not expanded yet
        let p = Progress::of("Running", &run(2), &[], 5.0);
        // THEN the line gives no time left
        assert_eq!(p.left, None);
        assert!(!p.line().contains("left"));
    }

    fn wave(index: u32, name: &str, status: &str) -> WaveRecord {
        serde_json::from_value(json!({
            "index": index, "name": name, "status": status, "accounts": [], "regions": [],
            "locationCount": 1, "overlaps": 0, "locationWindow": 1, "soakSeconds": 0,
            "approval": false, "approvalTimeoutSeconds": 0
        }))
        .unwrap()
    }

    fn waved_run() -> RunRecord {
        let input = input::validate(&json!({
            "operation": "Install", "resourceGroup": "g", "regions": ["us-east-1"],
            "waves": [
                {"name": "canary", "accounts": ["111111111111"]},
                {"name": "prod", "accounts": ["222222222222"], "approval": true}
            ]
        }))
        .unwrap();
        RunRecord::started("r1", input, 0)
    }

    #[test]
    fn the_line_names_the_wave_under_way_and_how_to_approve_it() {
        // GIVEN a run of two waves: the canary passed, prod awaits approval
        let run = waved_run();
        let waves = [
            wave(0, "canary", "Passed"),
            wave(1, "prod", "AwaitingApproval"),
        ];
        // WHEN its progress line is built
        let mut p = Progress::of("Running", &run, &[], 5.0);
        p.wave = current_wave(&run, &waves);
        // THEN it names prod, its place, its status, and the command that approves it
        assert!(
            p.line().starts_with(
                "[5s] Running  wave prod (2/2) AwaitingApproval (fleetpatch approve r1 --wave prod)  locations"
            ),
            "{}",
            p.line()
        );
    }

    #[test]
    fn an_ended_run_shows_its_last_wave_and_a_run_without_waves_none() {
        // GIVEN a run whose canary failed its gate (prod never left Pending)
        let waved = waved_run();
        let waves = [wave(0, "canary", "GateFailed"), wave(1, "prod", "Pending")];
        // THEN the wave shown is the canary; a run without waves shows none
        assert_eq!(
            current_wave(&waved, &waves).as_deref(),
            Some("wave canary (1/2) GateFailed")
        );
        assert_eq!(current_wave(&run(1), &[wave(0, "all", "Running")]), None);
    }
}
