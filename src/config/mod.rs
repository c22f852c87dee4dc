//! Configuration: load (TOML file + `CODEARTS_EXPORTER_*` env), defaults, validation.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::schedule::{self, Schedule};

/// Default listen port of the exporter's HTTP server.
pub const DEFAULT_PORT: u16 = 9732;
/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "CODEARTS_EXPORTER_";
/// Bounds of `codearts.max_requests_per_second`: one request an hour to no limit worth the name.
const MIN_RATE: f64 = 1.0 / 3600.0;
const MAX_RATE: f64 = 10_000.0;
/// Most retries of one request: more only delays the next poll.
const MAX_RETRIES: u32 = 10;
/// Interval of a target whose schedule cannot be read (validation rules that out).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Smallest `codearts.max_response_bytes`: below it, legitimate pages would be refused (the
/// largest measured, a pipeline-list page of 50, is about 140 KB).
const MIN_RESPONSE_BYTES: u64 = 256 * 1024;

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed into the expected shape.
    #[error("{0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("invalid value for `{key}`: {problem}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `targets[0].schedule`.
        key: String,
        /// What is wrong, in words a user can act on.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A secret string: printed as `***` by Debug, Display and Serialize.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is sent to the API.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where and how to reach CodeArts.
    #[serde(default)]
    pub codearts: CodeArtsConfig,
    /// Credentials.
    pub auth: AuthConfig,
    /// Metric shaping (buckets).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// What to poll.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Which share of the pipelines this replica polls.
    #[serde(default)]
    pub sharding: ShardingConfig,
}

/// `[sharding]`: `count` replicas split the pipelines between them by a stable hash of the
/// pipeline id; this one polls those of share `index`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShardingConfig {
    /// This replica's share, from 0.
    #[serde(default)]
    pub index: u32,
    /// Number of replicas; 1 polls everything.
    #[serde(default = "default_shard_count")]
    pub count: u32,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        ShardingConfig { index: 0, count: 1 }
    }
}

fn default_shard_count() -> u32 {
    1
}

impl ShardingConfig {
    /// Parses `N/M` (share N of M, N from 0), as `--shard` takes it.
    pub fn parse(text: &str) -> Result<ShardingConfig, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not N/M (e.g. 0/3)"))?;
        let number = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("{text:?} is not N/M (e.g. 0/3)"))
        };
        let sharding = ShardingConfig {
            index: number(index)?,
            count: number(count)?,
        };
        sharding.check().map_err(|(_, problem)| problem)?;
        Ok(sharding)
    }

    /// The key and the problem, if the share is impossible.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.count == 0 {
            return Err(("sharding.count", "must be at least 1".to_string()));
        }
        if self.index >= self.count {
            return Err((
                "sharding.index",
                format!(
                    "{} must be below sharding.count ({})",
                    self.index, self.count
                ),
            ));
        }
        Ok(())
    }

    /// Whether this replica polls `pipeline_id`: the first 8 bytes of its SHA-256, modulo
    /// `count`, equal `index`. Stable across versions, platforms and restarts.
    pub fn owns(&self, pipeline_id: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        let digest = Sha256::digest(pipeline_id.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index)
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the /metrics server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}

/// `[codearts]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CodeArtsConfig {
    /// Huawei Cloud region, e.g. `cn-north-4`; endpoints derive from it.
    #[serde(default = "default_region")]
    pub region: String,
    /// Override of the CodeArts Pipeline endpoint (scheme + host[:port]).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Override of the IAM endpoint.
    #[serde(default)]
    pub iam_endpoint: Option<String>,
    /// Per-request time-out.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Time-out of establishing a connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// UTC offset of the zone-less `yyyy-MM-dd HH:mm:ss` times (v3 API, stage times).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Requests per second to CodeArts at most, over all targets.
    #[serde(default = "default_max_requests_per_second")]
    pub max_requests_per_second: f64,
    /// Requests to CodeArts in flight at once at most, over all targets.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Retries of a request after a 429, 5xx, time-out or connection error.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First wait before a retry; doubles with each retry, with jitter.
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest wait before a retry, whatever the backoff or `Retry-After` says.
    #[serde(default = "default_max_retry_wait", with = "humantime_serde")]
    pub max_retry_wait: Duration,
    /// Largest API answer read, in bytes; a larger one is abandoned and counted as `too_large`.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

