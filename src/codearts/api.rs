//! The APIs the exporter calls, and the observer the client reports each exchange to (the
//! exporter's own metrics implement it, so this module does not depend on them), with the label
//! values it reports: why a request is retried, and what kind of failure a call had (which
//! error is of which kind is `error`'s to say).

use std::time::Duration;

/// The APIs the exporter calls, as named in the `api` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `GET /v3/pipelines/status` (reference 5.5).
    V3Status,
    /// `POST /v5/{project_id}/api/pipelines/status` (5.1).
    V5Status,
    /// `GET .../pipeline-runs/detail` (5.2).
    RunDetail,
    /// `POST .../pipeline-runs/list` (5.3).
    RunList,
    /// `POST /v5/{project_id}/api/pipelines/list` (5.4, discovery).
    PipelineList,
    /// IAM `POST /v3/auth/tokens` (3.2).
    IamToken,
    /// IAM `GET /v3/projects` (the project id an AK/SK signer sends, reference 3.6).
    IamProjects,
    /// CodeArts Repo `GET /v4/repositories/{id}/repository/commits?sha=` (5.7, a commit's time).
    RepoCommit,
}

impl Api {
    /// Every API, for label sets created up front.
    pub const ALL: [Api; 8] = [
        Api::V3Status,
        Api::V5Status,
        Api::RunDetail,
        Api::RunList,
        Api::PipelineList,
        Api::IamToken,
        Api::IamProjects,
        Api::RepoCommit,
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
            Api::IamProjects => "iam_projects",
            Api::RepoCommit => "repo_commit",
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request is retried: the `reason` label of `codearts_exporter_api_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// 429 Too Many Requests.
    Throttled,
    /// A 5xx answer.
    ServerError,
    /// No answer within `codearts.timeout`.
    Timeout,
    /// Could not connect.
    Connect,
    /// The connection broke (e.g. mid-answer).
    Error,
    /// A 401 answered by renewing the password token.
    Unauthorized,
}

impl RetryReason {
    /// Every reason, for label sets created up front.
    pub const ALL: [RetryReason; 6] = [
        RetryReason::Throttled,
        RetryReason::ServerError,
        RetryReason::Timeout,
        RetryReason::Connect,
        RetryReason::Error,
        RetryReason::Unauthorized,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Throttled => "throttled",
            RetryReason::ServerError => "server_error",
            RetryReason::Timeout => "timeout",
            RetryReason::Connect => "connect",
            RetryReason::Error => "error",
            RetryReason::Unauthorized => "unauthorized",
        }
    }
}

impl std::fmt::Display for RetryReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure a call had: the `kind` label of `codearts_exporter_api_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An error status other than 401.
    Http,
    /// Credentials rejected (401), or no IAM token to send (IAM failing, or backing off).
    Auth,
    /// No answer in time, no connection, or a client that could not be built.
    Transport,
    /// An answer, or an entry of a list, that cannot be read (or a field of one that a call
    /// could not be made with).
    Decode,
    /// An answer over `codearts.max_response_bytes`, abandoned.
    TooLarge,
}

impl ErrorKind {
    /// Every kind, for label sets created up front.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Http,
        ErrorKind::Auth,
        ErrorKind::Transport,
        ErrorKind::Decode,
        ErrorKind::TooLarge,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Http => "http",
            ErrorKind::Auth => "auth",
            ErrorKind::Transport => "transport",
            ErrorKind::Decode => "decode",
            ErrorKind::TooLarge => "too_large",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives one call per HTTP exchange, for the exporter's own metrics.
pub trait RequestObserver: Send + Sync {
    /// A request finished with `code` (HTTP status, or `timeout`/`connect`/`error`).
    fn request_done(&self, api: Api, code: &str, elapsed: Duration);
    /// A request is about to be retried because of `reason`.
    fn retried(&self, api: Api, reason: RetryReason);
    /// A call failed for good (after any retries), for a reason of `kind`.
    fn failed(&self, api: Api, kind: ErrorKind);
    /// An attempt to obtain an IAM token succeeded or failed.
    fn auth_refresh(&self, ok: bool);
}
