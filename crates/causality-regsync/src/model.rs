//! Registers and what changes them: the state, its operations and their rules, the signed
//! header that links one state to the next, nullifier uses and time maps.
//!
//! Everything here is pure: [`apply`] turns a state and a delta into the next state (or a
//! typed reason why not) and never touches storage; what an operation needs of other
//! registers (a split's credit, a merged source) comes through [`Context`].

use std::collections::BTreeMap;

use causality_hash::ContentId;
use causality_net::{Keypair, PeerId};
use prost::Message as _;

use crate::error::{DecodeError, OpError};
use crate::proto::v1 as pb;

/// A register's id: the [`ContentId`] of its [`Genesis`].
pub type RegisterId = ContentId;

/// A register's state hash: the [`ContentId`] of its [`Register`] encoding.
pub type StateHash = ContentId;

/// Size limits on what regsync decodes. One place; every decoder checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded register state (default 1 MiB).
    pub max_state_bytes: usize,
    /// Largest encoded delta (default 256 KiB).
    pub max_delta_bytes: usize,
    /// Most operations in a delta, counting those inside composites (default 256).
    pub max_operations: usize,
    /// Deepest nesting of composites (default 4).
    pub max_depth: usize,
    /// Longest domain, class or token name (default 128 bytes).
    pub max_name_bytes: usize,
    /// Most parts of a split or sources of a merge (default 64).
    pub max_fanout: usize,
    /// Size of the chunks large data is split into (default 64 KiB); data larger than
    /// one chunk is held as [`RegisterContents::Chunked`].
    pub chunk_bytes: usize,
    /// Largest chunked data (default 256 MiB).
    pub max_data_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_state_bytes: 1 << 20,
            max_delta_bytes: 256 << 10,
            max_operations: 256,
            max_depth: 4,
            max_name_bytes: 128,
            max_fanout: 64,
            chunk_bytes: 64 << 10,
            max_data_bytes: 256 << 20,
        }
    }
}

/// Where a register is in its life. Contents change only while [`Active`](Self::Active);
/// [`Consumed`](Self::Consumed) and [`Tombstone`](Self::Tombstone) are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lifecycle {
    /// In use.
    Active,
    /// Temporarily closed to changes by its owner.
    Locked,
    /// Closed to changes, e.g. by a dispute; may be thawed.
    Frozen,
    /// Its balance went into another register (a merge).
    Consumed,
    /// Kept for the record.
    Archived,
    /// Deleted.
    Tombstone,
}

impl Lifecycle {
    /// Whether a register may go from `self` to `to`.
    pub fn may_become(self, to: Self) -> bool {
        use Lifecycle::*;
        matches!(
            (self, to),
            (Active, Locked | Frozen | Consumed | Archived | Tombstone)
                | (Locked, Active | Frozen | Consumed | Tombstone)
                | (Frozen, Active | Archived)
                | (Archived, Tombstone)
        )
    }

    fn to_proto(self) -> pb::Lifecycle {
        match self {
            Self::Active => pb::Lifecycle::Active,
            Self::Locked => pb::Lifecycle::Locked,
            Self::Frozen => pb::Lifecycle::Frozen,
            Self::Consumed => pb::Lifecycle::Consumed,
            Self::Archived => pb::Lifecycle::Archived,
            Self::Tombstone => pb::Lifecycle::Tombstone,
        }
    }

    fn from_proto(value: i32) -> Result<Self, DecodeError> {
        Ok(
            match pb::Lifecycle::try_from(value).map_err(|_| DecodeError::Field("lifecycle"))? {
                pb::Lifecycle::Active => Self::Active,
                pb::Lifecycle::Locked => Self::Locked,
                pb::Lifecycle::Frozen => Self::Frozen,
                pb::Lifecycle::Consumed => Self::Consumed,
                pb::Lifecycle::Archived => Self::Archived,
                pb::Lifecycle::Tombstone => Self::Tombstone,
            },
        )
    }
}

/// What a register holds.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RegisterContents {
    /// Nothing (yet).
    #[default]
    Empty,
    /// An amount of one token; never negative.
    TokenBalance {
        /// The token's name.
        token: String,
        /// How much.
        amount: u64,
    },
    /// A commitment to some state.
    StateCommitment(ContentId),
    /// A commitment to a time map.
    TimeMapCommitment(ContentId),
    /// A resource's nullifier.
    ResourceNullifier([u8; 32]),
    /// A commitment to a resource.
    ResourceCommitment(ContentId),
    /// Opaque bytes.
    Data(Vec<u8>),
    /// Large opaque bytes held as content-addressed chunks, fetched when read (see
    /// [`RegSync::read_data`](crate::RegSync::read_data)). Updates with
    /// [`Data`](Self::Data) larger than [`Limits::chunk_bytes`] are stored this way.
    Chunked {
        /// Total length.
        len: u64,
        /// The chunks' ids, in order.
        chunks: Vec<ContentId>,
    },
}

