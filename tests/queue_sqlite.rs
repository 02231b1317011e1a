//! The embedded SQLite queue: the shared conformance suite, then what only a file-backed queue
//! must show (several processes on one file, durability across reopening) and the `QueueExt`
//! conveniences.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stylefleet::queue::conformance::{self, Capabilities, Fixture};
use stylefleet::queue::sqlite::{QueueConfig, SqliteQueue};
use stylefleet::queue::{
    MAX_DELIVERY_COUNT_EXCEEDED, OutgoingMessage, Queue, QueueError, QueueExt,
};
use tempfile::TempDir;

const LOCK: Duration = Duration::from_secs(1);
const MAX_DELIVERIES: u32 = 3;

fn config() -> QueueConfig {
    QueueConfig {
        lock_duration: LOCK,
        max_delivery_count: MAX_DELIVERIES,
        poll_interval: Duration::from_millis(20),
        ..QueueConfig::default()
    }
}

fn fresh() -> (TempDir, SqliteQueue) {
    let dir = tempfile::tempdir().unwrap();
    let queue = SqliteQueue::open(dir.path().join("queue.sqlite"), config()).unwrap();
    (dir, queue)
}

fn caps() -> Capabilities {
    Capabilities::new(LOCK, MAX_DELIVERIES)
}

/// Each conformance test on a database of its own.
struct Sqlite;

impl conformance::Harness for Sqlite {
    type Queue = SqliteQueue;
    type Guard = TempDir;

    fn capabilities() -> Capabilities {
        caps()
    }

    async fn open(test: &str) -> Option<Fixture<SqliteQueue, TempDir>> {
        let (guard, queue) = fresh();
        Some(Fixture {
            queue,
            name: test.to_owned(),
            guard,
        })
    }
}

stylefleet::conformance_tests!(Sqlite);

/// `run_all` itself, on one database, queues kept apart by the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_database() {
    let (_dir, queue) = fresh();
    let started = Instant::now();
    conformance::run_all(&queue, &caps(), "all").await;
    eprintln!("conformance::run_all took {:?}", started.elapsed());
}

/// Defaults match the Service Bus settings of the cloud deployment.
#[test]
fn defaults_match_service_bus() {
    let config = QueueConfig::default();
    assert_eq!(config.lock_duration, Duration::from_secs(60));
    assert_eq!(config.max_delivery_count, 5);
}

#[tokio::test]
async fn messages_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("queue.sqlite");
    {
        let queue = SqliteQueue::open(&path, config()).unwrap();
        queue
            .send(
                "batches",
                vec![OutgoingMessage::new("job:00000", b"frames 0..24".to_vec())],
            )
            .await
            .unwrap();
        queue
            .send(
                "stitch",
                vec![OutgoingMessage::new("job:stitch", b"{}".to_vec())],
            )
            .await
            .unwrap();
        let d = queue
            .receive_one("stitch", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        queue
            .dead_letter(&d, "Testing", "kept across reopen")
            .await
            .unwrap();
    }
    assert!(path.exists(), "the database is a file");
    let queue = SqliteQueue::open(&path, config()).unwrap();
    assert_eq!(queue.backlog("batches").await.unwrap(), 1);
    let d = queue
        .receive_one("batches", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.id, "job:00000");
    assert_eq!(d.body, b"frames 0..24");
    assert_eq!(d.delivery_count, 1);
    queue.complete(&d).await.unwrap();
    let dead = queue.peek_dead_letters("stitch", 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].info.description, "kept across reopen");
}

/// A delivery count survives reopening too: a crash loop cannot retry a poison message forever.
#[tokio::test]
async fn delivery_counts_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    SqliteQueue::open(&path, config())
        .unwrap()
        .send_one("batches", OutgoingMessage::new("p", b"x".to_vec()))
        .await
        .unwrap();
    for attempt in 1..=MAX_DELIVERIES {
        // A worker that crashes: receives, then disappears without settling.
        let queue = SqliteQueue::open(&path, config()).unwrap();
        let d = queue
            .receive_one("batches", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.delivery_count, attempt);
        queue.abandon(&d, None).await.unwrap();
    }
    let queue = SqliteQueue::open(&path, config()).unwrap();
    assert!(
        queue
            .receive_one("batches", Duration::from_millis(200))
            .await
            .unwrap()
            .is_none()
    );
    let dead = queue.peek_dead_letters("batches", 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].info.reason, MAX_DELIVERY_COUNT_EXCEEDED);
}

