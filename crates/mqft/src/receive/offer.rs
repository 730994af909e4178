//! Deciding on an offer: the checks that need the disk (the name as a safe local
//! path, free space, a file already there, saved state to resume from, a signed or
//! sealed manifest), and either a refusal, an answer from what is already here, or
//! the transfer opened: its `Receiver`, its `.part` and writer, its subscription.
//! Part of the receive engine ([`super::Engine`]), split out of `receive.rs` along
//! the seam between taking a transfer and running it.

use super::*;

impl Engine {
    /// Decides on a new transfer what needs the disk, once the endpoint has decided
    /// the rest ([`Routed::Offer`]): a safe local name, no other transfer writing
    /// it, not already here, room for it.
    pub(super) async fn offer(&mut self, m: Manifest) {
        let id = m.id;
        // Who signed it comes first: nothing of an untrusted offer (its name
        // included) touches the disk.
        let mut replay = false;
        if let Some(gate) = &self.gate {
            match gate.admit(&m) {
                Ok((signer, seen)) => {
                    info!(%id, signer, "signed by a trusted key");
                    self.events.emit(ReceiveEvent::Signed { transfer: id, signer });
                    replay = seen;
                }
                Err(detail) => {
                    info!(%id, detail, "untrusted offer");
                    return self.reject_with(&m, RejectReason::Untrusted, detail);
                }
            }
        }
        // An encrypted offer is opened before its name is looked at: the name on
        // the wire is a placeholder.
        let unseal = match (&m.sealed, &self.opts.identity) {
            (None, _) => None,
            (Some(_), None) => {
                let detail = "encrypted; this receiver has no --identity".to_owned();
                return self.reject_with(&m, RejectReason::Encrypted, detail);
            }
            (Some(_), Some(key)) => match proto::sealed::open(&m, key.signing_key()) {
                Ok(opened) => Some(Unseal {
                    opened: Arc::new(opened),
                    wire_chunk: m.chunk_size,
                    wire_size: m.size,
                    count: m.chunk_count,
                }),
                Err(e) => {
                    info!(%id, error = %e, "cannot open an encrypted offer");
                    return self.reject_with(&m, RejectReason::Encrypted, e.to_string());
                }
            },
        };
        let wire_name = unseal.as_ref().map_or(&m.name, |u| &u.opened.inner.name);
        let name = match sanitize_path(wire_name) {
            Ok(n) => n,
            Err(e) => {
                debug!(%id, name = %crate::name::escape(&m.name), error = %e, "bad name");
                // The sender is told what was wrong with it ("reserved on windows").
                return self.reject_with(&m, RejectReason::BadName, e.to_string());
            }
        };
        let dir = match self.files_dir(&m, true).await {
            Ok(dir) => dir,
            Err(e) => {
                warn!(%id, sender = m.sender, error = %e, "cannot use the sender's directory");
                return self.reject_io(&m, &e);
            }
        };
        let conflict = self.opts.on_conflict;
        // Another transfer is writing a file of that name right now: unless the
        // new one will take a free name of its own, it waits.
        if conflict != OnConflict::Rename && self.transfers.values().any(|t| t.paths.final_path == name.in_dir(&dir)) {
            return self.reject(&m, RejectReason::Busy);
        }
        let paths = Paths::new(&self.state, &dir, &name, &id);
        // What the transfers already open still have to write: the disk must hold
        // theirs and this one's. An open stream's size is not known: it reserves
        // nothing (its writes tell if the disk fills).
        let reserved = self
            .transfers
            .values()
            .filter(|t| !t.ended && !t.rx.manifest().is_open())
            .map(|t| t.rx.manifest().size.saturating_sub(t.rx.bytes_held()))
            .fold(0u64, u64::saturating_add);
        // What lands on disk: for an encrypted transfer the plaintext, whose size
        // and hash the sealed part of the manifest gives.
        let content = match &unseal {
            Some(u) => {
                let mut c = m.clone();
                (c.size, c.sha256) = (u.opened.inner.size, Some(u.opened.inner.sha256));
                c
            }
            None => m.clone(),
        };
        let decision = {
            let (paths, m, content) = (paths.clone(), m.clone(), content.clone());
            blocking(move || {
                // A symlink planted at a directory of the path: refused now, not
                // after the whole file came, and nothing read through it.
                store::check_parent_dirs(&paths)?;
                // The same bytes under this name or a numbered one, whatever
                // transfer brought them: already here.
                if let Some((found, sha)) = store::find_identical(&paths, &content)? {
                    return Ok(Decision::AlreadyComplete(found, sha));
                }
                // Anything at the final name, a symlink or a dangling one included,
                // is someone else's.
                if std::fs::symlink_metadata(&paths.final_path).is_ok() {
                    match conflict {
                        OnConflict::Fail => return Ok(Decision::Exists(RejectReason::Exists)),
                        OnConflict::Skip => return Ok(Decision::Exists(RejectReason::Skipped)),
                        // Replaced, or kept beside, when the file is in.
                        _ => {}
                    }
                }
                // A signature that completed here before, and the file is not here
                // as it was: someone re-publishing a captured transfer.
                if replay {
                    return Ok(Decision::Replay);
                }
                // Before anything is created: a file that cannot fit is refused as
                // DiskFull rather than failing half way.
                store::check_room(&paths, &m, reserved)?;
                let (file, saved) = store::open_part(&paths, &m)?;
                Ok(Decision::Open(file, saved.map(Box::new)))
            })
            .await
        };
        let (file, saved) = match decision {
            Ok(Decision::AlreadyComplete(found, sha)) => {
                let path = found.in_dir(&dir);
                let stored = stored_as(&m, &name, &found);
                // The sender compares what it is told with its manifest's hash: an
                // encrypted transfer's is the ciphertext's.
                let told = m.sha256.unwrap_or(sha);
                match &stored {
                    Some(s) => self.endpoint.already_stored(m.clone(), told, s),
                    None => self.endpoint.already_complete(m.clone(), told),
                }
                self.drain_endpoint();
                if content.sha256.is_none() {
                    // Only a claim: the sender answers with the manifest again, with
                    // its hash, and that decides (`Routed::CheckHistory`).
                    info!(%id, path = %path.display(), "a file of this name and size is here; the sender checks it");
                    return;
                }
                if m.is_held() {
                    // Held for this receiver, which has it: confirmed as if it had
                    // just come, so that the hold is cleared once everyone has it.
                    let prefix = self.endpoint.origin(&id).cloned().unwrap_or_else(|| self.prefix.clone());
                    let mut confirm = match &stored {
                        Some(s) => proto::Receiver::already_stored(&prefix, &self.rid, &m, told, s),
                        None => proto::Receiver::already_complete(&prefix, &self.rid, &m, told),
                    };
                    confirm.retain = true;
                    self.holds.accepted(&mut self.conn.out, &prefix, &self.rid, &m);
                    crate::held::transmit(&mut self.conn.out, confirm, &m);
                    self.holds.confirmed(&mut self.conn.out, &id);
                }
                info!(%id, path = %path.display(), "already complete");
                let change = stored.map(|s| s.change);
                let file = VerifiedFile {
                    transfer: id,
                    path,
                    size: content.size,
                    sha256: sha,
                    sender: m.sender.clone(),
                    change,
                };
                self.had_it(file).await;
                return;
            }
            Ok(Decision::Exists(reason)) => return self.reject(&m, reason),
            Ok(Decision::Replay) => {
                let detail = "replay of a signed transfer already received here".to_owned();
                return self.reject_with(&m, RejectReason::Untrusted, detail);
            }
            Ok(Decision::Open(file, saved)) => (file, saved.map(|s| *s)),
            Err(e) => {
                warn!(%id, path = %paths.part.display(), error = %e, "cannot open the partial file");
                return self.reject_io(&m, &e);
            }
        };
        let mut cfg = self.opts.protocol.clone();
        // A stream's size is not in its offer: its chunks are held to the limit.
        cfg.max_size = cfg.max_size.or(self.opts.max_size);
        // Answered under the prefix the offer came on, never under a pattern.
        let prefix = self.endpoint.origin(&id).cloned().unwrap_or_else(|| self.prefix.clone());
        // Every chunk of it reaches us: the endpoint knows whether since before
        // its manifest, and the Ready says so.
        let early = self.endpoint.is_early(&id);
        let start = |saved| {
            let (cfg, prefix, rid, m) = (cfg.clone(), prefix.clone(), self.rid.clone(), m.clone());
            if early {
                proto::Receiver::new_early(cfg, prefix, rid, m, saved, now())
            } else {
                proto::Receiver::new(cfg, prefix, rid, m, saved, now())
            }
        };
        let mut rx = match start(saved) {
            Ok(rx) => rx,
            Err(e) => {
                // Saved state that does not add up: start over.
                debug!(%id, error = %e, "saved state refused; starting over");
                let fresh = {
                    let (paths, m) = (paths.clone(), m.clone());
                    blocking(move || store::fresh_part(&paths, &m)).await
                };
                if let Err(e) = fresh {
                    return self.reject_io(&m, &e);
                }
                start(None).expect("a receiver without saved state always starts")
            }
        };
        // The writer thread hashes what it writes, from where the saved state had
        // the hash: the engine's task does no SHA-256 and no read-back.
        rx.hash_elsewhere();
        let writer = match Writer::spawn(&self.writers, &rx.snapshot(), Arc::new(file), paths.clone()) {
            Ok(w) => w,
            Err(e) => {
                warn!(%id, error = %e, "cannot start a writer thread");
                return self.reject_io(&m, &e);
            }
        };
        if let Some(left) = crate::held::time_left(&m) {
            // Held at the broker: no sender to wait for, and the other receivers'
            // confirmations are watched from before the first chunk.
            rx.set_hold_until(now() + left);
            self.holds.accepted(&mut self.conn.out, &prefix, &self.rid, &m);
        }
        // Without the wildcard, subscribed before the state machine's Ready goes
        // out, through the same ordered queue: the chunks that follow it match. A
        // held transfer's own subscription is what makes the broker hand over its
        // retained chunks, which the wildcard's came before the manifest was taken.
        let own = !self.endpoint.chunk_wildcard() || m.is_held();
        let chunk_filter = own.then(|| prefix.chunk_filter(&id));
        if let Some(filter) = &chunk_filter {
            self.conn.out.subscribe(filter.clone());
        }
        let resumed_bytes = rx.bytes_held();
        info!(%id, path = %paths.final_path.display(), resumed_bytes, "accepted");
        self.events.emit(ReceiveEvent::Accepted {
            transfer: id,
            path: paths.final_path.clone(),
            size: m.size,
            resumed_bytes,
            sender: m.sender.clone(),
        });
        self.endpoint.accept(id);
        self.transfers.insert(
            id,
            Transfer {
                rx,
                paths,
                writer,
                finalizing: false,
                chunk_filter,
                unsaved: 0,
                unsaved_since: None,
                last_progress: None,
                local_error: None,
                ended: false,
                resumed_bytes,
                read_back_bytes: 0,
                over_share_drops: 0,
                unseal,
            },
        );
        // Saved state may already be complete (a crash between the check and the
        // rename): the state machine reports it verified at once.
        self.after_input(id).await;
    }

