//! `send --hold`: files left at the broker for receivers that come online later.
//!
//! A held file is published once, whole, and left: the manifest (with
//! [`Manifest::hold_until_ms`]) and every chunk on its own topic, each retained,
//! QoS 1, with an MQTT 5 Message Expiry Interval of the hold. The broker keeps
//! the latest retained message of every topic, so it then holds the whole file and
//! hands it to whoever subscribes within the hold; at its end every one of them
//! expires at the broker by itself. The sender has nothing to repair and nobody to
//! wait for: receivers fetch what they lack from the retained copies
//! ([`proto::ReceiverEvent::Refetch`]), and the one that makes the set of
//! confirmations complete clears the hold (PROTOCOL.md 17).
//!
//! So the engine here is a loop, one file after another: hash, describe, publish
//! everything, wait until the broker has acknowledged every publish (from then on
//! the broker holds the file), and report who confirmed meanwhile. Receivers
//! online while it publishes get the chunks live and confirm as usual; their
//! confirmations (retained) are read from `<prefix>/<id>/ack/+`, and if the set is
//! complete before the sender leaves it clears the hold itself.
//!
//! A reconnect without a session while publishing may have lost publishes the
//! broker never acknowledged, so the file is published again from the manifest on.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{hash_file, read_chunk, Body, Job, SendEvent, SendOptions, SentFile};
use crate::config::{self, Config};
use crate::conn::{ConnEvent, Connection};
use crate::handle::Events;
use crate::held::{clear, expiry_secs, EXPIRY_PROPERTY_LEN};
use crate::proto::{self, Ack, Manifest, Prefix, Qos, ReceiverId, Topic};
use crate::Error;

/// What a held send tells about one file.
struct Held<'a> {
    manifest: Manifest,
    prefix: &'a Prefix,
    /// Who confirmed so far, from the retained (or live) `Complete`/`Stored`.
    confirmed: BTreeSet<ReceiverId>,
    /// Cleared already: nothing more to clear.
    cleared: bool,
}

impl Held<'_> {
    /// True once every receiver the hold is for has confirmed: all of `to`, or
    /// any one when it is for anybody.
    fn all_confirmed(&self) -> bool {
        match self.manifest.to.is_empty() {
            true => !self.confirmed.is_empty(),
            false => self.manifest.to.iter().all(|r| self.confirmed.iter().any(|c| c.as_str() == r)),
        }
    }
}

/// What every held file of one send shares.
pub(super) struct Setting<'a> {
    pub cfg: &'a Config,
    pub opts: &'a SendOptions,
    /// How long each file is held.
    pub hold: Duration,
    /// The broker's Maximum Packet Size, from its CONNACK.
    pub broker_max: Option<u32>,
    pub events: &'a Events<SendEvent>,
    pub cancel: &'a CancellationToken,
}

/// Sends `jobs` held, one after another, on a connection that is up. Returns one
/// result per job, in order.
pub(super) async fn run(
    conn: &mut Connection,
    jobs: &[Job],
    s: &Setting<'_>,
) -> Result<Vec<Result<SentFile, Error>>, Error> {
    let (events, cancel) = (s.events, s.cancel);
    let mut results = Vec::with_capacity(jobs.len());
    for (idx, job) in jobs.iter().enumerate() {
        if cancel.is_cancelled() {
            results.push(Err(Error::Cancelled));
            continue;
        }
        let r = hold_one(conn, job, idx, s).await;
        if let Err(e) = &r {
            events.emit(SendEvent::Failed {
                path: job.path.clone(),
                transfer: None,
                kind: e.kind(),
                message: e.to_string(),
            });
            if matches!(e, Error::BrokerLost { .. }) {
                return Err(r.err().unwrap_or(Error::Cancelled));
            }
        }
        results.push(r);
    }
    Ok(results)
}

