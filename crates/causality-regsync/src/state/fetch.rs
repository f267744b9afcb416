//! Fetching what is missing (chain pages, deltas, states, chunks) and serving it.

use super::*;

impl State {
    pub(super) fn enqueue(
        &mut self,
        id: RegisterId,
        want: Option<StateHash>,
        peers: Vec<PeerId>,
        waiter: Option<CallId>,
    ) {
        if let Some(job) = self.queue.iter_mut().find(|j| j.register == id) {
            if want.is_some() {
                job.want = want;
            }
            for p in peers {
                if !job.peers.contains(&p) {
                    job.peers.push_front(p);
                }
            }
            job.waiters.extend(waiter);
            return;
        }
        if self.queue.len() >= self.config.max_queued {
            self.stats.queue_dropped += 1;
            if let Some(w) = waiter {
                self.reply(
                    Some(w),
                    Reply::Register(Err(SyncError::Invalid {
                        register: id,
                        reason: "sync queue full".into(),
                    })),
                );
            }
            return;
        }
        let mut candidates: VecDeque<PeerId> = VecDeque::new();
        for p in peers.into_iter().chain(self.peers.iter().copied()) {
            if p != self.local && !candidates.contains(&p) {
                candidates.push_back(p);
            }
        }
        let critical = self
            .register(&id)
            .is_some_and(|r| self.class(r.class()).critical);
        let job = Box::new(Job {
            register: id,
            want,
            peers: candidates,
            waiters: waiter.into_iter().collect(),
            critical,
            last_error: None,
            sent_have: None,
            known: None,
        });
        self.queued.insert(id);
        if critical {
            // Behind the other critical jobs, ahead of the rest.
            let at = self
                .queue
                .iter()
                .position(|j| !j.critical)
                .unwrap_or(self.queue.len());
            self.queue.insert(at, job);
        } else {
            self.queue.push_back(job);
        }
        self.pump();
    }

    pub(super) fn pump(&mut self) {
        while self.inflight_syncs < self.config.max_inflight {
            let Some(mut job) = self.queue.pop_front() else {
                return;
            };
            self.queued.remove(&job.register);
            let peer = loop {
                match job.peers.pop_front() {
                    Some(p) if self.peers.contains(&p) => break Some(p),
                    Some(_) => continue,
                    None => break None,
                }
            };
            let Some(peer) = peer else {
                let reason = job.last_error.take();
                let error = match reason {
                    Some(reason) => SyncError::Invalid {
                        register: job.register,
                        reason,
                    },
                    None => SyncError::NotFound(job.register),
                };
                let found = self.register(&job.register);
                for w in job.waiters {
                    // A register known here is the answer when no peer has anything newer.
                    let reply = match (&found, job.want) {
                        (Some(r), None) => Ok(r.clone()),
                        _ => Err(error.clone()),
                    };
                    self.reply(Some(w), Reply::Register(reply));
                }
                continue;
            };
            self.send_sync(job, peer);
        }
    }

    pub(super) fn send_sync(&mut self, mut job: Box<Job>, peer: PeerId) {
        let head = self
            .store
            .head(&job.register)
            .ok()
            .flatten()
            .map(|h| h.state_hash);
        job.sent_have = head;
        // Ask from the last page's end, or our head.
        let request = Request::Sync {
            register_id: job.register,
            known: job.known.or(head),
            have: head,
            want: job.want,
        };
        let body = request.encode();
        self.stats.sync_requests += 1;
        self.stats.sync_bytes += body.len() as u64;
        let id = self.ids.next_id();
        self.inflight_syncs += 1;
        self.inflight.insert(id, Pending::Sync(job, peer));
        self.outputs.push_back(Output::Request {
            id,
            peer,
            protocol: crate::PROTOCOL_NAME.into(),
            body,
        });
    }

    pub(super) fn send(&mut self, peer: PeerId, request: &Request, pending: Pending) -> usize {
        let body = request.encode();
        let len = body.len();
        let id = self.ids.next_id();
        self.inflight.insert(id, pending);
        self.outputs.push_back(Output::Request {
            id,
            peer,
            protocol: crate::PROTOCOL_NAME.into(),
            body,
        });
        len
    }

