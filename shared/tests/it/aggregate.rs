//! aggregate: compliance read in batches of 50 for the instances that ran, the summary,
//! the final status and the "run completed" event.

use crate::util::*;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsInput, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::operation::update_item::{UpdateItemInput, UpdateItemOutput};
use aws_sdk_eventbridge::operation::put_events::{PutEventsInput, PutEventsOutput};
use aws_sdk_ssm::operation::describe_instance_patch_states::DescribeInstancePatchStatesOutput;
use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput;
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_sdk_ssm::types::{
    Command, CommandInvocation, CommandInvocationStatus, InstancePatchState, PatchOperationType,
};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use fleetpatch::aggregate::Aggregator;
use fleetpatch::config::Config;
use fleetpatch::model::{
    Compliance, InstanceState, Location, LocationOutcome, LocationRecord, Phase, RunStatus,
};
use fleetpatch::report::RunSummary;
use fleetpatch::store::items;
use fleetpatch::task::{AggregateRequest, CaughtError};
use serde_json::json;

fn request() -> AggregateRequest {
    AggregateRequest {
        run_id: RUN.into(),
        records_only: false,
        error: None,
        execution_ended: None,
    }
}

fn done_location(account: &str, outcome: &str, counts: &[(&str, u64)]) -> Item {
    let mut l = LocationRecord::pending(Location::new(account, REGION));
    l.phase = Phase::Done;
    l.outcome = Some(outcome.parse().unwrap());
    l.targeted = counts.iter().map(|(_, v)| v).sum();
    l.counts = counts
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), *v))
        .collect();
    items::location_item(RUN, &l).unwrap()
}

/// The table as aggregate sees it: one run item in `run_status`, the given location items,
/// and the same instance items (and batch items) for every location. Captures every
/// UpdateItem and TransactWriteItems.
fn table(
    run_status: &'static str,
    locations: Vec<Item>,
    instances: Vec<Item>,
) -> (Vec<Rule>, Captured<UpdateItemInput>) {
    let (rules, updates, _) = table_tx(run_status, locations, instances);
    (rules, updates)
}

fn table_tx(
    run_status: &'static str,
    locations: Vec<Item>,
    instances: Vec<Item>,
) -> (
    Vec<Rule>,
    Captured<UpdateItemInput>,
    Captured<TransactWriteItemsInput>,
) {
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_output(move || {
        GetItemOutput::builder()
            .set_item(Some(run_item(run_status, json!({}), Some(0))))
            .build()
    });
    let query = mock!(aws_sdk_dynamodb::Client::query).then_compute_output(move |req| {
        let pk = req.expression_attribute_values().unwrap()[":pk"]
            .as_s()
            .unwrap()
            .clone();
        let prefix = req
            .expression_attribute_values()
            .unwrap()
            .get(":p")
            .map(|p| p.as_s().unwrap().clone())
            .unwrap_or_default();
        let items = if pk.starts_with("RUN#") {
            // The run's partition holds its locations (and no wave: a run planned before
            // waves existed, which aggregate must still finish).
            locations
                .iter()
                .filter(|i| i["SK"].as_s().unwrap().starts_with(&prefix))
                .cloned()
                .collect()
        } else {
            instances.clone()
        };
        QueryOutput::builder().set_items(Some(items)).build()
    });
    let updates: Captured<UpdateItemInput> = Captured::default();
    let u = updates.clone();
    let update = mock!(aws_sdk_dynamodb::Client::update_item).then_compute_output(move |req| {
        u.push(req.clone());
        UpdateItemOutput::builder().build()
    });
    let transacts: Captured<TransactWriteItemsInput> = Captured::default();
    let t = transacts.clone();
    let transact =
        mock!(aws_sdk_dynamodb::Client::transact_write_items).then_compute_output(move |req| {
            t.push(req.clone());
            TransactWriteItemsOutput::builder().build()
        });
    (vec![get, query, update, transact], updates, transacts)
}

