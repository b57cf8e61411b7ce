//! Install hooks: dispatch sends AWS-RunPatchBaselineWithHooks with the hook parameters, a
//! failed hooks invocation records its failed step, and expand ends a location whose hook
//! document cannot run there before anything is listed or sent.

use crate::dispatch::{dispatcher, dynamo, task};
use crate::util::*;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_ssm::operation::describe_document::{DescribeDocumentError, DescribeDocumentOutput};
use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput;
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types::{
    Command, CommandInvocation, CommandInvocationStatus, CommandPlugin, CommandPluginStatus,
    DocumentDescription, DocumentStatus, DocumentType,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use fleetpatch::config::Config;
use fleetpatch::expand::Expander;
use fleetpatch::model::{
    BatchRecord, BatchState, InstanceRecord, InstanceState, LocationOutcome, LocationRecord,
};
use fleetpatch::store::items;
use serde_json::{json, Value};

/// A SendCommand as sent: its document and its parameters, sorted.
type Sent = (String, Vec<(String, Vec<String>)>);

fn hooks() -> Value {
    json!({"preInstallHook": "Patch-Drain", "postInstallHook": "Patch-Check"})
}

#[tokio::test]
async fn a_run_with_hooks_sends_the_hooks_document_with_its_hooks() {
    // GIVEN a run naming both hooks, and two pending instances
    let items: Vec<Item> = ids(2)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, _seen, _r) = dynamo(
        run_item("Running", hooks(), None),
        location_item(2, None),
        items,
        false,
    );
    let sent: Captured<Sent> = Captured::default();
    let s = sent.clone();
    let send = mock!(aws_sdk_ssm::Client::send_command).then_compute_output(move |req| {
        let mut params: Vec<(String, Vec<String>)> = req
            .parameters()
            .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        params.sort();
        s.push((req.document_name().unwrap_or_default().to_string(), params));
        SendCommandOutput::builder()
            .command(Command::builder().command_id("cmd-h").build())
            .build()
    });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    // WHEN dispatch runs a round
    dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN the command runs AWS-RunPatchBaselineWithHooks with both hooks in their parameters
    let (doc, params) = sent.all().remove(0);
    assert_eq!(doc, "AWS-RunPatchBaselineWithHooks");
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        param("PreInstallHookDocName"),
        Some(vec!["Patch-Drain".into()])
    );
    assert_eq!(
        param("PostInstallHookDocName"),
        Some(vec!["Patch-Check".into()])
    );
    assert_eq!(param("InstallOverrideList"), None);
}

#[tokio::test]
async fn a_failed_hooks_invocation_records_the_step_that_failed() {
    // GIVEN one instance in flight on a hooks command, whose pre-install hook failed
    let loc = LOC.parse().unwrap();
    let id = ids(1).remove(0);
    let mut r = InstanceRecord::new(&id, InstanceState::InFlight);
    r.command_id = Some("cmd-h".into());
    r.batch = Some(1);
    let batch = BatchRecord {
        seq: 1,
        instance_ids: vec![id.clone()],
        comment: "c1".into(),
        claimed_at: fleetpatch::clock::now_epoch() - 60,
        state: BatchState::Sent,
        command_id: Some("cmd-h".into()),
    };
    let items = vec![
        items::instance_item(RUN, &loc, &r),
        items::batch_item(RUN, &loc, &batch),
    ];
    let (db, seen, _r) = dynamo(
        run_item("Running", hooks(), None),
        location_item(1, None),
        items,
        false,
    );
    let inv_id = id.clone();
    let list_inv =
        mock!(aws_sdk_ssm::Client::list_command_invocations).then_compute_output(move |req| {
            let step =
                |name: &str, status| CommandPlugin::builder().name(name).status(status).build();
            let mut inv = CommandInvocation::builder()
                .instance_id(inv_id.clone())
                .document_name("AWS-RunPatchBaselineWithHooks")
                .status(CommandInvocationStatus::Failed)
                .status_details("Failed");
            if req.details() == Some(true) {
                inv = inv
                    .command_plugins(step("Scan", CommandPluginStatus::Success))
                    .command_plugins(step("PreInstallHook", CommandPluginStatus::Failed))
                    .command_plugins(step("OnExitHook", CommandPluginStatus::Success));
            }
            ListCommandInvocationsOutput::builder()
                .command_invocations(inv.build())
                .build()
        });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list_inv]);
    // WHEN dispatch follows the command
    dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN the instance is recorded Failed, its details naming the failed step
    assert_eq!(seen.moved_to("Failed"), vec![id]);
    let details: Vec<String> = seen
        .inputs
        .all()
        .iter()
        .flat_map(|t| t.transact_items().to_vec())
        .filter_map(|t| t.update?.expression_attribute_values?.get(":sd").cloned())
        .filter_map(|v| v.as_s().ok().cloned())
        .collect();
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(
        details[0].starts_with("Failed: step PreInstallHook failed"),
        "{details:?}"
    );
    // AND the details were read with one listing more, only because an invocation failed
    assert_eq!(list_inv.num_calls(), 2);
}

