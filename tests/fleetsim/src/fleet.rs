//! The fleet model: the TOML fleet file (organization, accounts, resource groups, instances,
//! seeded `[[generate]]` sections) and the validated, immutable [`Fleet`] built from it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::faults::FaultRule;
use crate::hooks::{DocumentFile, Documents, HookPoint};

/// Errors loading or validating a fleet file.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The file could not be read.
    #[error("cannot read fleet file {path}: {source}")]
    Io {
        /// Path that failed.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema.
    #[error("invalid fleet file: {0}")]
    Parse(#[from] toml::de::Error),
    /// The content is inconsistent (unknown account, duplicate instance id, ...).
    #[error("invalid fleet: {0}")]
    Invalid(String),
}

/// The SSM agent / EC2 state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Running, agent pinging: commands run.
    Online,
    /// Agent stopped pinging: commands stay Pending, then Delivery Timed Out.
    ConnectionLost,
    /// Agent long gone: like ConnectionLost, PingStatus Inactive.
    Inactive,
    /// EC2 instance stopped: not returned by DescribeInstanceInformation, InvalidInstanceId.
    Stopped,
    /// No SSM agent at all: in resource groups only.
    Unmanaged,
}

impl AgentState {
    /// The SSM PingStatus, for managed, non-stopped instances.
    pub fn ping_status(self) -> Option<&'static str> {
        match self {
            Self::Online => Some("Online"),
            Self::ConnectionLost => Some("ConnectionLost"),
            Self::Inactive => Some("Inactive"),
            Self::Stopped | Self::Unmanaged => None,
        }
    }

    /// Whether SendCommand accepts the instance.
    pub fn accepts_commands(self) -> bool {
        self.ping_status().is_some()
    }
}

/// What AWS-RunPatchBaseline does on the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Success after `duration` seconds.
    Succeed,
    /// Failed (ResponseCode 1) after `duration`; an Install leaves FailedCount > 0.
    Fail,
    /// TimedOut / "Execution Timed Out" after `duration`.
    ExecutionTimeout,
    /// Success; an Install needs a reboot (NoReboot leaves InstalledPendingRebootCount).
    NeedsReboot,
}

/// Operating system family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Platform {
    /// Linux (PatchLinux plugin).
    #[default]
    Linux,
    /// Windows (PatchWindows plugin).
    Windows,
}

impl Platform {
    /// SSM PlatformType value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linux => "Linux",
            Self::Windows => "Windows",
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_duration() -> u64 {
    300
}
fn default_behaviour() -> Behaviour {
    Behaviour::Succeed
}
fn default_agent() -> AgentState {
    AgentState::Online
}

/// `[settings]` of a fleet file; CLI flags override them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Simulated seconds per real second.
    pub speed: Option<f64>,
    /// Wall-clock ms after SendCommand during which invocations are invisible.
    pub invocation_visibility_ms: Option<u64>,
    /// Simulated seconds an online instance's invocation stays Pending before InProgress.
    pub pending_seconds: Option<u64>,
    /// Seed of the PRNG used by fractional faults.
    pub fault_seed: Option<u64>,
}

/// `[organization]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgFile {
    /// Organization id, `o-...`.
    #[serde(default = "default_org_id")]
    pub id: String,
    /// Root id, `r-...`.
    pub root_id: String,
    /// OUs, each with its parent (root id or another OU id).
    #[serde(default)]
    pub ous: Vec<OuFile>,
}

fn default_org_id() -> String {
    "o-fleetsim01".to_string()
}

/// One `[[organization.ous]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OuFile {
    /// `ou-...`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Parent id (root or OU).
    pub parent: String,
}

/// One `[[accounts]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountFile {
    /// 12-digit id.
    pub id: String,
    /// Account name.
    pub name: String,
    /// Email; defaults to `NAME@example.com`.
    pub email: Option<String>,
    /// Parent (root or OU id); defaults to the root.
    pub parent: Option<String>,
    /// ACTIVE, SUSPENDED or PENDING_CLOSURE (only ACTIVE accounts can be assumed into).
    #[serde(default = "default_status")]
    pub status: String,
    /// Role names that can be assumed in this account (empty: no execution role).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Not a member of the organization (Organizations does not list it, and IAM sees no
    /// `aws:ResourceOrgID` for its roles).
    #[serde(default)]
    pub outside_organization: bool,
}

/// Account statuses Organizations reports (`Status`; `State` has the same values here).
pub const ACCOUNT_STATUSES: [&str; 3] = ["ACTIVE", "SUSPENDED", "PENDING_CLOSURE"];

