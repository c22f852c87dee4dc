//! The OTLP trace of one completed run, built directly as `opentelemetry-proto`'s protobuf
//! messages: ids and past times are ours to choose (the SDK's span builder no longer takes
//! either), and the bytes are what `{endpoint}/v1/traces` receives.
//!
//! Shape, after the OpenTelemetry CI/CD semantic conventions (v1.43): one `ResourceSpans` per
//! run, whose resource names the pipeline and the run; a root span `RUN {pipeline}` (SERVER);
//! under it a `QUEUE {pipeline}` span from the run's start to its first stage's, one span per
//! stage that ran, and under each stage one span per job read from the run detail. Every id
//! comes from [`RunKey`], so the same run always gives the same trace.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

use super::ids::RunKey;
use crate::codearts::model::{Run, RunResult};

/// `service.name` of every trace.
pub const SERVICE_NAME: &str = "codearts-exporter";
/// The attribute holding a run's time paused, in seconds (CodeArts' own).
pub const PAUSE_ATTRIBUTE: &str = "codearts.pipeline.run.pause_seconds";
/// The attribute holding a stage's time paused, in seconds (CodeArts' own).
pub const TASK_PAUSE_ATTRIBUTE: &str = "codearts.pipeline.task.run.pause_seconds";

/// Epoch seconds (from the API's milliseconds) as nanoseconds, exact to the millisecond.
fn nanos(secs: f64) -> u64 {
    (secs * 1000.0).round() as u64 * 1_000_000
}

/// `cicd.pipeline.result` and `cicd.pipeline.task.run.result` of a result.
fn result_value(result: RunResult) -> &'static str {
    match result {
        RunResult::Success => "success",
        RunResult::Error => "failure",
        RunResult::Aborted => "cancellation",
    }
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn double(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// A present, non-empty text.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

/// The result attributes and status of a run or a task: a failure carries `error.type` and
/// status ERROR; other outcomes leave the status unset.
fn outcome(key: &str, result: Option<RunResult>, attributes: &mut Vec<KeyValue>) -> Option<Status> {
    let result = result?;
    attributes.push(string(key, result_value(result)));
    if result == RunResult::Error {
        attributes.push(string("error.type", result_value(result)));
        Some(Status {
            code: StatusCode::Error as i32,
            ..Status::default()
        })
    } else {
        None
    }
}

/// What names each stage (or each job of a stage) within its run, for its span id and its
/// `cicd.pipeline.task.run.id`: its CodeArts id, or its name where the API gave none (the v3
/// and v5 batch status give stages none; the run list and the run detail do). Keys are made unique within their list, a key's second
/// occurrence becoming `key#2` and so on: CodeArts does not forbid two stages, or two jobs of a
/// stage, of one name.
fn task_keys<'a>(tasks: impl Iterator<Item = (&'a Option<String>, &'a str)>) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    tasks
        .map(|(id, name)| {
            let key = given(id).unwrap_or(name);
            let before = seen.iter().filter(|other| **other == key).count();
            seen.push(key);
            if before == 0 {
                key.to_string()
            } else {
                format!("{key}#{}", before + 1)
            }
        })
        .collect()
}

/// What every span of a run shares.
struct Spans<'a> {
    key: RunKey<'a>,
    trace_id: Vec<u8>,
    spans: Vec<Span>,
}

impl Spans<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        span_id: [u8; 8],
        parent: Option<[u8; 8]>,
        kind: SpanKind,
        name: String,
        (start, end): (u64, u64),
        attributes: Vec<KeyValue>,
        status: Option<Status>,
    ) {
        self.spans.push(Span {
            trace_id: self.trace_id.clone(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map(|id| id.to_vec()).unwrap_or_default(),
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            // A clock that went backwards is no reason for an invalid span.
            end_time_unix_nano: end.max(start),
            attributes,
            status,
            ..Span::default()
        });
    }
}

