//! `[traces]`: where the trace of each completed run is sent (OTLP/HTTP), with which headers
//! (secrets, possibly read from `headers_file` paths), how long a request may take and how many
//! runs may await export. The section is optional: without it no trace is built.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::codearts::check_url;
use super::common::{ConfigError, Secret, invalid};

/// The path the OTLP/HTTP trace receiver listens on, under the endpoint.
pub const TRACES_PATH: &str = "/v1/traces";

/// Headers the exporter sets on every export itself: a configured one would clash.
const RESERVED_HEADERS: [&str; 4] = ["content-type", "content-length", "content-encoding", "host"];

/// `[traces]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// Base URL of the OTLP/HTTP receiver (e.g. `http://otel-collector:4318`).
    pub endpoint: String,
    /// Time-out of one export request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most runs awaiting export; past it the oldest are dropped (and counted).
    #[serde(default = "default_max_pending_runs")]
    pub max_pending_runs: usize,
    /// Headers sent with every export (name → value); the values are secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// Headers whose values are read from files (name → path), as other `*_file` secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_file: BTreeMap<String, PathBuf>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A run of each of 10,000 pipelines: an outage of the collector of an hour or more loses
/// nothing, and the pending traces (a few KB each, held in memory) stay tens of MB at most.
fn default_max_pending_runs() -> usize {
    10_000
}

impl TracesConfig {
    /// A section with `endpoint` and every other key at its default.
    pub fn new(endpoint: impl Into<String>) -> TracesConfig {
        TracesConfig {
            endpoint: endpoint.into(),
            timeout: default_timeout(),
            max_pending_runs: default_max_pending_runs(),
            headers: BTreeMap::new(),
            headers_file: BTreeMap::new(),
        }
    }

