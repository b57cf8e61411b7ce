//! plan: OU resolution (nested OUs, a suspended account, excludes), the run record, the
//! "run started" event, and rejection of bad input with nothing dispatched.

use crate::util::*;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemInput, PutItemOutput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
use aws_sdk_eventbridge::operation::put_events::{PutEventsInput, PutEventsOutput};
use aws_sdk_organizations::operation::describe_account::{
    DescribeAccountError, DescribeAccountOutput,
};
use aws_sdk_organizations::operation::list_accounts_for_parent::{
    ListAccountsForParentError, ListAccountsForParentOutput,
};
use aws_sdk_organizations::operation::list_children::ListChildrenOutput;
use aws_sdk_organizations::types::error::{AccountNotFoundException, ParentNotFoundException};
use aws_sdk_organizations::types::{Account, AccountState, AccountStatus, Child, ChildType};
use aws_sdk_ssm::operation::get_parameters_by_path::GetParametersByPathOutput;
use aws_sdk_ssm::types::Parameter;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::body::SdkBody;
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
    ssm_rules: Vec<Rule>,
    rules: Vec<Rule>,
}

/// The Regions AWS lists, as SSM's public parameters give them (some real ones).
const AWS_REGIONS: [&str; 12] = [
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
    "ca-central-1",
    "sa-east-1",
];

/// `/aws/service/global-infrastructure/regions` in pages of 10, as SSM answers it.
fn region_pages() -> Rule {
    mock!(aws_sdk_ssm::Client::get_parameters_by_path).then_compute_output(|req| {
        assert_eq!(
            req.path(),
            Some("/aws/service/global-infrastructure/regions")
        );
        let start: usize = req.next_token().map_or(0, |t| t.parse().unwrap());
        let end = (start + 10).min(AWS_REGIONS.len());
        let mut out = GetParametersByPathOutput::builder();
        for r in &AWS_REGIONS[start..end] {
            out = out.parameters(
                Parameter::builder()
                    .name(format!("/aws/service/global-infrastructure/regions/{r}"))
                    .value(*r)
                    .build(),
            );
        }
        if end < AWS_REGIONS.len() {
            out = out.next_token(end.to_string());
        }
        out.build()
    })
}