/// The `ResourceSpans` of one completed run of `project_id`: `None` when the run has neither a
/// run id nor a run number, or lacks its start, end or result.
pub fn run_resource_spans(project_id: &str, run: &Run) -> Option<ResourceSpans> {
    let run_number = run.run_number.map(|number| number.to_string());
    let run_key = given(&run.run_id).or(run_number.as_deref())?;
    let (start, end, result) = (run.start?, run.end?, run.result?);
    let key = RunKey {
        project_id,
        pipeline_id: &run.pipeline_id,
        run: run_key,
    };
    let pipeline = given(&run.pipeline_name).unwrap_or(&run.pipeline_id);

    let mut resource = vec![
        string("service.name", SERVICE_NAME),
        string("cicd.pipeline.name", pipeline),
        string("cicd.pipeline.run.id", run_key),
    ];
    let optional = [
        ("cicd.pipeline.run.url.full", given(&run.detail_url)),
        ("vcs.ref.head.name", given(&run.branch)),
        ("vcs.ref.head.revision", given(&run.commit_id)),
        (
            "codearts.project.id",
            Some(project_id).filter(|id| !id.is_empty()),
        ),
        (
            "codearts.pipeline.id",
            Some(run.pipeline_id.as_str()).filter(|id| !id.is_empty()),
        ),
    ];
    resource.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| string(name, value))),
    );

    let mut spans = Spans {
        key,
        trace_id: key.trace_id().to_vec(),
        spans: Vec::new(),
    };
    let root = key.run_span_id();
    let (run_start, run_end) = (nanos(start), nanos(end));

    let mut attributes = vec![
        string("cicd.pipeline.name", pipeline),
        string("cicd.pipeline.action.name", "RUN"),
        string("cicd.pipeline.run.id", run_key),
    ];
    let status = outcome("cicd.pipeline.result", Some(result), &mut attributes);
    if let Some(trigger) = given(&run.trigger) {
        attributes.push(string("codearts.pipeline.run.trigger", trigger));
    }
    if let Some(pause) = run.pause {
        attributes.push(double(PAUSE_ATTRIBUTE, pause));
    }
    spans.push(
        root,
        None,
        SpanKind::Server,
        format!("RUN {pipeline}"),
        (run_start, run_end),
        attributes,
        status,
    );

    // The wait before the first stage started, as its own span.
    let first_stage = run
        .stages
        .iter()
        .filter_map(|stage| stage.start)
        .map(nanos)
        .min();
    if let Some(first) = first_stage
        && first > run_start
    {
        let queue = spans.key.span_id("queue", &[]);
        spans.push(
            queue,
            Some(root),
            SpanKind::Internal,
            format!("QUEUE {pipeline}"),
            (run_start, first),
            vec![string("cicd.pipeline.run.id", run_key)],
            None,
        );
    }

    let stage_keys = task_keys(
        run.stages
            .iter()
            .map(|stage| (&stage.id, stage.name.as_str())),
    );
    for (stage, stage_key) in run.stages.iter().zip(&stage_keys) {
        let (Some(stage_start), Some(stage_end)) = (stage.start, stage.end) else {
            continue; // Skipped or unselected: it never ran.
        };
        let stage_id = spans.key.span_id("stage", &[stage_key]);
        let mut attributes = vec![
            string("cicd.pipeline.task.name", stage.name.as_str()),
            string("cicd.pipeline.task.run.id", stage_key.as_str()),
        ];
        let status = outcome(
            "cicd.pipeline.task.run.result",
            stage.result,
            &mut attributes,
        );
        if let Some(pause) = stage.pause {
            attributes.push(double(TASK_PAUSE_ATTRIBUTE, pause));
        }
        spans.push(
            stage_id,
            Some(root),
            SpanKind::Internal,
            stage.name.clone(),
            (nanos(stage_start), nanos(stage_end)),
            attributes,
            status,
        );
        let job_keys = task_keys(stage.jobs.iter().map(|job| (&job.id, job.name.as_str())));
        for (job, job_key) in stage.jobs.iter().zip(&job_keys) {
            let (Some(job_start), Some(job_end)) = (job.start, job.end) else {
                continue;
            };
            let job_id = spans.key.span_id("job", &[stage_key, job_key]);
            // A job's id names it within the run; its name only within its stage.
            let task_run_id = match given(&job.id) {
                Some(_) => job_key.clone(),
                None => format!("{stage_key}/{job_key}"),
            };
            let mut attributes = vec![
                string("cicd.pipeline.task.name", job.name.as_str()),
                string("cicd.pipeline.task.run.id", task_run_id),
            ];
            let status = outcome("cicd.pipeline.task.run.result", job.result, &mut attributes);
            spans.push(
                job_id,
                Some(stage_id),
                SpanKind::Internal,
                job.name.clone(),
                (nanos(job_start), nanos(job_end)),
                attributes,
                status,
            );
        }
    }

    Some(ResourceSpans {
        resource: Some(Resource {
            attributes: resource,
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: SERVICE_NAME.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..InstrumentationScope::default()
            }),
            spans: spans.spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    })
}

