//! The poll interval and the reads of a round at issue 8's defaults, simulated: one location
//! of 250 instances (2% fail, 1% offline), window 10% of those online, patch runs drawn from
//! 5-30 minutes, a 30 s poll, and a clock that stands still while a round works. Each round
//! reads as `progress::follow_commands` does (with two or more commands in flight, one
//! ListCommands, paged until every command in flight is seen, then the reads
//! `reading::plan_reads` asks for; with one, its ListCommandInvocations), starts batches with
//! the real `plan_round` (one SendCommand each), and waits as `poll::next_wait` decides.
//!
//! Rows: the calls a location makes and its makespan over the bound, for the refill lag the
//! interval allows (`poll::LAG_PER_MILLE`, the production value marked), and, for
//! comparison, the rounds of a fixed interval. The trade-off is the same whatever the
//! policy: a round costs a ListCommands and, when something ended, a SendCommand; a slot
//! waits half an interval on average. The production value is the longest lag that keeps
//! the makespan's overhead under 5% at these defaults.

use fleetpatch::model::{InstanceRecord, InstanceState};
use fleetpatch::poll::{
    mean_run, next_wait, observe, shortest_observed, Observed, PollView, LAG_PER_MILLE,
};
use fleetpatch::progress::RECOVERY_GRACE_SECONDS;
use fleetpatch::ratecontrol::Rate;
use fleetpatch::reading::{command_records, plan_reads, sweep_at, CommandProgress};
use fleetpatch::window::plan_round;
use std::collections::{BTreeMap, HashMap};

const INSTANCES: usize = 250;
const POLL: u64 = 30;
const DELIVERY_TIMEOUT: u64 = 3600;
/// Expansion (ListGroupResources and DescribeInstanceInformation, 50 a page), aggregation
/// (DescribeInstancePatchStates, 50 IDs a call) and one AssumeRole per function: outside
/// the poll loop, the same for every policy.
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
    /// Commands sent, oldest first: (command ID, claim time, instance indexes).
    commands: Vec<(String, i64, Vec<usize>)>,
}

