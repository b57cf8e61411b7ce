//! dispatch: sliding window, chunking, eventual consistency, throttling, idempotence,
//! recovery of an unrecorded send, and the error threshold.

use crate::util::*;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsInput, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::operation::update_item::{UpdateItemInput, UpdateItemOutput};
use aws_sdk_dynamodb::types::error::TransactionCanceledException;
use aws_sdk_dynamodb::types::CancellationReason;
use aws_sdk_ssm::operation::list_command_invocations::{
    ListCommandInvocationsError, ListCommandInvocationsOutput,
};
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
use aws_sdk_ssm::types::error::InvalidCommandId;
use aws_sdk_ssm::types::{Command, CommandInvocation, CommandInvocationStatus};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use fleetpatch::config::Config;
use fleetpatch::dispatch::Dispatcher;
use fleetpatch::model::{
    BatchRecord, BatchState, InstanceRecord, InstanceState, LocationOutcome, LocationRecord, Phase,
};
use fleetpatch::store::items;
use fleetpatch::task::LocationTask;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the DynamoDB mock saw.
#[derive(Clone, Default)]
pub(crate) struct Seen {
    transacts: Captured<Vec<String>>,
    pub(crate) inputs: Captured<TransactWriteItemsInput>,
    updates: Captured<UpdateItemInput>,
    /// The SK of every item each Query returned.
    pub(crate) reads: Captured<Vec<String>>,
}

/// Answers a Query as DynamoDB does: the items whose SK its key condition admits (every one
/// when it names PK only), in SK order, from after its ExclusiveStartKey, at most Limit.
fn query_range(items: &[Item], req: &QueryInput, reads: &Captured<Vec<String>>) -> QueryOutput {
    let value = |k: &str| {
        req.expression_attribute_values()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_s().ok())
            .cloned()
    };
    let bounds = req
        .key_condition_expression()
        .unwrap_or_default()
        .contains("BETWEEN")
        .then(|| {
            (
                value(":lo").unwrap_or_default(),
                value(":hi").unwrap_or_default(),
            )
        });
    let prefix = value(":p").unwrap_or_default();
    let after = req.exclusive_start_key().map(|k| sk_of(Some(k)));
    let mut admitted: Vec<&Item> = items
        .iter()
        .filter(|i| {
            let sk = sk_of(Some(i));
            let inside = bounds
                .as_ref()
                .is_none_or(|(lo, hi)| *lo <= sk && sk <= *hi);
            inside && sk.starts_with(&prefix) && after.as_ref().is_none_or(|a| sk > *a)
        })
        .collect();
    admitted.sort_by_key(|i| sk_of(Some(i)));
    let limit = req.limit().map_or(usize::MAX, |l| l as usize);
    let more = admitted.len() > limit;
    admitted.truncate(limit);
    reads.push(admitted.iter().map(|i| sk_of(Some(i))).collect());
    let last = admitted.last().map(|i| (*i).clone());
    let page: Vec<Item> = admitted.into_iter().cloned().collect();
    let mut out = QueryOutput::builder().set_items(Some(page));
    if let (true, Some(last)) = (more, last) {
        let key = ["PK", "SK"].map(|k| (k.to_string(), last[k].clone()));
        out = out.set_last_evaluated_key(Some(key.into_iter().collect()));
    }
    out.build()
}

impl Seen {
    /// Instance IDs moved to `state` by conditional writes (single or in a transaction).
    pub(crate) fn moved_to(&self, state: &str) -> Vec<String> {
        let mut ids = moved_to(&self.updates, state);
        ids.extend(transact_moved_to(&self.inputs, state));
        ids
    }

    /// What the writes added to the run's `instancesDone` / `instancesSent`.
    fn counted_done(&self) -> u64 {
        counted(&self.updates, &self.inputs, ":d")
    }
    fn counted_sent(&self) -> u64 {
        counted(&self.updates, &self.inputs, ":s")
    }
}

/// A DynamoDB mock holding one run, one location and the given location items.
/// `claims_fail`: every transaction is cancelled by a failed condition.
pub(crate) fn dynamo(
    run: Item,
    loc: Item,
    items: Vec<Item>,
    claims_fail: bool,
) -> (aws_sdk_dynamodb::Client, Seen, Vec<Rule>) {
    let cancel = claims_fail.then_some((&["ConditionalCheckFailed"][..], usize::MAX));
    dynamo_with(run, loc, items, cancel)
}

/// Like [`dynamo`], with the first `cancel.1` transactions cancelled with the reasons
/// `cancel.0` (`ConditionalCheckFailed`, `TransactionConflict`, ...), one per item named.
fn dynamo_with(
    run: Item,
    loc: Item,
    items: Vec<Item>,
    cancel: Option<(&'static [&'static str], usize)>,
) -> (aws_sdk_dynamodb::Client, Seen, Vec<Rule>) {
    let seen = Seen::default();
    let cancelled = Arc::new(AtomicU64::new(0));
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_compute_output(move |req| {
        let item = if sk_of(req.key()) == "RUN" {
            run.clone()
        } else {
            loc.clone()
        };
        GetItemOutput::builder().set_item(Some(item)).build()
    });
    let reads = seen.reads.clone();
    let query = mock!(aws_sdk_dynamodb::Client::query)
        .then_compute_output(move |req| query_range(&items, req, &reads));
    let seq = Arc::new(AtomicU64::new(0));
    let updates = seen.updates.clone();
    let update = mock!(aws_sdk_dynamodb::Client::update_item).then_compute_output(move |req| {
        updates.push(req.clone());
        if req
            .update_expression()
            .unwrap_or_default()
            .contains("nextBatch")
        {
            let next = seq.fetch_add(1, Ordering::SeqCst) + 1;
            UpdateItemOutput::builder()
                .attributes("nextBatch", n(next))
                .build()
        } else {
            UpdateItemOutput::builder().build()
        }
    });
    let transacts = seen.transacts.clone();
    let inputs = seen.inputs.clone();
    let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_compute_response(move |req| {
        inputs.push(req.clone());
        // Record which sort keys each transaction touched.
        let keys = req
            .transact_items()
            .iter()
            .map(|t| match (&t.put, &t.update) {
                (Some(p), _) => sk_of(Some(&p.item)),
                (_, Some(u)) => sk_of(Some(&u.key)),
                _ => String::new(),
            })
            .collect();
        transacts.push(keys);
        match cancel {
            Some((reasons, times)) if (cancelled.fetch_add(1, Ordering::SeqCst) as usize) < times => {
                let mut e = TransactionCanceledException::builder().message(format!(
                    "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                    reasons.join(", ")
                ));
                for r in reasons {
                    e = e.cancellation_reasons(CancellationReason::builder().code(*r).build());
                }
                aws_smithy_mocks::MockResponse::Error(
                    TransactWriteItemsError::TransactionCanceledException(e.build()),
                )
            }
            _ => aws_smithy_mocks::MockResponse::Output(TransactWriteItemsOutput::builder().build()),
        }
    });
    let rules = vec![get, query, update, transact];
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules);
    (client, seen, rules)
}

