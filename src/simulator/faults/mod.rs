//! Fault injection: the rules and the fate of each request.
//!
//! Rules are set at start-up ([`super::SimOptions::faults`], `simulate --faults`/`--fault-share`)
//! or at run time (`POST /_sim/faults`, `DELETE /_sim/faults`). Each rule targets one API (or all),
//! fires for a share of the requests (seeded RNG, so a run is repeatable for a given order of
//! requests), optionally only for the next `count` requests or for a period. The bodies of faulty
//! answers are made in `bodies`.

mod bodies;

use std::sync::Mutex;
use std::time::Duration;

use fastrand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub(crate) use bodies::{emptied, error_body, oversized_chunks, wrong_shape};

/// The API names faults can target, as the exporter's `api` label names them.
pub const APIS: [&str; 8] = [
    "v3_status",
    "v5_status",
    "run_detail",
    "run_list",
    "pipeline_list",
    "iam_token",
    "iam_projects",
    "repo_commit",
];

/// How long a `timeout` fault holds the request by default (longer than any sane client time-out).
const DEFAULT_HANG_MS: u64 = 30_000;
/// Size of an `oversized` answer by default: 300 MB, as a misbehaving proxy could send.
const DEFAULT_OVERSIZED_BYTES: u64 = 300_000_000;

/// Which API a request is for, from its method and path; `None` for anything else.
pub(crate) fn api_of(method: &str, path: &str) -> Option<&'static str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["v3", "auth", "tokens"]) => Some("iam_token"),
        ("GET", ["v3", "projects"]) => Some("iam_projects"),
        ("GET", ["v3", "pipelines", "status"]) => Some("v3_status"),
        ("POST", ["v5", _, "api", "pipelines", "status"]) => Some("v5_status"),
        ("POST", ["v5", _, "api", "pipelines", "list"]) => Some("pipeline_list"),
        ("GET", ["v5", _, "api", "pipelines", _, "pipeline-runs", "detail"]) => Some("run_detail"),
        ("POST", ["v5", _, "api", "pipelines", _, "pipeline-runs", "list"]) => Some("run_list"),
        ("GET", ["v4", "repositories", _, "repository", "commits"]) => Some("repo_commit"),
        _ => None,
    }
}

/// What a rule does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answers normally after `latency_ms` more.
    Latency,
    /// Answers `status` (500, 502 or 503; default 503) with an error body.
    Error,
    /// Answers 429, with `Retry-After` when `retry_after` is set.
    Throttle,
    /// Holds the request for `latency_ms` (default 30 s), then answers 504.
    Timeout,
    /// Sends the headers and half the body, then closes the connection.
    Drop,
    /// Answers 200 with the body cut in half (invalid JSON).
    Malformed,
    /// Answers valid JSON of the wrong shape (an array wrapped in an object, an object in an array).
    WrongShape,
    /// Answers an empty result: `[]`, or the object with its lists emptied and `total` 0.
    Empty,
    /// Answers 401 "credentials expired".
    Unauthorized,
    /// Answers 200 with a body of `bytes` bytes (default 300 MB), a JSON string made as it is
    /// sent; chunked, or with its `Content-Length` when `content_length` is set.
    Oversized,
}

impl FaultKind {
    /// Every kind, in documentation order.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Latency,
        FaultKind::Error,
        FaultKind::Throttle,
        FaultKind::Timeout,
        FaultKind::Drop,
        FaultKind::Malformed,
        FaultKind::WrongShape,
        FaultKind::Empty,
        FaultKind::Unauthorized,
        FaultKind::Oversized,
    ];
}

/// How `Retry-After` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfterForm {
    /// Delay in seconds: `Retry-After: 2`.
    #[default]
    Seconds,
    /// An HTTP date that many seconds from now.
    Date,
}

