//! Register sync's wire messages: the gossip payloads of its topic families and its request
//! protocol, with the conversions that check every field and limit.

use causality_hash::ContentId;
use causality_net::{PeerId, Topic, TopicKind};
use prost::Message as _;

use crate::commitment::{MembershipProof, ProvenLeaf};
use crate::error::DecodeError;
use crate::model::{
    Limits, NullifierUse, Register, RegisterDelta, RegisterId, StateHash, TimeMap, UpdateHeader,
    decode_bounded as decode, id, optional_id,
};
use crate::proto::v1 as pb;

/// `register/update/{register_id}`: a register's signed updates.
pub const UPDATE_TOPIC: TopicKind = TopicKind::new("register", "update");
/// `register/creation/{domain_id}`: registers created in a domain.
pub const CREATION_TOPIC: TopicKind = TopicKind::new("register", "creation");
/// `register/nullifier/{domain_id}`: nullifier uses in a domain.
pub const NULLIFIER_TOPIC: TopicKind = TopicKind::new("register", "nullifier");
/// `register/commitment/{resource_id}`: commitments to a domain's register set (the
/// resource id is the domain id).
pub const COMMITMENT_TOPIC: TopicKind = TopicKind::new("register", "commitment");
/// `timemap/update/{domain_id}`: time map updates.
pub const TIMEMAP_UPDATE_TOPIC: TopicKind = TopicKind::new("timemap", "update");
/// `timemap/commitment/{commitment_id}`: nodes that hold a time map with this commitment.
pub const TIMEMAP_COMMITMENT_TOPIC: TopicKind = TopicKind::new("timemap", "commitment");
/// `timemap/verification/{domain_id}`: a domain's time map commitments, to be checked.
pub const TIMEMAP_VERIFICATION_TOPIC: TopicKind = TopicKind::new("timemap", "verification");

/// Payload types.
pub const STATE_MESSAGE_TYPE: &str = "causality.regsync.v1.RegisterStateMessage";
/// See [`STATE_MESSAGE_TYPE`].
pub const NULLIFIER_TYPE: &str = "causality.regsync.v1.NullifierUse";
/// See [`STATE_MESSAGE_TYPE`].
pub const COMMITMENT_TYPE: &str = "causality.regsync.v1.Commitment";
/// See [`STATE_MESSAGE_TYPE`].
pub const TIMEMAP_TYPE: &str = "causality.regsync.v1.TimeMapUpdate";

/// Largest request (16 KiB).
pub const MAX_REQUEST_BYTES: usize = 16 << 10;
/// Most headers in one sync response.
pub const MAX_HEADERS: usize = 256;
/// Most symbols asked for at once.
pub const MAX_SYMBOLS: u32 = 4096;
/// Most items resolved at once.
pub const MAX_RESOLVE: usize = 512;
/// Most chunks asked for at once.
pub const MAX_CHUNKS: usize = 16;

/// The topic of a register's updates.
pub fn update_topic(id: &RegisterId) -> Topic {
    Topic::new(UPDATE_TOPIC, id.to_string()).expect("a content id is a valid topic id")
}

/// A domain's topic of `kind` (creation, nullifier, commitment, time map update or
/// verification). Domains are checked at decoding to be valid topic ids.
pub fn domain_topic(kind: TopicKind, domain: &str) -> Option<Topic> {
    Topic::new(kind, domain).ok()
}

/// Whether `domain` is a valid domain id: 1 to 64 printable ASCII characters other than
/// `/` (it names topics).
pub fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 64
        && domain.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// What gossip carries about a register: its signed header, and the delta or (for a
/// creation) the state when small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterStateMessage {
    /// The signed link.
    pub header: UpdateHeader,
    /// The delta, when inline.
    pub delta: Option<RegisterDelta>,
    /// The state, when inline (creations).
    pub full_state: Option<Register>,
}

impl RegisterStateMessage {
    /// The register.
    pub fn register_id(&self) -> RegisterId {
        self.header.register_id
    }

    /// The announced state.
    pub fn state_hash(&self) -> StateHash {
        self.header.state_hash
    }

    /// Its block height.
    pub fn last_updated(&self) -> u64 {
        self.header.last_updated
    }

