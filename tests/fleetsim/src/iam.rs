//! IAM on every call: who is calling (the principal), what the call needs (IAM action,
//! resource ARN, condition values), the decision (asked of the evaluator sidecar
//! `tests/localstack/iam.py`, which reads the policies from the templates, and cached per
//! question), the decision log the oracle serves, and the AccessDenied answer each service
//! gives.
//!
//! Attribution: credentials issued by our AssumeRole are the target execution role of that
//! account; moto's Step Functions interpreter signs with the access key `ak` (its fixed
//! key) and is the state machine's role; anything else is named by the SDK app name in the
//! user agent (`app/fleetpatch-plan`, which CloudTrail records in production too). A call
//! with none of these is denied: nothing passes unattributed while enforcement is on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{json, Value};

use crate::fleet::Fleet;
use crate::forward::Incoming;
use crate::protocol::{self, ApiError, HttpResponse, Protocol};

/// Access key moto's ASL interpreter signs its service integrations with.
pub const STEP_FUNCTIONS_ACCESS_KEY: &str = "ak";
const EVALUATOR_TIMEOUT: Duration = Duration::from_secs(30);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Principal {
    /// A caller named by its SDK app name (`app/<name>` in the user agent).
    App {
        /// The app name, e.g. `fleetpatch-plan`.
        app: String,
    },
    /// Credentials from AssumeRole into a fleet account.
    AssumedRole {
        /// Account of the role.
        account: String,
        /// Role name.
        role: String,
        /// RoleSessionName.
        session: String,
    },
    /// moto's Step Functions interpreter (the state machine's role).
    StepFunctions,
    /// Nothing identifies the caller.
    Anonymous,
}

/// One question for the evaluator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Check {
    /// IAM action, e.g. `dynamodb:BatchWriteItem`.
    pub action: String,
    /// Resource ARN or `*`.
    pub resource: String,
    /// Condition keys and their values for this request.
    pub context: BTreeMap<String, String>,
}

impl Check {
    fn new(action: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            resource: resource.into(),
            context: BTreeMap::new(),
        }
    }

    fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.context.insert(key.to_string(), value.into());
        self
    }
}

/// The evaluator's answer to one check.
#[derive(Debug, Clone)]
struct Verdict {
    allowed: bool,
    message: String,
    /// The resource as the templates name it (local Lambda names are the binaries').
    resource: String,
    principal_arn: String,
    role: Option<String>,
    function: Option<String>,
}

/// One line of the decision log: a distinct (principal, action, resource, outcome) and how
/// often it was asked.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The principal as attributed.
    pub principal: Principal,
    /// The principal's ARN as the evaluator names it.
    pub principal_arn: String,
    /// The template's logical ID of the role evaluated (None: no role).
    pub role: Option<String>,
    /// Function (template logical ID, or app name) the call is attributed to.
    pub function: Option<String>,
    /// App name in the user agent, if any (also for assumed-role calls).
    pub app: Option<String>,
    /// `service:Operation` of the request.
    pub operation: String,
    /// IAM action.
    pub action: String,
    /// Resource ARN, as the templates name it.
    pub resource: String,
    /// Allowed or not.
    pub allowed: bool,
    /// The AccessDenied message (empty when allowed).
    pub message: String,
    /// How many calls asked this.
    pub count: u64,
}

/// The IAM gate: evaluator URL, decision cache and log.
#[derive(Debug)]
pub struct Iam {
    url: String,
    client: Client<HttpConnector, Full<Bytes>>,
    cache: Mutex<HashMap<(Principal, Check), Verdict>>,
    log: Mutex<BTreeMap<String, Decision>>,
}

/// The app name from the user agent headers (`app/<name>`), if any.
pub fn app_name(headers: &HeaderMap) -> Option<String> {
    ["x-amz-user-agent", "user-agent"].iter().find_map(|h| {
        let v = headers.get(*h)?.to_str().ok()?;
        v.split_whitespace()
            .find_map(|part| part.strip_prefix("app/"))
            .map(|s| s.to_string())
    })
}

fn target_op(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit_once('.').map(|(_, op)| op))
}

fn body_json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn form(req: &Incoming) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = req
        .path_and_query
        .split_once('?')
        .map(|(_, q)| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    out.extend(form_urlencoded::parse(&req.body).into_owned());
    out
}