impl Default for CodeArtsConfig {
    fn default() -> Self {
        CodeArtsConfig {
            region: default_region(),
            endpoint: None,
            iam_endpoint: None,
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            time_zone: default_time_zone(),
            max_requests_per_second: default_max_requests_per_second(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_retries: default_max_retries(),
            retry_backoff: default_retry_backoff(),
            max_retry_wait: default_max_retry_wait(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

fn default_region() -> String {
    "cn-north-4".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_time_zone() -> String {
    "+08:00".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
/// The vendor publishes no limit, and its gateway answers 429 when exceeded. 25 a second covers a
/// steady poll of 10,000 pipelines (about 230 requests) in under 10 s.
fn default_max_requests_per_second() -> f64 {
    25.0
}
fn default_max_concurrent_requests() -> usize {
    8
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_retry_wait() -> Duration {
    Duration::from_secs(30)
}
/// 7 times the largest page measured on the simulator (a pipeline-list page of 50 pipelines of
/// 14 stages: about 140 KB), and small enough that decoding an answer of this size costs about
/// 9 MiB (tests/page_sizes.rs).
fn default_max_response_bytes() -> u64 {
    1024 * 1024
}

impl CodeArtsConfig {
    /// The CodeArts Pipeline base URL: the override, or the region's documented host.
    pub fn pipeline_endpoint(&self) -> String {
        if let Some(endpoint) = &self.endpoint {
            return endpoint.trim_end_matches('/').to_string();
        }
        let region = self.region.as_str();
        let host = match region {
            "tr-west-1" | "la-south-2" => format!("pipeline-external.{region}.myhuaweicloud.com"),
            "af-north-1" | "me-east-1" | "af-south-1" => {
                format!("pipeline.{region}.myhuaweicloud.com")
            }
            _ => format!("cloudpipeline-ext.{region}.myhuaweicloud.com"),
        };
        format!("https://{host}")
    }

    /// The IAM base URL: the override, or `iam.{region}.myhuaweicloud.com`.
    pub fn iam_endpoint(&self) -> String {
        match &self.iam_endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None => format!("https://iam.{}.myhuaweicloud.com", self.region),
        }
    }

    /// The configured zone of zone-less times, parsed (validated at load).
    pub fn fixed_offset(&self) -> chrono::FixedOffset {
        parse_offset(&self.time_zone)
            .unwrap_or_else(|| chrono::FixedOffset::east_opt(8 * 3600).unwrap_or(chrono::Utc.fix()))
    }
}

use chrono::Offset as _;

fn parse_offset(text: &str) -> Option<chrono::FixedOffset> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return chrono::FixedOffset::east_opt(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    chrono::FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// How the exporter authenticates.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// A static IAM token sent as `X-Auth-Token` (valid 24 hours).
    Token,
    /// IAM user name and password, exchanged for tokens that are refreshed ahead of expiry.
    Password,
    /// Access key / secret key: every request signed with `SDK-HMAC-SHA256`.
    Aksk,
}

impl AuthMethod {
    fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Token => "token",
            AuthMethod::Password => "password",
            AuthMethod::Aksk => "aksk",
        }
    }
}

/// `[auth]`: the keys of the chosen method; secrets may also come from `*_file` paths.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Which method (see [`AuthMethod`]).
    pub method: AuthMethod,
    /// `token`: the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// `token`: a file holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// `aksk`: access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ak: Option<String>,
    /// `aksk`: secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk: Option<Secret>,
    /// `aksk`: a file holding the secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk_file: Option<PathBuf>,
    /// `aksk`: IAM project id, sent as `X-Project-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// `aksk`: security token of temporary credentials, sent as `X-Security-Token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_token: Option<Secret>,
    /// `aksk`: a file holding the security token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_token_file: Option<PathBuf>,
    /// `password`: IAM user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `password`: the user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// `password`: a file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// `password`: account (domain) name the user belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `password`: scope by IAM project name (e.g. `cn-north-4`) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    /// `password`: ... or by IAM project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_project_id: Option<String>,
}

impl AuthConfig {
    /// Static token credentials (used by tests and the demo).
    pub fn token(token: &str) -> AuthConfig {
        AuthConfig {
            method: AuthMethod::Token,
            token: Some(Secret::new(token)),
            ..AuthConfig::empty(AuthMethod::Token)
        }
    }

    /// No credentials set for `method`.
    pub fn empty(method: AuthMethod) -> AuthConfig {
        AuthConfig {
            method,
            token: None,
            token_file: None,
            ak: None,
            sk: None,
            sk_file: None,
            project_id: None,
            security_token: None,
            security_token_file: None,
            username: None,
            password: None,
            password_file: None,
            domain: None,
            project_name: None,
            iam_project_id: None,
        }
    }

    /// Reads every `*_file` secret into its value, so the rest of the program sees one value.
    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        let pairs = [
            ("auth.token", &mut self.token, &self.token_file),
            ("auth.sk", &mut self.sk, &self.sk_file),
            ("auth.password", &mut self.password, &self.password_file),
            (
                "auth.security_token",
                &mut self.security_token,
                &self.security_token_file,
            ),
        ];
        for (key, value, file) in pairs {
            let Some(path) = file else { continue };
            if value.is_some() {
                return Err(invalid(
                    format!("{key}_file"),
                    format!("set either `{key}` or `{key}_file`, not both"),
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|err| {
                invalid(
                    format!("{key}_file"),
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            *value = Some(Secret::new(text.trim()));
        }
        Ok(())
    }

    /// Checks that the chosen method has what it needs and nothing of another method.
    fn validate(&self) -> Result<(), ConfigError> {
        let method = self.method.as_str();
        let required_secret = |key: &str, value: &Option<Secret>| -> Result<(), ConfigError> {
            match value {
                None => Err(invalid(
                    key,
                    format!(
                        "missing: method \"{method}\" needs `{key}` or `{key}_file` (or {ENV_PREFIX}{})",
                        key.replace('.', "__").to_ascii_uppercase()
                    ),
                )),
                Some(secret) if secret.expose().trim().is_empty() => Err(invalid(key, "is empty")),
                Some(_) => Ok(()),
            }
        };
        let required = |key: &str, value: &Option<String>| -> Result<(), ConfigError> {
            match value.as_deref().map(str::trim) {
                None => Err(invalid(
                    key,
                    format!("missing: method \"{method}\" needs it"),
                )),
                Some("") => Err(invalid(key, "is empty")),
                Some(_) => Ok(()),
            }
        };
        let set = |present: bool, key: &str, owner: &str| -> Result<(), ConfigError> {
            if present {
                Err(invalid(
                    key,
                    format!("is only used with method \"{owner}\", but method is \"{method}\""),
                ))
            } else {
                Ok(())
            }
        };
        let token_keys = [("auth.token", self.token.is_some())];
        let aksk_keys = [
            ("auth.ak", self.ak.is_some()),
            ("auth.sk", self.sk.is_some()),
            ("auth.project_id", self.project_id.is_some()),
            ("auth.security_token", self.security_token.is_some()),
        ];
        let password_keys = [
            ("auth.username", self.username.is_some()),
            ("auth.password", self.password.is_some()),
            ("auth.domain", self.domain.is_some()),
            ("auth.project_name", self.project_name.is_some()),
            ("auth.iam_project_id", self.iam_project_id.is_some()),
        ];
        let others: Vec<(&str, bool, &str)> = match self.method {
            AuthMethod::Token => {
                required_secret("auth.token", &self.token)?;
                aksk_keys
                    .iter()
                    .map(|(k, p)| (*k, *p, "aksk"))
                    .chain(password_keys.iter().map(|(k, p)| (*k, *p, "password")))
                    .collect()
            }
            AuthMethod::Aksk => {
                required("auth.ak", &self.ak)?;
                required_secret("auth.sk", &self.sk)?;
                if let Some(id) = &self.project_id {
                    check_id("auth.project_id", id)?;
                }
                token_keys
                    .iter()
                    .map(|(k, p)| (*k, *p, "token"))
                    .chain(password_keys.iter().map(|(k, p)| (*k, *p, "password")))
                    .collect()
            }
            AuthMethod::Password => {
                required("auth.username", &self.username)?;
                required_secret("auth.password", &self.password)?;
                required("auth.domain", &self.domain)?;
                match (&self.project_name, &self.iam_project_id) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "auth.iam_project_id",
                            "set either `auth.project_name` or `auth.iam_project_id`, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            "auth.project_name",
                            "missing: method \"password\" needs a scope: `auth.project_name` (e.g. \"cn-north-4\") or `auth.iam_project_id`",
                        ));
                    }
                    (Some(name), None) => required("auth.project_name", &Some(name.clone()))?,
                    (None, Some(id)) => check_id("auth.iam_project_id", id)?,
                }
                token_keys
                    .iter()
                    .map(|(k, p)| (*k, *p, "token"))
                    .chain(aksk_keys.iter().map(|(k, p)| (*k, *p, "aksk")))
                    .collect()
            }
        };
        for (key, present, owner) in others {
            set(present, key, owner)?;
        }
        Ok(())
    }
}

/// `[metrics]`: what detail the pipeline families carry, traded against their series. An empty
/// bucket list leaves a histogram its `_sum`, `_count` and `+Inf` bucket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Buckets (seconds) of `codearts_pipeline_run_duration_seconds`.
    #[serde(default = "default_run_buckets")]
    pub run_duration_buckets: Vec<f64>,
    /// Buckets (seconds) of `codearts_pipeline_stage_duration_seconds`.
    #[serde(default = "default_stage_buckets")]
    pub stage_duration_buckets: Vec<f64>,
    /// Buckets (seconds) of `codearts_pipeline_run_queue_seconds` (none by default).
    #[serde(default)]
    pub queue_duration_buckets: Vec<f64>,
    /// Expose `codearts_pipeline_stage_status`, the one-hot state of every stage of the latest
    /// run (six series per stage).
    #[serde(default)]
    pub stage_status: bool,
    /// Observe every job of each recorded run (one run-detail request per run).
    #[serde(default)]
    pub jobs: bool,
    /// Buckets (seconds) of `codearts_pipeline_job_duration_seconds`.
    #[serde(default = "default_job_buckets")]
    pub job_duration_buckets: Vec<f64>,
    /// Extra labels of the run histogram and counter.
    #[serde(default)]
    pub run_labels: Vec<RunLabel>,
    /// Branches kept as `branch` label values; every other branch is `other`.
    #[serde(default = "default_branches")]
    pub branches: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            run_duration_buckets: default_run_buckets(),
            stage_duration_buckets: default_stage_buckets(),
            queue_duration_buckets: Vec::new(),
            stage_status: false,
            jobs: false,
            job_duration_buckets: default_job_buckets(),
            run_labels: Vec::new(),
            branches: default_branches(),
        }
    }
}

/// An optional label of `codearts_pipeline_run_duration_seconds` and `codearts_pipeline_runs_total`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RunLabel {
    /// What started the run, from a fixed vocabulary.
    TriggerType,
    /// The branch built, collapsed to `other` outside `metrics.branches`.
    Branch,
}

