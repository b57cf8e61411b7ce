//! What a batch's SendCommand asks for, as plain data: the document and its parameters
//! (pure; [`crate::fleet::send_command`] turns it into the request).
//!
//! Without hooks the document is AWS-RunPatchBaseline. With any hook (pre-install,
//! post-install, on-exit) it is AWS-RunPatchBaselineWithHooks, a wrapper AWS documents in the Systems Manager User Guide
//! ("SSM Command document for patching: AWS-RunPatchBaselineWithHooks",
//! docs.aws.amazon.com/systems-manager/latest/userguide/patch-manager-aws-runpatchbaselinewithhooks.html):
//! - parameters: `Operation` (required, Scan | Install), `SnapshotId`, `RebootOption`
//!   (RebootIfNeeded | NoReboot), `PreInstallHookDocName`, `PostInstallHookDocName`,
//!   `OnExitHookDocName` (each a document name or ARN, default `AWS-Noop`, which does
//!   nothing). It has no `InstallOverrideList` (the input validation refuses the pair).
//! - Install runs: a Scan; if nothing is missing (and no reboot is pending with
//!   RebootIfNeeded) straight to the on-exit hook; else the pre-install hook, an Install with
//!   NoReboot, the post-install hook, the reboot if needed, then the on-exit hook.
//! - If any step fails, the steps after it are skipped up to the on-exit hook, which still
//!   runs; the failed step is reported Failed and so is the invocation. A failing pre-install
//!   hook therefore means nothing is installed on that instance.
//!
//! Invariants: the hook parameters are sent only with the hooks document, and a hook not
//! named is left out (the document's default, AWS-Noop, applies).

use crate::model::{Operation, RebootOption};

/// The document a command runs without hooks.
pub const DOCUMENT: &str = "AWS-RunPatchBaseline";
/// The document a command runs when the run names a hook.
pub const HOOKS_DOCUMENT: &str = "AWS-RunPatchBaselineWithHooks";

/// The SSM documents run around the install (names or ARNs), as the run input names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// `PreInstallHookDocName`: before the Install with NoReboot.
    pub pre_install: Option<String>,
    /// `PostInstallHookDocName`: after it, before any reboot.
    pub post_install: Option<String>,
    /// `OnExitHookDocName`: last, also when nothing was to install or a step failed.
    pub on_exit: Option<String>,
}

impl Hooks {
    /// The hooks a run names, or None when it names none (plain AWS-RunPatchBaseline).
    pub fn of(
        pre_install: Option<&str>,
        post_install: Option<&str>,
        on_exit: Option<&str>,
    ) -> Option<Self> {
        let hooks = Self {
            pre_install: pre_install.map(str::to_string),
            post_install: post_install.map(str::to_string),
            on_exit: on_exit.map(str::to_string),
        };
        (hooks != Self::default()).then_some(hooks)
    }

    /// The hook documents named, each with the document parameter it goes into.
    pub fn named(&self) -> Vec<(&'static str, &str)> {
        [
            ("PreInstallHookDocName", self.pre_install.as_deref()),
            ("PostInstallHookDocName", self.post_install.as_deref()),
            ("OnExitHookDocName", self.on_exit.as_deref()),
        ]
        .into_iter()
        .filter_map(|(param, doc)| Some((param, doc?)))
        .collect()
    }
}

/// Everything a SendCommand needs besides the instance IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub operation: Operation,
    /// The run's baseline snapshot: every instance of a run patches against the same one.
    pub snapshot_id: String,
    /// URL of an install override list (the document's `InstallOverrideList`; never with
    /// hooks).
    pub install_override_list: Option<String>,
    pub reboot_option: RebootOption,
    /// Delivery timeout, in seconds.
    pub timeout_seconds: i32,
    /// CloudWatch Logs group for output, if any.
    pub log_group: Option<String>,
    /// Install hooks: with them the document is [`HOOKS_DOCUMENT`].
    pub hooks: Option<Hooks>,
}

