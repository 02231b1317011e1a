//! Conveniences over any [`Queue`]: one-message calls, lock renewal while work runs, and bulk
//! replay of dead letters.
//!
//! # Lock renewal
//!
//! [`QueueExt::keep_locked`] is the one way this system keeps a lock while work runs (the
//! consume loop uses it for every delivery). It renews in a task of its own:
//!
//! - **When.** Every third of the delivery's [`lock_duration`](Delivery::lock_duration), counted
//!   on this machine's monotonic clock from the previous renewal (the first from the call), so a
//!   renewal that fails leaves two more tries before the lock runs out. Never from
//!   [`locked_until`](Delivery::locked_until): that is the backend's clock, and subtracting this
//!   machine's time from it adds the difference between the two clocks to the interval (a worker
//!   minutes behind the broker would renew after the lock expired; one ahead, in a tight loop).
//! - **Transient failures** are retried at the next tick: the lock may still hold. Once a whole
//!   lock duration has passed since the lock was last known to be extended (the call, or the end
//!   of the last renewal that succeeded), it has run out whatever the backend says, and that
//!   counts as lost: the backend may already have given the message to someone else.
//! - **A lost lock** ([`QueueError::LockLost`]) or a permanent error ends renewal and cancels the
//!   guard's [`lost`](LockRenewal::lost) token: the holder can no longer settle the delivery, and
//!   another delivery may be doing the same work, so it should drop the work (handlers are
//!   idempotent; the redelivery redoes it).
//! - **Stopping.** [`LockRenewal::stop`] ends renewal and says how it went; dropping the guard
//!   ends it too, so a forgotten guard cannot renew forever.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Delivery, OutgoingMessage, Queue, QueueError, Result};

/// The shortest pause between renewals, whatever a delivery says its lock duration is: a
/// zero or tiny duration must not turn renewal into a busy loop.
const MIN_RENEWAL_INTERVAL: Duration = Duration::from_millis(50);

/// Conveniences implemented for every [`Queue`] (and `dyn Queue`).
#[async_trait]
pub trait QueueExt: Queue {
    /// Sends one message.
    async fn send_one(&self, queue: &str, message: OutgoingMessage) -> Result<()>;

    /// Receives at most one message, waiting up to `wait` for it.
    async fn receive_one(&self, queue: &str, wait: Duration) -> Result<Option<Delivery>>;

    /// Starts renewing `delivery`'s lock in a background task, every third of its lock
    /// duration, until the returned guard is stopped or dropped; the guard's
    /// [`lost`](LockRenewal::lost) token fires when the lock is lost. See the module docs. Needs
    /// a tokio runtime.
    fn keep_locked(self: Arc<Self>, delivery: &Delivery) -> LockRenewal
    where
        Self: 'static;

    /// Replays up to `max` dead letters of `queue`: each is sent again with its id and body, and
    /// only then removed from the dead-letter queue (a crash in between leaves it there, and the
    /// duplicate send is harmless). Returns how many were replayed.
    async fn replay_dead_letters(&self, queue: &str, max: usize) -> Result<usize>;
}

#[async_trait]
impl<Q: Queue + ?Sized> QueueExt for Q {
    async fn send_one(&self, queue: &str, message: OutgoingMessage) -> Result<()> {
        self.send(queue, vec![message]).await
    }

    async fn receive_one(&self, queue: &str, wait: Duration) -> Result<Option<Delivery>> {
        Ok(self.receive(queue, 1, wait).await?.into_iter().next())
    }

    fn keep_locked(self: Arc<Self>, delivery: &Delivery) -> LockRenewal
    where
        Self: 'static,
    {
        let stop = CancellationToken::new();
        let lost = CancellationToken::new();
        let delivery = delivery.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            let lost = lost.clone();
            async move {
                let result = renew(&*self, &delivery, stop).await;
                if let Err(error) = &result {
                    tracing::warn!(id = %delivery.id, queue = %delivery.queue, %error, "lock renewal ended: the lock is lost");
                    lost.cancel();
                }
                result
            }
        });
        LockRenewal {
            stop,
            lost,
            task: Some(task),
        }
    }

    async fn replay_dead_letters(&self, queue: &str, max: usize) -> Result<usize> {
        let mut replayed = 0;
        while replayed < max {
            let dead = self
                .receive_dead_letters(queue, max - replayed, Duration::ZERO)
                .await?;
            if dead.is_empty() {
                break;
            }
            for delivery in dead {
                self.send(
                    queue,
                    vec![OutgoingMessage::new(
                        delivery.id.clone(),
                        delivery.body.clone(),
                    )],
                )
                .await?;
                self.complete(&delivery).await?;
                replayed += 1;
            }
        }
        Ok(replayed)
    }
}