/// Where a request runs and what the simulator knows about the organization.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// Account the caller acts in.
    pub account: &'a str,
    /// Region of the request.
    pub region: &'a str,
    /// The fleet (organization, accounts).
    pub fleet: &'a Fleet,
}

impl Scope<'_> {
    fn org_id(&self) -> Option<&str> {
        self.fleet.organization.as_ref().map(|o| o.id.as_str())
    }

    /// Organization of an account, as `aws:ResourceOrgID` / `aws:PrincipalOrgID` see it.
    fn org_of(&self, account: &str) -> Option<&str> {
        let a = self.fleet.accounts.get(account)?;
        if a.outside_organization {
            return None;
        }
        self.org_id()
    }

    fn instance_arn(&self, id: &str) -> String {
        if id.starts_with("mi-") {
            format!(
                "arn:aws:ssm:{}:{}:managed-instance/{id}",
                self.region, self.account
            )
        } else {
            format!("arn:aws:ec2:{}:{}:instance/{id}", self.region, self.account)
        }
    }

    /// AWS-owned documents (`AWS-...`) have no account in their ARN.
    fn document_arn(&self, doc: &str) -> String {
        if doc.starts_with("arn:") {
            doc.to_string()
        } else if doc.starts_with("AWS-") {
            format!("arn:aws:ssm:{}::document/{doc}", self.region)
        } else {
            format!(
                "arn:aws:ssm:{}:{}:document/{doc}",
                self.region, self.account
            )
        }
    }

    /// Public parameters (`/aws/...`) are owned by no account.
    fn parameter_arn(&self, name: &str) -> String {
        let name = if name.starts_with('/') {
            name.to_string()
        } else {
            format!("/{name}")
        };
        let owner = if name.starts_with("/aws/") {
            ""
        } else {
            self.account
        };
        format!("arn:aws:ssm:{}:{owner}:parameter{name}", self.region)
    }

    fn org_arn(&self, id: &str) -> String {
        let mgmt = &self.fleet.management_account;
        let org = self.org_id().unwrap_or("o-none");
        if id.starts_with("r-") {
            format!("arn:aws:organizations::{mgmt}:root/{org}/{id}")
        } else if id.starts_with("ou-") {
            format!("arn:aws:organizations::{mgmt}:ou/{org}/{id}")
        } else {
            format!("arn:aws:organizations::{mgmt}:account/{org}/{id}")
        }
    }
}

/// The IAM checks a request needs: one per (action, resource) AWS authorizes.
/// `service` is the SigV4 signing name; `lambda_function` is set for a Lambda Invoke.
/// Returns the call's name (`service:Operation`) with its checks.
pub fn checks_for(
    service: &str,
    req: &Incoming,
    scope: &Scope<'_>,
    lambda_function: Option<&str>,
) -> (String, Vec<Check>) {
    let (region, account) = (scope.region, scope.account);
    if let Some(f) = lambda_function {
        let arn = format!("arn:aws:lambda:{region}:{account}:function:{f}");
        return (
            "lambda:Invoke".into(),
            vec![Check::new("lambda:InvokeFunction", arn)],
        );
    }

    let body = body_json(&req.body);
    let op = target_op(&req.headers).unwrap_or_default().to_string();
    let checks = match service {
        "dynamodb" => dynamodb_checks(&op, &body, region, account),
        "states" => states_checks(&op, &body),
        "events" if op == "PutEvents" => put_events_checks(&body, region, account),
        "ssm" => ssm_checks(&op, &body, scope),
        "organizations" => organizations_checks(&op, &body, scope),
        // These three name the call themselves: the operation is not (always) in X-Amz-Target.
        "resource-groups" => return resource_groups_checks(req, &body, region, account),
        "sts" => return sts_checks(req, scope),
        "sqs" => return sqs_checks(&op, req),
        "monitoring" => return cloudwatch_checks(req, region, account),
        other => vec![Check::new(format!("{other}:{op}"), "*")],
    };
    (format!("{service}:{op}"), checks)
}

