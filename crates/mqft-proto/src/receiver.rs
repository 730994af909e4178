//! The receiver's state machine, for one transfer.
//!
//! A `Receiver` is made when the caller decides to accept a manifest (or to resume
//! one from saved state), and answers at once with [`Ack::Ready`] and the chunks it
//! already holds; one made with [`Receiver::new_early`] says too that the chunks the
//! sender sent before anyone answered reach it (protocol version 5). Then, for every chunk:
//! - the payload is decoded and checked against the manifest (index, length, CRC32);
//!   a bad chunk is dropped, so the next end of round lists it as missing;
//! - a chunk not held yet is handed back as a [`Write`] for the caller to put at its
//!   offset, and marked held;
//! - if it is the next chunk in file order it is hashed right away, so in the common
//!   case the file is never read back; chunks that arrived early are hashed once the
//!   gap before them fills, by reading them back ([`Receiver::next_hash_read`]);
//!   or, for a caller that hashes what it writes itself ([`Receiver::hash_elsewhere`],
//!   a runtime whose writer thread has the bytes), not here at all: the caller
//!   reports its progress with [`Receiver::hashed_through`];
//! - every [`ReceiverConfig::ack_every`] chunks, or [`ReceiverConfig::ack_delay`]
//!   after the first unacknowledged one, an [`Ack::Progress`] grants the sender
//!   credit.
//!
//! An end of round ([`Ctl::EndRound`]) is answered with the missing ranges, and
//! brings the file's SHA-256 when the manifest did not carry it (protocol version
//! 4: the sender hashes as it reads). Once every chunk is held and hashed and the
//! sender's SHA-256 is known, the two are compared: on a match
//! the receiver reports [`ReceiverEvent::Verified`], the caller moves the file to its
//! final name and calls [`Receiver::finalized`], and only then is
//! [`Ack::Complete`] sent. On a mismatch the transfer fails, loudly, on both sides.
//!
//! [`Receiver::snapshot`] gives what a restarted receiver needs to go on: the held
//! ranges, each held chunk's CRC32 and the hash's progress. Take it only after every
//! [`Write`] handed out before it is durably on disk.
//!
//! # Resuming only what is proven
//! Saved state says what was written; the partial file may have changed since (a
//! crash that lost writes the state did not, a user, another program). Before a
//! restarted receiver builds on saved state, the caller reads every held chunk
//! back and lets [`ResumeState::prove`] compare it with the CRC32 the chunk
//! arrived with: a chunk that no longer matches is dropped (and so fetched again),
//! and if it lay inside the part the saved SHA-256 covers, the hash starts over and
//! is rebuilt from the proven chunks as they are read back. So a receiver confirms
//! a file only when the SHA-256 over the bytes in its file matches the manifest.
//!
//! One file over 600 lines: the machine and its resume state are one set of
//! invariants (what is held, hashed and proven), checked together. Its tests live in
//! `receiver/`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::integrity::HashState;
use crate::ranges::RangeSet;
use crate::topic::{Prefix, ReceiverId};
use crate::wire::{AbortReason, Ack, Chunk, Ctl, DecodeError, Manifest, NameChange, RejectReason};
use crate::{Payload, Qos, Transmit};

/// Tunables of a receiver.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Grant credit after this many chunk messages. An eighth of the sender's default
    /// window keeps the window open without an ack per chunk.
    pub ack_every: u32,
    /// Grant credit at most this long after the first unacknowledged chunk.
    pub ack_delay: Duration,
    /// After this long without a word from the sender, announce again
    /// ([`Ack::Ready`]), doubling up to `max_idle`.
    pub idle: Duration,
    /// The longest interval between announcements.
    pub max_idle: Duration,
    /// Give up after this long without a word from the sender.
    pub give_up_after: Duration,
    /// A held transfer ([`Receiver::set_hold_until`]): after this long without a
    /// chunk, the broker has handed over all it will of the retained ones, and
    /// the missing are asked for again ([`ReceiverEvent::Refetch`]); doubling up to
    /// `max_idle` while nothing comes. Short, since nobody is sending: a flood of
    /// retained chunks has no gaps, and a needless refetch costs at most
    /// [`REFETCH_BATCH`] chunks delivered twice.
    pub held_silence: Duration,
    /// The largest file taken, for a stream whose size its offer did not say
    /// ([`Manifest::is_open`]): a chunk that reaches past it fails the transfer
    /// as [`RejectReason::TooLarge`]. A file's size is checked at the offer.
    pub max_size: Option<u64>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            ack_every: 32,
            ack_delay: Duration::from_millis(20),
            idle: Duration::from_secs(2),
            max_idle: Duration::from_secs(16),
            give_up_after: Duration::from_secs(120),
            held_silence: Duration::from_millis(250),
            max_size: None,
        }
    }
}

