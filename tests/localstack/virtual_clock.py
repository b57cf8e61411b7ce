"""A virtual clock for moto's Step Functions interpreter, for the scale benchmark.

With `FLEETPATCH_VIRTUAL_CLOCK=<fleetsim URL>` in its environment, the moto launcher
(`moto_server.py`) installs this module's patches: every Wait state waits on fleetsim's
SIMULATED clock (frozen, `--speed 0`) instead of the wall clock, and a coordinator thread in
moto's process advances fleetsim's clock (`POST /_fleetsim/clock`) to the earliest wake time
once the stack is quiescent. Processing then costs no simulated time, so a run's simulated
makespan measures the orchestration's decisions (poll granularity, rounds, refills), not this
machine's speed. Without the variable nothing here is installed: the e2e suite keeps moto's
real-time waits.

Quiescent means all of:
- no unit of interpreter work is running: a unit is an execution's program thread or a Map
  worker thread; it stops counting while it sleeps in a Wait (the coordinator counts it again,
  under the same lock, before it wakes it) or while its Map waits for its children (the last
  child's `close_job` counts the parent again before it finishes, so there is no gap);
- no service call of the interpreter (lambda:invoke) is in flight;
- no history event (a state transition) for `idle_seconds`, a safety margin;
- at least one waiter.

It also counts the states entered (`*StateEntered` events, the transitions AWS bills for
Standard workflows), Distributed Map children included: moto keeps those children's events
in a separate EventManager that no API returns. `GET /` on `FLEETPATCH_VIRTUAL_CLOCK_PORT`
answers the counters as JSON.

Invariant: the clock never advances while a unit runs or a call is in flight, and every
waiter whose wake time has come is woken by the advance that reached it.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

LOG = logging.getLogger("fleetpatch.virtual_clock")


class VirtualClock:
    """The bookkeeping and the advance decision, independent of moto (tests drive it with a
    fake fleetsim: `now_ms()` reads the simulated clock, `advance_ms(ms)` moves it and
    answers the new now)."""

    def __init__(self, now_ms: Callable[[], int], advance_ms: Callable[[int], int],
                 idle_seconds: float = 0.2):
        self._now_ms = now_ms
        self._advance_ms = advance_ms
        self.idle_seconds = idle_seconds
        self._cv = threading.Condition()
        self._now: int | None = None
        self.active = 0
        self.in_flight = 0
        self.last_activity = time.monotonic()
        self._waiters: dict[int, int] = {}  # token -> wake time, simulated ms
        self._woken: set[int] = set()
        self._next_token = 0
        self.advances = 0
        self.advanced_ms = 0
        self.transitions: Counter[str] = Counter()
        self.anomalies = 0

    # -- units of work ----------------------------------------------------------------------
    def start_unit(self) -> None:
        with self._cv:
            self.active += 1
            self.last_activity = time.monotonic()

    def end_unit(self) -> None:
        with self._cv:
            self._leave()

    def _leave(self) -> None:
        self.active -= 1
        self.last_activity = time.monotonic()
        if self.active < 0:  # a unit ended that was never counted: a patch missed a path
            self.anomalies += 1
            LOG.error("virtual clock: active units below zero")
            self.active = 0

    def call_started(self) -> None:
        with self._cv:
            self.in_flight += 1
            self.last_activity = time.monotonic()

    def call_ended(self) -> None:
        with self._cv:
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    def event(self, event_type) -> None:
        name = str(getattr(event_type, "value", event_type))  # moto's HistoryEventType
        with self._cv:
            self.last_activity = time.monotonic()
            if name.endswith("StateEntered"):
                self.transitions[name] += 1

    # -- pools: a Map waiting for its children ------------------------------------------------
    def pool_await(self, pool, is_terminated: Callable[[], bool]) -> bool:
        """The Map's thread is about to wait for its children: it stops counting unless the
        pool is already done. Answers whether it stopped counting."""
        with self._cv:
            if is_terminated():
                return False
            pool._fp_blocked = True
            self._leave()
            return True

    def pool_closed(self, pool, is_terminated: Callable[[], bool]) -> None:
        """A child closed its job: if that ended the pool, the waiting Map counts again,
        before the child's own unit ends."""
        with self._cv:
            if is_terminated() and getattr(pool, "_fp_blocked", False) \
                    and not getattr(pool, "_fp_resumed", False):
                pool._fp_resumed = True
                self.active += 1
                self.last_activity = time.monotonic()

    # -- waits ------------------------------------------------------------------------------
    def now(self) -> int:
        with self._cv:
            if self._now is None:
                self._now = self._now_ms()
            return self._now

    def wait(self, seconds: float, is_running: Callable[[], bool] = lambda: True) -> None:
        """Blocks the calling unit until the simulated clock reaches now + seconds (or its
        execution stops)."""
        if seconds <= 0:
            return
        with self._cv:
            if self._now is None:
                self._now = self._now_ms()
            token = self._next_token
            self._next_token += 1
            self._waiters[token] = self._now + int(seconds * 1000)
            self._leave()
            self._cv.notify_all()
            while token not in self._woken:
                self._cv.wait(timeout=0.5)
                if token not in self._woken and not is_running():
                    del self._waiters[token]
                    self.active += 1
                    return
            self._woken.discard(token)

    def waiting(self) -> int:
        with self._cv:
            return len(self._waiters)

    # -- the coordinator --------------------------------------------------------------------
    def quiescent(self) -> bool:
        with self._cv:
            return self._quiescent_locked()

    def _quiescent_locked(self) -> bool:
        return (self.active == 0 and self.in_flight == 0 and bool(self._waiters)
                and time.monotonic() - self.last_activity >= self.idle_seconds)

    def tick(self) -> bool:
        """Advances the clock to the earliest wake time and wakes every waiter due by then,
        if the stack is quiescent. Answers whether it advanced."""
        with self._cv:
            if not self._quiescent_locked():
                return False
            if self._now is None:
                self._now = self._now_ms()
            target = min(self._waiters.values())
            delta = max(0, target - self._now)
            self._now = self._advance_ms(delta) if delta > 0 else self._now
            self.advances += 1
            self.advanced_ms += delta
            for token, wake in list(self._waiters.items()):
                if wake <= self._now:
                    del self._waiters[token]
                    self._woken.add(token)
                    self.active += 1
            self.last_activity = time.monotonic()
            self._cv.notify_all()
            return True

    def run(self, stop: threading.Event, poll_seconds: float = 0.05) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - fleetsim briefly unreachable: try again
                LOG.exception("virtual clock: advance failed")
            stop.wait(poll_seconds)

    def snapshot(self) -> dict:
        with self._cv:
            return {"now_ms": self._now, "active": self.active, "in_flight": self.in_flight,
                    "waiting": len(self._waiters), "advances": self.advances,
                    "advanced_ms": self.advanced_ms, "anomalies": self.anomalies,
                    "transitions": sum(self.transitions.values()),
                    "transitions_by_type": dict(self.transitions)}


