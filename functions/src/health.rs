//! The aggregator's health endpoint: `GET /healthz` (and `/`) answers 200 with a small JSON
//! snapshot: state, stitches done, retried and dead-lettered, the message in hand, the last
//! failure. The container's probes only open a TCP connection; the port opens once the stores,
//! the queue and ffmpeg are usable, so a passing startup probe means the aggregator takes work.
//! `GET /metrics` answers the telemetry instruments in the Prometheus text format.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

use stylefleet::stage::Outcome;

/// Where the aggregator is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Opening the stores and the queue.
    Starting,
    /// Waiting for a stitch message.
    Ready,
    /// Stitching a job.
    Stitching,
    /// SIGTERM received: finishing or releasing the stitch in hand, taking no more.
    Draining,
    /// The consume loop has ended.
    Stopped,
}

/// What `/healthz` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The state.
    pub state: Phase,
    /// Stitch messages completed (written, or found written).
    pub stitched: u64,
    /// Stitch messages released for a retry after a transient failure.
    pub retried: u64,
    /// Stitch messages dead-lettered (their jobs failed with the reason).
    pub dead_lettered: u64,
    /// The message id of the stitch in hand.
    pub current: Option<String>,
    /// The last failure, for people.
    pub last_error: Option<String>,
    /// Seconds since the epoch when the process started.
    pub started_at: f64,
}

/// The shared health record. Cheap to clone; every clone sees the same state.
#[derive(Debug, Clone)]
pub struct Health {
    /// One lock for the whole snapshot: updates are a few per stitch, reads a few per minute.
    inner: Arc<Mutex<Snapshot>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// A record in state `Starting`.
    pub fn new() -> Self {
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            inner: Arc::new(Mutex::new(Snapshot {
                state: Phase::Starting,
                stitched: 0,
                retried: 0,
                dead_lettered: 0,
                current: None,
                last_error: None,
                started_at,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        // A panic while holding the lock leaves a consistent snapshot (plain field writes).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// Moves to `state`; `Draining` and `Stopped` are final for the states before them.
    pub fn set_state(&self, state: Phase) {
        let rank = |s: Phase| match s {
            Phase::Starting | Phase::Ready | Phase::Stitching => 0,
            Phase::Draining => 1,
            Phase::Stopped => 2,
        };
        let mut s = self.lock();
        if rank(state) >= rank(s.state) {
            s.state = state;
        }
    }

    /// A stitch message was taken.
    pub fn begin(&self, id: &str) {
        let mut s = self.lock();
        s.current = Some(id.to_owned());
        if s.state == Phase::Ready {
            s.state = Phase::Stitching;
        }
    }

    /// The stitch in hand ended with `outcome`.
    pub fn end(&self, id: &str, outcome: &Outcome) {
        let mut s = self.lock();
        s.current = None;
        match outcome {
            Outcome::Complete => s.stitched += 1,
            Outcome::Release { .. } => {}
            Outcome::Retry { reason, .. } => {
                s.retried += 1;
                s.last_error = Some(format!("{id}: {reason}"));
            }
            Outcome::DeadLetter {
                reason,
                description,
            } => {
                s.dead_lettered += 1;
                s.last_error = Some(format!("{id}: {reason}: {description}"));
            }
        }
        if s.state == Phase::Stitching {
            s.state = Phase::Ready;
        }
    }
}

/// The routes: `GET /healthz` (and `/` for a quick look), and `GET /metrics`, the telemetry
/// instruments in the Prometheus text format ([`stylefleet::telemetry::scrape`]).
pub fn router(health: Health) -> Router {
    async fn show(State(health): State<Health>) -> axum::Json<Snapshot> {
        axum::Json(health.snapshot())
    }
    Router::new()
        .route("/healthz", get(show))
        .route("/", get(show))
        .route("/metrics", get(stylefleet::telemetry::scrape::handler))
        .with_state(health)
}

/// Serves the endpoint on `listener` until the process ends.
pub async fn serve(listener: TcpListener, health: Health) -> std::io::Result<()> {
    axum::serve(listener, router(health)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_follows_the_stitches() {
        let h = Health::new();
        assert_eq!(h.snapshot().state, Phase::Starting);
        h.set_state(Phase::Ready);
        h.begin("job:stitch");
        assert_eq!(h.snapshot().state, Phase::Stitching);
        assert_eq!(h.snapshot().current.as_deref(), Some("job:stitch"));
        h.end(
            "job:stitch",
            &Outcome::DeadLetter {
                reason: "PermanentFailure".into(),
                description: "batch 0 has 5 frames, the plan says 6".into(),
            },
        );
        let s = h.snapshot();
        assert_eq!((s.state, s.dead_lettered, s.stitched), (Phase::Ready, 1, 0));
        assert_eq!(
            s.last_error.as_deref(),
            Some("job:stitch: PermanentFailure: batch 0 has 5 frames, the plan says 6")
        );
        assert_eq!(s.current, None);
    }

    #[test]
    fn draining_is_not_undone_by_a_finished_stitch() {
        let h = Health::new();
        h.set_state(Phase::Ready);
        h.begin("a:stitch");
        h.set_state(Phase::Draining);
        h.end("a:stitch", &Outcome::Complete);
        assert_eq!(h.snapshot().state, Phase::Draining);
        h.set_state(Phase::Ready);
        assert_eq!(h.snapshot().state, Phase::Draining);
        h.set_state(Phase::Stopped);
        let json = serde_json::to_value(h.snapshot()).unwrap();
        assert_eq!(json["state"], "stopped");
        assert_eq!(json["stitched"], 1);
    }
}