/// What a restarted receiver needs to resume: serialize it with postcard (or any
/// serde format) next to the partial file, and [`prove`](ResumeState::prove) it
/// against that file before resuming from it.
///
/// Its size: the manifest (8 KiB at most), two numbers per held range and one
/// CRC32 per held chunk, so at most about 40 MiB for the largest transfer the
/// protocol allows ([`MAX_CHUNK_COUNT`](crate::wire::MAX_CHUNK_COUNT) chunks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// The manifest being received.
    pub manifest: Manifest,
    /// Held chunks as `(start, end)` ranges, end exclusive, in ascending order.
    pub held: Vec<(u32, u32)>,
    /// The SHA-256 over chunks `0..hashed`.
    pub hash: HashState,
    /// How many leading chunks are hashed.
    pub hashed: u32,
    /// The CRC32 of each held chunk, in chunk order: one per chunk in `held`.
    pub crcs: Vec<u32>,
}

/// What [`ResumeState::prove`] found in the partial file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct Proof {
    /// Held chunks whose bytes still match their CRC32.
    pub kept: u32,
    /// Held chunks that no longer match (or could not be read): no longer held.
    pub dropped: u32,
    /// A dropped chunk lay inside the hashed part, so the saved SHA-256 state was
    /// discarded and the hash starts over.
    pub rehash: bool,
    /// The state contradicted itself (ranges out of order or out of the file, a
    /// CRC count that does not match): nothing was read, and
    /// [`Receiver::new`] will refuse it.
    pub inconsistent: bool,
}

impl ResumeState {
    /// Proves the saved state against the partial file before a resume: for every
    /// held chunk, `crc_at` reads the chunk's bytes back and returns their CRC32
    /// (`None` when they cannot be read: a file cut short). A chunk whose CRC32
    /// differs from the one it arrived with is no longer held, and if any such
    /// chunk lies among the `hashed` ones, the hash starts over from nothing (the
    /// receiver rebuilds it by reading the proven chunks back, as for chunks that
    /// arrived out of order). An error from `crc_at` stops the proof and is
    /// returned; the state is then unchanged.
    pub fn prove<E>(&mut self, mut crc_at: impl FnMut(HashRead) -> Result<Option<u32>, E>) -> Result<Proof, E> {
        if !self.is_well_formed() {
            return Ok(Proof { inconsistent: true, ..Proof::default() });
        }
        let m = &self.manifest;
        let mut proof = Proof::default();
        let mut held = RangeSet::new();
        let mut crcs = Vec::with_capacity(self.crcs.len());
        let mut first_dropped = None;
        let mut saved = self.crcs.iter();
        for &(a, b) in &self.held {
            for index in a..b {
                // `is_well_formed` checked one CRC per held chunk.
                let Some(&crc) = saved.next() else { break };
                let read = HashRead { index, offset: m.chunk_offset(index), len: m.chunk_len(index) };
                if crc_at(read)? == Some(crc) {
                    held.insert(index);
                    crcs.push(crc);
                    proof.kept += 1;
                } else {
                    first_dropped.get_or_insert(index);
                    proof.dropped += 1;
                }
            }
        }
        self.held = held.iter().map(|r| (r.start, r.end)).collect();
        self.crcs = crcs;
        if first_dropped.is_some_and(|i| i < self.hashed) {
            // The saved hash covers bytes that are not there any more. Starting
            // from nothing is the simplest point still proven; the hash is rebuilt
            // from the kept chunks by reading them back.
            self.hash = HashState::new();
            self.hashed = 0;
            proof.rehash = true;
        }
        Ok(proof)
    }

    /// True when the held ranges are ascending, disjoint, inside the file, and
    /// come with one CRC32 per chunk: the shape [`ResumeState::prove`] walks.
    fn is_well_formed(&self) -> bool {
        let mut end = 0;
        let mut chunks: u64 = 0;
        for &(a, b) in &self.held {
            if a >= b || a < end || b > self.manifest.chunk_count {
                return false;
            }
            end = b;
            chunks += u64::from(b - a);
        }
        chunks == self.crcs.len() as u64
    }
}

/// Why saved state cannot be resumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The saved state belongs to a different transfer.
    #[error("saved state is for a different transfer")]
    OtherTransfer,
    /// The saved state contradicts itself (hash length, ranges).
    #[error("saved state is inconsistent")]
    Inconsistent,
    /// The saved state is of a stream whose size was not known yet: it does not
    /// say how long its last chunk is, so the stream starts over.
    #[error("saved state of a stream whose size was not known yet")]
    OpenStream,
}

/// A chunk to write: `data` goes at byte `offset` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Write<'a> {
    /// Chunk index.
    pub index: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// The bytes, borrowed from the payload, or decompressed from it.
    pub data: std::borrow::Cow<'a, [u8]>,
    /// The bytes the chunk took on the wire (fewer than `data`'s if compressed).
    pub wire_len: usize,
}

/// A chunk to read back from the partial file and feed to [`Receiver::hash_chunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashRead {
    /// Chunk index.
    pub index: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// What a receiver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiverEvent {
    /// Every chunk is held and the SHA-256 matches: move the file to its final name,
    /// then call [`Receiver::finalized`].
    Verified,
    /// The transfer failed. Terminal.
    Failed(ReceiveFailure),
    /// A held transfer ([`Manifest::hold_until_ms`]) lacks these chunks and no
    /// sender serves it: subscribe to each one's own topic
    /// (`<prefix>/<id>/chunk/<n>`) so that the broker hands over its retained copy
    /// again, and drop the subscriptions of the previous batch. At most
    /// [`REFETCH_BATCH`] chunks, in index order.
    Refetch(Vec<u32>),
}

