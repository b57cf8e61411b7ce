//! expand: pagination, classification, AccessDenied on AssumeRole, a missing group, a
//! stopping run.

use crate::util::*;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::operation::update_item::{UpdateItemInput, UpdateItemOutput};
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, TransactionCanceledException,
};
use aws_sdk_dynamodb::types::CancellationReason;
use aws_sdk_resourcegroups::operation::list_group_resources::{
    ListGroupResourcesError, ListGroupResourcesOutput,
};
use aws_sdk_resourcegroups::types::error::NotFoundException;
use aws_sdk_resourcegroups::types::{ListGroupResourcesItem, ResourceIdentifier};
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::types::{InstanceInformation, PingStatus, PlatformType};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use fleetpatch::clients::AssumeRoleFactory;
use fleetpatch::config::Config;
use fleetpatch::expand::Expander;
use fleetpatch::model::{ExpandCursor, LocationOutcome, LocationRecord};
use fleetpatch::poll::start_offset;
use fleetpatch::task::LocationTask;
use serde_json::json;

/// A written instance item and the condition it was written under.
type Written = (Item, Option<String>);

fn dynamo(
    run_status: &'static str,
    written: Captured<Written>,
) -> (aws_sdk_dynamodb::Client, Vec<Rule>) {
    dynamo_with(run_status, written, Vec::new())
}

/// Like [`dynamo`], with the instances in `existing` already recorded: a transaction that
/// puts one of them is cancelled, a conditional PutItem of one of them fails.
fn dynamo_with(
    run_status: &'static str,
    written: Captured<Written>,
    existing: Vec<String>,
) -> (aws_sdk_dynamodb::Client, Vec<Rule>) {
    let (client, rules, _) = dynamo_at(run_status, written, existing, None);
    (client, rules)
}

/// Like [`dynamo_with`], with the location's expansion cursor at `cursor`; also answers the
/// UpdateItem requests made.
fn dynamo_at(
    run_status: &'static str,
    written: Captured<Written>,
    existing: Vec<String>,
    cursor: Option<ExpandCursor>,
) -> (
    aws_sdk_dynamodb::Client,
    Vec<Rule>,
    Captured<UpdateItemInput>,
) {
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_compute_output(move |req| {
        let mut pending = LocationRecord::pending(LOC.parse().unwrap());
        pending.expand_cursor = cursor.clone();
        let loc = fleetpatch::store::items::location_item(RUN, &pending).unwrap();
        let item = if sk_of(req.key()) == "RUN" {
            run_item(run_status, json!({}), None)
        } else {
            loc
        };
        GetItemOutput::builder().set_item(Some(item)).build()
    });
    let exists = {
        let existing = existing.clone();
        move |item: &Item| {
            existing.contains(&item["instanceId"].as_s().cloned().unwrap_or_default())
        }
    };
    let (w, e) = (written.clone(), exists.clone());
    let recorded = written.clone();
    let transact =
        mock!(aws_sdk_dynamodb::Client::transact_write_items).then_compute_response(move |req| {
            let puts: Vec<_> = req
                .transact_items()
                .iter()
                .filter_map(|t| t.put.clone())
                .collect();
            if puts.iter().any(|p| e(&p.item)) {
                return aws_smithy_mocks::MockResponse::Error(
                    TransactWriteItemsError::TransactionCanceledException(
                        TransactionCanceledException::builder()
                            .cancellation_reasons(
                                CancellationReason::builder()
                                    .code("ConditionalCheckFailed")
                                    .build(),
                            )
                            .build(),
                    ),
                );
            }
            for p in puts {
                w.push((p.item, p.condition_expression));
            }
            aws_smithy_mocks::MockResponse::Output(TransactWriteItemsOutput::builder().build())
        });
    let put = mock!(aws_sdk_dynamodb::Client::put_item).then_compute_response(move |req| {
        let item = req.item().cloned().unwrap_or_default();
        if exists(&item) {
            return aws_smithy_mocks::MockResponse::Error(
                PutItemError::ConditionalCheckFailedException(
                    ConditionalCheckFailedException::builder().build(),
                ),
            );
        }
        written.push((item, req.condition_expression().map(str::to_string)));
        aws_smithy_mocks::MockResponse::Output(PutItemOutput::builder().build())
    });
    let updates = Captured::default();
    let seen = updates.clone();
    let update = mock!(aws_sdk_dynamodb::Client::update_item).then_compute_output(move |req| {
        seen.push(req.clone());
        UpdateItemOutput::builder().build()
    });
    // The location's partition: the instances recorded before, then those written.
    let query = mock!(aws_sdk_dynamodb::Client::query).then_compute_output(move |_| {
        let mut items: Vec<Item> = existing
            .iter()
            .map(|id| instance_item(id, "Pending", None))
            .collect();
        items.extend(recorded.all().into_iter().map(|(item, _)| item));
        QueryOutput::builder().set_items(Some(items)).build()
    });
    let rules = vec![get, transact, put, update, query];
    (
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules),
        rules,
        updates,
    )
}

