//! The test-only `/_sim` endpoints that read or change the world: the truth tests compare the
//! exporter with, and pipelines added and deleted while the simulator runs.

use serde_json::{Value, json};

use super::params::{body_object, field_list};
use super::{Reply, Service, Simulator, bad_param, no_project};
use crate::simulator::render;
use crate::simulator::world::PipelineKind;

impl Simulator {
    /// Every completed run, per pipeline (what `GET /_sim/truth` answers).
    #[cfg(test)]
    pub(crate) fn truth(&self, now_ms: i64) -> Value {
        let world = self.world();
        let service = Service {
            world: &world,
            options: &self.options,
            tokens: &self.tokens,
        };
        service.truth(now_ms, i64::MIN)
    }

    /// `POST /_sim/pipelines` `{"name", "project_id", "tags", "old_version", "banned"}` (all
    /// optional): creates a pipeline whose first run starts now.
    pub(super) fn add_pipeline(&self, body: &[u8], now_ms: i64) -> Reply {
        let body = match body_object(body) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let name = match body.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(_) => return bad_param("name"),
        };
        let tags = match field_list(&body, "tags") {
            Ok(tags) => tags,
            Err(reply) => return reply,
        };
        let flag = |key: &str| match body.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad_param(key)),
        };
        let kind = match (flag("old_version"), flag("banned")) {
            (Ok(old_version), Ok(banned)) => PipelineKind {
                old_version,
                banned,
            },
            (Err(reply), _) | (_, Err(reply)) => return reply,
        };
        let mut world = self.world_mut();
        let project = match body.get("project_id") {
            None | Some(Value::Null) => 0,
            Some(Value::String(id)) => match world.project(id) {
                Some(project) => project,
                None => return no_project(),
            },
            Some(_) => return bad_param("project_id"),
        };
        if world.projects.is_empty() {
            return no_project();
        }
        let index = world.add_pipeline(project, name, tags, kind, now_ms);
        let def = &world.pipelines[index];
        Reply::ok(json!({
            "pipeline_id": def.id,
            "name": def.name,
            "project_id": world.projects[project].id,
            "tag_list": def.tags,
            "old_version": def.old_version,
            "banned": def.banned,
        }))
    }

    /// `POST /_sim/pipelines/{id}/ban` and `.../unban`: disables or enables a pipeline.
    pub(super) fn ban_pipeline(&self, id: &str, banned: bool) -> Reply {
        let mut world = self.world_mut();
        let Some(index) = world.pipeline(id) else {
            return super::no_pipeline();
        };
        world.set_banned(index, banned);
        Reply::ok(json!({ "pipeline_id": id, "banned": banned }))
    }
}

