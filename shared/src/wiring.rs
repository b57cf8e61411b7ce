//! Cold-start wiring shared by the functions' `main`s: configuration once, clients once.

use crate::aggregate::Aggregator;
use crate::clients::{load_sdk_config, AssumeRoleFactory};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::error::Result;
use crate::expand::Expander;
use crate::plan::Planner;
use crate::settle::Settler;
use crate::store::Store;
use aws_config::SdkConfig;

/// Configuration and the function's own AWS configuration, read once per cold start.
pub async fn init() -> Result<(Config, SdkConfig)> {
    let config = Config::from_env()?;
    let sdk = load_sdk_config().await;
    Ok((config, sdk))
}

fn store(config: &Config, sdk: &SdkConfig) -> Store {
    Store::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &config.table,
        config.record_ttl_days,
    )
}

/// The `plan` function's context.
pub fn planner(config: Config, sdk: &SdkConfig) -> Planner {
    Planner {
        store: store(&config, sdk),
        orgs: aws_sdk_organizations::Client::new(sdk),
        events: aws_sdk_eventbridge::Client::new(sdk),
        config,
    }
}

/// The `expand` function's context.
pub fn expander(config: Config, sdk: &SdkConfig) -> Expander<AssumeRoleFactory> {
    Expander {
        store: store(&config, sdk),
        factory: AssumeRoleFactory::new(sdk, &config.partition),
        config,
    }
}

/// The `dispatch` function's context.
pub fn dispatcher(config: Config, sdk: &SdkConfig) -> Dispatcher<AssumeRoleFactory> {
    Dispatcher {
        store: store(&config, sdk),
        factory: AssumeRoleFactory::new(sdk, &config.partition),
        config,
    }
}

/// The `settle` function's context.
pub fn settler(config: Config, sdk: &SdkConfig) -> Settler {
    Settler {
        store: store(&config, sdk),
    }
}

/// The `aggregate` function's context.
pub fn aggregator(config: Config, sdk: &SdkConfig) -> Aggregator<AssumeRoleFactory> {
    Aggregator {
        store: store(&config, sdk),
        factory: AssumeRoleFactory::new(sdk, &config.partition),
        events: aws_sdk_eventbridge::Client::new(sdk),
        config,
    }
}
