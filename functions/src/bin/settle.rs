//! The `settle` Lambda function: see `fleetpatch::settle`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fleetpatch::wiring::serve(fleetpatch::wiring::settler).await
}