/// The export request of one completed run (see [`run_resource_spans`] for when it is `None`).
pub fn run_request(project_id: &str, run: &Run) -> Option<ExportTraceServiceRequest> {
    run_resource_spans(project_id, run).map(|spans| ExportTraceServiceRequest {
        resource_spans: vec![spans],
    })
}

/// The encoded trace of a completed run of pipeline `pipeline_name` of `project_id`, as the run
/// history gives it (`run`, which names no pipeline) with the stages, jobs and pauses of its
/// run detail when it was read; `None` as for [`run_resource_spans`].
pub fn run_trace(
    project_id: &str,
    pipeline_name: &str,
    run: &Run,
    detail: Option<&Run>,
) -> Option<bytes::Bytes> {
    let mut whole = Run {
        pipeline_name: run
            .pipeline_name
            .clone()
            .or_else(|| Some(pipeline_name.to_string())),
        ..run.clone()
    };
    if let Some(detail) = detail {
        whole.stages = detail.stages.clone();
        whole.pause = detail.pause.or(run.pause);
    }
    run_request(project_id, &whole).map(|request| encode(&request).into())
}

/// Several runs' requests as one: their `ResourceSpans` one after the other, in order.
pub fn batch(
    requests: impl IntoIterator<Item = ExportTraceServiceRequest>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: requests
            .into_iter()
            .flat_map(|request| request.resource_spans)
            .collect(),
    }
}

