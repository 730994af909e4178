//! The sending side: files in, manifests and chunks out.
//!
//! One engine task runs every file's [`proto::Sender`] on one connection. For each
//! file it opens the file on a blocking thread (and hashes it there first only when
//! the manifest must carry the hash: a signed file), settles the chunk size against
//! the broker's CONNACK, builds the manifest, subscribes to `<prefix>/<id>/ack/+`
//! and only then lets the state machine publish the manifest (both go through one
//! ordered queue, so the broker sees the subscription first). Up to
//! [`SendOptions::concurrency`] files are in flight at once and share the
//! connection round-robin, one transmit each in turn.
//!
//! The file's SHA-256 (protocol version 4) is taken from the chunks as they are
//! read for sending, in file order (`InOrderHash`), and goes to the state machine,
//! which sends it with the end of round; chunks not sent in order are read for it
//! at the end (`finish_hash`). A file must not change while it is sent: once the
//! hash is complete the file must still have the manifest's size and modification
//! time, or the transfer ends with `Abort(Changed)` ([`ErrorKind::Integrity`]).
//!
//! A chunk is read from the file (a positional read on a blocking thread, straight
//! into its payload: `send/read.rs`) only when its state machine hands out a
//! [`proto::Payload::Chunk`], and a transmit is taken only when the outbox has
//! room: so the memory a send holds is a few chunks, not the window and not the
//! file.
//!
//! Over 600 lines, the engine of a send: one select loop and the handlers of what
//! it selects, which share the files in flight. Its public API is `send/api.rs`, the
//! preparation and hashing of files `send/prepare.rs`, the read of a chunk
//! `send/read.rs`, a held send `send/hold.rs`.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::autosize::{self, Probe, SizeMemory};
use crate::config::{self, ChunkSize, Config, MqttVersion};
use crate::conn::{self, ConnEvent, Connection};
use crate::handle::{Events, Handle};
use crate::mqtt::Failure;
use crate::proto::{self, Manifest, Payload, Prefix, ReceiverId, RejectReason, SendFailure, SenderEvent, TransferId};
use crate::{now, to_tokio, Error, ErrorKind, TransferFailure};

mod api;
mod hold;
mod prepare;
mod read;

pub use api::*;
use prepare::{check_file, finish_hash, hash_file, reading_done, InOrderHash, Job, Prepared};
use read::{read_chunk, Body};

/// How long a finished send may take to get its last messages out.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a cancelled send may take to get its aborts out, and then to close:
/// together well under the second in which Ctrl-C must end the program, whether
/// the broker answers or not. An abort that does not make it is no loss: a
/// receiver gives up on a silent sender by itself.
const CANCEL_GRACE: Duration = Duration::from_millis(500);
const CANCEL_CLOSE_GRACE: Duration = Duration::from_millis(300);
/// Transfers abandoned for smaller chunks whose abort is sent again after a
/// reconnect without a session, at most: a few halvings of the files in flight.
const ABANDONED_MEMORY: usize = 64;
/// Files hashed at once before sending: the pass is bound by the disk and the
/// CPU, and more at once only compete.
const PREPARING_AT_ONCE: usize = 4;

/// Starts sending `files` on a task of the current tokio runtime.
/// `sizes` holds the chunk sizes `auto` learned per broker, shared with other
/// sends of the same [`crate::Client`].
pub(crate) fn spawn(cfg: Config, files: Vec<SendFile>, opts: SendOptions, sizes: SizeMemory) -> SendHandle {
    let (events, rx) = Events::channel();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(cfg, files, opts, sizes, events, cancel.clone()));
    Handle::new(rx, task, cancel)
}

/// A file being sent.
struct Active {
    idx: usize,
    sender: proto::Sender,
    file: Arc<File>,
    ack_filter: String,
    complete: Vec<ReceiverId>,
    /// A local failure that the sender's own `Cancelled` (the file could not be
    /// read) or `NoProgress` (chunks never got through, see `fail_oversized`)
    /// stands for.
    local_failure: Option<Error>,
    /// Set once the state machine reported its end; the entry is dropped once its
    /// last transmits (the abort, the cleared manifest) are out.
    outcome: Option<Result<SentFile, Error>>,
    /// Whether chunks of this size get through (for `auto`).
    probe: Probe,
    /// Abandoned for a smaller chunk size: the file goes on as another transfer,
    /// and this one's end is not the file's.
    superseded: bool,
    /// The manifest of the file as it is (before encryption, if any).
    plain: Manifest,
    /// Encrypted: the chunk cipher; chunks are read as plaintext and sealed.
    cipher: Option<Arc<proto::sealed::ChunkCipher>>,
    /// The file's bytes in the chunks published, and their bytes on the wire.
    data_bytes: u64,
    wire_bytes: u64,
    /// For a manifest without the file's hash: the hash taken as chunks are read.
    hash: Option<Arc<std::sync::Mutex<InOrderHash>>>,
    /// The rest of the file is being read for the hash ([`finish_hash`]).
    finishing: bool,
}

