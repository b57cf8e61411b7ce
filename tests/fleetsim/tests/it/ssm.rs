//! SSM: validation, pagination, the visibility window, the invocation lifecycle on the
//! simulated clock, patch state after Install / Scan / NoReboot, and the in-flight oracle.

use serde_json::{json, Value};

use crate::util::{after_visibility_window, Sim, A};

const OK1: &str = "i-0a00000000000a001";
const FAIL: &str = "i-0a00000000000a002";
const EXEC_TO: &str = "i-0a00000000000a003";
const REBOOT: &str = "i-0a00000000000a004";
const LOST: &str = "i-0a00000000000a005";
const INACTIVE: &str = "i-0a00000000000a006";
const STOPPED: &str = "i-0a00000000000a007";
const UNMANAGED: &str = "i-0a00000000000a008";

fn install(ids: &[&str], reboot: &str) -> Value {
    json!({
        "InstanceIds": ids,
        "DocumentName": "AWS-RunPatchBaseline",
        "Parameters": {"Operation": ["Install"], "SnapshotId": ["11111111-2222-3333-4444-555555555555"], "RebootOption": [reboot]},
        "TimeoutSeconds": 600,
        "Comment": "fleetpatch run-1 222222222222/us-east-1",
        "MaxConcurrency": "10",
        "MaxErrors": "0",
    })
}

