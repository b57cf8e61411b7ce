"""The pure parts of `make bench-scale` (tests/bench/scale_figures.py): the fleets, the lower
bound, the figures and their cost, the agreement of two runs."""

from __future__ import annotations

import tomllib

import pytest

import scale
import scale_figures as sf


@pytest.mark.parametrize("size,accounts", [("1k", 1), ("10k", 10), ("100k", 100)])
def test_each_size_is_n_accounts_of_four_regions_of_250(size, accounts):
    # GIVEN the fleet file of a size
    fleet = tomllib.loads(sf.fleet_toml(size))

    # THEN it has the contract's shape: N accounts x 4 Regions x 250, 5..30 minutes,
    # 2% failing, 1% offline, a fixed seed, a frozen clock and no visibility delay
    gen = fleet["generate"][0]
    assert gen["accounts"] == accounts
    assert gen["regions"] == sf.REGIONS and len(sf.REGIONS) == 4
    assert gen["instances_per_group"] == 250
    assert (gen["min_duration"], gen["max_duration"]) == (300, 1800)
    assert (gen["fail_percent"], gen["offline_percent"]) == (2.0, 1.0)
    assert fleet["settings"]["speed"] == 0.0
    assert fleet["settings"]["invocation_visibility_ms"] == 0
    run = sf.run_input(size)
    assert run["accounts"] == [str(sf.FIRST_ACCOUNT + i) for i in range(accounts)]
    assert (run["targetConcurrency"], run["locationConcurrency"]) == ("10%", "100%")


def test_the_window_is_fleetpatchs_floor_of_the_online_instances():
    assert sf.window(10, 247) == 24
    assert sf.window(10, 250) == 25
    assert sf.window(10, 5) == 1
    assert sf.window(100, 3) == 3


def test_list_scheduling_starts_each_instance_when_a_slot_frees():
    # GIVEN durations 10, 10, 5, 5 in that order over 2 slots
    # WHEN scheduled THEN slot A runs 10 then 5, slot B 10 then 5: done at 15
    assert sf.location_makespan([10, 10, 5, 5], 2) == 15
    # and in one slot they run back to back
    assert sf.location_makespan([10, 10, 5, 5], 1) == 30
    assert sf.location_makespan([], 3) == 0


def inst(iid, loc, duration, agent="online"):
    account, region = loc.split("/")
    return {"instance_id": iid, "account": account, "region": region, "agent": agent,
            "duration_seconds": duration}


def test_the_bound_is_the_slowest_location_in_dispatch_order_without_offline_instances():
    # GIVEN location A with 10 online instances of 100 s and one offline, B with one of 50 s
    instances = [inst(f"a{i}", "1/r", 100) for i in range(10)] + [
        inst("off", "1/r", 9999, agent="connection_lost"), inst("b0", "2/r", 50)]
    commands = [{"account": "1", "region": "r", "instance_ids": [f"a{i}" for i in range(10)]},
                {"account": "1", "region": "r", "instance_ids": ["off"]},
                {"account": "2", "region": "r", "instance_ids": ["b0"]}]

    # WHEN the bound is computed at 10% (a window of 1 for both)
    bound, per_location = sf.lower_bound(instances, commands, percent=10, pending=2)

    # THEN A runs its ten one after another (2 s pending each), the offline one never counts
    assert per_location == {"1/r": 1020.0, "2/r": 52.0}
    assert bound == 1020.0


def test_the_bound_follows_the_order_fleetpatch_sent_them():
    # GIVEN a long instance sent last over 2 slots, versus first
    long_last = [inst("x", "1/r", 10), inst("y", "1/r", 10), inst("z", "1/r", 100)] + [
        inst(f"p{i}", "1/r", 1) for i in range(17)]
    ids = ["x", "y", "z"] + [f"p{i}" for i in range(17)]
    sent_last = [{"account": "1", "region": "r", "instance_ids": ids}]
    sent_first = [{"account": "1", "region": "r", "instance_ids": ["z"] + ids[:2] + ids[3:]}]

    # THEN the bound is the schedule of the order they were sent in (window 10% of 20 = 2)
    assert sf.lower_bound(long_last, sent_last, pending=0)[0] == 110
    assert sf.lower_bound(long_last, sent_first, pending=0)[0] == 100


RAW = {"instances": 1000, "locations": 4, "makespan_s": 10500.0, "bound_s": 10000.0,
       "control_calls": 800, "ddb_requests": 3000, "ddb_read_units": 1000.0,
       "ddb_write_units": 4000.0, "transitions": 2000,
       "lambda": {"dispatch": {"invocations": 900, "ms": 90_000.0},
                  "plan": {"invocations": 1, "ms": 1000.0}},
       "memory_mb": {"dispatch": 128, "plan": 256}}


def test_figures_are_per_instance_and_per_1k_and_cost_adds_each_service_at_its_price():
    f = sf.figures(RAW)
    assert f["overhead_pct"] == pytest.approx(5.0)
    assert f["control_calls_per_instance"] == pytest.approx(0.8)
    assert f["ddb_requests_per_instance"] == pytest.approx(3.0)
    assert f["transitions_per_instance"] == pytest.approx(2.0)
    # 90 s x 0.125 GB + 1 s x 0.25 GB = 11.5 GB-s for 1,000 instances
    assert f["lambda_gb_s_per_1k"] == pytest.approx(11.5)
    expected = (11.5 * 0.0000133334 + 901 * 0.2e-6 + 2000 * 0.025e-3
                + 4000 * 0.625e-6 + 1000 * 0.125e-6)
    assert f["cost_usd_per_1k"] == pytest.approx(expected)
    # the seed's design: one child automation (at least one step) per instance
    assert f["automation_steps_per_1k"] == pytest.approx(1000)
    assert f["automation_cost_usd_per_1k"] == pytest.approx(1000 * 0.002)


def test_the_last_line_is_the_issues_exactly():
    line = sf.last_line(sf.figures(RAW))
    assert line.startswith("scale: instances=1000 locations=4 overhead_pct=5.00 "
                           "control_calls_per_instance=0.800 ddb_requests_per_instance=3.000 "
                           "transitions_per_instance=2.000 lambda_gb_s_per_1k=11.500 "
                           "cost_usd_per_1k=")
    assert [kv.split("=")[0] for kv in line.split()[1:]] == [
        "instances", "locations", "overhead_pct", "control_calls_per_instance",
        "ddb_requests_per_instance", "transitions_per_instance", "lambda_gb_s_per_1k",
        "cost_usd_per_1k"]


def test_agreement_flags_a_figure_more_than_10_percent_apart():
    a = sf.figures(RAW)
    b = sf.figures({**RAW, "control_calls": 900, "makespan_s": 10600.0})
    agree = sf.agreement(a, b)
    assert agree["control_calls_per_instance"]["ok"] is False  # 0.8 vs 0.9: 11%
    assert agree["overhead_pct"]["ok"] is True  # makespans 1% apart
    assert agree["transitions_per_instance"]["diff"] == 0


def test_function_memory_reads_the_templates_default():
    mem = scale.function_memory()
    assert set(mem) == {"plan", "expand", "dispatch", "settle", "gate", "aggregate"}
    assert all(m >= 128 for m in mem.values())