/// The most chunks one [`ReceiverEvent::Refetch`] asks for: under Mosquitto's
/// default in-flight limit (20), so the broker sends the whole batch at once and
/// queues none of it, and no queue limit (`max_queued_messages`) can drop it again.
pub const REFETCH_BATCH: usize = 16;

/// Why a receive failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveFailure {
    /// Every chunk passed its CRC but the file's SHA-256 does not match the manifest.
    #[error("sha-256 of the received file does not match the manifest")]
    HashMismatch,
    /// The sender stopped serving the transfer.
    #[error("sender stopped: {0}")]
    SenderAborted(AbortReason),
    /// The sender fell silent for longer than [`ReceiverConfig::give_up_after`].
    #[error("sender silent for too long")]
    SenderGone,
    /// The caller failed the transfer (disk full, I/O error, cancellation).
    #[error("{0}")]
    Local(RejectReason),
}

/// Why a chunk fed to [`Receiver::hash_chunk`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashFeedError {
    /// Not the chunk [`Receiver::next_hash_read`] asked for.
    #[error("chunk {0} is not the next to hash")]
    OutOfOrder(u32),
    /// The bytes are not the chunk's length.
    #[error("chunk {0} read back with the wrong length")]
    BadLength(u32),
    /// [`Receiver::hashed_through`] claimed chunks that are not all held, or a
    /// hash state whose length is not theirs.
    #[error("a hash through chunk {0} does not fit what is held")]
    NotHeld(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Receiving,
    /// Verified; waiting for the caller to finalize the file.
    Verified,
    Complete,
    Failed(RejectReason),
}

/// The receiving side of one transfer.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    prefix: Prefix,
    id: ReceiverId,
    manifest: Manifest,
    state: State,
    held: RangeSet,
    /// The CRC32 of each held chunk, by index (0 where none is held), up to the
    /// highest index held: at most 4 bytes times
    /// [`MAX_CHUNK_COUNT`](crate::wire::MAX_CHUNK_COUNT), 16 MiB, and only as
    /// far as chunks actually arrived.
    crcs: Vec<u32>,
    hash: HashState,
    hashed: u32,
    /// The sender run whose transmissions `next_seq` counts.
    seq_run: u32,
    /// One past the highest transmission seen from `seq_run`.
    next_seq: u32,
    /// Chunk messages since the last credit.
    unacked: u32,
    ack_due: Option<Instant>,
    last_heard: Instant,
    next_announce: Instant,
    announcements: u32,
    out: VecDeque<Transmit>,
    events: VecDeque<ReceiverEvent>,
    corrupt: u64,
    duplicates: u64,
    /// The detail sent with a local failure's `Rejected` (an OS error text).
    detail: String,
    /// Where the file went, when not under the manifest's name: answered as
    /// [`Ack::Stored`] instead of [`Ack::Complete`].
    stored_as: Option<StoredAs>,
    /// A held transfer: until when the broker holds it ([`Receiver::set_hold_until`]).
    hold_until: Option<Instant>,
    /// The chunks of the last [`ReceiverEvent::Refetch`] still missing: the next
    /// batch is asked for once they are all here (or at the next silence).
    refetching: Vec<u32>,
    /// The run whose every chunk transmission reaches this receiver, from the first
    /// ([`Receiver::new_early`]): its `Ready` says so, for that run only.
    from_start: Option<u32>,
    /// An open stream's short chunk, the last one, by index and length: the
    /// stream ends there. Checked against the size once that is known.
    tail: Option<(u32, u32)>,
    /// The caller hashes the chunks it writes ([`Receiver::hash_elsewhere`]).
    hash_elsewhere: bool,
}

/// The name a file was stored under, when it differs from the manifest's, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAs {
    /// The stored name, relative to the directory the sender's files go to.
    pub name: String,
    /// Why it differs.
    pub change: NameChange,
    /// What was changed, for people, or empty.
    pub detail: String,
}

impl StoredAs {
    fn ack(&self, sha256: [u8; 32]) -> Ack {
        Ack::Stored { sha256, name: self.name.clone(), change: self.change, detail: self.detail.clone() }
    }
}

impl Receiver {
    /// Accepts the transfer `manifest` describes, fresh or from `saved` state.
    ///
    /// Saved state must have been proven against the partial file first
    /// ([`ResumeState::prove`]): this checks only that it adds up, and trusts it
    /// for the bytes it says are held and hashed.
    pub fn new(
        cfg: ReceiverConfig,
        prefix: Prefix,
        id: ReceiverId,
        manifest: Manifest,
        saved: Option<ResumeState>,
        now: Instant,
    ) -> Result<Self, ResumeError> {
        Self::accept(cfg, prefix, id, manifest, saved, false, now)
    }

