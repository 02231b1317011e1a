//! The exporters' plumbing: OTLP over HTTP (protobuf, the async reqwest client), batch span
//! processors and periodic metric readers on the Tokio runtime, and [`Warned`], which turns an
//! exporter's failures into one warning.
//!
//! The SDK's default processors export from threads of their own, which the async HTTP client
//! cannot run on; the `*_with_async_runtime` ones run the exports as tasks on our runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_otlp::{MetricExporter, SpanExporter as OtlpSpanExporter, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// An exporter that logs its first failure as a warning and says nothing of the others, so a
/// collector that is down costs one line, not one a batch. Every export still goes through.
#[derive(Debug)]
pub struct Warned<E> {
    /// The exporter.
    inner: E,
    /// What it exports to, for the warning.
    what: &'static str,
    /// Set once the warning is out.
    warned: AtomicBool,
}

impl<E> Warned<E> {
    /// Wraps `inner`, which exports to `what` ("OTLP spans", ...).
    pub fn new(inner: E, what: &'static str) -> Self {
        Warned {
            inner,
            what,
            warned: AtomicBool::new(false),
        }
    }

    fn note(&self, result: &OTelSdkResult) {
        if let Err(error) = result
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                %error,
                "exporting {} failed; telemetry is dropped while this lasts (further failures are not logged)",
                self.what
            );
        }
    }
}

impl<E: SpanExporter> SpanExporter for Warned<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Warned<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.note(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// A batch span processor on the runtime for `exporter`.
pub fn batch_spans<E: SpanExporter + 'static>(exporter: Warned<E>) -> BatchSpanProcessor<Tokio> {
    BatchSpanProcessor::builder(exporter, Tokio).build()
}

/// A periodic reader on the runtime for `exporter` (`OTEL_METRIC_EXPORT_INTERVAL`, default
/// 60 s; a last export at shutdown).
pub fn periodic<E: PushMetricExporter>(exporter: Warned<E>) -> PeriodicReader<Warned<E>> {
    PeriodicReader::builder(exporter, Tokio).build()
}

/// Spans to the OTLP endpoint the environment names.
pub fn otlp_spans() -> Result<BatchSpanProcessor<Tokio>, opentelemetry_otlp::ExporterBuildError> {
    let exporter = OtlpSpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()?;
    Ok(batch_spans(Warned::new(exporter, "spans over OTLP")))
}

/// Metrics to the OTLP endpoint the environment names (cumulative, the OTLP default).
pub fn otlp_metrics()
-> Result<PeriodicReader<Warned<MetricExporter>>, opentelemetry_otlp::ExporterBuildError> {
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()?;
    Ok(periodic(Warned::new(exporter, "metrics over OTLP")))
}
