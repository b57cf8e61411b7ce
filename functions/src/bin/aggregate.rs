//! The `aggregate` Lambda function: see `fleetpatch::aggregate`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fleetpatch::wiring::serve(fleetpatch::wiring::aggregator).await
}
