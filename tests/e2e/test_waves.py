"""Waves (issue 11): a run in ordered waves, each settled and soaked before the next starts,
and stopped for good when a wave fails its gate. Judged from fleetsim's oracle: the
commands it received and the roles it was asked to assume. Accounts 48xxxxxxxxxx of
tests/fleets/e2e.toml."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
import uuid

import stack as localstack
from conftest import base_input, describe, execute
from test_input_strict import assert_rejected_at_plan, touched_accounts

US = "us-east-1"
NO_ROLE, AFTER_GATE, SOAK_FIRST, SOAK_SECOND = (
    "480000000001", "480000000002", "480000000003", "480000000004")
WAVES_OU = "ou-e2e0-waves001"


def waves_input(waves: list[dict], **kw) -> dict:
    inp = base_input(resourceGroup="e2e-waves", waves=waves, **kw)
    del inp["accounts"]
    return inp


def sim_ms(iso: str) -> int:
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def test_a_canary_that_fails_its_gate_stops_every_later_wave(stack):
    # GIVEN a canary whose only location fails (no execution role), tolerating no failure,
    # and a wave after it
    run_input = waves_input([
        {"name": "canary", "accounts": [NO_ROLE], "locationErrorThreshold": "0"},
        {"name": "rest", "accounts": [AFTER_GATE]},
    ])
    # WHEN the run goes
    run = execute(stack, "waves-gate", run_input, timeout=120)
    # THEN the canary's location failed and its wave failed its gate
    assert run.locations[f"{NO_ROLE}/{US}"]["outcome"] == "AccessDenied", describe(run)
    waves = stack.waves(run.run_id)
    assert [w["status"] for w in waves] == ["GateFailed", "Skipped"], waves
    assert waves[0]["gate"] == {"passed": False, "locationsFailed": 1, "locationsTolerated": 0}
    # AND the later wave's location is Skipped, saying why
    later = run.locations[f"{AFTER_GATE}/{US}"]
    assert later["outcome"] == "Skipped", describe(run)
    assert later["reason"] == "wave canary failed its gate"
    assert waves[1]["reason"] == "wave canary failed its gate"
    # AND its account was never called: no AssumeRole, no command
    assert AFTER_GATE not in touched_accounts(stack, run)
    assert [c for c in run.commands if c["account"] == AFTER_GATE] == []
    # AND the run says it stopped at a gate
    assert run.record["status"] == "StoppedByGate", describe(run)
    detail = run.completed_event()["detail"]
    assert detail["status"] == "StoppedByGate"
    # AND the completion event carries the waves, the gate and the skip reason
    assert [(w["name"], w["status"]) for w in detail["waves"]] == [
        ("canary", "GateFailed"), ("rest", "Skipped")], detail["waves"]
    assert detail["waves"][0]["gate"]["locationsFailed"] == 1
    assert detail["waves"][1]["reason"] == "wave canary failed its gate"


def test_the_next_wave_starts_only_after_the_soak_on_the_simulated_clock(stack):
    # GIVEN a canary, soaking 10 minutes, with its own targetConcurrency (both instances at
    # once), then the OU that holds it and one more account (the run's 50%: one at a time)
    run_input = waves_input([
        {"name": "first", "accounts": [SOAK_FIRST], "soakMinutes": 10,
         "targetConcurrency": "100%"},
        {"name": "second", "accounts": [WAVES_OU]},
    ])
    # WHEN the run goes
    run = execute(stack, "waves-soak", run_input, timeout=180)
    assert run.record["status"] == "Succeeded", describe(run)
    # THEN the first wave's account got its commands, the second wave's the others: the
    # canary, named again through the OU, belongs to the first wave only (an overlap)
    first = [c for c in run.commands if c["account"] == SOAK_FIRST]
    second = [c for c in run.commands if c["account"] == SOAK_SECOND]
    assert first and second, describe(run)
    assert {c["account"] for c in run.commands} == {SOAK_FIRST, SOAK_SECOND}
    # AND each wave's location ran with its wave's target concurrency
    assert max(len(c["instance_ids"]) for c in first) == 2, first
    assert max(len(c["instance_ids"]) for c in second) == 1, second
    waves = stack.waves(run.run_id)
    assert [(w["name"], w["status"], w["locationCount"], w["overlaps"]) for w in waves] == [
        ("first", "Passed", 1, 0), ("second", "Passed", 1, 1)], waves
    # AND on the simulated clock, the second wave's first command came no earlier than the
    # first wave's last end plus the soak
    last_end = max(sim_ms(c["ended_at"]) for c in first)
    first_of_second = min(sim_ms(c["requested_at"]) for c in second)
    assert first_of_second >= last_end + 10 * 60 * 1000, (
        f"second wave started {(first_of_second - last_end) / 1000:.0f} s "
        "(simulated) after the first wave's last end")


def test_an_empty_wave_is_refused_naming_it(stack):
    # GIVEN a second wave that names no account
    run_input = waves_input([
        {"name": "canary", "accounts": [SOAK_FIRST]},
        {"name": "empty", "accounts": []},
    ])
    # WHEN it is started
    run = execute(stack, "waves-empty", run_input, timeout=60)
    # THEN plan refuses it, naming the wave's field, and the fleet is never called
    assert_rejected_at_plan(stack, run, ["waves[1].accounts", "must not be empty"])


def test_an_unknown_ou_in_a_wave_is_refused_naming_it(stack):
    # GIVEN a second wave naming an OU the organization does not have
    run_input = waves_input([
        {"name": "canary", "accounts": [SOAK_FIRST]},
        {"name": "rest", "accounts": ["ou-e2e0-nowhere1"]},
    ])
    # WHEN it is started
    run = execute(stack, "waves-unknown-ou", run_input, timeout=60)
    # THEN plan refuses it, naming the wave's entry, and the fleet is never called
    assert_rejected_at_plan(stack, run, ["waves[1].accounts[0]", "ou-e2e0-nowhere1"])


# -- approvals ----------------------------------------------------------------------------
CANARY, PROD = "480000000005", "480000000006"


def approval_input(timeout_minutes: int = 1440) -> dict:
    inp = waves_input([
        {"name": "canary", "accounts": [CANARY]},
        {"name": "prod", "accounts": [PROD], "approval": True,
         "approvalTimeoutMinutes": timeout_minutes},
    ])
    inp["resourceGroup"] = "e2e-waves-approval"
    return inp


def start_and_wait_for_approval(stack, name: str, run_input: dict) -> tuple[str, str]:
    """Starts a run and waits until its prod wave waits for its approval."""
    run_id = f"e2e-{name}-{uuid.uuid4().hex[:8]}"
    arn = stack.start_run(run_input, name=run_id)
    deadline = time.monotonic() + 90
    while not [w for w in stack.waves(run_id) if w["status"] == "AwaitingApproval"]:
        assert time.monotonic() < deadline, stack.waves(run_id)
        time.sleep(0.5)
    return run_id, arn


def cli(stack, *args):
    exe = localstack.target_dir() / "debug" / "fleetpatch"
    env = {**os.environ, "AWS_ENDPOINT_URL": stack.endpoint, "AWS_REGION": localstack.REGION,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}
    env.pop("AWS_PROFILE", None)
    argv = [str(exe), "--state-machine", stack.state["state_machine_arn"],
            "--table", stack.state["table"], *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def finished(stack, run_id: str, arn: str):
    stack.wait_execution(arn, timeout=120)
    events = stack.run_events(run_id, wait=15)
    commands = [c for c in stack.oracle("commands") if run_id in (c.get("comment") or "")]
    assumed = {a["role_arn"].split(":")[4] for a in stack.oracle("assumed")
               if run_id in a["session_name"]}
    return stack.run_record(run_id), stack.waves(run_id), events, commands, assumed


def test_an_approved_wave_starts_and_the_event_never_carries_the_token(stack):
    # GIVEN a run whose prod wave waits for its approval, after the canary
    run_id, arn = start_and_wait_for_approval(stack, "waves-approve", approval_input())
    token = stack.ddb.get_item(TableName=stack.state["table"], Key={
        "PK": {"S": f"RUN#{run_id}"}, "SK": {"S": "WAVE#001"}})["Item"]["taskToken"]["S"]
    # WHEN someone approves it with the command
    out = cli(stack, "approve", run_id, "--wave", "prod")
    assert out.returncode == 0, out.stderr
    record, waves, events, commands, _ = finished(stack, run_id, arn)
    # THEN the prod wave ran after the canary, and the run succeeded
    assert record["status"] == "Succeeded", record
    assert {c["account"] for c in commands} == {CANARY, PROD}
    assert [w["status"] for w in waves] == ["Passed", "Passed"], waves
    # AND the wave records who approved it, when and how
    decision = waves[1]["approvalDecision"]
    assert decision["approved"] is True and decision["via"] == "cli", decision
    # (the caller STS names: the local stack's operator identity)
    assert decision["by"] not in ("", "unknown"), decision
    assert out.stdout.strip().endswith(f"approved by {decision['by']}"), out.stdout
    # AND the awaiting-approval event named the wave and the canary's result, not the token
    waiting = [e for e in events if e["detail-type"] == "Patch Wave Awaiting Approval"]
    assert len(waiting) == 1, events
    assert waiting[0]["detail"]["wave"] == "prod"
    assert waiting[0]["detail"]["previousWaves"][0]["name"] == "canary"
    assert waiting[0]["detail"]["previousWaves"][0]["status"] == "Passed"
    assert token not in json.dumps(waiting[0])
    # AND the report shows the waves, the approval with them
    report = cli(stack, "report", run_id)
    assert report.returncode == 0, report.stderr
    assert "Wave canary: Passed, 1 location(s)" in report.stdout, report.stdout
    assert f"approved by {decision['by']} via cli" in report.stdout, report.stdout


def test_a_rejected_wave_sends_nothing_to_its_accounts(stack):
    # GIVEN a run whose prod wave waits for its approval
    run_id, arn = start_and_wait_for_approval(stack, "waves-reject", approval_input())
    # WHEN someone rejects it, saying why
    out = cli(stack, "reject", run_id, "--wave", "prod", "--reason", "change freeze")
    assert out.returncode == 0, out.stderr
    record, waves, _, commands, assumed = finished(stack, run_id, arn)
    # THEN nothing was sent to prod: no command, no AssumeRole
    assert PROD not in {c["account"] for c in commands} | assumed
    assert CANARY in {c["account"] for c in commands}
    # AND the wave is Rejected, saying who and why; its location Skipped; the run stopped
    assert waves[1]["status"] == "Rejected", waves
    decision = waves[1]["approvalDecision"]
    assert (decision["approved"], decision["via"], decision["reason"]) == (
        False, "cli", "change freeze"), decision
    location = stack.locations(run_id)[f"{PROD}/{US}"]
    assert location["outcome"] == "Skipped", location
    assert decision["by"] not in ("", "unknown"), decision
    assert location["reason"] == f"wave prod was rejected by {decision['by']}", location
    assert record["status"] == "StoppedByGate", record


def test_an_approval_that_times_out_counts_as_a_rejection(stack):
    # GIVEN a run whose prod wave waits at most a minute (a second of real time at x60)
    run_id = f"e2e-waves-timeout-{uuid.uuid4().hex[:8]}"
    arn = stack.start_run(approval_input(timeout_minutes=1), name=run_id)
    # WHEN nobody approves it
    record, waves, _, commands, assumed = finished(stack, run_id, arn)
    # THEN nothing was sent to prod, and the wave says it was not approved in time
    assert PROD not in {c["account"] for c in commands} | assumed
    assert waves[1]["status"] == "Rejected", waves
    assert waves[1]["approvalDecision"]["via"] == "timeout", waves[1]
    assert waves[1]["reason"] == "wave prod was not approved in time"
    assert record["status"] == "StoppedByGate", record
