#!/usr/bin/env python3
"""The fleetpatch local stack: moto + fleetsim + `cargo lambda watch`, wired together.

    iam evaluator (tests/localstack/iam.py): the policies of infra/template.yaml and
          infra/target-account.yaml; fleetsim asks it about every call (FLEETPATCH_IAM=off
          turns evaluation off, for debugging only)
    fleetsim (one loopback port, the only endpoint anyone uses)
      - evaluates every call against the caller's role, answers AccessDenied as AWS does
      - serves STS, SSM, Resource Groups, Organizations from a fleet file (simulated fleet)
      - forwards Lambda Invoke to `cargo lambda watch` (the real functions, debug build)
      - forwards everything else (DynamoDB, Step Functions, EventBridge, SQS) to moto
    moto (MOTO_PORT = fleetsim's port, so Step Functions' lambda:invoke goes through fleetsim;
          MOTO_ACCOUNT_ID = the fleet's management account)
    cargo lambda watch (AWS_ENDPOINT_URL = fleetsim)

CLI:  python tests/localstack/stack.py up [--fleet F] [--speed S] [--poll-seconds N] [--reload]
      python tests/localstack/stack.py status
      python tests/localstack/stack.py down

`up` returns once everything answers and the table, the event rule -> SQS queue and the
state machine exist; the processes keep running until `down`. Endpoints and process ids are
written to the state file (default `.local/stack/stack.json`, gitignored); logs go beside it.
The module is also what the e2e tests and the demo import (`Stack`, `StackClient`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent


def target_dir() -> Path:
    """Where cargo puts its builds: asked of cargo, so that a global CARGO_TARGET_DIR (or a
    `build.target-dir` in a cargo config) is honoured."""
    global _TARGET_DIR
    if _TARGET_DIR is None:
        out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
        _TARGET_DIR = Path(json.loads(out)["target_directory"])
    return _TARGET_DIR


_TARGET_DIR: Path | None = None
DEFAULT_DIR = Path(os.environ.get("FLEETPATCH_STACK_DIR", ROOT / ".local" / "stack"))
DEFAULT_FLEET = ROOT / "tests" / "fleets" / "demo.toml"
FUNCTIONS = ["plan", "expand", "dispatch", "settle", "gate", "aggregate"]
# fleetsim's clock speed when neither --speed nor the fleet file gives one.
FLEETSIM_DEFAULT_SPEED = 60.0
BUILT_PACKAGES = ["fleetpatch-functions", "fleetsim", "fleetpatch-cli"]
REGION = "us-east-1"
TABLE = "fleetpatch-runs"
QUEUE = "fleetpatch-events"
RULE = "fleetpatch-events-to-sqs"
STATE_MACHINE = "fleetpatch-patching"
# The SDK app name of the operator (tests, demo): always allowed, like an administrator.
OPERATOR_APP = "fleetpatch-operator"


def iam_enabled() -> bool:
    """IAM evaluation is on unless FLEETPATCH_IAM=off (debugging only)."""
    return os.environ.get("FLEETPATCH_IAM", "on").lower() not in ("off", "0", "false", "no")


class StackError(RuntimeError):
    """The stack could not be started (the message names the log to read)."""


def function_timeouts(template: Path = ROOT / "infra" / "template.yaml") -> dict[str, int]:
    """Each function's `Timeout` in infra/template.yaml (the single source), keyed by the
    binary name cargo lambda serves (`Metadata.BuildProperties.Binary`); a function without
    its own Timeout takes `Globals.Function.Timeout`, else Lambda's default of 3 s."""
    import yaml

    class CfnLoader(yaml.SafeLoader):
        pass

    def intrinsic(loader, suffix, node):  # !Sub, !Ref, !GetAtt, ...: kept as plain data
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)
    CfnLoader.add_multi_constructor("!", intrinsic)
    doc = yaml.load(template.read_text(), Loader=CfnLoader)
    default = ((doc.get("Globals") or {}).get("Function") or {}).get("Timeout", 3)
    out = {}
    for res in (doc.get("Resources") or {}).values():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if binary:
            out[binary] = int((res.get("Properties") or {}).get("Timeout", default))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def management_account(fleet: Path) -> str:
    m = re.search(r'^\s*management_account\s*=\s*"(\d{12})"', fleet.read_text(), re.M)
    return m.group(1) if m else "111111111111"


