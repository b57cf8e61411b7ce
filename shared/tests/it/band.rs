//! dispatch's bounded read (issue 8): a round reads the band after the location's settled
//! prefix, never the settled instances, and still counts them (errors, the threshold).

use crate::dispatch::{dispatcher, dynamo, send_ok, task};
use crate::util::*;
use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput;
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use fleetpatch::model::{BatchRecord, BatchState};
use fleetpatch::store::items;
use serde_json::json;

/// A location item carrying a watermark: every instance through `through` settled, with
/// `counts`, and batches read from `batches_from`.
fn location_with_mark(
    window: u64,
    tolerated: Option<u64>,
    through: &str,
    counts: &[(&str, u64)],
    batches_from: u64,
) -> Item {
    let mut l = location_item(window, tolerated);
    l.insert("settledThrough".into(), s(through));
    let m = counts.iter().map(|(k, v)| (k.to_string(), n(*v))).collect();
    l.insert(
        "settledCounts".into(),
        aws_sdk_dynamodb::types::AttributeValue::M(m),
    );
    l.insert("batchesFrom".into(), n(batches_from));
    l
}

fn sent_batch(seq: u64, ids: &[String]) -> Item {
    let b = BatchRecord {
        seq,
        instance_ids: ids.to_vec(),
        comment: format!("c{seq}"),
        claimed_at: 1,
        state: BatchState::Sent,
        command_id: Some(format!("cmd-old-{seq}")),
    };
    items::batch_item(RUN, &LOC.parse().unwrap(), &b)
}

fn quiet_ssm(sent: Captured<Vec<String>>) -> aws_sdk_ssm::Client {
    let send = send_ok(sent);
    let list = mock!(aws_sdk_ssm::Client::list_commands)
        .then_output(|| ListCommandsOutput::builder().build());
    let invocations = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .then_output(|| ListCommandInvocationsOutput::builder().build());
    mock_client!(
        aws_sdk_ssm,
        RuleMode::MatchAny,
        [&send, &list, &invocations]
    )
}

#[tokio::test]
async fn a_round_reads_no_settled_instance_or_batch() {
    // GIVEN 600 instances: the first 400 settled (batches 1-8, under the watermark), 10 in
    // flight in batch 9, 190 pending; a window of 20
    let all = ids(600);
    let mut rows: Vec<Item> = Vec::new();
    for (k, id) in all.iter().enumerate() {
        rows.push(match k {
            0..400 => instance_item(id, "Succeeded", None),
            400..410 => instance_item(id, "InFlight", Some("cmd-old-9")),
            _ => instance_item(id, "Pending", None),
        });
    }
    for seq in 1..=9u64 {
        let from = (seq as usize - 1) * 50;
        let to = if seq == 9 { 410 } else { from + 50 };
        rows.push(sent_batch(seq, &all[from..to]));
    }
    let loc = location_with_mark(20, None, &all[399], &[("Succeeded", 400)], 9);
    let (db, seen, _r) = dynamo(run_item("Running", json!({}), None), loc, rows, false);
    let sent = Captured::default();
    // WHEN one dispatch round runs
    dispatcher(db, quiet_ssm(sent.clone()))
        .handle(task())
        .await
        .unwrap();
    // THEN no Query returned a settled instance or a batch below the watermark
    let read: Vec<String> = seen.reads.all().concat();
    for id in &all[..400] {
        assert!(!read.contains(&format!("INST#{id}")), "{id} was read");
    }
    assert!(!read
        .iter()
        .any(|sk| sk.as_str() < "BATCH#000009" && sk.starts_with("BATCH#")));
    // AND it read the band only: the 10 in flight and a page of pending, not the whole tail
    let instances = read.iter().filter(|sk| sk.starts_with("INST#")).count();
    assert!(instances <= 10 + 100, "read {instances} instances");
    // AND the window was filled from the pending ones, in ID order
    assert_eq!(sent.all().concat(), all[410..420].to_vec());
}

#[tokio::test]
async fn settled_errors_count_toward_the_threshold_and_every_pending_instance_retires() {
    // GIVEN 3 Failed instances under the watermark (2 tolerated), and 250 pending after it:
    // more than one band page
    let all = ids(253);
    let rows: Vec<Item> = all
        .iter()
        .enumerate()
        .map(|(k, id)| match k {
            0..3 => instance_item(id, "Failed", None),
            _ => instance_item(id, "Pending", None),
        })
        .collect();
    let loc = location_with_mark(1, Some(2), &all[2], &[("Failed", 3)], 1);
    let (db, seen, _r) = dynamo(run_item("Running", json!({}), Some(2)), loc, rows, false);
    let sent = Captured::default();
    // WHEN one dispatch round runs
    let out = dispatcher(db, quiet_ssm(sent.clone()))
        .handle(task())
        .await
        .unwrap();
    // THEN nothing was sent, and all 250 pending instances (the unread tail too) end NotStarted
    assert!(sent.all().is_empty());
    let mut retired = seen.moved_to("NotStarted");
    retired.sort();
    assert_eq!(retired, all[3..].to_vec());
    // AND the location finished over the threshold
    assert!(out.done);
}
