//! Who consumes the queues now: each consume loop (a worker, the aggregator of `up` or `process`)
//! keeps a presence record `logs/consumers/<name>.json` in the log store fresh while it runs and
//! removes it when it ends (beside the logs: what processes say about themselves, not a job's
//! state). `status` reads them to tell a job that waits for work from one that nothing will work on
//! (see [`JobState::Interrupted`](crate::job::JobState::Interrupted)).
//!
//! A record counts while it is fresh (renewed every [`HEARTBEAT`], lapsing after [`TTL`]) and,
//! when its holder is a process of this host, while that process runs: a `process` killed with
//! SIGKILL stops counting at once, one on another machine within [`TTL`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::job::{now_secs, paths};
use crate::store::{Store, StoreError};

/// How often a consume loop renews its record.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long a record counts after its last renewal.
pub const TTL: Duration = Duration::from_secs(20);

/// One consume loop's presence record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// `<host>:<pid>` (see [`crate::setup::worker_name`]).
    pub holder: String,
    /// The queue it consumes.
    pub queue: String,
    /// When it started (seconds since the epoch).
    pub started_at: f64,
    /// When the record lapses unless renewed.
    pub expires_at: f64,
}

impl Presence {
    /// Whether the record counts at `now` (see the module docs).
    pub fn is_live(&self, now: f64) -> bool {
        self.expires_at > now && !crate::stage::aggregate::died_here(&self.holder)
    }
}

/// A consume loop's record, renewed in the background until [`Announced::withdraw`] (or, when
/// dropped, left to lapse).
#[derive(Debug)]
pub struct Announced {
    store: Store,
    path: String,
    /// Ends the renewal task.
    stop: CancellationToken,
    /// The renewal task, awaited before the record is removed so that no late write outlives it.
    renewal: tokio::task::JoinHandle<()>,
}

/// Tells apart several loops of one process on one queue.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// How long [`Announced::withdraw`] waits for the store before leaving the record to lapse.
const WITHDRAW_WAIT: Duration = Duration::from_secs(2);

/// Starts keeping the record of a loop of `holder` on `queue` fresh, in the background: the loop
/// never waits for it, and a store that cannot be written only costs the record (logged), as
/// presence is for people, never for the work.
pub fn announce(store: &Store, holder: &str, queue: &str) -> Announced {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let name: String = format!("{holder}-{queue}-{n}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let path = format!("{}/{name}.json", paths::CONSUMERS);
    let record = Presence {
        holder: holder.to_owned(),
        queue: queue.to_owned(),
        started_at: now_secs(),
        expires_at: 0.0,
    };
    let stop = CancellationToken::new();
    let (task_stop, task_store, task_path) = (stop.clone(), store.clone(), path.clone());
    let renewal = tokio::spawn(async move {
        loop {
            let renewed = Presence {
                expires_at: now_secs() + TTL.as_secs_f64(),
                ..record.clone()
            };
            tokio::select! {
                _ = task_stop.cancelled() => return,
                written = task_store.put_json(&task_path, &renewed) => {
                    if let Err(e) = written {
                        tracing::warn!(error = %e, "cannot write the presence record");
                    }
                }
            }
            tokio::select! {
                _ = task_stop.cancelled() => return,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
    });
    Announced {
        store: store.clone(),
        path,
        stop,
        renewal,
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Announced {
    /// Stops renewing and removes the record (within a short wait; else it lapses).
    pub async fn withdraw(mut self) {
        self.stop.cancel();
        let renewal = std::mem::replace(&mut self.renewal, tokio::spawn(async {}));
        let removed = tokio::time::timeout(WITHDRAW_WAIT, async {
            let _ = renewal.await;
            self.store.delete(&self.path).await
        })
        .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove the presence record"),
            Err(_) => tracing::warn!("the store is slow: the presence record is left to lapse"),
        }
    }
}

/// Every presence record that counts now.
pub async fn live(store: &Store) -> Result<Vec<Presence>, StoreError> {
    let now = now_secs();
    let mut out = Vec::new();
    for meta in store.list(paths::CONSUMERS).await? {
        if let Ok(Some(p)) = store.get_json::<Presence>(meta.location.as_ref()).await
            && p.is_live(now)
        {
            out.push(p);
        }
    }
    Ok(out)
}

/// Removes the records that no longer count (left by killed processes); returns how many.
pub async fn sweep(store: &Store) -> Result<usize, StoreError> {
    let now = now_secs();
    let mut removed = 0;
    for meta in store.list(paths::CONSUMERS).await? {
        let stale = match store.get_json::<Presence>(meta.location.as_ref()).await {
            Ok(Some(p)) => !p.is_live(now),
            Ok(None) => false,
            Err(_) => true,
        };
        if stale {
            store.delete(meta.location.as_ref()).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
