//! The Grafana dashboards and the alerting rules against a real Prometheus that scrapes the
//! exporter in demo mode.
//!
//! Needs `prometheus` and `promtool` on PATH (`scripts/install-prometheus` installs them).
//!
//! Twice: with a Prometheus that stores classic histograms and loads `alerts.yml`, and with one
//! run with `--enable-feature=native-histograms`, which scrapes the protobuf format, stores the
//! pipeline and deployment histograms as native histograms only (no `_bucket`, `_sum`, `_count`
//! series) and loads `alerts-native.yml`. The dashboards are the same for both: their
//! `(native) or (classic)` queries must be non-empty on each.
//!
//! 1. `promtool check rules` and `promtool check config` pass on the shipped files.
//! 2. The demo (simulator + exporter) starts on loopback; a Prometheus made from
//!    `config/prometheus/prometheus.yml` (scrape and evaluation every second, the demo's address)
//!    scrapes it and loads the rule file.
//! 3. Every PromQL expression of the dashboards (panel targets and template variable queries) and
//!    of the alerting rules is evaluated through Prometheus' HTTP API (instant queries at "now"):
//!    - Grafana variables are substituted: `$__rate_interval` → 30s, `$__interval` → 15s,
//!      `$__range` → 5m, a custom variable → its current value, a query variable (`$project`,
//!      `$pipeline`, …, always used as `=~"$var"`) → `.+`. Grafana's `label_values(metric, label)`
//!      is evaluated as `group by (label) (metric)`, `query_result(q)` as `q`.
//!    - A dashboard query must parse and return a non-empty result.
//!    - An alert expression must parse. It is legitimately empty while the alert does not fire, so
//!      it is split at its top-level operators of the lowest precedence present (`or`, then
//!      `and`/`unless`, then comparisons; `on(…)`/`ignoring(…)`/`group_left(…)`/`bool` modifiers
//!      skipped), recursively, and every operand that is not a number literal must be non-empty:
//!      `a > on(x) group_left() 1.5 * b and on(x) c >= 20` requires `a`, `1.5 * b` and `c`.
//!      `absent(v)` requires `v`. The expressions are the ones Prometheus loaded
//!      (`/api/v1/rules`), whose evaluation health must be "ok".
//!    - Every recording rule is loaded and evaluates without error (the dashboards that read
//!      them must be non-empty as above).
//!
//!    Queries are retried until all pass or the deadline (the demo needs some seconds to produce
//!    failures, stage errors, …); the test then fails listing every query still empty or invalid.
//! 4. `promtool check metrics` finds no problem in the exporter's `/metrics`.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Proc;
use common::prometheus::{Prometheus, promtool, require_tool};
use serde_json::Value;

/// How long queries may stay empty while the demo produces data.
const DATA_DEADLINE: Duration = Duration::from_secs(90);

