//! SSM (awsJson1_1, target prefix `AmazonSSM`): SendCommand, ListCommands,
//! ListCommandInvocations, GetCommandInvocation, CancelCommand, DescribeInstanceInformation
//! DescribeInstancePatchStates, and GetParametersByPath over AWS's public list of Regions
//! (`/aws/service/global-infrastructure/...`), validated and shaped as the service model says.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Map, Value};

use super::{get_str, get_str_list, max_results, next_token, put_token};
use crate::fleet::{AgentState, InstanceFile};
use crate::protocol::{epoch_seconds, iso8601, paginate, parse_iso8601, ApiError, CallContext};
use crate::sim::{command_view, view, Command, InvocationView, SendRequest, Sim};
use crate::state::AppState;

/// Operations this module serves; anything else under `AmazonSSM.` is forwarded.
pub const OPERATIONS: &[&str] = &[
    "SendCommand",
    "DescribeDocument",
    "ListCommands",
    "ListCommandInvocations",
    "GetCommandInvocation",
    "CancelCommand",
    "DescribeInstanceInformation",
    "DescribeInstancePatchStates",
    "GetParametersByPath",
];

/// The documents the simulator runs: AWS-RunPatchBaseline, and the hooks document
/// ([`crate::hooks`]) that wraps it.
pub use crate::hooks::{DOCUMENT, HOOKS_DOCUMENT};

const TOKEN_ERR: &str = "InvalidNextToken";

/// Dispatches one SSM operation.
pub fn handle(
    state: &AppState,
    ctx: &CallContext,
    op: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    match op {
        "SendCommand" => send_command(state, ctx, body),
        "DescribeDocument" => describe_document(state, ctx, body),
        "ListCommands" => list_commands(state, ctx, body),
        "ListCommandInvocations" => list_command_invocations(state, ctx, body),
        "GetCommandInvocation" => get_command_invocation(state, ctx, body),
        "CancelCommand" => cancel_command(state, ctx, body),
        "DescribeInstanceInformation" => describe_instance_information(state, ctx, body),
        "DescribeInstancePatchStates" => describe_instance_patch_states(state, ctx, body),
        "GetParametersByPath" => get_parameters_by_path(state, ctx, body),
        other => Err(ApiError::bad(
            "UnknownOperationException",
            format!("fleetsim does not serve {other}"),
        )),
    }
}

fn rate_pattern_ok(v: &str, allow_zero: bool) -> bool {
    let (digits, pct) = match v.strip_suffix('%') {
        Some(d) => (d, true),
        None => (v, false),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return false;
    }
    let Ok(n) = digits.parse::<u64>() else {
        return false;
    };
    if pct {
        n <= 100 && (allow_zero || n > 0)
    } else {
        allow_zero || n > 0
    }
}

fn parse_parameters(body: &Value) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(map) = body.get("Parameters").and_then(Value::as_object) else {
        return Ok(out);
    };
    for (k, v) in map {
        let values = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .ok_or_else(|| {
                ApiError::bad("InvalidParameters", format!("Parameter {k} must be a list"))
            })?;
        out.insert(k.clone(), values);
    }
    Ok(out)
}

/// The parameters each document defines (AWS-RunPatchBaselineWithHooks has no
/// InstallOverrideList nor BaselineOverride).
fn known_parameters(document: &str) -> &'static [&'static str] {
    if document == HOOKS_DOCUMENT {
        &[
            "Operation",
            "SnapshotId",
            "RebootOption",
            "PreInstallHookDocName",
            "PostInstallHookDocName",
            "OnExitHookDocName",
        ]
    } else {
        &[
            "Operation",
            "SnapshotId",
            "InstallOverrideList",
            "RebootOption",
            "BaselineOverride",
            "AssociationId",
        ]
    }
}