pub(crate) fn dispatcher(
    dynamo: aws_sdk_dynamodb::Client,
    ssm: aws_sdk_ssm::Client,
) -> Dispatcher<fleetpatch::clients::FixedClients> {
    let groups = mock_client!(
        aws_sdk_resourcegroups,
        RuleMode::MatchAny,
        Vec::<&Rule>::new()
    );
    Dispatcher {
        config: Config::for_tests(),
        store: store(dynamo),
        factory: fixed(ssm, groups),
        alarms: no_alarms(),
    }
}

pub(crate) fn task() -> LocationTask {
    LocationTask {
        run_id: RUN.into(),
        location: LOC.into(),
        ..LocationTask::default()
    }
}

pub(crate) fn send_ok(sent: Captured<Vec<String>>) -> Rule {
    let counter = Arc::new(AtomicU64::new(0));
    mock!(aws_sdk_ssm::Client::send_command).then_compute_output(move |req| {
        sent.push(req.instance_ids().to_vec());
        let c = counter.fetch_add(1, Ordering::SeqCst);
        SendCommandOutput::builder()
            .command(Command::builder().command_id(format!("cmd-{c}")).build())
            .build()
    })
}

#[tokio::test]
async fn sends_a_full_window_in_chunks_of_50() {
    // GIVEN 120 pending instances and a window of 120
    let items: Vec<Item> = ids(120)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(120, None),
        items,
        false,
    );
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    // WHEN dispatch runs once
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN three commands of 50, 50 and 20 instances went out, every instance once
    let sizes: Vec<usize> = sent.all().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![50, 50, 20]);
    let mut all: Vec<String> = sent.all().concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 120);
    // each batch was claimed (batch item + its instances) before it was sent, then recorded
    let claims: Vec<Vec<String>> = seen
        .transacts
        .all()
        .into_iter()
        .filter(|t| t[0].starts_with("BATCH#"))
        .collect();
    assert_eq!(claims.len(), 6, "3 claims and 3 sent-records");
    assert_eq!(claims[0].len(), 51);
    assert!(!out.done);
    assert_eq!(out.wait_seconds, Config::for_tests().poll_seconds);
    // AND the round is counted: the first of its poll segment, which goes on
    assert_eq!((out.rounds, out.segment_end), (1, false));
}

#[tokio::test]
async fn window_of_12_sends_only_the_free_slots() {
    // GIVEN 120 instances, targetConcurrency 10% -> window 12, and 9 already in flight
    let mut items: Vec<Item> = Vec::new();
    for (i, id) in ids(120).iter().enumerate() {
        items.push(if i < 9 {
            instance_item(id, "InFlight", Some("cmd-old"))
        } else {
            instance_item(id, "Pending", None)
        });
    }
    let (db, _seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(12, None),
        items,
        false,
    );
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let list = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .then_output(|| ListCommandInvocationsOutput::builder().build());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send, &list]);
    // WHEN dispatch runs
    dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN exactly 3 more instances were sent, so 12 are in flight
    assert_eq!(sent.all().concat().len(), 3);
}

#[tokio::test]
async fn invocations_not_yet_visible_keep_instances_in_flight() {
    // GIVEN 5 instances just sent, and Run Command not knowing the command yet
    let items: Vec<Item> = ids(5)
        .iter()
        .map(|i| instance_item(i, "InFlight", Some("cmd-1")))
        .collect();
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(5, None),
        items,
        false,
    );
    let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_error(|| {
        ListCommandInvocationsError::InvalidCommandId(InvalidCommandId::builder().build())
    });
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .then_output(|| SendCommandOutput::builder().build());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &send]);
    // WHEN dispatch runs
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN nothing failed, nothing was re-sent, the location is not done
    assert!(!out.done);
    assert_eq!(send.num_calls(), 0);
    assert_eq!(list.num_calls(), 1);
    assert!(seen.moved_to("Failed").is_empty());
}

#[tokio::test]
async fn invocation_does_not_exist_right_after_send_command_is_not_a_failure() {
    // GIVEN 4 instances just sent, and Run Command answering InvocationDoesNotExist
    let items: Vec<Item> = ids(4)
        .iter()
        .map(|i| instance_item(i, "InFlight", Some("cmd-1")))
        .collect();
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(4, None),
        items,
        false,
    );
    let list = mock!(aws_sdk_ssm::Client::list_command_invocations).then_error(|| {
        ListCommandInvocationsError::generic(
            ErrorMetadata::builder()
                .code("InvocationDoesNotExist")
                .message("The command invocation does not exist yet")
                .build(),
        )
    });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list]);
    // WHEN dispatch runs
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN the instances stay in flight and the location waits
    assert!(!out.done);
    assert!(out.outcome.is_none());
    assert!(seen.moved_to("Failed").is_empty());
    assert!(seen.moved_to("Pending").is_empty());
}

#[tokio::test]
async fn a_throttled_send_is_released_and_sent_on_the_next_round() {
    // GIVEN 10 pending instances and SendCommand throttled once, then accepted
    let items: Vec<Item> = ids(10)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(10, None),
        items,
        false,
    );
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .sequence()
        .error(|| {
            SendCommandError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        })
        .output(|| {
            SendCommandOutput::builder()
                .command(Command::builder().command_id("cmd-ok").build())
                .build()
        })
        .build();
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    let d = dispatcher(db, ssm);
    // WHEN dispatch runs twice
    let first = d.handle(task()).await.unwrap();
    // THEN the first round released its claim (batch -> Released) and asked to come back
    assert!(!first.done);
    assert_eq!(send.num_calls(), 1);
    let transacts = seen.transacts.all();
    assert_eq!(transacts.len(), 2, "one claim, one release: {transacts:?}");
    assert_eq!(
        transacts[1].len(),
        11,
        "the release covers the batch and its 10 instances"
    );
    let second = d.handle(task()).await.unwrap();
    assert!(!second.done);
    assert_eq!(send.num_calls(), 2, "the second round sent the command");
}

#[tokio::test]
async fn a_repeated_invocation_never_sends_twice() {
    // GIVEN instances that a previous invocation already claimed (the claim's condition fails)
    let items: Vec<Item> = ids(10)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, _seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(10, None),
        items,
        true,
    );
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    // WHEN dispatch runs
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN no command was sent
    assert_eq!(send.num_calls(), 0);
    assert!(!out.done);
}

