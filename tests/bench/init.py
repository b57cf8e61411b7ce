"""`make bench` (part 2): each function's cold start as Lambda sees it, measured here.

Lambda starts a function's process and counts its init until the process first asks the
Runtime API for an event (`GET /2018-06-01/runtime/invocation/next`). This script plays that
Runtime API on a local port, starts each release binary (`target/release/<function>`) as
Lambda would (the runtime environment variables, the function's configuration, credentials
in the environment), and measures:

- init: wall time from process start to its first `/next`, over RUNS starts (p50, p90);
- RSS: the process's peak resident set size (VmHWM) when it asks for its first event.

It prints figures and asserts nothing. Needs Linux (/proc) and a release build.
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "localstack"))
import stack as localstack  # noqa: E402

FUNCTIONS = localstack.FUNCTIONS  # every function the template deploys, gate included


class RuntimeApi(http.server.ThreadingHTTPServer):
    """A Runtime API that records when a process first asks for an event, then holds the
    request (as Lambda does while no event is queued) until the process is stopped."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.asked = threading.Event()
        self.asked_at = 0.0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        if self.path.startswith("/2018-06-01/runtime/invocation/next"):
            if not self.server.asked.is_set():
                self.server.asked_at = time.monotonic()
                self.server.asked.set()
            time.sleep(30)  # no event: the process waits, as in Lambda
        self.send_response(404)
        self.end_headers()

    def log_message(self, *_):
        pass


def environment(function: str, port: int) -> dict:
    return {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": f"fleetpatch-{function}",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/fleetpatch-{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDBENCH",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_SESSION_TOKEN": "bench",
        "AWS_EC2_METADATA_DISABLED": "true",
        "FLEETPATCH_TABLE": "fleetpatch-runs",
        "FLEETPATCH_EVENT_BUS": "default",
    }


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def start_once(binary: Path, function: str) -> tuple[float, int]:
    """(seconds from process start to its first /next, peak RSS in KiB at that moment)."""
    api = RuntimeApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        p = subprocess.Popen([str(binary)], env=environment(function, api.server_port),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if not api.asked.wait(10):
                err = p.stderr.read1(4096).decode(errors="replace") if p.poll() is not None else ""
                raise RuntimeError(f"{function} never asked for an event: {err}")
            return api.asked_at - started, peak_rss_kib(p.pid)
        finally:
            p.kill()
            p.wait()
    finally:
        api.shutdown()
        api.server_close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "20")))
    a = ap.parse_args()
    release = localstack.target_dir() / "release"
    print(f"cold start of each release function, {a.runs} starts each "
          f"(process start to first /next; peak RSS then)")
    print(f"{'function':<10} {'size MB':>8} {'init p50 ms':>12} {'init p90 ms':>12} "
          f"{'peak RSS MB':>12}")
    for fn in FUNCTIONS:
        binary = release / fn
        if not binary.exists():
            print(f"{fn:<10} not built: cargo build --release -p fleetpatch-functions --bins")
            continue
        samples = [start_once(binary, fn) for _ in range(a.runs)]
        inits = [s[0] * 1000 for s in samples]
        rss = max(s[1] for s in samples) / 1024
        size = binary.stat().st_size / 1e6
        print(f"{fn:<10} {size:>8.1f} {statistics.median(inits):>12.1f} "
              f"{percentile(inits, 0.9):>12.1f} {rss:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