/// The Region codes served under `/aws/service/global-infrastructure/regions` unless the
/// fleet file lists its own (`aws_regions`): AWS's Regions, commercial, GovCloud and China.
pub const AWS_REGIONS: [&str; 38] = [
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

fn default_status() -> String {
    "ACTIVE".to_string()
}

/// One `[[groups]]`: declares a (possibly empty) resource group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
    /// Group name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// One `[[instances]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFile {
    /// `i-...` (EC2) or `mi-...` (hybrid).
    pub id: String,
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
    /// Linux or Windows.
    #[serde(default)]
    pub platform: Platform,
    /// Agent state.
    #[serde(default = "default_agent")]
    pub agent: AgentState,
    /// Outcome of RunPatchBaseline.
    #[serde(default = "default_behaviour")]
    pub install: Behaviour,
    /// Simulated seconds RunPatchBaseline runs.
    #[serde(default = "default_duration")]
    pub duration: u64,
    /// Missing patches before any Install.
    #[serde(default)]
    pub missing: u32,
    /// Installed patches.
    #[serde(default)]
    pub installed: u32,
    /// Resource groups (in the instance's account and Region) it belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// SSM patch group tag.
    #[serde(default)]
    pub patch_group: String,
    /// Hooks of AWS-RunPatchBaselineWithHooks that fail on this instance.
    #[serde(default)]
    pub failing_hooks: Vec<HookPoint>,
}

/// One `[[generate]]`: deterministic bulk instances (and optionally accounts).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateFile {
    /// Existing accounts to fill.
    #[serde(default)]
    pub account_ids: Vec<String>,
    /// Number of new accounts to create (ids from `first_account_id` upward).
    #[serde(default)]
    pub accounts: u32,
    /// First id of generated accounts.
    #[serde(default = "default_first_account")]
    pub first_account_id: u64,
    /// Parent of generated accounts (defaults to root).
    pub parent: Option<String>,
    /// Whether generated accounts have the execution role.
    #[serde(default = "default_true")]
    pub with_role: bool,
    /// Regions.
    pub regions: Vec<String>,
    /// Group name.
    pub group: String,
    /// Instances per (account, Region) group.
    pub instances_per_group: u32,
    /// Percent of instances whose Install fails.
    #[serde(default)]
    pub fail_percent: f64,
    /// Percent of instances that are offline (connection_lost).
    #[serde(default)]
    pub offline_percent: f64,
    /// Percent that hit Execution Timed Out.
    #[serde(default)]
    pub timeout_percent: f64,
    /// Percent that need a reboot.
    #[serde(default)]
    pub reboot_percent: f64,
    /// Percent of Windows instances.
    #[serde(default)]
    pub windows_percent: f64,
    /// Max missing patches per instance (uniform 0..=max).
    #[serde(default = "default_max_missing")]
    pub max_missing: u32,
    /// Min/max duration in simulated seconds.
    #[serde(default = "default_min_duration")]
    pub min_duration: u64,
    /// Max duration in simulated seconds.
    #[serde(default = "default_duration")]
    pub max_duration: u64,
    /// PRNG seed.
    #[serde(default)]
    pub seed: u64,
}

fn default_first_account() -> u64 {
    700_000_000_000
}
fn default_max_missing() -> u32 {
    12
}
fn default_min_duration() -> u64 {
    60
}

/// The whole fleet file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// Management (organization) account id; non-assumed callers act in it.
    pub management_account: String,
    /// Default role name given to generated accounts.
    #[serde(default = "default_role")]
    pub execution_role: String,
    /// Settings overridable on the CLI.
    #[serde(default)]
    pub settings: Settings,
    /// The Regions AWS lists (SSM public parameters); default [`AWS_REGIONS`].
    pub aws_regions: Option<Vec<String>>,
    /// Organization; absent = AWSOrganizationsNotInUseException.
    pub organization: Option<OrgFile>,
    /// Accounts.
    #[serde(default)]
    pub accounts: Vec<AccountFile>,
    /// Extra (possibly empty) groups.
    #[serde(default)]
    pub groups: Vec<GroupFile>,
    /// Explicit instances.
    #[serde(default)]
    pub instances: Vec<InstanceFile>,
    /// Generated instances.
    #[serde(default)]
    pub generate: Vec<GenerateFile>,
    /// Faults active from the start.
    #[serde(default)]
    pub faults: Vec<FaultRule>,
    /// SSM documents of the accounts (the hook documents; AWS-owned ones exist everywhere).
    #[serde(default)]
    pub documents: Vec<DocumentFile>,
}

