//! The Organizations adapter: turns the run's `accounts` entries (account IDs, OU IDs, root
//! IDs) into the list of accounts to target. OUs include their child OUs; an account that is
//! not ACTIVE (SUSPENDED, PENDING_CLOSURE, ...) is skipped and reported, whether an OU holds
//! it or the input names it (DescribeAccount); excludes are applied, duplicates removed
//! (first seen wins), so that each account appears once, targeted or skipped.
//!
//! When the organization cannot be read from the orchestrator's account (no organization, or
//! not its management or delegated administrator account), accounts named by ID are targeted
//! as named: their execution role decides.

use crate::error::{from_sdk, Error, Result};
use crate::input::{AccountTarget, FieldError};
use crate::model::SkippedAccount;
use aws_sdk_organizations::types::{Account, ChildType};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tracing::warn;

/// The accounts a run targets, and those it leaves out (excluded, or not ACTIVE).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// In the order they were first named.
    pub accounts: Vec<String>,
    pub skipped: Vec<SkippedAccount>,
}

/// The account status that may be patched; any other known status is skipped.
pub const ACTIVE: &str = "ACTIVE";

/// An account's status: the newer `State` when given, else `Status` (empty when neither).
fn status_of(a: &Account) -> String {
    a.state
        .as_ref()
        .map(|s| s.as_str().to_string())
        .or_else(|| a.status.as_ref().map(|s| s.as_str().to_string()))
        .unwrap_or_default()
}

/// What DescribeAccount said of an account named by ID.
enum Described {
    Status(String),
    /// Not in this organization (or no organization to ask): targeted as named; the
    /// execution role decides.
    Unknown,
    /// The organization cannot be read from here (no organization, or not the management
    /// or delegated administrator account): do not ask for the other accounts either.
    Unreadable,
}

/// DescribeAccount for an account named by ID.
async fn describe(client: &aws_sdk_organizations::Client, id: &str) -> Result<Described> {
    match client.describe_account().account_id(id).send().await {
        Ok(out) => Ok(out
            .account
            .map(|a| Described::Status(status_of(&a)))
            .unwrap_or(Described::Unknown)),
        Err(e) => {
            let se = e.as_service_error();
            if se.is_some_and(|se| se.is_account_not_found_exception()) {
                Ok(Described::Unknown)
            } else if se.is_some_and(|se| {
                se.is_aws_organizations_not_in_use_exception() || se.is_access_denied_exception()
            }) {
                warn!(account = id, error = %e.message().unwrap_or_default(), "the organization cannot be read; accounts named by ID are targeted without their status");
                Ok(Described::Unreadable)
            } else {
                Err(from_sdk("organizations:DescribeAccount", e))
            }
        }
    }
}

/// Resolves targets. Unknown OUs or roots come back as field errors (bad input), AWS
/// failures as errors.
pub async fn resolve(
    client: &aws_sdk_organizations::Client,
    targets: &[AccountTarget],
    exclude: &[String],
) -> Result<std::result::Result<Resolved, Vec<FieldError>>> {
    let mut found = Found {
        resolved: Resolved::default(),
        exclude,
        readable: true,
    };
    let mut bad = Vec::new();

    for (i, t) in targets.iter().enumerate() {
        match t {
            AccountTarget::Account(id) => {
                let status = found.status_of_named(client, id).await?;
                found.add(id.clone(), &status);
            }
            AccountTarget::OrganizationalUnit(parent) | AccountTarget::Root(parent) => {
                match accounts_below(client, parent).await {
                    Ok(accounts) => {
                        for (id, status) in accounts {
                            found.add(id, &status);
                        }
                    }
                    Err(ParentError::NotFound(msg)) => bad.push(FieldError {
                        field: format!("accounts[{i}]"),
                        rule: format!("{parent} is not an OU or root of this organization ({msg})"),
                    }),
                    Err(ParentError::Other(e)) => return Err(e),
                }
            }
        }
    }

    if bad.is_empty() && found.resolved.accounts.is_empty() {
        bad.push(FieldError {
            field: "accounts".into(),
            rule: "no active account is left after OU resolution, accounts that are not ACTIVE and excludeAccounts".into(),
        });
    }
    Ok(if bad.is_empty() {
        Ok(found.resolved)
    } else {
        Err(bad)
    })
}

