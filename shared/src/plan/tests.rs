use super::*;
use crate::limits;
use serde_json::json;

fn run_input(accounts: usize, regions: usize) -> (RunInput, Vec<String>, Vec<String>) {
    let accts: Vec<String> = (0..accounts)
        .map(|i| format!("{:012}", 100_000_000_000u64 + i as u64))
        .collect();
    let all_regions = [
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "eu-west-1",
        "eu-west-2",
        "eu-central-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-northeast-1",
    ];
    let regs: Vec<String> = all_regions
        .iter()
        .take(regions)
        .map(|s| s.to_string())
        .collect();
    let input = input::validate(&json!({
        "operation": "Install",
        "resourceGroup": "patch-group-a",
        "accounts": accts,
        "regions": regs,
        "locationConcurrency": "5%",
    }))
    .unwrap();
    (input, accts, regs)
}

#[test]
fn the_map_tolerates_a_failed_child_at_any_allowed_size() {
    let asl: serde_json::Value =
        serde_json::from_str(include_str!("../../../statemachine/patching.asl.json")).unwrap();
    let tolerated = asl["States"]["Locations"]["ToleratedFailureCount"]
        .as_u64()
        .unwrap();
    assert!(tolerated >= MAX_LOCATIONS as u64);
}

/// The largest plan answer: `n` locations of 12-digit accounts and Region codes of
/// the longest length the cap is derived for, the longest run ID, every location at once.
fn worst_case_response(n: usize) -> PlanResponse {
    let regs: Vec<String> = (0..10).map(|i| format!("us-isof-south-{i}")).collect();
    assert!(regs
        .iter()
        .all(|r| r.len() == limits::MAX_REGION_CODE_BYTES));
    let accts: Vec<String> = (0..n.div_ceil(regs.len()))
        .map(|i| format!("{:012}", 100_000_000_000u64 + i as u64))
        .collect();
    let mut locs = locations(&accts, &regs);
    locs.truncate(n);
    let input = input::validate(&json!({
        "operation": "Install",
        "resourceGroup": "patch-group-a",
        "accounts": ["123456789012"],
        "regions": ["us-east-1"],
        "locationConcurrency": "100%",
    }))
    .unwrap();
    let run_id = "r".repeat(limits::MAX_RUN_ID_BYTES);
    response(&run_id, &input, &locs)
}

#[test]
fn the_largest_allowed_plan_fits_in_a_state_payload_and_one_more_location_would_not() {
    // GIVEN the largest plan answer plan accepts, serialized as the function returns it
    let resp = worst_case_response(MAX_LOCATIONS);
    assert_eq!(resp.locations.len(), MAX_LOCATIONS);
    let bytes = serde_json::to_vec(&resp).unwrap().len();

    // THEN it fits the payload with the lambda:invoke envelope around it
    assert!(
        limits::plan_response_fits(bytes),
        "{MAX_LOCATIONS} locations make {bytes} bytes; the budget is {}",
        limits::PLAN_RESPONSE_BUDGET_BYTES
    );
    // AND the cap is the largest that fits
    let more = serde_json::to_vec(&worst_case_response(MAX_LOCATIONS + 1))
        .unwrap()
        .len();
    assert!(!limits::plan_response_fits(more), "{more} bytes still fit");
}

