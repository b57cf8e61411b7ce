//! The router: decides from the path, the SigV4 credential scope and `X-Amz-Target` which
//! service and operation a request is, runs served calls through faults and statistics, and
//! forwards the rest.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;

use crate::faults::{CallDetail, CallKey, PreDecision};
use crate::forward::{lambda_function_name, Incoming};
use crate::iam::{self, Iam, Principal};
use crate::protocol::{
    self, parse_authorization, ApiError, CallContext, HttpResponse, Protocol, SigV4Scope,
};
use crate::services::{cloudwatch, organizations, resource_groups, ssm, sts};
use crate::state::{lock, AppState};
use http_body_util::BodyExt;

/// The request's response must not be sent: the connection is closed instead.
#[derive(Debug, thiserror::Error)]
#[error("response dropped by a fault rule")]
pub struct Dropped;

/// What a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/_fleetsim/...`.
    Oracle,
    /// Lambda Invoke of this function.
    Lambda(String),
    /// A served operation: (service signing name, operation).
    Served(&'static str, String),
    /// A CloudWatch operation in RPC v2 CBOR, translated for moto.
    CloudWatch(String),
    /// Anything else.
    Forward,
}

fn target_op<'a>(headers: &'a hyper::HeaderMap, prefix: &str) -> Option<&'a str> {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(prefix))
        .and_then(|t| t.strip_prefix('.'))
}

fn form_params(query: Option<&str>, body: &[u8]) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    out.extend(form_urlencoded::parse(body).into_owned());
    out
}

/// Classifies a request.
pub fn classify(req: &Incoming, scope: Option<&SigV4Scope>) -> Route {
    let path = req.path_and_query.split('?').next().unwrap_or_default();
    if path.starts_with("/_fleetsim/") {
        return Route::Oracle;
    }
    if let Some(f) = lambda_function_name(&req.method, path) {
        return Route::Lambda(f);
    }
    if let Some(op) = cloudwatch::operation(path) {
        return Route::CloudWatch(op.to_string());
    }
    let Some(scope) = scope else {
        return Route::Forward;
    };
    match scope.service.as_str() {
        "sts" => {
            let params = form_params(
                req.path_and_query.split_once('?').map(|(_, q)| q),
                &req.body,
            );
            match params.get("Action") {
                Some(a) if sts::OPERATIONS.contains(&a.as_str()) => Route::Served("sts", a.clone()),
                _ => Route::Forward,
            }
        }
        "ssm" => match target_op(&req.headers, "AmazonSSM") {
            Some(op) if ssm::OPERATIONS.contains(&op) => Route::Served("ssm", op.to_string()),
            _ => Route::Forward,
        },
        "organizations" => match target_op(&req.headers, "AWSOrganizationsV20161128") {
            Some(op) if organizations::OPERATIONS.contains(&op) => {
                Route::Served("organizations", op.to_string())
            }
            _ => Route::Forward,
        },
        "resource-groups" if req.method == Method::POST => resource_groups::OPERATIONS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, op)| Route::Served("resource-groups", op.to_string()))
            .unwrap_or(Route::Forward),
        _ => Route::Forward,
    }
}

fn protocol_of(service: &str) -> Protocol {
    match service {
        "sts" => Protocol::Query,
        "resource-groups" => Protocol::RestJson,
        _ => Protocol::AwsJson,
    }
}

fn throttling_error(service: &str) -> ApiError {
    match service {
        "sts" => ApiError::bad("Throttling", "Rate exceeded"),
        "resource-groups" => ApiError::with_status(429, "TooManyRequestsException", "Rate exceeded"),
        "organizations" => ApiError::bad(
            "TooManyRequestsException",
            "You have sent too many requests in too short a period of time. The quota helps protect against denial-of-service attacks. Try again later.",
        ),
        _ => ApiError::bad("ThrottlingException", "Rate exceeded"),
    }
}

fn internal_error_code(service: &str) -> &'static str {
    match service {
        "sts" => "InternalFailure",
        "resource-groups" => "InternalServerErrorException",
        "organizations" => "ServiceException",
        _ => "InternalServerError",
    }
}

