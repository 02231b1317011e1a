//! `/metrics`: the instruments in the Prometheus text format, for a process with a health
//! server (the worker container, the aggregator container). A reader registered with the meter
//! provider collects into a Prometheus registry when scraped (`opentelemetry-prometheus` with
//! `prometheus` built without its protobuf support).
//!
//! Names follow the Prometheus conventions the exporter applies: dots become underscores,
//! counters end in `_total`, units are suffixed (`stylefleet_frames_total`,
//! `stylefleet_batch_duration_seconds_bucket`, `stylefleet_queue_depth`).

use std::sync::OnceLock;

use opentelemetry_prometheus::PrometheusExporter;
use prometheus::{Encoder, TextEncoder};

/// The registry the reader fills; set once, by the first [`reader`].
static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

/// The content type of [`text`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A reader for the meter provider that makes [`text`] answer.
pub(crate) fn reader() -> Result<PrometheusExporter, opentelemetry_sdk::error::OTelSdkError> {
    let registry = REGISTRY.get_or_init(prometheus::Registry::new).clone();
    opentelemetry_prometheus::exporter()
        .with_registry(registry)
        .build()
}

/// The current measurements in the Prometheus text format; `None` when this process set up no
/// reader (telemetry off).
pub fn text() -> Option<String> {
    let registry = REGISTRY.get()?;
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "cannot encode the metrics");
        return None;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The axum handler of `GET /metrics`: [`text`], or 404 when this process has no reader.
pub async fn handler() -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    match text() {
        Some(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are off in this process (OTEL_SDK_DISABLED)\n",
        )
            .into_response(),
    }
}
