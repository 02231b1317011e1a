//! The custom handler's entrypoint: configuration from the environment, the context opened once,
//! the HTTP server on `FUNCTIONS_CUSTOMHANDLER_PORT` until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use stylefleet::lifecycle;
use stylefleet::settings::Settings;
use stylefleet::setup::{self, Location};
use stylefleet_functions::server::{self, App};

/// The port when the host names none (a local run without the host).
const DEFAULT_PORT: u16 = 7071;

fn main() -> ExitCode {
    lifecycle::init_logging(lifecycle::json_logs_from_env());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let port = match std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT") {
        Ok(p) => p
            .parse::<u16>()
            .with_context(|| format!("FUNCTIONS_CUSTOMHANDLER_PORT={p:?}"))?,
        Err(_) => DEFAULT_PORT,
    };
    let mut location = Location::from_env();
    // The app folder is read-only on Flex Consumption: without a data folder, scratch goes to
    // the temporary folder.
    if location.scratch.is_none() && std::env::var_os("STYLEFLEET_DATA").is_none() {
        location.scratch = Some(std::env::temp_dir().join("stylefleet-functions"));
    }
    let settings = setup::settings_from_env(Settings::default())?;
    check_ffprobe().await?;
    let ctx = setup::context(&location, settings).await?;
    let mut app = App::new(ctx);
    if let Ok(n) = std::env::var("STYLEFLEET_STITCH_MAX_DELIVERIES") {
        app.stitch_max_deliveries = n
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("STYLEFLEET_STITCH_MAX_DELIVERIES={n:?}"))?;
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
    tracing::info!(
        port = listener.local_addr()?.port(),
        store = app.ctx.store.spec(),
        layout = ?app.layout,
        "stylefleet-functions ready"
    );
    server::serve(
        listener,
        Arc::new(app),
        lifecycle::shutdown_on_signals("the invocations in hand")?,
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Fails at start, with where it looked, when ffprobe cannot run: every split needs it.
async fn check_ffprobe() -> anyhow::Result<()> {
    let exe = std::env::current_exe().ok();
    let beside = exe
        .as_ref()
        .and_then(|e| e.parent())
        .map(|d| d.join("ffprobe"));
    let program = match &beside {
        Some(p) if p.exists() => p.clone(),
        _ => "ffprobe".into(),
    };
    let status = tokio::process::Command::new(&program)
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| {
            format!(
                "cannot run {}: put static ffmpeg and ffprobe beside this executable or on PATH",
                program.display()
            )
        })?;
    anyhow::ensure!(
        status.success(),
        "{} -version failed: {status}",
        program.display()
    );
    Ok(())
}
