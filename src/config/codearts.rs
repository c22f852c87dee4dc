//! `[codearts]`: where and how to reach the CodeArts API (endpoints by region, time-outs, the
//! request limits), with its defaults and checks.

use std::time::Duration;

use chrono::Offset as _;
use serde::{Deserialize, Serialize};

use super::common::{ConfigError, invalid};

/// Bounds of `codearts.max_requests_per_second`: one request an hour to no limit worth the name.
const MIN_RATE: f64 = 1.0 / 3600.0;
const MAX_RATE: f64 = 10_000.0;
/// Most retries of one request: more only delays the next poll.
const MAX_RETRIES: u32 = 10;
/// Smallest `codearts.max_response_bytes`: below it, legitimate pages would be refused (the
/// largest measured, a pipeline-list page of 50, is about 140 KB).
const MIN_RESPONSE_BYTES: u64 = 256 * 1024;

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
    /// Override of the CodeArts Repo endpoint (commit times, for lead time).
    #[serde(default)]
    pub repo_endpoint: Option<String>,
    /// Per-request time-out.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Time-out of establishing a connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// UTC offset of the zone-less `yyyy-MM-dd HH:mm:ss` times (v3 API, stage times).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Requests per second to CodeArts and IAM at most, over all targets.
    #[serde(default = "default_max_requests_per_second")]
    pub max_requests_per_second: f64,
    /// Requests to CodeArts and IAM in flight at once at most, over all targets.
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
            repo_endpoint: None,
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

/// The regions the vendor SDK (3.1.219) has an IAM host for, `iam.{region}.myhuaweicloud.com`
/// (eu-west-101's ends in `.eu`). Regions not listed (af-north-1 among them) use the global IAM,
/// as the SDK does (reference 1).
const IAM_REGIONS: [&str; 28] = [
    "cn-north-1",
    "cn-north-2",
    "cn-north-4",
    "cn-north-9",
    "cn-north-12",
    "cn-east-2",
    "cn-east-3",
    "cn-east-4",
    "cn-east-5",
    "cn-south-1",
    "cn-south-2",
    "cn-southwest-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "af-south-1",
    "sa-brazil-1",
    "la-south-2",
    "la-north-2",
    "na-mexico-1",
    "eu-west-0",
    "eu-west-101",
    "my-kualalumpur-1",
    "ru-moscow-1",
    "me-east-1",
    "ae-ad-1",
    "tr-west-1",
];
/// The IAM of regions the SDK has no IAM host for; it answers token requests of every region.
const GLOBAL_IAM_HOST: &str = "iam.myhuaweicloud.com";

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

    /// The IAM base URL: the override, or the region's IAM host as the vendor SDK knows it, or
    /// the global IAM for a region it does not know (reference 1).
    pub fn iam_endpoint(&self) -> String {
        if let Some(endpoint) = &self.iam_endpoint {
            return endpoint.trim_end_matches('/').to_string();
        }
        let region = self.region.as_str();
        let host = match region {
            "eu-west-101" => "iam.eu-west-101.myhuaweicloud.eu".to_string(),
            _ if IAM_REGIONS.contains(&region) => format!("iam.{region}.myhuaweicloud.com"),
            _ => GLOBAL_IAM_HOST.to_string(),
        };
        format!("https://{host}")
    }

    /// The CodeArts Repo base URL: the override, or the region's host as the vendor SDK knows
    /// it (reference 5.7); a region it does not know gets the form of most regions.
    pub fn repo_endpoint(&self) -> String {
        if let Some(endpoint) = &self.repo_endpoint {
            return endpoint.trim_end_matches('/').to_string();
        }
        let region = self.region.as_str();
        let host = match region {
            "tr-west-1" | "la-south-2" | "eu-west-101" => {
                format!("codeartsrepo-ext.{region}.myhuaweicloud.com")
            }
            "af-north-1" | "af-south-1" | "me-east-1" => {
                format!("repo.{region}.myhuaweicloud.com")
            }
            _ => format!("codehub-ext.{region}.myhuaweicloud.com"),
        };
        format!("https://{host}")
    }

    /// The configured zone of zone-less times, parsed (validated at load).
    pub fn fixed_offset(&self) -> chrono::FixedOffset {
        parse_offset(&self.time_zone)
            .unwrap_or_else(|| chrono::FixedOffset::east_opt(8 * 3600).unwrap_or(chrono::Utc.fix()))
    }
}

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