    pub(super) fn on_sync_response(
        &mut self,
        mut job: Box<Job>,
        peer: PeerId,
        body: Result<Vec<u8>, String>,
    ) {
        self.inflight_syncs -= 1;
        let outcome = body.and_then(|body| {
            self.stats.sync_bytes += body.len() as u64;
            Response::decode(&body, self.max_response_bytes(), &self.config.limits).map_err(|e| {
                self.penalize(
                    peer,
                    Severity::Severe,
                    format!("malformed sync response: {e}"),
                );
                e.to_string()
            })
        });
        let result = match outcome {
            Ok(Response::Sync {
                headers,
                deltas,
                full_state,
                more,
            }) => self.absorb(&mut job, peer, headers, deltas, full_state, more),
            // Not having it is no fault; another peer may.
            Ok(Response::Error(e)) if e == UNKNOWN_REGISTER => Ok(Absorbed::NotHere),
            Ok(Response::Error(e)) => Err(e),
            Ok(_) => Err("unexpected response".into()),
            Err(e) => Err(e),
        };
        match result {
            Ok(Absorbed::NotHere) => self.queue.push_front(job),
            Ok(Absorbed::Done) => {}
            Ok(Absorbed::More) => {
                job.peers.push_front(peer);
                self.queue.push_front(job);
            }
            Err(e) => {
                tracing::debug!(target: "causality_regsync", register = %job.register.short(), peer = %peer.short(), error = %e, "sync failed");
                job.last_error = Some(e);
                self.queue.push_front(job);
            }
        }
        self.pump();
    }

    pub(super) fn max_response_bytes(&self) -> usize {
        crate::max_response_bytes(&self.config.limits)
    }

