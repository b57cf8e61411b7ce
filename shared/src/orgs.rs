//! The Organizations adapter: turns the run's `accounts` entries (account IDs, OU IDs, root
//! IDs) into the list of accounts to target. OUs include their child OUs, SUSPENDED accounts
//! are skipped and reported, excludes are applied, duplicates removed (first seen wins).

use crate::error::{from_sdk, Error, Result};
use crate::input::{AccountTarget, FieldError};
use crate::store::SkippedAccount;
use aws_sdk_organizations::types::ChildType;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The resolved targets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// Accounts to target, in the order they were first named.
    pub accounts: Vec<String>,
    /// Accounts left out, and why.
    pub skipped: Vec<SkippedAccount>,
}

/// Resolves targets. Unknown OUs or roots come back as field errors (bad input), AWS
/// failures as errors.
pub async fn resolve(
    client: &aws_sdk_organizations::Client,
    targets: &[AccountTarget],
    exclude: &[String],
) -> Result<std::result::Result<Resolved, Vec<FieldError>>> {
    let mut out = Resolved::default();
    let mut bad = Vec::new();
    let add = |out: &mut Resolved, id: String, status: Option<&str>| {
        if out.accounts.contains(&id) || out.skipped.iter().any(|s| s.account == id) {
            return;
        }
        if exclude.contains(&id) {
            out.skipped.push(SkippedAccount {
                account: id,
                reason: "excluded".into(),
            });
        } else if status == Some("SUSPENDED") {
            out.skipped.push(SkippedAccount {
                account: id,
                reason: "SUSPENDED".into(),
            });
        } else {
            out.accounts.push(id);
        }
    };
    for (i, t) in targets.iter().enumerate() {
        match t {
            AccountTarget::Account(id) => add(&mut out, id.clone(), None),
            AccountTarget::OrganizationalUnit(parent) | AccountTarget::Root(parent) => {
                match accounts_below(client, parent).await {
                    Ok(found) => {
                        for (id, status) in found {
                            add(&mut out, id, Some(&status));
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
    if bad.is_empty() && out.accounts.is_empty() {
        bad.push(FieldError {
            field: "accounts".into(),
            rule: "no active account is left after OU resolution, suspended accounts and excludeAccounts".into(),
        });
    }
    Ok(if bad.is_empty() { Ok(out) } else { Err(bad) })
}

enum ParentError {
    NotFound(String),
    Other(Error),
}

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
                if let Some(id) = a.id {
                    let status = a.status.map(|s| s.as_str().to_string()).unwrap_or_default();
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
