//! What each subcommand does. `anyhow` lives here and in `main` only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use stylefleet::consume::ConsumeOptions;
use stylefleet::dlq::{self, Filter};
use stylefleet::fleet::autoscale::ScaleRule;
use stylefleet::fleet::process::{ProcessError, ProcessRequest, process};
use stylefleet::fleet::workers::WorkerCommand;
use stylefleet::fleet::{self, FleetOptions};
use stylefleet::inspect::{self, JobView};
use stylefleet::lifecycle::shutdown_on_signals;
use stylefleet::queue::BATCHES;
use stylefleet::settings::{DeviceChoice, FloodLimits, Settings};
use stylefleet::stage::Context;

use crate::{Command, DlqAction, DlqFilter, Location, LogFormat, Planning, SasKind};

pub async fn run(command: Command, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    match command {
        Command::Process {
            input,
            output,
            style,
            workers,
            location,
            planning,
            quiet,
        } => {
            let ctx = context(&location, Some(&planning)).await?;
            let output = output.unwrap_or_else(|| default_output(&input));
            let request = ProcessRequest {
                input,
                output: output.clone(),
                style: style.style,
                strength: style.strength,
                preserve_colour: style.preserve_colour,
                workers,
            };
            let mut worker = worker_command(&location, workers, log_format)?;
            // The progress bar is the interface here: workers only speak up about problems.
            if std::env::var_os("RUST_LOG").is_none() {
                worker.env.push(("RUST_LOG".into(), "warn".into()));
            }
            let bar = progress_bar(quiet);
            let shutdown = shutdown_on_signals("the work in hand")?;
            let result = process(&ctx, &request, worker, shutdown, |view| {
                show_progress(&bar, view)
            })
            .await;
            bar.finish_and_clear();
            match result {
                Ok(view) => {
                    println!("{}", output.display());
                    let t = &view.timings;
                    eprintln!(
                        "job {} done: {} frames; split {:.1} s, style {:.1} s (all batches), stitch {:.1} s, total {:.1} s",
                        view.job,
                        view.frames_total,
                        t.get("split").unwrap_or(&0.0),
                        t.get("batches_style").unwrap_or(&0.0),
                        t.get("stitch").unwrap_or(&0.0),
                        t.get("total").unwrap_or(&0.0),
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(ProcessError::Failed { job, reason }) => {
                    eprintln!("error: job {job} failed: {reason}");
                    Ok(ExitCode::FAILURE)
                }
                Err(e @ ProcessError::Interrupted(_)) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(130))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Up {
            location,
            planning,
            max_workers,
            messages_per_worker,
            cooldown,
            poll,
            settle,
            grace,
        } => {
            let ctx = context(&location, Some(&planning)).await?;
            let options = FleetOptions {
                scale: ScaleRule {
                    max_workers,
                    messages_per_worker,
                    activation: 0,
                    cooldown,
                },
                worker: worker_command(&location, max_workers, log_format)?,
                poll,
                settle,
                grace,
            };
            let input = ctx
                .store
                .local_path("input")
                .unwrap_or_else(|| PathBuf::from("input/"));
            eprintln!(
                "watching {}/<style>/ ; outputs go to output/<style>/ ; Ctrl-C drains and stops",
                input.display()
            );
            fleet::run(&ctx, &options, shutdown_on_signals("the work in hand")?).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            location,
            exit_when_idle,
            grace,
            device,
        } => worker(&location, exit_when_idle, grace, device).await,
        Command::Status {
            job,
            location,
            json,
        } => status(&location, job.as_deref(), json).await,
        Command::Dlq { action } => dlq_command(action).await,
        Command::StyleImage {
            input,
            output,
            style,
        } => style_image(
            &input,
            &output,
            &style.style,
            style.strength,
            style.preserve_colour,
        ),
        Command::Sas {
            direction,
            blob,
            ttl_minutes,
            store,
        } => {
            let direction = match direction {
                SasKind::Upload => stylefleet::store::azure::sas::SasDirection::Upload,
                SasKind::Download => stylefleet::store::azure::sas::SasDirection::Download,
            };
            let ttl = Duration::from_secs(ttl_minutes.saturating_mul(60));
            let url = stylefleet::store::azure::sas::mint(&store, &blob, direction, ttl).await?;
            println!("{url}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Styles { sheet, output } => styles(sheet.as_deref(), output.as_deref()),
    }
}

/// Builds the stage context from the command line.
async fn context(location: &Location, planning: Option<&Planning>) -> anyhow::Result<Context> {
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
    }
    let location = stylefleet::setup::Location {
        data: location.data.clone(),
        store: location.store.clone(),
        log_store: location.log_store.clone(),
        queue: location.queue.clone(),
        scratch: None,
    };
    Ok(stylefleet::setup::context(&location, settings).await?)
}

/// How the supervisor starts a worker: this executable, same locations and log format, a fair
/// share of cores.
fn worker_command(
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
    })
}

async fn worker(
    location: &Location,
    exit_when_idle: Option<Duration>,
    grace: Duration,
    device: DeviceChoice,
) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_on_signals("the work in hand")?;
    // A supervised worker drains and exits with its supervisor instead of running on as an
    // orphan. The parent-death signal is SIGHUP, which only drains: the kernel sends it again
    // for every thread of the dying supervisor that the worker passes through on its way to
    // init, and a repeated SIGTERM would abort with the batch in hand still locked.
    if let Ok(parent) = std::env::var("STYLEFLEET_PARENT_PID") {
        drain_on_hangup(shutdown.clone())?;
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGHUP);
        if nix::unistd::getppid().as_raw().to_string() != parent {
            bail!("the supervisor is gone");
        }
    }
    let ctx = context(location, None).await?;
    let options = ConsumeOptions {
        grace,
        exit_when_idle,
        ..ConsumeOptions::new(BATCHES)
    };
    run_worker(&ctx, &options, device, shutdown).await
}

