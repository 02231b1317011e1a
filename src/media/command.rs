//! The one way this crate runs ffmpeg and ffprobe.
//!
//! Every invocation gets `-hide_banner`, `-loglevel error` (and `-nostdin` for ffmpeg, which
//! would otherwise read keys from the terminal), takes paths as `OsStr`, runs with
//! `kill_on_drop` so that a cancelled future does not leave a child behind, and keeps the tail
//! of stderr in the error.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::MediaError;

/// Keep this much of a failing tool's stderr: enough for the reason, never a flood.
const STDERR_TAIL: usize = 4096;

/// Which program to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Program {
    Ffmpeg,
    Ffprobe,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Ffmpeg => "ffmpeg",
            Program::Ffprobe => "ffprobe",
        }
    }

    fn path(self) -> std::path::PathBuf {
        if let Some(dir) = TOOL_DIR.get() {
            return dir.join(self.name());
        }
        // ffmpeg-sidecar looks next to the executable first, then falls back to PATH; its
        // download feature is off, so it never fetches a binary.
        match self {
            Program::Ffmpeg => ffmpeg_sidecar::paths::ffmpeg_path(),
            Program::Ffprobe => ffmpeg_sidecar::ffprobe::ffprobe_path(),
        }
    }
}

/// Where [`runnable_tools`] put runnable copies of the tools, when it had to.
static TOOL_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The path ffmpeg or ffprobe (`name`) runs from: a runnable copy made by [`runnable_tools`], else
/// beside this executable when it is there, else `name` on `PATH`.
pub fn tool_path(name: &str) -> PathBuf {
    match name {
        "ffmpeg" => Program::Ffmpeg.path(),
        "ffprobe" => Program::Ffprobe.path(),
        other => PathBuf::from(other),
    }
}

/// Makes ffmpeg and ffprobe packaged beside this executable runnable when they are not: a
/// package deployed as a zip (Azure Functions Flex Consumption) is mounted read-only, and the
/// host sets the execute bit only on the handler it starts. Copies both into `dir` (created, and
/// made private) with the bit set, and runs every later command from there; returns that folder,
/// or `None` when nothing had to change (the tools beside the executable run as they are, or
/// there are none and `PATH` is used).
pub fn runnable_tools(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let Some(beside) = std::env::current_exe()?.parent().map(Path::to_path_buf) else {
        return Ok(None);
    };
    let names = [Program::Ffmpeg.name(), Program::Ffprobe.name()];
    let not_runnable = |name: &str| {
        std::fs::metadata(beside.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 == 0)
    };
    if !names.iter().any(|n| not_runnable(n)) {
        return Ok(None);
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for name in names {
        let from = beside.join(name);
        if !from.is_file() {
            continue;
        }
        // Copy under a temporary name, then rename: a concurrent start never runs half a file.
        let to = dir.join(name);
        let partial = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::copy(&from, &partial)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&partial, &to)?;
    }
    let _ = TOOL_DIR.set(dir.to_path_buf());
    Ok(Some(dir.to_path_buf()))
}

/// What a successful run printed.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

/// An ffmpeg or ffprobe command line under construction.
#[derive(Debug)]
pub(crate) struct FfCommand {
    program: Program,
    step: &'static str,
    args: Vec<OsString>,
}

impl FfCommand {
    /// An ffmpeg run doing `step` (used in errors: "ffmpeg failed to {step}").
    pub(crate) fn ffmpeg(step: &'static str) -> Self {
        Self::new(Program::Ffmpeg, step).args(["-hide_banner", "-nostdin", "-loglevel", "error"])
    }

    /// An ffmpeg run doing `step` whose filters report on stderr (`-loglevel info`, the level
    /// of `showinfo`; `-nostats` keeps the progress line out). Spawn it with
    /// [`FfCommand::spawn_reporting`].
    pub(crate) fn ffmpeg_reporting(step: &'static str) -> Self {
        Self::new(Program::Ffmpeg, step).args([
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "info",
        ])
    }

