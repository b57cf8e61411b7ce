//! The target-account adapter: Resource Groups and Systems Manager calls made with the
//! execution role's credentials. SDK types stop here; callers get fleetpatch's types.
//!
//! Invariants: every list follows all pages (the resource group's, a page at a time: expand
//! records each page before it asks for the next); no call carries more than [`SEND_CHUNK`]
//! instance IDs; SendCommand is never retried here (a retry after a lost answer would patch
//! twice), and its outcome says whether the command surely does not exist
//! ([`SendOutcome::Refused`]) or may ([`SendOutcome::Unknown`]).

use crate::error::{from_sdk, refused_before_effect, Error, Result};
use crate::model::{map_invocation_status, Compliance, InstanceState};
use aws_sdk_resourcegroups::types::{ResourceFilter, ResourceFilterName};
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::send_command::builders::SendCommandFluentBuilder;
use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
use aws_sdk_ssm::types::{
    CloudWatchOutputConfig, CommandFilter, CommandFilterKey, InstanceInformationStringFilter,
    InstancePatchState,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::collections::HashMap;

/// Resource types fleetpatch patches: EC2 instances and hybrid managed nodes.
pub const RESOURCE_TYPES: [&str; 2] = ["AWS::EC2::Instance", "AWS::SSM::ManagedInstance"];
pub use crate::command::{CommandSpec, Hooks, DOCUMENT, HOOKS_DOCUMENT};
pub use crate::window::SEND_CHUNK;

/// Why a group could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The group does not exist in this account and Region.
    #[error("resource group {0} not found")]
    NotFound(String),
    /// A page token given back was refused (expired, or from another listing).
    #[error("the resource group's page token was refused")]
    TokenRefused,
    #[error(transparent)]
    Other(#[from] Error),
}

/// The instance ID at the end of an EC2 instance or SSM managed-instance ARN.
pub fn instance_id_from_arn(arn: &str) -> Option<String> {
    let (_, tail) = arn.rsplit_once(':')?;
    let id = tail
        .strip_prefix("instance/")
        .or_else(|| tail.strip_prefix("managed-instance/"))?;
    (id.starts_with("i-") || id.starts_with("mi-")).then(|| id.to_string())
}

/// One page (at most 50) of a resource group's instance IDs (EC2 instances and managed nodes
/// only), from `token` (None: the first page), with the token of the next page (None after
/// the last); sorted, each ID once.
pub async fn list_group_page(
    client: &aws_sdk_resourcegroups::Client,
    group: &str,
    token: Option<&str>,
) -> std::result::Result<(Vec<String>, Option<String>), GroupError> {
    let filter = ResourceFilter::builder()
        .name(ResourceFilterName::ResourceType)
        .set_values(Some(RESOURCE_TYPES.iter().map(|s| s.to_string()).collect()))
        .build()
        .map_err(|e| Error::Record(e.to_string()))?;

    let answer = client
        .list_group_resources()
        .group(group)
        .filters(filter)
        .max_results(50)
        .set_next_token(token.map(str::to_string))
        .send()
        .await;
    let page = match answer {
        Ok(p) => p,
        Err(e) => {
            let not_found = e
                .as_service_error()
                .is_some_and(|se| se.is_not_found_exception())
                || e.code() == Some("NotFoundException");
            if not_found {
                return Err(GroupError::NotFound(group.to_string()));
            }
            if token.is_some() && e.code() == Some("BadRequestException") {
                return Err(GroupError::TokenRefused);
            }
            return Err(from_sdk("resource-groups:ListGroupResources", e).into());
        }
    };

    let mut ids: Vec<String> = page
        .resources
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r.identifier.and_then(|i| i.resource_arn))
        .filter_map(|a| instance_id_from_arn(&a))
        .collect();
    ids.sort();
    ids.dedup();
    Ok((ids, page.next_token.filter(|t| !t.is_empty())))
}