/// A hook parameter: a document name (3 to 128 of `a-zA-Z0-9_-.`) or a document ARN.
fn hook_value_ok(v: &str) -> bool {
    let name_ok = |n: &str| {
        (3..=128).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    match v.strip_prefix("arn:") {
        Some(rest) => rest
            .rsplit_once(":document/")
            .is_some_and(|(_, name)| name_ok(name)),
        None => name_ok(v),
    }
}

fn validate_patch_parameters(
    document: &str,
    params: &BTreeMap<String, Vec<String>>,
) -> Result<(), ApiError> {
    for (k, v) in params {
        if !known_parameters(document).contains(&k.as_str()) {
            return Err(ApiError::bad(
                "InvalidParameters",
                format!("Parameter \"{k}\" is not defined in the document {document}."),
            ));
        }
        if k.ends_with("HookDocName") && !v.iter().all(|x| hook_value_ok(x)) {
            return Err(ApiError::bad(
                "InvalidParameters",
                format!("Parameter {k} value does not match the allowed pattern."),
            ));
        }
    }
    let one = |name: &str| params.get(name).and_then(|v| v.first()).map(String::as_str);
    match one("Operation") {
        Some("Scan") | Some("Install") => {}
        Some(other) => {
            return Err(ApiError::bad(
                "InvalidParameters",
                format!("Parameter Operation value {other} is not one of [Scan, Install]."),
            ))
        }
        None => {
            return Err(ApiError::bad(
                "InvalidParameters",
                "Parameter \"Operation\" is required by the document.",
            ))
        }
    }
    if let Some(r) = one("RebootOption") {
        if r != "RebootIfNeeded" && r != "NoReboot" {
            return Err(ApiError::bad(
                "InvalidParameters",
                format!(
                    "Parameter RebootOption value {r} is not one of [RebootIfNeeded, NoReboot]."
                ),
            ));
        }
    }
    if let Some(l) = one("InstallOverrideList") {
        if !(l.is_empty() || l.starts_with("https://") || l.starts_with("s3://")) {
            return Err(ApiError::bad(
                "InvalidParameters",
                "Parameter InstallOverrideList must be empty, an https:// URL or an s3:// URL.",
            ));
        }
    }
    Ok(())
}

/// SendCommand, validated in the order SSM checks (the first broken rule answers): instance
/// IDs, document, timeout, comment, rate controls, parameters, then whether every instance
/// can take a command here.
fn send_command(state: &AppState, ctx: &CallContext, body: &Value) -> Result<Value, ApiError> {
    let ids = instance_ids(body)?;
    let document = check_document(body)?;
    let timeout = timeout_seconds(body)?;
    let comment = comment(body)?;
    let (max_concurrency, max_errors) = rate_controls(body)?;
    let parameters = parse_parameters(body)?;
    validate_patch_parameters(document, &parameters)?;

    let now = state.clock.now_ms();
    let mut sim = crate::state::lock(&state.sim);
    refuse_unmanaged(&sim, ctx, &ids)?;

    let idx = sim.send(
        SendRequest {
            account: ctx.account.clone(),
            region: ctx.region.clone(),
            document_name: document.to_string(),
            comment,
            parameters,
            instance_ids: ids,
            timeout_seconds: timeout,
            max_concurrency,
            max_errors,
            cloudwatch: body.get("CloudWatchOutputConfig").cloned(),
        },
        now,
    );
    Ok(json!({ "Command": command_json(&sim.commands[idx], now) }))
}

/// One to 50 distinct instance IDs (Targets are not simulated).
fn instance_ids(body: &Value) -> Result<Vec<String>, ApiError> {
    let ids = get_str_list(body, "InstanceIds")?;
    if ids.is_empty() {
        if body.get("Targets").is_some() {
            return Err(ApiError::bad(
                "InvalidParameters",
                "fleetsim supports InstanceIds only, not Targets.",
            ));
        }
        return Err(ApiError::bad(
            "InvalidParameters",
            "InstanceIds or Targets is required.",
        ));
    }
    if ids.len() > 50 {
        return Err(ApiError::validation(
            "Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to 50",
        ));
    }

    let mut seen = HashSet::new();
    for id in &ids {
        if !seen.insert(id) {
            return Err(ApiError::bad(
                "DuplicateInstanceId",
                format!("Duplicate instance id {id}"),
            ));
        }
    }
    Ok(ids)
}

/// The document, by name or ARN, must be AWS-RunPatchBaseline or the hooks document: its
/// name.
fn check_document(body: &Value) -> Result<&'static str, ApiError> {
    let doc = get_str(body, "DocumentName").unwrap_or_default();
    [DOCUMENT, HOOKS_DOCUMENT]
        .into_iter()
        .find(|d| doc == *d || doc.ends_with(&format!(":document/{d}")))
        .ok_or_else(|| {
            ApiError::bad(
                "InvalidDocument",
                format!("Document with name {doc} does not exist."),
            )
        })
}