    /// The proof it carries, for proof-carrying classes.
    pub fn proof(&self) -> Option<ContentId> {
        self.header.proof_id
    }

    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        pb::RegisterStateMessage {
            header: Some(self.header.to_proto()),
            delta: self.delta.as_ref().map(RegisterDelta::to_proto),
            full_state: self.full_state.as_ref().map(Register::to_proto),
        }
        .encode_to_vec()
    }

    /// Decodes and checks one (at most `limit` bytes).
    pub fn decode(bytes: &[u8], limit: usize, limits: &Limits) -> Result<Self, DecodeError> {
        let m: pb::RegisterStateMessage = decode(bytes, "register state message", limit)?;
        Ok(Self {
            header: UpdateHeader::from_proto(m.header.ok_or(DecodeError::Field("header"))?)?,
            delta: m
                .delta
                .map(|d| RegisterDelta::from_proto(d, limits))
                .transpose()?,
            full_state: m
                .full_state
                .map(|s| Register::from_proto(s, limits))
                .transpose()?,
        })
    }
}

/// A node's signed statement of a commitment (a domain's register set, or a time map).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitment {
    /// The domain.
    pub domain: String,
    /// The root (register sets) or the time map's commitment.
    pub root: ContentId,
    /// Registers in the set (or entries of the time map).
    pub count: u64,
    /// For register sets: the root over the accepted nullifier uses, and their number.
    pub nullifiers: Option<(ContentId, u64)>,
    /// Who states it.
    pub signer: PeerId,
    /// ed25519 by `signer`.
    pub signature: [u8; 64],
}

const COMMITMENT_CONTEXT: &[u8] = b"causality/regsync/commitment/v1";

impl Commitment {
    fn to_proto(&self) -> pb::Commitment {
        pb::Commitment {
            domain: self.domain.clone(),
            root: self.root.as_bytes().to_vec(),
            count: self.count,
            signer: self.signer.as_bytes().to_vec(),
            signature: self.signature.to_vec(),
            nullifier_root: self
                .nullifiers
                .map(|(r, _)| r.as_bytes().to_vec())
                .unwrap_or_default(),
            nullifiers: self.nullifiers.map_or(0, |(_, n)| n),
        }
    }

    fn signing_bytes(&self) -> Vec<u8> {
        let mut p = self.to_proto();
        p.signature.clear();
        let mut bytes = COMMITMENT_CONTEXT.to_vec();
        bytes.extend_from_slice(&p.encode_to_vec());
        bytes
    }

    /// A signed commitment.
    pub fn new(
        domain: &str,
        root: ContentId,
        count: u64,
        nullifiers: Option<(ContentId, u64)>,
        key: &causality_net::Keypair,
    ) -> Self {
        let mut c = Self {
            domain: domain.to_owned(),
            root,
            count,
            nullifiers,
            signer: key.peer_id(),
            signature: [0; 64],
        };
        c.signature = key.sign(&c.signing_bytes());
        c
    }

    /// Whether the signer signed it.
    pub fn verify(&self) -> bool {
        self.signer.verify(&self.signing_bytes(), &self.signature)
    }

    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes one.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let c: pb::Commitment = decode(bytes, "commitment", 1024)?;
        if !valid_domain(&c.domain) {
            return Err(DecodeError::Field("domain"));
        }
        Ok(Self {
            domain: c.domain,
            root: id(&c.root, "commitment root")?,
            count: c.count,
            nullifiers: optional_id(&c.nullifier_root, "nullifier root")?
                .map(|r| (r, c.nullifiers)),
            signer: PeerId::from_bytes(&c.signer).map_err(|_| DecodeError::Field("signer"))?,
            signature: c
                .signature
                .try_into()
                .map_err(|_| DecodeError::Field("signature"))?,
        })
    }
}

/// Decodes a nullifier use from gossip.
pub fn decode_nullifier(bytes: &[u8], limits: &Limits) -> Result<NullifierUse, DecodeError> {
    let n: pb::NullifierUse = decode(bytes, "nullifier use", 1024)?;
    let u = NullifierUse::from_proto(n, limits)?;
    if !valid_domain(&u.domain) {
        return Err(DecodeError::Field("domain"));
    }
    Ok(u)
}

/// Encodes a time map update.
pub fn encode_time_map(domain: &str, map: &TimeMap) -> Vec<u8> {
    pb::TimeMapUpdate {
        domain: domain.to_owned(),
        map: Some(map.to_proto()),
    }
    .encode_to_vec()
}

/// Decodes a time map update (at most 64 KiB).
pub fn decode_time_map(bytes: &[u8], limits: &Limits) -> Result<(String, TimeMap), DecodeError> {
    let u: pb::TimeMapUpdate = decode(bytes, "time map update", 64 << 10)?;
    if !valid_domain(&u.domain) {
        return Err(DecodeError::Field("domain"));
    }
    Ok((
        u.domain,
        TimeMap::from_proto(u.map.unwrap_or_default(), limits)?,
    ))
}

