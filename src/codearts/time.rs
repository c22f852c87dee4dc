//! Time values as CodeArts sends them: epoch ms (number or string), or zone-less dates; and
//! commit times of CodeArts Repo, read strictly.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A time field as found in a response, kept raw until a zone is known.
#[derive(Debug, Clone, PartialEq)]
pub enum RawTime {
    /// A JSON number (epoch milliseconds, or seconds when small).
    Number(f64),
    /// A JSON string: epoch ms digits, `yyyy-MM-dd HH:mm:ss`, or RFC 3339.
    Text(String),
}

/// Numbers below this are taken as epoch seconds rather than milliseconds (year 5138 in seconds).
const SECONDS_LIMIT: f64 = 1e11;

impl RawTime {
    /// Epoch seconds, reading zone-less dates in `zone`; `None` for empty, zero or unreadable values.
    pub fn epoch_seconds(&self, zone: FixedOffset) -> Option<f64> {
        match self {
            RawTime::Number(n) => from_number(*n),
            RawTime::Text(text) => parse_text(text.trim(), zone),
        }
    }
}

fn from_number(n: f64) -> Option<f64> {
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    Some(if n < SECONDS_LIMIT { n } else { n / 1000.0 })
}

fn parse_text(text: &str, zone: FixedOffset) -> Option<f64> {
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<f64>().ok().and_then(from_number);
    }
    if let Ok(with_zone) = DateTime::parse_from_rfc3339(text) {
        return Some(with_zone.timestamp_millis() as f64 / 1000.0);
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y/%m/%d %H:%M:%S",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return zone
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.timestamp_millis() as f64 / 1000.0);
        }
    }
    None
}

/// Earliest epoch milliseconds read as a commit time (2000-01-01): a smaller number is more
/// likely seconds than milliseconds of a commit, and which it is would be a guess.
const COMMIT_MS_MIN: f64 = 946_684_800_000.0;
/// Latest epoch milliseconds read as a commit time (year 10000).
const COMMIT_MS_MAX: f64 = 253_402_300_800_000.0;

/// A commit's time as CodeArts Repo gives it (`committed_date`, reference 5.7), in epoch
/// seconds: ISO 8601 with an offset (`Z` or `+08:00`; with or without a fraction of a second),
/// or epoch milliseconds as a number or a string of digits. Anything else, zone-less dates
/// included, and a time before 2000 or after 9999, is `None`: an unknown time, never a guess.
pub fn commit_seconds(raw: &RawTime) -> Option<f64> {
    let millis = match raw {
        RawTime::Number(n) => *n,
        RawTime::Text(text) => {
            let text = text.trim();
            if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                text.parse::<f64>().ok()?
            } else {
                with_offset(text)?.timestamp_millis() as f64
            }
        }
    };
    (millis.is_finite() && (COMMIT_MS_MIN..COMMIT_MS_MAX).contains(&millis))
        .then(|| millis / 1000.0)
}

/// An ISO 8601 date and time that carries its offset: RFC 3339, or `+0800` without a colon.
fn with_offset(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
}