/// DescribeDocument: the AWS-owned documents, and the fleet file's `[[documents]]` of the
/// caller's account and Region (or of the account and Region an ARN names).
fn describe_document(state: &AppState, ctx: &CallContext, body: &Value) -> Result<Value, ApiError> {
    let name = get_str(body, "Name").unwrap_or_default();
    let docs = &state.fleet.documents;
    let Some(kind) = crate::hooks::document_type(docs, &ctx.account, &ctx.region, name) else {
        return Err(ApiError::bad(
            "InvalidDocument",
            format!("Document with name {name} does not exist."),
        ));
    };
    let short = name.rsplit_once(":document/").map_or(name, |(_, n)| n);
    let owner = if short.starts_with("AWS-") {
        "Amazon".to_string()
    } else {
        ctx.account.clone()
    };
    Ok(json!({"Document": {
        "Name": short,
        "Owner": owner,
        "DocumentType": kind,
        "DocumentFormat": "JSON",
        "SchemaVersion": "2.2",
        "Status": "Active",
        "DocumentVersion": "1",
        "LatestVersion": "1",
        "DefaultVersion": "1",
        "PlatformTypes": ["Windows", "Linux", "MacOS"],
        "Parameters": [],
        "CreatedDate": epoch_seconds(0),
    }}))
}

/// TimeoutSeconds: 3600 when absent, else 30 to 2,592,000.
fn timeout_seconds(body: &Value) -> Result<i64, ApiError> {
    let timeout = match body.get("TimeoutSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => v.as_i64().unwrap_or(0),
    };
    if !(30..=2_592_000).contains(&timeout) {
        return Err(ApiError::validation(format!(
            "Value '{timeout}' at 'timeoutSeconds' failed to satisfy constraint: Member must have value between 30 and 2592000"
        )));
    }
    Ok(timeout)
}

/// The Comment, at most 100 characters.
fn comment(body: &Value) -> Result<String, ApiError> {
    let comment = get_str(body, "Comment").unwrap_or_default().to_string();
    if comment.chars().count() > 100 {
        return Err(ApiError::validation(
            "Value at 'comment' failed to satisfy constraint: Member must have length less than or equal to 100",
        ));
    }
    Ok(comment)
}

/// MaxConcurrency (default 50) and MaxErrors (default 0), each matching the service's pattern.
fn rate_controls(body: &Value) -> Result<(String, String), ApiError> {
    let max_concurrency = get_str(body, "MaxConcurrency").unwrap_or("50").to_string();
    if !rate_pattern_ok(&max_concurrency, false) {
        return Err(ApiError::validation(format!(
            "Value '{max_concurrency}' at 'maxConcurrency' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$"
        )));
    }

    let max_errors = get_str(body, "MaxErrors").unwrap_or("0").to_string();
    if !rate_pattern_ok(&max_errors, true) {
        return Err(ApiError::validation(format!(
            "Value '{max_errors}' at 'maxErrors' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$"
        )));
    }
    Ok((max_concurrency, max_errors))
}

/// InvalidInstanceId, naming them all, when any instance is not in this account and Region
/// or is not managed by SSM here (stopped, or no agent).
fn refuse_unmanaged(sim: &Sim, ctx: &CallContext, ids: &[String]) -> Result<(), ApiError> {
    let invalid: Vec<&String> = ids
        .iter()
        .filter(|id| {
            sim.fleet
                .instance_in(id, &ctx.account, &ctx.region)
                .is_none_or(|i| !i.agent.accepts_commands())
        })
        .collect();
    if invalid.is_empty() {
        return Ok(());
    }

    Err(ApiError::bad(
        "InvalidInstanceId",
        format!(
            "Instances [{}] not in a valid state for account {}",
            invalid
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            ctx.account
        ),
    ))
}