impl CommandSpec {
    /// The document the command runs.
    pub fn document(&self) -> &'static str {
        if self.hooks.is_some() {
            HOOKS_DOCUMENT
        } else {
            DOCUMENT
        }
    }

    /// The document's parameters, each with its one value, in a fixed order.
    pub fn parameters(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("Operation", self.operation.as_str().to_string()),
            ("SnapshotId", self.snapshot_id.clone()),
            ("RebootOption", self.reboot_option.as_str().to_string()),
        ];
        match &self.hooks {
            Some(hooks) => out.extend(hooks.named().into_iter().map(|(p, d)| (p, d.to_string()))),
            None => {
                if let Some(url) = &self.install_override_list {
                    out.push(("InstallOverrideList", url.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hooks: Option<Hooks>) -> CommandSpec {
        CommandSpec {
            operation: Operation::Install,
            snapshot_id: "snap-1".into(),
            install_override_list: None,
            reboot_option: RebootOption::RebootIfNeeded,
            timeout_seconds: 600,
            log_group: None,
            hooks,
        }
    }

    #[test]
    fn without_hooks_the_command_is_run_patch_baseline() {
        // GIVEN a run that names no hook
        let hooks = Hooks::of(None, None, None);
        // WHEN its command is built
        let s = spec(hooks);
        // THEN it runs AWS-RunPatchBaseline with no hook parameter
        assert_eq!(s.document(), "AWS-RunPatchBaseline");
        let names: Vec<&str> = s.parameters().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["Operation", "SnapshotId", "RebootOption"]);
    }

    #[test]
    fn a_pre_install_hook_runs_the_hooks_document_with_only_that_hook() {
        // GIVEN a run with a pre-install hook only
        let s = spec(Hooks::of(Some("MyOrg-Drain"), None, None));
        // WHEN its command is built
        let params = s.parameters();
        // THEN the document is the hooks one, the hook goes into PreInstallHookDocName and
        // the post-install hook is left to the document's default (AWS-Noop)
        assert_eq!(s.document(), "AWS-RunPatchBaselineWithHooks");
        assert_eq!(
            params,
            vec![
                ("Operation", "Install".to_string()),
                ("SnapshotId", "snap-1".to_string()),
                ("RebootOption", "RebootIfNeeded".to_string()),
                ("PreInstallHookDocName", "MyOrg-Drain".to_string()),
            ]
        );
    }

    #[test]
    fn both_hooks_go_into_their_own_parameters_and_no_override_list_is_sent() {
        // GIVEN both hooks (and, against the validation, an override list)
        let mut s = spec(Hooks::of(
            Some("MyOrg-Drain"),
            Some("arn:aws:ssm:us-east-1:111122223333:document/MyOrg-Check"),
            None,
        ));
        s.install_override_list = Some("s3://b/list.yaml".into());
        // WHEN the command is built
        let params = s.parameters();
        // THEN each hook is in its parameter, and InstallOverrideList, which the hooks
        // document does not define, is never sent
        assert!(params.contains(&("PreInstallHookDocName", "MyOrg-Drain".to_string())));
        assert!(params.contains(&(
            "PostInstallHookDocName",
            "arn:aws:ssm:us-east-1:111122223333:document/MyOrg-Check".to_string()
        )));
        assert!(params.iter().all(|(n, _)| *n != "InstallOverrideList"));
    }

    #[test]
    fn an_on_exit_hook_alone_runs_the_hooks_document() {
        // GIVEN a run with only an on-exit hook
        let s = spec(Hooks::of(None, None, Some("MyOrg-Check")));
        // THEN the hooks document runs, with OnExitHookDocName as the only hook parameter
        assert_eq!(s.document(), "AWS-RunPatchBaselineWithHooks");
        let hooks: Vec<_> = s
            .parameters()
            .into_iter()
            .filter(|(n, _)| n.ends_with("HookDocName"))
            .collect();
        assert_eq!(
            hooks,
            vec![("OnExitHookDocName", "MyOrg-Check".to_string())]
        );
    }

    #[test]
    fn without_hooks_the_override_list_is_sent() {
        let mut s = spec(None);
        s.install_override_list = Some("s3://b/list.yaml".into());
        assert!(s
            .parameters()
            .contains(&("InstallOverrideList", "s3://b/list.yaml".to_string())));
    }
}
