//! Authentication of requests: static token, IAM password tokens, or AK/SK signatures.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Mutex;

use super::api::{Api, RequestObserver};
use super::body::{BodyError, read_body};
use super::error::Error;
use super::error::{http_error, transport_error};
use super::sign::{self, RequestParts};
use crate::config::{AuthConfig, AuthMethod, Secret};

/// Refresh a password token when this share of its lifetime is left.
const REFRESH_WHEN_LEFT: f64 = 0.1;
/// First wait after a failed IAM call; doubles up to [`MAX_IAM_BACKOFF`].
const BASE_IAM_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between IAM attempts.
const MAX_IAM_BACKOFF: Duration = Duration::from_secs(300);

/// Adds credentials to requests.
pub(crate) enum Authenticator {
    /// `X-Auth-Token` with a fixed token.
    Token(Secret),
    /// `SDK-HMAC-SHA256` signature of each request.
    AkSk {
        ak: String,
        sk: Secret,
        project_id: Option<String>,
        security_token: Option<Secret>,
    },
    /// `X-Auth-Token` with tokens obtained from IAM (boxed: by far the largest variant).
    Password(Box<PasswordTokens>),
}

/// What a request was sent with, so a 401 can invalidate exactly that token.
pub(crate) struct Used(Option<Secret>);

impl Authenticator {
    /// Builds the authenticator of `auth.method`.
    pub(crate) fn new(
        auth: &AuthConfig,
        iam_endpoint: String,
        http: reqwest::Client,
        max_response_bytes: u64,
        observer: Arc<dyn RequestObserver>,
    ) -> Result<Authenticator, Error> {
        let missing = |key: &str| Error::Setup(format!("{key} is not set"));
        Ok(match auth.method {
            AuthMethod::Token => {
                Authenticator::Token(auth.token.clone().ok_or_else(|| missing("auth.token"))?)
            }
            AuthMethod::Aksk => Authenticator::AkSk {
                ak: auth.ak.clone().ok_or_else(|| missing("auth.ak"))?,
                sk: auth.sk.clone().ok_or_else(|| missing("auth.sk"))?,
                project_id: auth.project_id.clone(),
                security_token: auth.security_token.clone(),
            },
            AuthMethod::Password => {
                let scope = match (&auth.project_name, &auth.iam_project_id) {
                    (_, Some(id)) => serde_json::json!({"project": {"id": id}}),
                    (Some(name), None) => serde_json::json!({"project": {"name": name}}),
                    (None, None) => return Err(missing("auth.project_name")),
                };
                Authenticator::Password(Box::new(PasswordTokens {
                    http,
                    url: format!("{iam_endpoint}/v3/auth/tokens"),
                    max_response_bytes,
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
                    observer,
                    state: Mutex::new(TokenState::default()),
                }))
            }
        })
    }

    /// Adds the credentials to `request`.
    pub(crate) async fn authorize(&self, request: &mut reqwest::Request) -> Result<Used, Error> {
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
            Authenticator::AkSk {
                ak,
                sk,
                project_id,
                security_token,
            } => {
                if let Some(project_id) = project_id {
                    set_header(request, "x-project-id", project_id)?;
                }
                if let Some(token) = security_token {
                    set_header(request, "x-security-token", token.expose())?;
                }
                let date = chrono::Utc::now().format(sign::DATE_FORMAT).to_string();
                let signature = signature_of(request, ak, sk.expose(), &date);
                set_header(request, "x-sdk-date", &date)?;
                set_header(request, "authorization", &signature.authorization)?;
                Ok(Used(None))
            }
        }
    }

    /// After a 401: true when retrying may help (a password token was dropped and will be renewed).
    pub(crate) async fn rejected(&self, used: &Used) -> bool {
        match (self, &used.0) {
            (Authenticator::Password(tokens), Some(token)) => {
                tokens.invalidate(token).await;
                true
            }
            _ => false,
        }
    }

    /// What to tell the user when the service answers 401.
    pub(crate) fn rejection_hint(&self) -> &'static str {
        match self {
            Authenticator::Token(_) => "token rejected or expired: renew auth.token",
            Authenticator::Password(_) => {
                "token from IAM rejected even after a refresh: check the user's permissions and auth scope"
            }
            Authenticator::AkSk { .. } => {
                "signature rejected: check auth.ak, auth.sk and that the clock is right"
            }
        }
    }
}

/// The signature of a request as it will be sent.
fn signature_of(request: &reqwest::Request, ak: &str, sk: &str, date: &str) -> sign::Signature {
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
    http: reqwest::Client,
    url: String,
    /// IAM answers larger than this are abandoned, as every other answer.
    max_response_bytes: u64,
    username: String,
    password: Secret,
    domain: String,
    scope: serde_json::Value,
    observer: Arc<dyn RequestObserver>,
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
    /// A valid token: the cached one, or a new one when it is due for refresh.
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
                self.observer.auth_refresh(true);
                Ok(token)
            }
            Err(err) => {
                self.observer.auth_refresh(false);
                self.observer.failed(Api::IamToken, err.kind());
                state.failures += 1;
                let wait = BASE_IAM_BACKOFF
                    .saturating_mul(1 << (state.failures - 1).min(16))
                    .min(MAX_IAM_BACKOFF);
                state.next_attempt = Some(Instant::now() + wait);
                state.last_error = Some(err.to_string());
                tracing::warn!(error = %err, retry_in_s = wait.as_secs(), "cannot obtain an IAM token");
                still_valid.ok_or(err)
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

    async fn fetch(&self) -> Result<CachedToken, Error> {
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
        let started = Instant::now();
        let requested_at = SystemTime::now();
        let response = self.http.post(&self.url).json(&body).send().await;
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                let (code, error) = transport_error(Api::IamToken, &err);
                self.observer
                    .request_done(Api::IamToken, code, started.elapsed());
                return Err(error);
            }
        };
        let status = response.status();
        self.observer
            .request_done(Api::IamToken, status.as_str(), started.elapsed());
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(|v| Secret::new(v.trim()));
        let bytes = match read_body(response, self.max_response_bytes).await {
            Ok(bytes) => bytes,
            Err(BodyError::Transport(err)) => return Err(transport_error(Api::IamToken, &err).1),
            Err(BodyError::TooLarge(size)) => {
                return Err(Error::TooLarge {
                    api: Api::IamToken,
                    size,
                    limit: self.max_response_bytes,
                });
            }
        };
        if !status.is_success() {
            let mut error = http_error(
                Api::IamToken,
                status,
                &bytes,
                "IAM refused the credentials: check auth.username, auth.password, auth.domain and the scope",
            );
            if let Error::Http { message, .. } = &mut error {
                *message = message.replace(self.password.expose(), "***");
            }
            return Err(error);
        }
        let token = token
            .filter(|t| !t.expose().is_empty())
            .ok_or_else(|| Error::Decode {
                api: Api::IamToken,
                status: status.as_u16(),
                message: "no X-Subject-Token header".into(),
                snippet: String::new(),
            })?;
        let expires_at = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["token"]["expires_at"].as_str().map(str::to_string))
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok())
            .map(|t| {
                SystemTime::UNIX_EPOCH + Duration::from_millis(t.timestamp_millis().max(0) as u64)
            })
            // Without a readable expiry, assume the documented 24 hours.
            .unwrap_or(requested_at + Duration::from_secs(24 * 3600));
        let lifetime = expires_at.duration_since(requested_at).unwrap_or_default();
        let refresh_at = expires_at - lifetime.mul_f64(REFRESH_WHEN_LEFT);
        Ok(CachedToken {
            token,
            refresh_at,
            expires_at,
        })
    }
}
