"""The `fleetpatch` command (issue 10) against the local stack: each subcommand's output and
exit code (0 done or the run succeeded, 1 the run ended with problems, 2 bad usage or bad
input), and its numbers against the table's records. The HTML report is opened in headless
Chromium (Debian's `chromium`), which must show the run's figures.

Run alone: .venv/bin/python -m pytest -q tests/e2e/test_cli.py
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import base_input
import stack as localstack

OK_ACCOUNT = "610000000001"
FAILING_ACCOUNT = "610000000002"
NO_ROLE_ACCOUNT = "610000000003"
GROUP = "e2e-cli"


def fleetpatch(stack, *args, stdin: str | None = None, timeout: float = 300):
    """Runs the binary as an operator would, pointed at the local stack."""
    exe = localstack.target_dir() / "debug" / "fleetpatch"
    env = {**os.environ, "AWS_ENDPOINT_URL": stack.endpoint, "AWS_REGION": localstack.REGION,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}
    env.pop("AWS_PROFILE", None)
    argv = [str(exe), "--state-machine", stack.state["state_machine_arn"],
            "--table", stack.state["table"], *args]
    return subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def write_input(tmp_path: Path, name: str, run_input: dict) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(run_input))
    return p


@pytest.fixture(scope="module")
def runs(stack, tmp_path_factory):
    """Two runs started and watched through the command: one that succeeds, one with a
    failing location and an account without the role."""
    tmp = tmp_path_factory.mktemp("cli")
    ok = fleetpatch(stack, "start", str(write_input(tmp, "ok.json", base_input(
        resourceGroup=GROUP, accounts=[OK_ACCOUNT]))), "--watch")
    bad = fleetpatch(stack, "start", str(write_input(tmp, "bad.json", base_input(
        resourceGroup=GROUP, accounts=[FAILING_ACCOUNT, NO_ROLE_ACCOUNT],
        targetErrorThreshold="1"))), "--name", "cli-bad-run", "--watch")
    return {"ok": ok, "bad": bad, "tmp": tmp}


def run_id_of(result) -> str:
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("run ID:"))
    return line.split(":", 1)[1].strip()


def test_validate_lists_every_violation_and_starts_nothing(stack, tmp_path):
    # GIVEN an input with two bad fields, and a good one
    bad = write_input(tmp_path, "bad.json", base_input(accounts=["12345"], regions=["nowhere"]))
    good = write_input(tmp_path, "good.json", base_input(accounts=[OK_ACCOUNT]))
    before = len(stack.sfn.list_executions(
        stateMachineArn=stack.state["state_machine_arn"])["executions"])
    # WHEN each is validated, and the bad one started
    r_bad = fleetpatch(stack, "validate", str(bad))
    r_good = fleetpatch(stack, "validate", str(good))
    r_start = fleetpatch(stack, "start", str(bad))
    r_stdin = fleetpatch(stack, "validate", "-", stdin=good.read_text())
    # THEN the bad one exits 2 naming both fields, and nothing was started
    assert r_bad.returncode == 2, r_bad.stderr
    assert "accounts[0]" in r_bad.stderr and "regions[0]" in r_bad.stderr, r_bad.stderr
    assert r_start.returncode == 2 and "nothing was started" in r_start.stderr
    after = len(stack.sfn.list_executions(
        stateMachineArn=stack.state["state_machine_arn"])["executions"])
    assert after == before
    # AND the good one exits 0, from a file or standard input
    assert r_good.returncode == 0 and "valid" in r_good.stderr, r_good.stderr
    assert r_stdin.returncode == 0, r_stdin.stderr


def test_bad_usage_exits_2(stack):
    assert fleetpatch(stack).returncode == 2
    assert fleetpatch(stack, "report").returncode == 2
    r = fleetpatch(stack, "report", "no-such-run")
    assert r.returncode == 2 and "not found" in r.stderr, r.stderr
    assert fleetpatch(stack, "watch", "no-such-run").returncode == 2


def test_help_on_every_subcommand(stack):
    for sub in ["validate", "preview", "start", "watch", "report", "list", "stop", "resume"]:
        r = fleetpatch(stack, sub, "--help")
        assert r.returncode == 0 and "Exit codes" in r.stdout, (sub, r.stdout)


def test_start_watch_exit_code_follows_the_run(stack, runs):
    ok, bad = runs["ok"], runs["bad"]
    # THEN start printed the run ID and the console URL of the execution
    assert ok.returncode == 0, ok.stdout + ok.stderr
    run_id = run_id_of(ok)
    assert "console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/" \
        f"{stack.state['state_machine_arn'].replace(':stateMachine:', ':execution:')}:{run_id}" \
        in ok.stdout
    assert f"run {run_id} ended Succeeded" in ok.stdout
    # AND watch's last progress line counted the run's instances
    assert "locations 1/1 done, 0 failed  instances 4 sent, 4 done of 4" in ok.stderr, ok.stderr
    # AND the run with problems exits 1, under the name it was given
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert run_id_of(bad) == "cli-bad-run"
    assert "run cli-bad-run ended CompletedWithErrors" in bad.stdout
    # AND watching a finished run again gives the same codes
    assert fleetpatch(stack, "watch", run_id).returncode == 0
    assert fleetpatch(stack, "watch", "cli-bad-run").returncode == 1


def test_report_formats_agree_with_the_table(stack, runs):
    # GIVEN the finished run with problems, and its records in the table
    locations = stack.locations("cli-bad-run")
    # WHEN its report is read in each format
    table = fleetpatch(stack, "report", "cli-bad-run")
    as_csv = fleetpatch(stack, "report", "cli-bad-run", "--format", "csv")
    as_json = fleetpatch(stack, "report", "cli-bad-run", "--format", "json")
    # THEN each exits 0 and shows every location with the table's figures
    for r in (table, as_csv, as_json):
        assert r.returncode == 0, r.stderr
    assert "CompletedWithErrors" in table.stdout and "AccessDenied" in table.stdout
    rows = {r["location"]: r for r in csv.DictReader(io.StringIO(as_csv.stdout))}
    doc = json.loads(as_json.stdout)
    assert set(rows) == set(locations) == {f["location"] for f in doc["locations"]}
    for loc, rec in locations.items():
        counts = rec.get("counts") or {}
        assert rows[loc]["outcome"] == rec["outcome"]
        assert int(rows[loc]["targeted"]) == int(rec.get("targeted") or 0)
        assert int(rows[loc]["succeeded"]) == int(counts.get("Succeeded", 0))
    assert doc["summary"]["status"] == "CompletedWithErrors"


def test_instance_ledger_lists_every_instance(stack, runs):
    loc = f"{FAILING_ACCOUNT}/us-east-1"
    items = stack.instances("cli-bad-run", loc)
    r = fleetpatch(stack, "report", "cli-bad-run", "--instances", "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    mine = {row["instanceId"]: row for row in rows if row["account"] == FAILING_ACCOUNT}
    assert set(mine) == set(items)
    for iid, item in items.items():
        assert mine[iid]["state"] == item["state"]
        assert mine[iid]["commandId"] == (item.get("commandId") or "")
    sent = [row for row in mine.values() if row["commandId"]]
    assert sent and all(row["sentAt"] and row["endedAt"] for row in sent)
    table = fleetpatch(stack, "report", "cli-bad-run", "--instances")
    assert table.returncode == 0 and "INSTANCE" in table.stdout


def test_list_shows_recent_runs(stack, runs):
    ok_id = run_id_of(runs["ok"])
    r = fleetpatch(stack, "list", "--last", "50", "--format", "json")
    assert r.returncode == 0, r.stderr
    by_id = {x["runId"]: x for x in json.loads(r.stdout)}
    assert by_id[ok_id]["status"] == "Succeeded"
    assert by_id[ok_id]["instancesDone"] == 4
    assert by_id["cli-bad-run"]["status"] == "CompletedWithErrors"
    assert by_id["cli-bad-run"]["resourceGroup"] == GROUP
    table = fleetpatch(stack, "list", "--last", "50")
    assert table.returncode == 0 and "cli-bad-run" in table.stdout


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_report_renders_in_chromium(stack, runs):
    """The HTML report, opened in headless Chromium, shows the run's figures. Skipped only
    outside CI when Chromium is absent (.ci/run installs Debian's package)."""
    exe = chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    out = runs["tmp"] / "report.html"
    r = fleetpatch(stack, "report", "cli-bad-run", "--format", "html", "--output", str(out))
    assert r.returncode == 0 and str(out) in r.stdout, r.stdout + r.stderr
    html = out.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    # WHEN Chromium renders it
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", out.as_uri()],
            capture_output=True, text=True, timeout=120).stdout
    # THEN the rendered page holds the run, its status, each location and its failed instances
    summary = stack.summary("cli-bad-run")
    assert "cli-bad-run" in dom and "CompletedWithErrors" in dom
    for loc in stack.locations("cli-bad-run"):
        assert loc in dom
    assert f"<b class=\"\">{summary['instancesTargeted']}</b>" in dom
    failed = [i for i, it in stack.instances("cli-bad-run", f"{FAILING_ACCOUNT}/us-east-1").items()
              if it["state"] == "Failed"]
    assert failed and all(i in dom for i in failed)


