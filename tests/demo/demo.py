#!/usr/bin/env python3
"""`make demo`: start the local stack over the demo fleet, run one Install across it, show
progress while it runs, print the report, stop everything, exit 0 when the run completed.

The fleet (tests/fleets/demo.toml): 5 member accounts under nested OUs, one without the
execution role, one SUSPENDED; 3 Regions; 186 instances, some offline, some failing. The run
targets the organization root (minus the management account), so OU resolution, the
suspended account, AccessDenied locations and failing instances all show up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "localstack"))

import stack as localstack  # noqa: E402

DEMO_INPUT = {
    "operation": "Install",
    "resourceGroup": "patch-group-a",
    "accounts": ["r-demo"],
    "excludeAccounts": ["111111111111"],
    "regions": ["us-east-1", "eu-west-1", "ap-southeast-2"],
    "locationConcurrency": "10",
    "locationErrorThreshold": "50%",
    "targetConcurrency": "25%",
    "targetErrorThreshold": "25%",
    "rebootOption": "RebootIfNeeded",
    "deliveryTimeoutSeconds": 300,
}
COMPLETED = {"Succeeded", "CompletedWithErrors", "StoppedByThreshold"}


class Progress:
    """One line, rewritten in place on a terminal; a line every few seconds otherwise."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self.tty = sys.stdout.isatty()
        self.start = time.monotonic()
        self.last_print = 0.0
        self.last_line = ""

    def line(self) -> str:
        rec = self.client.run_record(self.run_id) or {}
        locs = self.client.locations(self.run_id)
        outcomes = Counter(v["outcome"] for v in locs.values() if v.get("outcome"))
        targeted = sum(int(v.get("targeted") or 0) for v in locs.values())
        total = rec.get("locationCount") or len(locs) or "?"
        out = "  ".join(f"{k} {n}" for k, n in sorted(outcomes.items()))
        return (f"[{time.monotonic() - self.start:4.0f}s] {rec.get('status', 'Starting'):<9} "
                f"locations {rec.get('locationsDone', 0)}/{total} done "
                f"({rec.get('locationsFailed', 0)} failed)  "
                f"instances {rec.get('instancesSent', 0)} sent, {rec.get('instancesDone', 0)} done"
                f" of {targeted}" + (f"  | {out}" if out else ""))

    def tick(self):
        try:
            line = self.line()
        except Exception as e:  # noqa: BLE001 - progress is best effort
            line = f"(progress unavailable: {e})"
        now = time.monotonic()
        if self.tty:
            sys.stdout.write("\r\033[K" + line[: os.get_terminal_size().columns - 1])
            sys.stdout.flush()
        elif line != self.last_line and now - self.last_print >= 5:
            print(line, flush=True)
            self.last_print = now
        self.last_line = line

    def done(self):
        self.tick()
        if self.tty:
            sys.stdout.write("\n")
        elif self.last_line:
            print(self.last_line)


