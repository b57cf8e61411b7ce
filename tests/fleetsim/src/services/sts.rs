//! STS (Query protocol, XML responses): AssumeRole into fleet accounts that have the role,
//! GetCallerIdentity. Issued access keys map back to (account, role, session) so later calls
//! signed with them act in that account.

use std::collections::HashMap;

use serde::Serialize;

use crate::clock::wall_ms;
use crate::protocol::{iso8601, xml_escape, ApiError, CallContext};
use crate::state::{lock, AppState};

/// Operations served; other STS actions are forwarded.
pub const OPERATIONS: &[&str] = &["AssumeRole", "GetCallerIdentity"];

/// One set of issued credentials.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// Issued access key id.
    pub access_key_id: String,
    /// Account the role is in.
    pub account: String,
    /// Role name.
    pub role: String,
    /// RoleSessionName.
    pub session_name: String,
    /// Requested DurationSeconds (None = default).
    pub duration_seconds: Option<i64>,
    /// Wall-clock expiry (ISO-8601).
    pub expiration: String,
    /// Account of the caller.
    pub caller_account: String,
    /// Wall-clock issue time (ISO-8601).
    pub issued_at: String,
}

/// Credentials issued so far, and the AssumeRole log for the oracle.
#[derive(Debug, Default)]
pub struct Sessions {
    by_key: HashMap<String, Session>,
    /// Successful and failed AssumeRole calls since the last reset.
    pub log: Vec<serde_json::Value>,
    counter: u64,
}

impl Sessions {
    /// The session an access key was issued for.
    pub fn get(&self, access_key: &str) -> Option<&Session> {
        self.by_key.get(access_key)
    }
}

/// Account a call signed with `access_key` acts in.
pub fn account_for(state: &AppState, access_key: &str) -> String {
    lock(&state.sessions)
        .get(access_key)
        .map(|s| s.account.clone())
        .unwrap_or_else(|| state.fleet.management_account.clone())
}

fn result_xml(action: &str, inner: &str) -> String {
    format!(
        "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <{action}Result>\n{inner}  </{action}Result>\n  <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  </ResponseMetadata>\n</{action}Response>\n",
        uuid::Uuid::new_v4()
    )
}

fn random_upper(n: usize) -> String {
    let raw = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    raw.chars().cycle().take(n).collect()
}

/// Handles one STS action; returns the XML body.
pub fn handle(
    state: &AppState,
    ctx: &CallContext,
    action: &str,
    params: &HashMap<String, String>,
) -> Result<String, ApiError> {
    match action {
        "AssumeRole" => assume_role(state, ctx, params),
        "GetCallerIdentity" => Ok(get_caller_identity(state, ctx)),
        other => Err(ApiError::bad(
            "InvalidAction",
            format!("fleetsim does not serve {other}"),
        )),
    }
}

fn caller_arn(state: &AppState, ctx: &CallContext) -> (String, String) {
    match lock(&state.sessions).get(&ctx.access_key) {
        Some(s) => (
            format!("AROAFLEETSIM{}:{}", s.account, s.session_name),
            format!(
                "arn:aws:sts::{}:assumed-role/{}/{}",
                s.account, s.role, s.session_name
            ),
        ),
        None => match &ctx.caller_arn {
            Some(arn) => ("AROAFLEETSIMCALLER".to_string(), arn.clone()),
            None => (
                "AIDAFLEETSIMCALLER".to_string(),
                format!("arn:aws:iam::{}:user/fleetsim-caller", ctx.account),
            ),
        },
    }
}

fn get_caller_identity(state: &AppState, ctx: &CallContext) -> String {
    let (user_id, arn) = caller_arn(state, ctx);
    result_xml(
        "GetCallerIdentity",
        &format!(
            "    <UserId>{}</UserId>\n    <Account>{}</Account>\n    <Arn>{}</Arn>\n",
            xml_escape(&user_id),
            ctx.account,
            xml_escape(&arn)
        ),
    )
}

