//! JSON of each API, built by hand in the vendor's shapes (reference section 3).

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Value, json};

use super::world::{
    CANCELED, COMPLETED, Commit, FAILED, INIT, PAUSED, PipelineDef, QUEUED, REGION, RUNNING,
    RunPlan, RunView, SUSPEND, UNSELECTED, World, derived_id,
};

/// Salts of per-run derived ids, one per kind of object.
const STAGE_ID: u64 = 1;
const JOB_ID: u64 = 2;
const STEP_ID: u64 = 3;
const PRE_ID: u64 = 4;
const JOB_DISPATCH: u64 = 5;
const STEP_DISPATCH: u64 = 6;
const PRE_DISPATCH: u64 = 7;

/// The vendor's error body.
pub(crate) fn error(code: &str, message: &str) -> Value {
    json!({"error_code": code, "error_msg": message})
}

/// `yyyy-MM-dd HH:mm:ss` in UTC+8 without a zone, as the vendor's Chinese regions write it.
pub(crate) fn local_time(ms: i64) -> String {
    match (
        DateTime::from_timestamp_millis(ms),
        FixedOffset::east_opt(8 * 3600),
    ) {
        (Some(utc), Some(zone)) => utc
            .with_timezone(&zone)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        _ => String::new(),
    }
}

/// CodeArts Repo's `2026-12-01T09:30:12.000+08:00`: ISO 8601 in UTC+8 with milliseconds and
/// the offset (reference 5.7).
pub(crate) fn repo_time(ms: i64) -> String {
    match (
        DateTime::from_timestamp_millis(ms),
        FixedOffset::east_opt(8 * 3600),
    ) {
        (Some(utc), Some(zone)) => utc
            .with_timezone(&zone)
            .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
        _ => String::new(),
    }
}

/// IAM's `2019-02-13T06:52:13.855000Z`: UTC, six fractional digits.
pub(crate) fn iam_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

/// v3 status and result of a v5 status.
pub(crate) fn v3_pair(status: &str) -> (&'static str, Option<&'static str>) {
    match status {
        INIT | QUEUED => ("waiting", None),
        RUNNING => ("running", None),
        PAUSED => ("verifying", None),
        SUSPEND => ("suspending", None),
        COMPLETED => ("completed", Some("success")),
        FAILED => ("completed", Some("error")),
        CANCELED => ("completed", Some("aborted")),
        // Finished without an outcome, as `UNSELECTED` is in v5.
        UNSELECTED => ("completed", None),
        _ => ("waiting", None),
    }
}

fn opt_ms(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| json!(ms))
}

fn opt_str(text: Option<&str>) -> Value {
    text.map_or(Value::Null, |t| json!(t))
}

fn console(world: &World, def: &PipelineDef) -> String {
    format!(
        "https://devcloud.{REGION}.huaweicloud.com/cicd/project/{}/pipeline",
        world.projects[def.project].id
    )
}

fn detail_url(world: &World, def: &PipelineDef, run: &RunPlan) -> String {
    format!("{}/detail/{}/{}?v=1", console(world, def), def.id, run.id)
}

fn modify_url(world: &World, def: &PipelineDef) -> String {
    format!("{}/edit/{}?v=1", console(world, def), def.id)
}

/// One entry of `GET /v3/pipelines/status` (reference 3.1).
pub(crate) fn v3_status(world: &World, def: &PipelineDef, run: &RunPlan, view: &RunView) -> Value {
    let blank = || {
        if def.empty_strings() {
            json!("")
        } else {
            Value::Null
        }
    };
    let (status, result) = v3_pair(view.status);
    let stages: Vec<Value> = def
        .stages
        .iter()
        .zip(&view.stages)
        .enumerate()
        .map(|(i, (stage, state))| {
            let (status, result) = v3_pair(state.item.status);
            json!({
                "result": result.map_or_else(blank, |r| json!(r)),
                "status": status,
                "name": stage.internal,
                "parameters": null,
                "order": i + 1,
                "dsl_method": stage.dsl,
                "display_name": stage.name,
            })
        })
        .collect();
    json!({
        "result": result.map_or_else(blank, |r| json!(r)),
        "status": status,
        "stages": stages,
        "executor": world.executor(run.executor).1,
        "pipeline_name": def.name,
        "pipeline_id": def.id,
        "detail_url": detail_url(world, def, run),
        "modify_url": modify_url(world, def),
        "start_time": local_time(view.start),
        "end_time": view.end.map_or_else(blank, |end| json!(local_time(end))),
        "build_id": run.number.to_string(),
    })
}

