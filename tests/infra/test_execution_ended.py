"""An execution stopped with the console's "Stop execution" (ABORTED), or timed out, still
leaves a record: infra/template.yaml's rule on the patching state machine's executions sends
the event, transformed into aggregate's request, to the aggregate function, which may be
invoked by EventBridge. moto does not emit these events, so the e2e test
(tests/e2e/test_cli.py) delivers what this rule would deliver, built by `deliver` below."""

import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "infra"))
from test_delayed_start import TEMPLATE  # noqa: E402  (the template, tags as {"Tag": value})

RESOURCES = TEMPLATE["Resources"]


def rule() -> dict:
    return RESOURCES["ExecutionEndedRule"]["Properties"]


def deliver(event: dict) -> dict:
    """What the rule's target receives for `event`: its InputTransformer applied as
    EventBridge does (a string placeholder outside quotes becomes a JSON string)."""
    transformer = rule()["Targets"][0]["InputTransformer"]
    text = transformer["InputTemplate"]
    for name, path in transformer["InputPathsMap"].items():
        value = event
        for key in path.removeprefix("$.").split("."):
            value = value[key]
        text = text.replace(f"<{name}>", json.dumps(value))
    return json.loads(text)


def status_change(name: str, status: str, machine: str) -> dict:
    """A "Step Functions Execution Status Change" event, as EventBridge documents it."""
    execution = machine.replace(":stateMachine:", ":execution:") + f":{name}"
    return {
        "version": "0", "id": "315c1398-40ff-a850-213b-158f73e60175",
        "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
        "account": machine.split(":")[4], "time": "2026-11-30T19:00:00Z",
        "region": machine.split(":")[3], "resources": [execution],
        "detail": {"executionArn": execution, "stateMachineArn": machine, "name": name,
                   "status": status, "startDate": 1764529200000, "stopDate": 1764529260000,
                   "input": "{}", "output": None, "inputDetails": {"included": True},
                   "outputDetails": None, "error": None, "cause": None},
    }


def test_the_rule_matches_the_patching_machines_stopped_and_timed_out_executions():
    pattern = rule()["EventPattern"]
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail-type"] == ["Step Functions Execution Status Change"]
    assert sorted(pattern["detail"]["status"]) == ["ABORTED", "TIMED_OUT"]
    # the exact ARN: the Distributed Map's children (ARN + "/label") are not matched
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": "PatchingStateMachine"}]
    assert rule()["State"] == "ENABLED" and "EventBusName" not in rule()


def test_the_rule_sends_aggregate_the_run_and_how_its_execution_ended():
    # GIVEN a stopped execution's event
    event = status_change("run-20261130-190000-1a2b", "ABORTED",
                          "arn:aws:states:us-east-1:111111111111:stateMachine:fleetpatch-patching")
    # WHEN the rule delivers it
    target = rule()["Targets"][0]
    request = deliver(event)
    # THEN aggregate receives its request: the run ID and the execution's end
    assert target["Arn"] == {"GetAtt": "AggregateFunction.Arn"}
    assert request == {"runId": "run-20261130-190000-1a2b", "executionEnded": "ABORTED"}
    # AND the field names are those aggregate reads (shared/src/task.rs, camelCase)
    task = (ROOT / "shared/src/task.rs").read_text()
    assert re.search(r"pub execution_ended: Option<String>", task)


def test_eventbridge_may_invoke_aggregate_for_this_rule_only():
    perm = RESOURCES["ExecutionEndedPermission"]["Properties"]
    assert perm["FunctionName"] == {"GetAtt": "AggregateFunction.Arn"}
    assert perm["Action"] == "lambda:InvokeFunction"
    assert perm["Principal"] == "events.amazonaws.com"
    assert perm["SourceArn"] == {"GetAtt": "ExecutionEndedRule.Arn"}