    pub(super) fn reject(&mut self, m: &Manifest, reason: RejectReason) {
        self.reject_with(m, reason, String::new());
    }

    /// Refuses an offer for a local I/O error, telling the sender the OS's words.
    pub(super) fn reject_io(&mut self, m: &Manifest, e: &io::Error) {
        self.reject_with(m, reject_reason(e), local::os_reason(e));
    }

    pub(super) fn reject_with(&mut self, m: &Manifest, reason: RejectReason, detail: String) {
        self.endpoint.refuse(m, reason, detail);
        self.drain_endpoint();
    }

    /// Where the file of a transfer completed earlier still is, with the bytes
    /// the manifest names ([`store::find_identical`], off the engine's thread),
    /// and what the sender is told when its name differs from the manifest's:
    /// remembering that it was received proves nothing about the disk now.
    pub(super) async fn still_complete(&self, m: &Manifest) -> Option<(PathBuf, Option<StoredAs>, [u8; 32])> {
        let name = sanitize_path(&m.name).ok()?;
        let dir = self.files_dir(m, false).await.ok()?;
        let (id, paths, m2) = (m.id, Paths::new(&self.state, &dir, &name, &m.id), m.clone());
        let check = move || store::check_parent_dirs(&paths).and_then(|()| store::find_identical(&paths, &m2));
        match blocking(check).await {
            Ok(found) => found.map(|(f, sha)| (f.in_dir(&dir), stored_as(m, &name, &f), sha)),
            Err(e) => {
                debug!(%id, error = %e, "cannot check a completed file");
                None
            }
        }
    }

