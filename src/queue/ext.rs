//! Conveniences over any [`Queue`]: one-message calls, lock renewal while work runs, and bulk
//! replay of dead letters.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Delivery, OutgoingMessage, Queue, QueueError, Result};

/// Conveniences implemented for every [`Queue`] (and `dyn Queue`).
#[async_trait]
pub trait QueueExt: Queue {
    /// Sends one message.
    async fn send_one(&self, queue: &str, message: OutgoingMessage) -> Result<()>;

    /// Receives at most one message, waiting up to `wait` for it.
    async fn receive_one(&self, queue: &str, wait: Duration) -> Result<Option<Delivery>>;

    /// Renews `delivery`'s lock every `interval` until `cancel` fires, then returns `Ok(())`.
    ///
    /// Returns the error that ended renewal early: [`QueueError::LockLost`] when the lock is gone
    /// (the work may now run twice; its result can no longer be settled), or a fatal error.
    /// Transient errors are retried at the next tick, as the lock may still hold. Pick an
    /// interval well under the lock duration (a third of it, say).
    async fn renew_while(
        &self,
        delivery: &Delivery,
        interval: Duration,
        cancel: CancellationToken,
    ) -> Result<()>;

    /// Starts renewing `delivery`'s lock every `interval` in a background task, until the
    /// returned guard is dropped or stopped. Needs a tokio runtime.
    fn keep_locked(self: Arc<Self>, delivery: &Delivery, interval: Duration) -> LockRenewal
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

    async fn renew_while(
        &self,
        delivery: &Delivery,
        interval: Duration,
        cancel: CancellationToken,
    ) -> Result<()> {
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
            match self.renew_lock(delivery).await {
                Ok(_) => {}
                // The holder settled the message while the renewal was in flight: not a loss.
                Err(_) if cancel.is_cancelled() => return Ok(()),
                Err(error) if error.is_transient() => {
                    tracing::warn!(id = %delivery.id, %error, "lock renewal failed; retrying at the next tick");
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn keep_locked(self: Arc<Self>, delivery: &Delivery, interval: Duration) -> LockRenewal
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
                let result = self.renew_while(&delivery, interval, stop).await;
                if let Err(error) = &result {
                    tracing::warn!(id = %delivery.id, %error, "lock renewal ended");
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

/// Renews a delivery's lock in a background task until dropped or [stopped](Self::stop).
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
    /// A token cancelled when the lock is lost (or renewal failed fatally).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the lock was lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Stops renewing and returns how renewal went: `Ok(())` if the lock held throughout.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(|source| QueueError::Fatal {
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
