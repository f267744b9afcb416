//! [`LogLayer`]: record `tracing` events into a [`LogStore`].

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;

use crate::limits::MAX_FIELD_LEN;
use crate::{Kind, Level, LogStore, NewEntry};

/// Events queued for the writer thread before new ones are dropped (and counted).
pub const DEFAULT_QUEUE: usize = 8192;
/// What an entry costs against a [`Budget`] beyond its text: ids, level, kind, time.
const ENTRY_OVERHEAD: u64 = 64;

/// How much a [`LogLayer`] may write, whatever is logged: a token bucket of bytes (an
/// entry costs its message, source and metadata plus 64 bytes). Events over the budget are
/// dropped and counted ([`LogLayerGuard::over_budget`]); when the budget allows again, one
/// warning entry says how many were dropped. The store then grows by at most
/// `burst_bytes + bytes_per_second × t` (plus one summary entry per refill) over any `t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Sustained rate.
    pub bytes_per_second: u64,
    /// What may be written at once after a quiet period.
    pub burst_bytes: u64,
}

impl Budget {
    /// What an entry with these fields costs against a budget: its message, source and
    /// metadata, plus 64 bytes for the rest. The same for a [`NewEntry`] and the
    /// [`LogEntry`](crate::LogEntry) it becomes, so a reader can total what a budget let
    /// through.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use causality_log::Budget;
    ///
    /// let metadata = BTreeMap::from([("peer".to_owned(), "12D3".to_owned())]);
    /// assert_eq!(Budget::entry_cost(b"dialed", "net", &metadata), 6 + 3 + 8 + 64);
    /// ```
    pub fn entry_cost(payload: &[u8], source: &str, metadata: &BTreeMap<String, String>) -> u64 {
        let metadata: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        (payload.len() + source.len() + metadata) as u64 + ENTRY_OVERHEAD
    }
}

impl Default for Budget {
    /// 16 KiB/s sustained (≈ 1.4 GB a day at worst), 1 MiB bursts.
    fn default() -> Self {
        Self {
            bytes_per_second: 16 * 1024,
            burst_bytes: 1024 * 1024,
        }
    }
}

/// A token bucket over a caller-supplied clock (`now` is time since any fixed start).
#[derive(Debug)]
struct Bucket {
    budget: Budget,
    tokens: u64,
    at: Duration,
}

impl Bucket {
    fn new(budget: Budget) -> Self {
        Self {
            budget,
            tokens: budget.burst_bytes,
            at: Duration::ZERO,
        }
    }

    /// Takes `cost` tokens if there are that many at `now`.
    fn take(&mut self, cost: u64, now: Duration) -> bool {
        let rate = u128::from(self.budget.bytes_per_second.max(1));
        let elapsed = now.saturating_sub(self.at).as_micros();
        let refill = elapsed * rate / 1_000_000;
        if refill > 0 {
            // Advance by the time the refill stands for (rounded up, never past `now`),
            // so frequent calls do not lose the fractions.
            let spent = (refill * 1_000_000).div_ceil(rate).min(elapsed);
            self.at += Duration::from_micros(u64::try_from(spent).unwrap_or(u64::MAX));
            self.tokens = self
                .tokens
                .saturating_add(u64::try_from(refill).unwrap_or(u64::MAX))
                .min(self.budget.burst_bytes);
            if self.tokens == self.budget.burst_bytes {
                self.at = now;
            }
        }
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

fn cost(entry: &NewEntry) -> u64 {
    Budget::entry_cost(&entry.payload, &entry.source, &entry.metadata)
}

enum Msg {
    Entry(NewEntry),
    Flush(SyncSender<()>),
    Stop,
}

/// A `tracing_subscriber::Layer` that appends every event to a log.
///
/// The level maps one to one; the target becomes the entry's `source`; the `message`
/// field becomes the payload; every other field becomes a metadata pair (its `Display`
/// for strings, `Debug` otherwise). A field named `kind` chooses the kind
/// (`network`, `effect`, …, or a custom name); the default is [`Kind::Event`].
///
/// Events are handed to a writer thread through a bounded queue, so logging never blocks
/// on storage; when the queue is full, events are dropped and counted
/// ([`LogLayerGuard::dropped`]). Events raised while the writer itself appends are not
/// recorded, so a store that logs cannot feed on itself.
///
/// ```
/// use std::sync::Arc;
/// use causality_log::{LogLayer, LogStore, MemoryLog};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let log = MemoryLog::new();
/// let (layer, guard) = LogLayer::new(Arc::new(log.clone()));
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(peer = "12D3KooW", "connected");
/// });
/// guard.flush();
/// let entry = log.get(0).unwrap();
/// assert_eq!(entry.payload, b"connected");
/// assert_eq!(entry.metadata["peer"], "12D3KooW");
/// ```
#[derive(Debug)]
pub struct LogLayer {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Msg")
    }
}

/// Owns the writer thread of a [`LogLayer`]; dropping it flushes and stops the thread.
#[derive(Debug)]
pub struct LogLayerGuard {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    over_budget: Arc<AtomicU64>,
    writer: Option<JoinHandle<()>>,
}

thread_local! {
    static IN_WRITER: Cell<bool> = const { Cell::new(false) };
}

impl LogLayer {
    /// A layer writing into `store` through a queue of [`DEFAULT_QUEUE`] events.
    pub fn new(store: Arc<dyn LogStore>) -> (Self, LogLayerGuard) {
        Self::with_queue(store, DEFAULT_QUEUE)
    }