def test_preview_reads_what_the_run_then_does_and_writes_nothing(stack, runs):
    # GIVEN the input of the run with problems (one failing account, one without the role)
    bad_input = runs["tmp"] / "bad.json"
    sends = stack.oracle("stats")["calls"].get("ssm:SendCommand", {}).get("calls", 0)
    executions = len(stack.sfn.list_executions(
        stateMachineArn=stack.state["state_machine_arn"])["executions"])
    # WHEN it is previewed, as JSON and as a table
    r = fleetpatch(stack, "preview", str(bad_input), "--format", "json")
    t = fleetpatch(stack, "preview", str(bad_input))
    assert r.returncode == 0, r.stderr
    assert t.returncode == 0 and "ONLINE" in t.stdout and "AccessDenied" in t.stdout, t.stdout
    preview = json.loads(r.stdout)
    # THEN nothing was started and no command sent
    assert stack.oracle("stats")["calls"].get("ssm:SendCommand", {}).get("calls", 0) == sends
    assert len(stack.sfn.list_executions(
        stateMachineArn=stack.state["state_machine_arn"])["executions"]) == executions
    # AND its numbers are those the run recorded, location by location
    run = stack.run_record("cli-bad-run")
    assert preview["locations"] == int(run["locationCount"])
    assert preview["locationWindow"] == int(run["locationWindow"])
    recorded = stack.locations("cli-bad-run")
    for p in preview["perLocation"]:
        rec = recorded[p["location"]]
        if p["would"] in ("Patch", "NoTargets"):
            counts = {k: int(v) for k, v in (rec.get("counts") or {}).items()}
            assert p["targeted"] == int(rec["targeted"]), p
            assert p["online"] == int(rec["dispatchable"]), p
            assert p["offline"] == counts.get("Offline", 0), p
            assert p["unmanaged"] == counts.get("Unmanaged", 0), p
            assert p["window"] == int(rec["window"]), p
            assert p["tolerated"] == (int(rec["tolerated"]) if "tolerated" in rec else None), p
        else:
            assert p["would"] == rec["outcome"] == "AccessDenied", (p, rec)
    assert {p["location"] for p in preview["perLocation"]} == set(recorded)