/// Cancels `token` on SIGHUP, however many arrive.
fn drain_on_hangup(token: CancellationToken) -> std::io::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if !token.is_cancelled() {
                tracing::info!("the supervisor is gone: finishing the work in hand");
                token.cancel();
            }
        }
    });
    Ok(())
}

#[cfg(feature = "style")]
async fn run_worker(
    ctx: &Context,
    options: &ConsumeOptions,
    device: DeviceChoice,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let device = device.select().context("--device")?;
    let stage = stylefleet::stage::style::StyleStage::new(device).stopping_with(shutdown.clone());
    let options = ConsumeOptions {
        in_flight: stylefleet::stage::style::in_flight(),
        ..options.clone()
    };
    let report = stylefleet::consume::consume(ctx, &stage, &options, shutdown).await?;
    tracing::info!(?report, "worker stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "style"))]
async fn run_worker(
    _: &Context,
    _: &ConsumeOptions,
    _: DeviceChoice,
    _: CancellationToken,
) -> anyhow::Result<ExitCode> {
    bail!("this build has no style stage (built without the `style` feature)")
}

async fn status(location: &Location, job: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let ctx = context(location, None).await?;
    let dead = inspect::dead_letters_by_job(ctx.queue.as_ref()).await?;
    let mut ids = inspect::job_ids(&ctx.store).await?;
    if let Some(prefix) = job {
        ids.retain(|id| id.as_str().starts_with(prefix));
        if ids.is_empty() {
            bail!("no job matches {prefix}");
        }
    }
    let mut views = Vec::new();
    for id in &ids {
        let letters = dead.get(id).map(Vec::as_slice).unwrap_or(&[]);
        match inspect::view(&ctx.store, id, letters).await {
            Ok(v) => views.push(v),
            Err(inspect::InspectError::NoSuchJob(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        println!("no jobs");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:<9}  {:>9}  {:>13}  {:>7}  SOURCE / OUTPUT / REASON",
        "JOB", "STATE", "BATCHES", "FRAMES", "FPS"
    );
    for v in &views {
        let detail = match (&v.reason, &v.output) {
            (Some(reason), _) => format!("{}: {reason}", v.source),
            (None, Some(out)) => format!("{} -> {out}", v.source),
            _ => v.source.clone(),
        };
        println!(
            "{:<16}  {:<9}  {:>9}  {:>13}  {:>7.2}  {detail}",
            v.job.as_str(),
            v.state.to_string(),
            format!("{}/{}", v.batches_done, v.batches_total),
            format!("{}/{}", v.frames_done, v.frames_total),
            v.fps
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn filter_of(f: &DlqFilter, id: Option<String>) -> Filter {
    Filter {
        queue: f.queue.clone(),
        job: f.job.clone(),
        reason: f.reason.clone(),
        older_than: f.older_than,
        id,
    }
}

async fn dlq_command(action: DlqAction) -> anyhow::Result<ExitCode> {
    match action {
        DlqAction::List { filter, json } => {
            let ctx = context(&filter.location, None).await?;
            let listed = dlq::list(ctx.queue.as_ref(), &filter_of(&filter, None)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else if listed.is_empty() {
                println!("no dead-lettered messages");
            } else {
                println!(
                    "{:<8}  {:<26}  {:<24}  {:>7}  DESCRIPTION",
                    "QUEUE", "ID", "REASON", "AGE(s)"
                );
                for l in &listed {
                    println!(
                        "{:<8}  {:<26}  {:<24}  {:>7}  {}",
                        l.queue, l.id, l.reason, l.age_secs, l.description
                    );
                }
            }
        }
        DlqAction::Show { id, filter } => {
            let ctx = context(&filter.location, None).await?;
            let listed =
                dlq::list(ctx.queue.as_ref(), &filter_of(&filter, Some(id.clone()))).await?;
            if listed.is_empty() {
                bail!("no dead-lettered message with id {id}");
            }
            println!("{}", serde_json::to_string_pretty(&listed)?);
        }
        DlqAction::Replay { filter, dry_run } => return bulk(&filter, true, dry_run).await,
        DlqAction::Purge { filter, dry_run } => return bulk(&filter, false, dry_run).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn bulk(filter: &DlqFilter, replay: bool, dry_run: bool) -> anyhow::Result<ExitCode> {
    let ctx = context(&filter.location, None).await?;
    let f = filter_of(filter, None);
    let total = dlq::list(ctx.queue.as_ref(), &f).await?.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    let verb = match (replay, dry_run) {
        (true, true) => "would replay",
        (true, false) => "replayed",
        (false, true) => "would purge",
        (false, false) => "purged",
    };
    let report = dlq::bulk(
        ctx.queue.as_ref(),
        Some(&ctx.store),
        &f,
        replay,
        dry_run,
        |l| {
            bar.inc(1);
            bar.println(format!("{verb} {} {} ({})", l.queue, l.id, l.reason));
        },
    )
    .await?;
    bar.finish_and_clear();
    println!(
        "{verb} {} of {} matching message(s)",
        if dry_run {
            report.matched
        } else {
            report.acted
        },
        report.matched
    );
    Ok(ExitCode::SUCCESS)
}

fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("video");
    input.with_file_name(format!("{stem}.styled.mp4"))
}

fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} frames  {per_sec}  ETA {eta}  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn show_progress(bar: &indicatif::ProgressBar, view: &JobView) {
    bar.set_length(view.frames_total);
    bar.set_position(view.frames_done);
    bar.set_message(format!(
        "{} ({}/{} batches)",
        view.state, view.batches_done, view.batches_total
    ));
}

#[cfg(feature = "style")]
fn style_image(
    input: &Path,
    output: &Path,
    style: &str,
    strength: f32,
    preserve_colour: bool,
) -> anyhow::Result<ExitCode> {
    use stylefleet_models::{StyleOptions, StyleSpec, Stylizer, read_image, write_image};
    let spec: StyleSpec = style.parse()?;
    let image = read_image(input)?;
    let stylizer = Stylizer::new(
        &spec,
        StyleOptions {
            strength,
            preserve_colour,
        },
        &stylefleet_models::device(true)?,
    )?;
    let styled = stylizer.style_batch(std::slice::from_ref(&image))?;
    let Some(first) = styled.first() else {
        bail!("the model returned no frame")
    };
    write_image(output, first)?;
    println!("{}", output.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "style")]
fn styles(sheet: Option<&Path>, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    match (sheet, output) {
        (Some(sheet), Some(output)) => {
            let image = stylefleet_models::read_image(sheet)?;
            let picture = stylefleet_models::contact_sheet(&image, 256)?;
            stylefleet_models::write_image(output, &picture)?;
            println!("{}", output.display());
        }
        _ => {
            for s in stylefleet_models::styles() {
                println!("{:>2}  {}", s.index, s.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "style"))]
fn style_image(_: &Path, _: &Path, _: &str, _: f32, _: bool) -> anyhow::Result<ExitCode> {
    bail!("this build has no models (built without the `style` feature)")
}

#[cfg(not(feature = "style"))]
fn styles(_: Option<&Path>, _: Option<&Path>) -> anyhow::Result<ExitCode> {
    bail!("this build has no models (built without the `style` feature)")
}
