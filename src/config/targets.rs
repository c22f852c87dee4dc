//! `[[targets]]`: which pipelines of which project are polled, when, and how discovery picks
//! them, with the schedule and deadline derived from a target and its checks.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::common::{ConfigError, check_id, invalid};
use crate::schedule::{self, Schedule};

/// Interval of a target whose schedule cannot be read (validation rules that out).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Which batch status API a target polls.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StatusApi {
    /// `POST /v5/{project_id}/api/pipelines/status` (current).
    #[default]
    V5,
    /// `GET /v3/pipelines/status`: legacy, which the vendor marks "to be taken offline".
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
    /// Discovery also keeps disabled (banned) pipelines; they cannot run, so off by default.
    /// Pipelines in `pipeline_ids` are polled whatever this says.
    #[serde(default)]
    pub include_disabled: bool,
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

impl TargetConfig {
    /// A target of `project_id` with every default of the file and nothing to poll yet.
    pub fn new(project_id: String) -> TargetConfig {
        TargetConfig {
            name: None,
            project_id,
            pipeline_ids: Vec::new(),
            schedule: None,
            interval: None,
            schedule_time_zone: None,
            poll_timeout: None,
            status_api: StatusApi::default(),
            chunk_size: default_chunk_size(),
            backfill_window: default_backfill_window(),
            discover: false,
            include: None,
            exclude: None,
            tags: Vec::new(),
            include_disabled: false,
            discover_every: default_discover_every(),
            gc_after: default_gc_after(),
        }
    }
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

/// Checks every target, and that their `target` labels are distinct; the first problem wins.
pub(super) fn validate_targets(
    targets: &[TargetConfig],
    codearts_timeout: Duration,
) -> Result<(), ConfigError> {
    if targets.is_empty() {
        return Err(invalid(
            "targets",
            "no targets: add at least one [[targets]] with a project_id and pipeline_ids (or discover = true)",
        ));
    }
    let mut labels = HashSet::new();
    // (project, pipeline) -> index of the target that lists it first.
    let mut listed_by: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, target) in targets.iter().enumerate() {
        target.validate(index, codearts_timeout)?;
        if !labels.insert(target.label().to_string()) {
            return Err(invalid(
                format!("targets[{index}].name"),
                format!(
                    "target name {:?} is used twice; give each target a distinct `name`",
                    target.label()
                ),
            ));
        }
        // Two pollers of one pipeline would record each of its runs twice.
        for (i, id) in target.pipeline_ids.iter().enumerate() {
            let key = (target.project_id.as_str(), id.as_str());
            if let Some(&first) = listed_by.get(&key) {
                return Err(invalid(
                    format!("targets[{index}].pipeline_ids[{i}]"),
                    format!(
                        "{} and {} both list pipeline {id} of project {}; a pipeline may be \
                         polled by one target only",
                        describe(index, target),
                        describe(first, &targets[first]),
                        target.project_id
                    ),
                ));
            }
            listed_by.insert(key, index);
        }
    }
    Ok(())
}

/// `targets[index]` with the name it goes by, for messages about two targets.
fn describe(index: usize, target: &TargetConfig) -> String {
    match &target.name {
        Some(name) => format!("targets[{index}] (name {name:?})"),
        None => format!("targets[{index}] (no name: target {:?})", target.project_id),
    }
}