def fleetsim_clock(url: str) -> tuple[Callable[[], int], Callable[[int], int]]:
    """now_ms and advance_ms through fleetsim's oracle."""
    def call(body=None) -> int:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{url.rstrip('/')}/_fleetsim/clock", data=data,
                                     method="GET" if body is None else "POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(json.loads(r.read())["now_ms"])
    return call, lambda ms: call({"advance_seconds": ms / 1000.0})


def install_patches(clock: VirtualClock, patch=setattr) -> None:
    """Points moto's interpreter at `clock`: Wait states, execution and Map worker threads,
    Map pools, service calls and history events. `patch` sets each attribute (tests pass
    pytest's monkeypatch.setattr, which undoes them)."""
    import botocore.client
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        inline_iteration_component as inline, job)
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function
    from moto.stepfunctions.parser.asl.eval.event import event_manager
    from moto.stepfunctions.parser.backend import execution_worker as ew
    from moto.stepfunctions.parser.utils import TMP_THREADS

    def wait_interval(self, env, wait_seconds):
        clock.wait(wait_seconds, env.is_running)
    patch(wait_function.WaitFunction, "_wait_interval", wait_interval)

    original_logic = ew.ExecutionWorker._execution_logic

    def execution_logic(self):
        try:
            original_logic(self)
        finally:
            clock.end_unit()
    patch(ew.ExecutionWorker, "_execution_logic", execution_logic)
    for cls in (ew.ExecutionWorker, ew.SyncExecutionWorker):
        def start(self, _original=cls.start):
            clock.start_unit()
            _original(self)
        patch(cls, "start", start)

    def launch_worker(self, env, eval_input, job_pool):
        worker = self._create_worker(env=env, eval_input=eval_input, job_pool=job_pool)
        clock.start_unit()

        def run():
            try:
                worker.eval()
            finally:
                clock.end_unit()
        thread = threading.Thread(target=run, daemon=True)
        TMP_THREADS.append(thread)
        thread.start()
        return worker
    patch(inline.InlineIterationComponent, "_launch_worker", launch_worker)

    def await_jobs(self):
        if clock.pool_await(self, self._is_terminated):
            self._termination_event.wait()
    original_close = job.JobPool.close_job

    def close_job(self, closed):
        original_close(self, closed)
        clock.pool_closed(self, self._is_terminated)
    patch(job.JobPool, "await_jobs", await_jobs)
    patch(job.JobPool, "close_job", close_job)

    original_call = botocore.client.BaseClient._make_api_call

    def make_api_call(self, operation_name, api_params):
        clock.call_started()
        try:
            return original_call(self, operation_name, api_params)
        finally:
            clock.call_ended()
    patch(botocore.client.BaseClient, "_make_api_call", make_api_call)

    original_add = event_manager.EventManager.add_event

    def add_event(self, context, event_type, *args, **kwargs):
        clock.event(event_type)
        return original_add(self, context, event_type, *args, **kwargs)
    patch(event_manager.EventManager, "add_event", add_event)


def serve_stats(clock: VirtualClock, port: int) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            body = json.dumps(clock.snapshot()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def install_from_env() -> VirtualClock | None:
    """Installs everything if FLEETPATCH_VIRTUAL_CLOCK names fleetsim; else nothing."""
    url = os.environ.get("FLEETPATCH_VIRTUAL_CLOCK")
    if not url:
        return None
    now_ms, advance_ms = fleetsim_clock(url)
    clock = VirtualClock(now_ms, advance_ms,
                         idle_seconds=float(os.environ.get("FLEETPATCH_VIRTUAL_CLOCK_IDLE", "0.2")))
    install_patches(clock)
    port = os.environ.get("FLEETPATCH_VIRTUAL_CLOCK_PORT")
    if port:
        serve_stats(clock, int(port))
    threading.Thread(target=clock.run, args=(threading.Event(),), daemon=True).start()
    return clock
