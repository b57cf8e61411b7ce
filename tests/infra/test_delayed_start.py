"""The monthly schedule of infra/template.yaml can never start the same month's run twice,
whatever PatchTuesdayOffsetDays is: the schedule always starts the small delayed-start state
machine (waitSeconds 0 for offsets 0, 7 and 14), which names the patching run after the
schedule's scheduled time, so a second start of that month is ExecutionAlreadyExists, which
ends the delayed start quietly instead of retrying. (EventBridge Scheduler delivers at least
once, and its Step Functions target cannot name the execution.)"""

import json
import pathlib
import re
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "localstack"))
import iam  # noqa: E402  (the local stack's reader of the templates)
# Step Functions execution names: 1-80 characters, none of whitespace, brackets, wildcards,
# " # % \ ^ | ~ ` $ & , ; : / or control characters.
EXECUTION_NAME = re.compile(r'^[^\s<>{}\[\]?*"#%\\^|~`$&,;:/\x00-\x1f\x7f]{1,80}$')


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Sub, !Ref, ...) as {"Tag": value}."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _tag)
TEMPLATE = yaml.load((ROOT / "infra/template.yaml").read_text(), Loader=CfnLoader)


def _split_args(s):
    args, depth, quoted, cur = [], 0, False, ""
    for ch in s:
        if ch == "'" and depth == 0:
            quoted = not quoted
        if ch == "," and depth == 0 and not quoted:
            args.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")") if not quoted else 0
        cur += ch
    return args + [cur.strip()] if cur.strip() else args


def intrinsic(expr, data):
    """Evaluates the intrinsic functions this template uses: States.Format, States.StringSplit,
    States.ArrayGetItem, with string literals, numbers and $.field paths as arguments."""
    expr = expr.strip()
    if expr.startswith("'"):
        return expr[1:-1]
    if expr.startswith("$."):
        return data[expr[2:]]
    if re.fullmatch(r"\d+", expr):
        return int(expr)
    name, rest = expr.split("(", 1)
    args = [intrinsic(a, data) for a in _split_args(rest[:-1])]
    if name == "States.Format":
        out = args[0]
        for a in args[1:]:
            out = out.replace("{}", str(a), 1)
        return out
    if name == "States.StringSplit":
        return [p for p in re.split("[" + re.escape(args[1]) + "]", args[0]) if p]
    if name == "States.ArrayGetItem":
        return args[0][args[1]]
    raise AssertionError(f"unexpected intrinsic {name}")


def start_run_state():
    definition = TEMPLATE["Resources"]["DelayedStartStateMachine"]["Properties"]["Definition"]
    return definition, definition["States"]["StartRun"]


def schedule_input_for_delayed_start():
    target_input = TEMPLATE["Resources"]["MonthlySchedule"]["Properties"]["Target"]["Input"]
    template, _values = target_input["Sub"]
    return template


def test_the_patching_run_is_named_after_the_scheduled_day():
    # GIVEN the delayed start's StartRun state and the schedule's input to it
    _, start_run = start_run_state()
    payload = schedule_input_for_delayed_start()
    # THEN the schedule passes its scheduled time, and the run's name is derived from it
    assert '"scheduledTime":"<aws.scheduler.scheduled-time>"' in payload, payload
    name_expr = start_run["Parameters"].get("Name.$")
    assert name_expr, "StartRun sets no execution name: every start is a new run"
    # WHEN two starts of the same month's schedule, and the next month's, are named
    name = lambda t: intrinsic(name_expr, {"scheduledTime": t})  # noqa: E731
    first, again = name("2026-11-10T09:00:00Z"), name("2026-11-10T09:00:00Z")
    december = name("2026-12-08T09:00:00Z")
    # THEN the month's starts share one valid execution name, and the next month has its own
    assert first == again == "scheduled-2026-11-10"
    assert december != first
    for n in (first, december):
        assert EXECUTION_NAME.match(n), n


def test_a_second_start_of_the_month_ends_quietly_without_retrying():
    # GIVEN the StartRun state
    definition, start_run = start_run_state()
    exists = "StepFunctions.ExecutionAlreadyExistsException"
    # THEN ExecutionAlreadyExists is not retried (its rule comes before States.ALL) ...
    retry_errors = [r["ErrorEquals"] for r in start_run["Retry"]]
    assert retry_errors[0] == [exists] and start_run["Retry"][0]["MaxAttempts"] == 0, retry_errors
    # ... and is caught into a Succeed state: the month's run exists, nothing more to do
    catch = [c for c in start_run.get("Catch", []) if exists in c["ErrorEquals"]]
    assert catch, start_run
    assert definition["States"][catch[0]["Next"]]["Type"] == "Succeed"
    json.dumps(definition)  # the definition stays plain JSON data


def deployed(offset: int) -> iam.Resolver:
    """The template as CloudFormation resolves it with PatchTuesdayOffsetDays=offset."""
    template = iam.load_template(ROOT / "infra/template.yaml")
    params = {"PatchTuesdayOffsetDays": str(offset), "RunAccounts": ["123456789012"],
              "RunRegions": ["us-east-1"], "RunExcludeAccounts": [""]}
    return iam.Resolver(template, params, "123456789012")


def exists(stack: iam.Resolver, logical_id: str) -> bool:
    condition = stack.resource(logical_id).get("Condition")
    return condition is None or stack.condition(condition)


@pytest.mark.parametrize("offset,wait_days", [(0, 0), (7, 0), (14, 0), (3, 3), (21, 7)])
def test_every_schedule_starts_the_run_under_the_scheduled_days_name(offset, wait_days):
    # GIVEN the stack deployed with PatchTuesdayOffsetDays=offset
    stack = deployed(offset)
    # WHEN the schedule fires (its target and input as deployed)
    target = stack.resolve(stack.resource("MonthlySchedule")["Properties"]["Target"])
    namer = "DelayedStartStateMachine"
    # THEN it starts the naming state machine, never the patching one directly ...
    assert exists(stack, namer), f"offset {offset}: no naming state machine is deployed"
    assert target["Arn"] == stack.ref(namer), \
        f"offset {offset}: the schedule starts {target['Arn']} directly, unnamed"
    # ... with the scheduled time, the days to wait and the run input ...
    payload = json.loads(target["Input"])
    assert payload["scheduledTime"] == "<aws.scheduler.scheduled-time>"
    assert payload["waitSeconds"] == wait_days * 86400
    assert payload["run"]["accounts"] == ["123456789012"]
    # ... which starts the patching state machine under the scheduled day's name
    machine = stack.resource(namer)["Properties"]
    assert stack.resolve(machine["DefinitionSubstitutions"]["PatchingStateMachineArn"]) \
        == stack.ref("PatchingStateMachine")
    start_run = machine["Definition"]["States"]["StartRun"]["Parameters"]
    name = intrinsic(start_run["Name.$"], {"scheduledTime": "2026-11-10T09:00:00Z"})
    assert name == "scheduled-2026-11-10"
    # AND the scheduler may start only that machine, and that machine only the patching run
    scheduler = [s for s in stack.resolve(stack.resource("SchedulerRole")["Properties"]
                                          ["Policies"])[0]["PolicyDocument"]["Statement"]
                 if "states:StartExecution" in s["Action"]]
    assert [s["Resource"] for s in scheduler] == [target["Arn"]]
    namer_role = stack.resolve(stack.resource("DelayedStartRole")["Properties"]["Policies"])
    starts = [s["Resource"] for p in namer_role for s in p["PolicyDocument"]["Statement"]
              if "states:StartExecution" in s["Action"]]
    assert starts == [stack.ref("PatchingStateMachine")]
