"""Install hooks (issue 11): a run naming preInstallHook / postInstallHook runs
AWS-RunPatchBaselineWithHooks. Judged from fleetsim's oracle, which models that document
(tests/fleetsim/src/hooks.rs): the hooks that ran on each instance, what was installed.
Accounts 49000000000x of tests/fleets/e2e.toml; the local target role allows hook documents
named Patch-* (its StackSet's HookDocumentPrefix, tests/localstack/iam.py)."""

from __future__ import annotations

import pytest

from conftest import base_input, describe, execute

US = "us-east-1"
PRE, POST, MISSING, READY = "490000000001", "490000000002", "490000000003", "490000000004"
HOOKS_DOCUMENT = "AWS-RunPatchBaselineWithHooks"
FAILING_PRE = {"i-0e2e490100000002", "i-0e2e490100000004"}   # failing_hooks = ["pre_install"]


def hooks_input(accounts: list[str], **kw) -> dict:
    return base_input(resourceGroup="e2e-hooks", accounts=accounts, targetConcurrency="100%",
                      **kw)


def loc(account: str) -> str:
    return f"{account}/{US}"


def hooks_of(run, account: str) -> dict:
    """instance -> what the hooks document did there (the oracle's record)."""
    out = {}
    for c in run.commands:
        if c["account"] == account:
            out.update(c["hooks"])
    return out


def points(ran) -> list[str]:
    return [point for point, _doc in ran["ran"]]


def test_a_failing_pre_hook_installs_nothing_there_and_the_report_says_why(stack):
    # GIVEN four instances whose pre-install hook fails on two, and two whose post-install
    # hook fails on one; the three hook documents exist in both accounts
    run_input = hooks_input([PRE, POST], preInstallHook="Patch-Drain",
                            postInstallHook="Patch-Check", onExitHook="Patch-Exit")
    # WHEN the run goes
    run = execute(stack, "hooks-pre", run_input)
    # THEN every command ran the hooks document with the two hooks as its parameters
    assert run.commands, describe(run)
    for c in run.commands:
        assert c["document_name"] == HOOKS_DOCUMENT, c
        assert c["parameters"]["PreInstallHookDocName"] == ["Patch-Drain"]
        assert c["parameters"]["PostInstallHookDocName"] == ["Patch-Check"]
        assert c["parameters"]["OnExitHookDocName"] == ["Patch-Exit"]
        assert "InstallOverrideList" not in c["parameters"]
    # AND where the pre-install hook failed, nothing was installed and no post-install hook
    # ran; the others were patched, both hooks around the install; the on-exit hook ran last
    # everywhere
    pre = hooks_of(run, PRE)
    failed_pre = {i for i, h in pre.items() if h["failed_step"] == "PreInstallHook"}
    assert len(pre) == 4 and failed_pre == FAILING_PRE, pre
    for i, h in pre.items():
        assert h["ran"][-1] == ["on_exit", "Patch-Exit"], h
        patch = run.oracle_instances[i]["patch_state"]
        if i in failed_pre:
            assert not h["installed"] and points(h) == ["pre_install", "on_exit"], h
            assert patch["MissingCount"] == 3, patch
        else:
            assert h["installed"] and points(h) == ["pre_install", "post_install", "on_exit"]
            assert patch["MissingCount"] == 0, patch
    # AND fleetpatch recorded those two Failed, saying the pre-install hook's step failed
    items = run.instances(loc(PRE))
    for i in failed_pre:
        assert items[i]["state"] == "Failed", items[i]
        assert "step PreInstallHook failed" in items[i]["statusDetails"], items[i]
    assert sorted(i for i, it in items.items() if it["state"] == "Succeeded") == \
        sorted(set(pre) - failed_pre)
    assert run.locations[loc(PRE)]["outcome"] == "CompletedWithErrors", describe(run)
    # AND where the post-install hook failed, the install happened, the instance is Failed
    # and its details name the post-install hook's step
    post = hooks_of(run, POST)
    failed_post = [i for i, h in post.items() if h["failed_step"] == "PostInstallHook"]
    assert len(post) == 2 and len(failed_post) == 1, post
    (i,) = failed_post
    assert post[i]["installed"] and run.oracle_instances[i]["patch_state"]["MissingCount"] == 0
    item = run.instances(loc(POST))[i]
    assert item["state"] == "Failed" and "step PostInstallHook failed" in item["statusDetails"]


def test_a_hook_missing_in_one_location_sends_nothing_there(stack):
    # GIVEN a pre-install hook that exists in one account and not in the other
    run_input = hooks_input([MISSING, READY], preInstallHook="Patch-Drain")
    # WHEN the run goes
    run = execute(stack, "hooks-missing", run_input)
    # THEN the account without it was sent nothing, and its location says why
    assert run.sent_instance_ids(loc(MISSING)) == [], run.commands
    missing = run.locations[loc(MISSING)]
    assert missing["outcome"] == "Error", describe(run)
    assert "hook document Patch-Drain (PreInstallHookDocName) does not exist" in \
        missing["reason"], missing
    # AND the other account was patched through the hooks document, its hook run
    ready = hooks_of(run, READY)
    assert len(ready) == 2 and all(h["installed"] for h in ready.values()), ready
    assert all(h["ran"][0] == ["pre_install", "Patch-Drain"] for h in ready.values()), ready
    assert run.locations[loc(READY)]["outcome"] == "Succeeded", describe(run)


@pytest.mark.iam_denials("ssm:DescribeDocument")
def test_the_target_role_refuses_a_hook_outside_its_allowed_prefix(stack):
    # GIVEN a hook document that exists in the account but is not named Patch-*
    run_input = hooks_input([READY], preInstallHook="Other-Drain")
    # WHEN the run goes
    run = execute(stack, "hooks-refused", run_input)
    # THEN the execution role may not read it: nothing is sent, and the location says why
    assert run.commands == [], run.commands
    where = run.locations[loc(READY)]
    assert where["outcome"] == "Error", describe(run)
    assert "Other-Drain" in where["reason"] and "may not be read by the execution role" in \
        where["reason"], where
    # AND the refusal was IAM's, on that document, in the execution role's name
    denied = [d for d in stack.oracle("iam")["denied"] if d["action"] == "ssm:DescribeDocument"]
    assert any(d["resource"] == f"arn:aws:ssm:{US}:{READY}:document/Other-Drain"
               and d["role"] == "ExecutionRole" for d in denied), denied


def test_a_throttled_hook_check_is_retried_and_the_location_goes_on(stack):
    # GIVEN the next five DescribeDocument calls in the account are throttled (more than the
    # SDK's own three attempts: expand fails once and the state machine retries it)
    stack.faults([{"kind": "throttle", "service": "ssm", "operation": "DescribeDocument",
                   "account": READY, "count": 5}])
    # WHEN a run with a pre-install hook goes there
    run = execute(stack, "hooks-throttled", hooks_input([READY], preInstallHook="Patch-Drain"))
    # THEN the throttles were absorbed: the hook was checked, the location patched through
    # the hooks document
    assert run.stats["calls"]["ssm:DescribeDocument"]["throttled"] >= 5, run.stats["calls"]
    assert run.locations[loc(READY)]["outcome"] == "Succeeded", describe(run)
    assert {c["document_name"] for c in run.commands} == {HOOKS_DOCUMENT}, run.commands