impl RegisterContents {
    fn to_proto(&self) -> Option<pb::Contents> {
        use pb::contents::Kind;
        let kind = match self {
            Self::Empty => return None,
            Self::TokenBalance { token, amount } => Kind::TokenBalance(pb::TokenBalance {
                token: token.clone(),
                amount: *amount,
            }),
            Self::StateCommitment(id) => Kind::StateCommitment(id.as_bytes().to_vec()),
            Self::TimeMapCommitment(id) => Kind::TimeMapCommitment(id.as_bytes().to_vec()),
            Self::ResourceNullifier(n) => Kind::ResourceNullifier(n.to_vec()),
            Self::ResourceCommitment(id) => Kind::ResourceCommitment(id.as_bytes().to_vec()),
            Self::Data(bytes) => Kind::Data(bytes.clone()),
            Self::Chunked { len, chunks } => Kind::Chunked(pb::ChunkedData {
                len: *len,
                chunks: chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
            }),
        };
        Some(pb::Contents { kind: Some(kind) })
    }

    fn from_proto(contents: Option<pb::Contents>, limits: &Limits) -> Result<Self, DecodeError> {
        use pb::contents::Kind;
        let Some(kind) = contents.and_then(|c| c.kind) else {
            return Ok(Self::Empty);
        };
        Ok(match kind {
            Kind::TokenBalance(b) => {
                name(&b.token, "token", limits)?;
                Self::TokenBalance {
                    token: b.token,
                    amount: b.amount,
                }
            }
            Kind::StateCommitment(b) => Self::StateCommitment(id(&b, "state commitment")?),
            Kind::TimeMapCommitment(b) => Self::TimeMapCommitment(id(&b, "time map commitment")?),
            Kind::ResourceNullifier(b) => Self::ResourceNullifier(
                b.try_into()
                    .map_err(|_| DecodeError::Field("resource nullifier"))?,
            ),
            Kind::ResourceCommitment(b) => Self::ResourceCommitment(id(&b, "resource commitment")?),
            Kind::Data(b) => Self::Data(b),
            Kind::Chunked(c) => {
                if c.len > limits.max_data_bytes {
                    return Err(DecodeError::TooLarge {
                        what: "chunked data",
                        size: usize::try_from(c.len).unwrap_or(usize::MAX),
                        limit: usize::try_from(limits.max_data_bytes).unwrap_or(usize::MAX),
                    });
                }
                let needed = c.len.div_ceil(limits.chunk_bytes as u64);
                if c.chunks.len() as u64 != needed {
                    return Err(DecodeError::Field("chunk count (not the length's)"));
                }
                Self::Chunked {
                    len: c.len,
                    chunks: c
                        .chunks
                        .iter()
                        .map(|b| id(b, "chunk id"))
                        .collect::<Result<_, _>>()?,
                }
            }
        })
    }
}

pub(crate) fn id(bytes: &[u8], what: &'static str) -> Result<ContentId, DecodeError> {
    ContentId::from_slice(bytes).map_err(|_| DecodeError::Field(what))
}

pub(crate) fn optional_id(
    bytes: &[u8],
    what: &'static str,
) -> Result<Option<ContentId>, DecodeError> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        id(bytes, what).map(Some)
    }
}

fn peer(bytes: &[u8], what: &'static str) -> Result<PeerId, DecodeError> {
    PeerId::from_bytes(bytes).map_err(|_| DecodeError::Field(what))
}

fn name(text: &str, what: &'static str, limits: &Limits) -> Result<(), DecodeError> {
    if text.contains('\0') {
        return Err(DecodeError::Field(what));
    }
    if text.len() > limits.max_name_bytes {
        return Err(DecodeError::TooLarge {
            what,
            size: text.len(),
            limit: limits.max_name_bytes,
        });
    }
    Ok(())
}

