//! What a domain shares besides registers: nullifiers, time maps, commitments.

use super::*;

impl State {
    pub(super) fn on_nullifier_message(&mut self, message: Message) {
        let u = match messages::decode_nullifier(&message.payload, &self.config.limits) {
            Ok(u) => u,
            Err(e) => return self.validate(Some(message.id), Acceptance::Reject(e.to_string())),
        };
        if u.domain != message.topic.id() {
            return self.validate(
                Some(message.id),
                Acceptance::Reject("nullifier on the wrong topic".into()),
            );
        }
        if !u.verify() {
            return self.validate(
                Some(message.id),
                Acceptance::Reject("bad nullifier signature".into()),
            );
        }
        if !self.domains.contains(&u.domain) {
            return self.validate(Some(message.id), Acceptance::Ignore);
        }
        self.offer_nullifier(u, message.via, Some(message.id));
    }

    /// Accepts a signed nullifier use, or records it as a double use.
    pub(super) fn offer_nullifier(
        &mut self,
        u: NullifierUse,
        from: PeerId,
        message: Option<ContentId>,
    ) {
        if !u.verify() {
            self.penalize(from, Severity::Severe, "bad nullifier signature".into());
            return self.validate(message, Acceptance::Ignore);
        }
        match self.register(&u.register_id) {
            None => {
                // Who may spend it is known once the register is.
                if self.pending_nullifiers.len() >= self.config.max_buffered {
                    self.pending_nullifiers.pop_front();
                }
                self.pending_nullifiers.push_back((u.clone(), from));
                self.enqueue(u.register_id, None, vec![from], None);
                return self.validate(message, Acceptance::Ignore);
            }
            Some(r) if r.owner != u.spender || r.domain() != u.domain => {
                tracing::info!(target: "causality_regsync", register = %u.register_id.short(), "nullifier not signed by the register's owner");
                self.penalize(
                    from,
                    Severity::Minor,
                    "nullifier not signed by the register's owner".into(),
                );
                return self.validate(message, Acceptance::Ignore);
            }
            Some(_) => {}
        }
        let existing = match self.store.nullifier(&u.domain, &u.nullifier) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(target: "causality_regsync", error = %e, "store read failed");
                return self.validate(message, Acceptance::Ignore);
            }
        };
        match existing {
            None => {
                if let Err(e) = self.store.put_nullifier(&u, None) {
                    tracing::error!(target: "causality_regsync", error = %e, "storing a nullifier failed");
                    return self.validate(message, Acceptance::Ignore);
                }
                self.stats.nullifiers += 1;
                self.validate(message, Acceptance::Accept);
                self.event(Event::Nullified(Box::new(u)));
            }
            Some(e) if e.id() == u.id() => self.validate(message, Acceptance::Accept),
            Some(e) => {
                let (kept, rejected) = if u.id() < e.id() {
                    (u.clone(), e)
                } else {
                    (e, u.clone())
                };
                let evidence = DoubleUse {
                    kept: kept.clone(),
                    rejected,
                };
                let known = self
                    .store
                    .double_uses(&u.domain)
                    .map(|d| d.contains(&evidence))
                    .unwrap_or(false);
                if known {
                    return self.validate(message, Acceptance::Ignore);
                }
                tracing::warn!(target: "causality_regsync", domain = %u.domain, register = %u.register_id.short(), kept = %evidence.kept.id().short(), rejected = %evidence.rejected.id().short(), "nullifier used twice");
                if let Err(e) = self.store.put_nullifier(&kept, Some(&evidence)) {
                    tracing::error!(target: "causality_regsync", error = %e, "storing double-use evidence failed");
                    return self.validate(message, Acceptance::Ignore);
                }
                self.stats.double_uses += 1;
                // Forwarded once, so every node sees both uses and keeps the same one;
                // learned by reconciliation, both are published.
                self.validate(message, Acceptance::Accept);
                if message.is_none()
                    && let Some(topic) = domain_topic(NULLIFIER_TOPIC, &u.domain)
                {
                    self.publish(
                        topic.clone(),
                        messages::NULLIFIER_TYPE,
                        evidence.kept.encode(),
                    );
                    self.publish(topic, messages::NULLIFIER_TYPE, evidence.rejected.encode());
                }
                self.event(Event::DoubleUse(Box::new(evidence)));
            }
        }
    }

    pub(super) fn retry_nullifiers(&mut self, id: RegisterId) {
        if self.pending_nullifiers.is_empty() {
            return;
        }
        let (ready, rest): (Vec<_>, Vec<_>) = self
            .pending_nullifiers
            .drain(..)
            .partition(|(u, _)| u.register_id == id);
        self.pending_nullifiers = rest.into();
        for (u, from) in ready {
            self.offer_nullifier(u, from, None);
        }
    }

    pub(super) fn nullify(
        &mut self,
        domain: String,
        nullifier: [u8; 32],
        register_id: RegisterId,
    ) -> Result<(), SyncError> {
        let register = self
            .register(&register_id)
            .ok_or(SyncError::NotFound(register_id))?;
        if register.owner != self.local || register.domain() != domain {
            return Err(UpdateError::Unauthorized.into());
        }
        if let Some(existing) = self
            .store
            .nullifier(&domain, &nullifier)
            .map_err(store_err)?
        {
            return Err(SyncError::NullifierUsed(Box::new(existing)));
        }
        let u = NullifierUse::new(domain.clone(), nullifier, register_id, &self.key);
        self.store.put_nullifier(&u, None).map_err(store_err)?;
        self.stats.nullifiers += 1;
        if let Some(topic) = domain_topic(NULLIFIER_TOPIC, &domain) {
            self.publish(topic, messages::NULLIFIER_TYPE, u.encode());
        }
        self.event(Event::Nullified(Box::new(u)));
        Ok(())
    }

    pub(super) fn merge_time_map(
        &mut self,
        domain: &str,
        map: &TimeMap,
    ) -> Result<bool, StoreError> {
        let mut current = self.store.time_map(domain)?;
        let changed = current.merge(map);
        if changed {
            self.store.put_time_map(domain, &current)?;
            self.event(Event::TimeMapChanged {
                domain: domain.to_owned(),
                commitment: current.commitment(),
            });
        }
        Ok(changed)
    }

    pub(super) fn on_time_map_message(&mut self, message: Message) {
        match messages::decode_time_map(&message.payload, &self.config.limits) {
            Ok((domain, map)) if domain == message.topic.id() => {
                if !self.domains.contains(&domain) {
                    return self.validate(Some(message.id), Acceptance::Ignore);
                }
                match self.merge_time_map(&domain, &map) {
                    Ok(_) => self.validate(Some(message.id), Acceptance::Accept),
                    Err(e) => {
                        tracing::warn!(target: "causality_regsync", error = %e, "storing a time map failed");
                        self.validate(Some(message.id), Acceptance::Ignore);
                    }
                }
            }
            Ok(_) => self.validate(
                Some(message.id),
                Acceptance::Reject("time map on the wrong topic".into()),
            ),
            Err(e) => self.validate(Some(message.id), Acceptance::Reject(e.to_string())),
        }
    }

    pub(super) fn on_commitment_message(&mut self, message: Message) {
        let c = match Commitment::decode(&message.payload) {
            Ok(c) => c,
            Err(e) => return self.validate(Some(message.id), Acceptance::Reject(e.to_string())),
        };
        if !c.verify() {
            return self.validate(
                Some(message.id),
                Acceptance::Reject("bad commitment signature".into()),
            );
        }
        let topic_domain = message.topic.id().to_owned();
        if !self.domains.contains(&c.domain)
            || (!message.topic.is(COMMITMENT_TOPIC)
                && !message.topic.is(TIMEMAP_VERIFICATION_TOPIC))
            || c.domain != topic_domain
        {
            return self.validate(Some(message.id), Acceptance::Ignore);
        }
        self.validate(Some(message.id), Acceptance::Accept);
        let same = if message.topic.is(COMMITMENT_TOPIC) {
            let registers = self
                .store
                .domain_heads(&c.domain)
                .map(|h| SetCommitment::new(h).root());
            let nullifiers = self.nullifier_set(&c.domain).map(|n| (n.root(), n.len()));
            match (registers, nullifiers) {
                (Ok(r), Ok(n)) => r == c.root && Some(n) == c.nullifiers,
                _ => return,
            }
        } else {
            match self.store.time_map(&c.domain) {
                Ok(m) => m.commitment() == c.root,
                Err(_) => return,
            }
        };
        if same || c.signer == self.local {
            return;
        }
        self.event(Event::CommitmentMismatch {
            domain: c.domain.clone(),
            peer: c.signer,
            root: c.root,
        });
        if message.topic.is(COMMITMENT_TOPIC)
            && self.config.reconcile_on_mismatch
            && self.peers.contains(&c.signer)
        {
            self.start_reconcile(
                c.signer,
                c.domain,
                SetKind::Registers,
                None,
                ReconcileReport::default(),
            );
        }
    }

    /// The commitment to a domain's accepted nullifier uses: leaves nullifier ‖ use id.
    pub(super) fn nullifier_set(&self, domain: &str) -> Result<SetCommitment, StoreError> {
        Ok(SetCommitment::new(
            self.store
                .nullifiers(domain)?
                .into_iter()
                .map(|u| (ContentId::from_bytes(u.nullifier), u.id()))
                .collect(),
        ))
    }

    pub(super) fn publish_commitment(&mut self, domain: &str) -> Result<(), SyncError> {
        let set = SetCommitment::new(self.store.domain_heads(domain).map_err(store_err)?);
        let nullifiers = self.nullifier_set(domain).map_err(store_err)?;
        let c = Commitment::new(
            domain,
            set.root(),
            set.len(),
            Some((nullifiers.root(), nullifiers.len())),
            &self.key,
        );
        if let Some(topic) = domain_topic(COMMITMENT_TOPIC, domain) {
            self.publish(topic, messages::COMMITMENT_TYPE, c.encode());
        }
        let map = self.store.time_map(domain).map_err(store_err)?;
        let t = Commitment::new(
            domain,
            map.commitment(),
            map.entries.len() as u64,
            None,
            &self.key,
        );
        if let Some(topic) = domain_topic(TIMEMAP_VERIFICATION_TOPIC, domain) {
            self.publish(topic, messages::COMMITMENT_TYPE, t.encode());
        }
        Ok(())
    }

    pub(super) fn domain_topics(domain: &str) -> Vec<Topic> {
        [
            CREATION_TOPIC,
            NULLIFIER_TOPIC,
            COMMITMENT_TOPIC,
            TIMEMAP_UPDATE_TOPIC,
            TIMEMAP_VERIFICATION_TOPIC,
        ]
        .into_iter()
        .filter_map(|k| domain_topic(k, domain))
        .collect()
    }
}
