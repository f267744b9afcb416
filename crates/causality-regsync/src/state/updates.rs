//! Updates from peers: verdicts, checks, the proof gate, the fork rule, buffering.

use super::*;

impl State {
    pub(super) fn max_message_bytes(&self) -> usize {
        2 * self.config.inline_max_bytes + 2048
    }

    pub(super) fn on_state_message(&mut self, message: Message) {
        let parsed = RegisterStateMessage::decode(
            &message.payload,
            self.max_message_bytes(),
            &self.config.limits,
        );
        let m = match parsed {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(target: "causality_regsync", peer = %message.via.short(), error = %e, "malformed register update");
                return self.validate(Some(message.id), Acceptance::Reject(e.to_string()));
            }
        };
        let topic_ok = if message.topic.is(UPDATE_TOPIC) {
            message.topic.id() == m.register_id().to_string()
        } else {
            m.header.previous_state_hash.is_none()
                && m.full_state
                    .as_ref()
                    .is_some_and(|s| s.domain() == message.topic.id())
        };
        if !topic_ok {
            return self.validate(
                Some(message.id),
                Acceptance::Reject("update on the wrong topic".into()),
            );
        }
        if message.topic.is(CREATION_TOPIC) {
            if !self.domains.contains(message.topic.id()) {
                return self.validate(Some(message.id), Acceptance::Ignore);
            }
        } else if !self.registers.contains(&m.register_id()) {
            return self.validate(Some(message.id), Acceptance::Ignore);
        }
        self.offer(m, message.sender, message.via, Some(message.id));
    }

    pub(super) fn reject(
        &mut self,
        register: RegisterId,
        peer: PeerId,
        error: UpdateError,
        message: Option<ContentId>,
    ) {
        tracing::info!(target: "causality_regsync", register = %register.short(), peer = %peer.short(), error = %error, "update refused");
        self.stats.rejected += 1;
        self.penalize(peer, Severity::Severe, format!("register update: {error}"));
        self.validate(message, Acceptance::Ignore);
        self.event(Event::Rejected {
            register_id: register,
            peer,
            error,
        });
    }

    /// Handles an update from gossip (or the buffer): checks, applies, or buffers it.
    pub(super) fn offer(
        &mut self,
        m: RegisterStateMessage,
        originator: PeerId,
        via: PeerId,
        message: Option<ContentId>,
    ) {
        let id = m.register_id();
        let header = m.header.clone();
        match self.store.header(&header.state_hash) {
            Ok(Some(_)) => return self.validate(message, Acceptance::Accept),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "causality_regsync", error = %e, "store read failed");
                return self.validate(message, Acceptance::Ignore);
            }
        }
        // Who may sign it: the previous state's owner (from its stored header), or for a
        // creation its own owner.
        let previous_header = match header.previous_state_hash {
            None => None,
            Some(p) => match self.store.header(&p) {
                Ok(Some(h)) => Some(h),
                Ok(None) => {
                    self.buffer(m, via);
                    return self.validate(message, Acceptance::Ignore);
                }
                Err(e) => {
                    tracing::warn!(target: "causality_regsync", error = %e, "store read failed");
                    return self.validate(message, Acceptance::Ignore);
                }
            },
        };
        let signer = previous_header.as_ref().map_or(header.owner, |p| p.owner);
        if !header.verify(&signer) {
            return self.reject(id, originator, UpdateError::Unauthorized, message);
        }
        let link = match &previous_header {
            Some(p) => check_link_to(p, &header),
            None if header.epoch == 0 => Ok(()),
            None => Err(OpError::Epoch {
                expected: 0,
                got: header.epoch,
            }
            .into()),
        };
        if let Err(e) = link {
            return self.reject(id, originator, e, message);
        }
        if let Some(e) = self.stale_fence(&header) {
            // A late writer (a lease taken over): refused, not forwarded, not blamed.
            tracing::info!(target: "causality_regsync", register = %id.short(), error = %e, "fenced write refused");
            self.stats.rejected += 1;
            self.validate(message, Acceptance::Ignore);
            return self.event(Event::Rejected {
                register_id: id,
                peer: originator,
                error: e,
            });
        }
        // The state, from the inline delta on the previous body or the inline state.
        let previous = match header.previous_state_hash {
            Some(p) => self.store.state(&p).unwrap_or_default(),
            None => None,
        };
        let built = match (&m.delta, &m.full_state, header.previous_state_hash) {
            (Some(delta), _, Some(_)) if previous.is_some() => self
                .build_from_delta(previous.as_ref(), delta, &header)
                .map(|(s, e)| (s, e, Some(delta.clone()), Via::Delta)),
            (_, Some(state), None) => {
                let delta = RegisterDelta {
                    operations: vec![Operation::Create {
                        genesis: state.genesis.clone(),
                        contents: state.contents.clone(),
                    }],
                    previous_state_hash: None,
                };
                self.build_from_delta(None, &delta, &header)
                    .map(|(s, e)| (s, e, Some(delta), Via::Delta))
            }
            _ => {
                // Valid header, body to be pulled: forward it, fetch it.
                self.validate(message, Acceptance::Accept);
                self.enqueue(id, Some(header.state_hash), vec![via, originator], None);
                return;
            }
        };
        match built {
            Ok((state, effects, delta, how)) => {
                self.validate_later_or_now(
                    header,
                    delta,
                    state,
                    effects,
                    how,
                    via,
                    message,
                    Vec::new(),
                );
            }
            Err(UpdateError::Op(OpError::MissingDependency(dep))) => {
                // The operation needs another register first: fetch it, retry later.
                self.validate(message, Acceptance::Accept);
                self.enqueue(dep, None, vec![via, originator], None);
                self.buffer(m, via);
            }
            Err(e) => self.reject(id, originator, e, message),
        }
    }

    pub(super) fn build_from_delta(
        &self,
        previous: Option<&Register>,
        delta: &RegisterDelta,
        header: &UpdateHeader,
    ) -> Result<(Register, Effects), UpdateError> {
        if delta.id() != header.delta_id {
            return Err(UpdateError::WrongDelta);
        }
        let at = At {
            epoch: header.epoch,
            last_updated: header.last_updated,
        };
        let (state, effects) = apply(previous, delta, at, &StoreContext(self.store.as_ref()))?;
        check_state(&state, header)?;
        Ok((state, effects))
    }

    /// Stores a checked update now, or once its proof is verified.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn validate_later_or_now(
        &mut self,
        header: UpdateHeader,
        delta: Option<RegisterDelta>,
        state: Register,
        effects: Effects,
        via_kind: Via,
        peer: PeerId,
        message: Option<ContentId>,
        waiters: Vec<CallId>,
    ) {
        let rules = self.class(state.class());
        let domain = state.domain().to_owned();
        let commit = self.commit_for(&header, delta, &state, effects);
        if let Some(key) = rules.proof_key {
            let Some(proof_id) = header.proof_id else {
                let e = UpdateError::MissingProof(state.class().to_owned());
                for w in waiters {
                    self.reply(Some(w), Reply::Register(Err(e.clone().into())));
                }
                return self.reject(state.id, peer, e, message);
            };
            if self.parked.len() >= self.config.max_buffered {
                self.validate(message, Acceptance::Ignore);
                return;
            }
            self.event(Event::ProofNeeded {
                proof_id,
                key,
                binding: binding(&state.id, &header.state_hash),
                peer,
            });
            self.parked.insert(
                proof_id,
                Parked {
                    commit,
                    header,
                    domain,
                    via: via_kind,
                    peer,
                    message,
                    waiters,
                    local: None,
                },
            );
            return;
        }
        self.validate(message, Acceptance::Accept);
        self.finish(commit, header, domain, via_kind, waiters);
    }

    /// Commits a checked update, choosing between it and the current head by the fork
    /// rule.
    pub(super) fn finish(
        &mut self,
        mut commit: Commit,
        header: UpdateHeader,
        domain: String,
        via: Via,
        waiters: Vec<CallId>,
    ) {
        let id = header.register_id;
        let current = self.store.head(&id).ok().flatten();
        let mut moved = true;
        if let Some(current) = current
            && Some(current.state_hash) != header.previous_state_hash
        {
            // Store the headers first so the fork point can be found through them.
            match self.choose(current.state_hash, &commit.headers) {
                Ok(Choice::Extends) => {}
                Ok(Choice::Stale) => moved = false,
                Ok(Choice::Fork {
                    winner,
                    loser,
                    candidate_wins,
                }) => {
                    let fork = Fork {
                        register_id: id,
                        winner,
                        loser,
                    };
                    let known = self.store.forks(&id).is_ok_and(|f| f.contains(&fork));
                    moved = candidate_wins;
                    if !known {
                        tracing::warn!(target: "causality_regsync", register = %id.short(), winner = %fork.winner.id().short(), loser = %fork.loser.id().short(), "register fork resolved");
                        self.stats.forks += 1;
                        commit.forks.push(fork.clone());
                        self.event(Event::Fork(Box::new(fork)));
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "causality_regsync", register = %id.short(), error = %e, "fork choice failed");
                    moved = false;
                }
            }
        }
        if !moved {
            // Kept (as evidence, or an old state), but not the head; its effects do not
            // apply.
            commit.heads.clear();
            commit.credits.clear();
            commit.used_credits.clear();
            commit.merged.clear();
            commit.fences.clear();
        }
        if let Err(e) = self.store.commit(commit) {
            tracing::error!(target: "causality_regsync", register = %id.short(), error = %e, "storing an update failed");
            for w in waiters {
                self.reply(Some(w), Reply::Register(Err(store_err(e.clone()))));
            }
            return;
        }
        if moved {
            match via {
                Via::Full => self.stats.full_fetches += 1,
                Via::Delta => self.stats.deltas_applied += 1,
                Via::Local => {}
            }
            if self.domains.contains(&domain) {
                self.subscribe_register(id);
            }
            self.event(Event::Applied {
                register_id: id,
                state_hash: header.state_hash,
                epoch: header.epoch,
                via,
            });
        }
        if !waiters.is_empty() {
            let result = self.register(&id).ok_or(SyncError::NotFound(id));
            for w in waiters {
                self.reply(Some(w), Reply::Register(result.clone()));
            }
        }
        self.release_buffered(id);
        self.retry_nullifiers(id);
    }

    /// Where `candidate` (the last of `headers`, not yet stored) stands against the head
    /// `current`.
    pub(super) fn choose(
        &self,
        current: StateHash,
        headers: &[UpdateHeader],
    ) -> Result<Choice, StoreError> {
        let new: HashMap<StateHash, &UpdateHeader> =
            headers.iter().map(|h| (h.state_hash, h)).collect();
        let get = |s: &StateHash| -> Result<UpdateHeader, StoreError> {
            if let Some(h) = new.get(s) {
                return Ok((*h).clone());
            }
            self.store
                .header(s)?
                .ok_or_else(|| StoreError(format!("missing header {s}")))
        };
        let candidate = headers
            .last()
            .ok_or_else(|| StoreError("no header".into()))?;
        let mut a = get(&current)?;
        if candidate.epoch <= a.epoch && candidate.state_hash == current {
            return Ok(Choice::Stale);
        }
        let mut b = candidate.clone();
        while a.epoch > b.epoch {
            a = get(&a
                .previous_state_hash
                .ok_or_else(|| StoreError("epoch without previous".into()))?)?;
        }
        while b.epoch > a.epoch {
            b = get(&b
                .previous_state_hash
                .ok_or_else(|| StoreError("epoch without previous".into()))?)?;
        }
        if a.state_hash == b.state_hash {
            // One is the other's ancestor: the candidate extends the head, or is behind it.
            return Ok(if b.state_hash == current {
                Choice::Extends
            } else {
                Choice::Stale
            });
        }
        loop {
            if a.previous_state_hash == b.previous_state_hash {
                let candidate_wins = wins(&b, &a);
                let (winner, loser) = if candidate_wins { (b, a) } else { (a, b) };
                return Ok(Choice::Fork {
                    winner,
                    loser,
                    candidate_wins,
                });
            }
            a = get(&a
                .previous_state_hash
                .ok_or_else(|| StoreError("chains without a common root".into()))?)?;
            b = get(&b
                .previous_state_hash
                .ok_or_else(|| StoreError("chains without a common root".into()))?)?;
        }
    }

    pub(super) fn buffer(&mut self, m: RegisterStateMessage, from: PeerId) {
        let id = m.register_id();
        if self.buffered_count >= self.config.max_buffered {
            self.stats.buffer_dropped += 1;
            return;
        }
        let list = self.buffered.entry(id).or_default();
        if list.len() >= self.config.max_buffered_per_register
            || list.iter().any(|b| b.message.header == m.header)
        {
            self.stats.buffer_dropped += 1;
            return;
        }
        let first = list.is_empty();
        list.push(Buffered { message: m, from });
        self.buffered_count += 1;
        self.stats.buffered += 1;
        if first {
            self.outputs.push_back(Output::Schedule {
                at_ms: self.now_ms + self.config.reorder_ms,
                timer: Timer::Reorder(id),
            });
        }
    }

    /// Offers again the buffered updates of `id` that now connect.
    pub(super) fn release_buffered(&mut self, id: RegisterId) {
        loop {
            let Some(list) = self.buffered.get_mut(&id) else {
                return;
            };
            let store = &self.store;
            let Some(pos) = list.iter().position(|b| {
                b.message
                    .header
                    .previous_state_hash
                    .is_some_and(|p| store.state(&p).ok().flatten().is_some())
            }) else {
                return;
            };
            let b = list.remove(pos);
            if list.is_empty() {
                self.buffered.remove(&id);
            }
            self.buffered_count -= 1;
            self.offer(b.message, b.from, b.from, None);
        }
    }

    pub(super) fn reorder_timeout(&mut self, id: RegisterId) {
        let Some(list) = self.buffered.remove(&id) else {
            return;
        };
        self.buffered_count -= list.len();
        // Fetch the newest announced state; what connects is applied on the way.
        let mut peers = Vec::new();
        let mut want = None;
        let mut best = 0;
        for b in &list {
            if b.message.header.epoch >= best {
                best = b.message.header.epoch;
                want = Some(b.message.header.state_hash);
            }
            peers.push(b.from);
        }
        self.enqueue(id, want, peers, None);
    }

    pub(super) fn proof_checked(&mut self, proof_id: ContentId, result: Result<(), String>) {
        let Some(mut p) = self.parked.remove(&proof_id) else {
            return;
        };
        if let Some(local) = p.local.take() {
            let LocalUpdate {
                call,
                delta,
                state,
                effects,
            } = *local;
            let reply = match result {
                Ok(()) => self.commit_local(p.header, delta, state, effects),
                Err(reason) => {
                    tracing::info!(target: "causality_regsync", proof = %proof_id.short(), reason = %reason, "our own update's proof does not check");
                    Err(UpdateError::InvalidProof {
                        proof: proof_id,
                        reason,
                    }
                    .into())
                }
            };
            return self.reply(call, Reply::Updated(reply));
        }
        match result {
            Ok(()) => {
                self.validate(p.message, Acceptance::Accept);
                self.finish(p.commit, p.header, p.domain, p.via, p.waiters);
            }
            Err(reason) => {
                let e = UpdateError::InvalidProof {
                    proof: proof_id,
                    reason,
                };
                for w in &p.waiters {
                    self.reply(Some(*w), Reply::Register(Err(e.clone().into())));
                }
                self.reject(p.header.register_id, p.peer, e, p.message);
            }
        }
    }
}
