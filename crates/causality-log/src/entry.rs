//! Log entries: what callers write ([`NewEntry`]) and what the log stores ([`LogEntry`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use causality_hash::ContentId;
use prost::Message as _;

use crate::LogError;
use crate::limits::{MAX_CUSTOM_KIND_LEN, MAX_ENTRY_LEN, MAX_METADATA_ENTRIES, MAX_SOURCE_LEN};
use crate::proto::v1 as pb;

/// Severity, ordered from least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very fine-grained diagnostics.
    Trace,
    /// Diagnostics for developers.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    fn to_proto(self) -> pb::Level {
        match self {
            Level::Trace => pb::Level::Trace,
            Level::Debug => pb::Level::Debug,
            Level::Info => pb::Level::Info,
            Level::Warn => pb::Level::Warn,
            Level::Error => pb::Level::Error,
        }
    }

    fn from_proto(value: i32) -> Option<Self> {
        Some(match pb::Level::try_from(value).ok()? {
            pb::Level::Trace => Level::Trace,
            pb::Level::Debug => Level::Debug,
            pb::Level::Info => Level::Info,
            pb::Level::Warn => Level::Warn,
            pb::Level::Error => Level::Error,
            pb::Level::Unspecified => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        })
    }
}

/// What an entry records.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A state change that was applied.
    Effect,
    /// An observed fact.
    Fact,
    /// A message sent or received.
    Message,
    /// Something that happened (the default for tracing events).
    Event,
    /// Network activity: connections, peers, rejections.
    Network,
    /// An application-defined kind, named (1–64 bytes).
    Custom(String),
}

impl Kind {
    /// The kind's name: `effect`, `fact`, …, or the custom name.
    pub fn name(&self) -> &str {
        match self {
            Kind::Effect => "effect",
            Kind::Fact => "fact",
            Kind::Message => "message",
            Kind::Event => "event",
            Kind::Network => "network",
            Kind::Custom(name) => name,
        }
    }

    /// The kind called `name`; names that are not built in become [`Kind::Custom`].
    pub fn from_name(name: &str) -> Self {
        match name {
            "effect" => Kind::Effect,
            "fact" => Kind::Fact,
            "message" => Kind::Message,
            "event" => Kind::Event,
            "network" => Kind::Network,
            other => Kind::Custom(other.to_owned()),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An entry to append. The log adds its position and the previous entry's id.
///
/// ```
/// use causality_log::{Kind, Level, NewEntry};
///
/// let entry = NewEntry::new(Level::Info, Kind::Network)
///     .source("net")
///     .payload(b"peer connected".to_vec())
///     .meta("peer", "12D3KooW...");
/// assert_eq!(entry.metadata["peer"], "12D3KooW...");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// Severity.
    pub level: Level,
    /// What it records.
    pub kind: Kind,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_nanos: u64,
    /// The writing component.
    pub source: String,
    /// The body.
    pub payload: Vec<u8>,
    /// Ordered key/value annotations.
    pub metadata: BTreeMap<String, String>,
}

impl NewEntry {
    /// An empty entry stamped with the current system time.
    pub fn new(level: Level, kind: Kind) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            level,
            kind,
            timestamp_nanos: now,
            source: String::new(),
            payload: Vec::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the source component.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Adds a metadata pair.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the timestamp (nanoseconds since the Unix epoch).
    pub fn at(mut self, timestamp_nanos: u64) -> Self {
        self.timestamp_nanos = timestamp_nanos;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), LogError> {
        if self.source.len() > MAX_SOURCE_LEN {
            return Err(LogError::InvalidEntry(format!(
                "source is {} bytes; the limit is {MAX_SOURCE_LEN}",
                self.source.len()
            )));
        }
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(LogError::InvalidEntry(format!(
                "{} metadata pairs; the limit is {MAX_METADATA_ENTRIES}",
                self.metadata.len()
            )));
        }
        if let Kind::Custom(name) = &self.kind
            && (name.is_empty() || name.len() > MAX_CUSTOM_KIND_LEN)
        {
            return Err(LogError::InvalidEntry(format!(
                "custom kind name must be 1 to {MAX_CUSTOM_KIND_LEN} bytes"
            )));
        }
        Ok(())
    }

    /// The canonical encoding of this entry at `index` after `prev`, with `spare` bytes of
    /// extra capacity, and its id.
    pub(crate) fn seal(
        self,
        index: u64,
        prev: Option<ContentId>,
        spare: usize,
    ) -> Result<(ContentId, Vec<u8>), LogError> {
        self.validate()?;
        let (kind, custom_kind) = match self.kind {
            Kind::Effect => (pb::Kind::Effect, String::new()),
            Kind::Fact => (pb::Kind::Fact, String::new()),
            Kind::Message => (pb::Kind::Message, String::new()),
            Kind::Event => (pb::Kind::Event, String::new()),
            Kind::Network => (pb::Kind::Network, String::new()),
            Kind::Custom(name) => (pb::Kind::Custom, name),
        };
        let message = pb::LogEntry {
            index,
            prev_id: prev.map(|id| id.as_bytes().to_vec()).unwrap_or_default(),
            level: self.level.to_proto() as i32,
            kind: kind as i32,
            custom_kind,
            timestamp_unix_nanos: self.timestamp_nanos,
            source: self.source,
            payload: self.payload,
            metadata: self.metadata,
        };
        let len = message.encoded_len();
        if len > MAX_ENTRY_LEN {
            return Err(LogError::InvalidEntry(format!(
                "entry encodes to {len} bytes; the limit is {MAX_ENTRY_LEN}"
            )));
        }
        let mut bytes = Vec::with_capacity(len + spare);
        message
            .encode(&mut bytes)
            .expect("a Vec grows to any length");
        Ok((ContentId::of(&bytes), bytes))
    }
}

/// An entry as stored: its position, the link to its predecessor and its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The entry's id: BLAKE3 of its canonical encoding.
    pub id: ContentId,
    /// Position in the log, from 0.
    pub index: u64,
    /// The previous entry's id; `None` for the first entry.
    pub prev_id: Option<ContentId>,
    /// Severity.
    pub level: Level,
    /// What it records.
    pub kind: Kind,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_nanos: u64,
    /// The writing component.
    pub source: String,
    /// The body.
    pub payload: Vec<u8>,
    /// Ordered key/value annotations.
    pub metadata: BTreeMap<String, String>,
}