/// Decodes a protobuf message of at most `limit` bytes.
pub(crate) fn decode_bounded<M: prost::Message + Default>(
    bytes: &[u8],
    what: &'static str,
    limit: usize,
) -> Result<M, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            what,
            size: bytes.len(),
            limit,
        });
    }
    M::decode(bytes).map_err(|e| DecodeError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// What fixes a register's identity; [`Genesis::id`] is the register's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    /// The creator, and first owner.
    pub owner: PeerId,
    /// The domain the register belongs to (its commitments and nullifiers are per domain).
    pub domain: String,
    /// The register's class: which rules apply (see [`ClassRules`](crate::ClassRules)).
    pub class: String,
    /// Makes ids unique among one owner's registers.
    pub nonce: Vec<u8>,
    /// For a register created by a split: the register it was split from.
    pub parent: Option<RegisterId>,
}

impl Genesis {
    /// A genesis with no parent.
    pub fn new(
        owner: PeerId,
        domain: impl Into<String>,
        class: impl Into<String>,
        nonce: &[u8],
    ) -> Self {
        Self {
            owner,
            domain: domain.into(),
            class: class.into(),
            nonce: nonce.to_vec(),
            parent: None,
        }
    }

    fn to_proto(&self) -> pb::Genesis {
        pb::Genesis {
            owner: self.owner.as_bytes().to_vec(),
            domain: self.domain.clone(),
            class: self.class.clone(),
            nonce: self.nonce.clone(),
            parent: self
                .parent
                .map(|p| p.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    fn from_proto(g: pb::Genesis, limits: &Limits) -> Result<Self, DecodeError> {
        if !crate::messages::valid_domain(&g.domain) {
            return Err(DecodeError::Field("domain"));
        }
        name(&g.class, "class", limits)?;
        name_bytes(&g.nonce, "nonce", limits)?;
        Ok(Self {
            owner: peer(&g.owner, "genesis owner")?,
            domain: g.domain,
            class: g.class,
            nonce: g.nonce,
            parent: optional_id(&g.parent, "genesis parent")?,
        })
    }

    /// The register's id: the BLAKE3 of this genesis's encoding.
    pub fn id(&self) -> RegisterId {
        ContentId::of(&self.to_proto().encode_to_vec())
    }
}

fn name_bytes(bytes: &[u8], what: &'static str, limits: &Limits) -> Result<(), DecodeError> {
    if bytes.len() > limits.max_name_bytes {
        return Err(DecodeError::TooLarge {
            what,
            size: bytes.len(),
            limit: limits.max_name_bytes,
        });
    }
    Ok(())
}

/// A register's state. Its [`state_hash`](Self::state_hash) is what updates announce and
/// commitments cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    /// Its id ([`Genesis::id`] of `genesis`).
    pub id: RegisterId,
    /// What fixed the id.
    pub genesis: Genesis,
    /// Who may sign its next update.
    pub owner: PeerId,
    /// What it holds.
    pub contents: RegisterContents,
    /// Where it is in its life.
    pub lifecycle: Lifecycle,
    /// Updates since creation.
    pub epoch: u64,
    /// Block height of the last update.
    pub last_updated: u64,
    /// When consumed: the register that merges its balance.
    pub consumed_into: Option<RegisterId>,
}

impl Register {
    /// The canonical encoding (the prost encoding of the protobuf `Register`).
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    pub(crate) fn to_proto(&self) -> pb::Register {
        pb::Register {
            register_id: self.id.as_bytes().to_vec(),
            genesis: Some(self.genesis.to_proto()),
            owner: self.owner.as_bytes().to_vec(),
            contents: self.contents.to_proto(),
            lifecycle: self.lifecycle.to_proto() as i32,
            epoch: self.epoch,
            last_updated: self.last_updated,
            consumed_into: self
                .consumed_into
                .map(|i| i.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// Decodes and checks a register: sizes, field forms, and that its id is its genesis's.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let r: pb::Register = decode_bounded(bytes, "register", limits.max_state_bytes)?;
        Self::from_proto(r, limits)
    }

    pub(crate) fn from_proto(r: pb::Register, limits: &Limits) -> Result<Self, DecodeError> {
        let genesis = Genesis::from_proto(
            r.genesis.ok_or(DecodeError::Field("register genesis"))?,
            limits,
        )?;
        let register = Self {
            id: id(&r.register_id, "register id")?,
            owner: peer(&r.owner, "register owner")?,
            contents: RegisterContents::from_proto(r.contents, limits)?,
            lifecycle: Lifecycle::from_proto(r.lifecycle)?,
            epoch: r.epoch,
            last_updated: r.last_updated,
            consumed_into: optional_id(&r.consumed_into, "consumed into")?,
            genesis,
        };
        if register.genesis.id() != register.id {
            return Err(DecodeError::Field("register id (not its genesis's)"));
        }
        Ok(register)
    }

    /// The state a creation makes (to compute its hash before creating it).
    pub fn created(genesis: Genesis, contents: RegisterContents, last_updated: u64) -> Self {
        Self {
            id: genesis.id(),
            owner: genesis.owner,
            genesis,
            contents,
            lifecycle: Lifecycle::Active,
            epoch: 0,
            last_updated,
            consumed_into: None,
        }
    }

    /// The state hash: BLAKE3 of [`encode`](Self::encode).
    pub fn state_hash(&self) -> StateHash {
        ContentId::of(&self.encode())
    }

    /// The domain.
    pub fn domain(&self) -> &str {
        &self.genesis.domain
    }

    /// The class.
    pub fn class(&self) -> &str {
        &self.genesis.class
    }
}

/// One change to a register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Brings a register into being (the only operation of its first delta).
    Create {
        /// Its identity.
        genesis: Genesis,
        /// What it starts with.
        contents: RegisterContents,
    },
    /// Replaces the contents (a token balance keeps its token).
    Update(RegisterContents),
    /// Makes it a tombstone.
    Delete,
    /// Hands it to a new owner.
    TransferOwnership(PeerId),
    /// Adds the balances of consumed registers (each consumed into this one).
    Merge(Vec<RegisterId>),
    /// Moves amounts into new registers, each created with this one as parent.
    Split(Vec<(RegisterId, u64)>),
    /// Several operations, applied in order, all or none.
    Composite(Vec<Operation>),
    /// Changes the lifecycle; `into` names the merging register when consuming.
    SetLifecycle {
        /// The new lifecycle.
        lifecycle: Lifecycle,
        /// For [`Lifecycle::Consumed`]: which register takes the balance.
        into: Option<RegisterId>,
    },
}

impl Operation {
    fn to_proto(&self) -> pb::Operation {
        use pb::operation::Kind;
        let kind = match self {
            Self::Create { genesis, contents } => Kind::Create(pb::Create {
                genesis: Some(genesis.to_proto()),
                contents: contents.to_proto(),
            }),
            Self::Update(contents) => Kind::Update(pb::Update {
                contents: contents.to_proto(),
            }),
            Self::Delete => Kind::Delete(pb::Delete {}),
            Self::TransferOwnership(owner) => Kind::Transfer(pb::TransferOwnership {
                new_owner: owner.as_bytes().to_vec(),
            }),
            Self::Merge(sources) => Kind::Merge(pb::Merge {
                sources: sources.iter().map(|s| s.as_bytes().to_vec()).collect(),
            }),
            Self::Split(parts) => Kind::Split(pb::Split {
                parts: parts
                    .iter()
                    .map(|(id, amount)| pb::SplitPart {
                        register_id: id.as_bytes().to_vec(),
                        amount: *amount,
                    })
                    .collect(),
            }),
            Self::Composite(ops) => Kind::Composite(pb::Composite {
                operations: ops.iter().map(Self::to_proto).collect(),
            }),
            Self::SetLifecycle { lifecycle, into } => Kind::SetLifecycle(pb::SetLifecycle {
                lifecycle: lifecycle.to_proto() as i32,
                into: into.map(|i| i.as_bytes().to_vec()).unwrap_or_default(),
            }),
        };
        pb::Operation { kind: Some(kind) }
    }

    fn from_proto(
        op: pb::Operation,
        limits: &Limits,
        depth: usize,
        count: &mut usize,
    ) -> Result<Self, DecodeError> {
        use pb::operation::Kind;
        *count += 1;
        if *count > limits.max_operations {
            return Err(DecodeError::TooLarge {
                what: "operations",
                size: *count,
                limit: limits.max_operations,
            });
        }
        let fanout = |n: usize| {
            if n > limits.max_fanout {
                Err(DecodeError::TooLarge {
                    what: "merge or split fan-out",
                    size: n,
                    limit: limits.max_fanout,
                })
            } else {
                Ok(())
            }
        };
        Ok(match op.kind.ok_or(DecodeError::Field("operation"))? {
            Kind::Create(c) => Self::Create {
                genesis: Genesis::from_proto(
                    c.genesis.ok_or(DecodeError::Field("create genesis"))?,
                    limits,
                )?,
                contents: RegisterContents::from_proto(c.contents, limits)?,
            },
            Kind::Update(u) => Self::Update(RegisterContents::from_proto(u.contents, limits)?),
            Kind::Delete(_) => Self::Delete,
            Kind::Transfer(t) => Self::TransferOwnership(peer(&t.new_owner, "new owner")?),
            Kind::Merge(m) => {
                fanout(m.sources.len())?;
                Self::Merge(
                    m.sources
                        .iter()
                        .map(|s| id(s, "merge source"))
                        .collect::<Result<_, _>>()?,
                )
            }
            Kind::Split(s) => {
                fanout(s.parts.len())?;
                Self::Split(
                    s.parts
                        .iter()
                        .map(|p| Ok((id(&p.register_id, "split part")?, p.amount)))
                        .collect::<Result<_, DecodeError>>()?,
                )
            }
            Kind::Composite(c) => {
                if depth >= limits.max_depth {
                    return Err(DecodeError::TooLarge {
                        what: "composite nesting",
                        size: depth + 1,
                        limit: limits.max_depth,
                    });
                }
                Self::Composite(
                    c.operations
                        .into_iter()
                        .map(|o| Self::from_proto(o, limits, depth + 1, count))
                        .collect::<Result<_, _>>()?,
                )
            }
            Kind::SetLifecycle(s) => Self::SetLifecycle {
                lifecycle: Lifecycle::from_proto(s.lifecycle)?,
                into: optional_id(&s.into, "consumed into")?,
            },
        })
    }
}

/// The operations that turn one state into the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterDelta {
    /// Applied in order, all or none.
    pub operations: Vec<Operation>,
    /// The state they apply to (`None` for a creation).
    pub previous_state_hash: Option<StateHash>,
}

impl RegisterDelta {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    pub(crate) fn to_proto(&self) -> pb::RegisterDelta {
        pb::RegisterDelta {
            operations: self.operations.iter().map(Operation::to_proto).collect(),
            previous_state_hash: self
                .previous_state_hash
                .map(|h| h.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// Decodes and checks a delta against `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let d: pb::RegisterDelta = decode_bounded(bytes, "delta", limits.max_delta_bytes)?;
        Self::from_proto(d, limits)
    }

    pub(crate) fn from_proto(d: pb::RegisterDelta, limits: &Limits) -> Result<Self, DecodeError> {
        let mut count = 0;
        Ok(Self {
            operations: d
                .operations
                .into_iter()
                .map(|o| Operation::from_proto(o, limits, 0, &mut count))
                .collect::<Result<_, _>>()?,
            previous_state_hash: optional_id(&d.previous_state_hash, "previous state hash")?,
        })
    }

    /// The delta's id: BLAKE3 of its encoding.
    pub fn id(&self) -> ContentId {
        ContentId::of(&self.encode())
    }
}

/// What applying an operation needs to know of other registers.
pub trait Context {
    /// The current state of another register, if known here.
    fn register(&self, id: &RegisterId) -> Option<Register>;
    /// The amount (and token) a split credited to `child`, not yet used by its creation.
    fn split_credit(&self, child: &RegisterId) -> Option<(String, u64)>;
    /// Whether `source` was already merged into some register.
    fn merged(&self, source: &RegisterId) -> bool;
}

/// What an applied delta does beyond the register's new state; stored atomically with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Credits for registers to be created by a split: child, token, amount.
    pub credits: Vec<(RegisterId, String, u64)>,
    /// The credit the creation used up.
    pub used_credit: Option<RegisterId>,
    /// Sources whose balances were merged.
    pub merged: Vec<RegisterId>,
}

/// The block height and epoch a delta is applied at (from its signed header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    /// The new epoch: the previous one plus one, 0 at creation.
    pub epoch: u64,
    /// The block height; not below the previous state's.
    pub last_updated: u64,
}

/// Applies `delta` to `previous` (`None` for a creation) and returns the next state and
/// its side effects, or why the delta is not valid. Checks: the chain link, the lifecycle
/// transitions, token balances (never negative, one token), split and merge conservation.
/// Ownership of the signature is the header's business ([`UpdateHeader::verify`]).
pub fn apply(
    previous: Option<&Register>,
    delta: &RegisterDelta,
    at: At,
    context: &dyn Context,
) -> Result<(Register, Effects), OpError> {
    let mut effects = Effects::default();
    let Some(previous) = previous else {
        if delta.previous_state_hash.is_some() {
            return Err(OpError::UnknownPrevious);
        }
        let [Operation::Create { genesis, contents }] = delta.operations.as_slice() else {
            return Err(OpError::NotACreation);
        };
        if at.epoch != 0 {
            return Err(OpError::Epoch {
                expected: 0,
                got: at.epoch,
            });
        }
        if let Some(parent) = genesis.parent {
            let child = genesis.id();
            let Some((token, amount)) = context.split_credit(&child) else {
                return Err(OpError::MissingDependency(parent));
            };
            match contents {
                RegisterContents::TokenBalance {
                    token: t,
                    amount: a,
                } if *t == token && *a == amount => {}
                _ => {
                    return Err(OpError::Conservation(
                        "a split child must hold exactly its credit",
                    ));
                }
            }
            effects.used_credit = Some(child);
        }
        let register = Register {
            id: genesis.id(),
            genesis: genesis.clone(),
            owner: genesis.owner,
            contents: contents.clone(),
            lifecycle: Lifecycle::Active,
            epoch: 0,
            last_updated: at.last_updated,
            consumed_into: None,
        };
        return Ok((register, effects));
    };
    if delta.previous_state_hash != Some(previous.state_hash()) {
        return Err(OpError::WrongPrevious);
    }
    if at.epoch != previous.epoch + 1 {
        return Err(OpError::Epoch {
            expected: previous.epoch + 1,
            got: at.epoch,
        });
    }
    if at.last_updated < previous.last_updated {
        return Err(OpError::HeightWentBack {
            previous: previous.last_updated,
            got: at.last_updated,
        });
    }
    if delta.operations.is_empty() {
        return Err(OpError::Empty);
    }
    let mut next = previous.clone();
    for op in &delta.operations {
        apply_one(&mut next, op, context, &mut effects)?;
    }
    next.epoch = at.epoch;
    next.last_updated = at.last_updated;
    Ok((next, effects))
}

fn active(r: &Register) -> Result<(), OpError> {
    if r.lifecycle == Lifecycle::Active {
        Ok(())
    } else {
        Err(OpError::NotActive(r.lifecycle))
    }
}

fn balance(r: &mut Register) -> Result<(&str, &mut u64), OpError> {
    match &mut r.contents {
        RegisterContents::TokenBalance { token, amount } => Ok((token.as_str(), amount)),
        _ => Err(OpError::NotABalance),
    }
}

fn apply_one(
    r: &mut Register,
    op: &Operation,
    context: &dyn Context,
    effects: &mut Effects,
) -> Result<(), OpError> {
    match op {
        Operation::Create { .. } => return Err(OpError::AlreadyExists),
        Operation::Update(contents) => {
            active(r)?;
            if let (
                RegisterContents::TokenBalance { token: old, .. },
                RegisterContents::TokenBalance { token: new, .. },
            ) = (&r.contents, contents)
                && old != new
            {
                return Err(OpError::Conservation(
                    "an update may not change a balance's token",
                ));
            }
            r.contents = contents.clone();
        }
        Operation::Delete => {
            if !r.lifecycle.may_become(Lifecycle::Tombstone) {
                return Err(OpError::Transition {
                    from: r.lifecycle,
                    to: Lifecycle::Tombstone,
                });
            }
            r.lifecycle = Lifecycle::Tombstone;
        }
        Operation::TransferOwnership(owner) => {
            active(r)?;
            r.owner = *owner;
        }
        Operation::SetLifecycle { lifecycle, into } => {
            if !r.lifecycle.may_become(*lifecycle) {
                return Err(OpError::Transition {
                    from: r.lifecycle,
                    to: *lifecycle,
                });
            }
            match (lifecycle, into) {
                (Lifecycle::Consumed, Some(into)) if *into != r.id => {
                    balance(r)?;
                }
                (Lifecycle::Consumed, _) => {
                    return Err(OpError::Conservation(
                        "consuming names the register merging it",
                    ));
                }
                (_, Some(_)) => return Err(OpError::Conservation("only consuming names a target")),
                _ => {}
            }
            r.lifecycle = *lifecycle;
            r.consumed_into = *into;
        }
        Operation::Split(parts) => {
            active(r)?;
            let id = r.id;
            let (token, amount) = balance(r)?;
            let token = token.to_owned();
            let mut total: u64 = 0;
            for (child, part) in parts {
                if *part == 0 {
                    return Err(OpError::Conservation("a split part must be positive"));
                }
                total = total
                    .checked_add(*part)
                    .ok_or(OpError::Conservation("split parts overflow"))?;
                if effects.credits.iter().any(|(c, ..)| c == child) || *child == id {
                    return Err(OpError::Conservation("a split names each child once"));
                }
                effects.credits.push((*child, token.clone(), *part));
            }
            *amount = amount.checked_sub(total).ok_or(OpError::Insufficient {
                balance: *amount,
                needed: total,
            })?;
        }
        Operation::Merge(sources) => {
            active(r)?;
            let id = r.id;
            let (token, amount) = balance(r)?;
            let token = token.to_owned();
            let mut add: u64 = 0;
            for source in sources {
                if context.merged(source) || effects.merged.contains(source) {
                    return Err(OpError::Conservation("a source is merged once"));
                }
                let s = context
                    .register(source)
                    .ok_or(OpError::MissingDependency(*source))?;
                match (&s.lifecycle, &s.contents) {
                    (
                        Lifecycle::Consumed,
                        RegisterContents::TokenBalance {
                            token: t,
                            amount: a,
                        },
                    ) if *t == token => {
                        add = add
                            .checked_add(*a)
                            .ok_or(OpError::Conservation("merged balance overflows"))?;
                    }
                    _ => {
                        return Err(OpError::Conservation(
                            "a source must be a consumed balance of the same token",
                        ));
                    }
                }
                if !consumed_into(&s, &id) {
                    return Err(OpError::Conservation(
                        "a source must be consumed into this register",
                    ));
                }
                effects.merged.push(*source);
            }
            *amount = amount
                .checked_add(add)
                .ok_or(OpError::Conservation("merged balance overflows"))?;
        }
        Operation::Composite(ops) => {
            for op in ops {
                apply_one(r, op, context, effects)?;
            }
        }
    }
    Ok(())
}

fn consumed_into(source: &Register, into: &RegisterId) -> bool {
    source.lifecycle == Lifecycle::Consumed && source.consumed_into == Some(*into)
}

/// A signed link of a register's chain: which state follows which, signed by the owner of
/// the previous state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateHeader {
    /// The register.
    pub register_id: RegisterId,
    /// The new state's epoch.
    pub epoch: u64,
    /// The state it follows (`None` for a creation).
    pub previous_state_hash: Option<StateHash>,
    /// The new state.
    pub state_hash: StateHash,
    /// The id of the delta that produced it.
    pub delta_id: ContentId,
    /// The new state's owner.
    pub owner: PeerId,
    /// The new state's block height.
    pub last_updated: u64,
    /// For proof-carrying classes: the proof that the update is valid.
    pub proof_id: Option<ContentId>,
    /// The fencing token the write carries, if any.
    pub fence: Option<Fence>,
    /// ed25519 by the previous state's owner (the creator for a creation).
    pub signature: [u8; 64],
}

/// A fencing token on a register write: per register and `key` (e.g. an execution node),
/// a write with a lower `token` than one already accepted is refused, so a writer whose
/// lease was taken over cannot overwrite its successor's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    /// What the token fences (e.g. the id of an execution node).
    pub key: ContentId,
    /// The token (monotonic per key).
    pub token: u64,
}