/// The code of a run in the status and list APIs: a run without a commit and a pipeline
/// outside CodeArts Repo leave `commit_id` and `codehub_id` out (the detail writes them null).
fn build_params(def: &PipelineDef, run: &RunPlan) -> Value {
    let build = &run.build;
    let mut params = json!({
        "build_type": build.build_type,
        "target_branch": build.target_branch,
        "source_branch": build.source_branch,
        "tag": build.tag,
        "event_type": build.trigger,
    });
    if let Some(commit) = &build.commit {
        params["commit_id"] = json!(commit.id);
        params["message"] = json!(commit.message);
    }
    if let Some(codehub_id) = &def.codehub_id {
        params["codehub_id"] = json!(codehub_id);
    }
    params
}

/// A run as in the v5 batch status (3.2), the run list (3.4, `stage_ids`) and `latest_run` (3.5).
pub(crate) fn v5_run(
    world: &World,
    def: &PipelineDef,
    run: &RunPlan,
    view: &RunView,
    stage_ids: bool,
) -> Value {
    // Stage times are strings in these APIs, in either documented form.
    let stage_time = |ms: Option<i64>| match ms {
        None => Value::Null,
        Some(ms) if def.epoch_stage_times() => json!(ms.to_string()),
        Some(ms) => json!(local_time(ms)),
    };
    let stages: Vec<Value> = def
        .stages
        .iter()
        .zip(&view.stages)
        .enumerate()
        .map(|(i, (stage, state))| {
            let mut entry = json!({
                "name": stage.name,
                "sequence": i,
                "status": state.item.status,
                "start_time": stage_time(state.item.start),
                "end_time": stage_time(state.item.end),
            });
            if stage_ids {
                entry["id"] = json!(derived_id(run.seed, &[STAGE_ID, i as u64]));
            }
            entry
        })
        .collect();
    let (executor_id, executor_name) = world.executor(run.executor);
    json!({
        "pipeline_id": def.id,
        "pipeline_run_id": run.id,
        "run_number": run.number,
        "status": view.status,
        "trigger_type": run.build.trigger,
        "executor_id": executor_id,
        "executor_name": executor_name,
        "start_time": view.start,
        "end_time": opt_ms(view.end),
        "detail_url": detail_url(world, def, run),
        "modify_url": modify_url(world, def),
        "build_params": build_params(def, run),
        "artifact_params": null,
        "stage_status_list": stages,
    })
}

/// Fields shared by job steps and stage gates.
struct StepFields<'a> {
    id: String,
    name: Option<&'a str>,
    task: &'a str,
    sequence: usize,
    identifier: Option<&'a str>,
    dispatch: Option<String>,
}

fn step_json(
    fields: StepFields<'_>,
    state: &super::world::ItemView,
    times: &dyn Fn(Option<i64>) -> Value,
) -> Value {
    json!({
        "id": fields.id,
        "name": fields.name,
        "task": fields.task,
        "business_type": null,
        "inputs": null,
        "sequence": fields.sequence,
        "official_task_version": null,
        "identifier": fields.identifier,
        "multi_step_editable": 0,
        "endpoint_ids": null,
        "last_dispatch_id": fields.dispatch,
        "status": state.status,
        "message": opt_str(state.message),
        "start_time": times(state.start),
        "end_time": times(state.end),
    })
}

