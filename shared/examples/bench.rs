//! `make bench`: figures for the parts of fleetpatch that grow with the fleet. Prints, never
//! asserts.
//!
//! - plan: state payload size and build time for 1,000 to 10,000 locations (Step Functions
//!   allows 256 KiB per state);
//! - dispatch decisions: `plan_round` time over locations of 100 to 10,000 instances, and the
//!   number of rounds a 10% window needs to get through them;
//! - input validation time;
//! - what one dispatch round reads from DynamoDB, for locations of 250 to 10,000 instances;
//! - the poll interval: one location at issue 8's defaults (250 instances, window 10%,
//!   patch runs of 5-30 minutes, 2% failing, 1% offline, 30 s poll), simulated round by
//!   round with the real `plan_round` and `poll::next_wait`, counting the control-plane
//!   calls each round makes (as `progress::follow_commands` and dispatch make them) and the
//!   makespan against its lower bound.

use fleetpatch::input;
use fleetpatch::model::InstanceRecord;
use fleetpatch::model::InstanceState;
use fleetpatch::plan::{locations, response};
use fleetpatch::ratecontrol::Rate;
use fleetpatch::window::plan_round;
use serde_json::json;
use std::time::Instant;

fn main() {
    let regions: Vec<String> = [
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-northeast-1",
        "ap-northeast-2",
        "eu-central-1",
        "us-east-1",
        "us-west-2",
        "eu-west-1",
        "eu-west-2",
        "sa-east-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let input = input::validate(&json!({
        "operation": "Install", "resourceGroup": "patch-group-a",
        "accounts": ["111111111111"], "regions": ["us-east-1"], "locationConcurrency": "5%"
    }))
    .unwrap_or_else(|e| panic!("{e:?}"));

    println!("plan: state payload for N locations (limit 262144 bytes)");
    println!("{:>10} {:>12} {:>12}", "locations", "bytes", "build_ms");
    for n in [1_000usize, 5_000, 10_000] {
        let accounts: Vec<String> = (0..n / 10)
            .map(|i| format!("{:012}", 100_000_000_000u64 + i as u64))
            .collect();
        let t = Instant::now();
        let locs = locations(&accounts, &regions);
        let resp = response("0b7c3a2e-3e1d-4c55-9a51-8c0e2b1d7f00", &input, &locs);
        let bytes = serde_json::to_vec(&resp).map(|v| v.len()).unwrap_or(0);
        println!(
            "{n:>10} {bytes:>12} {:>12.2}",
            t.elapsed().as_secs_f64() * 1e3
        );
    }

    println!("\ndispatch: plan_round over one location, window 10%");
    println!(
        "{:>10} {:>8} {:>14} {:>8}",
        "instances", "window", "us_per_round", "rounds"
    );
    for n in [100usize, 1_000, 10_000] {
        let mut fleet: Vec<InstanceRecord> = (0..n)
            .map(|i| InstanceRecord::new(&format!("i-{i:017x}"), InstanceState::Pending))
            .collect();
        let window = Rate::Percent(10).window(n as u64);
        let mut rounds = 0u32;
        let mut spent = std::time::Duration::ZERO;
        loop {
            // every in-flight instance finishes between rounds
            for i in fleet
                .iter_mut()
                .filter(|i| i.state == InstanceState::InFlight)
            {
                i.state = InstanceState::Succeeded;
            }
            let t = Instant::now();
            let r = plan_round(&fleet, window, Some(0));
            spent += t.elapsed();
            rounds += 1;
            if r.done {
                break;
            }
            let started: std::collections::HashSet<&String> = r.start.iter().flatten().collect();
            for i in fleet
                .iter_mut()
                .filter(|i| started.contains(&i.instance_id))
            {
                i.state = InstanceState::InFlight;
            }
        }
        let per = spent.as_secs_f64() * 1e6 / f64::from(rounds);
        println!("{n:>10} {window:>8} {per:>14.1} {rounds:>8}");
    }

    let raw = json!({
        "operation": "Install", "resourceGroup": "patch-group-a",
        "accounts": (0..1000).map(|i| format!("{:012}", 100_000_000_000u64 + i)).collect::<Vec<_>>(),
        "regions": regions, "targetConcurrency": "10%"
    });
    let t = Instant::now();
    for _ in 0..100 {
        let _ = input::validate(&raw);
    }
    println!(
        "\ninput: validating 1,000 accounts x 10 Regions: {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / 100.0
    );

    partition::print();
    poll_sim::print();
}

#[path = "bench_parts/partition.rs"]
mod partition;
#[path = "bench_parts/poll_sim.rs"]
mod poll_sim;