const UPDATE_CONTEXT: &[u8] = b"causality/regsync/update/v1";
const NULLIFIER_CONTEXT: &[u8] = b"causality/regsync/nullifier/v1";

impl UpdateHeader {
    pub(crate) fn to_proto(&self) -> pb::UpdateHeader {
        pb::UpdateHeader {
            register_id: self.register_id.as_bytes().to_vec(),
            epoch: self.epoch,
            previous_state_hash: self
                .previous_state_hash
                .map(|h| h.as_bytes().to_vec())
                .unwrap_or_default(),
            state_hash: self.state_hash.as_bytes().to_vec(),
            delta_id: self.delta_id.as_bytes().to_vec(),
            owner: self.owner.as_bytes().to_vec(),
            last_updated: self.last_updated,
            proof_id: self
                .proof_id
                .map(|p| p.as_bytes().to_vec())
                .unwrap_or_default(),
            signature: self.signature.to_vec(),
            fence_key: self
                .fence
                .map(|f| f.key.as_bytes().to_vec())
                .unwrap_or_default(),
            fence_token: self.fence.map_or(0, |f| f.token),
        }
    }

    pub(crate) fn from_proto(h: pb::UpdateHeader) -> Result<Self, DecodeError> {
        Ok(Self {
            register_id: id(&h.register_id, "header register id")?,
            epoch: h.epoch,
            previous_state_hash: optional_id(&h.previous_state_hash, "header previous hash")?,
            state_hash: id(&h.state_hash, "header state hash")?,
            delta_id: id(&h.delta_id, "header delta id")?,
            owner: peer(&h.owner, "header owner")?,
            last_updated: h.last_updated,
            proof_id: optional_id(&h.proof_id, "header proof id")?,
            fence: optional_id(&h.fence_key, "fence key")?.map(|key| Fence {
                key,
                token: h.fence_token,
            }),
            signature: h
                .signature
                .try_into()
                .map_err(|_| DecodeError::Field("header signature"))?,
        })
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes a header (at most 1 KiB).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_proto(decode_bounded(bytes, "header", 1024)?)
    }

