//! Worker processes: `stylefleet worker` children of the supervisor, started and stopped to match
//! the autoscaler. A worker is stopped with SIGTERM, which makes it finish or release its batch
//! (see [`crate::consume`]); a worker that dies any other way is reaped and, if still wanted,
//! replaced, while the queue redelivers what it held once its lock expires.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How to start one worker.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The program (normally this executable).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment (for example `RAYON_NUM_THREADS`).
    pub env: Vec<(OsString, OsString)>,
    /// Whether the workers' stderr is read line by line and written above the progress bars
    /// ([`crate::terminal`]), for a supervisor that draws one; otherwise they write to the
    /// inherited stderr directly (and go on doing so should the supervisor die).
    pub through_terminal: bool,
}

/// The running workers.
#[derive(Debug)]
pub struct WorkerPool {
    command: WorkerCommand,
    /// Running children, oldest first.
    running: Vec<Child>,
    /// Children sent SIGTERM, still draining.
    stopping: Vec<Child>,
    /// Workers started so far (for names and tests).
    started: u64,
    /// Workers that exited with a failure while they were wanted (crashes, bad configuration).
    failures: u64,
}

impl WorkerPool {
    /// A pool that starts workers with `command`.
    pub fn new(command: WorkerCommand) -> Self {
        Self {
            command,
            running: Vec::new(),
            stopping: Vec::new(),
            started: 0,
            failures: 0,
        }
    }

    /// Workers running (not counting those draining).
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Process ids of the running workers.
    pub fn pids(&self) -> Vec<u32> {
        self.running.iter().filter_map(Child::id).collect()
    }

    /// Workers started since the pool was created.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Workers that exited with a failure while they were wanted.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Reaps exited children, then starts or stops workers to reach `target`.
    pub fn scale_to(&mut self, target: usize) -> std::io::Result<()> {
        self.reap();
        while self.running.len() < target {
            let mut command = Command::new(&self.command.program);
            command
                .args(&self.command.args)
                .envs(self.command.env.iter().cloned())
                .stdin(Stdio::null())
                // A group of its own: a terminal's Ctrl-C reaches the supervisor alone, which
                // then drains each worker with one SIGTERM. Sharing the group, a worker (and its
                // ffmpeg) got SIGINT and then SIGTERM, the second signal that aborts at once and
                // leaves the batch in hand locked.
                .process_group(0)
                .kill_on_drop(true);
            if self.command.through_terminal {
                command.stderr(Stdio::piped());
            }
            let mut child = command.spawn()?;
            if let Some(stderr) = child.stderr.take() {
                tokio::spawn(forward_lines(stderr));
            }
            self.started += 1;
            tracing::info!(
                pid = child.id(),
                workers = self.running.len() + 1,
                "worker started"
            );
            self.running.push(child);
        }
        while self.running.len() > target {
            // Stop the newest first: the oldest has the warmest caches.
            if let Some(child) = self.running.pop() {
                terminate(&child);
                tracing::info!(
                    pid = child.id(),
                    workers = self.running.len(),
                    "worker stopping"
                );
                self.stopping.push(child);
            }
        }
        Ok(())
    }

    /// Removes children that have exited.
    pub fn reap(&mut self) {
        let mut failures = 0;
        for (wanted, list) in [(true, &mut self.running), (false, &mut self.stopping)] {
            list.retain_mut(|child| match child.try_wait() {
                Ok(Some(status)) => {
                    if wanted && !status.success() {
                        failures += 1;
                        tracing::warn!(pid = child.id(), %status, "worker failed");
                    } else {
                        tracing::info!(pid = child.id(), %status, "worker exited");
                    }
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            });
        }
        self.failures += failures;
    }

    /// Stops every worker and waits up to `grace` for them to drain, then kills the rest.
    pub async fn shutdown(&mut self, grace: Duration) {
        let _ = self.scale_to(0);
        let deadline = tokio::time::Instant::now() + grace;
        for mut child in self.stopping.drain(..) {
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(pid = child.id(), "worker did not drain in time; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Writes a worker's stderr, line by line, above the progress bars.
async fn forward_lines(stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        crate::terminal::eprint_line(&line);
    }
}
