//! The log of requests to the simulator (`GET /_sim/requests`), with their arrival times, so
//! that tests can check how a client spaced its retries.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Value, json};

use super::faults::FaultKind;

/// Requests kept in the log; older ones are forgotten so memory stays bounded.
const MAX_LOGGED: usize = 20_000;

/// One request as the simulator saw it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoggedRequest {
    /// Arrival, epoch ms.
    pub t_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// API name, when the path is one.
    pub api: Option<&'static str>,
    /// Status answered (for a dropped connection, the status of the headers sent).
    pub status: u16,
    /// The fault applied, if any.
    pub fault: Option<FaultKind>,
    /// `Retry-After` sent, if any.
    pub retry_after: Option<String>,
}

/// The last requests, oldest first.
#[derive(Default)]
pub(crate) struct RequestLog {
    entries: Mutex<VecDeque<LoggedRequest>>,
}

impl RequestLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<LoggedRequest>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a request, forgetting the oldest past the bound.
    pub(crate) fn push(&self, entry: LoggedRequest) {
        let mut entries = self.lock();
        if entries.len() >= MAX_LOGGED {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Every logged request as JSON, optionally of one API only.
    pub(crate) fn to_json(&self, api: Option<&str>) -> Value {
        let entries = self.lock();
        let list: Vec<&LoggedRequest> = entries
            .iter()
            .filter(|entry| api.is_none_or(|a| entry.api == Some(a)))
            .collect();
        json!({ "requests": list })
    }

    /// Forgets every request.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_filters_by_api() {
        let log = RequestLog::default();
        for i in 0..(MAX_LOGGED + 5) {
            log.push(LoggedRequest {
                t_ms: i as i64,
                method: "GET".into(),
                path: "/".into(),
                api: Some(if i % 2 == 0 { "v3_status" } else { "run_list" }),
                status: 200,
                fault: None,
                retry_after: None,
            });
        }
        let all = log.to_json(None);
        assert_eq!(all["requests"].as_array().map(Vec::len), Some(MAX_LOGGED));
        assert_eq!(all["requests"][0]["t_ms"], 5);
        let some = log.to_json(Some("run_list"));
        assert_eq!(
            some["requests"].as_array().map(Vec::len),
            Some(MAX_LOGGED / 2)
        );
        log.clear();
        assert_eq!(log.to_json(None)["requests"], json!([]));
    }
}