#[tokio::test]
async fn an_unrecorded_send_is_recovered_by_its_comment() {
    // GIVEN a batch claimed 10 s ago whose SendCommand answer was lost
    let batch_ids = ids(3);
    let comment = fleetpatch::comment::comment(RUN, &LOC.parse().unwrap(), 1);
    let now = fleetpatch::clock::now_epoch();
    let mut items: Vec<Item> = batch_ids
        .iter()
        .map(|i| instance_item(i, "Claimed", None))
        .collect();
    items.push(claimed_batch_item(1, &batch_ids, &comment, now - 10));
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(3, None),
        items,
        false,
    );
    let c2 = comment.clone();
    let list_cmds = mock!(aws_sdk_ssm::Client::list_commands).then_compute_output(move |req| {
        // not filtered by document: a run's commands run either patching document
        assert!(req
            .filters()
            .iter()
            .all(|f| f.key().as_str() == "InvokedAfter"));
        ListCommandsOutput::builder()
            .commands(
                Command::builder()
                    .command_id("cmd-other")
                    .comment("someone else's")
                    .build(),
            )
            .commands(
                Command::builder()
                    .command_id("cmd-lost")
                    .comment(c2.clone())
                    .set_instance_ids(Some(ids(3)))
                    .build(),
            )
            .build()
    });
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .then_output(|| SendCommandOutput::builder().build());
    let list_inv = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .then_output(|| ListCommandInvocationsOutput::builder().build());
    let ssm = mock_client!(
        aws_sdk_ssm,
        RuleMode::MatchAny,
        [&list_cmds, &send, &list_inv]
    );
    // WHEN dispatch runs
    dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN the command was found and recorded as the batch's (batch, its 3 instances, and
    // the run's instancesSent in one transaction); nothing was sent again
    assert_eq!(send.num_calls(), 0);
    let t = seen.transacts.all();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0][0], "BATCH#000001");
    assert_eq!(t[0].len(), 5);
    assert_eq!(seen.counted_sent(), 3);
}

#[tokio::test]
async fn a_command_with_the_batch_comment_but_other_instances_is_not_adopted() {
    // GIVEN a batch of 3 claimed 10 s ago, and SSM listing a command with the batch's
    // Comment that was sent to other instances
    let batch_ids = ids(3);
    let comment = fleetpatch::comment::comment(RUN, &LOC.parse().unwrap(), 1);
    let now = fleetpatch::clock::now_epoch();
    let mut items: Vec<Item> = batch_ids
        .iter()
        .map(|i| instance_item(i, "Claimed", None))
        .collect();
    items.push(claimed_batch_item(1, &batch_ids, &comment, now - 10));
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(3, None),
        items,
        false,
    );
    let c2 = comment.clone();
    let list_cmds = mock!(aws_sdk_ssm::Client::list_commands).then_compute_output(move |_| {
        ListCommandsOutput::builder()
            .commands(
                Command::builder()
                    .command_id("cmd-not-ours")
                    .comment(c2.clone())
                    .instance_ids(ids(5)[4].clone())
                    .instance_ids(ids(3)[0].clone())
                    .build(),
            )
            .build()
    });
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .then_output(|| SendCommandOutput::builder().build());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list_cmds, &send]);
    // WHEN dispatch runs
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN the batch is not recorded as sent with that command, nothing is sent, and the
    // claim waits (its instances hold their slot) until the grace period ends
    assert!(
        seen.transacts.all().is_empty(),
        "{:?}",
        seen.transacts.all()
    );
    assert_eq!(send.num_calls(), 0);
    assert!(!out.done);
}

/// A SendCommand answer with an HTTP status and an awsJson error body.
fn send_answering(status: u16, code: &str) -> Rule {
    let body = format!(r#"{{"__type":"{code}","message":"injected"}}"#);
    mock!(aws_sdk_ssm::Client::send_command)
        .sequence()
        .http_status(status, Some(body))
        .repeatedly()
        .build()
}

async fn one_round_with_send_answering(status: u16, code: &str) -> (Seen, Rule, LocationTask) {
    let items: Vec<Item> = ids(3)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(3, None),
        items,
        false,
    );
    let send = send_answering(status, code);
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    let out = dispatcher(db, ssm)
        .handle(task())
        .await
        .expect("a 5xx from SendCommand is not the location's error");
    (seen, send, out)
}

#[tokio::test]
async fn a_send_command_answered_500_keeps_its_claim() {
    // GIVEN 3 pending instances and SendCommand answering HTTP 500 InternalServerError
    // (which does not prove the command was not made)
    // WHEN dispatch runs
    let (seen, send, out) = one_round_with_send_answering(500, "InternalServerError").await;
    // THEN the command was tried once, the batch stays Claimed (no release, nothing back to
    // Pending), so the next round looks for it by its Comment instead of sending again
    assert_eq!(send.num_calls(), 1);
    let t = seen.transacts.all();
    assert_eq!(t.len(), 1, "only the claim: {t:?}");
    assert!(seen.moved_to("Pending").is_empty());
    assert!(!out.done);
}

#[tokio::test]
async fn a_send_command_answered_503_keeps_its_claim() {
    // GIVEN SendCommand answering HTTP 503 ServiceUnavailable
    let (seen, send, out) = one_round_with_send_answering(503, "ServiceUnavailable").await;
    // THEN as with a 500: one attempt, the claim kept
    assert_eq!(send.num_calls(), 1);
    assert_eq!(seen.transacts.all().len(), 1);
    assert!(seen.moved_to("Pending").is_empty());
    assert!(!out.done);
}

#[tokio::test]
async fn a_send_command_refused_with_a_4xx_is_released() {
    // GIVEN SendCommand answering HTTP 400 InvalidParameters (proof that nothing was made)
    let items: Vec<Item> = ids(3)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(3, None),
        items,
        false,
    );
    let send = send_answering(400, "InvalidParameters");
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    // WHEN dispatch runs
    let out = dispatcher(db, ssm).handle(task()).await;
    // THEN the claim was released (instances back to Pending) and the location fails
    assert!(out.is_err());
    assert_eq!(seen.moved_to("Pending").len(), 3);
}

