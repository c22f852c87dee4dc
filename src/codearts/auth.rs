//! Authentication of requests: static token, IAM password tokens, or AK/SK signatures. The IAM
//! calls (token, project lookup) go out through the same [`Requests`] as every other request.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Mutex;

use super::api::Api;
use super::error::{Error, decode, decode_error};
use super::requests::{Call, Credentials, Requests};
use super::sign::{self, RequestParts};
use crate::backoff::backoff;
use crate::config::{AuthConfig, AuthMethod, Secret};

/// Refresh a password token when this share of its lifetime is left.
const REFRESH_WHEN_LEFT: f64 = 0.1;
/// First wait after a failed IAM token request; doubles up to [`MAX_IAM_BACKOFF`].
const BASE_IAM_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between IAM token requests.
const MAX_IAM_BACKOFF: Duration = Duration::from_secs(300);

/// Adds credentials to requests.
pub(crate) enum Authenticator {
    /// `X-Auth-Token` with a fixed token.
    Token(Secret),
    /// `SDK-HMAC-SHA256` signature of each request, with `X-Project-Id` as the SDK sends it.
    AkSk { keys: Keys, project_id: ProjectId },
    /// `X-Auth-Token` with tokens obtained from IAM (boxed: by far the largest variant).
    Password(Box<PasswordTokens>),
}

/// What a request was sent with, so a 401 can invalidate exactly that token.
pub(crate) struct Used(Option<Secret>);

impl Authenticator {
    /// Builds the authenticator of `auth.method`; `region` names the IAM project whose id an
    /// AK/SK signer without `auth.project_id` looks up. IAM calls go out through `requests`.
    pub(crate) fn new(
        auth: &AuthConfig,
        iam_endpoint: String,
        region: &str,
        requests: Arc<Requests>,
    ) -> Result<Authenticator, Error> {
        let missing = |key: &str| Error::Setup(format!("{key} is not set"));
        Ok(match auth.method {
            AuthMethod::Token => {
                Authenticator::Token(auth.token.clone().ok_or_else(|| missing("auth.token"))?)
            }
            AuthMethod::Aksk => {
                let keys = Keys {
                    ak: auth.ak.clone().ok_or_else(|| missing("auth.ak"))?,
                    sk: auth.sk.clone().ok_or_else(|| missing("auth.sk"))?,
                    security_token: auth.security_token.clone(),
                };
                let project_id = match &auth.project_id {
                    Some(id) => ProjectId::Configured(id.clone()),
                    None => ProjectId::Lookup(Box::new(ProjectLookup {
                        requests,
                        url: format!("{iam_endpoint}/v3/projects"),
                        region: region.to_string(),
                        state: Mutex::new(LookupState::default()),
                    })),
                };
                Authenticator::AkSk { keys, project_id }
            }
            AuthMethod::Password => {
                let scope = match (&auth.project_name, &auth.iam_project_id) {
                    (_, Some(id)) => serde_json::json!({"project": {"id": id}}),
                    (Some(name), None) => serde_json::json!({"project": {"name": name}}),
                    (None, None) => return Err(missing("auth.project_name")),
                };
                Authenticator::Password(Box::new(PasswordTokens {
                    requests,
                    url: format!("{iam_endpoint}/v3/auth/tokens"),
                    username: auth
                        .username
                        .clone()
                        .ok_or_else(|| missing("auth.username"))?,
                    password: auth
                        .password
                        .clone()
                        .ok_or_else(|| missing("auth.password"))?,
                    domain: auth.domain.clone().ok_or_else(|| missing("auth.domain"))?,
                    scope,
                    state: Mutex::new(TokenState::default()),
                }))
            }
        })
    }
}

impl Authenticator {
    /// [`Credentials::authorize`] at `now`, the time an AK/SK signature is made for.
    pub(super) async fn authorize_at(
        &self,
        request: &mut reqwest::Request,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Used, Error> {
        match self {
            Authenticator::Token(token) => {
                set_header(request, "x-auth-token", token.expose())?;
                Ok(Used(Some(token.clone())))
            }
            Authenticator::Password(tokens) => {
                let token = tokens.token().await?;
                set_header(request, "x-auth-token", token.expose())?;
                Ok(Used(Some(token)))
            }
            Authenticator::AkSk { keys, project_id } => {
                if let Some(project_id) = project_id.get(keys).await {
                    set_header(request, "x-project-id", &project_id)?;
                }
                keys.sign(request, now)?;
                Ok(Used(None))
            }
        }
    }
}

impl Credentials for Authenticator {
    type Used = Used;

