//! fleetpatch: patch fleets of servers across many AWS accounts and Regions.
//!
//! This crate holds everything the Lambda functions share: the run input and its
//! validation ([`input`]), SSM's rate-control grammar ([`ratecontrol`]), the domain
//! ([`model`]), one adapter per AWS service ([`store`], [`fleet`], [`orgs`], [`regions`],
//! [`events`], [`clients`]) and one module per function ([`plan`], [`expand`], [`dispatch`], [`settle`],
//! [`aggregate`]), with the payloads they pass each other ([`task`]). Each function's
//! `main.rs` is one call to [`wiring::serve`], which reads configuration and builds clients
//! once per cold start.

pub mod band;
pub mod clients;
pub mod clock;
pub mod command;
pub mod comment;
pub mod config;
pub mod error;
pub mod input;
pub mod limits;
pub mod model;
pub mod ratecontrol;
pub mod reading;
pub mod store;

pub use error::{Error, Result};
pub mod aggregate;
pub mod alarms;
pub mod cancel;
pub mod dispatch;
pub mod events;
pub mod expand;
pub mod fleet;
pub mod gate;
pub mod halt;
pub mod hookdocs;
pub mod orgs;
pub mod plan;
pub mod poll;
pub mod progress;
pub mod regions;
pub mod report;
pub mod resume;
pub mod run;
pub mod settle;
pub mod task;
pub mod tracking;
pub mod waves;
pub mod window;
pub mod wiring;