fn json_body(body: &Bytes) -> Result<serde_json::Value, ApiError> {
    if body.is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad("SerializationException", e.to_string()))
}

fn run_served(
    state: &AppState,
    service: &'static str,
    op: &str,
    ctx: &CallContext,
    req: &Incoming,
) -> Result<HttpResponse, ApiError> {
    let protocol = protocol_of(service);
    match service {
        "sts" => {
            let params = form_params(
                req.path_and_query.split_once('?').map(|(_, q)| q),
                &req.body,
            );
            sts::handle(state, ctx, op, &params).map(protocol::xml_success)
        }
        "ssm" => ssm::handle(state, ctx, op, &json_body(&req.body)?)
            .map(|v| protocol::success(protocol, &v)),
        "organizations" => organizations::handle(state, ctx, op, &json_body(&req.body)?)
            .map(|v| protocol::success(protocol, &v)),
        "resource-groups" => resource_groups::handle(state, ctx, op, &json_body(&req.body)?)
            .map(|v| protocol::success(protocol, &v)),
        other => Err(ApiError::bad("UnknownService", other.to_string())),
    }
}

/// Handles one request end to end.
pub async fn handle(state: Arc<AppState>, req: Incoming) -> Result<HttpResponse, Dropped> {
    let scope = req
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_authorization);
    let route = classify(&req, scope.as_ref());

    let mut caller_arn = None;
    if let (Some(gate), false) = (&state.iam, route == Route::Oracle) {
        match authorize(&state, gate, &route, &req, scope.as_ref()).await {
            Ok(arn) => caller_arn = arn,
            Err(denied) => return Ok(denied),
        }
    }

    match route {
        Route::Oracle => Ok(crate::oracle::handle(
            &state,
            &req.method,
            &req.path_and_query,
            &req.body,
        )),
        Route::Lambda(function) => Ok(invoke_lambda(&state, scope.as_ref(), function, req).await),
        Route::Forward => Ok(forward(&state, scope.as_ref(), req).await),
        Route::CloudWatch(op) => cloudwatch_call(&state, scope.as_ref(), &op, req).await,
        Route::Served(service, op) => match scope {
            Some(scope) => serve(&state, service, &op, scope, caller_arn, req).await,
            None => Ok(state.forwarder.to_moto(req).await),
        },
    }
}

/// A Lambda Invoke: counted, refused by a fault rule if one matches, else forwarded (and a
/// timed-out invocation counted).
async fn invoke_lambda(
    state: &AppState,
    scope: Option<&SigV4Scope>,
    function: String,
    req: Incoming,
) -> HttpResponse {
    *lock(&state.stats)
        .forwarded
        .entry("lambda".to_string())
        .or_default() += 1;
    if let Some(refused) = lambda_fault(state, scope, &function, &req) {
        return refused;
    }

    let started = std::time::Instant::now();
    let invoked = state.forwarder.invoke_lambda(&function, req).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    lock(&state.stats).bench.lambda_invoked(&function, ms);
    if invoked.timed_out {
        *lock(&state.stats)
            .lambda_timed_out
            .entry(function)
            .or_default() += 1;
    }
    invoked.response
}

/// A call moto serves: counted per signing service, refused by a DynamoDB fault rule if one
/// matches, else forwarded.
async fn forward(state: &AppState, scope: Option<&SigV4Scope>, req: Incoming) -> HttpResponse {
    let svc = scope
        .map(|s| s.service.clone())
        .unwrap_or_else(|| "unsigned".to_string());
    *lock(&state.stats).forwarded.entry(svc).or_default() += 1;
    if let Some(refused) = dynamodb_fault(state, scope, &req) {
        return refused;
    }

    let ddb_op = (scope.map(|s| s.service.as_str()) == Some("dynamodb"))
        .then(|| target_op(&req.headers, "DynamoDB_20120810").map(str::to_string))
        .flatten();
    let body = ddb_op.as_ref().map(|_| req.body.clone());
    let resp = state.forwarder.to_moto(req).await;
    if let (Some(op), Some(body)) = (ddb_op, body) {
        let len = hyper::body::Body::size_hint(resp.body())
            .exact()
            .unwrap_or(0);
        lock(&state.stats).bench.dynamodb_call(&op, &body, len);
    }
    resp
}

