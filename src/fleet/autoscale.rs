//! The scaling rule KEDA applies to a Service Bus queue, so the embedded fleet scales the way the
//! Azure one does: `desired = ceil(backlog / messages_per_worker)`, capped at the maximum; scale out
//! at once; scale in only to the highest desire seen during the cool-down (HPA's stabilisation
//! window), which reaches zero once the queue has been empty for the whole cool-down.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The rule's parameters (KEDA's `messageCount`, `activationMessageCount`, `maxReplicaCount`,
/// `cooldownPeriod`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleRule {
    /// Most workers.
    pub max_workers: usize,
    /// Messages one worker is expected to handle (KEDA `messageCount`).
    pub messages_per_worker: u64,
    /// From zero, scale out only when the backlog is above this (KEDA `activationMessageCount`).
    pub activation: u64,
    /// How long a lower desire must hold before scaling in.
    pub cooldown: Duration,
}

impl Default for ScaleRule {
    fn default() -> Self {
        Self {
            max_workers: 2,
            messages_per_worker: 2,
            activation: 0,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// The autoscaler's memory: recent desires, for the cool-down.
#[derive(Debug)]
pub struct Autoscaler {
    rule: ScaleRule,
    /// Desires seen within the cool-down window, oldest first.
    recent: VecDeque<(Instant, usize)>,
}

impl Autoscaler {
    /// An autoscaler with `rule`.
    pub fn new(rule: ScaleRule) -> Self {
        Self {
            rule,
            recent: VecDeque::new(),
        }
    }

    /// The rule.
    pub fn rule(&self) -> &ScaleRule {
        &self.rule
    }

    /// The raw desire for a backlog, before the cool-down.
    pub fn desire(&self, backlog: u64, current: usize) -> usize {
        if current == 0 && backlog <= self.rule.activation {
            return 0;
        }
        let per = self.rule.messages_per_worker.max(1);
        (backlog.div_ceil(per) as usize).min(self.rule.max_workers)
    }

    /// How many workers there should be now, given the backlog (messages waiting or in flight)
    /// and how many run.
    pub fn decide(&mut self, backlog: u64, current: usize, now: Instant) -> usize {
        let desire = self.desire(backlog, current);
        self.recent.push_back((now, desire));
        while let Some(&(at, _)) = self.recent.front() {
            if now.duration_since(at) > self.rule.cooldown {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let stabilised = self.recent.iter().map(|&(_, d)| d).max().unwrap_or(desire);
        if desire >= current {
            desire
        } else {
            stabilised.min(current)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> ScaleRule {
        ScaleRule {
            max_workers: 4,
            messages_per_worker: 2,
            activation: 0,
            cooldown: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn scales_out_at_once_to_the_cap() {
        let mut a = Autoscaler::new(rule());
        let now = Instant::now();
        assert_eq!(a.decide(0, 0, now), 0);
        assert_eq!(a.decide(3, 0, now), 2);
        assert_eq!(a.decide(100, 2, now), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn scales_in_only_after_the_cooldown_and_reaches_zero() {
        let mut a = Autoscaler::new(rule());
        assert_eq!(a.decide(8, 0, Instant::now()), 4);
        tokio::time::advance(Duration::from_secs(5)).await;
        // The backlog drains, but the window still remembers the peak.
        assert_eq!(a.decide(2, 4, Instant::now()), 4);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(a.decide(0, 4, Instant::now()), 4);
        tokio::time::advance(Duration::from_secs(2)).await;
        // The peak left the window; the backlog of 2 from 6 s ago still asks for 1.
        assert_eq!(a.decide(0, 4, Instant::now()), 1);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(a.decide(0, 1, Instant::now()), 0);
    }

    #[test]
    fn activation_threshold_keeps_zero_at_zero() {
        let a = Autoscaler::new(ScaleRule {
            activation: 3,
            ..rule()
        });
        assert_eq!(a.desire(3, 0), 0);
        assert_eq!(a.desire(4, 0), 2);
        // Once running, the threshold no longer applies.
        assert_eq!(a.desire(3, 1), 2);
    }
}