fn fleet(seed: u64) -> Fleet {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut f = Fleet {
        records: Vec::new(),
        runs: Vec::new(),
        fails: Vec::new(),
        commands: Vec::new(),
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

impl Fleet {
    fn ended(&self, i: usize, claim: i64, now: i64) -> bool {
        claim + self.runs[i] <= now
    }

    fn outcome(&self, i: usize) -> InstanceState {
        if self.fails[i] {
            InstanceState::Failed
        } else {
            InstanceState::Succeeded
        }
    }

    /// What ListCommands says of command `k` at `now`.
    fn progress(&self, k: usize, now: i64) -> CommandProgress {
        let (_, claim, members) = &self.commands[k];
        let done: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| self.ended(i, *claim, now))
            .collect();
        let errors = done.iter().filter(|&&i| self.fails[i]).count() as u64;
        let all = done.len() == members.len();
        CommandProgress {
            target: members.len() as u64,
            completed: done.len() as u64,
            errors,
            status: match (all, errors) {
                (false, _) => "InProgress",
                (true, 0) => "Success",
                (true, _) => "Failed",
            }
            .into(),
            details: String::new(),
            requested: Some(*claim),
        }
    }

    /// Records every ended instance of command `k` still InFlight; returns their claims.
    fn record(&mut self, k: usize, now: i64) -> Vec<i64> {
        let (_, claim, members) = self.commands[k].clone();
        let mut ended = Vec::new();
        for i in members {
            if self.records[i].state == InstanceState::InFlight && self.ended(i, claim, now) {
                self.records[i].state = self.outcome(i);
                ended.push(claim);
            }
        }
        ended
    }
}

/// Follows the commands in flight at `now` as `follow_commands` does: counts the calls,
/// records what is read, and returns the claims of the instances recorded ending and the
/// instances left unread (free slots).
fn follow(f: &mut Fleet, now: i64, window: u64, calls: &mut Calls) -> (Vec<i64>, u64) {
    let index: HashMap<String, usize> = f
        .commands
        .iter()
        .enumerate()
        .map(|(k, c)| (c.0.clone(), k))
        .collect();
    let batches: Vec<_> = f
        .commands
        .iter()
        .enumerate()
        .map(|(k, (id, claim, members))| fleetpatch::model::BatchRecord {
            seq: k as u64,
            instance_ids: members
                .iter()
                .map(|&i| f.records[i].instance_id.clone())
                .collect(),
            comment: String::new(),
            claimed_at: *claim,
            state: fleetpatch::model::BatchState::Sent,
            command_id: Some(id.clone()),
        })
        .collect();
    let records = command_records(&f.records, &batches);
    if records.is_empty() {
        return (Vec::new(), 0);
    }
    if records.len() == 1 {
        calls.list_invocations += 1;
        let k = index[records
            .keys()
            .next()
            .map(String::as_str)
            .unwrap_or_default()];
        return (f.record(k, now), 0);
    }

    // One ListCommands, newest first, 50 a page, until the oldest in flight is seen.
    let oldest = records.keys().map(|c| index[c]).min().unwrap_or(0);
    calls.list_commands += ((f.commands.len() - oldest) as u64).div_ceil(50);
    let listing: HashMap<String, CommandProgress> = records
        .keys()
        .map(|c| (c.clone(), f.progress(index[c], now)))
        .collect();
    let reads = plan_reads(
        &records,
        &listing,
        now,
        RECOVERY_GRACE_SECONDS,
        Some(sweep_at(window)),
    );

    let mut ended = Vec::new();
    for (_, cmd) in &reads.succeeded {
        ended.extend(f.record(index[cmd], now));
    }
    if let Some(since) = reads.sweep_since {
        let covered: Vec<usize> = (0..f.commands.len())
            .filter(|&k| f.commands[k].1 >= since)
            .collect();
        let invocations: usize = covered.iter().map(|&k| f.commands[k].2.len()).sum();
        calls.list_invocations += (invocations as u64).div_ceil(50).max(1);
        for k in covered {
            ended.extend(f.record(k, now));
        }
    }
    for cmd in &reads.by_command {
        calls.list_invocations += 1;
        ended.extend(f.record(index[cmd], now));
    }
    (ended, reads.freed)
}

/// Runs one location to its end with the refill lag `lag_per_mille` (None: a fixed
/// interval of `fixed` seconds); returns the calls, the makespan and its lower bound.
fn simulate(seed: u64, lag_per_mille: Option<u64>, fixed: u64) -> (Calls, i64, i64) {
    let mut f = fleet(seed);
    let online = f
        .records
        .iter()
        .filter(|r| r.state == InstanceState::Pending)
        .count();
    let window = Rate::Percent(10).window(online as u64);
    let (mut now, mut calls) = (0i64, Calls::default());
    let (mut shortest, mut previous_round) = (None, None);
    let (mut observed, mut waited) = (Observed::default(), 0u64);
    loop {
        calls.rounds += 1;
        let (ended, freed) = follow(&mut f, now, window, &mut calls);
        if observed.unread == 0 {
            shortest = shortest_observed(shortest, previous_round, &ended);
        }
        previous_round = Some(now);
        let in_flight = |f: &Fleet| {
            (f.records.iter().filter(|r| r.state.in_flight()).count() as u64).saturating_sub(freed)
        };
        observed = observe(observed, waited, in_flight(&f));

        let round = plan_round(&f.records, window + freed, None);
        for ids in &round.start {
            let members: Vec<usize> = (0..f.records.len())
                .filter(|&i| ids.contains(&f.records[i].instance_id))
                .collect();
            let cmd = format!("cmd-{}", f.commands.len());
            for &i in &members {
                f.records[i].state = InstanceState::InFlight;
                f.records[i].command_id = Some(cmd.clone());
                f.records[i].batch = Some(f.commands.len() as u64);
            }
            f.commands.push((cmd, now, members));
            calls.send_command += 1;
        }
        let all_in_flight = f.records.iter().filter(|r| r.state.in_flight()).count();
        if all_in_flight == 0 && round.start.is_empty() {
            break;
        }
        observed.in_flight = in_flight(&f);
        observed.unread = freed;

        let claims: BTreeMap<String, i64> =
            f.commands.iter().map(|(c, t, _)| (c.clone(), *t)).collect();
        let pending = f
            .records
            .iter()
            .filter(|r| r.state == InstanceState::Pending)
            .count() as u64;
        // Another lag than production's, as if the mean run were that much longer.
        let scaled = mean_run(&observed)
            .zip(lag_per_mille)
            .map(|(m, lag)| m * lag / LAG_PER_MILLE);
        let view = PollView {
            now,
            poll_seconds: POLL,
            in_flight_claimed: f
                .records
                .iter()
                .filter(|r| r.state.in_flight())
                .map(|r| r.command_id.as_ref().map(|c| claims[c]))
                .collect(),
            pending,
            free_slots: window.saturating_sub(in_flight(&f)),
            shortest_seconds: shortest,
            delivery_timeout_seconds: DELIVERY_TIMEOUT,
            mean_run_seconds: scaled,
            quiet_rounds: observed.quiet_rounds,
        };
        waited = match lag_per_mille {
            Some(_) => next_wait(&view),
            None => fixed,
        };
        now += waited as i64;
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
        "{:>16} {:>7} {:>13} {:>11} {:>12} {:>10} {:>12}",
        "policy",
        "rounds",
        "ListCommands",
        "ListCmdInv",
        "SendCommand",
        "calls/inst",
        "overhead_pct"
    );
    let mut policies: Vec<(String, Option<u64>, u64)> = [30, 40, 45, 50, 55]
        .iter()
        .map(|&lag| {
            let mark = if lag == LAG_PER_MILLE { " *" } else { "" };
            (format!("lag {lag}/1000{mark}"), Some(lag), 0)
        })
        .collect();
    policies.extend([30, 90, 100].map(|s| (format!("fixed {s} s"), None, s)));
    for (name, lag, fixed) in policies {
        let seeds = 1..=20u64;
        let n = seeds.clone().count() as f64;
        let (mut tot, mut lc, mut lci, mut sc, mut rounds, mut over) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for seed in seeds {
            let (c, makespan, bound) = simulate(seed, lag, fixed);
            let poll_calls = c.list_commands + c.list_invocations + c.send_command;
            tot += (poll_calls + FIXED_CALLS) as f64 / INSTANCES as f64;
            lc += c.list_commands as f64;
            lci += c.list_invocations as f64;
            sc += c.send_command as f64;
            rounds += c.rounds as f64;
            over += 100.0 * (makespan - bound) as f64 / bound as f64;
        }
        println!(
            "{name:>16} {:>7.0} {:>13.0} {:>11.0} {:>12.0} {:>10.2} {:>12.2}",
            rounds / n,
            lc / n,
            lci / n,
            sc / n,
            tot / n,
            over / n,
        );
    }
}