#[tokio::test]
async fn summary_compliance_and_event_for_a_run_with_a_failed_location() {
    // GIVEN a run whose first location patched 120 instances (118 succeeded, 2 failed) and
    // left 3 offline, and whose second location could not assume the role
    let all = ids(123);
    let mut instances: Vec<Item> = all[..118]
        .iter()
        .map(|i| instance_item(i, "Succeeded", None))
        .collect();
    instances.extend(
        all[118..120]
            .iter()
            .map(|i| instance_item(i, "Failed", None)),
    );
    instances.extend(all[120..].iter().map(|i| instance_item(i, "Offline", None)));
    let locations = vec![
        done_location(
            ACCOUNT,
            "CompletedWithErrors",
            &[("Succeeded", 118), ("Failed", 2), ("Offline", 3)],
        ),
        done_location("222222222222", "AccessDenied", &[]),
    ];
    let (rules, updates) = table("Running", locations, instances);
    let asked: Captured<usize> = Captured::default();
    let a = asked.clone();
    let patch = mock!(aws_sdk_ssm::Client::describe_instance_patch_states).then_compute_output(
        move |req| {
            a.push(req.instance_ids().len());
            let mut b = DescribeInstancePatchStatesOutput::builder();
            for id in req.instance_ids() {
                let failed = id.ends_with("76") || id.ends_with("77"); // 118, 119 in hex
                b = b.instance_patch_states(
                    InstancePatchState::builder()
                        .instance_id(id)
                        .patch_group("g")
                        .baseline_id("pb-0123456789abcdef0")
                        .operation(PatchOperationType::Install)
                        .operation_start_time(aws_smithy_types::DateTime::from_secs(0))
                        .operation_end_time(aws_smithy_types::DateTime::from_secs(60))
                        .installed_count(10)
                        .missing_count(if failed { 2 } else { 0 })
                        .failed_count(if failed { 1 } else { 0 })
                        .build()
                        .unwrap(),
                );
            }
            b.build()
        },
    );
    let events: Captured<PutEventsInput> = Captured::default();
    let e = events.clone();
    let ev = mock!(aws_sdk_eventbridge::Client::put_events).then_compute_output(move |req| {
        e.push(req.clone());
        PutEventsOutput::builder().failed_entry_count(0).build()
    });
    let mut factory = fixed(
        mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&patch]),
        mock_client!(
            aws_sdk_resourcegroups,
            RuleMode::MatchAny,
            Vec::<&Rule>::new()
        ),
    );
    factory.denied.insert("222222222222".into());
    let agg = Aggregator {
        config: Config::for_tests(),
        store: store(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules)),
        factory,
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ev]),
    };
    // WHEN the run is aggregated
    let summary = agg.handle(request()).await.unwrap();
    // THEN compliance was read for the 120 instances that ran, 50 at a time
    assert_eq!(asked.all(), vec![50, 50, 20]);
    assert_eq!(summary.compliance.instances, 120);
    assert_eq!(summary.compliance.compliant_instances, 118);
    assert_eq!(summary.compliance.missing, 4);
    assert_eq!(summary.compliance.installed, 1200);
    // AND the run completed with errors, with both locations counted
    assert_eq!(summary.status, RunStatus::CompletedWithErrors);
    assert_eq!(
        summary
            .location_outcomes
            .get(&LocationOutcome::AccessDenied),
        Some(&1)
    );
    assert_eq!(
        summary.instance_states.get(&InstanceState::Succeeded),
        Some(&118)
    );
    assert_eq!(summary.problem_locations.len(), 2);
    // AND the final status and summary were written to the run item
    let fin = updates
        .all()
        .into_iter()
        .find(|u| {
            u.update_expression()
                .unwrap_or_default()
                .contains("summary")
        })
        .unwrap();
    assert_eq!(
        fin.expression_attribute_values().unwrap()[":st"]
            .as_s()
            .unwrap(),
        "CompletedWithErrors"
    );
    // AND the event, as a consumer's Lambda would receive it, carries the summary
    let sent = events.all();
    let entry = &sent[0].entries()[0];
    assert_eq!(entry.detail_type(), Some("Patch Run Completed"));
    let delivered = json!({
        "version": "0", "id": "1", "detail-type": entry.detail_type(), "source": entry.source(),
        "account": "123456789012", "time": "2026-11-29T00:00:00Z", "region": "us-east-1",
        "resources": [], "detail": serde_json::from_str::<serde_json::Value>(entry.detail().unwrap()).unwrap()
    });
    let event: EventBridgeEvent<RunSummary> = serde_json::from_value(delivered).unwrap();
    assert_eq!(event.detail, summary);
}

