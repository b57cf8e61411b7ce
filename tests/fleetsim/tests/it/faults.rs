//! Faults: throttling (count and token bucket), injected errors, dropped responses.

use serde_json::json;

use crate::util::{after_visibility_window, xml_value, Sim, A, MGMT_KEY};

fn scan() -> serde_json::Value {
    json!({"InstanceIds": ["i-0a00000000000a001"], "DocumentName": "AWS-RunPatchBaseline", "Parameters": {"Operation": ["Scan"]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_the_protocols_error_and_is_counted() {
    let sim = Sim::start().await;
    let key = sim.assume(A).await;
    let r = sim
        .oracle_post("faults", json!({"faults": [
            {"kind": "throttle", "service": "ssm", "operation": "ListCommands", "count": 2},
            {"kind": "throttle", "service": "ssm", "operation": "DescribeInstanceInformation", "account": A, "rate": 0.001, "burst": 3},
            {"kind": "throttle", "service": "sts", "operation": "GetCallerIdentity", "count": 1},
            {"kind": "throttle", "service": "resource-groups", "count": 1}
        ]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let codes: Vec<(u16, String)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let r = sim.ssm(&key, "ListCommands", json!({})).await;
            v.push((r.status, r.error_type()));
        }
        v
    };
    assert_eq!(
        codes,
        vec![
            (400, "ThrottlingException".into()),
            (400, "ThrottlingException".into()),
            (200, String::new())
        ]
    );
    let bucket: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(
                sim.ssm(&key, "DescribeInstanceInformation", json!({}))
                    .await
                    .status,
            );
        }
        v
    };
    assert_eq!(bucket, vec![200, 200, 200, 400, 400]);
    // the management account is a different bucket key and not matched by account
    assert_eq!(
        sim.ssm(MGMT_KEY, "DescribeInstanceInformation", json!({}))
            .await
            .status,
        200
    );
    let sts = sim
        .sts(MGMT_KEY, "Action=GetCallerIdentity&Version=2011-06-15")
        .await;
    assert_eq!(
        (sts.status, xml_value(&sts.text(), "Code").as_deref()),
        (400, Some("Throttling"))
    );
    let rg = sim
        .rg(
            &key,
            "us-east-1",
            "/get-group",
            json!({"Group": "patch-group-a"}),
        )
        .await;
    assert_eq!(rg.status, 429);
    let stats = sim.oracle("stats").await;
    assert_eq!(stats["calls"]["ssm:ListCommands"]["throttled"], 2);
    assert_eq!(
        stats["calls"]["ssm:DescribeInstanceInformation"]["throttled"],
        2
    );
    assert_eq!(stats["total_throttled"], 6);
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_and_dropped_responses() {
    let sim = Sim::start_with(|o| {
        o.faults.push(
            serde_json::from_value(
                json!({"kind": "error", "operation": "GetCommandInvocation", "count": 1}),
            )
            .expect("rule"),
        );
    })
    .await;
    let key = sim.assume(A).await;
    sim.oracle_post("faults", json!({"append": true, "faults": [{"kind": "drop", "operation": "SendCommand", "count": 1}]})).await;
    // the dropped SendCommand still takes effect
    let dropped = sim
        .try_json(&key, "us-east-1", "ssm", "AmazonSSM.SendCommand", scan())
        .await;
    assert!(
        dropped.is_err(),
        "no response expected, got {:?}",
        dropped.map(|r| r.status)
    );
    let cmds = sim.oracle("commands").await;
    assert_eq!(cmds.as_array().map(Vec::len), Some(1));
    let cmd = cmds[0]["command_id"].as_str().expect("id").to_string();
    after_visibility_window().await;
    let e = sim
        .ssm(
            &key,
            "GetCommandInvocation",
            json!({"CommandId": cmd, "InstanceId": "i-0a00000000000a001"}),
        )
        .await;
    assert_eq!(
        (e.status, e.error_type().as_str()),
        (500, "InternalServerError")
    );
    let ok = sim
        .ssm(
            &key,
            "GetCommandInvocation",
            json!({"CommandId": cmd, "InstanceId": "i-0a00000000000a001"}),
        )
        .await;
    assert_eq!(ok.status, 200);
    let again = sim.ssm(&key, "SendCommand", scan()).await;
    assert_eq!(again.status, 200, "only the next 1 SendCommand is dropped");
    let stats = sim.oracle("stats").await;
    assert_eq!(stats["calls"]["ssm:SendCommand"]["dropped"], 1);
    assert_eq!(
        stats["calls"]["ssm:GetCommandInvocation"]["injected_errors"],
        1
    );
    assert_eq!(
        stats["instances_with_multiple_commands"],
        json!(["i-0a00000000000a001"])
    );
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_after_answers_500_or_503_once_the_command_exists() {
    // GIVEN the next SendCommand answers HTTP 500 after taking effect, the one after 503
    let sim = Sim::start().await;
    let key = sim.assume(A).await;
    sim.oracle_post(
        "faults",
        json!({"faults": [
            {"kind": "error_after", "operation": "SendCommand", "count": 1},
            {"kind": "error_after", "operation": "SendCommand", "count": 1, "status": 503,
             "code": "ServiceUnavailable"}
        ]}),
    )
    .await;
    // WHEN two SendCommands are made
    let first = sim.ssm(&key, "SendCommand", scan()).await;
    let second = sim.ssm(&key, "SendCommand", scan()).await;
    // THEN they answer the errors, yet both commands exist (oracle and ListCommands)
    assert_eq!(
        (first.status, first.error_type().as_str()),
        (500, "InternalServerError")
    );
    assert_eq!(
        (second.status, second.error_type().as_str()),
        (503, "ServiceUnavailable")
    );
    let cmds = sim.oracle("commands").await;
    assert_eq!(cmds.as_array().map(Vec::len), Some(2), "{cmds}");
    let listed = sim.ssm(&key, "ListCommands", json!({})).await;
    assert_eq!(listed.status, 200);
    let stats = sim.oracle("stats").await;
    assert_eq!(stats["calls"]["ssm:SendCommand"]["injected_errors"], 2);
    // and the third is answered normally
    assert_eq!(sim.ssm(&key, "SendCommand", scan()).await.status, 200);
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_calls_are_throttled_and_failed_in_their_own_protocol() {
    // GIVEN a throttle, then a 500, on CloudWatch DescribeAlarms
    let sim = Sim::start().await;
    let r = sim
        .oracle_post("faults", json!({"faults": [
            {"kind": "throttle", "service": "monitoring", "operation": "DescribeAlarms", "count": 1},
            {"kind": "error", "service": "monitoring", "operation": "DescribeAlarms", "status": 500, "count": 1}
        ]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let headers = [
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDMGMT/20261129/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=0".to_string()),
        ("smithy-protocol", "rpc-v2-cbor".to_string()),
        ("content-type", "application/cbor".to_string()),
    ];
    let path = "/service/GraniteServiceVersion20100801/operation/DescribeAlarms";
    // an empty CBOR map
    // WHEN it is called twice
    let first = sim.raw("POST", path, &headers, vec![0xa0]).await.unwrap();
    let second = sim.raw("POST", path, &headers, vec![0xa0]).await.unwrap();
    // THEN the SDK reads a throttle, then a server error, from CBOR bodies
    let code = |r: &crate::util::Resp| {
        let v: ciborium::Value = ciborium::from_reader(&r.body[..]).unwrap();
        v.as_map().unwrap()[0].1.as_text().unwrap().to_string()
    };
    assert_eq!((first.status, code(&first)), (400, "Throttling".into()));
    assert_eq!(second.status, 500);
    let stats = sim.oracle("stats").await;
    assert_eq!(stats["calls"]["monitoring:DescribeAlarms"]["throttled"], 1);
    assert_eq!(
        stats["calls"]["monitoring:DescribeAlarms"]["injected_errors"],
        1
    );
}
