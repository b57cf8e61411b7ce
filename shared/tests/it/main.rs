//! Handler tests: each function's handler against the real SDK client types, with
//! aws-smithy-mocks answering the calls. One test binary; modules share `util`.

mod aggregate;
mod band;
mod clients;
mod dispatch;
mod expand;
mod hooks;
mod layering;
mod plan;
mod util;
