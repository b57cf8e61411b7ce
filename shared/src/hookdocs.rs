//! The SSM adapter for install hooks, with the execution role's credentials: whether each
//! hook document can run in a location (DescribeDocument, before anything is sent there), and
//! which step of a failed AWS-RunPatchBaselineWithHooks invocation failed
//! (ListCommandInvocations with `Details`).
//!
//! Why the check is made at all: SendCommand authorizes the document it names and the
//! instances, never the documents passed as parameters. AWS-RunPatchBaselineWithHooks runs
//! its hooks on the instance (`aws:runDocument`, with the instance's own credentials), so a
//! hook that does not exist only fails there, instance by instance, after the scan. Reading
//! each hook first through the execution role turns that into one clear reason for the
//! location and no command; and since the target role may describe only the documents its
//! StackSet's `HookDocumentPrefix` names, a hook outside that pattern is refused the same way.
//!
//! Invariants: a location whose hook is missing, not a Command document, or not readable by
//! the role gets a reason and is sent nothing; any other failure is an error to retry.

use crate::command::Hooks;
use crate::error::{from_sdk, Result};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::collections::HashMap;

/// Why the first unusable hook cannot run in the location, or None when every hook can.
pub async fn unusable_hook(client: &aws_sdk_ssm::Client, hooks: &Hooks) -> Result<Option<String>> {
    for (param, doc) in hooks.named() {
        let answer = client.describe_document().name(doc).send().await;
        let why = match answer {
            Ok(out) => {
                let d = out.document;
                let kind = d.as_ref().and_then(|d| d.document_type.as_ref());
                let status = d.as_ref().and_then(|d| d.status.as_ref());
                match (kind.map(|k| k.as_str()), status.map(|s| s.as_str())) {
                    (Some("Command"), Some("Active")) => continue,
                    (Some("Command"), s) => format!("is not Active ({})", s.unwrap_or("no status")),
                    (k, _) => format!("is not a Command document ({})", k.unwrap_or("no type")),
                }
            }
            Err(e) => match e.code() {
                Some("InvalidDocument") => "does not exist here".to_string(),
                Some("AccessDeniedException" | "AccessDenied") => format!(
                    "may not be read by the execution role (outside the hook documents its \
                     StackSet allows): {}",
                    e.message().unwrap_or_default()
                ),
                _ => return Err(from_sdk("ssm:DescribeDocument", e)),
            },
        };
        return Ok(Some(format!("hook document {doc} ({param}) {why}")));
    }
    Ok(None)
}

/// The first failed step of each failed invocation of `command_id`, by instance: what a
/// report needs to say why (the hooks document skips every step after a failed one up to
/// its on-exit hook, so the first failed step is the cause).
pub async fn failed_steps(
    client: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut pages = client
        .list_command_invocations()
        .command_id(command_id)
        .details(true)
        .max_results(50)
        .into_paginator()
        .send();

    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| from_sdk("ssm:ListCommandInvocations", e))?;
        for inv in page.command_invocations.unwrap_or_default() {
            let step = inv
                .command_plugins
                .unwrap_or_default()
                .into_iter()
                .find(|p| p.status.as_ref().is_some_and(|s| s.as_str() == "Failed"))
                .and_then(|p| p.name);
            if let (Some(id), Some(step)) = (inv.instance_id, step) {
                out.insert(id, step);
            }
        }
    }
    Ok(out)
}

/// The status details fleetpatch records for a failed hooks invocation: SSM's, with the step.
pub fn with_failed_step(details: &str, step: &str) -> String {
    format!("{details}: step {step} failed; the steps after it up to the on-exit hook were skipped")
}
