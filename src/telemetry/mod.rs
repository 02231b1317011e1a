//! Telemetry: OpenTelemetry traces and metrics from every executable (the CLI, the worker
//! container, the Functions handler), exported over OTLP, to Application Insights, and scraped
//! by Prometheus from the worker's `/metrics`.
//!
//! # Configuration: the standard environment only
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//!   `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`): export that signal over OTLP/HTTP (protobuf) to a
//!   collector. The exporter reads its other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout)
//!   itself; `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s) and `OTEL_BSP_*` pace the exports.
//! - `APPLICATIONINSIGHTS_CONNECTION_STRING`: export both signals to that Application Insights
//!   component ([`azure`]); `APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD[;ClientId=..]`
//!   sends an Entra ID token with each upload (what a component with local auth off requires).
//! - `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`: the resource; `service.name` defaults to
//!   the executable's ([`Service`]), `service.instance.id` to `$HOSTNAME:<pid>`.
//! - `OTEL_SDK_DISABLED=true`: nothing is set up, whatever else is set.
//!
//! With none of them set no provider is installed: spans are plain `tracing` spans that no layer
//! records, and the instruments are OpenTelemetry's no-ops. The worker container installs a
//! meter provider in any case, for its `/metrics` ([`scrape`]).
//!
//! # Failures
//!
//! Exports run in background tasks; a span or a measurement never waits for them. An exporter
//! that fails (a collector down, a refused token) logs one warning and is otherwise silent
//! ([`export`]); the SDK's own log lines are kept out of stderr. At exit, [`Telemetry::shutdown`]
//! flushes what is left, bounded by [`SHUTDOWN_TIMEOUT`].
//!
//! # Spans
//!
//! One span per delivery in the consume loop (`delivery`: `messaging.destination.name`,
//! `messaging.message.id`, `messaging.delivery_count`, `stylefleet.job`, `stylefleet.batch`,
//! `stylefleet.outcome`), with the stage's steps as children: the split (`split` > `probe`,
//! `plan`), a batch (`style.fetch_source`, `style.decode`, `style.style`, `style.encode`,
//! `style.upload`) and the stitch (`stitch.concat` or `stitch.stabilise`, `stitch.verify`,
//! `stitch.upload`). Every span carries `stylefleet.job` where the job is known: the job id is
//! the correlator across processes (the messages carry no trace context).
//!
//! # Instruments
//!
//! See [`metrics`]: `stylefleet.jobs`, `stylefleet.batches`, `stylefleet.frames`,
//! `stylefleet.batch.duration`, `stylefleet.failures`, `stylefleet.queue.depth`,
//! `stylefleet.lock.renewals`.

pub mod azure;
pub mod export;
pub mod metrics;
pub mod scrape;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// How long [`Telemetry::shutdown`] may take to flush the providers, whatever the exporters'
/// own timeouts and retries (a collector that swallows packets would hold the exit for each
/// attempt's timeout otherwise).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Which executable reports, and what it offers besides the exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The default `service.name`.
    pub name: &'static str,
    /// Whether the process serves `/metrics` (a meter provider is installed even without an
    /// exporter).
    pub scrape: bool,
}

impl Service {
    /// The `stylefleet` CLI (and the worker processes of the embedded fleet).
    pub const CLI: Service = Service {
        name: "stylefleet",
        scrape: false,
    };
    /// The worker container, with `/metrics` on its health server.
    pub const WORKER: Service = Service {
        name: "stylefleet-worker",
        scrape: true,
    };
    /// The Functions custom handler (the splitter).
    pub const FUNCTIONS: Service = Service {
        name: "stylefleet-functions",
        scrape: false,
    };
    /// The aggregator container (the Functions executable's `aggregate` mode), with `/metrics`
    /// on its health server.
    pub const AGGREGATOR: Service = Service {
        name: "stylefleet-functions",
        scrape: true,
    };
}

impl Default for Service {
    fn default() -> Self {
        Service::CLI
    }
}

/// The installed providers; [`shutdown`](Self::shutdown) flushes them at exit.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Where spans go; `None` when no exporter is configured.
    tracer: Option<SdkTracerProvider>,
    /// Where measurements go; `None` when nothing exports or scrapes them.
    meter: Option<SdkMeterProvider>,
}

/// What the environment asks for (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `OTEL_SDK_DISABLED=true`.
    pub disabled: bool,
    /// Spans go to an OTLP endpoint.
    pub otlp_traces: bool,
    /// Metrics go to an OTLP endpoint.
    pub otlp_metrics: bool,
    /// The Application Insights connection string.
    pub azure: Option<String>,
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Reads the variables through `var` (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let any = var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        Config {
            disabled: var("OTEL_SDK_DISABLED")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            otlp_traces: any || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some(),
            otlp_metrics: any || var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some(),
            azure: var(azure::CONNECTION_STRING_VAR),
        }
    }

    /// Whether anything is exported.
    pub fn exports(&self) -> bool {
        !self.disabled && (self.otlp_traces || self.otlp_metrics || self.azure.is_some())
    }
}

