//! The web configuration file of Prometheus' exporter-toolkit (`--web.config.file`): TLS,
//! client certificates, basic auth and extra response headers for the exporter's endpoints.
//!
//! The file is YAML in exporter-toolkit's format, so a team reuses the file, the Secret and
//! the ServiceMonitor settings it already has. Every key is either honoured or rejected by
//! name: keys rustls cannot honour (cipher suites, curves) are errors, never ignored.
//! [`watch`] reads the file and the certificates it names again on SIGHUP and when they change.

mod basic_auth;
mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::watch as channel;

use crate::reload::ReloadTrigger;

pub use basic_auth::{BasicAuth, Verdict};
pub use tls::{ClientAuth, TlsVersion};

/// Response headers the file may set, as exporter-toolkit allows: security headers only, so
/// the file cannot break the exposition (content type, encoding, length).
const ALLOWED_HEADERS: [&str; 5] = [
    "content-security-policy",
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "x-xss-protection",
];

/// Why a web configuration cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// A file could not be read.
    #[error("cannot read {path} ({key}): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The key that names it.
        key: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML does not have the expected shape (unknown key, wrong type).
    #[error("web configuration {path}: {problem}")]
    Parse {
        /// The web configuration file.
        path: PathBuf,
        /// What serde found wrong, with the key and line.
        problem: String,
    },
    /// A key of the format that this exporter cannot honour.
    #[error("web configuration: `{key}` is not supported: {why}")]
    Unsupported {
        /// Dotted path of the key.
        key: String,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// A value parsed but is not acceptable.
    #[error("web configuration: invalid value for `{key}`: {problem}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> WebConfigError {
    WebConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The file as written: every key exporter-toolkit knows, the unsupported ones only to name
/// them in an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<tls::TlsServerFile>,
    #[serde(default)]
    http_server_config: Option<HttpServerFile>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// `http_server_config`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerFile {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// A key that is present in the file but unsupported (`Some` when present and not null).
fn reject_present(
    value: &Option<IgnoredAny>,
    key: &str,
    why: &'static str,
) -> Result<(), WebConfigError> {
    match value {
        Some(_) => Err(WebConfigError::Unsupported {
            key: key.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// The web configuration in effect: what the server applies to each connection and request.
#[derive(Debug)]
pub struct WebConfig {
    /// TLS settings; `None` serves plain HTTP.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Basic auth; `None` lets every request in.
    basic_auth: Option<BasicAuth>,
    /// Headers added to every response.
    headers: HeaderMap,
    /// Whether HTTP/2 is offered.
    http2: bool,
    /// Every file this configuration was read from, for [`watch`].
    sources: Vec<PathBuf>,
}

impl WebConfig {
    /// No TLS, no auth, no headers: what the exporter serves without a web configuration.
    pub fn plain() -> Self {
        WebConfig {
            tls: None,
            basic_auth: None,
            headers: HeaderMap::new(),
            http2: true,
            sources: Vec::new(),
        }
    }

    /// Reads and checks `path` and the files it names (relative paths are relative to the
    /// directory of `path`).
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            key: "--web.config.file".into(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::parse(&text, path, base)?;
        config.sources.insert(0, path.to_path_buf());
        Ok(config)
    }

    /// Parses the YAML `text` of the file at `path`; files it names are looked up in `base`.
    fn parse(text: &str, path: &Path, base: &Path) -> Result<WebConfig, WebConfigError> {
        // An empty file (or only comments) is a valid configuration with nothing in it.
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            serde_norway::from_str::<Option<WebConfigFile>>(text)
                .map_err(|err| WebConfigError::Parse {
                    path: path.to_path_buf(),
                    problem: err.to_string(),
                })?
                .unwrap_or_default()
        };
        let mut sources = Vec::new();
        let tls = match &file.tls_server_config {
            Some(tls) => Some(Arc::new(tls.build(base, &mut sources)?)),
            None => None,
        };
        let http = file.http_server_config.unwrap_or_default();
        let http2 = http.http2.unwrap_or(true);
        let headers = parse_headers(http.headers.unwrap_or_default())?;
        let basic_auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => Some(BasicAuth::new(users)?),
            _ => None,
        };
        let mut config = WebConfig {
            tls,
            basic_auth,
            headers,
            http2,
            sources,
        };
        if let Some(tls) = config.tls.as_mut().and_then(Arc::get_mut) {
            tls.alpn_protocols = if http2 {
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            };
        }
        Ok(config)
    }

    /// The TLS settings of new connections, if TLS is on.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }

    /// The basic auth users, if basic auth is on.
    pub fn basic_auth(&self) -> Option<&BasicAuth> {
        self.basic_auth.as_ref()
    }

    /// Headers to add to every response.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Whether connections may speak HTTP/2.
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// One line on what is in effect, without secrets (for logs and `check-config`).
    pub fn summary(&self) -> String {
        let tls = match &self.tls {
            Some(_) => "on",
            None => "off",
        };
        let users = self.basic_auth.as_ref().map_or(0, BasicAuth::len);
        format!(
            "TLS {tls}, basic auth users: {users}, extra headers: {}, HTTP/2: {}",
            self.headers.len(),
            if self.http2 { "on" } else { "off" }
        )
    }
}

fn parse_headers(headers: BTreeMap<String, String>) -> Result<HeaderMap, WebConfigError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let key = format!("http_server_config.headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(&key, "not a valid header name"))?;
        if !ALLOWED_HEADERS.contains(&header.as_str()) {
            return Err(invalid(
                &key,
                format!(
                    "only these headers may be set: {}",
                    ALLOWED_HEADERS.join(", ")
                ),
            ));
        }
        let value =
            HeaderValue::from_str(&value).map_err(|_| invalid(&key, "not a valid header value"))?;
        map.insert(header, value);
    }
    Ok(map)
}

/// Reloads `path` into `current` on SIGHUP and when it, or a file it names, changes; a file
/// that cannot be loaded is logged and the running settings stay. Each reload's result goes to
/// `reloaded`. Runs until aborted.
///
/// Only new connections and requests see a new configuration: connections in flight keep
/// the TLS session they have.
pub async fn watch(
    path: PathBuf,
    current: channel::Sender<Arc<WebConfig>>,
    reloaded: impl Fn(bool),
) {
    let sources = current.borrow().sources.clone();
    let mut trigger = ReloadTrigger::new(sources, "the web configuration");
    loop {
        let reason = trigger.next().await;
        let loaded = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || WebConfig::load(&path)).await
        };
        match loaded {
            Ok(Ok(config)) => {
                trigger.watch(config.sources.clone());
                tracing::info!(path = %path.display(), reason, settings = %config.summary(), "web configuration reloaded");
                current.send_replace(Arc::new(config));
                reloaded(true);
            }
            Ok(Err(err)) => {
                // Not compared again until it changes: one log line per bad version.
                tracing::error!(path = %path.display(), reason, error = %err, "web configuration reload rejected; the running settings stay");
                reloaded(false);
            }
            Err(err) => {
                tracing::error!(error = %err, "web configuration reload failed");
                reloaded(false);
            }
        }
    }
}

#[cfg(test)]
mod tests;