#[tokio::test]
async fn a_stopping_run_ends_stopped_by_threshold() {
    let locations = vec![
        done_location(ACCOUNT, "AccessDenied", &[]),
        done_location("222222222222", "Skipped", &[]),
    ];
    let (rules, _updates) = table("Stopping", locations, Vec::new());
    let ev = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let agg = Aggregator {
        config: Config::for_tests(),
        store: store(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules)),
        factory: fixed(
            mock_client!(aws_sdk_ssm, RuleMode::MatchAny, Vec::<&Rule>::new()),
            mock_client!(
                aws_sdk_resourcegroups,
                RuleMode::MatchAny,
                Vec::<&Rule>::new()
            ),
        ),
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ev]),
    };
    let summary = agg.handle(request()).await.unwrap();
    assert_eq!(summary.status, RunStatus::StoppedByThreshold);
    assert_eq!(
        summary.location_outcomes.get(&LocationOutcome::Skipped),
        Some(&1)
    );
}

#[tokio::test]
async fn instances_a_failed_location_left_in_flight_get_their_last_status() {
    // GIVEN a location that ended Error with 2 instances in flight and 1 pending
    let all = ids(3);
    let instances = vec![
        instance_item(&all[0], "InFlight", Some("cmd-1")),
        instance_item(&all[1], "InFlight", Some("cmd-1")),
        instance_item(&all[2], "Pending", None),
    ];
    let locations = vec![done_location(
        ACCOUNT,
        "Error",
        &[("InFlight", 2), ("Pending", 1)],
    )];
    let (rules, updates, transacts) = table_tx("Running", locations, instances);
    let first = all[0].clone();
    let list =
        mock!(aws_sdk_ssm::Client::list_command_invocations).then_compute_output(move |_| {
            // the first one succeeded after the location failed; the second still runs
            ListCommandInvocationsOutput::builder()
                .command_invocations(
                    CommandInvocation::builder()
                        .instance_id(first.clone())
                        .status(CommandInvocationStatus::Success)
                        .status_details("Success")
                        .build(),
                )
                .build()
        });
    let patch = mock!(aws_sdk_ssm::Client::describe_instance_patch_states)
        .then_output(|| DescribeInstancePatchStatesOutput::builder().build());
    let ev = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let agg = Aggregator {
        config: Config::for_tests(),
        store: store(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules)),
        factory: fixed(
            mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&list, &patch]),
            mock_client!(
                aws_sdk_resourcegroups,
                RuleMode::MatchAny,
                Vec::<&Rule>::new()
            ),
        ),
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ev]),
    };
    // WHEN the run is aggregated
    let summary = agg.handle(request()).await.unwrap();
    // THEN the finished instance is recorded Succeeded, the pending one NotStarted, and the
    // summary counts what is now known
    let moved = |st: &str| {
        let mut v = moved_to(&updates, st);
        v.extend(transact_moved_to(&transacts, st));
        v
    };
    assert_eq!(moved("Succeeded"), vec![all[0].clone()]);
    assert_eq!(moved("NotStarted"), vec![all[2].clone()]);
    // and the run counts the two that ended
    assert_eq!(counted(&updates, &transacts, ":d"), 2);
    assert_eq!(
        summary.instance_states.get(&InstanceState::Succeeded),
        Some(&1)
    );
    assert_eq!(
        summary.instance_states.get(&InstanceState::InFlight),
        Some(&1)
    );
    assert_eq!(
        summary.instance_states.get(&InstanceState::NotStarted),
        Some(&1)
    );
    assert_eq!(summary.status, RunStatus::CompletedWithErrors);
}

