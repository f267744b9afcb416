//! Every size limit of the crate, in one place.
//!
//! Entries are checked against these when appended; stored entries that exceed them are
//! reported as corrupt rather than decoded.

/// Largest encoded entry, in bytes.
pub const MAX_ENTRY_LEN: usize = 1 << 20;
/// Longest `source`, in bytes.
pub const MAX_SOURCE_LEN: usize = 256;
/// Longest custom kind name, in bytes.
pub const MAX_CUSTOM_KIND_LEN: usize = 64;
/// Most metadata pairs in one entry.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Most entries in one [`append_batch`](crate::LogStore::append_batch).
pub const MAX_BATCH: usize = 10_000;
/// Most entries one query returns.
pub const MAX_QUERY_RESULTS: usize = 100_000;
/// Largest signed checkpoint note, in bytes.
pub const MAX_NOTE_LEN: usize = 64 * 1024;
/// Longest field value (the message or a metadata value) a `LogLayer` records, in bytes;
/// longer ones are cut at a character boundary and end in `…`.
pub const MAX_FIELD_LEN: usize = 1024;
/// Most signature lines in a note.
pub const MAX_NOTE_SIGNATURES: usize = 100;
