//! The simulation engine: Run Command commands and their invocations, the lifecycle each
//! invocation follows on the simulated clock, patch state changes when an invocation
//! finishes, and the in-flight bookkeeping the oracle reports. Pure data and functions of
//! "now"; the SSM module turns API calls into calls on [`Sim`].

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::fleet::{AgentState, Behaviour, Fleet, InstanceFile, Platform};
use crate::hooks::{self, HooksRun, HOOKS_DOCUMENT};

/// How an invocation ends (fixed when the command is sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Success.
    Success,
    /// Failed, ResponseCode 1.
    Failed,
    /// TimedOut / Execution Timed Out.
    ExecutionTimedOut,
    /// TimedOut / Delivery Timed Out (never started).
    DeliveryTimedOut,
    /// Cancelled by CancelCommand.
    Cancelled,
}

/// One instance's part of a command.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Instance id.
    pub instance_id: String,
    /// Simulated start (InProgress from then), None if never delivered.
    pub start_ms: Option<i64>,
    /// Simulated time it becomes terminal.
    pub end_ms: i64,
    /// Terminal outcome.
    pub outcome: Outcome,
    /// Whether the end has been applied (patch state, in-flight count).
    pub applied: bool,
    /// What AWS-RunPatchBaselineWithHooks did (None for any other document or a Scan).
    pub hooks: Option<HooksRun>,
}

/// A command as SendCommand received it.
#[derive(Debug, Clone)]
pub struct Command {
    /// UUID.
    pub id: String,
    /// Account it runs in.
    pub account: String,
    /// Region.
    pub region: String,
    /// Document name.
    pub document_name: String,
    /// Comment.
    pub comment: String,
    /// Document parameters.
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Target instances, request order.
    pub instance_ids: Vec<String>,
    /// Delivery timeout.
    pub timeout_seconds: i64,
    /// MaxConcurrency as sent (not enforced).
    pub max_concurrency: String,
    /// MaxErrors as sent (not enforced).
    pub max_errors: String,
    /// Simulated request time.
    pub requested_ms: i64,
    /// Wall-clock time it was received (for the visibility window).
    pub received: Instant,
    /// Wall-clock epoch ms it was received (the functions' clock: `notAfter` is judged on it).
    pub received_wall_ms: i64,
    /// CloudWatchOutputConfig as sent.
    pub cloudwatch: Option<serde_json::Value>,
    /// Invocations, request order.
    pub invocations: Vec<Invocation>,
}

impl Command {
    /// The document parameter `name`'s first value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.parameters
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// What an invocation looks like at a given simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationView {
    /// Status enum value.
    pub status: &'static str,
    /// StatusDetails string.
    pub details: &'static str,
    /// Response code (-1 while not finished or never run).
    pub response_code: i64,
    /// Start, once started.
    pub start_ms: Option<i64>,
    /// End, once terminal.
    pub end_ms: Option<i64>,
    /// Whether it is terminal.
    pub terminal: bool,
}

/// The lifecycle function: an invocation's state at `now`.
pub fn view(inv: &Invocation, now: i64) -> InvocationView {
    let started = inv.start_ms.filter(|s| *s <= now && *s <= inv.end_ms);
    if now >= inv.end_ms {
        let (status, details, code) = match inv.outcome {
            Outcome::Success => ("Success", "Success", 0),
            Outcome::Failed => ("Failed", "Failed", 1),
            Outcome::ExecutionTimedOut => ("TimedOut", "Execution Timed Out", -1),
            Outcome::DeliveryTimedOut => ("TimedOut", "Delivery Timed Out", -1),
            Outcome::Cancelled => ("Cancelled", "Cancelled", -1),
        };
        return InvocationView {
            status,
            details,
            response_code: code,
            start_ms: started,
            end_ms: Some(inv.end_ms),
            terminal: true,
        };
    }
    let (status, details) = if started.is_some() {
        ("InProgress", "In Progress")
    } else {
        ("Pending", "Pending")
    };
    InvocationView {
        status,
        details,
        response_code: -1,
        start_ms: started,
        end_ms: None,
        terminal: false,
    }
}

