//! The `plan` function: validate the input, resolve OUs, build the account x Region
//! locations, turn percentages into numbers, write the run record and announce the run.

use crate::alarms::Alarms;
use crate::clock::{now_epoch, now_epoch_ms};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events;
use crate::input::{self, FieldError, RunInput};
use crate::limits;
use crate::model::{
    cut_text, first, Location, RunRecord, RunStatus, WaveRecord, MAX_LISTED_SKIPPED_ACCOUNTS,
};
use crate::orgs;
use crate::regions;
use crate::resume::{self, Original};
use crate::store::{Store, MAX_LISTED_REASONS};
use crate::task::{PlanRequest, PlanResponse};
use crate::waves::{self, WaveTargets};
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

/// A run as plan decided it: its record, its waves, its locations (in wave order, with
/// each one's wave index beside it), and the answer to the state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub record: RunRecord,
    pub waves: Vec<WaveRecord>,
    pub locations: Vec<Location>,
    pub location_waves: Vec<u32>,
    pub response: PlanResponse,
}

/// Decides the run from its validated input and its resolved targets (pure), each wave
/// as [`waves::targets_from`] finds it.
pub fn decide(
    run_id: &str,
    run_input: RunInput,
    resolved: orgs::Resolved,
    snapshot_id: String,
    now: i64,
    resumed: Option<&Original>,
) -> std::result::Result<Planned, FieldError> {
    let targets = waves::targets_from(&run_input, &resolved.accounts);
    decide_waves(
        run_id,
        run_input,
        resolved,
        &targets,
        (snapshot_id, now),
        resumed,
    )
}

/// The error for a run over [`MAX_LOCATIONS`].
fn too_many(input: &RunInput, accounts: usize, locations: usize) -> FieldError {
    let field = if input.waves.is_empty() {
        "accounts"
    } else {
        "waves"
    };
    FieldError {
        field: field.into(),
        rule: format!(
            "{accounts} accounts x {} Regions = {locations} locations; a run may have at most {MAX_LOCATIONS} (split it into several runs)",
            input.regions.len(),
        ),
    }
}

/// The planned waves' locations that a resumed run keeps of its original (all of them for a
/// new run), with their waves' location counts to match.
fn resumed_only(
    (mut waves, locs, indices): (Vec<WaveRecord>, Vec<Location>, Vec<u32>),
    resumed: Option<&Original>,
) -> (Vec<WaveRecord>, Vec<Location>, Vec<u32>) {
    if resumed.is_none() {
        return (waves, locs, indices);
    }
    let kept = resume::locations(locs.clone(), resumed);
    let (locs, indices): (Vec<Location>, Vec<u32>) = locs
        .into_iter()
        .zip(indices)
        .filter(|(l, _)| kept.contains(l))
        .unzip();
    for w in &mut waves {
        w.location_count = indices.iter().filter(|i| **i == w.index).count() as u64;
    }
    (waves, locs, indices)
}

