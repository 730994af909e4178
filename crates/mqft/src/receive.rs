//! The receiving side: manifests and chunks in, files out.
//!
//! One engine task subscribes `<prefix>/+/manifest` and `<prefix>/+/ctl` and hands
//! every message to a [`proto::ReceiverEndpoint`], which routes it by topic to the
//! transfer it belongs to and decides on offers what needs no I/O (queued past
//! `max_concurrent`, too large, bad or misplaced manifests, finished transfers asked
//! about again, pending a check of the file). On an offer the endpoint lets through
//! the engine decides the rest: refuse it (a bad name, a different file of that name
//! exists and the [`OnConflict`] policy says skip or fail, not enough free space for
//! it and the transfers already open), answer that the file is already here (the
//! same bytes under the name, or a numbered one, whatever transfer brought them),
//! or accept it. Every refusal comes
//! before anything is written. An accepted transfer gets a [`proto::Receiver`], a
//! `.part` file in the state folder and a subscription to `<prefix>/<id>/chunk/+`, dropped when
//! the transfer ends. A member of a receiver pool ([`ReceiveOptions::pool`]) subscribes
//! the manifests as `$share/<pool>/<prefix>/+/manifest` instead, so that each offer
//! reaches one member (see [`pool`]).
//!
//! # Files in the output directory, and the state folder
//! The output directory `out` gets the received files (with
//! [`ReceiveOptions::per_sender`], in the sender's directory under it; a name
//! with `/` in the directories it names) and one state folder, `out/.mqft/`
//! ([`ReceiveOptions::state_dir`] moves it elsewhere; see `store` for its layout
//! and docs/ARCHITECTURE.md for its lifetime). For a transfer with id `id`:
//! - `part/<id>.part` in the state folder holds the bytes, each chunk written at
//!   its offset;
//! - `part/<id>.state` holds the [`proto::ResumeState`] (postcard), replaced
//!   atomically (temporary file, fsync, rename) and only after an fdatasync of the
//!   `.part`, so the state never claims bytes the disk does not have; it is saved
//!   every [`ReceiveOptions::checkpoint_chunks`] chunks, every
//!   [`ReceiveOptions::checkpoint_interval`], and when the receive stops;
//! - once the SHA-256 checks out, the `.part` is fsynced and renamed to `out/<name>`
//!   (never over an existing file unless [`OnConflict::Overwrite`]; with the default
//!   [`OnConflict::Rename`], to the first free `out/<name> (n).<ext>`), and the
//!   directory fsynced. Only then is the sender told `Complete`, or `Stored` with
//!   the name when it is not the manifest's. The transfer is then a record in the
//!   state folder's `completed.log` (under the path it got), and its `.state` goes.
//!
//! When the same bytes are offered again under a name, after a restart, by a
//! second send, or with another chunk size or MQTT version, a file under that
//! name or a numbered one whose bytes hash to the manifest's SHA-256 (and no
//! `.part`) is answered `Complete` at once, without a byte sent; a fingerprint in
//! the record spares the hash while the file is provably unchanged (see `store`).
//! The same check stands behind every `Complete` answered from this process's
//! memory of finished transfers. Records are forgotten after
//! [`ReceiveOptions::forget_after`]; the files of transfers that stopped advancing
//! are removed after [`ReceiveOptions::prune_after`] (at start and on an hourly
//! tick, never for a transfer open here). A resume keeps only the chunks whose
//! bytes in the `.part` still have the CRC32 they arrived with. A different file
//! of the same name is kept beside (renamed around, the sender told the name),
//! replaced, or the offer refused ([`RejectReason::Skipped`],
//! [`RejectReason::Exists`]), as [`ReceiveOptions::on_conflict`] says. The files
//! are created and reopened so that a symlink, hard link or FIFO planted at any of
//! these names is never written through (see `store`).
//!
//! Each chunk that the state machine hands out as a [`proto::Write`] is queued to
//! the transfer's writer thread (module `writer`), which writes it at its offset
//! while the engine goes on with the next chunk, and takes the file's SHA-256 on
//! with it (reading back the chunks that came ahead of a gap once it fills): the
//! engine hashes nothing and reads nothing back, and hands the state machine the
//! hash's progress as the thread reports it ([`proto::Receiver::hashed_through`]).
//! The thread runs its jobs in order, so a checkpoint, a read-back for the hash,
//! or the final rename only ever sees bytes that are in the file. Memory stays within the connection's budget for
//! received payloads and each writer's queue, whatever the file size.
//!
//! Over 600 lines, the engine of a receive: one select loop and the handlers of what
//! it selects (messages, writer results, timers), which share the open transfers. Its
//! public API is `receive/api.rs`, the state folder `receive/local.rs`, and the
//! decision on an offer (the disk's checks, a refusal, or the transfer opened)
//! `receive/offer.rs`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod api;
mod local;
mod offer;
pub mod pool;

use offer::stored_as;

pub use api::*;

pub use crate::store::STATE_DIR_NAME;