    /// Checks and applies a sync response.
    pub(super) fn absorb(
        &mut self,
        job: &mut Job,
        peer: PeerId,
        headers: Vec<UpdateHeader>,
        deltas: Vec<RegisterDelta>,
        full_state: Option<Register>,
        more: bool,
    ) -> Result<Absorbed, String> {
        let id = job.register;
        let bad = |this: &mut Self, e: UpdateError| -> Result<Absorbed, String> {
            this.stats.rejected += 1;
            this.penalize(peer, Severity::Severe, format!("sync response: {e}"));
            this.event(Event::Rejected {
                register_id: id,
                peer,
                error: e.clone(),
            });
            Err(e.to_string())
        };
        // The chain: each header follows the one before (stored or in the list).
        let mut checked: Vec<UpdateHeader> = Vec::new();
        for h in &headers {
            if h.register_id != id {
                return bad(self, UpdateError::HeaderMismatch("register id"));
            }
            let previous = match h.previous_state_hash {
                None => None,
                Some(p) => match checked.iter().rev().find(|c| c.state_hash == p) {
                    Some(c) => Some(c.clone()),
                    None => match self.store.header(&p) {
                        Ok(Some(c)) => Some(c),
                        _ => return bad(self, UpdateError::Op(OpError::UnknownPrevious)),
                    },
                },
            };
            let link = match &previous {
                Some(p) => check_link_to(p, h),
                None if h.epoch == 0 => Ok(()),
                None => Err(OpError::Epoch {
                    expected: 0,
                    got: h.epoch,
                }
                .into()),
            };
            if let Err(e) = link {
                return bad(self, e);
            }
            let signer = previous.as_ref().map_or(h.owner, |p| p.owner);
            if !h.verify(&signer) {
                return bad(self, UpdateError::Unauthorized);
            }
            checked.push(h.clone());
        }
        if more {
            if checked.is_empty() {
                return Err("an empty page with more to come".into());
            }
            job.known = checked.last().map(|h| h.state_hash);
            let commit = Commit {
                headers: checked,
                ..Commit::default()
            };
            self.store.commit(commit).map_err(|e| e.0)?;
            return Ok(Absorbed::More);
        }
        let Some(target) = checked.last().cloned() else {
            // Nothing newer at this peer.
            let found = self.register(&id);
            if job
                .want
                .is_some_and(|w| found.as_ref().is_none_or(|f| f.state_hash() != w))
            {
                return Err("the peer does not have the wanted state".into());
            }
            let reply = found.ok_or(SyncError::NotFound(id));
            for w in job.waiters.drain(..) {
                self.reply(Some(w), Reply::Register(reply.clone()));
            }
            return Ok(Absorbed::Done);
        };
        // The bodies: deltas from the state the request said we hold, or the target's full
        // state. (The head may have moved since; the fork rule then places the result.)
        let head = match job.sent_have {
            Some(h) => self.store.header(&h).map_err(|e| e.0)?.map(|h| Head {
                state_hash: h.state_hash,
                epoch: h.epoch,
            }),
            None => None,
        };
        let mut states: Vec<Register> = Vec::new();
        let mut stored_deltas: Vec<(StateHash, RegisterDelta)> = Vec::new();
        let mut effects = Effects::default();
        let via;
        if let Some(state) = full_state {
            if state.state_hash() != target.state_hash {
                return bad(
                    self,
                    UpdateError::WrongStateHash {
                        announced: target.state_hash,
                        got: state.state_hash(),
                    },
                );
            }
            if let Err(e) = check_state(&state, &target) {
                return bad(self, e);
            }
            if head.is_none() {
                let creation = self.creation_header(&checked);
                match creation.as_ref() {
                    Some(c) if c.owner == state.genesis.owner && state.id == id => {}
                    _ => {
                        return bad(
                            self,
                            UpdateError::HeaderMismatch(
                                "the chain does not start at the register's genesis",
                            ),
                        );
                    }
                }
            }
            states.push(state);
            via = Via::Full;
        } else {
            let mut previous = match head {
                Some(h) => self.store.state(&h.state_hash).map_err(|e| e.0)?,
                None => None,
            };
            let chain: Vec<&UpdateHeader> = checked
                .iter()
                .skip_while(|h| h.previous_state_hash != head.map(|h| h.state_hash))
                .collect();
            if chain.len() != deltas.len() || deltas.is_empty() {
                return bad(
                    self,
                    UpdateError::HeaderMismatch("deltas do not match the chain"),
                );
            }
            let mut all = Effects::default();
            for (h, d) in chain.into_iter().zip(&deltas) {
                match self.build_from_delta(previous.as_ref(), d, h) {
                    Ok((s, e)) => {
                        all.credits.extend(e.credits);
                        all.used_credit = all.used_credit.or(e.used_credit);
                        all.merged.extend(e.merged);
                        stored_deltas.push((h.state_hash, d.clone()));
                        states.push(s.clone());
                        previous = Some(s);
                    }
                    Err(UpdateError::Op(OpError::MissingDependency(dep))) => {
                        self.enqueue(dep, None, vec![peer], None);
                        return Err(format!("needs register {dep} first"));
                    }
                    Err(e) => return bad(self, e),
                }
            }
            effects = all;
            via = Via::Delta;
        }
        let state = states.last().cloned().expect("a state");
        let domain = state.domain().to_owned();
        let commit = Commit {
            headers: checked.clone(),
            deltas: stored_deltas,
            states,
            heads: vec![(
                id,
                Head {
                    state_hash: target.state_hash,
                    epoch: target.epoch,
                },
                domain.clone(),
            )],
            credits: effects.credits,
            used_credits: effects.used_credit.into_iter().collect(),
            merged: effects.merged,
            forks: Vec::new(),
            fences: checked
                .iter()
                .filter_map(|h| h.fence.map(|f| (id, f.key, f.token)))
                .collect(),
        };
        let waiters: Vec<CallId> = job.waiters.drain(..).collect();
        if let Some(key) = self.class(state.class()).proof_key {
            // The whole commit waits for the target's proof.
            let Some(proof_id) = target.proof_id else {
                let e = UpdateError::MissingProof(state.class().to_owned());
                for w in waiters {
                    self.reply(Some(w), Reply::Register(Err(e.clone().into())));
                }
                return bad(self, e);
            };
            self.event(Event::ProofNeeded {
                proof_id,
                key,
                binding: binding(&id, &target.state_hash),
                peer,
            });
            self.parked.insert(
                proof_id,
                Parked {
                    commit,
                    header: target,
                    domain,
                    via,
                    peer,
                    message: None,
                    waiters,
                    local: None,
                },
            );
            return Ok(Absorbed::Done);
        }
        self.finish(commit, target, domain, via, waiters);
        Ok(Absorbed::Done)
    }

