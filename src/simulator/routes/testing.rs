//! Helpers shared by the routes' unit tests.

use hyper::HeaderMap;
use hyper::header::HeaderValue;

use super::{Reply, SimRequest};
use crate::simulator::{SimOptions, Simulator};

/// When the tests' simulators start, epoch ms.
pub(super) const START: i64 = 1_800_000_000_000;
/// An hour in ms.
pub(super) const HOUR: i64 = 3_600_000;

/// 6 pipelines in 2 projects at speed 60, issuing tokens that last a minute.
pub(super) fn sim() -> Simulator {
    Simulator::starting_at(
        SimOptions {
            pipelines: 6,
            projects: 2,
            speed: 60.0,
            token_lifetime: std::time::Duration::from_secs(60),
            ..SimOptions::default()
        },
        START,
    )
}

/// Answers `method uri` with `body` at `now`, with `token` in `X-Auth-Token` if any.
pub(super) fn call_with(
    sim: &Simulator,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
    now: i64,
) -> Reply {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert("x-auth-token", HeaderValue::from_str(token).expect("token"));
    }
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let request = SimRequest {
        method,
        path,
        query,
        headers: &headers,
        authority: None,
        body: body.as_bytes(),
    };
    sim.handle(&request, now)
}

/// Answers `method uri` with `body` at `now`, with the static token.
pub(super) fn call(sim: &Simulator, method: &str, uri: &str, body: &str, now: i64) -> Reply {
    call_with(
        sim,
        method,
        uri,
        Some("codearts-simulator-token"),
        body,
        now,
    )
}

/// The vendor's `error_code` of an answer, or "".
pub(super) fn code(reply: &Reply) -> &str {
    reply.body["error_code"].as_str().unwrap_or("")
}

/// A commit CodeArts Repo knows, deployed by a run started by `now`:
/// (repository id, commit id, committed epoch ms).
pub(super) fn known_commit(sim: &Simulator, now: i64) -> (String, String, i64) {
    let world = sim.world();
    (0..world.pipelines.len())
        .find_map(|index| {
            world.with_runs(index, now, |def, log| {
                let repository = def.codehub_id.clone()?;
                log.started(now)
                    .filter_map(|run| run.build.commit.as_ref())
                    .find(|commit| commit.in_repo)
                    .map(|commit| (repository, commit.id.clone(), commit.committed_ms))
            })
        })
        .expect("a known commit")
}

/// The Repo API's path for commit `sha` of `repository`.
pub(super) fn commit_uri(repository: &str, sha: &str) -> String {
    format!("/v4/repositories/{repository}/repository/commits?sha={sha}")
}