fn task() -> LocationTask {
    LocationTask {
        run_id: RUN.into(),
        location: LOC.into(),
        ..LocationTask::default()
    }
}

fn arn(id: &str) -> String {
    format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{id}")
}

/// States written for each instance ID.
fn states(written: &Captured<Written>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = written
        .all()
        .into_iter()
        .map(|(item, _)| {
            (
                item["instanceId"].as_s().unwrap().clone(),
                item["state"].as_s().unwrap().clone(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn follows_every_page_and_classifies_instances() {
    // GIVEN a group of 60 instances over two pages, and SSM knowing 55 of them over two pages:
    // 50 online, 3 ConnectionLost, 2 Inactive; 5 unknown to SSM (stopped or no agent)
    let all = ids(60);
    let (p1, p2) = (all[..50].to_vec(), all[50..].to_vec());
    let groups_rule = mock!(aws_sdk_resourcegroups::Client::list_group_resources)
        .sequence()
        .output(move || {
            let mut b = ListGroupResourcesOutput::builder().next_token("page-2");
            for id in &p1 {
                b = b.resources(
                    ListGroupResourcesItem::builder()
                        .identifier(
                            ResourceIdentifier::builder()
                                .resource_arn(arn(id))
                                .resource_type("AWS::EC2::Instance")
                                .build(),
                        )
                        .build(),
                );
            }
            b.build()
        })
        .output(move || {
            let mut b = ListGroupResourcesOutput::builder();
            for id in &p2 {
                b = b.resources(
                    ListGroupResourcesItem::builder()
                        .identifier(
                            ResourceIdentifier::builder()
                                .resource_arn(arn(id))
                                .resource_type("AWS::EC2::Instance")
                                .build(),
                        )
                        .build(),
                );
            }
            b.build()
        })
        .build();
    let known = all.clone();
    let info_rule =
        mock!(aws_sdk_ssm::Client::describe_instance_information).then_compute_output(move |req| {
            // Answers per requested chunk, in two pages for the first chunk.
            let asked: Vec<String> = req.filters()[0].values().to_vec();
            let token = req.next_token().map(str::to_string);
            let known: Vec<String> = asked
                .into_iter()
                .filter(|id| known.iter().position(|k| k == id).unwrap() < 55)
                .collect();
            let (page, next) = match token.as_deref() {
                None if known.len() > 25 => (known[..25].to_vec(), Some("more")),
                None => (known.clone(), None),
                Some(_) => (known[25..].to_vec(), None),
            };
            let mut b =
                DescribeInstanceInformationOutput::builder().set_next_token(next.map(String::from));
            for id in page {
                let idx: usize = usize::from_str_radix(id.trim_start_matches("i-"), 16).unwrap();
                let ping = match idx {
                    50..=52 => PingStatus::ConnectionLost,
                    53..=54 => PingStatus::Inactive,
                    _ => PingStatus::Online,
                };
                b = b.instance_information_list(
                    InstanceInformation::builder()
                        .instance_id(id)
                        .ping_status(ping)
                        .platform_type(PlatformType::Linux)
                        .build(),
                );
            }
            b.build()
        });
    let written = Captured::default();
    let (db, _r) = dynamo("Running", written.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&info_rule]);
    let groups = mock_client!(aws_sdk_resourcegroups, RuleMode::Sequential, [&groups_rule]);
    // (with the production poll of 30 s)
    let e = Expander {
        config: Config {
            poll_seconds: 30,
            ..Config::for_tests()
        },
        store: store(db),
        factory: fixed(ssm, groups),
        alarms: no_alarms(),
    };
    // WHEN the location is expanded
    let out = e.handle(task()).await.unwrap();
    // THEN the first round waits this location's own share of one poll (not 0, for this
    // run and location: rounds of a wave's locations do not all fall in one second)
    let offset = start_offset(RUN, LOC, 30);
    assert_ne!(
        offset, 0,
        "the fixture's run and location draw a non-zero offset"
    );
    assert_eq!(out.wait_seconds, offset);
    // and both group pages and all SSM pages were read, and each instance has its class
    assert_eq!(groups_rule.num_calls(), 2);
    assert_eq!(
        info_rule.num_calls(),
        3,
        "chunk 1 in two pages, chunk 2 in one"
    );
    let st = states(&written);
    assert_eq!(st.len(), 60);
    let count = |s: &str| st.iter().filter(|(_, x)| x == s).count();
    assert_eq!(count("Pending"), 50);
    assert_eq!(count("Offline"), 5);
    assert_eq!(count("Unmanaged"), 5);
    assert!(!out.done, "online instances are left to dispatch");
}

#[tokio::test]
async fn an_unassumable_role_ends_the_location_with_access_denied() {
    // GIVEN STS refusing the execution role
    let sts_rule = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
        AssumeRoleError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("User is not authorized to perform: sts:AssumeRole")
                .build(),
        )
    });
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&sts_rule]);
    let written = Captured::default();
    let (db, _r) = dynamo("Running", written.clone());
    let base = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let e = Expander {
        config: Config::for_tests(),
        store: store(db),
        factory: AssumeRoleFactory::with_sts(&base, sts, "aws"),
        alarms: no_alarms(),
    };
    // WHEN the location is expanded
    let out = e.handle(task()).await.unwrap();
    // THEN it is done with AccessDenied naming the role, and nothing was recorded as targeted
    assert!(out.done);
    assert_eq!(out.outcome, Some(LocationOutcome::AccessDenied));
    assert!(out
        .reason
        .unwrap()
        .contains("arn:aws:iam::111111111111:role/AWS-SystemsManager-AutomationExecutionRole"));
    assert!(written.all().is_empty());
}