def fleet_speed(fleet: Path) -> float:
    """The clock speed fleetsim takes from the fleet file's [settings], else its default."""
    import tomllib
    settings = tomllib.loads(fleet.read_text()).get("settings") or {}
    return float(settings.get("speed", FLEETSIM_DEFAULT_SPEED))


def http(method: str, url: str, body=None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def wait_until(what: str, check, timeout: float, log: Path | None = None, proc=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what}: process exited with {proc.returncode}; see {log}")
        try:
            v = check()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - readiness probes fail until ready
            last = e
        time.sleep(0.2)
    raise StackError(f"{what} not ready after {timeout:.0f}s ({last}); see {log}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(pid: int, marker: str, grace: float = 10.0) -> bool:
    """Stops the process group led by `pid` if that process still is ours (cmdline has
    `marker`). Returns True if something was stopped."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if marker not in cmdline:
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            # reap if it is our child, then check the whole group is gone
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
    return True


MARKERS = {"iam": "iam.py", "fleetsim": "fleetsim", "moto": "moto_server",
           "cargo-lambda": "cargo-lambda"}


class Stack:
    """Starts and stops the processes and creates the AWS resources."""

    def __init__(self, fleet: Path = DEFAULT_FLEET, state_dir: Path = DEFAULT_DIR,
                 speed: float | None = None, poll_seconds: int = 1, concurrency: int = 24,
                 reload: bool = False, build: bool = True, extra_env: dict | None = None,
                 lambda_port: int | None = None, iam: bool | None = None,
                 virtual_clock: bool = False, release: bool = False, lambdas: bool = True):
        """`virtual_clock`: Wait states wait on fleetsim's simulated clock, advanced while
        the stack is quiescent (tests/localstack/virtual_clock.py; the scale benchmark).
        `release`: the functions run as release builds. `lambdas=False`: no `cargo lambda
        watch` (a driver runs the handlers itself)."""
        self.fleet = Path(fleet).resolve()
        self.state_dir = Path(state_dir)
        self.speed = speed
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self.reload = reload
        self.build = build
        self.extra_env = extra_env or {}
        self.lambda_port = lambda_port
        self.iam = iam_enabled() if iam is None else iam
        self.virtual_clock, self.release, self.lambdas = virtual_clock, release, lambdas
        self.account = management_account(self.fleet)
        self.procs: dict[str, subprocess.Popen] = {}
        self.state: dict = {}

    def clock_speed(self) -> int:
        """How many times faster than the Wait states fleetsim's clock runs: its speed, or 1
        when the Wait states wait on fleetsim's clock (virtual_clock) or it is frozen."""
        speed = fleet_speed(self.fleet) if self.speed is None else self.speed
        if self.virtual_clock or speed < 1:
            return 1
        return min(3600, round(speed))

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = self.state_dir / f"{name}.log"
        out = open(log, "wb")
        p = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                             start_new_session=True)
        out.close()
        self.procs[name] = p
        return p

    def _build(self):
        if not self.build:
            return
        log = self.state_dir / "build.log"
        # One package per build, the functions alone first: the very selection `cargo lambda
        # watch` runs (`cargo run --package fleetpatch-functions`), so that its build is a
        # no-op (a joint build unifies fleetsim's features into tokio and hyper, and cargo
        # lambda then compiled the functions' whole tree again). See the Makefile's `build`.
        # The debug functions only when cargo lambda watch is to run them.
        packages = [p for p in BUILT_PACKAGES
                    if p != "fleetpatch-functions" or (self.lambdas and not self.release)]
        with open(log, "wb") as out:
            for package in packages:
                r = subprocess.run(["cargo", "build", "-p", package], cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT)
                if r.returncode != 0:
                    raise StackError(f"cargo build -p {package} failed; see {log}")
        if self.release and self.lambdas:
            with open(log, "ab") as out:
                r = subprocess.run(["cargo", "build", "--release", "-p", "fleetpatch-functions",
                                    "--bins"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                raise StackError(f"cargo build --release failed; see {log}")

    def start(self) -> dict:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if (self.state_dir / "stack.json").exists():
            old = json.loads((self.state_dir / "stack.json").read_text())
            if any(_alive(p["pid"]) for p in old.get("processes", {}).values()):
                raise StackError(f"a stack is already running ({self.state_dir}/stack.json); "
                                 "run `stack.py down` first")
        self._build()
        moto_port, lambda_port = free_port(), self.lambda_port or free_port()
        moto_url = f"http://127.0.0.1:{moto_port}"
        lambda_url = f"http://127.0.0.1:{lambda_port}"
        try:
            # 0. the IAM evaluator, reading both templates.
            iam_url = None
            if self.iam:
                p = self._spawn("iam", [sys.executable, str(ROOT / "tests" / "localstack" / "iam.py"),
                                        "--fleet", str(self.fleet), "--port", "0"])
                iam_log = self.state_dir / "iam.log"

                def iam_listening():
                    m = re.search(r"iam evaluator listening on (\S+:\d+)", iam_log.read_text())
                    return m and m.group(1)
                iam_url = "http://" + wait_until("iam evaluator", iam_listening, 60, iam_log, p)

            # 1. fleetsim: its port is what moto and the functions call.
            argv = [str(target_dir() / "debug" / "fleetsim"), "--port", "0",
                    "--fleet", str(self.fleet), "--moto-url", moto_url, "--lambda-url", lambda_url]
            if iam_url:
                argv += ["--iam-url", iam_url]
            if self.speed is not None:
                argv += ["--speed", str(self.speed)]
            for fn, seconds in function_timeouts().items():
                argv += ["--lambda-timeout", f"{fn}={seconds}"]
            p = self._spawn("fleetsim", argv)
            log = self.state_dir / "fleetsim.log"

            def listening():
                m = re.search(r"fleetsim listening on (\S+:\d+)", log.read_text())
                return m and m.group(1)
            sim_url = "http://" + wait_until("fleetsim", listening, 20, log, p)
            sim_port = int(sim_url.rsplit(":", 1)[1])

            # 2. moto, sending its service integrations (lambda:invoke) to fleetsim.
            # moto through its launcher: the same server, with DynamoDB transactions that copy
            # only the items they touch, under one lock (see moto_server.py).
            moto_env = {"MOTO_PORT": str(sim_port), "MOTO_ACCOUNT_ID": self.account}
            clock_url = None
            if self.virtual_clock:
                clock_port = free_port()
                clock_url = f"http://127.0.0.1:{clock_port}"
                moto_env.update({"FLEETPATCH_VIRTUAL_CLOCK": sim_url,
                                 "FLEETPATCH_VIRTUAL_CLOCK_PORT": str(clock_port)})
            p = self._spawn("moto", [sys.executable, str(HERE / "moto_server.py"),
                                     "-H", "127.0.0.1", "-p", str(moto_port)], moto_env)
            wait_until("moto", lambda: http("POST", f"{moto_url}/moto-api/config",
                                            {"stepfunctions": {"execute_state_machine": True}},
                                            timeout=2) is not None or True,
                       60, self.state_dir / "moto.log", p)

            # 3. cargo lambda watch, the functions pointed at fleetsim.
            env = {
                "FLEETPATCH_TABLE": TABLE,
                "FLEETPATCH_EVENT_BUS": "default",
                "FLEETPATCH_POLL_SECONDS": str(self.poll_seconds),
                # A wave's soak lasts its minutes on fleetsim's clock, which runs `speed`
                # times faster than the Wait states (unless they wait on that clock).
                "FLEETPATCH_CLOCK_SPEED": str(self.clock_speed()),
                "FLEETPATCH_RECORD_TTL_DAYS": "1",
                "AWS_ENDPOINT_URL": sim_url,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_LAMBDA_LOG_LEVEL": "info",
                **self.extra_env,
            }
            env_file = self.state_dir / "functions.env"
            env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
            argv = [str(VENV_BIN / "cargo-lambda"), "lambda", "watch",
                    "--invoke-address", "127.0.0.1", "--invoke-port", str(lambda_port),
                    "--concurrency", str(self.concurrency), "--env-file", str(env_file),
                    "-p", "fleetpatch-functions"]
            if not self.reload:
                argv.append("--ignore-changes")
            if self.release:
                argv.append("--release")
            if self.lambdas:
                # cargo-lambda runs `cargo run`: it needs cargo on PATH, and the venv for zig.
                p = self._spawn("cargo-lambda", argv,
                                {"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"})

                def lambda_up():
                    with socket.create_connection(("127.0.0.1", lambda_port), timeout=1):
                        return True
                wait_until("cargo lambda watch", lambda_up, 60,
                           self.state_dir / "cargo-lambda.log", p)
            self.state = {
                "endpoint": sim_url, "fleetsim": sim_url, "moto": moto_url, "lambda": lambda_url,
                "region": REGION, "account": self.account, "table": TABLE, "fleet": str(self.fleet),
                "state_dir": str(self.state_dir), "iam": iam_url,
                "virtual_clock": clock_url, "functions_env": env,
                "processes": {n: {"pid": p.pid, "marker": MARKERS[n]}
                              for n, p in self.procs.items()},
            }
            (self.state_dir / "stack.json").write_text(json.dumps(self.state, indent=2))
            client = StackClient(self.state)
            if self.lambdas:
                client.warm_up()
            self.state.update(client.create_resources())
            (self.state_dir / "stack.json").write_text(json.dumps(self.state, indent=2))
            return self.state
        except BaseException:
            self.stop()
            raise

    def stop(self):
        started = bool(self.procs)
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait(timeout=5)
            # children of the group (cargo run, the function binaries) may outlive the leader
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs.clear()
        f = self.state_dir / "stack.json"
        if started and f.exists():
            f.unlink()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def stop_from_state(state_dir: Path = DEFAULT_DIR) -> list[str]:
    """`down`: stops the processes named in the state file."""
    f = state_dir / "stack.json"
    if not f.exists():
        return []
    state = json.loads(f.read_text())
    stopped = []
    for name, p in reversed(list(state.get("processes", {}).items())):
        if stop_group(p["pid"], p["marker"]):
            stopped.append(name)
        try:
            os.killpg(p["pid"], signal.SIGKILL)  # stragglers of the group
        except (ProcessLookupError, PermissionError):
            pass
    f.unlink()
    return stopped


class StackClient:
    """AWS clients on the stack's endpoint plus fleetsim's oracle, for tests and the demo."""

    def __init__(self, state: dict):
        import boto3
        from botocore.config import Config

        self.state = state
        self.endpoint = state["endpoint"]
        self.account = state["account"]
        session = boto3.session.Session(aws_access_key_id="testing",
                                        aws_secret_access_key="testing", region_name=REGION)
        cfg = Config(retries={"mode": "standard", "max_attempts": 5}, read_timeout=60,
                     user_agent_appid=OPERATOR_APP)

        def c(service):
            return session.client(service, endpoint_url=self.endpoint, config=cfg)
        self.client = c
        self.ddb = c("dynamodb")
        self.sfn = c("stepfunctions")
        self.events = c("events")
        self.sqs = c("sqs")
        self._events_seen: list[dict] = []

    # -- setup -----------------------------------------------------------------------------
    def warm_up(self, timeout: float = 300):
        """Invokes every function once with an empty payload, so that `cargo run` has built
        and started each binary before moto's interpreter (60 s client timeout) calls it."""
        for fn in FUNCTIONS:
            url = f"{self.state['lambda']}/2015-03-31/functions/{fn}/invocations"
            req = urllib.request.Request(url, data=b"{}", method="POST")
            try:
                urllib.request.urlopen(req, timeout=timeout).read()
            except urllib.error.HTTPError:
                pass  # a handler error (bad payload) is fine: the binary runs

    def create_resources(self) -> dict:
        acct = self.account
        self.ddb.create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"},
                       {"AttributeName": "SK", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"},
                                  {"AttributeName": "SK", "AttributeType": "S"}])
        self.ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": "expiresAt"})
        queue_url = self.sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.events.put_rule(Name=RULE, EventBusName="default",
                             EventPattern=json.dumps({"source": ["fleetpatch"]}))
        self.events.put_targets(Rule=RULE, EventBusName="default",
                                Targets=[{"Id": "sqs", "Arn": queue_arn}])
        asl = (ROOT / "statemachine" / "patching.asl.json").read_text()
        for fn in FUNCTIONS:
            asl = asl.replace("${%sFunctionArn}" % fn.capitalize(),
                              f"arn:aws:lambda:{REGION}:{acct}:function:{fn}")
        if "${" in asl:
            raise StackError("unsubstituted placeholder in statemachine/patching.asl.json: "
                             + re.search(r"\$\{[^}]*\}", asl).group(0))
        sm = self.sfn.create_state_machine(
            name=STATE_MACHINE, definition=asl, roleArn=f"arn:aws:iam::{acct}:role/fleetpatch-sfn",
            type="STANDARD")["stateMachineArn"]
        return {"queue_url": queue_url, "state_machine_arn": sm}

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, run_input: dict, name: str | None = None) -> str:
        name = name or f"run-{uuid.uuid4().hex[:12]}"
        arn = self.sfn.start_execution(stateMachineArn=self.state["state_machine_arn"],
                                       name=name, input=json.dumps(run_input))["executionArn"]
        return arn

    def wait_execution(self, arn: str, timeout: float = 300, on_tick=None, tick: float = 1.0):
        deadline = time.monotonic() + timeout
        while True:
            d = self.sfn.describe_execution(executionArn=arn)
            if d["status"] != "RUNNING":
                return d
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {arn} still RUNNING after {timeout}s")
            if on_tick:
                on_tick()
            time.sleep(tick)

    def run(self, run_input: dict, timeout: float = 300, name: str | None = None) -> dict:
        arn = self.start_run(run_input, name)
        return self.wait_execution(arn, timeout)

    # -- records ---------------------------------------------------------------------------
    def _query(self, pk: str, prefix: str | None = None) -> list[dict]:
        from boto3.dynamodb.types import TypeDeserializer
        de = TypeDeserializer()
        kw = {"TableName": TABLE, "KeyConditionExpression": "PK = :pk",
              "ExpressionAttributeValues": {":pk": {"S": pk}}, "ConsistentRead": True}
        if prefix:
            kw["KeyConditionExpression"] += " AND begins_with(SK, :p)"
            kw["ExpressionAttributeValues"][":p"] = {"S": prefix}
        items = []
        for page in self.ddb.get_paginator("query").paginate(**kw):
            items += [{k: de.deserialize(v) for k, v in it.items()} for it in page["Items"]]
        return [_plain(i) for i in items]

    def run_record(self, run_id: str) -> dict | None:
        items = self._query(f"RUN#{run_id}", "RUN")
        return items[0] if items else None

    def summary(self, run_id: str) -> dict:
        rec = self.run_record(run_id) or {}
        return json.loads(rec["summary"]) if rec.get("summary") else {}

    def locations(self, run_id: str) -> dict[str, dict]:
        """`ACCOUNT/REGION` -> location item."""
        out = {}
        for it in self._query(f"RUN#{run_id}", "LOC#"):
            _, acct, region = it["SK"].split("#", 2)
            out[f"{acct}/{region}"] = it
        return out

    def waves(self, run_id: str) -> list[dict]:
        """The run's wave records, in order (each item's `wave` JSON, with its `status`)."""
        out = []
        for it in self._query(f"RUN#{run_id}", "WAVE#"):
            out.append({**json.loads(it["wave"]), "status": it["status"]})
        return out

    def instances(self, run_id: str, location: str) -> dict[str, dict]:
        acct, region = location.split("/")
        return {it["SK"][5:]: it for it in self._query(f"LOC#{run_id}#{acct}#{region}", "INST#")}

    def run_events(self, run_id: str, wait: float = 10.0) -> list[dict]:
        """Events captured by the rule -> queue for `run_id` (waits until a Completed one)."""
        deadline = time.monotonic() + wait
        while True:
            while True:
                msgs = self.sqs.receive_message(QueueUrl=self.state["queue_url"],
                                                MaxNumberOfMessages=10,
                                                WaitTimeSeconds=0).get("Messages", [])
                if not msgs:
                    break
                for m in msgs:
                    self._events_seen.append(json.loads(m["Body"]))
                    self.sqs.delete_message(QueueUrl=self.state["queue_url"],
                                            ReceiptHandle=m["ReceiptHandle"])
            mine = [e for e in self._events_seen if (e.get("detail") or {}).get("runId") == run_id]
            if any(e["detail-type"] == "Patch Run Completed" for e in mine) \
                    or time.monotonic() > deadline:
                return mine
            time.sleep(0.5)

    # -- fleetsim oracle -------------------------------------------------------------------
    def oracle(self, path: str, body=None):
        url = f"{self.state['fleetsim']}/_fleetsim/{path}"
        return http("GET" if body is None else "POST", url, body)

    def faults(self, faults: list[dict]):
        return self.oracle("faults", {"faults": faults, "append": False})

    def lambda_timeouts(self, overrides: dict | None = None):
        """Overrides functions' timeouts (seconds) at run time; no argument restores the
        template's."""
        return self.oracle("lambda-timeouts", {"overrides": overrides or {}})


def _plain(v):
    """DynamoDB's Decimal -> int/float, sets -> lists."""
    from decimal import Decimal
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, set, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v


def load_state(state_dir: Path = DEFAULT_DIR) -> dict:
    return json.loads((state_dir / "stack.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--fleet", type=Path, default=DEFAULT_FLEET)
    ap.add_argument("--state-dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--speed", type=float, default=None, help="fleetsim clock speed factor")
    ap.add_argument("--poll-seconds", type=int, default=2, help="FLEETPATCH_POLL_SECONDS")
    ap.add_argument("--reload", action="store_true",
                    help="let cargo lambda watch rebuild functions on source changes")
    ap.add_argument("--no-build", action="store_true", help="skip `cargo build`")
    a = ap.parse_args(argv)
    if a.command == "down":
        stopped = stop_from_state(a.state_dir)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    if a.command == "status":
        try:
            state = load_state(a.state_dir)
        except FileNotFoundError:
            print("not running")
            return 1
        procs = {n: _alive(p["pid"]) for n, p in state["processes"].items()}
        print(json.dumps({**state, "alive": procs}, indent=2))
        return 0 if all(procs.values()) else 1
    # cargo lambda invoke's default port, when it is free
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 9000))
            lambda_port = 9000
        except OSError:
            lambda_port = None
    stack = Stack(a.fleet, a.state_dir, speed=a.speed, poll_seconds=a.poll_seconds,
                  reload=a.reload, build=not a.no_build, lambda_port=lambda_port)
    print(f"starting the local stack (logs in {a.state_dir}) ...", flush=True)
    try:
        state = stack.start()
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"""local stack up (fleet {a.fleet.name}, management account {state['account']})
  endpoint (everything): {state['endpoint']}     export AWS_ENDPOINT_URL={state['endpoint']}
  moto:                  {state['moto']}
  cargo lambda watch:    {state['lambda']}
                         cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port {state['lambda'].rsplit(':', 1)[1]} --data-file events/plan.json plan
  table:                 {state['table']}
  state machine:         {state['state_machine_arn']}
  events queue:          {state['queue_url']}
  oracle:                {state['fleetsim']}/_fleetsim/stats
  IAM decisions:         {state['fleetsim']}/_fleetsim/iam{'' if state.get('iam') else '  (IAM evaluation OFF: FLEETPATCH_IAM=off)'}
stop with: python tests/localstack/stack.py down""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