impl LogEntry {
    /// Decodes stored bytes expected at `index`; any damage is [`LogError::Corrupt`].
    pub(crate) fn decode(index: u64, bytes: &[u8]) -> Result<Self, LogError> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(LogError::corrupt(
                index,
                "stored entry exceeds the size limit",
            ));
        }
        let id = ContentId::of(bytes);
        let m = pb::LogEntry::decode(bytes)
            .map_err(|e| LogError::corrupt(index, format!("entry does not decode: {e}")))?;
        if m.index != index {
            return Err(LogError::corrupt(
                index,
                format!("entry records index {} (entry out of place)", m.index),
            ));
        }
        let prev_id = match m.prev_id.len() {
            0 if index == 0 => None,
            32 if index > 0 => Some(ContentId::from_slice(&m.prev_id).expect("32 bytes")),
            _ => return Err(LogError::corrupt(index, "malformed previous-entry id")),
        };
        let level =
            Level::from_proto(m.level).ok_or_else(|| LogError::corrupt(index, "unknown level"))?;
        // A custom name belongs to the custom kind only: a built-in kind carrying one would
        // be a second encoding (and a second id) of the same entry.
        let kind = match (pb::Kind::try_from(m.kind), m.custom_kind.is_empty()) {
            (Ok(pb::Kind::Effect), true) => Kind::Effect,
            (Ok(pb::Kind::Fact), true) => Kind::Fact,
            (Ok(pb::Kind::Message), true) => Kind::Message,
            (Ok(pb::Kind::Event), true) => Kind::Event,
            (Ok(pb::Kind::Network), true) => Kind::Network,
            (Ok(pb::Kind::Custom), false) => Kind::Custom(m.custom_kind),
            _ => return Err(LogError::corrupt(index, "unknown kind")),
        };
        Ok(Self {
            id,
            index,
            prev_id,
            level,
            kind,
            timestamp_nanos: m.timestamp_unix_nanos,
            source: m.source,
            payload: m.payload,
            metadata: m.metadata,
        })
    }
}

/// Which entries a query returns. Every condition set must hold.
///
/// ```
/// use causality_log::{Filter, Kind, Level};
///
/// let filter = Filter::new().min_level(Level::Warn).kind(Kind::Network).source("net");
/// # let _ = filter;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Keep entries at least this severe.
    pub min_level: Option<Level>,
    /// Keep entries of this kind.
    pub kind: Option<Kind>,
    /// Keep entries from this source.
    pub source: Option<String>,
    /// Keep entries stamped at or after this time (Unix nanoseconds).
    pub since_nanos: Option<u64>,
    /// Keep entries stamped before this time (Unix nanoseconds).
    pub until_nanos: Option<u64>,
}

impl Filter {
    /// A filter that keeps everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep entries at least this severe.
    pub fn min_level(mut self, level: Level) -> Self {
        self.min_level = Some(level);
        self
    }

    /// Keep entries of this kind.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Keep entries from this source.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Keep entries with `since <= timestamp < until` (Unix nanoseconds).
    pub fn time_range(mut self, since: u64, until: u64) -> Self {
        self.since_nanos = Some(since);
        self.until_nanos = Some(until);
        self
    }

    /// Whether `entry` passes.
    pub fn matches(&self, entry: &LogEntry) -> bool {
        self.min_level.is_none_or(|l| entry.level >= l)
            && self.kind.as_ref().is_none_or(|k| entry.kind == *k)
            && self.source.as_ref().is_none_or(|s| entry.source == *s)
            && self.since_nanos.is_none_or(|t| entry.timestamp_nanos >= t)
            && self.until_nanos.is_none_or(|t| entry.timestamp_nanos < t)
    }
}