    async fn authorize(&self, request: &mut reqwest::Request) -> Result<Used, Error> {
        self.authorize_at(request, chrono::Utc::now()).await
    }

    /// True when a password token was dropped and will be renewed.
    async fn rejected(&self, used: &Used) -> bool {
        match (self, &used.0) {
            (Authenticator::Password(tokens), Some(token)) => {
                tokens.invalidate(token).await;
                true
            }
            _ => false,
        }
    }

    fn rejection_hint(&self) -> &'static str {
        match self {
            Authenticator::Token(_) => "token rejected or expired: renew auth.token",
            Authenticator::Password(_) => {
                "token from IAM rejected even after a refresh: check the user's permissions and auth scope"
            }
            Authenticator::AkSk { .. } => {
                "AK/SK request rejected: either the signature (check auth.ak, auth.sk and that the \
                 clock is right) or the X-Project-Id header (the IAM project id of codearts.region: \
                 set auth.project_id, or let the exporter look it up, which needs IAM to answer)"
            }
        }
    }
}

/// An access key pair (temporary ones with their security token).
pub(crate) struct Keys {
    ak: String,
    sk: Secret,
    security_token: Option<Secret>,
}

impl Keys {
    /// Adds `X-Security-Token` (temporary credentials), `X-Sdk-Date` of `now` and the
    /// `Authorization` signature to `request`; every header set before is signed.
    fn sign(
        &self,
        request: &mut reqwest::Request,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Error> {
        if let Some(token) = &self.security_token {
            set_header(request, "x-security-token", token.expose())?;
        }
        let date = now.format(sign::DATE_FORMAT).to_string();
        let signature = signature_of(request, &self.ak, self.sk.expose(), &date);
        set_header(request, "x-sdk-date", &date)?;
        set_header(request, "authorization", &signature.authorization)?;
        Ok(())
    }
}

/// The credentials of an IAM call: an AK/SK signature (the project lookup) or none (the token
/// request, whose body carries them).
struct IamCredentials<'a> {
    keys: Option<&'a Keys>,
    /// What to check when IAM answers 401.
    hint: &'static str,
}

impl Credentials for IamCredentials<'_> {
    type Used = ();

    async fn authorize(&self, request: &mut reqwest::Request) -> Result<(), Error> {
        match self.keys {
            Some(keys) => keys.sign(request, chrono::Utc::now()),
            None => Ok(()),
        }
    }

    async fn rejected(&self, _used: &()) -> bool {
        false
    }

    fn rejection_hint(&self) -> &'static str {
        self.hint
    }
}

/// The IAM project id sent as `X-Project-Id` with AK/SK signatures (reference 3.4, 3.6).
pub(crate) enum ProjectId {
    /// `auth.project_id`.
    Configured(String),
    /// Looked up from IAM by the region's name, as the vendor SDK does.
    Lookup(Box<ProjectLookup>),
}

impl ProjectId {
    /// The id to send, if there is one (a failed lookup sends none); `keys` sign the lookup.
    async fn get(&self, keys: &Keys) -> Option<String> {
        match self {
            ProjectId::Configured(id) => Some(id.clone()),
            ProjectId::Lookup(lookup) => lookup.id(keys).await,
        }
    }
}

/// First wait after a lookup that failed for a reason that may pass; doubles up to
/// [`MAX_LOOKUP_BACKOFF`].
const BASE_LOOKUP_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait between lookups.
const MAX_LOOKUP_BACKOFF: Duration = Duration::from_secs(3600);

/// `GET /v3/projects?name={region}` on IAM, signed with the AK/SK, once; the id is cached.
pub(crate) struct ProjectLookup {
    requests: Arc<Requests>,
    url: String,
    region: String,
    /// One lock: concurrent requests wait for one lookup.
    state: Mutex<LookupState>,
}

/// Where the lookup stands.
#[derive(Default)]
enum LookupState {
    /// Not tried yet.
    #[default]
    Pending,
    /// Failed `failures` times in a row for a reason that may pass (no answer, 429, 5xx); not
    /// tried again before `next`.
    Waiting { failures: u32, next: Instant },
    /// Found: sent with every request.
    Found(String),
    /// IAM answered, but with no id (refused, or no project of that name): never asked again.
    GaveUp,
}

