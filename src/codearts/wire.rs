//! The CodeArts answers as they arrive on the wire: serde structs that mirror the API's JSON,
//! kept apart from the normalised [`super::model`] so no caller depends on the vendor's shapes.
//! They hold the fields the exporter reads; serde skips the others.
//!
//! Every field is optional: null, absent, wrongly typed and unknown fields never fail a parse.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::time::{RawTime, lenient_time};

/// A string field that also accepts numbers and booleans (and turns anything else into `None`).
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// An id field sent as a string or as a JSON integer (`codehub_id`): a number becomes its
/// digits, never `2111677704.0`; anything else is `None`.
fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Some(u.to_string()),
            (None, Some(i), _) => Some(i.to_string()),
            // An integral float within the exactly representable range.
            (None, None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Some(format!("{f:.0}"))
            }
            _ => None,
        },
        _ => None,
    })
}

/// A non-negative integer field that also accepts digit strings.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A signed integer field that also accepts digit strings.
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

/// A list field: null or a non-array become empty, and elements that do not parse are dropped.
fn lenient_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// An object of type `T`, or `None` for null or anything that does not parse as one.
fn lenient_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        value @ Value::Object(_) => serde_json::from_value(value).ok(),
        _ => None,
    })
}

/// Error body of every CodeArts API: `{"error_code": "...", "error_msg": "..."}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ApiErrorBody {
    /// E.g. `DEV.00000001`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub error_code: Option<String>,
    /// Human text.
    #[serde(default, deserialize_with = "lenient_string")]
    pub error_msg: Option<String>,
}

/// One entry of the v3 batch status response (reference 3.1).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct V3PipelineStatus {
    /// Pipeline id.
    #[serde(default, deserialize_with = "lenient_string")]
    pub pipeline_id: Option<String>,
    /// Pipeline name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub pipeline_name: Option<String>,
    /// Run number as a string, e.g. `"25"`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub build_id: Option<String>,
    /// Console URL of the run.
    #[serde(default, deserialize_with = "lenient_string")]
    pub detail_url: Option<String>,
    /// `yyyy-MM-dd HH:mm:ss`, zone-less.
    #[serde(default, deserialize_with = "lenient_time")]
    pub start_time: Option<RawTime>,
    /// `yyyy-MM-dd HH:mm:ss`, zone-less; empty while running.
    #[serde(default, deserialize_with = "lenient_time")]
    pub end_time: Option<RawTime>,
    /// `waiting|running|verifying|suspending|completed`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// `success|error|aborted`, empty while not completed.
    #[serde(default, deserialize_with = "lenient_string")]
    pub result: Option<String>,
    /// Stages in order.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub stages: Vec<V3Stage>,
}

/// A stage in the v3 batch status.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct V3Stage {
    /// Internal name, e.g. `state_3`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// What people see, e.g. `构建`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub display_name: Option<String>,
    /// Position.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub order: Option<i64>,
    /// Same vocabulary as the run.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// Same vocabulary as the run.
    #[serde(default, deserialize_with = "lenient_string")]
    pub result: Option<String>,
}

/// Build parameters of a v5 run (reference 5.1, 5.3; `sources[].params.build_params` in 5.2).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct BuildParams {
    /// Branch the run built.
    #[serde(default, deserialize_with = "lenient_string")]
    pub target_branch: Option<String>,
    /// SHA of the commit the run built.
    #[serde(default, deserialize_with = "lenient_string")]
    pub commit_id: Option<String>,
    /// CodeArts Repo repository id: a number sent as a string, or as a number (5.7).
    #[serde(default, deserialize_with = "lenient_id")]
    pub codehub_id: Option<String>,
}

/// A v5 run as in the batch latest status (3.2) and the run list (3.4).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct V5RunStatus {
    /// Pipeline id.
    #[serde(default, deserialize_with = "lenient_string")]
    pub pipeline_id: Option<String>,
    /// Run id.
    #[serde(default, deserialize_with = "lenient_string")]
    pub pipeline_run_id: Option<String>,
    /// Run number (≥ 1).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub run_number: Option<u64>,
    /// Upper-case v5 status.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// `Manual`, `Scheduler`, `MR`, ...
    #[serde(default, deserialize_with = "lenient_string")]
    pub trigger_type: Option<String>,
    /// Epoch ms.
    #[serde(default, deserialize_with = "lenient_time")]
    pub start_time: Option<RawTime>,
    /// Epoch ms.
    #[serde(default, deserialize_with = "lenient_time")]
    pub end_time: Option<RawTime>,
    /// Console URL of the run.
    #[serde(default, deserialize_with = "lenient_string")]
    pub detail_url: Option<String>,
    /// Build parameters.
    #[serde(default)]
    pub build_params: Option<Lenient<BuildParams>>,
    /// Stage states; times are strings.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub stage_status_list: Vec<V5StageStatus>,
}

/// A stage in the v5 status and list APIs.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct V5StageStatus {
    /// Stage id (its record in this run).
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    /// Stage name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// Position.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub sequence: Option<i64>,
    /// Upper-case status.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// Epoch-ms string or `yyyy-MM-dd HH:mm:ss`.
    #[serde(default, deserialize_with = "lenient_time")]
    pub start_time: Option<RawTime>,
    /// Epoch-ms string or `yyyy-MM-dd HH:mm:ss`.
    #[serde(default, deserialize_with = "lenient_time")]
    pub end_time: Option<RawTime>,
}