/// Grafana's built-in interval variables, as substituted here.
const BUILTINS: [(&str, &str); 3] = [
    ("__rate_interval", "30s"),
    ("__interval", "15s"),
    ("__range", "5m"),
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Writes the Prometheus configuration made from config/prometheus/prometheus.yml (scrape and
/// evaluation every second, the exporter at `exporter_addr`, the rule file `rules` of
/// config/prometheus in place of alerts.yml) and starts Prometheus on a free port with `args`.
fn start_prometheus(dir: &Path, exporter_addr: &str, rules: &str, args: &[&str]) -> Prometheus {
    let mut config =
        fs::read_to_string(repo("config/prometheus/prometheus.yml")).expect("read prometheus.yml");
    for (from, to) in [
        ("scrape_interval: 30s", "scrape_interval: 1s"),
        ("evaluation_interval: 30s", "evaluation_interval: 1s"),
        ("scrape_timeout: 10s", "scrape_timeout: 1s"),
        ("\"localhost:9732\"", &format!("\"{exporter_addr}\"")),
        (
            "rule_files:\n  - alerts.yml\n",
            &format!("rule_files:\n  - {rules}\n"),
        ),
    ] {
        assert!(
            config.contains(from),
            "config/prometheus/prometheus.yml no longer contains `{from}`: update this test"
        );
        config = config.replace(from, to);
    }
    fs::copy(repo(&rules_path(rules)), dir.join(rules))
        .unwrap_or_else(|err| panic!("copy {rules}: {err}"));
    Prometheus::start_with(dir, &config, args)
}

/// The path of the rule file `rules` in the repository.
fn rules_path(rules: &str) -> String {
    format!("config/prometheus/{rules}")
}

/// How many lines of the rule file `rules` start with `prefix` (`- alert:`, `- record:`).
fn rules_count(rules: &str, prefix: &str) -> usize {
    fs::read_to_string(repo(&rules_path(rules)))
        .unwrap_or_else(|err| panic!("read {rules}: {err}"))
        .lines()
        .filter(|line| line.trim_start().starts_with(prefix))
        .count()
}

/// The answer to an instant query.
enum Answer {
    /// Number of series (1 for a scalar or string).
    Rows(usize),
    /// Prometheus rejected the query.
    Invalid(String),
}

async fn query(client: &reqwest::Client, base: &str, promql: &str) -> Answer {
    let encoded = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
    let url = format!("{base}/api/v1/query?query={encoded}");
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(err) => return Answer::Invalid(format!("request failed: {err}")),
    };
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(err) => return Answer::Invalid(format!("bad answer: {err}")),
    };
    if body["status"] != "success" {
        return Answer::Invalid(format!("{}: {}", body["errorType"], body["error"]));
    }
    match body["data"]["resultType"].as_str() {
        Some("vector") | Some("matrix") => {
            Answer::Rows(body["data"]["result"].as_array().map_or(0, Vec::len))
        }
        _ => Answer::Rows(1),
    }
}

/// One expression to check and where it comes from.
#[derive(Debug, Clone)]
struct Check {
    source: String,
    /// Sent to Prometheus; must parse.
    promql: String,
    /// Must each return at least one series.
    non_empty: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------------------------

/// `label_values(metric, label)` / `label_values(label)` / `query_result(q)` as PromQL.
fn variable_query_as_promql(text: &str) -> String {
    let text = text.trim();
    if let Some(args) = text
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return match split_last_top_level_comma(args) {
            Some((metric, label)) => format!("group by ({}) ({})", label.trim(), metric.trim()),
            None => format!("group by ({0}) ({{{0}!=\"\"}})", args.trim()),
        };
    }
    if let Some(inner) = text
        .strip_prefix("query_result(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return inner.to_string();
    }
    text.to_string()
}

/// Splits at the last comma outside braces, parentheses and strings.
fn split_last_top_level_comma(text: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut found = None;
    for (index, c) in text.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => found = Some(index),
            _ => {}
        }
    }
    found.map(|index| (&text[..index], &text[index + 1..]))
}

/// Replaces `$name`, `${name}` and `${name:format}` with `value_of(name)`.
fn substitute(text: &str, value_of: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let name = braced[..end].split(':').next().unwrap_or_default();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value =
            value_of(name).ok_or_else(|| format!("unknown variable ${name} in {text:?}"))?;
        out.push_str(&value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

fn collect_panels<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
    for panel in panels {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            collect_panels(nested, out);
        }
    }
}

