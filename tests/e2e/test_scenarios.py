"""End-to-end scenarios a-m of issue 3: the real state machine, run by moto's interpreter,
calling the real functions (cargo lambda watch), against the simulated fleet (fleetsim,
tests/fleets/e2e.toml). Assertions read the DynamoDB records, the run summary, the
EventBridge events (rule -> SQS) and fleetsim's oracle, which is trusted over the code."""

from __future__ import annotations

from collections import Counter

from conftest import base_input, describe, execute

FAILED_LOCATION = {"ThresholdExceeded", "AccessDenied", "GroupNotFound", "Error"}
US, EU = "us-east-1", "eu-west-1"


def oracle_ids(run, account, region=None):
    return {i for i, v in run.oracle_instances.items()
            if v["account"] == account and (region is None or v["region"] == region)}


def assumed(stack, run):
    """The oracle's AssumeRole log for this run, each with the target account (parsed from
    the role ARN: refused entries carry no `account` field)."""
    return [{**a, "account": a["role_arn"].split(":")[4]} for a in stack.oracle("assumed")
            if run.run_id in a["session_name"]]


def assert_single_commands(run, ids):
    per = run.stats["commands_per_instance"]
    doubled = {i: per[i] for i in ids if per.get(i, 0) > 1}
    assert not doubled, f"instances with more than one command: {doubled}"


# -- a ---------------------------------------------------------------------------------------
def test_a_install_across_accounts_and_regions(stack):
    # GIVEN 2 accounts x 2 Regions, 3 online instances each, all succeeding
    accounts = ["210000000001", "210000000002"]
    # WHEN an Install runs over them
    run = execute(stack, "a", base_input(resourceGroup="e2e-a", accounts=accounts,
                                         regions=[US, EU]))
    # THEN the execution and the run succeed, every location Succeeded
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    assert run.record["status"] == "Succeeded", describe(run)
    expected = {f"{a}/{r}" for a in accounts for r in (US, EU)}
    assert set(run.locations) == expected
    assert {v["outcome"] for v in run.locations.values()} == {"Succeeded"}, describe(run)
    # every instance got exactly one command and succeeded (oracle), and the records agree
    ids = set().union(*(oracle_ids(run, a) for a in accounts))
    assert len(ids) == 12
    assert set(run.sent_instance_ids()) == ids
    assert_single_commands(run, ids)
    for i in ids:
        assert run.oracle_instances[i]["last_invocation"]["status"] == "Success"
        assert run.oracle_instances[i]["patch_state"]["MissingCount"] == 0
    for loc in expected:
        states = Counter(v["state"] for v in run.instances(loc).values())
        assert states == {"Succeeded": 3}, (loc, states)
    # compliance after: what the oracle says is installed, nothing missing
    comp = run.summary["compliance"]
    assert comp["instances"] == 12 and comp["compliantInstances"] == 12, comp
    assert comp["missing"] == 0 and comp["failed"] == 0, comp
    assert comp["installed"] == sum(run.oracle_instances[i]["patch_state"]["InstalledCount"]
                                    for i in ids), comp
    assert run.summary["instanceStates"] == {"Succeeded": 12}
    assert run.summary["locationOutcomes"] == {"Succeeded": 4}
    # events: started, then completed carrying the summary
    types = [e["detail-type"] for e in run.events]
    assert types.count("Patch Run Started") == 1, types
    done = run.completed_event()
    assert done["source"] == "fleetpatch"
    assert done["detail"]["status"] == "Succeeded"
    assert done["detail"]["instancesTargeted"] == 12


# -- b ---------------------------------------------------------------------------------------
def test_b_offline_stopped_unmanaged_never_sent(stack):
    # GIVEN 2 online instances plus connection_lost, inactive, stopped and unmanaged ones
    acct = "220000000001"
    run = execute(stack, "b", base_input(resourceGroup="e2e-b", accounts=[acct]))
    loc = f"{acct}/{US}"
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    by_agent = {v["agent"]: i for i, v in run.oracle_instances.items() if v["account"] == acct
                and v["agent"] != "online"}
    online = {i for i, v in run.oracle_instances.items() if v["account"] == acct
              and v["agent"] == "online"}
    # THEN only the online ones were ever sent a command (oracle)
    assert set(run.sent_instance_ids()) == online
    for agent, i in by_agent.items():
        assert run.oracle_instances[i]["commands_received"] == 0, agent
    # and each is recorded with a state that says why
    inst = run.instances(loc)
    assert len(inst) == 6, inst
    for i in online:
        assert inst[i]["state"] == "Succeeded"
    assert inst[by_agent["connection_lost"]]["state"] == "Offline"
    assert inst[by_agent["inactive"]]["state"] == "Offline"
    assert inst[by_agent["stopped"]]["state"] in {"Offline", "Unmanaged"}
    assert inst[by_agent["unmanaged"]]["state"] == "Unmanaged"
    assert inst[by_agent["connection_lost"]].get("pingStatus") == "ConnectionLost"
    assert inst[by_agent["inactive"]].get("pingStatus") == "Inactive"
    # the location itself is fine (unreachable instances are not errors)
    assert run.locations[loc]["outcome"] == "Succeeded", describe(run)
    assert run.locations[loc]["targeted"] == 6


