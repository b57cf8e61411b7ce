"""The delayed-start state machine of infra/template.yaml (offsets other than 0, 7 and 14
days after Patch Tuesday) can never start the same month's run twice: the patching run's
execution name is derived from the schedule's scheduled time, so a second start of that
month is ExecutionAlreadyExists, which ends the delayed start quietly instead of retrying."""

import json
import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
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
    condition, delayed, _direct = target_input["If"]
    assert condition == "NeedsDelayedStart"
    template, _values = delayed["Sub"]
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
