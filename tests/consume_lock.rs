//! The consume loop and the delivery's lock, on the real SQLite queue with a one-second lock:
//! work that outlasts the lock keeps it, and work whose lock is lost is dropped at once and
//! never settled (another delivery redoes it).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use stylefleet::consume::{ConsumeOptions, ConsumeReport, Handler, consume};
use stylefleet::queue::sqlite::{QueueConfig, SqliteQueue};
use stylefleet::queue::{
    BATCHES, DeadLetter, Delivery, OutgoingMessage, Queue, QueueError, QueueExt,
};
use stylefleet::settings::Settings;
use stylefleet::stage::{Context, Outcome};
use stylefleet::store::Store;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const LOCK: Duration = Duration::from_secs(1);

/// What the consumer under test did to the queue, as it did it.
#[derive(Debug, Default)]
struct Calls {
    /// `complete`, `abandon` and `dead_letter` calls, by name.
    settled: Vec<&'static str>,
    /// Each renewal's result: `Ok` or the error's debug text.
    renewals: Vec<Result<(), String>>,
}

/// The consumer's view of the queue: the real queue, recording settlements and renewals, and
/// answering renewals with a transient failure while `fail_renewals` is set.
#[derive(Debug)]
struct Recording {
    inner: SqliteQueue,
    fail_renewals: AtomicBool,
    calls: Mutex<Calls>,
}

impl Recording {
    fn settled(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().settled.clone()
    }

    fn renewals(&self) -> Vec<Result<(), String>> {
        self.calls.lock().unwrap().renewals.clone()
    }

    fn record_settle(&self, call: &'static str) {
        self.calls.lock().unwrap().settled.push(call);
    }
}

#[async_trait]
impl Queue for Recording {
    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        self.inner.send(queue, messages).await
    }
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.inner.receive(queue, max, wait).await
    }
    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.record_settle("complete");
        self.inner.complete(delivery).await
    }
    async fn abandon(
        &self,
        delivery: &Delivery,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        self.record_settle("abandon");
        self.inner.abandon(delivery, delay).await
    }
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        description: &str,
    ) -> Result<(), QueueError> {
        self.record_settle("dead_letter");
        self.inner.dead_letter(delivery, reason, description).await
    }
    async fn renew_lock(&self, delivery: &Delivery) -> Result<SystemTime, QueueError> {
        let result = if self.fail_renewals.load(Ordering::SeqCst) {
            Err(QueueError::Transient {
                message: "renewals are failing".into(),
                source: None,
            })
        } else {
            self.inner.renew_lock(delivery).await
        };
        let recorded = result.as_ref().map(|_| ()).map_err(|e| format!("{e:?}"));
        self.calls.lock().unwrap().renewals.push(recorded);
        result
    }
    async fn peek_dead_letters(
        &self,
        queue: &str,
        from_sequence: i64,
        max: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner
            .peek_dead_letters(queue, from_sequence, max)
            .await
    }
    async fn receive_dead_letters(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.inner.receive_dead_letters(queue, max, wait).await
    }
    async fn backlog(&self, queue: &str) -> Result<u64, QueueError> {
        self.inner.backlog(queue).await
    }
}

/// How the handler's work ended: when, and whether it had finished.
type Ended = Arc<Mutex<Option<(Instant, bool)>>>;

/// Records, when dropped, whether the work got to its end.
struct DropFlag {
    finished: bool,
    ended: Ended,
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        *self.ended.lock().unwrap() = Some((Instant::now(), self.finished));
    }
}

/// Works for `work` (unless its future is dropped first), then completes; says when it starts.
struct Slow {
    work: Duration,
    started: mpsc::UnboundedSender<(Instant, Delivery)>,
    ended: Ended,
}

#[async_trait]
impl Handler for Slow {
    async fn handle(&self, _ctx: &Context, delivery: &Delivery) -> Outcome {
        let mut flag = DropFlag {
            finished: false,
            ended: Arc::clone(&self.ended),
        };
        self.started
            .send((Instant::now(), delivery.clone()))
            .unwrap();
        tokio::time::sleep(self.work).await;
        flag.finished = true;
        Outcome::Complete
    }
}

struct Setup {
    _dir: TempDir,
    /// The queue as anyone else sees it.
    queue: SqliteQueue,
    /// The consumer's view of the same queue.
    recording: Arc<Recording>,
    ctx: Context,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = QueueConfig {
        lock_duration: LOCK,
        poll_interval: Duration::from_millis(20),
        ..QueueConfig::default()
    };
    let path = dir.path().join("queue.sqlite");
    let queue = SqliteQueue::open(&path, config.clone()).unwrap();
    let recording = Arc::new(Recording {
        inner: SqliteQueue::open(&path, config).unwrap(),
        fail_renewals: AtomicBool::new(false),
        calls: Mutex::default(),
    });
    let store = Store::local(&dir.path().join("data")).unwrap();
    let ctx = Context {
        store: store.clone(),
        logs: store,
        queue: Arc::clone(&recording) as Arc<dyn Queue>,
        settings: Settings::default(),
        max_delivery_count: 5,
        scratch: dir.path().join("scratch"),
        worker_name: "test".into(),
    };
    queue
        .send_one(BATCHES, OutgoingMessage::new("job:00001", b"{}".to_vec()))
        .await
        .unwrap();
    Setup {
        _dir: dir,
        queue,
        recording,
        ctx,
    }
}

