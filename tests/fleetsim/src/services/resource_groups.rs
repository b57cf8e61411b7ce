//! Resource Groups (restJson1): `POST /get-group` and `POST /list-group-resources` over the
//! groups of the calling account and Region.

use serde_json::{json, Value};

use super::{get_str, max_results, next_token, put_token};
use crate::fleet::Group;
use crate::protocol::{paginate, ApiError, CallContext};
use crate::state::AppState;

/// REST paths served, with their operation names.
pub const OPERATIONS: &[(&str, &str)] = &[
    ("/get-group", "GetGroup"),
    ("/list-group-resources", "ListGroupResources"),
];

const EC2: &str = "AWS::EC2::Instance";
const HYBRID: &str = "AWS::SSM::ManagedInstance";

/// Dispatches one operation.
pub fn handle(
    state: &AppState,
    ctx: &CallContext,
    op: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    match op {
        "GetGroup" => get_group(state, ctx, body),
        "ListGroupResources" => list_group_resources(state, ctx, body),
        other => Err(ApiError::bad(
            "BadRequestException",
            format!("fleetsim does not serve {other}"),
        )),
    }
}

fn group_name(body: &Value) -> Result<String, ApiError> {
    let raw = get_str(body, "Group")
        .or_else(|| get_str(body, "GroupName"))
        .ok_or_else(|| ApiError::bad("BadRequestException", "Group is required"))?;
    // arn:aws:resource-groups:REGION:ACCOUNT:group/NAME
    Ok(match raw.split_once(":group/") {
        Some((_, name)) => name.split('/').next().unwrap_or(name).to_string(),
        None => raw.to_string(),
    })
}

fn find<'a>(state: &'a AppState, ctx: &CallContext, name: &str) -> Result<&'a Group, ApiError> {
    state
        .fleet
        .groups
        .get(&(ctx.account.clone(), ctx.region.clone(), name.to_string()))
        .ok_or_else(|| {
            ApiError::with_status(
                404,
                "NotFoundException",
                format!("Cannot find group {name}."),
            )
        })
}

fn group_arn(ctx: &CallContext, name: &str) -> String {
    format!(
        "arn:aws:resource-groups:{}:{}:group/{}",
        ctx.region, ctx.account, name
    )
}

fn get_group(state: &AppState, ctx: &CallContext, body: &Value) -> Result<Value, ApiError> {
    let name = group_name(body)?;
    let g = find(state, ctx, &name)?;
    let mut group = json!({"GroupArn": group_arn(ctx, &g.name), "Name": g.name});
    if !g.description.is_empty() {
        group["Description"] = json!(g.description);
    }
    Ok(json!({ "Group": group }))
}

fn list_group_resources(
    state: &AppState,
    ctx: &CallContext,
    body: &Value,
) -> Result<Value, ApiError> {
    let page = max_results(body, 1, 50, "BadRequestException")?.unwrap_or(50);
    let offset = next_token(body, "ListGroupResources", "BadRequestException")?;
    let mut types: Option<Vec<String>> = None;
    if let Some(filters) = body.get("Filters").and_then(Value::as_array) {
        for f in filters {
            if get_str(f, "Name") != Some("resource-type") {
                return Err(ApiError::bad(
                    "BadRequestException",
                    "Filter name must be resource-type",
                ));
            }
            let values = super::get_str_list(f, "Values")?;
            if values.is_empty() || values.len() > 5 {
                return Err(ApiError::bad(
                    "BadRequestException",
                    "A resource-type filter takes 1 to 5 values",
                ));
            }
            types.get_or_insert_with(Vec::new).extend(values);
        }
    }
    let name = group_name(body)?;
    let g = find(state, ctx, &name)?;
    let idents: Vec<Value> = g
        .instances
        .iter()
        .map(|id| {
            if id.starts_with("mi-") {
                (
                    format!(
                        "arn:aws:ssm:{}:{}:managed-instance/{id}",
                        ctx.region, ctx.account
                    ),
                    HYBRID,
                )
            } else {
                (
                    format!("arn:aws:ec2:{}:{}:instance/{id}", ctx.region, ctx.account),
                    EC2,
                )
            }
        })
        .filter(|(_, t)| types.as_ref().is_none_or(|ts| ts.iter().any(|x| x == t)))
        .map(|(arn, t)| json!({"ResourceArn": arn, "ResourceType": t}))
        .collect();
    let (items, next) = paginate(&idents, offset, page);
    let resources: Vec<Value> = items.iter().map(|i| json!({"Identifier": i})).collect();
    let mut out = json!({
        "Resources": resources,
        "ResourceIdentifiers": items,
        "QueryErrors": [],
    });
    put_token(&mut out, "ListGroupResources", next);
    Ok(out)
}