/// Renews `delivery`'s lock until `stop` fires (`Ok`), or until the lock is lost (the error that
/// says so). See the module docs for the timing.
async fn renew<Q: Queue + ?Sized>(
    queue: &Q,
    delivery: &Delivery,
    stop: CancellationToken,
) -> Result<()> {
    let interval = LockRenewal::interval(delivery);
    // The lock cannot last past this: it was taken before the call, and each renewal extends it
    // by the lock duration from a moment before the renewal returns.
    let mut held_until = Instant::now() + delivery.lock_duration;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
        let renewed = queue.renew_lock(delivery).await;
        // One that fails because the holder settled the message meanwhile is no failure.
        if renewed.is_ok() || !stop.is_cancelled() {
            crate::telemetry::metrics::lock_renewal(renewed.is_ok());
        }
        match renewed {
            Ok(_) => held_until = Instant::now() + delivery.lock_duration,
            // The holder settled the message while the renewal was in flight: not a loss.
            Err(_) if stop.is_cancelled() => return Ok(()),
            Err(error) if error.is_transient() && Instant::now() < held_until => {
                tracing::warn!(id = %delivery.id, %error, "lock renewal failed; retrying at the next tick");
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(id = %delivery.id, %error, lock = ?delivery.lock_duration, "lock renewal failed for a whole lock duration");
                return Err(QueueError::LockLost {
                    id: delivery.id.clone(),
                });
            }
            Err(error) => return Err(error),
        }
    }
}

/// Renews a delivery's lock in a background task until dropped or [stopped](Self::stop); made
/// by [`QueueExt::keep_locked`].
#[derive(Debug)]
pub struct LockRenewal {
    /// Ends the renewal task; cancelled on drop so a forgotten guard cannot renew forever.
    stop: CancellationToken,
    /// Cancelled when renewal ends with an error, so the holder can give up work it can no longer
    /// settle.
    lost: CancellationToken,
    /// The renewal task; taken by `stop` to read how it ended.
    task: Option<JoinHandle<Result<()>>>,
}

impl LockRenewal {
    /// How often `delivery`'s lock is renewed: a third of its lock duration (at least 50 ms).
    pub fn interval(delivery: &Delivery) -> Duration {
        (delivery.lock_duration / 3).max(MIN_RENEWAL_INTERVAL)
    }

    /// A token cancelled when the lock is lost (or renewal failed for good).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the lock was lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Stops renewing and returns how renewal went: `Ok(())` if the lock held throughout, else
    /// the error that ended it ([`QueueError::LockLost`] or a permanent one).
    pub async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(|source| QueueError::Permanent {
                message: "the lock renewal task failed".to_owned(),
                source: Some(Box::new(source)),
            })?,
            None => Ok(()),
        }
    }
}

impl Drop for LockRenewal {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::queue::DeadLetter;

