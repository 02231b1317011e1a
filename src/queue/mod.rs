//! Durable work queues with peek-lock semantics, as Azure Service Bus defines them.
//!
//! The trait is deliberately small (send, receive, complete, abandon, dead-letter, renew the lock,
//! and reading the dead-letter queue for replay); conveniences live in [`QueueExt`]. Every backend
//! runs the same conformance suite (module `conformance`, feature `conformance`).
//!
//! Semantics every backend keeps:
//! - `receive` locks each message it returns for the backend's lock duration, and says which
//!   duration in [`Delivery::lock_duration`]; until the lock expires (or the holder completes,
//!   abandons or dead-letters it) no other receiver sees it.
//! - Each receive increments the message's delivery count. A message whose delivery count would
//!   pass `max_delivery_count` is moved to the dead-letter queue instead of being delivered, with
//!   the reason [`MAX_DELIVERY_COUNT_EXCEEDED`].
//! - `complete` removes the message; `abandon` releases the lock, optionally hiding the message for
//!   a delay (backoff); `dead_letter` moves it to the queue's dead-letter queue with a reason.
//! - Settling with a lost lock (expired, or the message was settled by someone else) fails with
//!   [`QueueError::LockLost`]: the work may have been done twice, which handlers tolerate.
//! - Message ids are kept across dead-lettering and replay.

#[cfg(any(feature = "conformance", test))]
pub mod conformance;
mod ext;
#[cfg(feature = "service-bus")]
pub mod service_bus;
pub mod sqlite;

pub use ext::{LockRenewal, QueueExt};

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

/// The queue that carries one message per batch of frames.
pub const BATCHES: &str = "batches";
/// The queue that carries one message per job whose batches are all done.
pub const STITCH: &str = "stitch";
/// The dead-letter reason a backend gives a message that ran out of deliveries.
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Stable id, for example `"<job>:<batch>"`; kept through dead-lettering and replay.
    pub id: String,
    /// The body (JSON in this system).
    pub body: Vec<u8>,
    /// Hide the message until this much time has passed (scheduled delivery).
    pub delay: Option<Duration>,
}

impl OutgoingMessage {
    /// A message to deliver now.
    pub fn new(id: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            id: id.into(),
            body: body.into(),
            delay: None,
        }
    }
}

/// Why a message sits in a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// Short machine-readable reason, for example `"MalformedMessage"`.
    pub reason: String,
    /// Human-readable detail.
    pub description: String,
    /// When it was dead-lettered.
    pub at: SystemTime,
}

/// A message received under a lock. Settle it with `complete`, `abandon` or `dead_letter`.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue it came from (for dead-letter deliveries: the queue whose dead-letter queue holds it).
    pub queue: String,
    /// The message id given at send time.
    pub id: String,
    /// The backend's handle for this delivery's lock; settling needs it.
    pub lock_token: String,
    /// The body.
    pub body: Vec<u8>,
    /// How many times the message has been delivered, this delivery included (first delivery: 1).
    pub delivery_count: u32,
    /// When it was first sent.
    pub enqueued_at: SystemTime,
    /// When the lock expires unless renewed, by the backend's clock (which may differ from this
    /// machine's: never time renewals from it).
    pub locked_until: SystemTime,
    /// How long the lock lasts from the receive or from a renewal: the queue's configured lock
    /// duration as the backend knows it, never derived from clocks. Lock renewal
    /// ([`QueueExt::keep_locked`]) is timed from it.
    pub lock_duration: Duration,
    /// Present when this delivery comes from the dead-letter queue.
    pub dead_letter: Option<DeadLetterInfo>,
}

/// A message in a dead-letter queue, read without a lock (for listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The queue whose dead-letter queue holds it.
    pub queue: String,
    /// The backend's ordering key (sequence number); `peek_dead_letters` pages with it.
    pub sequence: i64,
    /// The message id.
    pub id: String,
    /// The body.
    pub body: Vec<u8>,
    /// Deliveries before it was dead-lettered.
    pub delivery_count: u32,
    /// When it was first sent.
    pub enqueued_at: SystemTime,
    /// Why it was dead-lettered.
    pub info: DeadLetterInfo,
}