    /// A layer with a queue of `capacity` events and no write budget.
    pub fn with_queue(store: Arc<dyn LogStore>, capacity: usize) -> (Self, LogLayerGuard) {
        Self::spawn(store, capacity, None)
    }

    /// A layer with a queue of `capacity` events that writes at most `budget`: the choice
    /// for a process whose events an outsider can provoke (a network node), so a flood
    /// cannot fill the disk.
    pub fn with_budget(
        store: Arc<dyn LogStore>,
        capacity: usize,
        budget: Budget,
    ) -> (Self, LogLayerGuard) {
        Self::spawn(store, capacity, Some(budget))
    }

    fn spawn(
        store: Arc<dyn LogStore>,
        capacity: usize,
        budget: Option<Budget>,
    ) -> (Self, LogLayerGuard) {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let over_budget = Arc::new(AtomicU64::new(0));
        let writer = {
            let mut writer = Writer {
                failed: failed.clone(),
                over_budget: over_budget.clone(),
                bucket: budget.map(Bucket::new),
                start: Instant::now(),
                unreported: 0,
                batch: Vec::new(),
            };
            std::thread::Builder::new()
                .name("causality-log-layer".into())
                .spawn(move || writer.run(&*store, &rx))
                .expect("spawning the log writer thread")
        };
        let layer = Self {
            tx: tx.clone(),
            dropped: dropped.clone(),
        };
        let guard = LogLayerGuard {
            tx,
            dropped,
            failed,
            over_budget,
            writer: Some(writer),
        };
        (layer, guard)
    }
}

struct Writer {
    failed: Arc<AtomicU64>,
    over_budget: Arc<AtomicU64>,
    bucket: Option<Bucket>,
    start: Instant,
    /// Dropped over the budget since the last summary entry.
    unreported: u64,
    batch: Vec<NewEntry>,
}

impl Writer {
    fn run(&mut self, store: &dyn LogStore, rx: &Receiver<Msg>) {
        IN_WRITER.with(|w| w.set(true));
        while let Ok(first) = rx.recv() {
            let mut pending = Some(first);
            // Drain what is queued into one batch: one write for a burst of events.
            loop {
                match pending.take() {
                    Some(Msg::Entry(e)) => self.admit(e),
                    Some(Msg::Flush(done)) => {
                        self.write(store);
                        let _ = done.send(());
                    }
                    Some(Msg::Stop) => {
                        self.write(store);
                        return;
                    }
                    None => break,
                }
                if self.batch.len() >= 1024 {
                    self.write(store);
                }
                pending = rx.try_recv().ok();
            }
            self.write(store);
        }
    }