/// Which set a reconciliation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKind {
    /// A domain's registers at their head states.
    Registers,
    /// A domain's accepted nullifier uses.
    Nullifiers,
}

/// A request of the regsync protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A register's chain and state.
    Sync {
        /// The register.
        register_id: RegisterId,
        /// The last header of the chain the asker holds.
        known: Option<StateHash>,
        /// The state it holds the body of.
        have: Option<StateHash>,
        /// The state it wants (`None`: the answerer's head).
        want: Option<StateHash>,
    },
    /// Chunks by id.
    Chunks(Vec<ContentId>),
    /// A membership proof against the answerer's commitment.
    Prove {
        /// The domain.
        domain: String,
        /// The register.
        register_id: RegisterId,
    },
    /// Coded symbols of a set.
    Reconcile {
        /// The domain.
        domain: String,
        /// Which set.
        kind: SetKind,
        /// The first symbol's index.
        start: u64,
        /// How many.
        count: u32,
    },
    /// What is behind reconciled items.
    Resolve {
        /// The domain.
        domain: String,
        /// Which set.
        kind: SetKind,
        /// The items.
        items: Vec<crate::riblt::Item>,
    },
}

impl Request {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        use pb::request::Kind;
        let bytes = |h: &Option<ContentId>| h.map(|h| h.as_bytes().to_vec()).unwrap_or_default();
        let kind = match self {
            Self::Sync {
                register_id,
                known,
                have,
                want,
            } => Kind::Sync(pb::SyncRequest {
                register_id: register_id.as_bytes().to_vec(),
                known: bytes(known),
                have: bytes(have),
                want: bytes(want),
            }),
            Self::Chunks(ids) => Kind::Chunks(pb::ChunkRequest {
                ids: ids.iter().map(|i| i.as_bytes().to_vec()).collect(),
            }),
            Self::Prove {
                domain,
                register_id,
            } => Kind::Prove(pb::ProveRequest {
                domain: domain.clone(),
                register_id: register_id.as_bytes().to_vec(),
            }),
            Self::Reconcile {
                domain,
                kind,
                start,
                count,
            } => Kind::Reconcile(pb::ReconcileRequest {
                domain: set_name(domain, *kind),
                start: *start,
                count: *count,
            }),
            Self::Resolve {
                domain,
                kind,
                items,
            } => Kind::Resolve(pb::ResolveRequest {
                domain: set_name(domain, *kind),
                items: items.iter().map(|i| i.to_vec()).collect(),
            }),
        };
        pb::Request { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes and checks a request.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        use pb::request::Kind;
        let r: pb::Request = decode(bytes, "request", MAX_REQUEST_BYTES)?;
        Ok(match r.kind.ok_or(DecodeError::Field("request kind"))? {
            Kind::Sync(s) => Self::Sync {
                register_id: id(&s.register_id, "register id")?,
                known: optional_id(&s.known, "known")?,
                have: optional_id(&s.have, "have")?,
                want: optional_id(&s.want, "want")?,
            },
            Kind::Chunks(c) => {
                if c.ids.len() > MAX_CHUNKS {
                    return Err(DecodeError::TooLarge {
                        what: "chunk ids",
                        size: c.ids.len(),
                        limit: MAX_CHUNKS,
                    });
                }
                Self::Chunks(
                    c.ids
                        .iter()
                        .map(|i| id(i, "chunk id"))
                        .collect::<Result<_, _>>()?,
                )
            }
            Kind::Prove(p) => {
                if !valid_domain(&p.domain) {
                    return Err(DecodeError::Field("domain"));
                }
                Self::Prove {
                    domain: p.domain,
                    register_id: id(&p.register_id, "register id")?,
                }
            }
            Kind::Reconcile(r) => {
                let (domain, kind) = parse_set_name(&r.domain)?;
                if r.count == 0 || r.count > MAX_SYMBOLS {
                    return Err(DecodeError::TooLarge {
                        what: "symbols",
                        size: r.count as usize,
                        limit: MAX_SYMBOLS as usize,
                    });
                }
                Self::Reconcile {
                    domain,
                    kind,
                    start: r.start,
                    count: r.count,
                }
            }
            Kind::Resolve(r) => {
                let (domain, kind) = parse_set_name(&r.domain)?;
                if r.items.len() > MAX_RESOLVE {
                    return Err(DecodeError::TooLarge {
                        what: "items",
                        size: r.items.len(),
                        limit: MAX_RESOLVE,
                    });
                }
                let items = r
                    .items
                    .iter()
                    .map(|i| {
                        i.as_slice()
                            .try_into()
                            .map_err(|_| DecodeError::Field("item"))
                    })
                    .collect::<Result<_, _>>()?;
                Self::Resolve {
                    domain,
                    kind,
                    items,
                }
            }
        })
    }
}

