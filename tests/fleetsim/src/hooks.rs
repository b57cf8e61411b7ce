//! AWS-RunPatchBaselineWithHooks on a simulated instance: which hooks run, which step fails
//! first, and whether anything was installed; and the SSM documents that exist per account
//! and Region (`[[documents]]` of the fleet file), which DescribeDocument serves and the hook
//! steps look up.
//!
//! The behaviour follows the Systems Manager User Guide ("SSM Command document for patching:
//! AWS-RunPatchBaselineWithHooks"): an Install scans first; with nothing missing (and no
//! reboot pending under RebootIfNeeded) it goes straight to the on-exit hook; otherwise it
//! runs the pre-install hook, the Install with NoReboot, the post-install hook and the reboot
//! if needed, then the on-exit hook. When a step fails, every step after it is skipped up to
//! the on-exit hook, which still runs, and the invocation ends Failed. A hook runs with
//! `aws:runDocument` on the instance: a hook document that does not exist in the account and
//! Region fails its step like a failing hook. The step names are fleetsim's labels for the
//! guide's steps (the real document's step names were not at hand).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::{Behaviour, InstanceFile};

/// The hooks document.
pub const HOOKS_DOCUMENT: &str = "AWS-RunPatchBaselineWithHooks";
/// The patching document without hooks.
pub const DOCUMENT: &str = "AWS-RunPatchBaseline";
/// What a hook not given runs: nothing.
pub const NOOP: &str = "AWS-Noop";
/// AWS-owned Command documents every account and Region has.
pub const AWS_DOCUMENTS: [&str; 3] = [DOCUMENT, HOOKS_DOCUMENT, NOOP];

/// A hook of the hooks document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    /// `PreInstallHookDocName`: before the Install with NoReboot.
    PreInstall,
    /// `PostInstallHookDocName`: after it.
    PostInstall,
    /// `OnExitHookDocName`: last, always.
    OnExit,
}

impl HookPoint {
    /// The document parameter naming the hook.
    pub fn parameter(self) -> &'static str {
        match self {
            Self::PreInstall => "PreInstallHookDocName",
            Self::PostInstall => "PostInstallHookDocName",
            Self::OnExit => "OnExitHookDocName",
        }
    }

    /// The step (plugin) name fleetsim reports for the hook.
    pub fn step(self) -> &'static str {
        match self {
            Self::PreInstall => "PreInstallHook",
            Self::PostInstall => "PostInstallHook",
            Self::OnExit => "OnExitHook",
        }
    }
}

/// The install step's name.
pub const INSTALL_STEP: &str = "InstallWithNoReboot";
/// The hooks document's steps in order, as fleetsim names them.
pub const STEPS: [&str; 6] = [
    "Scan",
    "PreInstallHook",
    INSTALL_STEP,
    "PostInstallHook",
    "RebootIfNeeded",
    "OnExitHook",
];

fn command_type() -> String {
    "Command".to_string()
}

/// One `[[documents]]`: an SSM document of an account in a Region (the hook documents).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentFile {
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
    /// Document name.
    pub name: String,
    /// DocumentType (default Command).
    #[serde(default = "command_type")]
    pub document_type: String,
}

/// Documents by (account, Region, name): their type.
pub type Documents = BTreeMap<(String, String, String), String>;

/// The type of document `name` (a name or an ARN) as seen from `account` in `region`, if it
/// exists there: AWS-owned ones everywhere, others where the fleet file puts them (an ARN
/// names its own account and Region).
pub fn document_type<'a>(
    docs: &'a Documents,
    account: &str,
    region: &str,
    name: &str,
) -> Option<&'a str> {
    if AWS_DOCUMENTS.contains(&name) {
        return Some("Command");
    }
    let (acct, reg, short) = match name.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [_, "ssm", reg, acct, res] = parts.as_slice() else {
                return None;
            };
            let short = res.strip_prefix("document/")?;
            if acct.is_empty() {
                return AWS_DOCUMENTS.contains(&short).then_some("Command");
            }
            (acct.to_string(), reg.to_string(), short.to_string())
        }
        None => (account.to_string(), region.to_string(), name.to_string()),
    };
    docs.get(&(acct, reg, short)).map(String::as_str)
}

/// What the hooks document did on one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HooksRun {
    /// The hooks that ran, in order, with the document each ran.
    pub ran: Vec<(HookPoint, String)>,
    /// The first step that failed (the invocation then ends Failed).
    pub failed_step: Option<&'static str>,
    /// Whether the Install step ran (the patch state changes).
    pub installed: bool,
    /// Whether the reboot step was skipped by a failure after the install.
    pub reboot_skipped: bool,
}

