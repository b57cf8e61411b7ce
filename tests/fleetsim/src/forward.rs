//! Forwarding of everything the simulator does not serve: verbatim to moto, and Lambda
//! Invoke to `cargo lambda watch` (function name taken from a possibly URL-encoded ARN),
//! translating its HTTP 500 `{errorType, errorMessage}` into real Lambda's
//! HTTP 200 + `X-Amz-Function-Error: Unhandled`. Each function's `Timeout` is enforced as
//! Lambda does (the caller gets `Sandbox.Timedout`), except that the invocation is not
//! stopped: it keeps running beside the caller's retry, which is stricter than AWS.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::protocol::{json_response, HttpResponse};

/// Timeout for calls forwarded to moto.
const MOTO_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout for Lambda invocations (Lambda's own maximum).
const LAMBDA_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The upstreams and an HTTP client for them.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    moto_url: Option<String>,
    lambda_url: Option<String>,
    lambda_timeouts: Arc<Mutex<LambdaTimeouts>>,
}

/// Each function's timeout in seconds: the template's (`--lambda-timeout NAME=SECONDS`), and
/// the oracle's run-time overrides, which win. A function in neither has no timeout but
/// Lambda's 15 minutes.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LambdaTimeouts {
    /// From the command line (the template's `Timeout`).
    #[serde(default)]
    pub defaults: BTreeMap<String, f64>,
    /// Set through `POST /_fleetsim/lambda-timeouts`; cleared by posting `{}`.
    #[serde(default)]
    pub overrides: BTreeMap<String, f64>,
}

impl LambdaTimeouts {
    /// The timeout in force for `function`.
    pub fn effective(&self, function: &str) -> Option<Duration> {
        self.overrides
            .get(function)
            .or_else(|| self.defaults.get(function))
            .filter(|s| s.is_finite() && **s > 0.0)
            .map(|s| Duration::from_secs_f64(*s))
    }
}

/// What a Lambda invocation came to.
#[derive(Debug)]
pub struct Invoked {
    /// What the caller gets.
    pub response: HttpResponse,
    /// Whether the function's timeout passed first (the invocation goes on running).
    pub timed_out: bool,
}

/// A request as received, with its body collected.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path_and_query: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// If `path` is a Lambda Invoke, the bare function name (qualifier dropped).
pub fn lambda_function_name(method: &Method, path: &str) -> Option<String> {
    if method != Method::POST {
        return None;
    }
    let rest = path.strip_prefix("/2015-03-31/functions/")?;
    let encoded = rest.strip_suffix("/invocations")?;
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()?
        .to_string();
    let name = match decoded.rfind("function:") {
        Some(i) => decoded[i + "function:".len()..].to_string(),
        None => decoded,
    };
    let name = name.split(':').next().unwrap_or_default().to_string();
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

impl Forwarder {
    /// A forwarder to the given base URLs (`http://host:port`, no trailing slash needed).
    pub fn new(moto_url: Option<String>, lambda_url: Option<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let trim = |u: String| u.trim_end_matches('/').to_string();
        Self {
            client,
            moto_url: moto_url.map(trim),
            lambda_url: lambda_url.map(trim),
            lambda_timeouts: Arc::new(Mutex::new(LambdaTimeouts::default())),
        }
    }

    /// Sets the functions' timeouts (seconds), as the template declares them.
    pub fn with_lambda_timeouts(self, defaults: BTreeMap<String, f64>) -> Self {
        crate::state::lock(&self.lambda_timeouts).defaults = defaults;
        self
    }

    /// The timeouts in force.
    pub fn lambda_timeouts(&self) -> LambdaTimeouts {
        crate::state::lock(&self.lambda_timeouts).clone()
    }

    /// Replaces the run-time overrides (an empty map restores the template's timeouts).
    pub fn set_lambda_timeout_overrides(&self, overrides: BTreeMap<String, f64>) {
        crate::state::lock(&self.lambda_timeouts).overrides = overrides;
    }

    /// Invokes `function`, answering `Sandbox.Timedout` once its timeout passes. The
    /// invocation itself is never cancelled: it runs to its end in the background.
    pub async fn invoke_lambda(&self, function: &str, req: Incoming) -> Invoked {
        let limit = crate::state::lock(&self.lambda_timeouts).effective(function);
        let this = self.clone();
        let name = function.to_string();
        let call = tokio::spawn(async move { this.to_lambda(&name, req).await });
        let outcome = match limit {
            Some(t) => tokio::time::timeout(t, call).await.map_err(|_| t),
            None => Ok(call.await),
        };
        match outcome {
            Ok(Ok(response)) => Invoked {
                response,
                timed_out: false,
            },
            Ok(Err(e)) => Invoked {
                response: bad_gateway(function, &e.to_string()),
                timed_out: false,
            },
            Err(t) => Invoked {
                response: sandbox_timed_out(t),
                timed_out: true,
            },
        }
    }

    /// Forwards a request to moto verbatim.
    pub async fn to_moto(&self, req: Incoming) -> HttpResponse {
        let Some(base) = &self.moto_url else {
            return json_response(
                501,
                &serde_json::json!({"message": "fleetsim: not served and no --moto-url given", "path": req.path_and_query}),
            );
        };
        let url = format!("{base}{}", req.path_and_query);
        self.send(url, req, MOTO_TIMEOUT).await
    }

    /// Forwards a Lambda Invoke of `function` to the Lambda emulator (or moto if none).
    pub async fn to_lambda(&self, function: &str, req: Incoming) -> HttpResponse {
        let Some(base) = &self.lambda_url else {
            return self.to_moto(req).await;
        };
        let query = req
            .path_and_query
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        let url = format!("{base}/2015-03-31/functions/{function}/invocations{query}");
        let resp = self.send(url, req, LAMBDA_TIMEOUT).await;
        translate_lambda_error(resp).await
    }

    async fn send(&self, url: String, req: Incoming, timeout: Duration) -> HttpResponse {
        let mut builder = Request::builder().method(req.method).uri(&url);
        for (k, v) in req.headers.iter() {
            let name = k.as_str();
            if matches!(
                name,
                "connection" | "transfer-encoding" | "keep-alive" | "upgrade" | "expect"
            ) {
                continue;
            }
            builder = builder.header(k, v);
        }
        let request = match builder.body(Full::new(req.body)) {
            Ok(r) => r,
            Err(e) => return bad_gateway(&url, &e.to_string()),
        };
        let resp = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return bad_gateway(&url, &e.to_string()),
            Err(_) => return bad_gateway(&url, "upstream timed out"),
        };
        let (parts, body) = resp.into_parts();
        let body = match tokio::time::timeout(timeout, body.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => return bad_gateway(&url, &e.to_string()),
            Err(_) => return bad_gateway(&url, "upstream body timed out"),
        };
        let mut out = Response::new(Full::new(body));
        *out.status_mut() = parts.status;
        for (k, v) in parts.headers.iter() {
            if matches!(
                k.as_str(),
                "connection" | "transfer-encoding" | "keep-alive"
            ) {
                continue;
            }
            out.headers_mut().append(k, v.clone());
        }
        out
    }
}

