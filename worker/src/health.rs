//! The health endpoint: `GET /healthz` answers 200 with a small JSON snapshot (state, batches
//! done, the batch in hand, the last error). The container's probes only open a TCP connection;
//! the port opens once the model is warm, so a passing startup probe means the worker is ready.
//! `GET /metrics` answers the telemetry instruments (batches, frames, failures, lock renewals)
//! in the Prometheus text format.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

use stylefleet::stage::Outcome;

/// Where the worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Loading and warming up the model.
    Starting,
    /// Waiting for a batch.
    Ready,
    /// Styling a batch.
    Working,
    /// SIGTERM received: finishing or releasing the batch in hand, taking no more.
    Draining,
    /// The consume loop has ended.
    Stopped,
}

/// What `/healthz` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// The state.
    pub state: WorkerState,
    /// The device styling frames.
    pub device: String,
    /// Batches completed.
    pub batches_done: u64,
    /// Batches released for a retry after a failure.
    pub batches_retried: u64,
    /// Batches dead-lettered.
    pub batches_dead_lettered: u64,
    /// The message id of the batch in hand longest (the oldest of `in_hand`).
    pub current: Option<String>,
    /// The message ids of every batch in hand, oldest first (a worker handles a few at once).
    pub in_hand: Vec<String>,
    /// The last failure, for people.
    pub last_error: Option<String>,
    /// Seconds since the epoch when the process started.
    pub started_at: f64,
}

/// The shared health record. Cheap to clone; every clone sees the same state.
#[derive(Debug, Clone)]
pub struct Health {
    /// One lock for the whole snapshot: updates are a few per batch, reads a few per minute.
    inner: Arc<Mutex<Snapshot>>,
}

impl Health {
    /// A record in state `Starting`.
    pub fn new(device: impl Into<String>) -> Self {
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            inner: Arc::new(Mutex::new(Snapshot {
                state: WorkerState::Starting,
                device: device.into(),
                batches_done: 0,
                batches_retried: 0,
                batches_dead_lettered: 0,
                current: None,
                in_hand: Vec::new(),
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

    /// Records the device once it is known.
    pub fn set_device(&self, device: impl Into<String>) {
        self.lock().device = device.into();
    }

    /// Moves to `state`; `Draining` and `Stopped` are final for the states before them.
    pub fn set_state(&self, state: WorkerState) {
        let mut s = self.lock();
        let rank = |s: WorkerState| match s {
            WorkerState::Starting | WorkerState::Ready | WorkerState::Working => 0,
            WorkerState::Draining => 1,
            WorkerState::Stopped => 2,
        };
        if rank(state) >= rank(s.state) {
            s.state = state;
        }
    }

    /// Records a failure that is not tied to an outcome (start-up).
    pub fn set_error(&self, error: impl Into<String>) {
        self.lock().last_error = Some(error.into());
    }

    /// A batch was taken.
    pub fn begin(&self, id: &str) {
        let mut s = self.lock();
        s.in_hand.push(id.to_owned());
        s.current = s.in_hand.first().cloned();
        if s.state == WorkerState::Ready {
            s.state = WorkerState::Working;
        }
    }

    /// The batch in hand ended with `outcome`.
    pub fn end(&self, id: &str, outcome: &Outcome) {
        let mut s = self.lock();
        if let Some(at) = s.in_hand.iter().position(|h| h == id) {
            s.in_hand.remove(at);
        }
        s.current = s.in_hand.first().cloned();
        match outcome {
            Outcome::Complete => s.batches_done += 1,
            Outcome::Release { .. } => {}
            Outcome::Retry { reason, .. } => {
                s.batches_retried += 1;
                s.last_error = Some(format!("{id}: {reason}"));
            }
            Outcome::DeadLetter {
                reason,
                description,
            } => {
                s.batches_dead_lettered += 1;
                s.last_error = Some(format!("{id}: {reason}: {description}"));
            }
        }
        if s.state == WorkerState::Working && s.in_hand.is_empty() {
            s.state = WorkerState::Ready;
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
    fn the_snapshot_follows_the_batches() {
        let h = Health::new("cpu");
        assert_eq!(h.snapshot().state, WorkerState::Starting);
        h.set_state(WorkerState::Ready);
        h.begin("job:0");
        assert_eq!(h.snapshot().state, WorkerState::Working);
        assert_eq!(h.snapshot().current.as_deref(), Some("job:0"));
        h.end("job:0", &Outcome::Complete);
        h.begin("job:1");
        h.end(
            "job:1",
            &Outcome::Retry {
                reason: "busy".into(),
                delay: std::time::Duration::from_secs(1),
            },
        );
        let s = h.snapshot();
        assert_eq!(
            (s.state, s.batches_done, s.batches_retried),
            (WorkerState::Ready, 1, 1)
        );
        assert_eq!(s.last_error.as_deref(), Some("job:1: busy"));
        assert_eq!(s.current, None);
    }

    #[test]
    fn several_batches_in_hand_are_each_followed() {
        let h = Health::new("cpu");
        h.set_state(WorkerState::Ready);
        h.begin("job:0");
        h.begin("job:1");
        assert_eq!(h.snapshot().in_hand, ["job:0", "job:1"]);
        h.end("job:0", &Outcome::Complete);
        let s = h.snapshot();
        assert_eq!(
            (s.state, s.current.as_deref()),
            (WorkerState::Working, Some("job:1"))
        );
        h.end("job:1", &Outcome::Complete);
        let s = h.snapshot();
        assert_eq!(
            (s.state, s.current, s.batches_done),
            (WorkerState::Ready, None, 2)
        );
        assert!(s.in_hand.is_empty());
    }

    #[test]
    fn draining_is_not_undone_by_a_finished_batch() {
        let h = Health::new("cpu");
        h.set_state(WorkerState::Ready);
        h.begin("job:0");
        h.set_state(WorkerState::Draining);
        h.end("job:0", &Outcome::Complete);
        assert_eq!(h.snapshot().state, WorkerState::Draining);
        h.set_state(WorkerState::Ready);
        assert_eq!(h.snapshot().state, WorkerState::Draining);
        h.set_state(WorkerState::Stopped);
        assert_eq!(h.snapshot().state, WorkerState::Stopped);
        let json = serde_json::to_value(h.snapshot()).unwrap();
        assert_eq!(json["state"], "stopped");
        assert_eq!(json["batches_done"], 1);
    }
}