impl RunLabel {
    /// The label name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunLabel::TriggerType => "trigger_type",
            RunLabel::Branch => "branch",
        }
    }
}

/// 5 s to 1 h: jobs are parts of stages.
fn default_job_buckets() -> Vec<f64> {
    vec![5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]
}

fn default_branches() -> Vec<String> {
    vec!["main".into(), "master".into()]
}

/// 1 min to 2 h in 8 buckets: the span of typical CI/CD runs, within the series budget (each
/// bucket is 3 series per pipeline, one per result).
fn default_run_buckets() -> Vec<f64> {
    vec![60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0]
}

/// 30 s to 1 h in 6 buckets: stages are shorter than whole runs, and each bucket is one series
/// per stage.
fn default_stage_buckets() -> Vec<f64> {
    vec![30.0, 60.0, 120.0, 300.0, 900.0, 3600.0]
}

/// Which batch status API a target polls.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StatusApi {
    /// `POST /v5/{project_id}/api/pipelines/status` (current).
    #[default]
    V5,
    /// `GET /v3/pipelines/status` (older).
    V3,
}

/// One `[[targets]]` entry: pipelines of one CodeArts project polled on one schedule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Name used in the `target` label; defaults to the project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// CodeArts project id (32 chars).
    pub project_id: String,
    /// Pipelines to poll (32 chars each).
    #[serde(default)]
    pub pipeline_ids: Vec<String>,
    /// Cron expression with seconds (6 fields), e.g. `*/30 * * * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Plain interval, e.g. `30s`; exclusive with `schedule`.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// IANA time zone the cron `schedule` is read in; UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_time_zone: Option<String>,
    /// How long one poll may take before it is cut short and counted as failed; by default the
    /// schedule's period, and never less than `codearts.timeout`.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll_timeout: Option<Duration>,
    /// Batch status API version.
    #[serde(default)]
    pub status_api: StatusApi,
    /// Pipeline ids per batch status call.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// At start-up, runs that ended longer ago than this are not put in histograms.
    #[serde(default = "default_backfill_window", with = "humantime_serde")]
    pub backfill_window: Duration,
    /// Also poll the pipelines the project's pipeline list returns.
    #[serde(default)]
    pub discover: bool,
    /// Discovery keeps pipelines whose name matches this (unanchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Pattern>,
    /// Discovery drops pipelines whose name matches this (unanchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Pattern>,
    /// Discovery keeps pipelines carrying at least one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// How often discovery reads the pipeline list again.
    #[serde(default = "default_discover_every", with = "humantime_serde")]
    pub discover_every: Duration,
    /// Series of a pipeline no longer polled (or no longer found) are removed after this.
    #[serde(default = "default_gc_after", with = "humantime_serde")]
    pub gc_after: Duration,
}