fn bad_gateway(url: &str, err: &str) -> HttpResponse {
    json_response(
        502,
        &serde_json::json!({"message": format!("fleetsim: forwarding to {url} failed: {err}")}),
    )
}

/// What Lambda answers when a function runs past its timeout: HTTP 200, an unhandled
/// function error of type `Sandbox.Timedout` (the name Step Functions' Retry matches).
pub fn sandbox_timed_out(limit: Duration) -> HttpResponse {
    let body = serde_json::json!({
        "errorType": "Sandbox.Timedout",
        "errorMessage": format!(
            "RequestId: {} Error: Task timed out after {:.2} seconds",
            uuid::Uuid::new_v4(),
            limit.as_secs_f64()
        ),
    });
    let mut resp = json_response(200, &body);
    resp.headers_mut().insert(
        "x-amz-function-error",
        HeaderValue::from_static("Unhandled"),
    );
    resp.headers_mut().insert(
        "x-amz-executed-version",
        HeaderValue::from_static("$LATEST"),
    );
    resp
}

/// HTTP 500 with a `{errorType, ...}` JSON body becomes HTTP 200 + `X-Amz-Function-Error`.
async fn translate_lambda_error(resp: HttpResponse) -> HttpResponse {
    if resp.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    let is_lambda_error = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .is_some_and(|v| v.get("errorType").is_some());
    if is_lambda_error {
        parts.status = StatusCode::OK;
        parts.headers.insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
        parts.headers.insert(
            "x-amz-executed-version",
            HeaderValue::from_static("$LATEST"),
        );
        parts.headers.remove(hyper::header::CONTENT_LENGTH);
    }
    Response::from_parts(parts, Full::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_name_from_encoded_arn_or_name() {
        let p = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aplan/invocations";
        assert_eq!(
            lambda_function_name(&Method::POST, p).as_deref(),
            Some("plan")
        );
        assert_eq!(
            lambda_function_name(&Method::POST, "/2015-03-31/functions/poll/invocations")
                .as_deref(),
            Some("poll")
        );
        assert_eq!(
            lambda_function_name(&Method::POST, "/2015-03-31/functions/arn:aws:lambda:us-east-1:1:function:plan:$LATEST/invocations").as_deref(),
            Some("plan")
        );
        assert_eq!(
            lambda_function_name(&Method::GET, "/2015-03-31/functions/plan/invocations"),
            None
        );
        assert_eq!(
            lambda_function_name(&Method::POST, "/2015-03-31/functions/plan"),
            None
        );
    }

    #[test]
    fn overrides_win_over_the_template_and_an_empty_map_restores_it() {
        let f = Forwarder::new(None, None)
            .with_lambda_timeouts(BTreeMap::from([("dispatch".to_string(), 120.0)]));
        assert_eq!(
            f.lambda_timeouts().effective("dispatch"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(f.lambda_timeouts().effective("plan"), None);
        f.set_lambda_timeout_overrides(BTreeMap::from([("dispatch".to_string(), 2.5)]));
        assert_eq!(
            f.lambda_timeouts().effective("dispatch"),
            Some(Duration::from_millis(2500))
        );
        f.set_lambda_timeout_overrides(BTreeMap::new());
        assert_eq!(
            f.lambda_timeouts().effective("dispatch"),
            Some(Duration::from_secs(120))
        );
    }
}
