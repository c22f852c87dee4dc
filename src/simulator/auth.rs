//! Credentials the simulator checks: static and IAM-issued tokens, IAM password logins and
//! AK/SK signatures (`SDK-HMAC-SHA256`, reference section 2).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::codearts::sign;
use chrono::NaiveDateTime;
use fastrand::Rng;
use hyper::HeaderMap;
use serde_json::{Value, json};

use super::render::{error, iam_time};
use super::{SimAccessKey, SimUser};

/// Tokens kept at most; the ones closest to expiry go first.
const MAX_TOKENS: usize = 10_000;
/// Signatures older or newer than this are refused, as the API gateway does.
const SIGNATURE_SKEW_MS: i64 = 15 * 60 * 1000;

/// Tokens issued by the simulated IAM, with their expiry (epoch ms).
pub(crate) struct TokenStore {
    tokens: Mutex<HashMap<String, i64>>,
    /// Not seeded: tokens are secrets, not part of the deterministic world.
    rng: Mutex<Rng>,
}

impl TokenStore {
    /// An empty store.
    pub fn new() -> TokenStore {
        TokenStore {
            tokens: Mutex::new(HashMap::new()),
            rng: Mutex::new(Rng::new()),
        }
    }

    /// True when `token` was issued here and has not expired at `now_ms`.
    pub fn is_valid(&self, token: &str, now_ms: i64) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).is_some_and(|expires| *expires > now_ms)
    }

    /// Invalidates every issued token (as IAM does when a password changes); returns how many.
    pub fn revoke_all(&self) -> usize {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let count = tokens.len();
        tokens.clear();
        count
    }

    /// A new token valid until `expires_ms`.
    fn issue(&self, now_ms: i64, expires_ms: i64) -> String {
        let token = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            // Real IAM tokens are long opaque strings starting with "MII".
            let body: String = (0..180).map(|_| rng.alphanumeric()).collect();
            format!("MIIS{body}")
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, expires| *expires > now_ms);
        let oldest = (tokens.len() >= MAX_TOKENS)
            .then(|| {
                tokens
                    .iter()
                    .min_by_key(|(_, e)| **e)
                    .map(|(t, _)| t.clone())
            })
            .flatten();
        if let Some(oldest) = oldest {
            tokens.remove(&oldest);
        }
        tokens.insert(token.clone(), expires_ms);
        token
    }
}

/// What an IAM call answers: status, body and the issued token.
pub(crate) enum IamReply {
    /// 201 with `X-Subject-Token`.
    Issued { token: String, body: Value },
    /// 400: the body is not a password login.
    BadRequest(Value),
    /// 401: wrong user, password or domain.
    Refused(Value),
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_str()
}

/// `POST /v3/auth/tokens` with the password method.
pub(crate) fn iam_login(
    store: &TokenStore,
    users: &[SimUser],
    body: &[u8],
    now_ms: i64,
    lifetime_ms: i64,
    ids: (&str, &str),
) -> IamReply {
    let (domain_id, default_project_id) = ids;
    let bad = || IamReply::BadRequest(error("IAM.0011", "Request parameter error."));
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return bad();
    };
    let identity = &request["auth"]["identity"];
    let password_method = identity["methods"]
        .as_array()
        .is_some_and(|methods| methods.iter().any(|m| m == "password"));
    let user = (
        text(identity, &["password", "user", "name"]),
        text(identity, &["password", "user", "password"]),
        text(identity, &["password", "user", "domain", "name"]),
    );
    let scope = &request["auth"]["scope"]["project"];
    let (scope_name, scope_id) = (text(scope, &["name"]), text(scope, &["id"]));
    let (Some(name), Some(password), Some(domain)) = user else {
        return bad();
    };
    if !password_method || (scope_name.is_none() && scope_id.is_none()) {
        return bad();
    }
    let known = users
        .iter()
        .any(|u| u.name == name && u.password == password && u.domain == domain);
    if !known {
        return IamReply::Refused(error("IAM.0002", "The username or password is wrong."));
    }
    let expires_ms = now_ms.saturating_add(lifetime_ms);
    let token = store.issue(now_ms, expires_ms);
    let domain_json = json!({"name": domain, "id": domain_id});
    let body = json!({
        "token": {
            "expires_at": iam_time(expires_ms),
            "issued_at": iam_time(now_ms),
            "methods": ["password"],
            "user": {
                "name": name,
                "id": super::world::derived_id(fnv1a(name.as_bytes()), &[]),
                "domain": domain_json,
                "password_expires_at": "",
            },
            "project": {
                "name": scope_name.unwrap_or(super::world::REGION),
                "id": scope_id.unwrap_or(default_project_id),
                "domain": domain_json,
            },
            "catalog": [],
            "roles": [],
        }
    });
    IamReply::Issued { token, body }
}

