//! Wire protocols: how a modelled error and a success body are rendered for each of the three
//! AWS protocols the simulator speaks (awsJson1_1, restJson1, Query/XML), and the request
//! context (caller account, Region) every served call runs in.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

/// The HTTP response type used throughout the simulator.
pub type HttpResponse = Response<Full<Bytes>>;

/// The AWS protocol a served service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `application/x-amz-json-1.1` with `X-Amz-Target` (SSM, Organizations).
    AwsJson,
    /// REST paths with JSON bodies and `X-Amzn-ErrorType` (Resource Groups).
    RestJson,
    /// Form-encoded `Action=...` requests with XML responses (STS).
    Query,
}

/// A modelled service error: HTTP status, error code (the `__type` / `Code`) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Error code as the service model names it, e.g. `InvalidInstanceId`.
    pub code: String,
    /// Human readable message.
    pub message: String,
}

impl ApiError {
    /// A client error (HTTP 400) with the given code.
    pub fn bad(code: &str, message: impl Into<String>) -> Self {
        Self::with_status(400, code, message)
    }

    /// An error with an explicit HTTP status.
    pub fn with_status(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The `ValidationException` AWS sends when a member violates a model constraint.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::bad(
            "ValidationException",
            format!("1 validation error detected: {}", message.into()),
        )
    }
}

/// Who is calling and where: resolved from the SigV4 credential scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// Account the call acts in (assumed-role account, else the management account).
    pub account: String,
    /// Region from the credential scope.
    pub region: String,
    /// Access key id the request was signed with.
    pub access_key: String,
    /// The caller's ARN as IAM evaluation attributed it (a function's role), when on.
    pub caller_arn: Option<String>,
}

/// Fields parsed from a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Scope {
    /// Access key id.
    pub access_key: String,
    /// Region of the credential scope.
    pub region: String,
    /// Signing service name of the credential scope.
    pub service: String,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/date/REGION/SERVICE/aws4_request, ...`.
/// The signature itself is not verified.
pub fn parse_authorization(value: &str) -> Option<SigV4Scope> {
    let start = value.find("Credential=")? + "Credential=".len();
    let rest = &value[start..];
    let end = rest.find([',', ' ']).unwrap_or(rest.len());
    let mut parts = rest[..end].split('/');
    let access_key = parts.next()?.to_string();
    let _date = parts.next()?;
    let region = parts.next()?.to_string();
    let service = parts.next()?.to_string();
    Some(SigV4Scope {
        access_key,
        region,
        service,
    })
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    if let Ok(v) = request_id.parse() {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// A plain JSON response (used by the oracle and the JSON protocols).
pub fn json_response(status: u16, value: &serde_json::Value) -> HttpResponse {
    response(status, "application/json", value.to_string().into_bytes())
}

/// A successful response body for the given protocol.
pub fn success(protocol: Protocol, value: &serde_json::Value) -> HttpResponse {
    match protocol {
        Protocol::AwsJson => response(
            200,
            "application/x-amz-json-1.1",
            value.to_string().into_bytes(),
        ),
        Protocol::RestJson | Protocol::Query => json_response(200, value),
    }
}

/// An XML success response (Query protocol).
pub fn xml_success(xml: String) -> HttpResponse {
    response(200, "text/xml", xml.into_bytes())
}

/// Renders a modelled error in the shape the protocol's clients parse.
pub fn error(protocol: Protocol, err: &ApiError) -> HttpResponse {
    match protocol {
        Protocol::AwsJson => {
            let body = serde_json::json!({"__type": err.code, "message": err.message});
            response(
                err.status,
                "application/x-amz-json-1.1",
                body.to_string().into_bytes(),
            )
        }
        Protocol::RestJson => {
            let body = serde_json::json!({"Message": err.message});
            let mut resp = response(
                err.status,
                "application/json",
                body.to_string().into_bytes(),
            );
            if let Ok(v) = err.code.parse() {
                resp.headers_mut().insert("x-amzn-errortype", v);
            }
            resp
        }
        Protocol::Query => {
            let kind = if err.status >= 500 {
                "Receiver"
            } else {
                "Sender"
            };
            let xml = format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>{}</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{}</RequestId>\n</ErrorResponse>\n",
                kind,
                xml_escape(&err.code),
                xml_escape(&err.message),
                uuid::Uuid::new_v4()
            );
            response(err.status, "text/xml", xml.into_bytes())
        }
    }
}

/// Escapes the five XML special characters.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Epoch-seconds number, the awsJson/restJson timestamp encoding.
pub fn epoch_seconds(ms: i64) -> serde_json::Value {
    serde_json::json!(ms as f64 / 1000.0)
}

/// ISO-8601 UTC with milliseconds, e.g. `2026-11-29T01:13:00.000Z`.
pub fn iso8601(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Parses an ISO-8601 timestamp (RFC 3339, or a bare date) to epoch ms.
pub fn parse_iso8601(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Some(t.and_utc().timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// Opaque pagination tokens: base64 of `fleetsim:<op>:<offset>`.
pub mod token {
    use base64::Engine;

    /// Encodes the offset of the next page of `op`.
    pub fn encode(op: &str, offset: usize) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("fleetsim:{op}:{offset}"))
    }

    /// Decodes a token produced by [`encode`] for the same `op`.
    pub fn decode(op: &str, token: &str) -> Option<usize> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let rest = text
            .strip_prefix("fleetsim:")?
            .strip_prefix(op)?
            .strip_prefix(':')?;
        rest.parse().ok()
    }
}

/// Slices `items` to one page. Returns the page and the next offset, if any.
pub fn paginate<T: Clone>(items: &[T], offset: usize, page: usize) -> (Vec<T>, Option<usize>) {
    let start = offset.min(items.len());
    let end = (start + page).min(items.len());
    let next = if end < items.len() { Some(end) } else { None };
    (items[start..end].to_vec(), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credential_scope() {
        let h = "AWS4-HMAC-SHA256 Credential=ASIA123/20261129/eu-west-1/ssm/aws4_request, SignedHeaders=host, Signature=abc";
        let s = parse_authorization(h).expect("scope");
        assert_eq!(s.access_key, "ASIA123");
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.service, "ssm");
    }

    #[test]
    fn token_round_trip_is_bound_to_operation() {
        let t = token::encode("ListCommands", 50);
        assert_eq!(token::decode("ListCommands", &t), Some(50));
        assert_eq!(token::decode("ListCommandInvocations", &t), None);
        assert_eq!(token::decode("ListCommands", "garbage"), None);
    }

    #[test]
    fn pagination_reports_next_offset() {
        let v: Vec<u32> = (0..7).collect();
        assert_eq!(paginate(&v, 0, 5), (vec![0, 1, 2, 3, 4], Some(5)));
        assert_eq!(paginate(&v, 5, 5), (vec![5, 6], None));
    }
}
