//! The `plan` function: validate the input, resolve OUs, build the account x Region
//! locations, turn percentages into numbers, write the run record and announce the run.

use crate::alarms::Alarms;
use crate::clock::{now_epoch, now_epoch_ms};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events;
use crate::input::{self, FieldError, RunInput};
use crate::limits;
use crate::model::{cut_text, first, Location, RunRecord, RunStatus, MAX_LISTED_SKIPPED_ACCOUNTS};
use crate::orgs;
use crate::regions;
use crate::store::{Store, MAX_LISTED_REASONS};
use crate::task::{PlanRequest, PlanResponse};
use serde_json::json;
use tracing::{info, warn};

/// The most locations one run may have: the Distributed Map reads them from plan's answer,
/// one state payload (256 KiB with the `lambda:invoke` envelope around it). Measured through
/// the same serde path (a test): 31 bytes a location (`"ACCOUNT/REGION",` with a 15-byte
/// Region code), 134 bytes for the rest with the longest run ID; 8,385 is the largest count
/// that fits [`limits::PLAN_RESPONSE_BUDGET_BYTES`]. [`decide`] also checks the bytes
/// themselves, for Region codes longer than the cap was derived for.
pub const MAX_LOCATIONS: usize = 8_385;

/// What `plan` needs.
pub struct Planner {
    pub config: Config,
    pub store: Store,
    /// Organizations: OU and root targets, the status of accounts named by ID.
    pub orgs: aws_sdk_organizations::Client,
    /// SSM in the function's own account and Region: the public list of AWS Regions.
    pub ssm: aws_sdk_ssm::Client,
    pub events: aws_sdk_eventbridge::Client,
    /// CloudWatch: the alarms of `stopOnAlarms` must exist.
    pub alarms: Alarms,
}

/// Every location: each account in each Region, accounts in order, Regions in order.
pub fn locations(accounts: &[String], regions: &[String]) -> Vec<Location> {
    accounts
        .iter()
        .flat_map(|a| {
            regions
                .iter()
                .map(move |r| Location::new(a.clone(), r.clone()))
        })
        .collect()
}

/// The plan's answer for a run over `locations`.
pub fn response(run_id: &str, input: &RunInput, locations: &[Location]) -> PlanResponse {
    let n = locations.len() as u64;
    PlanResponse {
        run_id: run_id.to_string(),
        location_concurrency: input.location_concurrency_rate().window(n),
        locations: locations.iter().map(ToString::to_string).collect(),
    }
}

/// A run as plan decided it: its record, its locations, and the answer to the state
/// machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub record: RunRecord,
    pub locations: Vec<Location>,
    pub response: PlanResponse,
}

/// Decides the run from its validated input and its resolved targets (pure). Refused when
/// the accounts and Regions make more than [`MAX_LOCATIONS`] locations, or an answer larger
/// than the state payload carries.
pub fn decide(
    run_id: &str,
    mut run_input: RunInput,
    resolved: orgs::Resolved,
    snapshot_id: String,
    now: i64,
) -> std::result::Result<Planned, FieldError> {
    let locs = locations(&resolved.accounts, &run_input.regions);
    if locs.len() > MAX_LOCATIONS {
        return Err(FieldError {
            field: "accounts".into(),
            rule: format!(
                "{} accounts x {} Regions = {} locations; a run may have at most {MAX_LOCATIONS} (split it into several runs)",
                resolved.accounts.len(),
                run_input.regions.len(),
                locs.len()
            ),
        });
    }

    // One snapshot per run: every instance patches against the same baseline.
    run_input.snapshot_id.get_or_insert(snapshot_id);
    let response = response(run_id, &run_input, &locs);
    let bytes = serde_json::to_vec(&response).map_or(usize::MAX, |b| b.len());
    if !limits::plan_response_fits(bytes) {
        return Err(FieldError {
            field: "regions".into(),
            rule: format!(
                "{} locations with these Region codes make a plan of {bytes} bytes; the state machine carries at most {} (256 KiB less the Lambda envelope): split the run into several",
                locs.len(),
                limits::PLAN_RESPONSE_BUDGET_BYTES
            ),
        });
    }
    let n = locs.len() as u64;
    let (skipped, skipped_omitted) = first(resolved.skipped, MAX_LISTED_SKIPPED_ACCOUNTS);
    let record = RunRecord {
        locations_tolerated: run_input.location_error_rate().tolerated_errors(n),
        accounts: resolved.accounts,
        skipped_accounts: skipped,
        skipped_accounts_omitted: skipped_omitted,
        location_count: n,
        location_window: response.location_concurrency,
        ..RunRecord::started(run_id, run_input, now)
    };
    Ok(Planned {
        record,
        locations: locs,
        response,
    })
}