    /// The creation header of the chain `checked` continues (in it, or stored: earlier
    /// pages).
    pub(super) fn creation_header(&self, checked: &[UpdateHeader]) -> Option<UpdateHeader> {
        let mut at = checked.first()?.clone();
        while let Some(previous) = at.previous_state_hash {
            at = match checked.iter().find(|h| h.state_hash == previous) {
                Some(h) => h.clone(),
                None => self.store.header(&previous).ok()??,
            };
        }
        Some(at)
    }

    pub(super) fn read_data(&mut self, id: RegisterId, peers: Vec<PeerId>, call: Option<CallId>) {
        let Some(register) = self.register(&id) else {
            return self.reply(call, Reply::Data(Err(SyncError::NotFound(id))));
        };
        match register.contents {
            RegisterContents::Data(bytes) => self.reply(call, Reply::Data(Ok(bytes))),
            RegisterContents::Chunked { len, chunks } => {
                let mut candidates: VecDeque<PeerId> = VecDeque::new();
                for p in peers.into_iter().chain(self.peers.iter().copied()) {
                    if !candidates.contains(&p) {
                        candidates.push_back(p);
                    }
                }
                let fetch = Box::new(ChunkFetch {
                    call,
                    register: id,
                    len,
                    chunks,
                    peers: candidates,
                    asked: Vec::new(),
                });
                self.next_chunks(fetch);
            }
            _ => self.reply(
                call,
                Reply::Data(Err(SyncError::Invalid {
                    register: id,
                    reason: "the register holds no data".into(),
                })),
            ),
        }
    }

