"""Issue 7, section 3: SendCommand faults after the command exists (HTTP 500, 503), and
ListCommandInvocations throttled in the middle of dispatch rounds. The oracle (fleetsim) is
trusted over the code: it records every command each instance really received. Every
scenario also checks, through `execute`, that the run's counters equal its instance items."""

from __future__ import annotations

from collections import Counter

from conftest import base_input, describe, execute

US = "us-east-1"


def fault_count(run, before, op, field):
    """How many times `field` (dropped, injected_errors, throttled) happened to `op` during
    this run: the oracle's counters are simulator-wide, so take the difference."""
    def get(stats):
        return stats["calls"].get(op, {}).get(field, 0)
    return get(run.stats) - get(before)


def commands_per_instance(run, account):
    """How many commands each of the account's instances received (oracle)."""
    return {i: v["commands_received"] for i, v in run.oracle_instances.items()
            if v["account"] == account}


def assert_one_command_each_and_all_recorded(run, account, n):
    loc = f"{account}/{US}"
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    # exactly one command per instance (oracle), and every one of this run's
    per = commands_per_instance(run, account)
    assert len(per) == n, per
    assert set(per.values()) == {1}, f"commands per instance: {per}"
    assert sorted(run.sent_instance_ids(loc)) == sorted(per), run.commands
    # every instance recorded with what SSM says, the location Succeeded
    states = Counter(v["state"] for v in run.instances(loc).values())
    assert states == {"Succeeded": n}, (states, describe(run))
    for i, rec in run.instances(loc).items():
        assert rec.get("commandId") == run.oracle_instances[i]["last_command_id"], (i, rec)
    assert run.locations[loc]["outcome"] == "Succeeded", describe(run)
    assert run.summary["instanceStates"] == {"Succeeded": n}, run.summary


def _send_error_after_effect(stack, name, account, group, status, code):
    # GIVEN the account's first SendCommand takes effect, then answers `status` `code`
    stack.faults([{"kind": "error_after", "operation": "SendCommand", "account": account,
                   "count": 1, "status": status, "code": code}])
    before = stack.oracle("stats")
    # WHEN an Install runs over its 4 instances (window 2: at least two batches)
    run = execute(stack, name, base_input(resourceGroup=group, accounts=[account]))
    # THEN the fault fired, and still no instance got a second command; all are recorded
    assert fault_count(run, before, "ssm:SendCommand", "injected_errors") == 1, \
        run.stats["calls"]
    assert_one_command_each_and_all_recorded(run, account, 4)
    return run


def test_send_command_500_after_the_command_exists_is_not_sent_again(stack):
    _send_error_after_effect(stack, "cf500", "430000000001", "e2e-cf500",
                             500, "InternalServerError")


def test_send_command_503_after_the_command_exists_is_not_sent_again(stack):
    _send_error_after_effect(stack, "cf503", "430000000002", "e2e-cf503",
                             503, "ServiceUnavailable")


def test_list_command_invocations_throttled_mid_round_loses_no_count(stack):
    # GIVEN 8 instances of different durations, a window of 3 (several commands in flight
    # at once), and the account's ListCommandInvocations limited to one call every 2 s: a
    # round's first command is read, the next ones are throttled (past the SDK's retries),
    # so rounds fail part-way after recording some instances
    acct = "430000000003"
    stack.faults([{"kind": "throttle", "service": "ssm", "operation": "ListCommandInvocations",
                   "account": acct, "rate": 0.5, "burst": 1}])
    before = stack.oracle("stats")
    # WHEN an Install runs
    run = execute(stack, "cflist", base_input(resourceGroup="e2e-cflist", accounts=[acct],
                                              targetConcurrency="3"))
    # THEN the throttles happened, the run completed with one command per instance, every
    # instance recorded, and (checked in execute) the counters equal the instance items
    assert fault_count(run, before, "ssm:ListCommandInvocations", "throttled") > 0, \
        run.stats["calls"]
    assert_one_command_each_and_all_recorded(run, acct, 8)
    assert run.record["instancesDone"] == 8 and run.record["instancesSent"] == 8, run.record


def test_a_claim_left_by_a_failed_location_is_resolved_by_aggregate(stack):
    # GIVEN the account's first SendCommand takes effect but its answer is lost, and the
    # next round's ListCommands (the recovery) is refused, so the location ends Error with
    # its batch still Claimed
    acct = "430000000004"
    loc = f"{acct}/{US}"
    stack.faults([
        {"kind": "drop", "operation": "SendCommand", "account": acct, "count": 1},
        {"kind": "error", "operation": "ListCommands", "account": acct, "count": 1,
         "status": 400, "code": "InvalidFilterKey"},
    ])
    before = stack.oracle("stats")
    # WHEN an Install runs over its 2 instances (window 100%: one batch)
    run = execute(stack, "cfclaim", base_input(resourceGroup="e2e-cfclaim", accounts=[acct],
                                               targetConcurrency="100%"))
    assert fault_count(run, before, "ssm:SendCommand", "dropped") == 1, run.stats["calls"]
    assert fault_count(run, before, "ssm:ListCommands", "injected_errors") == 1, \
        run.stats["calls"]
    assert run.locations[loc]["outcome"] == "Error", describe(run)
    # THEN aggregate found the batch's command and adopted it: each instance records the
    # command it really received (oracle), exactly one each, and nothing is left Claimed
    per = commands_per_instance(run, acct)
    assert set(per.values()) == {1}, per
    inst = run.instances(loc)
    for i, rec in inst.items():
        assert rec["state"] != "Claimed", (i, rec)
        assert rec.get("commandId") == run.oracle_instances[i]["last_command_id"], (i, rec)
    assert "Claimed" not in run.summary["instanceStates"], run.summary["instanceStates"]
    assert "Claimed" not in run.locations[loc].get("counts", {}), run.locations[loc]
    assert run.record["instancesSent"] == 2, run.record


def test_an_80_character_run_id_recovers_each_batch_as_itself(stack):
    # GIVEN an execution name of 80 characters (the most Step Functions allows), two
    # batches of one instance each (window 1), and both SendCommand answers lost
    acct = "430000000005"
    loc = f"{acct}/{US}"
    stack.faults([{"kind": "drop", "operation": "SendCommand", "account": acct, "count": 2}])
    before = stack.oracle("stats")
    name = "cflong-" + "x" * 60   # e2e-<name>-<8 hex> = 80 characters
    # WHEN an Install runs
    run = execute(stack, name, base_input(resourceGroup="e2e-cflong", accounts=[acct],
                                          targetConcurrency="1"), timeout=150)
    assert len(run.run_id) == 80, run.run_id
    assert fault_count(run, before, "ssm:SendCommand", "dropped") == 2, run.stats["calls"]
    # THEN each batch's Comment fits in 100 characters and is its own, each batch recovered
    # its own command, and the run completed with one command per instance
    sent = [c for c in stack.oracle("commands") if c["account"] == acct]
    comments = [c["comment"] for c in sent]
    assert len(comments) == 2 and len(set(comments)) == 2, comments
    assert all(len(c) <= 100 for c in comments), comments
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    per = commands_per_instance(run, acct)
    assert set(per.values()) == {1}, per
    inst = run.instances(loc)
    for i, rec in inst.items():
        assert rec["state"] == "Succeeded", (i, rec)
        assert rec.get("commandId") == run.oracle_instances[i]["last_command_id"], (i, rec)
    assert run.locations[loc]["outcome"] == "Succeeded", describe(run)
