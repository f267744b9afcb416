//! Anti-entropy: rateless IBLT sessions, asked and served.

use super::*;

impl State {
    pub(super) fn items(
        &self,
        domain: &str,
        kind: SetKind,
    ) -> Result<HashMap<Item, ResolvedItem>, StoreError> {
        Ok(match kind {
            SetKind::Registers => self
                .store
                .domain_heads(domain)?
                .into_iter()
                .map(|(id, s)| (register_item(&id, &s), ResolvedItem::Register(id, s)))
                .collect(),
            SetKind::Nullifiers => self
                .store
                .nullifiers(domain)?
                .into_iter()
                .map(|u| (nullifier_item(&u), ResolvedItem::Nullifier(u)))
                .collect(),
        })
    }

    pub(super) fn serve_symbols(
        &mut self,
        peer: PeerId,
        domain: String,
        kind: SetKind,
        start: u64,
        count: u32,
    ) -> Response {
        let key = (peer, domain.clone(), kind);
        if start == 0 || !self.served.contains_key(&key) {
            let items = match self.items(&domain, kind) {
                Ok(i) => i,
                Err(e) => return Response::Error(e.0),
            };
            let root = if kind == SetKind::Registers {
                let set: Vec<(RegisterId, StateHash)> = items
                    .values()
                    .filter_map(|r| match r {
                        ResolvedItem::Register(id, s) => Some((*id, *s)),
                        ResolvedItem::Nullifier(_) => None,
                    })
                    .collect();
                SetCommitment::new(set).root()
            } else {
                ContentId::from_bytes([0; 32])
            };
            if self.served.len() >= MAX_SERVED_SESSIONS
                && let Some(k) = self.served.keys().next().cloned()
            {
                self.served.remove(&k);
            }
            let size = items.len() as u64;
            let mut keys: Vec<Item> = items.into_keys().collect();
            keys.sort_unstable();
            self.served.insert(
                key.clone(),
                Served {
                    encoder: Encoder::new(keys),
                    root,
                    size,
                },
            );
        }
        let served = self.served.get_mut(&key).expect("inserted");
        served.encoder.seek(start);
        let mut symbols = Vec::with_capacity(count as usize * crate::riblt::SYMBOL_BYTES);
        for _ in 0..count.min(MAX_SYMBOLS) {
            served.encoder.next_symbol().encode(&mut symbols);
        }
        Response::Reconcile {
            symbols,
            set_size: served.size,
            root: served.root,
        }
    }

    pub(super) fn serve_resolve(&self, domain: &str, kind: SetKind, items: &[Item]) -> Response {
        let all = match self.items(domain, kind) {
            Ok(a) => a,
            Err(e) => return Response::Error(e.0),
        };
        let mut registers = Vec::new();
        let mut nullifiers = Vec::new();
        for i in items.iter().take(MAX_RESOLVE) {
            match all.get(i) {
                Some(ResolvedItem::Register(id, s)) => registers.push((*id, *s)),
                Some(ResolvedItem::Nullifier(u)) => nullifiers.push(u.clone()),
                None => {}
            }
        }
        Response::Resolve {
            registers,
            nullifiers,
        }
    }

    pub(super) fn start_reconcile(
        &mut self,
        peer: PeerId,
        domain: String,
        kind: SetKind,
        call: Option<CallId>,
        report: ReconcileReport,
    ) {
        let local = match self.items(&domain, kind) {
            Ok(l) => l,
            Err(e) => return self.reply(call, Reply::Reconciled(Err(store_err(e)))),
        };
        let mut keys: Vec<Item> = local.keys().copied().collect();
        keys.sort_unstable();
        let session = Box::new(Session {
            peer,
            domain: domain.clone(),
            kind,
            decoder: Decoder::new(keys),
            local,
            remote_root: None,
            report,
            call,
            unresolved: Vec::new(),
            resolved: Vec::new(),
            then_nullifiers: kind == SetKind::Registers,
        });
        let request = Request::Reconcile {
            domain,
            kind,
            start: 0,
            count: self.config.first_symbols.clamp(1, MAX_SYMBOLS),
        };
        self.send_reconcile(session, &request);
    }

    pub(super) fn send_reconcile(&mut self, mut session: Box<Session>, request: &Request) {
        session.report.round_trips += 1;
        let peer = session.peer;
        let len = request.encode().len() as u64;
        session.report.symbol_bytes += len;
        self.send(peer, request, Pending::Reconcile(session));
    }

