//! plan: OU resolution (nested OUs, a suspended account, excludes), the run record, the
//! "run started" event, and rejection of bad input with nothing dispatched.

use crate::util::*;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemInput, PutItemOutput};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
use aws_sdk_eventbridge::operation::put_events::{PutEventsInput, PutEventsOutput};
use aws_sdk_organizations::operation::list_accounts_for_parent::{
    ListAccountsForParentError, ListAccountsForParentOutput,
};
use aws_sdk_organizations::operation::list_children::ListChildrenOutput;
use aws_sdk_organizations::types::error::ParentNotFoundException;
use aws_sdk_organizations::types::{Account, AccountStatus, Child, ChildType};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use fleetpatch::config::Config;
use fleetpatch::error::Error;
use fleetpatch::plan::Planner;
use fleetpatch::task::PlanRequest;
use serde_json::{json, Value};

struct World {
    planner: Planner,
    puts: Captured<PutItemInput>,
    events: Captured<PutEventsInput>,
    org_rules: Vec<Rule>,
    rules: Vec<Rule>,
}

/// The organization: ou-root-aaaaaaaa holds 333333333333 (ACTIVE), 444444444444 (SUSPENDED)
/// and the child OU ou-root-bbbbbbbb, which holds 555555555555 and 666666666666.
fn world() -> World {
    world_with(None)
}

/// The same world, with a run item already in the table (a retried plan).
fn world_with(existing: Option<Item>) -> World {
    let puts = Captured::default();
    let events = Captured::default();
    let p = puts.clone();
    let e = events.clone();
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .then_compute_output(move |_| GetItemOutput::builder().set_item(existing.clone()).build());
    let put = mock!(aws_sdk_dynamodb::Client::put_item).then_compute_output(move |req| {
        p.push(req.clone());
        PutItemOutput::builder().build()
    });
    let batch = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let ev = mock!(aws_sdk_eventbridge::Client::put_events).then_compute_output(move |req| {
        e.push(req.clone());
        PutEventsOutput::builder().failed_entry_count(0).build()
    });
    let accounts = mock!(aws_sdk_organizations::Client::list_accounts_for_parent)
        .then_compute_response(|req| {
            let acct = |id: &str, st: AccountStatus| Account::builder().id(id).status(st).build();
            match req.parent_id().unwrap_or_default() {
                "ou-root-aaaaaaaa" => aws_smithy_mocks::MockResponse::Output(
                    ListAccountsForParentOutput::builder()
                        .accounts(acct("333333333333", AccountStatus::Active))
                        .accounts(acct("444444444444", AccountStatus::Suspended))
                        .build(),
                ),
                "ou-root-bbbbbbbb" => aws_smithy_mocks::MockResponse::Output(
                    ListAccountsForParentOutput::builder()
                        .accounts(acct("555555555555", AccountStatus::Active))
                        .accounts(acct("666666666666", AccountStatus::Active))
                        .build(),
                ),
                _ => aws_smithy_mocks::MockResponse::Error(
                    ListAccountsForParentError::ParentNotFoundException(
                        ParentNotFoundException::builder()
                            .message(
                                "We can't find a root or OU with the ParentId that you specified.",
                            )
                            .build(),
                    ),
                ),
            }
        });
    let children = mock!(aws_sdk_organizations::Client::list_children).then_compute_output(|req| {
        let mut b = ListChildrenOutput::builder();
        if req.parent_id() == Some("ou-root-aaaaaaaa") {
            b = b.children(
                Child::builder()
                    .id("ou-root-bbbbbbbb")
                    .r#type(ChildType::OrganizationalUnit)
                    .build(),
            );
        }
        b.build()
    });
    let org_rules = vec![accounts, children];
    let rules = vec![get, put, batch, ev];
    let planner = Planner {
        config: Config::for_tests(),
        store: store(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules)),
        orgs: mock_client!(aws_sdk_organizations, RuleMode::MatchAny, &org_rules),
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, &rules),
    };
    World {
        planner,
        puts,
        events,
        org_rules,
        rules,
    }
}

fn request(input: Value) -> PlanRequest {
    PlanRequest {
        input,
        execution_name: Some(RUN.into()),
    }
}

#[tokio::test]
async fn ous_resolve_to_active_accounts_below_them_minus_excludes() {
    // GIVEN an OU with a nested OU, a suspended account, an excluded account and a duplicate
    let w = world();
    let input = json!({
        "operation": "Install",
        "resourceGroup": "patch-group-a",
        "accounts": ["ou-root-aaaaaaaa", "777777777777", "555555555555"],
        "excludeAccounts": ["666666666666"],
        "regions": ["us-east-1", "eu-west-1"],
        "locationConcurrency": "50%"
    });
    // WHEN the run is planned
    let resp = w.planner.handle(request(input)).await.unwrap();
    // THEN the locations are the 3 remaining accounts x 2 Regions, each once
    assert_eq!(
        resp.locations,
        vec![
            "333333333333/us-east-1",
            "333333333333/eu-west-1",
            "555555555555/us-east-1",
            "555555555555/eu-west-1",
            "777777777777/us-east-1",
            "777777777777/eu-west-1",
        ]
    );
    assert_eq!(resp.location_concurrency, 3, "50% of 6");
    // AND the run record names the skipped accounts with their reasons, and a generated snapshot
    let run = &w.puts.all()[0];
    let item = run.item().unwrap();
    assert_eq!(item["status"].as_s().unwrap(), "Running");
    let skipped: Value = serde_json::from_str(item["skippedAccounts"].as_s().unwrap()).unwrap();
    assert_eq!(
        skipped,
        json!([
            {"account": "444444444444", "reason": "SUSPENDED"},
            {"account": "666666666666", "reason": "excluded"}
        ])
    );
    let stored: Value = serde_json::from_str(item["input"].as_s().unwrap()).unwrap();
    assert_eq!(
        stored["snapshotId"].as_str().unwrap().len(),
        36,
        "one snapshot ID generated for the run"
    );
    // AND a "Patch Run Started" event went out
    let sent = w.events.all();
    let ev = &sent[0].entries()[0];
    assert_eq!(ev.detail_type(), Some("Patch Run Started"));
    assert_eq!(ev.source(), Some("fleetpatch"));
}