async fn hold_one(conn: &mut Connection, job: &Job, idx: usize, s: &Setting<'_>) -> Result<SentFile, Error> {
    let Setting { cfg, opts, hold, broker_max, events, cancel } = *s;
    let path = job.path.clone();
    let hashing = cancel.child_token();
    let (p, known) = (path.clone(), job.sha256);
    let prepared = tokio::task::spawn_blocking(move || hash_file(idx, &p, known, true, &hashing))
        .await
        .map_err(|e| Error::joined("hashing", e))?
        .map_err(|e| Error::io("read", &path, e))?;
    // Every held publish carries the expiry property: the chunk leaves it room.
    let room = broker_max.map(|m| m.saturating_sub(EXPIRY_PROPERTY_LEN));
    let chunk_size = config::settle_chunk_size(opts.chunk_size, cfg.version, room, &cfg.prefix, prepared.size)?;
    let meta = proto::Meta { modified_ms: prepared.modified_ms, ..proto::Meta::default() };
    let to: Vec<ReceiverId> = match &opts.protocol.wait {
        proto::Wait::Ids(ids) => ids.iter().cloned().collect(),
        _ => Vec::new(),
    };
    let mut manifest =
        Manifest::new(job.name.clone(), prepared.size, chunk_size, prepared.sha256, meta, rand::random())
            .and_then(|m| m.with_to(to))
            .and_then(|m| m.with_sender(&opts.from))
            .map_err(|e| Error::usage(format!("cannot describe {}: {e}", path.display())))?;
    let mut cipher = None;
    if !opts.encrypt_to.is_empty() {
        let (outer, c) = crate::sealing::seal_file(&prepared.file, &manifest, &opts.encrypt_to)
            .map_err(|e| Error::io("encrypt", &path, e))?;
        manifest = outer;
        cipher = Some(std::sync::Arc::new(c));
    }
    let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
    manifest.hold_until_ms = Some(crate::trusted::unix_ms().saturating_add(hold_ms));
    if let Some(key) = &opts.sign {
        // Signed last: the signature covers the hold too.
        proto::trust::sign(&mut manifest, key.signing_key(), crate::trusted::unix_ms());
    }
    let expiry = expiry_secs(hold);
    let id = manifest.id;
    info!(path = %path.display(), %id, size = manifest.size, chunk_size, hold_secs = expiry, "holding");
    events.emit(SendEvent::Started { path: path.clone(), transfer: id, size: manifest.size, chunk_size });
    let mut held = Held { manifest, prefix: &cfg.prefix, confirmed: BTreeSet::new(), cleared: false };
    // Subscribed before anything is published, through the same ordered queue:
    // confirmations from receivers online now, and those of an earlier hold of the
    // same file, retained.
    let ack_filter = cfg.prefix.ack_filter(&id);
    conn.out.subscribe(ack_filter.clone());
    let (mut data_bytes, mut wire_bytes, mut transmissions) = (0u64, 0u64, 0u32);
    'publish: loop {
        let m = held.manifest.clone();
        conn.out.publish_expiring(cfg.prefix.manifest(&id), Qos::AtLeastOnce, true, m.encode(), expiry);
        for index in 0..m.chunk_count {
            while !conn.out.has_room() {
                tokio::select! {
                    _ = cancel.cancelled() => return Err(cancelled(conn, &mut held, index)),
                    _ = conn.out.writable() => {}
                    ev = conn.events.recv() => {
                        if on_event(conn, &mut held, ev?, &path, events) {
                            continue 'publish;
                        }
                    }
                }
            }
            let c = proto::ChunkRef {
                run: m.run,
                seq: index,
                index,
                offset: m.chunk_offset(index),
                len: m.chunk_len(index),
            };
            let (file, compress, cipher, wire_chunk) =
                (prepared.file.clone(), opts.compress, cipher.clone(), m.chunk_size);
            // Read straight into the payload (send/read.rs). The file was hashed
            // before its manifest: nothing to hash here.
            let read = tokio::task::spawn_blocking(move || {
                let body = match &cipher {
                    Some(cipher) => Body::Sealed { cipher, wire_chunk },
                    None => Body::Plain(compress),
                };
                read_chunk(&file, c, body, None)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let (payload, wire) = match read {
                Ok(r) => r,
                Err(e) => {
                    let _ = cancelled(conn, &mut held, index);
                    return Err(Error::io("read", &path, e));
                }
            };
            data_bytes += c.len;
            wire_bytes += wire as u64;
            transmissions += 1;
            conn.out.publish_expiring(cfg.prefix.chunk(&id, index), Qos::AtLeastOnce, true, payload, expiry);
        }
        // The broker holds the file once it has acknowledged every publish.
        let mut acked = conn.acked_watch();
        while !conn.all_acked() {
            tokio::select! {
                _ = cancel.cancelled() => return Err(cancelled(conn, &mut held, m.chunk_count)),
                _ = acked.changed() => {}
                _ = conn.out.writable(), if !conn.out.has_room() => {}
                ev = conn.events.recv() => {
                    if on_event(conn, &mut held, ev?, &path, events) {
                        continue 'publish;
                    }
                }
            }
            conn.out.flush();
        }
        break;
    }
    // Confirmations that are already in (receivers online while this ran) come
    // with the acks above; take what has arrived without waiting for more.
    while let Ok(ev) = tokio::time::timeout(Duration::ZERO, conn.events.recv()).await {
        on_event(conn, &mut held, ev?, &path, events);
    }
    conn.out.unsubscribe(ack_filter);
    info!(path = %path.display(), %id, confirmed = held.confirmed.len(), "held at the broker");
    events.emit(SendEvent::Finished { path: path.clone(), transfer: id });
    Ok(SentFile {
        path,
        transfer: id,
        receivers: held.confirmed.iter().cloned().collect(),
        chunks: held.manifest.chunk_count,
        transmissions,
        data_bytes,
        wire_bytes,
        held_until_ms: held.manifest.hold_until_ms,
    })
}

/// Handles what the connection reports while a file is held. True when the file
/// must be published again: a reconnect without a session may have lost
/// publishes that the broker never acknowledged.
fn on_event(
    conn: &mut Connection,
    held: &mut Held<'_>,
    ev: ConnEvent,
    path: &std::path::Path,
    events: &Events<SendEvent>,
) -> bool {
    match ev {
        ConnEvent::Up(info) => {
            conn.out.resubscribe();
            events.emit(SendEvent::Connected);
            if !info.session_present {
                info!("reconnected without a session: publishing the held file again");
                return true;
            }
        }
        ConnEvent::Down(failure) => {
            debug!(?failure, "connection lost while holding");
            events.emit(SendEvent::Disconnected { reason: format!("{failure:?}") });
        }
        ConnEvent::Message { topic, payload, .. } => {
            let Some(Topic::Ack(id, from)) = held.prefix.parse(&topic) else { return false };
            if id != held.manifest.id || payload.is_empty() {
                return false;
            }
            match Ack::decode(&payload, held.manifest.chunk_count) {
                Ok(Ack::Complete { sha256 } | Ack::Stored { sha256, .. }) if Some(sha256) == held.manifest.sha256 => {
                    if held.confirmed.insert(from.clone()) {
                        info!(receiver = %from, "confirmed");
                        events.emit(SendEvent::ReceiverComplete {
                            path: path.to_owned(),
                            transfer: id,
                            receiver: from,
                        });
                    }
                    if held.all_confirmed() && !held.cleared {
                        // Everyone it was for has it: nothing stays at the broker.
                        clear(&mut conn.out, held.prefix, &held.manifest, held.confirmed.iter());
                        held.cleared = true;
                    }
                }
                Ok(_) => {}
                Err(e) => debug!(receiver = %from, error = %e, "ignored a bad ack"),
            }
        }
    }
    false
}

/// Clears what was published of a hold that is given up (cancelled, or the
/// file became unreadable): the manifest and the first `published` chunks.
fn cancelled(conn: &mut Connection, held: &mut Held<'_>, published: u32) -> Error {
    if !held.cleared {
        let m = &held.manifest;
        conn.out.publish(held.prefix.manifest(&m.id), Qos::AtLeastOnce, true, Vec::new());
        for index in 0..published.min(m.chunk_count) {
            conn.out.publish(held.prefix.chunk(&m.id, index), Qos::AtLeastOnce, true, Vec::new());
        }
        held.cleared = true;
    }
    Error::Cancelled
}