/// The set name on the wire: the domain, prefixed by `!` for nullifiers.
fn set_name(domain: &str, kind: SetKind) -> String {
    match kind {
        SetKind::Registers => domain.to_owned(),
        SetKind::Nullifiers => format!("!{domain}"),
    }
}

fn parse_set_name(name: &str) -> Result<(String, SetKind), DecodeError> {
    let (domain, kind) = match name.strip_prefix('!') {
        Some(d) => (d, SetKind::Nullifiers),
        None => (name, SetKind::Registers),
    };
    if !valid_domain(domain) || domain.starts_with('!') {
        return Err(DecodeError::Field("domain"));
    }
    Ok((domain.to_owned(), kind))
}

/// A response of the regsync protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A chain page, and the deltas or the state.
    Sync {
        /// Headers after `known`, oldest first.
        headers: Vec<UpdateHeader>,
        /// Deltas from `have` to `want`, in order.
        deltas: Vec<RegisterDelta>,
        /// The state `want`.
        full_state: Option<Register>,
        /// More headers follow.
        more: bool,
    },
    /// Chunks, in the order asked (missing ones left out).
    Chunks(Vec<Vec<u8>>),
    /// A membership proof and the commitment it is against.
    Prove {
        /// Registers in the set.
        count: u64,
        /// The root.
        root: ContentId,
        /// The proof.
        proof: MembershipProof,
    },
    /// Coded symbols, packed, and the set's size.
    Reconcile {
        /// Packed [`Symbol`](crate::riblt::Symbol)s.
        symbols: Vec<u8>,
        /// The answerer's set size.
        set_size: u64,
        /// The answerer's commitment root over the set (register sets only; zero otherwise).
        root: ContentId,
    },
    /// Registers (id, state) and nullifier uses behind items.
    Resolve {
        /// Registers with their head states.
        registers: Vec<(RegisterId, StateHash)>,
        /// Nullifier uses.
        nullifiers: Vec<NullifierUse>,
    },
    /// Not served.
    Error(String),
}

fn leaf_to_proto(l: &ProvenLeaf) -> pb::ProvenLeaf {
    pb::ProvenLeaf {
        register_id: l.register_id.as_bytes().to_vec(),
        state_hash: l.state_hash.as_bytes().to_vec(),
        index: l.proof.index,
        path: l.proof.path.iter().map(|h| h.to_vec()).collect(),
    }
}

fn leaf_from_proto(l: pb::ProvenLeaf, size: u64) -> Result<ProvenLeaf, DecodeError> {
    if l.path.len() > 64 {
        return Err(DecodeError::TooLarge {
            what: "Merkle path",
            size: l.path.len(),
            limit: 64,
        });
    }
    Ok(ProvenLeaf {
        register_id: id(&l.register_id, "leaf register")?,
        state_hash: id(&l.state_hash, "leaf state")?,
        proof: causality_hash::merkle::InclusionProof {
            index: l.index,
            size,
            path: l
                .path
                .iter()
                .map(|h| {
                    h.as_slice()
                        .try_into()
                        .map_err(|_| DecodeError::Field("Merkle path"))
                })
                .collect::<Result<_, _>>()?,
        },
    })
}