def test_stack_outputs_name_the_state_machine_and_table(stack, runs):
    # GIVEN a CloudFormation stack whose outputs name the state machine and the table
    import boto3
    from botocore.config import Config
    cfn = boto3.client("cloudformation", endpoint_url=stack.endpoint,
                       region_name=localstack.REGION, aws_access_key_id="testing",
                       aws_secret_access_key="testing",
                       config=Config(user_agent_appid=localstack.OPERATOR_APP))
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {"StateMachineArn": {"Value": stack.state["state_machine_arn"]},
                    "TableName": {"Value": stack.state["table"]}},
    }
    cfn.create_stack(StackName="fleetpatch-cli-e2e", TemplateBody=json.dumps(template))
    exe = localstack.target_dir() / "debug" / "fleetpatch"
    env = {**os.environ, "AWS_ENDPOINT_URL": stack.endpoint, "AWS_REGION": localstack.REGION,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}
    for k in ("AWS_PROFILE", "FLEETPATCH_STATE_MACHINE", "FLEETPATCH_TABLE", "FLEETPATCH_STACK"):
        env.pop(k, None)
    # WHEN the command is given only the stack's name, or a stack that does not exist
    found = subprocess.run([str(exe), "--stack", "fleetpatch-cli-e2e", "report", "cli-bad-run",
                            "--format", "json"], env=env, capture_output=True, text=True,
                           timeout=60)
    missing = subprocess.run([str(exe), "--stack", "no-such-stack", "list"], env=env,
                             capture_output=True, text=True, timeout=60)
    # THEN the outputs lead it to the run; a missing stack is bad usage, named
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["summary"]["runId"] == "cli-bad-run"
    assert missing.returncode == 2 and "no-such-stack" in missing.stderr, missing.stderr