/// One fault rule, as written in JSON.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// API name (see [`APIS`]); absent or `"*"`: every API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// What to do.
    pub kind: FaultKind,
    /// Probability that a matching request is hit, 0 to 1.
    #[serde(default = "one")]
    pub share: f64,
    /// Only the next `count` hits, then the rule retires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Only for this long after the rule is set, e.g. `"5s"`.
    #[serde(
        default,
        rename = "for",
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub period: Option<Duration>,
    /// Status of an `error` fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` of a `throttle` fault, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// How `Retry-After` is written.
    #[serde(default)]
    pub retry_after_form: RetryAfterForm,
    /// Added delay (`latency`), or how long a `timeout` holds the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Size of an `oversized` body in bytes (default 300 MB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Whether an `oversized` answer announces its `Content-Length` (default: chunked, without).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub content_length: bool,
}

fn one() -> f64 {
    1.0
}

impl FaultRule {
    /// A rule of `kind` on every API hitting `share` of the requests.
    pub fn new(kind: FaultKind, share: f64) -> FaultRule {
        FaultRule {
            api: None,
            kind,
            share,
            count: None,
            period: None,
            status: None,
            retry_after: None,
            retry_after_form: RetryAfterForm::Seconds,
            latency_ms: None,
            bytes: None,
            content_length: false,
        }
    }

    fn matches(&self, api: &str) -> bool {
        self.api.as_deref().is_none_or(|a| a == "*" || a == api)
    }

    /// Checks the values; the message names the field.
    fn validate(&self) -> Result<(), String> {
        if let Some(api) = &self.api
            && api != "*"
            && !APIS.contains(&api.as_str())
        {
            return Err(format!(
                "api: unknown API {api:?}, expected one of {APIS:?}"
            ));
        }
        if !(0.0..=1.0).contains(&self.share) {
            return Err(format!("share: {} is not between 0 and 1", self.share));
        }
        if let Some(status) = self.status {
            if self.kind != FaultKind::Error {
                return Err("status: only for kind \"error\"".into());
            }
            if !(500..=599).contains(&status) {
                return Err(format!("status: {status} is not a 5xx status"));
            }
        }
        if self.retry_after.is_some() && self.kind != FaultKind::Throttle {
            return Err("retry_after: only for kind \"throttle\"".into());
        }
        if self.bytes.is_some() && self.kind != FaultKind::Oversized {
            return Err("bytes: only for kind \"oversized\"".into());
        }
        if self.content_length && self.kind != FaultKind::Oversized {
            return Err("content_length: only for kind \"oversized\"".into());
        }
        Ok(())
    }
}

/// A set of rules, as `POST /_sim/faults` and `simulate --faults` take it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Seed of the RNG that decides which requests are hit (default: the simulator's seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Rules; the first non-latency rule that hits a request decides its fate.
    #[serde(default)]
    pub faults: Vec<FaultRule>,
}

impl FaultSpec {
    /// Parses and checks a spec from JSON.
    pub fn from_json(text: &[u8]) -> Result<FaultSpec, String> {
        let spec: FaultSpec = serde_json::from_slice(text).map_err(|err| err.to_string())?;
        for (index, rule) in spec.faults.iter().enumerate() {
            rule.validate()
                .map_err(|problem| format!("faults[{index}].{problem}"))?;
        }
        Ok(spec)
    }

    /// `share` of all requests hit by a fault, spread evenly over every kind but latency and
    /// oversized: 500, 502 and 503 errors, 429 with and without `Retry-After` (seconds and date), a
    /// time-out (held `hang`), a dropped connection, malformed JSON, the wrong shape, an empty
    /// answer and 401. Oversized answers are left out so that the soak's and the benchmarks'
    /// figures stay comparable with those measured before the kind existed.
    pub fn mix(share: f64, hang: Duration) -> FaultSpec {
        let hang_ms = u64::try_from(hang.as_millis()).unwrap_or(u64::MAX);
        let mut rules = Vec::new();
        for status in [500, 502, 503] {
            rules.push(FaultRule {
                status: Some(status),
                ..FaultRule::new(FaultKind::Error, 0.0)
            });
        }
        for (retry_after, form) in [
            (None, RetryAfterForm::Seconds),
            (Some(1), RetryAfterForm::Seconds),
            (Some(2), RetryAfterForm::Date),
        ] {
            rules.push(FaultRule {
                retry_after,
                retry_after_form: form,
                ..FaultRule::new(FaultKind::Throttle, 0.0)
            });
        }
        rules.push(FaultRule {
            latency_ms: Some(hang_ms),
            ..FaultRule::new(FaultKind::Timeout, 0.0)
        });
        for kind in [
            FaultKind::Drop,
            FaultKind::Malformed,
            FaultKind::WrongShape,
            FaultKind::Empty,
            FaultKind::Unauthorized,
        ] {
            rules.push(FaultRule::new(kind, 0.0));
        }
        let each = share.clamp(0.0, 1.0) / rules.len() as f64;
        for rule in &mut rules {
            rule.share = each;
        }
        FaultSpec {
            seed: None,
            faults: rules,
        }
    }
}