    /// A file offered is here already, verified: said, counted, and with `--once`
    /// the end.
    pub(super) async fn had_it(&mut self, file: VerifiedFile) {
        self.report.files.push(ReceivedFile {
            transfer: file.transfer,
            path: file.path.clone(),
            size: file.size,
            resumed_bytes: file.size,
            read_back_bytes: 0,
            over_share_drops: 0,
            corrupt_chunks: 0,
            duplicate_chunks: 0,
        });
        self.events.emit(ReceiveEvent::AlreadyComplete(file));
        if self.opts.once {
            self.stop(Ok(())).await;
        }
    }

    /// The directory `m`'s file goes to: the output directory, or with
    /// [`ReceiveOptions::per_sender`] the sender's own under it, created if
    /// `create` ([`local::sender_dir`]).
    pub(super) async fn files_dir(&self, m: &Manifest, create: bool) -> io::Result<PathBuf> {
        if !self.opts.per_sender {
            return Ok(self.dir.clone());
        }
        let (root, sender) = (self.dir.clone(), m.sender.clone());
        blocking(move || local::sender_dir(&root, &sender, create)).await
    }
}

/// What the sender of `m` is told when its file, `safe` once its name was
/// cleaned, went under the name `stored`: `None` when that is the manifest's name,
/// and for an encrypted transfer, whose name travels sealed and must not come
/// back in the clear ([`proto::Ack::Stored`]).
pub(super) fn stored_as(m: &Manifest, safe: &SafePath, stored: &SafePath) -> Option<StoredAs> {
    if stored.as_str() == m.name || m.sealed.is_some() {
        return None;
    }
    let cleaned = crate::name::changes(&m.name, safe.as_str());
    let (change, detail) = if stored == safe {
        (NameChange::Sanitized, cleaned)
    } else if cleaned.is_empty() {
        (NameChange::Renamed, format!("a different {safe} was there"))
    } else {
        (NameChange::Renamed, format!("{cleaned}; a different {safe} was there"))
    };
    Some(StoredAs { name: stored.to_string(), change, detail })
}