/// CloudWatch in RPC v2 CBOR names its operation in the path; DescribeAlarms is checked on
/// each alarm it names (`cloudwatch:DescribeAlarms` on `arn:aws:cloudwatch:R:A:alarm:NAME`).
fn cloudwatch_checks(req: &Incoming, region: &str, account: &str) -> (String, Vec<Check>) {
    let path = req.path_and_query.split('?').next().unwrap_or_default();
    let op = crate::services::cloudwatch::operation(path).unwrap_or("Unknown");
    let action = format!("cloudwatch:{op}");
    let names = crate::services::cloudwatch::alarm_names(&req.body);
    let checks = if names.is_empty() {
        vec![Check::new(
            action.clone(),
            format!("arn:aws:cloudwatch:{region}:{account}:alarm:*"),
        )]
    } else {
        names
            .iter()
            .map(|n| {
                Check::new(
                    action.clone(),
                    format!("arn:aws:cloudwatch:{region}:{account}:alarm:{n}"),
                )
            })
            .collect()
    };
    (action, checks)
}

fn states_checks(op: &str, body: &Value) -> Vec<Check> {
    let arn = [
        "stateMachineArn",
        "executionArn",
        "mapRunArn",
        "activityArn",
    ]
    .iter()
    .find_map(|k| str_of(body, k))
    .unwrap_or("*");
    vec![Check::new(format!("states:{op}"), arn)]
}

/// One check per entry: its bus, with the entry's source and detail type as condition keys.
fn put_events_checks(body: &Value, region: &str, account: &str) -> Vec<Check> {
    let check = |e: &Value| {
        let bus = str_of(e, "EventBusName").unwrap_or("default");
        let arn = if bus.starts_with("arn:") {
            bus.to_string()
        } else {
            format!("arn:aws:events:{region}:{account}:event-bus/{bus}")
        };

        let mut c = Check::new("events:PutEvents", arn);
        if let Some(s) = str_of(e, "Source") {
            c = c.with("events:source", s);
        }
        if let Some(d) = str_of(e, "DetailType") {
            c = c.with("events:detail-type", d);
        }
        c
    };

    body.get("Entries")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().map(check).collect())
        .unwrap_or_default()
}

fn organizations_checks(op: &str, body: &Value, scope: &Scope<'_>) -> Vec<Check> {
    let id = ["ParentId", "AccountId", "OrganizationalUnitId", "ChildId"]
        .iter()
        .find_map(|k| str_of(body, k));
    let resource = match (op, id) {
        ("ListRoots" | "DescribeOrganization" | "ListAccounts", _) | (_, None) => "*".to_string(),
        (_, Some(id)) => scope.org_arn(id),
    };
    vec![Check::new(format!("organizations:{op}"), resource)]
}

/// Resource Groups is a REST API: the operation is the path.
fn resource_groups_checks(
    req: &Incoming,
    body: &Value,
    region: &str,
    account: &str,
) -> (String, Vec<Check>) {
    let path = req.path_and_query.split('?').next().unwrap_or_default();
    let op = match path {
        "/get-group" => "GetGroup",
        "/list-group-resources" => "ListGroupResources",
        other => other.trim_start_matches('/'),
    };

    let group = str_of(body, "Group").or_else(|| str_of(body, "GroupName"));
    let resource = match group {
        Some(g) if g.starts_with("arn:") => g.to_string(),
        Some(g) => format!("arn:aws:resource-groups:{region}:{account}:group/{g}"),
        None => "*".to_string(),
    };
    (
        format!("resource-groups:{op}"),
        vec![Check::new(format!("resource-groups:{op}"), resource)],
    )
}

/// STS is a query API: the operation is the form's `Action`. AssumeRole carries the target
/// account's and the caller's organization as condition keys.
fn sts_checks(req: &Incoming, scope: &Scope<'_>) -> (String, Vec<Check>) {
    let params = form(req);
    let action = params.get("Action").cloned().unwrap_or_default();
    let checks = match action.as_str() {
        // GetCallerIdentity needs no permission.
        "GetCallerIdentity" => vec![],
        "AssumeRole" => {
            let role = params.get("RoleArn").cloned().unwrap_or_default();
            let target = role.split(':').nth(4).unwrap_or_default().to_string();
            let mut c = Check::new("sts:AssumeRole", role);
            if let Some(org) = scope.org_of(&target) {
                c = c.with("aws:ResourceOrgID", org);
            }
            if let Some(org) = scope.org_of(scope.account) {
                c = c.with("aws:PrincipalOrgID", org);
            }
            vec![c]
        }
        other => vec![Check::new(format!("sts:{other}"), "*")],
    };
    (format!("sts:{action}"), checks)
}