/// The protobuf body of a request, as POSTed with `Content-Type: application/x-protobuf`.
pub fn encode(request: &ExportTraceServiceRequest) -> Vec<u8> {
    request.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

    use super::*;
    use crate::codearts::model::{JobRun, RunState, StageRun};

    const PROJECT: &str = "0123456789abcdef0123456789abcdef";
    const PIPELINE: &str = "fedcba9876543210fedcba9876543210";
    /// What names [`failed_run`] in ids.
    const FAILED_RUN: RunKey<'static> = RunKey {
        project_id: PROJECT,
        pipeline_id: PIPELINE,
        run: "run-id-7",
    };

    fn job(name: &str, result: Option<RunResult>, times: Option<(f64, f64)>) -> JobRun {
        JobRun {
            id: None,
            name: name.into(),
            state: RunState::Completed,
            result,
            start: times.map(|t| t.0),
            end: times.map(|t| t.1),
        }
    }

    fn stage(name: &str, result: Option<RunResult>, times: Option<(f64, f64)>) -> StageRun {
        StageRun {
            id: None,
            name: name.into(),
            state: RunState::Completed,
            result,
            start: times.map(|t| t.0),
            end: times.map(|t| t.1),
            jobs: Vec::new(),
            pause: None,
        }
    }

    /// A failed run of the detail: a queue of 2.5 s, two stages that ran (with jobs), one that
    /// was skipped. Times have milliseconds that a float cannot hold exactly.
    fn failed_run() -> Run {
        let mut build = stage(
            "构建",
            Some(RunResult::Success),
            Some((1_700_000_002.5, 1_700_000_040.123)),
        );
        build.jobs = vec![
            job(
                "compile",
                Some(RunResult::Success),
                Some((1_700_000_002.5, 1_700_000_030.001)),
            ),
            job("lint", None, None),
        ];
        let mut test = stage(
            "test",
            Some(RunResult::Error),
            Some((1_700_000_040.123, 1_700_000_100.999)),
        );
        test.pause = Some(12.0);
        test.jobs = vec![job(
            "unit",
            Some(RunResult::Error),
            Some((1_700_000_040.2, 1_700_000_100.999)),
        )];
        Run {
            pipeline_id: PIPELINE.into(),
            pipeline_name: Some("payments-ci".into()),
            run_id: Some("run-id-7".into()),
            run_number: Some(7),
            state: RunState::Completed,
            result: Some(RunResult::Error),
            start: Some(1_700_000_000.0),
            end: Some(1_700_000_101.007),
            detail_url: Some("https://console.example/run/7".into()),
            trigger: Some("Manual".into()),
            branch: Some("main".into()),
            commit_id: Some("0a1b2c3d".into()),
            codehub_id: None,
            pause: Some(12.0),
            stages: vec![build, test, stage("deploy", None, None)],
        }
    }

    /// The request encoded and decoded again by the crate's own types.
    fn round_trip(request: &ExportTraceServiceRequest) -> ExportTraceServiceRequest {
        let bytes = encode(request);
        ExportTraceServiceRequest::decode(bytes.as_slice()).expect("OTLP decodes")
    }

    fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        let mut found = attributes.iter().filter(|kv| kv.key == key);
        let first = found.next()?;
        assert!(found.next().is_none(), "{key} is set twice");
        first.value.as_ref()?.value.as_ref()
    }

    fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
        match attribute(attributes, key)? {
            any_value::Value::StringValue(value) => Some(value),
            other => panic!("{key} is not a string: {other:?}"),
        }
    }

    fn spans_of(request: &ExportTraceServiceRequest) -> &[Span] {
        assert_eq!(request.resource_spans.len(), 1);
        let scopes = &request.resource_spans[0].scope_spans;
        assert_eq!(scopes.len(), 1);
        let scope = scopes[0].scope.as_ref().expect("a scope");
        assert_eq!(scope.name, SERVICE_NAME);
        &scopes[0].spans
    }

    #[test]
    fn a_failed_run_becomes_its_trace() {
        let run = failed_run();
        let request = round_trip(&run_request(PROJECT, &run).expect("a completed run"));
        let key = FAILED_RUN;

        let resource = request.resource_spans[0]
            .resource
            .as_ref()
            .expect("a resource");
        let expected = [
            ("service.name", "codearts-exporter"),
            ("cicd.pipeline.name", "payments-ci"),
            ("cicd.pipeline.run.id", "run-id-7"),
            (
                "cicd.pipeline.run.url.full",
                "https://console.example/run/7",
            ),
            ("vcs.ref.head.name", "main"),
            ("vcs.ref.head.revision", "0a1b2c3d"),
            ("codearts.project.id", PROJECT),
            ("codearts.pipeline.id", PIPELINE),
        ];
        assert_eq!(resource.attributes.len(), expected.len());
        for (name, value) in expected {
            assert_eq!(text(&resource.attributes, name), Some(value), "{name}");
        }

        let spans = spans_of(&request);
        let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "RUN payments-ci",
                "QUEUE payments-ci",
                "构建",
                "compile",
                "test",
                "unit"
            ]
        );
        for span in spans {
            assert_eq!(span.trace_id, key.trace_id().to_vec(), "{}", span.name);
            assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        }

        let root = &spans[0];
        assert_eq!(root.span_id, key.run_span_id().to_vec());
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert_eq!(root.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(root.end_time_unix_nano, 1_700_000_101_007_000_000);
        assert_eq!(
            text(&root.attributes, "cicd.pipeline.result"),
            Some("failure")
        );
        assert_eq!(text(&root.attributes, "error.type"), Some("failure"));
        assert_eq!(
            text(&root.attributes, "cicd.pipeline.run.id"),
            Some("run-id-7")
        );
        assert_eq!(
            text(&root.attributes, "cicd.pipeline.action.name"),
            Some("RUN")
        );
        assert_eq!(
            text(&root.attributes, "codearts.pipeline.run.trigger"),
            Some("Manual")
        );
        assert_eq!(
            attribute(&root.attributes, PAUSE_ATTRIBUTE),
            Some(&any_value::Value::DoubleValue(12.0))
        );
        let status = root.status.as_ref().expect("a failure has a status");
        assert_eq!(status.code, StatusCode::Error as i32);

        let queue = &spans[1];
        assert_eq!(queue.span_id, key.span_id("queue", &[]).to_vec());
        assert_eq!(queue.parent_span_id, key.run_span_id().to_vec());
        assert_eq!(queue.kind, SpanKind::Internal as i32);
        assert_eq!(queue.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(queue.end_time_unix_nano, 1_700_000_002_500_000_000);
        assert!(queue.status.is_none());

        // (span, its ids within the run, parent, start and end in ns, task run id, result)
        let tasks = [
            (
                &spans[2],
                key.span_id("stage", &["构建"]),
                key.run_span_id(),
                (1_700_000_002_500_000_000, 1_700_000_040_123_000_000),
                "构建",
                "success",
            ),
            (
                &spans[3],
                key.span_id("job", &["构建", "compile"]),
                key.span_id("stage", &["构建"]),
                (1_700_000_002_500_000_000, 1_700_000_030_001_000_000),
                "构建/compile",
                "success",
            ),
            (
                &spans[4],
                key.span_id("stage", &["test"]),
                key.run_span_id(),
                (1_700_000_040_123_000_000, 1_700_000_100_999_000_000),
                "test",
                "failure",
            ),
            (
                &spans[5],
                key.span_id("job", &["test", "unit"]),
                key.span_id("stage", &["test"]),
                (1_700_000_040_200_000_000, 1_700_000_100_999_000_000),
                "test/unit",
                "failure",
            ),
        ];
        for (span, id, parent, (start, end), run_id, result) in tasks {
            assert_eq!(span.span_id, id.to_vec(), "{}", span.name);
            assert_eq!(span.parent_span_id, parent.to_vec(), "{}", span.name);
            assert_eq!(span.kind, SpanKind::Internal as i32, "{}", span.name);
            assert_eq!(span.start_time_unix_nano, start, "{}", span.name);
            assert_eq!(span.end_time_unix_nano, end, "{}", span.name);
            assert_eq!(
                text(&span.attributes, "cicd.pipeline.task.name"),
                Some(span.name.as_str())
            );
            assert_eq!(
                text(&span.attributes, "cicd.pipeline.task.run.id"),
                Some(run_id)
            );
            assert_eq!(
                text(&span.attributes, "cicd.pipeline.task.run.result"),
                Some(result)
            );
            let failed = result == "failure";
            assert_eq!(
                text(&span.attributes, "error.type"),
                failed.then_some("failure"),
                "{}",
                span.name
            );
            assert_eq!(
                span.status.as_ref().map(|status| status.code),
                failed.then_some(StatusCode::Error as i32),
                "{}",
                span.name
            );
            assert!(
                attribute(&span.attributes, "cicd.pipeline.task.run.url.full").is_none(),
                "the model has no task URL"
            );
        }
        assert_eq!(
            attribute(&spans[4].attributes, TASK_PAUSE_ATTRIBUTE),
            Some(&any_value::Value::DoubleValue(12.0))
        );
        assert!(attribute(&spans[2].attributes, TASK_PAUSE_ATTRIBUTE).is_none());

        // Every id is distinct.
        let mut ids: Vec<&[u8]> = spans.iter().map(|span| span.span_id.as_slice()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), spans.len());
    }

    #[test]
    fn a_successful_run_without_a_run_id_uses_its_number() {
        let mut run = failed_run();
        run.run_id = None;
        run.result = Some(RunResult::Success);
        run.pause = None;
        run.trigger = None;
        run.detail_url = None;
        run.commit_id = None;
        // No stage started after the run: no queue span.
        run.start = Some(1_700_000_002.5);
        for stage in &mut run.stages {
            stage.jobs.clear();
            if stage.result == Some(RunResult::Error) {
                stage.result = Some(RunResult::Success);
            }
        }
        let request = round_trip(&run_request(PROJECT, &run).expect("a completed run"));
        let key = RunKey {
            project_id: PROJECT,
            pipeline_id: PIPELINE,
            run: "7",
        };
        let resource = request.resource_spans[0]
            .resource
            .as_ref()
            .expect("a resource");
        assert_eq!(
            text(&resource.attributes, "cicd.pipeline.run.id"),
            Some("7")
        );
        assert_eq!(
            text(&resource.attributes, "cicd.pipeline.run.url.full"),
            None
        );
        assert_eq!(text(&resource.attributes, "vcs.ref.head.revision"), None);
        let spans = spans_of(&request);
        let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
        assert_eq!(names, ["RUN payments-ci", "构建", "test"]);
        let root = &spans[0];
        assert_eq!(root.trace_id, key.trace_id().to_vec());
        assert_eq!(root.span_id, key.run_span_id().to_vec());
        assert_eq!(
            text(&root.attributes, "cicd.pipeline.result"),
            Some("success")
        );
        assert_eq!(text(&root.attributes, "error.type"), None);
        assert!(root.status.is_none());
        assert!(attribute(&root.attributes, PAUSE_ATTRIBUTE).is_none());
        assert_eq!(spans[1].span_id, key.span_id("stage", &["构建"]).to_vec());
    }

    #[test]
    fn a_cancelled_run_is_a_cancellation_not_an_error() {
        let mut run = failed_run();
        run.result = Some(RunResult::Aborted);
        let request = run_request(PROJECT, &run).expect("a completed run");
        let root = &spans_of(&request)[0];
        assert_eq!(
            text(&root.attributes, "cicd.pipeline.result"),
            Some("cancellation")
        );
        assert_eq!(text(&root.attributes, "error.type"), None);
        assert!(root.status.is_none());
    }

    #[test]
    fn runs_that_are_not_complete_or_not_named_are_no_trace() {
        let cases: [fn(&mut Run); 4] = [
            |run| {
                run.run_id = None;
                run.run_number = None;
            },
            |run| run.start = None,
            |run| run.end = None,
            |run| run.result = None,
        ];
        for change in cases {
            let mut run = failed_run();
            change(&mut run);
            assert!(run_request(PROJECT, &run).is_none(), "{run:?}");
        }
        // An empty run id is no id: the number stands in.
        let mut run = failed_run();
        run.run_id = Some(String::new());
        let request = run_request(PROJECT, &run).expect("named by its number");
        let key = RunKey {
            project_id: PROJECT,
            pipeline_id: PIPELINE,
            run: "7",
        };
        assert_eq!(spans_of(&request)[0].trace_id, key.trace_id().to_vec());
    }

    #[test]
    fn a_pipeline_without_a_name_is_named_by_its_id() {
        let mut run = failed_run();
        run.pipeline_name = None;
        let request = run_request(PROJECT, &run).expect("a completed run");
        assert_eq!(spans_of(&request)[0].name, format!("RUN {PIPELINE}"));
    }

    #[test]
    fn stages_and_jobs_of_one_name_get_distinct_ids() {
        let mut run = failed_run();
        run.stages[1].name = "构建".into();
        run.stages[1].jobs[0].name = "compile".into();
        let request = run_request(PROJECT, &run).expect("a completed run");
        let spans = spans_of(&request);
        let key = FAILED_RUN;
        assert_eq!(spans[4].span_id, key.span_id("stage", &["构建#2"]).to_vec());
        assert_eq!(
            text(&spans[4].attributes, "cicd.pipeline.task.run.id"),
            Some("构建#2")
        );
        assert_eq!(
            spans[5].span_id,
            key.span_id("job", &["构建#2", "compile"]).to_vec()
        );
        assert_ne!(spans[2].span_id, spans[4].span_id);
        assert_ne!(spans[3].span_id, spans[5].span_id);
    }

    #[test]
    fn stages_and_jobs_with_codearts_ids_are_named_by_them() {
        let mut run = failed_run();
        run.stages[0].id = Some("aac8063fbf084eec9722c77ece6dd283".into());
        run.stages[0].jobs[0].id = Some("1cde6a3815164cd18d0fa4038f876e46".into());
        // A second stage of the same id (never seen, but not forbidden) still gets its own span.
        run.stages[1].id = run.stages[0].id.clone();
        let request = run_request(PROJECT, &run).expect("a completed run");
        let spans = spans_of(&request);
        let key = FAILED_RUN;
        let stage = "aac8063fbf084eec9722c77ece6dd283";
        assert_eq!(spans[2].span_id, key.span_id("stage", &[stage]).to_vec());
        assert_eq!(
            text(&spans[2].attributes, "cicd.pipeline.task.run.id"),
            Some(stage)
        );
        let job = "1cde6a3815164cd18d0fa4038f876e46";
        assert_eq!(spans[3].span_id, key.span_id("job", &[stage, job]).to_vec());
        assert_eq!(spans[3].parent_span_id, spans[2].span_id);
        assert_eq!(
            text(&spans[3].attributes, "cicd.pipeline.task.run.id"),
            Some(job)
        );
        let second = format!("{stage}#2");
        assert_eq!(spans[4].span_id, key.span_id("stage", &[&second]).to_vec());
        // The second stage's job has no id: its name within the stage names it.
        assert_eq!(
            text(&spans[5].attributes, "cicd.pipeline.task.run.id"),
            Some(format!("{second}/unit").as_str())
        );
    }

    #[test]
    fn the_same_run_gives_the_same_bytes_and_batches_concatenate() {
        let run = failed_run();
        let once = encode(&run_request(PROJECT, &run).expect("a run"));
        let again = encode(&run_request(PROJECT, &run.clone()).expect("a run"));
        assert_eq!(once, again);

        let mut other = failed_run();
        other.run_id = Some("run-id-8".into());
        other.run_number = Some(8);
        let requests = [&run, &other].map(|run| run_request(PROJECT, run).expect("a run"));
        let together = round_trip(&batch(requests.clone()));
        assert_eq!(together.resource_spans.len(), 2);
        assert_eq!(together.resource_spans[0], requests[0].resource_spans[0]);
        assert_eq!(together.resource_spans[1], requests[1].resource_spans[0]);
        assert_ne!(
            together.resource_spans[0].scope_spans[0].spans[0].trace_id,
            together.resource_spans[1].scope_spans[0].spans[0].trace_id
        );
        assert!(batch(Vec::new()).resource_spans.is_empty());
    }

    #[test]
    fn times_are_exact_to_the_millisecond() {
        for (secs, ns) in [
            (0.0, 0),
            (1_700_000_000.001, 1_700_000_000_001_000_000),
            (1_700_000_040.123, 1_700_000_040_123_000_000),
            (1_799_999_999.999, 1_799_999_999_999_000_000),
        ] {
            assert_eq!(nanos(secs), ns, "{secs}");
        }
        // The API's milliseconds, through the seconds the model keeps, come back whole.
        for ms in [1_700_000_000_001_u64, 1_700_000_000_999, 1_234_567_890_123] {
            assert_eq!(nanos(ms as f64 / 1000.0), ms * 1_000_000);
        }
    }
}
