//! How each stylefleet executable (the CLI, the Functions handler, the worker container) starts
//! and stops: its arguments and environment, logs on stderr, telemetry ([`crate::telemetry`],
//! flushed at exit), the runtime, and the shutdown signals.

use std::error::Error;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::telemetry::{Service, Telemetry};

/// How an executable logs on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Logging {
    /// One JSON object a line instead of human-readable lines.
    pub json: bool,
    /// Errors only (`RUST_LOG`, when set, still decides).
    pub quiet: bool,
    /// Who reports telemetry.
    pub service: Service,
}

/// Logs on stderr as `logging` says, filtered by `RUST_LOG` (default `info`, or `error` when
/// quiet). Lines are written above any progress bar ([`crate::terminal`]), in colour only on a
/// terminal that does not set `NO_COLOR`. Telemetry is set up from the environment beside them
/// (spans of the `stylefleet*` crates at `info` and above go to the exporters whatever
/// `RUST_LOG` says); the returned guard flushes it ([`Telemetry::shutdown`]). Call it inside the
/// runtime that is to run the exports.
pub fn init(logging: Logging) -> Telemetry {
    let default = if logging.quiet { "error" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Spans are for the exporters: log lines stay as they were, without span prefixes. The SDK's
    // own lines stay out too: its exporters' failures are reported once (`telemetry::export`).
    let lines = tracing_subscriber::filter::filter_fn(|meta| {
        !meta.is_span() && !meta.target().starts_with("opentelemetry")
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(crate::terminal::LogWriter)
        .with_ansi(crate::terminal::colour_on_stderr());
    let fmt = if logging.json {
        fmt.json().with_filter(filter.and(lines)).boxed()
    } else {
        fmt.with_filter(filter.and(lines)).boxed()
    };
    let (telemetry, tracer) = Telemetry::from_env(logging.service);
    let spans = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("stylefleet") && *meta.level() <= tracing::Level::INFO
            }))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(spans)
        .try_init();
    telemetry
}

/// Whether `STYLEFLEET_LOG_FORMAT` asks for JSON logs (the executables configured from the
/// environment only).
pub fn json_logs_from_env() -> bool {
    std::env::var("STYLEFLEET_LOG_FORMAT").is_ok_and(|f| f == "json")
}

/// A token cancelled by the first SIGTERM or SIGINT (Ctrl-C): finish `in_hand`, then stop. The
/// second signal prints `aborted` and exits at once with code 130. Must be called inside a Tokio
/// runtime; fails only when the signal handlers cannot be installed.
pub fn shutdown_on_signals(in_hand: &'static str) -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for round in 0..2 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!("stopping: finishing {in_hand} (again to abort)");
                cancel.cancel();
            } else {
                eprintln!("aborted");
                std::process::exit(130);
            }
        }
    });
    Ok(token)
}

/// The `main` of each executable: logs on stderr, telemetry for `service`, a multi-threaded
/// runtime, `run` on it, and its error with its causes ([`report`]) on stderr with exit code 1.
pub fn main<E: AsRef<dyn Error + Send + Sync + 'static>>(
    service: Service,
    json_logs: bool,
    run: impl Future<Output = Result<ExitCode, E>>,
) -> ExitCode {
    main_with(
        Logging {
            json: json_logs,
            quiet: false,
            service,
        },
        run,
    )
}

/// [`main`] with logs set up as `logging` says. Telemetry is flushed when `run` ends, also
/// after a SIGTERM drain, so the last batch's spans and measurements are exported.
pub fn main_with<E: AsRef<dyn Error + Send + Sync + 'static>>(
    logging: Logging,
    run: impl Future<Output = Result<ExitCode, E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            init_without_runtime(logging);
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _inside = runtime.enter();
        init(logging)
    };
    let code = match runtime.block_on(run) {
        Ok(code) => code,
        Err(e) => {
            crate::terminal::eprint_line(&format!("error: {}", report(e.as_ref())));
            ExitCode::FAILURE
        }
    };
    // Outside the runtime's tasks, with the runtime alive: the last exports run on it.
    telemetry.shutdown();
    code
}

/// Logs without a runtime: telemetry cannot export, and says so.
fn init_without_runtime(logging: Logging) {
    init(logging).shutdown();
}

/// An error and its causes, `: `-separated, skipping a cause whose text the message before it
/// already ends with (errors that print their source in their own message, as object_store's
/// and ours do, would otherwise say it twice).
pub fn report(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// Parses the command line and the environment into `P`, exiting with clap's message (code 2)
/// when they do not fit. An environment variable set to the empty string counts as unset, as a
/// deployment that blanks a setting means "the default".
pub fn parse_args<P: clap::Parser>() -> P {
    match parse_from(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => e.exit(),
    }
}

/// [`parse_args`] over the given arguments (the first names the program), for tests.
pub fn parse_from<P: clap::Parser>(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<P, clap::Error> {
    let command = P::command().mut_args(|arg| {
        let blank = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some_and(|v| v.is_empty()));
        if blank { arg.env(None) } else { arg }
    });
    let mut matches = command.try_get_matches_from(args)?;
    P::from_arg_matches_mut(&mut matches)
}

/// What a queue consumer run as a service (the worker container, the aggregator container)
/// takes besides its location: flags, or the environment its container is given.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServiceArgs {
    /// Port of the health endpoint (0 picks a free port).
    #[arg(long, env = "STYLEFLEET_HEALTH_PORT", default_value_t = 8080)]
    pub health_port: u16,
    /// Seconds the work in hand may run on after SIGTERM before it is abandoned for another
    /// replica.
    #[arg(long, env = "STYLEFLEET_SHUTDOWN_GRACE_SECS", default_value = "30", value_parser = parse_seconds)]
    pub grace: Duration,
    /// Exit after the queue has been empty this many seconds (default: never; the scaler stops
    /// idle replicas).
    #[arg(long, env = "STYLEFLEET_EXIT_WHEN_IDLE_SECS", value_parser = parse_seconds)]
    pub exit_when_idle: Option<Duration>,
}

/// A number of seconds (`30`, `1.5`), for clap's `value_parser`: negative, infinite or
/// not-a-number values are refused with a message instead of a panic.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a number of seconds: {e}"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{text:?} is not a non-negative, finite number of seconds"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_report_says_each_cause_once() {
        let io = std::io::Error::other("disk full");
        let store = crate::store::StoreError::Io {
            context: "writing x".into(),
            source: io,
        };
        assert_eq!(store.to_string(), "writing x: disk full");
        assert_eq!(report(&store), "writing x: disk full");
    }

    #[test]
    fn seconds_parse_or_say_why() {
        assert_eq!(parse_seconds("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_seconds("0").unwrap(), Duration::ZERO);
        for bad in ["-1", "NaN", "inf", "soon", "", "1e300"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