SLOW_ACCOUNT = "610000000004"


def start_slow_run(stack, tmp_path, run_id: str) -> None:
    """Starts `run_id` over the slow group (6 instances sent one at a time) and returns once
    one command is in flight."""
    started = fleetpatch(stack, "start", str(write_input(tmp_path, "slow.json", base_input(
        resourceGroup="e2e-cli-slow", accounts=[SLOW_ACCOUNT], targetConcurrency="1"))),
        "--name", run_id)
    assert started.returncode == 0, started.stderr
    localstack.wait_until("a command in flight",
                          lambda: int((stack.run_record(run_id) or {}).get("instancesSent", 0)) >= 1,
                          120)


def test_stop_mid_run_ends_cancelled_with_nothing_lost(stack, tmp_path):
    # GIVEN a run whose 6 slow instances are sent one at a time, one of them in flight
    run_id = "cli-stop-run"
    start_slow_run(stack, tmp_path, run_id)
    # WHEN the operator stops it
    stop = fleetpatch(stack, "stop", run_id)
    watched = fleetpatch(stack, "watch", run_id)
    # THEN the stop was recorded, and the run settled as Cancelled (exit 1: not a success)
    assert stop.returncode == 0 and "Running -> Cancelling" in stop.stdout, stop.stdout + stop.stderr
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert f"run {run_id} ended Cancelled" in watched.stdout
    record = stack.run_record(run_id)
    assert record["status"] == "Cancelled"
    done = [e for e in stack.run_events(run_id, wait=15)
            if e["detail-type"] == "Patch Run Completed"]
    assert len(done) == 1 and done[0]["detail"]["status"] == "Cancelled", done
    # AND nothing was lost: every instance ended; those sent a command ran it to its end,
    # the others never started, with the reason; no command was sent after the stop
    items = stack.instances(run_id, f"{SLOW_ACCOUNT}/us-east-1")
    assert len(items) == 6
    sent = {i for i, it in items.items() if it.get("commandId")}
    assert sent and all(items[i]["state"] == "Succeeded" for i in sent), items
    not_started = {i: it for i, it in items.items() if i not in sent}
    assert not_started and all(it["state"] == "NotStarted"
                               and it.get("statusDetails") == "run cancelled"
                               for it in not_started.values()), not_started
    oracle_sent = {i for c in stack.oracle("commands") if run_id in (c.get("comment") or "")
                   for i in c["instance_ids"]}
    assert oracle_sent == sent
    assert int(record["instancesSent"]) == len(sent)
    location = stack.locations(run_id)[f"{SLOW_ACCOUNT}/us-east-1"]
    assert location["outcome"] == "Incomplete", location
    assert location["reason"] == f"run cancelled: {len(not_started)} instance(s) not started"
    # AND a run that has ended cannot be stopped again, nor an unknown one
    again = fleetpatch(stack, "stop", run_id)
    assert again.returncode == 2 and "already ended (Cancelled)" in again.stderr, again.stderr
    assert fleetpatch(stack, "stop", "no-such-run").returncode == 2


