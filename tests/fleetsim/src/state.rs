//! The shared server state: clock, simulation, STS sessions, faults, oracle statistics and
//! the forwarder, each behind its own lock. Handlers never hold a lock across an `.await`.

use std::sync::{Mutex, MutexGuard};

use crate::clock::SimClock;
use crate::faults::Faults;
use crate::fleet::Fleet;
use crate::forward::Forwarder;
use crate::iam::Iam;
use crate::oracle::Stats;
use crate::services::sts::Sessions;
use crate::sim::{Sim, SimConfig};

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    /// Simulated clock.
    pub clock: SimClock,
    /// The fleet as loaded (for full resets).
    pub fleet: Fleet,
    /// Timing knobs.
    pub sim_config: SimConfig,
    /// Commands, invocations, patch state.
    pub sim: Mutex<Sim>,
    /// Credentials issued by AssumeRole.
    pub sessions: Mutex<Sessions>,
    /// Active faults.
    pub faults: Mutex<Faults>,
    /// Oracle counters.
    pub stats: Mutex<Stats>,
    /// Upstream forwarding.
    pub forwarder: Forwarder,
    /// IAM evaluation of every call (None: not enforced).
    pub iam: Option<Iam>,
}

/// Locks a mutex, recovering the data if a previous holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AppState {
    /// Simulated now, after applying every invocation end that is due.
    pub fn settled_sim(&self) -> (MutexGuard<'_, Sim>, i64) {
        let now = self.clock.now_ms();
        let mut sim = lock(&self.sim);
        sim.settle(now);
        (sim, now)
    }
}
