#!/usr/bin/env python3
"""`make bench-scale`: one patch run over a generated fleet of 1k, 10k or 100k instances
(N accounts x 4 Regions x 250), measured on a simulated clock that holds still while the
stack works. Prints figures; asserts nothing.

    python tests/bench/scale.py --size 10k --mode sfn        # the real state machine
    python tests/bench/scale.py --size 100k --mode direct    # DIRECT's in-process driver
    python tests/bench/scale.py --compare                    # 10k both ways, agreement

Modes:
- sfn: the local stack as `make demo` runs it (moto's Step Functions interpreter, the real
  functions through `cargo lambda watch`, release builds), with fleetsim's clock frozen and
  moto's Wait states on the simulated clock (tests/localstack/virtual_clock.py).
- direct: the same stack without `cargo lambda watch`; the handlers run in-process, in the
  state machine's order, through DIRECT's driver (`cargo run --release -p fleetpatch
  --example scale_driver`), which advances the clock itself.
- auto: sfn up to 10k, direct above.

Every figure but transitions, Lambda time and the makespan comes from fleetsim's oracle in
both modes; those three come from moto's interpreter (sfn) or the driver (direct). The fleet
and the stack's logs go under .local/bench/. The pure parts are in scale_figures.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "localstack"))
sys.path.insert(0, str(HERE))

import scale_figures as sf  # noqa: E402
import stack as localstack  # noqa: E402

OUT = ROOT / ".local" / "bench"
CONTROL_SERVICES = ("sts:", "ssm:", "resource-groups:", "organizations:")
POLL_SECONDS = 30


class Unavailable(RuntimeError):
    """A mode that cannot run here (DIRECT's driver not built into this tree)."""


def function_memory(template: Path = ROOT / "infra" / "template.yaml") -> dict[str, int]:
    """Each function's MemorySize (MB) in infra/template.yaml, keyed by binary name; a
    parameter reference resolves to the parameter's default."""
    import yaml

    class CfnLoader(yaml.SafeLoader):
        pass

    def intrinsic(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node)}
        return {suffix: loader.construct_mapping(node)}
    CfnLoader.add_multi_constructor("!", intrinsic)
    doc = yaml.load(template.read_text(), Loader=CfnLoader)
    params = doc.get("Parameters") or {}

    def resolve(v):
        if isinstance(v, dict) and "Ref" in v:
            return int(params[v["Ref"]]["Default"])
        return int(v)
    default = resolve(((doc.get("Globals") or {}).get("Function") or {}).get("MemorySize", 128))
    out = {}
    for res in (doc.get("Resources") or {}).values():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if binary:
            mem = (res.get("Properties") or {}).get("MemorySize")
            out[binary] = resolve(mem) if mem is not None else default
    return out


def write_fleet(size: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"fleet-{size}.toml"
    path.write_text(sf.fleet_toml(size))
    return path


def function_cpu(target: Path, seen: dict[tuple[str, int], float]) -> dict[tuple[str, int], float]:
    """Adds to `seen` the CPU seconds (user + system) so far of every running process whose
    binary is under `target` (the release functions cargo lambda watch runs), keyed by
    (binary, pid): a process that exits keeps its last reading."""
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            if not exe.startswith(str(target) + os.sep):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seen[(Path(exe).name, int(pid))] = (int(fields[11]) + int(fields[12])) / tick
    return seen


def cpu_by_function(seen: dict[tuple[str, int], float], names) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, _pid), cpu in seen.items():
        if name in names:
            out[name] = out.get(name, 0.0) + cpu
    return out


