//! The assume-role factory: session names carry the run, credentials are reused only while
//! they are far from expiry.

use aws_sdk_sts::operation::assume_role::AssumeRoleOutput;
use aws_sdk_sts::types::Credentials;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_types::DateTime;
use fleetpatch::clients::{AssumeRoleFactory, ClientFactory};
use fleetpatch::model::Location;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

/// A local STS that answers every AssumeRole after `delay` (a real HTTP round trip, so that
/// callers side by side are really in flight together), counting the calls.
fn slow_sts(delay: Duration) -> (aws_sdk_sts::Client, Arc<AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // the head, then the body by its Content-Length
                let body_at = loop {
                    let n = stream.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_at]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap_or(0))
                    .unwrap_or(0);
                while buf.len() < body_at + length {
                    let n = stream.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(delay);
                let body = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult><Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>secret</SecretAccessKey><SessionToken>token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:s</AssumedRoleId><Arn>arn:aws:sts::222222222222:assumed-role/PatchRole/s</Arn></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></AssumeRoleResponse>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(aws_sdk_sts::config::Credentials::for_tests())
        .build();
    (aws_sdk_sts::Client::from_conf(conf), calls)
}

#[tokio::test]
async fn concurrent_first_calls_for_one_account_share_one_assume_role() {
    // Aggregate reads several locations at once; an account's Regions are neighbours, so
    // their first calls miss the cache together. They must wait for one AssumeRole.
    let (sts, calls) = slow_sts(Duration::from_millis(100));
    let base = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let f = AssumeRoleFactory::with_sts(&base, sts, "aws");
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2", "ap-northeast-1"];
    let locations: Vec<Location> = regions
        .iter()
        .map(|r| Location::new("222222222222", *r))
        .collect();
    let pending = locations
        .iter()
        .map(|l| f.clients(l, "PatchRole", "run-42"));
    for r in futures::future::join_all(pending).await {
        r.unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one AssumeRole for the account's four Regions"
    );
    // another account still gets its own
    f.clients(
        &Location::new("333333333333", "us-east-1"),
        "PatchRole",
        "run-42",
    )
    .await
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
