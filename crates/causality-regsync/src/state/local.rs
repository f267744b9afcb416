//! Updates made here: checked, chunked, signed, stored and announced.

use super::*;

impl State {
    pub(super) fn create(
        &mut self,
        genesis: Genesis,
        contents: RegisterContents,
        height: u64,
        proof_id: Option<ContentId>,
        call: Option<CallId>,
    ) -> Result<Option<StateHash>, SyncError> {
        if genesis.owner != self.local {
            return Err(UpdateError::Unauthorized.into());
        }
        if !messages::valid_domain(&genesis.domain) {
            return Err(UpdateError::Decode(DecodeError::Field("domain")).into());
        }
        let contents = self.chunk_contents(contents, true)?;
        let delta = RegisterDelta {
            operations: vec![Operation::Create { genesis, contents }],
            previous_state_hash: None,
        };
        self.local_update(None, delta, height, proof_id, None, call)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn update(
        &mut self,
        id: RegisterId,
        operations: Vec<Operation>,
        height: u64,
        proof_id: Option<ContentId>,
        fence: Option<Fence>,
        call: Option<CallId>,
    ) -> Result<Option<StateHash>, SyncError> {
        let head = self
            .store
            .head(&id)
            .map_err(store_err)?
            .ok_or(SyncError::NotFound(id))?;
        let previous = self
            .store
            .state(&head.state_hash)
            .map_err(store_err)?
            .ok_or(SyncError::NotFound(id))?;
        if previous.owner != self.local {
            return Err(UpdateError::Unauthorized.into());
        }
        let operations = self.chunk_operations(operations, true)?;
        let delta = RegisterDelta {
            operations,
            previous_state_hash: Some(head.state_hash),
        };
        self.local_update(Some(previous), delta, height, proof_id, fence, call)
    }

    pub(super) fn local_update(
        &mut self,
        previous: Option<Register>,
        delta: RegisterDelta,
        height: u64,
        proof_id: Option<ContentId>,
        fence: Option<Fence>,
        call: Option<CallId>,
    ) -> Result<Option<StateHash>, SyncError> {
        // What we would refuse from a peer we refuse here: the delta must survive its own
        // decoding (sizes, names) and apply.
        let encoded = delta.encode();
        RegisterDelta::decode(&encoded, &self.config.limits).map_err(UpdateError::from)?;
        let epoch = previous.as_ref().map_or(0, |p| p.epoch + 1);
        let at = At {
            epoch,
            last_updated: height,
        };
        let (next, effects) = apply(
            previous.as_ref(),
            &delta,
            at,
            &StoreContext(self.store.as_ref()),
        )
        .map_err(UpdateError::from)?;
        if next.encode().len() > self.config.limits.max_state_bytes {
            return Err(UpdateError::Decode(DecodeError::TooLarge {
                what: "register",
                size: next.encode().len(),
                limit: self.config.limits.max_state_bytes,
            })
            .into());
        }
        let rules = self.class(next.class());
        if rules.proof_key.is_some() && proof_id.is_none() {
            return Err(UpdateError::MissingProof(next.class().to_owned()).into());
        }
        let header = UpdateHeader {
            register_id: next.id,
            epoch,
            previous_state_hash: delta.previous_state_hash,
            state_hash: next.state_hash(),
            delta_id: delta.id(),
            owner: next.owner,
            last_updated: height,
            proof_id,
            fence,
            signature: [0; 64],
        }
        .sign(&self.key);
        if let Some(e) = self.stale_fence(&header) {
            return Err(e.into());
        }
        if let (Some(key), Some(proof_id)) = (rules.proof_key, proof_id) {
            // Our own proof is checked like anyone's before the update applies.
            self.event(Event::ProofNeeded {
                proof_id,
                key,
                binding: binding(&next.id, &header.state_hash),
                peer: self.local,
            });
            let domain = next.domain().to_owned();
            self.parked.insert(
                proof_id,
                Parked {
                    commit: Commit::default(),
                    header,
                    domain,
                    via: Via::Local,
                    peer: self.local,
                    message: None,
                    waiters: Vec::new(),
                    local: Some(Box::new(LocalUpdate {
                        call,
                        delta,
                        state: next,
                        effects,
                    })),
                },
            );
            return Ok(None);
        }
        self.commit_local(header, delta, next, effects).map(Some)
    }

    pub(super) fn commit_local(
        &mut self,
        header: UpdateHeader,
        delta: RegisterDelta,
        next: Register,
        effects: Effects,
    ) -> Result<StateHash, SyncError> {
        let hash = header.state_hash;
        let commit = self.commit_for(&header, Some(delta.clone()), &next, effects);
        self.store.commit(commit).map_err(store_err)?;
        self.stats.local_updates += 1;
        self.subscribe_register(next.id);
        self.event(Event::Applied {
            register_id: next.id,
            state_hash: hash,
            epoch: header.epoch,
            via: Via::Local,
        });
        self.announce_header(&header, Some(&delta), Some(&next));
        self.release_buffered(next.id);
        Ok(hash)
    }

    /// Why a write's fencing token is refused: lower than one accepted for its key.
    pub(super) fn stale_fence(&self, header: &UpdateHeader) -> Option<UpdateError> {
        let fence = header.fence?;
        let seen = self.store.fence(&header.register_id, &fence.key).ok()??;
        (fence.token < seen).then_some(UpdateError::StaleFence {
            seen,
            got: fence.token,
        })
    }

    /// Replaces data larger than a chunk by its chunks' ids, keeping the chunks when
    /// `keep`.
    pub(super) fn chunk_operations(
        &mut self,
        ops: Vec<Operation>,
        keep: bool,
    ) -> Result<Vec<Operation>, SyncError> {
        ops.into_iter()
            .map(|op| self.chunk_operation(op, keep))
            .collect()
    }

    pub(super) fn chunk_operation(
        &mut self,
        op: Operation,
        keep: bool,
    ) -> Result<Operation, SyncError> {
        Ok(match op {
            Operation::Create { genesis, contents } => Operation::Create {
                genesis,
                contents: self.chunk_contents(contents, keep)?,
            },
            Operation::Update(contents) => Operation::Update(self.chunk_contents(contents, keep)?),
            Operation::Composite(ops) => Operation::Composite(self.chunk_operations(ops, keep)?),
            other => other,
        })
    }

    pub(super) fn chunk_contents(
        &mut self,
        contents: RegisterContents,
        keep: bool,
    ) -> Result<RegisterContents, SyncError> {
        let size = self.config.limits.chunk_bytes;
        match contents {
            RegisterContents::Data(bytes) if bytes.len() > size => {
                if bytes.len() as u64 > self.config.limits.max_data_bytes {
                    return Err(UpdateError::Decode(DecodeError::TooLarge {
                        what: "data",
                        size: bytes.len(),
                        limit: usize::try_from(self.config.limits.max_data_bytes)
                            .unwrap_or(usize::MAX),
                    })
                    .into());
                }
                let mut chunks = Vec::with_capacity(bytes.len().div_ceil(size));
                for chunk in bytes.chunks(size) {
                    chunks.push(if keep {
                        self.store.put_chunk(chunk).map_err(store_err)?
                    } else {
                        ContentId::of(chunk)
                    });
                }
                Ok(RegisterContents::Chunked {
                    len: bytes.len() as u64,
                    chunks,
                })
            }
            other => Ok(other),
        }
    }

    /// The state hash an update of a register here would produce (to make its proof).
    pub(super) fn preview(
        &mut self,
        id: RegisterId,
        operations: Vec<Operation>,
        height: u64,
    ) -> Result<StateHash, SyncError> {
        let previous = self.register(&id).ok_or(SyncError::NotFound(id))?;
        let operations = self.chunk_operations(operations, false)?;
        let delta = RegisterDelta {
            operations,
            previous_state_hash: Some(previous.state_hash()),
        };
        let at = At {
            epoch: previous.epoch + 1,
            last_updated: height,
        };
        let (next, _) = apply(
            Some(&previous),
            &delta,
            at,
            &StoreContext(self.store.as_ref()),
        )
        .map_err(UpdateError::from)?;
        Ok(next.state_hash())
    }

    pub(super) fn commit_for(
        &self,
        header: &UpdateHeader,
        delta: Option<RegisterDelta>,
        state: &Register,
        effects: Effects,
    ) -> Commit {
        Commit {
            headers: vec![header.clone()],
            deltas: delta.map(|d| (header.state_hash, d)).into_iter().collect(),
            states: vec![state.clone()],
            heads: vec![(
                state.id,
                Head {
                    state_hash: header.state_hash,
                    epoch: header.epoch,
                },
                state.domain().to_owned(),
            )],
            credits: effects.credits,
            used_credits: effects.used_credit.into_iter().collect(),
            merged: effects.merged,
            forks: Vec::new(),
            fences: header
                .fence
                .map(|f| (state.id, f.key, f.token))
                .into_iter()
                .collect(),
        }
    }

    pub(super) fn announce_header(
        &mut self,
        header: &UpdateHeader,
        delta: Option<&RegisterDelta>,
        state: Option<&Register>,
    ) {
        let creation = header.previous_state_hash.is_none();
        let delta = delta.filter(|d| !creation && d.encode().len() <= self.config.inline_max_bytes);
        let state = state.filter(|s| creation && s.encode().len() <= self.config.inline_max_bytes);
        let message = RegisterStateMessage {
            header: header.clone(),
            delta: delta.cloned(),
            full_state: state.cloned(),
        };
        let payload = message.encode();
        if creation
            && let Some(s) = state
            && let Some(topic) = domain_topic(CREATION_TOPIC, s.domain())
        {
            self.publish(topic, messages::STATE_MESSAGE_TYPE, payload.clone());
        }
        self.publish(
            update_topic(&header.register_id),
            messages::STATE_MESSAGE_TYPE,
            payload,
        );
    }

    pub(super) fn announce(&mut self, id: RegisterId, hash: StateHash) -> Result<(), SyncError> {
        let header = self
            .store
            .header(&hash)
            .map_err(store_err)?
            .ok_or(SyncError::NotFound(id))?;
        if header.register_id != id {
            return Err(SyncError::NotFound(id));
        }
        let delta = self.store.delta(&hash).map_err(store_err)?;
        let state = self.store.state(&hash).map_err(store_err)?;
        self.announce_header(&header, delta.as_ref(), state.as_ref());
        Ok(())
    }
}