def collect(client, instances_seen: list[dict], sim_ms: tuple[int, int],
            transitions: int, lambda_stats: dict) -> dict:
    """Raw counts of one finished run, read from fleetsim's oracle (before anything else
    reads the table, so that only the run's own DynamoDB requests are counted)."""
    stats = client.oracle("stats")
    commands = client.oracle("commands")
    bound, _ = sf.lower_bound(instances_seen, commands)
    control = sum(c["calls"] for k, c in stats["calls"].items() if k.startswith(CONTROL_SERVICES))
    ddb = stats["bench"]["dynamodb"]
    rate = stats["bench"]["ssm_rate"]
    return {
        "instances": len(instances_seen),
        "locations": len({(i["account"], i["region"]) for i in instances_seen}),
        "makespan_s": (sim_ms[1] - sim_ms[0]) / 1000.0,
        "bound_s": bound,
        "control_calls": control,
        "control_by_op": {k: c["calls"] for k, c in stats["calls"].items()
                          if k.startswith(CONTROL_SERVICES)},
        "ddb_requests": sum(v["calls"] for v in ddb.values()),
        "ddb_read_units": sum(v["read_units"] for v in ddb.values()),
        "ddb_write_units": sum(v["write_units"] for v in ddb.values()),
        "ddb_by_op": {k: v["calls"] for k, v in ddb.items()},
        "transitions": transitions,
        "lambda": lambda_stats,
        "memory_mb": function_memory(),
        "ssm": {"peak_round": (rate.get("peak_per_instant") or {}).get("calls", 0),
                "peak_minute": (rate.get("peak_per_minute") or {}).get("calls", 0),
                "mean_per_active_minute": rate.get("mean_per_active_minute", 0.0)},
        "commands_sent": stats["commands_sent"],
        "duplicates": len(stats["instances_with_multiple_commands"]),
    }


def progress(label: str, client, vclock_url: str | None, sim0: int, t0: float):
    clock = localstack.http("GET", vclock_url) if vclock_url else {}
    now = client.oracle("clock")["now_ms"]
    stats = client.oracle("stats")
    print(f"  [{label}] wall {time.monotonic() - t0:6.0f}s  sim {(now - sim0) / 1000:8.0f}s  "
          f"commands {stats['commands_sent']:6d}  waiting {clock.get('waiting', '-')}  "
          f"advances {clock.get('advances', '-')}", flush=True)


def run_sfn(size: str, fleet: Path, release: bool, timeout: float) -> dict:
    n_locations = sf.SIZES[size] * len(sf.REGIONS)
    stack = localstack.Stack(fleet, OUT / f"stack-{size}-sfn", speed=0.0,
                             poll_seconds=POLL_SECONDS, concurrency=min(64, max(8, n_locations)),
                             virtual_clock=True, release=release)
    with stack:
        state = stack.state
        client = localstack.StackClient(state)
        instances = client.oracle("instances")
        client.oracle("reset", {})
        sim0 = client.oracle("clock")["now_ms"]
        t0 = time.monotonic()
        name = f"scale-{size}-{uuid.uuid4().hex[:8]}"
        arn = client.start_run(sf.run_input(size), name=name)
        last = [0.0]
        functions_dir = localstack.target_dir() / ("release" if release else "debug")
        cpu_seen = function_cpu(functions_dir, {})
        cpu_start = cpu_by_function(cpu_seen, function_memory())

        def tick():
            if time.monotonic() - last[0] >= 30:
                last[0] = time.monotonic()
                function_cpu(functions_dir, cpu_seen)
                progress(f"sfn {size}", client, state["virtual_clock"], sim0, t0)
        execution = client.wait_execution(arn, timeout, on_tick=tick, tick=1.0)
        wall = time.monotonic() - t0
        cpu = {fn: s - cpu_start.get(fn, 0.0) for fn, s in
               cpu_by_function(function_cpu(functions_dir, cpu_seen), function_memory()).items()}
        sim1 = client.oracle("clock")["now_ms"]
        vclock = localstack.http("GET", state["virtual_clock"])
        lambda_stats = client.oracle("stats")["bench"]["lambda"]
        # everything the figures come from, kept so that they can be recomputed
        (OUT / f"oracle-{size}-sfn.json").write_text(json.dumps({
            "instances": instances, "stats": client.oracle("stats"),
            "commands": client.oracle("commands"), "virtual_clock": vclock,
            "sim_ms": [sim0, sim1], "wall_s": wall, "execution_status": execution["status"]}))
        raw = collect(client, instances, (sim0, sim1), vclock["transitions"], lambda_stats)
        processes: dict[str, int] = {}
        for fn, _pid in cpu_seen:
            processes[fn] = processes.get(fn, 0) + 1
        raw.update(wall_s=wall, execution_status=execution["status"], name=name,
                   lambda_cpu_s=cpu, lambda_processes=processes,
                   transitions_by_type=vclock["transitions_by_type"],
                   clock_anomalies=vclock["anomalies"],
                   run_status=(client.run_record(name) or {}).get("status"))
        return raw