/// The run history page (reference 3.4).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RunList {
    /// Runs matching the query in all pages.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total: Option<u64>,
    /// This page, in the requested order; entries that do not parse are dropped.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub pipeline_runs: Vec<V5RunStatus>,
}

/// The pipelines of a project, one page (reference 5.4).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PipelineListPage {
    /// Pipelines matching the query in all pages.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total: Option<u64>,
    /// This page; entries that do not parse are dropped.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub pipelines: Vec<PipelineEntry>,
}

/// One pipeline of the project pipeline list.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PipelineEntry {
    /// Pipeline id.
    #[serde(default, deserialize_with = "lenient_string")]
    pub pipeline_id: Option<String>,
    /// Pipeline name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// Tags: objects (`{tag_id, name, ...}`, as the SDK declares them) or plain names.
    #[serde(default, deserialize_with = "lenient_tags")]
    pub tag_list: Vec<String>,
    /// True when the pipeline is disabled.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub banned: Option<bool>,
    /// Its latest run, in the shape of the v5 batch status (5.1); null when it never ran, and
    /// dropped when it does not parse.
    #[serde(default, deserialize_with = "lenient_object")]
    pub latest_run: Option<V5RunStatus>,
}

/// Tag names from strings, or from objects' `name` (or `tag_name`); anything else is dropped.
fn lenient_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let Value::Array(items) = Value::deserialize(d)? else {
        return Ok(Vec::new());
    };
    Ok(items
        .into_iter()
        .filter_map(|item| match item {
            Value::String(name) => Some(name),
            Value::Object(map) => ["name", "tag_name"]
                .iter()
                .find_map(|key| map.get(*key).and_then(Value::as_str).map(str::to_string)),
            _ => None,
        })
        .collect())
}

/// A nested object that becomes `None`-like (default) instead of failing when it has the wrong shape.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lenient<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned + Default> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Lenient(
            serde_json::from_value(Value::deserialize(d)?).unwrap_or_default(),
        ))
    }
}

/// The v5 run detail (reference 5.2).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RunDetail {
    /// Run id.
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    /// Pipeline id.
    #[serde(default, deserialize_with = "lenient_string")]
    pub pipeline_id: Option<String>,
    /// Pipeline name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// Upper-case v5 status.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// `Manual`, `Scheduler`, ...
    #[serde(default, deserialize_with = "lenient_string")]
    pub trigger_type: Option<String>,
    /// Run number.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub run_number: Option<u64>,
    /// Epoch ms.
    #[serde(default, deserialize_with = "lenient_time")]
    pub start_time: Option<RawTime>,
    /// Epoch ms.
    #[serde(default, deserialize_with = "lenient_time")]
    pub end_time: Option<RawTime>,
    /// Time the run was interrupted (manual reviews, suspensions), ms.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub pause_time: Option<u64>,
    /// Console URL of the run.
    #[serde(default, deserialize_with = "lenient_string")]
    pub detail_url: Option<String>,
    /// Code sources; the first one's `params.build_params.target_branch` is the branch built.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub sources: Vec<DetailSource>,
    /// Stages in order.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub stages: Vec<DetailStage>,
}

/// A code source of the run detail (`sources[]`).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct DetailSource {
    /// Repository and build parameters.
    #[serde(default)]
    pub params: Option<Lenient<SourceParams>>,
}

/// `sources[].params` of the run detail.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct SourceParams {
    /// The source's CodeArts Repo repository id (also in `build_params`).
    #[serde(default, deserialize_with = "lenient_id")]
    pub codehub_id: Option<String>,
    /// What this run built.
    #[serde(default)]
    pub build_params: Option<Lenient<BuildParams>>,
}

/// A commit of CodeArts Repo (`ShowCommit`, reference 5.7).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RepoCommit {
    /// The commit's SHA.
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    /// When it was committed: ISO 8601 with an offset, by GitLab's convention (undocumented).
    #[serde(default, deserialize_with = "lenient_time")]
    pub committed_date: Option<RawTime>,
}

/// A stage of the run detail.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct DetailStage {
    /// Stage id (its record in this run).
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    /// What people see.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// Position.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub sequence: Option<i64>,
    /// Upper-case status.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// Epoch ms.
    #[serde(default, deserialize_with = "lenient_time")]
    pub start_time: Option<RawTime>,
    /// Epoch ms.
    #[serde(default, deserialize_with = "lenient_time")]
    pub end_time: Option<RawTime>,
    /// False when the user deselected the stage for this run.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_select: Option<bool>,
    /// Time the stage was interrupted (a manual review, a suspension), ms.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub pause_time: Option<u64>,
    /// Jobs in the stage.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub jobs: Vec<DetailJob>,
}

/// A job of a stage.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct DetailJob {
    /// Job id (its record in this run).
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    /// Job name.
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    /// Upper-case status.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// False when the job (or its stage) was deselected for this run.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_select: Option<bool>,
    /// Epoch ms.
    #[serde(default, deserialize_with = "lenient_time")]
    pub start_time: Option<RawTime>,
    /// Epoch ms.
    #[serde(default, deserialize_with = "lenient_time")]
    pub end_time: Option<RawTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    #[test]
    fn error_body_example_parses() {
        let body: ApiErrorBody = serde_json::from_str(&fixture("error-body.json")).expect("parses");
        assert_eq!(body.error_code.as_deref(), Some("AS.0001"));
        assert_eq!(
            body.error_msg.as_deref(),
            Some("The format of message is error")
        );
    }
}