#[tokio::test]
async fn a_round_that_fails_part_way_has_counted_every_instance_it_recorded() {
    // GIVEN 4 instances in flight on two commands; the first command's two instances
    // have succeeded, and listing the second command's invocations is throttled
    let all = ids(4);
    let items: Vec<Item> = all
        .iter()
        .enumerate()
        .map(|(i, id)| instance_item(id, "InFlight", Some(if i < 2 { "cmd-a" } else { "cmd-b" })))
        .collect();
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(4, None),
        items,
        false,
    );
    let done = all[..2].to_vec();
    // (commands are followed in ID order: cmd-a, then cmd-b)
    let list = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .sequence()
        .output(move || {
            let mut b = ListCommandInvocationsOutput::builder();
            for id in &done {
                b = b.command_invocations(
                    CommandInvocation::builder()
                        .instance_id(id.clone())
                        .status(CommandInvocationStatus::Success)
                        .status_details("Success")
                        .build(),
                );
            }
            b.build()
        })
        .error(|| {
            ListCommandInvocationsError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list]);
    // WHEN dispatch runs (and fails part-way, to be retried)
    let out = dispatcher(db, ssm).handle(task()).await;
    // THEN the round failed as transient, the two finished instances are recorded, and the
    // run's instancesDone counts exactly them
    assert!(
        matches!(out, Err(fleetpatch::error::Error::Transient { .. })),
        "{out:?}"
    );
    let mut recorded = seen.moved_to("Succeeded");
    recorded.sort();
    assert_eq!(recorded, all[..2].to_vec());
    assert_eq!(seen.counted_done(), 2);
}

#[tokio::test]
async fn past_the_threshold_nothing_new_starts_and_in_flight_ones_finish() {
    // GIVEN 2 failed, 3 in flight, 5 pending, 1 error tolerated
    let all = ids(10);
    let mut items = Vec::new();
    for (i, id) in all.iter().enumerate() {
        items.push(match i {
            0 | 1 => instance_item(id, "Failed", None),
            2..=4 => instance_item(id, "InFlight", Some("cmd-1")),
            _ => instance_item(id, "Pending", None),
        });
    }
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(10, Some(1)),
        items,
        false,
    );
    let (a, b) = (all[2].clone(), all[3].clone());
    let list =
        mock!(aws_sdk_ssm::Client::list_command_invocations).then_compute_output(move |_| {
            // one in-flight instance succeeds, one fails, one is still running
            ListCommandInvocationsOutput::builder()
                .command_invocations(
                    CommandInvocation::builder()
                        .instance_id(a.clone())
                        .status(CommandInvocationStatus::Success)
                        .status_details("Success")
                        .build(),
                )
                .command_invocations(
                    CommandInvocation::builder()
                        .instance_id(b.clone())
                        .status(CommandInvocationStatus::Failed)
                        .status_details("Failed")
                        .build(),
                )
                .build()
        });
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .then_output(|| SendCommandOutput::builder().build());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &send]);
    // WHEN dispatch runs
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN nothing was sent, the 5 pending became NotStarted, the finished ones were recorded,
    // and the location waits for its last in-flight instance
    assert_eq!(send.num_calls(), 0);
    assert_eq!(seen.moved_to("NotStarted"), all[5..].to_vec());
    assert_eq!(seen.moved_to("Succeeded"), vec![all[2].clone()]);
    assert_eq!(seen.moved_to("Failed"), vec![all[3].clone()]);
    assert!(!out.done);
}

#[tokio::test]
async fn a_location_whose_instances_all_finished_reports_its_outcome() {
    let all = ids(4);
    let items = vec![
        instance_item(&all[0], "Succeeded", None),
        instance_item(&all[1], "Failed", None),
        instance_item(&all[2], "NotStarted", None),
        instance_item(&all[3], "Offline", None),
    ];
    let (db, _seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(2, Some(0)),
        items,
        false,
    );
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, Vec::<&Rule>::new());
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    assert!(out.done);
    assert_eq!(out.outcome, Some(LocationOutcome::ThresholdExceeded));
    assert!(out.reason.unwrap().contains("targetErrorThreshold"));
}

#[tokio::test]
async fn every_terminal_status_is_read_from_list_command_invocations() {
    use aws_sdk_ssm::types::CommandInvocationStatus as S;
    let cases = [
        (S::Success, "Success", "Succeeded"),
        (S::Failed, "Failed", "Failed"),
        (S::TimedOut, "Execution Timed Out", "ExecutionTimedOut"),
        (S::TimedOut, "Delivery Timed Out", "DeliveryTimedOut"),
        (S::Failed, "Undeliverable", "Undeliverable"),
        (S::Failed, "Invalid Platform", "InvalidPlatform"),
        (S::Failed, "Access Denied", "AccessDenied"),
        (S::Cancelled, "Cancelled", "Cancelled"),
        (S::Cancelled, "Terminated", "Terminated"),
    ];
    let all = ids(cases.len());
    let items: Vec<Item> = all
        .iter()
        .map(|i| instance_item(i, "InFlight", Some("cmd-1")))
        .collect();
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(20, None),
        items,
        false,
    );
    let ids2 = all.clone();
    let cases2 = cases.clone();
    let list =
        mock!(aws_sdk_ssm::Client::list_command_invocations).then_compute_output(move |_| {
            let mut b = ListCommandInvocationsOutput::builder();
            for (i, (st, det, _)) in cases2.iter().enumerate() {
                b = b.command_invocations(
                    CommandInvocation::builder()
                        .instance_id(ids2[i].clone())
                        .status(st.clone())
                        .status_details(*det)
                        .build(),
                );
            }
            b.build()
        });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list]);
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    for (i, (_, _, want)) in cases.iter().enumerate() {
        assert_eq!(seen.moved_to(want), vec![all[i].clone()], "{want}");
    }
    assert!(out.done);
    assert_eq!(out.outcome, Some(LocationOutcome::CompletedWithErrors));
}

