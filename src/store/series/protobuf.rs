//! The pipeline families in Prometheus' protobuf exposition: one `MetricFamily` per family,
//! the same series as the text format ([`write_pipeline`] walks the data for both). Histograms
//! carry their classic buckets with the buckets' exemplars and, with
//! `metrics.native_histograms`, their native buckets in the same message: a Prometheus that
//! reads native histograms takes those, one that keeps classic ones (or both) the buckets.
//!
//! A family's metrics are encoded one by one ([`EncodedMetrics`]), each from one `Metric`
//! reused from the last, whose strings and lists keep their allocations: a rendering of a
//! million series allocates little beyond the encoded family it holds.

use std::io::{self, Write};

use super::native::{self, Native, ZERO_THRESHOLD};
use super::text::{Exemplars, Family, SampleValue, Sink, write_pipeline};
use super::{Buckets, Hist, SeriesTable, lock};
use crate::proto::{self, EncodedMetrics, LabelPair, Metric, MetricFamily, MetricType};

/// The labels every metric of a pipeline begins with.
const PIPELINE_LABELS: usize = 3;

impl SeriesTable {
    /// Writes every pipeline family in the delimited protobuf exposition.
    pub fn write_protobuf(&self, out: &mut dyn Write) -> io::Result<()> {
        let all = self.pipelines_with_ids();
        let layout = self.layout();
        let mut writer = ProtoWriter {
            metrics: EncodedMetrics::default(),
            kind: MetricType::Gauge,
            metric: Metric::default(),
            exemplars: None,
        };
        for family in Family::ALL {
            if family == Family::StageStatus && !layout.stage_status {
                continue;
            }
            let (name, kind, help) = family.describe();
            writer.kind = match kind {
                "counter" => MetricType::Counter,
                "histogram" => MetricType::Histogram,
                _ => MetricType::Gauge,
            };
            writer.metric = Metric::default();
            for ((project_id, pipeline_id), data) in &all {
                let data = lock(data);
                let labels = &mut writer.metric.label;
                set_label(labels, 0, "project_id", project_id);
                set_label(labels, 1, "pipeline_id", pipeline_id);
                set_label(labels, 2, "pipeline_name", &data.name);
                writer.exemplars = Some(Exemplars {
                    project_id,
                    pipeline_id,
                    trace_ids: layout.exemplar_trace_ids,
                });
                write_pipeline(&mut writer, family, &data, layout)?;
            }
            // As in the text format, a family without series is left out.
            if writer.metrics.is_empty() {
                continue;
            }
            let header = MetricFamily {
                name: Some(name.to_string()),
                help: Some(help.to_string()),
                r#type: Some(writer.kind as i32),
                metric: Vec::new(),
            };
            writer.metrics.write(out, &header)?;
        }
        Ok(())
    }
}

/// Sets label `index` of `labels` to `name="value"`, reusing the strings already there.
fn set_label(labels: &mut Vec<LabelPair>, index: usize, name: &str, value: &str) {
    fn reuse(field: &mut Option<String>, text: &str) {
        let field = field.get_or_insert_with(String::new);
        field.clear();
        field.push_str(text);
    }
    match labels.get_mut(index) {
        Some(pair) => {
            reuse(&mut pair.name, name);
            reuse(&mut pair.value, value);
        }
        None => labels.push(LabelPair::new(name, value)),
    }
}

/// Encodes the metrics of one family, a pipeline at a time.
struct ProtoWriter<'a> {
    /// The family's metrics so far.
    metrics: EncodedMetrics,
    kind: MetricType,
    /// The metric being encoded: the current pipeline's labels first, then the sample's.
    metric: Metric,
    /// How the current pipeline's exemplars name their runs.
    exemplars: Option<Exemplars<'a>>,
}