impl CodeArtsConfig {
    /// Checks the section's values a parse cannot check; the first problem wins.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.region.trim().is_empty() {
            return Err(invalid("codearts.region", "is empty"));
        }
        for (key, value) in [
            ("codearts.endpoint", &self.endpoint),
            ("codearts.iam_endpoint", &self.iam_endpoint),
            ("codearts.repo_endpoint", &self.repo_endpoint),
        ] {
            if let Some(url) = value {
                check_url(key, url)?;
            }
        }
        if self.timeout.is_zero() {
            return Err(invalid("codearts.timeout", "must be greater than zero"));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid(
                "codearts.connect_timeout",
                "must be greater than zero",
            ));
        }
        let rate = self.max_requests_per_second;
        if !(rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)) {
            return Err(invalid(
                "codearts.max_requests_per_second",
                format!("{rate} is not between {MIN_RATE} and {MAX_RATE}"),
            ));
        }
        if self.max_concurrent_requests == 0 {
            return Err(invalid(
                "codearts.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        if self.max_retries > MAX_RETRIES {
            return Err(invalid(
                "codearts.max_retries",
                format!("{} is more than {MAX_RETRIES}", self.max_retries),
            ));
        }
        if self.retry_backoff.is_zero() {
            return Err(invalid(
                "codearts.retry_backoff",
                "must be greater than zero",
            ));
        }
        if self.max_retry_wait < self.retry_backoff {
            return Err(invalid(
                "codearts.max_retry_wait",
                "must be at least `codearts.retry_backoff`",
            ));
        }
        if self.max_response_bytes < MIN_RESPONSE_BYTES {
            return Err(invalid(
                "codearts.max_response_bytes",
                format!(
                    "{} is less than {MIN_RESPONSE_BYTES} (256 KiB)",
                    self.max_response_bytes
                ),
            ));
        }
        if parse_offset(&self.time_zone).is_none() {
            return Err(invalid(
                "codearts.time_zone",
                format!(
                    "{:?} is not a UTC offset like \"+08:00\" or \"UTC\"",
                    self.time_zone
                ),
            ));
        }
        Ok(())
    }
}

pub(super) fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        Ok(_) => Err(invalid(
            key,
            format!("{url:?} must be an http:// or https:// URL"),
        )),
        Err(err) => Err(invalid(key, format!("{url:?} is not a URL: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::testing::{error_of, minimal};

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
    fn the_iam_endpoint_follows_the_sdk_region_table_then_the_global_iam() {
        let iam_of = |region: &str| {
            CodeArtsConfig {
                region: region.into(),
                ..CodeArtsConfig::default()
            }
            .iam_endpoint()
        };
        // Listed regions: their own IAM.
        assert_eq!(
            iam_of("cn-north-4"),
            "https://iam.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(
            iam_of("tr-west-1"),
            "https://iam.tr-west-1.myhuaweicloud.com"
        );
        assert_eq!(
            iam_of("eu-west-101"),
            "https://iam.eu-west-101.myhuaweicloud.eu"
        );
        // A CodeArts region the SDK has no IAM host for, and one it does not know at all.
        assert_eq!(iam_of("af-north-1"), "https://iam.myhuaweicloud.com");
        assert_eq!(iam_of("xx-nowhere-9"), "https://iam.myhuaweicloud.com");
        // An explicit endpoint wins, for any region.
        let overridden = CodeArtsConfig {
            region: "af-north-1".into(),
            iam_endpoint: Some("https://iam.example.internal:8443/".into()),
            ..CodeArtsConfig::default()
        };
        assert_eq!(
            overridden.iam_endpoint(),
            "https://iam.example.internal:8443"
        );
    }

    #[test]
    fn the_repo_endpoint_follows_the_sdk_region_table() {
        let repo_of = |region: &str| {
            CodeArtsConfig {
                region: region.into(),
                ..CodeArtsConfig::default()
            }
            .repo_endpoint()
        };
        // One region of each host family (reference 5.7).
        assert_eq!(
            repo_of("cn-north-4"),
            "https://codehub-ext.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(
            repo_of("ap-southeast-3"),
            "https://codehub-ext.ap-southeast-3.myhuaweicloud.com"
        );
        assert_eq!(
            repo_of("tr-west-1"),
            "https://codeartsrepo-ext.tr-west-1.myhuaweicloud.com"
        );
        assert_eq!(
            repo_of("eu-west-101"),
            "https://codeartsrepo-ext.eu-west-101.myhuaweicloud.com"
        );
        assert_eq!(
            repo_of("af-north-1"),
            "https://repo.af-north-1.myhuaweicloud.com"
        );
        assert_eq!(
            repo_of("me-east-1"),
            "https://repo.me-east-1.myhuaweicloud.com"
        );
        // A region the SDK does not know: the form of most regions.
        assert_eq!(
            repo_of("xx-nowhere-9"),
            "https://codehub-ext.xx-nowhere-9.myhuaweicloud.com"
        );
        // An explicit endpoint wins, for any region; the others are not affected by it.
        let overridden = CodeArtsConfig {
            region: "af-north-1".into(),
            repo_endpoint: Some("http://127.0.0.1:18080/".into()),
            ..CodeArtsConfig::default()
        };
        assert_eq!(overridden.repo_endpoint(), "http://127.0.0.1:18080");
        assert_eq!(
            overridden.pipeline_endpoint(),
            "https://pipeline.af-north-1.myhuaweicloud.com"
        );
        // Set in the file, and checked like the other endpoints.
        let with = |line: &str| format!("[codearts]\n{line}\n{}", minimal("interval = \"30s\""));
        let config = Config::from_toml(&with("repo_endpoint = \"https://repo.example.internal\""))
            .expect("valid");
        assert_eq!(
            config.codearts.repo_endpoint(),
            "https://repo.example.internal"
        );
        let message = error_of(&with("repo_endpoint = \"repo.example.internal\""));
        assert!(message.contains("`codearts.repo_endpoint`"), "{message}");
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