#[tokio::test]
async fn an_instance_someone_else_recorded_is_neither_recorded_again_nor_counted() {
    // GIVEN 3 instances in flight on one command, all succeeded; another invocation has
    // already recorded the second one (its condition fails in the first transaction)
    let all = ids(3);
    let items: Vec<Item> = all
        .iter()
        .map(|id| instance_item(id, "InFlight", Some("cmd-1")))
        .collect();
    let (_db, _seen, rules) = dynamo(
        run_item("Running", json!({}), None),
        location_item(3, None),
        items,
        false,
    );
    let tried: Captured<TransactWriteItemsInput> = Captured::default();
    let t = tried.clone();
    let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .then_compute_response(move |req| {
            t.push(req.clone());
            if t.all().len() == 1 {
                let reason = |code: &str| CancellationReason::builder().code(code).build();
                aws_smithy_mocks::MockResponse::Error(
                    TransactWriteItemsError::TransactionCanceledException(
                        TransactionCanceledException::builder()
                            .message("Transaction cancelled, please refer cancellation reasons for specific reasons [None, ConditionalCheckFailed, None, None]")
                            .cancellation_reasons(reason("None"))
                            .cancellation_reasons(reason("ConditionalCheckFailed"))
                            .cancellation_reasons(reason("None"))
                            .cancellation_reasons(reason("None"))
                            .build(),
                    ),
                )
            } else {
                aws_smithy_mocks::MockResponse::Output(TransactWriteItemsOutput::builder().build())
            }
        });
    let mut with_conflict = vec![transact];
    with_conflict.extend(rules);
    let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &with_conflict);
    let ids2 = all.clone();
    let list =
        mock!(aws_sdk_ssm::Client::list_command_invocations).then_compute_output(move |_| {
            let mut b = ListCommandInvocationsOutput::builder();
            for id in &ids2 {
                b = b.command_invocations(
                    CommandInvocation::builder()
                        .instance_id(id.clone())
                        .status(CommandInvocationStatus::Success)
                        .status_details("Success")
                        .build(),
                );
            }
            b.build()
        });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list]);
    // WHEN dispatch runs
    dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN the retried transaction records only the first and third, and counts 2
    let attempts = tried.all();
    assert_eq!(attempts.len(), 2, "one cancelled, one retried");
    let retried = Captured::default();
    retried.push(attempts[1].clone());
    let mut moved = transact_moved_to(&retried, "Succeeded");
    moved.sort();
    assert_eq!(moved, vec![all[0].clone(), all[2].clone()]);
    assert_eq!(counted(&Captured::default(), &retried, ":d"), 2);
}

/// How many times `code` appears in `message`, as a whole word.
fn times_named(message: &str, code: &str) -> usize {
    message
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| *w == code)
        .count()
}

#[tokio::test]
async fn a_refused_send_names_the_error_code_once() {
    // GIVEN 10 pending instances and SendCommand refused by IAM
    let items: Vec<Item> = ids(10)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, _seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(10, None),
        items,
        false,
    );
    let denied = "User: arn:aws:sts::111111111111:assumed-role/Exec/run-0001 is not authorized to perform: ssm:SendCommand";
    let send = mock!(aws_sdk_ssm::Client::send_command).then_error(move || {
        SendCommandError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message(denied)
                .build(),
        )
    });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    // WHEN dispatch runs
    let err = dispatcher(db, ssm).handle(task()).await.unwrap_err();
    // THEN the location's error names the operation, the code once and IAM's message
    let message = err.to_string();
    assert_eq!(err.error_type(), "AwsError");
    assert_eq!(
        message,
        format!("ssm:SendCommand failed: AccessDeniedException: {denied}")
    );
}

#[tokio::test]
async fn a_refused_execution_role_names_the_error_code_once() {
    // GIVEN a location whose execution role cannot be assumed during dispatch
    let (db, _seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(10, None),
        Vec::new(),
        false,
    );
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, Vec::<&Rule>::new());
    let mut d = dispatcher(db, ssm);
    d.factory.denied.insert(ACCOUNT.into());
    // WHEN dispatch runs
    let err = d.handle(task()).await.unwrap_err();
    // THEN the error names the role, STS's code once and its message
    let message = err.to_string();
    assert_eq!(times_named(&message, "AccessDenied"), 1, "{message}");
    assert!(message.contains(":role/"), "{message}");
    assert!(
        message.contains("not authorized to perform sts:AssumeRole"),
        "{message}"
    );
}

#[tokio::test]
async fn a_lasting_transaction_conflict_is_transient_and_sends_nothing() {
    // GIVEN every transaction collides with another writer's
    let items: Vec<Item> = ids(4)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, _seen, _r) = dynamo_with(
        run_item("Running", json!({}), None),
        location_item(4, None),
        items,
        Some((&["None", "TransactionConflict"][..], usize::MAX)),
    );
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    // WHEN dispatch runs
    let err = dispatcher(db, ssm).handle(task()).await.unwrap_err();
    // THEN it fails as Transient (the state machine retries it; the location is not an
    // Error), and nothing was sent
    assert_eq!(err.error_type(), "Transient", "{err}");
    assert!(sent.all().is_empty());
}

#[tokio::test]
async fn a_round_overtaken_by_a_later_round_does_not_overwrite_its_progress() {
    // GIVEN a location whose progress a later-started round has already written (the
    // conditional write of this round's counts is refused), e.g. an invocation that timed out
    // and kept running beside its retry
    let items: Vec<Item> = ids(2)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (_db, _seen, rules) = dynamo(
        run_item("Running", json!({}), None),
        location_item(2, None),
        items,
        false,
    );
    let tried: Captured<UpdateItemInput> = Captured::default();
    let t = tried.clone();
    let refuse = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| {
            req.update_expression()
                .is_some_and(|e| e.contains("counts"))
        })
        .then_compute_response(move |req| {
            t.push(req.clone());
            aws_smithy_mocks::MockResponse::Error(
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                    aws_sdk_dynamodb::types::error::ConditionalCheckFailedException::builder()
                        .message("The conditional request failed")
                        .build(),
                ),
            )
        });
    let mut all_rules = vec![refuse];
    all_rules.extend(rules);
    let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &all_rules);
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    let before = fleetpatch::clock::now_epoch_ms();
    // WHEN dispatch runs
    let out = dispatcher(db, ssm).handle(task()).await;
    // THEN the round answers normally; its write was conditional on being the newer view
    assert!(out.is_ok(), "{out:?}");
    let w = tried.all();
    assert_eq!(w.len(), 1);
    assert_eq!(
        w[0].condition_expression(),
        Some("attribute_not_exists(progressFrom) OR progressFrom < :from")
    );
    let from: i64 = w[0].expression_attribute_values().unwrap()[":from"]
        .as_n()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        from >= before,
        "the round's start, taken before it read the items"
    );
}

#[tokio::test]
async fn a_transaction_conflict_on_the_claim_is_retried_and_the_batch_sent() {
    // GIVEN 4 pending instances, and a claim that collides once with another writer's
    // transaction (DynamoDB cancels it with TransactionConflict)
    let items: Vec<Item> = ids(4)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, _seen, _r) = dynamo_with(
        run_item("Running", json!({}), None),
        location_item(4, None),
        items,
        Some((&["None", "TransactionConflict"][..], 1)),
    );
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    // WHEN dispatch runs
    let out = dispatcher(db, ssm).handle(task()).await;
    // THEN the conflict was retried like a throttle: the batch went out, once
    let out = out.expect("a transaction conflict is not an error");
    assert!(!out.done);
    assert_eq!(sent.all(), vec![ids(4)]);
}