    /// How a scripted renewal answers.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Held,
        Transient,
        Lost,
        Permanent,
    }

    /// A queue whose renewals answer from a script (then hold), timed on tokio's clock; nothing
    /// else is implemented.
    #[derive(Debug, Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Answer>>,
        renewals: Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(answers: impl IntoIterator<Item = Answer>) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.into_iter().collect()),
                renewals: Mutex::default(),
            })
        }

        /// When each renewal came, counted from `start`.
        fn renewals_since(&self, start: Instant) -> Vec<Duration> {
            let renewals = self.renewals.lock().unwrap();
            renewals.iter().map(|at| *at - start).collect()
        }
    }

    fn unscripted<T>() -> Result<T> {
        Err(QueueError::Permanent {
            message: "not scripted".to_owned(),
            source: None,
        })
    }

    #[async_trait]
    impl Queue for Scripted {
        async fn send(&self, _: &str, _: Vec<OutgoingMessage>) -> Result<()> {
            unscripted()
        }
        async fn receive(&self, _: &str, _: usize, _: Duration) -> Result<Vec<Delivery>> {
            unscripted()
        }
        async fn complete(&self, _: &Delivery) -> Result<()> {
            unscripted()
        }
        async fn abandon(&self, _: &Delivery, _: Option<Duration>) -> Result<()> {
            unscripted()
        }
        async fn dead_letter(&self, _: &Delivery, _: &str, _: &str) -> Result<()> {
            unscripted()
        }
        async fn renew_lock(&self, delivery: &Delivery) -> Result<SystemTime> {
            self.renewals.lock().unwrap().push(Instant::now());
            let answer = self.answers.lock().unwrap().pop_front();
            match answer.unwrap_or(Answer::Held) {
                // Deliberately unrelated to this machine's clock, as a skewed broker's would be.
                Answer::Held => Ok(UNIX_EPOCH),
                Answer::Transient => Err(QueueError::Transient {
                    message: "busy".to_owned(),
                    source: None,
                }),
                Answer::Lost => Err(QueueError::LockLost {
                    id: delivery.id.clone(),
                }),
                Answer::Permanent => unscripted(),
            }
        }
        async fn peek_dead_letters(&self, _: &str, _: i64, _: usize) -> Result<Vec<DeadLetter>> {
            unscripted()
        }
        async fn receive_dead_letters(
            &self,
            _: &str,
            _: usize,
            _: Duration,
        ) -> Result<Vec<Delivery>> {
            unscripted()
        }
        async fn backlog(&self, _: &str) -> Result<u64> {
            unscripted()
        }
    }

    const LOCK: Duration = Duration::from_secs(60);

    fn delivery(locked_until: SystemTime) -> Delivery {
        Delivery {
            queue: "batches".to_owned(),
            id: "job:00001".to_owned(),
            lock_token: "t".to_owned(),
            body: Vec::new(),
            delivery_count: 1,
            enqueued_at: UNIX_EPOCH,
            locked_until,
            lock_duration: LOCK,
            dead_letter: None,
        }
    }

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    /// Renewals come every third of the lock duration, whether this machine's clock is far
    /// behind the backend's (the lock seems to end in years) or far ahead (it seems long over).
    #[tokio::test(start_paused = true)]
    async fn renewals_come_every_third_of_the_lock_duration_whatever_the_clocks() {
        let now = SystemTime::now();
        let year = Duration::from_secs(365 * 24 * 3600);
        for locked_until in [now + 10 * year, now - year, UNIX_EPOCH, now + LOCK] {
            let queue = Scripted::new([]);
            let start = Instant::now();
            let renewal = Arc::clone(&queue).keep_locked(&delivery(locked_until));
            tokio::time::sleep(LOCK * 2 + Duration::from_secs(1)).await;
            assert_eq!(
                queue.renewals_since(start),
                secs(&[20, 40, 60, 80, 100, 120]),
                "locked until {locked_until:?}"
            );
            assert!(!renewal.is_lost());
            renewal.stop().await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_at_the_next_tick() {
        let queue = Scripted::new([Answer::Transient, Answer::Held]);
        let start = Instant::now();
        let renewal = Arc::clone(&queue).keep_locked(&delivery(UNIX_EPOCH));
        tokio::time::sleep(Duration::from_secs(81)).await;
        // The failure at 20 s is retried at 40 s, within the lock, which then holds on.
        assert_eq!(queue.renewals_since(start), secs(&[20, 40, 60, 80]));
        assert!(!renewal.is_lost());
        renewal.stop().await.unwrap();
    }

    /// Failing for a whole lock duration since the last good renewal is a lost lock: the backend
    /// cannot still hold it.
    #[tokio::test(start_paused = true)]
    async fn transient_failures_for_a_whole_lock_duration_lose_the_lock() {
        let queue = Scripted::new(
            std::iter::once(Answer::Held).chain(std::iter::repeat_n(Answer::Transient, 10)),
        );
        let start = Instant::now();
        let renewal = Arc::clone(&queue).keep_locked(&delivery(UNIX_EPOCH));
        renewal.lost().cancelled().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(80),
            "lost 60 s after the renewal at 20 s"
        );
        tokio::time::sleep(LOCK).await;
        assert_eq!(
            queue.renewals_since(start),
            secs(&[20, 40, 60, 80]),
            "no renewal after the loss"
        );
        let error = renewal.stop().await.unwrap_err();
        assert!(
            matches!(error, QueueError::LockLost { ref id } if id == "job:00001"),
            "{error:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lock_ends_renewal_and_fires_the_lost_token() {
        let queue = Scripted::new([Answer::Held, Answer::Lost]);
        let start = Instant::now();
        let renewal = Arc::clone(&queue).keep_locked(&delivery(UNIX_EPOCH));
        let lost = renewal.lost();
        lost.cancelled().await;
        assert_eq!(start.elapsed(), Duration::from_secs(40));
        assert!(renewal.is_lost());
        tokio::time::sleep(LOCK).await;
        assert_eq!(queue.renewals_since(start), secs(&[20, 40]));
        let error = renewal.stop().await.unwrap_err();
        assert!(matches!(error, QueueError::LockLost { .. }), "{error:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_ends_renewal() {
        let queue = Scripted::new([Answer::Permanent]);
        let renewal = Arc::clone(&queue).keep_locked(&delivery(UNIX_EPOCH));
        renewal.lost().cancelled().await;
        let error = renewal.stop().await.unwrap_err();
        assert!(matches!(error, QueueError::Permanent { .. }), "{error:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_or_dropping_the_guard_ends_renewal() {
        let queue = Scripted::new([]);
        let start = Instant::now();
        let renewal = Arc::clone(&queue).keep_locked(&delivery(UNIX_EPOCH));
        tokio::time::sleep(Duration::from_secs(30)).await;
        renewal.stop().await.unwrap();
        let dropped = Arc::clone(&queue).keep_locked(&delivery(UNIX_EPOCH));
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(dropped);
        tokio::time::sleep(LOCK * 2).await;
        // One renewal from each guard (at 20 s, and at 30 + 20 s), none after.
        assert_eq!(queue.renewals_since(start), secs(&[20, 50]));
    }

    #[test]
    fn the_interval_is_a_third_of_the_lock_duration_with_a_floor() {
        let mut d = delivery(UNIX_EPOCH);
        assert_eq!(LockRenewal::interval(&d), Duration::from_secs(20));
        d.lock_duration = Duration::from_secs(300);
        assert_eq!(LockRenewal::interval(&d), Duration::from_secs(100));
        d.lock_duration = Duration::ZERO;
        assert_eq!(LockRenewal::interval(&d), MIN_RENEWAL_INTERVAL);
    }
}
