//! IAM's token endpoint, and the credentials check every CodeArts API makes: the static token,
//! tokens IAM issued, or an AK/SK signature.

use hyper::StatusCode;

use super::{Reply, Service, SimRequest, unauthorized};
use crate::simulator::auth::{self, IamReply, Signed};

impl Service<'_> {
    /// `None` when the request carries valid credentials, else the 401 to answer.
    pub(super) fn authenticate(&self, request: &SimRequest<'_>, now_ms: i64) -> Option<Reply> {
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
}
