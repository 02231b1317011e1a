//! The embedded queue: SQLite in WAL mode, shared by worker processes.
//!
//! [`SqliteQueue`] keeps every queue in one database file. Several processes may open the same
//! file and receive concurrently: every write runs in a `BEGIN IMMEDIATE` transaction, so a
//! message is locked by at most one receiver at a time. Queues exist as soon as a message names
//! them; there is nothing to create first.
//!
//! # Schema
//!
//! One table, readable with the `sqlite3` CLI (times are milliseconds since the Unix epoch; read
//! them with `datetime(visible_at / 1000, 'unixepoch')`):
//!
//! ```sql
//! CREATE TABLE messages (
//!     sequence       INTEGER PRIMARY KEY AUTOINCREMENT, -- ordering key, never reused
//!     queue          TEXT    NOT NULL,                  -- queue name: batches, stitch, ...
//!     id             TEXT    NOT NULL,                  -- message id given at send time
//!     body           BLOB    NOT NULL,
//!     enqueued_at    INTEGER NOT NULL,                  -- when it was sent
//!     visible_at     INTEGER NOT NULL,                  -- hidden until then (scheduled, abandoned with delay)
//!     locked_until   INTEGER,                           -- lock expiry; NULL when not locked
//!     lock_token     TEXT,                              -- random per delivery; NULL when not locked
//!     delivery_count INTEGER NOT NULL DEFAULT 0,
//!     state          TEXT    NOT NULL DEFAULT 'active', -- 'active' or 'dead' (dead-letter queue)
//!     dl_reason      TEXT,                              -- why it was dead-lettered
//!     dl_description TEXT,
//!     dl_at          INTEGER                            -- when it was dead-lettered
//! );
//! ```
//!
//! `PRAGMA user_version` holds the schema version (1).
//!
//! # Behaviour
//!
//! - **Duplicate detection.** Sending a message whose id equals that of a message still present
//!   and active in the same queue (waiting, scheduled or locked; not dead) is a no-op, like
//!   Service Bus duplicate detection. Once the message is completed or dead-lettered, the id may be
//!   sent again: that is how a dead letter is replayed. A partial unique index enforces this.
//! - **Delivery.** `receive` takes messages in sequence order among those visible and not locked
//!   (or whose lock expired), increments their delivery count and locks them with a fresh random
//!   token for the configured lock duration, which each delivery carries as its
//!   [`lock_duration`](Delivery::lock_duration) (every process on the file shares one clock, so
//!   the lock's expiry and its renewals agree). A message whose count would pass
//!   `max_delivery_count` is dead-lettered with [`MAX_DELIVERY_COUNT_EXCEEDED`] instead.
//! - **Settling.** `complete`, `abandon`, `dead_letter` and `renew_lock` need the delivery's token
//!   and an unexpired lock; otherwise they fail with [`QueueError::LockLost`].
//! - **Dead-letter queue.** Dead messages keep their id, body and delivery count.
//!   `receive_dead_letters` locks them with the same mechanics (without counting deliveries:
//!   `delivery_count` stays the count before dead-lettering); `complete` deletes such a message,
//!   `abandon` unlocks it and leaves it dead, and `dead_letter` on it is refused.
//! - **Backlog.** Active messages that are visible or locked; dead messages and messages hidden by
//!   a delay are not counted, as Service Bus's active message count does not count them.
//! - **Waiting.** `receive` polls every `poll_interval` until a message arrives or `wait` passes.
//!   All SQLite calls run on tokio's blocking pool, one connection per [`SqliteQueue`].
//! - **Durability.** WAL with `synchronous = NORMAL`: a committed send survives a crash of any
//!   process; a power loss may lose the last commits.
//! - **Errors.** `SQLITE_BUSY` and `SQLITE_LOCKED` (another process held the database past the busy
//!   timeout) are [`QueueError::Transient`]; everything else is [`QueueError::Permanent`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};

use super::{
    DeadLetter, DeadLetterInfo, Delivery, MAX_DELIVERY_COUNT_EXCEEDED, OutgoingMessage, Queue,
    QueueError, Result,
};

/// The schema version this code writes and reads (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    sequence       INTEGER PRIMARY KEY AUTOINCREMENT,
    queue          TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    enqueued_at    INTEGER NOT NULL,
    visible_at     INTEGER NOT NULL,
    locked_until   INTEGER,
    lock_token     TEXT,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    state          TEXT    NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'dead')),
    dl_reason      TEXT,
    dl_description TEXT,
    dl_at          INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, state, sequence);