/// A throttling answer as SSM sends it (awsJson1_1, HTTP 400).
fn throttled() -> HttpResponse {
    HttpResponse::new(
        400.try_into().unwrap(),
        SdkBody::from(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
    )
}

/// The organization: ou-root-aaaaaaaa holds 333333333333 (ACTIVE), 444444444444 (SUSPENDED)
/// and the child OU ou-root-bbbbbbbb, which holds 555555555555 and 666666666666. Outside
/// any OU: 8xxxxxxxxxxx (PENDING_CLOSURE), 999999999999 (SUSPENDED, as the older Status
/// field says); 121212121212 is not in the organization; every other ID is ACTIVE.
fn world() -> World {
    world_with(None)
}

/// The same world, with a run item already in the table (a retried plan).
fn world_with(existing: Option<Item>) -> World {
    world_full(existing, vec![region_pages()])
}

/// The same world, with these rules for SSM's public parameters.
fn world_full(existing: Option<Item>, ssm_rules: Vec<Rule>) -> World {
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
    let describe =
        mock!(aws_sdk_organizations::Client::describe_account).then_compute_response(|req| {
            let id = req.account_id().unwrap_or_default();
            let account = Account::builder().id(id);
            let account = match id {
                "444444444444" => account.state(AccountState::Suspended),
                id if id.starts_with('8') => account.state(AccountState::PendingClosure),
                "999999999999" => account.status(AccountStatus::Suspended),
                "121212121212" => {
                    return aws_smithy_mocks::MockResponse::Error(
                        DescribeAccountError::AccountNotFoundException(
                            AccountNotFoundException::builder()
                                .message("You specified an account that doesn't exist.")
                                .build(),
                        ),
                    )
                }
                _ => account.state(AccountState::Active),
            };
            aws_smithy_mocks::MockResponse::Output(
                DescribeAccountOutput::builder()
                    .account(account.build())
                    .build(),
            )
        });
    let org_rules = vec![accounts, children, describe];
    // A run planned before waves existed: its partition holds no wave item.
    let query = mock!(aws_sdk_dynamodb::Client::query)
        .then_output(|| QueryOutput::builder().set_items(Some(Vec::new())).build());
    let rules = vec![get, put, batch, ev, query];
    let planner = Planner {
        config: Config::for_tests(),
        store: store(mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules)),
        orgs: mock_client!(aws_sdk_organizations, RuleMode::MatchAny, &org_rules),
        ssm: mock_client!(
            aws_sdk_ssm,
            RuleMode::MatchAny,
            &ssm_rules,
            |c: aws_sdk_ssm::config::Builder| c.retry_config(
                aws_smithy_types::retry::RetryConfig::standard()
                    .with_initial_backoff(std::time::Duration::from_millis(1))
            )
        ),
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, &rules),
        alarms: no_alarms(),
    };
    World {
        planner,
        puts,
        events,
        org_rules,
        ssm_rules,
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
    // GIVEN 1,000 accounts x 10 Regions = 10,000 locations (the limit is 8,385)
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
    let cap = fleetpatch::plan::MAX_LOCATIONS.to_string();
    assert!(err.to_string().contains(&cap), "{err}");
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
async fn regions_aws_does_not_list_are_rejected_by_name_and_nothing_is_planned() {
    // GIVEN an input naming a real Region and two well-formed codes no Region has
    let w = world();
    let input = json!({
        "operation": "Install", "resourceGroup": "g", "accounts": ["111111111111"],
        "regions": ["us-east-1", "us-east-3", "eu-nowhere-1"]
    });
    // WHEN the run is planned
    let err = w.planner.handle(request(input)).await.unwrap_err();
    // THEN it is bad input naming both entries, after reading every page of AWS's list
    assert_eq!(err.error_type(), "InvalidInput");
    let msg = err.to_string();
    assert!(
        msg.contains("regions[1]: us-east-3 is not an AWS Region"),
        "{msg}"
    );
    assert!(
        msg.contains("regions[2]: eu-nowhere-1 is not an AWS Region"),
        "{msg}"
    );
    assert_eq!(w.ssm_rules[0].num_calls(), 2, "two pages of Regions");
    // AND the run is recorded Rejected: no location was written
    let item = w.puts.all()[0].item().unwrap().clone();
    assert_eq!(item["status"].as_s().unwrap(), "Rejected");
    assert_eq!(w.rules[2].num_calls(), 0, "no location written");
}

#[tokio::test]
async fn unknown_regions_and_unknown_ous_are_reported_together() {
    let w = world();
    let input = json!({
        "operation": "Scan", "resourceGroup": "g",
        "accounts": ["ou-nope-cccccccc"], "regions": ["us-east-3"]
    });
    let msg = w
        .planner
        .handle(request(input))
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("2 invalid field(s)"), "{msg}");
    assert!(
        msg.contains("regions[0]") && msg.contains("accounts[0]"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_throttled_region_list_is_retried_and_the_run_planned() {
    // GIVEN SSM throttles the first read of the Region list, then answers
    let ok = region_pages();
    let first_page = || {
        let mut out = GetParametersByPathOutput::builder().next_token("10");
        for r in &AWS_REGIONS[..10] {
            out = out.parameters(Parameter::builder().value(*r).build());
        }
        out.build()
    };
    // (a retry is answered by the same rule: the throttle, then the first page)
    let throttle = mock!(aws_sdk_ssm::Client::get_parameters_by_path)
        .sequence()
        .http_response(throttled)
        .output(first_page)
        .build();
    let w = world_full(None, vec![throttle, ok]);
    // WHEN a run over real Regions is planned
    let resp = w
        .planner
        .handle(request(run_input(json!({"regions": ["sa-east-1"]}))))
        .await
        .unwrap();
    // THEN the SDK retried and the run has its location
    assert_eq!(resp.locations, vec![format!("{ACCOUNT}/sa-east-1")]);
    assert_eq!(
        w.ssm_rules[0].num_calls(),
        2,
        "throttled, then the first page"
    );
    assert_eq!(w.ssm_rules[1].num_calls(), 1, "the second page");
}

#[tokio::test]
async fn a_region_list_ssm_cannot_serve_is_transient_and_nothing_is_recorded() {
    // GIVEN SSM answers 503 to every read of the Region list
    let down = mock!(aws_sdk_ssm::Client::get_parameters_by_path)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let w = world_full(None, vec![down]);
    // WHEN the run is planned
    let err = w
        .planner
        .handle(request(run_input(json!({}))))
        .await
        .unwrap_err();
    // THEN plan fails with Transient (the state machine retries it) and records nothing:
    // the input is not to blame
    assert_eq!(err.error_type(), "Transient", "{err}");
    assert!(err.to_string().contains("ssm:GetParametersByPath"), "{err}");
    assert!(w.puts.all().is_empty());
    assert!(w.ssm_rules[0].num_calls() >= 2, "the SDK retried");
}

#[tokio::test]
async fn accounts_named_by_id_that_are_not_active_are_skipped_and_reported() {
    // GIVEN accounts named by ID: one ACTIVE, one PENDING_CLOSURE, one SUSPENDED (by State),
    // one SUSPENDED (by the older Status), and one the organization does not hold
    let w = world();
    let input = json!({
        "operation": "Install", "resourceGroup": "g",
        "accounts": ["777777777777", "888888888888", "444444444444", "999999999999", "121212121212"],
        "regions": ["us-east-1"]
    });
    // WHEN the run is planned
    let resp = w.planner.handle(request(input)).await.unwrap();
    // THEN only the ACTIVE account and the one outside the organization are targeted
    assert_eq!(
        resp.locations,
        vec!["777777777777/us-east-1", "121212121212/us-east-1"]
    );
    // AND the others are skipped with their status, on the run record and in the event
    let item = w.puts.all()[0].item().unwrap().clone();
    let skipped: Value = serde_json::from_str(item["skippedAccounts"].as_s().unwrap()).unwrap();
    assert_eq!(
        skipped,
        json!([
            {"account": "888888888888", "reason": "PENDING_CLOSURE"},
            {"account": "444444444444", "reason": "SUSPENDED"},
            {"account": "999999999999", "reason": "SUSPENDED"}
        ])
    );
    let detail = w.events.all()[0].entries()[0].detail().unwrap().to_string();
    assert!(detail.contains("PENDING_CLOSURE"), "{detail}");
}

#[tokio::test]
async fn a_run_naming_only_inactive_accounts_is_bad_input() {
    let w = world();
    let input = json!({
        "operation": "Install", "resourceGroup": "g",
        "accounts": ["888888888888", "444444444444"], "regions": ["us-east-1"]
    });
    let err = w.planner.handle(request(input)).await.unwrap_err();
    assert_eq!(err.error_type(), "InvalidInput");
    assert!(
        err.to_string().contains("accounts: no active account"),
        "{err}"
    );
}

#[tokio::test]
async fn a_long_list_of_skipped_accounts_is_cut_and_counted() {
    // GIVEN one ACTIVE account and 250 PENDING_CLOSURE ones, named by ID
    let w = world();
    let mut accounts = vec!["777777777777".to_string()];
    accounts.extend((0..250u64).map(|i| format!("{}", 800_000_000_000 + i)));
    let input = json!({
        "operation": "Install", "resourceGroup": "g", "accounts": accounts, "regions": ["us-east-1"]
    });
    // WHEN the run is planned
    w.planner.handle(request(input)).await.unwrap();
    // THEN the run record lists 200 of them and counts the 50 left out
    let item = w.puts.all()[0].item().unwrap().clone();
    let skipped: Vec<Value> =
        serde_json::from_str(item["skippedAccounts"].as_s().unwrap()).unwrap();
    assert_eq!(skipped.len(), 200);
    assert_eq!(item["skippedAccountsOmitted"].as_n().unwrap(), "50");
    // AND so does the "Patch Run Started" event
    let detail: Value =
        serde_json::from_str(w.events.all()[0].entries()[0].detail().unwrap()).unwrap();
    assert_eq!(detail["skippedAccounts"].as_array().unwrap().len(), 200);
    assert_eq!(detail["skippedAccountsOmitted"], 50);
}

#[tokio::test]
async fn a_rejected_run_with_many_violations_keeps_a_bounded_record_and_event() {
    // GIVEN an input with 300 bad account entries
    let w = world();
    let bad: Vec<String> = (0..300).map(|i| format!("bad-{i}")).collect();
    let input = json!({"operation": "Install", "resourceGroup": "g", "accounts": bad, "regions": ["us-east-1"]});
    // WHEN the run is planned
    let err = w.planner.handle(request(input)).await.unwrap_err();
    // THEN the error counts all 300 and lists the first 100
    assert!(err.to_string().starts_with("300 invalid field(s)"), "{err}");
    assert!(err.to_string().ends_with("and 200 more"), "{err}");
    // AND the record lists 100 reasons and counts the rest; so does the event
    let item = w.puts.all()[0].item().unwrap().clone();
    assert_eq!(item["rejectReasons"].as_l().unwrap().len(), 100);
    assert_eq!(item["rejectReasonsOmitted"].as_n().unwrap(), "200");
    let detail: Value =
        serde_json::from_str(w.events.all()[0].entries()[0].detail().unwrap()).unwrap();
    assert_eq!(detail["reasons"].as_array().unwrap().len(), 100);
    assert_eq!(detail["reasonsOmitted"], 200);
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
    let query = mock!(aws_sdk_dynamodb::Client::query)
        .then_output(|| QueryOutput::builder().set_items(Some(Vec::new())).build());
    let active =
        mock!(aws_sdk_organizations::Client::describe_account).then_compute_output(|req| {
            DescribeAccountOutput::builder()
                .account(
                    Account::builder()
                        .id(req.account_id().unwrap_or_default())
                        .state(AccountState::Active)
                        .build(),
                )
                .build()
        });
    let ev = mock!(aws_sdk_eventbridge::Client::put_events)
        .then_output(|| PutEventsOutput::builder().failed_entry_count(0).build());
    let planner = Planner {
        config: Config::for_tests(),
        store: store(mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&get, &put, &tx, &query]
        )),
        orgs: mock_client!(aws_sdk_organizations, RuleMode::MatchAny, [&active]),
        ssm: mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&region_pages()]),
        events: mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ev]),
        alarms: no_alarms(),
    };
    let input = run_input(json!({"regions": [REGION, "eu-west-1"]}));
    // WHEN it goes on
    let resp = planner.handle(request(input)).await.unwrap();
    // THEN it answers with the recorded run's locations, and sends no second "started" event
    assert_eq!(resp.locations, vec![LOC.to_string()]);
    assert_eq!(ev.num_calls(), 0);
}