    pub(super) fn on_symbols(&mut self, mut session: Box<Session>, body: Result<Vec<u8>, String>) {
        let response = body.and_then(|b| {
            session.report.symbol_bytes += b.len() as u64;
            Response::decode(&b, self.max_response_bytes(), &self.config.limits)
                .map_err(|e| e.to_string())
        });
        let (symbols, set_size, root) = match response {
            Ok(Response::Reconcile {
                symbols,
                set_size,
                root,
            }) => (symbols, set_size, root),
            Ok(Response::Error(e)) => return self.end_session(session, Err(e)),
            Ok(_) => return self.end_session(session, Err("unexpected response".into())),
            Err(e) => return self.end_session(session, Err(e)),
        };
        if session.remote_root.is_none() {
            session.remote_root = Some((root, set_size));
        }
        let Some(symbols) = Symbol::decode_all(&symbols) else {
            return self.end_session(session, Err("bad symbols".into()));
        };
        if symbols.is_empty() {
            return self.end_session(session, Err("no symbols".into()));
        }
        for s in symbols {
            session.decoder.add_symbol(s);
            session.report.symbols += 1;
            if session.decoder.is_decoded() {
                break;
            }
        }
        if !session.decoder.is_decoded() {
            let received = session.decoder.received();
            // Sets of n items differ in at most n + local; past that the peer is lying.
            let bound = 2 * (set_size + session.local.len() as u64) + 1024;
            if received > bound {
                return self.end_session(session, Err("reconciliation did not converge".into()));
            }
            let count = ((received / 4).max(u64::from(self.config.first_symbols)))
                .min(u64::from(MAX_SYMBOLS)) as u32;
            let request = Request::Reconcile {
                domain: session.domain.clone(),
                kind: session.kind,
                start: received,
                count,
            };
            return self.send_reconcile(session, &request);
        }
        session.unresolved = session.decoder.remote_only().copied().collect();
        session.report.remote_only += session.unresolved.len() as u64;
        session.report.local_only += session.decoder.local_only().count() as u64;
        self.resolve_next(session);
    }

    pub(super) fn resolve_next(&mut self, mut session: Box<Session>) {
        if session.unresolved.is_empty() {
            return self.session_decoded(session);
        }
        let take = session.unresolved.len().min(MAX_RESOLVE);
        let items: Vec<Item> = session.unresolved.drain(..take).collect();
        let request = Request::Resolve {
            domain: session.domain.clone(),
            kind: session.kind,
            items,
        };
        session.report.round_trips += 1;
        session.report.resolve_bytes += request.encode().len() as u64;
        let peer = session.peer;
        self.send(peer, &request, Pending::Resolve(session));
    }

    pub(super) fn on_resolved(&mut self, mut session: Box<Session>, body: Result<Vec<u8>, String>) {
        let response = body.and_then(|b| {
            session.report.resolve_bytes += b.len() as u64;
            Response::decode(&b, self.max_response_bytes(), &self.config.limits)
                .map_err(|e| e.to_string())
        });
        match response {
            Ok(Response::Resolve {
                registers,
                nullifiers,
            }) => {
                let peer = session.peer;
                for (id, state) in registers {
                    session.resolved.push((id, state));
                    let ours = self.store.head(&id).ok().flatten().map(|h| h.state_hash);
                    if ours != Some(state) && self.store.header(&state).ok().flatten().is_none() {
                        session.report.fetched += 1;
                        self.enqueue(id, Some(state), vec![peer], None);
                    }
                }
                for u in nullifiers {
                    self.offer_nullifier(u, peer, None);
                }
                self.resolve_next(session);
            }
            Ok(Response::Error(e)) => self.end_session(session, Err(e)),
            Ok(_) => self.end_session(session, Err("unexpected response".into())),
            Err(e) => self.end_session(session, Err(e)),
        }
    }

    pub(super) fn session_decoded(&mut self, mut session: Box<Session>) {
        if session.kind == SetKind::Registers {
            // Rebuild the peer's set from ours and the difference; it must have its root.
            let local_only: BTreeSet<Item> = session.decoder.local_only().copied().collect();
            let mut set: Vec<(RegisterId, StateHash)> = session
                .local
                .iter()
                .filter(|(i, _)| !local_only.contains(*i))
                .filter_map(|(_, r)| match r {
                    ResolvedItem::Register(id, s) => Some((*id, *s)),
                    ResolvedItem::Nullifier(_) => None,
                })
                .collect();
            set.extend(session.resolved.iter().copied());
            let rebuilt = SetCommitment::new(set);
            session.report.verified = session
                .remote_root
                .is_some_and(|(root, size)| root == rebuilt.root() && size == rebuilt.len());
            if !session.report.verified {
                tracing::info!(target: "causality_regsync", peer = %session.peer.short(), domain = %session.domain, "reconciled set does not match the peer's commitment (it changed meanwhile, or the peer lied)");
            }
        }
        if session.then_nullifiers {
            let report = std::mem::take(&mut session.report);
            return self.start_reconcile(
                session.peer,
                session.domain.clone(),
                SetKind::Nullifiers,
                session.call,
                report,
            );
        }
        self.end_session(session, Ok(()));
    }

    pub(super) fn end_session(&mut self, session: Box<Session>, result: Result<(), String>) {
        let reply = match result {
            Ok(()) => {
                self.stats.reconciliations += 1;
                if session.report.remote_only > 0 {
                    // What we learned changes our commitment: state it again (once the
                    // fetches are done), so our other neighbours reconcile with us.
                    self.schedule_commitment(&session.domain);
                }
                Ok(session.report)
            }
            Err(reason) => {
                tracing::debug!(target: "causality_regsync", peer = %session.peer.short(), domain = %session.domain, reason = %reason, "reconciliation failed");
                Err(SyncError::Remote(reason))
            }
        };
        self.reply(session.call, Reply::Reconciled(reply));
    }

    pub(super) fn schedule_commitment(&mut self, domain: &str) {
        if self.commitment_scheduled.insert(domain.to_owned()) {
            self.outputs.push_back(Output::Schedule {
                at_ms: self.now_ms + COMMITMENT_DELAY_MS,
                timer: Timer::Commitment(domain.to_owned()),
            });
        }
    }
}
