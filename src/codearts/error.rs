//! Why a call to CodeArts failed, and how an answer's body becomes an error message: the
//! shaping of the one request path, which CodeArts and IAM calls alike take.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api::{Api, ErrorKind, RetryReason};
use super::wire::ApiErrorBody;

/// How much of an unreadable body goes into an error message.
const SNIPPET_CHARS: usize = 200;
/// Runs of token-like characters at least this long are redacted from body snippets.
const REDACT_RUN: usize = 48;

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
    /// No token to send: IAM failed (the message says how), or is being left alone after a
    /// failure.
    #[error("no valid IAM token: {0}")]
    Auth(String),
    /// The client could not be built from the configuration.
    #[error("cannot build the HTTP client: {0}")]
    Setup(String),
    /// Not sent: an argument cannot be what the API takes (it came from an answer's field that
    /// is not what it should be, e.g. a repository id that is no number).
    #[error("{api}: not sent: {message}")]
    InvalidArgument {
        /// Which API.
        api: Api,
        /// Which argument, and what is wrong with it.
        message: String,
    },
}

impl Error {
    /// The label value of [`ErrorKind::of`] this error, for logs.
    pub fn kind(&self) -> &'static str {
        ErrorKind::of(self).as_str()
    }

    /// Whether the service answered 404: what was asked for does not exist (a deleted
    /// repository, an unknown commit), which asking again will not change. Transient failures
    /// (429, 5xx, time-outs, connections) are never this, and neither is the gateway's 404 for
    /// a route it does not have (`APIGW.0101`, `APIG.0101` on a tenant gateway): that says the
    /// endpoint is wrong, not that the thing asked for is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Http { status: 404, code, .. }
            if !matches!(code.as_str(), "APIGW.0101" | "APIG.0101"))
    }
}

// The kinds are label values (`api`); which error is of which kind is said here, with the errors.
impl ErrorKind {
    /// The kind of `error`.
    pub fn of(error: &Error) -> ErrorKind {
        match error {
            Error::Http { .. } => ErrorKind::Http,
            Error::Unauthorized { .. } | Error::Auth(_) => ErrorKind::Auth,
            Error::Timeout { .. } | Error::Transport { .. } | Error::Setup(_) => {
                ErrorKind::Transport
            }
            // The argument came from an answer's field that cannot be read as what it should be.
            Error::Decode { .. } | Error::InvalidArgument { .. } => ErrorKind::Decode,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
        }
    }
}

/// The retry reason of a request that got no answer, or whose answer broke off (its label value
/// is also the request's `code` label), and its error.
pub(super) fn transport_error(api: Api, err: &reqwest::Error) -> (RetryReason, Error) {
    if err.is_timeout() {
        (RetryReason::Timeout, Error::Timeout { api })
    } else {
        let reason = if err.is_connect() {
            RetryReason::Connect
        } else {
            RetryReason::Error
        };
        // Without the URL: it is ours and adds noise, and reqwest never puts headers in it.
        let message = std::error::Error::source(err)
            .map(|source| format!("{err}: {source}"))
            .unwrap_or_else(|| err.to_string());
        (reason, Error::Transport { api, message })
    }
}

/// An error from a non-2xx answer; `hint` says what to check on a 401.
pub(super) fn http_error(api: Api, status: StatusCode, body: &[u8], hint: &'static str) -> Error {
    let parsed: ApiErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.error_code.unwrap_or_else(|| "-".into());
    let message = parsed.error_msg.unwrap_or_else(|| snippet(body));
    if status == StatusCode::UNAUTHORIZED {
        Error::Unauthorized {
            api,
            hint,
            code,
            message,
        }
    } else {
        Error::Http {
            api,
            status: status.as_u16(),
            code,
            message,
        }
    }
}

/// The start of a body for logs and errors, with anything token-like redacted.
fn snippet(body: &[u8]) -> String {
    // Redact before cutting, so a token straddling the cut is still recognised.
    let head: String = String::from_utf8_lossy(&body[..body.len().min(SNIPPET_CHARS * 8)])
        .chars()
        .take(SNIPPET_CHARS * 4)
        .collect();
    redact(&head).chars().take(SNIPPET_CHARS).collect()
}