/// Why a lookup failed, and whether asking again later may help.
struct LookupFailure {
    reason: String,
    transient: bool,
}

impl ProjectLookup {
    /// The cached id, or the result of a lookup when one is due; `None` while there is none.
    async fn id(&self, keys: &Keys) -> Option<String> {
        let mut state = self.state.lock().await;
        let failures = match &*state {
            LookupState::Found(id) => return Some(id.clone()),
            LookupState::GaveUp => return None,
            LookupState::Waiting { next, .. } if Instant::now() < *next => return None,
            LookupState::Waiting { failures, .. } => *failures,
            LookupState::Pending => 0,
        };
        match self.fetch(keys).await {
            Ok(id) => {
                tracing::info!(
                    region = %self.region,
                    project_id = %id,
                    "looked up the IAM project id; sending it as X-Project-Id"
                );
                *state = LookupState::Found(id.clone());
                Some(id)
            }
            Err(failure) => {
                // Said once: later attempts are at debug level.
                let first = failures == 0;
                if failure.transient {
                    let failures = failures + 1;
                    let next = next_attempt(
                        &self.requests,
                        Api::IamProjects,
                        backoff(BASE_LOOKUP_BACKOFF, failures, MAX_LOOKUP_BACKOFF),
                    );
                    *state = LookupState::Waiting { failures, next };
                    if first {
                        tracing::warn!(
                            region = %self.region,
                            reason = %failure.reason,
                            retry_in_s = next.saturating_duration_since(Instant::now()).as_secs(),
                            "cannot look up the IAM project id: requests are signed without \
                             X-Project-Id until it is found; set auth.project_id to skip the lookup"
                        );
                    } else {
                        tracing::debug!(region = %self.region, reason = %failure.reason, "IAM project id lookup failed again");
                    }
                } else {
                    *state = LookupState::GaveUp;
                    tracing::warn!(
                        region = %self.region,
                        reason = %failure.reason,
                        "cannot look up the IAM project id: requests are signed without \
                         X-Project-Id; set auth.project_id if the service asks for it"
                    );
                }
                None
            }
        }
    }

    /// Asks IAM for the project named after the region.
    async fn fetch(&self, keys: &Keys) -> Result<String, LookupFailure> {
        let api = Api::IamProjects;
        let credentials = IamCredentials {
            keys: Some(keys),
            hint: "IAM refused the lookup: check auth.ak and auth.sk, and that the key may list projects",
        };
        let build = || {
            self.requests
                .http()
                .get(&self.url)
                .query(&[("name", self.region.as_str())])
                .header(reqwest::header::CONTENT_TYPE, "application/json")
        };
        let found = self
            .requests
            .call(Call::iam(api), &credentials, build, |answer| {
                let found: serde_json::Value = decode(api, answer.status, &answer.body)?;
                let projects = found["projects"].as_array().ok_or_else(|| {
                    let message = "the answer has no projects list".to_string();
                    decode_error(api, answer.status, message, &answer.body)
                })?;
                Ok(projects
                    .iter()
                    .filter(|p| p["name"].as_str() == Some(self.region.as_str()))
                    .find_map(|p| p["id"].as_str().filter(|id| !id.is_empty()))
                    .map(str::to_string))
            })
            .await
            .map_err(|err| LookupFailure {
                transient: may_pass(&err),
                reason: err.to_string(),
            })?;
        // Not a failed call: IAM answered, and the account has no such project.
        found.ok_or_else(|| LookupFailure {
            reason: format!(
                "IAM has no project named {:?} for this account (check codearts.region)",
                self.region
            ),
            transient: false,
        })
    }
}