/// Location items for commands in flight, each `(seq, command, instance indexes)` of
/// `ids(n)` from a batch claimed a minute ago, and `pending` more instances waiting.
fn commands_in_flight(cmds: &[(u64, &str, std::ops::Range<usize>)], pending: usize) -> Vec<Item> {
    let n = cmds.iter().map(|(_, _, r)| r.end).max().unwrap_or(0);
    let all = ids(n + pending);
    let loc: fleetpatch::model::Location = LOC.parse().unwrap();
    let claimed_at = fleetpatch::clock::now_epoch() - 60;
    let mut items: Vec<Item> = Vec::new();
    for (seq, cmd, range) in cmds {
        let members = &all[range.clone()];
        for id in members {
            let mut r = InstanceRecord::new(id, InstanceState::InFlight);
            r.command_id = Some(cmd.to_string());
            r.batch = Some(*seq);
            r.ssm_status = Some("InProgress".into());
            r.status_details = Some("In Progress".into());
            items.push(items::instance_item(RUN, &loc, &r));
        }
        let b = BatchRecord {
            seq: *seq,
            instance_ids: members.to_vec(),
            comment: format!("c{seq}"),
            claimed_at,
            state: BatchState::Sent,
            command_id: Some(cmd.to_string()),
        };
        items.push(items::batch_item(RUN, &loc, &b));
    }
    items.extend(all[n..].iter().map(|id| instance_item(id, "Pending", None)));
    items
}

/// ListCommands listing `(command, target, completed, errors, status)`, each requested
/// `at` + its index; the filters of every request asked are kept in `listed`.
fn listing(
    cmds: &'static [(&'static str, i32, i32, i32, &'static str)],
    listed: Captured<String>,
) -> Rule {
    mock!(aws_sdk_ssm::Client::list_commands).then_compute_output(move |req| {
        listed.push(format!("{:?}", req.filters()));
        let mut out = ListCommandsOutput::builder();
        for (i, (id, target, done, errors, status)) in cmds.iter().enumerate() {
            out = out.commands(
                Command::builder()
                    .command_id(*id)
                    .target_count(*target)
                    .completed_count(*done)
                    .error_count(*errors)
                    .status((*status).into())
                    .status_details(*status)
                    .requested_date_time(aws_smithy_types::DateTime::from_secs(1_000 + i as i64))
                    .build(),
            );
        }
        out.commands(
            Command::builder()
                .command_id("someone-elses")
                .target_count(5)
                .completed_count(5)
                .build(),
        )
        .build()
    })
}

#[tokio::test]
async fn successes_of_a_multi_instance_command_free_their_slots_unread() {
    // GIVEN a window of 4: cmd-a and cmd-b in flight with two instances each, two more
    // waiting; SSM counts both of cmd-a's final, without error, and none of cmd-b's
    let items = commands_in_flight(&[(1, "cmd-a", 0..2), (2, "cmd-b", 2..4)], 2);
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(4, None),
        items,
        false,
    );
    let listed: Captured<String> = Captured::default();
    let list_cmds = listing(
        &[
            ("cmd-a", 2, 2, 0, "Success"),
            ("cmd-b", 2, 0, 0, "InProgress"),
        ],
        listed.clone(),
    );
    let list_inv = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .then_output(|| ListCommandInvocationsOutput::builder().build());
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let ssm = mock_client!(
        aws_sdk_ssm,
        RuleMode::MatchAny,
        [&list_cmds, &list_inv, &send]
    );
    // WHEN dispatch runs a round
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN one ListCommands (invoked after the oldest claim) was the
    // round's only read: cmd-a's invocations were left unread, its instances still InFlight
    assert_eq!(listed.all().len(), 1);
    assert!(
        listed.all()[0].contains("InvokedAfter"),
        "{:?}",
        listed.all()
    );
    assert_eq!(list_inv.num_calls(), 0);
    assert!(seen.moved_to("Succeeded").is_empty());
    // AND the two slots they freed were refilled at once
    assert_eq!(sent.all(), vec![ids(6)[4..].to_vec()]);
    // AND the next round knows two were left unread
    assert_eq!(out.observed.unread, 2);
}

#[tokio::test]
async fn a_single_instance_command_that_succeeded_is_recorded_from_the_listing() {
    // GIVEN two single-instance commands in flight; SSM lists cmd-a as Success
    let items = commands_in_flight(&[(1, "cmd-a", 0..1), (2, "cmd-b", 1..2)], 0);
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(4, None),
        items,
        false,
    );
    let list_cmds = listing(
        &[
            ("cmd-a", 1, 1, 0, "Success"),
            ("cmd-b", 1, 0, 0, "InProgress"),
        ],
        Captured::default(),
    );
    let list_inv = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .then_output(|| ListCommandInvocationsOutput::builder().build());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list_cmds, &list_inv]);
    // WHEN dispatch runs a round
    dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN cmd-a's instance is recorded Succeeded without reading its invocations
    assert_eq!(seen.moved_to("Succeeded"), vec![ids(1)[0].clone()]);
    assert_eq!(seen.counted_done(), 1);
    assert_eq!(list_inv.num_calls(), 0);
}

#[tokio::test]
async fn a_large_window_lets_a_window_of_unread_instances_wait_before_a_listing() {
    // GIVEN a window of 100: three commands of 20 instances all succeeded (60 unread, more
    // than a page), and a fourth still running
    let items = commands_in_flight(
        &[
            (1, "cmd-a", 0..20),
            (2, "cmd-b", 20..40),
            (3, "cmd-c", 40..60),
            (4, "cmd-d", 60..61),
        ],
        0,
    );
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(100, None),
        items,
        false,
    );
    let list_cmds = listing(
        &[
            ("cmd-a", 20, 20, 0, "Success"),
            ("cmd-b", 20, 20, 0, "Success"),
            ("cmd-c", 20, 20, 0, "Success"),
            ("cmd-d", 1, 0, 0, "InProgress"),
        ],
        Captured::default(),
    );
    let list_inv = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .then_output(|| ListCommandInvocationsOutput::builder().build());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list_cmds, &list_inv]);
    // WHEN dispatch runs a round
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN they stay unread until a window's worth waits: a listing across commands would
    // page through the window in flight as well
    assert_eq!(list_inv.num_calls(), 0);
    assert!(seen.moved_to("Succeeded").is_empty());
    assert_eq!(out.observed.unread, 60);
}