/// Aggregates a run whose one location ended Error with a batch of 2 left Claimed (its send
/// never recorded) and 1 instance Pending; `listed` is what ListCommands answers.
async fn aggregate_with_a_claimed_batch(
    listed: Vec<Command>,
) -> (
    RunSummary,
    Captured<UpdateItemInput>,
    Captured<TransactWriteItemsInput>,
) {
    let all = ids(3);
    let comment = fleetpatch::comment::comment(RUN, &LOC.parse().unwrap(), 1);
    let now = fleetpatch::clock::now_epoch();
    let mut instances = vec![
        instance_item(&all[0], "Claimed", None),
        instance_item(&all[1], "Claimed", None),
        instance_item(&all[2], "Pending", None),
    ];
    instances.push(claimed_batch_item(1, &all[..2], &comment, now - 30));
    let locations = vec![done_location(
        ACCOUNT,
        "Error",
        &[("Claimed", 2), ("Pending", 1)],
    )];
    let (rules, updates, transacts) = table_tx("Running", locations, instances);
    let list_cmds = mock!(aws_sdk_ssm::Client::list_commands).then_compute_output(move |_| {
        ListCommandsOutput::builder()
            .set_commands(Some(listed.clone()))
            .build()
    });
    let list_inv = mock!(aws_sdk_ssm::Client::list_command_invocations)
        .then_output(|| ListCommandInvocationsOutput::builder().build());
    let patch = mock!(aws_sdk_ssm::Client::describe_instance_patch_states)
        .then_output(|| DescribeInstancePatchStatesOutput::builder().build());
    let ev = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let agg = Aggregator {
        config: Config::for_tests(),
        store: store(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules)),
        factory: fixed(
            mock_client!(
                aws_sdk_ssm,
                RuleMode::MatchAny,
                [&list_cmds, &list_inv, &patch]
            ),
            mock_client!(
                aws_sdk_resourcegroups,
                RuleMode::MatchAny,
                Vec::<&Rule>::new()
            ),
        ),
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ev]),
    };
    let summary = agg.handle(request()).await.unwrap();
    (summary, updates, transacts)
}

#[tokio::test]
async fn a_claimed_batch_left_by_a_failed_location_adopts_its_command() {
    // GIVEN the batch's command exists in SSM (sent to exactly its 2 instances)
    let comment = fleetpatch::comment::comment(RUN, &LOC.parse().unwrap(), 1);
    let cmd = Command::builder()
        .command_id("cmd-found")
        .comment(comment)
        .set_instance_ids(Some(ids(2)))
        .build();
    // WHEN the run is aggregated
    let (summary, updates, transacts) = aggregate_with_a_claimed_batch(vec![cmd]).await;
    // THEN the batch is recorded as sent with that command (its instances InFlight, counted
    // as sent), the pending one NotStarted, and the summary reports no Claimed instance
    let sent = transacts.all().into_iter().find(|t| {
        t.transact_items().iter().any(|i| {
            i.update
                .as_ref()
                .is_some_and(|u| sk_of(Some(&u.key)) == "BATCH#000001")
        })
    });
    assert!(sent.is_some(), "the batch was not recorded as sent");
    assert_eq!(
        transact_moved_to(&transacts, "InFlight").len(),
        0,
        "InFlight is set by the sent-record, not a move"
    );
    assert_eq!(counted(&updates, &transacts, ":s"), 2);
    assert_eq!(
        summary.instance_states.get(&InstanceState::Claimed),
        None,
        "{:?}",
        summary.instance_states
    );
    assert_eq!(
        summary.instance_states.get(&InstanceState::InFlight),
        Some(&2)
    );
    assert_eq!(
        summary.instance_states.get(&InstanceState::NotStarted),
        Some(&1)
    );
}