/// Deserializes any JSON value into an optional [`RawTime`]; other types become `None`.
pub fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RawTime>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64().map(RawTime::Number),
        Value::String(s) => Some(RawTime::Text(s)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc8() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).expect("offset")
    }

    #[test]
    fn every_documented_form_parses() {
        let zone = utc8();
        // 2023-01-20 09:33:17 UTC == 1674207197 s
        let expected = Some(1_674_207_197.0);
        assert_eq!(
            RawTime::Number(1_674_207_197_000.0).epoch_seconds(zone),
            expected
        );
        assert_eq!(
            RawTime::Text("1674207197000".into()).epoch_seconds(zone),
            expected
        );
        assert_eq!(
            RawTime::Text("2023-01-20 17:33:17".into()).epoch_seconds(zone),
            expected
        );
        assert_eq!(
            RawTime::Text("2023-01-20T09:33:17Z".into()).epoch_seconds(zone),
            expected
        );
        assert_eq!(
            RawTime::Text("2023-01-20 09:33:17".into())
                .epoch_seconds(FixedOffset::east_opt(0).expect("utc")),
            expected
        );
        assert_eq!(
            RawTime::Number(1_674_207_197.0).epoch_seconds(zone),
            expected
        );
    }

    #[test]
    fn empty_zero_and_garbage_are_absent() {
        let zone = utc8();
        for raw in [
            RawTime::Number(0.0),
            RawTime::Number(-5.0),
            RawTime::Text(String::new()),
            RawTime::Text("  ".into()),
            RawTime::Text("yesterday".into()),
            RawTime::Text("2023-13-40 99:00:00".into()),
            RawTime::Text("99999999999999999999999999999999999999".repeat(20)),
        ] {
            assert!(
                raw.epoch_seconds(zone).is_none_or(f64::is_finite),
                "{raw:?}"
            );
        }
        assert_eq!(RawTime::Text("yesterday".into()).epoch_seconds(zone), None);
        assert_eq!(RawTime::Number(0.0).epoch_seconds(zone), None);
    }

    #[test]
    fn commit_times_read_iso_8601_with_an_offset_and_epoch_milliseconds() {
        // 2026-12-01T01:30:12Z, the reference's example (09:30:12 at +08:00).
        const AT: f64 = 1_796_088_612.0;
        let text = |t: &str| commit_seconds(&RawTime::Text(t.into()));
        assert_eq!(text("2026-12-01T09:30:12.000+08:00"), Some(AT));
        assert_eq!(text("2026-12-01T09:30:12+08:00"), Some(AT));
        assert_eq!(text("2026-12-01T01:30:12Z"), Some(AT));
        assert_eq!(text("2026-12-01T01:30:12.250Z"), Some(AT + 0.25));
        assert_eq!(text("2026-11-30T22:30:12.5-03:00"), Some(AT + 0.5));
        assert_eq!(text("2026-12-01T09:30:12+0800"), Some(AT));
        assert_eq!(text(" 2026-12-01T09:30:12.000+08:00 "), Some(AT));
        assert_eq!(text("1796088612000"), Some(AT));
        assert_eq!(text("1796088612250"), Some(AT + 0.25));
        assert_eq!(
            commit_seconds(&RawTime::Number(1_796_088_612_000.0)),
            Some(AT)
        );
    }

    #[test]
    fn commit_times_that_would_need_a_guess_are_unknown() {
        for garbage in [
            "",
            "   ",
            "yesterday",
            // No offset: the zone would be a guess.
            "2026-12-01 09:30:12",
            "2026-12-01T09:30:12",
            "2026-12-01T09:30:12.000",
            "2026-12-01",
            "12/01/2026 09:30:12 +08:00",
            "2026-13-01T09:30:12Z",
            "2026-12-01T25:30:12+08:00",
            "1796088612000.5",
            "-1796088612000",
            "0x1A",
            // Seconds, not milliseconds: which one it is would be a guess.
            "1796088612",
            "0",
            "99999999999999999999999999999999",
        ] {
            assert_eq!(
                commit_seconds(&RawTime::Text(garbage.into())),
                None,
                "{garbage:?}"
            );
        }
        for number in [
            1_796_088_612.0,
            0.0,
            -1_796_088_612_000.0,
            f64::NAN,
            f64::INFINITY,
            1e300,
        ] {
            assert_eq!(commit_seconds(&RawTime::Number(number)), None, "{number}");
        }
    }

    #[test]
    fn lenient_time_accepts_any_json() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "lenient_time")]
            t: Option<RawTime>,
        }
        for (text, some) in [
            (r#"{"t": 1}"#, true),
            (r#"{"t": "x"}"#, true),
            (r#"{"t": null}"#, false),
            (r#"{"t": [1]}"#, false),
            (r#"{"t": {"a": 1}}"#, false),
            (r#"{}"#, false),
        ] {
            let holder: Holder = serde_json::from_str(text).expect("parses");
            assert_eq!(holder.t.is_some(), some, "{text}");
        }
    }

    mod properties {
        use super::*;
        use chrono::NaiveDate;
        use proptest::prelude::*;

        fn zone() -> impl Strategy<Value = FixedOffset> {
            (-14 * 3600..=14 * 3600).prop_filter_map("offset", FixedOffset::east_opt)
        }

        proptest! {
            /// Any text or number gives a finite, positive time or none; never a panic.
            #[test]
            fn any_value_parses_to_a_finite_time_or_none(
                text in prop_oneof![
                    any::<String>(),
                    "[0-9]{0,40}",
                    "[0-9 :./TZ+-]{0,30}",
                ],
                number in any::<f64>(),
                zone in zone(),
            ) {
                for raw in [RawTime::Text(text), RawTime::Number(number)] {
                    if let Some(seconds) = raw.epoch_seconds(zone) {
                        prop_assert!(seconds.is_finite() && seconds > 0.0, "{raw:?}: {seconds}");
                    }
                    if let Some(seconds) = commit_seconds(&raw) {
                        prop_assert!(seconds.is_finite() && seconds >= 946_684_800.0, "{raw:?}: {seconds}");
                    }
                }
            }

            /// Zone-less dates are read in the given zone, in every layout the API uses; epoch ms
            /// agree (from 2000 on: small numbers are read as seconds).
            #[test]
            fn zone_less_dates_round_trip(
                days in 0i64..40_000,
                second in 0u32..86_400,
                zone in zone(),
            ) {
                let date = NaiveDate::from_ymd_opt(2000, 1, 1).expect("date")
                    + chrono::Duration::days(days);
                let naive = date.and_hms_opt(second / 3600, second / 60 % 60, second % 60).expect("time");
                let Some(expected) = zone.from_local_datetime(&naive).single() else {
                    return Ok(());
                };
                let expected = expected.timestamp() as f64;
                prop_assume!(expected > 0.0);
                for layout in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.3f"] {
                    let text = naive.format(layout).to_string();
                    prop_assert_eq!(RawTime::Text(text.clone()).epoch_seconds(zone), Some(expected), "{}", text);
                }
                let millis = expected * 1000.0;
                prop_assert_eq!(RawTime::Number(millis).epoch_seconds(zone), Some(expected));
                prop_assert_eq!(RawTime::Text(format!("{millis:.0}")).epoch_seconds(zone), Some(expected));
            }
        }
    }
}