    /// Queues `entry` for the next write if the budget allows it; otherwise counts it.
    fn admit(&mut self, entry: NewEntry) {
        let Some(bucket) = &mut self.bucket else {
            self.batch.push(entry);
            return;
        };
        let now = self.start.elapsed();
        if self.unreported > 0 {
            let summary = NewEntry::new(Level::Warn, Kind::Event)
                .source("causality_log")
                .payload(format!(
                    "{} events dropped over the log's write budget",
                    self.unreported
                ));
            if !bucket.take(cost(&summary), now) {
                self.unreported += 1;
                self.over_budget.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.batch.push(summary);
            self.unreported = 0;
        }
        if bucket.take(cost(&entry), now) {
            self.batch.push(entry);
        } else {
            self.unreported += 1;
            self.over_budget.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(&mut self, store: &dyn LogStore) {
        if self.batch.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.batch);
        let n = entries.len() as u64;
        if store.append_batch(entries).is_err() {
            self.failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl LogLayerGuard {
    /// Waits until every event recorded so far is in the store.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events the store refused (e.g. over a size limit, or a storage error).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Events dropped because they were over the layer's [`Budget`].
    pub fn over_budget(&self) -> u64 {
        self.over_budget.load(Ordering::Relaxed)
    }
}

impl Drop for LogLayerGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn level(level: &tracing::Level) -> Level {
    match *level {
        tracing::Level::TRACE => Level::Trace,
        tracing::Level::DEBUG => Level::Debug,
        tracing::Level::INFO => Level::Info,
        tracing::Level::WARN => Level::Warn,
        tracing::Level::ERROR => Level::Error,
    }
}

struct Fields<'a>(&'a mut NewEntry);

/// `value` cut to at most [`MAX_FIELD_LEN`] bytes at a character boundary.
fn bounded(mut value: String) -> String {
    if value.len() > MAX_FIELD_LEN {
        let mut end = MAX_FIELD_LEN - '…'.len_utf8();
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        value.push('…');
    }
    value
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: String) {
        let value = bounded(value);
        match field.name() {
            "message" => self.0.payload = value.into_bytes(),
            "kind" => self.0.kind = Kind::from_name(&value),
            name => {
                self.0.metadata.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.put(field, text);
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if IN_WRITER.with(Cell::get) {
            return;
        }
        let meta = event.metadata();
        let mut entry = NewEntry::new(level(meta.level()), Kind::Event).source(meta.target());
        event.record(&mut Fields(&mut entry));
        if let Kind::Custom(name) = &entry.kind
            && (name.is_empty() || name.len() > crate::limits::MAX_CUSTOM_KIND_LEN)
        {
            entry.kind = Kind::Event;
        }
        match self.tx.try_send(Msg::Entry(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryLog;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = Bucket::new(Budget {
            bytes_per_second: 1000,
            burst_bytes: 5000,
        });
        let ms = Duration::from_millis;
        assert!(bucket.take(5000, ms(0)));
        assert!(!bucket.take(1, ms(0)));
        assert!(!bucket.take(200, ms(100)), "100 ms refill 100 bytes");
        assert!(bucket.take(200, ms(200)));
        // Many small steps refill as much as one large one.
        let mut stepped = Bucket::new(Budget {
            bytes_per_second: 1000,
            burst_bytes: 1000,
        });
        assert!(stepped.take(1000, ms(0)));
        for t in 1..=1500 {
            let _ = stepped.take(0, Duration::from_micros(t * 333));
        }
        assert!(
            stepped.take(499, Duration::from_micros(1500 * 333)),
            "0.4995 s refill 499 bytes"
        );
        // A long quiet period refills to the burst, not beyond.
        assert!(bucket.take(5000, ms(60_000)));
        assert!(!bucket.take(10, ms(60_000)));
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let cut = bounded("é".repeat(MAX_FIELD_LEN));
        assert!(cut.len() <= MAX_FIELD_LEN, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("short".into()), "short");
    }

    /// A flood of events far beyond the budget: the store grows by at most the burst plus
    /// the rate over the time the flood took, the rest is counted, and once the budget
    /// allows again one entry says how many were dropped.
    #[test]
    fn a_flood_is_held_to_the_budget() {
        let log = MemoryLog::new();
        let budget = Budget {
            bytes_per_second: 2000,
            burst_bytes: 20_000,
        };
        let (layer, guard) = LogLayer::with_budget(Arc::new(log.clone()), 1 << 15, budget);
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        let started = Instant::now();
        let flood = 20_000u64;
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..flood {
                tracing::info!(
                    peer = "12D3KooWFlood",
                    reason = "malformed",
                    i,
                    "{}",
                    "x".repeat(150)
                );
            }
        });
        guard.flush();
        let elapsed = started.elapsed();
        let entries: Vec<_> = (0..log.len()).map(|i| log.get(i).unwrap()).collect();
        let written: u64 = entries
            .iter()
            .map(|e| {
                let metadata: usize = e.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
                (e.payload.len() + e.source.len() + metadata) as u64 + ENTRY_OVERHEAD
            })
            .sum();
        let bound = budget.burst_bytes
            + (elapsed.as_secs_f64() * budget.bytes_per_second as f64).ceil() as u64;
        assert!(written <= bound, "wrote {written} bytes, bound {bound}");
        let kept = entries
            .iter()
            .filter(|e| e.payload.starts_with(b"x"))
            .count() as u64;
        assert!(guard.over_budget() > flood / 2, "{}", guard.over_budget());
        assert_eq!(
            kept + guard.over_budget() + guard.dropped(),
            flood,
            "every event is written or counted"
        );

        // The budget refills (300 ms at 2000 B/s covers a summary and one event).
        std::thread::sleep(Duration::from_millis(300));
        tracing::dispatcher::with_default(&dispatch, || tracing::warn!("after the flood"));
        guard.flush();
        let n = log.len();
        let summary = log.get(n - 2).unwrap();
        assert_eq!(summary.level, Level::Warn);
        assert!(
            String::from_utf8_lossy(&summary.payload)
                .contains("events dropped over the log's write budget"),
            "{summary:?}"
        );
        assert_eq!(log.get(n - 1).unwrap().payload, b"after the flood");
    }
}