    /// Asks for the next missing chunks, or assembles the data when none is missing.
    pub(super) fn next_chunks(&mut self, mut fetch: Box<ChunkFetch>) {
        let mut missing = Vec::new();
        for c in &fetch.chunks {
            match self.store.chunk(c) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    if !missing.contains(c) {
                        missing.push(*c);
                    }
                }
                Err(e) => return self.reply(fetch.call, Reply::Data(Err(store_err(e)))),
            }
            if missing.len() == messages::MAX_CHUNKS {
                break;
            }
        }
        if missing.is_empty() {
            let mut data = Vec::with_capacity(usize::try_from(fetch.len).unwrap_or(0));
            for c in &fetch.chunks {
                match self.store.chunk(c) {
                    Ok(Some(bytes)) => data.extend_from_slice(&bytes),
                    Ok(None) => {
                        return self.reply(
                            fetch.call,
                            Reply::Data(Err(SyncError::Store(format!("chunk {c} vanished")))),
                        );
                    }
                    Err(e) => return self.reply(fetch.call, Reply::Data(Err(store_err(e)))),
                }
            }
            if data.len() as u64 != fetch.len {
                let e = SyncError::Invalid {
                    register: fetch.register,
                    reason: "the chunks do not add up to the data's length".into(),
                };
                return self.reply(fetch.call, Reply::Data(Err(e)));
            }
            return self.reply(fetch.call, Reply::Data(Ok(data)));
        }
        let Some(peer) = fetch.peers.front().copied() else {
            let e = SyncError::Invalid {
                register: fetch.register,
                reason: "no peer provided the missing chunks".into(),
            };
            return self.reply(fetch.call, Reply::Data(Err(e)));
        };
        fetch.asked = missing.clone();
        self.send(
            peer,
            &Request::Chunks(missing),
            Pending::Chunks(fetch, peer),
        );
    }

    pub(super) fn on_chunks(
        &mut self,
        mut fetch: Box<ChunkFetch>,
        from: PeerId,
        body: Result<Vec<u8>, String>,
    ) {
        let response = body.and_then(|b| {
            Response::decode(&b, self.max_response_bytes(), &self.config.limits)
                .map_err(|e| e.to_string())
        });
        let mut progress = false;
        if let Ok(Response::Chunks(chunks)) = response {
            for chunk in chunks {
                let id = ContentId::of(&chunk);
                if !fetch.asked.contains(&id) || chunk.len() > self.config.limits.chunk_bytes {
                    self.penalize(
                        from,
                        Severity::Severe,
                        "a chunk that was not asked for".into(),
                    );
                    progress = false;
                    break;
                }
                if let Err(e) = self.store.put_chunk(&chunk) {
                    return self.reply(fetch.call, Reply::Data(Err(store_err(e))));
                }
                progress = true;
            }
        }
        if !progress {
            // This peer has none of them (or lied): the next one.
            fetch.peers.pop_front();
        }
        self.next_chunks(fetch);
    }

    pub(super) fn on_request(&mut self, id: InboundId, peer: PeerId, body: &[u8]) {
        let request = match Request::decode(body) {
            Ok(r) => r,
            Err(e) => {
                self.penalize(
                    peer,
                    Severity::Severe,
                    format!("malformed regsync request: {e}"),
                );
                self.outputs.push_back(Output::Respond {
                    id,
                    result: Err((RefusalReason::BadRequest, e.to_string())),
                });
                return;
            }
        };
        let response = match request {
            Request::Sync {
                register_id,
                known,
                have,
                want,
            } => self.serve_sync(register_id, known, have, want),
            Request::Chunks(ids) => Response::Chunks(
                ids.iter()
                    .filter_map(|i| self.store.chunk(i).ok().flatten())
                    .collect(),
            ),
            Request::Prove {
                domain,
                register_id,
            } => match self.prove_here(&domain, &register_id) {
                Ok((root, count, proof)) => Response::Prove { count, root, proof },
                Err(e) => Response::Error(e.to_string()),
            },
            Request::Reconcile {
                domain,
                kind,
                start,
                count,
            } => self.serve_symbols(peer, domain, kind, start, count),
            Request::Resolve {
                domain,
                kind,
                items,
            } => self.serve_resolve(&domain, kind, &items),
        };
        self.outputs.push_back(Output::Respond {
            id,
            result: Ok(response.encode()),
        });
    }

    pub(super) fn serve_sync(
        &self,
        register: RegisterId,
        known: Option<StateHash>,
        have: Option<StateHash>,
        want: Option<StateHash>,
    ) -> Response {
        let Ok(Some(head)) = self.store.head(&register) else {
            return Response::Error(UNKNOWN_REGISTER.into());
        };
        let want = want.unwrap_or(head.state_hash);
        // Walk back from `want` to `known` (or the creation).
        let mut chain: Vec<UpdateHeader> = Vec::new();
        let mut at = Some(want);
        let mut reached_known = false;
        while let Some(s) = at {
            if Some(s) == known {
                reached_known = true;
                break;
            }
            let Ok(Some(h)) = self.store.header(&s) else {
                return Response::Error("unknown state".into());
            };
            at = h.previous_state_hash;
            chain.push(h);
            if chain.len() > crate::MAX_CHAIN_WALK {
                return Response::Error("chain too long to serve".into());
            }
        }
        chain.reverse();
        if chain.len() > MAX_HEADERS {
            chain.truncate(MAX_HEADERS);
            return Response::Sync {
                headers: chain,
                deltas: Vec::new(),
                full_state: None,
                more: true,
            };
        }
        if chain.is_empty() {
            return Response::Sync {
                headers: chain,
                deltas: Vec::new(),
                full_state: None,
                more: false,
            };
        }
        let Ok(Some(state)) = self.store.state(&want) else {
            return Response::Error("no body for that state".into());
        };
        let state_bytes = state.encode().len();
        // Deltas when the asker holds the start of this chain and they are smaller.
        if reached_known && have == known && have.is_some() {
            let mut deltas = Vec::new();
            let mut bytes = 0;
            for h in &chain {
                match self.store.delta(&h.state_hash) {
                    Ok(Some(d)) => {
                        bytes += d.encode().len();
                        deltas.push(d);
                    }
                    _ => break,
                }
                if bytes >= state_bytes {
                    break;
                }
            }
            if deltas.len() == chain.len() && bytes < state_bytes {
                return Response::Sync {
                    headers: chain,
                    deltas,
                    full_state: None,
                    more: false,
                };
            }
        }
        Response::Sync {
            headers: chain,
            deltas: Vec::new(),
            full_state: Some(state),
            more: false,
        }
    }

    pub(super) fn prove_here(
        &self,
        domain: &str,
        register: &RegisterId,
    ) -> Result<(ContentId, u64, MembershipProof), SyncError> {
        let set = SetCommitment::new(self.store.domain_heads(domain).map_err(store_err)?);
        Ok((set.root(), set.len(), set.prove(register)))
    }
}