impl Response {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        use pb::response::Kind;
        let kind = match self {
            Self::Sync {
                headers,
                deltas,
                full_state,
                more,
            } => Kind::Sync(pb::SyncResponse {
                headers: headers.iter().map(UpdateHeader::to_proto).collect(),
                deltas: deltas.iter().map(RegisterDelta::to_proto).collect(),
                full_state: full_state.as_ref().map(Register::to_proto),
                more: *more,
            }),
            Self::Chunks(chunks) => Kind::Chunks(pb::ChunkResponse {
                chunks: chunks.clone(),
            }),
            Self::Prove { count, root, proof } => {
                let (leaf, left, right) = match proof {
                    MembershipProof::Included(l) => (Some(leaf_to_proto(l)), None, None),
                    MembershipProof::Excluded { left, right } => (
                        None,
                        left.as_ref().map(leaf_to_proto),
                        right.as_ref().map(leaf_to_proto),
                    ),
                };
                Kind::Prove(pb::ProveResponse {
                    count: *count,
                    root: root.as_bytes().to_vec(),
                    leaf,
                    left,
                    right,
                })
            }
            Self::Reconcile {
                symbols,
                set_size,
                root,
            } => Kind::Reconcile(pb::ReconcileResponse {
                symbols: symbols.clone(),
                set_size: *set_size,
                root: root.as_bytes().to_vec(),
            }),
            Self::Resolve {
                registers,
                nullifiers,
            } => Kind::Resolve(pb::ResolveResponse {
                leaves: registers
                    .iter()
                    .map(|(r, s)| pb::ProvenLeaf {
                        register_id: r.as_bytes().to_vec(),
                        state_hash: s.as_bytes().to_vec(),
                        index: 0,
                        path: Vec::new(),
                    })
                    .collect(),
                nullifiers: nullifiers.iter().map(NullifierUse::to_proto).collect(),
            }),
            Self::Error(e) => Kind::Error(e.clone()),
        };
        pb::Response { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes and checks a response of at most `limit` bytes.
    pub fn decode(bytes: &[u8], limit: usize, limits: &Limits) -> Result<Self, DecodeError> {
        use pb::response::Kind;
        let r: pb::Response = decode(bytes, "response", limit)?;
        Ok(match r.kind.ok_or(DecodeError::Field("response kind"))? {
            Kind::Sync(s) => {
                if s.headers.len() > MAX_HEADERS {
                    return Err(DecodeError::TooLarge {
                        what: "headers",
                        size: s.headers.len(),
                        limit: MAX_HEADERS,
                    });
                }
                if s.deltas.len() > MAX_HEADERS {
                    return Err(DecodeError::TooLarge {
                        what: "deltas",
                        size: s.deltas.len(),
                        limit: MAX_HEADERS,
                    });
                }
                Self::Sync {
                    headers: s
                        .headers
                        .into_iter()
                        .map(UpdateHeader::from_proto)
                        .collect::<Result<_, _>>()?,
                    deltas: s
                        .deltas
                        .into_iter()
                        .map(|d| RegisterDelta::from_proto(d, limits))
                        .collect::<Result<_, _>>()?,
                    full_state: s
                        .full_state
                        .map(|f| Register::from_proto(f, limits))
                        .transpose()?,
                    more: s.more,
                }
            }
            Kind::Chunks(c) => {
                if c.chunks.len() > MAX_CHUNKS {
                    return Err(DecodeError::TooLarge {
                        what: "chunks",
                        size: c.chunks.len(),
                        limit: MAX_CHUNKS,
                    });
                }
                Self::Chunks(c.chunks)
            }
            Kind::Prove(p) => {
                let proof = match (p.leaf, p.left, p.right) {
                    (Some(l), None, None) => {
                        MembershipProof::Included(leaf_from_proto(l, p.count)?)
                    }
                    (None, left, right) => MembershipProof::Excluded {
                        left: left.map(|l| leaf_from_proto(l, p.count)).transpose()?,
                        right: right.map(|l| leaf_from_proto(l, p.count)).transpose()?,
                    },
                    _ => return Err(DecodeError::Field("membership proof")),
                };
                Self::Prove {
                    count: p.count,
                    root: id(&p.root, "root")?,
                    proof,
                }
            }
            Kind::Reconcile(r) => {
                let symbols = r.symbols;
                if symbols.len() % crate::riblt::SYMBOL_BYTES != 0
                    || symbols.len() > MAX_SYMBOLS as usize * crate::riblt::SYMBOL_BYTES
                {
                    return Err(DecodeError::Field("symbols"));
                }
                Self::Reconcile {
                    symbols,
                    set_size: r.set_size,
                    root: optional_id(&r.root, "root")?.unwrap_or(ContentId::from_bytes([0; 32])),
                }
            }
            Kind::Resolve(r) => {
                if r.leaves.len() > MAX_RESOLVE || r.nullifiers.len() > MAX_RESOLVE {
                    return Err(DecodeError::TooLarge {
                        what: "resolved",
                        size: r.leaves.len().max(r.nullifiers.len()),
                        limit: MAX_RESOLVE,
                    });
                }
                Self::Resolve {
                    registers: r
                        .leaves
                        .iter()
                        .map(|l| Ok((id(&l.register_id, "register")?, id(&l.state_hash, "state")?)))
                        .collect::<Result<_, DecodeError>>()?,
                    nullifiers: r
                        .nullifiers
                        .into_iter()
                        .map(|n| NullifierUse::from_proto(n, limits))
                        .collect::<Result<_, _>>()?,
                }
            }
            Kind::Error(e) => Self::Error(e.chars().take(256).collect()),
        })
    }
}
