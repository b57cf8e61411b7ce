"""IAM is evaluated on every local call (issue 7, section 1).

Fast tests (no full stack): the evaluator (tests/localstack/iam.py) on the real templates
and on copies with one used permission removed, and fleetsim + the evaluator answering
boto3 (AWS's own service models) with each service's AccessDenied.
End to end: an account outside the organization is refused by the orchestrator role's
aws:ResourceOrgID condition, and every permission the templates grant was used by the
suite (run last)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import IAM_USED, ROOT, base_input, describe, execute

sys.path.insert(0, str(ROOT / "tests" / "localstack"))
import iam  # noqa: E402
import stack as localstack  # noqa: E402

FLEET = ROOT / "tests" / "fleets" / "e2e.toml"
MGMT = "111111111111"
TABLE_ARN = f"arn:aws:dynamodb:us-east-1:{MGMT}:table/fleetpatch-runs"
ROLE = "AWS-SystemsManager-AutomationExecutionRole"
MEMBER = "410000000001"      # e2e.toml: in the organization, has the role
OUTSIDER = "410000000002"    # e2e.toml: has the role, outside the organization


def fleet() -> dict:
    return tomllib.loads(FLEET.read_text())


def without(path: Path, tmp: Path, pattern: str, replacement: str) -> Path:
    """A copy of a template with one permission removed (the edit must apply)."""
    text = path.read_text()
    changed, n = re.subn(pattern, replacement, text, count=1, flags=re.M)
    assert n == 1, f"{pattern!r} not found in {path}"
    out = tmp / path.name
    out.write_text(changed)
    return out


def plan_without_put_item(tmp: Path) -> Path:
    return without(iam.TEMPLATE, tmp,
                   r"(Action: \[dynamodb:GetItem), dynamodb:PutItem\]", r"\1]")


def target_without_send_command(tmp: Path) -> Path:
    return without(iam.TARGET_TEMPLATE, tmp, r"^(\s+Action: )ssm:SendCommand$",
                   r"\1ssm:DescribeInstanceInformation")


# -- the evaluator on the templates ---------------------------------------------------------
def test_the_templates_allow_what_fleetpatch_calls():
    # GIVEN the templates as they are
    p = iam.Policies(fleet())
    # WHEN the calls of one ordinary run are decided
    plan = p.decide({"kind": "app", "app": "fleetpatch-plan"}, [
        {"action": "dynamodb:PutItem", "resource": TABLE_ARN},
        {"action": "events:PutEvents", "context": {"events:source": "fleetpatch"},
         "resource": f"arn:aws:events:us-east-1:{MGMT}:event-bus/default"}])
    dispatch = p.decide({"kind": "app", "app": "fleetpatch-dispatch"}, [
        {"action": "sts:AssumeRole", "resource": f"arn:aws:iam::{MEMBER}:role/{ROLE}",
         "context": {"aws:ResourceOrgID": "o-e2e0000001", "aws:PrincipalOrgID": "o-e2e0000001"}}])
    target = p.decide({"kind": "assumed-role", "account": MEMBER, "role": ROLE, "session": "s"}, [
        {"action": "ssm:SendCommand",
         "resource": "arn:aws:ssm:eu-west-1::document/AWS-RunPatchBaseline"},
        {"action": "ssm:SendCommand",
         "resource": f"arn:aws:ec2:eu-west-1:{MEMBER}:instance/i-0123456789abcdef0"}])
    # THEN every one is allowed
    for d in (plan, dispatch, target):
        assert all(r["allowed"] for r in d["results"]), d


def test_plan_role_without_put_item_denies_plan(tmp_path):
    # GIVEN infra/template.yaml with plan's dynamodb:PutItem removed
    p = iam.Policies(fleet(), template=plan_without_put_item(tmp_path))
    # WHEN plan records the run
    d = p.decide({"kind": "app", "app": "fleetpatch-plan"},
                 [{"action": "dynamodb:PutItem", "resource": TABLE_ARN}])
    # THEN it is denied, and the denial names the function's role, the action and the table
    r = d["results"][0]
    assert not r["allowed"]
    assert d["function"] == "PlanFunction" and d["role"] == "PlanRole"
    assert r["message"] == (
        f"User: arn:aws:sts::{MGMT}:assumed-role/fleetpatch-plan-us-east-1/fleetpatch-plan "
        f"is not authorized to perform: dynamodb:PutItem on resource: {TABLE_ARN} "
        "because no identity-based policy allows the dynamodb:PutItem action")


def test_target_role_without_send_command_denies_dispatch(tmp_path):
    # GIVEN infra/target-account.yaml without ssm:SendCommand
    p = iam.Policies(fleet(), target_template=target_without_send_command(tmp_path))
    # WHEN dispatch, in a target account, sends AWS-RunPatchBaseline
    d = p.decide({"kind": "assumed-role", "account": MEMBER, "role": ROLE, "session": "fp-run"},
                 [{"action": "ssm:SendCommand",
                   "resource": "arn:aws:ssm:us-east-1::document/AWS-RunPatchBaseline"}])
    # THEN it is denied in the execution role's name
    r = d["results"][0]
    assert not r["allowed"] and d["role"] == "ExecutionRole"
    assert f"assumed-role/{ROLE}/fp-run is not authorized to perform: ssm:SendCommand" \
        in r["message"]


def test_the_target_role_allows_hooks_only_under_its_stackset_prefix():
    target = {"kind": "assumed-role", "account": MEMBER, "role": ROLE, "session": "s"}
    doc = f"arn:aws:ssm:us-east-1:{MEMBER}:document"
    hooks_doc = "arn:aws:ssm:us-east-1::document/AWS-RunPatchBaselineWithHooks"

    def allowed(prefix: str, action: str, resource: str) -> bool:
        p = iam.Policies(fleet(), hook_document_prefix=prefix)
        return p.decide(target, [{"action": action, "resource": resource}])["results"][0][
            "allowed"]
    # GIVEN the StackSet's default, no HookDocumentPrefix
    # THEN the role may neither send the hooks document nor read any document
    assert not allowed("", "ssm:SendCommand", hooks_doc)
    assert not allowed("", "ssm:DescribeDocument", f"{doc}/Patch-Drain")
    # GIVEN HookDocumentPrefix "Patch-"
    # THEN it may send the hooks document and read the account's Patch-* documents only
    assert allowed("Patch-", "ssm:SendCommand", hooks_doc)
    assert allowed("Patch-", "ssm:DescribeDocument", f"{doc}/Patch-Drain")
    assert not allowed("Patch-", "ssm:DescribeDocument", f"{doc}/Other-Drain")
    assert not allowed("Patch-", "ssm:DescribeDocument",
                       "arn:aws:ssm:us-east-1:999999999999:document/Patch-Drain")
    # AND it may not run a hook document directly
    assert not allowed("Patch-", "ssm:SendCommand", f"{doc}/Patch-Drain")


def test_assume_role_needs_the_organization_and_the_trust_policy():
    p = iam.Policies(fleet())
    role = f"arn:aws:iam::{OUTSIDER}:role/{ROLE}"
    org = "o-e2e0000001"

    def assume(app, context):
        return p.decide({"kind": "app", "app": app},
                        [{"action": "sts:AssumeRole", "resource": role,
                          "context": context}])["results"][0]
    # GIVEN a role in an account outside the organization: no aws:ResourceOrgID
    # THEN the orchestrator role may not assume it
    assert not assume("fleetpatch-expand", {"aws:PrincipalOrgID": org})["allowed"]
    # GIVEN a member account, THEN expand may, and plan (another role) may not
    ok = {"aws:PrincipalOrgID": org, "aws:ResourceOrgID": org}
    assert assume("fleetpatch-expand", ok)["allowed"]
    assert not assume("fleetpatch-plan", ok)["allowed"]


def test_unattributed_callers_are_denied():
    p = iam.Policies(fleet())
    for principal in ({"kind": "anonymous"}, {"kind": "app", "app": "someone-else"},
                      {"kind": "assumed-role", "account": MEMBER, "role": "OtherRole",
                       "session": "x"}):
        r = p.decide(principal, [{"action": "dynamodb:GetItem", "resource": TABLE_ARN}])
        assert not r["results"][0]["allowed"], (principal, r)


def test_condition_operators_the_evaluator_cannot_check_are_refused(tmp_path):
    # GIVEN a template whose condition uses an operator moto's evaluator ignores
    t = without(iam.TEMPLATE, tmp_path, r"StringEquals: \{ events:source: fleetpatch \}",
                "StringLike: { events:source: fleet* }")
    # THEN loading it fails, instead of ignoring the condition
    with pytest.raises(iam.TemplateError, match="StringLike"):
        iam.Policies(fleet(), template=t)


# -- fleetsim + evaluator, seen through boto3 -----------------------------------------------
def _wait_line(proc, pattern: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(pattern, line or "")
        if m:
            return m.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
    raise TimeoutError(pattern)


@pytest.fixture
def gate(tmp_path):
    """fleetsim in front of the evaluator, with plan's PutItem and the target
    role's SendCommand removed from copies of the templates (no moto: allowed forwarded
    calls answer 501, denied ones never leave fleetsim)."""
    binary = localstack.target_dir() / "debug" / "fleetsim"
    if not binary.exists():
        subprocess.run(["cargo", "build", "-p", "fleetsim"], cwd=ROOT, check=True)
    procs = []
    try:
        ev = subprocess.Popen([sys.executable, str(ROOT / "tests/localstack/iam.py"),
                               "--fleet", str(FLEET), "--port", "0",
                               "--template", str(plan_without_put_item(tmp_path)),
                               "--target-template", str(target_without_send_command(tmp_path))],
                              stdout=subprocess.PIPE, text=True)
        procs.append(ev)
        iam_addr = _wait_line(ev, r"listening on (\S+)")
        sim = subprocess.Popen([str(binary), "--fleet", str(FLEET), "--port", "0",
                                "--iam-url", f"http://{iam_addr}"],
                               stdout=subprocess.PIPE, text=True)
        procs.append(sim)
        yield "http://" + _wait_line(sim, r"listening on (\S+)")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def client(url, service, app=None, creds=("testing", "testing", None)):
    cfg = Config(retries={"max_attempts": 1}, user_agent_appid=app)
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=creds[0], aws_secret_access_key=creds[1],
                        aws_session_token=creds[2], config=cfg)


def denied(call) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as e:
        call()
    err = e.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], \
        err["Error"].get("Message", "")


def test_a_removed_permission_is_refused_as_the_service_refuses(gate):
    # WHEN plan records a run with the permission removed
    code, status, msg = denied(lambda: client(gate, "dynamodb", "fleetpatch-plan").put_item(
        TableName="fleetpatch-runs", Item={"PK": {"S": "x"}, "SK": {"S": "y"}}))
    # THEN DynamoDB's AccessDeniedException, naming plan's role, the action and the table
    assert (code, status) == ("AccessDeniedException", 400)
    assert "assumed-role/fleetpatch-plan-us-east-1/fleetpatch-plan" in msg
    assert f"dynamodb:PutItem on resource: {TABLE_ARN}" in msg

    # WHEN dispatch assumes the execution role and sends a command without ssm:SendCommand
    sts = client(gate, "sts", "fleetpatch-dispatch")
    c = sts.assume_role(RoleArn=f"arn:aws:iam::{MEMBER}:role/{ROLE}",
                        RoleSessionName="fleetpatch-iam-test")["Credentials"]
    ssm = client(gate, "ssm", "fleetpatch-dispatch",
                 (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]))
    code, status, msg = denied(lambda: ssm.send_command(
        DocumentName="AWS-RunPatchBaseline", InstanceIds=["i-0e2e4100000000001"],
        Parameters={"Operation": ["Install"]}))
    # THEN SSM's AccessDeniedException in the execution role's name
    assert (code, status) == ("AccessDeniedException", 400)
    assert f"assumed-role/{ROLE}/fleetpatch-iam-test is not authorized to perform: " \
           "ssm:SendCommand" in msg


def test_sts_names_the_function_role_when_the_target_account_has_no_role(gate):
    # GIVEN an organization account without the execution role (fleet account c-no-role)
    no_role = "230000000002"
    # WHEN expand, whose role may assume it, tries
    code, status, msg = denied(lambda: client(gate, "sts", "fleetpatch-expand").assume_role(
        RoleArn=f"arn:aws:iam::{no_role}:role/{ROLE}", RoleSessionName="fleetpatch-run"))
    # THEN STS refuses it as AWS does, naming the caller's own role, not a stand-in user
    assert (code, status) == ("AccessDenied", 403)
    assert msg.startswith(
        f"User: arn:aws:sts::{MGMT}:assumed-role/fleetpatch-orchestrator-us-east-1/"
        "fleetpatch-expand is not authorized to perform: sts:AssumeRole on resource: "
        f"arn:aws:iam::{no_role}:role/{ROLE}"), msg


def test_each_service_answers_its_own_access_denied(gate):
    settle = "fleetpatch-settle"   # settle's role grants DynamoDB only
    cases = {
        "sts": (lambda: client(gate, "sts", settle).assume_role(
            RoleArn=f"arn:aws:iam::{MEMBER}:role/{ROLE}", RoleSessionName="nope"),
            ("AccessDenied", 403)),
        "organizations": (lambda: client(gate, "organizations", settle).list_children(
            ParentId="r-e2e0", ChildType="ORGANIZATIONAL_UNIT"),
            ("AccessDeniedException", 400)),
        "events": (lambda: client(gate, "events", settle).put_events(
            Entries=[{"Source": "fleetpatch", "DetailType": "x", "Detail": "{}"}]),
            ("AccessDeniedException", 400)),
        "stepfunctions": (lambda: client(gate, "stepfunctions", settle).start_execution(
            stateMachineArn=f"arn:aws:states:us-east-1:{MGMT}:stateMachine:fleetpatch-patching"),
            ("AccessDeniedException", 400)),
        "lambda": (lambda: client(gate, "lambda", settle).invoke(FunctionName="plan"),
                   ("AccessDeniedException", 403)),
        "ssm": (lambda: client(gate, "ssm", settle).list_commands(),
                ("AccessDeniedException", 400)),
        "resource-groups": (lambda: client(gate, "resource-groups", settle)
                            .list_group_resources(Group="e2e-a"), ("ForbiddenException", 403)),
        "dynamodb (no app name)": (lambda: client(gate, "dynamodb").get_item(
            TableName="fleetpatch-runs", Key={"PK": {"S": "x"}, "SK": {"S": "y"}}),
            ("AccessDeniedException", 400)),
    }
    for name, (call, expected) in cases.items():
        code, status, msg = denied(call)
        assert (code, status) == expected, (name, code, status, msg)
        assert "is not authorized to perform" in msg, (name, msg)


# -- end to end -----------------------------------------------------------------------------
@pytest.mark.iam_denials("sts:AssumeRole")
def test_account_outside_the_organization_is_access_denied_by_iam(stack):
    # GIVEN a member account and an account outside the organization, both with the role
    # WHEN a run targets both by ID
    run = execute(stack, "iam-org", base_input(resourceGroup="e2e-iam",
                                               accounts=[MEMBER, OUTSIDER]))
    locs = run.locations
    # THEN the member is patched, and the outsider's location ends AccessDenied: the
    # orchestrator role's aws:ResourceOrgID condition refused the AssumeRole, and the
    # reason is IAM's message
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    assert locs[f"{MEMBER}/us-east-1"]["outcome"] == "Succeeded", describe(run)
    out = locs[f"{OUTSIDER}/us-east-1"]
    assert out["outcome"] == "AccessDenied", describe(run)
    assert "is not authorized to perform: sts:AssumeRole" in out["reason"], out["reason"]
    assert not [c for c in run.commands if c["account"] == OUTSIDER]
    denials = [d for d in stack.oracle("iam")["denied"]
               if d["resource"] == f"arn:aws:iam::{OUTSIDER}:role/{ROLE}"]
    assert denials and {d["role"] for d in denials} == {"OrchestratorRole"}, denials
    assert not [a for a in stack.oracle("assumed") if OUTSIDER in a["role_arn"]
                and run.run_id in a["session_name"] and a["result"] == "Success"]


# Granted, but used by AWS on fleetpatch's behalf (never a call fleetpatch makes, so
# never seen locally), or called on a path no scenario takes yet. "[Role/]action pattern"
# -> why.
USED_BY_AWS = {
    "SettleRole/dynamodb:Query": "settle lists a location's instances when it ended in Error",
    "kms:*": "DynamoDB (SSE-KMS) and Lambda (environment) use the key for the caller",
    "logs:*": "Lambda and Step Functions write their own logs",
    "xray:*": "Lambda and Step Functions send traces (Tracing: Active)",
    "tag:GetResources": "ListGroupResources resolves tag-query groups with it",
    "cloudformation:*": "ListGroupResources resolves CloudFormation stack groups with it",
    "states:StartExecution": "Distributed Map children (moto starts them in process)",
    "states:DescribeExecution": "Distributed Map children (moto, in process)",
    "states:StopExecution": "Distributed Map children (moto, in process)",
}


@pytest.mark.run_last
def test_every_granted_permission_was_used_by_the_suite(request):
    """Least privilege: every action a role grants was allowed to some call during the
    e2e suite, or is listed in USED_BY_AWS. Runs last, and only on a full e2e run."""
    opt = request.config.option
    ran = {i.nodeid.split("::")[0] for i in request.session.items}
    if opt.keyword or opt.markexpr or "test_scenarios.py" not in {Path(n).name for n in ran}:
        pytest.skip("needs the whole e2e suite in this session")
    if not IAM_USED:
        pytest.skip("IAM evaluation was off")
    decisions = [{"allowed": True, "role": r, "action": a} for r, a in IAM_USED]
    unused = iam.unused_grants(iam.Policies(fleet()), decisions, USED_BY_AWS)
    assert not unused, "granted but never used by the e2e suite:\n" + "\n".join(unused)