/// Command-level aggregate at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandView {
    /// Status.
    pub status: &'static str,
    /// StatusDetails.
    pub details: &'static str,
    /// Number of targets.
    pub target_count: usize,
    /// Terminal invocations.
    pub completed_count: usize,
    /// Failed or Execution Timed Out.
    pub error_count: usize,
    /// Delivery Timed Out.
    pub delivery_timed_out_count: usize,
}

/// Aggregates invocations: any running -> Pending/InProgress; else Failed > TimedOut
/// (Execution, then Delivery) > Cancelled > Success.
pub fn command_view(cmd: &Command, now: i64) -> CommandView {
    let views: Vec<InvocationView> = cmd.invocations.iter().map(|i| view(i, now)).collect();
    let completed = views.iter().filter(|v| v.terminal).count();
    let count = |d: &str| views.iter().filter(|v| v.details == d).count();
    let failed = count("Failed");
    let exec_to = count("Execution Timed Out");
    let deliv_to = count("Delivery Timed Out");
    let cancelled = count("Cancelled");
    let (status, details) = if completed < views.len() {
        if views.iter().all(|v| v.status == "Pending") {
            ("Pending", "Pending")
        } else {
            ("InProgress", "In Progress")
        }
    } else if failed > 0 {
        ("Failed", "Failed")
    } else if exec_to > 0 {
        ("TimedOut", "Execution Timed Out")
    } else if deliv_to > 0 {
        ("TimedOut", "Delivery Timed Out")
    } else if cancelled > 0 {
        ("Cancelled", "Cancelled")
    } else {
        ("Success", "Success")
    };
    CommandView {
        status,
        details,
        target_count: views.len(),
        completed_count: completed,
        error_count: failed + exec_to,
        delivery_timed_out_count: deliv_to,
    }
}

/// An instance's patch compliance summary (DescribeInstancePatchStates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchState {
    /// Scan or Install.
    pub operation: String,
    /// Start of the last operation.
    pub operation_start_ms: i64,
    /// End of the last operation.
    pub operation_end_ms: i64,
    /// SnapshotId of the last operation.
    pub snapshot_id: String,
    /// InstallOverrideList of the last operation.
    pub install_override_list: Option<String>,
    /// RebootOption of the last operation.
    pub reboot_option: Option<String>,
    /// Baseline id.
    pub baseline_id: String,
    /// Patch group.
    pub patch_group: String,
    /// InstalledCount.
    pub installed: u32,
    /// InstalledOtherCount.
    pub installed_other: u32,
    /// InstalledPendingRebootCount.
    pub installed_pending_reboot: u32,
    /// MissingCount.
    pub missing: u32,
    /// FailedCount.
    pub failed: u32,
    /// NotApplicableCount.
    pub not_applicable: u32,
    /// Last Install with NoReboot.
    pub last_no_reboot_install_ms: Option<i64>,
}

impl PatchState {
    fn initial(inst: &InstanceFile, sim_start: i64) -> Self {
        let scanned = sim_start - 86_400_000;
        Self {
            operation: "Scan".to_string(),
            operation_start_ms: scanned,
            operation_end_ms: scanned + 120_000,
            snapshot_id: String::new(),
            install_override_list: None,
            reboot_option: None,
            baseline_id: match inst.platform {
                Platform::Linux => "pb-0e392de35e7c563b7".to_string(),
                Platform::Windows => "pb-016889927b2bb8542".to_string(),
            },
            patch_group: inst.patch_group.clone(),
            installed: inst.installed,
            installed_other: 0,
            installed_pending_reboot: 0,
            missing: inst.missing,
            failed: 0,
            not_applicable: 3,
            last_no_reboot_install_ms: None,
        }
    }

    /// Non-compliant patches: missing, failed and installed-pending-reboot.
    pub fn security_non_compliant(&self) -> u32 {
        self.missing + self.failed + self.installed_pending_reboot
    }
}

/// Timing knobs.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    /// Simulated ms an online invocation stays Pending.
    pub pending_ms: i64,
    /// Wall-clock ms after SendCommand during which invocations are invisible.
    pub visibility_ms: u64,
}