/// Runs the consume loop for one delivery in a task of its own, with a handler that works for
/// `work`; returns the loop's task, the handler's start signal and its end record.
fn consume_one(
    ctx: &Context,
    work: Duration,
) -> (
    tokio::task::JoinHandle<ConsumeReport>,
    mpsc::UnboundedReceiver<(Instant, Delivery)>,
    Ended,
) {
    let (started, starts) = mpsc::unbounded_channel();
    let ended = Ended::default();
    let handler = Slow {
        work,
        started,
        ended: Arc::clone(&ended),
    };
    let ctx = ctx.clone();
    let task = tokio::spawn(async move {
        let options = ConsumeOptions {
            wait: Duration::from_millis(200),
            max_deliveries: Some(1),
            ..ConsumeOptions::new(BATCHES)
        };
        consume(&ctx, &handler, &options, CancellationToken::new())
            .await
            .unwrap()
    });
    (task, starts, ended)
}

async fn started(starts: &mut mpsc::UnboundedReceiver<(Instant, Delivery)>) -> (Instant, Delivery) {
    tokio::time::timeout(Duration::from_secs(10), starts.recv())
        .await
        .expect("the handler started")
        .unwrap()
}

async fn finished(task: tokio::task::JoinHandle<ConsumeReport>) -> ConsumeReport {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the consume loop returned")
        .unwrap()
}

/// Work that outlasts the lock keeps it: renewed every third of the lock, nobody else receives
/// the message meanwhile, and the work completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_kept_while_the_work_outlasts_it() {
    let s = setup().await;
    let work = LOCK * 5 / 2;
    let (task, mut starts, ended) = consume_one(&s.ctx, work);
    let (_, delivery) = started(&mut starts).await;
    assert_eq!(delivery.lock_duration, LOCK);
    let stolen = s.queue.receive_one(BATCHES, work).await.unwrap();
    assert!(stolen.is_none(), "the renewed lock kept the message hidden");
    let report = finished(task).await;
    assert_eq!(
        report,
        ConsumeReport {
            completed: 1,
            ..ConsumeReport::default()
        }
    );
    let (_, got_to_the_end) = ended.lock().unwrap().unwrap();
    assert!(got_to_the_end);
    let renewals = s.recording.renewals();
    assert!(
        renewals.len() >= 5 && renewals.iter().all(Result::is_ok),
        "renewed every third of the lock: {renewals:?}"
    );
    assert_eq!(s.recording.settled(), ["complete"]);
    assert_eq!(s.queue.backlog(BATCHES).await.unwrap(), 0);
}

/// When renewal finds the lock lost (here the message is settled from outside, as after a
/// takeover), the handler's work is dropped at once, long before it would have ended, and the
/// loser settles nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_drops_the_work_and_settles_nothing() {
    let s = setup().await;
    let work = Duration::from_secs(60);
    let (task, mut starts, ended) = consume_one(&s.ctx, work);
    let (_, delivery) = started(&mut starts).await;
    let taken = Instant::now();
    s.queue.complete(&delivery).await.unwrap();
    let report = finished(task).await;
    assert_eq!(
        report,
        ConsumeReport {
            lost: 1,
            ..ConsumeReport::default()
        }
    );
    let (dropped_at, got_to_the_end) = ended.lock().unwrap().unwrap();
    assert!(!got_to_the_end, "the work was dropped, not finished");
    let after = dropped_at.duration_since(taken);
    assert!(
        after < LOCK,
        "dropped {after:?} after the lock was lost: the next renewal (a third of the lock) finds it"
    );
    assert!(
        s.recording.settled().is_empty(),
        "the loser settled: {:?}",
        s.recording.settled()
    );
    let renewals = s.recording.renewals();
    assert!(
        renewals
            .last()
            .is_some_and(|r| r.as_ref().is_err_and(|e| e.contains("LockLost"))),
        "the last renewal found the lock lost: {renewals:?}"
    );
    assert_eq!(s.queue.backlog(BATCHES).await.unwrap(), 0);
}

