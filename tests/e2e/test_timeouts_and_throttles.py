"""End-to-end scenarios of issue 7, sections 2 and 3: Lambda timeouts whose retry overlaps
the first invocation, Lambda TooManyRequestsException at invoke, STS throttling on
AssumeRole, and DynamoDB transaction conflicts and throughput errors on the run item while
several locations settle at once. Accounts 42xxxxxxxxxx of tests/fleets/e2e.toml.

Every scenario ends with the same check: the run's counters equal the records they count
(instances sent, instances done, locations done and failed), and each location's `counts`
equal its instance items."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from conftest import base_input, describe, execute

US, EU = "us-east-1", "eu-west-1"
FAILED_LOCATION = {"ThresholdExceeded", "AccessDenied", "GroupNotFound", "Error"}
RUN_ITEM = '"S":"RUN"}'  # a request body naming the run item's sort key


@pytest.fixture
def template_timeouts(stack):
    """Restores the template's function timeouts after the test."""
    yield stack
    stack.lambda_timeouts({})


def oracle_ids(run, account, region=None):
    return {i for i, v in run.oracle_instances.items()
            if v["account"] == account and (region is None or v["region"] == region)}


def assert_single_commands(run, ids):
    per = run.stats["commands_per_instance"]
    doubled = {i: per[i] for i in ids if per.get(i, 0) > 1}
    assert not doubled, f"instances with more than one command: {doubled}"
    assert sorted(run.sent_instance_ids()) == sorted(ids), "every instance sent exactly once"


def assert_records_agree(run):
    """The run's counters equal the items they count; each location's counts equal its
    instance items (read now, from the table)."""
    client = run.client
    record = client.run_record(run.run_id)
    locations = client.locations(run.run_id)
    sent = done = 0
    for loc, item in locations.items():
        instances = client.instances(run.run_id, loc)
        states = Counter(v["state"] for v in instances.values())
        counts = {k: v for k, v in (item.get("counts") or {}).items() if v}
        assert counts == dict(states), (loc, counts, states)
        sent += sum(1 for v in instances.values() if v.get("sentAt"))
        done += sum(1 for v in instances.values() if v.get("endedAt"))
    assert record["instancesSent"] == sent, (record["instancesSent"], sent)
    assert record["instancesDone"] == done, (record["instancesDone"], done)
    assert record["locationsDone"] == sum(
        1 for v in locations.values() if v.get("phase") == "Done"), record
    assert record["locationsFailed"] == sum(
        1 for v in locations.values() if v.get("outcome") in FAILED_LOCATION), record


def assert_all_succeeded(run, accounts, regions=(US,)):
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    assert run.record["status"] == "Succeeded", describe(run)
    for a in accounts:
        for r in regions:
            loc = f"{a}/{r}"
            assert run.locations[loc]["outcome"] == "Succeeded", describe(run)
            states = Counter(v["state"] for v in run.instances(loc).values())
            assert set(states) == {"Succeeded"}, (loc, states)
            assert sum(states.values()) == len(oracle_ids(run, a, r)), (loc, states)


# -- section 2: a dispatch that times out between SendCommand and recording it ---------------
def test_dispatch_timing_out_after_send_command_overlaps_its_retry(template_timeouts):
    stack = template_timeouts
    # GIVEN dispatch's timeout shortened to 3 s (the template says 120), and the first
    # SendCommand of this account taking effect at once but answering only after 8 s
    acct = "420000000001"
    delay_s = 8
    assert stack.oracle("lambda-timeouts")["defaults"]["dispatch"] == 120
    stack.lambda_timeouts({"dispatch": 3})
    stack.faults([{"kind": "delay", "service": "ssm", "operation": "SendCommand",
                   "account": acct, "delay_ms": delay_s * 1000, "count": 1}])
    started = time.monotonic()
    # WHEN an Install runs: the first dispatch times out inside SendCommand, the state
    # machine retries it while the first invocation is still running
    run = execute(stack, "timeout", base_input(resourceGroup="e2e-timeout", accounts=[acct],
                                               targetConcurrency="100%"))
    # (let the first invocation reach its end and write what it still writes)
    time.sleep(max(0.0, delay_s + 4 - (time.monotonic() - started)))
    stats = stack.oracle("stats")
    # THEN the timeout happened and the retry handled it
    assert stats["lambda_timed_out"].get("dispatch", 0) >= 1, stats["lambda_timed_out"]
    assert stats["calls"]["ssm:SendCommand"]["delayed"] == 1, stats["calls"]
    assert_all_succeeded(run, [acct])
    # AND no instance got two commands, every one is recorded with its outcome
    ids = oracle_ids(run, acct)
    assert len(ids) == 4
    assert_single_commands(run, ids)
    # AND the counters equal the records, also after the first invocation ended
    assert_records_agree(run)