/// Mutable simulation state.
#[derive(Debug)]
pub struct Sim {
    /// The immutable fleet.
    pub fleet: Fleet,
    /// Timing knobs.
    pub config: SimConfig,
    /// Patch state per managed instance.
    pub patch: HashMap<String, PatchState>,
    /// Every command, in send order.
    pub commands: Vec<Command>,
    by_id: HashMap<String, usize>,
    in_flight: BTreeMap<(String, String), usize>,
    max_in_flight: BTreeMap<(String, String), usize>,
    /// Commands before this index are hidden from the oracle (after a reset).
    pub oracle_since: usize,
}

/// Input of [`Sim::send`], already validated by the SSM layer.
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// Document name.
    pub document_name: String,
    /// Comment.
    pub comment: String,
    /// Parameters.
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Instances (validated managed instances of account/Region).
    pub instance_ids: Vec<String>,
    /// TimeoutSeconds.
    pub timeout_seconds: i64,
    /// MaxConcurrency.
    pub max_concurrency: String,
    /// MaxErrors.
    pub max_errors: String,
    /// CloudWatchOutputConfig.
    pub cloudwatch: Option<serde_json::Value>,
}

impl Sim {
    /// A fresh simulation of `fleet` whose history starts at `now`.
    pub fn new(fleet: Fleet, config: SimConfig, now: i64) -> Self {
        let patch = fleet
            .instances
            .values()
            .filter(|i| i.agent != AgentState::Unmanaged)
            .map(|i| (i.id.clone(), PatchState::initial(i, now)))
            .collect();
        Self {
            fleet,
            config,
            patch,
            commands: Vec::new(),
            by_id: HashMap::new(),
            in_flight: BTreeMap::new(),
            max_in_flight: BTreeMap::new(),
            oracle_since: 0,
        }
    }

    /// Applies every invocation end up to `now`, in end-time order.
    pub fn settle(&mut self, now: i64) {
        let mut due: Vec<(i64, usize, usize)> = Vec::new();
        for (c, cmd) in self.commands.iter().enumerate() {
            for (i, inv) in cmd.invocations.iter().enumerate() {
                if !inv.applied && inv.end_ms <= now {
                    due.push((inv.end_ms, c, i));
                }
            }
        }
        due.sort();
        for (_, c, i) in due {
            self.apply_end(c, i);
        }
    }

    fn apply_end(&mut self, c: usize, i: usize) {
        let cmd = &self.commands[c];
        let inv = &cmd.invocations[i];
        let key = (cmd.account.clone(), cmd.region.clone());
        if let Some(n) = self.in_flight.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
        let behaviour = self
            .fleet
            .instances
            .get(&inv.instance_id)
            .map(|x| x.install);
        if let (Some(ps), Some(behaviour)) = (self.patch.get_mut(&inv.instance_id), behaviour) {
            match &inv.hooks {
                Some(run) => apply_hooks_effect(ps, behaviour, cmd, inv, run),
                None => apply_patch_effect(ps, behaviour, cmd, inv),
            }
        }
        self.commands[c].invocations[i].applied = true;
    }

    /// Sends a command now; returns its index.
    pub fn send(&mut self, req: SendRequest, now: i64) -> usize {
        self.settle(now);
        let invocations = req
            .instance_ids
            .iter()
            .map(|id| self.invocation(id, &req, now))
            .collect::<Vec<_>>();

        let key = (req.account.clone(), req.region.clone());
        let n = self.in_flight.entry(key.clone()).or_insert(0);
        *n += invocations.len();
        let current = *n;
        let max = self.max_in_flight.entry(key).or_insert(0);
        *max = (*max).max(current);

        let cmd = Command {
            id: uuid::Uuid::new_v4().to_string(),
            account: req.account,
            region: req.region,
            document_name: req.document_name,
            comment: req.comment,
            parameters: req.parameters,
            instance_ids: req.instance_ids,
            timeout_seconds: req.timeout_seconds,
            max_concurrency: req.max_concurrency,
            max_errors: req.max_errors,
            requested_ms: now,
            received: Instant::now(),
            received_wall_ms: crate::clock::wall_ms(),
            cloudwatch: req.cloudwatch,
            invocations,
        };
        self.by_id.insert(cmd.id.clone(), self.commands.len());
        self.commands.push(cmd);
        // zero-duration invocations end immediately
        self.settle(now);
        self.commands.len() - 1
    }