/// What happens to one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// An error status with the vendor's error body.
    Status(u16),
    /// 429, with `Retry-After` (seconds, form) when set.
    Throttle(Option<(u64, RetryAfterForm)>),
    /// No answer for this long, then 504.
    Timeout(Duration),
    /// Half the body, then the connection closes.
    Drop,
    /// The body cut in half.
    Malformed,
    /// Valid JSON of the wrong shape.
    WrongShape,
    /// An empty result.
    Empty,
    /// 401.
    Unauthorized,
    /// 200 with a body of this many bytes; `Content-Length` announced when `content_length`.
    Oversized { bytes: u64, content_length: bool },
}

impl Effect {
    /// The kind, for the request log.
    pub(crate) fn kind(&self) -> FaultKind {
        match self {
            Effect::Status(_) => FaultKind::Error,
            Effect::Throttle(_) => FaultKind::Throttle,
            Effect::Timeout(_) => FaultKind::Timeout,
            Effect::Drop => FaultKind::Drop,
            Effect::Malformed => FaultKind::Malformed,
            Effect::WrongShape => FaultKind::WrongShape,
            Effect::Empty => FaultKind::Empty,
            Effect::Unauthorized => FaultKind::Unauthorized,
            Effect::Oversized { .. } => FaultKind::Oversized,
        }
    }
}

/// The fate of one request: extra latency and at most one effect.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Decision {
    pub latency: Duration,
    pub effect: Option<Effect>,
}

struct ActiveRule {
    rule: FaultRule,
    set_at_ms: i64,
    remaining: Option<u64>,
    hits: u64,
}

impl ActiveRule {
    fn live(&self, now_ms: i64) -> bool {
        let in_period = self.rule.period.is_none_or(|period| {
            let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
            now_ms < self.set_at_ms.saturating_add(period_ms)
        });
        in_period && self.remaining != Some(0)
    }

    fn hit(&mut self) {
        self.hits += 1;
        if let Some(left) = self.remaining.as_mut() {
            *left = left.saturating_sub(1);
        }
    }
}

struct State {
    rules: Vec<ActiveRule>,
    rng: Rng,
}

/// The fault rules in force.
pub(crate) struct Faults {
    default_seed: u64,
    state: Mutex<State>,
}