fn default_role() -> String {
    "AWS-SystemsManager-AutomationExecutionRole".to_string()
}

/// A resource group in one account and Region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Member instance ids, in file order.
    pub instances: Vec<String>,
}

/// The validated fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Management account id.
    pub management_account: String,
    /// Organization, if any.
    pub organization: Option<OrgFile>,
    /// Accounts by id (the management account is always present).
    pub accounts: BTreeMap<String, AccountFile>,
    /// Groups by (account, Region, name).
    pub groups: BTreeMap<(String, String, String), Group>,
    /// Instances by id, in insertion order via `order`.
    pub instances: BTreeMap<String, InstanceFile>,
    /// Instance ids in file/generation order.
    pub order: Vec<String>,
    /// Settings.
    pub settings: Settings,
    /// The Regions served under `/aws/service/global-infrastructure/regions`, sorted.
    pub aws_regions: Vec<String>,
    /// Initial faults.
    pub faults: Vec<FaultRule>,
    /// SSM documents by (account, Region, name): their type.
    pub documents: Documents,
}

/// SplitMix64: a tiny deterministic PRNG for fleet generation and fault fractions.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [lo, hi].
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The Region list, sorted and without duplicates: the file's, else every AWS Region.
fn sorted_regions(listed: Option<&[String]>) -> Vec<String> {
    let mut r = listed
        .map(<[String]>::to_vec)
        .unwrap_or_else(|| AWS_REGIONS.iter().map(|r| r.to_string()).collect());
    r.sort();
    r.dedup();
    r
}

/// The root and every OU, once each OU's parent is known to be one of them.
fn parent_ids(org: Option<&OrgFile>) -> Result<BTreeSet<String>, FleetError> {
    let Some(org) = org else {
        return Ok(BTreeSet::new());
    };

    let mut ids: BTreeSet<String> = org.ous.iter().map(|o| o.id.clone()).collect();
    ids.insert(org.root_id.clone());
    for ou in &org.ous {
        if !ids.contains(&ou.parent) {
            return Err(FleetError::Invalid(format!(
                "OU {} has unknown parent {}",
                ou.id, ou.parent
            )));
        }
    }
    Ok(ids)
}

/// The management account, when the file does not list it.
fn management_account(id: &str) -> AccountFile {
    AccountFile {
        id: id.to_string(),
        name: "management".to_string(),
        email: None,
        parent: None,
        status: default_status(),
        roles: Vec::new(),
        outside_organization: false,
    }
}

/// A generated instance's agent and install behaviour from a roll in [0, 100): the
/// percentages take consecutive slices (offline, fail, timeout, reboot); the rest succeed.
fn generated_outcome(roll: f64, gen: &GenerateFile) -> (AgentState, Behaviour) {
    let offline = gen.offline_percent;
    let fail = offline + gen.fail_percent;
    let timeout = fail + gen.timeout_percent;
    let reboot = timeout + gen.reboot_percent;

    if roll < offline {
        (AgentState::ConnectionLost, Behaviour::Succeed)
    } else if roll < fail {
        (AgentState::Online, Behaviour::Fail)
    } else if roll < timeout {
        (AgentState::Online, Behaviour::ExecutionTimeout)
    } else if roll < reboot {
        (AgentState::Online, Behaviour::NeedsReboot)
    } else {
        (AgentState::Online, Behaviour::Succeed)
    }
}

impl Fleet {
    /// Reads and validates a fleet file.
    pub fn load(path: &Path) -> Result<Self, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates fleet TOML.
    pub fn from_toml(text: &str) -> Result<Self, FleetError> {
        let file: FleetFile = toml::from_str(text)?;
        Self::build(file)
    }

    /// Builds the fleet from a parsed file (expanding `[[generate]]`).
    pub fn build(file: FleetFile) -> Result<Self, FleetError> {
        let mut fleet = Fleet {
            management_account: file.management_account.clone(),
            organization: file.organization.clone(),
            accounts: BTreeMap::new(),
            groups: BTreeMap::new(),
            instances: BTreeMap::new(),
            order: Vec::new(),
            settings: file.settings.clone(),
            aws_regions: sorted_regions(file.aws_regions.as_deref()),
            faults: file.faults.clone(),
            documents: Documents::new(),
        };
        let parent_ids = parent_ids(file.organization.as_ref())?;

        for acct in &file.accounts {
            fleet.add_account(acct.clone(), &parent_ids)?;
        }
        if !fleet.accounts.contains_key(&file.management_account) {
            fleet.add_account(management_account(&file.management_account), &parent_ids)?;
        }
        for g in &file.groups {
            fleet.add_group(g)?;
        }
        for inst in &file.instances {
            fleet.add_instance(inst.clone())?;
        }
        for (n, gen) in file.generate.iter().enumerate() {
            fleet.generate(n, gen, &file.execution_role, &parent_ids)?;
        }
        for d in &file.documents {
            fleet.ensure_account(&d.account)?;
            let key = (d.account.clone(), d.region.clone(), d.name.clone());
            fleet.documents.insert(key, d.document_type.clone());
        }
        Ok(fleet)
    }