/// `GET .../pipeline-runs/detail` (reference 3.3).
pub(crate) fn run_detail(
    world: &World,
    def: &PipelineDef,
    run: &RunPlan,
    view: &RunView,
    now_ms: i64,
) -> Value {
    let seed = run.seed;
    let stages: Vec<Value> = def
        .stages
        .iter()
        .zip(&view.stages)
        .enumerate()
        .map(|(i, (stage, state))| {
            let si = i as u64;
            // Unselected stages keep 0 times, stages not reached yet null: both are documented.
            let times = |ms: Option<i64>| match ms {
                Some(ms) => json!(ms),
                None if !state.selected => json!(0),
                None => Value::Null,
            };
            let mut gates: Vec<(Option<&str>, &str)> = Vec::new();
            if i == 0 {
                gates.push((None, "official_devcloud_autoTrigger"));
            }
            if stage.is_review() {
                gates.push((Some(stage.name.as_str()), "official_devcloud_manualReview"));
            }
            let pre: Vec<Value> = gates
                .iter()
                .zip(&state.pre)
                .enumerate()
                .map(|(k, ((name, task), gate))| {
                    let fields = StepFields {
                        id: derived_id(seed, &[PRE_ID, si, k as u64]),
                        name: *name,
                        task,
                        sequence: k,
                        identifier: None,
                        dispatch: gate.start.map(|_| derived_id(seed, &[PRE_DISPATCH, si, k as u64])),
                    };
                    step_json(fields, gate, &times)
                })
                .collect();
            let jobs: Vec<Value> = stage
                .jobs
                .iter()
                .zip(&state.jobs)
                .enumerate()
                .map(|(j, (job, job_state))| {
                    let ji = j as u64;
                    let steps: Vec<Value> = job
                        .steps
                        .iter()
                        .zip(&job_state.steps)
                        .enumerate()
                        .map(|(k, (step, step_state))| {
                            let ki = k as u64;
                            let fields = StepFields {
                                id: derived_id(seed, &[STEP_ID, si, ji, ki]),
                                name: Some(step.name.as_str()),
                                task: step.task,
                                sequence: k,
                                identifier: Some(step.identifier.as_str()),
                                dispatch: step_state
                                    .start
                                    .map(|_| derived_id(seed, &[STEP_DISPATCH, si, ji, ki])),
                            };
                            step_json(fields, step_state, &times)
                        })
                        .collect();
                    json!({
                        "id": derived_id(seed, &[JOB_ID, si, ji]),
                        "category": null,
                        "sequence": j,
                        "async": null,
                        "name": job.name,
                        "identifier": job.identifier,
                        "depends_on": [],
                        "condition": null,
                        "resource": null,
                        "is_select": state.selected,
                        "timeout": "",
                        "last_dispatch_id": job_state.item.start.map(|_| derived_id(seed, &[JOB_DISPATCH, si, ji])),
                        "status": job_state.item.status,
                        "message": opt_str(job_state.item.message),
                        "start_time": times(job_state.item.start),
                        "end_time": times(job_state.item.end),
                        "steps": steps,
                    })
                })
                .collect();
            json!({
                "id": derived_id(seed, &[STAGE_ID, si]),
                "category": null,
                "name": stage.name,
                "identifier": stage.identifier,
                "run_always": false,
                "parallel": null,
                "is_select": state.selected,
                "sequence": i,
                "depends_on": [],
                "condition": null,
                "status": state.item.status,
                "start_time": times(state.item.start),
                "end_time": times(state.item.end),
                "pause_time": state.pause,
                "pre": pre,
                "post": [],
                "jobs": jobs,
            })
        })
        .collect();
    let project = &world.projects[def.project];
    let (executor_id, executor_name) = world.executor(run.executor);
    let sources = sources(def, run);
    json!({
        "id": run.id,
        "pipeline_id": def.id,
        "manifest_version": "3.0",
        "name": def.name,
        "description": null,
        "is_publish": false,
        "executor_id": executor_id,
        "executor_name": executor_name,
        "status": view.status,
        "trigger_type": run.build.trigger,
        "run_number": run.number,
        "start_time": view.start,
        "end_time": opt_ms(view.end),
        "pause_time": view.pause,
        "stages": stages,
        "domain_id": world.domain_id,
        "project_id": project.id,
        "region": REGION,
        "component_id": "",
        "language": "zh-cn",
        "sources": sources,
        "artifacts": null,
        "subject_id": run.id,
        "group_id": null,
        "group_name": null,
        "detail_url": detail_url(world, def, run),
        "current_system_time": now_ms,
    })
}

/// The code source of a run, as in the vendor's detail example; a pipeline outside CodeArts
/// Repo builds from GitHub and has no `codehub_id`.
fn sources(def: &PipelineDef, run: &RunPlan) -> Value {
    let build = &run.build;
    let (git_type, git_host) = match def.codehub_id {
        Some(_) => (
            "codehub",
            format!("codehub.devcloud.{REGION}.huaweicloud.com"),
        ),
        None => ("github", "github.com".to_string()),
    };
    let commit = build.commit.as_ref();
    json!([{
        "type": "code",
        "params": {
            "git_type": git_type,
            "git_url": format!("https://{git_host}/{}/{}.git", def.index + 1, def.repo),
            "ssh_git_url": format!("git@{git_host}:{}/{}.git", def.index + 1, def.repo),
            "web_url": "",
            "repo_name": def.repo,
            "default_branch": "master",
            "endpoint_id": "",
            "codehub_id": def.codehub_id,
            "alias": "",
            "build_params": {
                "action": null,
                "build_type": build.build_type,
                "commit_id": commit.map(|c| c.id.as_str()),
                "event_type": build.trigger,
                "merge_id": build.merge_id.map(|id| id.to_string()),
                "message": commit.map(|c| c.message),
                "source_branch": build.source_branch,
                "tag": build.tag,
                "target_branch": build.target_branch,
                "codehub_id": def.codehub_id,
            },
        },
    }])
}