    /// The update's id: BLAKE3 of the signed encoding.
    pub fn id(&self) -> ContentId {
        ContentId::of(&self.encode())
    }

    fn signing_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.to_proto();
        unsigned.signature.clear();
        let mut bytes = UPDATE_CONTEXT.to_vec();
        bytes.extend_from_slice(&unsigned.encode_to_vec());
        bytes
    }

    /// Signs with `key` (which must be the previous state's owner for others to accept).
    pub fn sign(mut self, key: &Keypair) -> Self {
        self.signature = key.sign(&self.signing_bytes());
        self
    }

    /// Whether `signer` signed this header.
    pub fn verify(&self, signer: &PeerId) -> bool {
        signer.verify(&self.signing_bytes(), &self.signature)
    }
}

/// A nullifier used once in a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NullifierUse {
    /// The domain.
    pub domain: String,
    /// The nullifier.
    pub nullifier: [u8; 32],
    /// The register it spends.
    pub register_id: RegisterId,
    /// Who spends it (the register's owner).
    pub spender: PeerId,
    /// ed25519 by `spender`.
    pub signature: [u8; 64],
}

impl NullifierUse {
    /// A signed use of `nullifier` for `register_id`.
    pub fn new(
        domain: impl Into<String>,
        nullifier: [u8; 32],
        register_id: RegisterId,
        key: &Keypair,
    ) -> Self {
        let mut this = Self {
            domain: domain.into(),
            nullifier,
            register_id,
            spender: key.peer_id(),
            signature: [0; 64],
        };
        this.signature = key.sign(&this.signing_bytes());
        this
    }

