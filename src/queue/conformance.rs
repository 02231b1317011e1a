//! The queue conformance suite: plain async functions that any [`Queue`] backend's
//! tests call.
//!
//! Each function takes the backend, its [`Capabilities`] and a queue name that no other test
//! uses, and panics when the backend breaks the semantics stated in [`super`]. A backend's test
//! file runs each one as its own test with [`conformance_tests!`](crate::conformance_tests), which
//! holds the only list of them (or [`run_all`] at once). Functions send to the queue they are
//! given and leave it empty (dead-letter queue included) when they pass. The helpers they share
//! ([`message`], [`expect_one`], [`expect_none`], ...) are public for a backend's own tests.
//!
//! The suite uses real time: lock expiry and delays are the backend's clock, so pass a short
//! lock duration (about a second) where the backend allows it.
//!
//! Most functions take `&dyn Queue`; those that exercise [`QueueExt::keep_locked`], whose
//! renewal runs in a task of its own, take a backend they can clone into an `Arc`.
//!
//! Compiled with the `conformance` feature only (the package's tests enable it through its
//! dev-dependency on itself): no binary carries it.
#![allow(clippy::unwrap_used)] // test code: a failed call is a failed conformance check

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    Delivery, LockRenewal, MAX_DELIVERY_COUNT_EXCEEDED, OutgoingMessage, Queue, QueueError,
    QueueExt,
};

/// What may differ between backends; the suite adapts its timings and checks to it.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// The backend's lock duration (the suite waits past it to see locks expire).
    pub lock_duration: Duration,
    /// The backend's maximum delivery count.
    pub max_delivery_count: u32,
    /// Whether sending an id that is still in the queue is dropped as a duplicate.
    pub dedupes_ids: bool,
    /// The longest the suite waits for something that should happen (a message to arrive, a
    /// count to settle on a backend whose statistics lag).
    pub patience: Duration,
}

impl Capabilities {
    /// Capabilities with the given lock duration and maximum delivery count, duplicate
    /// detection on, and 10 s of patience.
    pub fn new(lock_duration: Duration, max_delivery_count: u32) -> Self {
        Self {
            lock_duration,
            max_delivery_count,
            dedupes_ids: true,
            patience: Duration::from_secs(10),
        }
    }

    /// How long to look for a message that must not be there while a lock is held: short enough
    /// that the lock cannot expire meanwhile.
    fn short_wait(&self) -> Duration {
        (self.lock_duration / 4).min(Duration::from_millis(500))
    }

    /// Waiting this long past a lock's start is sure to see it expired.
    fn past_lock(&self) -> Duration {
        self.lock_duration + Duration::from_millis(300)
    }
}

/// Calls `$callback!($($args)* ; <every conformance function>)`: the one list of the suite's
/// functions, which [`run_all`](crate::queue::conformance::run_all) and
/// [`conformance_tests!`](crate::conformance_tests) expand.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_functions {
    ($callback:ident!($($args:tt)*)) => {
        $crate::$callback! {
            $($args)*;
            send_receive_complete,
            send_batch,
            receive_max_and_wait,
            scheduled_send,
            lock_hides_message,
            lock_expiry_redelivers,
            renew_lock_keeps_hidden,
            renewal_keeps_lock_past_its_duration,
            abandon_redelivers,
            abandon_with_delay,
            dead_letter_with_reason,
            max_delivery_count_dead_letters,
            lost_lock_fails_settling,
            lock_lost_during_work,
            replay_from_dead_letters,
            dead_letter_receive_and_abandon,
            peek_dead_letters_pages,
            backlog_counts,
            duplicate_ids,
            concurrent_receivers,
            receive_by_id_touches_no_other,
        }
    };
}