impl Faults {
    /// Rules of `spec`, set at `now_ms`.
    pub(crate) fn new(spec: &FaultSpec, default_seed: u64, now_ms: i64) -> Faults {
        let faults = Faults {
            default_seed,
            state: Mutex::new(State {
                rules: Vec::new(),
                rng: Rng::with_seed(default_seed),
            }),
        };
        faults.set(spec, now_ms);
        faults
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the rules and reseeds the RNG.
    pub(crate) fn set(&self, spec: &FaultSpec, now_ms: i64) {
        let mut state = self.lock();
        state.rng = Rng::with_seed(spec.seed.unwrap_or(self.default_seed));
        state.rules = spec
            .faults
            .iter()
            .map(|rule| ActiveRule {
                rule: rule.clone(),
                set_at_ms: now_ms,
                remaining: rule.count,
                hits: 0,
            })
            .collect();
    }

    /// The rules with how often each hit and whether it is still live.
    pub(crate) fn describe(&self, now_ms: i64) -> Value {
        let state = self.lock();
        let rules: Vec<Value> = state
            .rules
            .iter()
            .map(|active| {
                json!({
                    "rule": active.rule,
                    "hits": active.hits,
                    "live": active.live(now_ms),
                })
            })
            .collect();
        json!({ "faults": rules })
    }

    /// Decides the fate of a request to `api` arriving at `now_ms`.
    ///
    /// Latency rules add up, each with its own draw. The other rules share one draw: they take
    /// consecutive slices of [0, 1) as wide as their share, so shares add up exactly.
    pub(crate) fn decide(&self, api: &str, now_ms: i64) -> Decision {
        let mut state = self.lock();
        let State { rules, rng } = &mut *state;
        let mut decision = Decision::default();
        for active in rules.iter_mut() {
            if active.rule.kind != FaultKind::Latency
                || !active.rule.matches(api)
                || !active.live(now_ms)
            {
                continue;
            }
            if rng.f64() < active.rule.share {
                active.hit();
                decision.latency += Duration::from_millis(active.rule.latency_ms.unwrap_or(0));
            }
        }
        let mut candidates = rules.iter_mut().filter(|active| {
            active.rule.kind != FaultKind::Latency
                && active.rule.matches(api)
                && active.live(now_ms)
        });
        let Some(first) = candidates.next() else {
            return decision;
        };
        let draw = rng.f64();
        let mut edge = 0.0;
        for active in std::iter::once(first).chain(candidates) {
            edge += active.rule.share;
            if draw < edge {
                active.hit();
                decision.effect = Some(effect_of(&active.rule));
                break;
            }
        }
        decision
    }
}

fn effect_of(rule: &FaultRule) -> Effect {
    match rule.kind {
        FaultKind::Error => Effect::Status(rule.status.unwrap_or(503)),
        FaultKind::Throttle => {
            Effect::Throttle(rule.retry_after.map(|s| (s, rule.retry_after_form)))
        }
        FaultKind::Timeout => Effect::Timeout(Duration::from_millis(
            rule.latency_ms.unwrap_or(DEFAULT_HANG_MS),
        )),
        FaultKind::Drop => Effect::Drop,
        FaultKind::Malformed => Effect::Malformed,
        FaultKind::WrongShape => Effect::WrongShape,
        FaultKind::Empty => Effect::Empty,
        FaultKind::Oversized => Effect::Oversized {
            bytes: rule.bytes.unwrap_or(DEFAULT_OVERSIZED_BYTES),
            content_length: rule.content_length,
        },
        FaultKind::Unauthorized | FaultKind::Latency => Effect::Unauthorized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> FaultSpec {
        FaultSpec::from_json(text.as_bytes()).expect("valid spec")
    }

    #[test]
    fn apis_are_recognised_by_method_and_path() {
        let p = "0123456789abcdef0123456789abcdef";
        assert_eq!(api_of("POST", "/v3/auth/tokens"), Some("iam_token"));
        assert_eq!(api_of("GET", "/v3/pipelines/status"), Some("v3_status"));
        assert_eq!(
            api_of("POST", &format!("/v5/{p}/api/pipelines/status")),
            Some("v5_status")
        );
        assert_eq!(
            api_of("POST", &format!("/v5/{p}/api/pipelines/list")),
            Some("pipeline_list")
        );
        assert_eq!(
            api_of(
                "GET",
                &format!("/v5/{p}/api/pipelines/{p}/pipeline-runs/detail")
            ),
            Some("run_detail")
        );
        assert_eq!(
            api_of(
                "POST",
                &format!("/v5/{p}/api/pipelines/{p}/pipeline-runs/list")
            ),
            Some("run_list")
        );
        assert_eq!(
            api_of("GET", "/v4/repositories/2111677704/repository/commits"),
            Some("repo_commit")
        );
        assert_eq!(api_of("GET", "/_sim/truth"), None);
        assert_eq!(api_of("GET", "/v3/auth/tokens"), None);
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        for (text, needle) in [
            (
                r#"{"faults":[{"kind":"error","api":"nope"}]}"#,
                "faults[0].api",
            ),
            (
                r#"{"faults":[{"kind":"error","share":2}]}"#,
                "faults[0].share",
            ),
            (
                r#"{"faults":[{"kind":"error","status":404}]}"#,
                "faults[0].status",
            ),
            (
                r#"{"faults":[{"kind":"drop","retry_after":3}]}"#,
                "retry_after",
            ),
            (
                r#"{"faults":[{"kind":"error","bytes":3}]}"#,
                "faults[0].bytes",
            ),
            (
                r#"{"faults":[{"kind":"drop","content_length":true}]}"#,
                "faults[0].content_length",
            ),
            (r#"{"faults":[{"kind":"boom"}]}"#, "unknown variant"),
            (
                r#"{"faults":[{"kind":"drop","colour":1}]}"#,
                "unknown field",
            ),
        ] {
            let err = FaultSpec::from_json(text.as_bytes()).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn count_limited_rules_hit_exactly_the_next_requests_of_their_api() {
        let faults = Faults::new(
            &spec(
                r#"{"faults":[{"api":"v5_status","kind":"throttle","count":2,"retry_after":3}]}"#,
            ),
            1,
            0,
        );
        assert_eq!(faults.decide("run_list", 1), Decision::default());
        for _ in 0..2 {
            assert_eq!(
                faults.decide("v5_status", 1).effect,
                Some(Effect::Throttle(Some((3, RetryAfterForm::Seconds))))
            );
        }
        assert_eq!(faults.decide("v5_status", 1).effect, None);
        assert_eq!(faults.describe(1)["faults"][0]["hits"], 2);
    }

    #[test]
    fn periods_end() {
        let faults = Faults::new(
            &spec(r#"{"faults":[{"kind":"unauthorized","for":"2s"}]}"#),
            1,
            1_000,
        );
        assert_eq!(
            faults.decide("iam_token", 2_999).effect,
            Some(Effect::Unauthorized)
        );
        assert_eq!(faults.decide("iam_token", 3_000).effect, None);
    }

    #[test]
    fn shares_add_up_and_are_repeatable_for_a_seed() {
        let run = || {
            let faults = Faults::new(&FaultSpec::mix(0.2, Duration::from_secs(1)), 7, 0);
            (0..20_000)
                .map(|_| faults.decide("v5_status", 0).effect.map(|e| e.kind()))
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        let hit = first.iter().filter(|e| e.is_some()).count() as f64 / first.len() as f64;
        assert!((0.18..0.22).contains(&hit), "{hit}");
        for kind in FaultKind::ALL {
            let in_the_mix = !matches!(kind, FaultKind::Latency | FaultKind::Oversized);
            assert_eq!(first.contains(&Some(kind)), in_the_mix, "{kind:?}");
        }
    }

    #[test]
    fn latency_adds_to_other_faults() {
        let faults = Faults::new(
            &spec(
                r#"{"faults":[{"kind":"latency","latency_ms":40},{"kind":"latency","latency_ms":2},
                    {"kind":"error","status":502}]}"#,
            ),
            1,
            0,
        );
        let decision = faults.decide("run_detail", 0);
        assert_eq!(decision.latency, Duration::from_millis(42));
        assert_eq!(decision.effect, Some(Effect::Status(502)));
        faults.set(&FaultSpec::default(), 0);
        assert_eq!(faults.decide("run_detail", 0), Decision::default());
    }

    #[test]
    fn oversized_rules_default_to_300_mb_chunked() {
        let faults = Faults::new(
            &spec(
                r#"{"faults":[{"api":"v5_status","kind":"oversized","count":1},
                    {"api":"run_list","kind":"oversized","bytes":5000,"content_length":true}]}"#,
            ),
            1,
            0,
        );
        assert_eq!(
            faults.decide("v5_status", 0).effect,
            Some(Effect::Oversized {
                bytes: 300_000_000,
                content_length: false
            })
        );
        assert_eq!(
            faults.decide("run_list", 0).effect,
            Some(Effect::Oversized {
                bytes: 5000,
                content_length: true
            })
        );
    }

    proptest::proptest! {
        /// Any body posted to `/_sim/faults` is a spec or a message, never a panic.
        #[test]
        fn any_spec_text_is_accepted_or_refused(text in "\\PC{0,200}", share in -1.0f64..2.0) {
            let _ = FaultSpec::from_json(text.as_bytes());
            let spec = format!(r#"{{"faults":[{{"kind":"error","share":{share}}}]}}"#);
            let parsed = FaultSpec::from_json(spec.as_bytes());
            proptest::prop_assert_eq!(parsed.is_ok(), (0.0..=1.0).contains(&share));
        }
    }
}
