//! `[metrics]`: the detail of the pipeline families (buckets, optional families and labels),
//! traded against their series, with its defaults and checks.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::common::{ConfigError, invalid};

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
    /// Buckets (seconds) of `codearts_pipeline_run_pause_seconds` (none by default; the family
    /// needs `jobs`).
    #[serde(default)]
    pub pause_duration_buckets: Vec<f64>,
    /// Buckets (seconds) of `codearts_pipeline_recovery_seconds` (none by default).
    #[serde(default)]
    pub recovery_duration_buckets: Vec<f64>,
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
    /// Give the pipeline histograms native buckets in the protobuf exposition (only a scraper
    /// that asks for protobuf gets them).
    #[serde(default = "native_histograms_on")]
    pub native_histograms: bool,
}

fn native_histograms_on() -> bool {
    true
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            run_duration_buckets: default_run_buckets(),
            stage_duration_buckets: default_stage_buckets(),
            queue_duration_buckets: Vec::new(),
            pause_duration_buckets: Vec::new(),
            recovery_duration_buckets: Vec::new(),
            stage_status: false,
            jobs: false,
            job_duration_buckets: default_job_buckets(),
            run_labels: Vec::new(),
            branches: default_branches(),
            native_histograms: true,
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

impl MetricsConfig {
    /// Checks the section's values a parse cannot check; the first problem wins.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_buckets("metrics.run_duration_buckets", &self.run_duration_buckets)?;
        check_buckets(
            "metrics.stage_duration_buckets",
            &self.stage_duration_buckets,
        )?;
        check_buckets(
            "metrics.queue_duration_buckets",
            &self.queue_duration_buckets,
        )?;
        check_buckets(
            "metrics.pause_duration_buckets",
            &self.pause_duration_buckets,
        )?;
        check_buckets("metrics.job_duration_buckets", &self.job_duration_buckets)?;
        check_buckets(
            "metrics.recovery_duration_buckets",
            &self.recovery_duration_buckets,
        )?;
        let mut run_labels = HashSet::new();
        for label in &self.run_labels {
            if !run_labels.insert(label) {
                return Err(invalid(
                    "metrics.run_labels",
                    format!("{:?} is listed twice", label.as_str()),
                ));
            }
        }
        if self.branches.iter().any(|b| b.trim().is_empty()) {
            return Err(invalid(
                "metrics.branches",
                "branch names must not be empty",
            ));
        }
        Ok(())
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