def test_expand_timing_out_never_undoes_what_its_retry_started(template_timeouts):
    stack = template_timeouts
    # GIVEN expand's timeout shortened to 3 s, and the first DescribeInstanceInformation of
    # this account answering only after 8 s: the first expand is still running when its
    # retry has recorded the instances and dispatch has sent them their command (which runs
    # for 10 s)
    acct = "420000000008"
    delay_s = 8
    stack.lambda_timeouts({"expand": 3})
    stack.faults([{"kind": "delay", "service": "ssm", "operation": "DescribeInstanceInformation",
                   "account": acct, "delay_ms": delay_s * 1000, "count": 1}])
    # WHEN an Install runs
    run = execute(stack, "expand-overlap", base_input(resourceGroup="e2e-expand-overlap",
                                                      accounts=[acct],
                                                      targetConcurrency="100%"))
    stats = stack.oracle("stats")
    # THEN the timeout happened and was retried
    assert stats["lambda_timed_out"].get("expand", 0) >= 1, stats["lambda_timed_out"]
    assert stats["calls"]["ssm:DescribeInstanceInformation"]["delayed"] == 1, stats["calls"]
    # AND the late expansion did not put sent instances back to Pending: no second command
    ids = oracle_ids(run, acct)
    assert_single_commands(run, ids)
    assert_all_succeeded(run, [acct])
    assert_records_agree(run)


def test_plan_timing_out_never_resets_a_running_location(template_timeouts):
    stack = template_timeouts
    # GIVEN plan's timeout shortened to 3 s, and the first ListAccountsForParent answering
    # only after 8 s: the first plan is still running when its retry has planned the run and
    # the location is dispatching, 2 instances at a time, each running 10 s
    acct, ou = "420000000009", "ou-e2e0-plan0042"
    delay_s = 8
    stack.lambda_timeouts({"plan": 3})
    stack.faults([{"kind": "delay", "service": "organizations",
                   "operation": "ListAccountsForParent", "delay_ms": delay_s * 1000,
                   "count": 1}])
    # WHEN an Install runs over the OU
    run = execute(stack, "plan-overlap", base_input(resourceGroup="e2e-plan-overlap",
                                                    accounts=[ou], targetConcurrency="50%"),
                  timeout=120)
    stats = stack.oracle("stats")
    # THEN the timeout happened and was retried
    assert stats["lambda_timed_out"].get("plan", 0) >= 1, stats["lambda_timed_out"]
    assert stats["calls"]["organizations:ListAccountsForParent"]["delayed"] == 1
    # AND the late plan reset nothing: the location went on and every instance ran once
    assert_all_succeeded(run, [acct])
    assert_single_commands(run, oracle_ids(run, acct))
    assert_records_agree(run)
    # AND the run was announced once, with the run's own baseline snapshot
    started = [e for e in run.events if e["detail-type"] == "Patch Run Started"]
    assert len(started) == 1, started
    assert started[0]["detail"]["snapshotId"] == json.loads(run.record["input"])["snapshotId"]


def test_aggregate_timing_out_announces_the_run_once(template_timeouts):
    stack = template_timeouts
    # GIVEN aggregate's timeout shortened to 3 s, and the first DescribeInstancePatchStates of
    # this account answering only after 8 s: the first aggregation is still running when its
    # retry has finished the run
    acct = "420000000010"
    delay_s = 8
    stack.lambda_timeouts({"aggregate": 3})
    stack.faults([{"kind": "delay", "service": "ssm", "operation": "DescribeInstancePatchStates",
                   "account": acct, "delay_ms": delay_s * 1000, "count": 1}])
    started = time.monotonic()
    # WHEN an Install runs
    run = execute(stack, "aggregate-overlap", base_input(resourceGroup="e2e-aggregate-overlap",
                                                         accounts=[acct]))
    # (let the first aggregation reach its end)
    time.sleep(max(0.0, delay_s + 4 - (time.monotonic() - started)))
    stats = stack.oracle("stats")
    # THEN the timeout happened and was retried
    assert stats["lambda_timed_out"].get("aggregate", 0) >= 1, stats["lambda_timed_out"]
    assert_all_succeeded(run, [acct])
    # AND the run was announced complete once, and its record says what the event said
    events = stack.run_events(run.run_id, wait=2)
    done = [e for e in events if e["detail-type"] == "Patch Run Completed"]
    assert len(done) == 1, [e["detail"].get("status") for e in done]
    assert stack.run_record(run.run_id)["status"] == done[0]["detail"]["status"] == "Succeeded"
    assert_records_agree(run)


# -- section 3: Lambda TooManyRequestsException at invoke -------------------------------------
def test_lambda_too_many_requests_at_invoke_is_retried(stack):
    # GIVEN Lambda refuses the first 3 invocations of dispatch and the first of settle with
    # HTTP 429 TooManyRequestsException (Step Functions: Lambda.TooManyRequestsException)
    acct = "420000000002"
    stack.faults([
        {"kind": "throttle", "service": "lambda", "function": "dispatch", "count": 3},
        {"kind": "throttle", "service": "lambda", "function": "settle", "count": 1},
    ])
    # WHEN an Install runs
    run = execute(stack, "lambda429", base_input(resourceGroup="e2e-lambda-429",
                                                 accounts=[acct]))
    # THEN every refused invocation was retried by the state machine and the run completed
    throttled = run.stats["forwarded_calls"]["lambda:Invoke"]["throttled"]
    assert throttled == 4, run.stats["forwarded_calls"]
    assert_all_succeeded(run, [acct])
    assert_single_commands(run, oracle_ids(run, acct))
    assert_records_agree(run)