/// One `#[tokio::test]` per conformance function, named after it, on the backend a [`Harness`]
/// provides: `stylefleet::conformance_tests!(MyHarness);` in a backend's test file.
///
/// [`Harness`]: crate::queue::conformance::Harness
#[macro_export]
macro_rules! conformance_tests {
    ($harness:ty) => {
        $crate::__conformance_functions!(__conformance_test_fns!($harness));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    ($harness:ty; $($test:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            use $crate::queue::conformance::Harness as _;
            let Some(fixture) = <$harness>::open(stringify!($test)).await else {
                return;
            };
            let caps = <$harness>::capabilities();
            $crate::queue::conformance::$test(&fixture.queue, &caps, &fixture.name).await;
            <$harness>::close(fixture).await;
        }
    )*};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_run_all {
    ($queue:ident, $caps:ident, $name:ident; $($test:ident),* $(,)?) => {$(
        $test($queue, $caps, &$name(stringify!($test))).await;
    )*};
}

/// How a backend's test file gives each conformance test a queue: see [`conformance_tests!`].
///
/// [`conformance_tests!`]: crate::conformance_tests
#[allow(async_fn_in_trait)] // test code, never behind `dyn` or sent between threads
pub trait Harness {
    /// The backend.
    type Queue: Queue + Clone + 'static;
    /// What must live as long as the test (a temporary folder), or `()`.
    type Guard;

    /// The backend's capabilities.
    fn capabilities() -> Capabilities;

    /// A backend and a queue name for test `test`, or `None` (after saying why) to skip it.
    async fn open(test: &str) -> Option<Fixture<Self::Queue, Self::Guard>>;

    /// Cleans up after a passed test (a failed one panics before this).
    async fn close(fixture: Fixture<Self::Queue, Self::Guard>) {
        drop(fixture);
    }
}

/// A queue for one conformance test.
#[derive(Debug)]
pub struct Fixture<Q, G = ()> {
    /// The backend.
    pub queue: Q,
    /// The queue name the test uses.
    pub name: String,
    /// Kept until the test ends.
    pub guard: G,
}

/// Runs every conformance function, each on its own queue named `"<prefix>-<function>"`.
pub async fn run_all<Q: Queue + Clone + 'static>(queue: &Q, caps: &Capabilities, prefix: &str) {
    let name = |test: &str| format!("{prefix}-{test}");
    crate::__conformance_functions!(__conformance_run_all!(queue, caps, name));
}

/// The body of message `id` in the suite: a small JSON document naming it.
pub fn body_of(id: &str) -> Vec<u8> {
    format!("{{\"v\":1,\"id\":\"{id}\"}}").into_bytes()
}

/// Message `id`, with body [`body_of`]`(id)`.
pub fn message(id: &str) -> OutgoingMessage {
    OutgoingMessage::new(id, body_of(id))
}

/// Sends [`message`]`(id)` to `name` and receives it, locked, waiting up to 5 s: the start of
/// most tests of a single message.
pub async fn send_and_receive(queue: &dyn Queue, name: &str, id: &str) -> Delivery {
    queue.send(name, vec![message(id)]).await.unwrap();
    let got = queue
        .receive(name, 1, Duration::from_secs(5))
        .await
        .unwrap();
    let mut got = got.into_iter();
    match (got.next(), got.next()) {
        (Some(d), None) => d,
        (first, second) => panic!(
            "sent {id} to {name} and received {:?}",
            [first, second]
                .iter()
                .flatten()
                .map(|d| &d.id)
                .collect::<Vec<_>>()
        ),
    }
}

/// Receives one message, waiting up to the suite's patience; panics when none comes.
pub async fn expect_one(queue: &dyn Queue, caps: &Capabilities, name: &str) -> Delivery {
    let mut got = queue.receive(name, 1, caps.patience).await.unwrap();
    assert!(
        got.len() <= 1,
        "receive(max = 1) returned {} messages",
        got.len()
    );
    got.pop()
        .unwrap_or_else(|| panic!("no message arrived on {name} within {:?}", caps.patience))
}

/// Asserts that nothing can be received for `wait`.
pub async fn expect_none(queue: &dyn Queue, name: &str, wait: Duration) {
    let got = queue.receive(name, 10, wait).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert!(
        got.is_empty(),
        "expected no message on {name}, received {ids:?}"
    );
}

/// Receives until `count` messages arrived (each left locked), or panics after the patience.
pub async fn receive_count(
    queue: &dyn Queue,
    caps: &Capabilities,
    name: &str,
    count: usize,
) -> Vec<Delivery> {
    let start = Instant::now();
    let mut all = Vec::new();
    while all.len() < count {
        let left = caps.patience.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "received {} of {count} messages on {name} within {:?}",
            all.len(),
            caps.patience
        );
        all.extend(queue.receive(name, count - all.len(), left).await.unwrap());
    }
    assert_eq!(
        all.len(),
        count,
        "received more messages than were sent on {name}"
    );
    all
}

