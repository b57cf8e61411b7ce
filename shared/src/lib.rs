//! fleetpatch: patch fleets of servers across many AWS accounts and Regions.
//!
//! This crate holds everything the Lambda functions share: the run input and its
//! validation ([`input`]), SSM's rate-control grammar ([`ratecontrol`]), the domain
//! ([`model`]), one adapter per AWS service ([`store`], [`fleet`], [`orgs`], [`events`],
//! [`clients`]) and one module per function ([`plan`], [`expand`], [`dispatch`], [`settle`],
//! [`aggregate`]). Each function's `main.rs` only wires configuration and clients to these.

pub mod clients;
pub mod config;
pub mod error;
pub mod input;
pub mod model;
pub mod ratecontrol;
pub mod store;

pub use error::{Error, Result};
pub mod aggregate;
pub mod dispatch;
pub mod events;
pub mod expand;
pub mod fleet;
pub mod orgs;
pub mod plan;
pub mod settle;
pub mod task;
pub mod wiring;