async fn run(
    cfg: Config,
    files: Vec<SendFile>,
    mut opts: SendOptions,
    sizes: SizeMemory,
    events: Events<SendEvent>,
    cancel: CancellationToken,
) -> Result<SendReport, Error> {
    if files.is_empty() {
        return Err(Error::usage("no files to send"));
    }
    // Usage errors before any network traffic.
    if opts.hold.is_some() && cfg.version == MqttVersion::V311 {
        // Nothing retained under 3.1.1 could ever expire at the broker: a hold
        // nobody collects would stay there for good.
        return Err(Error::usage(
            "--hold needs MQTT 5 (messages held at the broker must expire, and MQTT 3.1.1 has no expiry); use -V 5",
        ));
    }
    let mut jobs = Vec::with_capacity(files.len());
    for file in files {
        jobs.push(check_file(file).await?);
    }
    let mut streams = jobs.iter().filter_map(|j| j.stream.clone());
    let stream = streams.next();
    if streams.next().is_some() {
        return Err(Error::usage("one send takes at most one stream (there is one standard input)"));
    }
    if stream.is_some() && (opts.hold.is_some() || opts.sign.is_some() || !opts.encrypt_to.is_empty()) {
        // Each needs the hash (or the ciphertext's) before the first chunk.
        return Err(Error::usage(
            "a stream cannot be sent signed, encrypted or held: its hash is known only at its end; \
             copy it to its end first (Spool::send_file)",
        ));
    }
    let max_chunk = match opts.chunk_size {
        ChunkSize::Fixed(c) => c.max(config::AUTO_CHUNK_CAP),
        ChunkSize::Auto => config::AUTO_CHUNK_CAP,
    };
    let client_id = cfg.client_id.clone().unwrap_or_else(|| format!("mqft-s-{:08x}", rand::random::<u32>()));
    // A sender receives only acks (at most 8 KiB); it sends chunks.
    let mqtt_opts = conn::options(&cfg, client_id, false, config::PACKET_OVERHEAD, max_chunk + config::PACKET_OVERHEAD);
    // Under a rate limit an end of round may wait behind the chunk the feed task
    // paces, the one in its channel and the one being written: waiting for tokens
    // is not loss, so the retransmission timeout covers it (pace.rs).
    let paced = crate::pace::queue_time(&cfg, 3, max_chunk + crate::pace::HEADER_ESTIMATE as u32);
    opts.protocol.rto = opts.protocol.rto.max(paced);
    opts.protocol.max_rto = opts.protocol.max_rto.max(opts.protocol.rto);
    let mut conn = Connection::open(&cfg, &mqtt_opts).await?;
    let info = conn.wait_up(&cancel).await?;
    conn.set_broker_timeout(Some(cfg.broker_timeout.unwrap_or(config::DEFAULT_SEND_BROKER_TIMEOUT)));
    // rumqttc keeps our QoS 1 publishes in flight within the Receive Maximum.
    info!(broker = conn.addr(), max_packet = ?info.max_packet_size, receive_max = ?info.receive_maximum, "connected");
    events.emit(SendEvent::Connected);
    // A chunk size the broker cannot take is an error before anything is sent.
    for job in &jobs {
        config::settle_chunk_size(opts.chunk_size, cfg.version, info.max_packet_size, &cfg.prefix, job.size)?;
    }
    if let Some(hold) = opts.hold {
        if !info.retain_available {
            return Err(Error::usage(format!(
                "--hold: the broker at {} keeps no retained messages (Retain Available 0)",
                cfg.addr()
            )));
        }
        // A held file is published whole and left at the broker: no state
        // machine, nobody to wait for (send/hold.rs).
        let setting = hold::Setting {
            cfg: &cfg,
            opts: &opts,
            hold,
            broker_max: info.max_packet_size,
            events: &events,
            cancel: &cancel,
        };
        let outcome = hold::run(&mut conn, &jobs, &setting).await;
        conn.close(if cancel.is_cancelled() { CANCEL_CLOSE_GRACE } else { CLOSE_GRACE }).await;
        return outcome?.into_iter().collect::<Result<Vec<_>, _>>().map(|files| SendReport { files });
    }
    let n = jobs.len();
    let mut engine = Engine {
        conn,
        prefix: cfg.prefix.clone(),
        endpoint: proto::SenderEndpoint::new(cfg.prefix.clone()),
        version: cfg.version,
        broker_max: info.max_packet_size,
        broker: cfg.addr(),
        sizes,
        abandoned: VecDeque::new(),
        opts,
        jobs,
        next_job: 0,
        preparing: JoinSet::new(),
        digesting: JoinSet::new(),
        deferred: Vec::new(),
        ready: VecDeque::new(),
        active: Vec::new(),
        rr: 0,
        results: (0..n).map(|_| None).collect(),
        events,
        cancelled: false,
        hashing: CancellationToken::new(),
        stream,
        stream_over: false,
    };
    let outcome = engine.run(&cancel).await;
    let Engine { conn, results, cancelled, .. } = engine;
    conn.close(if cancelled { CANCEL_CLOSE_GRACE } else { CLOSE_GRACE }).await;
    outcome?;
    let mut files = Vec::with_capacity(n);
    for r in results {
        files.push(r.unwrap_or(Err(Error::Cancelled))?);
    }
    Ok(SendReport { files })
}

