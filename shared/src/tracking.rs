//! Reading Run Command's progress for a whole location at once (the adapter behind
//! [`crate::progress::follow_commands`]): one ListCommands that stops paging once every
//! command asked about is seen, and one ListCommandInvocations across commands (no
//! CommandId) that reads the outcomes of many commands in a page or two. SDK types stop here.
//!
//! Invariants: a command missing from an answer is simply absent (Run Command is eventually
//! consistent; the caller decides what absence means); every page asked for is followed
//! until what is wanted is found or the listing ends, so nothing is missed, whatever order
//! Run Command lists in.

use crate::error::{from_sdk, Result};
use crate::fleet::InvocationStatus;
use crate::model::map_invocation_status;
use crate::reading::CommandProgress;
use aws_sdk_ssm::types::CommandFilter;
use std::collections::{BTreeSet, HashMap};

/// Invoked after `invoked_after_epoch`; not by document: a run's commands run
/// AWS-RunPatchBaseline or AWS-RunPatchBaselineWithHooks, and a filter names one document
/// (the callers pick their own commands by ID).
fn filters(invoked_after_epoch: i64) -> Result<Vec<CommandFilter>> {
    Ok(vec![crate::fleet::invoked_after(invoked_after_epoch)?])
}

/// The progress of each of `wanted` among the commands invoked after `invoked_after_epoch`: pages of 50 until every wanted command is seen or the listing ends
/// (Run Command lists newest first, so the commands in flight are usually all on the first
/// page, however many the location sent before them).
pub async fn command_progress(
    client: &aws_sdk_ssm::Client,
    wanted: &BTreeSet<String>,
    invoked_after_epoch: i64,
) -> Result<HashMap<String, CommandProgress>> {
    let mut out = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_commands()
            .set_filters(Some(filters(invoked_after_epoch)?))
            .max_results(50)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| from_sdk("ssm:ListCommands", e))?;
        for c in page.commands.unwrap_or_default() {
            let Some(id) = c.command_id.filter(|id| wanted.contains(id)) else {
                continue;
            };
            let count = |n: i32| u64::try_from(n).unwrap_or(0);
            let progress = CommandProgress {
                target: count(c.target_count),
                completed: count(c.completed_count),
                errors: count(c.error_count),
                status: c.status.map(|s| s.as_str().to_string()).unwrap_or_default(),
                details: c.status_details.unwrap_or_default(),
                requested: c.requested_date_time.map(|t| t.secs()),
            };
            out.insert(id, progress);
        }
        token = page.next_token.filter(|t| !t.is_empty());
        if token.is_none() || out.len() == wanted.len() {
            return Ok(out);
        }
    }
}

/// The invocations of every command invoked after `invoked_after_epoch` (Run Command's
/// clock), by command and instance, all pages: one listing in place of a
/// ListCommandInvocations per command. Without details: a failed hooks invocation's step is
/// read with its command ([`crate::fleet::list_invocations`]).
pub async fn invocations_since(
    client: &aws_sdk_ssm::Client,
    invoked_after_epoch: i64,
) -> Result<HashMap<String, HashMap<String, InvocationStatus>>> {
    let mut out: HashMap<String, HashMap<String, InvocationStatus>> = HashMap::new();
    let mut pages = client
        .list_command_invocations()
        .set_filters(Some(filters(invoked_after_epoch)?))
        .max_results(50)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| from_sdk("ssm:ListCommandInvocations", e))?;
        for inv in page.command_invocations.unwrap_or_default() {
            let (Some(cmd), Some(id)) = (inv.command_id, inv.instance_id) else {
                continue;
            };
            let status = inv
                .status
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            let details = inv.status_details.unwrap_or_default();
            let state = map_invocation_status(&status, &details);
            out.entry(cmd).or_default().insert(
                id,
                InvocationStatus {
                    status,
                    details,
                    state,
                },
            );
        }
    }
    Ok(out)
}
