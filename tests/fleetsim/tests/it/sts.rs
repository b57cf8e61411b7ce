//! STS: AssumeRole success and AccessDenied, credentials that act in the assumed account.

use serde_json::json;

use crate::util::{xml_value, Sim, A, MGMT_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_is_denied_without_the_role_or_for_suspended_accounts() {
    let sim = Sim::start().await;
    for account in ["444444444444", "555555555555", "999999999999"] {
        let r = sim
            .sts(MGMT_KEY, &format!("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A{account}%3Arole%2FAWS-SystemsManager-AutomationExecutionRole&RoleSessionName=run-1"))
            .await;
        assert_eq!(r.status, 403, "{account}");
        assert_eq!(
            xml_value(&r.text(), "Code").as_deref(),
            Some("AccessDenied")
        );
    }
    let wrong_role = sim.sts(MGMT_KEY, "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A222222222222%3Arole%2FOther&RoleSessionName=run-1").await;
    assert_eq!(wrong_role.status, 403);
    let assumed = sim.oracle("assumed").await;
    assert_eq!(assumed.as_array().map(Vec::len), Some(4));
    assert_eq!(assumed[0]["session_name"], "run-1");
    assert_eq!(assumed[0]["result"], "AccessDenied");
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_credentials_act_in_the_assumed_account() {
    let sim = Sim::start().await;
    let r = sim
        .sts(MGMT_KEY, "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A222222222222%3Arole%2FAWS-SystemsManager-AutomationExecutionRole&RoleSessionName=fleetpatch-run-42&DurationSeconds=7200")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let xml = r.text();
    let key = xml_value(&xml, "AccessKeyId").expect("key");
    assert!(key.starts_with("ASIA"));
    // Expiration is capped at one hour (role chaining)
    let exp = chrono::DateTime::parse_from_rfc3339(&xml_value(&xml, "Expiration").expect("exp"))
        .expect("iso");
    let left = exp.timestamp() - chrono::Utc::now().timestamp();
    assert!((3500..=3600).contains(&left), "{left}");
    let who = sim
        .sts(&key, "Action=GetCallerIdentity&Version=2011-06-15")
        .await;
    assert_eq!(xml_value(&who.text(), "Account").as_deref(), Some(A));
    assert_eq!(
        xml_value(&who.text(), "Arn").as_deref(),
        Some("arn:aws:sts::222222222222:assumed-role/AWS-SystemsManager-AutomationExecutionRole/fleetpatch-run-42")
    );
    let mgmt = sim
        .sts(MGMT_KEY, "Action=GetCallerIdentity&Version=2011-06-15")
        .await;
    assert_eq!(
        xml_value(&mgmt.text(), "Account").as_deref(),
        Some("111111111111")
    );
    // SSM with the issued key sees account 222's instances; the management key sees none
    let mine = sim
        .ssm(&key, "DescribeInstanceInformation", json!({}))
        .await
        .json();
    assert_eq!(
        mine["InstanceInformationList"].as_array().map(Vec::len),
        Some(7)
    );
    let mgmt = sim
        .ssm(MGMT_KEY, "DescribeInstanceInformation", json!({}))
        .await
        .json();
    assert_eq!(mgmt["InstanceInformationList"], json!([]));
    let bad = sim.sts(MGMT_KEY, "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A222222222222%3Arole%2FAWS-SystemsManager-AutomationExecutionRole&RoleSessionName=x&DurationSeconds=60").await;
    assert_eq!(
        xml_value(&bad.text(), "Code").as_deref(),
        Some("ValidationError")
    );
    sim.run.shutdown().await;
}