async fn invocation(sim: &Sim, key: &str, cmd: &str, id: &str) -> (String, String) {
    let r = sim
        .ssm(
            key,
            "GetCommandInvocation",
            json!({"CommandId": cmd, "InstanceId": id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    (
        v["Status"].as_str().unwrap_or_default().to_string(),
        v["StatusDetails"].as_str().unwrap_or_default().to_string(),
    )
}

async fn patch_state(sim: &Sim, key: &str, id: &str) -> Value {
    let r = sim
        .ssm(
            key,
            "DescribeInstancePatchStates",
            json!({"InstanceIds": [id]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["InstancePatchStates"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_instance_information_paginates_and_hides_stopped_and_unmanaged() {
    // GIVEN account 222 us-east-1 with 9 instances, one stopped and one unmanaged
    let sim = Sim::start().await;
    let key = sim.assume(A).await;
    // WHEN listing them 5 at a time
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body = json!({"MaxResults": 5});
        if let Some(t) = &token {
            body["NextToken"] = json!(t);
        }
        let r = sim.ssm(&key, "DescribeInstanceInformation", body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        pages += 1;
        for i in v["InstanceInformationList"].as_array().expect("list") {
            ids.push(i["InstanceId"].as_str().expect("id").to_string());
        }
        match v["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    // THEN 7 managed instances over 2 pages, without the stopped and unmanaged ones
    assert_eq!(pages, 2);
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert!(!ids.iter().any(|i| i == STOPPED || i == UNMANAGED));
    // AND a PingStatus filter selects offline ones
    let r = sim
        .ssm(
            &key,
            "DescribeInstanceInformation",
            json!({"Filters": [{"Key": "PingStatus", "Values": ["ConnectionLost", "Inactive"]}]}),
        )
        .await;
    let got: Vec<&str> = r.json()["InstanceInformationList"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["InstanceId"].as_str())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|s| {
            if s == LOST {
                LOST
            } else if s == INACTIVE {
                INACTIVE
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(got, vec![LOST, INACTIVE]);
    // AND the hybrid instance is a ManagedInstance
    let r = sim.ssm(&key, "DescribeInstanceInformation", json!({"InstanceInformationFilterList": [{"key": "ResourceType", "valueSet": ["ManagedInstance"]}]})).await;
    assert_eq!(
        r.json()["InstanceInformationList"][0]["InstanceId"],
        "mi-0a00000000000a009"
    );
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_results_outside_the_model_bounds_is_rejected() {
    let sim = Sim::start().await;
    let key = sim.assume(A).await;
    for (op, bad) in [
        ("DescribeInstanceInformation", json!({"MaxResults": 4})),
        ("DescribeInstanceInformation", json!({"MaxResults": 51})),
        (
            "DescribeInstancePatchStates",
            json!({"InstanceIds": [OK1], "MaxResults": 9}),
        ),
        (
            "DescribeInstancePatchStates",
            json!({"InstanceIds": [OK1], "MaxResults": 101}),
        ),
        ("ListCommands", json!({"MaxResults": 0})),
        ("ListCommandInvocations", json!({"MaxResults": 51})),
    ] {
        let r = sim.ssm(&key, op, bad.clone()).await;
        assert_eq!(
            (r.status, r.error_type().as_str()),
            (400, "ValidationException"),
            "{op} {bad}"
        );
    }
    let ok = sim
        .ssm(
            &key,
            "DescribeInstancePatchStates",
            json!({"InstanceIds": [OK1], "MaxResults": 10}),
        )
        .await;
    assert_eq!(ok.status, 200);
    let r = sim
        .ssm(&key, "ListCommands", json!({"NextToken": "not-a-token"}))
        .await;
    assert_eq!(r.error_type(), "InvalidNextToken");
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_rejects_the_whole_call_for_one_invalid_instance() {
    let sim = Sim::start().await;
    let key = sim.assume(A).await;
    for bad in [
        STOPPED,
        UNMANAGED,
        "i-0b00000000000b001",
        "i-0a00000000000a010", /* other account */
    ] {
        let r = sim
            .ssm(&key, "SendCommand", install(&[OK1, bad], "RebootIfNeeded"))
            .await;
        assert_eq!(
            (r.status, r.error_type().as_str()),
            (400, "InvalidInstanceId"),
            "{bad}: {}",
            r.text()
        );
    }
    let mut wrong_doc = install(&[OK1], "RebootIfNeeded");
    wrong_doc["DocumentName"] = json!("AWS-RunShellScript");
    assert_eq!(
        sim.ssm(&key, "SendCommand", wrong_doc).await.error_type(),
        "InvalidDocument"
    );
    let fifty_one: Vec<String> = (0..51).map(|n| format!("i-{n:017}")).collect();
    let r = sim.ssm(&key, "SendCommand", json!({"InstanceIds": fifty_one, "DocumentName": "AWS-RunPatchBaseline", "Parameters": {"Operation": ["Scan"]}})).await;
    assert_eq!(r.error_type(), "ValidationException");
    let mut long_comment = install(&[OK1], "RebootIfNeeded");
    long_comment["Comment"] = json!("x".repeat(101));
    assert_eq!(
        sim.ssm(&key, "SendCommand", long_comment)
            .await
            .error_type(),
        "ValidationException"
    );
    let mut bad_op = install(&[OK1], "RebootIfNeeded");
    bad_op["Parameters"]["Operation"] = json!(["Patch"]);
    assert_eq!(
        sim.ssm(&key, "SendCommand", bad_op).await.error_type(),
        "InvalidParameters"
    );
    let mut bad_conc = install(&[OK1], "RebootIfNeeded");
    bad_conc["MaxConcurrency"] = json!("0");
    assert_eq!(
        sim.ssm(&key, "SendCommand", bad_conc).await.error_type(),
        "ValidationException"
    );
    // THEN nothing was sent
    assert_eq!(sim.oracle("commands").await, json!([]));
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_are_invisible_right_after_send_command() {
    // a window long enough not to elapse before the first assertions on a loaded machine
    let sim = Sim::start_with(|o| o.invocation_visibility_ms = Some(1500)).await;
    let key = sim.assume(A).await;
    let r = sim
        .ssm(&key, "SendCommand", install(&[OK1], "RebootIfNeeded"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cmd = r.json()["Command"]["CommandId"]
        .as_str()
        .expect("id")
        .to_string();
    let g = sim
        .ssm(
            &key,
            "GetCommandInvocation",
            json!({"CommandId": cmd, "InstanceId": OK1}),
        )
        .await;
    assert_eq!(
        (g.status, g.error_type().as_str()),
        (400, "InvocationDoesNotExist")
    );
    let l = sim
        .ssm(&key, "ListCommandInvocations", json!({"CommandId": cmd}))
        .await;
    assert_eq!(l.json()["CommandInvocations"], json!([]));
    // the command itself is listed at once, with its Comment
    let lc = sim.ssm(&key, "ListCommands", json!({})).await;
    assert_eq!(
        lc.json()["Commands"][0]["Comment"],
        "fleetpatch run-1 222222222222/us-east-1"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(invocation(&sim, &key, &cmd, OK1).await.0, "Pending");
    let l = sim
        .ssm(
            &key,
            "ListCommandInvocations",
            json!({"CommandId": cmd, "Details": true}),
        )
        .await;
    let invs = l.json()["CommandInvocations"].clone();
    assert_eq!(invs.as_array().map(Vec::len), Some(1));
    assert_eq!(invs[0]["CommandPlugins"][0]["Name"], "PatchLinux");
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_follows_the_simulated_clock() {
    // GIVEN a frozen clock and an Install to one instance of each behaviour
    let sim = Sim::start().await;
    let key = sim.assume(A).await;
    let ids = [OK1, FAIL, EXEC_TO, REBOOT, LOST, INACTIVE];
    let r = sim
        .ssm(&key, "SendCommand", install(&ids, "NoReboot"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cmd = r.json()["Command"]["CommandId"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(r.json()["Command"]["Status"], "Pending");
    after_visibility_window().await;
    // WHEN time passes
    assert_eq!(
        invocation(&sim, &key, &cmd, OK1).await,
        ("Pending".into(), "Pending".into())
    );
    sim.advance(10.0).await;
    assert_eq!(
        invocation(&sim, &key, &cmd, OK1).await,
        ("InProgress".into(), "In Progress".into())
    );
    assert_eq!(
        invocation(&sim, &key, &cmd, LOST).await,
        ("Pending".into(), "Pending".into())
    );
    let lc = sim
        .ssm(&key, "ListCommands", json!({"CommandId": cmd}))
        .await;
    assert_eq!(lc.json()["Commands"][0]["Status"], "InProgress");
    sim.advance(300.0).await; // t = 310: a001 (300 s) and a002 (200 s) done
    assert_eq!(
        invocation(&sim, &key, &cmd, OK1).await,
        ("Success".into(), "Success".into())
    );
    assert_eq!(
        invocation(&sim, &key, &cmd, FAIL).await,
        ("Failed".into(), "Failed".into())
    );
    assert_eq!(
        invocation(&sim, &key, &cmd, EXEC_TO).await,
        ("InProgress".into(), "In Progress".into())
    );
    sim.advance(300.0).await; // t = 610: exec timeout (600 s) and delivery timeout (600 s)
    assert_eq!(
        invocation(&sim, &key, &cmd, EXEC_TO).await,
        ("TimedOut".into(), "Execution Timed Out".into())
    );
    assert_eq!(
        invocation(&sim, &key, &cmd, LOST).await,
        ("TimedOut".into(), "Delivery Timed Out".into())
    );
    assert_eq!(
        invocation(&sim, &key, &cmd, INACTIVE).await,
        ("TimedOut".into(), "Delivery Timed Out".into())
    );
    // THEN the command aggregates its invocations
    let c = sim
        .ssm(&key, "ListCommands", json!({"CommandId": cmd}))
        .await
        .json()["Commands"][0]
        .clone();
    assert_eq!(c["Status"], "Failed");
    assert_eq!(c["CompletedCount"], 6);
    assert_eq!(c["ErrorCount"], 2);
    assert_eq!(c["DeliveryTimedOutCount"], 2);
    // AND status filters work on invocations
    let l = sim
        .ssm(
            &key,
            "ListCommandInvocations",
            json!({"CommandId": cmd, "Filters": [{"key": "Status", "value": "TimedOut"}]}),
        )
        .await;
    assert_eq!(
        l.json()["CommandInvocations"].as_array().map(Vec::len),
        Some(3)
    );
    // AND patch states changed as the behaviours say
    let ok = patch_state(&sim, &key, OK1).await;
    assert_eq!(
        (ok["MissingCount"].as_u64(), ok["InstalledCount"].as_u64()),
        (Some(0), Some(105))
    );
    assert_eq!(ok["Operation"], "Install");
    assert_eq!(ok["SnapshotId"], "11111111-2222-3333-4444-555555555555");
    let reboot = patch_state(&sim, &key, REBOOT).await;
    assert_eq!(
        (
            reboot["MissingCount"].as_u64(),
            reboot["InstalledPendingRebootCount"].as_u64()
        ),
        (Some(0), Some(6))
    );
    assert_eq!(reboot["RebootOption"], "NoReboot");
    let failed = patch_state(&sim, &key, FAIL).await;
    assert!(failed["FailedCount"].as_u64() > Some(0));
    let lost = patch_state(&sim, &key, LOST).await;
    assert_eq!(
        (lost["MissingCount"].as_u64(), lost["Operation"].as_str()),
        (Some(2), Some("Scan"))
    );
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_updates_operation_but_not_counts_and_cancel_stops_invocations() {
    let sim = Sim::start().await;
    let key = sim.assume(A).await;
    let before = patch_state(&sim, &key, OK1).await;
    let r = sim
        .ssm(&key, "SendCommand", json!({"InstanceIds": [OK1], "DocumentName": "AWS-RunPatchBaseline", "Parameters": {"Operation": ["Scan"], "SnapshotId": ["snap-2"]}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    sim.advance(400.0).await;
    let after = patch_state(&sim, &key, OK1).await;
    assert_eq!(after["MissingCount"], before["MissingCount"]);
    assert_eq!(after["InstalledCount"], before["InstalledCount"]);
    assert_eq!(after["SnapshotId"], "snap-2");
    assert!(after["OperationEndTime"].as_f64() > before["OperationEndTime"].as_f64());
    // cancel: an Install that is cancelled mid-way changes nothing
    let r = sim
        .ssm(&key, "SendCommand", install(&[OK1, LOST], "RebootIfNeeded"))
        .await;
    let cmd = r.json()["Command"]["CommandId"]
        .as_str()
        .expect("id")
        .to_string();
    sim.advance(10.0).await;
    assert_eq!(
        sim.ssm(&key, "CancelCommand", json!({"CommandId": cmd}))
            .await
            .status,
        200
    );
    after_visibility_window().await;
    assert_eq!(
        invocation(&sim, &key, &cmd, OK1).await,
        ("Cancelled".into(), "Cancelled".into())
    );
    sim.advance(400.0).await;
    assert_eq!(
        patch_state(&sim, &key, OK1).await["MissingCount"],
        before["MissingCount"]
    );
    let bogus = sim
        .ssm(
            &key,
            "CancelCommand",
            json!({"CommandId": "00000000-0000-0000-0000-000000000000"}),
        )
        .await;
    assert_eq!(bogus.error_type(), "InvalidCommandId");
    sim.run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_reports_max_in_flight_and_repeated_commands() {
    let sim = Sim::start().await;
    let key = sim.assume(A).await;
    // two overlapping commands: 3 + 2 instances in flight, one instance targeted twice
    assert_eq!(
        sim.ssm(
            &key,
            "SendCommand",
            install(&[OK1, FAIL, LOST], "RebootIfNeeded")
        )
        .await
        .status,
        200
    );
    assert_eq!(
        sim.ssm(
            &key,
            "SendCommand",
            install(&[OK1, REBOOT], "RebootIfNeeded")
        )
        .await
        .status,
        200
    );
    sim.advance(700.0).await; // everything terminal
    assert_eq!(
        sim.ssm(&key, "SendCommand", install(&[EXEC_TO], "RebootIfNeeded"))
            .await
            .status,
        200
    );
    let stats = sim.oracle("stats").await;
    assert_eq!(stats["max_in_flight"]["222222222222/us-east-1"], 5);
    assert_eq!(stats["in_flight"]["222222222222/us-east-1"], 1);
    assert_eq!(stats["commands_per_instance"][OK1], 2);
    assert_eq!(stats["instances_with_multiple_commands"], json!([OK1]));
    assert_eq!(stats["calls"]["ssm:SendCommand"]["calls"], 3);
    let cmds = sim.oracle("commands").await;
    assert_eq!(cmds.as_array().map(Vec::len), Some(3));
    assert_eq!(cmds[0]["account"], A);
    assert_eq!(cmds[0]["parameters"]["Operation"], json!(["Install"]));
    let insts = sim.oracle("instances").await;
    let ok = insts
        .as_array()
        .expect("list")
        .iter()
        .find(|i| i["instance_id"] == OK1)
        .expect("a001")
        .clone();
    assert_eq!(ok["commands_received"], 2);
    assert_eq!(ok["last_invocation"]["status"], "Success");
    assert_eq!(ok["patch_state"]["MissingCount"], 0);
    // reset clears the counters
    assert_eq!(sim.oracle_post("reset", json!({})).await.status, 200);
    let stats = sim.oracle("stats").await;
    assert_eq!(stats["commands_per_instance"], json!({}));
    assert_eq!(stats["total_calls"], 0);
    sim.run.shutdown().await;
}
