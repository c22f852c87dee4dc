//! CodeArts Repo's commit API (reference 5.7): when the commit a run deployed was made, for
//! lead times. Served on the same listener as the pipeline APIs, with the same credentials.

use hyper::StatusCode;

use super::params::query_value;
use super::{Reply, Service};
use crate::simulator::render::{self, error};
use crate::simulator::world::CommitLookup;

// Repo's own error codes are not documented; these keep the reference's body shape (section 8).
/// A parameter Repo cannot read.
const BAD_PARAM: &str = "CH.00400001";
/// No such repository.
const NO_REPOSITORY: &str = "CH.00404001";
/// No such commit in the repository.
const NO_COMMIT: &str = "CH.00404002";

fn bad_param(name: &str) -> Reply {
    Reply::new(
        StatusCode::BAD_REQUEST,
        error(BAD_PARAM, &format!("{name} : 非法参数")),
    )
}

impl Service<'_> {
    /// `GET /v4/repositories/{repository_id}/repository/commits?sha={commit_id}`: the commit,
    /// looked up by its full id (branch and tag names are not simulated).
    pub(super) fn repo_commit(&self, repository: &str, query: Option<&str>, now_ms: i64) -> Reply {
        // The SDK declares the repository id an integer.
        let repository = match repository.parse::<u64>() {
            Ok(id) if repository.bytes().all(|b| b.is_ascii_digit()) => id,
            _ => return bad_param("repository_id"),
        };
        let Some(sha) = query_value(query, "sha").filter(|sha| !sha.is_empty()) else {
            return bad_param("sha");
        };
        match self.world.commit(repository, &sha, now_ms) {
            CommitLookup::Found(commit) => {
                Reply::ok(render::commit(self.world, &commit, repository))
            }
            CommitLookup::NoRepository => Reply::new(
                StatusCode::NOT_FOUND,
                error(NO_REPOSITORY, "仓库不存在 (repository not found)"),
            ),
            CommitLookup::NoCommit => Reply::new(
                StatusCode::NOT_FOUND,
                error(NO_COMMIT, "提交不存在 (commit not found)"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use chrono::DateTime;
    use hyper::HeaderMap;
    use hyper::header::HeaderValue;

    use crate::codearts::sign;
    use crate::simulator::routes::SimRequest;

    #[test]
    fn a_commit_answers_in_the_repo_shape_with_times_in_utc_plus_8() {
        let sim = sim();
        let now = START + HOUR;
        let (repository, sha, committed_ms) = known_commit(&sim, now);
        let reply = call(&sim, "GET", &commit_uri(&repository, &sha), "", now);
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let body = &reply.body;
        let mut keys: Vec<&String> = body.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "author_email",
                "author_name",
                "authored_date",
                "committed_date",
                "committer_email",
                "committer_name",
                "created_at",
                "id",
                "last_pipeline",
                "message",
                "parent_ids",
                "project_id",
                "short_id",
                "status",
                "title"
            ]
        );
        assert_eq!(body["id"], sha.as_str());
        assert_eq!(body["short_id"], &sha[..8]);
        assert_eq!(
            body["project_id"],
            repository.parse::<u64>().expect("number")
        );
        assert!(
            body["parent_ids"][0]
                .as_str()
                .is_some_and(|p| p.len() == 40)
        );
        let title = body["title"].as_str().expect("title");
        assert_eq!(body["message"], format!("{title}\n"));
        let committed = body["committed_date"].as_str().expect("committed_date");
        // `2026-12-01T09:30:12.000+08:00`
        assert_eq!(committed.len(), 29, "{committed}");
        assert!(committed.ends_with(".000+08:00"), "{committed}");
        let parsed = DateTime::parse_from_rfc3339(committed).expect("ISO 8601");
        assert_eq!(parsed.timestamp_millis(), committed_ms);
        assert_eq!(body["created_at"], committed);
        let authored = body["authored_date"].as_str().expect("authored_date");
        let authored = DateTime::parse_from_rfc3339(authored).expect("ISO 8601");
        assert!(authored <= parsed);
        // The full id is needed; case does not matter.
        let upper = call(
            &sim,
            "GET",
            &commit_uri(&repository, &sha.to_uppercase()),
            "",
            now,
        );
        assert_eq!(upper.body, reply.body);
        let short = call(&sim, "GET", &commit_uri(&repository, &sha[..8]), "", now);
        assert_eq!(short.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_unknown_commit_and_unknown_repositories_answer_404() {
        let sim = sim();
        let now = START + HOUR;
        let truth = sim.truth(now);
        let unknown = &truth["unknown_commit"];
        let repository = unknown["codehub_id"].as_str().expect("codehub_id");
        let sha = unknown["commit_id"].as_str().expect("commit_id");
        let reply = call(&sim, "GET", &commit_uri(repository, sha), "", now);
        assert_eq!(
            (reply.status, code(&reply)),
            (StatusCode::NOT_FOUND, NO_COMMIT)
        );
        assert!(reply.body["error_msg"].is_string());
        // Another commit of the same repository is known.
        let (known_repository, known_sha, _) = known_commit(&sim, now);
        let other_repo = if known_repository == repository {
            "1000000001"
        } else {
            repository
        };
        let reply = call(&sim, "GET", &commit_uri(other_repo, &known_sha), "", now);
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        let reply = call(&sim, "GET", &commit_uri("1", &known_sha), "", now);
        assert_eq!(
            (reply.status, code(&reply)),
            (StatusCode::NOT_FOUND, NO_REPOSITORY)
        );
        for bad in [
            commit_uri("abc", &known_sha),
            commit_uri("+1", &known_sha),
            commit_uri(&known_repository, ""),
            format!("/v4/repositories/{known_repository}/repository/commits"),
        ] {
            let reply = call(&sim, "GET", &bad, "", now);
            assert_eq!(
                (reply.status, code(&reply)),
                (StatusCode::BAD_REQUEST, BAD_PARAM),
                "{bad}"
            );
        }
        // A deleted pipeline takes its repository with it.
        let uri = commit_uri(&known_repository, &known_sha);
        assert_eq!(call(&sim, "GET", &uri, "", now).status, StatusCode::OK);
        let owner = truth["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .find(|p| p["codehub_id"] == known_repository.as_str())
            .and_then(|p| p["pipeline_id"].as_str())
            .expect("owner");
        let deleted = call_with(
            &sim,
            "DELETE",
            &format!("/_sim/pipelines/{owner}"),
            None,
            "",
            now,
        );
        assert_eq!(deleted.status, StatusCode::OK);
        let gone = call(&sim, "GET", &uri, "", now);
        assert_eq!(
            (gone.status, code(&gone)),
            (StatusCode::NOT_FOUND, NO_REPOSITORY)
        );
    }

    #[test]
    fn credentials_are_required_a_token_or_a_signature() {
        let sim = sim();
        let now = START + HOUR;
        let (repository, sha, _) = known_commit(&sim, now);
        let uri = commit_uri(&repository, &sha);
        let missing = call_with(&sim, "GET", &uri, None, "", now);
        assert_eq!(
            (missing.status, code(&missing)),
            (StatusCode::UNAUTHORIZED, "DEV.00000001")
        );
        let wrong = call_with(&sim, "GET", &uri, Some("nope"), "", now);
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

        // AK/SK, signed as the SDK signs: the path, the `sha` query and the headers.
        let key = sim.access_key().expect("a key").clone();
        let host = "codehub-ext.cn-north-4.myhuaweicloud.com";
        let path = format!("/v4/repositories/{repository}/repository/commits");
        let query = format!("sha={sha}");
        let date = DateTime::from_timestamp_millis(now)
            .expect("time")
            .format("%Y%m%dT%H%M%SZ")
            .to_string();
        let signed_request = |sk: &str| {
            let headers = [
                ("Content-Type".to_string(), "application/json".to_string()),
                ("Host".to_string(), host.to_string()),
            ];
            let pairs = [("sha".to_string(), sha.clone())];
            let parts = sign::RequestParts {
                method: "GET",
                host,
                path: &path,
                query: &pairs,
                headers: &headers,
                body: b"",
            };
            let signature = sign::sign(&parts, &key.ak, sk, &date);
            let mut map = HeaderMap::new();
            map.insert("content-type", HeaderValue::from_static("application/json"));
            map.insert("host", HeaderValue::from_static(host));
            map.insert("x-sdk-date", HeaderValue::from_str(&date).expect("date"));
            map.insert(
                "authorization",
                HeaderValue::from_str(&signature.authorization).expect("authorization"),
            );
            map
        };
        let answer = |headers: &HeaderMap| {
            sim.handle(
                &SimRequest {
                    method: "GET",
                    path: &path,
                    query: Some(&query),
                    headers,
                    authority: None,
                    body: b"",
                },
                now,
            )
        };
        let good = answer(&signed_request(&key.sk));
        assert_eq!(good.status, StatusCode::OK, "{}", good.body);
        assert_eq!(good.body["id"], sha.as_str());
        let forged = answer(&signed_request("another-secret"));
        assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    }
}