def run_direct(size: str, fleet: Path, timeout: float, release: bool = True) -> dict:
    profile = ["--release"] if release else []
    build = subprocess.run(["cargo", "build", "-q", *profile, "-p", "fleetpatch",
                            "--example", "scale_driver"], cwd=ROOT, capture_output=True, text=True)
    if build.returncode != 0:
        errors = [ln for ln in build.stderr.splitlines() if ln.startswith("error")] or ["?"]
        raise Unavailable(f"DIRECT's driver (`--example scale_driver`) does not build here: "
                          f"{errors[0]}")
    stack = localstack.Stack(fleet, OUT / f"stack-{size}-direct", speed=0.0,
                             poll_seconds=POLL_SECONDS, lambdas=False)
    with stack:
        state = stack.state
        client = localstack.StackClient(state)
        instances = client.oracle("instances")
        client.oracle("reset", {})
        name = f"scale-{size}-{uuid.uuid4().hex[:8]}"
        run_file, out_file = OUT / f"input-{size}.json", OUT / f"direct-{size}.json"
        run_file.write_text(json.dumps(sf.run_input(size)))
        t0 = time.monotonic()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        target = localstack.target_dir() / ("release" if release else "debug") / "examples" \
            / "scale_driver"
        subprocess.run([str(target), "--input", str(run_file), "--name", name,
                        "--out", str(out_file)], cwd=ROOT, check=True, timeout=timeout,
                       env={**os.environ, **state["functions_env"]})
        wall = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = json.loads(out_file.read_text())
        raw = collect(client, instances, (result["sim_started_ms"], result["sim_ended_ms"]),
                      result["transitions"], result["lambda"])
        raw.update(wall_s=wall, execution_status=result.get("final_status"), name=name,
                   lambda_cpu_s={"all": cpu1.ru_utime + cpu1.ru_stime
                                 - cpu0.ru_utime - cpu0.ru_stime},
                   transitions_by_type=result.get("transitions_by_state", {}),
                   run_status=(client.run_record(result.get("run_id") or name) or {})
                   .get("status"))
        return raw


def report(size: str, mode: str, raw: dict) -> dict:
    f = sf.figures(raw)
    print(f"\n{size} via {mode}: execution {raw['execution_status']}, run {raw['run_status']}, "
          f"wall {raw['wall_s']:.0f}s, makespan {raw['makespan_s']:.0f} simulated s against a "
          f"bound of {raw['bound_s']:.0f} s; {raw['commands_sent']} commands, "
          f"{raw['duplicates']} instances sent twice")
    print(f"  control calls: {json.dumps(raw['control_by_op'])}")
    print(f"  DynamoDB requests: {json.dumps(raw['ddb_by_op'])}; estimated units read "
          f"{raw['ddb_read_units']:.0f}, write {raw['ddb_write_units']:.0f}")
    print(f"  transitions: {json.dumps(raw['transitions_by_type'])}")
    print(f"  Lambda: " + ", ".join(f"{fn} {s['invocations']} x {s['ms'] / max(1, s['invocations']):.0f} ms"
                                    for fn, s in sorted(raw["lambda"].items())))
    print("  Lambda own CPU: " + ", ".join(f"{fn} {s:.1f} s" for fn, s in
                                           sorted(raw.get("lambda_cpu_s", {}).items()))
          + f" ({f['lambda_cpu_gb_s_per_1k']:.3f} GB-s per 1k)")
    if raw.get("lambda_processes"):
        # cargo lambda watch's processes, each with its own credential cache (AssumeRole)
        print("  function processes: " + ", ".join(
            f"{fn} {n}" for fn, n in sorted(raw["lambda_processes"].items())))
    print(f"  SSM per location: peak {raw['ssm']['peak_round']} calls in one round, peak "
          f"{raw['ssm']['peak_minute']} in one simulated minute, mean "
          f"{raw['ssm']['mean_per_active_minute']:.1f} per active minute")
    print(f"  cost per 1k instances: {json.dumps({k: round(v, 5) for k, v in f['cost_breakdown_per_1k'].items()})}"
          f"; SSM Automation (seed design): {f['automation_steps_per_1k']:.0f} steps, "
          f"${f['automation_cost_usd_per_1k']:.2f}")
    (OUT / f"result-{size}-{mode}.json").write_text(json.dumps({"raw": raw, "figures": f},
                                                               indent=2))
    return f