    /// [`Receiver::new`] for a receiver whose subscription to the transfer's chunks
    /// (`<prefix>/+/chunk/+`) took effect before the manifest reached it, live rather
    /// than as a retained copy: every chunk the sender published after that manifest
    /// reaches it, so its `Ready` carries `from_start` and the sender, which sends
    /// the first chunks without waiting for anyone (PROTOCOL.md 8.2), counts them as
    /// on their way to it instead of sending them twice.
    pub fn new_early(
        cfg: ReceiverConfig,
        prefix: Prefix,
        id: ReceiverId,
        manifest: Manifest,
        saved: Option<ResumeState>,
        now: Instant,
    ) -> Result<Self, ResumeError> {
        Self::accept(cfg, prefix, id, manifest, saved, true, now)
    }

    fn accept(
        cfg: ReceiverConfig,
        prefix: Prefix,
        id: ReceiverId,
        mut manifest: Manifest,
        saved: Option<ResumeState>,
        early: bool,
        now: Instant,
    ) -> Result<Self, ResumeError> {
        let (held, crcs, hash, hashed) = match saved {
            None => (RangeSet::new(), Vec::new(), HashState::new(), 0),
            Some(s) => {
                if !s.manifest.same_transfer(&manifest) {
                    return Err(ResumeError::OtherTransfer);
                }
                if s.manifest.is_open() {
                    // Where an open stream's short last chunk ends is in no
                    // saved state: it starts over (PROTOCOL.md 18).
                    return Err(ResumeError::OpenStream);
                }
                if manifest.is_open() {
                    // Saved after the stream closed, offered again open (the
                    // retained copy from before its end): the saved size holds.
                    manifest = Manifest { run: manifest.run, ..s.manifest.clone() };
                }
                if !s.is_well_formed() {
                    return Err(ResumeError::Inconsistent);
                }
                let mut held = RangeSet::new();
                let mut crcs = Vec::new();
                let mut saved = s.crcs.iter();
                for &(a, b) in &s.held {
                    held.insert_range(a..b);
                    // Ascending and disjoint (checked above), so `crcs` grows in
                    // chunk order; the gaps before a range are filled with zeros.
                    crcs.resize(a as usize, 0);
                    crcs.extend(saved.by_ref().take((b - a) as usize));
                }
                let hashed_bytes = manifest.chunk_offset(s.hashed).min(manifest.size);
                if s.hashed > held.first_gap() || !s.hash.is_valid() || s.hash.len() != hashed_bytes {
                    return Err(ResumeError::Inconsistent);
                }
                (held, crcs, s.hash, s.hashed)
            }
        };
        let from_start = early.then_some(manifest.run);
        let mut r = Receiver {
            seq_run: manifest.run,
            cfg,
            prefix,
            id,
            manifest,
            state: State::Receiving,
            held,
            crcs,
            hash,
            hashed,
            next_seq: 0,
            unacked: 0,
            ack_due: None,
            last_heard: now,
            next_announce: now,
            announcements: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            corrupt: 0,
            duplicates: 0,
            detail: String::new(),
            stored_as: None,
            hold_until: None,
            refetching: Vec::new(),
            from_start,
            tail: None,
            hash_elsewhere: false,
        };
        r.check_done();
        if r.state == State::Receiving {
            r.announce(now);
        }
        Ok(r)
    }

    /// The transmit that refuses `manifest`, for a caller that will not accept it.
    pub fn reject(prefix: &Prefix, id: &ReceiverId, manifest: &Manifest, reason: RejectReason) -> Transmit {
        Self::reject_with(prefix, id, manifest, reason, String::new())
    }

    /// [`Receiver::reject`] with a detail for people, such as the OS error text
    /// behind [`RejectReason::Io`].
    pub fn reject_with(
        prefix: &Prefix,
        id: &ReceiverId,
        manifest: &Manifest,
        reason: RejectReason,
        detail: String,
    ) -> Transmit {
        ack_transmit(prefix, &manifest.id, id, &Ack::Rejected { reason, detail })
    }

    /// The transmit that tells the sender of `manifest` that this receiver holds
    /// its offer at `position` (1 for the head) of its queue, for a caller whose
    /// transfer slots are all taken.
    pub fn queued(prefix: &Prefix, id: &ReceiverId, manifest: &Manifest, position: u32) -> Transmit {
        ack_transmit(prefix, &manifest.id, id, &Ack::Queued { run: manifest.run, position })
    }

    /// The transmit that tells the sender of `manifest` that this receiver already has
    /// the file, whose SHA-256 is `sha256`, for a caller that keeps no `Receiver`
    /// for finished transfers. When the manifest carries no hash yet, this is a
    /// claim the sender checks against its own once it has read the file
    /// (PROTOCOL.md 8.3).
    pub fn already_complete(prefix: &Prefix, id: &ReceiverId, manifest: &Manifest, sha256: [u8; 32]) -> Transmit {
        ack_transmit(prefix, &manifest.id, id, &Ack::Complete { sha256 })
    }