fn session_name_ok(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

/// AssumeRole: the role must exist in an ACTIVE account of the fleet (the fleet file's
/// `roles`); every attempt, refused or not, is logged for the oracle.
fn assume_role(
    state: &AppState,
    ctx: &CallContext,
    params: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let (role_arn, session_name, duration) = assume_role_params(params)?;
    // Before the sessions lock: naming the caller reads the sessions too.
    let (_, caller) = caller_arn(state, ctx);

    let mut sessions = lock(&state.sessions);
    let mut log_entry = serde_json::json!({
        "role_arn": role_arn,
        "session_name": session_name,
        "duration_seconds": duration,
        "caller_account": ctx.account,
        "at": iso8601(wall_ms()),
    });
    let Some((account, role)) = assumable(state, &role_arn) else {
        log_entry["result"] = serde_json::json!("AccessDenied");
        sessions.log.push(log_entry);
        return Err(ApiError::with_status(
            403,
            "AccessDenied",
            format!("User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"),
        ));
    };

    sessions.counter += 1;
    let access_key_id = format!("ASIAFS{:014}", sessions.counter);
    let lifetime = duration.unwrap_or(3600).min(3600);
    let expiration = iso8601(wall_ms() + lifetime * 1000);
    let session = Session {
        access_key_id: access_key_id.clone(),
        account: account.clone(),
        role: role.clone(),
        session_name: session_name.clone(),
        duration_seconds: duration,
        expiration: expiration.clone(),
        caller_account: ctx.account.clone(),
        issued_at: iso8601(wall_ms()),
    };
    sessions.by_key.insert(access_key_id.clone(), session);

    log_entry["result"] = serde_json::json!("Success");
    log_entry["account"] = serde_json::json!(account);
    log_entry["role"] = serde_json::json!(role);
    log_entry["access_key_id"] = serde_json::json!(access_key_id);
    sessions.log.push(log_entry);

    let inner = format!(
        "    <AssumedRoleUser>\n      <AssumedRoleId>AROAFLEETSIM{account}:{sn}</AssumedRoleId>\n      <Arn>arn:aws:sts::{account}:assumed-role/{role}/{sn}</Arn>\n    </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>{access_key_id}</AccessKeyId>\n      <SecretAccessKey>{secret}</SecretAccessKey>\n      <SessionToken>FQoGZXIvYXdzEFleetsim{token}</SessionToken>\n      <Expiration>{expiration}</Expiration>\n    </Credentials>\n    <PackedPolicySize>0</PackedPolicySize>\n",
        sn = xml_escape(&session_name),
        role = xml_escape(&role),
        secret = random_upper(40),
        token = random_upper(64),
    );
    Ok(result_xml("AssumeRole", &inner))
}

/// RoleArn, RoleSessionName and DurationSeconds, validated as STS does: a session name of 2
/// to 64 characters of `[\w+=,.@-]`, a duration of 900 to 43,200 seconds when given.
fn assume_role_params(
    params: &HashMap<String, String>,
) -> Result<(String, String, Option<i64>), ApiError> {
    let role_arn = params.get("RoleArn").cloned().unwrap_or_default();
    let session_name = params.get("RoleSessionName").cloned().unwrap_or_default();
    if !session_name_ok(&session_name) {
        return Err(ApiError::bad(
            "ValidationError",
            format!("1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* and length 2..64"),
        ));
    }

    let duration =
        match params.get("DurationSeconds") {
            None => None,
            Some(d) => Some(d.parse::<i64>().map_err(|_| {
                ApiError::bad("ValidationError", "DurationSeconds must be an integer")
            })?),
        };
    if let Some(d) = duration {
        if !(900..=43_200).contains(&d) {
            return Err(ApiError::bad(
                "ValidationError",
                format!("1 validation error detected: Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200"),
            ));
        }
    }
    Ok((role_arn, session_name, duration))
}

/// The (account, role name) of `arn:aws:iam::ACCOUNT:role/[PATH/]NAME`, when the fleet has
/// that role in that account and the account is ACTIVE.
fn assumable(state: &AppState, role_arn: &str) -> Option<(String, String)> {
    let (acct, name) = role_arn
        .strip_prefix("arn:aws:iam::")
        .and_then(|r| r.split_once(":role/"))?;
    let role = name.rsplit('/').next().unwrap_or(name);

    state
        .fleet
        .accounts
        .get(acct)
        .filter(|a| a.status == "ACTIVE" && a.roles.iter().any(|r| r == role))
        .map(|_| (acct.to_string(), role.to_string()))
}
