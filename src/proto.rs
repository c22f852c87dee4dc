//! The messages of Prometheus' protobuf exposition (package `io.prometheus.client`, the
//! `metrics.proto` of prometheus/client_model, proto2), declared for prost: prost encodes them,
//! nothing here writes the wire format. Only the fields the exporter sends are declared; a
//! decoder skips none it needs, since protobuf leaves out what a message does not declare.

/// A label's name and value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    /// The label name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The label value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

impl LabelPair {
    /// `name="value"`.
    pub fn new(name: &str, value: &str) -> LabelPair {
        LabelPair {
            name: Some(name.to_string()),
            value: Some(value.to_string()),
        }
    }
}

/// The type of a family's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// A counter: the `counter` field.
    Counter = 0,
    /// A gauge: the `gauge` field.
    Gauge = 1,
    /// A summary: the `summary` field.
    Summary = 2,
    /// Untyped (not written by the exporter).
    Untyped = 3,
    /// A histogram, classic buckets and/or native ones: the `histogram` field.
    Histogram = 4,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Timestamp {
    /// Whole seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds past `seconds`, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// The timestamp of `seconds` since the Unix epoch, to the nanosecond.
    pub fn from_unix_seconds(seconds: f64) -> Timestamp {
        let whole = seconds.floor();
        let nanos = ((seconds - whole) * 1e9).round().clamp(0.0, 999_999_999.0);
        Timestamp {
            seconds: whole as i64,
            nanos: nanos as i32,
        }
    }
}

/// A gauge's value.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Gauge {
    /// The value.
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// A counter's value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    /// The value.
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// One quantile of a summary.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Quantile {
    /// The quantile, 0 to 1.
    #[prost(double, optional, tag = "1")]
    pub quantile: Option<f64>,
    /// Its value.
    #[prost(double, optional, tag = "2")]
    pub value: Option<f64>,
}

/// A summary's count, sum and quantiles.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// Observations.
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    /// Their sum.
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    /// The quantiles.
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
}

/// The run behind a bucket: labels, the value observed, and when.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// `trace_id`, `run_id`.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// The value observed.
    #[prost(double, optional, tag = "2")]
    pub value: Option<f64>,
    /// When it was observed.
    #[prost(message, optional, tag = "3")]
    pub timestamp: Option<Timestamp>,
}

/// A classic bucket: observations up to `upper_bound`, cumulative.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    /// Observations at or below the bound.
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    /// The bound (`le`).
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
    /// The latest run observed in the bucket.
    #[prost(message, optional, tag = "3")]
    pub exemplar: Option<Exemplar>,
}

/// A run of consecutive native buckets: `offset` from the end of the previous span (from index
/// 0 for the first), and how many.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BucketSpan {
    /// Gap before the span, in buckets.
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    /// Buckets in the span.
    #[prost(uint32, optional, tag = "2")]
    pub length: Option<u32>,
}

/// A histogram: classic buckets, native buckets, or both.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// Observations.
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    /// Their sum.
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    /// Classic buckets, by increasing bound; `+Inf` left out (it is `sample_count`).
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    /// Native buckets' resolution: bucket `i` ends at 2^(i·2^-schema).
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    /// Observations of at most this magnitude count in the zero bucket.
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    /// The zero bucket's count.
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    /// Spans of the negative native buckets.
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    /// Their counts, each as the difference from the previous bucket's.
    #[prost(sint64, repeated, tag = "10")]
    pub negative_delta: Vec<i64>,
    /// Spans of the positive native buckets.
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Their counts, each as the difference from the previous bucket's.
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
}

/// One series (or one histogram or summary) of a family.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Its labels.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// A gauge's value.
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    /// A counter's value.
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    /// A summary's values.
    #[prost(message, optional, tag = "4")]
    pub summary: Option<Summary>,
    /// A histogram's values.
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

/// A family's name, help and type; its metrics follow as field 4 ([`METRIC_TAG`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    /// The family name (a counter's ends with `_total`).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The help text.
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    /// The type of its metrics.
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub r#type: Option<i32>,
    /// Its metrics.
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// The field number of [`MetricFamily::metric`]: the pipeline families' metrics are encoded
/// one at a time after the family's header, not gathered into one message first.
pub const METRIC_TAG: u32 = 4;

/// The `Content-Type` of the delimited protobuf exposition.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Writes a family to `out` as the exposition delimits it: its length, then the header of
/// `family` followed by `metrics`, each already encoded as field [`METRIC_TAG`].
pub fn write_delimited(
    out: &mut dyn std::io::Write,
    family: &MetricFamily,
    metrics: &[u8],
) -> std::io::Result<()> {
    use prost::Message;
    let header = family.encode_to_vec();
    let mut length = Vec::with_capacity(10);
    prost::encoding::encode_varint((header.len() + metrics.len()) as u64, &mut length);
    out.write_all(&length)?;
    out.write_all(&header)?;
    out.write_all(metrics)
}

/// Appends `metric` to `metrics` as field [`METRIC_TAG`] of a family.
pub fn push_metric(metrics: &mut Vec<u8>, metric: &Metric) {
    prost::encoding::message::encode(METRIC_TAG, metric, metrics);
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn a_family_written_in_pieces_decodes_as_one_message() {
        let family = MetricFamily {
            name: Some("x_total".into()),
            help: Some("Help.".into()),
            r#type: Some(MetricType::Counter as i32),
            metric: Vec::new(),
        };
        let metrics: Vec<Metric> = (0..3)
            .map(|i| Metric {
                label: vec![LabelPair::new("n", &i.to_string())],
                counter: Some(Counter {
                    value: Some(f64::from(i)),
                }),
                ..Metric::default()
            })
            .collect();
        let mut encoded = Vec::new();
        for metric in &metrics {
            push_metric(&mut encoded, metric);
        }
        let mut body = Vec::new();
        write_delimited(&mut body, &family, &encoded).expect("write");
        write_delimited(&mut body, &family, &[]).expect("write");
        let mut rest = body.as_slice();
        let first = MetricFamily::decode_length_delimited(&mut rest).expect("first");
        assert_eq!(first.metric, metrics);
        assert_eq!(first.name.as_deref(), Some("x_total"));
        let second = MetricFamily::decode_length_delimited(&mut rest).expect("second");
        assert!(second.metric.is_empty() && rest.is_empty());
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        let t = Timestamp::from_unix_seconds(1_700_000_000.123);
        assert_eq!(t.seconds, 1_700_000_000);
        assert!((t.nanos - 123_000_000).abs() < 1000, "{}", t.nanos);
    }
}