# -- c ---------------------------------------------------------------------------------------
def test_c_account_without_role_is_access_denied(stack):
    ok, denied = "230000000001", "230000000002"
    run = execute(stack, "c", base_input(resourceGroup="e2e-c", accounts=[ok, denied]))
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    # THEN the location without the role ends AccessDenied, the other completes
    assert run.locations[f"{denied}/{US}"]["outcome"] == "AccessDenied", describe(run)
    assert "AccessDenied" in (run.locations[f"{denied}/{US}"].get("reason") or "")
    assert run.locations[f"{ok}/{US}"]["outcome"] == "Succeeded", describe(run)
    assert run.record["status"] == "CompletedWithErrors"
    assert run.completed_event()["detail"]["status"] == "CompletedWithErrors"
    # the oracle: the refused AssumeRole happened, nothing was sent there
    assert any(a["account"] == denied and a["result"] == "AccessDenied"
               for a in assumed(stack, run))
    assert run.sent_instance_ids(f"{denied}/{US}") == []
    assert set(run.sent_instance_ids(f"{ok}/{US}")) == oracle_ids(run, ok)
    problems = {p["location"]: p["outcome"] for p in run.summary["problemLocations"]}
    assert problems == {f"{denied}/{US}": "AccessDenied"}


# -- d ---------------------------------------------------------------------------------------
def test_d_group_missing_in_one_region(stack):
    acct = "240000000001"
    run = execute(stack, "d", base_input(resourceGroup="e2e-d", accounts=[acct],
                                         regions=[US, EU]))
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    assert run.locations[f"{acct}/{EU}"]["outcome"] == "GroupNotFound", describe(run)
    assert run.locations[f"{acct}/{US}"]["outcome"] == "Succeeded", describe(run)
    assert set(run.sent_instance_ids(f"{acct}/{US}")) == oracle_ids(run, acct, US)
    assert run.record["status"] == "CompletedWithErrors"
    assert run.summary["locationOutcomes"] == {"GroupNotFound": 1, "Succeeded": 1}


# -- e ---------------------------------------------------------------------------------------
def test_e_location_threshold_skips_the_rest(stack):
    # GIVEN 4 locations that would all fail (no role), one location at a time, threshold 0
    accounts = [f"25000000000{n}" for n in range(1, 5)]
    run = execute(stack, "e", base_input(resourceGroup="e2e-e", accounts=accounts,
                                         locationConcurrency="1", locationErrorThreshold="0"))
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    outcomes = Counter(v["outcome"] for v in run.locations.values())
    # THEN the first failure stops the run: later locations are Skipped and recorded
    assert len(run.locations) == 4
    assert outcomes["Skipped"] >= 1, describe(run)
    assert sum(n for o, n in outcomes.items() if o in FAILED_LOCATION) >= 1, describe(run)
    assert run.record["status"] == "StoppedByThreshold", describe(run)
    assert run.completed_event()["detail"]["status"] == "StoppedByThreshold"
    for loc in run.locations.values():
        if loc["outcome"] == "Skipped":
            assert loc.get("reason"), loc
    # skipped locations never assumed the role
    tried = {a["account"] for a in assumed(stack, run)}
    skipped = {k.split("/")[0] for k, v in run.locations.items() if v["outcome"] == "Skipped"}
    assert not (tried & skipped), (tried, skipped)
    assert run.commands == []


