//! The `plan` Lambda function: see `fleetpatch::plan`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fleetpatch::wiring::serve(fleetpatch::wiring::planner).await
}
