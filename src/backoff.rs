//! The one backoff of every retry (CodeArts, IAM, the trace collector), and the reading of the
//! `Retry-After` that overrides it.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderValue;

/// The wait before attempt `attempt + 1` after `attempt` failures in a row (from 1): 50–100% of
/// `base · 2^(attempt-1)` (the jitter keeps many waiters from coming back at once), at most `max`.
/// The one backoff of every retry: the client's, and the IAM token's and project lookup's.
pub fn backoff(base: Duration, attempt: u32, max: Duration) -> Duration {
    let full = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(max);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        for attempt in 1..6 {
            let wait = backoff(base, attempt, max);
            let full = base * (1 << (attempt - 1));
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
        // Capped before the jitter, so waiters at the cap still spread out.
        for attempt in [8, 200, u32::MAX] {
            let wait = backoff(base, attempt, max);
            assert!(wait >= max / 2 && wait <= max, "{attempt}: {wait:?}");
        }
        let first = backoff(base, 0, max);
        assert!(first >= base / 2 && first <= base, "{first:?}");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(
            retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        let later = SystemTime::now() + Duration::from_secs(120);
        let header = HeaderValue::from_str(&httpdate::fmt_http_date(later)).expect("header");
        let wait = retry_after(&header).expect("parses");
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(retry_after(&HeaderValue::from_static("soon")), None);
    }
}