/// What SSM knows of a managed instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedInfo {
    /// Online, ConnectionLost or Inactive.
    pub ping_status: String,
    /// Linux, Windows, MacOS.
    pub platform: Option<String>,
}

/// Asks SSM which of `ids` are managed, in chunks of 50 IDs, following every page.
/// Instances SSM does not return are unknown to it (stopped, or no agent).
pub async fn describe_managed(
    client: &aws_sdk_ssm::Client,
    ids: &[String],
) -> Result<HashMap<String, ManagedInfo>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(SEND_CHUNK) {
        let filter = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .set_values(Some(chunk.to_vec()))
            .build()
            .map_err(|e| Error::Record(e.to_string()))?;

        let mut pages = client
            .describe_instance_information()
            .filters(filter)
            .max_results(50)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("ssm:DescribeInstanceInformation", e))?;
            for info in page.instance_information_list.unwrap_or_default() {
                if let Some(id) = info.instance_id {
                    out.insert(
                        id,
                        ManagedInfo {
                            ping_status: info
                                .ping_status
                                .map(|p| p.as_str().to_string())
                                .unwrap_or_default(),
                            platform: info.platform_type.map(|p| p.as_str().to_string()),
                        },
                    );
                }
            }
        }
    }
    Ok(out)
}

/// The outcome of one SendCommand attempt.
#[derive(Debug)]
pub enum SendOutcome {
    /// SSM accepted the command: its command ID.
    Sent(String),
    /// SSM answered with a refusal that proves nothing was sent (a 4xx: throttling,
    /// validation). `invalid_instances` is true when the refusal was InvalidInstanceId (some
    /// ID is no longer managed); `throttled` when the code is a throttle or another
    /// transient code (the batch can simply be sent again later).
    Refused {
        /// `code: message`.
        reason: String,
        invalid_instances: bool,
        throttled: bool,
    },
    /// No answer (timeout, lost connection), or an answer that does not prove the call had
    /// no effect (a 5xx): the command may or may not exist.
    Unknown(String),
}

/// Sends the spec's document (AWS-RunPatchBaseline, or AWS-RunPatchBaselineWithHooks with
/// hooks) to at most 50 instances, with the SDK's retries turned off:
/// a retried SendCommand after a lost answer would run the document twice. The caller
/// owns retries, through its claim records.
pub async fn send_command(
    client: &aws_sdk_ssm::Client,
    ids: &[String],
    spec: &CommandSpec,
    comment: &str,
) -> SendOutcome {
    let answer = send_command_request(client, ids, spec, comment)
        .customize()
        .config_override(
            aws_sdk_ssm::config::Config::builder()
                .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled()),
        )
        .send()
        .await;

    send_outcome(answer)
}

/// The SendCommand request: every instance at once (`MaxConcurrency` and `MaxErrors` are
/// the batch size: fleetpatch does its own rate control), output to CloudWatch Logs when a
/// log group is given.
fn send_command_request(
    client: &aws_sdk_ssm::Client,
    ids: &[String],
    spec: &CommandSpec,
    comment: &str,
) -> SendCommandFluentBuilder {
    let mut req = client
        .send_command()
        .document_name(spec.document())
        .set_instance_ids(Some(ids.to_vec()))
        .comment(comment)
        .timeout_seconds(spec.timeout_seconds)
        .max_concurrency(ids.len().max(1).to_string())
        .max_errors(ids.len().max(1).to_string());
    for (name, value) in spec.parameters() {
        req = req.parameters(name, vec![value]);
    }
    if let Some(group) = &spec.log_group {
        req = req.cloud_watch_output_config(
            CloudWatchOutputConfig::builder()
                .cloud_watch_output_enabled(true)
                .cloud_watch_log_group_name(group)
                .build(),
        );
    }
    req
}