use crate::config::{self, Config};
use crate::conn::{self, Charge, ConnEvent, Connection};
use crate::handle::{Events, Handle};
use crate::mqtt::Failure;
use crate::name::{sanitize_path, SafePath};
use crate::proto::{
    self, AbortReason, EndpointEvent, Manifest, NameChange, Prefix, PrefixPattern, ReceiveFailure, ReceiverEndpoint,
    ReceiverEvent, ReceiverId, RejectReason, Routed, StoredAs, TransferId,
};
use crate::sealing::Unseal;
pub use crate::store::OnConflict;
use crate::store::{self, Paths, StateDir};
use crate::trusted::Gate;
use crate::writer::{Job, Pool, Writer, WriterEvent};
use crate::{now, to_tokio, Error, TransferFailure};

/// How long a stopping receiver may take to get its last messages out.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The least time between two progress events of one transfer.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Starts receiving into `dir` on a task of the current tokio runtime.
pub(crate) fn spawn(cfg: Config, dir: PathBuf, opts: ReceiveOptions) -> ReceiveHandle {
    let (events, rx) = Events::channel();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(cfg, dir, opts, events, cancel.clone()));
    Handle::new(rx, task, cancel)
}

async fn run(
    cfg: Config,
    dir: PathBuf,
    opts: ReceiveOptions,
    events: Events<ReceiveEvent>,
    cancel: CancellationToken,
) -> Result<ReceiveReport, Error> {
    // Before anything is created: a `/` or `+` in it would change the filter.
    if let Some(name) = &opts.pool {
        pool::check_pool_name(name).map_err(Error::usage)?;
    }
    let meta = tokio::fs::metadata(&dir).await.map_err(|e| Error::io("open", &dir, e))?;
    if !meta.is_dir() {
        return Err(Error::usage(format!("{} is not a directory", dir.display())));
    }
    // A directory where nothing can be created (read-only mount, permissions) would
    // refuse every file later, one i/o error at a time: say so now, with the reason.
    let probe_dir = dir.clone();
    blocking(move || local::probe_dir(&probe_dir)).await.map_err(|e| Error::io("create files in", &dir, e))?;
    let state = local::open_state(&dir, &opts).await?;
    local::tidy(&state, std::collections::HashSet::new(), opts.prune_after).await;
    // Both read the file system (the canonical directory, the host name): on the
    // blocking pool, as every file operation of the engine.
    let (rid, client_id) = {
        let (at, pool_name, rid, client_id) =
            (dir.clone(), opts.pool.clone(), opts.receiver_id.clone(), cfg.client_id.clone());
        blocking(move || {
            let dir = at;
            let rid = rid.unwrap_or_else(|| match pool_name {
                Some(_) => pool::member_id(&dir),
                None => default_receiver_id(&dir),
            });
            // Stable across restarts, so the broker keeps the session; the directory is part
            // of it so that two receivers on one host do not take each other's session. A
            // pool member's receiver id is its own, and so is this.
            let client_id = client_id.unwrap_or_else(|| {
                let canon = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
                let digest = proto::integrity::sha256(canon.as_os_str().as_encoded_bytes());
                format!("mqft-r-{rid}-{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3])
            });
            Ok((rid, client_id))
        })
        .await
        .map_err(|e| Error::io("open", &dir, e))?
    };
    // Chunks may be as large as the protocol allows: a smaller limit would make an
    // MQTT 5 broker drop them silently.
    let max_incoming = proto::wire::MAX_CHUNK_SIZE + config::PACKET_OVERHEAD;
    // A pool member's session must die with it: Mosquitto keeps handing a
    // persistent session its share of a shared subscription's messages while the
    // member is gone, and those offers would wait there unread.
    let persistent = opts.pool.is_none();
    let mqtt_opts = conn::options(&cfg, client_id, persistent, max_incoming, config::PACKET_OVERHEAD);
    let mut conn = Connection::open(&cfg, &mqtt_opts).await?;
    let info = conn.wait_up(&cancel).await?;
    // Unlimited unless asked for: a receiver rides out a broker's restart.
    conn.set_broker_timeout(cfg.broker_timeout);
    info!(broker = conn.addr(), receiver = %rid, session_present = info.session_present, "connected");
    events.emit(ReceiveEvent::Connected { receiver: rid.clone() });
    let patterns = if opts.prefixes.is_empty() { vec![cfg.prefix.clone().into()] } else { opts.prefixes.clone() };

    let (writer_tx, writer_events) = mpsc::unbounded_channel();
    let writers = Pool::new(Pool::size_for(opts.max_concurrent), writer_tx)
        .map_err(|e| Error::io("start the writer threads for", &dir, e))?;
    let mut limits = proto::Limits::default();
    limits.max_concurrent = opts.max_concurrent;
    limits.max_size = opts.max_size;
    // A pool member that holds an offer in its queue would take it later, while
    // the sender offers it again to the others: it refuses it for now instead
    // (QueueFull), and the sender's next offer goes to another member.
    limits.queue = if opts.pool.is_some() { 0 } else { opts.queue };
    limits.queue_bytes = opts.queue_bytes;
    let mut endpoint = ReceiverEndpoint::with_patterns(patterns, rid.clone(), limits);
    // A pool's members share the offers, not one transfer's chunks.
    let early_chunks = opts.early_chunks && opts.pool.is_none();
    endpoint.set_chunk_wildcard(early_chunks);
    // Only the patterns the endpoint kept: one covered by another would have the
    // broker deliver its messages twice. The chunks last: under MQTT 3.1.1 the
    // broker hands a new subscription every retained message under it, and the
    // retained chunks of held transfers must not crowd the retained manifests out
    // of a short queue (Mosquitto's max_queued_messages). A manifest published live between the
    // two subscriptions is taken as early while its first chunks were missed:
    // the sender's next end of round repairs them (PROTOCOL.md 3.6).
    for pattern in endpoint.patterns() {
        let manifests = pattern.manifest_filter();
        conn.out.subscribe(match &opts.pool {
            Some(name) => pool::shared_filter(name, &manifests),
            None => manifests,
        });
        conn.out.subscribe(pattern.ctl_filter());
        if early_chunks {
            // Live chunks only (MQTT 5): held transfers' retained ones come with
            // their own subscription once the transfer is taken, not all at once
            // at every start.
            conn.out.subscribe_live(pattern.chunks_filter());
        }
    }
    // The replay memory of signed transfers lives in the state folder.
    let gate = if opts.trust.is_empty() {
        None
    } else {
        let (at, keys, max_age) = (state.root.clone(), opts.trust.clone(), opts.max_age);
        Some(
            blocking(move || Ok(Gate::load(&at, keys, max_age)))
                .await
                .map_err(|e| Error::io("read", &state.root, e))?,
        )
    };
    let mut engine = Engine {
        conn,
        writers,
        writer_events,
        prefix: cfg.prefix.clone(),
        rid,
        dir,
        next_tidy: tokio::time::Instant::now() + local::tidy_every(opts.prune_after),
        opts,
        state,
        transfers: BTreeMap::new(),
        endpoint,
        events,
        report: ReceiveReport::default(),
        stopping: None,
        gate,
        holds: crate::held::Holds::default(),
    };
    let outcome = engine.run(&cancel).await;
    let Engine { conn, report, stopping, transfers, writers, .. } = engine;
    // Whatever the writer threads still have queued (the last checkpoints) must be
    // on disk before the caller may exit.
    drop(transfers);
    let panics = tokio::task::spawn_blocking(move || writers.join()).await.unwrap_or(1);
    if panics > 0 {
        warn!(panics, "a writer thread panicked");
    }
    conn.close(CLOSE_GRACE).await;
    outcome?;
    match stopping {
        Some(Err(e)) => Err(e),
        _ => Ok(report),
    }
}

/// `<host>-<6 hex>`: the host name cut to the receiver id alphabet (`receiver` if
/// there is none), and the first 3 bytes of the SHA-256 of the canonical output
/// directory. Two receivers on one host into two directories get two ids; the
/// same directory gets the same id after a restart, with no state kept, so a
/// restarted receiver resumes as the same receiver.
pub fn default_receiver_id(dir: &std::path::Path) -> ReceiverId {
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let digest = proto::integrity::sha256(canon.as_os_str().as_encoded_bytes());
    let host = host_receiver_id();
    // 7 bytes for the dash and the hex: the host part is cut to fit 64.
    let host = &host.as_str()[..host.as_str().len().min(proto::topic::MAX_RECEIVER_ID_LEN - 7)];
    let id = format!("{host}-{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2]);
    // The host part is non-empty and of the alphabet already, and hex digits and
    // a dash are too.
    ReceiverId::new(&id).expect("a host id plus a dash and hex is a valid receiver id")
}

/// The host name, cut to the receiver id alphabet; `receiver` if there is none.
fn host_receiver_id() -> ReceiverId {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let id: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .take(proto::topic::MAX_RECEIVER_ID_LEN)
        .collect();
    ReceiverId::new(&id).unwrap_or_else(|_| ReceiverId::new("receiver").expect("'receiver' is a valid receiver id"))
}

/// One accepted transfer.
struct Transfer {
    rx: proto::Receiver,
    paths: Paths,
    /// Writes, checkpoints, read-backs and the final rename, in order.
    writer: Writer,
    /// Verified, and the final rename is queued: no more checkpoints.
    finalizing: bool,
    /// The transfer's own chunk subscription, when the wildcard does not cover it.
    chunk_filter: Option<String>,
    /// Chunks written since the last checkpoint, and when the first of them came.
    unsaved: u32,
    unsaved_since: Option<Instant>,
    /// When the last progress event went out, and the bytes it reported.
    last_progress: Option<(Instant, u64)>,
    /// The local error behind a `fail`, for the caller.
    local_error: Option<Error>,
    /// Completed or failed; dropped once its last transmits are out.
    ended: bool,
    /// Bytes held when accepted, and bytes read back for the hash since.
    resumed_bytes: u64,
    read_back_bytes: u64,
    /// Chunks dropped while its queue held more than its share of the budget.
    over_share_drops: u64,
    /// Encrypted: how to decrypt the verified ciphertext, and the real file.
    unseal: Option<Unseal>,
}

struct Engine {
    conn: Connection,
    /// The writer threads, which report to `writer_events`.
    writers: Pool,
    writer_events: mpsc::UnboundedReceiver<WriterEvent>,
    prefix: Prefix,
    rid: ReceiverId,
    dir: PathBuf,
    opts: ReceiveOptions,
    /// The state folder: parts, resume states, the completed store.
    state: Arc<StateDir>,
    /// When stale partial files are next looked for, and old records forgotten.
    next_tidy: tokio::time::Instant,
    transfers: BTreeMap<TransferId, Transfer>,
    /// Routes messages to `transfers` by topic, and keeps the rules that span them:
    /// what to do with an offer, the queue of offers waiting for a slot, the memory
    /// of finished transfers. It is told of every transfer opened, ended and dropped.
    endpoint: ReceiverEndpoint,
    events: Events<ReceiveEvent>,
    report: ReceiveReport,
    /// Set when the receive is ending: cancelled (`Ok`), or `once` met.
    stopping: Option<Result<(), Error>>,
    /// With trusted keys: the signature checks and the replay memory.
    gate: Option<Gate>,
    /// Held transfers (`send --hold`) accepted here: other receivers'
    /// confirmations, refetches, clearing the hold (held.rs).
    holds: crate::held::Holds,
}

impl Engine {
    async fn run(&mut self, cancel: &CancellationToken) -> Result<(), Error> {
        let mut give_up_at: Option<tokio::time::Instant> = None;
        loop {
            self.pump();
            // Transfers that ended free their slots for the offers waiting.
            if self.endpoint.queued() > 0 {
                self.admit_queued().await;
                self.pump();
            }
            if self.stopping.is_some() {
                if self.transfers.is_empty() {
                    return Ok(());
                }
                give_up_at.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_GRACE);
            }
            let deadline = self.deadline();
            let room = self.conn.out.has_room();
            tokio::select! {
                _ = cancel.cancelled(), if self.stopping.is_none() => {
                    info!("stopping");
                    self.stop(Ok(())).await;
                }
                _ = sleep_until(give_up_at.unwrap_or_else(tokio::time::Instant::now)), if give_up_at.is_some() => {
                    return Ok(());
                }
                ev = self.conn.events.recv() => self.on_conn_event(ev?).await,
                Some(ev) = self.writer_events.recv() => self.on_writer_event(ev).await,
                _ = sleep_until(to_tokio(deadline.unwrap_or_else(now))), if deadline.is_some() => {
                    self.on_timer().await;
                }
                _ = self.conn.out.writable(), if !room => {}
                _ = sleep_until(self.next_tidy) => {
                    // Awaited here, so no transfer opens while the parts are looked at.
                    local::tidy(&self.state, self.transfers.keys().copied().collect(), self.opts.prune_after).await;
                    self.next_tidy = tokio::time::Instant::now() + local::tidy_every(self.opts.prune_after);
                }
            }
        }
    }

    /// The earliest protocol timer or checkpoint.
    fn deadline(&self) -> Option<Instant> {
        let interval = self.opts.checkpoint_interval;
        self.transfers
            .values()
            .flat_map(|t| {
                [t.rx.poll_timeout(), t.unsaved_since.filter(|_| !t.ended && !t.finalizing).map(|s| s + interval)]
            })
            .flatten()
            .min()
    }

    /// Sends what the state machines have to say while the outbox has room, and
    /// drops the transfers that ended once they said it.
    fn pump(&mut self) {
        self.drain_endpoint();
        self.conn.out.flush();
        let mut ended = Vec::new();
        for (id, t) in &mut self.transfers {
            loop {
                if !self.conn.out.has_room() {
                    return;
                }
                match t.rx.poll_transmit() {
                    // A held transfer's confirmation is retained, and expires with the hold.
                    Some(tx) => crate::held::transmit(&mut self.conn.out, tx, t.rx.manifest()),
                    None => break,
                }
            }
            if t.ended {
                ended.push(*id);
            }
        }
        for id in ended {
            if let Some(t) = self.transfers.remove(&id) {
                self.endpoint.closed(&id);
                if let Some(filter) = t.chunk_filter {
                    self.conn.out.unsubscribe(filter);
                }
                t.writer.finish();
            }
        }
    }

    async fn on_conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Up(info) => {
                info!(session_present = info.session_present, "reconnected");
                // rumqttc does not restore subscriptions, and a broker that lost the
                // session has none.
                self.conn.out.resubscribe();
                self.events.emit(ReceiveEvent::Connected { receiver: self.rid.clone() });
            }
            ConnEvent::Down(failure) => {
                let reason = match failure {
                    Failure::Refused(r) => format!("refused: {r}"),
                    Failure::Connect(e) => e.to_string(),
                    Failure::Closed => "closed".to_owned(),
                };
                info!(%reason, "connection lost");
                self.events.emit(ReceiveEvent::Disconnected { reason });
            }
            // A pool member takes offers from live publications only: the broker
            // may hand it a transfer's retained manifest that another member took.
            ConnEvent::Message { topic, retain: true, .. }
                if self.opts.pool.is_some() && topic.ends_with("/manifest") =>
            {
                debug!(topic, "pool: a retained manifest ignored");
            }
            ConnEvent::Message { topic, payload, retain, charge } => {
                self.on_message(&topic, payload, retain, charge).await;
            }
        }
    }

    /// Routes a message through the endpoint, and does what it asks.
    async fn on_message(&mut self, topic: &str, payload: Bytes, retained: bool, charge: Charge) {
        // Other receivers' confirmations of a held transfer: not the endpoint's.
        if self.holds.on_message(&mut self.conn.out, topic, &payload) {
            return;
        }
        // A retained copy may be of a manifest published long ago, its first chunks
        // gone by: never taken as early.
        let routed = if retained {
            self.endpoint.handle_retained(topic, &payload)
        } else {
            self.endpoint.handle(topic, &payload)
        };
        self.drain_endpoint();
        match routed {
            Some(Routed::Manifest(m)) => {
                // Under --trust a re-publication must be signed too, or anyone could
                // change the run a transfer's acks follow.
                let trusted = self.gate.as_ref().is_none_or(|g| g.admit(&m).is_ok());
                if let Some(t) = self.transfers.get_mut(&m.id).filter(|_| trusted) {
                    // The sender restarted or re-published: the state machine answers.
                    let _ = t.rx.handle_manifest(&m, now());
                }
            }
            Some(Routed::Chunk(id, index)) => self.on_chunk(id, index, payload, charge).await,
            Some(Routed::Ctl(id)) => self.on_ctl(id, &payload).await,
            Some(Routed::Offer(m)) => self.offer(m).await,
            Some(Routed::CheckHistory(m)) => {
                // Remembering that the file was received proves nothing about the
                // disk now: the endpoint answers `Complete` only once it is checked.
                let found = self.still_complete(&m).await;
                let stored = found.as_ref().and_then(|(_, s, _)| s.clone());
                let told = found.as_ref().map(|&(_, _, sha)| m.sha256.unwrap_or(sha));
                let next = self.endpoint.history_checked_as(m.clone(), told, stored.as_ref());
                self.drain_endpoint();
                // A manifest offered again is news ("already have"), once it carries
                // the hash that proves it (without one the answer is a claim the
                // sender checks); an end of round that asks again after a lost
                // Complete is not.
                let news = topic.ends_with("/manifest") && m.sha256.is_some();
                if let Some((path, stored, sha)) = found.filter(|_| news) {
                    // Said, as for an offer answered from the marker on disk: a hook
                    // or log that watches for "already have" sees every one.
                    info!(id = %m.id, "offered again: already complete");
                    let change = stored.map(|s| s.change);
                    let file = VerifiedFile {
                        transfer: m.id,
                        path,
                        size: m.size,
                        sha256: sha,
                        sender: m.sender.clone(),
                        change,
                    };
                    self.had_it(file).await;
                }
                if let Some(Routed::Offer(m)) = next {
                    self.offer(m).await;
                }
            }
            Some(Routed::Unsubscribe(filter)) => {
                debug!(filter, "unsubscribing a stale chunk subscription");
                self.conn.out.unsubscribe(filter);
            }
            // Routes added to the endpoint later are for this runtime to learn.
            Some(other) => debug!(?other, "message routed to nothing this runtime handles"),
            None => {}
        }
    }

    /// Sends what the endpoint answered itself, and reports what it did.
    fn drain_endpoint(&mut self) {
        while let Some(tx) = self.endpoint.poll_transmit() {
            self.conn.out.transmit(tx);
        }
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                EndpointEvent::Offered { id, name, size, sender } => {
                    info!(%id, name = %crate::name::escape(&name), size, sender, "offered");
                    self.events.emit(ReceiveEvent::Offered { transfer: id, name, size, sender });
                }
                EndpointEvent::Queued { id, name, position, sender } => {
                    info!(%id, name = %crate::name::escape(&name), position, "queued");
                    self.events.emit(ReceiveEvent::Queued { transfer: id, name, position, sender });
                }
                EndpointEvent::Refused { id, name, reason, detail, sender } => {
                    info!(%id, name = %crate::name::escape(&name), %reason, detail, "rejected");
                    self.events.emit(ReceiveEvent::Rejected { transfer: id, name, reason, detail, sender });
                }
                EndpointEvent::Withdrawn { id } => info!(%id, "queued offer withdrawn by its sender"),
                // At -v: the first thing to look at when a receiver "ignores" a sender.
                EndpointEvent::NotAddressed { id } => info!(%id, "not for me: addressed to other receivers"),
                // Events added to the endpoint later are news for the log only.
                other => debug!(?other, "endpoint event"),
            }
        }
    }

    /// Offers the queue's head again while a slot is free: each goes through the
    /// whole decision, and may still be refused (a file of that name arrived
    /// meanwhile, the disk filled...).
    async fn admit_queued(&mut self) {
        while self.stopping.is_none() && self.conn.out.has_room() {
            let next = self.endpoint.next_admitted();
            self.drain_endpoint();
            let Some(Routed::Offer(m)) = next else { return };
            debug!(id = %m.id, "a slot freed: offering the head of the queue again");
            self.offer(m).await;
        }
    }

    async fn on_chunk(&mut self, id: TransferId, index: u32, payload: Bytes, charge: Charge) {
        // The endpoint routes here only chunks of transfers in the map.
        let transfers = self.transfers.len();
        let Some(t) = self.transfers.get_mut(&id) else { return };
        // This transfer's disk is behind and holds more than its share of the
        // budget the others need: the chunk goes as if lost, unseen by the state
        // machine, and is requested again (module `writer`).
        if t.writer.over_share(&charge, transfers) {
            if t.over_share_drops == 0 {
                debug!(%id, index, "the file's writes are behind: dropping its chunks while it holds more than its share");
            }
            t.over_share_drops += 1;
            return;
        }
        match t.rx.handle_chunk(index, &payload, now()) {
            Ok(Some(w)) => {
                // A failed write comes back as a `WriterEvent::Failed`.
                // Raw, the chunk stays in the payload's buffer; decompressed, it
                // has its own.
                let data = match w.data {
                    std::borrow::Cow::Borrowed(d) => payload.slice_ref(d),
                    std::borrow::Cow::Owned(d) => Bytes::from(d),
                };
                t.writer.write(charge, w.index, w.offset, data);
                t.unsaved += 1;
                t.unsaved_since.get_or_insert_with(now);
            }
            Ok(None) => {}
            Err(e) => debug!(%id, index, error = %e, "bad chunk dropped"),
        }
        self.after_input(id).await;
    }

    async fn on_ctl(&mut self, id: TransferId, payload: &[u8]) {
        // The endpoint answers control messages of transfers not in the map itself.
        let Some(t) = self.transfers.get_mut(&id) else { return };
        if let Err(e) = t.rx.handle_ctl(payload, now()) {
            debug!(%id, error = %e, "bad control message");
        }
        self.after_input(id).await;
    }

    async fn on_timer(&mut self) {
        let now = now();
        let ids: Vec<TransferId> = self.transfers.keys().copied().collect();
        for id in ids {
            if let Some(t) = self.transfers.get_mut(&id) {
                if t.rx.poll_timeout().is_some_and(|d| d <= now) {
                    t.rx.handle_timeout(now);
                }
            }
            self.after_input(id).await;
        }
    }

    /// What a writer thread reports: a failed write or checkpoint, or the outcome
    /// of a final rename.
    async fn on_writer_event(&mut self, ev: WriterEvent) {
        match ev {
            WriterEvent::Failed { id, op, path, error } => {
                // A transfer that already ended has said all it will say.
                let Some(t) = self.transfers.get_mut(&id).filter(|t| !t.ended) else { return };
                warn!(%id, path = %path.display(), %error, "{op} failed");
                t.rx.fail_with(reject_reason(&error), local::os_reason(&error), now());
                t.local_error.get_or_insert(Error::io(op, &path, error));
                self.after_input(id).await;
            }
            WriterEvent::Hashed { id, through, hash, read_back } => {
                let Some(t) = self.transfers.get_mut(&id).filter(|t| !t.ended) else { return };
                t.read_back_bytes += read_back;
                if let Err(e) = t.rx.hashed_through(through, hash) {
                    // Cannot happen: the thread hashes only chunks it wrote, which
                    // the state machine counted as held before they were queued.
                    warn!(%id, error = %e, "hash progress refused");
                }
                self.after_input(id).await;
            }
            WriterEvent::Finalized { id, result } => self.on_finalized(id, result).await,
        }
    }

    /// A verified file has its final name (or could not get it).
    async fn on_finalized(&mut self, id: TransferId, result: io::Result<PathBuf>) {
        let Some(t) = self.transfers.get_mut(&id).filter(|t| !t.ended) else { return };
        let path = match result {
            Ok(path) => path,
            Err(e) => {
                warn!(%id, error = %e, "cannot give the file its name");
                // A file of that name arrived while this one was on its way.
                let reason = match reject_reason(&e) {
                    RejectReason::Exists if self.opts.on_conflict == OnConflict::Skip => RejectReason::Skipped,
                    r => r,
                };
                t.rx.fail_with(reason, local::os_reason(&e), now());
                t.local_error.get_or_insert(Error::io("rename", &t.paths.final_path, e));
                return self.after_input(id).await;
            }
        };
        let manifest = t.rx.manifest().clone();
        // The path taken, relative to the transfer's directory.
        let got = path.strip_prefix(&t.paths.dir).ok().and_then(|p| p.to_str()).and_then(|p| sanitize_path(p).ok());
        let stored = match (sanitize_path(&manifest.name), got) {
            (Ok(name), Some(got)) => stored_as(&manifest, &name, &got),
            _ => None,
        };
        let change = stored.as_ref().map(|s| s.change);
        t.rx.finalized_as(stored, now());
        if manifest.is_held() {
            // The confirmation goes out (retained) before anything that clears the
            // hold, which must clear it too: one ordered queue.
            while let Some(tx) = t.rx.poll_transmit() {
                crate::held::transmit(&mut self.conn.out, tx, &manifest);
            }
            self.holds.confirmed(&mut self.conn.out, &id);
        }
        t.ended = true;
        self.endpoint.ended(&id);
        t.unsaved_since = None;
        let size = manifest.size;
        info!(%id, path = %path.display(), size, sender = manifest.sender, "received");
        // An encrypted file's real size and hash, not its ciphertext's.
        // Verified: the manifest has its hash, from the sender's manifest or its end
        // of round.
        let (size, sha256) = t
            .unseal
            .as_ref()
            .map_or((size, manifest.sha256.unwrap_or_default()), |u| (u.opened.inner.size, u.opened.inner.sha256));
        if let Some(gate) = &mut self.gate {
            // In memory before `Completed`, so that a replay the moment after is
            // caught; on disk (one short append) from the blocking pool.
            if let Some(persist) = gate.remember(&manifest) {
                // Awaited, so that the records reach the file in order (a
                // rewrite never overtakes an append it does not hold).
                let _ = blocking(move || {
                    persist.write();
                    Ok(())
                })
                .await;
            }
        }
        self.events.emit(ReceiveEvent::Completed(VerifiedFile {
            transfer: id,
            path: path.clone(),
            size,
            sha256,
            sender: manifest.sender.clone(),
            change,
        }));
        self.report.files.push(ReceivedFile {
            transfer: id,
            path,
            size,
            resumed_bytes: t.resumed_bytes,
            read_back_bytes: t.read_back_bytes,
            over_share_drops: t.over_share_drops,
            corrupt_chunks: t.rx.corrupt_chunks(),
            duplicate_chunks: t.rx.duplicate_chunks(),
        });
        self.endpoint.completed(manifest);
        if self.opts.once && self.stopping.is_none() {
            self.stopping = Some(Ok(()));
            // The other transfers are told and saved, and queued senders told.
            self.stop_endpoint();
            self.stop_others(Some(id)).await;
        }
    }

    /// After any input to a transfer: act on its events, checkpoint when due,
    /// report progress. (The hash is the writer thread's: `WriterEvent::Hashed`.)
    async fn after_input(&mut self, id: TransferId) {
        let Some(t) = self.transfers.get_mut(&id) else { return };
        while let Some(ev) = t.rx.poll_event() {
            match ev {
                ReceiverEvent::Verified => {
                    // The rename runs after every queued write; its outcome comes
                    // back as `WriterEvent::Finalized` (`on_finalized`), so other
                    // transfers go on meanwhile.
                    t.finalizing = true;
                    t.unsaved_since = None;
                    let job = Job::Finalize {
                        complete: t.rx.snapshot(),
                        conflict: self.opts.on_conflict,
                        modified_ms: t
                            .unseal
                            .as_ref()
                            .map_or(t.rx.manifest().meta.modified_ms, |u| u.opened.inner.meta.modified_ms),
                        unseal: t.unseal.clone().map(Box::new),
                    };
                    t.writer.queue(job);
                }
                ReceiverEvent::Refetch(chunks) => self.holds.refetch(&mut self.conn.out, &id, &chunks),
                ReceiverEvent::Failed(failure) => {
                    t.ended = true;
                    self.endpoint.ended(&id);
                    self.holds.ended(&mut self.conn.out, &id);
                    let path = t.paths.final_path.clone();
                    info!(%id, path = %path.display(), %failure, "receive failed");
                    let aborted_empty = matches!(failure, ReceiveFailure::SenderAborted(_)) && t.rx.bytes_held() == 0;
                    let stale = failure == ReceiveFailure::SenderAborted(AbortReason::Changed);
                    if failure == ReceiveFailure::HashMismatch || aborted_empty || stale {
                        // The bytes are known bad, or there are none (a sender that
                        // gave up on its chunk size starts a new transfer): nothing
                        // to resume, so no `.part` is left behind.
                        t.writer.queue(Job::Discard);
                    } else if t.local_error.is_none() {
                        checkpoint(t);
                    }
                    // After a local error the last checkpoint stands: the state
                    // machine counts a chunk as held before it is written, so a
                    // failed write must not be recorded as held.
                    t.unsaved_since = None;
                    let mut err = failure_error(&path, &failure, t.local_error.take());
                    if failure == ReceiveFailure::HashMismatch && t.rx.manifest().signature.is_some() {
                        // The digest is the sender's signed one: the bytes were
                        // changed on the way, whatever their CRCs said.
                        let detail = "sha-256 of the received bytes does not match the signed digest".into();
                        err = Error::Integrity { path: path.clone(), detail };
                        warn!(%id, path = %path.display(), "does not match the signed digest; discarded");
                    }
                    self.events.emit(ReceiveEvent::Failed { transfer: id, path, failure: failure.clone() });
                    // A sender whose user cancelled the transfer this receive took
                    // will not bring the file: `once` would wait forever. One that
                    // gave up may be run again and resume, so that one is waited out.
                    let for_good = matches!(
                        failure,
                        ReceiveFailure::HashMismatch
                            | ReceiveFailure::SenderAborted(AbortReason::Cancelled | AbortReason::Changed)
                    ) || matches!(failure, ReceiveFailure::Local(r) if r != RejectReason::Cancelled);
                    if self.opts.once && self.stopping.is_none() && for_good {
                        self.stopping = Some(Err(err));
                        self.stop_endpoint();
                        self.stop_others(Some(id)).await;
                    }
                    return;
                }
                // Events added to the state machine later are news for the log.
                other => debug!(?other, "receiver event"),
            }
        }
        // Only `pump` removes transfers, and it never runs inside `after_input`.
        let t = self.transfers.get_mut(&id).expect("the transfer is still in the map");
        let now = now();
        let due = t.unsaved >= self.opts.checkpoint_chunks
            || t.unsaved_since.is_some_and(|s| now >= s + self.opts.checkpoint_interval);
        if due && !t.ended && !t.finalizing {
            checkpoint(t);
        }
        let bytes = t.rx.bytes_held();
        if t.last_progress.is_none_or(|(at, reported)| bytes != reported && now >= at + PROGRESS_INTERVAL) {
            t.last_progress = Some((now, bytes));
            self.events.emit(ReceiveEvent::Progress {
                transfer: id,
                path: t.paths.final_path.clone(),
                bytes,
                total: t.rx.manifest().size,
            });
        }
    }

    /// Ends the receive: every open transfer is saved, and its sender told.
    async fn stop(&mut self, outcome: Result<(), Error>) {
        self.stopping.get_or_insert(outcome);
        self.stop_endpoint();
        self.stop_others(None).await;
    }

    /// Saves and cancels every open transfer but `except`.
    async fn stop_others(&mut self, except: Option<TransferId>) {
        let ids: Vec<TransferId> = self
            .transfers
            .iter()
            // A file being renamed is as good as here: let it finish.
            .filter(|(id, t)| Some(**id) != except && !t.ended && !t.finalizing)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(t) = self.transfers.get_mut(&id) {
                checkpoint(t);
                t.rx.fail(RejectReason::Cancelled, now());
            }
            Box::pin(self.after_input(id)).await;
        }
    }

    /// No new offers; every queued sender is told `Cancelled`.
    fn stop_endpoint(&mut self) {
        self.endpoint.stop();
        self.drain_endpoint();
    }
}

