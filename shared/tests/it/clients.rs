//! The assume-role factory: session names carry the run, credentials are reused only while
//! they are far from expiry.

use aws_sdk_sts::operation::assume_role::AssumeRoleOutput;
use aws_sdk_sts::types::Credentials;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_types::DateTime;
use fleetpatch::clients::{AssumeRoleFactory, ClientFactory};
use fleetpatch::model::Location;
use std::time::{Duration, SystemTime};

fn factory(
    valid_for: Duration,
) -> (
    AssumeRoleFactory,
    aws_smithy_mocks::Rule,
    crate::util::Captured<String>,
) {
    let sessions = crate::util::Captured::default();
    let seen = sessions.clone();
    let rule = mock!(aws_sdk_sts::Client::assume_role).then_compute_output(move |req| {
        seen.push(format!(
            "{}|{}",
            req.role_arn().unwrap_or_default(),
            req.role_session_name().unwrap_or_default()
        ));
        AssumeRoleOutput::builder()
            .credentials(
                Credentials::builder()
                    .access_key_id("ASIAEXAMPLE")
                    .secret_access_key("secret")
                    .session_token("token")
                    .expiration(DateTime::from(SystemTime::now() + valid_for))
                    .build()
                    .unwrap(),
            )
            .build()
    });
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&rule]);
    let base = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    (
        AssumeRoleFactory::with_sts(&base, sts, "aws"),
        rule,
        sessions,
    )
}

#[tokio::test]
async fn credentials_are_reused_while_fresh_and_carry_the_run_id() {
    let (f, rule, sessions) = factory(Duration::from_secs(3600));
    let loc = Location::new("222222222222", "eu-west-1");
    f.clients(&loc, "PatchRole", "run-42").await.unwrap();
    f.clients(
        &Location::new("222222222222", "us-east-1"),
        "PatchRole",
        "run-42",
    )
    .await
    .unwrap();
    assert_eq!(rule.num_calls(), 1, "one AssumeRole per account and run");
    assert_eq!(
        sessions.all(),
        vec!["arn:aws:iam::222222222222:role/PatchRole|fleetpatch-run-42".to_string()]
    );
}

#[tokio::test]
async fn credentials_close_to_expiry_are_never_used() {
    // Credentials valid for 2 more minutes are inside the 5-minute margin: assume again.
    let (f, rule, _) = factory(Duration::from_secs(120));
    let loc = Location::new("222222222222", "eu-west-1");
    f.clients(&loc, "PatchRole", "run-42").await.unwrap();
    f.clients(&loc, "PatchRole", "run-42").await.unwrap();
    assert_eq!(rule.num_calls(), 2);
}