#[tokio::test]
async fn a_missing_group_ends_the_location_with_group_not_found() {
    let rg = mock!(aws_sdk_resourcegroups::Client::list_group_resources).then_error(|| {
        ListGroupResourcesError::NotFoundException(
            NotFoundException::builder()
                .message("Cannot find group")
                .build(),
        )
    });
    let groups = mock_client!(aws_sdk_resourcegroups, RuleMode::MatchAny, [&rg]);
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, Vec::<&Rule>::new());
    let written = Captured::default();
    let (db, _r) = dynamo("Running", written.clone());
    let e = Expander {
        config: Config::for_tests(),
        store: store(db),
        factory: fixed(ssm, groups),
        alarms: no_alarms(),
    };
    let out = e.handle(task()).await.unwrap();
    assert_eq!(out.outcome, Some(LocationOutcome::GroupNotFound));
    assert!(out.reason.unwrap().contains("patch-group-a"));
}

#[tokio::test]
async fn a_stopping_run_skips_the_location_without_calling_the_account() {
    let sts_rule = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
        AssumeRoleError::generic(ErrorMetadata::builder().code("AccessDenied").build())
    });
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&sts_rule]);
    let written = Captured::default();
    let (db, _r) = dynamo("Stopping", written.clone());
    let base = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let e = Expander {
        config: Config::for_tests(),
        store: store(db),
        factory: AssumeRoleFactory::with_sts(&base, sts, "aws"),
        alarms: no_alarms(),
    };
    let out = e.handle(task()).await.unwrap();
    assert_eq!(out.outcome, Some(LocationOutcome::Skipped));
    assert!(out.reason.unwrap().contains("location error threshold"));
    assert_eq!(sts_rule.num_calls(), 0, "the account was not called");
}

