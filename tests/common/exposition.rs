//! The text exposition format, parsed into samples. One parser for every test that reads
//! `/metrics`: the integration tests (through `tests/common`) and the unit tests of
//! `src/store/series.rs` (through `#[path]`).

use std::collections::BTreeMap;

/// One sample of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series name (with `_bucket`/`_sum`/`_count` suffixes).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parses the text exposition format (as written by the prometheus crate).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => (name.to_string(), parse_labels(rest.trim_end_matches('}'))),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

#[test]
fn the_exposition_parser_reads_escapes_and_unicode() {
    let text = "# HELP x y\nx{a=\"1\",b=\"q\\\"uote 流水线\"} 2.5\ny 3\nz_bucket{le=\"+Inf\"} 4\n";
    let sample = |name: &str, labels: &[(&str, &str)], value: f64| Sample {
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    };
    assert_eq!(
        parse_metrics(text),
        [
            sample("x", &[("a", "1"), ("b", "q\"uote 流水线")], 2.5),
            sample("y", &[], 3.0),
            sample("z_bucket", &[("le", "+Inf")], 4.0),
        ]
    );
}

/// An exemplar of an OpenMetrics sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The value observed.
    pub value: f64,
    /// Its timestamp, seconds.
    pub timestamp: Option<f64>,
}

/// One sample of an OpenMetrics exposition, with its family and exemplar.
#[derive(Debug, Clone, PartialEq)]
pub struct OmSample {
    /// The family's name and type, as `# TYPE` declares them.
    pub family: (String, String),
    /// The sample.
    pub sample: Sample,
    /// Its exemplar.
    pub exemplar: Option<Exemplar>,
}

fn om_number(text: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad number {v:?}")),
    }
}

/// `{labels}` at the start of `text` (escapes undone), and what follows.
fn om_labels(text: &str) -> (BTreeMap<String, String>, &str) {
    let body = text.strip_prefix('{').expect("labels open with {");
    let mut labels = BTreeMap::new();
    let mut rest = body;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let rest_after_comma = rest.strip_prefix(',').unwrap_or(rest);
        let (name, after) = rest_after_comma.split_once("=\"").expect("label name=\"");
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name {name:?}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("label value closes") {
                (_, '\\') => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    other => panic!("bad escape \\{other}"),
                },
                (at, '"') => break at + 1,
                (_, '\n') => panic!("raw newline in a label value"),
                (_, other) => value.push(other),
            }
        };
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "label {name} twice"
        );
        rest = &after[end..];
    }
}

