"""Input the validation used to let through (issue 7, section 5): each is refused at Plan,
naming its field, with nothing dispatched; accounts named by ID that are not ACTIVE are
skipped and reported. Accounts 44xxxxxxxxxx of tests/fleets/e2e.toml."""

from __future__ import annotations

from conftest import base_input, describe, execute

US = "us-east-1"
ACTIVE, SUSPENDED, CLOSING = "440000000001", "440000000002", "440000000003"


def touched_accounts(stack, run):
    """Accounts this run sent a command to or assumed a role in (the oracle's view)."""
    assumed = {a["role_arn"].split(":")[4] for a in stack.oracle("assumed")
               if run.run_id in a["session_name"]}
    return {c["account"] for c in run.commands} | assumed


def assert_rejected_at_plan(stack, run, fields):
    assert run.execution["status"] == "FAILED", describe(run)
    assert run.execution.get("error") == "InvalidInput", run.execution
    cause = run.execution.get("cause") or ""
    for f in fields:
        assert f in cause, (f, cause)
    assert run.record["status"] == "Rejected", run.record
    assert run.completed_event()["detail"]["status"] == "Rejected"
    assert run.locations == {}, "no location was planned"
    assert touched_accounts(stack, run) == set()


def test_a_region_aws_does_not_have_is_refused_at_plan(stack):
    # GIVEN a run over a real Region and two well-formed codes that name no Region
    bad = base_input(resourceGroup="e2e-strict", accounts=[ACTIVE],
                     regions=[US, "us-east-3", "eu-nowhere-1"])
    # WHEN it is started
    run = execute(stack, "strict-region", bad, timeout=60)
    # THEN plan refuses it, naming both entries, and the fleet is never called
    assert_rejected_at_plan(stack, run, ["regions[1]", "us-east-3", "regions[2]",
                                         "eu-nowhere-1"])
    # AND plan read AWS's Region list from SSM in the management account
    calls = run.stats["calls"].get("ssm:GetParametersByPath", {}).get("calls", 0)
    assert calls >= 1, run.stats["calls"]


def test_full_width_digits_and_distant_duplicates_are_refused_at_plan(stack):
    # GIVEN an account ID in full-width digits, and an account named twice, not adjacently
    full_width = "４４０００００００００１"
    bad = base_input(resourceGroup="e2e-strict", accounts=[ACTIVE, full_width, "ou-e2e0-target01",
                                                          ACTIVE])
    # WHEN it is started
    run = execute(stack, "strict-digits", bad, timeout=60)
    # THEN plan refuses both entries by their place in the list
    assert_rejected_at_plan(stack, run, ["accounts[1]", "accounts[3]", "duplicate of accounts[0]"])


def test_accounts_named_by_id_that_are_not_active_are_skipped_and_reported(stack):
    # GIVEN a run naming by ID an ACTIVE, a SUSPENDED and a PENDING_CLOSURE account, each
    # with the role and an instance in the group
    run = execute(stack, "strict-status", base_input(resourceGroup="e2e-strict",
                                                     accounts=[ACTIVE, SUSPENDED, CLOSING]))
    # THEN only the ACTIVE account is a location, and it is patched
    assert run.execution["status"] == "SUCCEEDED", describe(run)
    assert set(run.locations) == {f"{ACTIVE}/{US}"}, describe(run)
    assert run.locations[f"{ACTIVE}/{US}"]["outcome"] == "Succeeded", describe(run)
    assert run.sent_instance_ids() == ["i-0e2e440000000001"]
    # AND the other two were never called, and the summary and the event say why
    assert touched_accounts(stack, run) == {ACTIVE}
    skipped = {s["account"]: s["reason"] for s in run.summary["skippedAccounts"]}
    assert skipped == {SUSPENDED: "SUSPENDED", CLOSING: "PENDING_CLOSURE"}, skipped
    event_skipped = {s["account"]: s["reason"]
                     for s in run.completed_event()["detail"]["skippedAccounts"]}
    assert event_skipped == skipped
    assert run.record["status"] == "Succeeded"
