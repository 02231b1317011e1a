//! What each subcommand does, one module each. `anyhow` lives here and in `main` only.

pub mod clean;
pub mod dlq;
pub mod docs;
pub mod dry_run;
pub mod images;
pub mod process;
pub mod sas;
pub mod sheet;
pub mod status;
pub mod up;
pub mod worker;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context as _;

use stylefleet::fleet::workers::WorkerCommand;
use stylefleet::settings::{FloodLimits, Settings};
use stylefleet::stage::Context;

use crate::Command;
use crate::args::{Location, LogFormat, Planning};

pub async fn run(command: Command, log_format: LogFormat, quiet: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::Process(args) => process::run(args, log_format, quiet).await,
        Command::Up(args) => up::run(args, log_format, quiet).await,
        Command::Worker(args) => worker::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Dlq { action } => dlq::run(action).await,
        Command::Jobs {
            action: clean::JobsAction::Rm(args),
        } => clean::rm(args).await,
        Command::Clean(args) => clean::clean(args).await,
        Command::StyleImage(args) => images::style_image(args),
        Command::Sas(args) => sas::run(args).await,
        Command::Styles(args) => images::styles(args).await,
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    }
}

/// Builds the stage context from the command line.
pub async fn context(location: &Location, planning: Option<&Planning>) -> anyhow::Result<Context> {
    let settings = settings(planning);
    let location = stylefleet::setup::Location {
        data: location.data.clone(),
        store: location.store.clone(),
        log_store: location.log_store.clone(),
        queue: location.queue.clone(),
        scratch: None,
    };
    Ok(stylefleet::setup::context(&location, settings).await?)
}

/// The settings the command line asks for (the defaults where it says nothing).
pub fn settings(planning: Option<&Planning>) -> Settings {
    let mut settings = Settings::default();
    if let Some(p) = planning {
        settings.batch_frames = p.batch_frames;
        settings.model_batch = p.model_batch;
        if let Some(b) = p.max_bytes {
            settings.limits.max_bytes = b;
        }
        if let Some(d) = p.max_duration {
            settings.limits.max_duration_s = d;
        }
        if let Some(s) = p.max_side {
            settings.limits.max_width = s;
            settings.limits.max_height = s;
        }
        settings.flood = FloodLimits {
            max_active_jobs: p.max_active_jobs,
            max_backlog: p.max_backlog,
            max_queued_per_job: p.max_queued_per_job,
        };
        settings.temporal = p.temporal.0.clone();
        settings.encoder = p.encoding.settings();
    }
    settings
}

/// How the supervisor starts a worker: this executable, same locations and log format, a fair
/// share of cores.
pub fn worker_command(
    location: &Location,
    workers: usize,
    log_format: LogFormat,
) -> anyhow::Result<WorkerCommand> {
    let program = std::env::current_exe().context("locating this executable")?;
    let format = match log_format {
        LogFormat::Human => "human",
        LogFormat::Json => "json",
    };
    let mut args: Vec<OsString> = vec![
        "--log-format".into(),
        format.into(),
        "worker".into(),
        "--data".into(),
        location.data.clone().into_os_string(),
    ];
    for (flag, value) in [
        ("--store", &location.store),
        ("--log-store", &location.log_store),
        ("--queue", &location.queue),
    ] {
        if let Some(v) = value {
            args.push(flag.into());
            args.push(v.into());
        }
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = std::env::var("STYLEFLEET_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or((cores / workers.max(1)).max(1));
    Ok(WorkerCommand {
        program,
        args,
        env: vec![
            ("RAYON_NUM_THREADS".into(), threads.to_string().into()),
            (
                "STYLEFLEET_PARENT_PID".into(),
                std::process::id().to_string().into(),
            ),
        ],
        through_terminal: false,
    })
}