/// Replaces long runs of base64/hex-like characters (tokens, signatures, keys) with `<redacted>`.
fn redact(text: &str) -> String {
    let token_like = |c: char| c.is_ascii_alphanumeric() || "+/=_-%".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= REDACT_RUN {
            out.push_str("<redacted>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if token_like(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

pub(super) fn decode_error(api: Api, status: StatusCode, message: String, body: &[u8]) -> Error {
    Error::Decode {
        api,
        status: status.as_u16(),
        message,
        snippet: snippet(body),
    }
}

pub(super) fn decode<T: DeserializeOwned>(
    api: Api,
    status: StatusCode,
    body: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|err| decode_error(api, status, err.to_string(), body))
}

/// Decodes a JSON array element by element; returns the entries that decode and how many did not.
pub(super) fn decode_array<T: DeserializeOwned>(
    api: Api,
    status: StatusCode,
    body: &[u8],
) -> Result<(Vec<T>, usize), Error> {
    let items = match decode::<Value>(api, status, body)? {
        Value::Array(items) => items,
        other => {
            let message = format!("expected a JSON array, got {}", json_kind(&other));
            return Err(decode_error(api, status, message, body));
        }
    };
    let mut decoded = Vec::with_capacity(items.len());
    let mut skipped = 0;
    for item in items {
        let text = item.to_string();
        // Entries are objects; serde would also read a struct from an array, by position.
        let entry = match item {
            Value::Object(_) => serde_json::from_value(item).map_err(|err| err.to_string()),
            other => Err(format!("expected an object, got {}", json_kind(&other))),
        };
        match entry {
            Ok(entry) => decoded.push(entry),
            Err(err) => {
                skipped += 1;
                tracing::warn!(%api, status = status.as_u16(), error = %err, entry = %snippet(text.as_bytes()), "skipping an entry that does not decode");
            }
        }
    }
    Ok((decoded, skipped))
}

pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codearts::wire::{RunDetail, V3PipelineStatus, V5RunStatus};

    #[test]
    fn error_bodies_become_errors_with_code_and_message() {
        let body = br#"{"error_code":"DEV.00000003","error_msg":"expired"}"#;
        let err = http_error(
            Api::V5Status,
            StatusCode::UNAUTHORIZED,
            body,
            "token rejected or expired",
        );
        assert!(matches!(err, Error::Unauthorized { .. }));
        assert!(err.to_string().contains("token rejected or expired"));
        let err = http_error(
            Api::RunDetail,
            StatusCode::NOT_FOUND,
            b"<html>nope</html>",
            "",
        );
        assert_eq!(err.to_string(), "run_detail: HTTP 404 -: <html>nope</html>");
        assert!(err.is_not_found());
    }

    #[test]
    fn only_a_404_is_not_found() {
        let answered = |status: u16| {
            http_error(
                Api::RepoCommit,
                StatusCode::from_u16(status).expect("status"),
                b"{}",
                "",
            )
        };
        assert!(answered(404).is_not_found());
        // The gateway has no such route: a wrong endpoint, not a missing commit.
        for code in ["APIGW.0101", "APIG.0101"] {
            let body = format!(r#"{{"error_code":"{code}","error_msg":"The API does not exist"}}"#);
            let err = http_error(Api::RepoCommit, StatusCode::NOT_FOUND, body.as_bytes(), "");
            assert!(!err.is_not_found(), "{err}");
        }
        for status in [400, 401, 403, 410, 429, 500, 502, 503, 504] {
            assert!(!answered(status).is_not_found(), "{status}");
        }
        let api = Api::RepoCommit;
        for err in [
            Error::Timeout { api },
            Error::Transport {
                api,
                message: "refused".into(),
            },
            Error::Auth("no token".into()),
            Error::TooLarge {
                api,
                size: 2,
                limit: 1,
            },
            Error::InvalidArgument {
                api,
                message: "x".into(),
            },
        ] {
            assert!(!err.is_not_found(), "{err}");
        }
    }

    #[test]
    fn arrays_decode_entry_by_entry() {
        let ok = StatusCode::OK;
        let body = br#"[{"pipeline_id": "a"}, 5, {"pipeline_id": "b"}, "x"]"#;
        let (entries, skipped): (Vec<V5RunStatus>, usize) =
            decode_array(Api::V5Status, ok, body).expect("decodes");
        assert_eq!((entries.len(), skipped), (2, 2));
        let err = decode_array::<V5RunStatus>(Api::V5Status, ok, br#"{"a": 1}"#)
            .expect_err("not an array");
        assert_eq!(err.kind(), "decode");
        let err = decode_array::<V5RunStatus>(Api::V5Status, ok, b"[{\"pipeline_id\"")
            .expect_err("truncated");
        assert!(err.to_string().contains("body starts with"));
        assert!(err.to_string().contains("HTTP 200"));
    }

    #[test]
    fn snippets_are_short_and_redact_tokens() {
        let token = format!("MIIZ{}", "aB3+/x".repeat(40));
        let body =
            format!(r#"{{"token": "{token}", "pipeline_id": "0123456789abcdef0123456789abcdef"}}"#);
        let text = snippet(body.as_bytes());
        assert!(!text.contains("MIIZ"), "{text}");
        assert!(text.contains("<redacted>"));
        assert!(
            text.contains("0123456789abcdef0123456789abcdef"),
            "ids stay readable"
        );
        let long = "x ".repeat(1000);
        assert_eq!(snippet(long.as_bytes()).chars().count(), SNIPPET_CHARS);
        // A token cut by the snippet's end is still redacted.
        let body = format!("{}{token}", "a ".repeat(90));
        assert!(!snippet(body.as_bytes()).contains("MIIZ"));
        assert_eq!(snippet(&[0xff, 0xfe, b'{']), "\u{fffd}\u{fffd}{");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any body gives a short snippet without long token-like runs, and decodes or fails
            /// cleanly through every path of the client.
            #[test]
            fn any_body_is_handled(
                body in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..2048),
                    any::<String>().prop_map(String::into_bytes),
                    "[\\[{}\\]\",:a-zA-Z0-9+/= ]{0,600}".prop_map(String::into_bytes),
                ],
            ) {
                let text = snippet(&body);
                prop_assert!(text.chars().count() <= SNIPPET_CHARS);
                let longest = text
                    .split(|c: char| !(c.is_ascii_alphanumeric() || "+/=_-%".contains(c)))
                    .map(str::len)
                    .max()
                    .unwrap_or(0);
                prop_assert!(longest < REDACT_RUN, "{text}");
                let ok = StatusCode::OK;
                let _ = decode_array::<V5RunStatus>(Api::V5Status, ok, &body);
                let _ = decode_array::<V3PipelineStatus>(Api::V3Status, ok, &body);
                let _ = decode::<RunDetail>(Api::RunDetail, ok, &body);
                let _ = http_error(Api::RunList, StatusCode::BAD_GATEWAY, &body, "");
            }
        }
    }
}