/// The schema is plain SQL that the `sqlite3` CLI (or any SQLite client) can read.
#[tokio::test]
async fn schema_is_readable_by_other_clients() {
    let (dir, queue) = fresh();
    let d = conformance::send_and_receive(&queue, "batches", "job:00001").await;
    let other = rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap();
    let (id, state, count, token): (String, String, i64, String) = other
        .query_row(
            "SELECT id, state, delivery_count, lock_token FROM messages WHERE queue = 'batches'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (id.as_str(), state.as_str(), count),
        ("job:00001", "active", 1)
    );
    assert_eq!(token, d.lock_token);
    let mode: String = other
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Dead-letter deliveries cannot be dead-lettered again; the call says so instead of losing the
/// lock silently.
#[tokio::test]
async fn dead_lettering_a_dead_letter_is_refused() {
    let (_dir, queue) = fresh();
    let d = conformance::send_and_receive(&queue, "q", "m").await;
    queue.dead_letter(&d, "First", "").await.unwrap();
    let dead = queue
        .receive_dead_letters("q", 1, Duration::from_secs(5))
        .await
        .unwrap();
    let err = queue.dead_letter(&dead[0], "Second", "").await.unwrap_err();
    assert!(matches!(err, QueueError::Permanent { .. }), "{err:?}");
    let peeked = queue.peek_dead_letters("q", 0, 10).await.unwrap();
    assert_eq!(peeked[0].info.reason, "First", "the original reason stays");
}

/// Duplicate detection lasts while the message is present: once completed, the id may be sent
/// again (a later job re-using an id is new work).
#[tokio::test]
async fn completed_ids_can_be_sent_again() {
    let (_dir, queue) = fresh();
    let d = conformance::send_and_receive(&queue, "q", "m").await;
    queue.complete(&d).await.unwrap();
    queue
        .send_one("q", OutgoingMessage::new("m", b"2".to_vec()))
        .await
        .unwrap();
    let again = conformance::expect_one(&queue, &caps(), "q").await;
    assert_eq!(again.body, b"2", "the second message, not the first");
    // Ids are per queue.
    queue
        .send_one("other", OutgoingMessage::new("m", b"3".to_vec()))
        .await
        .unwrap();
    assert_eq!(queue.backlog("other").await.unwrap(), 1);
}

/// Several handles (connections) on one file, receiving from tasks in parallel: every message
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    let sender = SqliteQueue::open(&path, config()).unwrap();
    let total = 120;
    sender
        .send(
            "batches",
            (0..total)
                .map(|i| OutgoingMessage::new(format!("m{i:03}"), vec![]))
                .collect(),
        )
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let queue = SqliteQueue::open(&path, config()).unwrap();
        tasks.spawn(async move {
            let mut seen = Vec::new();
            while let Some(d) = queue
                .receive_one("batches", Duration::from_millis(300))
                .await
                .unwrap()
            {
                queue.complete(&d).await.unwrap();
                seen.push(d.id);
            }
            seen
        });
    }
    let mut counts = BTreeMap::new();
    while let Some(seen) = tasks.join_next().await {
        for id in seen.unwrap() {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    assert_eq!(counts.len(), total);
    assert!(
        counts.values().all(|&n| n == 1),
        "delivered more than once: {counts:?}"
    );
    assert_eq!(sender.backlog("batches").await.unwrap(), 0);
}

const CHILD_DB: &str = "STYLEFLEET_QUEUE_TEST_CHILD_DB";
const CHILD_GO: &str = "STYLEFLEET_QUEUE_TEST_CHILD_GO";
const CHILD_OUT: &str = "STYLEFLEET_QUEUE_TEST_CHILD_OUT";

/// Not a test on its own: the body of each child process of `processes_share_one_file`.
#[test]
fn child_worker() {
    let (Some(db), Some(go), Some(out)) = (
        std::env::var_os(CHILD_DB),
        std::env::var_os(CHILD_GO),
        std::env::var_os(CHILD_OUT),
    ) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // One line per processed message, "<id> <delivery count>", into a file of its own: stdout
    // is shared with the test harness's output.
    let processed = runtime.block_on(async {
        let mut processed = String::new();
        // Long locks: any message seen twice is a double lock, not an expiry.
        let queue = SqliteQueue::open(
            &db,
            QueueConfig {
                lock_duration: Duration::from_secs(60),
                ..config()
            },
        )
        .unwrap();
        // Start together, so the processes really contend.
        while !Path::new(&go).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        loop {
            let got = queue
                .receive("batches", 3, Duration::from_millis(500))
                .await
                .unwrap();
            if got.is_empty() && queue.backlog("batches").await.unwrap() == 0 {
                break;
            }
            for d in got {
                queue.complete(&d).await.unwrap();
                processed.push_str(&format!("{} {}\n", d.id, d.delivery_count));
            }
        }
        processed
    });
    std::fs::write(out, processed).unwrap();
}

/// Several processes receive from one database file; each message is processed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_one_file() {
    const PROCESSES: usize = 4;
    const MESSAGES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.sqlite");
    let go = dir.path().join("go");
    let queue = SqliteQueue::open(&db, config()).unwrap();
    queue
        .send(
            "batches",
            (0..MESSAGES)
                .map(|i| OutgoingMessage::new(format!("job:{i:05}"), vec![]))
                .collect(),
        )
        .await
        .unwrap();

    let exe = std::env::current_exe().unwrap();
    let outs: Vec<_> = (0..PROCESSES)
        .map(|i| dir.path().join(format!("child-{i}.txt")))
        .collect();
    let children: Vec<_> = outs
        .iter()
        .map(|out| {
            Command::new(&exe)
                .args(["--exact", "child_worker", "--nocapture", "--test-threads=1"])
                .env(CHILD_DB, &db)
                .env(CHILD_GO, &go)
                .env(CHILD_OUT, out)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::fs::write(&go, b"").unwrap();

    let started = Instant::now();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_process = Vec::new();
    for (output, out) in outputs.iter().zip(&outs) {
        assert!(
            output.status.success(),
            "child failed: {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let processed = std::fs::read_to_string(out).unwrap();
        let mut mine = 0;
        for line in processed.lines() {
            let (id, count) = line.split_once(' ').unwrap();
            assert_eq!(count, "1", "{id} was redelivered although no lock expired");
            *counts.entry(id.to_owned()).or_default() += 1;
            mine += 1;
        }
        per_process.push(mine);
    }
    eprintln!("{MESSAGES} messages over {PROCESSES} processes in {elapsed:?}: {per_process:?}");
    assert_eq!(counts.len(), MESSAGES, "every message processed");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    assert_eq!(queue.backlog("batches").await.unwrap(), 0);
    assert!(
        queue
            .peek_dead_letters("batches", 0, 1)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `keep_locked` keeps a message hidden for several lock durations, and stopping it reports a
/// lock that held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_locked_renews_in_the_background() {
    let (_dir, queue) = fresh();
    let queue = Arc::new(queue);
    let d = conformance::send_and_receive(&*queue, "q", "long").await;
    assert_eq!(
        d.lock_duration, LOCK,
        "the delivery carries the configured lock"
    );
    let renewal = Arc::clone(&queue).keep_locked(&d);
    assert!(
        queue
            .receive_one("q", LOCK * 5 / 2)
            .await
            .unwrap()
            .is_none(),
        "the renewed lock hides the message"
    );
    assert!(!renewal.is_lost());
    renewal.stop().await.unwrap();
    queue.complete(&d).await.unwrap();
}

/// When the lock is lost, the guard's `lost` token fires and `stop` reports `LockLost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_locked_reports_a_lost_lock() {
    let (_dir, queue) = fresh();
    let queue: Arc<dyn Queue> = Arc::new(queue);
    let d = conformance::send_and_receive(&*queue, "q", "m").await;
    let renewal = Arc::clone(&queue).keep_locked(&d);
    // Someone else settles it (as after an expiry and redelivery elsewhere).
    queue.complete(&d).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), renewal.lost().cancelled())
        .await
        .unwrap();
    assert!(renewal.is_lost());
    let err = renewal.stop().await.unwrap_err();
    assert!(
        matches!(err, QueueError::LockLost { ref id } if id == "m"),
        "{err:?}"
    );
}

/// Dropping the guard stops renewal: the lock then expires and the message comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_renewal_guard_lets_the_lock_expire() {
    let (_dir, queue) = fresh();
    let queue = Arc::new(queue);
    let d = conformance::send_and_receive(&*queue, "q", "m").await;
    drop(Arc::clone(&queue).keep_locked(&d));
    let again = queue
        .receive_one("q", LOCK * 3)
        .await
        .unwrap()
        .expect("the lock expired once renewal stopped");
    assert_eq!(again.delivery_count, 2);
}