/// DynamoDB answering only reads: a Running run naming both hooks, its location pending.
fn dynamo_reads() -> (aws_sdk_dynamodb::Client, Rule) {
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_compute_output(|req| {
        let item = if sk_of(req.key()) == "RUN" {
            run_item("Running", hooks(), None)
        } else {
            items::location_item(RUN, &LocationRecord::pending(LOC.parse().unwrap())).unwrap()
        };
        GetItemOutput::builder().set_item(Some(item)).build()
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get]);
    (client, get)
}

/// Expands the location with DescribeDocument answering `describe` (and the group listing
/// failing); returns the outcome (None: an error), the reason, and how often the group was
/// listed.
async fn expand_with(describe: &Rule) -> (Option<LocationOutcome>, String, usize) {
    let (db, _get) = dynamo_reads();
    let list = mock!(aws_sdk_resourcegroups::Client::list_group_resources).then_error(|| {
        aws_sdk_resourcegroups::operation::list_group_resources::ListGroupResourcesError::generic(
            ErrorMetadata::builder().code("Unexpected").build(),
        )
    });
    let groups = mock_client!(aws_sdk_resourcegroups, RuleMode::MatchAny, [&list]);
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [describe]);
    let e = Expander {
        config: Config::for_tests(),
        store: store(db),
        factory: fixed(ssm, groups),
        alarms: no_alarms(),
    };
    let (outcome, reason) = match e.handle(task()).await {
        Ok(out) => (out.outcome, out.reason.unwrap_or_default()),
        Err(err) => (None, err.to_string()),
    };
    (outcome, reason, list.num_calls())
}

#[tokio::test]
async fn a_hook_missing_in_the_location_ends_it_before_the_group_is_listed() {
    // GIVEN a location where the pre-install hook's document does not exist
    let describe = mock!(aws_sdk_ssm::Client::describe_document).then_error(|| {
        DescribeDocumentError::generic(
            ErrorMetadata::builder()
                .code("InvalidDocument")
                .message("Document with name Patch-Drain does not exist.")
                .build(),
        )
    });
    // WHEN it is expanded
    let (outcome, reason, listed) = expand_with(&describe).await;
    // THEN it ends Error, naming the document and its parameter, and nothing was listed
    assert_eq!(outcome, Some(LocationOutcome::Error));
    assert!(
        reason.contains("hook document Patch-Drain (PreInstallHookDocName) does not exist"),
        "{reason}"
    );
    assert_eq!(listed, 0);
}

#[tokio::test]
async fn a_hook_the_role_may_not_read_ends_the_location_saying_so() {
    let describe = mock!(aws_sdk_ssm::Client::describe_document).then_error(|| {
        DescribeDocumentError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not authorized to perform: ssm:DescribeDocument")
                .build(),
        )
    });
    let (outcome, reason, listed) = expand_with(&describe).await;
    assert_eq!(outcome, Some(LocationOutcome::Error));
    assert!(
        reason.contains("may not be read by the execution role"),
        "{reason}"
    );
    assert_eq!(listed, 0);
}

#[tokio::test]
async fn hooks_that_exist_let_the_expansion_go_on() {
    // GIVEN both hook documents exist as active Command documents
    let describe = mock!(aws_sdk_ssm::Client::describe_document).then_output(|| {
        DescribeDocumentOutput::builder()
            .document(
                DocumentDescription::builder()
                    .document_type(DocumentType::Command)
                    .status(DocumentStatus::Active)
                    .build(),
            )
            .build()
    });
    // WHEN the location is expanded (the group listing then fails, as mocked)
    let (outcome, _reason, listed) = expand_with(&describe).await;
    // THEN each hook was described once and the expansion went on to list the group
    assert_eq!(describe.num_calls(), 2);
    assert_eq!(listed, 1);
    assert_ne!(outcome, Some(LocationOutcome::Error));
}