    /// [`Receiver::already_complete`] for a file this receiver holds under another
    /// name than the manifest's: the sender is told that name.
    pub fn already_stored(
        prefix: &Prefix,
        id: &ReceiverId,
        manifest: &Manifest,
        sha256: [u8; 32],
        stored: &StoredAs,
    ) -> Transmit {
        ack_transmit(prefix, &manifest.id, id, &stored.ack(sha256))
    }

    /// Marks the transfer as held at the broker until `until` (the manifest's
    /// [`Manifest::hold_until_ms`] on the caller's clock): the receiver does not give
    /// up on the silent sender before then, and fetches the chunks it lacks from the
    /// broker's retained copies itself ([`ReceiverEvent::Refetch`]) at every silence.
    /// A confirmation ([`Ack::Complete`], [`Ack::Stored`]) goes out retained, so that
    /// a sender or `mqft status` that comes later sees it.
    pub fn set_hold_until(&mut self, until: Instant) {
        self.hold_until = Some(until);
        self.next_announce = self.next_announce.min(self.last_heard + self.silence());
    }

    // ---- getters ----

    /// The manifest being received.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The chunks held.
    pub fn held(&self) -> &RangeSet {
        &self.held
    }

    /// Bytes held.
    pub fn bytes_held(&self) -> u64 {
        let full = self.held.len() * u64::from(self.manifest.chunk_size);
        if let Some((index, len)) = self.tail {
            return full - u64::from(self.manifest.chunk_size - len) * u64::from(self.held.contains(index));
        }
        // The last chunk may be short.
        match self.manifest.chunk_count.checked_sub(1) {
            Some(last) if self.held.contains(last) => {
                full - u64::from(self.manifest.chunk_size) + self.manifest.chunk_len(last)
            }
            _ => full,
        }
    }

    /// Chunks dropped for a bad CRC, length or index.
    pub fn corrupt_chunks(&self) -> u64 {
        self.corrupt
    }

    /// Chunks received again after they were held.
    pub fn duplicate_chunks(&self) -> u64 {
        self.duplicates
    }

    /// True once the file is verified and finalized.
    pub fn is_complete(&self) -> bool {
        self.state == State::Complete
    }