#[tokio::test]
async fn once_nothing_runs_every_unread_instance_is_read_in_one_listing() {
    // GIVEN three commands of two instances each, all six final in SSM without error
    let items = commands_in_flight(
        &[(1, "cmd-a", 0..2), (2, "cmd-b", 2..4), (3, "cmd-c", 4..6)],
        0,
    );
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(6, None),
        items,
        false,
    );
    let list_cmds = listing(
        &[
            ("cmd-a", 2, 2, 0, "Success"),
            ("cmd-b", 2, 2, 0, "Success"),
            ("cmd-c", 2, 2, 0, "Success"),
        ],
        Captured::default(),
    );
    let asked: Captured<String> = Captured::default();
    let a = asked.clone();
    let list_inv =
        mock!(aws_sdk_ssm::Client::list_command_invocations).then_compute_output(move |req| {
            a.push(format!("{:?} {:?}", req.command_id(), req.filters()));
            let mut b = ListCommandInvocationsOutput::builder();
            for (i, id) in ids(6).iter().enumerate() {
                b = b.command_invocations(
                    CommandInvocation::builder()
                        .command_id(["cmd-a", "cmd-b", "cmd-c"][i / 2])
                        .instance_id(id.clone())
                        .status(CommandInvocationStatus::Success)
                        .status_details("Success")
                        .build(),
                );
            }
            b.build()
        });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list_cmds, &list_inv]);
    // WHEN dispatch runs a round
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN one ListCommandInvocations, for no command in particular, from the oldest of them
    assert_eq!(asked.all().len(), 1, "{:?}", asked.all());
    assert!(asked.all()[0].starts_with("None") && asked.all()[0].contains("InvokedAfter"));
    // AND all six are recorded, and the location is done
    let mut recorded = seen.moved_to("Succeeded");
    recorded.sort();
    assert_eq!(recorded, ids(6));
    assert!(out.done);
}

// -- the adaptive poll interval ---------------------------------------------------------

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A location with a window of 2 whose instances 0 and 1 are in flight in batch 1 (claimed
/// `claimed_ago` seconds ago, as `cmd-1`), and 3 more wait; `shortest` the shortest run seen
/// and `previous_round_ago` when the previous round started.
fn window_in_flight(
    claimed_ago: i64,
    shortest: Option<u64>,
    previous_round_ago: Option<i64>,
) -> (Item, Vec<Item>) {
    let mut l = LocationRecord::pending(LOC.parse().unwrap());
    l.phase = Phase::Dispatching;
    l.window = 2;
    l.shortest_run_seconds = shortest;
    l.progress_from_ms = previous_round_ago.map(|ago| (now() - ago) * 1000);
    let loc = items::location_item(RUN, &l).unwrap();

    let all = ids(5);
    let mut items: Vec<Item> = all[..2]
        .iter()
        .map(|id| {
            let mut r = InstanceRecord::new(id, InstanceState::InFlight);
            r.command_id = Some("cmd-1".into());
            r.batch = Some(1);
            r.ssm_status = Some("InProgress".into());
            r.status_details = Some("In Progress".into());
            items::instance_item(RUN, &LOC.parse().unwrap(), &r)
        })
        .collect();
    items.extend(all[2..].iter().map(|id| instance_item(id, "Pending", None)));
    let batch = BatchRecord {
        seq: 1,
        instance_ids: all[..2].to_vec(),
        comment: "c".into(),
        claimed_at: now() - claimed_ago,
        state: BatchState::Sent,
        command_id: Some("cmd-1".into()),
    };
    items.push(items::batch_item(RUN, &LOC.parse().unwrap(), &batch));
    (loc, items)
}

/// ListCommandInvocations answering `status` for instances 0 and 1 of `cmd-1`.
fn invocations(status: CommandInvocationStatus, details: &'static str) -> Rule {
    mock!(aws_sdk_ssm::Client::list_command_invocations).then_compute_output(move |_| {
        let mut b = ListCommandInvocationsOutput::builder();
        for id in &ids(2) {
            b = b.command_invocations(
                CommandInvocation::builder()
                    .instance_id(id.clone())
                    .status(status.clone())
                    .status_details(details)
                    .build(),
            );
        }
        b.build()
    })
}

#[tokio::test]
async fn a_full_window_is_not_polled_again_before_its_shortest_run() {
    // GIVEN a full window claimed 100 s ago, instances waiting for a slot, and runs of at
    // least 300 s observed in the location
    let (loc, items) = window_in_flight(100, Some(300), Some(30));
    let (db, _seen, _r) = dynamo(run_item("Running", json!({}), None), loc, items, false);
    let list = invocations(CommandInvocationStatus::InProgress, "In Progress");
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list]);
    // WHEN dispatch runs a round that sees nothing new
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN the next round comes when one of them could first end (300 - 100 - 10 s), not
    // after the configured 5 s poll
    assert!(!out.done);
    assert!(
        (188..=190).contains(&out.wait_seconds),
        "waits {} s",
        out.wait_seconds
    );
}

#[tokio::test]
async fn the_wait_follows_the_mean_run_the_rounds_observed() {
    // GIVEN a full window claimed 1,000 s ago (any instance could have ended), instances
    // waiting, no shortest run on the location, and rounds that saw 10 ends over
    // 20,000 instance-seconds in flight; the last one waited 100 s with 2 in flight
    let (loc, items) = window_in_flight(1000, None, Some(100));
    let (db, _seen, _r) = dynamo(run_item("Running", json!({}), None), loc, items, false);
    let list = invocations(CommandInvocationStatus::InProgress, "In Progress");
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list]);
    let mut t = task();
    t.wait_seconds = 100;
    t.observed = fleetpatch::poll::Observed {
        in_flight: 2,
        in_flight_seconds: 20_000,
        ended: 10,
        started: true,
        ..Default::default()
    };
    // WHEN dispatch runs a round that sees nothing end
    let out = dispatcher(db, ssm).handle(t).await.unwrap();
    // THEN the mean run is (20,000 + 2 x 100) / 10 = 2,020 s, and the next round comes
    // after twice 4.5% of it, not after the configured 5 s
    assert_eq!(out.observed.in_flight_seconds, 20_200);
    assert_eq!(out.observed.in_flight, 2);
    assert_eq!(out.wait_seconds, 2020 * 2 * 45 / 1000);
}