fn default_chunk_size() -> usize {
    50
}
fn default_backfill_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_discover_every() -> Duration {
    Duration::from_secs(600)
}
fn default_gc_after() -> Duration {
    Duration::from_secs(600)
}

/// A regular expression, compiled when the configuration is read (so a bad one names its key).
#[derive(Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// Compiles `text`; the error is one line.
    pub fn new(text: &str) -> Result<Pattern, String> {
        regex::Regex::new(text).map(Pattern).map_err(|err| {
            // regex's message spans several lines (the pattern, a caret, the error): keep the error.
            let message = err.to_string();
            let reason = message
                .lines()
                .rev()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("invalid")
                .trim_start_matches("error: ")
                .to_string();
            format!("{text:?} is not a valid regular expression: {reason}")
        })
    }

    /// Whether the expression matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::new(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl TargetConfig {
    /// The value of the `target` label.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.project_id)
    }
}

impl TargetConfig {
    /// The validated schedule (exactly one of `schedule`/`interval` is set after validation).
    pub fn poll_schedule(&self) -> Schedule {
        match (&self.schedule, self.interval) {
            (Some(cron), _) => Schedule::cron(cron, self.schedule_zone())
                .unwrap_or(Schedule::Every(DEFAULT_INTERVAL)),
            (None, Some(every)) => Schedule::Every(every),
            (None, None) => Schedule::Every(DEFAULT_INTERVAL),
        }
    }

    /// The zone of the cron schedule's fields.
    pub fn schedule_zone(&self) -> &str {
        self.schedule_time_zone.as_deref().unwrap_or("UTC")
    }

    /// How long one poll may take: `poll_timeout`, or else the schedule's period, and never
    /// less than the client time-out `codearts_timeout`.
    pub fn poll_deadline(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        codearts_timeout: Duration,
    ) -> Duration {
        self.poll_timeout
            .unwrap_or_else(|| self.poll_schedule().period(now))
            .max(codearts_timeout)
    }
}