#[tokio::test]
async fn a_late_expansion_never_rewrites_instances_already_recorded() {
    // GIVEN a location of 3 online instances, 2 of which an earlier expansion (the retry of
    // this one, which timed out) already recorded, and dispatch may have sent
    let all = ids(3);
    let members = all.clone();
    let groups_rule =
        mock!(aws_sdk_resourcegroups::Client::list_group_resources).then_output(move || {
            let mut b = ListGroupResourcesOutput::builder();
            for id in &members {
                b = b.resources(
                    ListGroupResourcesItem::builder()
                        .identifier(
                            ResourceIdentifier::builder()
                                .resource_arn(arn(id))
                                .resource_type("AWS::EC2::Instance")
                                .build(),
                        )
                        .build(),
                );
            }
            b.build()
        });
    let online = all.clone();
    let info_rule =
        mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(move || {
            let mut b = DescribeInstanceInformationOutput::builder();
            for id in &online {
                b = b.instance_information_list(
                    InstanceInformation::builder()
                        .instance_id(id)
                        .ping_status(PingStatus::Online)
                        .platform_type(PlatformType::Linux)
                        .build(),
                );
            }
            b.build()
        });
    let written = Captured::default();
    let (db, _r) = dynamo_with("Running", written.clone(), all[..2].to_vec());
    let e = Expander {
        config: Config::for_tests(),
        store: store(db),
        factory: fixed(
            mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&info_rule]),
            mock_client!(aws_sdk_resourcegroups, RuleMode::MatchAny, [&groups_rule]),
        ),
        alarms: no_alarms(),
    };
    // WHEN this expansion finishes late
    e.handle(task()).await.unwrap();
    // THEN only the instance not yet recorded was written, and every write was conditional
    // on the item not existing: nothing already claimed or sent goes back to Pending
    assert_eq!(
        states(&written),
        vec![(all[2].clone(), "Pending".to_string())]
    );
    assert!(written
        .all()
        .iter()
        .all(|(_, c)| c.as_deref() == Some("attribute_not_exists(PK)")));
}

/// One ListGroupResources page of `ids`, with `next` the token of the page after it.
fn group_page(ids: &[String], next: Option<&str>) -> ListGroupResourcesOutput {
    let mut b = ListGroupResourcesOutput::builder().set_next_token(next.map(String::from));
    for id in ids {
        b = b.resources(
            ListGroupResourcesItem::builder()
                .identifier(
                    ResourceIdentifier::builder()
                        .resource_arn(arn(id))
                        .resource_type("AWS::EC2::Instance")
                        .build(),
                )
                .build(),
        );
    }
    b.build()
}

/// DescribeInstanceInformation answering every asked instance Online; records what was asked.
fn all_online(asked: Captured<Vec<String>>) -> Rule {
    mock!(aws_sdk_ssm::Client::describe_instance_information).then_compute_output(move |req| {
        let ids: Vec<String> = req.filters()[0].values().to_vec();
        asked.push(ids.clone());
        let mut b = DescribeInstanceInformationOutput::builder();
        for id in ids {
            b = b.instance_information_list(
                InstanceInformation::builder()
                    .instance_id(id)
                    .ping_status(PingStatus::Online)
                    .platform_type(PlatformType::Linux)
                    .build(),
            );
        }
        b.build()
    })
}

