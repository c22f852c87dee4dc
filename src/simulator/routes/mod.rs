//! Routing of the simulated APIs: one file per API family (`status`, `runs`, `pipelines`, and
//! CodeArts Repo's commits in `repo`), IAM and the credentials check apart (`iam`), the test-only `/_sim` endpoints (`control`), and the
//! parameter checks they share (`params`).

mod control;
mod iam;
mod params;
mod pipelines;
mod repo;
mod runs;
mod status;

use hyper::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::auth::TokenStore;
use super::faults::FaultSpec;
use super::render::error;
use super::world::{PipelineDef, RunPlan, RunView, World};
use super::{SimOptions, Simulator};
use params::{is_id, query_value};

/// A request with its body read.
pub(crate) struct SimRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub authority: Option<&'a str>,
    pub body: &'a [u8],
}

/// What to answer: a status, a JSON body, and the token IAM issued, if any.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub subject_token: Option<String>,
}

impl Reply {
    fn new(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            subject_token: None,
        }
    }

    fn ok(body: Value) -> Reply {
        Reply::new(StatusCode::OK, body)
    }
}

fn bad_param(name: &str) -> Reply {
    Reply::new(
        StatusCode::BAD_REQUEST,
        error("DEVPIPE.00011001", &format!("{name} : 非法参数")),
    )
}

fn no_project() -> Reply {
    Reply::new(
        StatusCode::NOT_FOUND,
        error("DEVPIPE.00011104", "项目不存在"),
    )
}

fn no_pipeline() -> Reply {
    Reply::new(
        StatusCode::NOT_FOUND,
        error("DEVPIPE.00011103", "流水线不存在"),
    )
}

fn no_run() -> Reply {
    Reply::new(
        StatusCode::NOT_FOUND,
        error("DEVPIPE.00011105", "流水线运行实例不存在"),
    )
}

fn no_route() -> Reply {
    // What the vendor's API gateway answers for paths it does not know.
    Reply::new(
        StatusCode::NOT_FOUND,
        error(
            "APIG.0101",
            "The API does not exist or has not been published in the environment",
        ),
    )
}

fn unauthorized(code: &str, message: &str) -> Reply {
    Reply::new(StatusCode::UNAUTHORIZED, error(code, message))
}

impl Simulator {
    /// Answers `request` as the service would at `now_ms`.
    pub(crate) fn handle(&self, request: &SimRequest<'_>, now_ms: i64) -> Reply {
        let path = request.path.strip_prefix('/').unwrap_or(request.path);
        let segments: Vec<&str> = path.split('/').collect();
        // Test-only changes to the world take the write lock; everything else reads.
        match (request.method, segments.as_slice()) {
            ("POST", ["_sim", "pipelines"]) => self.add_pipeline(request.body, now_ms),
            ("GET", ["_sim", "faults"]) => Reply::ok(self.faults.describe(now_ms)),
            ("POST", ["_sim", "faults"]) => match FaultSpec::from_json(request.body) {
                Ok(spec) => {
                    self.faults.set(&spec, now_ms);
                    Reply::ok(self.faults.describe(now_ms))
                }
                Err(problem) => Reply::new(
                    StatusCode::BAD_REQUEST,
                    error("DEVPIPE.00011001", &format!("body : {problem}")),
                ),
            },
            ("DELETE", ["_sim", "faults"]) => {
                self.faults.set(&FaultSpec::default(), now_ms);
                Reply::ok(self.faults.describe(now_ms))
            }
            ("GET", ["_sim", "requests"]) => {
                let api = query_value(request.query, "api");
                Reply::ok(self.requests.to_json(api.as_deref()))
            }
            ("DELETE", ["_sim", "requests"]) => {
                self.requests.clear();
                Reply::ok(json!({ "requests": [] }))
            }
            ("POST", ["_sim", "pipelines", id, "ban"]) => self.ban_pipeline(id, true),
            ("POST", ["_sim", "pipelines", id, "unban"]) => self.ban_pipeline(id, false),
            ("DELETE", ["_sim", "pipelines", id]) => {
                if self.world_mut().remove_pipeline(id) {
                    Reply::ok(json!({ "pipeline_id": id, "deleted": true }))
                } else {
                    no_pipeline()
                }
            }
            _ => {
                let world = self.world();
                let service = Service {
                    world: &world,
                    options: &self.options,
                    tokens: &self.tokens,
                };
                service.route(request, &segments, now_ms)
            }
        }
    }
}

/// The simulator's APIs over one consistent view of the world.
struct Service<'a> {
    world: &'a World,
    options: &'a SimOptions,
    tokens: &'a TokenStore,
}