/// Whether a failed IAM call may succeed when made again later: no answer, 429 or 5xx.
fn may_pass(err: &Error) -> bool {
    match err {
        Error::Timeout { .. } | Error::Transport { .. } => true,
        Error::Http { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// When to call `api` again after a failure: after `wait`, and not before a `Retry-After` pause
/// of it ends (a call made during the pause would wait it out while every request waits for it).
fn next_attempt(requests: &Requests, api: Api, wait: Duration) -> Instant {
    let next = Instant::now() + wait;
    requests
        .paused_until(api)
        .map_or(next, |until| until.max(next))
}

/// The signature of a request as it will be sent.
pub(super) fn signature_of(
    request: &reqwest::Request,
    ak: &str,
    sk: &str,
    date: &str,
) -> sign::Signature {
    let url = request.url();
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => String::new(),
    };
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    let body = request
        .body()
        .and_then(|b| b.as_bytes())
        .unwrap_or_default();
    let parts = RequestParts {
        method: request.method().as_str(),
        host: &host,
        path: url.path(),
        query: &query,
        headers: &headers,
        body,
    };
    sign::sign(&parts, ak, sk, date)
}

fn set_header(
    request: &mut reqwest::Request,
    name: &'static str,
    value: &str,
) -> Result<(), Error> {
    let value = HeaderValue::from_str(value).map_err(|_| {
        Error::Setup(format!(
            "the {name} header value has characters HTTP does not allow"
        ))
    })?;
    let mut value = value;
    value.set_sensitive(true);
    request
        .headers_mut()
        .insert(HeaderName::from_static(name), value);
    Ok(())
}

/// Tokens obtained from IAM with a user name and password, cached and refreshed.
pub(crate) struct PasswordTokens {
    requests: Arc<Requests>,
    url: String,
    username: String,
    password: Secret,
    domain: String,
    scope: serde_json::Value,
    /// One lock: concurrent requests wait for one refresh instead of each calling IAM.
    state: Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    current: Option<CachedToken>,
    failures: u32,
    next_attempt: Option<Instant>,
    last_error: Option<String>,
}

struct CachedToken {
    token: Secret,
    refresh_at: SystemTime,
    expires_at: SystemTime,
}

impl PasswordTokens {
    /// A valid token: the cached one, or a new one when it is due for refresh. Without one, an
    /// [`Error::Auth`] that says why (the IAM call's own error is counted under `iam_token`).
    async fn token(&self) -> Result<Secret, Error> {
        let mut state = self.state.lock().await;
        let now = SystemTime::now();
        if let Some(cached) = state.current.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(cached.token.clone());
        }
        let still_valid = state
            .current
            .as_ref()
            .filter(|cached| now < cached.expires_at)
            .map(|cached| cached.token.clone());
        if state.next_attempt.is_some_and(|next| Instant::now() < next) {
            // Backing off after a failure: use what is still valid, else fail fast.
            return still_valid
                .ok_or_else(|| Error::Auth(state.last_error.clone().unwrap_or_default()));
        }
        let observer = self.requests.observer();
        match self.fetch().await {
            Ok(cached) => {
                let token = cached.token.clone();
                tracing::info!(
                    expires_in_s = cached
                        .expires_at
                        .duration_since(now)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    "obtained an IAM token"
                );
                state.current = Some(cached);
                state.failures = 0;
                state.next_attempt = None;
                state.last_error = None;
                observer.auth_refresh(true);
                Ok(token)
            }
            Err(err) => {
                observer.auth_refresh(false);
                state.failures += 1;
                let wait = backoff(BASE_IAM_BACKOFF, state.failures, MAX_IAM_BACKOFF);
                let next = next_attempt(&self.requests, Api::IamToken, wait);
                state.next_attempt = Some(next);
                state.last_error = Some(err.to_string());
                tracing::warn!(
                    error = %err,
                    retry_in_s = next.saturating_duration_since(Instant::now()).as_secs(),
                    "cannot obtain an IAM token"
                );
                still_valid.ok_or(Error::Auth(err.to_string()))
            }
        }
    }

    /// Drops `used` if it is still the cached token, so the next request gets a new one.
    async fn invalidate(&self, used: &Secret) {
        let mut state = self.state.lock().await;
        if state.current.as_ref().is_some_and(|c| &c.token == used) {
            tracing::info!("IAM token rejected; getting a new one");
            state.current = None;
        }
    }

    /// Asks IAM for a token (`POST /v3/auth/tokens`, reference 3.2).
    async fn fetch(&self) -> Result<CachedToken, Error> {
        let api = Api::IamToken;
        let body = serde_json::json!({
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {
                        "name": self.username,
                        "password": self.password.expose(),
                        "domain": {"name": self.domain},
                    }},
                },
                "scope": self.scope,
            }
        });
        let credentials = IamCredentials {
            keys: None,
            hint: "IAM refused the credentials: check auth.username, auth.password, auth.domain and the scope",
        };
        let requested_at = SystemTime::now();
        let build = || self.requests.http().post(&self.url).json(&body);
        let fetched = self
            .requests
            .call(Call::iam(api), &credentials, build, |answer| {
                let token = answer
                    .headers
                    .get("x-subject-token")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| Secret::new(v.trim()))
                    .filter(|t| !t.expose().is_empty())
                    .ok_or_else(|| Error::Decode {
                        api,
                        status: answer.status.as_u16(),
                        message: "no X-Subject-Token header".into(),
                        snippet: String::new(),
                    })?;
                Ok((token, expiry(&answer.body)))
            })
            .await;
        let (token, expires_at) = fetched.map_err(|mut err| {
            // IAM may quote what it was sent.
            if let Error::Http { message, .. } | Error::Unauthorized { message, .. } = &mut err {
                *message = message.replace(self.password.expose(), "***");
            }
            err
        })?;
        // Without a readable expiry, assume the documented 24 hours.
        let expires_at = expires_at.unwrap_or(requested_at + Duration::from_secs(24 * 3600));
        let lifetime = expires_at.duration_since(requested_at).unwrap_or_default();
        let refresh_at = expires_at - lifetime.mul_f64(REFRESH_WHEN_LEFT);
        Ok(CachedToken {
            token,
            refresh_at,
            expires_at,
        })
    }
}