impl ProtoWriter<'_> {
    /// Sets the labels after the pipeline's to `extra`.
    fn extra_labels(&mut self, extra: &[(&str, &str)]) {
        let labels = &mut self.metric.label;
        for (offset, (name, value)) in extra.iter().enumerate() {
            set_label(labels, PIPELINE_LABELS + offset, name, value);
        }
        labels.truncate(PIPELINE_LABELS + extra.len());
    }
}

/// The exemplar of bucket `index` of `hist`, named as `exemplars` names runs, if it has one.
fn exemplar(
    exemplars: Option<&Exemplars<'_>>,
    hist: &Hist,
    index: usize,
) -> Option<proto::Exemplar> {
    let exemplar = hist.exemplar(index)?;
    let (trace, with_run) = exemplars?.labels(exemplar);
    let mut label = Vec::with_capacity(2);
    if let Some(trace) = trace {
        label.push(LabelPair::new("trace_id", &trace));
    }
    if with_run {
        label.push(LabelPair::new("run_id", &exemplar.run));
    }
    (!label.is_empty()).then(|| proto::Exemplar {
        label,
        value: Some(exemplar.value),
        timestamp: Some(proto::Timestamp::from_unix_seconds(exemplar.end)),
    })
}

impl Sink for ProtoWriter<'_> {
    fn sample(
        &mut self,
        _labels: &str,
        extra: &[(&str, &str)],
        value: impl SampleValue,
    ) -> io::Result<()> {
        self.extra_labels(extra);
        let value = Some(value.number());
        if self.kind == MetricType::Counter {
            self.metric.counter = Some(proto::Counter { value });
        } else {
            self.metric.gauge = Some(proto::Gauge { value });
        }
        self.metrics.push(&self.metric);
        Ok(())
    }

    fn histogram(
        &mut self,
        _labels: &str,
        extra: &[(&str, &str)],
        buckets: &Buckets,
        hist: &Hist,
    ) -> io::Result<()> {
        self.extra_labels(extra);
        let exemplars = self.exemplars.as_ref();
        let histogram = self.metric.histogram.get_or_insert_with(Default::default);
        histogram.sample_count = Some(hist.count);
        histogram.sample_sum = Some(hist.sum);
        // The classic buckets, then `+Inf` as the text format has it; each with its exemplar.
        histogram
            .bucket
            .resize_with(buckets.bounds.len() + 1, Default::default);
        let mut cumulative = 0;
        for (index, bucket) in histogram.bucket.iter_mut().enumerate() {
            cumulative += hist.counts.get(index).copied().unwrap_or(0);
            let bound = buckets.bounds.get(index).copied();
            *bucket = proto::Bucket {
                cumulative_count: Some(if bound.is_some() {
                    cumulative
                } else {
                    hist.count
                }),
                upper_bound: Some(bound.unwrap_or(f64::INFINITY)),
                exemplar: exemplar(exemplars, hist, index),
            };
        }
        if buckets.native {
            let empty = Native::default();
            let native = hist.native.as_deref().unwrap_or(&empty);
            native::spans_and_deltas(
                &native.positive,
                &mut histogram.positive_span,
                &mut histogram.positive_delta,
            );
            native::spans_and_deltas(
                &native.negative,
                &mut histogram.negative_span,
                &mut histogram.negative_delta,
            );
            histogram.schema = Some(i32::from(native.schema));
            histogram.zero_threshold = Some(ZERO_THRESHOLD);
            histogram.zero_count = Some(native.zero);
        }
        self.metrics.push(&self.metric);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use prost::Message;

    use super::super::exposition::parse_metrics;
    use super::super::native::{SCHEMA, index};
    use super::super::{Series, Stored};
    use super::*;
    use crate::codearts::model::{JobRun, Run, RunResult, RunState};
    use crate::config::MetricsConfig;

    /// Run durations observed, in seconds: two share a native bucket, one is 0 (the zero
    /// bucket), one is past every classic bound.
    const DURATIONS: [f64; 5] = [60.0, 60.0, 125.5, 0.0, 10_000.0];

    fn config(native_histograms: bool) -> MetricsConfig {
        MetricsConfig {
            stage_status: true,
            jobs: true,
            native_histograms,
            ..MetricsConfig::default()
        }
    }

    /// A table with one pipeline whose runs took [`DURATIONS`], and its handle.
    fn recorded(config: &MetricsConfig) -> (Arc<SeriesTable>, Series) {
        let table = Arc::new(SeriesTable::new(config, true));
        let mut series = Series::new(&table, "proj", "pipe", "Pipe \"quoted\"");
        for (number, duration) in DURATIONS.into_iter().enumerate() {
            let end = 1000.0 * (number as f64 + 1.0);
            let mut run = Run::example(
                "pipe",
                format!("r{number}"),
                number as u64 + 1,
                end - duration,
                Some(end),
            );
            if number == 2 {
                run.result = Some(RunResult::Error);
            }
            run.pause = Some(3.0);
            run.stages[0].jobs = vec![JobRun {
                id: None,
                name: "compile".into(),
                state: RunState::Completed,
                result: Some(RunResult::Success),
                start: Some(1.0),
                end: Some(11.0),
            }];
            series.set_state(run.state);
            series.set_stage_states(&run);
            series.set_last_completed(&run);
            series.observe_completed(&run);
            series.observe_jobs(&run);
            series.observe_pause(&run);
            series.observe_deployment(&run, "production", Some("c"), Some("repo"), 0.0);
        }
        series.resolve_commit("repo", "c", Ok(500.0));
        series.publish();
        (table, series)
    }

    fn families(table: &SeriesTable) -> Vec<MetricFamily> {
        let mut body = Vec::new();
        table.write_protobuf(&mut body).expect("write");
        let mut rest = body.as_slice();
        let mut families = Vec::new();
        while !rest.is_empty() {
            families.push(MetricFamily::decode_length_delimited(&mut rest).expect("a family"));
        }
        families
    }

    fn labels(metric: &Metric) -> BTreeMap<String, String> {
        metric
            .label
            .iter()
            .map(|pair| {
                (
                    pair.name.clone().unwrap_or_default(),
                    pair.value.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The samples the text format would have for `families`' classic side.
    fn classic_samples(families: &[MetricFamily]) -> Vec<(String, BTreeMap<String, String>, f64)> {
        let mut samples = Vec::new();
        for family in families {
            let name = family.name.clone().unwrap_or_default();
            for metric in &family.metric {
                let labels = labels(metric);
                if let Some(histogram) = &metric.histogram {
                    for bucket in &histogram.bucket {
                        let mut with_le = labels.clone();
                        let bound = bucket.upper_bound.unwrap_or_default();
                        let le = if bound.is_infinite() {
                            "+Inf".to_string()
                        } else {
                            bound.to_string()
                        };
                        with_le.insert("le".into(), le);
                        samples.push((
                            format!("{name}_bucket"),
                            with_le,
                            bucket.cumulative_count.unwrap_or(0) as f64,
                        ));
                    }
                    samples.push((
                        format!("{name}_sum"),
                        labels.clone(),
                        histogram.sample_sum.unwrap_or(0.0),
                    ));
                    samples.push((
                        format!("{name}_count"),
                        labels,
                        histogram.sample_count.unwrap_or(0) as f64,
                    ));
                } else {
                    let value = metric
                        .counter
                        .as_ref()
                        .and_then(|c| c.value)
                        .or(metric.gauge.as_ref().and_then(|g| g.value))
                        .expect("a counter or a gauge");
                    samples.push((name.clone(), labels, value));
                }
            }
        }
        samples.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        samples
    }

    #[test]
    fn the_protobuf_families_hold_the_text_formats_series() {
        let (table, _series) = recorded(&config(true));
        let mut text = Vec::new();
        table.write_text(&mut text).expect("write");
        let text = String::from_utf8(text).expect("utf-8");
        let mut expected: Vec<_> = parse_metrics(&text)
            .into_iter()
            .map(|s| (s.name, s.labels, s.value))
            .collect();
        expected.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let families = families(&table);
        assert_eq!(classic_samples(&families), expected);
        // Names, types and help as the text format declares them.
        let declared: Vec<String> = text
            .lines()
            .filter(|line| line.starts_with("# TYPE ") || line.starts_with("# HELP "))
            .map(str::to_string)
            .collect();
        let ours: Vec<String> = families
            .iter()
            .flat_map(|family| {
                let name = family.name.clone().unwrap_or_default();
                let kind = match MetricType::try_from(family.r#type.unwrap_or(-1)) {
                    Ok(MetricType::Counter) => "counter",
                    Ok(MetricType::Gauge) => "gauge",
                    Ok(MetricType::Histogram) => "histogram",
                    other => panic!("{name}: {other:?}"),
                };
                let help = family
                    .help
                    .clone()
                    .unwrap_or_default()
                    .replace('\\', "\\\\")
                    .replace('\n', "\\n");
                [
                    format!("# HELP {name} {help}"),
                    format!("# TYPE {name} {kind}"),
                ]
            })
            .collect();
        assert_eq!(ours, declared);
    }

    /// The native buckets of `histogram`, as (index, count), and its zero count.
    fn native_buckets(histogram: &proto::Histogram) -> (Vec<(i32, u64)>, u64) {
        let mut buckets = Vec::new();
        let mut at = 0;
        let mut deltas = histogram.positive_delta.iter();
        let mut count = 0i64;
        for span in &histogram.positive_span {
            at += span.offset.unwrap_or(0);
            for _ in 0..span.length.unwrap_or(0) {
                count += deltas.next().expect("a delta per bucket");
                if count > 0 {
                    buckets.push((at, count as u64));
                }
                at += 1;
            }
        }
        assert!(deltas.next().is_none(), "a delta per bucket, no more");
        (buckets, histogram.zero_count.unwrap_or(0))
    }

    fn histogram_of<'a>(
        families: &'a [MetricFamily],
        name: &str,
        result: &str,
    ) -> &'a proto::Histogram {
        families
            .iter()
            .find(|family| family.name.as_deref() == Some(name))
            .and_then(|family| {
                family
                    .metric
                    .iter()
                    .find(|m| labels(m).get("result").is_none_or(|r| r == result))
            })
            .and_then(|metric| metric.histogram.as_ref())
            .unwrap_or_else(|| panic!("{name} {result}"))
    }

    #[test]
    fn pipeline_histograms_carry_native_buckets_with_their_exact_counts() {
        let (table, _series) = recorded(&config(true));
        let families = families(&table);
        let success = histogram_of(
            &families,
            "codearts_pipeline_run_duration_seconds",
            "success",
        );
        assert_eq!(success.schema, Some(i32::from(SCHEMA)));
        assert!(success.zero_threshold.is_some_and(|t| t > 0.0));
        let (buckets, zero) = native_buckets(success);
        assert_eq!(zero, 1, "the run of 0 s");
        assert_eq!(
            buckets,
            [(index(60.0, SCHEMA), 2), (index(10_000.0, SCHEMA), 1)]
        );
        assert_eq!(success.sample_count, Some(4));
        assert_eq!(success.sample_sum, Some(10_120.0));
        let error = histogram_of(&families, "codearts_pipeline_run_duration_seconds", "error");
        assert_eq!(native_buckets(error), (vec![(index(125.5, SCHEMA), 1)], 0));
        // Every pipeline histogram family has native buckets holding every observation.
        let mut native_families = 0;
        for family in &families {
            for metric in &family.metric {
                let Some(histogram) = &metric.histogram else {
                    continue;
                };
                let (buckets, zero) = native_buckets(histogram);
                let total: u64 = buckets.iter().map(|(_, c)| c).sum::<u64>() + zero;
                assert_eq!(Some(total), histogram.sample_count, "{:?}", family.name);
                assert!(histogram.schema.is_some(), "{:?}", family.name);
            }
            native_families += usize::from(family.metric.iter().any(|m| m.histogram.is_some()));
        }
        assert_eq!(
            native_families, 8,
            "run, queue, pause, stage, job, recovery, lead time, restore"
        );
        // The buckets' exemplars come along.
        // The latest run of le=60 is the one of 0 s.
        let exemplar = success.bucket[0].exemplar.as_ref().expect("le=60 has r3");
        assert_eq!(exemplar.value, Some(0.0));
        assert!(
            exemplar
                .label
                .iter()
                .any(|l| l.value.as_deref() == Some("r3"))
        );
        assert!(
            exemplar
                .label
                .iter()
                .any(|l| l.name.as_deref() == Some("trace_id"))
        );
    }

    #[test]
    fn native_histograms_off_leave_classic_buckets_only() {
        let (table, series) = recorded(&config(false));
        for family in families(&table) {
            for metric in &family.metric {
                if let Some(histogram) = &metric.histogram {
                    assert_eq!(histogram.schema, None);
                    assert_eq!(histogram.zero_threshold, None);
                    assert!(histogram.positive_span.is_empty());
                }
            }
        }
        assert!(
            !serde_json::to_string(&series.stored())
                .expect("json")
                .contains("\"native\"")
        );
    }

    /// `stored` as a state file from before native histograms has it.
    fn without_native(stored: &Stored) -> Stored {
        super::super::without_field(stored, "native")
    }

    #[test]
    fn native_buckets_survive_a_restart_and_are_rebuilt_for_older_state() {
        let config = config(true);
        let (table, series) = recorded(&config);
        let stored = series.stored();
        let json = serde_json::to_string(&stored).expect("json");
        assert!(json.contains("\"native\""));
        let again = Arc::new(SeriesTable::new(&config, true));
        let mut restored = Series::new(&again, "proj", "pipe", "Pipe \"quoted\"");
        restored.restore(serde_json::from_str(&json).expect("decode"));
        // Everything but the latest run's state, which is not kept.
        let kept = |table: &SeriesTable| -> Vec<MetricFamily> {
            families(table)
                .into_iter()
                .filter(|f| !f.name.as_deref().is_some_and(|n| n.ends_with("_status")))
                .collect()
        };
        assert_eq!(kept(&again), kept(&table));

        // From before native histograms: rebuilt from the classic buckets, counts exact.
        let older = Arc::new(SeriesTable::new(&config, true));
        let mut restored = Series::new(&older, "proj", "pipe", "Pipe \"quoted\"");
        restored.restore(without_native(&stored));
        let families = families(&older);
        let success = histogram_of(
            &families,
            "codearts_pipeline_run_duration_seconds",
            "success",
        );
        let (buckets, zero) = native_buckets(success);
        // le=60 holds the two runs of 60 s and the one of 0 s; 10,000 s is past the last bound.
        assert_eq!(zero, 0);
        assert_eq!(
            buckets,
            [(index(60.0, SCHEMA), 3), (index(7200.0, SCHEMA) + 1, 1)]
        );
        for family in &families {
            for metric in &family.metric {
                if let Some(histogram) = &metric.histogram {
                    let (buckets, zero) = native_buckets(histogram);
                    let total: u64 = buckets.iter().map(|(_, c)| c).sum::<u64>() + zero;
                    assert_eq!(Some(total), histogram.sample_count, "{:?}", family.name);
                }
            }
        }
        // A restart with native histograms off forgets them.
        let off = Arc::new(SeriesTable::new(
            &MetricsConfig {
                native_histograms: false,
                ..config
            },
            true,
        ));
        let mut restored = Series::new(&off, "proj", "pipe", "Pipe \"quoted\"");
        restored.restore(stored);
        assert!(
            !serde_json::to_string(&restored.stored())
                .expect("json")
                .contains("\"native\"")
        );
    }
}