# -- f ---------------------------------------------------------------------------------------
def test_f_target_threshold_inside_a_location(stack):
    # GIVEN 20 instances that all fail; window 4, 1 error tolerated
    acct = "260000000001"
    loc = f"{acct}/{US}"
    run = execute(stack, "f", base_input(resourceGroup="e2e-f", accounts=[acct],
                                         targetConcurrency="4", targetErrorThreshold="1"))
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    # THEN the location stops: outcome ThresholdExceeded, the run completed with errors
    assert run.locations[loc]["outcome"] == "ThresholdExceeded", describe(run)
    assert run.record["status"] == "CompletedWithErrors"
    inst = run.instances(loc)
    states = Counter(v["state"] for v in inst.values())
    sent = set(run.sent_instance_ids(loc))
    # nothing new started after the threshold: far fewer than 20 were sent, never > window
    assert 2 <= len(sent) < 20, (len(sent), states)
    assert run.stats["max_in_flight"][loc] <= 4, run.stats["max_in_flight"]
    # the in-flight ones finished (every sent instance ended Failed, per the oracle too)
    for i in sent:
        assert inst[i]["state"] == "Failed", (i, inst[i])
        assert run.oracle_instances[i]["last_invocation"]["status"] == "Failed"
    # counts follow SSM's meaning: errors = Failed (+ Execution Timed Out), beyond tolerated
    assert states["Failed"] == len(sent)
    assert states["Failed"] > 1
    unsent = set(inst) - sent
    assert all(inst[i]["state"] in {"NotStarted", "Cancelled"} for i in unsent), states
    assert run.locations[loc]["tolerated"] == 1
    assert run.locations[loc]["errors"] == states["Failed"]


# -- g ---------------------------------------------------------------------------------------
def test_g_window_is_never_exceeded(stack):
    # GIVEN 130 instances in one location; targetConcurrency 10% -> window 13
    acct = "270000000001"
    loc = f"{acct}/{US}"
    run = execute(stack, "g", base_input(resourceGroup="e2e-g", accounts=[acct],
                                         targetConcurrency="10%", targetErrorThreshold="10%"))
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    assert run.locations[loc]["outcome"] == "Succeeded", describe(run)
    assert run.locations[loc]["window"] == 13
    # THEN several commands, the oracle's maximum in flight never above the window
    assert len(run.commands) >= 5, len(run.commands)
    assert 1 < run.stats["max_in_flight"][loc] <= 13, run.stats["max_in_flight"]
    ids = oracle_ids(run, acct, US)
    assert len(ids) == 130
    assert sorted(run.sent_instance_ids(loc)) == sorted(ids)  # each exactly once
    assert_single_commands(run, ids)
    assert Counter(v["state"] for v in run.instances(loc).values()) == {"Succeeded": 130}


# -- h ---------------------------------------------------------------------------------------
def test_h_throttling_storm(stack):
    # GIVEN half of the calls of this account throttled (SSM, Resource Groups)
    acct = "280000000001"
    stack.faults([{"kind": "throttle", "account": acct, "fraction": 0.5}])
    run = execute(stack, "h", base_input(resourceGroup="e2e-h", accounts=[acct],
                                         regions=[US, EU], targetConcurrency="4"),
                  timeout=360)
    calls = run.stats["calls"]
    # THEN calls were throttled, and still the run completes, each instance one command
    assert run.stats["total_throttled"] > 0, calls
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    assert run.record["status"] == "Succeeded", describe(run)
    ids = oracle_ids(run, acct)
    assert sorted(run.sent_instance_ids()) == sorted(ids)
    assert_single_commands(run, ids)
    assert not set(run.stats["instances_with_multiple_commands"]) & ids


# -- i ---------------------------------------------------------------------------------------
def test_i_dropped_send_command_response_no_duplicate(stack):
    # GIVEN the first SendCommand of this account takes effect but its response is dropped
    acct = "290000000001"
    stack.faults([{"kind": "drop", "operation": "SendCommand", "account": acct, "count": 1}])
    run = execute(stack, "i", base_input(resourceGroup="e2e-i", accounts=[acct]))
    assert run.stats["calls"]["ssm:SendCommand"]["dropped"] >= 1, run.stats["calls"]
    # THEN the run completes and no instance received two commands (oracle)
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    ids = oracle_ids(run, acct)
    assert_single_commands(run, ids)
    assert sorted(run.sent_instance_ids()) == sorted(ids)
    assert run.locations[f"{acct}/{US}"]["outcome"] == "Succeeded", describe(run)
    assert Counter(v["state"] for v in run.instances(f"{acct}/{US}").values()) \
        == {"Succeeded": 6}


