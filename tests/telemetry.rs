#![allow(clippy::unwrap_used)]
//! Telemetry through the real binary: `stylefleet process` (the CLI and its worker processes)
//! exporting over OTLP/HTTP to a receiver inside the test (an axum server decoding the protobuf
//! bodies with the OpenTelemetry protocol's own types).
//!
//! - A job's spans arrive from every process (the split, each batch with its steps, the stitch),
//!   each carrying the job id, and the frames counter adds up to the clip's frame count.
//! - A batch that fails for good shows up in the failures counter and the failed jobs.
//! - With the endpoint on a closed port the job succeeds all the same, with one warning.

mod support;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use prost::Message;

use support::frames::pattern_clip;
use support::pipeline::{self as sp, assert_success};

const FRAMES: u32 = 8;
const BATCH_FRAMES: u32 = 4;

/// What the receiver got.
#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
}

type Shared = Arc<Mutex<Received>>;

/// An OTLP/HTTP receiver on 127.0.0.1; returns its base URL.
async fn receiver() -> (String, Shared) {
    async fn traces(State(got): State<Shared>, body: Bytes) -> Vec<u8> {
        let request = ExportTraceServiceRequest::decode(body).unwrap();
        got.lock().unwrap().traces.push(request);
        ExportTraceServiceResponse::default().encode_to_vec()
    }
    async fn metrics(State(got): State<Shared>, body: Bytes) -> Vec<u8> {
        let request = ExportMetricsServiceRequest::decode(body).unwrap();
        got.lock().unwrap().metrics.push(request);
        ExportMetricsServiceResponse::default().encode_to_vec()
    }
    let got = Shared::default();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// `stylefleet process` of an 8-frame clip in batches of 4 with one worker, exporting to
/// `endpoint`, with `env` besides.
async fn process(dir: &Path, endpoint: &str, env: &[(&str, &str)]) -> Output {
    let clip = pattern_clip(dir, "clip.mp4", "testsrc2", 64, 48, FRAMES);
    let out = dir.join("out.mp4");
    let mut cmd = sp::command(
        &dir.join("data"),
        [
            OsStr::new("process"),
            clip.as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
            OsStr::new("-s"),
            OsStr::new("0"),
            OsStr::new("--strength"),
            OsStr::new("0"),
            OsStr::new("--workers"),
            OsStr::new("1"),
            OsStr::new("--batch-frames"),
            OsStr::new(&BATCH_FRAMES.to_string()),
        ],
    );
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("APPLICATIONINSIGHTS_CONNECTION_STRING")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// A received span: its name, its process, its attributes.
struct Span {
    name: String,
    instance: String,
    attributes: Vec<KeyValue>,
}

fn spans(got: &Shared) -> Vec<Span> {
    let got = got.lock().unwrap();
    let mut spans = Vec::new();
    for request in &got.traces {
        for resource in &request.resource_spans {
            let attrs = resource
                .resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default();
            let instance = string(&attrs, "service.instance.id")
                .unwrap_or("?")
                .to_owned();
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    spans.push(Span {
                        name: span.name.clone(),
                        instance: instance.clone(),
                        attributes: span.attributes.clone(),
                    });
                }
            }
        }
    }
    spans
}

/// The total of a cumulative integer counter over every process that reported it, per value of
/// the attribute `by` (`""` for all points): the last value each process sent for each series,
/// added up.
fn counter(got: &Shared, name: &str, by: &str) -> HashMap<String, i64> {
    let got = got.lock().unwrap();
    // (process, series) -> (time, label, value): the latest point of each series.
    let mut latest: HashMap<(String, String), (u64, String, i64)> = HashMap::new();
    for request in &got.metrics {
        for resource in &request.resource_metrics {
            let attrs = resource
                .resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default();
            let instance = string(&attrs, "service.instance.id")
                .unwrap_or("?")
                .to_owned();
            for scope in &resource.scope_metrics {
                for metric in scope.metrics.iter().filter(|m| m.name == name) {
                    let Some(Data::Sum(sum)) = &metric.data else {
                        panic!("{name} is not a sum: {metric:?}");
                    };
                    for point in &sum.data_points {
                        let Some(number_data_point::Value::AsInt(value)) = point.value else {
                            panic!("{name} is not an integer: {point:?}");
                        };
                        let label = string(&point.attributes, by).unwrap_or("").to_owned();
                        let series = format!("{:?}", point.attributes);
                        let entry = latest.entry((instance.clone(), series)).or_insert((
                            0,
                            String::new(),
                            0,
                        ));
                        if point.time_unix_nano >= entry.0 {
                            *entry = (point.time_unix_nano, label, value);
                        }
                    }
                }
            }
        }
    }
    let mut totals = HashMap::new();
    for (_, label, value) in latest.into_values() {
        *totals.entry(label).or_insert(0) += value;
    }
    totals
}

