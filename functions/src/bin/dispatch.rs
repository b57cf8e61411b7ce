//! The `dispatch` Lambda function: see `fleetpatch::dispatch`.

use fleetpatch::{task, wiring};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let (config, sdk) = wiring::init().await?;
    let handler = wiring::dispatcher(config, &sdk);
    lambda_runtime::run(service_fn(|event: LambdaEvent<task::LocationTask>| async {
        handler
            .handle(event.payload)
            .await
            .map_err(Diagnostic::from)
    }))
    .await
}
