//! How each stylefleet executable (the CLI, the Functions handler, the worker container) starts
//! and stops: logs on stderr, and the shutdown signals.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Logs on stderr, human-readable or one JSON object a line, filtered by `RUST_LOG` (default
/// `info`).
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
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