impl Service<'_> {
    /// Every completed run the simulator keeps that ended at or after `since_ms`, oldest first,
    /// per pipeline; and the run, finished or not, that deploys the commit the Repo API does not
    /// know (`unknown_commit`; null before that run starts and once it is forgotten).
    pub(super) fn truth(&self, now_ms: i64, since_ms: i64) -> Value {
        let mut pipelines = Vec::with_capacity(self.world.pipelines.len());
        let mut unknown_commit = Value::Null;
        for project in &self.world.projects {
            for &index in &project.pipelines {
                pipelines.push(self.world.with_runs(index, now_ms, |def, log| {
                    let unknown = log.started(now_ms).find_map(|run| {
                        let commit = run.build.commit.as_ref().filter(|c| !c.in_repo)?;
                        Some(json!({
                            "project_id": project.id,
                            "pipeline_id": def.id,
                            "run_id": run.id,
                            "run_number": run.number,
                            "codehub_id": def.codehub_id,
                            "commit_id": commit.id,
                        }))
                    });
                    if let Some(unknown) = unknown {
                        unknown_commit = unknown;
                    }
                    let runs: Vec<Value> = log
                        .started(now_ms)
                        .filter(|run| run.is_done(now_ms) && run.end_ms() >= since_ms)
                        .map(|run| render::truth_run(def, run, &run.view(now_ms)))
                        .collect();
                    json!({
                        "project_id": project.id,
                        "pipeline_id": def.id,
                        "name": def.name,
                        "tags": def.tags,
                        "old_version": def.old_version,
                        "banned": def.banned,
                        "stage_count": def.stages.len(),
                        "codehub_id": def.codehub_id,
                        "deploy_environment": def.deploy.as_ref().map(|d| d.environment),
                        "runs": runs,
                    })
                }));
            }
        }
        json!({
            "started_at_ms": self.world.started_at_ms,
            "now_ms": now_ms,
            "unknown_commit": unknown_commit,
            "pipelines": pipelines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use hyper::StatusCode;

    #[test]
    fn pipelines_can_be_added_and_deleted_at_run_time() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let list_uri = format!("/v5/{project}/api/pipelines/list");
        let body = json!({"name": "新流水线 added", "project_id": project, "tags": ["nightly"]});
        let added = call_with(
            &sim,
            "POST",
            "/_sim/pipelines",
            None,
            &body.to_string(),
            START,
        );
        assert_eq!(added.status, StatusCode::OK);
        let id = added.body["pipeline_id"].as_str().expect("id").to_string();
        assert_eq!(id.len(), 32);
        assert!(!ids.contains(&id));
        assert_eq!(added.body["tag_list"], json!(["nightly"]));

        // Listed, with a run that starts at creation and no history before it.
        let later = START + 1000;
        let every = "{\"limit\": 100, \"query_new\": false}";
        let list = call(&sim, "POST", &list_uri, every, later);
        assert_eq!(list.body["total"], ids.len() + 1);
        let entry = list.body["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .find(|p| p["pipeline_id"] == id.as_str())
            .expect("listed")
            .clone();
        assert_eq!(entry["name"], "新流水线 added");
        assert_eq!(entry["latest_run"]["run_number"], 1);
        assert_eq!(entry["latest_run"]["start_time"], START);
        let status_uri = format!("/v5/{project}/api/pipelines/status");
        let status = call(&sim, "POST", &status_uri, &json!([id]).to_string(), later);
        assert_eq!(status.body.as_array().expect("array").len(), 1);

        // Deleted: gone from every API and from the truth.
        let deleted = call_with(
            &sim,
            "DELETE",
            &format!("/_sim/pipelines/{id}"),
            None,
            "",
            later,
        );
        assert_eq!(deleted.status, StatusCode::OK);
        let again = call_with(
            &sim,
            "DELETE",
            &format!("/_sim/pipelines/{id}"),
            None,
            "",
            later,
        );
        assert_eq!(again.status, StatusCode::NOT_FOUND);
        let list = call(&sim, "POST", &list_uri, every, later);
        assert_eq!(list.body["total"], ids.len());
        let status = call(&sim, "POST", &status_uri, &json!([id]).to_string(), later);
        assert!(status.body.as_array().expect("array").is_empty());
        let detail = call(
            &sim,
            "GET",
            &format!("/v5/{project}/api/pipelines/{id}/pipeline-runs/detail"),
            "",
            later,
        );
        assert_eq!(detail.status, StatusCode::NOT_FOUND);
        let truth = sim.truth(later);
        assert!(
            truth["pipelines"]
                .as_array()
                .expect("pipelines")
                .iter()
                .all(|p| p["pipeline_id"] != id.as_str())
        );

        for bad in ["{\"name\": 5}", "{\"project_id\": 5}", "[]"] {
            let reply = call_with(&sim, "POST", "/_sim/pipelines", None, bad, START);
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let unknown = json!({"project_id": "0123456789abcdef0123456789abcdef"}).to_string();
        let reply = call_with(&sim, "POST", "/_sim/pipelines", None, &unknown, START);
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn truth_names_the_code_of_each_run_as_the_apis_and_repo_do() {
        let sim = sim();
        let now = START + 2 * HOUR;
        let truth = sim.truth(now);
        let (mut runs, mut missing, mut redeploys, mut dated) = (0, 0, 0, 0);
        let mut outside_repo = Vec::new();
        for pipeline in truth["pipelines"].as_array().expect("pipelines") {
            let project = pipeline["project_id"].as_str().expect("project");
            let id = pipeline["pipeline_id"].as_str().expect("id");
            let codehub_id = &pipeline["codehub_id"];
            if codehub_id.is_null() {
                outside_repo.push(id.to_string());
            }
            // Every run of the history, by id, as the run list writes it.
            let list_uri = format!("/v5/{project}/api/pipelines/{id}/pipeline-runs/list");
            let mut listed = std::collections::HashMap::new();
            for offset in (0..).step_by(100) {
                let body = json!({"offset": offset, "limit": 100}).to_string();
                let page = call(&sim, "POST", &list_uri, &body, now).body;
                let page = page["pipeline_runs"].as_array().expect("runs").clone();
                if page.is_empty() {
                    break;
                }
                for run in page {
                    listed.insert(run["pipeline_run_id"].clone(), run["build_params"].clone());
                }
            }
            let mut previous = Value::Null;
            for run in pipeline["runs"].as_array().expect("runs") {
                runs += 1;
                let params = &listed[&run["run_id"]];
                // Absent from the list where the truth says null.
                let commit_id = params.get("commit_id").unwrap_or(&Value::Null);
                assert_eq!(commit_id, &run["commit_id"]);
                assert_eq!(params.get("codehub_id").unwrap_or(&Value::Null), codehub_id);
                assert_eq!(&run["codehub_id"], codehub_id);
                missing += usize::from(commit_id.is_null());
                redeploys += usize::from(!commit_id.is_null() && *commit_id == previous);
                previous = commit_id.clone();
                let Some(committed_ms) = run["committed_ms"].as_i64() else {
                    continue;
                };
                dated += 1;
                assert!(committed_ms < run["start_ms"].as_i64().expect("start"));
                let repo_uri = format!(
                    "/v4/repositories/{}/repository/commits?sha={}",
                    codehub_id.as_str().expect("repository"),
                    commit_id.as_str().expect("commit")
                );
                let commit = call(&sim, "GET", &repo_uri, "", now).body;
                let date = commit["committed_date"].as_str().expect("date");
                let parsed = chrono::DateTime::parse_from_rfc3339(date).expect("ISO 8601");
                assert_eq!(parsed.timestamp_millis(), committed_ms);
            }
        }
        assert!(runs > 500, "{runs}");
        assert!(missing > 0 && missing < runs / 20, "{missing} of {runs}");
        assert!(redeploys > 0, "{redeploys}");
        assert!(dated > runs * 3 / 4, "{dated} of {runs}");
        // One pipeline builds outside CodeArts Repo: the detail says where, without a codehub_id.
        assert_eq!(outside_repo.len(), 1);
        let (project, _) = sim
            .targets()
            .into_iter()
            .find(|(_, ids)| ids.contains(&outside_repo[0]))
            .expect("project");
        let detail_uri = format!(
            "/v5/{project}/api/pipelines/{}/pipeline-runs/detail",
            outside_repo[0]
        );
        let detail = call(&sim, "GET", &detail_uri, "", now).body;
        let source = &detail["sources"][0]["params"];
        assert_eq!(source["git_type"], "github");
        assert!(source["codehub_id"].is_null());
        assert!(source["build_params"]["codehub_id"].is_null());
        // The unknown commit is deployed by a run of another pipeline, and the truth says so.
        let unknown = &truth["unknown_commit"];
        assert!(unknown["codehub_id"].is_string());
        assert_ne!(unknown["pipeline_id"], outside_repo[0].as_str());
    }

    #[test]
    fn truth_since_keeps_the_runs_that_ended_since() {
        let sim = sim();
        let now = START + HOUR;
        let all = call_with(&sim, "GET", "/_sim/truth", None, "", now).body;
        let since = START + HOUR / 2;
        let recent = call_with(
            &sim,
            "GET",
            &format!("/_sim/truth?since_ms={since}"),
            None,
            "",
            now,
        )
        .body;
        let ends = |truth: &Value| -> Vec<i64> {
            truth["pipelines"]
                .as_array()
                .expect("pipelines")
                .iter()
                .flat_map(|p| p["runs"].as_array().expect("runs").clone())
                .map(|r| r["end_ms"].as_i64().expect("end"))
                .collect()
        };
        let expected: Vec<i64> = ends(&all).into_iter().filter(|e| *e >= since).collect();
        assert!(!expected.is_empty());
        assert_eq!(ends(&recent), expected);
        let bad = call_with(&sim, "GET", "/_sim/truth?since_ms=soon", None, "", now);
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn truth_lists_only_completed_runs_and_matches_the_apis() {
        let sim = sim();
        let now = START + HOUR;
        let truth = sim.truth(now);
        assert_eq!(truth["started_at_ms"], START);
        let targets = sim.targets();
        for pipeline in truth["pipelines"].as_array().expect("pipelines") {
            let runs = pipeline["runs"].as_array().expect("runs");
            assert!(!runs.is_empty());
            let mut previous = 0;
            for run in runs {
                let end = run["end_ms"].as_i64().expect("end");
                assert!(end <= now);
                let number = run["run_number"].as_u64().expect("number");
                assert!(number > previous);
                previous = number;
                let duration = run["duration_seconds"].as_f64().expect("duration");
                assert!(
                    (duration - (end - run["start_ms"].as_i64().expect("start")) as f64 / 1000.0)
                        .abs()
                        < 1e-9
                );
                let expected = match run["status"].as_str() {
                    Some("COMPLETED") => "success",
                    Some("FAILED") => "error",
                    Some("CANCELED") => "aborted",
                    other => panic!("status {other:?}"),
                };
                assert_eq!(run["result"], expected);
                assert!(
                    run["stages"]
                        .as_array()
                        .expect("stages")
                        .iter()
                        .all(|s| s["end_ms"].as_i64() <= Some(end))
                );
            }
            // The run detail says the same about the newest completed run.
            let project = pipeline["project_id"].as_str().expect("project");
            let id = pipeline["pipeline_id"].as_str().expect("id");
            assert!(
                targets
                    .iter()
                    .any(|(p, ids)| p == project && ids.iter().any(|i| i == id))
            );
            let last = runs.last().expect("last");
            let uri = format!(
                "/v5/{project}/api/pipelines/{id}/pipeline-runs/detail?pipeline_run_id={}",
                last["run_id"].as_str().expect("run id")
            );
            let detail = call(&sim, "GET", &uri, "", now).body;
            assert_eq!(detail["status"], last["status"]);
            assert_eq!(detail["start_time"], last["start_ms"]);
            assert_eq!(detail["end_time"], last["end_ms"]);
            let ran = detail["stages"]
                .as_array()
                .expect("stages")
                .iter()
                .filter(|s| s["end_time"].as_i64().unwrap_or(0) > 0)
                .count();
            assert_eq!(ran, last["stages"].as_array().expect("stages").len());
            // Jobs and the queue time say what the detail says.
            let first_stage_start = detail["stages"][0]["start_time"].as_i64().expect("start");
            let queue = last["queue_seconds"].as_f64().expect("queue");
            let start = last["start_ms"].as_i64().expect("start");
            assert!((queue - (first_stage_start - start) as f64 / 1000.0).abs() < 1e-9);
            assert!(queue > 0.0);
            for (stage, truth_stage) in detail["stages"]
                .as_array()
                .expect("stages")
                .iter()
                .filter(|s| s["end_time"].as_i64().unwrap_or(0) > 0)
                .zip(last["stages"].as_array().expect("stages"))
            {
                let ran_jobs: Vec<&Value> = stage["jobs"]
                    .as_array()
                    .expect("jobs")
                    .iter()
                    .filter(|j| j["end_time"].as_i64().unwrap_or(0) > 0)
                    .collect();
                assert_eq!(stage["id"], truth_stage["id"]);
                let truth_jobs = truth_stage["jobs"].as_array().expect("jobs");
                assert_eq!(ran_jobs.len(), truth_jobs.len());
                for (job, truth_job) in ran_jobs.iter().zip(truth_jobs) {
                    assert_eq!(job["id"], truth_job["id"]);
                    assert!(job["id"].is_string());
                    assert_eq!(job["name"], truth_job["name"]);
                    assert_eq!(job["status"], truth_job["status"]);
                    assert_eq!(job["end_time"], truth_job["end_ms"]);
                }
            }
        }
        // Later, more runs have completed.
        let later = sim.truth(now + 2 * HOUR);
        let count = |t: &Value| -> usize {
            t["pipelines"]
                .as_array()
                .expect("p")
                .iter()
                .map(|p| p["runs"].as_array().expect("r").len())
                .sum()
        };
        assert!(count(&later) > count(&truth));
    }
}
