//! The poll interval at issue 8's defaults, simulated: one location of 250 instances
//! (2% fail, 1% offline), window 10% of those online, patch runs drawn from 5-30 minutes,
//! a 30 s poll, and a clock that stands still while a round works. Each round follows the
//! commands in flight as `progress::follow_commands` does (one ListCommands when two or
//! more are in flight, then one ListCommandInvocations per command with news; with one,
//! its ListCommandInvocations), starts batches with the real `plan_round` (one SendCommand
//! each), and waits as configured or as `poll::next_wait` decides.

use fleetpatch::model::{InstanceRecord, InstanceState};
use fleetpatch::poll::{next_wait, shortest_observed, PollView};
use fleetpatch::ratecontrol::Rate;
use fleetpatch::window::plan_round;
use std::collections::{BTreeMap, BTreeSet};

const INSTANCES: usize = 250;
const POLL: u64 = 30;
const DELIVERY_TIMEOUT: u64 = 3600;
/// Expansion (ListGroupResources and DescribeInstanceInformation, 50 a page), aggregation
/// (DescribeInstancePatchStates, 50 IDs a call) and one AssumeRole per function: outside
/// the poll loop, the same for both policies.
const FIXED_CALLS: u64 = 5 + 5 + 5 + 4;

/// xorshift64*: the same fleet for every policy, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Fleet {
    records: Vec<InstanceRecord>,
    /// Claim-to-end seconds of each instance.
    runs: Vec<i64>,
    fails: Vec<bool>,
}

fn fleet(seed: u64) -> Fleet {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut f = Fleet {
        records: Vec::new(),
        runs: Vec::new(),
        fails: Vec::new(),
    };
    for i in 0..INSTANCES {
        let offline = rng.next() < 0.01;
        let state = if offline {
            InstanceState::Offline
        } else {
            InstanceState::Pending
        };
        f.records
            .push(InstanceRecord::new(&format!("i-{i:017x}"), state));
        f.runs.push((300.0 + rng.next() * 1500.0) as i64);
        f.fails.push(rng.next() < 0.02);
    }
    f
}

#[derive(Default)]
struct Calls {
    list_commands: u64,
    list_invocations: u64,
    send_command: u64,
    rounds: u64,
}

/// Follows the commands in flight at `now`: ends what has ended, counts the calls, and
/// returns the claim times of the instances seen ending.
fn follow(f: &mut Fleet, now: i64, claims: &BTreeMap<String, i64>, calls: &mut Calls) -> Vec<i64> {
    let in_flight: Vec<usize> = (0..f.records.len())
        .filter(|&i| f.records[i].state == InstanceState::InFlight)
        .collect();
    let commands: BTreeSet<String> = in_flight
        .iter()
        .filter_map(|&i| f.records[i].command_id.clone())
        .collect();
    let claim = |i: usize| claims[f.records[i].command_id.as_deref().unwrap_or_default()];
    let ended: Vec<usize> = in_flight
        .iter()
        .copied()
        .filter(|&i| claim(i) + f.runs[i] <= now)
        .collect();
    let news: BTreeSet<String> = ended
        .iter()
        .filter_map(|&i| f.records[i].command_id.clone())
        .collect();
    if commands.len() >= 2 {
        // every command claimed since the oldest in flight (less 300 s), 50 a page
        let oldest = in_flight.iter().map(|&i| claim(i)).min().unwrap_or(now) - 300;
        let listed = claims.values().filter(|c| **c >= oldest).count() as u64;
        calls.list_commands += listed.div_ceil(50).max(1);
        calls.list_invocations += news.len() as u64;
    } else {
        calls.list_invocations += commands.len() as u64;
    }
    let ended_claims = ended.iter().map(|&i| claim(i)).collect();
    for i in ended {
        f.records[i].state = if f.fails[i] {
            InstanceState::Failed
        } else {
            InstanceState::Succeeded
        };
    }
    ended_claims
}

