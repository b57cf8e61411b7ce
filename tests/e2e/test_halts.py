"""Halts (issue 11): the maintenance window's end (`notAfter`) and `stopOnAlarms`. Once a
run is halted nothing new starts anywhere: pending instances end NotStarted with the halt's
reason, commands in flight finish, and the run ends StoppedByWindow / StoppedByAlarm.
Accounts 47xxxxxxxxxx of tests/fleets/e2e.toml; the alarms are moto's CloudWatch alarms."""

from __future__ import annotations

import datetime
import time
import uuid

from conftest import base_input, describe, execute
from test_input_strict import assert_rejected_at_plan

US = "us-east-1"
WINDOW, ALARM = "470000000001", "470000000002"


def iso_in(seconds: float) -> str:
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_ms(iso: str) -> int:
    return int(datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")
               .replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def halt_input(account: str, **kw) -> dict:
    return base_input(resourceGroup="e2e-halt", accounts=[account], targetConcurrency="1",
                      **kw)


def not_started_reasons(run, location: str) -> list[str]:
    return [i.get("statusDetails") for i in run.instances(location).values()
            if i.get("state") == "NotStarted"]


def test_no_command_starts_after_the_window_closes(stack):
    # GIVEN six instances sent one at a time, 5 s each, and a window that closes in 8 s
    not_after = iso_in(8)
    # WHEN the run goes
    run = execute(stack, "halt-window", halt_input(WINDOW, notAfter=not_after), timeout=120)
    loc = f"{WINDOW}/{US}"
    # THEN some instances were patched, none was sent a command after the window's end,
    # and the others ended NotStarted, "maintenance window closed"
    sent = run.commands
    assert sent, describe(run)
    late = [c for c in sent if c["received_wall_ms"] > epoch_ms(not_after)]
    assert late == [], late
    reasons = not_started_reasons(run, loc)
    assert reasons and set(reasons) == {"maintenance window closed"}, describe(run)
    assert len(run.sent_instance_ids()) + len(reasons) == 6
    # AND the commands in flight finished; the location and the run say why they stopped
    assert run.locations[loc]["outcome"] == "Stopped", describe(run)
    assert "maintenance window closed" in run.locations[loc]["reason"]
    assert run.record["status"] == "StoppedByWindow", describe(run)
    assert run.completed_event()["detail"]["status"] == "StoppedByWindow"


def test_an_alarm_in_alarm_stops_the_run_and_is_named(stack):
    # GIVEN a real CloudWatch alarm of the management account, OK at the start
    name = f"e2e-api-5xx-{uuid.uuid4().hex[:6]}"
    cw = stack.client("cloudwatch")
    cw.put_metric_alarm(AlarmName=name, MetricName="5xx", Namespace="e2e", Statistic="Sum",
                        Period=60, EvaluationPeriods=1, Threshold=1.0,
                        ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="e2e start")
    arn = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["AlarmArn"]
    run_input = halt_input(ALARM, stopOnAlarms=[arn])
    run_id = f"e2e-halt-alarm-{uuid.uuid4().hex[:8]}"
    arn_exec = stack.start_run(run_input, name=run_id)

    # WHEN the first command has gone out, the alarm goes into ALARM
    deadline = time.monotonic() + 60
    while not [c for c in stack.oracle("commands") if run_id in (c.get("comment") or "")]:
        assert time.monotonic() < deadline, "no command was sent"
        time.sleep(0.5)
    cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="e2e: errors")
    stack.wait_execution(arn_exec, timeout=120)

    # THEN the run ends StoppedByAlarm, naming the alarm; pending instances ended NotStarted
    # with the alarm as their reason; and no command started after the halt was recorded
    record = stack.run_record(run_id)
    assert record["status"] == "StoppedByAlarm", record
    assert name in record["halt"], record["halt"]
    loc = f"{ALARM}/{US}"
    reasons = [i.get("statusDetails") for i in stack.instances(run_id, loc).values()
               if i.get("state") == "NotStarted"]
    assert reasons and set(reasons) == {f"alarm {arn} in ALARM"}, reasons
    halted_ms = epoch_ms(record["haltedAt"])
    commands = [c for c in stack.oracle("commands") if run_id in (c.get("comment") or "")]
    assert [c for c in commands if c["received_wall_ms"] >= halted_ms + 1000] == []


def test_a_window_end_in_the_past_and_an_unknown_alarm_are_refused_at_plan(stack):
    # GIVEN a window that closed a minute ago, and an alarm that does not exist
    missing = f"arn:aws:cloudwatch:{US}:111111111111:alarm:no-such-alarm"
    bad = halt_input(WINDOW, notAfter=iso_in(-60), stopOnAlarms=[missing])
    # WHEN it is started
    run = execute(stack, "halt-refused", bad, timeout=60)
    # THEN plan refuses it naming both fields, and the fleet is never called
    assert_rejected_at_plan(stack, run, ["notAfter", "has already passed", "stopOnAlarms[0]",
                                         "does not exist"])