/// `token.expires_at` of a token answer, if it has a readable one.
fn expiry(body: &[u8]) -> Option<SystemTime> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = value["token"]["expires_at"].as_str()?;
    let time = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(time.timestamp_millis().max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The vendor SDK's vectors, every one of them, signed as the client signs a request it is
    /// about to send (reqwest's request, headers as set before signing, `X-Project-Id` among
    /// them).
    #[test]
    fn requests_are_signed_as_the_vendor_sdk_signs_them() {
        let vectors = crate::codearts::testing::sigv_vectors();
        assert!(
            vectors
                .iter()
                .any(|v| v["headers"].get("X-Project-Id").is_some()),
            "a vector with X-Project-Id"
        );
        let mut checked = std::collections::BTreeSet::new();
        for vector in &vectors {
            let name = vector["name"].as_str().expect("name");
            let method: reqwest::Method = vector["method"]
                .as_str()
                .expect("method")
                .parse()
                .expect("a method");
            let url = reqwest::Url::parse(vector["url"].as_str().expect("url")).expect("url");
            // The query the vector says it signs is the URL's, decoded in URL order.
            let query: Vec<Value> = url
                .query_pairs()
                .map(|(key, value)| serde_json::json!([key, value]))
                .collect();
            assert_eq!(Value::from(query), vector["query_params"], "{name}");
            let mut request = reqwest::Request::new(method, url);
            for (key, value) in vector["headers"].as_object().expect("headers") {
                request.headers_mut().insert(
                    HeaderName::from_bytes(key.as_bytes()).expect("name"),
                    HeaderValue::from_str(value.as_str().expect("value")).expect("value"),
                );
            }
            let body = vector["body"].as_str().expect("body");
            if !body.is_empty() {
                *request.body_mut() = Some(body.to_string().into());
            }
            let signature = signature_of(
                &request,
                vector["ak"].as_str().expect("ak"),
                vector["sk"].as_str().expect("sk"),
                vector["sdk_date"].as_str().expect("date"),
            );
            let expected = &vector["expected"];
            assert_eq!(
                signature.canonical_request, expected["canonical_request"],
                "{name}"
            );
            assert_eq!(
                signature.canonical_request.rsplit('\n').next(),
                expected["payload_sha256"].as_str(),
                "{name}"
            );
            assert_eq!(
                signature.signed_headers, expected["signed_headers"],
                "{name}"
            );
            assert_eq!(
                signature.string_to_sign, expected["string_to_sign"],
                "{name}"
            );
            assert_eq!(signature.authorization, expected["authorization"], "{name}");
            assert!(checked.insert(name.to_string()), "{name} twice");
        }
        // Every vector of the file, the Repo call's (public-06) among them.
        assert_eq!(checked.len(), vectors.len());
        assert!(
            checked.iter().any(|name| name.starts_with("public-06 ")),
            "{checked:?}"
        );
    }
}