impl Planner {
    /// Plans a run: validate the input, load what the organization and SSM know of its
    /// targets, decide the run, then record it, write its locations and announce it. Bad
    /// input is recorded as a rejected run and answered with [`Error::InvalidInput`];
    /// nothing is dispatched.
    pub async fn handle(&self, req: PlanRequest) -> Result<PlanResponse> {
        let run_id = req
            .execution_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let run_input = match input::validate(&req.input) {
            Ok(i) => i,
            Err(errs) => return self.reject(&run_id, &req.input, &errs).await,
        };

        // A retried plan finds its own record: answer from it, so the snapshot and the
        // locations stay those of the first attempt.
        if let Ok(existing) = self.store.get_run(&run_id).await {
            info!(run_id, "run already planned; answering from its record");
            return self.answer_from(&existing).await;
        }

        let resolved = match self.resolve_targets(&req.input, &run_input).await? {
            Ok(r) => r,
            Err(errs) => return self.reject(&run_id, &req.input, &errs).await,
        };
        let snapshot = uuid::Uuid::new_v4().to_string();
        match decide(&run_id, run_input, resolved, snapshot, now_epoch()) {
            Ok(planned) => self.apply(planned).await,
            Err(e) => self.reject(&run_id, &req.input, &[e]).await,
        }
    }

    /// What the organization and SSM know of the targets: well-formed Region codes that name
    /// no Region, and accounts and OUs the organization does not know, are bad input too,
    /// all reported together.
    async fn resolve_targets(
        &self,
        raw: &serde_json::Value,
        run_input: &RunInput,
    ) -> Result<std::result::Result<orgs::Resolved, Vec<FieldError>>> {
        let known = regions::aws_regions(&self.ssm).await?;
        let mut errs = input::unknown_regions(raw, &known);
        errs.extend(input::timing_violations(run_input, now_epoch_ms()));
        errs.extend(self.alarms.missing(&run_input.stop_on_alarms).await?);
        let resolved =
            orgs::resolve(&self.orgs, &run_input.accounts, &run_input.exclude_accounts).await?;
        Ok(match resolved {
            Ok(r) if errs.is_empty() => Ok(r),
            Ok(_) => Err(errs),
            Err(more) => {
                errs.extend(more);
                Err(errs)
            }
        })
    }

    /// Records the run, writes its locations and announces it. When another attempt of this
    /// plan (a retry that overlapped this one, which timed out) recorded the run first, its
    /// record, locations and event stand.
    async fn apply(&self, planned: Planned) -> Result<PlanResponse> {
        let run = &planned.record;
        let run_id = run.run_id.as_str();
        if !self.store.create_run(run).await? {
            let existing = self.store.get_run(run_id).await?;
            info!(
                run_id,
                "run planned meanwhile by another attempt; answering from its record"
            );
            return self.answer_from(&existing).await;
        }

        self.store.put_locations(run_id, &planned.locations).await?;
        info!(
            run_id,
            locations = run.location_count,
            accounts = run.accounts.len(),
            skipped_accounts = run.skipped_accounts.len() as u64 + run.skipped_accounts_omitted,
            location_concurrency = run.location_window,
            "run planned"
        );

        let input = &run.input;
        let detail = json!({
            "runId": run_id,
            "operation": input.operation,
            "resourceGroup": input.resource_group,
            "accounts": run.accounts.len(),
            "regions": input.regions,
            "locations": run.location_count,
            "locationConcurrency": run.location_window,
            "snapshotId": input.snapshot_id,
            "skippedAccounts": run.skipped_accounts,
            "skippedAccountsOmitted": run.skipped_accounts_omitted,
        });
        let bus = &self.config.event_bus;
        events::put_event(&self.events, bus, events::RUN_STARTED, &detail).await?;
        Ok(planned.response)
    }

    /// Answers from a recorded run. Its first attempt may have stopped before writing the
    /// locations: those not recorded yet are written (a location already written is never
    /// reset, even if the Map has started).
    async fn answer_from(&self, existing: &RunRecord) -> Result<PlanResponse> {
        let run_id = existing.run_id.as_str();
        let locs = locations(&existing.accounts, &existing.input.regions);
        self.store.put_locations(run_id, &locs).await?;
        Ok(response(run_id, &existing.input, &locs))
    }

    async fn reject<T>(
        &self,
        run_id: &str,
        raw: &serde_json::Value,
        errs: &[FieldError],
    ) -> Result<T> {
        let message = input::describe(errs);
        warn!(run_id, %message, "run input rejected");
        // Each reason is cut (an unknown field's name can be any length), and at most
        // MAX_LISTED_REASONS are listed: the record and the event stay bounded.
        let reasons: Vec<String> = errs
            .iter()
            .map(|e| cut_text(&e.to_string(), input::MAX_REASON_BYTES).0)
            .collect();
        self.store
            .put_rejected_run(run_id, &raw.to_string(), &reasons)
            .await?;
        let (listed, omitted) = first(reasons, MAX_LISTED_REASONS);
        let detail = json!({
            "runId": run_id,
            "status": RunStatus::Rejected.as_str(),
            "reasons": listed,
            "reasonsOmitted": omitted,
        });
        if let Err(e) = events::put_event(
            &self.events,
            &self.config.event_bus,
            events::RUN_COMPLETED,
            &detail,
        )
        .await
        {
            warn!(run_id, error = %e, "could not announce the rejected run");
        }
        Err(Error::InvalidInput(message))
    }
}

#[cfg(test)]
mod tests {
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
            serde_json::from_str(include_str!("../../statemachine/patching.asl.json")).unwrap();
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
        let Err(err) = decide("r", input, resolved, "snap".into(), 0) else {
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
}
