//! The `dispatch` Lambda function: see `fleetpatch::dispatch`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fleetpatch::wiring::serve(fleetpatch::wiring::dispatcher).await
}