impl Config {
    /// Loads `path` (TOML) overridden by `CODEARTS_EXPORTER_*` variables, then validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Parse(format!(
                "configuration file {} does not exist",
                path.display()
            )));
        }
        Self::from_figment(Figment::new().merge(Toml::file_exact(path)))
    }

    /// Loads from a TOML string (plus env overrides); used by tests and the demo.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        let mut config: Config = figment.extract().map_err(describe_figment_error)?;
        config.auth.resolve_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value a parse cannot check; the first problem wins.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.auth.validate()?;
        self.sharding
            .check()
            .map_err(|(key, problem)| invalid(key, problem))?;
        if self.codearts.region.trim().is_empty() {
            return Err(invalid("codearts.region", "is empty"));
        }
        for (key, value) in [
            ("codearts.endpoint", &self.codearts.endpoint),
            ("codearts.iam_endpoint", &self.codearts.iam_endpoint),
        ] {
            if let Some(url) = value {
                check_url(key, url)?;
            }
        }
        if self.codearts.timeout.is_zero() {
            return Err(invalid("codearts.timeout", "must be greater than zero"));
        }
        if self.codearts.connect_timeout.is_zero() {
            return Err(invalid(
                "codearts.connect_timeout",
                "must be greater than zero",
            ));
        }
        let rate = self.codearts.max_requests_per_second;
        if !(rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)) {
            return Err(invalid(
                "codearts.max_requests_per_second",
                format!("{rate} is not between {MIN_RATE} and {MAX_RATE}"),
            ));
        }
        if self.codearts.max_concurrent_requests == 0 {
            return Err(invalid(
                "codearts.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        if self.codearts.max_retries > MAX_RETRIES {
            return Err(invalid(
                "codearts.max_retries",
                format!("{} is more than {MAX_RETRIES}", self.codearts.max_retries),
            ));
        }
        if self.codearts.retry_backoff.is_zero() {
            return Err(invalid(
                "codearts.retry_backoff",
                "must be greater than zero",
            ));
        }
        if self.codearts.max_retry_wait < self.codearts.retry_backoff {
            return Err(invalid(
                "codearts.max_retry_wait",
                "must be at least `codearts.retry_backoff`",
            ));
        }
        if self.codearts.max_response_bytes < MIN_RESPONSE_BYTES {
            return Err(invalid(
                "codearts.max_response_bytes",
                format!(
                    "{} is less than {MIN_RESPONSE_BYTES} (256 KiB)",
                    self.codearts.max_response_bytes
                ),
            ));
        }
        if parse_offset(&self.codearts.time_zone).is_none() {
            return Err(invalid(
                "codearts.time_zone",
                format!(
                    "{:?} is not a UTC offset like \"+08:00\" or \"UTC\"",
                    self.codearts.time_zone
                ),
            ));
        }
        check_buckets(
            "metrics.run_duration_buckets",
            &self.metrics.run_duration_buckets,
        )?;
        check_buckets(
            "metrics.stage_duration_buckets",
            &self.metrics.stage_duration_buckets,
        )?;
        check_buckets(
            "metrics.queue_duration_buckets",
            &self.metrics.queue_duration_buckets,
        )?;
        check_buckets(
            "metrics.job_duration_buckets",
            &self.metrics.job_duration_buckets,
        )?;
        let mut run_labels = HashSet::new();
        for label in &self.metrics.run_labels {
            if !run_labels.insert(label) {
                return Err(invalid(
                    "metrics.run_labels",
                    format!("{:?} is listed twice", label.as_str()),
                ));
            }
        }
        if self.metrics.branches.iter().any(|b| b.trim().is_empty()) {
            return Err(invalid(
                "metrics.branches",
                "branch names must not be empty",
            ));
        }
        if self.targets.is_empty() {
            return Err(invalid(
                "targets",
                "no targets: add at least one [[targets]] with a project_id and pipeline_ids (or discover = true)",
            ));
        }
        let mut labels = HashSet::new();
        for (index, target) in self.targets.iter().enumerate() {
            let key = |field: &str| format!("targets[{index}].{field}");
            check_id(&key("project_id"), &target.project_id)?;
            if target.pipeline_ids.is_empty() && !target.discover {
                return Err(invalid(
                    key("pipeline_ids"),
                    "is empty: list the pipelines to poll, or set `discover = true`",
                ));
            }
            if !target.discover {
                let discovery_keys = [
                    ("include", target.include.is_some()),
                    ("exclude", target.exclude.is_some()),
                    ("tags", !target.tags.is_empty()),
                ];
                if let Some((field, _)) = discovery_keys.iter().find(|(_, set)| *set) {
                    return Err(invalid(key(field), "is only used with `discover = true`"));
                }
            }
            if target.tags.iter().any(|t| t.trim().is_empty()) {
                return Err(invalid(key("tags"), "tag names must not be empty"));
            }
            if target.discover_every < Duration::from_secs(1) {
                return Err(invalid(key("discover_every"), "must be at least 1s"));
            }
            let mut seen = HashSet::new();
            for (i, id) in target.pipeline_ids.iter().enumerate() {
                check_id(&format!("targets[{index}].pipeline_ids[{i}]"), id)?;
                if !seen.insert(id) {
                    return Err(invalid(
                        format!("targets[{index}].pipeline_ids[{i}]"),
                        format!("{id} is listed twice"),
                    ));
                }
            }
            match (&target.schedule, target.interval) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        key("schedule"),
                        "set either `schedule` or `interval`, not both",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        key("schedule"),
                        "missing: set `schedule` (cron with seconds) or `interval` (e.g. \"30s\")",
                    ));
                }
                (Some(cron), None) => {
                    schedule::parse_cron(cron)
                        .map_err(|problem| invalid(key("schedule"), problem))?;
                }
                (None, Some(every)) => {
                    if every < Duration::from_secs(1) {
                        return Err(invalid(key("interval"), "must be at least 1s"));
                    }
                }
            }
            if let Some(zone) = &target.schedule_time_zone {
                if target.schedule.is_none() {
                    return Err(invalid(
                        key("schedule_time_zone"),
                        "is only used with a cron `schedule`",
                    ));
                }
                schedule::parse_zone(zone)
                    .map_err(|problem| invalid(key("schedule_time_zone"), problem))?;
            }
            if let Some(deadline) = target.poll_timeout
                && deadline < self.codearts.timeout
            {
                return Err(invalid(
                    key("poll_timeout"),
                    format!(
                        "{} is less than codearts.timeout ({}): a single request could not finish",
                        humantime::format_duration(deadline),
                        humantime::format_duration(self.codearts.timeout)
                    ),
                ));
            }
            if target.chunk_size == 0 {
                return Err(invalid(key("chunk_size"), "must be at least 1"));
            }
            if target
                .name
                .as_deref()
                .is_some_and(|name| name.trim().is_empty())
            {
                return Err(invalid(key("name"), "is empty"));
            }
            if !labels.insert(target.label().to_string()) {
                return Err(invalid(
                    key("name"),
                    format!(
                        "target name {:?} is used twice; give each target a distinct `name`",
                        target.label()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets shown as `***`.
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|err| format!("# cannot render: {err}\n"))
    }
}

/// Reduces a figment error to one line naming the key.
fn describe_figment_error(err: figment::Error) -> ConfigError {
    let mut lines = Vec::new();
    for e in err {
        let key = e.path.join(".");
        let source = e
            .metadata
            .as_ref()
            .map(|m| match &m.source {
                Some(source) => format!(" (from {source})"),
                None => format!(" (from {})", m.name),
            })
            .unwrap_or_default();
        let kind = e.kind.to_string();
        if key.is_empty() {
            lines.push(format!("{kind}{source}"));
        } else {
            lines.push(format!("invalid value for `{key}`: {kind}{source}"));
        }
    }
    ConfigError::Parse(lines.join("; "))
}

/// CodeArts ids are 32 characters of digits and lower-case letters.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn check_id(key: &str, id: &str) -> Result<(), ConfigError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{id:?} is not a CodeArts id (32 characters of digits and lower-case letters)"),
        ))
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        Ok(_) => Err(invalid(
            key,
            format!("{url:?} must be an http:// or https:// URL"),
        )),
        Err(err) => Err(invalid(key, format!("{url:?} is not a URL: {err}"))),
    }
}