/// Every expression of every dashboard, variables substituted.
fn dashboard_checks() -> Vec<Check> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo("grafana/dashboards"))
        .expect("grafana/dashboards")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected the four dashboards in grafana/dashboards, found {files:?}"
    );

    let mut checks = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let dashboard: Value =
            serde_json::from_str(&fs::read_to_string(&file).expect("read dashboard"))
                .unwrap_or_else(|err| panic!("{name} is not JSON: {err}"));
        assert!(
            dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 39,
            "{name}: schemaVersion below 39"
        );
        let variables = dashboard["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            variables.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{name}: no `datasource` variable of type prometheus"
        );
        let value_of = |var: &str| -> Option<String> {
            if let Some((_, value)) = BUILTINS.iter().find(|(builtin, _)| *builtin == var) {
                return Some(value.to_string());
            }
            let variable = variables.iter().find(|v| v["name"] == var)?;
            match variable["type"].as_str()? {
                "query" => Some(".+".to_string()),
                "custom" | "constant" | "textbox" | "interval" => {
                    let current = &variable["current"]["value"];
                    current.as_str().map(str::to_string).or_else(|| {
                        current
                            .as_array()
                            .and_then(|values| values.first())
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                }
                _ => None,
            }
        };

        for variable in &variables {
            if variable["type"] != "query" {
                continue;
            }
            assert_eq!(
                variable["datasource"]["uid"], "${datasource}",
                "{name}: variable {} does not use the ${{datasource}} variable",
                variable["name"]
            );
            let text = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .unwrap_or_else(|| panic!("{name}: variable {} has no query", variable["name"]));
            let source = format!(
                "{name}: variable ${}",
                variable["name"].as_str().unwrap_or("?")
            );
            let promql = substitute(&variable_query_as_promql(text), &value_of)
                .unwrap_or_else(|err| panic!("{source}: {err}"));
            checks.push(Check {
                source,
                non_empty: vec![promql.clone()],
                promql,
            });
        }

        let mut panels = Vec::new();
        collect_panels(
            dashboard["panels"]
                .as_array()
                .map_or(&[][..], Vec::as_slice),
            &mut panels,
        );
        let mut seen_ids = std::collections::BTreeSet::new();
        for panel in panels {
            assert!(
                seen_ids.insert(panel["id"].as_u64()),
                "{name}: duplicate panel id {}",
                panel["id"]
            );
            if panel["type"] == "row" {
                continue;
            }
            let title = panel["title"].as_str().unwrap_or("?");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name}: panel {title:?} does not use the ${{datasource}} variable"
            );
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{name}: panel {title:?} has no query");
            for target in targets {
                let refid = target["refId"].as_str().unwrap_or("?");
                let source = format!("{name}: panel {title:?} query {refid}");
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{source}: does not use the ${{datasource}} variable"
                );
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{source}: no expr"));
                let promql =
                    substitute(expr, &value_of).unwrap_or_else(|err| panic!("{source}: {err}"));
                checks.push(Check {
                    source,
                    non_empty: vec![promql.clone()],
                    promql,
                });
            }
        }
    }
    checks
}

// ---------------------------------------------------------------------------------------------
// Alert rules: which parts of an expression must be non-empty
// ---------------------------------------------------------------------------------------------

/// Precedence class of a top-level binary operator that may filter: lower binds looser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Or,
    AndUnless,
    Comparison,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Byte ranges of the top-level (outside brackets and strings) filtering operators.
fn top_level_operators(expr: &str) -> Vec<(usize, usize, Level)> {
    let bytes = expr.as_bytes();
    let mut ops = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == b'\\' && q != b'`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            _ if depth == 0 => {
                let two = &expr[i..(i + 2).min(expr.len())];
                if matches!(two, "==" | "!=" | ">=" | "<=") {
                    ops.push((i, i + 2, Level::Comparison));
                    i += 2;
                    continue;
                }
                if c == b'>' || c == b'<' {
                    ops.push((i, i + 1, Level::Comparison));
                } else if c.is_ascii_alphabetic() && (i == 0 || !is_ident(bytes[i - 1] as char)) {
                    let end = expr[i..]
                        .find(|ch: char| !is_ident(ch))
                        .map_or(expr.len(), |n| i + n);
                    let level = match &expr[i..end] {
                        "or" => Some(Level::Or),
                        "and" | "unless" => Some(Level::AndUnless),
                        _ => None,
                    };
                    if let Some(level) = level {
                        ops.push((i, end, level));
                    }
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    ops
}

/// Removes parentheses around the whole expression.
fn strip_outer_parens(expr: &str) -> &str {
    let mut expr = expr.trim();
    while expr.starts_with('(') && expr.ends_with(')') {
        // The opening parenthesis must close at the very end.
        let mut depth = 0;
        let mut closes_at_end = true;
        for (index, c) in expr.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 && index != expr.len() - 1 {
                        closes_at_end = false;
                        break;
                    }
                }
                _ => {}
            }
        }
        if !closes_at_end {
            break;
        }
        expr = expr[1..expr.len() - 1].trim();
    }
    expr
}

