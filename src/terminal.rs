//! The terminal: progress bars and log lines share stderr without garbling each other, colour
//! only where a person reads it, and standard output that may be a closed pipe.
//!
//! Progress bars are added to [`bars`]; log events and other stderr lines go through
//! [`LogWriter`] or [`eprint`], which hide the bars while they write and draw them again below,
//! so a log line never lands inside a bar. Off a terminal the bars draw nothing at all.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressDrawTarget};
use tracing_subscriber::fmt::MakeWriter;

/// The progress bars of this process, drawn on stderr (hidden when stderr is not a terminal).
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// The progress bars on stderr: a bar added here is hidden while log lines are written.
pub fn bars() -> &'static MultiProgress {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Whether stderr is a terminal that wants colour: a terminal, and `NO_COLOR` unset or empty
/// (the no-color.org convention).
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes `text` to stderr above the progress bars (a failed write to stderr is not reported:
/// there is nowhere left to report it).
pub fn eprint(text: &[u8]) {
    bars().suspend(|| {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(text);
        let _ = stderr.flush();
    });
}

/// Writes one line to stderr above the progress bars.
pub fn eprint_line(line: &str) {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    eprint(text.as_bytes());
}

/// Writes one line to stdout; `false` when it could not be written. A closed pipe
/// (`stylefleet ... | head -0`) is not an error of ours: the caller ends quietly instead of
/// panicking as `println!` does.
pub fn print_line(line: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_ok()
}

/// The `tracing` writer that keeps log lines and progress bars apart: each event is formatted
/// into a buffer and written whole, above the bars.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// One log event on its way to stderr (written when dropped).
#[derive(Debug, Default)]
pub struct EventBuffer(Vec<u8>);

impl Write for EventBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            eprint(&self.0);
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        EventBuffer::default()
    }
}
