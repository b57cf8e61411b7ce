//! The `gate` Lambda function: see `fleetpatch::gate`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fleetpatch::wiring::serve(fleetpatch::wiring::gate).await
}