/// Skips `bool`, `on(…)`/`ignoring(…)` and `group_left(…)`/`group_right(…)` after an operator.
fn skip_modifiers(operand: &str) -> &str {
    let mut rest = operand.trim_start();
    loop {
        let word_end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        let word = &rest[..word_end];
        if !matches!(
            word,
            "bool" | "on" | "ignoring" | "group_left" | "group_right"
        ) {
            return rest;
        }
        rest = rest[word_end..].trim_start();
        if word != "bool" && rest.starts_with('(') {
            let close = rest.find(')').expect("closing parenthesis of a label list");
            rest = rest[close + 1..].trim_start();
        }
    }
}

/// The sub-expressions of an alert expression that must be non-empty (see the module doc).
fn must_be_non_empty(expr: &str) -> Vec<String> {
    let expr = strip_outer_parens(expr);
    if let Some(inner) = expr
        .strip_prefix("absent(")
        .and_then(|rest| rest.strip_suffix(')'))
        && strip_outer_parens(&format!("({inner})")) == inner.trim()
    {
        return must_be_non_empty(inner);
    }
    let ops = top_level_operators(expr);
    let Some(lowest) = ops.iter().map(|(_, _, level)| *level).min() else {
        return vec![expr.to_string()];
    };
    let mut operands = Vec::new();
    let mut start = 0;
    for (from, to, level) in ops {
        if level == lowest {
            operands.push(&expr[start..from]);
            start = to;
        }
    }
    operands.push(&expr[start..]);
    operands
        .into_iter()
        .map(skip_modifiers)
        .filter(|operand| operand.trim().parse::<f64>().is_err())
        .flat_map(must_be_non_empty)
        .collect()
}

