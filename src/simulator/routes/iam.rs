//! IAM's token endpoint, and the credentials check every CodeArts API makes: the static token,
//! tokens IAM issued, or an AK/SK signature.

use hyper::StatusCode;
use serde_json::json;

use super::params::query_value;
use super::{Reply, Service, SimRequest, unauthorized};
use crate::simulator::auth::{self, IamReply, Signed};
use crate::simulator::world::REGION;

impl Service<'_> {
    /// `None` when a CodeArts request carries valid credentials, else the 401 to answer. With
    /// [`crate::simulator::SimOptions::require_project_id`], a signature must also cover an
    /// `X-Project-Id` header holding the account's IAM project id.
    pub(super) fn authenticate(&self, request: &SimRequest<'_>, now_ms: i64) -> Option<Reply> {
        if let Some(refused) = self.authenticate_iam(request, now_ms) {
            return Some(refused);
        }
        let signed = request.headers.contains_key("authorization")
            && !request.headers.contains_key("x-auth-token");
        if signed && self.options.require_project_id {
            let sent = request
                .headers
                .get("x-project-id")
                .and_then(|v| v.to_str().ok());
            let covered = request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|a| a.split("SignedHeaders=").nth(1))
                .and_then(|rest| rest.split(',').next())
                .is_some_and(|names| names.split(';').any(|n| n.trim() == "x-project-id"));
            if sent != Some(self.world.iam_project_id.as_str()) || !covered {
                return Some(unauthorized(
                    "APIG.0301",
                    "Incorrect IAM authentication information: x-project-id is missing or does not match the credential",
                ));
            }
        }
        None
    }

    /// `GET /v3/projects[?name=]` on IAM: the account's projects; the simulated account has
    /// one, named after the region (reference 3.6).
    pub(super) fn iam_projects(&self, query: Option<&str>) -> Reply {
        let wanted = query_value(query, "name");
        let projects: Vec<serde_json::Value> = [REGION]
            .iter()
            .filter(|name| wanted.as_deref().is_none_or(|w| w == **name))
            .map(|name| {
                json!({
                    "id": self.world.iam_project_id,
                    "name": name,
                    "domain_id": self.world.domain_id,
                    "parent_id": self.world.domain_id,
                    "enabled": true,
                    "is_domain": false,
                    "description": "",
                    "links": {"self": format!("https://iam.{REGION}.myhuaweicloud.com/v3/projects/{}", self.world.iam_project_id)},
                })
            })
            .collect();
        Reply::ok(json!({
            "projects": projects,
            "links": {"self": format!("https://iam.{REGION}.myhuaweicloud.com/v3/projects"), "previous": null, "next": null},
        }))
    }

    /// `None` when the request carries valid credentials (a token or a signature), else the
    /// 401 to answer.
    pub(super) fn authenticate_iam(&self, request: &SimRequest<'_>, now_ms: i64) -> Option<Reply> {
        if let Some(value) = request.headers.get("x-auth-token") {
            let token = value.to_str().unwrap_or("\u{0}");
            if token.is_empty() {
                return Some(unauthorized("DEV.00000001", "未识别到用户认证信息"));
            }
            if token == self.options.token || self.tokens.is_valid(token, now_ms) {
                return None;
            }
            return Some(unauthorized("DEV.00000003", "认证信息过期"));
        }
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.starts_with("SDK-HMAC-SHA256"));
        if let Some(authorization) = authorization {
            let signed = Signed {
                method: request.method,
                path: request.path,
                query: request.query,
                headers: request.headers,
                authority: request.authority,
                body: request.body,
            };
            return auth::verify_signature(
                &self.options.access_keys,
                authorization,
                &signed,
                now_ms,
            )
            .err()
            .map(|e| Reply::new(StatusCode::UNAUTHORIZED, e.body()));
        }
        Some(unauthorized("DEV.00000001", "未识别到用户认证信息"))
    }

    /// `POST /v3/auth/tokens`: a password login that issues a token.
    pub(super) fn iam(&self, request: &SimRequest<'_>, now_ms: i64) -> Reply {
        let lifetime_ms =
            i64::try_from(self.options.token_lifetime.as_millis()).unwrap_or(i64::MAX);
        let ids = (
            self.world.domain_id.as_str(),
            self.world.iam_project_id.as_str(),
        );
        match auth::iam_login(
            self.tokens,
            &self.options.users,
            request.body,
            now_ms,
            lifetime_ms,
            ids,
        ) {
            IamReply::Issued { token, body } => Reply {
                status: StatusCode::CREATED,
                body,
                subject_token: Some(token),
            },
            IamReply::BadRequest(body) => Reply::new(StatusCode::BAD_REQUEST, body),
            IamReply::Refused(body) => Reply::new(StatusCode::UNAUTHORIZED, body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use hyper::StatusCode;

    #[test]
    fn credentials_are_checked() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let uri = format!("/v3/pipelines/status?pipeline_ids={}", ids[0]);
        let missing = call_with(&sim, "GET", &uri, None, "", START);
        assert_eq!(
            (missing.status, code(&missing)),
            (StatusCode::UNAUTHORIZED, "DEV.00000001")
        );
        assert_eq!(missing.body["error_msg"], "未识别到用户认证信息");
        let wrong = call_with(&sim, "GET", &uri, Some("nope"), "", START);
        assert_eq!(
            (wrong.status, code(&wrong)),
            (StatusCode::UNAUTHORIZED, "DEV.00000003")
        );
        assert_eq!(wrong.body["error_msg"], "认证信息过期");

        let login = r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"demo-user","password":"demo-password","domain":{"name":"demo-account"}}}},"scope":{"project":{"name":"cn-north-4"}}}}"#;
        let issued = call_with(&sim, "POST", "/v3/auth/tokens", None, login, START);
        assert_eq!(issued.status, StatusCode::CREATED);
        let token = issued.subject_token.expect("token");
        let status = format!("/v5/{project}/api/pipelines/status");
        let body = format!("[\"{}\"]", ids[0]);
        let ok = call_with(&sim, "POST", &status, Some(&token), &body, START + 59_000);
        assert_eq!(ok.status, StatusCode::OK);
        let expired = call_with(&sim, "POST", &status, Some(&token), &body, START + 60_000);
        assert_eq!(code(&expired), "DEV.00000003");
        let refused = call_with(
            &sim,
            "POST",
            "/v3/auth/tokens",
            None,
            &login.replace("demo-password", "x"),
            START,
        );
        assert_eq!(
            (refused.status, code(&refused)),
            (StatusCode::UNAUTHORIZED, "IAM.0002")
        );
        let bad = call_with(&sim, "POST", "/v3/auth/tokens", None, "{", START);
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        // The truth needs no credentials.
        assert_eq!(
            call_with(&sim, "GET", "/_sim/truth", None, "", START).status,
            StatusCode::OK
        );
    }

    #[test]
    fn iam_lists_the_project_named_after_the_region() {
        let sim = sim();
        let missing = call_with(&sim, "GET", "/v3/projects?name=cn-north-4", None, "", START);
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        let found = call(&sim, "GET", "/v3/projects?name=cn-north-4", "", START);
        assert_eq!(found.status, StatusCode::OK);
        let projects = found.body["projects"].as_array().expect("projects");
        assert_eq!(projects.len(), 1);
        assert_eq!(projects[0]["name"], "cn-north-4");
        assert_eq!(projects[0]["id"], sim.iam_project_id().as_str());
        assert_eq!(projects[0]["enabled"], true);
        let other = call(&sim, "GET", "/v3/projects?name=eu-west-0", "", START);
        assert_eq!(other.body["projects"], serde_json::json!([]));
    }
}