/// SQS speaks JSON (X-Amz-Target) or, from older clients, the query form.
fn sqs_checks(op: &str, req: &Incoming) -> (String, Vec<Check>) {
    let action = if op.is_empty() {
        form(req).get("Action").cloned().unwrap_or_default()
    } else {
        op.to_string()
    };
    (
        format!("sqs:{action}"),
        vec![Check::new(format!("sqs:{action}"), "*")],
    )
}

fn dynamodb_checks(op: &str, body: &Value, region: &str, account: &str) -> Vec<Check> {
    let table = |t: &str| format!("arn:aws:dynamodb:{region}:{account}:table/{t}");
    match op {
        "BatchWriteItem" | "BatchGetItem" => body
            .get("RequestItems")
            .and_then(Value::as_object)
            .map(|m| {
                m.keys()
                    .map(|t| Check::new(format!("dynamodb:{op}"), table(t)))
                    .collect()
            })
            .unwrap_or_default(),
        // No IAM action exists for transactions: each item is authorised as its own
        // PutItem / UpdateItem / DeleteItem / ConditionCheckItem / GetItem.
        "TransactWriteItems" | "TransactGetItems" => body
            .get("TransactItems")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|it| {
                        let (kind, inner) = it.as_object()?.iter().next()?;
                        let action = match kind.as_str() {
                            "Put" => "PutItem",
                            "Update" => "UpdateItem",
                            "Delete" => "DeleteItem",
                            "ConditionCheck" => "ConditionCheckItem",
                            "Get" => "GetItem",
                            other => other,
                        };
                        Some(Check::new(
                            format!("dynamodb:{action}"),
                            table(str_of(inner, "TableName")?),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => {
            let resource = match (str_of(body, "TableName"), str_of(body, "IndexName")) {
                (Some(t), Some(i)) => format!("{}/index/{i}", table(t)),
                (Some(t), None) => table(t),
                _ => "*".to_string(),
            };
            vec![Check::new(format!("dynamodb:{op}"), resource)]
        }
    }
}

fn ssm_checks(op: &str, body: &Value, scope: &Scope<'_>) -> Vec<Check> {
    let action = format!("ssm:{op}");
    let ids = |key: &str| -> Vec<String> {
        body.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|i| scope.instance_arn(i))
                    .collect()
            })
            .unwrap_or_default()
    };

    match op {
        "SendCommand" => {
            let doc = str_of(body, "DocumentName").unwrap_or_default();
            std::iter::once(scope.document_arn(doc))
                .chain(ids("InstanceIds"))
                .map(|r| Check::new(&action, r))
                .collect()
        }
        // The document named, whatever it runs: AWS authorizes DescribeDocument on it.
        "DescribeDocument" => vec![Check::new(
            &action,
            scope.document_arn(str_of(body, "Name").unwrap_or_default()),
        )],
        "DescribeInstancePatchStates" => ids("InstanceIds")
            .into_iter()
            .map(|r| Check::new(&action, r))
            .collect(),
        "GetParametersByPath" => vec![Check::new(
            &action,
            scope.parameter_arn(str_of(body, "Path").unwrap_or("/")),
        )],
        "GetParameter" => vec![Check::new(
            &action,
            scope.parameter_arn(str_of(body, "Name").unwrap_or_default()),
        )],
        "GetParameters" => body
            .get("Names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|n| Check::new(&action, scope.parameter_arn(n)))
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![Check::new(&action, "*")],
    }
}

/// The AccessDenied answer of `service`, shaped as that service sends it.
pub fn denied_response(service: &str, message: &str) -> HttpResponse {
    match service {
        "sts" => protocol::error(
            Protocol::Query,
            &ApiError::with_status(403, "AccessDenied", message),
        ),
        "resource-groups" => protocol::error(
            Protocol::RestJson,
            &ApiError::with_status(403, "ForbiddenException", message),
        ),
        "lambda" => {
            let mut resp =
                protocol::json_response(403, &json!({"Type": "User", "Message": message}));
            if let Ok(v) = "AccessDeniedException".parse() {
                resp.headers_mut().insert("x-amzn-errortype", v);
            }
            resp
        }
        // awsJson1_0 services answer with the coral namespace in __type.
        "dynamodb" | "states" | "sqs" => {
            let body = json!({
                "__type": "com.amazon.coral.service#AccessDeniedException",
                "message": message,
                "Message": message,
            });
            let mut resp = protocol::json_response(400, &body);
            if let Ok(v) = "application/x-amz-json-1.0".parse() {
                resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            resp
        }
        _ => protocol::error(
            Protocol::AwsJson,
            &ApiError::bad("AccessDeniedException", message),
        ),
    }
}

impl Iam {
    /// A gate asking the evaluator at `url` (`http://127.0.0.1:PORT`).
    pub fn new(url: String) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            cache: Mutex::new(HashMap::new()),
            log: Mutex::new(BTreeMap::new()),
        }
    }

    /// Decides every check; returns the first denial's message, if any. Every check is
    /// logged. An evaluator that cannot be reached denies (fail closed).
    pub async fn authorize(
        &self,
        principal: &Principal,
        app: Option<&str>,
        operation: &str,
        checks: Vec<Check>,
    ) -> Option<String> {
        let missing: Vec<Check> = {
            let cache = crate::state::lock(&self.cache);
            checks
                .iter()
                .filter(|c| !cache.contains_key(&(principal.clone(), (*c).clone())))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            match self.ask(principal, &missing).await {
                Ok(verdicts) => {
                    let mut cache = crate::state::lock(&self.cache);
                    for (c, v) in missing.into_iter().zip(verdicts) {
                        cache.insert((principal.clone(), c), v);
                    }
                }
                Err(e) => {
                    let message = format!(
                        "fleetsim: IAM evaluator at {} failed ({e}); the call is denied",
                        self.url
                    );
                    self.record(principal, app, operation, &checks, None, &message);
                    return Some(message);
                }
            }
        }
        let verdicts: Vec<Verdict> = {
            let cache = crate::state::lock(&self.cache);
            checks
                .iter()
                .filter_map(|c| cache.get(&(principal.clone(), c.clone())).cloned())
                .collect()
        };
        self.record(principal, app, operation, &checks, Some(&verdicts), "");
        verdicts.into_iter().find(|v| !v.allowed).map(|v| v.message)
    }

    /// The ARN the evaluator gave `principal` (e.g. a function's assumed role), once any of
    /// its calls has been decided.
    pub fn principal_arn(&self, principal: &Principal) -> Option<String> {
        crate::state::lock(&self.cache)
            .iter()
            .find(|((p, _), v)| p == principal && !v.principal_arn.is_empty())
            .map(|(_, v)| v.principal_arn.clone())
    }

    fn record(
        &self,
        principal: &Principal,
        app: Option<&str>,
        operation: &str,
        checks: &[Check],
        verdicts: Option<&[Verdict]>,
        failure: &str,
    ) {
        let mut log = crate::state::lock(&self.log);
        for (i, c) in checks.iter().enumerate() {
            let v = verdicts.and_then(|v| v.get(i));
            let allowed = v.is_some_and(|v| v.allowed);
            let key = format!(
                "{}|{:?}|{operation}|{}|{}|{allowed}",
                serde_json::to_string(principal).unwrap_or_default(),
                app,
                c.action,
                c.resource
            );
            let entry = log.entry(key).or_insert_with(|| Decision {
                principal: principal.clone(),
                principal_arn: v.map(|v| v.principal_arn.clone()).unwrap_or_default(),
                role: v.and_then(|v| v.role.clone()),
                function: v.and_then(|v| v.function.clone()),
                app: app.map(str::to_string),
                operation: operation.to_string(),
                action: c.action.clone(),
                resource: v
                    .map(|v| v.resource.clone())
                    .unwrap_or_else(|| c.resource.clone()),
                allowed,
                message: v
                    .map(|v| v.message.clone())
                    .unwrap_or_else(|| failure.to_string()),
                count: 0,
            });
            entry.count += 1;
        }
    }

    async fn ask(&self, principal: &Principal, checks: &[Check]) -> Result<Vec<Verdict>, String> {
        let body = json!({"principal": principal, "checks": checks}).to_string();
        let request = Request::post(format!("{}/decide", self.url))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(EVALUATOR_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", v["message"]));
        }
        let arn = v["principal_arn"].as_str().unwrap_or_default().to_string();
        let role = v["role"].as_str().map(str::to_string);
        let function = v["function"].as_str().map(str::to_string);
        let results = v["results"].as_array().cloned().unwrap_or_default();
        if results.len() != checks.len() {
            return Err(format!(
                "{} results for {} checks",
                results.len(),
                checks.len()
            ));
        }
        Ok(results
            .iter()
            .zip(checks)
            .map(|(r, c)| Verdict {
                allowed: r["allowed"].as_bool().unwrap_or(false),
                message: r["message"].as_str().unwrap_or_default().to_string(),
                resource: r["resource"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| c.resource.clone()),
                principal_arn: arn.clone(),
                role: role.clone(),
                function: function.clone(),
            })
            .collect())
    }

    /// The decision log, for the oracle.
    pub fn decisions(&self) -> Vec<Decision> {
        crate::state::lock(&self.log).values().cloned().collect()
    }

    /// Forgets the decision log (the cache stays: the templates do not change).
    pub fn reset(&self) {
        crate::state::lock(&self.log).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_name_is_read_from_either_user_agent_header() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-user-agent",
            "aws-sdk-rust/1.3 ua/2.1 api/dynamodb/1.2 os/linux lang/rust/1.95 app/fleetpatch-plan"
                .parse()
                .unwrap(),
        );
        assert_eq!(app_name(&h).as_deref(), Some("fleetpatch-plan"));
        let mut h = HeaderMap::new();
        h.insert(
            "user-agent",
            "Boto3/1.35.49 md/Botocore#1.35.99 app/fleetpatch-operator cfg/retry-mode#standard"
                .parse()
                .unwrap(),
        );
        assert_eq!(app_name(&h).as_deref(), Some("fleetpatch-operator"));
        assert_eq!(app_name(&HeaderMap::new()), None);
    }

    fn incoming(target: &str, body: Value) -> Incoming {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", target.parse().unwrap());
        Incoming {
            method: hyper::Method::POST,
            path_and_query: "/".into(),
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

    fn fleet() -> Fleet {
        Fleet::from_toml(
            r#"
management_account = "111111111111"
[organization]
id = "o-test000001"
root_id = "r-test"
[[accounts]]
id = "222222222222"
name = "member"
roles = ["R"]
[[accounts]]
id = "333333333333"
name = "outsider"
roles = ["R"]
outside_organization = true
"#,
        )
        .unwrap()
    }

    #[test]
    fn transactions_are_authorised_item_by_item() {
        let f = fleet();
        let scope = Scope {
            account: "111111111111",
            region: "us-east-1",
            fleet: &f,
        };
        let req = incoming(
            "DynamoDB_20120810.TransactWriteItems",
            json!({"TransactItems": [{"Put": {"TableName": "t"}}, {"Update": {"TableName": "t"}},
                                     {"ConditionCheck": {"TableName": "u"}}]}),
        );
        let (op, checks) = checks_for("dynamodb", &req, &scope, None);
        assert_eq!(op, "dynamodb:TransactWriteItems");
        let got: Vec<_> = checks
            .iter()
            .map(|c| (c.action.as_str(), c.resource.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "dynamodb:PutItem",
                    "arn:aws:dynamodb:us-east-1:111111111111:table/t"
                ),
                (
                    "dynamodb:UpdateItem",
                    "arn:aws:dynamodb:us-east-1:111111111111:table/t"
                ),
                (
                    "dynamodb:ConditionCheckItem",
                    "arn:aws:dynamodb:us-east-1:111111111111:table/u"
                ),
            ]
        );
    }

    #[test]
    fn send_command_needs_the_document_and_every_instance() {
        let f = fleet();
        let scope = Scope {
            account: "222222222222",
            region: "eu-west-1",
            fleet: &f,
        };
        let req = incoming(
            "AmazonSSM.SendCommand",
            json!({"DocumentName": "AWS-RunPatchBaseline", "InstanceIds": ["i-1", "mi-2"]}),
        );
        let (_, checks) = checks_for("ssm", &req, &scope, None);
        let resources: Vec<_> = checks.iter().map(|c| c.resource.as_str()).collect();
        assert_eq!(
            resources,
            vec![
                "arn:aws:ssm:eu-west-1::document/AWS-RunPatchBaseline",
                "arn:aws:ec2:eu-west-1:222222222222:instance/i-1",
                "arn:aws:ssm:eu-west-1:222222222222:managed-instance/mi-2",
            ]
        );
    }

    #[test]
    fn hook_documents_are_not_authorized_by_send_command_only_by_describe_document() {
        // GIVEN the hooks document sent with two hook documents as parameters
        let f = fleet();
        let scope = Scope {
            account: "222222222222",
            region: "eu-west-1",
            fleet: &f,
        };
        let send = incoming(
            "AmazonSSM.SendCommand",
            json!({"DocumentName": "AWS-RunPatchBaselineWithHooks", "InstanceIds": ["i-1"],
                   "Parameters": {"PreInstallHookDocName": ["Drain"],
                                  "PostInstallHookDocName": ["Check"]}}),
        );
        // WHEN the IAM checks of SendCommand and of DescribeDocument on a hook are derived
        let (_, checks) = checks_for("ssm", &send, &scope, None);
        let describe = incoming("AmazonSSM.DescribeDocument", json!({"Name": "Drain"}));
        let (_, described) = checks_for("ssm", &describe, &scope, None);
        // THEN SendCommand needs the hooks document and the instance only (as in AWS: the
        // hooks run on the instance), and DescribeDocument needs the hook document itself
        let resources: Vec<_> = checks.iter().map(|c| c.resource.as_str()).collect();
        assert_eq!(
            resources,
            vec![
                "arn:aws:ssm:eu-west-1::document/AWS-RunPatchBaselineWithHooks",
                "arn:aws:ec2:eu-west-1:222222222222:instance/i-1",
            ]
        );
        assert_eq!(
            (described[0].action.as_str(), described[0].resource.as_str()),
            (
                "ssm:DescribeDocument",
                "arn:aws:ssm:eu-west-1:222222222222:document/Drain"
            )
        );
    }

    #[test]
    fn assume_role_carries_both_organization_ids_when_known() {
        let f = fleet();
        let scope = Scope {
            account: "111111111111",
            region: "us-east-1",
            fleet: &f,
        };
        let sts = |account: &str| {
            Incoming {
            method: hyper::Method::POST,
            path_and_query: "/".into(),
            headers: HeaderMap::new(),
            body: Bytes::from(format!(
                "Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A{account}%3Arole%2FR&RoleSessionName=s"
            )),
        }
        };
        let (_, member) = checks_for("sts", &sts("222222222222"), &scope, None);
        assert_eq!(member[0].context["aws:ResourceOrgID"], "o-test000001");
        assert_eq!(member[0].context["aws:PrincipalOrgID"], "o-test000001");
        let (_, outsider) = checks_for("sts", &sts("333333333333"), &scope, None);
        assert!(!outsider[0].context.contains_key("aws:ResourceOrgID"));
    }

    #[test]
    fn public_parameters_belong_to_no_account() {
        let f = fleet();
        let scope = Scope {
            account: "111111111111",
            region: "us-east-1",
            fleet: &f,
        };
        let req = incoming(
            "AmazonSSM.GetParametersByPath",
            json!({"Path": "/aws/service/global-infrastructure/regions"}),
        );
        let (_, checks) = checks_for("ssm", &req, &scope, None);
        assert_eq!(
            checks[0].resource,
            "arn:aws:ssm:us-east-1::parameter/aws/service/global-infrastructure/regions"
        );
    }

    #[test]
    fn put_events_is_checked_per_entry_with_its_source() {
        let f = fleet();
        let scope = Scope {
            account: "111111111111",
            region: "us-east-1",
            fleet: &f,
        };
        let req = incoming(
            "AWSEvents.PutEvents",
            json!({"Entries": [{"Source": "fleetpatch", "DetailType": "Patch Run Started"}]}),
        );
        let (_, checks) = checks_for("events", &req, &scope, None);
        assert_eq!(
            checks[0].resource,
            "arn:aws:events:us-east-1:111111111111:event-bus/default"
        );
        assert_eq!(checks[0].context["events:source"], "fleetpatch");
    }
}