/// Polls `check` until it holds, panicking with `what` after the patience.
pub async fn eventually<F, Fut>(caps: &Capabilities, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < caps.patience,
            "{what}: not so after {:?}",
            caps.patience
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that the backlog of `name` comes to `expected` within the patience (statistics may lag).
pub async fn assert_backlog(queue: &dyn Queue, caps: &Capabilities, name: &str, expected: u64) {
    let start = Instant::now();
    loop {
        let n = queue.backlog(name).await.unwrap();
        if n == expected {
            return;
        }
        assert!(
            start.elapsed() < caps.patience,
            "backlog of {name} is {n}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids in the dead-letter queue of `name`, oldest first.
pub async fn dead_letter_ids(queue: &dyn Queue, name: &str) -> Vec<String> {
    queue
        .peek_dead_letters(name, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect()
}

/// Asserts that `result` is [`QueueError::LockLost`] for `delivery`; `call` names the call.
pub fn assert_lock_lost(
    result: Result<impl std::fmt::Debug, QueueError>,
    delivery: &Delivery,
    call: &str,
) {
    match result {
        Err(QueueError::LockLost { id }) => {
            assert_eq!(id, delivery.id, "{call}: LockLost names the message")
        }
        other => panic!(
            "{call} with a lost lock on {} gave {other:?}, expected LockLost",
            delivery.id
        ),
    }
}

/// Send one message, receive it with its id, body and a first delivery count, complete it, and
/// it is gone.
pub async fn send_receive_complete(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    let before = SystemTime::now();
    queue.send(name, vec![message("m1")]).await.unwrap();
    let d = expect_one(queue, caps, name).await;
    assert_eq!(d.queue, name);
    assert_eq!(d.id, "m1");
    assert_eq!(d.body, body_of("m1"));
    assert_eq!(d.delivery_count, 1, "the first delivery counts 1");
    assert!(
        d.dead_letter.is_none(),
        "a live message has no dead-letter info"
    );
    assert!(!d.lock_token.is_empty(), "a delivery carries a lock token");
    assert!(
        d.locked_until >= before + caps.lock_duration / 2,
        "the lock lasts about the lock duration: {:?} after the send",
        d.locked_until.duration_since(before).unwrap_or_default()
    );
    queue.complete(&d).await.unwrap();
    expect_none(queue, name, caps.short_wait()).await;
    assert_backlog(queue, caps, name, 0).await;
}

/// A batch send delivers every message once.
pub async fn send_batch(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    let ids: Vec<String> = (0..5).map(|i| format!("b{i}")).collect();
    queue
        .send(name, ids.iter().map(|id| message(id)).collect())
        .await
        .unwrap();
    let got = receive_count(queue, caps, name, ids.len()).await;
    let received: BTreeSet<String> = got.iter().map(|d| d.id.clone()).collect();
    assert_eq!(received, ids.iter().cloned().collect::<BTreeSet<_>>());
    for d in &got {
        assert_eq!(d.body, body_of(&d.id), "body of {}", d.id);
        queue.complete(d).await.unwrap();
    }
    expect_none(queue, name, caps.short_wait()).await;
}

/// `receive` returns at most `max`; on an empty queue it waits about `wait` and returns nothing;
/// a message sent during the wait is returned before the wait ends.
pub async fn receive_max_and_wait(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    let wait = Duration::from_millis(600);
    let start = Instant::now();
    let got = queue.receive(name, 5, wait).await.unwrap();
    let waited = start.elapsed();
    assert!(got.is_empty(), "an empty queue gave {} messages", got.len());
    assert!(
        waited >= wait / 2,
        "receive on an empty queue returned after {waited:?}, before its wait of {wait:?}"
    );
    assert!(
        waited < wait + caps.patience,
        "receive overran its wait: {waited:?}"
    );

    // A message sent while a receiver waits reaches it before the wait is over.
    let long_wait = caps.patience;
    let start = Instant::now();
    let (got, ()) = tokio::join!(queue.receive(name, 5, long_wait), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        queue.send(name, vec![message("late")]).await.unwrap();
    });
    let got = got.unwrap();
    assert_eq!(
        got.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["late"]
    );
    assert!(
        start.elapsed() < long_wait,
        "the waiting receive returned only at the end of its wait"
    );
    queue.complete(&got[0]).await.unwrap();

    queue
        .send(name, (0..5).map(|i| message(&format!("x{i}"))).collect())
        .await
        .unwrap();
    let first = queue.receive(name, 2, caps.patience).await.unwrap();
    assert!(
        !first.is_empty() && first.len() <= 2,
        "receive(max = 2) gave {} messages",
        first.len()
    );
    let rest = receive_count(queue, caps, name, 5 - first.len()).await;
    let all: BTreeSet<String> = first.iter().chain(&rest).map(|d| d.id.clone()).collect();
    assert_eq!(all.len(), 5, "every message once: {all:?}");
    for d in first.iter().chain(&rest) {
        queue.complete(d).await.unwrap();
    }
}

/// A message sent with a delay stays hidden until the delay has passed.
pub async fn scheduled_send(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    let delay = caps.lock_duration.max(Duration::from_secs(1));
    let start = Instant::now();
    queue
        .send(
            name,
            vec![OutgoingMessage {
                delay: Some(delay),
                ..message("later")
            }],
        )
        .await
        .unwrap();
    expect_none(queue, name, delay / 3).await;
    let d = expect_one(queue, caps, name).await;
    assert_eq!(d.id, "later");
    assert!(
        start.elapsed() >= delay * 9 / 10,
        "delivered after {:?}, before its delay of {delay:?}",
        start.elapsed()
    );
    queue.complete(&d).await.unwrap();
}

/// While one receiver holds the lock, no other receiver gets the message.
pub async fn lock_hides_message(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    queue
        .send(name, vec![message("held"), message("free")])
        .await
        .unwrap();
    let held = expect_one(queue, caps, name).await;
    let other = expect_one(queue, caps, name).await;
    assert_ne!(held.id, other.id, "a locked message was delivered twice");
    expect_none(queue, name, caps.short_wait()).await;
    queue.complete(&held).await.unwrap();
    queue.complete(&other).await.unwrap();
}

/// An unsettled message comes back after its lock expires, with the delivery count one higher
/// and a new lock token.
pub async fn lock_expiry_redelivers(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    queue.send(name, vec![message("slow")]).await.unwrap();
    let first = expect_one(queue, caps, name).await;
    assert_eq!(first.delivery_count, 1);
    tokio::time::sleep(caps.past_lock()).await;
    let second = expect_one(queue, caps, name).await;
    assert_eq!(second.id, "slow");
    assert_eq!(second.body, body_of("slow"));
    assert_eq!(
        second.delivery_count, 2,
        "redelivery after lock expiry counts again"
    );
    assert_ne!(
        second.lock_token, first.lock_token,
        "each delivery has its own lock token"
    );
    queue.complete(&second).await.unwrap();
}

/// Renewing the lock keeps the message hidden past the original lock's expiry.
pub async fn renew_lock_keeps_hidden(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    queue.send(name, vec![message("long")]).await.unwrap();
    let d = expect_one(queue, caps, name).await;
    let original = d.locked_until;
    let start = Instant::now();
    let mut previous = original;
    // Renew every half lock until well past the original expiry.
    while start.elapsed() < caps.lock_duration * 3 / 2 {
        tokio::time::sleep(caps.lock_duration / 2).await;
        let renewed = queue.renew_lock(&d).await.unwrap();
        assert!(
            renewed > previous,
            "renew_lock moved the expiry from {previous:?} to {renewed:?}"
        );
        previous = renewed;
    }
    assert!(
        previous > original + caps.lock_duration / 2,
        "the lock now ends well after the original lock"
    );
    expect_none(queue, name, caps.short_wait()).await;
    queue.complete(&d).await.unwrap();
}

/// A delivery says how long its lock lasts, and [`QueueExt::keep_locked`], renewing every third
/// of that, keeps the message hidden for several lock durations, even for a holder whose clock
/// is far from the backend's (its `locked_until` is then meaningless here, and renewal must not
/// read it); stopping it then reports a lock that held, and the holder can settle.
pub async fn renewal_keeps_lock_past_its_duration<Q: Queue + Clone + 'static>(
    queue: &Q,
    caps: &Capabilities,
    name: &str,
) {
    queue
        .send(name, vec![message("kept"), message("skewed")])
        .await
        .unwrap();
    let kept = expect_one(queue, caps, name).await;
    let skewed = expect_one(queue, caps, name).await;
    for d in [&kept, &skewed] {
        assert_eq!(
            d.lock_duration, caps.lock_duration,
            "the delivery carries the backend's lock duration"
        );
    }
    assert_eq!(LockRenewal::interval(&kept), caps.lock_duration / 3);
    let shared = Arc::new(queue.clone());
    let renewals = [
        Arc::clone(&shared).keep_locked(&kept),
        Arc::clone(&shared).keep_locked(&Delivery {
            // As a holder an hour behind the backend sees it.
            locked_until: skewed.locked_until + Duration::from_secs(3600),
            ..skewed.clone()
        }),
    ];
    let start = Instant::now();
    expect_none(queue, name, caps.lock_duration * 5 / 2).await;
    assert!(
        start.elapsed() >= caps.lock_duration * 2,
        "the renewed locks outlived two lock durations"
    );
    for renewal in renewals {
        assert!(!renewal.is_lost(), "no lock was lost");
        renewal.stop().await.unwrap();
    }
    queue.complete(&kept).await.unwrap();
    queue.complete(&skewed).await.unwrap();
    // And for a holder whose clock is ahead (the lock seems long over): still renewed.
    queue.send(name, vec![message("ahead")]).await.unwrap();
    let ahead = expect_one(queue, caps, name).await;
    let renewal = Arc::clone(&shared).keep_locked(&Delivery {
        locked_until: UNIX_EPOCH,
        ..ahead.clone()
    });
    expect_none(queue, name, caps.lock_duration * 3 / 2).await;
    assert!(!renewal.is_lost());
    renewal.stop().await.unwrap();
    queue.complete(&ahead).await.unwrap();
}

/// An abandoned message is delivered again at once, its count one higher.
pub async fn abandon_redelivers(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    queue.send(name, vec![message("again")]).await.unwrap();
    let first = expect_one(queue, caps, name).await;
    queue.abandon(&first, None).await.unwrap();
    let start = Instant::now();
    let second = expect_one(queue, caps, name).await;
    assert!(
        start.elapsed() < caps.lock_duration,
        "an abandoned message came back only after {:?}, as if its lock had to expire",
        start.elapsed()
    );
    assert_eq!(second.id, "again");
    assert_eq!(second.delivery_count, 2);
    queue.complete(&second).await.unwrap();
}

/// Abandoning with a delay hides the message for that delay.
pub async fn abandon_with_delay(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    let delay = caps.lock_duration.max(Duration::from_secs(1));
    queue.send(name, vec![message("backoff")]).await.unwrap();
    let first = expect_one(queue, caps, name).await;
    let start = Instant::now();
    queue.abandon(&first, Some(delay)).await.unwrap();
    expect_none(queue, name, delay / 3).await;
    let second = expect_one(queue, caps, name).await;
    assert!(
        start.elapsed() >= delay * 9 / 10,
        "back after {:?}, before the delay of {delay:?}",
        start.elapsed()
    );
    assert_eq!(second.id, "backoff");
    assert_eq!(second.delivery_count, 2);
    queue.complete(&second).await.unwrap();
}

/// A dead-lettered message leaves the queue and shows in its dead-letter queue with the reason,
/// the description and its original id and body.
pub async fn dead_letter_with_reason(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    let before = SystemTime::now();
    queue.send(name, vec![message("poison")]).await.unwrap();
    let d = expect_one(queue, caps, name).await;
    queue
        .dead_letter(&d, "MalformedMessage", "body is not a batch message")
        .await
        .unwrap();
    expect_none(queue, name, caps.short_wait()).await;
    assert_backlog(queue, caps, name, 0).await;

    let dead = queue.peek_dead_letters(name, 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    let dead = &dead[0];
    assert_eq!(dead.queue, name);
    assert_eq!(dead.id, "poison");
    assert_eq!(dead.body, body_of("poison"));
    assert_eq!(dead.delivery_count, 1);
    assert_eq!(dead.info.reason, "MalformedMessage");
    assert_eq!(dead.info.description, "body is not a batch message");
    let slack = Duration::from_secs(5);
    assert!(
        dead.info.at + slack >= before,
        "dead-lettered at {:?}, before the test began",
        dead.info.at
    );

    // Peeking does not lock or remove.
    assert_eq!(dead_letter_ids(queue, name).await, ["poison"]);
    purge_dead_letters(queue, caps, name, 1).await;
}

/// A message abandoned `max_delivery_count` times is dead-lettered with the standard reason
/// instead of being delivered again.
pub async fn max_delivery_count_dead_letters(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    queue.send(name, vec![message("retry")]).await.unwrap();
    for attempt in 1..=caps.max_delivery_count {
        let d = expect_one(queue, caps, name).await;
        assert_eq!(d.delivery_count, attempt);
        queue.abandon(&d, None).await.unwrap();
    }
    expect_none(queue, name, caps.short_wait()).await;
    eventually(
        caps,
        "the message that ran out of deliveries is dead-lettered",
        || async move {
            !queue
                .peek_dead_letters(name, 0, 10)
                .await
                .unwrap()
                .is_empty()
        },
    )
    .await;
    let dead = queue.peek_dead_letters(name, 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "retry");
    assert_eq!(dead[0].info.reason, MAX_DELIVERY_COUNT_EXCEEDED);
    assert_eq!(dead[0].delivery_count, caps.max_delivery_count);
    assert_backlog(queue, caps, name, 0).await;
    purge_dead_letters(queue, caps, name, 1).await;
}

/// Settling after the message was settled elsewhere, or after the lock expired, fails with
/// `LockLost`.
pub async fn lost_lock_fails_settling(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    // Settled already.
    queue.send(name, vec![message("settled")]).await.unwrap();
    let d = expect_one(queue, caps, name).await;
    queue.complete(&d).await.unwrap();
    assert_lock_lost(queue.complete(&d).await, &d, "complete");
    assert_lock_lost(queue.abandon(&d, None).await, &d, "abandon");
    assert_lock_lost(
        queue.dead_letter(&d, "Late", "after completion").await,
        &d,
        "dead_letter",
    );
    assert_lock_lost(queue.renew_lock(&d).await, &d, "renew_lock");

    // Expired and taken by another receiver.
    queue.send(name, vec![message("expired")]).await.unwrap();
    let stale = expect_one(queue, caps, name).await;
    tokio::time::sleep(caps.past_lock()).await;
    let fresh = expect_one(queue, caps, name).await;
    assert_eq!(fresh.id, "expired");
    assert_lock_lost(queue.complete(&stale).await, &stale, "complete");
    assert_lock_lost(queue.abandon(&stale, None).await, &stale, "abandon");
    assert_lock_lost(queue.renew_lock(&stale).await, &stale, "renew_lock");
    queue.complete(&fresh).await.unwrap();

    // Expired with nobody else holding it.
    queue.send(name, vec![message("forgotten")]).await.unwrap();
    let forgotten = expect_one(queue, caps, name).await;
    tokio::time::sleep(caps.past_lock()).await;
    assert_lock_lost(queue.complete(&forgotten).await, &forgotten, "complete");
    let again = expect_one(queue, caps, name).await;
    assert_eq!(again.id, "forgotten");
    queue.complete(&again).await.unwrap();
    assert!(
        dead_letter_ids(queue, name).await.is_empty(),
        "no settling call above dead-lettered anything"
    );
}

/// A lock that runs out while its holder works, renewal coming too late, and is taken by another
/// receiver: [`QueueExt::keep_locked`]'s next renewal finds it lost and fires the `lost` token,
/// stopping reports [`QueueError::LockLost`], and the holder can no longer settle; the new holder
/// can.
pub async fn lock_lost_during_work<Q: Queue + Clone + 'static>(
    queue: &Q,
    caps: &Capabilities,
    name: &str,
) {
    queue.send(name, vec![message("taken")]).await.unwrap();
    let stale = expect_one(queue, caps, name).await;
    // A holder that believes its lock lasts six times longer renews every two lock durations:
    // the lock runs out first.
    let late = Delivery {
        lock_duration: caps.lock_duration * 6,
        ..stale.clone()
    };
    let renewal = Arc::new(queue.clone()).keep_locked(&late);
    let start = Instant::now();
    tokio::time::sleep(caps.past_lock()).await;
    let fresh = expect_one(queue, caps, name).await;
    assert_eq!(fresh.id, "taken");
    assert_eq!(fresh.delivery_count, 2, "taken over after the lock ran out");
    let lost = renewal.lost();
    let waited = tokio::time::timeout(
        LockRenewal::interval(&late) + caps.patience,
        lost.cancelled(),
    )
    .await;
    assert!(
        waited.is_ok(),
        "the lost token did not fire within {:?} of the renewal",
        caps.patience
    );
    assert!(
        start.elapsed() >= LockRenewal::interval(&late) * 9 / 10,
        "lost only once renewal tried, a renewal interval in: after {:?}",
        start.elapsed()
    );
    assert!(renewal.is_lost());
    assert_lock_lost(renewal.stop().await, &stale, "keep_locked");
    assert_lock_lost(queue.complete(&stale).await, &stale, "complete");
    assert_lock_lost(queue.abandon(&stale, None).await, &stale, "abandon");
    // The new holder still holds the message, and settles it.
    queue.renew_lock(&fresh).await.unwrap();
    queue.complete(&fresh).await.unwrap();
    expect_none(queue, name, caps.short_wait()).await;
    assert!(
        dead_letter_ids(queue, name).await.is_empty(),
        "nothing was dead-lettered"
    );
}

/// Replay: receive the dead letter, send a new message with the same id and body, then complete
/// the dead letter. It stays in the dead-letter queue until the re-send is done, and the replayed
/// message keeps its id.
pub async fn replay_from_dead_letters(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    queue.send(name, vec![message("job:00007")]).await.unwrap();
    let d = expect_one(queue, caps, name).await;
    queue
        .dead_letter(&d, "StyleFailed", "the model rejected the frames")
        .await
        .unwrap();

    let mut dead = queue
        .receive_dead_letters(name, 10, caps.patience)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "one dead letter to replay");
    let dead = dead.remove(0);
    assert_eq!(dead.id, "job:00007");
    assert_eq!(dead.queue, name);
    assert_eq!(dead.body, body_of("job:00007"));
    let info = dead
        .dead_letter
        .as_ref()
        .expect("a dead-letter delivery carries its dead-letter info");
    assert_eq!(info.reason, "StyleFailed");
    assert_eq!(info.description, "the model rejected the frames");
    assert_eq!(
        dead_letter_ids(queue, name).await,
        ["job:00007"],
        "receiving does not remove it"
    );

    queue
        .send(
            name,
            vec![OutgoingMessage::new(dead.id.clone(), dead.body.clone())],
        )
        .await
        .unwrap();
    assert_eq!(
        dead_letter_ids(queue, name).await,
        ["job:00007"],
        "re-sending does not remove it"
    );
    queue.complete(&dead).await.unwrap();
    eventually(
        caps,
        "the replayed dead letter is gone from the dead-letter queue",
        || async move { dead_letter_ids(queue, name).await.is_empty() },
    )
    .await;

    let replayed = expect_one(queue, caps, name).await;
    assert_eq!(replayed.id, "job:00007", "replay keeps the id");
    assert_eq!(replayed.body, body_of("job:00007"));
    assert_eq!(
        replayed.delivery_count, 1,
        "a replayed message starts its deliveries afresh"
    );
    assert!(replayed.dead_letter.is_none());
    queue.complete(&replayed).await.unwrap();
}

/// Dead letters are received under a lock like live ones: a second receiver does not get a
/// locked one, and `abandon` leaves it in the dead-letter queue.
pub async fn dead_letter_receive_and_abandon(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    queue.send(name, vec![message("dl")]).await.unwrap();
    let d = expect_one(queue, caps, name).await;
    queue.dead_letter(&d, "Broken", "").await.unwrap();

    let first = queue
        .receive_dead_letters(name, 10, caps.patience)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let got = queue
        .receive_dead_letters(name, 10, caps.short_wait())
        .await
        .unwrap();
    assert!(got.is_empty(), "a locked dead letter was delivered twice");
    queue.abandon(&first[0], None).await.unwrap();
    assert_eq!(
        dead_letter_ids(queue, name).await,
        ["dl"],
        "abandon leaves it dead"
    );
    expect_none(queue, name, caps.short_wait()).await;

    let second = queue
        .receive_dead_letters(name, 10, caps.patience)
        .await
        .unwrap();
    assert_eq!(
        second.len(),
        1,
        "an abandoned dead letter can be received again"
    );
    assert_eq!(second[0].id, "dl");
    assert_ne!(second[0].lock_token, first[0].lock_token);
    assert_lock_lost(
        queue.complete(&first[0]).await,
        &first[0],
        "complete with the old token",
    );
    queue.complete(&second[0]).await.unwrap();
    assert!(
        dead_letter_ids(queue, name).await.is_empty(),
        "complete removes a dead letter"
    );
}

/// `peek_dead_letters` pages by sequence number.
pub async fn peek_dead_letters_pages(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    let ids = ["p0", "p1", "p2"];
    queue
        .send(name, ids.iter().map(|id| message(id)).collect())
        .await
        .unwrap();
    for d in receive_count(queue, caps, name, ids.len()).await {
        queue.dead_letter(&d, "Paging", &d.id).await.unwrap();
    }
    eventually(caps, "three dead letters", || async move {
        dead_letter_ids(queue, name).await.len() == 3
    })
    .await;

    let page = queue.peek_dead_letters(name, 0, 2).await.unwrap();
    assert_eq!(page.len(), 2, "max bounds a page");
    assert!(
        page[0].sequence < page[1].sequence,
        "pages are in sequence order"
    );
    let rest = queue
        .peek_dead_letters(name, page[1].sequence + 1, 10)
        .await
        .unwrap();
    assert_eq!(
        rest.len(),
        1,
        "the next page starts after the last sequence seen"
    );
    assert!(rest[0].sequence > page[1].sequence);
    let mut seen: Vec<String> = page.iter().chain(&rest).map(|d| d.id.clone()).collect();
    seen.sort();
    assert_eq!(seen, ids);
    for d in page.iter().chain(&rest) {
        assert_eq!(
            d.info.description, d.id,
            "each dead letter keeps its own description"
        );
    }
    purge_dead_letters(queue, caps, name, 3).await;
}

/// `backlog` counts waiting and locked messages, not dead letters.
pub async fn backlog_counts(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    assert_backlog(queue, caps, name, 0).await;
    queue
        .send(name, vec![message("c0"), message("c1"), message("c2")])
        .await
        .unwrap();
    assert_backlog(queue, caps, name, 3).await;
    let first = expect_one(queue, caps, name).await;
    assert_backlog(queue, caps, name, 3).await; // locked still counts
    queue.complete(&first).await.unwrap();
    assert_backlog(queue, caps, name, 2).await;
    let second = expect_one(queue, caps, name).await;
    queue.dead_letter(&second, "Counted", "").await.unwrap();
    assert_backlog(queue, caps, name, 1).await;
    let third = expect_one(queue, caps, name).await;
    queue.complete(&third).await.unwrap();
    assert_backlog(queue, caps, name, 0).await;
    purge_dead_letters(queue, caps, name, 1).await;
}

/// With duplicate detection, sending an id that is still in the queue is a no-op; without it,
/// both copies arrive.
pub async fn duplicate_ids(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    queue.send(name, vec![message("twice")]).await.unwrap();
    queue
        .send(
            name,
            vec![OutgoingMessage::new("twice", b"second body".to_vec())],
        )
        .await
        .unwrap();
    if caps.dedupes_ids {
        let d = expect_one(queue, caps, name).await;
        assert_eq!(d.body, body_of("twice"), "the first send wins");
        // Also while the first copy is locked.
        queue.send(name, vec![message("twice")]).await.unwrap();
        expect_none(queue, name, caps.short_wait()).await;
        queue.complete(&d).await.unwrap();
    } else {
        let both = receive_count(queue, caps, name, 2).await;
        assert!(both.iter().all(|d| d.id == "twice"));
        for d in &both {
            queue.complete(d).await.unwrap();
        }
    }
    expect_none(queue, name, caps.short_wait()).await;
}

/// Several receivers on one queue: every message is delivered exactly once while no lock
/// expires.
pub async fn concurrent_receivers(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    const MESSAGES: usize = 40;
    let ids: BTreeSet<String> = (0..MESSAGES).map(|i| format!("c{i:03}")).collect();
    queue
        .send(name, ids.iter().map(|id| message(id)).collect())
        .await
        .unwrap();

    let worker = || async move {
        let mut seen = Vec::new();
        loop {
            let got = queue.receive(name, 2, caps.short_wait()).await.unwrap();
            if got.is_empty() {
                return seen;
            }
            // Hold the locks a moment so the receivers overlap.
            tokio::time::sleep(Duration::from_millis(5)).await;
            for d in got {
                queue.complete(&d).await.unwrap();
                seen.push((d.id, d.delivery_count));
            }
        }
    };
    let (a, b, c, d) = tokio::join!(worker(), worker(), worker(), worker());
    let all: Vec<(String, u32)> = a.into_iter().chain(b).chain(c).chain(d).collect();
    let received: BTreeSet<String> = all.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        all.len(),
        MESSAGES,
        "each message delivered exactly once; got {} deliveries",
        all.len()
    );
    assert_eq!(received, ids);
    assert!(
        all.iter().all(|(_, count)| *count == 1),
        "no lock expired, so no redelivery: {all:?}"
    );
    assert_backlog(queue, caps, name, 0).await;
}

/// Receives and completes `count` dead letters, leaving the dead-letter queue empty.
async fn purge_dead_letters(queue: &dyn Queue, caps: &Capabilities, name: &str, count: usize) {
    let start = Instant::now();
    let mut removed = 0;
    while removed < count {
        assert!(
            start.elapsed() < caps.patience,
            "purged {removed} of {count} dead letters of {name}"
        );
        for d in queue
            .receive_dead_letters(name, count - removed, caps.patience)
            .await
            .unwrap()
        {
            assert!(
                d.dead_letter.is_some(),
                "a dead-letter delivery carries its info"
            );
            queue.complete(&d).await.unwrap();
            removed += 1;
        }
    }
    assert!(
        dead_letter_ids(queue, name).await.is_empty(),
        "the dead-letter queue of {name} is empty"
    );
}

/// Where the backend receives by id, that locks exactly the named message: the messages before
/// it keep their delivery count, a locked or absent id gives `None`. Where it cannot, the answer
/// is always `None` and nothing is locked.
pub async fn receive_by_id_touches_no_other(queue: &dyn Queue, caps: &Capabilities, name: &str) {
    queue
        .send(name, vec![message("first"), message("wanted")])
        .await
        .unwrap();
    let got = queue.receive_by_id(name, "wanted").await.unwrap();
    if !queue.receives_by_id() {
        assert!(
            got.is_none(),
            "a backend without receive by id returned one"
        );
        let both = receive_count(queue, caps, name, 2).await;
        for d in &both {
            assert_eq!(d.delivery_count, 1);
            queue.complete(d).await.unwrap();
        }
        return;
    }
    let wanted = got.expect("the wanted message was not received by its id");
    assert_eq!(wanted.id, "wanted");
    assert_eq!(wanted.body, body_of("wanted"));
    assert_eq!(wanted.delivery_count, 1);
    assert!(
        queue.receive_by_id(name, "wanted").await.unwrap().is_none(),
        "a locked message was received by its id again"
    );
    assert!(queue.receive_by_id(name, "absent").await.unwrap().is_none());
    let first = expect_one(queue, caps, name).await;
    assert_eq!(first.id, "first");
    assert_eq!(
        first.delivery_count, 1,
        "receiving another message by id counted a delivery of this one"
    );
    queue.complete(&first).await.unwrap();
    queue.complete(&wanted).await.unwrap();
    expect_none(queue, name, caps.short_wait()).await;
}