impl Telemetry {
    /// Sets up what the environment asks for `service`: the providers, the global meter
    /// provider behind [`metrics`], and the tracer a `tracing` layer sends spans to. Must run
    /// inside a Tokio runtime when anything is exported (the exports are tasks on it); outside
    /// one, it sets up nothing and says so.
    pub fn from_env(service: Service) -> (Telemetry, Option<opentelemetry_sdk::trace::Tracer>) {
        let config = Config::from_env();
        if config.disabled || (!config.exports() && !service.scrape) {
            return (Telemetry::default(), None);
        }
        if config.exports() && tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!("telemetry is configured but there is no runtime to export from: off");
            return (Telemetry::default(), None);
        }
        let resource = resource(service);
        let azure = config.azure.as_deref().and_then(|connection| {
            azure::exporter(connection)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot set up the Application Insights exporter; nothing is sent there"))
                .ok()
        });
        let tracer = traces(&config, azure.as_ref(), &resource);
        let meter = meters(&config, azure.as_ref(), service, &resource);
        if let Some(meter) = &meter {
            opentelemetry::global::set_meter_provider(meter.clone());
            metrics::set_read();
        }
        let span_source = tracer.as_ref().map(|t| t.tracer("stylefleet"));
        (Telemetry { tracer, meter }, span_source)
    }

    /// Whether spans are exported.
    pub fn traces(&self) -> bool {
        self.tracer.is_some()
    }

    /// Flushes and stops the providers within [`SHUTDOWN_TIMEOUT`], so the last batch's spans
    /// and measurements are not lost; past it, what is left is dropped with a warning. Call it
    /// outside the runtime's tasks (after `block_on`), while the runtime is still alive: the
    /// exports run on it.
    pub fn shutdown(self) {
        let Telemetry { tracer, meter } = self;
        if tracer.is_none() && meter.is_none() {
            return;
        }
        let (done, finished) = std::sync::mpsc::channel();
        // A thread of its own, so that the wait is bounded whatever the providers do.
        let flush = std::thread::Builder::new()
            .name("telemetry-flush".into())
            .spawn(move || {
                if let Some(tracer) = tracer
                    && let Err(e) = tracer.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
                {
                    tracing::debug!(error = %e, "flushing the spans at exit failed");
                }
                if let Some(meter) = meter
                    && let Err(e) = meter.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
                {
                    tracing::debug!(error = %e, "flushing the metrics at exit failed");
                }
                let _ = done.send(());
            });
        match flush {
            Ok(_) => {
                if finished.recv_timeout(SHUTDOWN_TIMEOUT).is_err() {
                    tracing::warn!(
                        timeout = ?SHUTDOWN_TIMEOUT,
                        "telemetry was not flushed in time at exit; the rest is dropped"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot flush telemetry at exit"),
        }
    }
}

/// The resource: `service.name` from the environment, else the executable's, and the
/// instance that reports (`$HOSTNAME:<pid>`, as [`crate::setup::worker_name`] says it).
fn resource(service: Service) -> Resource {
    let from_env = Resource::builder().build();
    let named = from_env
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder().with_attribute(KeyValue::new(
        "service.instance.id",
        crate::setup::worker_name(),
    ));
    if !named {
        builder = builder.with_service_name(service.name);
    }
    builder.build()
}

/// The Application Insights exporter (spans and metrics share its client).
type AzureExporter = opentelemetry_application_insights::Exporter<azure::IngestionClient>;

/// The tracer provider, when an exporter is configured.
fn traces(
    config: &Config,
    azure: Option<&AzureExporter>,
    resource: &Resource,
) -> Option<SdkTracerProvider> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut any = false;
    if config.otlp_traces {
        match export::otlp_spans() {
            Ok(processor) => {
                builder = builder.with_span_processor(processor);
                any = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up the OTLP span exporter; spans are not exported")
            }
        }
    }
    if let Some(exporter) = azure {
        let exporter = export::Warned::new(exporter.clone(), "spans to Application Insights");
        builder = builder.with_span_processor(export::batch_spans(exporter));
        any = true;
    }
    any.then(|| builder.build())
}

/// The meter provider, when an exporter is configured or the process serves `/metrics`.
fn meters(
    config: &Config,
    azure: Option<&AzureExporter>,
    service: Service,
    resource: &Resource,
) -> Option<SdkMeterProvider> {
    let mut builder = SdkMeterProvider::builder().with_resource(resource.clone());
    let mut any = false;
    if config.otlp_metrics {
        match export::otlp_metrics() {
            Ok(reader) => {
                builder = builder.with_reader(reader);
                any = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up the OTLP metric exporter; metrics are not exported")
            }
        }
    }
    if let Some(exporter) = azure {
        let exporter = export::Warned::new(exporter.clone(), "metrics to Application Insights");
        builder = builder.with_reader(export::periodic(exporter));
        any = true;
    }
    if service.scrape {
        match scrape::reader() {
            Ok(reader) => {
                builder = builder.with_reader(reader);
                any = true;
            }
            Err(e) => tracing::warn!(error = %e, "cannot set up /metrics"),
        }
    }
    any.then(|| builder.build())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn each_signal_exports_where_the_environment_says() {
        assert!(!config(&[]).exports());
        let both = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        assert!(both.otlp_traces && both.otlp_metrics && both.exports());
        let traces = config(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces",
        )]);
        assert!(traces.otlp_traces && !traces.otlp_metrics);
        let azure = config(&[(azure::CONNECTION_STRING_VAR, "InstrumentationKey=k")]);
        assert!(azure.exports() && !azure.otlp_traces);
        let off = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert!(off.disabled && !off.exports());
    }
}
