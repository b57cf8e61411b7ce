//! fleetsim: a simulated AWS fleet for fleetpatch tests.
//!
//! One HTTP endpoint serves STS (AssumeRole, GetCallerIdentity), SSM Run Command and
//! instance/patch state, Resource Groups and Organizations from a fleet file, with a
//! simulated clock and injectable faults, and forwards every other call to moto (Lambda
//! Invoke to `cargo lambda watch`). An oracle under `/_fleetsim/` reports what it saw.
//!
//! Start it in-process with [`start`]:
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let fleet = fleetsim::fleet::Fleet::load("tests/fleets/small.toml".as_ref())?;
//! let running = fleetsim::start(fleetsim::Options::new(fleet)).await?;
//! println!("{}", running.url());
//! running.shutdown().await;
//! # Ok(()) }
//! ```

pub mod bench_stats;
pub mod clock;
pub mod faults;
pub mod fleet;
pub mod forward;
pub mod forward_faults;
pub mod hooks;
pub mod iam;
pub mod oracle;
pub mod protocol;
pub mod router;
pub mod server;
pub mod services;
pub mod sim;
pub mod state;

pub use server::{start, Options, Running, StartError};