# -- section 3: STS throttling on AssumeRole --------------------------------------------------
def test_sts_throttling_on_assume_role_is_retried(stack):
    # GIVEN STS throttles the first 8 AssumeRole calls (more than the SDK's own 3 attempts)
    acct = "420000000003"
    stack.faults([{"kind": "throttle", "service": "sts", "operation": "AssumeRole",
                   "count": 8}])
    # WHEN an Install runs over 2 Regions of the account
    run = execute(stack, "sts", base_input(resourceGroup="e2e-sts-throttle", accounts=[acct],
                                           regions=[US, EU]))
    # THEN the throttles surfaced, were retried, and every location and instance succeeded
    assert run.stats["calls"]["sts:AssumeRole"]["throttled"] == 8, run.stats["calls"]
    assert_all_succeeded(run, [acct], (US, EU))
    assert_single_commands(run, oracle_ids(run, acct))
    assert_records_agree(run)


# -- section 3: DynamoDB conflicts and throughput on the run item -----------------------------
def test_dynamodb_conflicts_and_throttles_on_the_run_item_lose_and_double_nothing(stack):
    # GIVEN 4 locations running at once, and DynamoDB cancelling half the transactions that
    # touch the run item (TransactionConflict) and throttling a third of the writes to it
    # (ProvisionedThroughputExceededException)
    accounts = ["420000000004", "420000000005", "420000000006", "420000000007"]
    stack.faults([
        {"kind": "transaction_conflict", "service": "dynamodb",
         "operation": "TransactWriteItems", "body_contains": RUN_ITEM, "fraction": 0.5},
        {"kind": "throttle", "service": "dynamodb", "operation": "TransactWriteItems",
         "body_contains": RUN_ITEM, "fraction": 0.2},
        {"kind": "throttle", "service": "dynamodb", "operation": "UpdateItem",
         "body_contains": RUN_ITEM, "fraction": 0.3},
    ])
    # WHEN an Install runs over them, settling several locations at once
    run = execute(stack, "ddb", base_input(resourceGroup="e2e-ddb-faults", accounts=accounts,
                                           targetConcurrency="50%"))
    forwarded = {k: v for k, v in run.stats["forwarded_calls"].items()
                 if k in ("dynamodb:TransactWriteItems", "dynamodb:UpdateItem")}
    # THEN the faults did happen
    assert forwarded["dynamodb:TransactWriteItems"]["conflicts"] > 0, forwarded
    assert sum(v["throttled"] for v in forwarded.values()) > 0, forwarded
    # AND no location turned into Error, every instance succeeded once
    assert_all_succeeded(run, accounts)
    assert_single_commands(run, set().union(*(oracle_ids(run, a) for a in accounts)))
    # AND no counter was counted twice or lost
    assert run.record["locationsDone"] == 4 and run.record["locationsFailed"] == 0, run.record
    assert run.record["instancesSent"] == 16 and run.record["instancesDone"] == 16, run.record
    assert_records_agree(run)


# -- aggregate failing for good: the run still ends ----------------------------------------
def test_a_run_whose_aggregate_fails_for_good_still_ends_from_its_records(stack):
    # GIVEN aggregate's first read of the run's locations refused with an error no Retry
    # covers (AccessDeniedException, as a broken table policy would answer)
    acct = "460000000001"
    # (aggregate's list of the run's locations: a Query with the SK prefix LOC#, by the
    # aggregate function's session; the gate function lists them too, and is left alone)
    stack.faults([{"kind": "error", "service": "dynamodb", "operation": "Query",
                   "body_contains": '{"S":"LOC#"}', "caller_contains": "/fleetpatch-aggregate",
                   "status": 400, "code": "AccessDeniedException", "count": 1}])
    # WHEN an Install runs
    run = execute(stack, "aggregate-fallback", base_input(resourceGroup="e2e-aggregate-fallback",
                                                          accounts=[acct]))
    # THEN the execution still succeeded, through the fallback, and the run is not left
    # Running: it has its final status, and its summary says what was not read, and why
    assert run.execution["status"] == "SUCCEEDED", run.execution
    assert run.stats["forwarded_calls"]["dynamodb:Query"]["injected_errors"] == 1
    assert run.record["status"] == "Succeeded", run.record["status"]
    assert "AccessDeniedException" in run.summary["notRead"], run.summary
    assert "compliance" in run.summary["notRead"]
    # AND every instance still has its outcome, and the run was announced once, as recorded
    assert_all_succeeded(run, [acct])
    done = [e for e in run.events if e["detail-type"] == "Patch Run Completed"]
    assert len(done) == 1
    assert done[0]["detail"]["notRead"] == run.summary["notRead"]
