"""Fidelity test: drive every operation fleetsim serves through boto3, whose botocore
service models (written by AWS, not by us) parse the responses and errors.

Runs the built binary (target/debug/fleetsim, or $FLEETSIM_BIN) on a free port with
tests/fleets/small.toml (visibility window 1 s), whose clock is frozen (speed 0) and stepped via the oracle.
"""

import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "localstack"))
import stack as localstack  # noqa: E402

BIN = os.environ.get("FLEETSIM_BIN", str(localstack.target_dir() / "debug" / "fleetsim"))
FLEET = ROOT / "tests" / "fleets" / "small.toml"
ROLE = "AWS-SystemsManager-AutomationExecutionRole"
A = "222222222222"
OK1 = "i-0a00000000000a001"
FAIL = "i-0a00000000000a002"
REBOOT = "i-0a00000000000a004"
LOST = "i-0a00000000000a005"
STOPPED = "i-0a00000000000a007"
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture(scope="module")
def sim():
    proc = subprocess.Popen(
        [BIN, "--port", "0", "--fleet", str(FLEET), "--invocation-visibility-ms", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("fleetsim listening on 127.0.0.1:"), line
    url = "http://" + line.rsplit(" ", 1)[1]
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def oracle(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/_fleetsim/{path}", data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def client(url, service, creds=None, region="us-east-1", config=None):
    creds = creds or {"AccessKeyId": "AKIDMANAGEMENT", "SecretAccessKey": "x", "SessionToken": None}
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds.get("SessionToken"),
        config=config,
    )


def assume(url, account=A, session="fidelity"):
    sts = client(url, "sts")
    out = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{ROLE}", RoleSessionName=session, DurationSeconds=3600)
    return out["Credentials"]


def code(exc_info):
    return exc_info.value.response["Error"]["Code"]


def test_sts_assume_role_and_caller_identity(sim):
    creds = assume(sim, session="fidelity-sts")
    assert creds["AccessKeyId"].startswith("ASIA")
    assert creds["Expiration"].timestamp() - time.time() <= 3600
    who = client(sim, "sts", creds).get_caller_identity()
    assert who["Account"] == A
    assert who["Arn"].endswith(f"assumed-role/{ROLE}/fidelity-sts")
    assert client(sim, "sts").get_caller_identity()["Account"] == "111111111111"
    with pytest.raises(ClientError) as e:
        client(sim, "sts").assume_role(RoleArn=f"arn:aws:iam::444444444444:role/{ROLE}", RoleSessionName="x1")
    assert code(e) == "AccessDenied"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    sessions = [a["session_name"] for a in oracle(sim, "assumed")]
    assert "fidelity-sts" in sessions and "x1" in sessions


def test_ssm_instance_information_and_patch_states(sim):
    ssm = client(sim, "ssm", assume(sim))
    pages = list(ssm.get_paginator("describe_instance_information").paginate(PaginationConfig={"PageSize": 5}))
    ids = [i["InstanceId"] for p in pages for i in p["InstanceInformationList"]]
    assert len(pages) == 2 and len(ids) == 7
    assert STOPPED not in ids
    online = ssm.describe_instance_information(Filters=[{"Key": "PingStatus", "Values": ["Online"]}])
    assert all(i["PingStatus"] == "Online" for i in online["InstanceInformationList"])
    hybrid = ssm.describe_instance_information(
        InstanceInformationFilterList=[{"key": "ResourceType", "valueSet": ["ManagedInstance"]}]
    )
    assert hybrid["InstanceInformationList"][0]["PlatformType"] == "Windows"
    states = ssm.describe_instance_patch_states(InstanceIds=[OK1, FAIL, LOST], MaxResults=10)["InstancePatchStates"]
    assert [s["InstanceId"] for s in states] == [OK1, FAIL, LOST]
    assert states[0]["MissingCount"] == 5 and states[0]["Operation"] == "Scan"
    paged = list(ssm.get_paginator("describe_instance_patch_states").paginate(InstanceIds=[OK1, FAIL, LOST]))
    assert sum(len(p["InstancePatchStates"]) for p in paged) == 3
    raw = client(sim, "ssm", assume(sim), config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as e:
        raw.describe_instance_information(MaxResults=4)
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        raw.describe_instance_patch_states(InstanceIds=[OK1], MaxResults=101)
    assert code(e) == "ValidationException"


def test_ssm_run_command_lifecycle(sim):
    ssm = client(sim, "ssm", assume(sim))
    with pytest.raises(ClientError) as e:
        ssm.send_command(InstanceIds=[OK1, STOPPED], DocumentName="AWS-RunPatchBaseline", Parameters={"Operation": ["Install"]})
    assert code(e) == "InvalidInstanceId"
    with pytest.raises(ClientError) as e:
        ssm.send_command(InstanceIds=[OK1], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]})
    assert code(e) == "InvalidDocument"
    comment = "fleetpatch fidelity-run 222222222222/us-east-1"
    sent = ssm.send_command(
        InstanceIds=[OK1, FAIL, REBOOT, LOST],
        DocumentName="AWS-RunPatchBaseline",
        Parameters={"Operation": ["Install"], "SnapshotId": ["abc"], "RebootOption": ["NoReboot"], "InstallOverrideList": [""]},
        TimeoutSeconds=600,
        Comment=comment,
        MaxConcurrency="10%",
        MaxErrors="1",
        CloudWatchOutputConfig={"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": "/fleetpatch"},
    )["Command"]
    cmd = sent["CommandId"]
    assert sent["Status"] == "Pending" and sent["TargetCount"] == 4
    # eventual consistency: right after SendCommand the invocation does not exist yet
    with pytest.raises(ClientError) as e:
        ssm.get_command_invocation(CommandId=cmd, InstanceId=OK1)
    assert code(e) == "InvocationDoesNotExist"
    assert ssm.list_command_invocations(CommandId=cmd)["CommandInvocations"] == []
    time.sleep(1.1)
    found = [c for p in ssm.get_paginator("list_commands").paginate(PaginationConfig={"PageSize": 1}) for c in p["Commands"] if c["Comment"] == comment]
    assert [c["CommandId"] for c in found] == [cmd]
    assert ssm.list_commands(Filters=[{"key": "DocumentName", "value": "AWS-RunPatchBaseline"}, {"key": "InvokedAfter", "value": "2020-01-01T00:00:00Z"}])["Commands"]
    oracle(sim, "clock", {"advance_seconds": 700})
    inv = ssm.get_command_invocation(CommandId=cmd, InstanceId=OK1)
    assert (inv["Status"], inv["StatusDetails"], inv["ResponseCode"]) == ("Success", "Success", 0)
    assert inv["PluginName"] == "PatchLinux"
    assert ssm.get_command_invocation(CommandId=cmd, InstanceId=FAIL)["Status"] == "Failed"
    lost = ssm.get_command_invocation(CommandId=cmd, InstanceId=LOST)
    assert (lost["Status"], lost["StatusDetails"]) == ("TimedOut", "Delivery Timed Out")
    pages = list(ssm.get_paginator("list_command_invocations").paginate(CommandId=cmd, Details=True, PaginationConfig={"PageSize": 3}))
    invs = [i for p in pages for i in p["CommandInvocations"]]
    assert len(pages) == 2 and len(invs) == 4
    assert invs[0]["CommandPlugins"][0]["Name"] == "PatchLinux"
    cmd_now = ssm.list_commands(CommandId=cmd)["Commands"][0]
    assert (cmd_now["Status"], cmd_now["ErrorCount"], cmd_now["DeliveryTimedOutCount"]) == ("Failed", 1, 1)
    states = {s["InstanceId"]: s for s in ssm.describe_instance_patch_states(InstanceIds=[OK1, FAIL, REBOOT])["InstancePatchStates"]}
    assert states[OK1]["MissingCount"] == 0 and states[OK1]["Operation"] == "Install"
    assert states[REBOOT]["InstalledPendingRebootCount"] == 6
    assert states[FAIL]["FailedCount"] > 0
    # cancel
    again = ssm.send_command(InstanceIds=[OK1], DocumentName="AWS-RunPatchBaseline", Parameters={"Operation": ["Scan"]})["Command"]
    ssm.cancel_command(CommandId=again["CommandId"])
    time.sleep(1.1)
    assert ssm.get_command_invocation(CommandId=again["CommandId"], InstanceId=OK1)["Status"] == "Cancelled"
    stats = oracle(sim, "stats")
    assert OK1 in stats["instances_with_multiple_commands"]


def test_ssm_hooks_document(sim):
    # GIVEN the hooks document and a managed node whose pre-install hook fails
    ssm = client(sim, "ssm", assume(sim))
    hooked = "mi-0a00000000000a009"
    doc = ssm.describe_document(Name="Patch-Drain")["Document"]
    assert (doc["Name"], doc["DocumentType"], doc["Status"]) == ("Patch-Drain", "Command", "Active")
    assert ssm.describe_document(Name="AWS-Noop")["Document"]["Owner"] == "Amazon"
    with pytest.raises(ClientError) as e:
        ssm.describe_document(Name="Patch-Missing")
    assert code(e) == "InvalidDocument"
    # the hooks document has no InstallOverrideList
    with pytest.raises(ClientError) as e:
        ssm.send_command(InstanceIds=[hooked], DocumentName="AWS-RunPatchBaselineWithHooks",
                         Parameters={"Operation": ["Install"], "InstallOverrideList": [""]})
    assert code(e) == "InvalidParameters"
    # WHEN an Install runs with that pre-install hook
    cmd = ssm.send_command(
        InstanceIds=[hooked], DocumentName="AWS-RunPatchBaselineWithHooks",
        Parameters={"Operation": ["Install"], "SnapshotId": ["h"], "RebootOption": ["NoReboot"],
                    "PreInstallHookDocName": ["Patch-Drain"]})["Command"]["CommandId"]
    time.sleep(1.1)
    oracle(sim, "clock", {"advance_seconds": 300})
    # THEN the invocation failed, its steps say the pre-install hook did, nothing was installed
    inv = ssm.list_command_invocations(CommandId=cmd, Details=True)["CommandInvocations"][0]
    assert (inv["Status"], inv["DocumentName"]) == ("Failed", "AWS-RunPatchBaselineWithHooks")
    failed = [p["Name"] for p in inv["CommandPlugins"] if p["Status"] == "Failed"]
    assert failed == ["PreInstallHook"], inv["CommandPlugins"]
    state = ssm.describe_instance_patch_states(InstanceIds=[hooked])["InstancePatchStates"][0]
    assert (state["MissingCount"], state["Operation"]) == (1, "Scan")
    hooks = [c for c in oracle(sim, "commands") if c["command_id"] == cmd][0]["hooks"][hooked]
    assert hooks["ran"] == [["pre_install", "Patch-Drain"], ["on_exit", "AWS-Noop"]]


def test_ssm_throttling_error_code(sim):
    creds = assume(sim)
    oracle(sim, "faults", {"faults": [{"kind": "throttle", "service": "ssm", "operation": "ListCommands", "count": 1}]})
    ssm = client(sim, "ssm", creds, config=NO_RETRY)
    with pytest.raises(ClientError) as e:
        ssm.list_commands()
    assert code(e) == "ThrottlingException"
    ssm.list_commands()
    oracle(sim, "faults", {"faults": [{"kind": "drop", "operation": "DescribeInstanceInformation", "count": 1}]})
    with pytest.raises(ConnectionClosedError):
        ssm.describe_instance_information()
    oracle(sim, "faults", {"faults": []})


def test_resource_groups(sim):
    rg = client(sim, "resource-groups", assume(sim))
    assert rg.get_group(Group="patch-group-a")["Group"]["GroupArn"] == "arn:aws:resource-groups:us-east-1:222222222222:group/patch-group-a"
    pages = list(rg.get_paginator("list_group_resources").paginate(Group="patch-group-a", PaginationConfig={"PageSize": 4}))
    arns = [r["Identifier"]["ResourceArn"] for p in pages for r in p["Resources"]]
    assert len(pages) == 3 and len(arns) == 9
    filtered = rg.list_group_resources(Group="patch-group-a", Filters=[{"Name": "resource-type", "Values": ["AWS::EC2::Instance"]}])
    assert len(filtered["ResourceIdentifiers"]) == 8 and filtered["QueryErrors"] == []
    rg_eu = client(sim, "resource-groups", assume(sim), region="eu-west-1")
    with pytest.raises(ClientError) as e:
        rg_eu.list_group_resources(Group="patch-group-a")
    assert code(e) == "NotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_organizations(sim):
    org = client(sim, "organizations")
    root = org.list_roots()["Roots"][0]["Id"]
    assert root == "r-sm01"

    def walk(parent):
        accounts = [a for p in org.get_paginator("list_accounts_for_parent").paginate(ParentId=parent, PaginationConfig={"PageSize": 1}) for a in p["Accounts"]]
        for p in org.get_paginator("list_children").paginate(ParentId=parent, ChildType="ORGANIZATIONAL_UNIT", PaginationConfig={"PageSize": 1}):
            for child in p["Children"]:
                accounts += walk(child["Id"])
        return accounts

    accounts = {a["Id"]: a["Status"] for a in walk(root)}
    assert accounts == {
        "111111111111": "ACTIVE",
        "222222222222": "ACTIVE",
        "333333333333": "ACTIVE",
        "444444444444": "ACTIVE",
        "555555555555": "SUSPENDED",
    }
    ous = [o["Name"] for p in org.get_paginator("list_organizational_units_for_parent").paginate(ParentId=root) for o in p["OrganizationalUnits"]]
    assert ous == ["Workloads"]
    acct_children = org.list_children(ParentId="ou-sm01-workload", ChildType="ACCOUNT")["Children"]
    assert {c["Id"] for c in acct_children} == {"222222222222", "444444444444"}
    assert org.describe_account(AccountId="555555555555")["Account"]["Status"] == "SUSPENDED"
    with pytest.raises(ClientError) as e:
        org.describe_account(AccountId="000000000000")
    assert code(e) == "AccountNotFoundException"
    with pytest.raises(ClientError) as e:
        client(sim, "organizations", assume(sim)).list_roots()
    assert code(e) == "AccessDeniedException"


def test_ssm_public_region_list(sim):
    # boto3's paginator and model read fleetsim's answer as they read SSM's
    ssm = client(sim, "ssm")
    pages = list(ssm.get_paginator("get_parameters_by_path").paginate(
        Path="/aws/service/global-infrastructure/regions", PaginationConfig={"PageSize": 10}))
    params = [p for page in pages for p in page["Parameters"]]
    codes = {p["Value"] for p in params}
    assert len(pages) > 1 and {"us-east-1", "eu-west-1", "ap-southeast-2"} <= codes
    assert "us-east-3" not in codes
    assert all(p["Name"] == f"/aws/service/global-infrastructure/regions/{p['Value']}" for p in params)
    assert all(p["Type"] == "String" and p["Version"] == 1 for p in params)
    with pytest.raises(ClientError) as e:
        ssm.get_parameters_by_path(Path="/aws/service/global-infrastructure/regions", MaxResults=11)
    assert code(e) == "ValidationException"


def test_forwarded_dynamodb_and_lambda_faults_parse_as_the_services_errors(sim):
    # GIVEN a conflict on transactions touching the run item, a throttled UpdateItem and a
    # throttled Lambda invoke (refused by fleetsim before anything is forwarded)
    oracle(sim, "faults", {"faults": [
        {"kind": "transaction_conflict", "service": "dynamodb", "operation": "TransactWriteItems",
         "body_contains": '"S":"RUN"}', "count": 1},
        {"kind": "throttle", "service": "dynamodb", "operation": "UpdateItem", "count": 1},
        {"kind": "throttle", "service": "lambda", "function": "dispatch", "count": 1},
    ]})
    ddb = client(sim, "dynamodb", config=NO_RETRY)
    run_key = {"PK": {"S": "RUN#r"}, "SK": {"S": "RUN"}}
    inst_key = {"PK": {"S": "LOC#r#1#us-east-1"}, "SK": {"S": "INST#i-1"}}
    update = {"TableName": "t", "UpdateExpression": "ADD n :one",
              "ExpressionAttributeValues": {":one": {"N": "1"}}}
    # WHEN boto3 (AWS's own models) sends them
    with pytest.raises(ClientError) as tx:
        ddb.transact_write_items(TransactItems=[{"Update": {**update, "Key": inst_key}},
                                                {"Update": {**update, "Key": run_key}}])
    with pytest.raises(ClientError) as up:
        ddb.update_item(Key=run_key, **update)
    lam = client(sim, "lambda", config=NO_RETRY)
    with pytest.raises(ClientError) as inv:
        lam.invoke(FunctionName="arn:aws:lambda:us-east-1:111111111111:function:dispatch",
                   Payload=b"{}")
    oracle(sim, "faults", {"faults": []})
    # THEN each parses as the modelled error, with DynamoDB's cancellation reasons per item
    assert code(tx) == "TransactionCanceledException"
    assert [r["Code"] for r in tx.value.response["CancellationReasons"]] == \
        ["None", "TransactionConflict"]
    assert code(up) == "ProvisionedThroughputExceededException"
    assert code(inv) == "TooManyRequestsException"
    assert inv.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