/// What to do with an offer, as found on disk.
enum Decision {
    /// Under this name (the offered one or a numbered one), with this SHA-256.
    AlreadyComplete(SafePath, [u8; 32]),
    /// Refused as [`RejectReason::Exists`] or [`RejectReason::Skipped`].
    Exists(RejectReason),
    /// A signed transfer completed here before, and its file is not here as it was.
    Replay,
    Open(File, Option<Box<proto::ResumeState>>),
}

/// Queues a checkpoint of a transfer's state: the writer thread makes the `.part`
/// durable and saves the state after the writes queued before it. A failure there
/// fails the transfer (`WriterEvent::Failed`), since resuming from it would not be
/// safe.
fn checkpoint(t: &mut Transfer) {
    // Nothing new, or a local error since the last one (see the `Failed` arm of
    // `after_input`): the last checkpoint stands.
    if (t.unsaved == 0 && t.unsaved_since.is_none()) || t.local_error.is_some() {
        return;
    }
    t.writer.queue(Job::Checkpoint(t.rx.snapshot()));
    t.unsaved = 0;
    t.unsaved_since = None;
}

/// Runs blocking file work off the engine's thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// The reason given to the sender for a local I/O error.
fn reject_reason(e: &io::Error) -> RejectReason {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => RejectReason::DiskFull,
        io::ErrorKind::AlreadyExists => RejectReason::Exists,
        _ => RejectReason::Io,
    }
}

/// The error for a failed transfer, when `once` makes it the receive's result.
fn failure_error(path: &std::path::Path, failure: &ReceiveFailure, local: Option<Error>) -> Error {
    let path = path.to_owned();
    match failure {
        ReceiveFailure::HashMismatch => {
            Error::Integrity { path, detail: "sha-256 of the received bytes does not match the manifest".into() }
        }
        ReceiveFailure::SenderAborted(AbortReason::Changed) => {
            Error::Integrity { path, detail: "the file changed at the sender while it was being sent".into() }
        }
        &ReceiveFailure::SenderAborted(reason) => {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Error::Transfer { path, cause: TransferFailure::SenderAborted { name, reason } }
        }
        other => local.unwrap_or_else(|| Error::Transfer { path, cause: TransferFailure::Receive(other.clone()) }),
    }
}