RESUMABLE = {"Failed", "ExecutionTimedOut", "Cancelled", "Terminated", "NotStarted"}


def test_resume_sends_exactly_what_had_not_succeeded_and_links_both_runs(stack, runs):
    # GIVEN the run with problems: failed and never-started instances in one location, an
    # account without the role in the other; and the run that succeeded everywhere
    original = "cli-bad-run"
    before = {loc: stack.instances(original, loc) for loc in stack.locations(original)}
    succeeded = {i for items in before.values() for i, it in items.items()
                 if it["state"] == "Succeeded"}
    unsuccessful = {i for items in before.values() for i, it in items.items()
                    if it["state"] in RESUMABLE}
    assert succeeded and unsuccessful, before
    # WHEN the operator resumes it, following the new run to its end
    r = fleetpatch(stack, "resume", original, "--name", "cli-resumed", "--watch")
    # THEN a new run started over the locations left to do, and ended (with problems again:
    # the failing instances fail again, the account still has no role)
    assert run_id_of(r) == "cli-resumed", r.stdout + r.stderr
    assert f"resuming {original} (CompletedWithErrors): 2 of its 2 location(s)" in r.stdout
    assert r.returncode == 1 and "run cli-resumed ended" in r.stdout, r.stdout + r.stderr
    # AND the resumed run targeted exactly the instances that had not succeeded
    items = stack.instances("cli-resumed", f"{FAILING_ACCOUNT}/us-east-1")
    assert set(items) == unsuccessful, (set(items), unsuccessful)
    # AND the fleet's own log of commands (the oracle) shows that it sent a command to those
    # alone, never to one that had succeeded; the others never started (the same input, so
    # the same targetErrorThreshold of 1 stopped the location again)
    sent = {i for c in stack.oracle("commands") if "cli-resumed" in (c.get("comment") or "")
            for i in c["instance_ids"]}
    assert sent and sent <= unsuccessful and not sent & succeeded, (sent, unsuccessful)
    assert all(items[i]["state"] == "NotStarted" for i in unsuccessful - sent), items
    # AND the account without the role was expanded again (its instances were never known)
    resumed_locations = stack.locations("cli-resumed")
    assert resumed_locations[f"{NO_ROLE_ACCOUNT}/us-east-1"]["outcome"] == "AccessDenied"
    assert set(resumed_locations) == set(before)
    # AND the two runs are linked both ways, on the same baseline snapshot
    new, old = stack.run_record("cli-resumed"), stack.run_record(original)
    new_input, old_input = json.loads(new["input"]), json.loads(old["input"])
    assert new_input["resumeOf"] == original and old["resumedBy"] == "cli-resumed"
    assert new_input["snapshotId"] == old_input["snapshotId"]
    # AND the report of the resumed run shows both runs' totals
    table = fleetpatch(stack, "report", "cli-resumed")
    assert table.returncode == 0, table.stderr
    assert f"This run resumes {original}:" in table.stdout, table.stdout
    assert table.stdout.count("Instances targeted:") == 2
    doc = json.loads(fleetpatch(stack, "report", "cli-resumed", "--format", "json").stdout)
    assert [(x["relation"], x["summary"]["runId"]) for x in doc["linked"]] == \
        [("resumeOf", original)]
    back = json.loads(fleetpatch(stack, "report", original, "--format", "json").stdout)
    assert [(x["relation"], x["summary"]["runId"]) for x in back["linked"]] == \
        [("resumedBy", "cli-resumed")]
    page = fleetpatch(stack, "report", "cli-resumed", "--format", "html").stdout
    assert f"This run resumes {original}:" in page