/// Reads SendCommand's answer: a command ID, a refusal that proves nothing was sent, or
/// anything that leaves the command's existence unknown.
fn send_outcome(
    answer: std::result::Result<SendCommandOutput, SdkError<SendCommandError>>,
) -> SendOutcome {
    match answer {
        Ok(out) => match out.command.and_then(|c| c.command_id) {
            Some(id) => SendOutcome::Sent(id),
            None => SendOutcome::Unknown("SendCommand answered without a command ID".into()),
        },
        Err(e) if refused_before_effect(&e) => {
            let invalid_instances = e
                .as_service_error()
                .is_some_and(|se| se.is_invalid_instance_id());
            let code = match e.code() {
                Some(c) => c.to_string(),
                None if invalid_instances => "InvalidInstanceId".to_string(),
                None => "Unknown".to_string(),
            };
            SendOutcome::Refused {
                reason: format!("{code}: {}", e.message().unwrap_or_default()),
                invalid_instances,
                throttled: crate::error::is_transient_code(&code),
            }
        }
        Err(e) => SendOutcome::Unknown(from_sdk("ssm:SendCommand", e).to_string()),
    }
}

/// A command found by its Comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCommand {
    pub command_id: String,
    /// The instance IDs the command was sent to.
    pub instance_ids: Vec<String>,
}

/// ListCommands' filter for the commands invoked after `invoked_after_epoch`.
pub(crate) fn invoked_after(invoked_after_epoch: i64) -> Result<CommandFilter> {
    let after = aws_smithy_types::DateTime::from_secs(invoked_after_epoch)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .map_err(|e| Error::Record(e.to_string()))?;
    CommandFilter::builder()
        .key(CommandFilterKey::InvokedAfter)
        .value(after)
        .build()
        .map_err(|e| Error::Record(e.to_string()))
}

/// Every recent command of the account and Region, invoked after `invoked_after_epoch`
/// (ListCommands filters by time, all pages). Not by document: a run's commands run
/// AWS-RunPatchBaseline or AWS-RunPatchBaselineWithHooks, a filter names one document, and
/// callers pick their own commands by Comment or command ID anyway.
async fn recent_commands(
    client: &aws_sdk_ssm::Client,
    invoked_after_epoch: i64,
) -> Result<Vec<aws_sdk_ssm::types::Command>> {
    let req = client
        .list_commands()
        .max_results(50)
        .filters(invoked_after(invoked_after_epoch)?);

    let mut pages = req.into_paginator().send();
    let mut commands = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| from_sdk("ssm:ListCommands", e))?;
        commands.extend(page.commands.unwrap_or_default());
    }
    Ok(commands)
}

/// Finds the commands whose Comment is exactly `comment` among recent fleetpatch
/// commands (ListCommands filters by time, not by comment), with the instance
/// IDs each was sent to: the caller decides which, if any, is its own.
pub async fn find_commands_by_comment(
    client: &aws_sdk_ssm::Client,
    comment: &str,
    invoked_after_epoch: i64,
) -> Result<Vec<FoundCommand>> {
    let found = recent_commands(client, invoked_after_epoch)
        .await?
        .into_iter()
        .filter(|c| c.comment.as_deref() == Some(comment))
        .filter_map(|c| {
            Some(FoundCommand {
                command_id: c.command_id?,
                instance_ids: c.instance_ids.unwrap_or_default(),
            })
        })
        .collect();
    Ok(found)
}

/// One invocation's status as SSM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationStatus {
    /// SSM `Status`.
    pub status: String,
    /// SSM `StatusDetails`.
    pub details: String,
    /// fleetpatch's reading of the two.
    pub state: InstanceState,
}