def reprint(paths: list[Path]) -> int:
    """The table and last line again, from the raw counts of earlier runs (the figures are
    recomputed, so a change of price or formula shows without running again)."""
    rows, last = [], None
    for path in paths:
        size, mode = path.stem.split("-")[1:3]
        raw = json.loads(path.read_text())["raw"]
        last = sf.figures(raw)
        rows.append(sf.table_row(size, mode, last, raw["ssm"], raw["wall_s"]))
    print(sf.HEADER + "\n" + "|---" * (sf.HEADER.count("|") - 1) + "|\n" + "\n".join(rows))
    print(sf.last_line(last))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=list(sf.SIZES), default="100k")
    ap.add_argument("--mode", choices=["sfn", "direct", "auto"], default="auto")
    ap.add_argument("--compare", action="store_true",
                    help="run 10k both ways and print the agreement per figure")
    ap.add_argument("--debug-functions", action="store_true",
                    help="sfn: debug builds of the functions instead of release")
    ap.add_argument("--debug-driver", action="store_true",
                    help="direct: a debug build of the driver (its release build recompiles the "
                         "SDK crates with other features; the figures are counts, so the profile "
                         "changes only the CPU GB-s)")
    ap.add_argument("--timeout", type=float, default=6 * 3600)
    ap.add_argument("--from-results", type=Path, nargs="+", metavar="RESULT_JSON",
                    help="reprint the table from earlier runs' .local/bench/result-*.json")
    a = ap.parse_args(argv)
    if a.from_results:
        return reprint(a.from_results)

    # SIGTERM / SIGHUP unwind like Ctrl-C, so that the stack is stopped
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)

    plans = [("10k", "sfn"), ("10k", "direct")] if a.compare else [
        (a.size, a.mode if a.mode != "auto" else ("sfn" if sf.SIZES[a.size] <= 10 else "direct"))]
    rows, figs, last = [], {}, None
    for size, mode in plans:
        fleet = write_fleet(size)
        print(f"bench-scale: SIZE={size} MODE={mode}: {sf.SIZES[size]} accounts x "
              f"{len(sf.REGIONS)} Regions x {sf.PER_LOCATION} (fleet {fleet})", flush=True)
        try:
            raw = run_sfn(size, fleet, not a.debug_functions, a.timeout) if mode == "sfn" \
                else run_direct(size, fleet, a.timeout, not a.debug_driver)
        except Unavailable as e:
            print(f"  {mode}: unavailable: {e}", flush=True)
            rows.append(f"| {size} | {mode} | unavailable: {e} |")
            continue
        f = report(size, mode, raw)
        figs[(size, mode)] = f
        rows.append(sf.table_row(size, mode, f, raw["ssm"], raw["wall_s"]))
        last = f
    print("\n" + sf.HEADER + "\n" + "|---" * (sf.HEADER.count("|") - 1) + "|" + "\n" + "\n".join(rows))
    if a.compare and len(figs) == 2:
        agree = sf.agreement(figs[("10k", "sfn")], figs[("10k", "direct")])
        print("\nagreement, 10k sfn vs direct (within 10% for direct to count):")
        for k, v in agree.items():
            print(f"  {k:28s} sfn {v['a']:12.4f}  direct {v['b']:12.4f}  diff {100 * v['diff']:5.1f}%  "
                  + ("ok" if v["ok"] else "DISAGREES"))
    if last is None:
        return 1
    print(sf.last_line(last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