/// Every alerting rule Prometheus loaded; asserts it loaded all of the rule file `rules` and
/// evaluates them without error.
async fn rule_checks(client: &reqwest::Client, base: &str, rules: &str) -> Vec<Check> {
    let expected = rules_count(rules, "- alert:");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (body, loaded) = loaded_rules(client, base, "alerting").await;
        let evaluated = loaded.iter().all(|rule| rule["health"] != "unknown");
        if loaded.len() == expected && evaluated {
            let mut checks = Vec::new();
            for rule in loaded {
                let name = rule["name"].as_str().unwrap_or("?");
                assert_eq!(
                    rule["health"], "ok",
                    "rule {name} fails to evaluate: {}",
                    rule["lastError"]
                );
                let promql = rule["query"].as_str().expect("query").to_string();
                checks.push(Check {
                    source: format!("{rules}: {name}"),
                    non_empty: must_be_non_empty(&promql),
                    promql,
                });
            }
            return checks;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus loaded {} alerting rules of {rules} (expected {expected}) or has not evaluated them: {body}",
            loaded.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The rules of `kind` ("alerting" or "recording") Prometheus has loaded, with its whole answer.
async fn loaded_rules(client: &reqwest::Client, base: &str, kind: &str) -> (Value, Vec<Value>) {
    let body: Value = client
        .get(format!("{base}/api/v1/rules"))
        .send()
        .await
        .expect("GET /api/v1/rules")
        .json()
        .await
        .expect("rules json");
    let rules = body["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .filter(|rule| rule["type"] == kind)
        .collect();
    (body, rules)
}

/// Asserts that Prometheus loaded every recording rule of the rule file `rules` and that none
/// fails to evaluate. The 30-day group runs every 5 minutes and may not have run yet ("unknown").
async fn check_recording_rules(client: &reqwest::Client, base: &str, rules: &str) {
    let expected = rules_count(rules, "- record:");
    let (_, loaded) = loaded_rules(client, base, "recording").await;
    assert_eq!(
        loaded.len(),
        expected,
        "Prometheus loaded {} recording rules, {rules} has {expected}",
        loaded.len()
    );
    for rule in &loaded {
        assert_ne!(
            rule["health"], "err",
            "recording rule {} fails to evaluate: {}",
            rule["name"], rule["lastError"]
        );
    }
}

/// Problems left: one line per expression invalid or empty.
async fn failures(client: &reqwest::Client, base: &str, checks: &[Check]) -> Vec<String> {
    let mut problems = Vec::new();
    for check in checks {
        if let Answer::Invalid(error) = query(client, base, &check.promql).await {
            problems.push(format!(
                "{}: INVALID {error}\n    {}",
                check.source, check.promql
            ));
            continue;
        }
        for part in &check.non_empty {
            match query(client, base, part).await {
                Answer::Rows(0) => problems.push(format!("{}: EMPTY\n    {part}", check.source)),
                Answer::Rows(_) => {}
                Answer::Invalid(error) => {
                    problems.push(format!("{}: INVALID {error}\n    {part}", check.source))
                }
            }
        }
    }
    problems
}

#[test]
fn the_alert_expression_splitter_finds_the_operands() {
    assert_eq!(must_be_non_empty("up{job=\"x\"} == 0"), ["up{job=\"x\"}"]);
    assert_eq!(
        must_be_non_empty("absent(up{job=\"x\"})"),
        ["up{job=\"x\"}"]
    );
    assert_eq!(must_be_non_empty("time() - ts > 600"), ["time() - ts"]);
    assert_eq!(
        must_be_non_empty("a and on(p, q) (b{r=\"error\"} == 1)"),
        ["a", "b{r=\"error\"}"]
    );
    assert_eq!(
        must_be_non_empty(
            "(a and on(p) (b == 1)) > on(p) group_left() 1.5 * h(0.95, c) and on(p) sum by(p) (d) >= 20"
        ),
        ["a", "b", "1.5 * h(0.95, c)", "sum by(p) (d)"]
    );
    assert_eq!(
        must_be_non_empty("(sum by(a) (x{c!~\"2..\"}) or sum by(a) (x) * 0) / sum by(a) (x) > 0.1"),
        ["(sum by(a) (x{c!~\"2..\"}) or sum by(a) (x) * 0) / sum by(a) (x)"]
    );
    assert_eq!(
        must_be_non_empty(
            "max by(p) (s{status=\"running\"}) == 1 unless on(p) (changes(n[15m]) > 0)"
        ),
        ["max by(p) (s{status=\"running\"})", "changes(n[15m])"]
    );
    assert_eq!(
        must_be_non_empty("sort_desc(x) >= bool 3"),
        ["sort_desc(x)"]
    );
    // CodeArtsStateErrors: the counter (every kind at 0 in the demo) and the process' age.
    assert_eq!(
        must_be_non_empty(
            "increase(e[15m]) > 0\nor\n(\n  e > 0\n  and on (job, instance)\n    (time() - p < 900)\n)\n"
        ),
        ["increase(e[15m])", "e", "time() - p"]
    );
}

#[test]
fn grafana_variable_queries_become_promql() {
    assert_eq!(
        variable_query_as_promql(
            "label_values(codearts_pipeline_status{project_id=~\"$project\"}, pipeline_name)"
        ),
        "group by (pipeline_name) (codearts_pipeline_status{project_id=~\"$project\"})"
    );
    assert_eq!(
        variable_query_as_promql("label_values(job)"),
        "group by (job) ({job!=\"\"})"
    );
    let value_of = |name: &str| (name == "x").then(|| "1".to_string());
    assert_eq!(
        substitute("a[$x] ${x} ${x:regex}", &value_of).as_deref(),
        Ok("a[1] 1 1")
    );
    assert!(substitute("$y", &value_of).is_err());
}

/// The histograms the exporter sends with native buckets, which a native-histogram Prometheus
/// stores as native histograms only.
const NATIVE_FAMILIES: [&str; 8] = [
    "codearts_pipeline_run_duration_seconds",
    "codearts_pipeline_stage_duration_seconds",
    "codearts_pipeline_job_duration_seconds",
    "codearts_pipeline_run_queue_seconds",
    "codearts_pipeline_run_pause_seconds",
    "codearts_pipeline_recovery_seconds",
    "codearts_deployment_lead_time_seconds",
    "codearts_deployment_recovery_seconds",
];

/// What differs between the classic and the native run.
struct Variant {
    /// The rule file of config/prometheus that Prometheus loads.
    rules: &'static str,
    /// More Prometheus arguments.
    args: &'static [&'static str],
    /// More expressions that must become non-empty, with the dashboards' and the rules'.
    checks: Vec<Check>,
    /// Expressions that must be empty once every check passes.
    empty: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_work_against_a_real_prometheus() {
    dashboards_and_alerts_work(Variant {
        rules: "alerts.yml",
        args: &[],
        checks: Vec::new(),
        empty: Vec::new(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_native_rules_work_against_a_prometheus_storing_native_histograms() {
    let native = |source: &str, promql: &str| Check {
        source: source.to_string(),
        promql: promql.to_string(),
        non_empty: vec![promql.to_string()],
    };
    let classic_series = format!(
        "{{__name__=~\"({})_(bucket|sum|count)\"}}",
        NATIVE_FAMILIES.join("|")
    );
    dashboards_and_alerts_work(Variant {
        rules: "alerts-native.yml",
        args: &["--enable-feature=native-histograms"],
        checks: vec![
            native(
                "the run duration is a native histogram",
                "histogram_count(codearts_pipeline_run_duration_seconds)",
            ),
            native(
                "the stage duration is a native histogram",
                "histogram_count(codearts_pipeline_stage_duration_seconds)",
            ),
            native(
                "the exporter's own histograms stay classic",
                "codearts_exporter_poll_duration_seconds_bucket",
            ),
        ],
        empty: vec![
            "codearts_pipeline_run_duration_seconds_bucket".to_string(),
            classic_series,
        ],
    })
    .await;
}

/// The module's checks against a Prometheus set up as `variant` says.
async fn dashboards_and_alerts_work(variant: Variant) {
    require_tool("promtool");
    require_tool("prometheus");
    let started = Instant::now();
    let rules = variant.rules;

    promtool(
        &[
            "check",
            "rules",
            repo(&rules_path(rules)).to_str().expect("path"),
        ],
        None,
    );
    for config in [
        "config/prometheus/prometheus.yml",
        "config/prometheus/prometheus-docker-compose.yml",
    ] {
        promtool(
            &["check", "config", repo(config).to_str().expect("path")],
            None,
        );
    }

    let checks = dashboard_checks();

    let (exporter, line) = Proc::start(&["demo", "--listen", "127.0.0.1:0"], &[], |line| {
        line.contains("metrics at http://")
    });
    let exporter_addr = line
        .split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("exporter address in the demo's line")
        .to_string();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut prometheus = start_prometheus(dir.path(), &exporter_addr, rules, variant.args);
    prometheus.wait_ready().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    let mut checks = checks;
    checks.extend(rule_checks(&client, &prometheus.url, rules).await);
    checks.extend(variant.checks);
    let parts: usize = checks.iter().map(|c| c.non_empty.len()).sum();
    eprintln!(
        "{rules}: checking {} expressions ({parts} non-empty parts)",
        checks.len()
    );

    let deadline = Instant::now() + DATA_DEADLINE;
    loop {
        let problems = failures(&client, &prometheus.url, &checks).await;
        if problems.is_empty() {
            break;
        }
        let invalid = problems.iter().any(|p| p.contains(": INVALID "));
        if invalid || Instant::now() >= deadline {
            panic!(
                "{rules}: {} of {} expressions fail after {:?}:\n{}\n\nexporter output:\n{}\n\nprometheus log:\n{}",
                problems.len(),
                checks.len(),
                started.elapsed(),
                problems.join("\n"),
                exporter.output(),
                prometheus.log()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "{rules}: all expressions non-empty after {:?}",
        started.elapsed()
    );
    check_recording_rules(&client, &prometheus.url, rules).await;
    for promql in &variant.empty {
        match query(&client, &prometheus.url, promql).await {
            Answer::Rows(0) => {}
            Answer::Rows(rows) => panic!("{rules}: {promql} has {rows} series, expected none"),
            Answer::Invalid(error) => panic!("{rules}: {promql}: {error}"),
        }
    }

    let (status, metrics) = common::get(&format!("http://{exporter_addr}/metrics")).await;
    assert_eq!(status, 200);
    let lint = promtool(&["check", "metrics"], Some(&metrics));
    assert!(
        lint.trim().is_empty(),
        "promtool check metrics reports problems:\n{lint}"
    );
    drop(prometheus);
    drop(exporter);
}

// ---------------------------------------------------------------------------------------------
// Scrapes over HTTPS with basic auth and client certificates
// ---------------------------------------------------------------------------------------------

/// The value of `up` of each job Prometheus has scraped.
async fn up_by_job(
    client: &reqwest::Client,
    base: &str,
) -> std::collections::BTreeMap<String, String> {
    let url = format!("{base}/api/v1/query?query=up");
    let mut jobs = std::collections::BTreeMap::new();
    let Ok(response) = client.get(&url).send().await else {
        return jobs;
    };
    let Ok(body) = response.json::<Value>().await else {
        return jobs;
    };
    for series in body["data"]["result"].as_array().into_iter().flatten() {
        if let (Some(job), Some(value)) = (
            series["metric"]["job"].as_str(),
            series["value"][1].as_str(),
        ) {
            jobs.insert(job.to_string(), value.to_string());
        }
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_https_with_basic_auth_and_client_certificates() {
    require_tool("prometheus");
    require_tool("promtool");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = common::pki::Ca::new("test CA");
    ca.write_server_files(dir.path());
    let (client_cert, client_key) = ca.issue(&["prometheus"]);
    fs::write(dir.path().join("client.pem"), client_cert).expect("write client.pem");
    fs::write(dir.path().join("client-key.pem"), client_key).expect("write client-key.pem");

    // One exporter with basic auth; one that requires a client certificate of the CA.
    let basic_dir = dir.path().join("basic");
    let cert_dir = dir.path().join("cert");
    for sub in [&basic_dir, &cert_dir] {
        fs::create_dir(sub).expect("mkdir");
        for file in ["ca.pem", "server.pem", "server-key.pem"] {
            fs::copy(dir.path().join(file), sub.join(file)).expect("copy");
        }
    }
    let basic_web = common::pki::write_web_config(&basic_dir, "", Some(("prometheus", "s3cret")));
    let cert_web = common::pki::write_web_config(
        &cert_dir,
        "client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: ca.pem",
        None,
    );
    let (basic_exporter, basic_addr) = common::pki::start_secured_demo(&basic_web);
    let (cert_exporter, cert_addr) = common::pki::start_secured_demo(&cert_web);

    let d = dir.path().display();
    let job = |name: &str, addr: &str, extra: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {d}/ca.pem\n\
             {extra}    static_configs:\n      - targets: [\"{addr}\"]\n"
        )
    };
    // `extra` follows `ca_file`: indented by 6 it is more of `tls_config`, by 4 more of the job.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n{}{}{}{}",
        job(
            "basic_auth",
            &basic_addr,
            "    basic_auth:\n      username: prometheus\n      password: s3cret\n"
        ),
        job(
            "wrong_password",
            &basic_addr,
            "    basic_auth:\n      username: prometheus\n      password: wrong\n"
        ),
        job("no_client_cert", &cert_addr, ""),
        job(
            "client_cert",
            &cert_addr,
            &format!("      cert_file: {d}/client.pem\n      key_file: {d}/client-key.pem\n")
        ),
    );
    let mut prometheus = Prometheus::start(dir.path(), &config);
    prometheus.wait_ready().await;

    let client = reqwest::Client::new();
    let expected = [
        ("basic_auth", "1"),
        ("client_cert", "1"),
        ("no_client_cert", "0"),
        ("wrong_password", "0"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = up_by_job(&client, &prometheus.url).await;
        if expected
            .iter()
            .all(|(job, value)| up.get(*job).map(String::as_str) == Some(*value))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "up by job is {up:?}, expected {expected:?}\n\nprometheus log:\n{}\n\nexporters:\n{}\n{}",
            prometheus.log(),
            basic_exporter.output(),
            cert_exporter.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