    pub(crate) fn to_proto(&self) -> pb::NullifierUse {
        pb::NullifierUse {
            domain: self.domain.clone(),
            nullifier: self.nullifier.to_vec(),
            register_id: self.register_id.as_bytes().to_vec(),
            spender: self.spender.as_bytes().to_vec(),
            signature: self.signature.to_vec(),
        }
    }

    pub(crate) fn from_proto(n: pb::NullifierUse, limits: &Limits) -> Result<Self, DecodeError> {
        name(&n.domain, "domain", limits)?;
        Ok(Self {
            domain: n.domain,
            nullifier: n
                .nullifier
                .try_into()
                .map_err(|_| DecodeError::Field("nullifier"))?,
            register_id: id(&n.register_id, "nullifier register")?,
            spender: peer(&n.spender, "spender")?,
            signature: n
                .signature
                .try_into()
                .map_err(|_| DecodeError::Field("nullifier signature"))?,
        })
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// The use's id: BLAKE3 of the signed encoding.
    pub fn id(&self) -> ContentId {
        ContentId::of(&self.encode())
    }

    fn signing_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.to_proto();
        unsigned.signature.clear();
        let mut bytes = NULLIFIER_CONTEXT.to_vec();
        bytes.extend_from_slice(&unsigned.encode_to_vec());
        bytes
    }

