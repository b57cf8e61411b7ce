//! Faults on forwarded calls, answered exactly as the real service answers them: Lambda
//! Invoke (restJson, `x-amzn-errortype`) and DynamoDB (awsJson 1.0, `__type` with the
//! `com.amazonaws.dynamodb.v20120810#` prefix). Shapes from the botocore models
//! (`lambda/2015-03-31`, `dynamodb/2012-08-10`). A refused call is never forwarded, so it
//! has no effect upstream.

use serde_json::{json, Value};

use crate::faults::ForwardDecision;
use crate::protocol::HttpResponse;

const DYNAMODB_TYPE_PREFIX: &str = "com.amazonaws.dynamodb.v20120810#";

fn response(status: u16, content_type: &str, body: &Value) -> HttpResponse {
    let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
        body.to_string(),
    )));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = uuid::Uuid::new_v4().to_string().parse() {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// Lambda's answer to a refused Invoke, or None to forward it.
pub fn lambda_answer(decision: &ForwardDecision) -> Option<HttpResponse> {
    let (status, code, body) = match decision {
        ForwardDecision::Proceed | ForwardDecision::TransactionConflict(_) => return None,
        // Invoke's TooManyRequestsException: HTTP 429, Retry-After, Type/Reason/message.
        ForwardDecision::Throttle => (
            429,
            "TooManyRequestsException".to_string(),
            json!({"Type": "User", "Reason": "ConcurrentInvocationLimitExceeded",
                   "message": "Rate Exceeded."}),
        ),
        ForwardDecision::Error(status, code, message) => (
            *status,
            code.clone()
                .unwrap_or_else(|| "ServiceException".to_string()),
            json!({"Type": "Service", "message": message}),
        ),
    };
    let mut resp = response(status, "application/json", &body);
    if let Ok(v) = code.parse() {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    if status == 429 {
        resp.headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    }
    Some(resp)
}

/// DynamoDB's answer to a refused call, or None to forward it. `operation` comes from
/// `X-Amz-Target`; `body` is the request (TransactWriteItems: one cancellation reason per
/// item, in request order).
pub fn dynamodb_answer(
    decision: &ForwardDecision,
    operation: &str,
    body: &[u8],
) -> Option<HttpResponse> {
    let (status, code, payload) = match decision {
        ForwardDecision::Proceed => return None,
        ForwardDecision::Throttle => (
            400,
            "ProvisionedThroughputExceededException",
            json!({"message": "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}),
        ),
        ForwardDecision::Error(status, code, message) => {
            let code = code.clone().unwrap_or_else(|| {
                if *status >= 500 {
                    "InternalServerError".to_string()
                } else {
                    "ValidationException".to_string()
                }
            });
            let body =
                json!({"__type": format!("{DYNAMODB_TYPE_PREFIX}{code}"), "message": message});
            return Some(response(*status, "application/x-amz-json-1.0", &body));
        }
        ForwardDecision::TransactionConflict(pattern) if operation == "TransactWriteItems" => {
            let reasons = cancellation_reasons(body, pattern.as_deref());
            let codes: Vec<&str> = reasons
                .iter()
                .map(|r| r["Code"].as_str().unwrap_or("None"))
                .collect();
            (
                400,
                "TransactionCanceledException",
                json!({
                    "Message": format!(
                        "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                        codes.join(", ")
                    ),
                    "CancellationReasons": reasons,
                }),
            )
        }
        ForwardDecision::TransactionConflict(_) => (
            400,
            "TransactionConflictException",
            json!({"message": "Transaction is ongoing for the item"}),
        ),
    };
    let mut body = payload;
    body["__type"] = json!(format!("{DYNAMODB_TYPE_PREFIX}{code}"));
    Some(response(status, "application/x-amz-json-1.0", &body))
}

/// One reason per item of a TransactWriteItems: `TransactionConflict` for the items that
/// contain `pattern` (every item when there is none, or when none contains it), `None` for
/// the others.
fn cancellation_reasons(body: &[u8], pattern: Option<&str>) -> Vec<Value> {
    let items: Vec<Value> = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("TransactItems").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    let hit = |item: &Value| {
        pattern.is_none_or(|p| crate::faults::body_contains(item.to_string().as_bytes(), p))
    };
    let any_hit = items.iter().any(hit);
    let conflict =
        json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item."});
    let mut reasons: Vec<Value> = items
        .iter()
        .map(|item| {
            if !any_hit || hit(item) {
                conflict.clone()
            } else {
                json!({"Code": "None"})
            }
        })
        .collect();
    if reasons.is_empty() {
        reasons.push(conflict);
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(r: HttpResponse) -> (u16, hyper::HeaderMap, Value) {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.into_body().collect().await.map(|b| b.to_bytes());
        let v = serde_json::from_slice(&bytes.unwrap_or_default()).unwrap_or(Value::Null);
        (status, headers, v)
    }

    #[tokio::test]
    async fn a_conflict_names_the_conflicting_items_in_request_order() {
        // GIVEN a transaction over an instance item and the run item
        let body = br#"{"TransactItems":[
            {"Update":{"Key":{"PK":{"S":"LOC#r#1#us-east-1"},"SK":{"S":"INST#i-1"}}}},
            {"Update":{"Key":{"PK":{"S":"RUN#r"},"SK":{"S":"RUN"}}}}]}"#;
        let d = ForwardDecision::TransactionConflict(Some(r#""S":"RUN"}"#.into()));
        // WHEN it is refused
        let (status, _, v) =
            body_of(dynamodb_answer(&d, "TransactWriteItems", body).unwrap()).await;
        // THEN DynamoDB's shape: 400, the prefixed __type, one reason per item
        assert_eq!(status, 400);
        assert_eq!(
            v["__type"],
            "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"
        );
        assert_eq!(v["CancellationReasons"][0]["Code"], "None");
        assert_eq!(v["CancellationReasons"][1]["Code"], "TransactionConflict");
        assert!(v["Message"]
            .as_str()
            .unwrap_or_default()
            .ends_with("[None, TransactionConflict]"));
        // AND a single-item write gets TransactionConflictException
        let (_, _, v) = body_of(dynamodb_answer(&d, "UpdateItem", b"{}").unwrap()).await;
        assert_eq!(
            v["__type"],
            "com.amazonaws.dynamodb.v20120810#TransactionConflictException"
        );
    }

    #[tokio::test]
    async fn throttles_answer_as_each_service_does() {
        let (status, _, v) =
            body_of(dynamodb_answer(&ForwardDecision::Throttle, "UpdateItem", b"{}").unwrap())
                .await;
        assert_eq!(status, 400);
        assert_eq!(
            v["__type"],
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
        );
        let (status, headers, v) =
            body_of(lambda_answer(&ForwardDecision::Throttle).unwrap()).await;
        assert_eq!(status, 429);
        assert_eq!(headers["x-amzn-errortype"], "TooManyRequestsException");
        assert_eq!(v["Reason"], "ConcurrentInvocationLimitExceeded");
        assert!(lambda_answer(&ForwardDecision::Proceed).is_none());
    }
}