    /// A group as the file describes it; its instances come from the instances' `groups`.
    fn add_group(&mut self, g: &GroupFile) -> Result<(), FleetError> {
        self.ensure_account(&g.account)?;
        self.groups
            .entry((g.account.clone(), g.region.clone(), g.name.clone()))
            .or_insert_with(|| Group {
                name: g.name.clone(),
                description: g.description.clone(),
                instances: Vec::new(),
            })
            .description = g.description.clone();
        Ok(())
    }

    fn ensure_account(&self, id: &str) -> Result<(), FleetError> {
        if self.accounts.contains_key(id) {
            Ok(())
        } else {
            Err(FleetError::Invalid(format!("unknown account {id}")))
        }
    }

    fn add_account(
        &mut self,
        mut acct: AccountFile,
        parents: &BTreeSet<String>,
    ) -> Result<(), FleetError> {
        if acct.id.len() != 12 || !acct.id.chars().all(|c| c.is_ascii_digit()) {
            return Err(FleetError::Invalid(format!(
                "account id {} is not 12 digits",
                acct.id
            )));
        }
        if !ACCOUNT_STATUSES.contains(&acct.status.as_str()) {
            return Err(FleetError::Invalid(format!(
                "account {} status must be ACTIVE, SUSPENDED or PENDING_CLOSURE",
                acct.id
            )));
        }
        if let Some(p) = &acct.parent {
            if !parents.contains(p) {
                return Err(FleetError::Invalid(format!(
                    "account {} has unknown parent {p}",
                    acct.id
                )));
            }
        }
        if self.accounts.contains_key(&acct.id) {
            return Err(FleetError::Invalid(format!(
                "duplicate account {}",
                acct.id
            )));
        }
        if acct.email.is_none() {
            acct.email = Some(format!("{}@example.com", acct.name));
        }
        self.accounts.insert(acct.id.clone(), acct);
        Ok(())
    }

    fn add_instance(&mut self, inst: InstanceFile) -> Result<(), FleetError> {
        self.ensure_account(&inst.account)?;
        let valid_id = (inst.id.starts_with("i-") && inst.id.len() > 2)
            || (inst.id.starts_with("mi-") && inst.id.len() > 3);
        if !valid_id {
            return Err(FleetError::Invalid(format!(
                "instance id {} must start with i- or mi-",
                inst.id
            )));
        }
        if self.aws_regions.binary_search(&inst.region).is_err() {
            return Err(FleetError::Invalid(format!(
                "instance {} is in {}, which is not an AWS Region (aws_regions)",
                inst.id, inst.region
            )));
        }
        if self.instances.contains_key(&inst.id) {
            return Err(FleetError::Invalid(format!(
                "duplicate instance {}",
                inst.id
            )));
        }
        for g in &inst.groups {
            self.groups
                .entry((inst.account.clone(), inst.region.clone(), g.clone()))
                .or_insert_with(|| Group {
                    name: g.clone(),
                    description: String::new(),
                    instances: Vec::new(),
                })
                .instances
                .push(inst.id.clone());
        }
        self.order.push(inst.id.clone());
        self.instances.insert(inst.id.clone(), inst);
        Ok(())
    }

    /// Expands one `[[generate]]` entry: its accounts (created unless they exist), then
    /// `instances_per_group` instances per account and Region. The same seed gives the same
    /// fleet: the random draws are taken in a fixed order.
    fn generate(
        &mut self,
        index: usize,
        gen: &GenerateFile,
        role: &str,
        parents: &BTreeSet<String>,
    ) -> Result<(), FleetError> {
        let mut rng = SplitMix64::new(gen.seed ^ ((index as u64) << 32));
        let accounts = self.generate_accounts(index, gen, role, parents)?;

        for account in &accounts {
            for region in &gen.regions {
                for _ in 0..gen.instances_per_group {
                    let inst = self.generated_instance(&mut rng, gen, account, region);
                    self.add_instance(inst)?;
                }
            }
        }
        Ok(())
    }