/// The accounts resolved so far. Each account is listed once, in `accounts` or in `skipped`,
/// where it was first seen.
struct Found<'a> {
    resolved: Resolved,
    exclude: &'a [String],
    /// False once DescribeAccount has shown the organization cannot be read from here.
    readable: bool,
}

impl Found<'_> {
    fn seen(&self, id: &str) -> bool {
        self.resolved.accounts.iter().any(|a| a == id)
            || self.resolved.skipped.iter().any(|s| s.account == id)
    }

    /// Adds an account unless already seen: skipped when excluded or when its status is known
    /// and not ACTIVE, targeted otherwise.
    fn add(&mut self, id: String, status: &str) {
        if self.seen(&id) {
            return;
        }

        if self.exclude.contains(&id) {
            self.resolved.skipped.push(SkippedAccount {
                account: id,
                reason: "excluded".into(),
            });
        } else if !status.is_empty() && status != ACTIVE {
            self.resolved.skipped.push(SkippedAccount {
                account: id,
                reason: status.to_string(),
            });
        } else {
            self.resolved.accounts.push(id);
        }
    }

    /// The status of an account the input names by ID, empty when unknown. DescribeAccount is
    /// not called for an account already seen or excluded, nor once the organization has
    /// proved unreadable.
    async fn status_of_named(
        &mut self,
        client: &aws_sdk_organizations::Client,
        id: &str,
    ) -> Result<String> {
        if !self.readable || self.seen(id) || self.exclude.iter().any(|e| e == id) {
            return Ok(String::new());
        }

        Ok(match describe(client, id).await? {
            Described::Status(s) => s,
            Described::Unknown => String::new(),
            Described::Unreadable => {
                self.readable = false;
                String::new()
            }
        })
    }
}

enum ParentError {
    /// The ID names no OU or root of this organization (or is malformed): bad input.
    NotFound(String),
    Other(Error),
}

/// Reads a listing error: ParentNotFound and InvalidInput mean the input named no parent
/// (`modelled_not_found` when the SDK's modelled error already says so).
fn parent_error<E, R>(
    op: &str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, R>,
    modelled_not_found: bool,
) -> ParentError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    if modelled_not_found
        || matches!(
            e.code(),
            Some("ParentNotFoundException" | "InvalidInputException")
        )
    {
        ParentError::NotFound(e.message().unwrap_or("not found").to_string())
    } else {
        ParentError::Other(from_sdk(op, e))
    }
}

/// Every account below `parent`, child OUs included, with its status.
async fn accounts_below(
    client: &aws_sdk_organizations::Client,
    parent: &str,
) -> std::result::Result<Vec<(String, String)>, ParentError> {
    let mut found = Vec::new();
    let mut queue = vec![parent.to_string()];

    while let Some(p) = queue.pop() {
        let mut pages = client
            .list_accounts_for_parent()
            .parent_id(&p)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                let nf = e.as_service_error().is_some_and(|se| {
                    se.is_parent_not_found_exception() || se.is_invalid_input_exception()
                });
                parent_error("organizations:ListAccountsForParent", e, nf)
            })?;
            for a in page.accounts.unwrap_or_default() {
                let status = status_of(&a);
                if let Some(id) = a.id {
                    found.push((id, status));
                }
            }
        }

        let mut pages = client
            .list_children()
            .parent_id(&p)
            .child_type(ChildType::OrganizationalUnit)
            .into_paginator()
            .send();
        let mut children = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                let nf = e.as_service_error().is_some_and(|se| {
                    se.is_parent_not_found_exception() || se.is_invalid_input_exception()
                });
                parent_error("organizations:ListChildren", e, nf)
            })?;
            children.extend(
                page.children
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.id),
            );
        }

        // Depth-first, children in listed order.
        children.reverse();
        queue.extend(children);
    }

    Ok(found)
}