impl TargetConfig {
    /// Checks `targets[index]` on its own; `codearts_timeout` bounds its `poll_timeout`.
    fn validate(&self, index: usize, codearts_timeout: Duration) -> Result<(), ConfigError> {
        let key = |field: &str| format!("targets[{index}].{field}");
        check_id(&key("project_id"), &self.project_id)?;
        if self.pipeline_ids.is_empty() && !self.discover {
            return Err(invalid(
                key("pipeline_ids"),
                "is empty: list the pipelines to poll, or set `discover = true`",
            ));
        }
        if !self.discover {
            let discovery_keys = [
                ("include", self.include.is_some()),
                ("exclude", self.exclude.is_some()),
                ("tags", !self.tags.is_empty()),
                ("include_disabled", self.include_disabled),
            ];
            if let Some((field, _)) = discovery_keys.iter().find(|(_, set)| *set) {
                return Err(invalid(key(field), "is only used with `discover = true`"));
            }
        }
        if self.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(key("tags"), "tag names must not be empty"));
        }
        if self.discover_every < Duration::from_secs(1) {
            return Err(invalid(key("discover_every"), "must be at least 1s"));
        }
        let mut seen = HashSet::new();
        for (i, id) in self.pipeline_ids.iter().enumerate() {
            check_id(&format!("targets[{index}].pipeline_ids[{i}]"), id)?;
            if !seen.insert(id) {
                return Err(invalid(
                    format!("targets[{index}].pipeline_ids[{i}]"),
                    format!("{id} is listed twice"),
                ));
            }
        }
        match (&self.schedule, self.interval) {
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
                schedule::parse_cron(cron).map_err(|problem| invalid(key("schedule"), problem))?;
            }
            (None, Some(every)) => {
                if every < Duration::from_secs(1) {
                    return Err(invalid(key("interval"), "must be at least 1s"));
                }
            }
        }
        if let Some(zone) = &self.schedule_time_zone {
            if self.schedule.is_none() {
                return Err(invalid(
                    key("schedule_time_zone"),
                    "is only used with a cron `schedule`",
                ));
            }
            schedule::parse_zone(zone)
                .map_err(|problem| invalid(key("schedule_time_zone"), problem))?;
        }
        if let Some(deadline) = self.poll_timeout
            && deadline < codearts_timeout
        {
            return Err(invalid(
                key("poll_timeout"),
                format!(
                    "{} is less than codearts.timeout ({}): a single request could not finish",
                    humantime::format_duration(deadline),
                    humantime::format_duration(codearts_timeout)
                ),
            ));
        }
        if self.chunk_size == 0 {
            return Err(invalid(key("chunk_size"), "must be at least 1"));
        }
        if self
            .name
            .as_deref()
            .is_some_and(|name| name.trim().is_empty())
        {
            return Err(invalid(key("name"), "is empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{PIPELINE, PROJECT, error_of, minimal};
    use crate::config::{Config, RunLabel};

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
        assert!(!target.discover && !target.include_disabled);
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
             discover_every = \"1m\"\ngc_after = \"0s\"\ninclude_disabled = true\n"
        );
        let config = Config::from_toml(&text).expect("valid");
        let target = &config.targets[0];
        assert!(target.discover && target.pipeline_ids.is_empty() && target.include_disabled);
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

    /// A configuration of two targets, each a `(name line, project, pipeline ids, extra)`.
    fn two_targets(targets: [(&str, &str, &[&str], &str); 2]) -> String {
        let mut text = "[auth]\nmethod = \"token\"\ntoken = \"t\"\n".to_string();
        for (name, project, ids, extra) in targets {
            let ids: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
            text.push_str(&format!(
                "[[targets]]\n{name}\nproject_id = \"{project}\"\npipeline_ids = [{}]\n\
                 interval = \"30s\"\n{extra}\n",
                ids.join(", ")
            ));
        }
        text
    }

    const OTHER_PROJECT: &str = "abcdef0123456789abcdef0123456789";
    const OTHER_PIPELINE: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn a_pipeline_listed_by_two_targets_of_its_project_is_refused() {
        let message = error_of(&two_targets([
            ("name = \"a\"", PROJECT, &[PIPELINE], ""),
            ("name = \"b\"", PROJECT, &[OTHER_PIPELINE, PIPELINE], ""),
        ]));
        assert_eq!(
            message,
            format!(
                "invalid value for `targets[1].pipeline_ids[1]`: targets[1] (name \"b\") and \
                 targets[0] (name \"a\") both list pipeline {PIPELINE} of project {PROJECT}; a \
                 pipeline may be polled by one target only"
            )
        );
        // A target without a name goes by its project id.
        let message = error_of(&two_targets([
            ("", PROJECT, &[PIPELINE], ""),
            ("name = \"b\"", PROJECT, &[PIPELINE], ""),
        ]));
        assert!(
            message.contains(&format!(
                "targets[1] (name \"b\") and targets[0] (no name: target \"{PROJECT}\")"
            )),
            "{message}"
        );
    }

    #[test]
    fn targets_may_share_a_project_or_a_pipeline_id_but_not_both() {
        // Distinct pipelines of one project.
        let config = Config::from_toml(&two_targets([
            ("name = \"a\"", PROJECT, &[PIPELINE], ""),
            ("name = \"b\"", PROJECT, &[OTHER_PIPELINE], ""),
        ]))
        .expect("disjoint lists");
        assert_eq!(config.static_owner(PROJECT, PIPELINE), Some("a"));
        assert_eq!(config.static_owner(PROJECT, OTHER_PIPELINE), Some("b"));
        // The same id under two projects is two pipelines.
        Config::from_toml(&two_targets([
            ("name = \"a\"", PROJECT, &[PIPELINE], ""),
            ("name = \"b\"", OTHER_PROJECT, &[PIPELINE], ""),
        ]))
        .expect("other project");
        // Discovery may find a pipeline another target lists: not known at load.
        let config = Config::from_toml(&two_targets([
            ("name = \"a\"", PROJECT, &[PIPELINE], ""),
            ("name = \"b\"", PROJECT, &[], "discover = true"),
        ]))
        .expect("a listing and a discovery");
        assert_eq!(config.static_owner(PROJECT, PIPELINE), Some("a"));
    }

    #[test]
    fn the_static_owner_of_a_pipeline_is_the_target_listing_it() {
        let config = Config::from_toml(&two_targets([
            ("", PROJECT, &[PIPELINE], ""),
            (
                "name = \"b\"",
                OTHER_PROJECT,
                &[OTHER_PIPELINE],
                "discover = true",
            ),
        ]))
        .expect("valid");
        // Unnamed: its label, the project id.
        assert_eq!(config.static_owner(PROJECT, PIPELINE), Some(PROJECT));
        assert_eq!(
            config.static_owner(OTHER_PROJECT, OTHER_PIPELINE),
            Some("b")
        );
        // Only the pair counts; a pipeline no target lists has no static owner.
        assert_eq!(config.static_owner(OTHER_PROJECT, PIPELINE), None);
        assert_eq!(config.static_owner(PROJECT, OTHER_PIPELINE), None);
        let owners = config.static_owners();
        assert_eq!(owners.len(), 2);
        assert_eq!(owners.get(&(PROJECT, PIPELINE)), Some(&PROJECT));
        assert_eq!(owners.get(&(OTHER_PROJECT, OTHER_PIPELINE)), Some(&"b"));
        assert_eq!(owners.get(&(OTHER_PROJECT, PIPELINE)), None);
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
                minimal("interval = \"30s\"\ninclude_disabled = true"),
                "targets[0].include_disabled",
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
}