def print_report(state: dict, client, run_id: str):
    exe = localstack.target_dir() / "debug" / "fleetpatch-report"
    env = {**os.environ, "AWS_ENDPOINT_URL": state["endpoint"], "AWS_REGION": state["region"],
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}
    if exe.exists():
        r = subprocess.run([str(exe), "--table", state["table"], "--run-id", run_id], env=env,
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and r.stdout.strip():
            print(r.stdout.rstrip())
            return
        print(f"(fleetpatch-report failed: {r.stderr.strip()[:300]}; own summary follows)")
    # Fallback: a per-location table from DynamoDB.
    summary = client.summary(run_id)
    print(f"run {run_id}: {summary.get('status')}")
    print(f"{'location':<28} {'outcome':<18} {'targeted':>8}  states")
    for loc, v in sorted(client.locations(run_id).items()):
        counts = " ".join(f"{k}={n}" for k, n in sorted((v.get("counts") or {}).items()))
        print(f"{loc:<28} {v.get('outcome') or '-':<18} {v.get('targeted') or 0:>8}  {counts}"
              + (f"  ({v['reason'][:60]})" if v.get("reason") else ""))
    print("compliance:", json.dumps(summary.get("compliance")))
    if summary.get("skippedAccounts"):
        print("skipped accounts:", json.dumps(summary["skippedAccounts"]))


CONTROL_SERVICES = ("ssm", "sts", "resource-groups", "organizations")


def print_control_calls(client, run_id: str) -> None:
    """The control-plane calls the run made in the target accounts and the management account
    (SSM, STS, Resource Groups, Organizations), as the simulator counted them, per targeted
    instance: what a run costs the customer's API quotas."""
    calls = {op: c["calls"] for op, c in client.oracle("stats")["calls"].items()
             if op.split(":")[0] in CONTROL_SERVICES}
    targeted = (client.summary(run_id) or {}).get("instancesTargeted") or 0
    total = sum(calls.values())
    top = ", ".join(f"{op} {n}" for op, n in sorted(calls.items(), key=lambda kv: -kv[1])[:4])
    per = f"{total / targeted:.2f} per targeted instance" if targeted else "no instance targeted"
    print(f"\ncontrol-plane calls: {total} ({per}); most: {top}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fleetpatch demo on the local stack")
    ap.add_argument("--fleet", type=Path, default=ROOT / "tests" / "fleets" / "demo.toml")
    ap.add_argument("--speed", type=float, default=120.0,
                    help="simulated seconds per real second (default 120)")
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".local" / "demo")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the run")
    ap.add_argument("--input", type=Path, help="run input JSON (default: the demo's)")
    a = ap.parse_args(argv)

    # SIGTERM / SIGHUP behave like Ctrl-C: unwind and stop the stack.
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)

    run_input = json.loads(a.input.read_text()) if a.input else DEMO_INPUT
    stack = localstack.Stack(a.fleet, a.state_dir, speed=a.speed, poll_seconds=1,
                             concurrency=12)
    print(f"fleetpatch demo: building and starting the local stack (logs: {a.state_dir})",
          flush=True)
    t0 = time.monotonic()
    try:
        state = stack.start()
        print(f"stack up in {time.monotonic() - t0:.0f}s: endpoint {state['endpoint']}, "
              f"fleet {a.fleet.name}, clock x{a.speed:g}", flush=True)
        client = localstack.StackClient(state)
        run_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        print("run input:", json.dumps(run_input), flush=True)
        arn = client.start_run(run_input, name=run_id)
        print(f"started run {run_id}", flush=True)
        progress = Progress(client, run_id)
        execution = client.wait_execution(arn, a.timeout, on_tick=progress.tick, tick=1.0)
        progress.done()
        print(f"\nexecution {execution['status']}"
              + (f": {execution.get('error')}: {execution.get('cause')}"
                 if execution["status"] != "SUCCEEDED" else "") + "\n", flush=True)
        print_report(state, client, run_id)
        status = (client.run_record(run_id) or {}).get("status")
        print_control_calls(client, run_id)
        iam = client.oracle("iam")
        if iam.get("enabled"):
            calls = sum(d["count"] for d in iam["decisions"])
            print(f"\nIAM: {calls} checks against infra/template.yaml and "
                  f"infra/target-account.yaml, {len(iam['denied'])} denied")
            for d in iam["denied"]:
                print(f"  DENIED {d.get('function') or d.get('app')}: {d['message']}")
        else:
            print("\nIAM: not evaluated (FLEETPATCH_IAM=off)")
        ok = execution["status"] == "SUCCEEDED" and status in COMPLETED \
            and not iam.get("denied")
        print(f"\nrun {run_id} ended {status}; "
              + ("demo OK" if ok else "demo FAILED") + f" in {time.monotonic() - t0:.0f}s")
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stack", file=sys.stderr)
        return 130
    except (localstack.StackError, TimeoutError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        # a second Ctrl-C / SIGTERM must not cut the cleanup short
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