/// Runs one location to its end; returns the calls, the makespan and its lower bound.
fn simulate(seed: u64, adaptive: bool) -> (Calls, i64, i64) {
    let mut f = fleet(seed);
    let online = f
        .records
        .iter()
        .filter(|r| r.state == InstanceState::Pending)
        .count();
    let window = Rate::Percent(10).window(online as u64);
    let (mut now, mut calls) = (0i64, Calls::default());
    let mut claims: BTreeMap<String, i64> = BTreeMap::new();
    let (mut shortest, mut previous_round) = (None, None);
    loop {
        calls.rounds += 1;
        let ended = follow(&mut f, now, &claims, &mut calls);
        shortest = shortest_observed(shortest, previous_round, &ended);
        previous_round = Some(now);
        let round = plan_round(&f.records, window, None);
        for ids in &round.start {
            let cmd = format!("cmd-{}", claims.len());
            claims.insert(cmd.clone(), now);
            calls.send_command += 1;
            for r in f
                .records
                .iter_mut()
                .filter(|r| ids.contains(&r.instance_id))
            {
                r.state = InstanceState::InFlight;
                r.command_id = Some(cmd.clone());
            }
        }
        let in_flight: Vec<&InstanceRecord> =
            f.records.iter().filter(|r| r.state.in_flight()).collect();
        if in_flight.is_empty() && round.start.is_empty() {
            break;
        }
        let pending = f
            .records
            .iter()
            .filter(|r| r.state == InstanceState::Pending)
            .count() as u64;
        let view = PollView {
            now,
            poll_seconds: POLL,
            in_flight_claimed: in_flight
                .iter()
                .map(|r| r.command_id.as_ref().map(|c| claims[c]))
                .collect(),
            pending,
            free_slots: window.saturating_sub(in_flight.len() as u64),
            shortest_seconds: shortest,
            delivery_timeout_seconds: DELIVERY_TIMEOUT,
        };
        now += if adaptive { next_wait(&view) } else { POLL } as i64;
    }
    (calls, now, lower_bound(&f, window))
}

/// The makespan if every slot were refilled the moment its instance ended (list
/// scheduling in the order `plan_round` starts them: by instance ID).
fn lower_bound(f: &Fleet, window: u64) -> i64 {
    let mut slots = vec![0i64; window as usize];
    for (i, r) in f.records.iter().enumerate() {
        if r.state == InstanceState::Offline {
            continue;
        }
        let (k, _) = slots
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| **t)
            .unwrap_or((0, &0));
        slots[k] += f.runs[i];
    }
    slots.into_iter().max().unwrap_or(0)
}

pub fn print() {
    println!(
        "\npoll: one location at issue 8's defaults, {INSTANCES} instances, 30 s poll, 20 fleets"
    );
    println!(
        "{:>9} {:>7} {:>13} {:>11} {:>12} {:>10} {:>12} {:>13}",
        "policy",
        "rounds",
        "ListCommands",
        "ListCmdInv",
        "SendCommand",
        "calls/inst",
        "overhead_pct",
        "loop/inst"
    );
    for (name, adaptive) in [("fixed", false), ("adaptive", true)] {
        let seeds = 1..=20u64;
        let n = seeds.clone().count() as f64;
        let (mut tot, mut lc, mut lci, mut sc, mut rounds, mut over) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for seed in seeds {
            let (c, makespan, bound) = simulate(seed, adaptive);
            let poll_calls = c.list_commands + c.list_invocations + c.send_command;
            tot += (poll_calls + FIXED_CALLS) as f64 / INSTANCES as f64;
            lc += c.list_commands as f64;
            lci += c.list_invocations as f64;
            sc += c.send_command as f64;
            rounds += c.rounds as f64;
            over += 100.0 * (makespan - bound) as f64 / bound as f64;
        }
        println!(
            "{name:>9} {:>7.0} {:>13.0} {:>11.0} {:>12.0} {:>10.2} {:>12.2} {:>13.2}",
            rounds / n,
            lc / n,
            lci / n,
            sc / n,
            tot / n,
            over / n,
            (tot / n) - FIXED_CALLS as f64 / INSTANCES as f64
        );
    }
}