/// Decides the run from its validated input, its resolved targets and each wave's (pure).
/// Refused when the waves make more than [`MAX_LOCATIONS`] locations, or an answer larger
/// than the state payload carries.
pub fn decide_waves(
    run_id: &str,
    mut run_input: RunInput,
    resolved: orgs::Resolved,
    targets: &[WaveTargets],
    (snapshot_id, now): (String, i64),
    resumed: Option<&Original>,
) -> std::result::Result<Planned, FieldError> {
    let flat = waves::flatten(waves::plan(&run_input, targets));
    let (wave_records, locs, location_waves) = resumed_only(flat, resumed);
    if locs.len() > MAX_LOCATIONS {
        return Err(too_many(&run_input, resolved.accounts.len(), locs.len()));
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
        waves: wave_records,
        locations: locs,
        location_waves,
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

        let (resolved, targets) = match self.resolve_targets(&req.input, &run_input).await? {
            Ok(r) => r,
            Err(errs) => return self.reject(&run_id, &req.input, &errs).await,
        };
        let planned: Vec<Location> = waves::assign(&targets)
            .into_iter()
            .flat_map(|(l, _)| l)
            .collect();
        let source = self.store.resume_source(&run_id, &run_input, &planned);
        let resumed = match source.await? {
            Ok(r) => r,
            Err(e) => return self.reject(&run_id, &req.input, &[e]).await,
        };
        let (r, new) = (resumed.as_ref(), || uuid::Uuid::new_v4().to_string());
        let snapshot = r.and_then(|o| o.snapshot_id.clone()).unwrap_or_else(new);
        let decided = (snapshot, now_epoch());
        match decide_waves(&run_id, run_input, resolved, &targets, decided, r) {
            Ok(planned) => self.apply(planned).await,
            Err(e) => self.reject(&run_id, &req.input, &[e]).await,
        }
    }

    /// What the organization and SSM know of the targets, the run's and each wave's:
    /// well-formed Region codes that name no Region, and accounts and OUs the organization
    /// does not know, are bad input too, all reported together.
    async fn resolve_targets(
        &self,
        raw: &serde_json::Value,
        run_input: &RunInput,
    ) -> Result<std::result::Result<(orgs::Resolved, Vec<WaveTargets>), Vec<FieldError>>> {
        let known = regions::aws_regions(&self.ssm).await?;
        let mut errs = input::unknown_regions(raw, &known);
        let (targets, wave_errs) = self.resolve_waves(raw, run_input, &known).await?;
        errs.extend(wave_errs);
        errs.extend(input::timing_violations(run_input, now_epoch_ms()));
        errs.extend(self.alarms.missing(&run_input.stop_on_alarms).await?);
        let resolved =
            orgs::resolve(&self.orgs, &run_input.accounts, &run_input.exclude_accounts).await?;
        Ok(match resolved {
            Ok(r) if errs.is_empty() => {
                let targets =
                    targets.unwrap_or_else(|| waves::targets_from(run_input, &r.accounts));
                Ok((r, targets))
            }
            Ok(_) => Err(errs),
            Err(more) => {
                errs.extend(more);
                Err(errs)
            }
        })
    }

    /// Each wave's targets, resolved wave by wave (None for a run without waves), and the
    /// waves' own errors, each named by its place (`waves[1].accounts[0]`).
    async fn resolve_waves(
        &self,
        raw: &serde_json::Value,
        run_input: &RunInput,
        known: &std::collections::BTreeSet<String>,
    ) -> Result<(Option<Vec<WaveTargets>>, Vec<FieldError>)> {
        if run_input.waves.is_empty() {
            return Ok((None, Vec::new()));
        }
        let mut targets = Vec::new();
        let mut errs = Vec::new();
        for (i, wave) in run_input.waves.iter().enumerate() {
            let at = |e: FieldError| FieldError {
                field: format!("waves[{i}].{}", e.field),
                rule: e.rule,
            };
            errs.extend(
                input::unknown_regions(&raw["waves"][i], known)
                    .into_iter()
                    .map(at),
            );
            match orgs::resolve(&self.orgs, &wave.accounts, &run_input.exclude_accounts).await? {
                Ok(r) => targets.push(WaveTargets {
                    accounts: r.accounts,
                    regions: wave.regions.clone(),
                }),
                Err(more) => errs.extend(more.into_iter().map(at)),
            }
        }
        Ok((Some(targets), errs))
    }

    /// Records the run, writes its locations and announces it. When another attempt of this
    /// plan (a retry that overlapped this one, which timed out) recorded the run first, its
    /// record, locations and event stand.
    async fn apply(&self, planned: Planned) -> Result<PlanResponse> {
        let run = &planned.record;
        let run_id = run.run_id.as_str();
        // The waves first: a retry that finds the run finds its waves too.
        self.store.put_waves(run_id, &planned.waves).await?;
        if !self.store.create_run(run).await? {
            let existing = self.store.get_run(run_id).await?;
            info!(
                run_id,
                "run planned meanwhile by another attempt; answering from its record"
            );
            return self.answer_from(&existing).await;
        }

        let with_waves: Vec<(Location, u32)> = planned
            .locations
            .iter()
            .cloned()
            .zip(planned.location_waves.iter().copied())
            .collect();
        self.store.put_locations(run_id, &with_waves).await?;
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
            "waves": planned.waves.iter().map(|w| json!({"name": w.name, "locations": w.location_count})).collect::<Vec<_>>(),
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
        let recorded = self.store.list_waves(run_id).await?;
        let with_waves: Vec<(Location, u32)> = match recorded.is_empty() {
            true => locations(&existing.accounts, &existing.input.regions)
                .into_iter()
                .map(|l| (l, 0))
                .collect(),
            false => waves::locations_of(&recorded),
        };
        let planned: Vec<Location> = with_waves.iter().map(|(l, _)| l.clone()).collect();
        let source = self.store.resume_source(run_id, &existing.input, &planned);
        let resumed = source.await?.map_err(|e| Error::Record(e.to_string()))?;
        let kept = resume::locations(planned, resumed.as_ref());
        let with_waves: Vec<(Location, u32)> = with_waves
            .into_iter()
            .filter(|(l, _)| kept.contains(l))
            .collect();
        self.store.put_locations(run_id, &with_waves).await?;
        let locs: Vec<Location> = with_waves.into_iter().map(|(l, _)| l).collect();
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
mod tests;