def test_resume_refuses_a_run_resumed_already_or_with_nothing_left(stack, runs):
    # GIVEN the run that succeeded everywhere
    ok_id = run_id_of(runs["ok"])
    executions = len(stack.sfn.list_executions(
        stateMachineArn=stack.state["state_machine_arn"])["executions"])
    # WHEN it is resumed, and an unknown run too
    nothing = fleetpatch(stack, "resume", ok_id)
    unknown = fleetpatch(stack, "resume", "no-such-run")
    # THEN each is bad usage, saying why, and nothing was started
    assert nothing.returncode == 2 and "nothing to resume" in nothing.stderr, nothing.stderr
    assert unknown.returncode == 2 and "not found" in unknown.stderr, unknown.stderr
    assert len(stack.sfn.list_executions(
        stateMachineArn=stack.state["state_machine_arn"])["executions"]) == executions


def test_a_run_is_resumed_once_even_by_a_hand_written_input(stack, runs, tmp_path):
    """A person may write resumeOf too: plan enforces what the CLI checks first."""
    # GIVEN the run with problems, resumed already (by the test above, or here)
    original = "cli-bad-run"
    if not (stack.run_record(original) or {}).get("resumedBy"):
        assert fleetpatch(stack, "resume", original, "--name", "cli-resumed",
                          "--watch").returncode == 1
    # WHEN the CLI is asked again, and a hand-written input names it
    again = fleetpatch(stack, "resume", original)
    by_hand = fleetpatch(stack, "start", str(write_input(tmp_path, "resume.json", base_input(
        resourceGroup=GROUP, accounts=[FAILING_ACCOUNT, NO_ROLE_ACCOUNT],
        resumeOf=original))), "--name", "cli-resumed-twice", "--watch")
    # THEN the CLI refuses it, and plan rejects the run, naming the run that resumed it
    assert again.returncode == 2 and "already resumed by cli-resumed" in again.stderr, \
        again.stderr
    assert by_hand.returncode == 1, by_hand.stdout + by_hand.stderr
    record = stack.run_record("cli-resumed-twice")
    assert record["status"] == "Rejected", record
    assert any("already resumed by cli-resumed" in r for r in record["rejectReasons"]), record
    assert not [c for c in stack.oracle("commands")
                if "cli-resumed-twice" in (c.get("comment") or "")]
    assert stack.run_record(original)["resumedBy"] == "cli-resumed"


def test_stop_cancel_commands_cancels_what_is_in_flight(stack, tmp_path):
    # GIVEN a run whose 6 slow instances are sent one at a time, one of them in flight, and
    # SSM answering the first CancelCommand with a 500 before it takes effect
    run_id = "cli-cancel-run"
    start_slow_run(stack, tmp_path, run_id)
    stack.faults([{"kind": "error", "service": "ssm", "operation": "CancelCommand",
                   "account": SLOW_ACCOUNT, "count": 1, "status": 500,
                   "code": "InternalServerError"}])
    calls_before = stack.oracle("stats")["calls"].get("ssm:CancelCommand", {}).get("calls", 0)
    # WHEN the operator stops it, cancelling the commands in flight
    stop = fleetpatch(stack, "stop", run_id, "--cancel-commands")
    watched = fleetpatch(stack, "watch", run_id)
    # THEN the run settled as Cancelled, with its completion event
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "Running -> Cancelling; nothing new starts, commands in flight are cancelled" \
        in stop.stdout, stop.stdout
    assert watched.returncode == 1 and f"run {run_id} ended Cancelled" in watched.stdout
    assert stack.run_record(run_id)["cancelCommands"] is True
    done = [e for e in stack.run_events(run_id, wait=15)
            if e["detail-type"] == "Patch Run Completed"]
    assert len(done) == 1 and done[0]["detail"]["status"] == "Cancelled", done
    # AND the command in flight was cancelled (the fleet's oracle says so too), through a
    # second CancelCommand after the first failed; nothing was sent after the stop
    items = stack.instances(run_id, f"{SLOW_ACCOUNT}/us-east-1")
    sent = {i for i, it in items.items() if it.get("commandId")}
    cancelled = {i for i in sent if items[i]["state"] == "Cancelled"}
    assert cancelled and all(items[i]["state"] in ("Succeeded", "Cancelled") for i in sent), items
    oracle = {i: c for c in stack.oracle("commands") if run_id in (c.get("comment") or "")
              for i in c["instance_ids"]}
    assert set(oracle) == sent
    assert all(oracle[i]["status"] == "Cancelled" for i in cancelled), oracle
    calls = stack.oracle("stats")["calls"]["ssm:CancelCommand"]["calls"] - calls_before
    assert calls >= 2, calls
    # AND the others never started, with the reason
    assert all(it["state"] == "NotStarted" and it.get("statusDetails") == "run cancelled"
               for i, it in items.items() if i not in sent), items


