//! Cold-start wiring shared by the functions' `main`s: configuration once, clients once.
//! Each function's `main` is one call to [`serve`] with the builder of its handler below;
//! nothing here runs per invocation except the handler itself.

use crate::aggregate::Aggregator;
use crate::alarms::Alarms;
use crate::clients::{load_sdk_config, AssumeRoleFactory};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::error::Result;
use crate::expand::Expander;
use crate::gate::Gate;
use crate::plan::Planner;
use crate::settle::Settler;
use crate::store::Store;
use aws_config::SdkConfig;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;

/// A function's handler: one request type in, one response type out.
pub trait Handler {
    /// The payload the state machine sends.
    type Request: DeserializeOwned;
    type Response: Serialize;
    /// The SDK app name of the function (`fleetpatch-<binary>`): every AWS call it makes
    /// carries `app/<name>` in its user agent, which CloudTrail records, and which the
    /// local stack uses to evaluate the call against this function's role.
    const APP_NAME: &'static str;
    fn call(&self, req: Self::Request) -> impl Future<Output = Result<Self::Response>>;
}

// Each handler already has an inherent `handle`; the macro only names its payload types and
// its app name, five times over.
macro_rules! handler {
    ($ty:ty, $req:ty, $resp:ty, $app:literal) => {
        impl Handler for $ty {
            type Request = $req;
            type Response = $resp;
            const APP_NAME: &'static str = $app;
            fn call(&self, req: $req) -> impl Future<Output = Result<$resp>> {
                self.handle(req)
            }
        }
    };
}

handler!(
    Planner,
    crate::task::PlanRequest,
    crate::task::PlanResponse,
    "fleetpatch-plan"
);
handler!(
    Expander<AssumeRoleFactory>,
    crate::task::LocationTask,
    crate::task::LocationTask,
    "fleetpatch-expand"
);
handler!(
    Dispatcher<AssumeRoleFactory>,
    crate::task::LocationTask,
    crate::task::LocationTask,
    "fleetpatch-dispatch"
);
handler!(
    Settler,
    crate::task::LocationTask,
    crate::settle::SettleResponse,
    "fleetpatch-settle"
);
handler!(
    Gate,
    crate::task::WaveTask,
    crate::task::WaveAnswer,
    "fleetpatch-gate"
);
handler!(
    Aggregator<AssumeRoleFactory>,
    crate::task::AggregateRequest,
    crate::report::RunSummary,
    "fleetpatch-aggregate"
);

/// Runs a Lambda function: tracing (JSON under Lambda's LoggingConfig), configuration and
/// clients once per cold start, then the handler for every invocation. Errors reach Step
/// Functions with their stable `errorType`.
pub async fn serve<H: Handler>(
    build: impl FnOnce(Config, &SdkConfig) -> H,
) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let (config, sdk) = init(H::APP_NAME).await?;
    let handler = build(config, &sdk);

    let handler = &handler;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<H::Request>| async move {
            handler.call(event.payload).await.map_err(Diagnostic::from)
        },
    ))
    .await
}

/// Configuration and the function's own AWS configuration (with its SDK app name), read
/// once per cold start.
pub async fn init(app_name: &str) -> Result<(Config, SdkConfig)> {
    let config = Config::from_env()?;
    let sdk = load_sdk_config(app_name).await;
    Ok((config, sdk))
}

fn store(config: &Config, sdk: &SdkConfig) -> Store {
    Store::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &config.table,
        config.record_ttl_days,
    )
}

// One builder per function: the clients its handler uses, built from the function's own AWS
// configuration (target-account clients come later, from the AssumeRoleFactory).

pub fn planner(config: Config, sdk: &SdkConfig) -> Planner {
    Planner {
        store: store(&config, sdk),
        orgs: aws_sdk_organizations::Client::new(sdk),
        ssm: aws_sdk_ssm::Client::new(sdk),
        events: aws_sdk_eventbridge::Client::new(sdk),
        alarms: Alarms::new(sdk),
        config,
    }
}

pub fn expander(config: Config, sdk: &SdkConfig) -> Expander<AssumeRoleFactory> {
    Expander {
        store: store(&config, sdk),
        factory: AssumeRoleFactory::new(sdk, &config.partition),
        alarms: Alarms::new(sdk),
        config,
    }
}

pub fn dispatcher(config: Config, sdk: &SdkConfig) -> Dispatcher<AssumeRoleFactory> {
    Dispatcher {
        store: store(&config, sdk),
        factory: AssumeRoleFactory::new(sdk, &config.partition),
        alarms: Alarms::new(sdk),
        config,
    }
}

pub fn settler(config: Config, sdk: &SdkConfig) -> Settler {
    Settler {
        store: store(&config, sdk),
    }
}

pub fn gate(config: Config, sdk: &SdkConfig) -> Gate {
    Gate {
        store: store(&config, sdk),
        alarms: Alarms::new(sdk),
        events: aws_sdk_eventbridge::Client::new(sdk),
        config,
    }
}

pub fn aggregator(config: Config, sdk: &SdkConfig) -> Aggregator<AssumeRoleFactory> {
    Aggregator {
        store: store(&config, sdk),
        factory: AssumeRoleFactory::new(sdk, &config.partition),
        events: aws_sdk_eventbridge::Client::new(sdk),
        config,
    }
}
