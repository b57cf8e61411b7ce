"""`make bench` (part 3): each function's peak RSS while it handles a 10,000-instance location.

Starts the local stack (moto + fleetsim, `tests/localstack/stack.py`) on a generated fleet
of one account and Region holding 10,000 instances in one resource group (2% fail, 1%
offline), then plays Lambda's Runtime API for each function's binary, as `init.py` does,
handing it the events the state machine would, in its order: plan, gate (the wave's start),
expand, three dispatch rounds (the first sends the 10% window, the later ones follow it and
refill), settle (the location ended in error: every instance still pending is retired, the
largest write), gate (the wave's end: its gate over the location records), aggregate (the
last states and the compliance of all 10,000). Each event runs in a fresh process; its peak
RSS (VmHWM) is read when it asks for its next event, after answering.

It prints figures and asserts nothing. Needs Linux (/proc) and the functions built
(`--profile release`, the default, as Lambda runs them; or `debug`).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "localstack"))
import stack as localstack  # noqa: E402

ACCOUNT = "222222222222"
REGION = "us-east-1"
GROUP = "patch-group-a"

FLEET = f"""management_account = "111111111111"
execution_role = "AWS-SystemsManager-AutomationExecutionRole"

[settings]
speed = 600.0
invocation_visibility_ms = 300
pending_seconds = 2

[organization]
id = "o-rss0000001"
root_id = "r-rss1"

[[accounts]]
id = "111111111111"
name = "management"

[[accounts]]
id = "{ACCOUNT}"
name = "large"
parent = "r-rss1"
roles = ["AWS-SystemsManager-AutomationExecutionRole"]

[[generate]]
account_ids = ["{ACCOUNT}"]
regions = ["{REGION}"]
group = "{GROUP}"
instances_per_group = {{n}}
fail_percent = 2
offline_percent = 1
min_duration = 300
max_duration = 1800
seed = 8
"""


class RuntimeApi(http.server.ThreadingHTTPServer):
    """Hands one event to the process, records its answer, and notes when it asks for the
    next one (then holds that request, as Lambda does while no event is queued)."""

    daemon_threads = True

    def __init__(self, event: dict):
        super().__init__(("127.0.0.1", 0), Handler)
        self.event = json.dumps(event).encode()
        self.served = False
        self.answered = threading.Event()
        self.answer: dict | None = None
        self.error: str | None = None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        api = self.server
        if not self.path.startswith("/2018-06-01/runtime/invocation/next"):
            self.send_response(404)
            self.end_headers()
            return
        if api.served:
            api.answered.set()
            time.sleep(60)
            self.send_response(404)
            self.end_headers()
            return
        api.served = True
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "rss-bench-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 900_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                         f"arn:aws:lambda:{REGION}:111111111111:function:bench")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(api.event)))
        self.end_headers()
        self.wfile.write(api.event)

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        if self.path.endswith("/response"):
            self.server.answer = json.loads(body or b"null")
        else:
            self.server.error = body.decode(errors="replace")
        self.send_response(202)
        self.end_headers()

    def log_message(self, *_):
        pass


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def invoke(binary: Path, env: dict, event: dict, timeout: float) -> tuple[dict, float, int]:
    """(answer, seconds, peak RSS KiB) of one event handled by a fresh process."""
    api = RuntimeApi(event)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    started = time.monotonic()
    p = subprocess.Popen([str(binary)], env={**env, "AWS_LAMBDA_RUNTIME_API":
                                             f"127.0.0.1:{api.server_port}"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not api.answered.wait(timeout):
            raise RuntimeError(f"{binary.name} did not answer within {timeout:.0f} s")
        rss = peak_rss_kib(p.pid)
    finally:
        p.kill()
        p.wait()
        api.shutdown()
        api.server_close()
    if api.error:
        raise RuntimeError(f"{binary.name} failed: {api.error}")
    return api.answer, time.monotonic() - started, rss


def function_env(state_dir: Path) -> dict:
    env = {"PATH": os.environ.get("PATH", "")}
    for line in (state_dir / "functions.env").read_text().splitlines():
        k, _, v = line.partition("=")
        env[k] = v
    env.update({
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "warn",
    })
    return env


def steps(bins: Path, env: dict, timeout: float):
    """Runs the functions in the state machine's order; yields (function, seconds, KiB)."""
    def run(fn: str, event: dict) -> dict:
        env_fn = {**env, "AWS_LAMBDA_FUNCTION_NAME": f"fleetpatch-{fn}"}
        answer, secs, rss = invoke(bins / fn, env_fn, event, timeout)
        results.append((fn, secs, rss))
        return answer

    results: list[tuple[str, float, int]] = []
    plan = run("plan", {"executionName": f"rss-{int(time.time())}", "input": {
        "operation": "Install", "resourceGroup": GROUP, "accounts": [ACCOUNT],
        "regions": [REGION], "targetConcurrency": "10%", "locationConcurrency": "100%"}})
    wave = run("gate", {"runId": plan["runId"], "wave": 0, "action": "start"})
    task = {"runId": plan["runId"], "location": wave["locations"][0]}
    task = run("expand", task)
    for _ in range(3):
        task = run("dispatch", task)
        time.sleep(2)
    run("settle", {**task, "error": {"Error": "States.Timeout", "Cause": "rss bench"}})
    run("gate", {"runId": plan["runId"], "wave": 0, "action": "end"})
    run("aggregate", {"runId": plan["runId"]})
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=10_000)
    ap.add_argument("--profile", choices=["release", "debug"], default="release")
    ap.add_argument("--timeout", type=float, default=900)
    a = ap.parse_args()
    bins = localstack.target_dir() / a.profile
    missing = [fn for fn in localstack.FUNCTIONS if not (bins / fn).exists()]
    if missing:
        print(f"rss: {', '.join(missing)} not built ({a.profile})")
        return 0
    state_dir = Path(os.environ.get("FLEETPATCH_STACK_DIR", ROOT / ".local" / "rss"))
    state_dir.mkdir(parents=True, exist_ok=True)
    fleet = state_dir / "fleet.toml"
    fleet.write_text(FLEET.replace("{n}", str(a.instances)))
    s = localstack.Stack(fleet, state_dir, build=False)
    s.start()
    try:
        results = steps(bins, function_env(state_dir), a.timeout)
    finally:
        s.stop()
    print(f"\npeak RSS handling one location of {a.instances:,} instances "
          f"({a.profile} build, each event in a fresh process)")
    print(f"{'function':<10} {'event':<28} {'seconds':>8} {'peak RSS MB':>12}")
    rounds = 0
    for fn, secs, rss in results:
        label = fn
        if fn == "dispatch":
            rounds += 1
            label = f"dispatch round {rounds}"
        print(f"{fn:<10} {label:<28} {secs:>8.1f} {rss / 1024:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
