"""Each function of infra/template.yaml may write its own log streams, named as IAM names
them. AWS::Logs::LogGroup's `Arn` attribute already ends in `:*`
(`arn:aws:logs:R:A:log-group:NAME:*`), so the grant is that ARN itself; appending another
`:*` would name `log-group:NAME:*:*`, a resource no AWS documentation uses."""

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "localstack"))
import iam  # noqa: E402  (the local stack's reader of the templates)

ACCOUNT = "111111111111"
POLICIES = iam.Policies({"management_account": ACCOUNT})
WRITES = ("logs:CreateLogStream", "logs:PutLogEvents")


@pytest.mark.parametrize("binary", ["plan", "expand", "dispatch", "settle", "gate", "aggregate"])
def test_a_function_may_write_its_own_log_streams(binary):
    # GIVEN the function's role as deployed, and its log group
    role = POLICIES.functions[binary]["role"]
    group = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/fleetpatch-{binary}"
    stream = f"{group}:log-stream:2026/11/10/[$LATEST]0123456789abcdef"
    # WHEN Lambda creates a stream and writes to it under the role
    for action in WRITES:
        decision = iam.policy_decision(role.statements, action, stream, {})
        # THEN IAM allows it
        assert decision == iam.PermissionResult.PERMITTED, (action, stream)
    # AND the log resources granted are log groups' ARNs as CloudFormation returns them
    granted = [r for s in role.statements if set(WRITES) & set(s["Action"])
               for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]
    assert f"{group}:*" in granted, granted
    for r in granted:
        assert r.startswith(f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/"), r
        assert r.endswith(":*") and not r.endswith(":*:*"), f"{r}: not a log group's ARN"