#[tokio::test]
async fn a_new_error_in_a_multi_instance_command_is_read_at_once() {
    // GIVEN cmd-a and cmd-b in flight with two instances each; SSM counts one of cmd-a's
    // final, as an error
    let items = commands_in_flight(&[(1, "cmd-a", 0..2), (2, "cmd-b", 2..4)], 0);
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({}), None),
        location_item(4, None),
        items,
        false,
    );
    let list_cmds = listing(
        &[
            ("cmd-a", 2, 1, 1, "InProgress"),
            ("cmd-b", 2, 0, 0, "InProgress"),
        ],
        Captured::default(),
    );
    let failed = ids(1)[0].clone();
    let list_inv =
        mock!(aws_sdk_ssm::Client::list_command_invocations).then_compute_output(move |_| {
            ListCommandInvocationsOutput::builder()
                .command_invocations(
                    CommandInvocation::builder()
                        .command_id("cmd-a")
                        .instance_id(failed.clone())
                        .status(CommandInvocationStatus::Failed)
                        .status_details("Failed")
                        .build(),
                )
                .build()
        });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list_cmds, &list_inv]);
    // WHEN dispatch runs a round
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN cmd-a is read and its failure recorded this round (the threshold counts it)
    assert_eq!(list_inv.num_calls(), 1);
    assert_eq!(seen.moved_to("Failed"), vec![ids(1)[0].clone()]);
    assert_eq!(out.observed.unread, 0);
}

#[tokio::test]
async fn with_no_run_observed_the_configured_poll_is_kept() {
    // GIVEN the same window, and no instance seen ending yet in the location
    let (loc, items) = window_in_flight(100, None, Some(30));
    let (db, _seen, _r) = dynamo(run_item("Running", json!({}), None), loc, items, false);
    let list = invocations(CommandInvocationStatus::InProgress, "In Progress");
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list]);
    // WHEN dispatch runs
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN it answers the configured poll
    assert_eq!(out.wait_seconds, Config::for_tests().poll_seconds);
}

#[tokio::test]
async fn instances_seen_ending_lower_the_shortest_run_and_their_slots_refill_promptly() {
    // GIVEN a window claimed 500 s ago, a previous round 200 s ago that saw it in flight,
    // and 900 s the shortest run so far
    let (loc, items) = window_in_flight(500, Some(900), Some(200));
    let (db, seen, _r) = dynamo(run_item("Running", json!({}), None), loc, items, false);
    let list = invocations(CommandInvocationStatus::Success, "Success");
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &send]);
    // WHEN dispatch sees both end
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();
    // THEN the shortest run becomes what they took at least: 500 - 200 = 300 s
    let lowered: Vec<String> = seen
        .updates
        .all()
        .iter()
        .filter(|u| {
            u.update_expression()
                .unwrap_or_default()
                .contains("shortestRunSeconds")
        })
        .map(|u| {
            u.expression_attribute_values().unwrap()[":v"]
                .as_n()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(lowered.len(), 1);
    let secs: i64 = lowered[0].parse().unwrap();
    assert!((299..=301).contains(&secs), "{secs} s");
    // AND the two free slots were refilled this round
    assert_eq!(sent.all().concat().len(), 2);
    // AND the next round waits until the new ones could end (300 - 10 s), no longer
    assert!(
        (288..=291).contains(&out.wait_seconds),
        "waits {} s",
        out.wait_seconds
    );
}

#[tokio::test]
async fn after_the_window_closes_nothing_new_starts_and_pending_instances_end_not_started() {
    // GIVEN a run whose window closed a minute ago: 2 instances in flight, 4 pending
    let all = ids(6);
    let mut items = Vec::new();
    for (i, id) in all.iter().enumerate() {
        items.push(if i < 2 {
            instance_item(id, "InFlight", Some("cmd-1"))
        } else {
            instance_item(id, "Pending", None)
        });
    }
    let closed = fleetpatch::clock::iso(fleetpatch::clock::now_epoch() - 60);
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({ "notAfter": closed }), None),
        location_item(6, None),
        items,
        false,
    );
    let list = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .then_output(|| ListCommandInvocationsOutput::builder().build());
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &send]);

    // WHEN dispatch runs a round
    let out = dispatcher(db, ssm).handle(task()).await.unwrap();

    // THEN no command was sent; the 4 pending ended NotStarted, "maintenance window closed";
    // the halt was recorded on the run; the in-flight ones are still followed
    assert_eq!(send.num_calls(), 0);
    assert_eq!(seen.moved_to("NotStarted"), all[2..].to_vec());
    let reasons: Vec<String> = seen
        .inputs
        .all()
        .iter()
        .flat_map(|t| t.transact_items().to_vec())
        .filter_map(|t| t.update)
        .filter_map(|u| u.expression_attribute_values?.get(":sd").cloned())
        .filter_map(|v| v.as_s().ok().cloned())
        .collect();
    assert!(
        reasons.iter().all(|r| r == "maintenance window closed") && !reasons.is_empty(),
        "{reasons:?}"
    );
    let halts: Vec<String> = seen
        .updates
        .all()
        .iter()
        .filter(|u| u.update_expression().unwrap_or_default().contains("halt"))
        .map(|u| {
            u.expression_attribute_values().unwrap()[":h"]
                .as_s()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(halts.len(), 1, "the halt is recorded once");
    assert!(halts[0].contains("windowClosed"), "{}", halts[0]);
    assert!(!out.done);
}

#[tokio::test]
async fn while_the_alarms_cannot_be_read_a_round_starts_nothing_and_retires_nothing() {
    // GIVEN a run that stops on an alarm, 4 pending instances, and CloudWatch unreachable
    let alarm = "arn:aws:cloudwatch:us-east-1:111111111111:alarm:api-5xx";
    let items: Vec<Item> = ids(4)
        .iter()
        .map(|i| instance_item(i, "Pending", None))
        .collect();
    let (db, seen, _r) = dynamo(
        run_item("Running", json!({ "stopOnAlarms": [alarm] }), None),
        location_item(4, None),
        items,
        false,
    );
    let sent = Captured::default();
    let send = send_ok(sent.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&send]);
    let mut d = dispatcher(db, ssm);
    d.alarms = unreachable_alarms();

    // WHEN dispatch runs a round
    let out = d.handle(task()).await.unwrap();

    // THEN no command went out and no instance was retired (an unknown alarm state is not
    // an all-clear, and not a halt); the read it claimed was given back for the next round
    assert_eq!(send.num_calls(), 0);
    assert!(seen.moved_to("NotStarted").is_empty());
    let expressions: Vec<String> = seen
        .updates
        .all()
        .iter()
        .map(|u| u.update_expression().unwrap_or_default().to_string())
        .collect();
    assert!(
        expressions.iter().any(|e| e.contains("SET alarmsReadAt")),
        "{expressions:?}"
    );
    assert!(
        expressions
            .iter()
            .any(|e| e.contains("REMOVE alarmsReadAt")),
        "{expressions:?}"
    );
    assert!(
        !expressions.iter().any(|e| e.contains("halt")),
        "{expressions:?}"
    );
    assert!(!out.done);
}