CREATE INDEX IF NOT EXISTS messages_by_lock ON messages (lock_token) WHERE lock_token IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS messages_active_id ON messages (queue, id) WHERE state = 'active';
";

const ACTIVE: &str = "active";
const DEAD: &str = "dead";

/// Settings of an embedded queue. Build with struct update syntax over [`Default`] or the
/// `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// How long a received message stays locked unless renewed (default 60 s).
    pub lock_duration: Duration,
    /// Deliveries before a message is dead-lettered (default 5).
    pub max_delivery_count: u32,
    /// How long a call waits for another process's write transaction before failing with
    /// [`QueueError::Transient`] (default 5 s).
    pub busy_timeout: Duration,
    /// How often a waiting `receive` looks for new messages (default 100 ms).
    pub poll_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 5,
            busy_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(100),
        }
    }
}

impl QueueConfig {
    /// Sets the lock duration.
    pub fn with_lock_duration(mut self, lock_duration: Duration) -> Self {
        self.lock_duration = lock_duration;
        self
    }

    /// Sets the maximum delivery count.
    pub fn with_max_delivery_count(mut self, max_delivery_count: u32) -> Self {
        self.max_delivery_count = max_delivery_count;
        self
    }

    /// Sets the busy timeout.
    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// Sets the poll interval of a waiting `receive`.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }
}

/// The embedded peek-lock queue backend over one SQLite file. Cheap to clone (clones share the
/// connection); open one per process, or several for more parallel calls.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// One connection; the mutex serialises this handle's calls, which run on the blocking pool.
    /// Other processes (and other handles) have their own connections; SQLite's file locks and
    /// `BEGIN IMMEDIATE` keep them apart.
    conn: Mutex<Connection>,
    config: QueueConfig,
    path: PathBuf,
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue database at `path`, with its parent folder.
    ///
    /// This is a short blocking call (it may wait up to the busy timeout for another process
    /// creating the schema); call it at startup or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>, config: QueueConfig) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| QueueError::Permanent {
                message: format!(
                    "cannot create the folder of queue database {}",
                    path.display()
                ),
                source: Some(Box::new(source)),
            })?;
        }
        // Two processes opening a new database at once (two `process` commands started
        // together) can meet SQLITE_BUSY where SQLite does not call the busy handler (switching
        // the journal to WAL, creating the schema): retry that within the busy timeout.
        let started = std::time::Instant::now();
        let conn = loop {
            match open_connection(&path, &config) {
                Ok(conn) => break conn,
                Err(e) if e.is_transient() && started.elapsed() < config.busy_timeout => {
                    tracing::debug!(error = %e, "the queue database is busy; opening again");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                config,
                path,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Runs `f` with the connection on the blocking pool, so the async runtime never waits on
    /// SQLite's locks or the disk.
    async fn call<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &QueueConfig) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a transaction open (dropping one rolls
            // it back), so a poisoned mutex still guards a usable connection.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &inner.config)
        })
        .await
        .map_err(|source| QueueError::Permanent {
            message: format!("queue call {what} did not finish"),
            source: Some(Box::new(source)),
        })?
    }

    /// Receives from `state` (active or dead), polling until something arrives or `wait` passes.
    async fn receive_from(
        &self,
        what: &'static str,
        queue: &str,
        state: &'static str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let queue_name = queue.to_owned();
            let deliveries = self
                .call(what, move |conn, config| {
                    receive_now(conn, config, &queue_name, state, max, None)
                        .map_err(|e| classify(what, e))
                })
                .await?;
            let now = tokio::time::Instant::now();
            if !deliveries.is_empty() || now >= deadline {
                return Ok(deliveries);
            }
            let pause = self.inner.config.poll_interval.min(deadline - now);
            tokio::time::sleep(pause).await;
        }
    }
}

fn open_connection(path: &Path, config: &QueueConfig) -> Result<Connection> {
    let what = "open the queue database";
    let mut conn = Connection::open(path).map_err(|e| classify(what, e))?;
    let version = prepare(&mut conn, config).map_err(|e| classify(what, e))?;
    if version > SCHEMA_VERSION {
        return Err(QueueError::Permanent {
            message: format!(
                "queue database {} has schema version {version}; this build knows up to {SCHEMA_VERSION}",
                path.display()
            ),
            source: None,
        });
    }
    Ok(conn)
}

