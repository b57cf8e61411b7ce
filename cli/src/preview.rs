//! `preview`: what a run would touch, found read-only. It writes nothing and sends no
//! command. The steps are the run's own, through the library: the input's validation,
//! OU resolution (`orgs::resolve`: which accounts are skipped and why), the plan's decision
//! (`plan::decide`: the locations, the location window and tolerated failures), then per
//! location the expansion's reads (AssumeRole, ListGroupResources,
//! DescribeInstanceInformation) and its pure classification (`expand::classify`,
//! `expand::expansion`: online, offline, unmanaged, the window and tolerated errors).
//!
//! IAM the caller needs: in the orchestrator's account, organizations:ListRoots,
//! ListChildren, ListAccountsForParent and DescribeAccount (OU and root targets); in each
//! target account, sts:AssumeRole on the execution role, whose trust policy must allow the
//! caller (see the README's "Operating fleetpatch").

use crate::render;
use crate::CliError;
use aws_config::SdkConfig;
use comfy_table::Table;
use fleetpatch::clients::{AssumeError, AssumeRoleFactory, ClientFactory};
use fleetpatch::expand::{classify, expansion};
use fleetpatch::fleet::{self, GroupError};
use fleetpatch::input::RunInput;
use fleetpatch::model::{
    Expansion, InstanceState, Location, LocationOutcome, RunRecord, SkippedAccount,
};
use fleetpatch::{orgs, plan};
use serde::Serialize;

/// What the run would do in one location.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationPreview {
    pub location: String,
    /// `Patch` when instances would be sent a command; otherwise the outcome the location
    /// would end with (`AccessDenied`, `GroupNotFound`, `NoTargets`, `Error`).
    pub would: String,
    pub targeted: u64,
    /// Online and managed: the instances that would be sent a command.
    pub online: u64,
    pub offline: u64,
    pub unmanaged: u64,
    /// Instances in flight at most.
    pub window: u64,
    /// Failed instances tolerated before the location stops (None: never stops).
    pub tolerated: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The whole preview.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub operation: String,
    pub resource_group: String,
    pub accounts: Vec<String>,
    pub skipped_accounts: Vec<SkippedAccount>,
    pub locations: u64,
    /// Locations run at once.
    pub location_window: u64,
    /// Failed locations tolerated before the run stops (None: never stops).
    pub locations_tolerated: Option<u64>,
    pub per_location: Vec<LocationPreview>,
}

fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Every instance ID of a group, page after page (expand reads the same pages, one per
/// round); sorted, each once.
async fn group_instances(
    groups: &aws_sdk_resourcegroups::Client,
    group: &str,
) -> Result<Vec<String>, GroupError> {
    let (mut ids, mut token) = fleet::list_group_page(groups, group, None).await?;
    while let Some(t) = token {
        let (more, next) = fleet::list_group_page(groups, group, Some(&t)).await?;
        ids.extend(more);
        token = next;
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The expansion's reads in one location, classified as expand classifies them; or the
/// outcome the location would end with, and why.
async fn expand_read_only(
    factory: &AssumeRoleFactory,
    run: &RunRecord,
    loc: &Location,
) -> Result<Expansion, (&'static str, String)> {
    let role = &run.input.execution_role_name;
    let clients = factory
        .clients(loc, role, "preview")
        .await
        .map_err(|e| match e {
            AssumeError::AccessDenied { role_arn, message } => (
                LocationOutcome::AccessDenied.as_str(),
                format!("cannot assume {role_arn}: {message}"),
            ),
            AssumeError::Other(e) => ("Error", e.to_string()),
        })?;

    let ids = group_instances(&clients.groups, &run.input.resource_group)
        .await
        .map_err(|e| match e {
            GroupError::NotFound(g) => (
                LocationOutcome::GroupNotFound.as_str(),
                format!("resource group {g} does not exist in {loc}"),
            ),
            e => ("Error", e.to_string()),
        })?;
    let managed = fleet::describe_managed(&clients.ssm, &ids)
        .await
        .map_err(|e| ("Error", e.to_string()))?;

    Ok(expansion(run, &classify(&ids, &managed)))
}

/// One location, read-only.
async fn location(factory: &AssumeRoleFactory, run: &RunRecord, loc: &Location) -> LocationPreview {
    let mut p = LocationPreview {
        location: loc.to_string(),
        would: String::new(),
        targeted: 0,
        online: 0,
        offline: 0,
        unmanaged: 0,
        window: 0,
        tolerated: None,
        reason: None,
    };
    match expand_read_only(factory, run, loc).await {
        Err((outcome, why)) => {
            p.would = outcome.to_string();
            p.reason = Some(why);
        }
        Ok(found) => {
            let c = |s: InstanceState| found.counts.get(&s).copied().unwrap_or(0);
            p.targeted = found.targeted;
            p.online = found.dispatchable;
            p.offline = c(InstanceState::Offline);
            p.unmanaged = c(InstanceState::Unmanaged);
            p.window = found.window;
            p.tolerated = found.tolerated;
            p.would = match found.dispatchable {
                0 => LocationOutcome::NoTargets.as_str().to_string(),
                _ => "Patch".to_string(),
            };
        }
    }
    p
}

/// Previews a validated input: resolve, plan, then read each location.
pub async fn preview(sdk: &SdkConfig, input: RunInput) -> Result<Preview, CliError> {
    let organizations = aws_sdk_organizations::Client::new(sdk);
    let resolved = orgs::resolve(&organizations, &input.accounts, &input.exclude_accounts)
        .await
        .map_err(|e| CliError::Failed(format!("cannot resolve the accounts: {e}")))?
        .map_err(|errors| CliError::Usage(fleetpatch::input::describe(&errors)))?;
    let planned = plan::decide("preview", input, resolved, "preview".into(), 0, None)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let run = planned.record;

    let region = sdk.region().map_or("us-east-1", |r| r.as_ref());
    let factory = AssumeRoleFactory::new(sdk, partition_of(region));
    let bar = crate::watch::progress_bar(planned.locations.len() as u64, "reading locations");
    let mut per_location = Vec::new();
    for loc in &planned.locations {
        bar.set_message(loc.to_string());
        per_location.push(location(&factory, &run, loc).await);
        bar.inc(1);
    }
    bar.finish_and_clear();

    Ok(Preview {
        operation: run.input.operation.as_str().to_string(),
        resource_group: run.input.resource_group.clone(),
        accounts: run.accounts.clone(),
        skipped_accounts: run.skipped_accounts.clone(),
        locations: run.location_count,
        location_window: run.location_window,
        locations_tolerated: run.locations_tolerated,
        per_location,
    })
}

fn tolerated(t: Option<u64>) -> String {
    t.map_or("no limit".into(), |n| n.to_string())
}

/// The preview as a table: the run's shape, then one row per location.
pub fn table(p: &Preview) -> String {
    let mut out = format!(
        "Preview: {} on group {}: {} account(s), {} location(s), {} at once, failed locations tolerated: {}\n",
        p.operation,
        p.resource_group,
        p.accounts.len(),
        p.locations,
        p.location_window,
        tolerated(p.locations_tolerated)
    );
    for s in &p.skipped_accounts {
        out.push_str(&format!("Skipped account {}: {}\n", s.account, s.reason));
    }

    let mut t: Table = render::table(&[
        "LOCATION",
        "WOULD",
        "TARGETED",
        "ONLINE",
        "OFFLINE",
        "UNMANAGED",
        "WINDOW",
        "TOLERATED",
        "WHY",
    ]);
    for l in &p.per_location {
        t.add_row(vec![
            l.location.clone(),
            l.would.clone(),
            l.targeted.to_string(),
            l.online.to_string(),
            l.offline.to_string(),
            l.unmanaged.to_string(),
            l.window.to_string(),
            tolerated(l.tolerated),
            render::cell_text(l.reason.as_deref().unwrap_or_default()),
        ]);
    }
    render::right_align(&mut t, 2..8);
    let online: u64 = p.per_location.iter().map(|l| l.online).sum();
    format!("{out}{t}\nInstances that would be sent a command: {online}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::check;

    fn sample() -> Preview {
        let ready = LocationPreview {
            location: "111111111111/us-east-1".into(),
            would: "Patch".into(),
            targeted: 10,
            online: 7,
            offline: 2,
            unmanaged: 1,
            window: 2,
            tolerated: Some(1),
            reason: None,
        };
        let denied = LocationPreview {
            location: "222222222222/us-east-1".into(),
            would: "AccessDenied".into(),
            targeted: 0,
            online: 0,
            offline: 0,
            unmanaged: 0,
            window: 0,
            tolerated: None,
            reason: Some("cannot assume arn:aws:iam::222222222222:role/R: AccessDenied".into()),
        };
        Preview {
            operation: "Install".into(),
            resource_group: "g".into(),
            accounts: vec!["111111111111".into(), "222222222222".into()],
            skipped_accounts: vec![SkippedAccount {
                account: "999999999999".into(),
                reason: "SUSPENDED".into(),
            }],
            locations: 2,
            location_window: 2,
            locations_tolerated: None,
            per_location: vec![ready, denied],
        }
    }

    #[test]
    fn preview_shapes() {
        let p = sample();
        let t = table(&p);
        assert!(t.contains("Skipped account 999999999999: SUSPENDED"));
        assert!(t.contains("Instances that would be sent a command: 7"));
        check("preview.table.txt", &t);
        check("preview.json", &serde_json::to_string_pretty(&p).unwrap());
    }

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(partition_of("eu-west-1"), "aws");
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("us-gov-west-1"), "aws-us-gov");
    }
}