/// Parses an OpenMetrics exposition, panicking at anything Prometheus' strict parser would
/// reject (as far as the exporter can produce it): a missing or early `# EOF`, a family
/// declared twice, a counter family named with `_total`, a sample whose name does not fit its
/// family's type, an exemplar on another sample than a bucket or counter, an exemplar's labels
/// over 128 characters, a histogram without `+Inf`, `_count` or `_sum`, decreasing buckets, or
/// an exemplar whose value lies outside its bucket.
pub fn parse_openmetrics(text: &str) -> Vec<OmSample> {
    let body = text
        .strip_suffix("# EOF\n")
        .expect("an OpenMetrics exposition ends with # EOF and a newline");
    assert!(!body.contains("# EOF"), "# EOF before the end");
    let mut declared = std::collections::BTreeSet::new();
    let mut family: Option<(String, String)> = None;
    let mut samples = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(
                [
                    "counter",
                    "gauge",
                    "histogram",
                    "summary",
                    "unknown",
                    "info"
                ]
                .contains(&kind),
                "type {kind}"
            );
            assert!(
                !(kind == "counter" && name.ends_with("_total")),
                "counter family {name} named with _total"
            );
            assert!(declared.insert(name.to_string()), "family {name} twice");
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect("# HELP name text");
            assert!(
                !declared.contains(name) || family.as_ref().is_some_and(|f| f.0 == name),
                "HELP of {name} away from its family"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line:?}");
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => panic!("sample without value: {line:?}"),
        };
        let (labels, rest) = if rest.starts_with('{') {
            om_labels(rest)
        } else {
            (BTreeMap::new(), rest)
        };
        let rest = rest.strip_prefix(' ').expect("a space before the value");
        let (value_part, exemplar_part) = match rest.split_once(" # ") {
            Some((value, exemplar)) => (value, Some(exemplar)),
            None => (rest, None),
        };
        let value = om_number(value_part.split(' ').next().expect("value"));
        let (family_name, kind) = family
            .clone()
            .unwrap_or_else(|| panic!("{name} before any # TYPE"));
        let suffix = name
            .strip_prefix(family_name.as_str())
            .unwrap_or_else(|| panic!("{name} outside its family {family_name}"));
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "summary" => &["", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(
            allowed.contains(&suffix),
            "{name}: suffix {suffix:?} in a {kind}"
        );
        let exemplar = exemplar_part.map(|text| {
            assert!(
                suffix == "_bucket" || (kind == "counter" && suffix == "_total"),
                "exemplar on {name}"
            );
            let (labels, rest) = om_labels(text);
            let chars: usize = labels
                .iter()
                .map(|(k, v)| k.chars().count() + v.chars().count())
                .sum();
            assert!(chars <= 128, "exemplar labels of {chars} characters");
            let mut parts = rest.strip_prefix(' ').expect("exemplar value").split(' ');
            let value = om_number(parts.next().expect("exemplar value"));
            let timestamp = parts.next().map(om_number);
            assert!(parts.next().is_none(), "exemplar tail in {line:?}");
            Exemplar {
                labels,
                value,
                timestamp,
            }
        });
        samples.push(OmSample {
            family: (family_name, kind),
            sample: Sample {
                name: name.to_string(),
                labels,
                value,
            },
            exemplar,
        });
    }
    check_histograms(&samples);
    samples
}

/// Every histogram series has `+Inf`, `_count` (equal to it) and `_sum`, buckets that do not
/// decrease, and exemplars inside their buckets.
fn check_histograms(samples: &[OmSample]) {
    type Series = (String, Vec<(String, String)>);
    let mut buckets: BTreeMap<Series, Vec<(f64, f64, Option<f64>)>> = BTreeMap::new();
    let mut counts: BTreeMap<Series, f64> = BTreeMap::new();
    let mut sums = std::collections::BTreeSet::new();
    for s in samples.iter().filter(|s| s.family.1 == "histogram") {
        let mut labels = s.sample.labels.clone();
        let le = labels.remove("le");
        let key = (s.family.0.clone(), labels.into_iter().collect());
        match s.sample.name.strip_prefix(s.family.0.as_str()) {
            Some("_bucket") => {
                let le = om_number(&le.expect("a bucket has le"));
                let exemplar = s.exemplar.as_ref().map(|e| e.value);
                buckets
                    .entry(key)
                    .or_default()
                    .push((le, s.sample.value, exemplar));
            }
            Some("_count") => {
                counts.insert(key, s.sample.value);
            }
            Some("_sum") => {
                sums.insert(key);
            }
            _ => {}
        }
    }
    for (key, series) in &buckets {
        let mut previous = (f64::NEG_INFINITY, 0.0);
        for (le, count, exemplar) in series {
            assert!(
                *le > previous.0 && *count >= previous.1,
                "buckets of {key:?}"
            );
            if let Some(value) = exemplar {
                assert!(
                    *value <= *le && *value > previous.0,
                    "exemplar {value} outside bucket {le} of {key:?}"
                );
            }
            previous = (*le, *count);
        }
        assert_eq!(previous.0, f64::INFINITY, "no +Inf bucket in {key:?}");
        assert_eq!(counts.get(key), Some(&previous.1), "_count of {key:?}");
        assert!(sums.contains(key), "no _sum in {key:?}");
    }
}