#[tokio::test]
async fn bad_input_is_rejected_with_every_field_named_and_recorded() {
    // GIVEN an input with four bad fields
    let w = world();
    let input = json!({
        "operation": "Patch",
        "resourceGroup": "patch-group-a",
        "accounts": ["12345"],
        "regions": ["us-east-1"],
        "targetConcurrency": "0%",
        "rebootOption": "Always"
    });
    // WHEN the run is planned
    let err = w.planner.handle(request(input)).await.unwrap_err();
    // THEN one InvalidInput error names each field and its rule
    assert!(matches!(err, Error::InvalidInput(_)));
    assert_eq!(err.error_type(), "InvalidInput");
    let msg = err.to_string();
    for f in [
        "operation",
        "accounts[0]",
        "targetConcurrency",
        "rebootOption",
    ] {
        assert!(msg.contains(f), "{f} missing from {msg}");
    }
    // AND the run is recorded as Rejected with its reasons, Organizations was never asked,
    // and the completed event says Rejected
    let item = w.puts.all()[0].item().unwrap().clone();
    assert_eq!(item["status"].as_s().unwrap(), "Rejected");
    assert_eq!(item["rejectReasons"].as_l().unwrap().len(), 4);
    assert!(w.org_rules.iter().all(|r| r.num_calls() == 0));
    let sent = w.events.all();
    let ev = &sent[0].entries()[0];
    assert_eq!(ev.detail_type(), Some("Patch Run Completed"));
    assert!(ev.detail().unwrap().contains("Rejected"));
}

#[tokio::test]
async fn an_unknown_ou_is_bad_input() {
    let w = world();
    let input = json!({
        "operation": "Scan", "resourceGroup": "g",
        "accounts": ["111111111111", "ou-nope-cccccccc"], "regions": ["us-east-1"]
    });
    let err = w.planner.handle(request(input)).await.unwrap_err();
    assert_eq!(err.error_type(), "InvalidInput");
    assert!(err.to_string().contains("accounts[1]"), "{err}");
    assert_eq!(
        w.puts.all()[0].item().unwrap()["status"].as_s().unwrap(),
        "Rejected"
    );
}

#[tokio::test]
async fn more_locations_than_a_state_payload_holds_are_refused() {
    // GIVEN 1,000 accounts x 10 Regions = 10,000 locations (the limit is 9,000)
    let w = world();
    let accounts: Vec<String> = (0..1000)
        .map(|i| format!("{:012}", 100_000_000_000u64 + i))
        .collect();
    let regions = [
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "eu-west-1",
        "eu-west-2",
        "eu-central-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-northeast-1",
    ];
    let input = json!({"operation": "Scan", "resourceGroup": "g", "accounts": accounts, "regions": regions});
    // WHEN the run is planned
    let err = w.planner.handle(request(input)).await.unwrap_err();
    // THEN it is rejected, naming the count and the limit
    assert_eq!(err.error_type(), "InvalidInput");
    assert!(err.to_string().contains("10000 locations"), "{err}");
    assert!(err.to_string().contains("9000"), "{err}");
}

#[tokio::test]
async fn a_retried_plan_answers_from_the_first_attempts_record() {
    // GIVEN a run already recorded by a first attempt (its snapshot ID is fixed)
    let w = world_with(Some(run_item("Running", json!({}), Some(0))));
    let input = run_input(json!({"snapshotId": null, "regions": [REGION, "eu-west-1"]}));
    // WHEN plan is invoked again for the same execution
    let resp = w.planner.handle(request(input)).await.unwrap();
    // THEN it answers with the recorded run's locations, writes them again, creates nothing
    assert_eq!(resp.locations, vec![LOC.to_string()]);
    assert!(w.puts.all().is_empty(), "no new run item");
    assert_eq!(w.rules[2].num_calls(), 1, "locations written again");
}

#[tokio::test]
async fn a_plan_overtaken_by_its_own_retry_answers_from_the_retrys_record_and_announces_nothing() {
    // GIVEN a plan that timed out and is still running: when it reads, the run does not
    // exist; by the time it writes the run, its retry has recorded it (and announced it)
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .sequence()
        .output(|| GetItemOutput::builder().build())
        .output(|| {
            GetItemOutput::builder()
                .set_item(Some(run_item("Running", json!({}), Some(0))))
                .build()
        })
        .repeatedly()
        .build();
    let put = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
            aws_sdk_dynamodb::types::error::ConditionalCheckFailedException::builder().build(),
        )
    });
    let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .then_output(|| TransactWriteItemsOutput::builder().build());
    let ev = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let planner = Planner {
        config: Config::for_tests(),
        store: store(mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&get, &put, &tx]
        )),
        orgs: mock_client!(
            aws_sdk_organizations,
            RuleMode::MatchAny,
            Vec::<&Rule>::new()
        ),
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ev]),
    };
    let input = run_input(json!({"regions": [REGION, "eu-west-1"]}));
    // WHEN it goes on
    let resp = planner.handle(request(input)).await.unwrap();
    // THEN it answers with the recorded run's locations, and sends no second "started" event
    assert_eq!(resp.locations, vec![LOC.to_string()]);
    assert_eq!(ev.num_calls(), 0);
}
