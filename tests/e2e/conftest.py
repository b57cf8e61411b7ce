"""Session fixture: one local stack (moto + fleetsim over tests/fleets/e2e.toml + cargo lambda
watch) for the whole e2e run; each scenario uses its own accounts of that fleet, so the
oracle can be read per account/Region. Faults are set per test and cleared afterwards."""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "localstack"))

import stack as localstack  # noqa: E402

FLEET = ROOT / "tests" / "fleets" / "e2e.toml"
STATE_DIR = Path(os.environ.get("FLEETPATCH_E2E_DIR", ROOT / ".local" / "e2e"))
RUN_TIMEOUT = float(os.environ.get("FLEETPATCH_E2E_RUN_TIMEOUT", "240"))


def pytest_collection_modifyitems(config, items):
    """Tests marked run_last (checks over the whole session) run after all others."""
    items.sort(key=lambda i: i.get_closest_marker("run_last") is not None)


@pytest.fixture(scope="session")
def stack():
    s = localstack.Stack(FLEET, STATE_DIR, poll_seconds=1, concurrency=8,
                         build=os.environ.get("FLEETPATCH_E2E_BUILD", "1") == "1")
    try:
        state = s.start()
    except localstack.StackError as e:
        pytest.exit(f"local stack did not start: {e}", returncode=2)
    client = localstack.StackClient(state)
    try:
        yield client
    finally:
        try:  # every IAM decision of the session, for reading after a failure
            (STATE_DIR / "iam-decisions.json").write_text(
                json.dumps(client.oracle("iam"), indent=1))
        except Exception:  # noqa: BLE001 - a stack that died has no log to save
            pass
        s.stop()


def iam_denials(client) -> dict:
    """The oracle's denied IAM decisions: (principal, operation, action, resource) -> entry."""
    log = client.oracle("iam")
    return {(json.dumps(d["principal"], sort_keys=True), d["operation"], d["action"],
             d["resource"]): d for d in log.get("denied", [])}


def denial_text(d: dict) -> str:
    who = d.get("function") or d.get("app") or d["principal"].get("kind")
    return (f"{who} ({d.get('role')}): {d['action']} on {d['resource']} denied "
            f"{d['count']}x - {d['message']}")


# Every allowed IAM decision of the session: (role logical ID, action), for the
# unused-grant check of test_iam.py.
IAM_USED: set = set()


@pytest.fixture(autouse=True)
def iam_no_unexpected_denials(request):
    """After every scenario: the oracle logged no IAM denial other than the ones the test
    declares with @pytest.mark.iam_denials(action, ...). A missing grant fails the scenario
    with the function, the action and the resource named."""
    if "stack" not in request.fixturenames:
        yield
        return
    client = request.getfixturevalue("stack")
    if not client.oracle("iam").get("enabled"):
        yield
        return
    before = {k: d["count"] for k, d in iam_denials(client).items()}
    yield
    log = client.oracle("iam")
    IAM_USED.update((d["role"], d["action"]) for d in log.get("decisions", [])
                    if d["allowed"] and d.get("role"))
    marker = request.node.get_closest_marker("iam_denials")
    expected = set(marker.args) if marker else set()
    new = [d for k, d in iam_denials(client).items()
           if d["count"] > before.get(k, 0) and d["action"] not in expected]
    assert not new, "IAM denied calls the scenario did not expect:\n" + "\n".join(
        denial_text(d) for d in new)


@pytest.fixture(autouse=True)
def no_faults(request):
    """Every test starts and ends without fault rules (only tests that use the stack)."""
    if "stack" not in request.fixturenames:
        yield
        return
    client = request.getfixturevalue("stack")
    client.faults([])
    yield
    client.faults([])


def base_input(**kw) -> dict:
    inp = {
        "operation": "Install",
        "resourceGroup": "patch-group-a",
        "accounts": [],
        "excludeAccounts": [],
        "regions": ["us-east-1"],
        "locationConcurrency": "10",
        "locationErrorThreshold": "100%",
        "targetConcurrency": "50%",
        "targetErrorThreshold": "100%",
        "rebootOption": "RebootIfNeeded",
        "deliveryTimeoutSeconds": 60,
    }
    inp.update(kw)
    return inp


@dataclass
class Run:
    """Everything a scenario asserts on, read after the execution ended."""
    run_id: str
    execution: dict
    record: dict
    summary: dict
    locations: dict
    events: list
    commands: list          # the oracle's SendCommands of this run (by Comment)
    stats: dict             # the oracle's stats (whole simulator)
    oracle_instances: dict  # the oracle's instances, by id
    client: object = field(repr=False, default=None)

    def instances(self, location: str) -> dict:
        return self.client.instances(self.run_id, location)

    def sent_instance_ids(self, location: str | None = None) -> list:
        ids = []
        for c in self.commands:
            if location is None or f"{c['account']}/{c['region']}" == location:
                ids += c["instance_ids"]
        return ids

    def completed_event(self) -> dict:
        done = [e for e in self.events if e["detail-type"] == "Patch Run Completed"]
        assert len(done) == 1, f"expected one 'Patch Run Completed' event, got {self.events}"
        return done[0]


def execute(client, name: str, run_input: dict, timeout: float = RUN_TIMEOUT) -> Run:
    """Runs one execution and reads everything back. Every scenario goes through here, so
    every scenario also checks that the run's counters agree with its instance items."""
    run_id = f"e2e-{name}-{uuid.uuid4().hex[:8]}"
    execution = client.run(run_input, timeout=timeout, name=run_id)
    events = client.run_events(run_id, wait=15)
    commands = [c for c in client.oracle("commands") if run_id in (c.get("comment") or "")]
    run = Run(run_id=run_id, execution=execution, record=client.run_record(run_id) or {},
              summary=client.summary(run_id), locations=client.locations(run_id),
              events=events, commands=commands, stats=client.oracle("stats"),
              oracle_instances={i["instance_id"]: i for i in _instances(client)}, client=client)
    assert_counters_match_items(run)
    return run


LIVE_STATES = {"Pending", "Claimed", "InFlight"}


def assert_counters_match_items(run: Run):
    """The run item's counters equal what its instance items say, at the end of every run,
    faults or not: `instancesSent` = items with a command, `instancesDone` = items that were
    online at expansion (dispatch took them on) and are now in a final state."""
    items = [i for loc in run.locations for i in run.instances(loc).values()]
    sent = sum(1 for i in items if i.get("commandId"))
    done = sum(1 for i in items
               if i.get("pingStatus") == "Online" and i.get("state") not in LIVE_STATES)
    counters = (run.record.get("instancesSent", 0), run.record.get("instancesDone", 0))
    assert counters == (sent, done), (
        f"run {run.run_id}: counters (instancesSent, instancesDone) = {counters}, "
        f"instance items say {(sent, done)}")


def _instances(client):
    data = client.oracle("instances")
    return data["instances"] if isinstance(data, dict) else data


def describe(run: Run) -> str:
    """A compact dump for assertion messages."""
    locs = {k: {f: v.get(f) for f in ("outcome", "reason", "counts", "targeted")}
            for k, v in run.locations.items()}
    return json.dumps({"execution": {k: run.execution.get(k) for k in ("status", "error", "cause")},
                       "status": run.record.get("status"), "locations": locs},
                      default=str, indent=1)[:4000]