fn check_buckets(key: &str, buckets: &[f64]) -> Result<(), ConfigError> {
    // No buckets is allowed: the histogram keeps its sum and count.
    if buckets.iter().any(|b| !b.is_finite() || *b <= 0.0) {
        return Err(invalid(key, "buckets must be positive numbers"));
    }
    if buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid(key, "buckets must be strictly increasing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = "0123456789abcdef0123456789abcdef";
    const PIPELINE: &str = "fedcba9876543210fedcba9876543210";

    fn minimal(extra_target: &str) -> String {
        format!(
            r#"
[auth]
method = "token"
token = "secret-token-value"
[[targets]]
project_id = "{PROJECT}"
pipeline_ids = ["{PIPELINE}"]
{extra_target}
"#
        )
    }

    fn error_of(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_toml(&minimal("interval = \"30s\"")).expect("valid");
        assert_eq!(config.server.listen.port(), DEFAULT_PORT);
        assert_eq!(config.codearts.region, "cn-north-4");
        assert_eq!(
            config.codearts.pipeline_endpoint(),
            "https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(
            config.codearts.iam_endpoint(),
            "https://iam.cn-north-4.myhuaweicloud.com"
        );
        let target = &config.targets[0];
        assert_eq!(target.status_api, StatusApi::V5);
        assert_eq!(target.label(), PROJECT);
        assert_eq!(
            target.poll_schedule(),
            Schedule::Every(Duration::from_secs(30))
        );
        assert_eq!(config.codearts.fixed_offset().local_minus_utc(), 8 * 3600);
    }

    #[test]
    fn endpoints_follow_the_region_table() {
        let mut c = CodeArtsConfig {
            region: "tr-west-1".into(),
            ..CodeArtsConfig::default()
        };
        assert_eq!(
            c.pipeline_endpoint(),
            "https://pipeline-external.tr-west-1.myhuaweicloud.com"
        );
        c.region = "af-south-1".into();
        assert_eq!(
            c.pipeline_endpoint(),
            "https://pipeline.af-south-1.myhuaweicloud.com"
        );
        c.endpoint = Some("http://127.0.0.1:8080/".into());
        assert_eq!(c.pipeline_endpoint(), "http://127.0.0.1:8080");
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let cases = [
            (minimal("interval = \"30s\"\nbogus = 1"), "bogus"),
            (
                minimal("schedule = \"every minute\""),
                "targets[0].schedule",
            ),
            (
                minimal("schedule = \"0 0 25 * * *\""),
                "targets[0].schedule",
            ),
            (minimal(""), "targets[0].schedule"),
            (
                minimal("interval = \"30s\"\nschedule = \"* * * * * *\""),
                "targets[0].schedule",
            ),
            (minimal("interval = \"soon\""), "targets.0.interval"),
            (
                minimal("interval = \"30s\"").replace(PIPELINE, "not-an-id"),
                "targets[0].pipeline_ids[0]",
            ),
            (
                minimal("interval = \"30s\"").replace("token = \"secret-token-value\"", ""),
                "auth.token",
            ),
            (
                "[auth]\nmethod = \"token\"\ntoken = \"x\"\n".to_string(),
                "targets",
            ),
            (
                minimal("interval = \"30s\"").replace("method = \"token\"", "method = \"magic\""),
                "auth.method",
            ),
            (
                minimal("schedule = \"0 * * * * *\"\nschedule_time_zone = \"Mars/Olympus\""),
                "targets[0].schedule_time_zone",
            ),
            (
                minimal("interval = \"30s\"\nschedule_time_zone = \"UTC\""),
                "targets[0].schedule_time_zone",
            ),
            (
                minimal("interval = \"30s\"\npoll_timeout = \"2s\""),
                "targets[0].poll_timeout",
            ),
        ];
        for (text, key) in cases {
            let message = error_of(&text);
            assert!(
                message.contains(&format!("`{key}`")),
                "message {message:?} should name `{key}`"
            );
        }
    }

    #[test]
    fn schedules_and_poll_deadlines_default_sensibly() {
        let now = chrono::Utc::now();
        let timeout = Duration::from_secs(10);
        let config = Config::from_toml(&minimal("interval = \"30s\"")).expect("valid");
        let target = &config.targets[0];
        assert_eq!(target.poll_deadline(now, timeout), Duration::from_secs(30));
        // Never less than a request's time-out.
        let config = Config::from_toml(&minimal("interval = \"2s\"")).expect("valid");
        assert_eq!(config.targets[0].poll_deadline(now, timeout), timeout);
        let text = minimal(
            "schedule = \"0 */5 * * * *\"\nschedule_time_zone = \"Asia/Shanghai\"\npoll_timeout = \"1m\"",
        );
        let config = Config::from_toml(&text).expect("valid");
        let target = &config.targets[0];
        assert_eq!(target.poll_deadline(now, timeout), Duration::from_secs(60));
        assert_eq!(
            target.poll_schedule(),
            Schedule::cron("0 */5 * * * *", "Asia/Shanghai").expect("a schedule")
        );
        let config = Config::from_toml(&minimal("schedule = \"0 */5 * * * *\"")).expect("valid");
        assert_eq!(
            config.targets[0].poll_deadline(now, timeout),
            Duration::from_secs(300),
            "a cron schedule's period"
        );
    }

    #[test]
    fn discovery_and_metric_options_parse_and_default() {
        let config = Config::from_toml(&minimal("interval = \"30s\"")).expect("valid");
        let target = &config.targets[0];
        assert!(!target.discover);
        assert_eq!(target.discover_every, Duration::from_secs(600));
        assert_eq!(target.gc_after, Duration::from_secs(600));
        assert!(!config.metrics.jobs);
        assert!(config.metrics.run_labels.is_empty());
        assert_eq!(config.metrics.branches, ["main", "master"]);

        let text = format!(
            "[auth]\nmethod = \"token\"\ntoken = \"t\"\n\
             [metrics]\njobs = true\nrun_labels = [\"branch\", \"trigger_type\"]\nbranches = [\"develop\"]\n\
             [[targets]]\nproject_id = \"{PROJECT}\"\ninterval = \"30s\"\ndiscover = true\n\
             include = \"^(订单|pay)\"\nexclude = \"(?i)nightly\"\ntags = [\"backend\"]\n\
             discover_every = \"1m\"\ngc_after = \"0s\"\n"
        );
        let config = Config::from_toml(&text).expect("valid");
        let target = &config.targets[0];
        assert!(target.discover && target.pipeline_ids.is_empty());
        let include = target.include.as_ref().expect("include");
        assert!(include.is_match("订单服务-build") && !include.is_match("x-订单"));
        let exclude = target.exclude.as_ref().expect("exclude");
        assert!(exclude.is_match("Nightly build"));
        assert_eq!(target.gc_after, Duration::ZERO);
        assert_eq!(
            config.metrics.run_labels,
            [RunLabel::Branch, RunLabel::TriggerType]
        );
        // The effective configuration prints the expressions as written.
        let rendered = config.redacted_toml();
        assert!(rendered.contains("include = \"^(订单|pay)\""), "{rendered}");
        assert!(rendered.contains("discover = true"), "{rendered}");
    }

    #[test]
    fn discovery_mistakes_name_the_key() {
        let discover = |extra: &str| {
            minimal(&format!("interval = \"30s\"\ndiscover = true\n{extra}"))
                .replace(&format!("pipeline_ids = [\"{PIPELINE}\"]"), "")
        };
        let cases = [
            (discover("include = \"(unclosed\""), "targets.0.include"),
            (discover("exclude = \"[z-a]\""), "targets.0.exclude"),
            (
                discover("discover_every = \"500ms\""),
                "targets[0].discover_every",
            ),
            (discover("gc_after = \"-1s\""), "targets.0.gc_after"),
            (discover("tags = [\"\"]"), "targets[0].tags"),
            (
                minimal("interval = \"30s\"\ninclude = \"x\""),
                "targets[0].include",
            ),
            (
                minimal("interval = \"30s\"\ntags = [\"x\"]"),
                "targets[0].tags",
            ),
            (
                minimal("interval = \"30s\"").replace(&format!("[\"{PIPELINE}\"]"), "[]"),
                "targets[0].pipeline_ids",
            ),
            (
                minimal("interval = \"30s\"").replace(
                    "[[targets]]",
                    "[metrics]\nrun_labels = [\"branch\", \"branch\"]\n[[targets]]",
                ),
                "metrics.run_labels",
            ),
            (
                minimal("interval = \"30s\"").replace(
                    "[[targets]]",
                    "[metrics]\nrun_labels = [\"executor\"]\n[[targets]]",
                ),
                "metrics.run_labels",
            ),
            (
                minimal("interval = \"30s\"").replace(
                    "[[targets]]",
                    "[metrics]\njob_duration_buckets = [5, 1]\n[[targets]]",
                ),
                "metrics.job_duration_buckets",
            ),
        ];
        for (text, key) in cases {
            let message = error_of(&text);
            assert!(
                message.contains(&format!("`{key}")),
                "message {message:?} should name `{key}`"
            );
            assert_eq!(message.lines().count(), 1, "{message:?}");
        }
        assert!(error_of(&discover("include = \"(unclosed\"")).contains("regular expression"));
    }

    #[test]
    fn each_auth_method_needs_its_keys_and_only_them() {
        let with_auth = |auth: &str| {
            format!(
                "{auth}\n[[targets]]\nproject_id = \"{PROJECT}\"\npipeline_ids = [\"{PIPELINE}\"]\ninterval = \"30s\"\n"
            )
        };
        let ok = [
            "[auth]\nmethod = \"aksk\"\nak = \"AK\"\nsk = \"SK\"",
            "[auth]\nmethod = \"aksk\"\nak = \"AK\"\nsk = \"SK\"\nsecurity_token = \"ST\"\nproject_id = \"0123456789abcdef0123456789abcdef\"",
            "[auth]\nmethod = \"password\"\nusername = \"u\"\npassword = \"p\"\ndomain = \"d\"\nproject_name = \"cn-north-4\"",
            "[auth]\nmethod = \"password\"\nusername = \"u\"\npassword = \"p\"\ndomain = \"d\"\niam_project_id = \"0123456789abcdef0123456789abcdef\"",
        ];
        for auth in ok {
            if let Err(err) = Config::from_toml(&with_auth(auth)) {
                panic!("{auth}: {err}");
            }
        }
        let bad = [
            ("[auth]\nmethod = \"aksk\"\nak = \"AK\"", "auth.sk"),
            ("[auth]\nmethod = \"aksk\"\nsk = \"SK\"", "auth.ak"),
            (
                "[auth]\nmethod = \"aksk\"\nak = \"AK\"\nsk = \"SK\"\nproject_id = \"x\"",
                "auth.project_id",
            ),
            (
                "[auth]\nmethod = \"password\"\nusername = \"u\"\npassword = \"p\"\ndomain = \"d\"",
                "auth.project_name",
            ),
            (
                "[auth]\nmethod = \"password\"\nusername = \"u\"\ndomain = \"d\"\nproject_name = \"x\"",
                "auth.password",
            ),
            (
                "[auth]\nmethod = \"token\"\ntoken = \"t\"\nak = \"AK\"",
                "auth.ak",
            ),
            (
                "[auth]\nmethod = \"aksk\"\nak = \"AK\"\nsk = \"SK\"\ntoken = \"t\"",
                "auth.token",
            ),
        ];
        for (auth, key) in bad {
            let message = error_of(&with_auth(auth));
            assert!(message.contains(&format!("`{key}`")), "{auth}: {message}");
        }
    }

    #[test]
    fn client_limits_have_defaults_and_are_checked() {
        let config = Config::from_toml(&minimal("interval = \"30s\"")).expect("valid");
        let c = &config.codearts;
        assert_eq!(c.max_requests_per_second, 25.0);
        assert_eq!(c.max_concurrent_requests, 8);
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.retry_backoff, Duration::from_millis(500));
        assert_eq!(c.max_retry_wait, Duration::from_secs(30));
        assert_eq!(c.max_response_bytes, 1 << 20);
        let with = |line: &str| format!("[codearts]\n{line}\n{}", minimal("interval = \"30s\""));
        for (line, key) in [
            (
                "max_requests_per_second = 0",
                "codearts.max_requests_per_second",
            ),
            (
                "max_requests_per_second = -3",
                "codearts.max_requests_per_second",
            ),
            (
                "max_requests_per_second = nan",
                "codearts.max_requests_per_second",
            ),
            (
                "max_concurrent_requests = 0",
                "codearts.max_concurrent_requests",
            ),
            ("max_retries = 11", "codearts.max_retries"),
            ("connect_timeout = \"0s\"", "codearts.connect_timeout"),
            ("retry_backoff = \"0s\"", "codearts.retry_backoff"),
            (
                "retry_backoff = \"2s\"\nmax_retry_wait = \"1s\"",
                "codearts.max_retry_wait",
            ),
            ("max_response_bytes = 262143", "codearts.max_response_bytes"),
            ("max_response_bytes = -1", "codearts.max_response_bytes"),
        ] {
            let message = error_of(&with(line));
            assert!(message.contains(&format!("`{key}`")), "{line}: {message}");
        }
        let config = Config::from_toml(&with(
            "max_requests_per_second = 0.5\nmax_retries = 0\nmax_concurrent_requests = 1\n\
             max_response_bytes = 262_144",
        ))
        .expect("valid");
        assert_eq!(config.codearts.max_requests_per_second, 0.5);
        assert_eq!(config.codearts.max_response_bytes, 262_144);
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"));
        if let Err(err) = Config::load(path) {
            panic!("config/example.toml: {err}");
        }
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let config = Config::from_toml(&minimal("interval = \"30s\"")).expect("valid");
        let rendered = config.redacted_toml();
        assert!(!rendered.contains("secret-token-value"));
        assert!(rendered.contains("token = \"***\""));
        assert!(!format!("{config:?}").contains("secret-token-value"));
        assert_eq!(
            config.auth.token.as_ref().map(Secret::expose),
            Some("secret-token-value")
        );
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").expect("write");
        let text = minimal("interval = \"30s\"").replace(
            "token = \"secret-token-value\"",
            &format!("token_file = {:?}", path.display().to_string()),
        );
        let config = Config::from_toml(&text).expect("valid");
        assert_eq!(
            config.auth.token.as_ref().map(Secret::expose),
            Some("from-file")
        );
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(
            parse_offset("+08:00").map(|o| o.local_minus_utc()),
            Some(28800)
        );
        assert_eq!(
            parse_offset("-03:30").map(|o| o.local_minus_utc()),
            Some(-12600)
        );
        assert_eq!(parse_offset("UTC").map(|o| o.local_minus_utc()), Some(0));
        assert!(parse_offset("Asia/Shanghai").is_none());
    }
}