    /// An ffprobe run doing `step`, printing JSON.
    pub(crate) fn ffprobe(step: &'static str) -> Self {
        Self::new(Program::Ffprobe, step).args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-of",
            "json",
        ])
    }

    fn new(program: Program, step: &'static str) -> Self {
        Self {
            program,
            step,
            args: Vec::new(),
        }
    }

    /// Appends one argument.
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Starts the program (killed when dropped) with stdout and stderr piped, and stdin piped
    /// when `stdin`, else empty.
    fn start(&self, stdin: bool, what: &'static str) -> Result<tokio::process::Child, MediaError> {
        let (program, step) = (self.program.name(), self.step);
        tracing::debug!(program, step, args = ?self.args, "{what}");
        Command::new(self.program.path())
            .args(&self.args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => MediaError::ProgramMissing { program, source },
                _ => MediaError::Spawn {
                    program,
                    step,
                    source,
                },
            })
    }

    /// Starts the program with stdin and stdout as pipes for the caller to stream through (see
    /// [`Streaming`]); stderr is collected in the background for the error.
    pub(crate) fn spawn(self, stdin: bool) -> Result<Streaming, MediaError> {
        let program = self.program.name();
        let step = self.step;
        let mut child = self.start(stdin, "starting")?;
        let stderr = child.stderr.take().map(|mut pipe| {
            tokio::spawn(async move {
                let mut text = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut text).await;
                text
            })
        });
        Ok(Streaming {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            stderr,
            program,
            step,
        })
    }

    /// Starts the program like [`FfCommand::spawn`] (no stdin), except that the stderr lines
    /// for which `report` is true are sent, in order, to the receiver returned beside it; the
    /// other lines are collected for the error as usual.
    pub(crate) fn spawn_reporting(
        self,
        report: fn(&str) -> bool,
    ) -> Result<(Streaming, tokio::sync::mpsc::UnboundedReceiver<String>), MediaError> {
        let program = self.program.name();
        let step = self.step;
        let mut child = self.start(false, "starting")?;
        let (lines, received) = tokio::sync::mpsc::unbounded_channel();
        let stderr = child.stderr.take().map(|pipe| {
            tokio::spawn(async move {
                let mut text = Vec::new();
                let mut reader = tokio::io::BufReader::new(pipe);
                let mut line = Vec::new();
                // Bytes, not `lines()`: a line that is not UTF-8 (a file name) must not stop
                // the draining, or the tool would block on a full pipe.
                while matches!(reader.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
                    let text_line = String::from_utf8_lossy(&line);
                    if report(&text_line) {
                        // The receiver gone means nobody reads on: keep draining the pipe.
                        let _ = lines.send(text_line.trim_end().to_owned());
                    } else {
                        text.extend_from_slice(&line);
                    }
                    line.clear();
                }
                text
            })
        });
        Ok((
            Streaming {
                stdin: None,
                stdout: child.stdout.take(),
                child,
                stderr,
                program,
                step,
            },
            received,
        ))
    }

    /// Runs with no input and returns stdout and stderr, or the failure with stderr's tail.
    pub(crate) async fn run(self) -> Result<Captured, MediaError> {
        self.run_with_input(&[]).await
    }

    /// Runs, writing `input` chunk by chunk to stdin (closed afterwards) while stdout and
    /// stderr are read concurrently, so that neither side can block the other.
    pub(crate) async fn run_with_input(self, input: &[Vec<u8>]) -> Result<Captured, MediaError> {
        let program = self.program.name();
        let step = self.step;
        let mut child = self.start(!input.is_empty(), "running")?;
        let stdin = child.stdin.take();
        let feed = async move {
            let Some(mut stdin) = stdin else {
                return Ok(());
            };
            for chunk in input {
                stdin.write_all(chunk).await?;
            }
            stdin.shutdown().await
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(|source| MediaError::Spawn {
            program,
            step,
            source,
        })?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(MediaError::Ffmpeg {
                step,
                status: output.status,
                stderr: tail(&stderr),
            });
        }
        // A write error with a successful exit means the tool stopped reading early, which
        // callers see as a wrong frame count; report it as such rather than as success.
        fed.map_err(|source| MediaError::Spawn {
            program,
            step,
            source,
        })?;
        Ok(Captured {
            stdout: output.stdout,
            stderr,
        })
    }
}

/// A running ffmpeg whose stdin and stdout the caller streams through, frame by frame: memory
/// stays at a frame or two whatever the length of the video. Killed when dropped.
pub(crate) struct Streaming {
    /// The input pipe, when asked for; dropped (closed) by [`Streaming::finish`].
    pub(crate) stdin: Option<tokio::process::ChildStdin>,
    /// The output pipe.
    pub(crate) stdout: Option<tokio::process::ChildStdout>,
    child: tokio::process::Child,
    /// Collects stderr so that a chatty tool never blocks on a full pipe.
    stderr: Option<tokio::task::JoinHandle<Vec<u8>>>,
    program: &'static str,
    step: &'static str,
}

impl Streaming {
    /// Closes stdin, waits for the exit, and returns the failure with stderr's tail.
    pub(crate) async fn finish(mut self) -> Result<(), MediaError> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        drop(self.stdout.take());
        let status = self
            .child
            .wait()
            .await
            .map_err(|source| MediaError::Spawn {
                program: self.program,
                step: self.step,
                source,
            })?;
        let stderr = match self.stderr.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        if !status.success() {
            return Err(MediaError::Ffmpeg {
                step: self.step,
                status,
                stderr: tail(&String::from_utf8_lossy(&stderr)),
            });
        }
        Ok(())
    }

    /// The error for an I/O failure on one of the pipes: ffmpeg's own reason when it has exited
    /// with one, else the I/O error.
    pub(crate) async fn broken(self, source: std::io::Error) -> MediaError {
        let (program, step) = (self.program, self.step);
        match self.finish().await {
            Err(e) => e,
            Ok(()) => MediaError::Spawn {
                program,
                step,
                source,
            },
        }
    }
}

/// The last [`STDERR_TAIL`] bytes of `text`, cut at a character boundary, trimmed.
fn tail(text: &str) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(STDERR_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        let text = format!("{}é{}", "a".repeat(10), "b".repeat(STDERR_TAIL - 1));
        let t = tail(&text);
        assert!(t.len() <= STDERR_TAIL);
        assert!(t.ends_with('b'));
        assert_eq!(tail("  short\n"), "short");
    }
}
