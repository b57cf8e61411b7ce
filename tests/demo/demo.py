#!/usr/bin/env python3
"""`make demo`: start the local stack over the demo fleet, run one Install across it through the
`fleetpatch` command (`start --watch`, then `report`, and the HTML report written to a file
whose path is printed), stop everything, exit 0 when the run completed.

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


def fleetpatch(state: dict, *args: str, timeout: float = 120, capture: bool = False):
    """Runs the `fleetpatch` command as an operator would, pointed at the local stack (its
    endpoint through AWS_ENDPOINT_URL, the state machine and table given explicitly, as the
    local stack has no CloudFormation stack to read them from)."""
    exe = localstack.target_dir() / "debug" / "fleetpatch"
    env = {**os.environ, "AWS_ENDPOINT_URL": state["endpoint"], "AWS_REGION": state["region"],
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}
    env.pop("AWS_PROFILE", None)
    argv = [str(exe), "--state-machine", state["state_machine_arn"], "--table", state["table"],
            *args]
    print("$ fleetpatch " + " ".join(args), flush=True)
    return subprocess.run(argv, env=env, timeout=timeout, text=True,
                          capture_output=capture)


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
        input_file = a.state_dir / f"{run_id}.json"
        input_file.write_text(json.dumps(run_input, indent=2))
        watched = fleetpatch(state, "start", str(input_file), "--name", run_id, "--watch",
                             timeout=a.timeout)
        print(flush=True)
        fleetpatch(state, "report", run_id)
        html = a.state_dir / f"{run_id}.html"
        fleetpatch(state, "report", run_id, "--format", "html", "--output", str(html))
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
        ok = watched.returncode in (0, 1) and status in COMPLETED and not iam.get("denied")
        print(f"\nrun {run_id} ended {status}; "
              + ("demo OK" if ok else "demo FAILED") + f" in {time.monotonic() - t0:.0f}s")
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stack", file=sys.stderr)
        return 130
    except (localstack.StackError, TimeoutError, subprocess.TimeoutExpired) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        # a second Ctrl-C / SIGTERM must not cut the cleanup short
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