#[cfg(test)]
mod sharding_tests {
    use super::*;

    #[test]
    fn shards_parse_from_n_of_m_and_reject_impossible_shares() {
        assert_eq!(
            ShardingConfig::parse("2/3"),
            Ok(ShardingConfig { index: 2, count: 3 })
        );
        for bad in ["3/3", "1/0", "x/2", "2", "-1/2"] {
            assert!(ShardingConfig::parse(bad).is_err(), "{bad}");
        }
        let text = "[auth]\nmethod = \"token\"\ntoken = \"t\"\n[sharding]\nindex = 4\ncount = 4\n";
        match Config::from_toml(text) {
            Err(err) => assert!(err.to_string().contains("sharding.index"), "{err}"),
            Ok(_) => panic!("index 4 of 4 accepted"),
        }
    }

    #[test]
    fn every_pipeline_belongs_to_exactly_one_shard() {
        let shards: Vec<ShardingConfig> = (0..3)
            .map(|index| ShardingConfig { index, count: 3 })
            .collect();
        let mut per_shard = [0usize; 3];
        for n in 0..3000u32 {
            let id = format!("{n:032x}");
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(&id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            per_shard[owners[0]] += 1;
            assert!(ShardingConfig::default().owns(&id));
        }
        // A hash, not a range split: shares come out near even.
        assert!(
            per_shard.iter().all(|&n| (850..=1150).contains(&n)),
            "{per_shard:?}"
        );
    }

    #[test]
    fn the_share_of_an_id_never_changes() {
        // SHA-256's first 8 bytes (big-endian) modulo the count, computed independently: a
        // change here would move pipelines between replicas after an upgrade.
        let share = |id: &str, count: u32| {
            (0..count)
                .find(|&index| ShardingConfig { index, count }.owns(id))
                .expect("one owner")
        };
        assert_eq!(share("0123456789abcdef0123456789abcdef", 3), 1);
        assert_eq!(share("0123456789abcdef0123456789abcdef", 5), 2);
        assert_eq!(share("fedcba9876543210fedcba9876543210", 3), 2);
        assert_eq!(share("fedcba9876543210fedcba9876543210", 5), 4);
    }
}