    /// True once the transfer completed or failed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Complete | State::Failed(_))
    }

    /// The state a restarted receiver resumes from.
    pub fn snapshot(&self) -> ResumeState {
        ResumeState {
            manifest: self.manifest.clone(),
            held: self.held.iter().map(|r| (r.start, r.end)).collect(),
            hash: self.hash.clone(),
            hashed: self.hashed,
            // Every held index is below `crcs.len()` (see `handle_chunk`); a 0
            // would only make a resume fetch that chunk again.
            crcs: self.held.iter().flat_map(|r| r.map(|i| self.crcs.get(i as usize).copied().unwrap_or(0))).collect(),
        }
    }

    // ---- input ----

    /// Handles a manifest payload for this transfer (the sender starting, restarting,
    /// or re-publishing). A manifest that describes another file under the same id is
    /// refused.
    pub fn handle_manifest(&mut self, manifest: &Manifest, now: Instant) -> Result<(), ManifestChanged> {
        if !self.manifest.same_transfer(manifest) {
            return Err(ManifestChanged);
        }
        self.manifest.run = manifest.run;
        self.heard(now);
        if self.manifest.is_open() && !manifest.is_open() {
            // Published again once the sender read the stream's end.
            self.close_stream(manifest.size);
            if self.is_done() {
                return Ok(());
            }
        }
        if self.manifest.sha256.is_none() {
            // Re-published once the sender read the whole file.
            self.manifest.sha256 = manifest.sha256;
            self.check_done();
        }
        self.answer();
        Ok(())
    }

    /// Handles a payload from `<prefix>/<id>/chunk/<topic_index>`. A chunk not held
    /// before comes back as a [`Write`]; the caller must write it before the next
    /// [`Receiver::next_hash_read`] or [`Receiver::snapshot`].
    pub fn handle_chunk<'p>(
        &mut self,
        topic_index: u32,
        payload: &'p [u8],
        now: Instant,
    ) -> Result<Option<Write<'p>>, DecodeError> {
        let chunk = match Chunk::decode(payload, topic_index, &self.manifest) {
            Ok(c) => c,
            Err(e) => {
                self.corrupt += 1;
                return Err(e);
            }
        };
        if let Err(e) = self.fits_stream(chunk.index, chunk.data.len()) {
            self.corrupt += 1;
            return Err(e);
        }
        self.heard(now);
        self.saw_seq(chunk.run, chunk.seq.saturating_add(1));
        if self.state != State::Receiving {
            return Ok(None);
        }
        if self.cfg.max_size.is_some_and(|max| self.manifest.chunk_offset(chunk.index) + chunk.data.len() as u64 > max)
        {
            self.fail_with(RejectReason::TooLarge, String::new(), now);
            return Ok(None);
        }
        if self.manifest.is_open() && chunk.data.len() < self.manifest.chunk_size as usize {
            self.tail = Some((chunk.index, chunk.data.len() as u32));
        }
        // Held before the credit below, so that a `Progress` it triggers counts it.
        let new = self.held.insert(chunk.index);
        // Duplicates count for credit too: each one is a transmission seen.
        self.unacked += 1;
        if self.unacked >= self.cfg.ack_every {
            self.send_progress();
        } else if self.ack_due.is_none() {
            self.ack_due = Some(now + self.cfg.ack_delay);
        }
        if !new {
            self.duplicates += 1;
            return Ok(None);
        }
        let at = chunk.index as usize;
        if self.crcs.len() <= at {
            self.crcs.resize(at + 1, 0);
        }
        self.crcs[at] = chunk.crc32;
        if chunk.index == self.hashed && !self.hash_elsewhere {
            self.hash.update(&chunk.data);
            self.hashed += 1;
        }
        self.check_done();
        if !self.refetching.is_empty() {
            self.refetch(false);
        }
        let offset = self.manifest.chunk_offset(chunk.index);
        Ok(Some(Write { index: chunk.index, offset, data: chunk.data, wire_len: chunk.wire_len }))
    }

    /// The next chunk to read back for the hash: one that arrived before the chunks
    /// ahead of it. `None` while the next chunk in order is not held, and always
    /// for a receiver whose caller hashes ([`Receiver::hash_elsewhere`]).
    pub fn next_hash_read(&self) -> Option<HashRead> {
        if self.hash_elsewhere || self.state != State::Receiving || !self.held.contains(self.hashed) {
            return None;
        }
        let index = self.hashed;
        Some(HashRead { index, offset: self.manifest.chunk_offset(index), len: self.chunk_len(index) })
    }

    /// Feeds the bytes [`Receiver::next_hash_read`] asked for.
    pub fn hash_chunk(&mut self, index: u32, data: &[u8]) -> Result<(), HashFeedError> {
        if self.next_hash_read().map(|r| r.index) != Some(index) {
            return Err(HashFeedError::OutOfOrder(index));
        }
        if data.len() as u64 != self.chunk_len(index) {
            return Err(HashFeedError::BadLength(index));
        }
        self.hash.update(data);
        self.hashed += 1;
        self.check_done();
        Ok(())
    }

    /// Leaves the SHA-256 of the file to the caller, from now on: chunks are no
    /// longer hashed as they arrive and [`Receiver::next_hash_read`] asks for
    /// nothing. The caller hashes the chunks in file order as it writes them (and
    /// reads back those that were written ahead of a gap, once it fills), starting
    /// where [`Receiver::snapshot`] says the hash stands (`hash` over chunks
    /// `0..hashed`), and reports each step with [`Receiver::hashed_through`]. The
    /// receiver still decides: it finishes the hash it is handed once every chunk
    /// is in it, and compares that with the manifest's.
    ///
    /// Call it before the first chunk is handled: a chunk hashed here and one
    /// hashed by the caller would not make one hash.
    pub fn hash_elsewhere(&mut self) {
        self.hash_elsewhere = true;
    }

    /// Reports that the caller's SHA-256 ([`Receiver::hash_elsewhere`]) now covers
    /// chunks `0..through`, with `hash` its state: a held chunk's bytes as the
    /// caller wrote them to the file. Once `through` reaches the chunk count the
    /// file is verified or fails, as with chunks hashed here, and the hash is
    /// what [`Receiver::snapshot`] saves from then on, so a restarted receiver
    /// resumes it.
    ///
    /// A report that covers no more than the last one changes nothing (an old
    /// one, overtaken). One that claims a chunk not held, or whose state's length
    /// is not that of chunks `0..through`, is refused and changes nothing.
    pub fn hashed_through(&mut self, through: u32, hash: HashState) -> Result<(), HashFeedError> {
        if self.state != State::Receiving || through <= self.hashed {
            return Ok(());
        }
        // The bytes of chunks 0..through (an open stream's short last chunk at
        // its own length).
        let len = through.checked_sub(1).map_or(0, |last| self.manifest.chunk_offset(last) + self.chunk_len(last));
        if through > self.manifest.chunk_count
            || through > self.held.first_gap()
            || !hash.is_valid()
            || hash.len() != len
        {
            return Err(HashFeedError::NotHeld(through));
        }
        self.hash = hash;
        self.hashed = through;
        self.check_done();
        Ok(())
    }

    /// Handles a payload from `<prefix>/<id>/ctl`.
    pub fn handle_ctl(&mut self, payload: &[u8], now: Instant) -> Result<(), DecodeError> {
        let ctl = Ctl::decode(payload)?;
        self.heard(now);
        match ctl {
            Ctl::EndRound { run, next_seq, sha256, size } => {
                // Everything sent before the end of round has arrived or is lost.
                self.saw_seq(run, next_seq);
                if let Some(size) = size.filter(|_| run == self.manifest.run) {
                    self.close_stream(size);
                    if self.is_done() {
                        return Ok(());
                    }
                }
                // The hash the manifest did not carry. A manifest's own is never
                // replaced: under a signature it is the one the signature covers.
                let before = self.state;
                if self.manifest.sha256.is_none() && run == self.manifest.run {
                    self.manifest.sha256 = sha256;
                    self.check_done();
                }
                // A mismatch found just now was answered with the rejection.
                if self.state == before || !matches!(self.state, State::Failed(_)) {
                    self.answer();
                }
            }
            Ctl::Abort { run, reason } => {
                if run == self.manifest.run && self.state == State::Receiving {
                    self.state = State::Failed(RejectReason::Cancelled);
                    self.events.push_back(ReceiverEvent::Failed(ReceiveFailure::SenderAborted(reason)));
                }
            }
        }
        Ok(())
    }

    /// Handles the passing of the deadline from [`Receiver::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ack_due.is_some_and(|t| now >= t) {
            self.send_progress();
        }
        if self.state != State::Receiving {
            return;
        }
        if now >= self.give_up_at() {
            self.state = State::Failed(RejectReason::Cancelled);
            self.events.push_back(ReceiverEvent::Failed(ReceiveFailure::SenderGone));
        } else if now >= self.next_announce {
            self.announce(now);
            self.refetch(true);
        }
    }

    /// Tells the receiver that the verified file is under its final name: the
    /// sender is told the transfer is complete.
    pub fn finalized(&mut self, _now: Instant) {
        if self.state == State::Verified {
            self.state = State::Complete;
            self.answer();
        }
    }

    /// [`Receiver::finalized`], for a file that went under another name than the
    /// manifest's (`None`: under that name): the sender is told where, with
    /// [`Ack::Stored`], in this and every later answer.
    pub fn finalized_as(&mut self, stored: Option<StoredAs>, now: Instant) {
        if self.state == State::Verified {
            self.stored_as = stored;
        }
        self.finalized(now);
    }

    /// Fails the transfer for a local reason (disk full, I/O error, cancellation);
    /// the sender is told.
    pub fn fail(&mut self, reason: RejectReason, now: Instant) {
        self.fail_with(reason, String::new(), now);
    }

    /// [`Receiver::fail`] with a detail for the sender's user, such as the OS error
    /// text ("read-only file system").
    pub fn fail_with(&mut self, reason: RejectReason, detail: String, _now: Instant) {
        if !self.is_done() {
            self.detail = detail;
            self.state = State::Failed(reason);
            self.events.push_back(ReceiverEvent::Failed(ReceiveFailure::Local(reason)));
            self.answer();
        }
    }

    // ---- output ----

    /// The next message to publish, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    /// When [`Receiver::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = (self.state == State::Receiving).then(|| self.next_announce.min(self.give_up_at()));
        match (self.ack_due, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals ----

    /// When a silent sender is given up on: `give_up_after` after the last word,
    /// or, for a held transfer, not before the hold ends (the broker serves it).
    fn give_up_at(&self) -> Instant {
        let silent = self.last_heard + self.cfg.give_up_after;
        self.hold_until.map_or(silent, |h| silent.max(h))
    }

    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.announcements = 0;
        self.next_announce = now + self.silence();
    }

    /// The first silence after which the receiver speaks up: `idle`, or for a held
    /// transfer the shorter `held_silence`.
    fn silence(&self) -> Duration {
        match self.hold_until {
            Some(_) => self.cfg.held_silence.min(self.cfg.idle),
            None => self.cfg.idle,
        }
    }

    fn saw_seq(&mut self, run: u32, next_seq: u32) {
        if run != self.seq_run {
            self.seq_run = run;
            self.next_seq = next_seq;
        } else {
            self.next_seq = self.next_seq.max(next_seq);
        }
    }

    /// Says hello again after a silence: the sender may have missed the first one.
    fn announce(&mut self, now: Instant) {
        self.answer_ready();
        let wait = self.silence().saturating_mul(1 << self.announcements.min(16)).min(self.cfg.max_idle);
        self.next_announce = now + wait;
        self.announcements += 1;
    }

    fn answer_ready(&mut self) {
        match self.state {
            State::Receiving => {
                let run = self.manifest.run;
                let ack = Ack::Ready { run, held: self.held.clone(), from_start: self.from_start == Some(run) };
                self.push(&ack);
            }
            _ => self.answer(),
        }
    }

    /// Answers a manifest or an end of round with where this transfer stands.
    fn answer(&mut self) {
        let ack = match self.state {
            State::Receiving | State::Verified => {
                self.unacked = 0;
                self.ack_due = None;
                let missing = if self.state == State::Verified {
                    RangeSet::new()
                } else {
                    self.held.complement(self.manifest.chunk_count)
                };
                Ack::Missing { run: self.seq_run, next_seq: self.next_seq, missing, more: false }
            }
            // Complete only after a match with the known hash.
            State::Complete => match &self.stored_as {
                Some(s) => s.ack(self.manifest.sha256.unwrap_or_default()),
                None => Ack::Complete { sha256: self.manifest.sha256.unwrap_or_default() },
            },
            State::Failed(reason) => Ack::Rejected { reason, detail: self.detail.clone() },
        };
        self.push(&ack);
    }

    fn send_progress(&mut self) {
        self.unacked = 0;
        self.ack_due = None;
        if self.state == State::Receiving {
            let held = u32::try_from(self.held.len()).unwrap_or(u32::MAX);
            self.push(&Ack::Progress { run: self.seq_run, next_seq: self.next_seq, held });
        }
    }

    fn push(&mut self, ack: &Ack) {
        let mut t = ack_transmit(&self.prefix, &self.manifest.id, &self.id, ack);
        // A held transfer's confirmation stays at the broker for whoever asks later.
        t.retain = self.hold_until.is_some() && matches!(ack, Ack::Complete { .. } | Ack::Stored { .. });
        self.out.push_back(t);
    }

    /// Asks for the next batch of missing chunks of a held transfer: at a silence
    /// (`silence`), or at once when the last batch has all arrived.
    fn refetch(&mut self, silence: bool) {
        if self.hold_until.is_none() || self.state != State::Receiving {
            return;
        }
        self.refetching.retain(|&i| !self.held.contains(i));
        if !self.refetching.is_empty() && !silence {
            return;
        }
        let missing = self.held.complement(self.manifest.chunk_count);
        let batch: Vec<u32> = missing.iter().flatten().take(REFETCH_BATCH).collect();
        if batch.is_empty() {
            return;
        }
        self.refetching.clone_from(&batch);
        self.events.push_back(ReceiverEvent::Refetch(batch));
    }

    /// The length of chunk `index`: the manifest's, or in an open stream the
    /// short last chunk's as it arrived.
    fn chunk_len(&self, index: u32) -> u64 {
        match self.tail {
            Some((i, len)) if i == index => u64::from(len),
            _ => self.manifest.chunk_len(index),
        }
    }

    /// Checks chunk `index` of `len` bytes against what an open stream's chunks
    /// said of its end: one short chunk, the last. A short chunk below a held
    /// one, a second short chunk, a full one where the short one was, or a chunk
    /// past it contradicts the stream and is dropped.
    fn fits_stream(&self, index: u32, len: usize) -> Result<(), DecodeError> {
        if !self.manifest.is_open() {
            return Ok(());
        }
        let full = self.manifest.chunk_size as usize;
        match self.tail {
            Some((i, _)) if index > i => Err(DecodeError::IndexOutOfRange { index, count: i + 1 }),
            Some((i, l)) if index == i && len != l as usize || index != i && len < full => {
                Err(DecodeError::BadChunkLength { index, len, expected: u64::from(l) })
            }
            // Below a held chunk, or a short copy of one held whole.
            None if len < full && self.held.last().is_some_and(|last| last >= index) => {
                Err(DecodeError::BadChunkLength { index, len, expected: full as u64 })
            }
            _ => Ok(()),
        }
    }

    /// Closes an open stream at `size`, from its end of round or its manifest
    /// published again ([`Manifest::close`]). What arrived must fit: no chunk
    /// held past the end, and the last chunk, if held, of the right length.
    /// Otherwise the sender contradicts itself, and the transfer fails.
    fn close_stream(&mut self, size: u64) {
        if !self.manifest.is_open() {
            return;
        }
        let fits = self.manifest.close(size).ok().filter(|closed| {
            let count = closed.chunk_count;
            let within = self.held.last().is_none_or(|last| last < count);
            let last_fits = match (self.tail, count.checked_sub(1)) {
                (Some((i, len)), Some(last)) => i == last && closed.chunk_len(i) == u64::from(len),
                (Some(_), None) => false,
                (None, Some(last)) => {
                    !self.held.contains(last) || closed.chunk_len(last) == u64::from(closed.chunk_size)
                }
                (None, None) => true,
            };
            within && last_fits
        });
        match fits {
            Some(closed) => {
                self.manifest = closed;
                self.tail = None;
                self.check_done();
            }
            None => self.fail_with(
                RejectReason::BadManifest,
                format!("the stream's size, {size} bytes, contradicts its chunks"),
                self.last_heard,
            ),
        }
    }

    /// Verifies the hash once every chunk is held and hashed.
    fn check_done(&mut self) {
        if self.state != State::Receiving || self.hashed != self.manifest.chunk_count {
            return;
        }
        // Every byte is in and hashed; the sender's hash may still be on its way
        // (with the end of round that follows its last chunk).
        let Some(expected) = self.manifest.sha256 else { return };
        if self.hash.finish() == expected {
            self.state = State::Verified;
            self.events.push_back(ReceiverEvent::Verified);
        } else {
            self.state = State::Failed(RejectReason::HashMismatch);
            self.events.push_back(ReceiverEvent::Failed(ReceiveFailure::HashMismatch));
            self.answer();
        }
    }
}

/// A manifest arrived for this transfer's id that describes another file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("manifest changed for the same transfer id")]
pub struct ManifestChanged;

/// The transmit that publishes `ack` from receiver `rid` for transfer `id`: QoS 1,
/// not retained. For answers given without a `Receiver`, such as refusing a manifest
/// that does not decode ([`RejectReason::BadManifest`]).
pub fn ack_transmit(prefix: &Prefix, id: &crate::TransferId, rid: &ReceiverId, ack: &Ack) -> Transmit {
    Transmit { topic: prefix.ack(id, rid), qos: Qos::AtLeastOnce, retain: false, payload: Payload::Bytes(ack.encode()) }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod resume_tests;

#[cfg(test)]
mod hold_tests;
