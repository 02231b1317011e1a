//! The folder watcher of the embedded default: finds files under `input/` that are completely
//! written. A file is ready when its size and modification time have not changed for `settle`;
//! names that uploaders use while writing (`.part`, `.tmp`, `~`, leading dot) are skipped.
//!
//! Polling the store rather than inotify keeps one code path for any store and survives restarts:
//! the first poll after a restart sees every file again, and the splitter's idempotence turns the
//! ones already planned into no-ops.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{Store, StoreError};

/// What the watcher knows of a file's version: its size and modification time (nanoseconds).
pub type Version = (u64, i64);

/// Watches `input/` for files that stopped changing.
#[derive(Debug)]
pub struct Watcher {
    settle: Duration,
    /// Last seen (size, mtime) per path and since when it has been unchanged.
    seen: HashMap<String, (Version, Instant)>,
}

impl Watcher {
    /// A watcher that waits `settle` of stillness before calling a file ready.
    pub fn new(settle: Duration) -> Self {
        Self {
            settle,
            seen: HashMap::new(),
        }
    }

    /// One poll: the paths that are ready now with the version they settled at, sorted by path
    /// (stable and fair enough). A file rewritten later is ready again with its new version.
    pub async fn poll(&mut self, store: &Store) -> Result<Vec<(String, Version)>, StoreError> {
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut present = std::collections::HashSet::new();
        for meta in store.list("input").await? {
            let path = meta.location.to_string();
            if !is_candidate(&path) {
                continue;
            }
            present.insert(path.clone());
            let key = (
                meta.size,
                meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
            );
            match self.seen.get(&path) {
                Some((previous, since)) if *previous == key => {
                    // An empty file that stays empty is ready too: the splitter refuses it.
                    if now.duration_since(*since) >= self.settle {
                        ready.push((path, key));
                    }
                }
                _ => {
                    self.seen.insert(path, (key, now));
                }
            }
        }
        self.seen.retain(|p, _| present.contains(p));
        ready.sort();
        Ok(ready)
    }
}

/// Whether a path under `input/` is a video drop: `input/<style>/<name>`, not a temporary name.
pub fn is_candidate(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() != 3 || parts[0] != "input" {
        return false;
    }
    let name = parts[2];
    !(name.starts_with('.')
        || name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.ends_with('~'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn skips_temporary_and_misplaced_names() {
        assert!(is_candidate("input/mosaic/a.mp4"));
        assert!(!is_candidate("input/a.mp4"));
        assert!(!is_candidate("input/mosaic/.a.mp4"));
        assert!(!is_candidate("input/mosaic/a.mp4.part"));
        assert!(!is_candidate("input/mosaic/sub/a.mp4"));
    }

    // Paused time: the watcher's clock is Tokio's, so the sleeps below pass at once and exactly.
    #[tokio::test(start_paused = true)]
    async fn a_file_is_ready_once_it_stops_changing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(dir.path()).unwrap();
        let mut watcher = Watcher::new(Duration::from_millis(200));
        store.put("input/s/a.mp4", vec![1u8; 10]).await.unwrap();
        assert!(watcher.poll(&store).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Still growing: the clock restarts.
        store.put("input/s/a.mp4", vec![1u8; 20]).await.unwrap();
        assert!(watcher.poll(&store).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(250)).await;
        let ready = watcher.poll(&store).await.unwrap();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0, "input/s/a.mp4");
        assert_eq!(ready[0].1.0, 20);
    }
}