/// Sets the connection up and creates the schema unless a newer one is there; returns the
/// version found.
fn prepare(conn: &mut Connection, config: &QueueConfig) -> rusqlite::Result<i64> {
    conn.busy_timeout(config.busy_timeout)?;
    // WAL lets readers proceed during a write and makes commits cheap; NORMAL sync is durable
    // against process crashes in WAL mode, which is what the fleet needs.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Still correct (rollback journal), only slower and with readers blocked by writers.
        tracing::warn!(%mode, "the queue database could not switch to WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let tx = immediate(conn)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(version);
    }
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(version)
}

/// Classifies a SQLite error where it happens: contention is worth retrying, the rest is not.
fn classify(what: &str, error: rusqlite::Error) -> QueueError {
    let message = format!("sqlite queue: {what}");
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => QueueError::Transient {
            message,
            source: Some(Box::new(error)),
        },
        _ => QueueError::Permanent {
            message,
            source: Some(Box::new(error)),
        },
    }
}

fn millis(time: SystemTime) -> i64 {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn system_time(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(if value < 0 { 0 } else { u32::MAX })
}

fn now_millis() -> i64 {
    millis(SystemTime::now())
}

fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    // IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
    // can fail with SQLITE_BUSY_SNAPSHOT without waiting when another process wrote meanwhile.
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// A candidate row for delivery.
struct Candidate {
    sequence: i64,
    id: String,
    body: Vec<u8>,
    enqueued_at: i64,
    delivery_count: i64,
    dead_letter: Option<DeadLetterInfo>,
}

fn dead_letter_info(row: &Row<'_>, first: usize) -> rusqlite::Result<Option<DeadLetterInfo>> {
    let reason: Option<String> = row.get(first)?;
    let description: Option<String> = row.get(first + 1)?;
    let at: Option<i64> = row.get(first + 2)?;
    Ok(reason.map(|reason| DeadLetterInfo {
        reason,
        description: description.unwrap_or_default(),
        at: system_time(at.unwrap_or(0)),
    }))
}

/// One receive attempt: locks up to `max` messages in one transaction, only the one whose id is
/// `only` when that is given.
fn receive_now(
    conn: &mut Connection,
    config: &QueueConfig,
    queue: &str,
    state: &'static str,
    max: usize,
    only: Option<&str>,
) -> rusqlite::Result<Vec<Delivery>> {
    let tx = immediate(conn)?;
    let now = now_millis();
    let locked_until = now.saturating_add(duration_millis(config.lock_duration));
    let max_deliveries = i64::from(config.max_delivery_count);
    let mut deliveries = Vec::new();
    // Loop because messages that run out of deliveries are dead-lettered rather than returned,
    // and the caller should still get up to `max` deliverable ones.
    while deliveries.len() < max {
        let want = i64::try_from(max - deliveries.len()).unwrap_or(i64::MAX);
        let candidates = {
            let mut select = tx.prepare_cached(
                "SELECT sequence, id, body, enqueued_at, delivery_count, dl_reason, dl_description, dl_at
                 FROM messages
                 WHERE queue = ?1 AND state = ?2 AND visible_at <= ?3
                   AND (locked_until IS NULL OR locked_until <= ?3)
                   AND (?5 IS NULL OR id = ?5)
                 ORDER BY sequence
                 LIMIT ?4",
            )?;
            let rows = select.query_map(params![queue, state, now, want, only], |row| {
                Ok(Candidate {
                    sequence: row.get(0)?,
                    id: row.get(1)?,
                    body: row.get(2)?,
                    enqueued_at: row.get(3)?,
                    delivery_count: row.get(4)?,
                    dead_letter: dead_letter_info(row, 5)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        if candidates.is_empty() {
            break;
        }
        for candidate in candidates {
            let dead = state == DEAD;
            if !dead && candidate.delivery_count >= max_deliveries {
                tx.prepare_cached(
                    "UPDATE messages
                     SET state = 'dead', dl_reason = ?2, dl_description = ?3, dl_at = ?4,
                         locked_until = NULL, lock_token = NULL, visible_at = ?4
                     WHERE sequence = ?1",
                )?
                .execute(params![
                    candidate.sequence,
                    MAX_DELIVERY_COUNT_EXCEEDED,
                    format!(
                        "delivered {} times; the limit is {}",
                        candidate.delivery_count, config.max_delivery_count
                    ),
                    now,
                ])?;
                continue;
            }
            // Dead-letter deliveries do not count: the count stays what it was when it died.
            let delivery_count = if dead {
                candidate.delivery_count
            } else {
                candidate.delivery_count + 1
            };
            let lock_token: String = tx
                .prepare_cached(
                    "UPDATE messages
                     SET delivery_count = ?2, locked_until = ?3, lock_token = lower(hex(randomblob(16)))
                     WHERE sequence = ?1
                     RETURNING lock_token",
                )?
                .query_row(params![candidate.sequence, delivery_count, locked_until], |row| row.get(0))?;
            deliveries.push(Delivery {
                queue: queue.to_owned(),
                id: candidate.id,
                lock_token,
                body: candidate.body,
                delivery_count: count(delivery_count),
                enqueued_at: system_time(candidate.enqueued_at),
                locked_until: system_time(locked_until),
                lock_duration: config.lock_duration,
                dead_letter: if dead { candidate.dead_letter } else { None },
            });
        }
    }
    tx.commit()?;
    Ok(deliveries)
}

/// The state a delivery's message is in while it is locked.
fn delivery_state(delivery: &Delivery) -> &'static str {
    if delivery.dead_letter.is_some() {
        DEAD
    } else {
        ACTIVE
    }
}

fn lock_lost(delivery: &Delivery) -> QueueError {
    QueueError::LockLost {
        id: delivery.id.clone(),
    }
}

/// Runs one settling statement whose parameters start with the lock-holding row's identity
/// (`?1` queue, `?2` id, `?3` lock token, `?4` now, `?5` state) and fails with `LockLost` when it
/// touched no row.
async fn settle(
    queue: &SqliteQueue,
    what: &'static str,
    delivery: &Delivery,
    sql: &'static str,
    extra: Vec<rusqlite::types::Value>,
) -> Result<()> {
    let key = delivery.clone();
    let changed = queue
        .call(what, move |conn, _| {
            let run = |conn: &mut Connection| -> rusqlite::Result<usize> {
                let tx = immediate(conn)?;
                let mut values: Vec<rusqlite::types::Value> = vec![
                    key.queue.clone().into(),
                    key.id.clone().into(),
                    key.lock_token.clone().into(),
                    now_millis().into(),
                    delivery_state(&key).to_owned().into(),
                ];
                values.extend(extra);
                let changed = tx
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(values))?;
                tx.commit()?;
                Ok(changed)
            };
            run(conn).map_err(|e| classify(what, e))
        })
        .await?;
    if changed == 0 {
        Err(lock_lost(delivery))
    } else {
        Ok(())
    }
}

/// The condition every settling statement puts on the row: the delivery still holds the lock.
macro_rules! holds_lock {
    () => {
        "queue = ?1 AND id = ?2 AND lock_token = ?3 AND locked_until > ?4 AND state = ?5"
    };
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let queue = queue.to_owned();
        self.call("send", move |conn, _| {
            let run = |conn: &mut Connection| -> rusqlite::Result<()> {
                let tx = immediate(conn)?;
                let now = now_millis();
                {
                    // OR IGNORE skips a message whose id is still active in this queue (the
                    // partial unique index): duplicate detection.
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO messages (queue, id, body, enqueued_at, visible_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    for message in &messages {
                        let visible_at =
                            now.saturating_add(message.delay.map_or(0, duration_millis));
                        insert.execute(params![
                            queue,
                            message.id,
                            message.body,
                            now,
                            visible_at
                        ])?;
                    }
                }
                tx.commit()
            };
            run(conn).map_err(|e| classify("send", e))
        })
        .await
    }

    async fn receive(&self, queue: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.receive_from("receive", queue, ACTIVE, max, wait).await
    }

    fn receives_by_id(&self) -> bool {
        true
    }

    async fn receive_by_id(&self, queue: &str, id: &str) -> Result<Option<Delivery>> {
        let (queue, id) = (queue.to_owned(), id.to_owned());
        let mut deliveries = self
            .call("receive by id", move |conn, config| {
                receive_now(conn, config, &queue, ACTIVE, 1, Some(&id))
                    .map_err(|e| classify("receive by id", e))
            })
            .await?;
        Ok(deliveries.pop())
    }

    async fn complete(&self, delivery: &Delivery) -> Result<()> {
        settle(
            self,
            "complete",
            delivery,
            concat!("DELETE FROM messages WHERE ", holds_lock!()),
            Vec::new(),
        )
        .await
    }

    async fn abandon(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<()> {
        let delay = delay.map_or(0, duration_millis);
        settle(
            self,
            "abandon",
            delivery,
            concat!(
                "UPDATE messages SET locked_until = NULL, lock_token = NULL, visible_at = ?4 + ?6 WHERE ",
                holds_lock!()
            ),
            vec![delay.into()],
        )
        .await
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        description: &str,
    ) -> Result<()> {
        if delivery.dead_letter.is_some() {
            return Err(QueueError::Permanent {
                message: format!(
                    "message {} of queue {} is already dead-lettered and cannot be dead-lettered again",
                    delivery.id, delivery.queue
                ),
                source: None,
            });
        }
        settle(
            self,
            "dead_letter",
            delivery,
            concat!(
                "UPDATE messages SET state = 'dead', dl_reason = ?6, dl_description = ?7, dl_at = ?4,
                 locked_until = NULL, lock_token = NULL, visible_at = ?4 WHERE ",
                holds_lock!()
            ),
            vec![reason.to_owned().into(), description.to_owned().into()],
        )
        .await
    }

    async fn renew_lock(&self, delivery: &Delivery) -> Result<SystemTime> {
        let key = delivery.clone();
        let renewed = self
            .call("renew_lock", move |conn, config| {
                let run = |conn: &mut Connection| -> rusqlite::Result<Option<i64>> {
                    let tx = immediate(conn)?;
                    let now = now_millis();
                    let until = now.saturating_add(duration_millis(config.lock_duration));
                    let renewed = tx
                        .prepare_cached(concat!(
                            "UPDATE messages SET locked_until = ?6 WHERE ",
                            holds_lock!(),
                            " RETURNING locked_until"
                        ))?
                        .query_row(
                            params![
                                key.queue,
                                key.id,
                                key.lock_token,
                                now,
                                delivery_state(&key),
                                until
                            ],
                            |row| row.get(0),
                        )
                        .optional()?;
                    tx.commit()?;
                    Ok(renewed)
                };
                run(conn).map_err(|e| classify("renew_lock", e))
            })
            .await?;
        renewed.map(system_time).ok_or_else(|| lock_lost(delivery))
    }

    async fn peek_dead_letters(
        &self,
        queue: &str,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<DeadLetter>> {
        let queue = queue.to_owned();
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        self.call("peek_dead_letters", move |conn, _| {
            let run = |conn: &mut Connection| -> rusqlite::Result<Vec<DeadLetter>> {
                let mut select = conn.prepare_cached(
                    "SELECT sequence, id, body, delivery_count, enqueued_at, dl_reason, dl_description, dl_at
                     FROM messages
                     WHERE queue = ?1 AND state = 'dead' AND sequence >= ?2
                     ORDER BY sequence
                     LIMIT ?3",
                )?;
                let rows = select.query_map(params![queue, from_sequence, limit], |row| {
                    Ok(DeadLetter {
                        queue: queue.clone(),
                        sequence: row.get(0)?,
                        id: row.get(1)?,
                        body: row.get(2)?,
                        delivery_count: count(row.get(3)?),
                        enqueued_at: system_time(row.get(4)?),
                        info: dead_letter_info(row, 5)?.unwrap_or_else(|| DeadLetterInfo {
                            reason: String::new(),
                            description: String::new(),
                            at: UNIX_EPOCH,
                        }),
                    })
                })?;
                rows.collect()
            };
            run(conn).map_err(|e| classify("peek_dead_letters", e))
        })
        .await
    }

    async fn receive_dead_letters(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        self.receive_from("receive_dead_letters", queue, DEAD, max, wait)
            .await
    }

    async fn backlog(&self, queue: &str) -> Result<u64> {
        let queue = queue.to_owned();
        self.call("backlog", move |conn, _| {
            // Locked messages were visible when received, so `visible_at <= now` counts them too.
            conn.query_row(
                "SELECT COUNT(*) FROM messages WHERE queue = ?1 AND state = 'active' AND visible_at <= ?2",
                params![queue, now_millis()],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| classify("backlog", e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_opened_by_many_at_once_opens_for_all() {
        for round in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(format!("queue-{round}.sqlite"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let openers: Vec<_> = (0..8)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        SqliteQueue::open(&path, QueueConfig::default()).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                let opened = opener.join().expect("the opener runs");
                assert!(opened.is_ok(), "round {round}: {opened:?}");
            }
        }
    }

    #[test]
    fn busy_and_locked_are_transient_and_the_rest_permanent() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let locked = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_LOCKED),
            None,
        );
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        assert!(classify("t", busy).is_transient());
        assert!(classify("t", locked).is_transient());
        let permanent = classify("t", corrupt);
        assert!(matches!(permanent, QueueError::Permanent { .. }));
        assert!(
            std::error::Error::source(&permanent).is_some(),
            "the cause is kept"
        );
    }

    #[test]
    fn times_round_trip_through_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(system_time(millis(t)), t);
        assert_eq!(count(-1), 0);
        assert_eq!(count(i64::MAX), u32::MAX);
    }
}