/// A handle with another lock duration locks (and renews) for its own duration, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_carry_the_configured_lock_duration() {
    let dir = tempfile::tempdir().unwrap();
    let long = Duration::from_secs(7);
    let queue = SqliteQueue::open(
        dir.path().join("queue.sqlite"),
        QueueConfig {
            lock_duration: long,
            ..config()
        },
    )
    .unwrap();
    let d = conformance::send_and_receive(&queue, "q", "m").await;
    assert_eq!(d.lock_duration, long);
    queue.complete(&d).await.unwrap();
}

/// `replay_dead_letters` re-sends every dead letter with its id and empties the dead-letter queue.
#[tokio::test]
async fn replay_dead_letters_in_bulk() {
    let (_dir, queue) = fresh();
    let ids = ["job:00001", "job:00002", "job:00003"];
    queue
        .send(
            "batches",
            ids.iter()
                .map(|id| OutgoingMessage::new(*id, id.as_bytes().to_vec()))
                .collect(),
        )
        .await
        .unwrap();
    for d in queue
        .receive("batches", 10, Duration::from_secs(5))
        .await
        .unwrap()
    {
        queue.dead_letter(&d, "StyleFailed", "").await.unwrap();
    }
    assert_eq!(
        queue
            .peek_dead_letters("batches", 0, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(queue.replay_dead_letters("batches", 100).await.unwrap(), 3);
    assert!(
        queue
            .peek_dead_letters("batches", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut back: Vec<_> = queue
        .receive("batches", 10, Duration::from_secs(5))
        .await
        .unwrap();
    back.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(back.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ids);
    assert!(
        back.iter()
            .all(|d| d.body == d.id.as_bytes() && d.delivery_count == 1)
    );
}