impl Service<'_> {
    fn route(&self, request: &SimRequest<'_>, segments: &[&str], now_ms: i64) -> Reply {
        match (request.method, segments) {
            ("POST", ["v3", "auth", "tokens"]) => self.iam(request, now_ms),
            ("GET", ["v3", "projects"]) => self
                .authenticate_iam(request, now_ms)
                .unwrap_or_else(|| self.iam_projects(request.query)),
            ("GET", ["_sim", "truth"]) => {
                // `?since_ms=T` keeps the runs that ended at or after T (big worlds).
                match query_value(request.query, "since_ms").map(|v| v.parse::<i64>()) {
                    None => Reply::ok(self.truth(now_ms, i64::MIN)),
                    Some(Ok(since)) => Reply::ok(self.truth(now_ms, since)),
                    Some(Err(_)) => bad_param("since_ms"),
                }
            }
            ("POST", ["_sim", "revoke-tokens"]) => {
                let revoked = self.tokens.revoke_all();
                Reply::ok(serde_json::json!({ "revoked": revoked }))
            }
            ("GET", ["v3", "pipelines", "status"]) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.v3_status(request.query, now_ms)),
            ("POST", ["v5", project, "api", "pipelines", "status"]) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.v5_status(project, request.body, now_ms)),
            ("POST", ["v5", project, "api", "pipelines", "list"]) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.pipelines_list(project, request.body, now_ms)),
            (
                "GET",
                [
                    "v5",
                    project,
                    "api",
                    "pipelines",
                    pipeline,
                    "pipeline-runs",
                    "detail",
                ],
            ) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.run_detail(project, pipeline, request.query, now_ms)),
            (
                "POST",
                [
                    "v5",
                    project,
                    "api",
                    "pipelines",
                    pipeline,
                    "pipeline-runs",
                    "list",
                ],
            ) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.runs_list(project, pipeline, request.body, now_ms)),
            ("GET", ["v4", "repositories", repository, "repository", "commits"]) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.repo_commit(repository, request.query, now_ms)),
            _ => no_route(),
        }
    }

    fn project(&self, id: &str) -> Result<usize, Reply> {
        if !is_id(id) {
            return Err(bad_param("project_id"));
        }
        self.world.project(id).ok_or_else(no_project)
    }

    fn pipeline_in(&self, project: usize, id: &str) -> Result<usize, Reply> {
        if !is_id(id) {
            return Err(bad_param("pipeline_id"));
        }
        self.world
            .pipeline(id)
            .filter(|&i| self.world.pipelines[i].project == project)
            .ok_or_else(no_pipeline)
    }

    /// Renders the newest run of pipeline `index` with `render`, if it has one.
    fn latest<R>(
        &self,
        index: usize,
        now_ms: i64,
        render: impl FnOnce(&PipelineDef, &RunPlan, &RunView) -> R,
    ) -> Option<R> {
        self.world.with_runs(index, now_ms, |def, log| {
            log.latest(now_ms)
                .map(|run| render(def, run, &run.view(now_ms)))
        })
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn unknown_routes_and_garbage_never_panic() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let reply = call(&sim, "GET", "/nope", "", START);
        assert_eq!(
            (reply.status, code(&reply)),
            (StatusCode::NOT_FOUND, "APIG.0101")
        );
        assert_eq!(
            call(&sim, "DELETE", "/v3/pipelines/status", "", START).status,
            StatusCode::NOT_FOUND
        );
        let mut rng = fastrand::Rng::with_seed(42);
        let pieces = [
            "v5",
            "v3",
            &project,
            &ids[0],
            "api",
            "pipelines",
            "status",
            "list",
            "pipeline-runs",
            "detail",
            "",
            "%zz",
            "流水线",
        ];
        let bodies = [
            "",
            "{",
            "[]",
            "null",
            "{\"limit\": 1e300}",
            "{\"offset\": \"9999999999999999999999\"}",
            "\u{0}",
            "[\"\"]",
        ];
        for _ in 0..2000 {
            let segments: Vec<&str> = (0..rng.usize(1..8))
                .map(|_| pieces[rng.usize(..pieces.len())])
                .collect();
            let mut uri = format!("/{}", segments.join("/"));
            if rng.bool() {
                uri.push_str(
                    "?pipeline_ids=%&pipeline_run_number=18446744073709551616&pipeline_run_id=",
                );
            }
            let method = if rng.bool() { "GET" } else { "POST" };
            let body = bodies[rng.usize(..bodies.len())];
            let reply = call(&sim, method, &uri, body, START + rng.i64(-HOUR..HOUR));
            assert!(
                reply.status.is_success() || reply.body["error_code"].is_string(),
                "{uri}"
            );
        }
    }
}