/// A CloudWatch call, through the fault rules in the order AWS would fail it (service
/// `monitoring`): refused before it runs (throttle, injected error); else DescribeAlarms
/// translated to moto's Query protocol and back (see `services::cloudwatch`), then its answer
/// dropped, delayed or replaced by an error after the read. Counted as forwarded `monitoring`.
async fn cloudwatch_call(
    state: &AppState,
    scope: Option<&SigV4Scope>,
    op: &str,
    req: Incoming,
) -> Result<HttpResponse, Dropped> {
    *lock(&state.stats)
        .forwarded
        .entry("monitoring".to_string())
        .or_default() += 1;
    let (account, region) = forwarded_where(state, scope);
    let key = CallKey {
        service: "monitoring",
        operation: op,
        account: &account,
        region: &region,
    };
    if let Some(refused) = cloudwatch_refused(state, &key) {
        return Ok(refused);
    }

    let answer = cloudwatch_translated(state, op, &req).await;

    if lock(&state.faults).drop_response(&key) {
        lock(&state.stats).op("monitoring", op).dropped += 1;
        return Err(Dropped);
    }
    let detail = CallDetail {
        function: None,
        body: Some(&req.body),
    };
    let delay = lock(&state.faults).delay_response(&key, &detail);
    if let Some(d) = delay {
        lock(&state.stats).op("monitoring", op).delayed += 1;
        tokio::time::sleep(d).await;
    }
    let after = lock(&state.faults).error_after(&key);
    if let Some((status, code, message)) = after {
        lock(&state.stats).op("monitoring", op).injected_errors += 1;
        let code = code.unwrap_or_else(|| "InternalServiceError".into());
        return Ok(cbor_response(
            status,
            cloudwatch::cbor_error(&code, &message),
        ));
    }
    Ok(answer)
}

/// A CloudWatch answer in the RPC v2 CBOR protocol.
fn cbor_response(status: u16, body: Vec<u8>) -> HttpResponse {
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/cbor"),
    );
    r.headers_mut().insert(
        "smithy-protocol",
        hyper::header::HeaderValue::from_static("rpc-v2-cbor"),
    );
    r
}

/// The answer of a throttle or injected-error rule on a CloudWatch call, if one fires.
fn cloudwatch_refused(state: &AppState, key: &CallKey<'_>) -> Option<HttpResponse> {
    let op = key.operation;
    let decision = lock(&state.faults).before(key);
    match decision {
        PreDecision::Throttle => {
            lock(&state.stats).op("monitoring", op).throttled += 1;
            Some(cbor_response(
                400,
                cloudwatch::cbor_error("Throttling", "Rate exceeded"),
            ))
        }
        PreDecision::Error(status, code, message) => {
            lock(&state.stats).op("monitoring", op).injected_errors += 1;
            let code = code.unwrap_or_else(|| "InternalServiceError".into());
            Some(cbor_response(
                status,
                cloudwatch::cbor_error(&code, &message),
            ))
        }
        PreDecision::Proceed => None,
    }
}

/// The CBOR call translated to moto's Query protocol, forwarded, and moto's XML answer
/// translated back.
async fn cloudwatch_translated(state: &AppState, op: &str, req: &Incoming) -> HttpResponse {
    if !cloudwatch::OPERATIONS.contains(&op) {
        return cbor_response(
            400,
            cloudwatch::cbor_error(
                "UnknownOperationException",
                &format!("fleetsim translates only {:?}", cloudwatch::OPERATIONS),
            ),
        );
    }
    let form = match cloudwatch::query_form(&req.body) {
        Ok(f) => f,
        Err(e) => return cbor_response(400, cloudwatch::cbor_error("SerializationException", &e)),
    };

    let mut headers = req.headers.clone();
    headers.remove("smithy-protocol");
    headers.remove("content-length");
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let query = Incoming {
        method: hyper::Method::POST,
        path_and_query: "/".into(),
        headers,
        body: bytes::Bytes::from(form),
    };
    let answer = state.forwarder.to_moto(query).await;
    let status = answer.status().as_u16();
    let body = answer
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let xml = String::from_utf8_lossy(&body);
    if status == 200 {
        cbor_response(200, cloudwatch::cbor_answer(&xml))
    } else {
        let (code, message) = cloudwatch::xml_error(&xml);
        cbor_response(status, cloudwatch::cbor_error(&code, &message))
    }
}

