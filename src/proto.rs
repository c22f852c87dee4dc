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

/// A family's name, help and type; its metrics follow as field 4 ([`EncodedMetrics`]).
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
const METRIC_TAG: u32 = 4;

/// The `Content-Type` of the delimited protobuf exposition.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Size of the pieces a family's encoded metrics are kept in.
const CHUNK: usize = 256 * 1024;

/// The metrics of one family, encoded one by one as field [`METRIC_TAG`] of the family: the
/// exposition delimits a family by its length, so its metrics are held until it is written.
/// Held in pieces of [`CHUNK`] bytes, not one growing buffer, whose copies when it grows would
/// double the memory at the largest family (tens of megabytes at ten thousand pipelines).
#[derive(Default)]
pub struct EncodedMetrics {
    chunks: Vec<Vec<u8>>,
    len: usize,
    /// One metric's encoding, reused.
    scratch: Vec<u8>,
}

impl EncodedMetrics {
    /// Appends `metric`.
    pub fn push(&mut self, metric: &Metric) {
        self.scratch.clear();
        prost::encoding::message::encode(METRIC_TAG, metric, &mut self.scratch);
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.len() + self.scratch.len() <= CHUNK);
        if !fits {
            self.chunks
                .push(Vec::with_capacity(CHUNK.max(self.scratch.len())));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.extend_from_slice(&self.scratch);
        }
        self.len += self.scratch.len();
    }

    /// Whether no metric was pushed since the last [`EncodedMetrics::write`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the family to `out` as the exposition delimits it: its length, then `header`
    /// (name, help, type) and the metrics; then forgets the metrics.
    pub fn write(
        &mut self,
        out: &mut dyn std::io::Write,
        header: &MetricFamily,
    ) -> std::io::Result<()> {
        use prost::Message;
        let header = header.encode_to_vec();
        let mut length = Vec::with_capacity(10);
        prost::encoding::encode_varint((header.len() + self.len) as u64, &mut length);
        out.write_all(&length)?;
        out.write_all(&header)?;
        for chunk in self.chunks.drain(..) {
            out.write_all(&chunk)?;
        }
        self.len = 0;
        Ok(())
    }
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
        // Enough metrics for several chunks.
        let metrics: Vec<Metric> = (0..20_000)
            .map(|i| Metric {
                label: vec![LabelPair::new("n", &i.to_string())],
                counter: Some(Counter {
                    value: Some(f64::from(i)),
                }),
                ..Metric::default()
            })
            .collect();
        let mut encoded = EncodedMetrics::default();
        for metric in &metrics {
            encoded.push(metric);
        }
        assert!(encoded.chunks.len() > 1);
        let mut body = Vec::new();
        encoded.write(&mut body, &family).expect("write");
        assert!(encoded.is_empty());
        encoded.write(&mut body, &family).expect("write");
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
