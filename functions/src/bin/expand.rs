//! The `expand` Lambda function: see `fleetpatch::expand`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fleetpatch::wiring::serve(fleetpatch::wiring::expander).await
}