/// Errors from a queue backend, classified for the caller.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The lock was lost (expired or settled elsewhere); the delivery can no longer be settled.
    #[error("the lock on message {id} was lost")]
    LockLost {
        /// The message id.
        id: String,
    },
    /// The queue does not exist.
    #[error("queue {0} does not exist")]
    NoSuchQueue(String),
    /// A failure that may pass if retried (busy database, network).
    #[error("transient queue failure: {message}")]
    Transient {
        /// What failed.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A failure that will not pass by retrying (bad configuration, corrupt state).
    #[error("queue failure: {message}")]
    Permanent {
        /// What failed.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl QueueError {
    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Transient { .. })
    }
}

/// Result alias for queue calls.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// A durable peek-lock queue backend (embedded SQLite, Azure Service Bus).
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Sends messages to `queue`, all or none where the backend allows.
    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<()>;

    /// Receives up to `max` messages, waiting up to `wait` for the first one. Each comes locked.
    async fn receive(&self, queue: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Whether [`Queue::receive_by_id`] can pick one message out of a queue. The embedded queue
    /// can; Service Bus cannot (it locks messages only in queue order), so a caller there has to
    /// receive in order and release what is not its own.
    fn receives_by_id(&self) -> bool {
        false
    }

    /// Receives (locks) the active message whose id is `id`, when it is in `queue`, visible and not
    /// locked; `None` otherwise. No other message is touched, so none gains a delivery. A backend
    /// that cannot ([`Queue::receives_by_id`] is false) answers `None`.
    async fn receive_by_id(&self, queue: &str, id: &str) -> Result<Option<Delivery>> {
        let _ = (queue, id);
        Ok(None)
    }

    /// Removes a delivered message (from the dead-letter queue when it came from there).
    async fn complete(&self, delivery: &Delivery) -> Result<()>;

    /// Releases the lock; the message becomes visible again after `delay` (now when `None`).
    async fn abandon(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<()>;

    /// Moves the message to the queue's dead-letter queue with a reason.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str, description: &str)
    -> Result<()>;

    /// Extends the lock by the lock duration; returns the new expiry.
    async fn renew_lock(&self, delivery: &Delivery) -> Result<SystemTime>;

    /// Reads up to `max` dead-lettered messages of `queue` with sequence >= `from_sequence`,
    /// without locking them.
    async fn peek_dead_letters(
        &self,
        queue: &str,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// Receives (locks) up to `max` messages from `queue`'s dead-letter queue, for replay or purge:
    /// `complete` removes them, `abandon` leaves them there.
    async fn receive_dead_letters(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Messages waiting in `queue` (not counting dead letters): the autoscaler's signal.
    async fn backlog(&self, queue: &str) -> Result<u64>;
}

/// Opens the queue a URL names: an SQLite file (a path or `sqlite://<path>`) configured by
/// `config`, or Service Bus (`servicebus://<namespace>.servicebus.windows.net` or `sb://...`,
/// whose queues carry their own settings; it connects on first use, so this stays synchronous).
pub fn open(spec: &str, config: sqlite::QueueConfig) -> Result<std::sync::Arc<dyn Queue>> {
    if spec.starts_with("servicebus://") || spec.starts_with("sb://") {
        #[cfg(feature = "service-bus")]
        return Ok(std::sync::Arc::new(service_bus::ServiceBusQueue::open(
            spec,
        )?));
        #[cfg(not(feature = "service-bus"))]
        return Err(QueueError::Permanent {
            message: format!("{spec}: this build has no Service Bus backend (feature service-bus)"),
            source: None,
        });
    }
    let path = spec.strip_prefix("sqlite://").unwrap_or(spec);
    Ok(std::sync::Arc::new(sqlite::SqliteQueue::open(
        path, config,
    )?))
}