/// Lists a command's invocations, following every page; a failed invocation of the hooks
/// document says which step failed (one more listing, with details, only then). Right after SendCommand Run
/// Command may not know the command yet (eventual consistency): an empty list, or
/// InvalidCommandId / InvocationDoesNotExist, is answered as "nothing yet".
pub async fn list_invocations(
    client: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Result<HashMap<String, InvocationStatus>> {
    let mut out = HashMap::new();
    let mut hooks_failed = false;
    let mut pages = client
        .list_command_invocations()
        .command_id(command_id)
        .max_results(50)
        .into_paginator()
        .send();

    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_invalid_command_id())
                    || matches!(
                        e.code(),
                        Some("InvalidCommandId" | "InvocationDoesNotExist")
                    ) =>
            {
                return Ok(out);
            }
            Err(e) => return Err(from_sdk("ssm:ListCommandInvocations", e)),
        };
        for inv in page.command_invocations.unwrap_or_default() {
            hooks_failed |= inv.document_name.as_deref() == Some(HOOKS_DOCUMENT)
                && inv.status.as_ref().is_some_and(|s| s.as_str() == "Failed");
            let Some(id) = inv.instance_id else { continue };
            let status = inv
                .status
                .map(|s| s.as_str().to_string())
                .unwrap_or_default();
            let details = inv.status_details.unwrap_or_default();
            let state = map_invocation_status(&status, &details);
            out.insert(
                id,
                InvocationStatus {
                    status,
                    details,
                    state,
                },
            );
        }
    }

    if hooks_failed {
        for (id, step) in crate::hookdocs::failed_steps(client, command_id).await? {
            if let Some(inv) = out.get_mut(&id).filter(|i| i.status == "Failed") {
                inv.details = crate::hookdocs::with_failed_step(&inv.details, &step);
            }
        }
    }
    Ok(out)
}

/// Reads patch compliance for `ids`, 50 IDs per call, following every page.
pub async fn patch_states(
    client: &aws_sdk_ssm::Client,
    ids: &[String],
) -> Result<HashMap<String, Compliance>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(SEND_CHUNK) {
        let mut pages = client
            .describe_instance_patch_states()
            .set_instance_ids(Some(chunk.to_vec()))
            .max_results(50)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("ssm:DescribeInstancePatchStates", e))?;
            for p in page.instance_patch_states.unwrap_or_default() {
                out.insert(p.instance_id.clone(), compliance_of(&p));
            }
        }
    }
    Ok(out)
}

/// One instance's compliance. It is compliant when no patch is missing, failed or waiting
/// for a reboot. Counts SSM leaves out, or gives as negative, read as 0.
fn compliance_of(p: &InstancePatchState) -> Compliance {
    let c = |v: Option<i32>| v.unwrap_or(0).max(0) as u64;
    let missing = c(Some(p.missing_count));
    let failed = c(Some(p.failed_count));
    let pending = c(p.installed_pending_reboot_count);

    Compliance {
        instances: 1,
        compliant_instances: u64::from(missing == 0 && failed == 0 && pending == 0),
        installed: c(Some(p.installed_count)),
        installed_other: c(Some(p.installed_other_count)),
        installed_pending_reboot: pending,
        missing,
        failed,
        not_applicable: c(Some(p.not_applicable_count)),
    }
}

/// After InvalidInstanceId: which of `ids` left SSM, and the state each ends in (pure).
pub fn retired_instances(
    ids: &[String],
    managed: &HashMap<String, ManagedInfo>,
) -> HashMap<String, InstanceState> {
    ids.iter()
        .filter_map(|id| match managed.get(id) {
            Some(m) if m.ping_status == "Online" => None,
            Some(_) => Some((id.clone(), InstanceState::Offline)),
            None => Some((id.clone(), InstanceState::Unmanaged)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_come_from_both_arn_kinds() {
        assert_eq!(
            instance_id_from_arn("arn:aws:ec2:us-east-1:111122223333:instance/i-0123456789abcdef0")
                .as_deref(),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(
            instance_id_from_arn(
                "arn:aws:ssm:eu-west-1:111122223333:managed-instance/mi-0123456789abcdef0"
            )
            .as_deref(),
            Some("mi-0123456789abcdef0")
        );
        assert_eq!(instance_id_from_arn("arn:aws:s3:::bucket"), None);
        assert_eq!(
            instance_id_from_arn("arn:aws:ec2:us-east-1:1:volume/vol-1"),
            None
        );
    }
}