/// The `Command` structure.
pub fn command_json(cmd: &Command, now: i64) -> Value {
    let v = command_view(cmd, now);
    let mut out = json!({
        "CommandId": cmd.id,
        "DocumentName": cmd.document_name,
        "DocumentVersion": "$DEFAULT",
        "Comment": cmd.comment,
        "ExpiresAfter": epoch_seconds(cmd.requested_ms + cmd.timeout_seconds * 1000),
        "Parameters": cmd.parameters,
        "InstanceIds": cmd.instance_ids,
        "Targets": [],
        "RequestedDateTime": epoch_seconds(cmd.requested_ms),
        "Status": v.status,
        "StatusDetails": v.details,
        "OutputS3Region": cmd.region,
        "OutputS3BucketName": "",
        "OutputS3KeyPrefix": "",
        "MaxConcurrency": cmd.max_concurrency,
        "MaxErrors": cmd.max_errors,
        "TargetCount": v.target_count,
        "CompletedCount": v.completed_count,
        "ErrorCount": v.error_count,
        "DeliveryTimedOutCount": v.delivery_timed_out_count,
        "ServiceRole": "",
        "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
        "TimeoutSeconds": cmd.timeout_seconds,
    });
    if let (Some(cw), Some(map)) = (&cmd.cloudwatch, out.as_object_mut()) {
        map.insert("CloudWatchOutputConfig".to_string(), cw.clone());
    } else if let Some(map) = out.as_object_mut() {
        map.insert(
            "CloudWatchOutputConfig".to_string(),
            json!({"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false}),
        );
    }
    out
}

/// A parsed `Filters` entry of ListCommands / ListCommandInvocations.
#[derive(Debug)]
enum CommandFilter {
    After(i64),
    Before(i64),
    Status(String),
    Stage(bool),
    Document(String),
}

fn command_filters(body: &Value) -> Result<Vec<CommandFilter>, ApiError> {
    let mut out = Vec::new();
    let Some(list) = body.get("Filters").and_then(Value::as_array) else {
        return Ok(out);
    };
    for f in list {
        let key = get_str(f, "key").unwrap_or_default();
        let value = get_str(f, "value").unwrap_or_default().to_string();
        let bad_value = || {
            ApiError::bad(
                "InvalidFilterValue",
                format!("Invalid value {value} for filter {key}"),
            )
        };
        out.push(match key {
            "InvokedAfter" => CommandFilter::After(parse_iso8601(&value).ok_or_else(bad_value)?),
            "InvokedBefore" => CommandFilter::Before(parse_iso8601(&value).ok_or_else(bad_value)?),
            "Status" => CommandFilter::Status(value),
            "ExecutionStage" => match value.as_str() {
                "Executing" => CommandFilter::Stage(false),
                "Complete" => CommandFilter::Stage(true),
                _ => return Err(bad_value()),
            },
            "DocumentName" => CommandFilter::Document(value),
            _ => {
                return Err(ApiError::bad(
                    "InvalidFilterKey",
                    format!("Invalid filter key {key}"),
                ))
            }
        });
    }
    Ok(out)
}

fn filters_match(filters: &[CommandFilter], cmd: &Command, status: &str, terminal: bool) -> bool {
    filters.iter().all(|f| match f {
        CommandFilter::After(t) => cmd.requested_ms >= *t,
        CommandFilter::Before(t) => cmd.requested_ms <= *t,
        CommandFilter::Status(s) => s == status,
        CommandFilter::Stage(complete) => *complete == terminal,
        CommandFilter::Document(d) => *d == cmd.document_name,
    })
}

fn check_command_id(body: &Value) -> Result<Option<&str>, ApiError> {
    match get_str(body, "CommandId") {
        None => Ok(None),
        Some(id) if id.len() == 36 => Ok(Some(id)),
        Some(_) => Err(ApiError::bad("InvalidCommandId", "")),
    }
}

fn visible_commands<'a>(
    sim: &'a Sim,
    ctx: &'a CallContext,
) -> impl Iterator<Item = &'a Command> + 'a {
    sim.commands
        .iter()
        .rev()
        .filter(move |c| c.account == ctx.account && c.region == ctx.region)
}

fn list_commands(state: &AppState, ctx: &CallContext, body: &Value) -> Result<Value, ApiError> {
    let page = max_results(body, 1, 50, "ValidationException")?.unwrap_or(50);
    let offset = next_token(body, "ListCommands", TOKEN_ERR)?;
    let command_id = check_command_id(body)?;
    let instance_id = get_str(body, "InstanceId");
    let filters = command_filters(body)?;
    let (sim, now) = state.settled_sim();
    let all: Vec<Value> = visible_commands(&sim, ctx)
        .filter(|c| command_id.is_none_or(|id| c.id == id))
        .filter(|c| instance_id.is_none_or(|i| c.instance_ids.iter().any(|x| x == i)))
        .filter(|c| {
            let v = command_view(c, now);
            filters_match(&filters, c, v.status, v.completed_count == v.target_count)
        })
        .map(|c| command_json(c, now))
        .collect();
    let (items, next) = paginate(&all, offset, page);
    let mut out = json!({ "Commands": items });
    put_token(&mut out, "ListCommands", next);
    Ok(out)
}

fn plugin_name(inst: Option<&InstanceFile>) -> &'static str {
    match inst.map(|i| i.platform) {
        Some(crate::fleet::Platform::Windows) => "PatchWindows",
        _ => "PatchLinux",
    }
}

fn output_text(cmd: &Command, v: &InvocationView) -> String {
    let op = cmd.param("Operation").unwrap_or("Scan");
    match v.details {
        "Success" => format!("fleetsim: AWS-RunPatchBaseline {op} completed successfully."),
        "Failed" => format!(
            "fleetsim: AWS-RunPatchBaseline {op} failed: patch installation error (exit code 1)."
        ),
        "Execution Timed Out" => "fleetsim: execution timed out.".to_string(),
        _ => String::new(),
    }
}