struct Engine {
    conn: Connection,
    prefix: Prefix,
    /// Routes acks to `active` by the transfer id in their topic.
    endpoint: proto::SenderEndpoint,
    version: MqttVersion,
    broker_max: Option<u32>,
    /// `host:port`, the key of `sizes`.
    broker: String,
    /// What `auto` learned about chunk sizes, per broker.
    sizes: SizeMemory,
    /// Transfers abandoned for smaller chunks (id and run), newest last.
    abandoned: VecDeque<(TransferId, u32)>,
    opts: SendOptions,
    jobs: Vec<Job>,
    /// The next job to start preparing.
    next_job: usize,
    preparing: JoinSet<(usize, io::Result<Prepared>)>,
    /// Prepared files whose transfer id is already being sent (the same file twice):
    /// they start when it ends, and receivers answer at once that they have it.
    deferred: Vec<(Prepared, Manifest)>,
    /// Hashed files waiting for room under `in_flight_bytes`, in order.
    ready: VecDeque<(Prepared, Manifest)>,
    active: Vec<Active>,
    /// Round-robin position among `active`.
    rr: usize,
    results: Vec<Option<Result<SentFile, Error>>>,
    events: Events<SendEvent>,
    cancelled: bool,
    /// Stops the hashing threads on cancel.
    hashing: CancellationToken,
    /// Reads that finish a file's hash for its end of round ([`finish_hash`]).
    digesting: JoinSet<(TransferId, io::Result<()>)>,
    /// How far the stream being sent, if any, has been copied into its spool.
    stream: Option<tokio::sync::watch::Receiver<crate::spool::Filled>>,
    /// The copy is over (or its thread gone): nothing more to wait for.
    stream_over: bool,
}

impl Engine {
    async fn run(&mut self, cancel: &CancellationToken) -> Result<(), Error> {
        let mut give_up_at = None;
        loop {
            self.start_ready();
            self.start_preparing();
            self.pump().await;
            // `pump` may have reaped finished transfers: their slots go to the next
            // files now, before the wait below, which nothing else would end while
            // no transfer is active (with `concurrency` 1, the second file never
            // started).
            self.start_ready();
            self.start_preparing();
            let idle = self.next_job == self.jobs.len()
                && self.preparing.is_empty()
                && self.ready.is_empty()
                && self.deferred.is_empty()
                && self.active.is_empty();
            if idle {
                return Ok(());
            }
            let deadline = self.active.iter().filter_map(|a| a.sender.poll_timeout()).min();
            let room = self.conn.out.has_room();
            let following = !self.stream_over && self.stream.is_some();
            tokio::select! {
                _ = cancel.cancelled(), if !self.cancelled => {
                    self.cancel_all();
                    // With the broker unreachable, nothing more can get out.
                    let grace = if self.conn.events.is_up() { CANCEL_GRACE } else { Duration::ZERO };
                    give_up_at = Some(tokio::time::Instant::now() + grace);
                }
                // Cancelled, but the last messages cannot get out (the broker is gone).
                _ = sleep_until(give_up_at.unwrap_or_else(tokio::time::Instant::now)), if give_up_at.is_some() => {
                    return Ok(());
                }
                ev = self.conn.events.recv() => self.on_conn_event(ev?),
                Some(joined) = self.preparing.join_next(), if !self.preparing.is_empty() => {
                    if let Some((idx, prepared)) = reading_done(joined)? {
                        self.on_prepared(idx, prepared);
                    }
                }
                Some(joined) = self.digesting.join_next(), if !self.digesting.is_empty() => {
                    if let Some((id, read)) = reading_done(joined)? {
                        self.on_digest(id, read);
                    }
                }
                _ = sleep_until(to_tokio(deadline.unwrap_or_else(now))), if deadline.is_some() => {
                    let now = now();
                    for a in &mut self.active {
                        if a.sender.poll_timeout().is_some_and(|t| t <= now) {
                            a.sender.handle_timeout(now);
                        }
                    }
                }
                _ = self.conn.out.writable(), if !room => {}
                more = stream_changed(&mut self.stream), if following => {
                    self.stream_over |= !more;
                    self.follow_stream();
                }
            }
        }
    }

    /// Starts hashing files while fewer than `concurrency` are in flight, at most
    /// [`PREPARING_AT_ONCE`] at a time.
    fn start_preparing(&mut self) {
        let limit = self.opts.concurrency.max(1);
        loop {
            let in_flight = self.active.len() + self.preparing.len() + self.deferred.len() + self.ready.len();
            let room = in_flight < limit && self.preparing.len() < PREPARING_AT_ONCE;
            if self.cancelled || self.next_job >= self.jobs.len() || !room {
                break;
            }
            let idx = self.next_job;
            self.next_job += 1;
            let (path, known) = (self.jobs[idx].path.clone(), self.jobs[idx].sha256);
            let cancel = self.hashing.clone();
            // Only a signature needs the hash before the first chunk; everyone
            // else gets it at the end of the round (an encrypted file is hashed
            // in the pass that encrypts it).
            let hash = self.opts.sign.is_some();
            self.preparing.spawn_blocking(move || (idx, hash_file(idx, &path, known, hash, &cancel)));
        }
    }

