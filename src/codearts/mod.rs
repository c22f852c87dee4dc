//! CodeArts Pipeline API: client, authentication, typed models.

mod auth;
mod client;
pub mod model;
pub mod sign;
pub mod time;

pub use client::{Client, RequestObserver, RunSelector};

/// The APIs the exporter calls, as named in the `api` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `GET /v3/pipelines/status` (reference 3.1).
    V3Status,
    /// `POST /v5/{project_id}/api/pipelines/status` (3.2).
    V5Status,
    /// `GET .../pipeline-runs/detail` (3.3).
    RunDetail,
    /// `POST .../pipeline-runs/list` (3.4).
    RunList,
    /// `POST /v5/{project_id}/api/pipelines/list` (3.5, discovery).
    PipelineList,
    /// IAM `POST /v3/auth/tokens`.
    IamToken,
}

impl Api {
    /// Every API, for label sets created up front.
    pub const ALL: [Api; 6] = [
        Api::V3Status,
        Api::V5Status,
        Api::RunDetail,
        Api::RunList,
        Api::PipelineList,
        Api::IamToken,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::V3Status => "v3_status",
            Api::V5Status => "v5_status",
            Api::RunDetail => "run_detail",
            Api::RunList => "run_list",
            Api::PipelineList => "pipeline_list",
            Api::IamToken => "iam_token",
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call to CodeArts failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with an error status.
    #[error("{api}: HTTP {status} {code}: {message}")]
    Http {
        /// Which API.
        api: Api,
        /// HTTP status.
        status: u16,
        /// `error_code` of the body, or `-`.
        code: String,
        /// `error_msg` of the body, or the start of the body.
        message: String,
    },
    /// 401: the credentials were not accepted.
    #[error("{api}: {hint} (HTTP 401 {code}: {message})")]
    Unauthorized {
        /// Which API.
        api: Api,
        /// What to check, depending on the auth method.
        hint: &'static str,
        /// `error_code` of the body.
        code: String,
        /// `error_msg` of the body.
        message: String,
    },
    /// No answer in time.
    #[error("{api}: request timed out")]
    Timeout {
        /// Which API.
        api: Api,
    },
    /// Could not connect or the connection broke.
    #[error("{api}: transport error: {message}")]
    Transport {
        /// Which API.
        api: Api,
        /// What went wrong.
        message: String,
    },
    /// The body was not the JSON we expect.
    #[error(
        "{api}: cannot decode the response (HTTP {status}): {message}; body starts with {snippet:?}"
    )]
    Decode {
        /// Which API.
        api: Api,
        /// HTTP status.
        status: u16,
        /// Parser message.
        message: String,
        /// First bytes of the body.
        snippet: String,
    },
    /// The answer was larger than `codearts.max_response_bytes`, so the rest was never read.
    #[error(
        "{api}: answer of at least {size} bytes is over codearts.max_response_bytes ({limit}); abandoned"
    )]
    TooLarge {
        /// Which API.
        api: Api,
        /// The announced `Content-Length`, or the bytes read before the cap was passed.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// No credentials could be obtained (IAM failing, backing off).
    #[error("no valid IAM token: {0}")]
    Auth(String),
    /// The client could not be built from the configuration.
    #[error("cannot build the HTTP client: {0}")]
    Setup(String),
}

impl Error {
    /// Short kind for logs and the errors metric: `http`, `transport`, `decode` or `too_large`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Http { .. } | Error::Unauthorized { .. } | Error::Auth(_) => "http",
            Error::Timeout { .. } | Error::Transport { .. } | Error::Setup(_) => "transport",
            Error::Decode { .. } => "decode",
            Error::TooLarge { .. } => "too_large",
        }
    }
}