/// A served call, through the fault rules in the order AWS would fail it: refused before it
/// runs (throttle, injected error), run, then its answer dropped, delayed or replaced by an
/// error after the effect.
async fn serve(
    state: &AppState,
    service: &'static str,
    op: &str,
    scope: SigV4Scope,
    caller_arn: Option<String>,
    req: Incoming,
) -> Result<HttpResponse, Dropped> {
    let ctx = CallContext {
        account: sts::account_for(state, &scope.access_key),
        region: scope.region.clone(),
        access_key: scope.access_key.clone(),
        caller_arn,
    };
    let key = CallKey {
        service,
        operation: op,
        account: &ctx.account,
        region: &ctx.region,
    };
    let protocol = protocol_of(service);
    lock(&state.stats).op(service, op).calls += 1;
    if service == "ssm" {
        let location = format!("{}/{}", ctx.account, ctx.region);
        lock(&state.stats)
            .bench
            .ssm_call(location, state.clock.now_ms());
    }

    if let Some(refused) = refused_before(state, &key, protocol) {
        return Ok(refused);
    }

    let resp = run_served(state, service, op, &ctx, &req)
        .unwrap_or_else(|e| protocol::error(protocol, &e));

    if lock(&state.faults).drop_response(&key) {
        lock(&state.stats).op(service, op).dropped += 1;
        return Err(Dropped);
    }
    let detail = CallDetail {
        function: None,
        body: Some(&req.body),
    };
    let delay = lock(&state.faults).delay_response(&key, &detail);
    if let Some(d) = delay {
        lock(&state.stats).op(service, op).delayed += 1;
        tokio::time::sleep(d).await;
    }
    let after = lock(&state.faults).error_after(&key);
    if let Some((status, code, message)) = after {
        lock(&state.stats).op(service, op).injected_errors += 1;
        let code = code.unwrap_or_else(|| internal_error_code(service).to_string());
        return Ok(protocol::error(
            protocol,
            &ApiError::with_status(status, &code, message),
        ));
    }
    Ok(resp)
}

/// The answer of a fault rule that refuses the call before it runs (a throttle or an
/// injected error), if one matches.
fn refused_before(state: &AppState, key: &CallKey<'_>, protocol: Protocol) -> Option<HttpResponse> {
    let (service, op) = (key.service, key.operation);
    let decision = lock(&state.faults).before(key);
    match decision {
        PreDecision::Throttle => {
            lock(&state.stats).op(service, op).throttled += 1;
            Some(protocol::error(protocol, &throttling_error(service)))
        }
        PreDecision::Error(status, code, message) => {
            lock(&state.stats).op(service, op).injected_errors += 1;
            let code = code.unwrap_or_else(|| internal_error_code(service).to_string());
            Some(protocol::error(
                protocol,
                &ApiError::with_status(status, &code, message),
            ))
        }
        PreDecision::Proceed => None,
    }
}