/// When renewal keeps failing, the lock runs out and another receiver takes the message: the
/// first holder gives its work up once a whole lock duration has passed without a renewal, about
/// when the second starts, and settles nothing; the second completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_whose_lock_cannot_be_renewed_is_given_up_when_the_lock_runs_out() {
    let s = setup().await;
    s.recording.fail_renewals.store(true, Ordering::SeqCst);
    let work = Duration::from_secs(60);
    let (task, mut starts, ended) = consume_one(&s.ctx, work);
    let (began, first) = started(&mut starts).await;
    let second = s
        .queue
        .receive_one(BATCHES, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the lock ran out and the message came back");
    let taken = Instant::now();
    assert_eq!(second.id, first.id);
    assert_eq!(second.delivery_count, 2);
    let report = finished(task).await;
    assert_eq!(
        report,
        ConsumeReport {
            lost: 1,
            ..ConsumeReport::default()
        }
    );
    let (dropped_at, got_to_the_end) = ended.lock().unwrap().unwrap();
    assert!(!got_to_the_end, "the work was dropped, not finished");
    let held = dropped_at.duration_since(began);
    assert!(
        held >= LOCK * 9 / 10 && held < LOCK * 2,
        "gave up {held:?} after starting, with a lock of {LOCK:?}"
    );
    assert!(
        dropped_at < taken + LOCK / 2,
        "the work ran on {:?} after another receiver took the message",
        dropped_at.duration_since(taken)
    );
    assert!(
        s.recording.settled().is_empty(),
        "the loser settled: {:?}",
        s.recording.settled()
    );
    let renewals = s.recording.renewals();
    assert_eq!(
        renewals.len(),
        3,
        "renewal tried every third of the lock until the lock ran out: {renewals:?}"
    );
    s.queue.complete(&second).await.unwrap();
    assert_eq!(s.queue.backlog(BATCHES).await.unwrap(), 0);
}

/// Counts the deliveries it works on at once, and the most it ever had.
#[derive(Default)]
struct Overlapping {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    work: Duration,
}

#[async_trait]
impl Handler for Overlapping {
    async fn handle(&self, _ctx: &Context, _delivery: &Delivery) -> Outcome {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.work).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Outcome::Complete
    }
}

/// A loop told to take two deliveries at once works on two, never more, each under its own
/// renewed lock (the work outlasts it), and completes every one; with one, the work is serial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_overlap_up_to_the_limit_each_under_its_lock() {
    for in_flight in [1, 2] {
        let s = setup().await;
        for i in 2..=5 {
            s.queue
                .send_one(
                    BATCHES,
                    OutgoingMessage::new(format!("job:{i:05}"), b"{}".to_vec()),
                )
                .await
                .unwrap();
        }
        let handler = Overlapping {
            work: LOCK * 3 / 2,
            ..Overlapping::default()
        };
        let options = ConsumeOptions {
            wait: Duration::from_millis(100),
            max_deliveries: Some(5),
            in_flight,
            ..ConsumeOptions::new(BATCHES)
        };
        let started = Instant::now();
        let report = consume(&s.ctx, &handler, &options, CancellationToken::new())
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(report.completed, 5, "{report:?}");
        assert_eq!(handler.most.load(Ordering::SeqCst), in_flight);
        assert_eq!(s.recording.settled(), ["complete"; 5]);
        let renewals = s.recording.renewals();
        assert!(renewals.iter().all(Result::is_ok), "{renewals:?}");
        assert!(
            renewals.len() >= 5,
            "every delivery's lock was renewed: {renewals:?}"
        );
        if in_flight == 2 {
            // Five deliveries of 1.5 s two at a time: three rounds, not five.
            assert!(took < LOCK * 3 / 2 * 4, "{took:?}");
        }
        assert!(
            s.queue
                .receive_one(BATCHES, Duration::ZERO)
                .await
                .unwrap()
                .is_none()
        );
    }
}

/// On shutdown with two deliveries in hand, both get the grace to finish and are completed;
/// nothing new is received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_every_delivery_in_hand_finish() {
    let s = setup().await;
    for i in 2..=4 {
        s.queue
            .send_one(
                BATCHES,
                OutgoingMessage::new(format!("job:{i:05}"), b"{}".to_vec()),
            )
            .await
            .unwrap();
    }
    let handler = Arc::new(Overlapping {
        work: Duration::from_millis(800),
        ..Overlapping::default()
    });
    let shutdown = CancellationToken::new();
    let task = {
        let (ctx, handler, shutdown) = (s.ctx.clone(), Arc::clone(&handler), shutdown.clone());
        tokio::spawn(async move {
            let options = ConsumeOptions {
                wait: Duration::from_millis(100),
                in_flight: 2,
                grace: Duration::from_secs(5),
                ..ConsumeOptions::new(BATCHES)
            };
            consume(&ctx, handler.as_ref(), &options, shutdown)
                .await
                .unwrap()
        })
    };
    while handler.now.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let report = finished(task).await;
    assert_eq!(report.completed, 2, "{report:?}");
    assert_eq!(report.handled(), 2, "{report:?}");
    // The other two are still queued for another consumer.
    let mut left = 0;
    while s
        .queue
        .receive_one(BATCHES, Duration::ZERO)
        .await
        .unwrap()
        .is_some()
    {
        left += 1;
    }
    assert_eq!(left, 2);
}
