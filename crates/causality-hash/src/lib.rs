#![doc = include_str!("../README.md")]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod base32;
mod cid;
#[doc(hidden)]
pub mod fuzzing;
mod hrw;
mod mac;
pub mod merkle;

pub use cid::{CONTENT_ID_LEN, ContentHasher, ContentId, ParseError, ShortId};
pub use hrw::{HRW_RULE_VERSION, PeerDigest, Rendezvous};
pub use mac::{MacHasher, MacKey, MacTag, mac, verify_mac};