fn invocation_json(sim: &Sim, cmd: &Command, i: usize, now: i64, details: bool) -> Value {
    let inv = &cmd.invocations[i];
    let v = view(inv, now);
    let inst = sim.fleet.instances.get(&inv.instance_id);
    let mut out = json!({
        "CommandId": cmd.id,
        "InstanceId": inv.instance_id,
        "InstanceName": inst.map(computer_name).unwrap_or_default(),
        "Comment": cmd.comment,
        "DocumentName": cmd.document_name,
        "DocumentVersion": "$DEFAULT",
        "RequestedDateTime": epoch_seconds(cmd.requested_ms),
        "Status": v.status,
        "StatusDetails": v.details,
        "TraceOutput": "",
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": [],
        "ServiceRole": "",
        "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
        "CloudWatchOutputConfig": cmd.cloudwatch.clone().unwrap_or_else(|| json!({"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false})),
    });
    if details {
        let mut plugin = Map::new();
        plugin.insert("Name".into(), json!(plugin_name(inst)));
        let plugin_status = if v.status == "Delayed" || v.status == "Cancelling" {
            "InProgress"
        } else {
            v.status
        };
        plugin.insert("Status".into(), json!(plugin_status));
        plugin.insert("StatusDetails".into(), json!(v.details));
        plugin.insert("ResponseCode".into(), json!(v.response_code));
        if let Some(s) = v.start_ms {
            plugin.insert("ResponseStartDateTime".into(), epoch_seconds(s));
        }
        if let Some(e) = v.end_ms {
            plugin.insert("ResponseFinishDateTime".into(), epoch_seconds(e));
        }
        let mut text = output_text(cmd, &v);
        text.truncate(2500);
        plugin.insert("Output".into(), json!(text));
        plugin.insert("StandardOutputUrl".into(), json!(""));
        plugin.insert("StandardErrorUrl".into(), json!(""));
        plugin.insert("OutputS3Region".into(), json!(cmd.region));
        plugin.insert("OutputS3BucketName".into(), json!(""));
        plugin.insert("OutputS3KeyPrefix".into(), json!(""));
        let plugins = match (&inv.hooks, v.terminal) {
            (Some(run), true) => hooks_plugins(run, &plugin),
            _ => vec![Value::Object(plugin)],
        };
        if let Some(map) = out.as_object_mut() {
            map.insert("CommandPlugins".into(), json!(plugins));
        }
    }
    out
}

/// The steps of a finished hooks invocation, as the user guide says they are reported: the
/// failed step Failed, every other step (the skipped ones too) Success.
fn hooks_plugins(run: &crate::hooks::HooksRun, template: &Map<String, Value>) -> Vec<Value> {
    crate::hooks::STEPS
        .iter()
        .map(|step| {
            let failed = run.failed_step == Some(*step);
            let mut p = template.clone();
            p.insert("Name".into(), json!(step));
            p.insert(
                "Status".into(),
                json!(if failed { "Failed" } else { "Success" }),
            );
            p.insert(
                "StatusDetails".into(),
                json!(if failed { "Failed" } else { "Success" }),
            );
            p.insert("ResponseCode".into(), json!(i64::from(failed)));
            let text = if failed {
                format!("fleetsim: step {step} failed (exit code 1).")
            } else {
                format!("fleetsim: step {step} completed.")
            };
            p.insert("Output".into(), json!(text));
            Value::Object(p)
        })
        .collect()
}

fn list_command_invocations(
    state: &AppState,
    ctx: &CallContext,
    body: &Value,
) -> Result<Value, ApiError> {
    let page = max_results(body, 1, 50, "ValidationException")?.unwrap_or(50);
    let offset = next_token(body, "ListCommandInvocations", TOKEN_ERR)?;
    let command_id = check_command_id(body)?;
    let instance_id = get_str(body, "InstanceId");
    let details = body
        .get("Details")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let filters = command_filters(body)?;
    let (sim, now) = state.settled_sim();
    let mut all = Vec::new();
    for cmd in visible_commands(&sim, ctx) {
        if command_id.is_some_and(|id| cmd.id != id) || sim.invisible(cmd) {
            continue;
        }
        for (i, inv) in cmd.invocations.iter().enumerate() {
            if instance_id.is_some_and(|x| inv.instance_id != x) {
                continue;
            }
            let v = view(inv, now);
            if filters_match(&filters, cmd, v.status, v.terminal) {
                all.push(invocation_json(&sim, cmd, i, now, details));
            }
        }
    }
    let (items, next) = paginate(&all, offset, page);
    let mut out = json!({ "CommandInvocations": items });
    put_token(&mut out, "ListCommandInvocations", next);
    Ok(out)
}

fn iso_duration(ms: i64) -> String {
    format!("PT{:.3}S", ms as f64 / 1000.0)
}

fn get_command_invocation(
    state: &AppState,
    ctx: &CallContext,
    body: &Value,
) -> Result<Value, ApiError> {
    let command_id = check_command_id(body)?.ok_or_else(|| {
        ApiError::validation(
            "Value null at 'commandId' failed to satisfy constraint: Member must not be null",
        )
    })?;
    let instance_id = get_str(body, "InstanceId").ok_or_else(|| {
        ApiError::validation(
            "Value null at 'instanceId' failed to satisfy constraint: Member must not be null",
        )
    })?;
    let (sim, now) = state.settled_sim();
    let not_found = || ApiError::bad("InvocationDoesNotExist", "");
    let cmd = sim
        .command(command_id, &ctx.account, &ctx.region)
        .ok_or_else(not_found)?;
    if sim.invisible(cmd) {
        return Err(not_found());
    }
    let i = cmd
        .invocations
        .iter()
        .position(|x| x.instance_id == instance_id)
        .ok_or_else(not_found)?;
    let inv = &cmd.invocations[i];
    let inst = sim.fleet.instances.get(&inv.instance_id);
    let plugin = plugin_name(inst);
    if let Some(p) = get_str(body, "PluginName") {
        if p != plugin {
            return Err(ApiError::bad("InvalidPluginName", ""));
        }
    }
    Ok(get_invocation_json(cmd, inv, plugin, now))
}

/// GetCommandInvocation's answer for one invocation, as it stands at `now`.
fn get_invocation_json(
    cmd: &Command,
    inv: &crate::sim::Invocation,
    plugin: &str,
    now: i64,
) -> Value {
    let v = view(inv, now);
    let stdout = output_text(cmd, &v);
    let stderr = if v.details == "Failed" {
        "fleetsim: simulated failure"
    } else {
        ""
    };
    let mut out = json!({
        "CommandId": cmd.id,
        "InstanceId": inv.instance_id,
        "Comment": cmd.comment,
        "DocumentName": cmd.document_name,
        "DocumentVersion": "$DEFAULT",
        "PluginName": plugin,
        "ResponseCode": v.response_code,
        "ExecutionStartDateTime": v.start_ms.map(iso8601).unwrap_or_default(),
        "ExecutionElapsedTime": v.start_ms.map(|s| iso_duration(v.end_ms.unwrap_or(now) - s)).unwrap_or_default(),
        "ExecutionEndDateTime": v.end_ms.filter(|_| v.start_ms.is_some()).map(iso8601).unwrap_or_default(),
        "Status": v.status,
        "StatusDetails": v.details,
        "StandardOutputContent": stdout,
        "StandardOutputUrl": "",
        "StandardErrorContent": stderr,
        "StandardErrorUrl": "",
    });
    if let Some(map) = out.as_object_mut() {
        map.insert(
            "CloudWatchOutputConfig".into(),
            cmd.cloudwatch.clone().unwrap_or_else(
                || json!({"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false}),
            ),
        );
    }
    out
}

fn cancel_command(state: &AppState, ctx: &CallContext, body: &Value) -> Result<Value, ApiError> {
    let id = check_command_id(body)?.ok_or_else(|| ApiError::bad("InvalidCommandId", ""))?;
    let ids = get_str_list(body, "InstanceIds")?;
    let now = state.clock.now_ms();
    let mut sim = crate::state::lock(&state.sim);
    if !sim.cancel(id, &ctx.account, &ctx.region, &ids, now) {
        return Err(ApiError::bad("InvalidCommandId", ""));
    }
    Ok(json!({}))
}

fn computer_name(i: &InstanceFile) -> String {
    let h =
        i.id.bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!(
        "ip-10-{}-{}-{}.ec2.internal",
        (h >> 16) & 0xff,
        (h >> 8) & 0xff,
        h & 0xff
    )
}

fn ip_address(i: &InstanceFile) -> String {
    let h =
        i.id.bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("10.{}.{}.{}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff)
}

fn instance_info_json(i: &InstanceFile, now: i64) -> Value {
    let ping = i.agent.ping_status().unwrap_or("Inactive");
    let last_ping = match i.agent {
        AgentState::Online => now,
        AgentState::ConnectionLost => now - 3_600_000,
        _ => now - 40 * 86_400_000,
    };
    let managed = i.id.starts_with("mi-");
    let (platform_name, platform_version) = match i.platform {
        crate::fleet::Platform::Linux => ("Amazon Linux", "2023"),
        crate::fleet::Platform::Windows => {
            ("Microsoft Windows Server 2022 Datacenter", "10.0.20348")
        }
    };
    let mut out = json!({
        "InstanceId": i.id,
        "PingStatus": ping,
        "LastPingDateTime": epoch_seconds(last_ping),
        "AgentVersion": "3.3.1142.0",
        "IsLatestVersion": true,
        "PlatformType": i.platform.as_str(),
        "PlatformName": platform_name,
        "PlatformVersion": platform_version,
        "ResourceType": if managed { "ManagedInstance" } else { "EC2Instance" },
        "IPAddress": ip_address(i),
        "ComputerName": computer_name(i),
        "SourceId": i.id,
        "SourceType": if managed { "AWS::SSM::ManagedInstance" } else { "AWS::EC2::Instance" },
    });
    if managed {
        if let Some(map) = out.as_object_mut() {
            map.insert(
                "ActivationId".into(),
                json!("a1b2c3d4-0000-0000-0000-fleetsim0001"),
            );
            map.insert("IamRole".into(), json!("SSMServiceRole"));
            map.insert(
                "RegistrationDate".into(),
                epoch_seconds(now - 90 * 86_400_000),
            );
        }
    }
    out
}

fn info_filter_matches(i: &InstanceFile, key: &str, values: &[String]) -> Result<bool, ApiError> {
    let v = |s: &str| values.iter().any(|x| x == s);
    Ok(match key {
        "InstanceIds" => v(&i.id),
        "PingStatus" => {
            for x in values {
                if !["Online", "ConnectionLost", "Inactive"].contains(&x.as_str()) {
                    return Err(ApiError::bad(
                        "InvalidInstanceInformationFilterValue",
                        format!("{x} is not a valid PingStatus"),
                    ));
                }
            }
            i.agent.ping_status().is_some_and(v)
        }
        "PlatformTypes" => v(i.platform.as_str()),
        "ResourceType" => v(if i.id.starts_with("mi-") {
            "ManagedInstance"
        } else {
            "EC2Instance"
        }),
        "AgentVersion" => v("3.3.1142.0"),
        "AssociationStatus" | "ActivationIds" | "IamRole" => false,
        other if other.starts_with("tag:") || other == "tag-key" => false,
        other => {
            return Err(ApiError::bad(
                "InvalidFilterKey",
                format!("Invalid filter key {other}"),
            ))
        }
    })
}

fn describe_instance_information(
    state: &AppState,
    ctx: &CallContext,
    body: &Value,
) -> Result<Value, ApiError> {
    let page = max_results(body, 5, 50, "ValidationException")?.unwrap_or(50);
    let offset = next_token(body, "DescribeInstanceInformation", TOKEN_ERR)?;
    let filters = info_filters(body)?;

    let now = state.clock.now_ms();
    let sim = crate::state::lock(&state.sim);
    let mut all = Vec::new();
    for i in sim.fleet.instances_at(&ctx.account, &ctx.region) {
        if i.agent.ping_status().is_none() {
            continue;
        }
        let mut keep = true;
        for (k, vals) in &filters {
            keep &= info_filter_matches(i, k, vals)?;
        }
        if keep {
            all.push(instance_info_json(i, now));
        }
    }
    let (items, next) = paginate(&all, offset, page);
    let mut out = json!({ "InstanceInformationList": items });
    put_token(&mut out, "DescribeInstanceInformation", next);
    Ok(out)
}

/// The filters of both kinds (`Filters`, and the older `InstanceInformationFilterList`, whose
/// keys are checked), as (key, values).
fn info_filters(body: &Value) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(list) = body.get("Filters").and_then(Value::as_array) {
        for f in list {
            filters.push((
                get_str(f, "Key").unwrap_or_default().to_string(),
                get_str_list(f, "Values")?,
            ));
        }
    }
    if let Some(list) = body
        .get("InstanceInformationFilterList")
        .and_then(Value::as_array)
    {
        for f in list {
            let key = get_str(f, "key").unwrap_or_default();
            const KEYS: &[&str] = &[
                "InstanceIds",
                "AgentVersion",
                "PingStatus",
                "PlatformTypes",
                "ActivationIds",
                "IamRole",
                "ResourceType",
                "AssociationStatus",
            ];
            if !KEYS.contains(&key) {
                return Err(ApiError::bad(
                    "InvalidFilterKey",
                    format!("Invalid filter key {key}"),
                ));
            }
            filters.push((key.to_string(), get_str_list(f, "valueSet")?));
        }
    }
    Ok(filters)
}

/// The `InstancePatchState` structure.
pub fn patch_state_json(id: &str, ps: &crate::sim::PatchState) -> Value {
    let mut out = json!({
        "InstanceId": id,
        "PatchGroup": ps.patch_group,
        "BaselineId": ps.baseline_id,
        "SnapshotId": ps.snapshot_id,
        "InstalledCount": ps.installed,
        "InstalledOtherCount": ps.installed_other,
        "InstalledPendingRebootCount": ps.installed_pending_reboot,
        "InstalledRejectedCount": 0,
        "MissingCount": ps.missing,
        "FailedCount": ps.failed,
        "UnreportedNotApplicableCount": 0,
        "NotApplicableCount": ps.not_applicable,
        "AvailableSecurityUpdateCount": 0,
        "OperationStartTime": epoch_seconds(ps.operation_start_ms),
        "OperationEndTime": epoch_seconds(ps.operation_end_ms),
        "Operation": ps.operation,
        "CriticalNonCompliantCount": 0,
        "SecurityNonCompliantCount": ps.security_non_compliant(),
        "OtherNonCompliantCount": 0,
    });
    if let Some(map) = out.as_object_mut() {
        if let Some(r) = &ps.reboot_option {
            map.insert("RebootOption".into(), json!(r));
        }
        if let Some(l) = &ps.install_override_list {
            map.insert("InstallOverrideList".into(), json!(l));
        }
        if let Some(t) = ps.last_no_reboot_install_ms {
            map.insert("LastNoRebootInstallOperationTime".into(), epoch_seconds(t));
        }
    }
    out
}

fn describe_instance_patch_states(
    state: &AppState,
    ctx: &CallContext,
    body: &Value,
) -> Result<Value, ApiError> {
    let ids = get_str_list(body, "InstanceIds")?;
    if ids.len() > 50 {
        return Err(ApiError::validation(
            "Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to 50",
        ));
    }
    let page = max_results(body, 10, 100, "ValidationException")?.unwrap_or(50);
    let offset = next_token(body, "DescribeInstancePatchStates", TOKEN_ERR)?;
    let (sim, _now) = state.settled_sim();
    let all: Vec<Value> = ids
        .iter()
        .filter(|id| {
            sim.fleet
                .instance_in(id, &ctx.account, &ctx.region)
                .is_some()
        })
        .filter_map(|id| sim.patch.get(id).map(|ps| patch_state_json(id, ps)))
        .collect();
    let (items, next) = paginate(&all, offset, page);
    let mut out = json!({ "InstancePatchStates": items });
    put_token(&mut out, "DescribeInstancePatchStates", next);
    Ok(out)
}

/// The public parameters fleetsim holds: the Regions, and the Regions where SSM runs (the
/// same list here). Every other path holds nothing.
const REGION_PATHS: [&str; 2] = [
    "/aws/service/global-infrastructure/regions",
    "/aws/service/global-infrastructure/services/ssm/regions",
];

/// GetParametersByPath over the public Region lists: one `String` parameter per Region,
/// named `PATH/CODE` with the code as its value; MaxResults 1..10, NextToken.
fn get_parameters_by_path(
    state: &AppState,
    ctx: &CallContext,
    body: &Value,
) -> Result<Value, ApiError> {
    let path = get_str(body, "Path").ok_or_else(|| {
        ApiError::validation(
            "1 validation error detected: Value null at 'path' failed to satisfy constraint: Member must not be null",
        )
    })?;
    if path.is_empty() || path.len() > 2048 {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'path' failed to satisfy constraint: Member must have length between 1 and 2048",
        ));
    }
    let page = max_results(body, 1, 10, "ValidationException")?.unwrap_or(10);
    let offset = next_token(body, "GetParametersByPath", TOKEN_ERR)?;
    let path = path.trim_end_matches('/');
    let items: Vec<Value> = if REGION_PATHS.contains(&path) {
        state
            .fleet
            .aws_regions
            .iter()
            .map(|r| {
                let name = format!("{path}/{r}");
                json!({
                    "Name": name,
                    "Type": "String",
                    "Value": r,
                    "Version": 1,
                    "LastModifiedDate": epoch_seconds(1_600_000_000_000),
                    "ARN": format!("arn:aws:ssm:{}::parameter{name}", ctx.region),
                    "DataType": "text",
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let (items, next) = paginate(&items, offset, page);
    let mut out = json!({ "Parameters": items });
    put_token(&mut out, "GetParametersByPath", next);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_control_patterns_match_the_model() {
        for ok in ["1", "50", "10%", "100%", "9%"] {
            assert!(rate_pattern_ok(ok, false), "{ok}");
        }
        for bad in ["0", "0%", "101%", "05", "", "x", "5%%"] {
            assert!(!rate_pattern_ok(bad, false), "{bad}");
        }
        assert!(rate_pattern_ok("0", true));
        assert!(rate_pattern_ok("0%", true));
    }
}