#[test]
fn the_invoke_envelope_fits_its_reserve() {
    // GIVEN a lambda:invoke result as Step Functions records it (the shape AWS documents,
    // header values at their real lengths), around an empty answer
    let envelope = json!({
        "ExecutedVersion": "$LATEST",
        "Payload": {},
        "SdkHttpMetadata": {
            "AllHttpHeaders": {
                "X-Amz-Executed-Version": ["$LATEST"],
                "x-amzn-Remapped-Content-Length": ["0"],
                "Connection": ["keep-alive"],
                "x-amzn-RequestId": ["6f3b2c1a-8d4e-4f5a-9b6c-7d8e9f0a1b2c"],
                "Content-Length": ["262144"],
                "Date": ["Mon, 30 Nov 2026 14:00:00 GMT"],
                "X-Amzn-Trace-Id": ["root=1-6572a1b2-3c4d5e6f7a8b9c0d1e2f3a4b;parent=1a2b3c4d5e6f7a8b;sampled=0;lineage=9f8e7d6c:0"],
                "Content-Type": ["application/json"]
            },
            "HttpHeaders": {
                "X-Amz-Executed-Version": "$LATEST",
                "x-amzn-Remapped-Content-Length": "0",
                "Connection": "keep-alive",
                "x-amzn-RequestId": "6f3b2c1a-8d4e-4f5a-9b6c-7d8e9f0a1b2c",
                "Content-Length": "262144",
                "Date": "Mon, 30 Nov 2026 14:00:00 GMT",
                "X-Amzn-Trace-Id": "root=1-6572a1b2-3c4d5e6f7a8b9c0d1e2f3a4b;parent=1a2b3c4d5e6f7a8b;sampled=0;lineage=9f8e7d6c:0",
                "Content-Type": "application/json"
            },
            "HttpStatusCode": 200
        },
        "SdkResponseMetadata": {"RequestId": "6f3b2c1a-8d4e-4f5a-9b6c-7d8e9f0a1b2c"},
        "StatusCode": 200
    });
    // WHEN it is measured without the answer's own two bytes
    let bytes = serde_json::to_vec(&envelope).unwrap().len() - 2;
    // THEN it fits the room plan's budget keeps for it, with room to spare
    assert!(
        bytes * 2 <= limits::INVOKE_ENVELOPE_BYTES,
        "the envelope is {bytes} bytes"
    );
}

#[test]
fn a_plan_over_the_payload_budget_is_refused_even_under_the_location_cap() {
    // GIVEN Region codes longer than the cap was derived for (well formed, if AWS added
    // one), in a run just under the location cap
    let regs: Vec<String> = (0..10)
        .map(|i| format!("us-northwest-longer-{i}"))
        .collect();
    let accts: Vec<String> = (0..MAX_LOCATIONS / 10)
        .map(|i| format!("{:012}", 100_000_000_000u64 + i as u64))
        .collect();
    let (mut input, _, _) = run_input(1, 1);
    input.regions = regs;
    let resolved = orgs::Resolved {
        accounts: accts,
        skipped: Vec::new(),
    };
    // WHEN plan decides the run
    let Err(err) = decide("r", input, resolved, "snap".into(), 0, None) else {
        panic!("a plan over the payload budget was accepted");
    };
    // THEN it is refused as bad input, saying why
    assert_eq!(err.field, "regions");
    assert!(err.rule.contains("256 KiB"), "{}", err.rule);
}

#[test]
fn five_thousand_locations_fit_in_a_state_payload() {
    // GIVEN 1,000 accounts x 5 Regions (the longest Region names)
    let (input, accts, _) = run_input(1000, 10);
    let regs: Vec<String> = [
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // WHEN the plan is built
    let locs = locations(&accts, &regs);
    let resp = response("9b2f6c1e-0000-4000-8000-000000000000", &input, &locs);
    // THEN the Map's input stays under Step Functions' 256 KiB
    assert_eq!(resp.locations.len(), 5000);
    let bytes = serde_json::to_vec(&resp).unwrap().len();
    assert!(bytes < 256 * 1024, "plan payload is {bytes} bytes");
    // and concurrency 5% of 5,000 locations is 250
    assert_eq!(resp.location_concurrency, 250);
}

#[test]
fn locations_are_accounts_times_regions() {
    let (input, accts, regs) = run_input(3, 2);
    let locs = locations(&accts, &regs);
    assert_eq!(locs.len(), 6);
    assert_eq!(locs[1], Location::new(accts[0].clone(), "us-east-2"));
    let resp = response("r", &input, &locs);
    assert_eq!(
        resp.location_concurrency, 1,
        "5% of 6 rounds down, at least 1"
    );
}