/// Attributes the request to a principal, derives its IAM checks and asks the gate.
/// Allowed: the caller's ARN as the evaluator names it. Denied: the service's AccessDenied
/// answer.
async fn authorize(
    state: &AppState,
    gate: &Iam,
    route: &Route,
    req: &Incoming,
    scope: Option<&SigV4Scope>,
) -> Result<Option<String>, HttpResponse> {
    let access_key = scope.map(|s| s.access_key.as_str());
    let app = iam::app_name(&req.headers);
    let session = access_key.and_then(|k| lock(&state.sessions).get(k).cloned());
    let principal = match (&session, access_key, &app) {
        (Some(s), _, _) => Principal::AssumedRole {
            account: s.account.clone(),
            role: s.role.clone(),
            session: s.session_name.clone(),
        },
        (None, Some(iam::STEP_FUNCTIONS_ACCESS_KEY), _) => Principal::StepFunctions,
        (None, _, Some(a)) => Principal::App { app: a.clone() },
        _ => Principal::Anonymous,
    };
    let account = session
        .as_ref()
        .map(|s| s.account.clone())
        .unwrap_or_else(|| state.fleet.management_account.clone());
    let region = scope.map(|s| s.region.as_str()).unwrap_or("us-east-1");
    let (service, function) = match route {
        Route::Lambda(f) => ("lambda", Some(f.as_str())),
        _ => (
            scope.map(|s| s.service.as_str()).unwrap_or("unsigned"),
            None,
        ),
    };
    let where_ = iam::Scope {
        account: &account,
        region,
        fleet: &state.fleet,
    };
    let (operation, checks) = iam::checks_for(service, req, &where_, function);
    match gate
        .authorize(&principal, app.as_deref(), &operation, checks)
        .await
    {
        Some(message) => Err(iam::denied_response(service, &message)),
        None => Ok(gate.principal_arn(&principal)),
    }
}

/// Account and Region a forwarded call acts in: from its credential scope, else from the
/// function ARN of a Lambda Invoke.
fn forwarded_where(state: &AppState, scope: Option<&SigV4Scope>) -> (String, String) {
    match scope {
        Some(s) => (sts::account_for(state, &s.access_key), s.region.clone()),
        None => (state.fleet.management_account.clone(), String::new()),
    }
}

/// A Lambda fault rule's answer for this Invoke, if one fires (`service` `lambda`,
/// `operation` `Invoke`, optionally `function`).
fn lambda_fault(
    state: &AppState,
    scope: Option<&SigV4Scope>,
    function: &str,
    req: &Incoming,
) -> Option<HttpResponse> {
    let (account, region) = forwarded_where(state, scope);
    let key = CallKey {
        service: "lambda",
        operation: "Invoke",
        account: &account,
        region: &region,
    };
    let detail = CallDetail {
        function: Some(function),
        body: Some(&req.body),
    };
    let decision = lock(&state.faults).before_forwarded(&key, &detail);
    let answer = crate::forward_faults::lambda_answer(&decision);
    count_forwarded_fault(state, "lambda", "Invoke", &decision);
    answer
}

/// A DynamoDB fault rule's answer for this forwarded call, if one fires (`service`
/// `dynamodb`, `operation` from `X-Amz-Target`, optionally `body_contains`).
fn dynamodb_fault(
    state: &AppState,
    scope: Option<&SigV4Scope>,
    req: &Incoming,
) -> Option<HttpResponse> {
    if scope.map(|s| s.service.as_str()) != Some("dynamodb") {
        return None;
    }
    let op = target_op(&req.headers, "DynamoDB_20120810")?.to_string();
    let (account, region) = forwarded_where(state, scope);
    let key = CallKey {
        service: "dynamodb",
        operation: &op,
        account: &account,
        region: &region,
    };
    let detail = CallDetail {
        function: None,
        body: Some(&req.body),
    };
    let decision = lock(&state.faults).before_forwarded(&key, &detail);
    count_forwarded_fault(state, "dynamodb", &op, &decision);
    crate::forward_faults::dynamodb_answer(&decision, &op, &req.body)
}

fn count_forwarded_fault(
    state: &AppState,
    service: &str,
    op: &str,
    decision: &crate::faults::ForwardDecision,
) {
    use crate::faults::ForwardDecision as D;
    let mut stats = lock(&state.stats);
    let c = stats.forwarded_op(service, op);
    c.calls += 1;
    match decision {
        D::Proceed => {}
        D::Throttle => c.throttled += 1,
        D::Error(..) => c.injected_errors += 1,
        D::TransactionConflict(_) => c.conflicts += 1,
    }
}
