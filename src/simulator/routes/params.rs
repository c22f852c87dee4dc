//! Parameters of the simulated APIs, read as leniently as the vendor reads them and refused with
//! its `非法参数` error when they cannot be read.

use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use super::{Reply, bad_param};
use crate::simulator::auth::query_pairs;

/// Default and largest page sizes of the list APIs.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;

/// 32 digits or lower-case letters, the shape of every CodeArts id.
pub(super) fn is_id(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// The first value of `key` in a query string, decoded.
pub(super) fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query_pairs(query.unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The body as a JSON object; an empty body is an empty object.
pub(super) fn body_object(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad_param("body")),
    }
}

/// A count, as a number or a digit string.
pub(super) fn field_u64(body: &Map<String, Value>, key: &str) -> Result<Option<u64>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad_param(key)),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad_param(key)),
        Some(_) => Err(bad_param(key)),
    }
}

/// Epoch ms, as a number, a digit string or `yyyy-MM-dd HH:mm:ss` in UTC+8.
pub(super) fn field_time(body: &Map<String, Value>, key: &str) -> Result<Option<i64>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad_param(key)),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.bytes().all(|b| b.is_ascii_digit()) {
                return s.parse().map(Some).map_err(|_| bad_param(key));
            }
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .map(|t| Some(t.and_utc().timestamp_millis() - 8 * 3_600_000))
                .map_err(|_| bad_param(key))
        }
        Some(_) => Err(bad_param(key)),
    }
}

/// A list of strings; a lone string is a list of one.
pub(super) fn field_list(
    body: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<String>>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad_param(key))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad_param(key)),
    }
}

/// One of `allowed`, in any case; `default` when absent.
pub(super) fn field_choice(
    body: &Map<String, Value>,
    key: &str,
    allowed: &[&'static str],
    default: &'static str,
) -> Result<&'static str, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(s.trim()))
            .copied()
            .ok_or_else(|| bad_param(key)),
        Some(_) => Err(bad_param(key)),
    }
}

/// A boolean field; `default` when absent or null.
pub(super) fn field_bool(
    body: &Map<String, Value>,
    key: &str,
    default: bool,
) -> Result<bool, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad_param(key)),
    }
}

/// Offset and limit of a list request: limit defaults to 10 and is capped at 100.
pub(super) fn paging(body: &Map<String, Value>) -> Result<(u64, u64), Reply> {
    let offset = field_u64(body, "offset")?.unwrap_or(0);
    let limit = match field_u64(body, "limit")? {
        None => DEFAULT_LIMIT,
        Some(0) => return Err(bad_param("limit")),
        Some(limit) => limit.min(MAX_LIMIT),
    };
    Ok((offset, limit))
}

/// The items of one page.
pub(super) fn page<T>(items: Vec<T>, offset: u64, limit: u64) -> Vec<T> {
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    items.into_iter().skip(offset).take(limit).collect()
}

/// Drops repeated items, keeping the first of each.
pub(super) fn dedup_in_order<T: PartialEq + Clone>(items: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(items.len());
    items.retain(|item| {
        if seen.contains(item) {
            false
        } else {
            seen.push(item.clone());
            true
        }
    });
}