    /// One instance's invocation of a command sent at `now`. An Online instance starts after
    /// the pending time and runs for its duration (only Install fails or times out, as the
    /// fleet file says); any other is never delivered and ends DeliveryTimedOut at the
    /// command's timeout.
    fn invocation(&self, id: &str, req: &SendRequest, now: i64) -> Invocation {
        let operation_is_install = req
            .parameters
            .get("Operation")
            .and_then(|v| v.first())
            .is_some_and(|o| o == "Install");
        let timeout_ms = req.timeout_seconds * 1000;
        let inst = self.fleet.instances.get(id);
        let agent = inst.map(|i| i.agent).unwrap_or(AgentState::Unmanaged);
        let duration_ms = inst.map(|i| i.duration as i64 * 1000).unwrap_or(0);
        let behaviour = inst.map(|i| i.install).unwrap_or(Behaviour::Succeed);

        if agent != AgentState::Online {
            return Invocation {
                instance_id: id.to_string(),
                start_ms: None,
                end_ms: now + timeout_ms,
                outcome: Outcome::DeliveryTimedOut,
                applied: false,
                hooks: None,
            };
        }

        let start = now + self.config.pending_ms;
        let hooks = inst
            .filter(|_| operation_is_install && req.document_name == HOOKS_DOCUMENT)
            .map(|i| self.run_hooks(i, req));
        let outcome = match (operation_is_install, behaviour) {
            (true, Behaviour::ExecutionTimeout) => Outcome::ExecutionTimedOut,
            _ if hooks.as_ref().is_some_and(|h| h.failed_step.is_some()) => Outcome::Failed,
            (true, Behaviour::Fail) if hooks.is_none() => Outcome::Failed,
            _ => Outcome::Success,
        };
        Invocation {
            instance_id: id.to_string(),
            start_ms: Some(start),
            end_ms: start + duration_ms,
            outcome,
            applied: false,
            hooks,
        }
    }

    /// AWS-RunPatchBaselineWithHooks' Install on `inst`, decided when the command is sent:
    /// the scan finds work when a patch is missing, or a reboot is pending under
    /// RebootIfNeeded; a hook document is looked up in the command's account and Region.
    fn run_hooks(&self, inst: &InstanceFile, req: &SendRequest) -> HooksRun {
        let reboot_if_needed = req
            .parameters
            .get("RebootOption")
            .and_then(|v| v.first())
            .is_none_or(|r| r == "RebootIfNeeded");
        let has_work = self
            .patch
            .get(&inst.id)
            .is_some_and(|p| p.missing > 0 || (reboot_if_needed && p.installed_pending_reboot > 0));
        let docs = &self.fleet.documents;
        let exists = |doc: &str| {
            hooks::document_type(docs, &req.account, &req.region, doc) == Some("Command")
        };
        hooks::run_install(&req.parameters, inst, has_work, &exists)
    }

    /// The command `id` if it belongs to `account`/`region`.
    pub fn command(&self, id: &str, account: &str, region: &str) -> Option<&Command> {
        self.by_id
            .get(id)
            .map(|i| &self.commands[*i])
            .filter(|c| c.account == account && c.region == region)
    }

    /// Whether the command's invocations are still inside the visibility window.
    pub fn invisible(&self, cmd: &Command) -> bool {
        (cmd.received.elapsed().as_millis() as u64) < self.config.visibility_ms
    }

    /// Cancels the command's non-terminal invocations (optionally only `instances`).
    /// Returns false if the command does not exist there.
    pub fn cancel(
        &mut self,
        id: &str,
        account: &str,
        region: &str,
        instances: &[String],
        now: i64,
    ) -> bool {
        self.settle(now);
        let Some(&idx) = self.by_id.get(id) else {
            return false;
        };
        let cmd = &mut self.commands[idx];
        if cmd.account != account || cmd.region != region {
            return false;
        }
        for inv in cmd.invocations.iter_mut() {
            if !inv.applied && (instances.is_empty() || instances.contains(&inv.instance_id)) {
                inv.end_ms = now;
                inv.outcome = Outcome::Cancelled;
            }
        }
        self.settle(now);
        true
    }

