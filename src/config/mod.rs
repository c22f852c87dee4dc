//! Configuration: load (TOML file + `CODEARTS_EXPORTER_*` env), defaults, validation.
//!
//! This file holds the whole [`Config`], how it is loaded and the order its sections are
//! validated in; each section lives in a file of its own, with its defaults and checks.

mod auth;
mod codearts;
mod common;
mod deployments;
mod metrics;
mod server;
mod sharding;
mod state;
mod targets;
mod traces;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

pub use auth::{AuthConfig, AuthMethod};
pub use codearts::CodeArtsConfig;
use common::invalid;
pub use common::{ConfigError, ENV_PREFIX, Secret, is_valid_id};
pub use deployments::{Deployment, DeploymentConfig, Deployments};
pub use metrics::{MetricsConfig, RunLabel};
pub use server::{DEFAULT_PORT, ServerConfig};
pub use sharding::ShardingConfig;
pub use state::StateConfig;
pub use targets::{Pattern, StatusApi, TargetConfig};
pub use traces::{TRACES_PATH, TracesConfig};

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
    /// Which pipelines deploy to which environment (delivery metrics); none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeploymentConfig>,
    /// Which share of the pipelines this replica polls.
    #[serde(default)]
    pub sharding: ShardingConfig,
    /// Where the state that survives a restart is kept.
    #[serde(default, skip_serializing_if = "StateConfig::is_unset")]
    pub state: StateConfig,
    /// Where the trace of each completed run is sent; none: no traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<TracesConfig>,
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
        if let Some(traces) = &mut config.traces {
            traces.resolve_secret_files()?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value a parse cannot check; the first problem wins.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.auth.validate()?;
        self.sharding
            .check()
            .map_err(|(key, problem)| invalid(key, problem))?;
        self.codearts.validate()?;
        self.metrics.validate()?;
        self.state.validate()?;
        targets::validate_targets(&self.targets, self.codearts.timeout)?;
        if let Some(traces) = &self.traces {
            traces.validate()?;
        }
        Deployments::new(&self.deployments).map(drop)
    }

    /// The `target` label of the target whose `pipeline_ids` list `pipeline_id` of `project_id`
    /// (validation lets at most one do so), or `None` when only discovery can find it. Scans
    /// every listed id: for many lookups, build [`Config::static_owners`] once.
    pub fn static_owner(&self, project_id: &str, pipeline_id: &str) -> Option<&str> {
        self.targets
            .iter()
            .find(|target| {
                target.project_id == project_id
                    && target.pipeline_ids.iter().any(|id| id == pipeline_id)
            })
            .map(TargetConfig::label)
    }

    /// Every listed pipeline, as (project id, pipeline id), with the `target` label of the one
    /// target listing it: [`Config::static_owner`] for many lookups.
    pub fn static_owners(&self) -> HashMap<(&str, &str), &str> {
        self.targets
            .iter()
            .flat_map(|target| {
                target
                    .pipeline_ids
                    .iter()
                    .map(move |id| ((target.project_id.as_str(), id.as_str()), target.label()))
            })
            .collect()
    }

    /// What is valid but unwise, one line each naming the key: `check-config` prints them and
    /// the exporter logs them at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, target)| target.status_api == StatusApi::V3)
            .map(|(index, _)| {
                format!(
                    "targets[{index}].status_api = \"v3\": the legacy batch status API, which the \
                     vendor marks \"old version, to be taken offline\" and its SDK dropped in \
                     3.1.211; use \"v5\" (the default)"
                )
            })
            .collect();
        // Without discovery, only listed pipelines are polled: a deployment pipeline that no
        // target lists is never seen.
        if !self.targets.iter().any(|target| target.discover) {
            let polled: HashSet<&str> = self
                .targets
                .iter()
                .flat_map(|target| target.pipeline_ids.iter().map(String::as_str))
                .collect();
            for (index, deployment) in self.deployments.iter().enumerate() {
                for (i, id) in deployment.pipeline_ids.iter().enumerate() {
                    if !polled.contains(id.as_str()) {
                        warnings.push(format!(
                            "deployments[{index}].pipeline_ids[{i}]: pipeline {id} is polled by \
                             no target (none lists it, none discovers), so none of its runs is \
                             seen"
                        ));
                    }
                }
            }
        }
        if !self.metrics.pause_duration_buckets.is_empty() && !self.metrics.jobs {
            warnings.push(
                "metrics.pause_duration_buckets is set but metrics.jobs is false: time paused \
                 comes from run details, which only metrics.jobs reads"
                    .to_string(),
            );
        }
        if let Some(traces) = &self.traces {
            warnings.extend(traces.warnings());
        }
        warnings
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

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{PIPELINE, PROJECT, error_of, minimal};
    use crate::schedule::Schedule;

    #[test]
    fn the_legacy_status_api_and_idle_pause_buckets_are_warned_about() {
        let config = Config::from_toml(&minimal("interval = \"30s\"")).expect("valid");
        assert!(config.warnings().is_empty());
        let v3 = minimal("interval = \"30s\"\nstatus_api = \"v3\"").replace(
            "[auth]",
            "[metrics]\npause_duration_buckets = [60.0]\n[auth]",
        );
        let config = Config::from_toml(&v3).expect("valid");
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("targets[0].status_api = \"v3\""));
        assert!(warnings[1].starts_with("metrics.pause_duration_buckets"));
    }

    #[test]
    fn deployment_pipelines_that_no_target_polls_are_warned_about() {
        const OTHER: &str = "00112233445566778899aabbccddeeff";
        let text = format!(
            "{}[[deployments]]\nenvironment = \"production\"\npipeline_ids = [\"{PIPELINE}\", \"{OTHER}\"]\n",
            minimal("interval = \"30s\"")
        );
        let config = Config::from_toml(&text).expect("valid");
        assert_eq!(
            config.warnings(),
            [format!(
                "deployments[0].pipeline_ids[1]: pipeline {OTHER} is polled by no target (none \
                 lists it, none discovers), so none of its runs is seen"
            )]
        );
        // A discovering target may find it.
        let discovering = text.replace("interval = \"30s\"", "interval = \"30s\"\ndiscover = true");
        let config = Config::from_toml(&discovering).expect("valid");
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
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
}