/// Runs the hooks document's Install on `inst`: `has_work` says whether the scan found
/// something to do (a missing patch, or a pending reboot under RebootIfNeeded); `exists`
/// whether a hook document can be found from the instance.
pub fn run_install(
    params: &BTreeMap<String, Vec<String>>,
    inst: &InstanceFile,
    has_work: bool,
    exists: &dyn Fn(&str) -> bool,
) -> HooksRun {
    let mut run = HooksRun::default();
    let hook = |run: &mut HooksRun, point: HookPoint| -> bool {
        let doc = params
            .get(point.parameter())
            .and_then(|v| v.first())
            .map(String::as_str)
            .unwrap_or(NOOP);
        run.ran.push((point, doc.to_string()));
        let ok = exists(doc) && !inst.failing_hooks.contains(&point);
        if !ok && run.failed_step.is_none() {
            run.failed_step = Some(point.step());
        }
        ok
    };

    if has_work && hook(&mut run, HookPoint::PreInstall) {
        run.installed = true;
        if inst.install == Behaviour::Fail {
            run.failed_step = Some(INSTALL_STEP);
        } else if !hook(&mut run, HookPoint::PostInstall) {
            run.reboot_skipped = true;
        }
        run.reboot_skipped |= run.failed_step.is_some();
    }
    hook(&mut run, HookPoint::OnExit);
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(failing: &[HookPoint]) -> InstanceFile {
        let text = "id = \"i-1\"\naccount = \"111111111111\"\nregion = \"us-east-1\"\n";
        let mut inst: InstanceFile = toml::from_str(text).expect("instance");
        inst.failing_hooks = failing.to_vec();
        inst
    }

    fn params(pre: &str, post: &str) -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([
            ("Operation".to_string(), vec!["Install".to_string()]),
            ("PreInstallHookDocName".to_string(), vec![pre.to_string()]),
            ("PostInstallHookDocName".to_string(), vec![post.to_string()]),
        ])
    }

    fn all_exist(_: &str) -> bool {
        true
    }

    #[test]
    fn a_failing_pre_install_hook_skips_the_install_and_the_post_hook() {
        // GIVEN an instance whose pre-install hook fails
        let inst = instance(&[HookPoint::PreInstall]);
        // WHEN the hooks document installs on it
        let run = run_install(&params("Drain", "Check"), &inst, true, &all_exist);
        // THEN nothing is installed, the post-install hook never runs, the on-exit hook does
        assert!(!run.installed);
        assert_eq!(run.failed_step, Some("PreInstallHook"));
        let points: Vec<HookPoint> = run.ran.iter().map(|(p, _)| *p).collect();
        assert_eq!(points, [HookPoint::PreInstall, HookPoint::OnExit]);
    }

    #[test]
    fn a_failing_post_install_hook_comes_after_the_install() {
        let inst = instance(&[HookPoint::PostInstall]);
        let run = run_install(&params("Drain", "Check"), &inst, true, &all_exist);
        assert!(run.installed && run.reboot_skipped);
        assert_eq!(run.failed_step, Some("PostInstallHook"));
        assert_eq!(run.ran.len(), 3);
    }

    #[test]
    fn a_missing_hook_document_fails_its_step() {
        let inst = instance(&[]);
        let run = run_install(&params("Drain", "Check"), &inst, true, &|d| d != "Drain");
        assert_eq!(
            (run.installed, run.failed_step),
            (false, Some("PreInstallHook"))
        );
    }

    #[test]
    fn nothing_to_install_goes_straight_to_the_on_exit_hook() {
        let inst = instance(&[HookPoint::PreInstall]);
        let run = run_install(&params("Drain", "Check"), &inst, false, &all_exist);
        assert_eq!(run.ran, vec![(HookPoint::OnExit, NOOP.to_string())]);
        assert_eq!(run.failed_step, None);
    }

    #[test]
    fn documents_are_found_by_name_in_their_location_or_by_arn() {
        let docs: Documents = BTreeMap::from([(
            ("111111111111".into(), "us-east-1".into(), "Drain".into()),
            "Command".into(),
        )]);
        assert_eq!(
            document_type(&docs, "111111111111", "us-east-1", "Drain"),
            Some("Command")
        );
        assert_eq!(
            document_type(&docs, "111111111111", "eu-west-1", "Drain"),
            None
        );
        let arn = "arn:aws:ssm:us-east-1:111111111111:document/Drain";
        assert_eq!(
            document_type(&docs, "222222222222", "us-east-1", arn),
            Some("Command")
        );
        assert_eq!(document_type(&docs, "2", "r", "AWS-Noop"), Some("Command"));
    }
}
