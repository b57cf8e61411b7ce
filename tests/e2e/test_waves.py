"""Waves (issue 11): a run in ordered waves, each settled and soaked before the next starts,
and stopped for good when a wave fails its gate. Judged from fleetsim's oracle: the
commands it received and the roles it was asked to assume. Accounts 48xxxxxxxxxx of
tests/fleets/e2e.toml."""

from __future__ import annotations

import datetime

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
    assert run.completed_event()["detail"]["status"] == "StoppedByGate"


def test_the_next_wave_starts_only_after_the_soak_on_the_simulated_clock(stack):
    # GIVEN a canary, soaking 10 minutes, then the OU that holds it and one more account
    run_input = waves_input([
        {"name": "first", "accounts": [SOAK_FIRST], "soakMinutes": 10},
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