# -- j ---------------------------------------------------------------------------------------
def test_j_invalid_input_fails_at_plan(stack):
    stack.oracle("reset", {})
    bad = base_input(operation="Patch", resourceGroup="has space", accounts=["12345"],
                     regions=["mars-north-9"], targetConcurrency="0",
                     locationErrorThreshold="lots", rebootOption="Sometimes",
                     deliveryTimeoutSeconds=5)
    run = execute(stack, "j", bad, timeout=60)
    fields = ["operation", "resourceGroup", "accounts", "regions", "targetConcurrency",
              "locationErrorThreshold", "rebootOption", "deliveryTimeoutSeconds"]
    # THEN the execution fails at planning with InvalidInput naming every bad field
    assert run.execution["status"] == "FAILED", describe(run)
    assert run.execution.get("error") == "InvalidInput", run.execution
    cause = run.execution.get("cause") or ""
    for f in fields:
        assert f in cause, (f, cause)
    history = stack.sfn.get_execution_history(executionArn=run.execution["executionArn"])
    entered = [e["stateEnteredEventDetails"]["name"] for e in history["events"]
               if "stateEnteredEventDetails" in e]
    assert entered == ["Plan"], entered
    # the run is recorded as Rejected with its reasons, and announced
    assert run.record["status"] == "Rejected"
    reasons = " ".join(map(str, run.record.get("rejectReasons") or []))
    for f in fields:
        assert f in reasons, (f, reasons)
    done = run.completed_event()
    assert done["detail"]["status"] == "Rejected" and done["detail"]["reasons"]
    # and the fleet saw nothing: no SendCommand, no AssumeRole at all
    assert run.stats["calls"].get("ssm:SendCommand", {}).get("calls", 0) == 0
    assert stack.oracle("commands") == []
    assert stack.oracle("assumed") == []


# -- k ---------------------------------------------------------------------------------------
def test_k_scan_installs_nothing(stack):
    acct = "300000000001"
    loc = f"{acct}/{US}"
    ids = None
    before = {i: v["patch_state"] for i, v in
              ((v["instance_id"], v) for v in stack.oracle("instances")) if v["account"] == acct}
    run = execute(stack, "k", base_input(operation="Scan", resourceGroup="e2e-k",
                                         accounts=[acct]))
    ids = oracle_ids(run, acct)
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    assert all(c["parameters"]["Operation"] == ["Scan"] for c in run.commands), run.commands
    assert sorted(run.sent_instance_ids()) == sorted(ids)
    # THEN nothing was installed (oracle) and the missing counts are reported
    for i in ids:
        after = run.oracle_instances[i]["patch_state"]
        assert after["InstalledCount"] == before[i]["InstalledCount"], i
        assert after["MissingCount"] == before[i]["MissingCount"], i
    comp = run.summary["compliance"]
    assert comp["missing"] == 10, comp
    assert comp["installed"] == 250, comp
    assert comp["compliantInstances"] == 0, comp
    assert run.locations[loc]["outcome"] == "Succeeded"
    assert run.summary["operation"] == "Scan"


# -- l ---------------------------------------------------------------------------------------
def test_l_noreboot_reports_pending_reboot(stack):
    acct = "310000000001"
    run = execute(stack, "l", base_input(resourceGroup="e2e-l", accounts=[acct],
                                         rebootOption="NoReboot"))
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    assert all(c["parameters"].get("RebootOption") == ["NoReboot"] for c in run.commands)
    comp = run.summary["compliance"]
    # THEN the three needs-reboot instances report their 4 patches each as pending reboot
    assert comp["installedPendingReboot"] == 12, comp
    assert comp["missing"] == 0, comp
    oracle_pending = sum(run.oracle_instances[i]["patch_state"]["InstalledPendingRebootCount"]
                         for i in oracle_ids(run, acct))
    assert oracle_pending == 12


# -- m ---------------------------------------------------------------------------------------
def test_m_accounts_by_ou_with_excluded_and_suspended(stack):
    run = execute(stack, "m", base_input(resourceGroup="e2e-m", accounts=["ou-e2e0-target01"],
                                         excludeAccounts=["320000000002"]))
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    # THEN the OU's active accounts (nested OU included) are the locations
    assert set(run.locations) == {f"320000000001/{US}", f"320000000004/{US}"}, describe(run)
    assert {v["outcome"] for v in run.locations.values()} == {"Succeeded"}
    # the excluded and the suspended account were never touched, and the summary says why
    skipped = {s["account"]: s["reason"] for s in run.summary["skippedAccounts"]}
    assert "SUSPENDED" in skipped.get("320000000003", ""), skipped
    touched = {c["account"] for c in run.commands} | {a["account"] for a in assumed(stack, run)}
    assert touched == {"320000000001", "320000000004"}, touched
    assert run.record["status"] == "Succeeded"