    /// Max simultaneous in-flight invocations per (account, Region) since start/reset.
    pub fn max_in_flight(&self) -> &BTreeMap<(String, String), usize> {
        &self.max_in_flight
    }

    /// Current in-flight invocations per (account, Region).
    pub fn in_flight(&self) -> &BTreeMap<(String, String), usize> {
        &self.in_flight
    }

    /// Clears oracle counters: command log and max in flight restart from now.
    pub fn reset_counters(&mut self) {
        self.oracle_since = self.commands.len();
        self.max_in_flight = self.in_flight.clone();
    }
}

/// The patch state after the hooks document: as a Scan when nothing was installed (the
/// document scans first), else as an Install (a failed install step leaves failed patches),
/// with NoReboot when a failure after the install skipped the reboot.
fn apply_hooks_effect(
    ps: &mut PatchState,
    behaviour: Behaviour,
    cmd: &Command,
    inv: &Invocation,
    run: &HooksRun,
) {
    if inv.outcome == Outcome::ExecutionTimedOut || inv.outcome == Outcome::Cancelled {
        return;
    }
    let mut effective = cmd.clone();
    let op = if run.installed { "Install" } else { "Scan" };
    effective
        .parameters
        .insert("Operation".into(), vec![op.to_string()]);
    if run.reboot_skipped {
        effective
            .parameters
            .insert("RebootOption".into(), vec!["NoReboot".to_string()]);
    }
    let mut as_run = inv.clone();
    as_run.outcome = if run.failed_step == Some(hooks::INSTALL_STEP) {
        Outcome::Failed
    } else {
        Outcome::Success
    };
    apply_patch_effect(ps, behaviour, &effective, &as_run);
}

fn apply_patch_effect(ps: &mut PatchState, behaviour: Behaviour, cmd: &Command, inv: &Invocation) {
    let operation = cmd.param("Operation").unwrap_or("Scan").to_string();
    match inv.outcome {
        Outcome::Success | Outcome::Failed => {}
        _ => return,
    }
    ps.operation_start_ms = inv.start_ms.unwrap_or(inv.end_ms);
    ps.operation_end_ms = inv.end_ms;
    ps.snapshot_id = cmd.param("SnapshotId").unwrap_or_default().to_string();
    ps.reboot_option = Some(
        cmd.param("RebootOption")
            .unwrap_or("RebootIfNeeded")
            .to_string(),
    );
    ps.install_override_list = cmd
        .param("InstallOverrideList")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if operation == "Install" {
        if inv.outcome == Outcome::Failed {
            ps.failed = ps.missing.max(1);
            ps.missing = 0;
        } else if behaviour == Behaviour::NeedsReboot
            && cmd.param("RebootOption") == Some("NoReboot")
        {
            ps.installed_pending_reboot += ps.missing;
            ps.missing = 0;
            ps.failed = 0;
            ps.last_no_reboot_install_ms = Some(inv.end_ms);
        } else {
            ps.installed += ps.missing + ps.installed_pending_reboot;
            ps.missing = 0;
            ps.failed = 0;
            ps.installed_pending_reboot = 0;
        }
    }
    ps.operation = operation;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(start: Option<i64>, end: i64, outcome: Outcome) -> Invocation {
        Invocation {
            instance_id: "i-1".into(),
            start_ms: start,
            end_ms: end,
            outcome,
            applied: false,
            hooks: None,
        }
    }

    #[test]
    fn lifecycle_pending_inprogress_terminal() {
        let i = inv(Some(10), 100, Outcome::ExecutionTimedOut);
        assert_eq!(view(&i, 5).status, "Pending");
        assert_eq!(view(&i, 50).details, "In Progress");
        let end = view(&i, 100);
        assert_eq!(
            (end.status, end.details, end.terminal),
            ("TimedOut", "Execution Timed Out", true)
        );
    }

    #[test]
    fn undelivered_invocation_never_starts() {
        let i = inv(None, 1000, Outcome::DeliveryTimedOut);
        assert_eq!(view(&i, 999).status, "Pending");
        let v = view(&i, 1000);
        assert_eq!(
            (v.status, v.details, v.start_ms),
            ("TimedOut", "Delivery Timed Out", None)
        );
    }
}