#[tokio::test]
async fn a_claimed_batch_left_by_a_failed_location_without_a_command_ends_not_started() {
    // GIVEN no command carries the batch's Comment (one with another Comment exists)
    let other = Command::builder()
        .command_id("cmd-other")
        .comment("someone else's")
        .set_instance_ids(Some(ids(2)))
        .build();
    // WHEN the run is aggregated
    let (summary, updates, transacts) = aggregate_with_a_claimed_batch(vec![other]).await;
    // THEN the batch is released with its 2 instances NotStarted (counted as done), as is
    // the pending one, and the summary reports no Claimed instance
    let mut not_started = transact_moved_to(&transacts, "NotStarted");
    not_started.extend(moved_to(&updates, "NotStarted"));
    not_started.sort();
    assert_eq!(not_started, ids(3), "the batch's two and the pending one");
    let released = transacts.all().into_iter().any(|t| {
        t.transact_items().iter().any(|i| {
            i.update.as_ref().is_some_and(|u| {
                sk_of(Some(&u.key)) == "BATCH#000001"
                    && u.expression_attribute_values
                        .as_ref()
                        .and_then(|v| v.get(":rel"))
                        .is_some()
            })
        })
    });
    assert!(released, "the batch was not released");
    assert_eq!(counted(&updates, &transacts, ":d"), 3);
    assert_eq!(
        summary.instance_states.get(&InstanceState::Claimed),
        None,
        "{:?}",
        summary.instance_states
    );
    assert_eq!(
        summary.instance_states.get(&InstanceState::NotStarted),
        Some(&3)
    );
}

#[tokio::test]
async fn a_run_finished_and_announced_by_another_attempt_is_not_announced_again() {
    // GIVEN a run that another attempt of aggregate (the retry of this timed-out one) has
    // already finished and announced
    let locations = vec![done_location(ACCOUNT, "AccessDenied", &[])];
    let (rules, _updates) = table("Running", locations, Vec::new());
    let refused = mock!(aws_sdk_dynamodb::Client::update_item)
        .match_requests(|req| {
            req.update_expression()
                .is_some_and(|e| e.contains("finishedAt"))
        })
        .then_error(|| {
            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                aws_sdk_dynamodb::types::error::ConditionalCheckFailedException::builder().build(),
            )
        });
    let announced = mock!(aws_sdk_dynamodb::Client::get_item)
        .match_requests(|req| req.projection_expression() == Some("completedEventAt"))
        .then_output(|| {
            GetItemOutput::builder()
                .item("completedEventAt", s("2026-11-30T12:00:00Z"))
                .build()
        });
    let mut all = vec![refused, announced];
    all.extend(rules);
    let ev = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let agg = Aggregator {
        config: Config::for_tests(),
        store: store(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &all)),
        factory: fixed(
            mock_client!(aws_sdk_ssm, RuleMode::MatchAny, Vec::<&Rule>::new()),
            mock_client!(
                aws_sdk_resourcegroups,
                RuleMode::MatchAny,
                Vec::<&Rule>::new()
            ),
        ),
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ev]),
    };
    // WHEN this attempt finishes late
    agg.handle(request()).await.unwrap();
    // THEN it sends no second "Patch Run Completed" event
    assert_eq!(ev.num_calls(), 0);
}

/// An aggregator over `rules` whose SSM answers DescribeInstancePatchStates with one
/// compliant state per instance and records how many instances each call asked about.
fn aggregator(
    rules: &[Rule],
    asked: Captured<usize>,
) -> Aggregator<fleetpatch::clients::FixedClients> {
    let patch = mock!(aws_sdk_ssm::Client::describe_instance_patch_states).then_compute_output(
        move |req| {
            asked.push(req.instance_ids().len());
            DescribeInstancePatchStatesOutput::builder().build()
        },
    );
    let ev = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    Aggregator {
        config: Config::for_tests(),
        store: store(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules)),
        factory: fixed(
            mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&patch]),
            mock_client!(
                aws_sdk_resourcegroups,
                RuleMode::MatchAny,
                Vec::<&Rule>::new()
            ),
        ),
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ev]),
    }
}