#[tokio::test]
async fn a_retried_expansion_resumes_at_the_first_page_not_recorded() {
    // GIVEN a group of 60 instances in two pages, and an earlier attempt (timed out) that
    // recorded the first page and moved the cursor past it
    let all = ids(60);
    let page2 = all[50..].to_vec();
    let tokens: Captured<Option<String>> = Captured::default();
    let seen_tokens = tokens.clone();
    let groups_rule = mock!(aws_sdk_resourcegroups::Client::list_group_resources)
        .then_compute_output(move |req| {
            seen_tokens.push(req.next_token().map(str::to_string));
            match req.next_token() {
                Some("page-2") => group_page(&page2, None),
                _ => group_page(&all[..50], Some("page-2")),
            }
        });
    let asked = Captured::default();
    let info_rule = all_online(asked.clone());
    let written = Captured::default();
    let cursor = ExpandCursor {
        pages: 1,
        next_token: Some("page-2".into()),
    };
    let (db, _r, updates) = dynamo_at("Running", written.clone(), ids(50), Some(cursor));
    let e = Expander {
        config: Config::for_tests(),
        store: store(db),
        factory: fixed(
            mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&info_rule]),
            mock_client!(aws_sdk_resourcegroups, RuleMode::MatchAny, [&groups_rule]),
        ),
        alarms: no_alarms(),
    };

    // WHEN the retry runs
    let out = e.handle(task()).await.unwrap();

    // THEN it listed only the second page, asked SSM only about it, and wrote only it
    assert_eq!(tokens.all(), vec![Some("page-2".to_string())]);
    assert_eq!(asked.all().concat(), ids(60)[50..].to_vec());
    let st = states(&written);
    assert_eq!(st.len(), 10);
    assert!(st.iter().all(|(_, s)| s == "Pending"));
    // AND the cursor moved past the last page
    let exprs: Vec<String> = updates
        .all()
        .iter()
        .map(|u| u.update_expression().unwrap_or_default().to_string())
        .collect();
    assert!(
        exprs.contains(&"SET expandPages = :p REMOVE expandToken".to_string()),
        "{exprs:?}"
    );
    // AND the location's window is taken from all 60 recorded instances
    let expanded = updates
        .all()
        .into_iter()
        .find(|u| {
            u.update_expression()
                .unwrap_or_default()
                .contains("targeted")
        })
        .expect("the expansion was recorded");
    let values = expanded.expression_attribute_values().unwrap();
    assert_eq!(values[":t"].as_n().unwrap(), "60");
    assert!(!out.done);
}

#[tokio::test]
async fn an_expansion_whose_every_page_is_recorded_lists_nothing_again() {
    // GIVEN an earlier attempt that recorded every page of a 3-instance group, then timed
    // out before it recorded the expansion
    let groups_rule = mock!(aws_sdk_resourcegroups::Client::list_group_resources)
        .then_output(|| group_page(&ids(3), None));
    let asked = Captured::default();
    let info_rule = all_online(asked.clone());
    let written = Captured::default();
    let cursor = ExpandCursor {
        pages: 1,
        next_token: None,
    };
    let (db, _r, updates) = dynamo_at("Running", written.clone(), ids(3), Some(cursor));
    let e = Expander {
        config: Config::for_tests(),
        store: store(db),
        factory: fixed(
            mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&info_rule]),
            mock_client!(aws_sdk_resourcegroups, RuleMode::MatchAny, [&groups_rule]),
        ),
        alarms: no_alarms(),
    };
    // WHEN the retry runs
    let out = e.handle(task()).await.unwrap();
    // THEN it calls neither Resource Groups nor SSM, writes no instance, and records the
    // expansion of the 3 recorded instances
    assert_eq!(groups_rule.num_calls() + info_rule.num_calls(), 0);
    assert!(written.all().is_empty());
    let targeted: Vec<String> = updates
        .all()
        .iter()
        .filter_map(|u| {
            u.expression_attribute_values()?
                .get(":t")?
                .as_n()
                .ok()
                .cloned()
        })
        .collect();
    assert_eq!(targeted, vec!["3".to_string()]);
    assert!(!out.done);
}