    /// `account_ids`, then `accounts` new ones numbered from `first_account_id`.
    fn generate_accounts(
        &mut self,
        index: usize,
        gen: &GenerateFile,
        role: &str,
        parents: &BTreeSet<String>,
    ) -> Result<Vec<String>, FleetError> {
        let mut accounts = gen.account_ids.clone();
        for n in 0..gen.accounts {
            let id = format!("{:012}", gen.first_account_id + u64::from(n));
            if !self.accounts.contains_key(&id) {
                self.add_account(
                    AccountFile {
                        id: id.clone(),
                        name: format!("generated-{}-{:03}", index, n + 1),
                        email: None,
                        parent: gen.parent.clone(),
                        status: default_status(),
                        outside_organization: false,
                        roles: if gen.with_role {
                            vec![role.to_string()]
                        } else {
                            Vec::new()
                        },
                    },
                    parents,
                )?;
            }
            accounts.push(id);
        }
        Ok(accounts)
    }

    /// One generated instance. The draws, in order: a fresh ID, its outcome, its platform,
    /// its missing and installed counts, its duration.
    fn generated_instance(
        &self,
        rng: &mut SplitMix64,
        gen: &GenerateFile,
        account: &str,
        region: &str,
    ) -> InstanceFile {
        let id = loop {
            let id = format!("i-{:017x}", rng.next_u64() >> 4);
            if !self.instances.contains_key(&id) {
                break id;
            }
        };
        let (agent, install) = generated_outcome(rng.next_f64() * 100.0, gen);
        let platform = if rng.next_f64() * 100.0 < gen.windows_percent {
            Platform::Windows
        } else {
            Platform::Linux
        };
        let missing = rng.range(0, u64::from(gen.max_missing)) as u32;
        let installed = rng.range(50, 400) as u32;
        let duration = rng.range(gen.min_duration, gen.max_duration.max(gen.min_duration));

        InstanceFile {
            id,
            account: account.to_string(),
            region: region.to_string(),
            platform,
            agent,
            install,
            duration,
            missing,
            installed,
            groups: vec![gen.group.clone()],
            patch_group: String::new(),
            failing_hooks: Vec::new(),
        }
    }

    /// The instance `id` if it lives in `account`/`region`.
    pub fn instance_in(&self, id: &str, account: &str, region: &str) -> Option<&InstanceFile> {
        self.instances
            .get(id)
            .filter(|i| i.account == account && i.region == region)
    }

    /// Instances of one account/Region in fleet order.
    pub fn instances_at<'a>(
        &'a self,
        account: &'a str,
        region: &'a str,
    ) -> impl Iterator<Item = &'a InstanceFile> + 'a {
        self.order
            .iter()
            .filter_map(|id| self.instances.get(id))
            .filter(move |i| i.account == account && i.region == region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEN: &str = r#"
management_account = "111111111111"
[organization]
root_id = "r-abcd"
[[generate]]
accounts = 2
regions = ["us-east-1", "eu-west-1"]
group = "g"
instances_per_group = 50
fail_percent = 10
offline_percent = 10
seed = 42
"#;

    #[test]
    fn generation_is_deterministic_and_sized() {
        let a = Fleet::from_toml(GEN).expect("fleet");
        let b = Fleet::from_toml(GEN).expect("fleet");
        assert_eq!(a.order, b.order);
        assert_eq!(a.instances.len(), 200);
        // 2 generated accounts + the implicit management account
        assert_eq!(a.accounts.len(), 3);
        let g = &a.groups[&("700000000000".into(), "eu-west-1".into(), "g".into())];
        assert_eq!(g.instances.len(), 50);
        let offline = a
            .instances
            .values()
            .filter(|i| i.agent == AgentState::ConnectionLost)
            .count();
        assert!(
            offline > 5 && offline < 40,
            "about 10% offline, got {offline}"
        );
    }

    #[test]
    fn rejects_unknown_account_and_parent() {
        let bad = r#"
management_account = "111111111111"
[[instances]]
id = "i-1"
account = "999999999999"
region = "us-east-1"
"#;
        assert!(matches!(Fleet::from_toml(bad), Err(FleetError::Invalid(_))));
        let bad_parent = r#"
management_account = "111111111111"
[organization]
root_id = "r-x"
[[accounts]]
id = "222222222222"
name = "a"
parent = "ou-nope"
"#;
        assert!(matches!(
            Fleet::from_toml(bad_parent),
            Err(FleetError::Invalid(_))
        ));
    }
}
