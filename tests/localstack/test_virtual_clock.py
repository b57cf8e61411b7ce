"""The scale benchmark's virtual clock (tests/localstack/virtual_clock.py): it advances
fleetsim's simulated clock only when every unit of moto's interpreter is waiting, and then
always does."""

from __future__ import annotations

import threading

import pytest

import virtual_clock
from virtual_clock import VirtualClock

LIVENESS = 10  # seconds a thread may take to get going on a loaded machine; not a timing figure


class FakeSim:
    """fleetsim's frozen clock: moves only when advanced."""

    def __init__(self):
        self.now = 1_000_000
        self.advances: list[int] = []

    def now_ms(self) -> int:
        return self.now

    def advance_ms(self, ms: int) -> int:
        self.advances.append(ms)
        self.now += ms
        return self.now


def waiter(clock: VirtualClock, seconds: float, then_end: bool = False) -> threading.Thread:
    """A unit that starts, then sleeps in a Wait state; the thread ends when woken (and the
    unit with it, if `then_end`)."""
    clock.start_unit()

    def run():
        clock.wait(seconds)
        if then_end:
            clock.end_unit()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def until_waiting(clock: VirtualClock, n: int):
    for _ in range(LIVENESS * 100):
        if clock.waiting() == n:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{n} waiter(s) never registered")


def test_the_clock_holds_while_a_waiters_sibling_is_busy_then_jumps_to_the_wake_time():
    # GIVEN two units of one stack: A waits 30 s, its sibling B is busy (a Dispatch running)
    sim = FakeSim()
    clock = VirtualClock(sim.now_ms, sim.advance_ms, idle_seconds=0)
    clock.start_unit()  # B
    a = waiter(clock, 30)
    until_waiting(clock, 1)

    # WHEN the coordinator looks, again and again, while B works
    advanced = [clock.tick() for _ in range(50)]

    # THEN the clock never moves and A still sleeps
    assert advanced == [False] * 50
    assert sim.advances == []
    assert a.is_alive()

    # WHEN B finishes
    clock.end_unit()

    # THEN the next look advances exactly to A's wake time, and A wakes
    assert clock.tick() is True
    assert sim.advances == [30_000]
    a.join(LIVENESS)
    assert not a.is_alive()
    assert clock.active == 1  # A counts again, before it even runs


def test_a_service_call_in_flight_holds_the_clock():
    # GIVEN a waiter, and the interpreter's lambda:invoke still in flight
    sim = FakeSim()
    clock = VirtualClock(sim.now_ms, sim.advance_ms, idle_seconds=0)
    a = waiter(clock, 30)
    until_waiting(clock, 1)
    clock.call_started()

    # WHEN the coordinator looks THEN it holds; once the call returns it advances
    assert clock.tick() is False
    clock.call_ended()
    assert clock.tick() is True
    a.join(LIVENESS)
    assert sim.advances == [30_000]


def test_when_everything_waits_the_coordinator_wakes_each_waiter_at_its_own_time():
    # GIVEN three units waiting 30 s, 30 s and 45 s, and the coordinator running
    sim = FakeSim()
    clock = VirtualClock(sim.now_ms, sim.advance_ms, idle_seconds=0)
    threads = [waiter(clock, s, then_end=True) for s in (30, 30, 45)]
    stop = threading.Event()
    coordinator = threading.Thread(target=clock.run, args=(stop, 0.001), daemon=True)

    # WHEN it runs
    coordinator.start()
    for t in threads:
        t.join(LIVENESS)
    stop.set()

    # THEN it advanced (it never stalls) to 30 s, woke both 30 s waiters, then 15 s more
    assert not any(t.is_alive() for t in threads)
    assert sim.advances[:2] == [30_000, 15_000]


def test_a_recent_state_transition_holds_the_clock_and_counts_as_billed():
    from moto.stepfunctions.parser.api import HistoryEventType
    sim = FakeSim()
    clock = VirtualClock(sim.now_ms, sim.advance_ms, idle_seconds=3600)
    waiter(clock, 30)
    until_waiting(clock, 1)

    # WHEN the interpreter records a state entered, and another event
    clock.event(HistoryEventType.TaskStateEntered)
    clock.event(HistoryEventType.TaskScheduled)

    # THEN the clock holds for the idle margin, and only the state entered is a transition
    assert clock.tick() is False
    assert dict(clock.transitions) == {"TaskStateEntered": 1}


def test_a_map_waiting_for_its_children_counts_again_before_the_last_child_ends(monkeypatch):
    # GIVEN moto's own JobPool, patched: a Map thread awaits its one child, while another
    # unit of the stack sleeps in a Wait
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.job import (
        JobPool)
    sim = FakeSim()
    clock = VirtualClock(sim.now_ms, sim.advance_ms, idle_seconds=0)
    virtual_clock.install_patches(clock, monkeypatch.setattr)
    pool = JobPool(job_program=None, job_inputs=["item"])
    other = waiter(clock, 30)
    until_waiting(clock, 1)
    clock.start_unit()  # the Map's thread
    clock.start_unit()  # its child worker
    job = pool.next_job()
    release = threading.Event()

    def map_thread():
        pool.await_jobs()
        release.wait(LIVENESS)
        clock.end_unit()
    parent = threading.Thread(target=map_thread, daemon=True)
    parent.start()
    for _ in range(LIVENESS * 100):
        if clock.active == 1:  # the Map stopped counting: only the child runs
            break
        threading.Event().wait(0.01)
    assert clock.active == 1

    # WHEN the child closes its job and its worker ends
    job.job_output = {}
    pool.close_job(job)
    clock.end_unit()

    # THEN the Map counts again: no advance until the Map itself is done
    assert clock.tick() is False
    release.set()
    parent.join(LIVENESS)
    assert clock.tick() is True
    other.join(LIVENESS)
    assert sim.advances == [30_000]


def test_without_the_variable_nothing_is_patched(monkeypatch):
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import (
        wait_function)
    monkeypatch.delenv("FLEETPATCH_VIRTUAL_CLOCK", raising=False)
    before = wait_function.WaitFunction._wait_interval
    assert virtual_clock.install_from_env() is None
    assert wait_function.WaitFunction._wait_interval is before


@pytest.mark.parametrize("seconds", [0, -1])
def test_a_zero_wait_returns_at_once_without_registering(seconds):
    sim = FakeSim()
    clock = VirtualClock(sim.now_ms, sim.advance_ms, idle_seconds=0)
    clock.start_unit()
    clock.wait(seconds)
    assert clock.waiting() == 0 and clock.active == 1
