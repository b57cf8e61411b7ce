//! Integration tests of fleetsim over HTTP, one binary, one module per area.

mod faults;
mod forward;
mod orgs_rg;
mod regions;
mod ssm;
mod sts;
mod util;
