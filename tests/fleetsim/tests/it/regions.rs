//! SSM's public list of AWS Regions (GetParametersByPath) and account statuses other than
//! ACTIVE in Organizations.

use serde_json::{json, Value};

use crate::util::{Sim, MGMT_KEY};
use fleetsim::fleet::Fleet;

const PATH: &str = "/aws/service/global-infrastructure/regions";

async fn all_regions(sim: &Sim) -> Vec<Value> {
    let mut out = Vec::new();
    let mut body = json!({"Path": PATH, "Recursive": false, "MaxResults": 10});
    loop {
        let r = sim.ssm(MGMT_KEY, "GetParametersByPath", body.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let page = v["Parameters"].as_array().expect("parameters").clone();
        assert!(page.len() <= 10);
        out.extend(page);
        match v["NextToken"].as_str() {
            Some(t) => body["NextToken"] = json!(t),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_list_is_served_in_pages_with_the_code_as_value() {
    // GIVEN the small fleet (no aws_regions: the built-in list)
    let sim = Sim::start().await;
    // WHEN every page of the Region list is read
    let params = all_regions(&sim).await;
    // THEN it holds the real Regions, each named PATH/CODE with the code as its value
    let codes: Vec<&str> = params.iter().filter_map(|p| p["Value"].as_str()).collect();
    assert_eq!(codes.len(), fleetsim::fleet::AWS_REGIONS.len());
    for real in ["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"] {
        assert!(codes.contains(&real), "{real} missing");
    }
    for fake in ["us-east-3", "eu-nowhere-1"] {
        assert!(!codes.contains(&fake), "{fake} listed");
    }
    assert_eq!(params[0]["Name"], json!(format!("{PATH}/{}", codes[0])));
    assert_eq!(params[0]["Type"], "String");
    assert_eq!(
        params[0]["ARN"],
        json!(format!(
            "arn:aws:ssm:us-east-1::parameter{PATH}/{}",
            codes[0]
        ))
    );
    // AND MaxResults is held to the model's 1..10, other paths hold nothing
    let big = sim
        .ssm(
            MGMT_KEY,
            "GetParametersByPath",
            json!({"Path": PATH, "MaxResults": 11}),
        )
        .await;
    assert_eq!(big.error_type(), "ValidationException");
    let other = sim
        .ssm(MGMT_KEY, "GetParametersByPath", json!({"Path": "/my/app"}))
        .await
        .json();
    assert_eq!(other["Parameters"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_list_answers_faults_like_any_served_call() {
    // GIVEN a throttle on the next call and a 503 on the one after
    let sim = Sim::start().await;
    let r = sim
        .oracle_post(
            "faults",
            json!({"faults": [
                {"kind": "throttle", "operation": "GetParametersByPath", "count": 1},
                {"kind": "error", "operation": "GetParametersByPath", "status": 503, "code": "ServiceUnavailable", "count": 1}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let call = || sim.ssm(MGMT_KEY, "GetParametersByPath", json!({"Path": PATH}));
    // WHEN the list is read three times
    let first = call().await;
    let second = call().await;
    let third = call().await;
    // THEN SSM's throttle, then the 503, then the list
    assert_eq!(
        (first.status, first.error_type()),
        (400, "ThrottlingException".into())
    );
    assert_eq!(second.status, 503);
    assert_eq!(third.status, 200);
}

#[test]
fn a_fleet_may_list_its_own_regions_and_its_instances_must_be_in_them() {
    // GIVEN a fleet file that lists two Regions
    let head = r#"
management_account = "111111111111"
aws_regions = ["us-east-1", "eu-west-1"]
[[accounts]]
id = "222222222222"
name = "a"
status = "PENDING_CLOSURE"
"#;
    let inst = |region: &str| {
        format!(
            "{head}\n[[instances]]\nid = \"i-0a\"\naccount = \"222222222222\"\nregion = \"{region}\"\n"
        )
    };
    // WHEN it is loaded with an instance inside them, and with one outside
    let ok = Fleet::from_toml(&inst("eu-west-1")).expect("loads");
    let err = Fleet::from_toml(&inst("us-east-3")).expect_err("refused");
    // THEN the list is the fleet's, and an instance in another Region is refused
    assert_eq!(ok.aws_regions, vec!["eu-west-1", "us-east-1"]);
    assert!(err.to_string().contains("us-east-3"), "{err}");
    assert_eq!(ok.accounts["222222222222"].status, "PENDING_CLOSURE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_account_reports_a_pending_closure_and_assume_role_refuses_it() {
    // GIVEN an organization with an account being closed
    let fleet = Fleet::from_toml(
        r#"
management_account = "111111111111"
[organization]
root_id = "r-rg01"
[[accounts]]
id = "222222222222"
name = "closing"
status = "PENDING_CLOSURE"
roles = ["AWS-SystemsManager-AutomationExecutionRole"]
"#,
    )
    .expect("loads");
    let sim = Sim::start_with(|o| o.fleet = fleet).await;
    // WHEN the management account describes it
    let d = sim
        .orgs(
            MGMT_KEY,
            "DescribeAccount",
            json!({"AccountId": "222222222222"}),
        )
        .await
        .json();
    // THEN its Status and State say PENDING_CLOSURE
    assert_eq!(d["Account"]["Status"], "PENDING_CLOSURE");
    assert_eq!(d["Account"]["State"], "PENDING_CLOSURE");
    // AND its execution role cannot be assumed
    let r = sim
        .sts(
            MGMT_KEY,
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A222222222222%3Arole%2FAWS-SystemsManager-AutomationExecutionRole&RoleSessionName=fleetpatch-test",
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
}