    /// The URL traces are POSTed to: `{endpoint}/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}{TRACES_PATH}", self.endpoint.trim_end_matches('/'))
    }

    /// Reads every `headers_file` entry into `headers`, so the rest of the program sees one
    /// table of values.
    pub(super) fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        for (name, path) in &self.headers_file {
            let key = format!("traces.headers_file.{name}");
            if self
                .headers
                .keys()
                .any(|other| other.eq_ignore_ascii_case(name))
            {
                return Err(invalid(
                    key,
                    format!(
                        "set header {name:?} in either `traces.headers` or `traces.headers_file`, \
                         not both"
                    ),
                ));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|err| invalid(&key, format!("cannot read {}: {err}", path.display())))?;
            self.headers
                .insert(name.clone(), Secret::new(text.trim().to_string()));
        }
        Ok(())
    }

    /// Checks what a parse cannot: the endpoint, the time-out, the bound and every header.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("traces.endpoint", &self.endpoint)?;
        if let Ok(url) = reqwest::Url::parse(&self.endpoint)
            && (url.query().is_some() || url.fragment().is_some())
        {
            return Err(invalid(
                "traces.endpoint",
                format!(
                    "{:?} has a query or a fragment: name the receiver's base URL ({TRACES_PATH} \
                     is added to it)",
                    self.endpoint
                ),
            ));
        }
        if self.timeout.is_zero() {
            return Err(invalid("traces.timeout", "must be greater than zero"));
        }
        if self.max_pending_runs == 0 {
            return Err(invalid("traces.max_pending_runs", "must be at least 1"));
        }
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in &self.headers {
            let key = format!("traces.headers.{name}");
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(key, format!("{name:?} is not an HTTP header name")));
            }
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(invalid(
                    key,
                    format!("{name:?} is set by the exporter itself"),
                ));
            }
            if seen.contains(&lower) {
                return Err(invalid(
                    key,
                    format!("header {name:?} is set twice (header names ignore case)"),
                ));
            }
            seen.push(lower);
            // The value is a secret: the message says what is wrong, never what it is.
            if value.expose().is_empty() {
                return Err(invalid(key, "is empty"));
            }
            if HeaderValue::from_str(value.expose()).is_err() {
                return Err(invalid(
                    key,
                    "is not a valid HTTP header value (visible ASCII characters, spaces and tabs \
                     only)",
                ));
            }
        }
        Ok(())
    }

    /// What is valid but likely a mistake, one line each naming the key.
    pub(super) fn warnings(&self) -> Vec<String> {
        let trimmed = self.endpoint.trim_end_matches('/');
        if trimmed.ends_with(TRACES_PATH) {
            vec![format!(
                "traces.endpoint = {:?} ends with {TRACES_PATH}, which the exporter adds: \
                 traces go to {}",
                self.endpoint,
                self.traces_url()
            )]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::config::testing::{error_of, minimal};

    /// `minimal` with a `[traces]` section holding `body`.
    fn with_traces(body: &str) -> String {
        minimal("interval = \"30s\"").replace("[auth]", &format!("[traces]\n{body}\n[auth]"))
    }

    const ENDPOINT: &str = "endpoint = \"http://otel-collector:4318\"";

    #[test]
    fn traces_are_off_unless_the_section_is_given() {
        let config = Config::from_toml(&minimal("interval = \"30s\"")).expect("valid");
        assert!(config.traces.is_none());
        assert!(!config.redacted_toml().contains("[traces]"));
    }

    #[test]
    fn an_endpoint_alone_gets_the_defaults() {
        let config = Config::from_toml(&with_traces(ENDPOINT)).expect("valid");
        let traces = config.traces.as_ref().expect("traces on");
        assert_eq!(traces.endpoint, "http://otel-collector:4318");
        assert_eq!(traces.timeout, Duration::from_secs(10));
        assert_eq!(traces.max_pending_runs, 10_000);
        assert!(traces.headers.is_empty() && traces.headers_file.is_empty());
        assert_eq!(traces.traces_url(), "http://otel-collector:4318/v1/traces");
        let defaults = TracesConfig::new("http://otel-collector:4318");
        assert_eq!(defaults.timeout, traces.timeout);
        assert_eq!(defaults.max_pending_runs, traces.max_pending_runs);
        // A trailing slash or a path prefix is kept, once.
        let config = Config::from_toml(&with_traces(
            "endpoint = \"https://gateway.example/otlp/\"\ntimeout = \"2s\"\nmax_pending_runs = 1",
        ))
        .expect("valid");
        let traces = config.traces.as_ref().expect("traces on");
        assert_eq!(
            traces.traces_url(),
            "https://gateway.example/otlp/v1/traces"
        );
        assert_eq!(traces.timeout, Duration::from_secs(2));
        assert_eq!(traces.max_pending_runs, 1);
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        let rendered = config.redacted_toml();
        assert!(rendered.contains("[traces]\n"), "{rendered}");
        assert!(rendered.contains("timeout = \"2s\""), "{rendered}");
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let cases = [
            ("", "endpoint"),
            ("endpoint = \"otel-collector:4318\"", "traces.endpoint"),
            ("endpoint = \"ftp://otel-collector\"", "traces.endpoint"),
            ("endpoint = \"not a url\"", "traces.endpoint"),
            (
                "endpoint = \"http://otel-collector:4318?x=1\"",
                "traces.endpoint",
            ),
            (&format!("{ENDPOINT}\ntimeout = \"0s\""), "traces.timeout"),
            (&format!("{ENDPOINT}\ntimeout = \"soon\""), "traces.timeout"),
            (
                &format!("{ENDPOINT}\nmax_pending_runs = 0"),
                "traces.max_pending_runs",
            ),
            (
                &format!("{ENDPOINT}\nmax_pending_runs = -1"),
                "traces.max_pending_runs",
            ),
            (
                &format!("{ENDPOINT}\nheaders = {{ \"Bad Name\" = \"x\" }}"),
                "traces.headers.Bad Name",
            ),
            (
                &format!("{ENDPOINT}\nheaders = {{ \"X-Token\" = \"line\\nbreak\" }}"),
                "traces.headers.X-Token",
            ),
            (
                &format!("{ENDPOINT}\nheaders = {{ \"X-Token\" = \"\" }}"),
                "traces.headers.X-Token",
            ),
            (
                &format!("{ENDPOINT}\nheaders = {{ \"Content-Type\" = \"text/plain\" }}"),
                "traces.headers.Content-Type",
            ),
            (
                &format!("{ENDPOINT}\nheaders = {{ \"x-token\" = \"a\", \"X-Token\" = \"b\" }}"),
                "traces.headers.x-token",
            ),
            (
                &format!("{ENDPOINT}\nheaders_file = {{ \"X-Token\" = \"/nonexistent/token\" }}"),
                "traces.headers_file.X-Token",
            ),
            (&format!("{ENDPOINT}\nbogus = 1"), "bogus"),
        ];
        for (body, key) in cases {
            let message = error_of(&with_traces(body));
            assert!(
                message.contains(&format!("`{key}`")),
                "{body}: {message:?} should name `{key}`"
            );
        }
        // Parse errors name the dotted key as figment spells it.
        let message = error_of(&with_traces(&format!("{ENDPOINT}\ntimeout = \"soon\"")));
        assert!(message.contains("`traces.timeout`"), "{message}");
    }

    #[test]
    fn header_values_are_secrets_everywhere() {
        let config = Config::from_toml(&with_traces(&format!(
            "{ENDPOINT}\nheaders = {{ \"Authorization\" = \"Bearer header-secret-value\" }}"
        )))
        .expect("valid");
        let traces = config.traces.as_ref().expect("traces on");
        assert_eq!(
            traces.headers.get("Authorization").map(Secret::expose),
            Some("Bearer header-secret-value")
        );
        let rendered = config.redacted_toml();
        assert!(!rendered.contains("header-secret-value"), "{rendered}");
        assert!(rendered.contains("Authorization = \"***\""), "{rendered}");
        assert!(!format!("{config:?}").contains("header-secret-value"));
        assert!(!format!("{traces:?}").contains("header-secret-value"));
        // The rendered configuration reads back as the same section.
        let back: toml::Table = toml::from_str(&rendered).expect("the render is TOML");
        assert!(back.contains_key("traces"), "{rendered}");
        // A bad value is refused without being shown.
        let message = error_of(&with_traces(&format!(
            "{ENDPOINT}\nheaders = {{ \"Authorization\" = \"Bearer header-secret-value\\n\" }}"
        )));
        assert!(
            message.contains("`traces.headers.Authorization`"),
            "{message}"
        );
        assert!(!message.contains("header-secret-value"), "{message}");
    }

    #[test]
    fn header_values_may_come_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authorization");
        std::fs::write(&path, "Bearer from-file-secret\n").expect("write");
        let body = format!(
            "{ENDPOINT}\nheaders = {{ \"X-Scope-OrgID\" = \"tenant-1\" }}\n\
             headers_file = {{ \"Authorization\" = {:?} }}",
            path.display().to_string()
        );
        let config = Config::from_toml(&with_traces(&body)).expect("valid");
        let traces = config.traces.as_ref().expect("traces on");
        assert_eq!(
            traces.headers.get("Authorization").map(Secret::expose),
            Some("Bearer from-file-secret")
        );
        assert_eq!(
            traces.headers.get("X-Scope-OrgID").map(Secret::expose),
            Some("tenant-1")
        );
        let rendered = config.redacted_toml();
        assert!(!rendered.contains("from-file-secret"), "{rendered}");
        assert!(!format!("{config:?}").contains("from-file-secret"));
        // A header set both ways is refused, whatever the case of its name.
        let both = format!(
            "{ENDPOINT}\nheaders = {{ \"authorization\" = \"x\" }}\n\
             headers_file = {{ \"Authorization\" = {:?} }}",
            path.display().to_string()
        );
        let message = error_of(&with_traces(&both));
        assert!(
            message.contains("`traces.headers_file.Authorization`"),
            "{message}"
        );
    }

    #[test]
    fn an_endpoint_that_already_names_the_path_is_warned_about() {
        let config = Config::from_toml(&with_traces(
            "endpoint = \"http://otel-collector:4318/v1/traces\"",
        ))
        .expect("valid, but unwise");
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("traces.endpoint")
                && warnings[0].contains("/v1/traces/v1/traces"),
            "{warnings:?}"
        );
    }
}
