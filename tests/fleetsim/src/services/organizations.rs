//! AWS Organizations (awsJson1_1, target prefix `AWSOrganizationsV20161128`): ListRoots,
//! ListChildren, ListAccountsForParent, ListOrganizationalUnitsForParent, DescribeAccount.
//! Only callers acting in the management account may use it.

use serde_json::{json, Value};

use super::{get_str, max_results, next_token, put_token};
use crate::fleet::{AccountFile, OrgFile, OuFile};
use crate::protocol::{epoch_seconds, paginate, ApiError, CallContext};
use crate::state::AppState;

/// Operations served; others are forwarded.
pub const OPERATIONS: &[&str] = &[
    "ListRoots",
    "ListChildren",
    "ListAccountsForParent",
    "ListOrganizationalUnitsForParent",
    "DescribeAccount",
];

const TOKEN_ERR: &str = "InvalidInputException";

/// Dispatches one operation.
pub fn handle(
    state: &AppState,
    ctx: &CallContext,
    op: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let fleet = &state.fleet;
    let Some(org) = &fleet.organization else {
        return Err(ApiError::bad(
            "AWSOrganizationsNotInUseException",
            "Your account is not a member of an organization.",
        ));
    };
    if ctx.account != fleet.management_account {
        return Err(ApiError::bad(
            "AccessDeniedException",
            "You don't have permissions to access this resource.",
        ));
    }

    let page = max_results(body, 1, 20, "InvalidInputException")?.unwrap_or(20);
    let offset = next_token(body, op, TOKEN_ERR)?;

    let (key, items) = match op {
        "ListRoots" => ("Roots", vec![root_json(state, org)]),
        "ListChildren" => ("Children", children(state, org, body)?),
        "ListAccountsForParent" => {
            let parent = parent_id(org, body)?;
            (
                "Accounts",
                accounts_under(state, org, parent)
                    .map(|a| account_json(state, org, a))
                    .collect(),
            )
        }
        "ListOrganizationalUnitsForParent" => {
            let parent = parent_id(org, body)?;
            (
                "OrganizationalUnits",
                org.ous
                    .iter()
                    .filter(|o| o.parent == parent)
                    .map(|o| ou_json(state, org, o))
                    .collect(),
            )
        }
        "DescribeAccount" => return describe_account(state, org, body),
        other => {
            return Err(ApiError::bad(
                "InvalidInputException",
                format!("fleetsim does not serve {other}"),
            ))
        }
    };

    let (items, next) = paginate(&items, offset, page);
    let mut out = json!({ key: items });
    put_token(&mut out, op, next);
    Ok(out)
}

fn root_json(state: &AppState, org: &OrgFile) -> Value {
    json!({
        "Id": org.root_id,
        "Arn": format!("arn:aws:organizations::{}:root/{}/{}", state.fleet.management_account, org.id, org.root_id),
        "Name": "Root",
        "PolicyTypes": [],
    })
}

fn ou_json(state: &AppState, org: &OrgFile, o: &OuFile) -> Value {
    json!({
        "Id": o.id,
        "Arn": format!("arn:aws:organizations::{}:ou/{}/{}", state.fleet.management_account, org.id, o.id),
        "Name": o.name,
    })
}

/// ListChildren: the accounts or the OUs directly under a parent.
fn children(state: &AppState, org: &OrgFile, body: &Value) -> Result<Vec<Value>, ApiError> {
    let parent = parent_id(org, body)?;
    let kind = get_str(body, "ChildType").unwrap_or_default();
    match kind {
        "ACCOUNT" => Ok(accounts_under(state, org, parent)
            .map(|a| json!({"Id": a.id, "Type": "ACCOUNT"}))
            .collect()),
        "ORGANIZATIONAL_UNIT" => Ok(org
            .ous
            .iter()
            .filter(|o| o.parent == parent)
            .map(|o| json!({"Id": o.id, "Type": "ORGANIZATIONAL_UNIT"}))
            .collect()),
        _ => Err(ApiError::bad(
            "InvalidInputException",
            "ChildType must be ACCOUNT or ORGANIZATIONAL_UNIT",
        )),
    }
}

fn describe_account(state: &AppState, org: &OrgFile, body: &Value) -> Result<Value, ApiError> {
    let id = get_str(body, "AccountId").unwrap_or_default();
    let acct = state.fleet.accounts.get(id).ok_or_else(|| {
        ApiError::bad(
            "AccountNotFoundException",
            "You specified an account that doesn't exist.",
        )
    })?;
    Ok(json!({ "Account": account_json(state, org, acct) }))
}

fn parent_id<'a>(org: &OrgFile, body: &'a Value) -> Result<&'a str, ApiError> {
    let id = get_str(body, "ParentId").unwrap_or_default();
    if id == org.root_id || org.ous.iter().any(|o| o.id == id) {
        Ok(id)
    } else {
        Err(ApiError::bad(
            "ParentNotFoundException",
            "We can't find a root or OU with the ParentId that you specified.",
        ))
    }
}

fn accounts_under<'a>(
    state: &'a AppState,
    org: &'a OrgFile,
    parent: &'a str,
) -> impl Iterator<Item = &'a AccountFile> + 'a {
    state.fleet.accounts.values().filter(move |a| {
        !a.outside_organization && a.parent.as_deref().unwrap_or(&org.root_id) == parent
    })
}

fn account_json(state: &AppState, org: &OrgFile, a: &AccountFile) -> Value {
    let mgmt = &state.fleet.management_account;
    json!({
        "Id": a.id,
        "Arn": format!("arn:aws:organizations::{mgmt}:account/{}/{}", org.id, a.id),
        "Email": a.email.clone().unwrap_or_default(),
        "Name": a.name,
        "Status": a.status,
        "State": a.status,
        "JoinedMethod": if &a.id == mgmt { "CREATED" } else { "INVITED" },
        "JoinedTimestamp": epoch_seconds(1_600_000_000_000),
    })
}
