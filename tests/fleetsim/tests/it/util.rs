//! Shared helpers: start the simulator in-process on the small fleet and talk to it over
//! HTTP with hand-built, SigV4-shaped requests (signatures are not checked).

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use fleetsim::fleet::Fleet;
use fleetsim::{Options, Running};

pub const MGMT_KEY: &str = "AKIDMANAGEMENT";
pub const A: &str = "222222222222";

pub fn fleet_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fleets")
        .join(name)
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    /// `__type` of an awsJson error.
    pub fn error_type(&self) -> String {
        self.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub struct Sim {
    pub run: Running,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Sim {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Options)) -> Self {
        let fleet = Fleet::load(&fleet_path("small.toml")).expect("small fleet loads");
        let mut opts = Options::new(fleet);
        f(&mut opts);
        let run = fleetsim::start(opts).await.expect("simulator starts");
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Self { run, client }
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Resp, String> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.run.url(), path));
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let req = b
            .body(Full::new(Bytes::from(body)))
            .expect("request builds");
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    fn auth(key: &str, region: &str, service: &str) -> String {
        format!("AWS4-HMAC-SHA256 Credential={key}/20261129/{region}/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000")
    }

    /// An awsJson1_1 call.
    pub async fn try_json(
        &self,
        key: &str,
        region: &str,
        service: &str,
        target: &str,
        body: Value,
    ) -> Result<Resp, String> {
        self.raw(
            "POST",
            "/",
            &[
                ("authorization", Self::auth(key, region, service)),
                ("x-amz-target", target.to_string()),
                ("content-type", "application/x-amz-json-1.1".to_string()),
            ],
            body.to_string().into_bytes(),
        )
        .await
    }

    pub async fn ssm(&self, key: &str, op: &str, body: Value) -> Resp {
        self.try_json(key, "us-east-1", "ssm", &format!("AmazonSSM.{op}"), body)
            .await
            .expect("ssm call answered")
    }

    pub async fn orgs(&self, key: &str, op: &str, body: Value) -> Resp {
        self.try_json(
            key,
            "us-east-1",
            "organizations",
            &format!("AWSOrganizationsV20161128.{op}"),
            body,
        )
        .await
        .expect("organizations call answered")
    }

    pub async fn rg(&self, key: &str, region: &str, path: &str, body: Value) -> Resp {
        self.raw(
            "POST",
            path,
            &[
                ("authorization", Self::auth(key, region, "resource-groups")),
                ("content-type", "application/json".to_string()),
            ],
            body.to_string().into_bytes(),
        )
        .await
        .expect("resource-groups call answered")
    }

    pub async fn sts(&self, key: &str, form: &str) -> Resp {
        self.raw(
            "POST",
            "/",
            &[
                ("authorization", Self::auth(key, "us-east-1", "sts")),
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8".to_string(),
                ),
            ],
            form.as_bytes().to_vec(),
        )
        .await
        .expect("sts call answered")
    }

    /// AssumeRole into `account`'s execution role; returns the issued access key id.
    pub async fn assume(&self, account: &str) -> String {
        let r = self
            .sts(
                MGMT_KEY,
                &format!("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A{account}%3Arole%2FAWS-SystemsManager-AutomationExecutionRole&RoleSessionName=fleetpatch-test&DurationSeconds=3600"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        xml_value(&r.text(), "AccessKeyId").expect("AccessKeyId in response")
    }

    pub async fn oracle(&self, path: &str) -> Value {
        self.raw("GET", &format!("/_fleetsim/{path}"), &[], Vec::new())
            .await
            .expect("oracle answers")
            .json()
    }

    pub async fn oracle_post(&self, path: &str, body: Value) -> Resp {
        self.raw(
            "POST",
            &format!("/_fleetsim/{path}"),
            &[("content-type", "application/json".to_string())],
            body.to_string().into_bytes(),
        )
        .await
        .expect("oracle answers")
    }

    pub async fn advance(&self, seconds: f64) {
        let r = self
            .oracle_post("clock", serde_json::json!({"advance_seconds": seconds}))
            .await;
        assert_eq!(r.status, 200);
    }
}

pub fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_string())
}

/// Waits out the InvocationDoesNotExist window of the small fleet (300 ms).
pub async fn after_visibility_window() {
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
}
