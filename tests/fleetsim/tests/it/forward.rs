//! Forwarding of unserved calls to moto and of Lambda Invoke to the Lambda emulator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::util::{Sim, MGMT_KEY};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    target: Option<String>,
    body: String,
}

/// A fake upstream recording requests; `/2015-03-31/functions/fail/...` answers 500 with a
/// Lambda error body, `/2015-03-31/functions/gone/...` answers 404, anything else 200.
/// `/2015-03-31/functions/slow/...` answers after 800 ms and then logs a `FINISHED` entry.
async fn fake_upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let path = parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        log.lock().expect("log").push(Seen {
                            method: parts.method.to_string(),
                            path: path.clone(),
                            target: parts
                                .headers
                                .get("x-amz-target")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string),
                            body: String::from_utf8_lossy(&body).to_string(),
                        });
                        if path.contains("/functions/slow/") {
                            tokio::time::sleep(std::time::Duration::from_millis(800)).await;
                            log.lock().expect("log").push(Seen {
                                method: "FINISHED".into(),
                                path: path.clone(),
                                target: None,
                                body: String::new(),
                            });
                        }
                        let (status, body) = if path.contains("/functions/fail/") {
                            (
                                500,
                                json!({"errorType": "PlanError", "errorMessage": "bad plan"})
                                    .to_string(),
                            )
                        } else if path.contains("/functions/gone/") {
                            (
                                404,
                                json!({"Type": "User", "message": "Function not found"})
                                    .to_string(),
                            )
                        } else {
                            (200, json!({"upstream": true}).to_string())
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        resp.headers_mut()
                            .insert("x-upstream", "yes".parse().expect("hv"));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_calls_go_to_moto_verbatim() {
    let (moto, seen) = fake_upstream().await;
    let sim = Sim::start_with(|o| o.moto_url = Some(format!("http://{moto}"))).await;
    let r = sim
        .try_json(
            MGMT_KEY,
            "us-east-1",
            "ssm",
            "AmazonSSM.GetParameter",
            json!({"Name": "/fleetpatch/x"}),
        )
        .await
        .expect("answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"upstream": true}));
    assert_eq!(
        r.headers.get("x-upstream").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
    let dynamo = sim
        .try_json(
            MGMT_KEY,
            "us-east-1",
            "dynamodb",
            "DynamoDB_20120810.ListTables",
            json!({}),
        )
        .await
        .expect("answered");
    assert_eq!(dynamo.status, 200);
    let s = seen.lock().expect("log").clone();
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].method.as_str(), s[0].path.as_str()), ("POST", "/"));
    assert_eq!(s[0].target.as_deref(), Some("AmazonSSM.GetParameter"));
    assert_eq!(s[0].body, json!({"Name": "/fleetpatch/x"}).to_string());
    assert_eq!(s[1].target.as_deref(), Some("DynamoDB_20120810.ListTables"));
    // served calls are not forwarded
    sim.ssm(MGMT_KEY, "ListCommands", json!({})).await;
    assert_eq!(seen.lock().expect("log").len(), 2);
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_invoke_strips_the_arn_and_translates_errors() {
    let (lambda, seen) = fake_upstream().await;
    let sim = Sim::start_with(|o| o.lambda_url = Some(format!("http://{lambda}"))).await;
    let ok = sim
        .raw("POST", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aplan/invocations", &[], b"{\"run\":1}".to_vec())
        .await
        .expect("answered");
    assert_eq!(ok.status, 200);
    assert!(ok.headers.get("x-amz-function-error").is_none());
    let failed = sim
        .raw("POST", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Afail/invocations", &[], b"{}".to_vec())
        .await
        .expect("answered");
    assert_eq!(failed.status, 200);
    assert_eq!(
        failed
            .headers
            .get("x-amz-function-error")
            .and_then(|v| v.to_str().ok()),
        Some("Unhandled")
    );
    assert_eq!(failed.json()["errorType"], "PlanError");
    let gone = sim
        .raw(
            "POST",
            "/2015-03-31/functions/gone/invocations",
            &[],
            Vec::new(),
        )
        .await
        .expect("answered");
    assert_eq!(gone.status, 404, "other statuses pass through");
    let s = seen.lock().expect("log").clone();
    assert_eq!(s[0].path, "/2015-03-31/functions/plan/invocations");
    assert_eq!(s[0].body, "{\"run\":1}");
    assert_eq!(s[1].path, "/2015-03-31/functions/fail/invocations");
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_past_its_timeout_answers_sandbox_timedout_and_runs_on() {
    // GIVEN a function whose template Timeout (0.3 s) is shorter than what it takes (0.8 s)
    let (lambda, seen) = fake_upstream().await;
    let sim = Sim::start_with(|o| {
        o.lambda_url = Some(format!("http://{lambda}"));
        o.lambda_timeouts = [("slow".to_string(), 0.3)].into_iter().collect();
    })
    .await;
    // WHEN it is invoked
    let r = sim
        .raw(
            "POST",
            "/2015-03-31/functions/slow/invocations",
            &[],
            b"{}".to_vec(),
        )
        .await
        .expect("answered");
    // THEN the caller gets real Lambda's timeout: HTTP 200, an unhandled Sandbox.Timedout
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers
            .get("x-amz-function-error")
            .and_then(|v| v.to_str().ok()),
        Some("Unhandled")
    );
    assert_eq!(r.json()["errorType"], "Sandbox.Timedout");
    assert_eq!(sim.oracle("stats").await["lambda_timed_out"]["slow"], 1);
    // AND the invocation was not cancelled: it ran to its end
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let finished = seen
        .lock()
        .expect("log")
        .iter()
        .filter(|s| s.method == "FINISHED")
        .count();
    assert_eq!(finished, 1);
    // AND an override through the oracle lengthens it; posting {} restores the template's
    let o = sim
        .oracle_post("lambda-timeouts", json!({"overrides": {"slow": 5}}))
        .await;
    assert_eq!(o.json()["overrides"]["slow"], 5.0);
    let r = sim
        .raw(
            "POST",
            "/2015-03-31/functions/slow/invocations",
            &[],
            b"{}".to_vec(),
        )
        .await
        .expect("answered");
    assert!(r.headers.get("x-amz-function-error").is_none());
    let o = sim.oracle_post("lambda-timeouts", json!({})).await;
    assert_eq!(o.json()["defaults"]["slow"], 0.3);
    assert_eq!(o.json()["overrides"], json!({}));
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_and_dynamodb_faults_answer_as_the_services_and_are_not_forwarded() {
    // GIVEN one throttled dispatch invocation and one conflicting transaction on the run item
    let (upstream, seen) = fake_upstream().await;
    let sim = Sim::start_with(|o| {
        o.lambda_url = Some(format!("http://{upstream}"));
        o.moto_url = Some(format!("http://{upstream}"));
    })
    .await;
    sim.oracle_post(
        "faults",
        json!({"faults": [
            {"kind": "throttle", "service": "lambda", "function": "dispatch", "count": 1},
            {"kind": "transaction_conflict", "service": "dynamodb",
             "operation": "TransactWriteItems", "body_contains": "\"S\":\"RUN\"}", "count": 1},
            {"kind": "throttle", "service": "dynamodb", "operation": "UpdateItem", "count": 1}
        ]}),
    )
    .await;
    let invoke = |name: &'static str| {
        let sim = &sim;
        async move {
            sim.raw(
                "POST",
                &format!("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A111111111111%3Afunction%3A{name}/invocations"),
                &[],
                b"{}".to_vec(),
            )
            .await
            .expect("answered")
        }
    };
    // WHEN dispatch is invoked twice, and plan once
    let throttled = invoke("dispatch").await;
    let plan = invoke("plan").await;
    let again = invoke("dispatch").await;
    // THEN the first dispatch got Lambda's 429 TooManyRequestsException, the others ran
    assert_eq!(throttled.status, 429);
    assert_eq!(
        throttled
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("TooManyRequestsException")
    );
    assert_eq!((plan.status, again.status), (200, 200));
    // WHEN a transaction over an instance and the run item, and an UpdateItem, are sent
    let tx = json!({"TransactItems": [
        {"Update": {"Key": {"PK": {"S": "LOC#r#1#us-east-1"}, "SK": {"S": "INST#i-1"}}}},
        {"Update": {"Key": {"PK": {"S": "RUN#r"}, "SK": {"S": "RUN"}}}}]});
    let ddb = |op: &'static str, body: serde_json::Value| {
        let sim = &sim;
        async move {
            sim.try_json(
                MGMT_KEY,
                "us-east-1",
                "dynamodb",
                &format!("DynamoDB_20120810.{op}"),
                body,
            )
            .await
            .expect("answered")
        }
    };
    let conflict = ddb("TransactWriteItems", tx.clone()).await;
    let throttled = ddb("UpdateItem", json!({})).await;
    let passed = ddb("TransactWriteItems", tx).await;
    // THEN DynamoDB's own shapes, and only the third call reached the upstream
    assert_eq!(conflict.status, 400);
    let c = conflict.json();
    assert_eq!(
        c["__type"],
        "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"
    );
    assert_eq!(c["CancellationReasons"][0]["Code"], "None");
    assert_eq!(c["CancellationReasons"][1]["Code"], "TransactionConflict");
    assert_eq!(
        throttled.json()["__type"],
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
    );
    assert_eq!(passed.status, 200);
    let forwarded: Vec<String> = seen
        .lock()
        .expect("log")
        .iter()
        .map(|s| s.target.clone().unwrap_or_else(|| s.path.clone()))
        .collect();
    assert_eq!(
        forwarded,
        vec![
            "/2015-03-31/functions/plan/invocations".to_string(),
            "/2015-03-31/functions/dispatch/invocations".to_string(),
            "DynamoDB_20120810.TransactWriteItems".to_string(),
        ]
    );
    let stats = sim.oracle("stats").await;
    assert_eq!(stats["forwarded_calls"]["lambda:Invoke"]["throttled"], 1);
    assert_eq!(
        stats["forwarded_calls"]["dynamodb:TransactWriteItems"]["conflicts"],
        1
    );
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_reads_are_dropped_delayed_and_failed_after_they_reached_moto() {
    // GIVEN DescribeAlarms faults that act after the read, one at a time: a dropped answer,
    // a held answer, and a 503 in place of the answer
    let (moto, seen) = fake_upstream().await;
    let sim = Sim::start_with(|o| o.moto_url = Some(format!("http://{moto}"))).await;
    let headers = [
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDMGMT/20261129/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=0".to_string()),
        ("smithy-protocol", "rpc-v2-cbor".to_string()),
        ("content-type", "application/cbor".to_string()),
    ];
    let path = "/service/GraniteServiceVersion20100801/operation/DescribeAlarms";
    let call = || sim.raw("POST", path, &headers, vec![0xa0]);
    let sim = &sim;
    let fault = |rule: serde_json::Value| async move {
        let r = sim.oracle_post("faults", json!({ "faults": [rule] })).await;
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let on = |kind: &str| json!({"kind": kind, "service": "monitoring", "operation": "DescribeAlarms", "count": 1, "status": 503, "delay_ms": 300});

    // WHEN it is called under each fault, then once more
    fault(on("drop")).await;
    let dropped = call().await;
    fault(on("delay")).await;
    let started = std::time::Instant::now();
    let delayed = call().await.expect("a delayed answer still comes");
    let held = started.elapsed();
    fault(on("error_after")).await;
    let failed = call().await.expect("answered");
    let normal = call().await.expect("answered");

    // THEN every call reached moto (the read happened), the first got no answer, the second
    // came late but whole, the third is a CBOR 503, and the fourth is moto's answer
    assert_eq!(seen.lock().expect("log").len(), 4);
    assert!(dropped.is_err(), "the dropped call was answered");
    assert_eq!(delayed.status, 200);
    assert!(held >= std::time::Duration::from_millis(300), "{held:?}");
    assert_eq!(failed.status, 503);
    let v: ciborium::Value = ciborium::from_reader(&failed.body[..]).expect("CBOR body");
    assert!(format!("{v:?}").contains("InternalServiceError"), "{v:?}");
    assert_eq!(normal.status, 200);
    let stats = sim.oracle("stats").await;
    let ops = &stats["calls"]["monitoring:DescribeAlarms"];
    assert_eq!(
        (ops["dropped"].as_u64(), ops["delayed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(ops["injected_errors"], 1);
}
