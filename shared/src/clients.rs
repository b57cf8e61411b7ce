//! "Give me clients for account A in Region R": the one seam between handlers and AWS
//! credentials. In production [`AssumeRoleFactory`] assumes the execution role in the
//! target account (session name carrying the run id) and caches the credentials only until
//! shortly before they expire; tests use [`FixedClients`].
//!
//! Invariants: cached credentials are never handed out within [`EXPIRY_MARGIN`] of their
//! expiry; calls side by side for one (account, role, run) make one AssumeRole between them
//! (aggregate reads several locations at once, and an account's Regions are neighbours); a role that cannot be assumed is [`AssumeError::AccessDenied`], which callers do
//! not retry, anything else is retryable; target clients inherit the function's own
//! timeouts, endpoint and app name.

use crate::error::{from_sdk, Error};
use crate::model::Location;
use aws_config::Region;
use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sdk_sts::error::SdkError;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Clients acting in one target account and Region, with the execution role's credentials.
#[derive(Debug, Clone)]
pub struct TargetClients {
    pub ssm: aws_sdk_ssm::Client,
    pub groups: aws_sdk_resourcegroups::Client,
}

/// Why clients for a location could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AssumeError {
    /// The role cannot be assumed (missing, not trusting the orchestrator, Region not
    /// enabled): retrying will not help.
    #[error("cannot assume {role_arn}: {message}")]
    AccessDenied {
        role_arn: String,
        /// STS's error code and message.
        message: String,
    },
    /// Anything else (throttling, network): worth retrying.
    #[error(transparent)]
    Other(#[from] Error),
}

/// Hands out clients for a location: the seam between handlers and credentials.
pub trait ClientFactory: Send + Sync {
    /// Clients acting in `location` through `role_name`, for the run `run_id`.
    fn clients(
        &self,
        location: &Location,
        role_name: &str,
        run_id: &str,
    ) -> impl Future<Output = std::result::Result<TargetClients, AssumeError>> + Send;
}

/// How long before expiry cached credentials are dropped.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Requested credential lifetime: role chaining caps it at one hour.
pub const SESSION_SECONDS: i32 = 3600;

