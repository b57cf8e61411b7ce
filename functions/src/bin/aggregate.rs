//! The `aggregate` Lambda function: see `fleetpatch::aggregate`.

use fleetpatch::{task, wiring};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let (config, sdk) = wiring::init().await?;
    let handler = wiring::aggregator(config, &sdk);
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<task::AggregateRequest>| async {
            handler
                .handle(event.payload)
                .await
                .map_err(Diagnostic::from)
        },
    ))
    .await
}
