//! The instruments, recorded where things happen and read by whichever exporter or scraper the
//! process has (see [`crate::telemetry`]); without one they are OpenTelemetry's no-ops.
//!
//! | instrument | kind | unit | attributes | recorded by |
//! |---|---|---|---|---|
//! | `stylefleet.jobs` | counter | `{job}` | `state`: `planned`, `done`, `failed` | the split (a new plan), the stitch (the output written), a job failing for good (a dead-lettered batch or stitch, a refused input) |
//! | `stylefleet.batches` | counter | `{batch}` | `outcome`: `completed`, `retried`, `dead_lettered`, `released`, `drained`, `lost` | the consume loop, per batch delivery |
//! | `stylefleet.frames` | counter | `{frame}` | | the style stage, per batch styled (frames/s is its rate) |
//! | `stylefleet.batch.duration` | histogram | `s` | `outcome` | the consume loop: a batch delivery from receipt to its outcome |
//! | `stylefleet.failures` | counter | `{failure}` | `stage`: `split`, `batch`, `stitch`; `reason`: `transient` for a retry, else the dead-letter reason (`PermanentFailure`, `RetriesExhausted`, `InvalidMessage`, `UnknownJob`, ...), `LockLost` | the consume loop, the split |
//! | `stylefleet.queue.depth` | observable gauge | `{message}` | `queue` | the last backlog a process counted: the embedded fleet's autoscaler and `process` (the Azure worker has no right to count: KEDA and Service Bus's own metrics do) |
//! | `stylefleet.lock.renewals` | counter | `{renewal}` | `result`: `ok`, `failed` | lock renewal ([`crate::queue::QueueExt::keep_locked`]) |
//!
//! Attributes are small closed sets (no job ids: those are on the spans).
//!
//! The instruments are made from the global meter provider on first use: [`Telemetry::from_env`]
//! installs it before the executable does any work.
//!
//! [`Telemetry::from_env`]: crate::telemetry::Telemetry::from_env

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};

/// Bucket bounds of `stylefleet.batch.duration`, in seconds: a batch takes
/// from well under a second (a redelivery of a done batch) to minutes (a big batch on a CPU).
const DURATION_BOUNDS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
];

/// The instruments, made once.
struct Instruments {
    jobs: Counter<u64>,
    batches: Counter<u64>,
    frames: Counter<u64>,
    batch_duration: Histogram<f64>,
    failures: Counter<u64>,
    lock_renewals: Counter<u64>,
    /// Kept so the callback lives as long as the instruments.
    _queue_depth: ObservableGauge<u64>,
}

/// The last backlog counted per queue, which the gauge reports when read. A measurement is a
/// by-product of a count someone made anyway (the autoscaler's): counting from the gauge's
/// callback would need an async queue call on the exporter's thread.
static DEPTHS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Whether a meter provider reads the instruments (set by [`Telemetry::from_env`]).
///
/// [`Telemetry::from_env`]: crate::telemetry::Telemetry::from_env
static READ: AtomicBool = AtomicBool::new(false);

/// Records that a meter provider reads the instruments.
pub(crate) fn set_read() {
    READ.store(true, Ordering::Relaxed);
}

/// Whether anything reads the instruments: a measurement that costs work of its own (counting
/// a queue) is skipped when not.
pub fn read() -> bool {
    READ.load(Ordering::Relaxed)
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| Instruments::new(&opentelemetry::global::meter("stylefleet")))
}

impl Instruments {
    fn new(meter: &Meter) -> Self {
        Instruments {
            jobs: meter
                .u64_counter("stylefleet.jobs")
                .with_description("Jobs planned, done and failed, by state")
                .with_unit("{job}")
                .build(),
            batches: meter
                .u64_counter("stylefleet.batches")
                .with_description("Batch deliveries handled, by outcome")
                .with_unit("{batch}")
                .build(),
            frames: meter
                .u64_counter("stylefleet.frames")
                .with_description("Frames styled")
                .with_unit("{frame}")
                .build(),
            batch_duration: meter
                .f64_histogram("stylefleet.batch.duration")
                .with_description("Time from receiving a batch to its outcome")
                .with_unit("s")
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build(),
            failures: meter
                .u64_counter("stylefleet.failures")
                .with_description("Failures, by stage and reason")
                .with_unit("{failure}")
                .build(),
            lock_renewals: meter
                .u64_counter("stylefleet.lock.renewals")
                .with_description("Lock renewals, by result")
                .with_unit("{renewal}")
                .build(),
            _queue_depth: meter
                .u64_observable_gauge("stylefleet.queue.depth")
                .with_description("Messages waiting or in flight, as last counted, by queue")
                .with_unit("{message}")
                .with_callback(|observer| {
                    for (queue, depth) in depths().iter() {
                        observer.observe(*depth, &[KeyValue::new("queue", queue.clone())]);
                    }
                })
                .build(),
        }
    }
}

fn depths() -> std::sync::MutexGuard<'static, BTreeMap<String, u64>> {
    // Plain inserts: a panic while holding the lock leaves a consistent map.
    DEPTHS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a job stands, for `stylefleet.jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// Planned (a new manifest).
    Planned,
    /// Its output written.
    Done,
    /// Failed for good.
    Failed,
}

/// A job was planned, done or failed.
pub fn job(event: JobEvent) {
    let state = match event {
        JobEvent::Planned => "planned",
        JobEvent::Done => "done",
        JobEvent::Failed => "failed",
    };
    instruments().jobs.add(1, &[KeyValue::new("state", state)]);
}

/// A batch delivery ended with `outcome` after `seconds`.
pub fn batch(outcome: &'static str, seconds: f64) {
    let attributes = [KeyValue::new("outcome", outcome)];
    let i = instruments();
    i.batches.add(1, &attributes);
    i.batch_duration.record(seconds, &attributes);
}

/// `count` frames were styled.
pub fn frames(count: u64) {
    instruments().frames.add(count, &[]);
}

/// A failure in `stage` (`split`, `batch`, `stitch`) for `reason` (a short, closed set).
pub fn failure(stage: &'static str, reason: &str) {
    instruments().failures.add(
        1,
        &[
            KeyValue::new("stage", stage),
            KeyValue::new("reason", reason.to_owned()),
        ],
    );
}

/// A lock renewal succeeded or failed.
pub fn lock_renewal(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    instruments()
        .lock_renewals
        .add(1, &[KeyValue::new("result", result)]);
}

/// `queue` held `depth` messages (waiting or in flight) when last counted.
pub fn queue_depth(queue: &str, depth: u64) {
    // Made now, so that the gauge is registered once anything counts.
    let _ = instruments();
    depths().insert(queue.to_owned(), depth);
}
