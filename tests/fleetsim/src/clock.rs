//! The simulated clock: epoch milliseconds that run `speed` times faster than the wall clock
//! (`--speed 60` = one simulated minute per real second) and can be advanced by hand.
//! Speed 0 freezes it, which tests use to step time explicitly.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
struct ClockState {
    anchor_real: Instant,
    anchor_sim_ms: i64,
    speed: f64,
}

/// A shared simulated clock.
#[derive(Debug)]
pub struct SimClock {
    state: Mutex<ClockState>,
}

/// Current wall-clock time in epoch milliseconds.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SimClock {
    /// A clock starting at the current wall-clock time.
    pub fn new(speed: f64) -> Self {
        Self {
            state: Mutex::new(ClockState {
                anchor_real: Instant::now(),
                anchor_sim_ms: wall_ms(),
                speed: speed.max(0.0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_locked(s: &ClockState) -> i64 {
        let real = s.anchor_real.elapsed().as_secs_f64() * 1000.0;
        s.anchor_sim_ms + (real * s.speed) as i64
    }

    /// Simulated now, epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        Self::now_locked(&self.lock())
    }

    /// Current speed factor.
    pub fn speed(&self) -> f64 {
        self.lock().speed
    }

    /// Changes the speed from now on (time already elapsed is kept).
    pub fn set_speed(&self, speed: f64) {
        let mut s = self.lock();
        let now = Self::now_locked(&s);
        s.anchor_real = Instant::now();
        s.anchor_sim_ms = now;
        s.speed = speed.max(0.0);
    }

    /// Jumps the simulated clock forward (negative values are ignored).
    pub fn advance_ms(&self, ms: i64) {
        let mut s = self.lock();
        s.anchor_sim_ms += ms.max(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_only_moves_when_advanced() {
        let c = SimClock::new(0.0);
        let t0 = c.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(c.now_ms(), t0);
        c.advance_ms(60_000);
        assert_eq!(c.now_ms(), t0 + 60_000);
    }

    #[test]
    fn speed_scales_elapsed_time() {
        let c = SimClock::new(1000.0);
        let t0 = c.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            c.now_ms() - t0 >= 20_000,
            "1000x speed: 20 ms real >= 20 s simulated"
        );
    }
}