def test_a_run_stopped_in_the_console_still_ends_cancelled_with_its_event(stack, tmp_path):
    """moto emits no "Step Functions Execution Status Change" events, so the test stops the
    execution with moto's StopExecution, then delivers to aggregate, through the local
    stack's Lambda endpoint, what infra/template.yaml's ExecutionEndedRule would deliver
    (its InputTransformer applied to the event, by tests/infra/test_execution_ended.py)."""
    sys.path.insert(0, str(localstack.ROOT / "tests" / "infra"))
    from test_execution_ended import deliver, status_change
    # GIVEN a run whose 6 slow instances are sent one at a time, one of them in flight
    run_id = "cli-aborted-run"
    start_slow_run(stack, tmp_path, run_id)
    # WHEN the execution is stopped in Step Functions (the console's "Stop execution")
    machine = stack.state["state_machine_arn"]
    execution = machine.replace(":stateMachine:", ":execution:") + f":{run_id}"
    stack.sfn.stop_execution(executionArn=execution, error="Operator", cause="console")
    localstack.wait_until("the execution aborted", lambda: stack.sfn.describe_execution(
        executionArn=execution)["status"] == "ABORTED", 60)
    # AND the rule delivers its status change to aggregate, twice (at least once delivery)
    request = deliver(status_change(run_id, "ABORTED", machine))
    url = f"{stack.state['lambda']}/2015-03-31/functions/aggregate/invocations"
    answers = [localstack.http("POST", url, request, timeout=120) for _ in range(2)]
    # THEN the run is recorded Cancelled, its summary saying the execution was stopped
    assert [a["status"] for a in answers] == ["Cancelled", "Cancelled"], answers
    record = stack.run_record(run_id)
    assert record["status"] == "Cancelled", record
    assert "ABORTED" in json.loads(record["summary"])["notRead"]
    # AND every instance not sent a command ended NotStarted, saying why
    items = stack.instances(run_id, f"{SLOW_ACCOUNT}/us-east-1")
    not_sent = [it for it in items.values() if not it.get("commandId")]
    assert not_sent and all(it["state"] == "NotStarted" and it["statusDetails"]
                            == "execution stopped (Step Functions ABORTED)"
                            for it in not_sent), items
    # AND the completion event was sent once, and the command shows the run as Cancelled
    done = [e for e in stack.run_events(run_id, wait=15)
            if e["detail-type"] == "Patch Run Completed"]
    assert len(done) == 1 and done[0]["detail"]["status"] == "Cancelled", done
    watched = fleetpatch(stack, "watch", run_id)
    assert watched.returncode == 1 and f"run {run_id} ended Cancelled" in watched.stdout, \
        watched.stdout + watched.stderr