    /// Whether the spender signed it.
    pub fn verify(&self) -> bool {
        self.spender.verify(&self.signing_bytes(), &self.signature)
    }
}

/// Per-domain block heights with Lamport times, merged entry by entry by maximum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeMap {
    /// Domain → (height, Lamport time).
    pub entries: BTreeMap<String, (u64, u64)>,
}

impl TimeMap {
    /// Merges `other` in: each entry becomes the maximum of both. Returns whether
    /// anything changed. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &TimeMap) -> bool {
        let mut changed = false;
        for (domain, &(height, lamport)) in &other.entries {
            let entry = self.entries.entry(domain.clone()).or_insert((0, 0));
            let merged = (entry.0.max(height), entry.1.max(lamport));
            if merged != *entry {
                *entry = merged;
                changed = true;
            }
        }
        changed
    }

    pub(crate) fn to_proto(&self) -> pb::TimeMap {
        pb::TimeMap {
            entries: self
                .entries
                .iter()
                .map(|(d, &(height, lamport))| (d.clone(), pb::TimeEntry { height, lamport }))
                .collect(),
        }
    }

    pub(crate) fn from_proto(m: pb::TimeMap, limits: &Limits) -> Result<Self, DecodeError> {
        let mut entries = BTreeMap::new();
        for (domain, e) in m.entries {
            name(&domain, "time map domain", limits)?;
            entries.insert(domain, (e.height, e.lamport));
        }
        Ok(Self { entries })
    }

    /// The commitment: BLAKE3 of the canonical encoding (entries sorted by domain).
    pub fn commitment(&self) -> ContentId {
        ContentId::of(&self.to_proto().encode_to_vec())
    }
}
