//! The emulated services, one module each, plus the JSON input helpers they share.

pub mod cloudwatch;
pub mod organizations;
pub mod resource_groups;
pub mod ssm;
pub mod sts;

use serde_json::Value;

use crate::protocol::{token, ApiError};

/// A string member, if present.
pub fn get_str<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

/// A list-of-strings member (absent = empty).
pub fn get_str_list(body: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::validation(format!("{name} must be a list of strings"))
                })
            })
            .collect(),
        Some(_) => Err(ApiError::validation(format!("{name} must be a list"))),
    }
}

/// Validates `MaxResults` against the model's range; `None` when absent.
pub fn max_results(body: &Value, lo: i64, hi: i64, code: &str) -> Result<Option<usize>, ApiError> {
    match body.get("MaxResults") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = v
                .as_i64()
                .ok_or_else(|| ApiError::bad(code, "MaxResults must be an integer"))?;
            if n < lo || n > hi {
                let msg = if n < lo {
                    format!(
                        "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to {lo}"
                    )
                } else {
                    format!(
                        "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to {hi}"
                    )
                };
                return Err(ApiError::bad(code, msg));
            }
            Ok(Some(n as usize))
        }
    }
}

/// Decodes `NextToken` for `op` (0 when absent).
pub fn next_token(body: &Value, op: &str, code: &str) -> Result<usize, ApiError> {
    match get_str(body, "NextToken") {
        None | Some("") => Ok(0),
        Some(t) => token::decode(op, t)
            .ok_or_else(|| ApiError::bad(code, "The specified token isn't valid.")),
    }
}

/// Inserts `NextToken` into `out` when there is a next page.
pub fn put_token(out: &mut Value, op: &str, next: Option<usize>) {
    if let (Some(n), Some(map)) = (next, out.as_object_mut()) {
        map.insert("NextToken".to_string(), Value::String(token::encode(op, n)));
    }
}