/// `GET /v4/repositories/{repository_id}/repository/commits?sha=` of CodeArts Repo (reference
/// 5.7): the commit, with times in UTC+8.
pub(crate) fn commit(world: &World, commit: &Commit, repository: u64) -> Value {
    let (_, author) = world.executor(commit.author);
    let email = world.executor_email(commit.author);
    let title = commit.message.lines().next().unwrap_or_default();
    let committed = repo_time(commit.committed_ms);
    json!({
        "id": commit.id,
        "short_id": commit.id.get(..8).unwrap_or(&commit.id),
        "title": title,
        "message": format!("{}\n", commit.message),
        "parent_ids": commit.parent_ids,
        "author_name": author,
        "author_email": email,
        "authored_date": repo_time(commit.authored_ms),
        "committer_name": author,
        "committer_email": email,
        "committed_date": committed,
        "created_at": committed,
        "project_id": repository,
        "status": null,
        "last_pipeline": null,
    })
}

/// The id of tag `name` in project `project_id`: a pure function of the account, the project
/// and the name, so every pipeline carrying the tag shows the same id.
pub(crate) fn tag_id(world: &World, project_id: &str, name: &str) -> String {
    // FNV-1a of account, project and name: stable, and independent of the pipelines' RNGs.
    let hash = world
        .domain_id
        .bytes()
        .chain([0])
        .chain(project_id.bytes())
        .chain([0])
        .chain(name.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |acc, byte| {
            (acc ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    derived_id(TAG_ID_SALT, &[hash])
}

/// Salt of tag ids, apart from every other derived id.
const TAG_ID_SALT: u64 = 0x0074_6167_6964;

/// The `tag_list` of a pipeline: the objects the SDK declares, or, for some pipelines, plain
/// names (the reference shows objects; readers should take both).
fn tag_list(world: &World, def: &PipelineDef) -> Value {
    let project = &world.projects[def.project];
    let (creator_id, _) = world.executor(def.creator);
    let tags: Vec<Value> = def
        .tags
        .iter()
        .map(|name| {
            if def.tags_as_names() {
                return json!(name);
            }
            json!({
                "tag_id": tag_id(world, &project.id, name),
                "name": name,
                "color": "#3f7fbf",
                "project_id": project.id,
                "domain_id": world.domain_id,
                "creator_id": creator_id,
                "updater_id": creator_id,
                "create_time": def.create_ms,
                "update_time": def.create_ms,
            })
        })
        .collect();
    Value::Array(tags)
}

/// One pipeline of `POST .../pipelines/list` (reference 5.4).
pub(crate) fn pipeline_entry(
    world: &World,
    def: &PipelineDef,
    latest: Option<(&RunPlan, &RunView)>,
) -> Value {
    let project = &world.projects[def.project];
    let (creator_id, creator_name) = world.executor(def.creator);
    let update = latest.map_or(def.create_ms, |(_, view)| view.update);
    json!({
        "pipeline_id": def.id,
        "name": def.name,
        "project_id": project.id,
        "project_name": project.name,
        "create_time": def.create_ms,
        "update_time": update,
        "creator_id": creator_id,
        "creator_name": creator_name,
        "is_publish": false,
        "is_collect": false,
        "banned": def.banned,
        "description": def.description,
        // Old-version pipelines carry the older definition format.
        "manifest_version": if def.old_version { "2.0" } else { "3.0" },
        "tag_list": tag_list(world, def),
        "latest_run": latest.map_or(Value::Null, |(run, view)| v5_run(world, def, run, view, false)),
    })
}

fn result_of(status: &str) -> Option<&'static str> {
    v3_pair(status).1
}

fn seconds_between(start: i64, end: i64) -> f64 {
    (end - start) as f64 / 1000.0
}

/// A completed run as `/_sim/truth` lists it. `committed_ms` is what the exporter can learn
/// from CodeArts Repo: null without a commit, outside CodeArts Repo, and for the unknown commit.
pub(crate) fn truth_run(def: &PipelineDef, run: &RunPlan, view: &RunView) -> Value {
    let commit = run.build.commit.as_ref();
    let committed_ms = commit
        .filter(|c| c.in_repo && def.codehub_id.is_some())
        .map(|c| c.committed_ms);
    let end = view.end.unwrap_or(view.start);
    let stages: Vec<Value> = def
        .stages
        .iter()
        .zip(&view.stages)
        .enumerate()
        .filter_map(|(si, (stage, state))| {
            let (start, end) = (state.item.start?, state.item.end?);
            let si = si as u64;
            let jobs: Vec<Value> = stage
                .jobs
                .iter()
                .zip(&state.jobs)
                .enumerate()
                .filter_map(|(ji, (job, job_state))| {
                    let (start, end) = (job_state.item.start?, job_state.item.end?);
                    Some(json!({
                        "id": derived_id(run.seed, &[JOB_ID, si, ji as u64]),
                        "name": job.name,
                        "status": job_state.item.status,
                        "result": result_of(job_state.item.status),
                        "start_ms": start,
                        "end_ms": end,
                        "duration_seconds": seconds_between(start, end),
                    }))
                })
                .collect();
            Some(json!({
                "id": derived_id(run.seed, &[STAGE_ID, si]),
                "name": stage.name,
                "status": state.item.status,
                "result": result_of(state.item.status),
                "start_ms": start,
                "end_ms": end,
                "duration_seconds": seconds_between(start, end),
                "jobs": jobs,
            }))
        })
        .collect();
    // Queued until the first stage starts (initialisation and waiting for an executor).
    let queue_seconds = view
        .stages
        .iter()
        .filter_map(|s| s.item.start)
        .min()
        .map(|first| seconds_between(view.start, first));
    json!({
        "run_id": run.id,
        "run_number": run.number,
        "status": view.status,
        "result": result_of(view.status),
        "trigger_type": run.build.trigger,
        "target_branch": run.build.target_branch,
        "commit_id": commit.map(|c| c.id.as_str()),
        "codehub_id": def.codehub_id,
        "committed_ms": committed_ms,
        "start_ms": view.start,
        "end_ms": end,
        "duration_seconds": seconds_between(view.start, end),
        "queue_seconds": queue_seconds,
        "pause_seconds": view.pause as f64 / 1000.0,
        "stages": stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    const START: i64 = 1_800_000_000_000;

    #[test]
    fn times_have_the_vendor_formats() {
        // 2023-01-20 09:33:17 UTC
        assert_eq!(local_time(1_674_207_197_000), "2023-01-20 17:33:17");
        assert_eq!(iam_time(1_674_207_197_855), "2023-01-20T09:33:17.855000Z");
    }

    fn sample() -> (World, usize) {
        (World::new(6, 2, 1, 30.0, START), 0)
    }

    /// Normalised run state, read the way a client reads each API.
    fn states(value: &Value) -> Vec<String> {
        value["stages"]
            .as_array()
            .or(value["stage_status_list"].as_array())
            .expect("stages")
            .iter()
            .map(|s| match s["status"].as_str().expect("status") {
                v if v.chars().all(|c| c.is_ascii_lowercase()) => {
                    format!("{v}/{}", s["result"].as_str().unwrap_or(""))
                }
                v => {
                    let (status, result) = v3_pair(v);
                    format!("{status}/{}", result.unwrap_or(""))
                }
            })
            .collect()
    }

    #[test]
    fn v3_and_v5_agree_on_the_same_run() {
        let (world, _) = sample();
        for index in 0..world.pipelines.len() {
            for step in 0..40 {
                let t = START + step * 7_000;
                world.with_runs(index, t, |def, log| {
                    let run = log.latest(t).expect("a run");
                    let view = run.view(t);
                    let v3 = v3_status(&world, def, run, &view);
                    let v5 = v5_run(&world, def, run, &view, false);
                    let detail = run_detail(&world, def, run, &view, t);
                    assert_eq!(v3["build_id"], json!(run.number.to_string()));
                    assert_eq!(v5["run_number"], json!(run.number));
                    let (status, result) = v3_pair(v5["status"].as_str().expect("status"));
                    assert_eq!(v3["status"], json!(status));
                    assert_eq!(v3["result"].as_str().filter(|r| !r.is_empty()), result);
                    assert_eq!(states(&v3), states(&v5));
                    assert_eq!(states(&detail), states(&v5));
                    assert_eq!(detail["status"], v5["status"]);
                    // Same instants, whatever the form.
                    let secs = |v: &Value| -> Option<f64> {
                        match v {
                            // 0 is "never", as clients read it.
                            Value::Number(n) if n.as_f64() == Some(0.0) => None,
                            Value::Number(n) => n.as_f64().map(|ms| ms / 1000.0),
                            Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
                                s.parse::<f64>().ok().map(|ms| ms / 1000.0)
                            }
                            Value::String(s) => {
                                NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                                    .ok()
                                    .map(|t| (t.and_utc().timestamp() - 8 * 3600) as f64)
                            }
                            _ => None,
                        }
                    };
                    let v3_start = secs(&v3["start_time"]).expect("v3 start");
                    let v5_start = secs(&v5["start_time"]).expect("v5 start");
                    assert!((v5_start - v3_start).abs() < 1.0);
                    assert_eq!(
                        secs(&v3["end_time"]).is_some(),
                        secs(&v5["end_time"]).is_some()
                    );
                    for (a, b) in v5["stage_status_list"]
                        .as_array()
                        .expect("list")
                        .iter()
                        .zip(detail["stages"].as_array().expect("stages"))
                    {
                        for key in ["start_time", "end_time"] {
                            match (secs(&a[key]), secs(&b[key])) {
                                (Some(x), Some(y)) => assert!((x - y).abs() < 1.0),
                                (None, None) => {}
                                other => panic!("{key}: {other:?}"),
                            }
                        }
                    }
                });
            }
        }
    }

    #[test]
    fn shapes_follow_the_reference() {
        let (world, index) = sample();
        world.with_runs(index, START, |def, log| {
            let run = log.latest(START).expect("run");
            let view = run.view(START);
            let v3 = v3_status(&world, def, run, &view);
            let mut keys: Vec<&String> = v3.as_object().expect("object").keys().collect();
            keys.sort();
            assert_eq!(
                keys,
                [
                    "build_id",
                    "detail_url",
                    "end_time",
                    "executor",
                    "modify_url",
                    "pipeline_id",
                    "pipeline_name",
                    "result",
                    "stages",
                    "start_time",
                    "status"
                ]
            );
            let stage = &v3["stages"][0];
            assert_eq!(stage["name"], "initial");
            assert_eq!(stage["order"], 1);
            assert!(stage["parameters"].is_null());
            let v5 = v5_run(&world, def, run, &view, true);
            assert!(v5["start_time"].is_i64());
            assert!(v5["artifact_params"].is_null());
            assert!(v5["stage_status_list"][0]["id"].is_string());
            assert!(v5["build_params"]["target_branch"].is_string());
            // Pipeline 0 writes stage times as epoch-ms strings.
            let first = &v5["stage_status_list"][0]["start_time"];
            assert!(
                first.is_null()
                    || first
                        .as_str()
                        .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
            );
            let detail = run_detail(&world, def, run, &view, START);
            assert_eq!(detail["current_system_time"], START);
            assert_eq!(detail["subject_id"], detail["id"]);
            assert_eq!(detail["sources"][0]["type"], "code");
            let job = &detail["stages"][0]["jobs"][0];
            assert_eq!(job["timeout"], "");
            assert!(job["steps"][0]["multi_step_editable"] == 0);
            assert_eq!(
                detail["stages"][0]["pre"][0]["task"],
                "official_devcloud_autoTrigger"
            );
        });
    }

    #[test]
    fn not_started_items_have_null_times_and_unselected_ones_zero() {
        let world = World::new(30, 1, 3, 10.0, START);
        let later = START + 24 * 3_600_000;
        let mut seen_unselected = false;
        for index in 0..world.pipelines.len() {
            world.with_runs(index, later, |def, log| {
                for run in log.started(later).rev().take(60) {
                    let view = run.view(run.end_ms());
                    let detail = run_detail(&world, def, run, &view, later);
                    for stage in detail["stages"].as_array().expect("stages") {
                        match stage["status"].as_str() {
                            Some("UNSELECTED") => {
                                seen_unselected = true;
                                assert_eq!(stage["is_select"], false);
                                assert_eq!(stage["start_time"], 0);
                            }
                            Some("INIT") => {
                                assert!(
                                    stage["start_time"].is_null() && stage["end_time"].is_null()
                                );
                                assert!(
                                    stage["jobs"]
                                        .as_array()
                                        .expect("jobs")
                                        .iter()
                                        .all(|j| j["start_time"].is_null())
                                );
                            }
                            _ => assert!(stage["end_time"].is_i64()),
                        }
                    }
                }
            });
        }
        assert!(seen_unselected);
    }
}
