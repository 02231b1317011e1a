//! Named fault points, for tests that place a crash or an error at an exact step instead of
//! hoping a sleep lands there.
//!
//! A stage calls [`hit`] with a point's name (`"stitch.after-claim"`, say). Nothing happens unless
//! the environment variable `STYLEFLEET_FAULTS` names that point:
//!
//! ```text
//! STYLEFLEET_FAULTS=stitch.after-claim=kill,batch.after-chunk=error
//! ```
//!
//! - `kill`: the process sends itself SIGKILL, as `kill -9` would: no destructor, no flush.
//! - `error`: [`hit`] returns a transient error (the delivery is retried).
//! - `fail`: [`hit`] returns a permanent error (the delivery is dead-lettered with the reason).
//!
//! A point fires once per fault folder: when `STYLEFLEET_FAULT_DIR` names a folder, the first
//! process to reach the point creates `<point>.fired` there (create-new, so exactly one process
//! wins) and only that process fails; the restarted or concurrent ones pass. Without the folder a
//! point fires every time. The variables are read on every call: points sit on rare steps, and a
//! test can set them per child process.

use std::path::PathBuf;

/// The variable naming the armed points.
pub const FAULTS_VAR: &str = "STYLEFLEET_FAULTS";
/// The variable naming the folder that makes each point fire once.
pub const FAULT_DIR_VAR: &str = "STYLEFLEET_FAULT_DIR";

/// An injected failure.
#[derive(Debug, thiserror::Error)]
#[error("injected fault at {point}")]
pub struct InjectedFault {
    /// The point.
    pub point: String,
    /// Whether it is to be treated as permanent (`fail`) rather than transient (`error`).
    pub permanent: bool,
}

/// What an armed point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Kill,
    Error,
    Fail,
}

/// Passes through `point`, failing there if a test armed it.
pub fn hit(point: &str) -> Result<(), InjectedFault> {
    let Some(action) = armed(point) else {
        return Ok(());
    };
    if !claim(point) {
        return Ok(());
    }
    match action {
        Action::Kill => {
            tracing::warn!(point, "fault point: killing this process");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            // SIGKILL cannot be caught; should it somehow fail, abort is just as abrupt.
            std::process::abort()
        }
        Action::Error | Action::Fail => {
            tracing::warn!(point, "fault point: failing");
            Err(InjectedFault {
                point: point.to_owned(),
                permanent: action == Action::Fail,
            })
        }
    }
}

/// The action armed for `point`, if any.
fn armed(point: &str) -> Option<Action> {
    let spec = std::env::var(FAULTS_VAR).ok()?;
    parse(&spec, point)
}

fn parse(spec: &str, point: &str) -> Option<Action> {
    spec.split(',').map(str::trim).find_map(|entry| {
        let (name, action) = entry.split_once('=').unwrap_or((entry, "kill"));
        (name == point).then_some(match action {
            "error" => Action::Error,
            "fail" => Action::Fail,
            _ => Action::Kill,
        })
    })
}

/// Whether this process is the one that fires `point` (always, without a fault folder).
fn claim(point: &str) -> bool {
    let Some(dir) = std::env::var_os(FAULT_DIR_VAR).map(PathBuf::from) else {
        return true;
    };
    let _ = std::fs::create_dir_all(&dir);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(format!("{point}.fired")))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_points_and_actions() {
        let spec = "a.b=kill, c.d=error,e,f=fail";
        assert_eq!(parse(spec, "a.b"), Some(Action::Kill));
        assert_eq!(parse(spec, "c.d"), Some(Action::Error));
        assert_eq!(parse(spec, "e"), Some(Action::Kill));
        assert_eq!(parse(spec, "f"), Some(Action::Fail));
        assert_eq!(parse(spec, "c"), None);
        assert_eq!(parse("", "a.b"), None);
    }

    #[test]
    fn unarmed_points_pass() {
        assert!(hit("no.such.point.is.armed").is_ok());
    }
}
