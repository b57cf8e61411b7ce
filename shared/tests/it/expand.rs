//! expand: pagination, classification, AccessDenied on AssumeRole, a missing group, a
//! stopping run.

use crate::util::*;
use aws_sdk_dynamodb::operation::batch_write_item::{BatchWriteItemInput, BatchWriteItemOutput};
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
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
use fleetpatch::model::LocationOutcome;
use fleetpatch::task::LocationTask;
use serde_json::json;

fn dynamo(
    run_status: &'static str,
    written: Captured<BatchWriteItemInput>,
) -> (aws_sdk_dynamodb::Client, Vec<Rule>) {
    let get = mock!(aws_sdk_dynamodb::Client::get_item).then_compute_output(move |req| {
        let mut loc = location_item(1, None);
        loc.insert("phase".into(), s("Pending"));
        let item = if sk_of(req.key()) == "RUN" {
            run_item(run_status, json!({}), None)
        } else {
            loc
        };
        GetItemOutput::builder().set_item(Some(item)).build()
    });
    let batch = mock!(aws_sdk_dynamodb::Client::batch_write_item).then_compute_output(move |req| {
        written.push(req.clone());
        BatchWriteItemOutput::builder().build()
    });
    let update = mock!(aws_sdk_dynamodb::Client::update_item)
        .then_output(|| UpdateItemOutput::builder().build());
    let rules = vec![get, batch, update];
    (
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules),
        rules,
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
fn states(written: &Captured<BatchWriteItemInput>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for req in written.all() {
        for reqs in req.request_items().unwrap().values() {
            for w in reqs {
                let item = &w.put_request.as_ref().unwrap().item;
                out.push((
                    item["instanceId"].as_s().unwrap().clone(),
                    item["state"].as_s().unwrap().clone(),
                ));
            }
        }
    }
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
    let e = Expander {
        config: Config::for_tests(),
        store: store(db),
        factory: fixed(ssm, groups),
    };
    // WHEN the location is expanded
    let out = e.handle(task()).await.unwrap();
    // THEN both group pages and all SSM pages were read, and each instance has its class
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
    };
    let out = e.handle(task()).await.unwrap();
    assert_eq!(out.outcome, Some(LocationOutcome::Skipped));
    assert!(out.reason.unwrap().contains("location error threshold"));
    assert_eq!(sts_rule.num_calls(), 0, "the account was not called");
}