/// The role session name: `fleetpatch-<run id>`, cut to STS's 64 characters and cleaned to
/// its alphabet `[\w+=,.@-]`.
pub fn session_name(run_id: &str) -> String {
    let cleaned: String = format!("fleetpatch-{run_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    cleaned
}

/// The execution role's ARN in an account.
pub fn role_arn(partition: &str, account: &str, role_name: &str) -> String {
    format!("arn:{partition}:iam::{account}:role/{role_name}")
}

#[derive(Clone)]
struct Cached {
    credentials: Credentials,
    expires: SystemTime,
}

/// (account, role name, run ID): what one set of credentials is for.
type Key = (String, String, String);

/// Production factory: STS AssumeRole into each target account, credentials cached per
/// (account, role, run) until [`EXPIRY_MARGIN`] before they expire.
pub struct AssumeRoleFactory {
    base: SdkConfig,
    sts: aws_sdk_sts::Client,
    partition: String,
    cache: Mutex<HashMap<Key, Cached>>,
    /// One async lock per key, held while its credentials are fetched: a second caller waits
    /// for the first one's answer instead of making its own AssumeRole.
    fetching: Mutex<HashMap<Key, Arc<futures::lock::Mutex<()>>>>,
}

impl AssumeRoleFactory {
    /// A factory using `base` (the function's own config) for STS and as the template of
    /// target clients (endpoint, timeouts, retries).
    pub fn new(base: &SdkConfig, partition: &str) -> Self {
        AssumeRoleFactory {
            base: base.clone(),
            sts: aws_sdk_sts::Client::new(base),
            partition: partition.to_string(),
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// A factory with an explicit STS client (tests use a mocked one).
    pub fn with_sts(base: &SdkConfig, sts: aws_sdk_sts::Client, partition: &str) -> Self {
        AssumeRoleFactory {
            base: base.clone(),
            sts,
            partition: partition.to_string(),
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &Key, now: SystemTime) -> Option<Credentials> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(key) {
            Some(c) if c.expires > now + EXPIRY_MARGIN => Some(c.credentials.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    /// Credentials for `role_name` in `account`: from the cache while they have more than
    /// [`EXPIRY_MARGIN`] left, else from STS (and cached).
    async fn assume(
        &self,
        account: &str,
        role_name: &str,
        run_id: &str,
    ) -> std::result::Result<Credentials, AssumeError> {
        let key = (
            account.to_string(),
            role_name.to_string(),
            run_id.to_string(),
        );
        if let Some(c) = self.cached(&key, SystemTime::now()) {
            return Ok(c);
        }
        let lock = self.fetch_lock(&key);
        let _fetching = lock.lock().await;
        // a caller that held the lock before us may have fetched them
        if let Some(c) = self.cached(&key, SystemTime::now()) {
            return Ok(c);
        }

        let arn = role_arn(&self.partition, account, role_name);
        let fresh = self.assume_role(&arn, run_id).await?;

        self.remember(key, &fresh);
        Ok(fresh.credentials)
    }

    /// One STS AssumeRole call, its answer turned into SDK credentials.
    async fn assume_role(
        &self,
        arn: &str,
        run_id: &str,
    ) -> std::result::Result<Cached, AssumeError> {
        let out = self
            .sts
            .assume_role()
            .role_arn(arn)
            .role_session_name(session_name(run_id))
            .duration_seconds(SESSION_SECONDS)
            .send()
            .await
            .map_err(|e| assume_error(arn, e))?;

        let c = out.credentials.ok_or_else(|| {
            AssumeError::Other(Error::Record(
                "AssumeRole answered without credentials".into(),
            ))
        })?;
        let expires = SystemTime::try_from(c.expiration).unwrap_or_else(|_| SystemTime::now());
        let credentials = Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            Some(expires),
            "fleetpatch-assume-role",
        );
        Ok(Cached {
            credentials,
            expires,
        })
    }

    /// The lock a fetch of `key`'s credentials holds. A poisoned map only costs a lock of
    /// one's own (an AssumeRole that might have been shared).
    fn fetch_lock(&self, key: &Key) -> Arc<futures::lock::Mutex<()>> {
        match self.fetching.lock() {
            Ok(mut locks) => locks.entry(key.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Caches fresh credentials. A poisoned lock only costs a later STS call.
    fn remember(&self, key: Key, fresh: &Cached) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, fresh.clone());
        }
    }
}

/// STS error codes that mean the role cannot be assumed from here (missing role, no trust,
/// Region not enabled, the caller's credentials not valid there):
/// [`AssumeError::AccessDenied`], not retried.
const REFUSED_CODES: [&str; 4] = [
    "AccessDenied",
    "AccessDeniedException",
    "RegionDisabledException",
    "InvalidClientTokenId",
];

fn assume_error(arn: &str, e: SdkError<AssumeRoleError>) -> AssumeError {
    let code = e.code().unwrap_or_default().to_string();
    if REFUSED_CODES.contains(&code.as_str()) {
        return AssumeError::AccessDenied {
            role_arn: arn.to_string(),
            message: format!("{code}: {}", e.message().unwrap_or_default()),
        };
    }
    AssumeError::Other(from_sdk("sts:AssumeRole", e))
}

impl ClientFactory for AssumeRoleFactory {
    async fn clients(
        &self,
        location: &Location,
        role_name: &str,
        run_id: &str,
    ) -> std::result::Result<TargetClients, AssumeError> {
        let creds = self.assume(&location.account, role_name, run_id).await?;
        let conf = self
            .base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(creds))
            .region(Region::new(location.region.clone()))
            .build();
        Ok(TargetClients {
            ssm: aws_sdk_ssm::Client::new(&conf),
            groups: aws_sdk_resourcegroups::Client::new(&conf),
        })
    }
}

/// Test factory: the same clients for every location, except accounts listed as denied.
#[derive(Debug, Clone)]
pub struct FixedClients {
    pub clients: TargetClients,
    /// Accounts whose role cannot be assumed.
    pub denied: HashSet<String>,
}

impl FixedClients {
    /// The same clients everywhere.
    pub fn new(ssm: aws_sdk_ssm::Client, groups: aws_sdk_resourcegroups::Client) -> Self {
        FixedClients {
            clients: TargetClients { ssm, groups },
            denied: HashSet::new(),
        }
    }
}

impl ClientFactory for FixedClients {
    async fn clients(
        &self,
        location: &Location,
        role_name: &str,
        _run_id: &str,
    ) -> std::result::Result<TargetClients, AssumeError> {
        if self.denied.contains(&location.account) {
            return Err(AssumeError::AccessDenied {
                role_arn: role_arn("aws", &location.account, role_name),
                message: "AccessDenied: not authorized to perform sts:AssumeRole".into(),
            });
        }
        Ok(self.clients.clone())
    }
}

/// Loads the function's own AWS configuration once per cold start, with timeouts that keep a
/// lost response from hanging a step (`AWS_ENDPOINT_URL` is honoured, as the local stack needs).
/// `app_name` (e.g. `fleetpatch-plan`) goes into every request's user agent as
/// `app/<name>`: CloudTrail records it, and the local stack attributes calls by it. Clients
/// built from this config for target accounts carry it too.
pub async fn load_sdk_config(app_name: &str) -> SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(20))
        .build();

    let loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
    let loader = match aws_config::AppName::new(app_name.to_string()) {
        Ok(name) => loader.app_name(name),
        Err(e) => {
            tracing::warn!(app_name, error = %e, "invalid SDK app name; calls go without one");
            loader
        }
    };

    loader.load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_sts_rules() {
        let s = session_name(
            "2026-11-29T01:00:00Z/monthly run with spaces and a very long suffix indeed",
        );
        assert!(s.len() <= 64, "{s}");
        assert!(s.starts_with("fleetpatch-2026-11-29T01-00-00Z-monthly"));
        assert!(s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
    }

    #[test]
    fn role_arn_uses_partition() {
        assert_eq!(
            role_arn("aws-us-gov", "111122223333", "PatchRole"),
            "arn:aws-us-gov:iam::111122223333:role/PatchRole"
        );
    }
}