/// FNV-1a: a stable id for a user name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The parts of a request a signature covers.
pub(crate) struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Authority of the request URI, for HTTP/2 requests that carry no `Host` header.
    pub authority: Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a signature was refused (never says anything about the secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureError {
    Malformed,
    UnknownKey,
    Expired,
    Mismatch,
}

impl SignatureError {
    /// The gateway's error body.
    pub fn body(self) -> Value {
        let detail = match self {
            SignatureError::Malformed => "the Authorization header is malformed",
            SignatureError::UnknownKey => "the access key is unknown",
            SignatureError::Expired => "X-Sdk-Date is missing or too far from the server time",
            SignatureError::Mismatch => "verify aksk signature fail",
        };
        error(
            "APIG.0301",
            &format!("Incorrect IAM authentication information: {detail}"),
        )
    }
}

/// Checks an `SDK-HMAC-SHA256` `Authorization` header against `keys` at `now_ms`.
pub(crate) fn verify_signature(
    keys: &[SimAccessKey],
    authorization: &str,
    request: &Signed<'_>,
    now_ms: i64,
) -> Result<(), SignatureError> {
    let rest = authorization
        .strip_prefix("SDK-HMAC-SHA256")
        .ok_or(SignatureError::Malformed)?;
    let mut access = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Access", v)) => access = Some(v.trim()),
            Some(("SignedHeaders", v)) => signed_headers = Some(v.trim()),
            Some(("Signature", v)) => signature = Some(v.trim()),
            _ => {}
        }
    }
    let (Some(access), Some(signed_headers), Some(signature)) = (access, signed_headers, signature)
    else {
        return Err(SignatureError::Malformed);
    };
    let key = keys
        .iter()
        .find(|k| k.ak == access)
        .ok_or(SignatureError::UnknownKey)?;
    let date = header(request.headers, "x-sdk-date").ok_or(SignatureError::Expired)?;
    let signed_at = NaiveDateTime::parse_from_str(&date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| SignatureError::Expired)?
        .and_utc()
        .timestamp_millis();
    if (signed_at - now_ms).abs() > SIGNATURE_SKEW_MS {
        return Err(SignatureError::Expired);
    }
    // Rebuild the request from the headers the client says it signed, and sign it with the
    // project's signer (pinned by the vendor's vectors): equal headers mean a valid signature.
    let mut headers = Vec::new();
    for name in signed_headers.split(';') {
        let value = match header(request.headers, name) {
            Some(value) => value,
            None if name == "host" => request
                .authority
                .ok_or(SignatureError::Mismatch)?
                .to_string(),
            None => return Err(SignatureError::Mismatch),
        };
        headers.push((name.to_string(), value));
    }
    let host = headers
        .iter()
        .find(|(name, _)| name == "host")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let query = query_pairs(request.query.unwrap_or(""));
    let parts = sign::RequestParts {
        method: request.method,
        host: &host,
        path: request.path,
        query: &query,
        headers: &headers,
        body: request.body,
    };
    let expected = sign::sign(&parts, &key.ak, &key.sk, &date);
    let expected_signature = expected
        .authorization
        .rsplit("Signature=")
        .next()
        .unwrap_or_default();
    if expected.signed_headers == signed_headers && expected_signature == signature {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// All values of a header joined by `,`, or `None` when absent or not text.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    (!values.is_empty()).then(|| values.join(","))
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set); bad escapes stay as they are.
pub(crate) fn percent_decode(text: &str, plus: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decoded `key=value` pairs of a query string, in order.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderName, HeaderValue};

    fn users() -> Vec<SimUser> {
        vec![SimUser {
            name: "demo-user".into(),
            password: "demo-password".into(),
            domain: "demo-account".into(),
        }]
    }

    fn login(store: &TokenStore, body: &str) -> IamReply {
        iam_login(store, &users(), body.as_bytes(), 1_000, 60_000, ("d", "p"))
    }

    #[test]
    fn password_logins_issue_tokens_that_expire() {
        let store = TokenStore::new();
        let body = r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"demo-user","password":"demo-password","domain":{"name":"demo-account"}}}},"scope":{"project":{"name":"cn-north-4"}}}}"#;
        let IamReply::Issued { token, body } = login(&store, body) else {
            panic!("refused");
        };
        assert!(store.is_valid(&token, 60_999));
        assert!(!store.is_valid(&token, 61_000));
        assert!(!store.is_valid("other", 2_000));
        assert_eq!(body["token"]["expires_at"], "1970-01-01T00:01:01.000000Z");
        assert_eq!(body["token"]["project"]["name"], "cn-north-4");
        assert_eq!(body["token"]["user"]["domain"]["name"], "demo-account");
    }

    #[test]
    fn wrong_credentials_and_bad_bodies_are_refused() {
        let store = TokenStore::new();
        let wrong = r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"demo-user","password":"nope","domain":{"name":"demo-account"}}}},"scope":{"project":{"id":"x"}}}}"#;
        assert!(matches!(login(&store, wrong), IamReply::Refused(_)));
        for bad in [
            "",
            "[]",
            "{\"auth\":1}",
            "{not json",
            r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"demo-user","password":"demo-password","domain":{"name":"demo-account"}}}}}}"#,
        ] {
            assert!(
                matches!(login(&store, bad), IamReply::BadRequest(_)),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_strings_and_escapes_decode() {
        assert_eq!(percent_decode("a%2Cb%zz%", false), "a,b%zz%");
        assert_eq!(percent_decode("a+b%20c", true), "a b c");
        assert_eq!(percent_decode("%E6%B5%81", false), "流");
        assert_eq!(
            query_pairs("pipeline_ids=a%2Cb&x&=y"),
            vec![
                ("pipeline_ids".into(), "a,b".into()),
                ("x".into(), String::new()),
                (String::new(), "y".into())
            ]
        );
    }

    /// Checks the vendor SDK's vectors (`tests/fixtures/aksk-signing-vectors.json`) against this
    /// independent verifier.
    #[test]
    fn vendor_signatures_verify_and_tampering_is_caught() {
        for vector in &crate::codearts::testing::signing_vectors() {
            let expected = &vector["expected"];
            let date = expected["x_sdk_date"].as_str().expect("date");
            let now = NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
                .expect("date")
                .and_utc()
                .timestamp_millis();
            let url = vector["url"].as_str().expect("url");
            let host = url
                .trim_start_matches("https://")
                .split('/')
                .next()
                .expect("host");
            let uri = expected["request_uri"].as_str().expect("uri");
            let (path, query) = match uri.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (uri, None),
            };
            let mut headers = HeaderMap::new();
            for (k, v) in vector["headers"].as_object().expect("headers") {
                headers.insert(
                    HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v.as_str().expect("value")).expect("value"),
                );
            }
            headers.insert("x-sdk-date", HeaderValue::from_str(date).expect("date"));
            headers.insert("host", HeaderValue::from_str(host).expect("host"));
            let keys = [SimAccessKey {
                ak: vector["ak"].as_str().expect("ak").into(),
                sk: vector["sk"].as_str().expect("sk").into(),
            }];
            let authorization = expected["authorization"].as_str().expect("authorization");
            let body = vector["body"].as_str().expect("body").as_bytes();
            let request = Signed {
                method: vector["method"].as_str().expect("method"),
                path,
                query,
                headers: &headers,
                authority: None,
                body,
            };
            let name = vector["name"].as_str().unwrap_or("");
            assert_eq!(
                verify_signature(&keys, authorization, &request, now),
                Ok(()),
                "{name}"
            );
            assert_eq!(
                verify_signature(&keys, authorization, &request, now + 20 * 60 * 1000),
                Err(SignatureError::Expired)
            );
            let tampered = Signed {
                body: b"[\"x\"]",
                ..request
            };
            assert_eq!(
                verify_signature(&keys, authorization, &tampered, now),
                Err(SignatureError::Mismatch),
                "{name}"
            );
            let other = [SimAccessKey {
                ak: keys[0].ak.clone(),
                sk: "another-secret".into(),
            }];
            let request = Signed { body, ..tampered };
            assert_eq!(
                verify_signature(&other, authorization, &request, now),
                Err(SignatureError::Mismatch)
            );
            assert_eq!(
                verify_signature(&[], authorization, &request, now),
                Err(SignatureError::UnknownKey)
            );
            assert_eq!(
                verify_signature(&keys, "SDK-HMAC-SHA256 nonsense", &request, now),
                Err(SignatureError::Malformed)
            );
        }
    }
}