/// Waits (up to 20 s) until `ready` holds for what arrived.
async fn until(got: &Shared, what: &str, ready: impl Fn(&Shared) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready(got) {
        assert!(Instant::now() < deadline, "{what}: never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reports_its_spans_and_frames_from_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, got) = receiver().await;
    let output = process(dir.path(), &endpoint, &[]).await;
    assert_success("process with telemetry", &output);
    let job = sp::job_of_process(&output);

    let of_job = |s: &Span| string(&s.attributes, "stylefleet.job") == Some(job.as_str());
    until(&got, "the stitch's span", |got| {
        spans(got)
            .iter()
            .any(|s| s.name == "stitch process" && of_job(s))
    })
    .await;
    let spans = spans(&got);
    let named = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();

    let split = named("split");
    assert_eq!(split.len(), 1, "one split");
    assert!(of_job(split[0]), "the split names the job");
    assert!(
        named("probe").iter().any(|s| of_job(s)),
        "the probe of the plan"
    );

    let batches = named("batches process");
    let mut indices: Vec<i64> = batches
        .iter()
        .filter(|s| of_job(s))
        .map(|s| {
            int(&s.attributes, "stylefleet.batch").unwrap_or_else(|| panic!("{:?}", s.attributes))
        })
        .collect();
    indices.sort_unstable();
    assert_eq!(indices, [0, 1], "one span per batch, each naming the job");
    for batch in &batches {
        assert_eq!(
            string(&batch.attributes, "stylefleet.outcome"),
            Some("completed")
        );
        assert_eq!(
            string(&batch.attributes, "messaging.destination.name"),
            Some("batches")
        );
    }
    for step in [
        "style.fetch_source",
        "style.decode",
        "style.style",
        "style.encode",
        "style.upload",
    ] {
        let steps = named(step);
        assert_eq!(steps.len(), 2, "{step} once per batch");
        assert!(steps.iter().all(|s| of_job(s)), "{step} names the job");
        assert_eq!(int(&steps[0].attributes, "stylefleet.frames"), Some(4));
    }
    let stitch = named("stitch process");
    assert!(stitch.iter().any(|s| of_job(s)));
    // Concatenated as encoded, or stabilised on the way (the temporal setting decides).
    let joined = [named("stitch.concat"), named("stitch.stabilise")].concat();
    assert!(
        joined.iter().any(|s| of_job(s)),
        "the stitch's concat or stabilise step"
    );
    for step in ["stitch.verify", "stitch.upload"] {
        assert!(named(step).iter().any(|s| of_job(s)), "{step}");
    }
    // The batches ran in the worker process, the split and the stitch in the command's.
    assert_ne!(batches[0].instance, split[0].instance);
    assert_eq!(stitch[0].instance, split[0].instance);

    until(&got, "the frames counter", |got| {
        counter(got, "stylefleet.frames", "").values().sum::<i64>() >= i64::from(FRAMES)
    })
    .await;
    let frames: i64 = counter(&got, "stylefleet.frames", "").values().sum();
    assert_eq!(frames, i64::from(FRAMES), "every frame styled once");
    let jobs = counter(&got, "stylefleet.jobs", "state");
    assert_eq!(jobs.get("planned"), Some(&1), "{jobs:?}");
    assert_eq!(jobs.get("done"), Some(&1), "{jobs:?}");
    let outcomes = counter(&got, "stylefleet.batches", "outcome");
    assert_eq!(outcomes.get("completed"), Some(&2), "{outcomes:?}");
    let queues = gauged_queues(&got);
    assert!(
        queues.contains("batches") && queues.contains("stitch"),
        "the command reports its queues' depth: {queues:?}"
    );
}

/// The queues `stylefleet.queue.depth` reported a depth for.
fn gauged_queues(got: &Shared) -> std::collections::BTreeSet<String> {
    let got = got.lock().unwrap();
    let mut queues = std::collections::BTreeSet::new();
    for request in &got.metrics {
        for resource in &request.resource_metrics {
            for scope in &resource.scope_metrics {
                for metric in &scope.metrics {
                    if metric.name != "stylefleet.queue.depth" {
                        continue;
                    }
                    let Some(Data::Gauge(gauge)) = &metric.data else {
                        panic!("the queue depth is not a gauge: {metric:?}");
                    };
                    for point in &gauge.data_points {
                        queues.extend(string(&point.attributes, "queue").map(str::to_owned));
                    }
                }
            }
        }
    }
    queues
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_shows_in_the_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, got) = receiver().await;
    let faults = dir.path().join("faults");
    let output = process(
        dir.path(),
        &endpoint,
        &[
            ("STYLEFLEET_FAULTS", "batch.after-chunk=fail"),
            ("STYLEFLEET_FAULT_DIR", faults.to_str().unwrap()),
        ],
    )
    .await;
    assert!(!output.status.success(), "the fault did not fail the job");

    until(&got, "the failure", |got| {
        !counter(got, "stylefleet.failures", "stage").is_empty()
    })
    .await;
    let failures = counter(&got, "stylefleet.failures", "reason");
    assert_eq!(failures.get("PermanentFailure"), Some(&1), "{failures:?}");
    let stages = counter(&got, "stylefleet.failures", "stage");
    assert_eq!(stages.get("batch"), Some(&1), "{stages:?}");
    until(&got, "the failed job", |got| {
        counter(got, "stylefleet.jobs", "state").contains_key("failed")
    })
    .await;
    let jobs = counter(&got, "stylefleet.jobs", "state");
    assert_eq!(jobs.get("failed"), Some(&1), "{jobs:?}");
    let outcomes = counter(&got, "stylefleet.batches", "outcome");
    assert_eq!(outcomes.get("dead_lettered"), Some(&1), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_a_warning_not_the_job() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago, and nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{closed}");
    let started = Instant::now();
    let output = process(dir.path(), &endpoint, &[]).await;
    assert_success("process with the collector down", &output);
    assert!(dir.path().join("out.mp4").exists());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("over OTLP failed"))
        .count();
    // One per signal and process at most (the command and its worker), never one per export.
    assert!(
        (1..=4).contains(&warnings),
        "{warnings} warnings:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