#[tokio::test]
async fn a_retried_aggregate_skips_locations_an_earlier_attempt_finished() {
    // GIVEN a location whose compliance an earlier attempt (one that then timed out) recorded
    let mut loc = LocationRecord::pending(LOC.parse().unwrap());
    loc.phase = Phase::Done;
    loc.outcome = Some(LocationOutcome::Succeeded);
    loc.targeted = 3;
    loc.counts = [(InstanceState::Succeeded, 3)].into();
    loc.compliance = Some(Compliance {
        instances: 3,
        compliant_instances: 3,
        installed: 30,
        ..Compliance::default()
    });
    let instances = ids(3)
        .iter()
        .map(|i| instance_item(i, "Succeeded", None))
        .collect();
    let (rules, _) = table(
        "Running",
        vec![items::location_item(RUN, &loc).unwrap()],
        instances,
    );
    let asked = Captured::default();
    // WHEN the retry aggregates the run
    let summary = aggregator(&rules, asked.clone())
        .handle(request())
        .await
        .unwrap();
    // THEN it does not read that location's compliance again, and reports what was recorded
    assert_eq!(asked.all(), Vec::<usize>::new());
    assert_eq!(summary.compliance.installed, 30);
    assert_eq!(summary.status, RunStatus::Succeeded);
}

/// A running run whose one location the Map never settled: 2 instances Pending, the third
/// InFlight (`cmd-1`). Answers the table's rules, its captured transactions and the IDs.
fn unsettled_location() -> (Vec<Rule>, Captured<TransactWriteItemsInput>, Vec<String>) {
    let mut loc = LocationRecord::pending(LOC.parse().unwrap());
    loc.phase = Phase::Dispatching;
    loc.targeted = 3;
    loc.counts = [(InstanceState::Pending, 2), (InstanceState::InFlight, 1)].into();
    let all = ids(3);
    let instances = vec![
        instance_item(&all[0], "Pending", None),
        instance_item(&all[1], "Pending", None),
        instance_item(&all[2], "InFlight", Some("cmd-1")),
    ];
    let (rules, _, transacts) = table_tx(
        "Running",
        vec![items::location_item(RUN, &loc).unwrap()],
        instances,
    );
    (rules, transacts, all)
}

#[tokio::test]
async fn after_aggregate_failed_for_good_the_run_still_ends_from_its_records() {
    // GIVEN a location the Map never settled, with 2 instances Pending and 1 in flight
    let (rules, transacts, all) = unsettled_location();
    let asked = Captured::default();
    // WHEN the state machine's fallback asks for the run to be finished from the table alone
    let req = AggregateRequest {
        records_only: true,
        error: Some(CaughtError {
            error: "Sandbox.Timedout".into(),
            cause: "Task timed out after 900.00 seconds".into(),
        }),
        ..request()
    };
    let summary = aggregator(&rules, asked.clone()).handle(req).await.unwrap();
    // THEN no target account was called, the pending instances ended NotStarted, and the run
    // has a final status whose summary says what was not read, and why
    assert_eq!(asked.all(), Vec::<usize>::new());
    let mut retired = transact_moved_to(&transacts, "NotStarted");
    retired.sort();
    assert_eq!(retired, all[..2].to_vec());
    assert_eq!(summary.status, RunStatus::CompletedWithErrors);
    let why = summary.not_read.unwrap_or_default();
    assert!(
        why.contains("Sandbox.Timedout") && why.contains("compliance"),
        "{why}"
    );
    assert_eq!(
        summary.instance_states.get(&InstanceState::NotStarted),
        Some(&2)
    );
}

#[tokio::test]
async fn an_execution_stopped_in_the_console_still_ends_the_run_cancelled() {
    // GIVEN a location the Map never settled, with 2 instances Pending and 1 in flight
    let (rules, transacts, all) = unsettled_location();
    let asked = Captured::default();
    // WHEN the EventBridge rule says its execution was stopped (ABORTED)
    let req = AggregateRequest {
        execution_ended: Some("ABORTED".into()),
        ..request()
    };
    let summary = aggregator(&rules, asked.clone()).handle(req).await.unwrap();
    // THEN no target account was called, the pending instances ended NotStarted, and the run
    // ended Cancelled, its summary saying the execution was stopped and what was not read
    assert_eq!(asked.all(), Vec::<usize>::new());
    let mut retired = transact_moved_to(&transacts, "NotStarted");
    retired.sort();
    assert_eq!(retired, all[..2].to_vec());
    assert_eq!(summary.status, RunStatus::Cancelled);
    let why = summary.not_read.unwrap_or_default();
    assert!(
        why.contains("ABORTED") && why.contains("compliance"),
        "{why}"
    );
}