    fn on_conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Up(info) => {
                info!(session_present = info.session_present, "reconnected");
                self.conn.out.resubscribe();
                if !info.session_present {
                    self.abort_abandoned_again();
                }
                // A broker that lost the session may have lost the retained
                // manifests too: the state machines publish them again.
                let now = now();
                for a in &mut self.active {
                    a.sender.handle_reconnect(info.session_present, now);
                    a.probe.on_up(a.sender.chunks_sent());
                }
                self.events.emit(SendEvent::Connected);
            }
            ConnEvent::Down(failure) => {
                let reason = match failure {
                    Failure::Refused(r) => format!("refused: {r}"),
                    Failure::Connect(e) => e.to_string(),
                    Failure::Closed => "closed".to_owned(),
                };
                info!(%reason, "connection lost");
                for a in &mut self.active {
                    a.probe.on_down(a.sender.chunks_sent());
                }
                self.events.emit(SendEvent::Disconnected { reason });
            }
            ConnEvent::Message { topic, payload, .. } => {
                let Some(proto::AckFor { id, from }) = self.endpoint.handle(&topic) else { return };
                let now = now();
                if let Some(a) = self.active.iter_mut().find(|a| a.sender.manifest().id == id) {
                    if let Err(e) = a.sender.handle_ack(&from, &payload, now) {
                        debug!(%id, receiver = %from, error = %e, "ignored a bad ack");
                    }
                }
            }
        }
    }

    fn on_prepared(&mut self, idx: usize, prepared: io::Result<Prepared>) {
        let path = self.jobs[idx].path.clone();
        let p = match prepared {
            Ok(p) => p,
            Err(e) => return self.record(idx, None, Err(Error::io("read", &path, e))),
        };
        if self.cancelled {
            return self.record(idx, None, Err(Error::Cancelled));
        }
        let stream = self.jobs[idx].stream.is_some();
        // A stream's chunks are settled for its unknown size.
        let size = if stream { proto::wire::UNKNOWN_SIZE } else { p.size };
        let chunk_size = match self.chunk_size_for(size) {
            Ok(c) => c,
            Err(e) => return self.record(idx, None, Err(e)),
        };
        let meta = proto::Meta { modified_ms: p.modified_ms, ..proto::Meta::default() };
        let name = self.jobs[idx].name.clone();
        // `--to`: the manifest names the receivers, and those not named keep quiet.
        let to = match &self.opts.protocol.wait {
            proto::Wait::Ids(ids) => ids.iter().cloned().collect(),
            _ => Vec::new(),
        };
        let made = if stream {
            // Sent as it is copied: its size and hash come at the end.
            Manifest::new_stream(name, chunk_size, proto::Meta::default(), rand::random())
        } else {
            Manifest::new(name, p.size, chunk_size, p.sha256, meta, rand::random())
        };
        let made = made.and_then(|m| m.with_to(to)).and_then(|m| m.with_sender(&self.opts.from));
        let manifest = match made {
            Ok(m) => m,
            Err(e) => {
                let err = Error::usage(format!("cannot describe {}: {e}", path.display()));
                return self.record(idx, None, Err(err));
            }
        };
        if self.active.iter().any(|a| a.sender.manifest().id == manifest.id) {
            self.deferred.push((p, manifest));
        } else {
            self.ready.push_back((p, manifest));
        }
    }

    /// Starts prepared files, in order, while the files being sent hold less than
    /// `in_flight_bytes` (one always may): a batch of large files goes one or a
    /// few at a time, each at full speed, while the next is hashed.
    fn start_ready(&mut self) {
        while !self.ready.is_empty() {
            // An open stream's size is the largest there is: nothing starts beside it.
            let bytes = self.active.iter().fold(0u64, |sum, a| sum.saturating_add(a.sender.manifest().size));
            if !self.active.is_empty() && bytes >= self.opts.in_flight_bytes {
                return;
            }
            let Some((p, manifest)) = self.ready.pop_front() else { return };
            if self.active.iter().any(|a| a.sender.manifest().id == manifest.id) {
                self.deferred.push((p, manifest));
            } else {
                self.start(p, manifest);
            }
        }
    }

    fn start(&mut self, p: Prepared, mut manifest: Manifest) {
        let plain = manifest.clone();
        let mut cipher = None;
        if !self.opts.encrypt_to.is_empty() {
            // One pass over the file, here on the engine: the SHA-256 of what will
            // travel goes in the manifest, and the plaintext's in its sealed part.
            // (A blocking pass on the engine; not yet on a blocking thread.)
            match crate::sealing::seal_file(&p.file, &manifest, &self.opts.encrypt_to) {
                Ok((outer, c)) => {
                    manifest = outer;
                    cipher = Some(Arc::new(c));
                }
                Err(e) => {
                    let path = self.jobs[p.idx].path.clone();
                    return self.record(p.idx, None, Err(Error::io("encrypt", &path, e)));
                }
            }
        }
        if let Some(key) = &self.opts.sign {
            // Signed here, as the manifest is final: a transfer started again
            // (smaller chunks, a deferred duplicate) is a new manifest, signed anew.
            proto::trust::sign(&mut manifest, key.signing_key(), crate::trusted::unix_ms());
        }
        let ack_filter = self.prefix.ack_filter(&manifest.id);
        // The subscription goes out before the manifest: both pass through the one
        // ordered queue.
        self.conn.out.subscribe(ack_filter.clone());
        let path = self.jobs[p.idx].path.clone();
        let (size, chunk_size, from) = (manifest.size, manifest.chunk_size, &manifest.sender);
        info!(path = %path.display(), id = %manifest.id, size, chunk_size, from, "sending");
        self.events.emit(SendEvent::Started {
            path,
            transfer: manifest.id,
            size: manifest.size,
            chunk_size: manifest.chunk_size,
        });
        let mut cfg = self.opts.protocol.clone();
        cfg.window = window_for(cfg.window, self.opts.window_bytes, manifest.chunk_size);
        cfg.eager_window = match self.opts.eager_bytes {
            0 => 0,
            bytes => window_for(cfg.window, bytes, manifest.chunk_size),
        };
        self.endpoint.opened(manifest.id);
        let stream = manifest.is_open();
        let hash = manifest.sha256.is_none().then(|| {
            let h =
                if stream { InOrderHash::stream() } else { InOrderHash::new(manifest.size, manifest.meta.modified_ms) };
            Arc::new(std::sync::Mutex::new(h))
        });
        let sender = proto::Sender::new(cfg, self.prefix.clone(), manifest, now());
        self.active.push(Active {
            idx: p.idx,
            sender,
            file: p.file,
            ack_filter,
            complete: Vec::new(),
            local_failure: None,
            outcome: None,
            probe: Probe::default(),
            superseded: false,
            plain,
            cipher,
            data_bytes: 0,
            wire_bytes: 0,
            hash,
            finishing: false,
        });
        if stream {
            self.follow_stream();
        }
    }

    /// Tells each open stream's state machine how much of the stream is in the
    /// spool, and its size once the copy ended; a copy that failed ends the
    /// transfer with its error.
    fn follow_stream(&mut self) {
        let Some(rx) = &self.stream else { return };
        let mut filled = rx.borrow().clone();
        if self.stream_over && filled.end.is_none() {
            filled.end = Some(Err("the thread copying the stream stopped".into()));
        }
        let now = now();
        // Only a stream's manifest is ever open.
        for a in &mut self.active {
            if !a.sender.manifest().is_open() || a.sender.is_done() {
                continue;
            }
            let chunk = u64::from(a.sender.manifest().chunk_size);
            a.sender.set_readable(u32::try_from(filled.bytes / chunk).unwrap_or(u32::MAX));
            let path = &self.jobs[a.idx].path;
            match &filled.end {
                None => {}
                Some(Err(e)) => {
                    a.local_failure = Some(Error::io("read", path, io::Error::other(e.clone())));
                    a.sender.abandon(now);
                }
                Some(Ok(())) => match a.sender.stream_ended(filled.bytes) {
                    Ok(()) => {
                        if let Some(h) = &a.hash {
                            h.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).stream_ended(filled.bytes);
                        }
                        let (path, transfer, size) = (path.clone(), a.sender.manifest().id, filled.bytes);
                        self.events.emit(SendEvent::StreamEnded { path, transfer, size });
                    }
                    Err(_) => {
                        let most = u64::from(proto::wire::MAX_CHUNK_COUNT) * chunk;
                        let detail =
                            format!("the stream is longer than {most} bytes, the most {chunk}-byte chunks allow");
                        a.local_failure = Some(Error::usage(detail));
                        a.sender.abandon(now);
                    }
                },
            }
        }
    }

    /// Hands each state machine that lacks its file's hash the hash once the
    /// chunks read in order have given it, or starts reading the rest of the
    /// file for it when the machine waits for it (`Sender::wants_digest`).
    fn settle_digests(&mut self) -> bool {
        let mut set = false;
        for a in &mut self.active {
            let wants = a.sender.manifest().sha256.is_none() && !a.sender.is_done();
            let Some(hash) = a.hash.as_ref().filter(|_| wants) else { continue };
            // Held for long only by `finish_hash`, whose result comes by itself.
            let ready = hash.try_lock().ok().and_then(|h| h.digest.map(|d| (d, h.changed)));
            if let Some((_, true)) = ready {
                let detail = "the file changed while it was being sent".to_owned();
                a.local_failure = Some(Error::Integrity { path: self.jobs[a.idx].path.clone(), detail });
                a.sender.file_changed(now());
                set = true;
            } else if let Some((digest, false)) = ready {
                a.sender.set_digest(digest, now());
                set = true;
            } else if a.sender.wants_digest() && !a.finishing {
                a.finishing = true;
                let (id, file, hash) = (a.sender.manifest().id, a.file.clone(), hash.clone());
                self.digesting.spawn_blocking(move || (id, finish_hash(&file, &hash)));
            }
        }
        set
    }

    /// The end of [`finish_hash`] for transfer `id`.
    /// The end of [`finish_hash`] for transfer `id`. The hash it completed, or
    /// the change it saw, is in the transfer's `InOrderHash`, which
    /// [`Engine::settle_digests`] hands on; only a failed read is news here.
    fn on_digest(&mut self, id: TransferId, read: io::Result<()>) {
        let Some(a) = self.active.iter_mut().find(|a| a.sender.manifest().id == id) else { return };
        a.finishing = false;
        if let Err(e) = read {
            let path = &self.jobs[a.idx].path;
            a.local_failure = Some(Error::io("read", path, e));
            a.sender.abandon(now());
        }
    }

    /// Publishes the abort and the cleared manifest of every transfer abandoned for
    /// smaller chunks again, after a reconnect without a session: the connection
    /// that carried them may have broken before they left (an oversized chunk ahead
    /// of them breaks it, by design), and a receiver still holding the old
    /// transfer open would refuse its successor, a file of the same name, as busy.
    /// They go out before the successors' manifests, which the state machines
    /// publish again next. Receivers ignore an abort of a transfer they ended.
    fn abort_abandoned_again(&mut self) {
        for &(id, run) in &self.abandoned {
            let abort = proto::Ctl::Abort { run, reason: proto::AbortReason::Superseded };
            self.conn.out.publish(self.prefix.ctl(&id), proto::Qos::AtLeastOnce, false, abort.encode());
            self.conn.out.publish(self.prefix.manifest(&id), proto::Qos::AtLeastOnce, true, Vec::new());
        }
    }

    /// The chunk size for a file of `size` bytes: the setting, settled against the
    /// broker; for `auto`, no larger than what was learned to get through it.
    fn chunk_size_for(&self, size: u64) -> Result<u32, Error> {
        let settle = |s| config::settle_chunk_size(s, self.version, self.broker_max, &self.prefix, size);
        let chunk = settle(self.opts.chunk_size)?;
        match (self.opts.chunk_size, self.sizes.ceiling(&self.broker)) {
            (ChunkSize::Auto, Some(ceiling)) if ceiling < chunk => settle(ChunkSize::Fixed(ceiling)),
            _ => Ok(chunk),
        }
    }

    /// With `auto`: starts again, with smaller chunks, every transfer whose chunks
    /// look too large for the broker (see [`autosize`]), and every one whose
    /// chunks are larger than what another transfer learned gets through.
    fn check_sizes(&mut self) {
        if self.cancelled {
            return;
        }
        if self.opts.chunk_size != ChunkSize::Auto {
            return self.fail_oversized();
        }
        for i in 0..self.active.len() {
            let a = &self.active[i];
            if a.superseded || a.sender.is_done() || a.probe.arrived {
                continue;
            }
            let m = a.sender.manifest();
            let largest = u64::from(m.chunk_size).min(m.size);
            let next = if a.probe.too_large(a.sender.stalled_rounds()) {
                autosize::smaller(m.chunk_size, m.size)
            } else {
                self.sizes.ceiling(&self.broker).filter(|&c| largest > u64::from(c))
            };
            if let Some(next) = next {
                self.restart(i, next);
            }
        }
    }

    /// With an explicit chunk size: ends every transfer whose connection broke
    /// again and again right after its chunks went out, none of them arrived
    /// (see [`autosize::BREAKS_LIMIT`]). A broker that cuts the connection at each
    /// oversized chunk also stalls the rounds, which end the send after their own
    /// limit; one that stops acknowledging publishes (RabbitMQ) stalls the
    /// connection for a keep-alive at each chunk, so that no round ever ends, and
    /// without this the send would go on for ever.
    fn fail_oversized(&mut self) {
        for a in &mut self.active {
            if a.superseded || a.sender.is_done() || a.probe.arrived || a.local_failure.is_some() {
                continue;
            }
            if a.probe.breaks < autosize::BREAKS_LIMIT {
                continue;
            }
            let path = self.jobs[a.idx].path.clone();
            let cause = TransferFailure::NothingGotThrough {
                breaks: a.probe.breaks,
                chunk_size: a.sender.manifest().chunk_size,
            };
            a.local_failure = Some(Error::Transfer { path, cause });
            a.sender.give_up(now());
        }
    }

    /// Abandons `active[i]` (an abort and a cleared manifest, as for a cancel) and
    /// starts its file again as a new transfer with chunks of at most `next` bytes.
    fn restart(&mut self, i: usize, next: u32) {
        self.sizes.lower(&self.broker, next);
        let a = &mut self.active[i];
        a.superseded = true;
        let now = now();
        a.sender.supersede(now);
        // The abort and the cleared manifest go out now, ahead of the new
        // transfer's manifest in the one ordered queue: a receiver that takes one
        // transfer at a time (`--once`) has let go of the old one when the new one
        // is offered, rather than refusing it as busy.
        while let Some(t) = a.sender.poll_transmit(now) {
            self.conn.out.transmit(t);
        }
        let old = a.plain.clone();
        // The hash learned while sending, if any: an encrypted file's manifest
        // carries the ciphertext's, not the file's.
        let known = if a.cipher.is_some() { old.sha256 } else { a.sender.manifest().sha256.or(old.sha256) };
        // What went on the wire: for an encrypted file, not the plain manifest.
        let wire = (a.sender.manifest().id, a.sender.manifest().run);
        let (idx, file) = (a.idx, a.file.clone());
        if self.abandoned.len() == ABANDONED_MEMORY {
            self.abandoned.pop_front();
        }
        self.abandoned.push_back(wire);
        let path = self.jobs[idx].path.clone();
        info!(
            path = %path.display(),
            id = %wire.0,
            "chunks of {} do not get through this broker; retrying with {}",
            autosize::human(old.chunk_size),
            autosize::human(next),
        );
        self.events.emit(SendEvent::ChunkSizeLowered {
            path: path.clone(),
            transfer: wire.0,
            chunk_size: old.chunk_size,
            retry_with: next,
        });
        let stream = self.jobs[idx].stream.is_some();
        // A stream read to its end has its size: the chunk size is settled for it.
        let ended = self.stream.as_ref().map(|rx| rx.borrow().clone()).filter(|f| f.end == Some(Ok(())));
        let size = match (stream, ended) {
            (true, Some(filled)) => filled.bytes,
            (true, None) => self.jobs[idx].size,
            (false, _) => old.size,
        };
        let manifest = self.chunk_size_for(size).and_then(|chunk_size| {
            if stream {
                // From the start of the spool, as a new stream: its end, if read
                // already, closes it at once (`follow_stream`).
                Manifest::new_stream(old.name.clone(), chunk_size, old.meta.clone(), rand::random())
            } else {
                Manifest::new(old.name.clone(), old.size, chunk_size, old.sha256, old.meta.clone(), rand::random())
            }
            // Addressed to the same receivers, from the same sender.
            .map(|mut m| {
                m.to = old.to.clone();
                m
            })
            .and_then(|m| m.with_sender(&old.sender))
            .map_err(|e| Error::usage(format!("cannot describe {}: {e}", path.display())))
        });
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => return self.record(idx, None, Err(e)),
        };
        let p = Prepared { idx, file, sha256: known, size: old.size, modified_ms: old.meta.modified_ms };
        if self.active.iter().any(|a| !a.superseded && a.sender.manifest().id == manifest.id) {
            self.deferred.push((p, manifest));
        } else {
            self.start(p, manifest);
        }
    }

    fn cancel_all(&mut self) {
        self.cancelled = true;
        let now = now();
        for a in &mut self.active {
            a.sender.cancel(now);
        }
        self.hashing.cancel();
        self.preparing.abort_all();
        self.digesting.abort_all();
        for (p, m) in std::mem::take(&mut self.deferred) {
            self.record(p.idx, Some(m.id), Err(Error::Cancelled));
        }
        for (p, _) in std::mem::take(&mut self.ready) {
            self.record(p.idx, None, Err(Error::Cancelled));
        }
        for idx in self.next_job..self.jobs.len() {
            self.record(idx, None, Err(Error::Cancelled));
        }
        self.next_job = self.jobs.len();
    }

    /// Moves work along: the outbox, then the state machines' events, then their
    /// transmits one at a time in turn, while the outbox has room.
    async fn pump(&mut self) {
        loop {
            self.conn.out.flush();
            self.settle_digests();
            self.drain_events();
            self.check_sizes();
            if !self.conn.out.has_room() {
                return;
            }
            let n = self.active.len();
            let mut sent = false;
            for k in 0..n {
                let i = (self.rr + k) % n;
                if let Some(t) = self.active[i].sender.poll_transmit(now()) {
                    self.rr = i + 1;
                    self.send(i, t).await;
                    sent = true;
                    break;
                }
            }
            // A round that ended waits for its hash, which the last chunk's read
            // may just have given.
            if !sent && !self.settle_digests() && !self.reap() {
                return;
            }
        }
    }

    /// Publishes one transmit, reading its chunk from the file if it is one.
    async fn send(&mut self, i: usize, t: proto::Transmit) {
        let c = match t.payload {
            Payload::Bytes(b) => return self.conn.out.publish(t.topic, t.qos, t.retain, b),
            Payload::Chunk(c) => c,
        };
        let file = self.active[i].file.clone();
        let sealed = self.active[i].cipher.clone().map(|k| (k, self.active[i].sender.manifest().chunk_size));
        let compress = self.opts.compress;
        let hash = self.active[i].hash.clone();
        // Sealing, compressing and hashing are CPU work too: off the async workers
        // with the read, which goes straight into the payload (send/read.rs).
        // Ciphertext does not compress, so a sealed chunk goes as it is.
        let read = tokio::task::spawn_blocking(move || {
            let body = match &sealed {
                Some((cipher, wire_chunk)) => Body::Sealed { cipher, wire_chunk: *wire_chunk },
                None => Body::Plain(compress),
            };
            read_chunk(&file, c, body, hash.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match read {
            Ok((payload, wire)) => {
                let a = &mut self.active[i];
                a.data_bytes += c.len;
                a.wire_bytes += wire as u64;
                self.conn.out.publish(t.topic, t.qos, t.retain, payload)
            }
            Err(e) => {
                // The file shrank or became unreadable while being sent.
                let a = &mut self.active[i];
                let path = &self.jobs[a.idx].path;
                a.local_failure = Some(Error::io("read", path, e));
                a.sender.abandon(now());
            }
        }
    }

    /// Turns the state machines' events into the caller's.
    fn drain_events(&mut self) {
        for a in &mut self.active {
            let m = a.sender.manifest();
            let (transfer, size, chunk) = (m.id, m.size, u64::from(m.chunk_size));
            let path = &self.jobs[a.idx].path;
            let bytes = |held: u64| held.saturating_mul(chunk).min(size);
            while let Some(ev) = a.sender.poll_event() {
                let path = path.clone();
                let out = match ev {
                    SenderEvent::ReceiverJoined { receiver, held } => {
                        SendEvent::ReceiverJoined { path, transfer, receiver, held_bytes: bytes(held) }
                    }
                    // The sender's end of a transfer abandoned for smaller chunks:
                    // the file goes on as another one.
                    SenderEvent::Failed(SendFailure::Cancelled) if a.superseded => {
                        a.outcome = Some(Err(Error::Cancelled));
                        continue;
                    }
                    SenderEvent::Progress { receiver, held } => {
                        a.probe.arrived = true;
                        SendEvent::Progress { path, transfer, receiver, bytes: bytes(held), total: size }
                    }
                    SenderEvent::ReceiverComplete { receiver } => {
                        a.probe.arrived = true;
                        a.complete.push(receiver.clone());
                        SendEvent::ReceiverComplete { path, transfer, receiver }
                    }
                    SenderEvent::ReceiverFailed { receiver, reason } => {
                        SendEvent::ReceiverFailed { path, transfer, receiver, reason }
                    }
                    SenderEvent::StoredAs { receiver, name, change, detail } => {
                        info!(
                            path = %path.display(),
                            %receiver,
                            stored_as = %crate::name::escape(&name),
                            %change,
                            "stored under another name"
                        );
                        SendEvent::StoredAs { path, transfer, receiver, name, change, detail }
                    }
                    SenderEvent::Queued { receiver, position } => {
                        SendEvent::Queued { path, transfer, receiver, position }
                    }
                    SenderEvent::Retrying { receiver, reason, retry_in } => {
                        SendEvent::Retrying { path, transfer, receiver, reason, retry_in }
                    }
                    SenderEvent::Finished => {
                        info!(path = %path.display(), id = %transfer, "sent");
                        let receivers = a.complete.clone();
                        let (chunks, transmissions) = (a.sender.manifest().chunk_count, a.sender.chunks_sent());
                        let (data_bytes, wire_bytes) = (a.data_bytes, a.wire_bytes);
                        a.outcome = Some(Ok(SentFile {
                            path: path.clone(),
                            transfer,
                            receivers,
                            chunks,
                            transmissions,
                            data_bytes,
                            wire_bytes,
                            held_until_ms: None,
                        }));
                        SendEvent::Finished { path, transfer }
                    }
                    SenderEvent::Failed(f) => {
                        let err = match (f, a.local_failure.take()) {
                            // The runtime's own reason (a read failure, chunks
                            // that never got through) for the state machine's.
                            (SendFailure::Cancelled | SendFailure::NoProgress { .. }, Some(local)) => local,
                            (f, _) => failure_error(&path, f),
                        };
                        info!(path = %path.display(), id = %transfer, error = %err, "send failed");
                        let ev = SendEvent::Failed {
                            path,
                            transfer: Some(transfer),
                            kind: err.kind(),
                            message: err.to_string(),
                        };
                        a.outcome = Some(Err(err));
                        ev
                    }
                    // Events added to the state machine later are news for the log.
                    other => {
                        debug!(?other, "sender event");
                        continue;
                    }
                };
                self.events.emit(out);
            }
        }
    }

    /// Drops the transfers that ended, once every state machine had nothing more to
    /// publish; starts the files that waited for them. True if any was dropped.
    fn reap(&mut self) -> bool {
        let (done, active): (Vec<Active>, Vec<Active>) =
            std::mem::take(&mut self.active).into_iter().partition(|a| a.outcome.is_some());
        self.active = active;
        if done.is_empty() {
            return false;
        }
        for mut a in done {
            self.conn.out.unsubscribe(std::mem::take(&mut a.ack_filter));
            let id = a.sender.manifest().id;
            self.endpoint.closed(&id);
            if let Some(outcome) = a.outcome.take().filter(|_| !a.superseded) {
                self.results[a.idx] = Some(outcome);
            }
            if let Some(pos) = self.deferred.iter().position(|(_, m)| m.id == id) {
                let (p, m) = self.deferred.remove(pos);
                self.start(p, m);
            }
        }
        true
    }

    /// Records the end of a file that never got to a state machine.
    fn record(&mut self, idx: usize, transfer: Option<TransferId>, result: Result<SentFile, Error>) {
        if let Err(e) = &result {
            self.events.emit(SendEvent::Failed {
                path: self.jobs[idx].path.clone(),
                transfer,
                kind: e.kind(),
                message: e.to_string(),
            });
        }
        self.results[idx] = Some(result);
    }
}

/// The error for a state machine's failure.
/// The window in chunks: `chunks`, cut to `bytes` of chunks of `chunk_size`, one
/// chunk at least.
fn window_for(chunks: u32, bytes: u64, chunk_size: u32) -> u32 {
    let fit = bytes / u64::from(chunk_size.max(1));
    chunks.min(u32::try_from(fit).unwrap_or(u32::MAX)).max(1)
}

fn failure_error(path: &Path, f: SendFailure) -> Error {
    let path = path.to_owned();
    match f {
        SendFailure::NoReceivers { joined, wanted } => Error::NoReceiver { path, joined, wanted },
        SendFailure::Rejected { receiver, reason, detail } => Error::Rejected { path, receiver, reason, detail },
        // Still waiting in a receiver's queue when time ran out: nobody took the file.
        SendFailure::StillQueued { receiver, position } => Error::StillQueued { path, receiver, position },
        SendFailure::HashMismatch { receiver } => {
            Error::Integrity { path, detail: format!("receiver {receiver} computed a different sha-256") }
        }
        SendFailure::Cancelled => Error::Cancelled,
        other => Error::Transfer { path, cause: TransferFailure::Send(other) },
    }
}

/// Waits for the stream's copy to go further: false once its thread is gone.
/// Pending for ever without a stream (the caller does not poll it then).
async fn stream_changed(rx: &mut Option<tokio::sync::watch::Receiver<crate::spool::Filled>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::window_for;

    #[test]
    fn the_window_is_cut_to_its_bytes() {
        // 64 MiB of 256 KiB chunks is 256; of 1 MiB chunks 64; of 16 KiB chunks
        // 1024, cut to the 256 asked.
        assert_eq!(window_for(256, 64 << 20, 256 << 10), 256);
        assert_eq!(window_for(256, 64 << 20, 1 << 20), 64);
        assert_eq!(window_for(256, 16 << 20, 256 << 10), 64);
        assert_eq!(window_for(256, 16 << 20, 16 << 10), 256);
        // Chunks larger than the whole budget still leave one in flight.
        assert_eq!(window_for(256, 1 << 20, 4 << 20), 1);
        assert_eq!(window_for(0, 16 << 20, 1024), 1);
    }
}
