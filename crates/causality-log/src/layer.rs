//! [`LogLayer`]: record `tracing` events into a [`LogStore`].

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;

use crate::{Kind, Level, LogStore, NewEntry};

/// Events queued for the writer thread before new ones are dropped (and counted).
pub const DEFAULT_QUEUE: usize = 8192;

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

    /// A layer with a queue of `capacity` events.
    pub fn with_queue(store: Arc<dyn LogStore>, capacity: usize) -> (Self, LogLayerGuard) {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let writer = {
            let failed = failed.clone();
            std::thread::Builder::new()
                .name("causality-log-layer".into())
                .spawn(move || writer(&*store, &rx, &failed))
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
            writer: Some(writer),
        };
        (layer, guard)
    }
}

fn writer(store: &dyn LogStore, rx: &Receiver<Msg>, failed: &AtomicU64) {
    IN_WRITER.with(|w| w.set(true));
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut pending = Some(first);
        // Drain what is queued into one batch: one write for a burst of events.
        loop {
            match pending.take() {
                Some(Msg::Entry(e)) => batch.push(e),
                Some(Msg::Flush(done)) => {
                    write_batch(store, &mut batch, failed);
                    let _ = done.send(());
                }
                Some(Msg::Stop) => {
                    write_batch(store, &mut batch, failed);
                    return;
                }
                None => break,
            }
            if batch.len() >= 1024 {
                write_batch(store, &mut batch, failed);
            }
            pending = rx.try_recv().ok();
        }
        write_batch(store, &mut batch, failed);
    }
}

fn write_batch(store: &dyn LogStore, batch: &mut Vec<NewEntry>, failed: &AtomicU64) {
    if batch.is_empty() {
        return;
    }
    let entries = std::mem::take(batch);
    let n = entries.len() as u64;
    if store.append_batch(entries).is_err() {
        failed.fetch_add(n, Ordering::Relaxed);
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

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: String) {
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
