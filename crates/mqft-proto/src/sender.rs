//! The sender's state machine.
//!
//! A transfer goes through these phases:
//! 1. **Joining**: the manifest is published (retained, QoS 1) and re-published with
//!    backoff while fewer receivers than the [`Wait`] policy needs have answered
//!    [`Ack::Ready`], until the join timeout. Right behind the manifest, before
//!    anyone answered, go the first [`SenderConfig::eager_window`] chunks (protocol
//!    version 5), and for a file they cover, the end of round: a receiver that
//!    subscribed to every transfer's chunks gets a file with no round trip first,
//!    and says so in its `Ready` (`from_start`), so the sender counts them as in
//!    flight to it. Sending the rest starts once all the receivers joined, or
//!    [`SenderConfig::join_grace`] after the first one did.
//! 2. **Sending**: the chunks that the joined receivers lack (the union of their
//!    missing sets) go out in index order. Each transmission gets the next `seq`;
//!    a new one may go out only while `seq < min(acked) + window`, where `acked` is
//!    the credit each active receiver grants with [`Ack::Progress`]. A receiver
//!    that joins late starts with credit at the current `seq`.
//! 3. **Draining**: once nothing is left to send, or when the window has been shut
//!    for a retransmission timeout (the tail of the window or the credit was lost),
//!    the sender publishes [`Ctl::EndRound`] and waits until every active receiver has
//!    answered with [`Ack::Missing`] or [`Ack::Complete`]. The end of round carries
//!    the file's SHA-256 (protocol version 4: the manifest need not), so a round that
//!    sent the last chunk ends only once the caller has given it
//!    ([`Sender::set_digest`], asked for by [`Sender::wants_digest`]); receivers
//!    that said they had the file before it was known are checked against it then.
//!    Because the broker delivers
//!    a subscriber's messages in order, the answer accounts for every chunk sent
//!    before the end of round. The union of the missing sets is the next round.
//!    Unanswered ends of round are re-published with exponential backoff; a receiver
//!    that never answers is dropped as lost. While a receiver is quiet (no answer and
//!    nothing else from it for `rto`), the manifest goes out again too, every
//!    [`SenderConfig::rejoin_interval`]: a receiver that restarted on a broker that
//!    does not hand it the retained manifest again learns of the transfer from this
//!    live publication and answers with what it saved.
//! 4. **Finished** once the receivers it waits for ([`Wait`]) confirmed the SHA-256,
//!    or **Failed** with a [`SendFailure`]: no receiver, a rejection, a lost
//!    receiver, rounds that stop making progress, or cancellation. Either is
//!    reported once, as the last event, and [`Ctl::Abort`] goes out once; receivers
//!    lost together are each reported before it.
//!
//! A restarted sender is a new `Sender` with a new `run`: receivers answer its
//! manifest with what they already hold, so nothing that arrived is sent again. A
//! known receiver that answers a manifest again (or restarted) has what it lacks
//! queued, less what is still in flight to it: the transmissions at or above its
//! credit.
//!
//! The machine is one file, over 600 lines, on purpose: its phases share the
//! per-receiver state and every input may move any of them, as the tables of
//! PROTOCOL.md 8 do; split by phase, each part would have to reach into the others.
//! Its tests live in `sender/tests.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::ranges::RangeSet;
use crate::topic::{Prefix, ReceiverId};
use crate::wire::{AbortReason, Ack, Ctl, DecodeError, Manifest, NameChange, RejectReason, MAX_CHUNK_COUNT};
use crate::{ChunkRef, Payload, Qos, Transmit};

/// Which receivers the sender waits for before it reports the transfer finished.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wait {
    /// Any `n` receivers (at least 1).
    Count(usize),
    /// Exactly these receivers.
    Ids(BTreeSet<ReceiverId>),
}

/// Tunables of a sender. The defaults suit a broker on a LAN or the internet; the
/// benchmarks in `docs/PERFORMANCE.md` say why.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The most chunk transmissions that the slowest active receiver has not yet
    /// acknowledged. Keep it under the broker's per-client queue (Mosquitto's
    /// `max_queued_messages` defaults to 1000) so a slow receiver loses nothing.
    pub window: u32,
    /// The most chunk transmissions sent before any receiver joined (protocol
    /// version 5). Receivers subscribed to the prefix's chunks get them without a
    /// round trip first; a receiver that joins says whether it did
    /// ([`Ack::Ready`]'s `from_start`), so none is sent twice to it. What nobody
    /// hears is lost: keep it to what the link carries in one round trip, and 0
    /// for a sender that must not spend a byte before someone answers.
    pub eager_window: u32,
    /// QoS of chunk publishes.
    pub chunk_qos: Qos,
    /// First retransmission timeout for the manifest and ends of round, and how long
    /// a shut window may stay shut before the sender probes.
    pub rto: Duration,
    /// The retransmission timeout never grows past this.
    pub max_rto: Duration,
    /// How many times an end of round is re-published before an unanswering receiver
    /// counts as lost.
    pub max_retries: u32,
    /// While a receiver that joined is quiet (it has not answered an end of round
    /// and nothing came from it for `rto`), the manifest and the end of round go out
    /// again at least this often, whatever the retry backoff. A receiver that
    /// restarted on a broker that does not hand it the retained manifest again
    /// (rumqttd with a session present, RabbitMQ's wildcard subscriptions) finds the
    /// transfer through this live publication, so this bounds how long it waits.
    pub rejoin_interval: Duration,
    /// How long to wait for receivers to join.
    pub join_timeout: Duration,
    /// Once one receiver joined, how long to wait for the others before sending:
    /// receivers that join after sending started get what they lack in a later
    /// round, at the price of chunks sent twice.
    pub join_grace: Duration,
    /// How many rounds in a row may end without fewer missing chunks before the
    /// transfer fails.
    pub max_stalled_rounds: u32,
    /// Which receivers to wait for.
    pub wait: Wait,
    /// The most receivers the sender keeps track of. Anyone who can publish on the
    /// broker can claim to be a receiver; past this many, new ones are ignored, so
    /// the sender's memory stays bounded.
    pub max_receivers: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            window: 256,
            eager_window: 16,
            chunk_qos: Qos::AtLeastOnce,
            rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(16),
            max_retries: 6,
            rejoin_interval: Duration::from_secs(2),
            join_timeout: Duration::from_secs(30),
            join_grace: Duration::from_millis(500),
            max_stalled_rounds: 8,
            wait: Wait::Count(1),
            max_receivers: 1024,
        }
    }
}

/// What the sender reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SenderEvent {
    /// A receiver accepted the manifest; it already held `held` chunks.
    ReceiverJoined {
        /// Who.
        receiver: ReceiverId,
        /// Chunks it already had.
        held: u64,
    },
    /// A receiver holds the manifest in its queue of waiting offers: all its
    /// transfer slots are taken. It answers `Ready` when one frees; the sender
    /// waits for it within the join timeout. Reported when the position changes.
    Queued {
        /// Who.
        receiver: ReceiverId,
        /// Place in its queue, 1 for the head.
        position: u32,
    },
    /// A receiver refused the offer for now (busy, or its queue is full); the
    /// manifest is offered again after `retry_in`, until the join timeout.
    Retrying {
        /// Who.
        receiver: ReceiverId,
        /// Why it refused.
        reason: RejectReason,
        /// When the manifest goes out again.
        retry_in: Duration,
    },
    /// A receiver now holds `held` distinct chunks.
    Progress {
        /// Who.
        receiver: ReceiverId,
        /// Chunks it holds.
        held: u64,
    },
    /// A receiver has the whole file and confirmed its SHA-256.
    ReceiverComplete {
        /// Who.
        receiver: ReceiverId,
    },
    /// A receiver refused the transfer, gave up, or stopped answering.
    ReceiverFailed {
        /// Who.
        receiver: ReceiverId,
        /// Why: `None` when it stopped answering.
        reason: Option<RejectReason>,
    },
    /// A receiver stored the file under another name than the manifest's; a
    /// [`SenderEvent::ReceiverComplete`] follows.
    StoredAs {
        /// Who.
        receiver: ReceiverId,
        /// The name it gave the file (untrusted: print it escaped).
        name: String,
        /// Why.
        change: NameChange,
        /// What it changed, for people, or empty (untrusted: print it escaped).
        detail: String,
    },
    /// The receivers waited for have the file. Terminal.
    Finished,
    /// The transfer failed. Terminal.
    Failed(SendFailure),
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// Fewer receivers than waited for answered the manifest in time.
    #[error("{joined} of {wanted} receivers answered within the join timeout")]
    NoReceivers {
        /// How many joined.
        joined: usize,
        /// How many were waited for.
        wanted: usize,
    },
    /// A receiver that was waited for refused or gave up.
    #[error("receiver {receiver} rejected the transfer: {reason}{}", detail_suffix(detail))]
    Rejected {
        /// Who.
        receiver: ReceiverId,
        /// Why.
        reason: RejectReason,
        /// What the receiver saw, as it said it (untrusted; escape it to print), or
        /// empty.
        detail: String,
    },
    /// The join timeout ended while a receiver still held the offer in its queue.
    #[error("receiver {receiver} still had the transfer queued (position {position}) when the join timeout ended")]
    StillQueued {
        /// Who.
        receiver: ReceiverId,
        /// Its last reported place in the queue.
        position: u32,
    },
    /// A receiver that was waited for reported a different SHA-256.
    #[error("receiver {receiver} reported a different sha-256")]
    HashMismatch {
        /// Who.
        receiver: ReceiverId,
    },
    /// A receiver that was waited for stopped answering.
    #[error("receiver {receiver} stopped answering")]
    ReceiverLost {
        /// Who.
        receiver: ReceiverId,
    },
    /// Rounds kept ending with nothing repaired: chunks are not getting through
    /// (for example a broker that silently drops messages above a size).
    #[error("no chunk got through in {rounds} rounds; the broker may drop messages this large ({chunk_size} bytes per chunk)")]
    NoProgress {
        /// Rounds without progress.
        rounds: u32,
        /// The chunk size in use.
        chunk_size: u32,
    },
    /// The sender was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// ": detail", escaped, for a rejection's message; nothing without a detail.
fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {}", detail.escape_debug())
    }
}

/// The first pause before an offer refused as busy or queue-full goes out again;
/// it doubles up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// The longest pause between offers to a busy receiver.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// What the sender knows of one receiver.
#[derive(Debug, Clone)]
struct Peer {
    state: PeerState,
    /// Credit: one past the highest chunk transmission it acknowledged.
    acked: u32,
    /// Answered the current end of round.
    answered: bool,
    /// Missing chunks in its last answer (`u64::MAX` when unknown).
    missing: u64,
    /// Distinct chunks held, as last reported.
    held: u64,
    /// Fewest missing chunks it ever reported at a round's end.
    best: u64,
    /// Most chunks it ever held at a round's end.
    best_held: u64,
    /// When anything last came from it.
    heard: Instant,
    /// The detail of its rejection, if it rejected.
    detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    Active,
    Complete,
    /// Rejected or failed its hash (with the reason), or lost (`None`).
    Gone(Option<RejectReason>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `gather`: once one receiver joined, when sending starts without the rest.
    Joining {
        gather: Option<Instant>,
    },
    Sending,
    /// Waiting for answers to the end of round at `next_seq`.
    Draining {
        next_seq: u32,
        retries: u32,
        deadline: Instant,
    },
    /// Every active receiver is done but more may join before the join deadline.
    AwaitingJoins,
    Done,
}

/// A receiver's `Complete` (or `Stored`, with where it stored the file) given
/// before the sender knew its file's hash: the hash of the file it has.
type Claim = ([u8; 32], Option<(String, NameChange, String)>);

/// The sender of one file to one or more receivers.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    manifest: Manifest,
    prefix: Prefix,
    phase: Phase,
    peers: BTreeMap<ReceiverId, Peer>,
    /// Chunks to send in this round.
    to_send: RangeSet,
    /// Chunks the caller can read: all of them for a file; for an open stream
    /// ([`Manifest::is_open`]), those read in whole so far ([`Sender::set_readable`]).
    /// No chunk at or past it goes out.
    readable: u32,
    /// One past the highest chunk ever sent: of an open stream, every chunk from
    /// here on is to be sent whatever receivers say they lack, since none can
    /// hold a chunk never sent.
    unsent: u32,
    /// `to_send` is the whole file, sent eagerly before anyone joined: the first
    /// receiver to join replaces it with what it lacks.
    provisional: bool,
    /// The end of round that followed the whole file sent eagerly, by its
    /// `next_seq`: a receiver that joins from the start with nothing lacking is
    /// waited for to answer it, rather than asked again.
    eager_end: Option<u32>,
    /// When a claim made after the hash was known last had the manifest published
    /// again for it.
    claim_answered_at: Option<Instant>,
    /// The first manifest went out without the hash: a receiver that never joined
    /// may answer it with a claim.
    offered_without_hash: bool,
    next_seq: u32,
    /// The chunk index of each transmission from seq `sent_base` to `next_seq`: the
    /// ones that may still be in flight. Trimmed to the window floor as credit
    /// comes, so it never holds more than `window` entries.
    sent: VecDeque<u32>,
    sent_base: u32,
    /// While draining, when the sender next looks for quiet receivers to publish
    /// the manifest and the end of round again for.
    rejoin_at: Instant,
    /// When the end of round being drained was last published (or will be, for a
    /// verify round waiting out its backoff).
    asked_at: Instant,
    /// Control messages waiting to go out.
    out: VecDeque<Transmit>,
    events: VecDeque<SenderEvent>,
    join_deadline: Instant,
    /// When the manifest is next re-published while joining.
    manifest_due: Instant,
    manifest_sends: u32,
    /// Since when the window has been shut with no new credit.
    blocked_since: Option<Instant>,
    /// Since when an open stream has had nothing to send but chunks not read
    /// yet: every `max_rto` of it, an end of round tells the receivers the
    /// sender is still there, so that a slow pipe does not look like a silent
    /// sender to them.
    input_wait: Option<Instant>,
    /// Credit arrived while draining: the receivers are still working through
    /// their queues, so an unanswered end of round is not yet a lost one.
    credit_in_drain: bool,
    stalled_rounds: u32,
    /// Rounds in a row that ended with nothing missing but some receiver not yet
    /// complete.
    verify_rounds: u32,
    /// Receivers that hold the offer in their queue, and their last position.
    /// Bounded by [`SenderConfig::max_receivers`].
    queued: BTreeMap<ReceiverId, u32>,
    /// Receivers that refused the offer for now (busy, queue full), with the
    /// refusal: the manifest is offered again with backoff, and the last refusal
    /// is the failure if the join timeout ends with nobody joined. Bounded like
    /// `queued`.
    refused: BTreeMap<ReceiverId, (RejectReason, String)>,
    /// Offers refused for now so far: drives the retry backoff.
    busy_retries: u32,
    /// Receivers that said they have the file (`Complete`, or `Stored` with the
    /// name) before this sender knew its hash: each is checked once the hash is
    /// [set](Sender::set_digest). Bounded like `queued`.
    claims: BTreeMap<ReceiverId, Claim>,
}

impl Sender {
    /// Starts sending the file that `manifest` describes. `manifest.run` must differ
    /// from earlier runs of the same transfer (a random number or a clock reading).
    pub fn new(cfg: SenderConfig, prefix: Prefix, manifest: Manifest, now: Instant) -> Self {
        let readable = if manifest.is_open() { 0 } else { manifest.chunk_count };
        let mut s = Sender {
            join_deadline: now + cfg.join_timeout,
            manifest_due: now,
            cfg,
            manifest,
            prefix,
            phase: Phase::Joining { gather: None },
            peers: BTreeMap::new(),
            to_send: RangeSet::new(),
            readable,
            unsent: 0,
            provisional: false,
            eager_end: None,
            claim_answered_at: None,
            offered_without_hash: false,
            next_seq: 0,
            sent: VecDeque::new(),
            sent_base: 0,
            rejoin_at: now,
            asked_at: now,
            out: VecDeque::new(),
            events: VecDeque::new(),
            manifest_sends: 0,
            blocked_since: None,
            input_wait: None,
            credit_in_drain: false,
            stalled_rounds: 0,
            verify_rounds: 0,
            queued: BTreeMap::new(),
            refused: BTreeMap::new(),
            busy_retries: 0,
            claims: BTreeMap::new(),
        };
        s.offered_without_hash = s.manifest.sha256.is_none();
        s.publish_manifest(now);
        if s.cfg.eager_window > 0 && s.manifest.chunk_count > 0 {
            s.to_send.insert_range(0..s.manifest.chunk_count);
            s.provisional = true;
        }
        s
    }

    // ---- getters ----

    /// The manifest being served.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// True once the transfer finished or failed.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Chunk transmissions so far, repairs included.
    pub fn chunks_sent(&self) -> u32 {
        self.next_seq
    }

    /// Rounds in a row that ended without progress so far (the transfer fails at
    /// [`SenderConfig::max_stalled_rounds`]). The first round always counts as
    /// progress, so 1 means two answered rounds in which nothing new arrived: a
    /// runtime that can pick another chunk size may act on it before the failure.
    pub fn stalled_rounds(&self) -> u32 {
        self.stalled_rounds
    }

    /// True when the transfer waits for the file's hash ([`Sender::set_digest`]):
    /// the round is over and its end carries the hash, or a receiver said it has
    /// the file and is to be checked. A caller that hashes as it reads has it by
    /// the end of the first round, unless the round skipped chunks that receivers
    /// held already; then it reads the rest of the file for it. Never for an open
    /// stream: its claims wait for its end.
    pub fn wants_digest(&self) -> bool {
        let round_over = (self.phase == Phase::Sending || self.eager()) && self.to_send.is_empty();
        // An open stream's hash is not known before its end, whoever asks.
        let knowable = !self.manifest.is_open();
        let live = self.phase != Phase::Done;
        self.manifest.sha256.is_none() && knowable && live && (round_over || !self.claims.is_empty())
    }

    /// The SHA-256 of the whole file, for a manifest published without it: from
    /// now on every end of round carries it, and the receivers that said they had
    /// the file are checked against it. If any was, the manifest goes out again
    /// with the hash, so that one whose file differs takes it as an offer again.
    pub fn set_digest(&mut self, sha256: [u8; 32], now: Instant) {
        if self.manifest.sha256.is_some() || self.phase == Phase::Done {
            return;
        }
        self.manifest.sha256 = Some(sha256);
        let claims = std::mem::take(&mut self.claims);
        if !claims.is_empty() {
            // Counted as the answer to every claim: `on_complete` below answers
            // each again, and the manifest must go once (each copy is news to
            // the receivers that have the file).
            self.answer_claim(now);
        }
        for (from, (theirs, stored)) in claims {
            // One of them may have finished the transfer: the rest change nothing.
            if theirs == sha256 && self.phase != Phase::Done {
                self.on_complete(&from, theirs, stored, now);
            }
        }
    }

    /// For an open stream: the first `chunks` chunks can be read now (whole
    /// chunks only: the last, short one is readable once the size is known,
    /// [`Sender::stream_ended`]). Chunks past them wait; the window does not count
    /// the wait as a stall.
    pub fn set_readable(&mut self, chunks: u32) {
        if self.manifest.is_open() {
            self.readable = self.readable.max(chunks.min(self.manifest.chunk_count));
        }
    }

    /// For an open stream: its end is read, and it is `size` bytes long. The
    /// manifest closes ([`Manifest::close`]) and goes out again, retained: every
    /// chunk is readable, nothing past the last is sent, and from now on every end
    /// of round carries the size. An error, and nothing changed, for a size that
    /// contradicts what was already sent (fewer chunks than were readable) or is
    /// out of bounds.
    pub fn stream_ended(&mut self, size: u64) -> Result<(), DecodeError> {
        let closed = self.manifest.close(size)?;
        if closed.chunk_count < self.readable {
            return Err(DecodeError::BadChunkCount);
        }
        self.to_send.insert_range(self.unsent..closed.chunk_count);
        self.to_send.truncate(closed.chunk_count);
        self.readable = closed.chunk_count;
        self.manifest = closed;
        // The retained copy closes too: a receiver that (re)starts from it
        // learns the size before any end of round.
        self.push_manifest();
        Ok(())
    }

    /// The receivers known, and whether each has confirmed the file.
    pub fn receivers(&self) -> impl Iterator<Item = (&ReceiverId, bool)> {
        self.peers.iter().map(|(id, p)| (id, p.state == PeerState::Complete))
    }

    // ---- input ----

    /// Handles a payload received on `<prefix>/<id>/ack/<from>`. Returns the decode
    /// error for a payload that was ignored as malformed.
    pub fn handle_ack(&mut self, from: &ReceiverId, payload: &[u8], now: Instant) -> Result<(), DecodeError> {
        // A stream's receivers may list chunks up to the bound until they learn
        // its size; past the end they are of no interest, not malformed.
        let bound = if self.manifest.stream { MAX_CHUNK_COUNT } else { self.manifest.chunk_count };
        let ack = Ack::decode(payload, bound)?;
        if self.phase == Phase::Done {
            return Ok(());
        }
        let run = self.manifest.run;
        if let Some(p) = self.peers.get_mut(from) {
            p.heard = now;
        }
        match ack {
            Ack::Ready { run: r, mut held, from_start } => {
                // A stream's receiver may hold past an end it did not know yet.
                held.truncate(self.manifest.chunk_count);
                if r != run {
                    return Ok(()); // answers an earlier run's manifest
                }
                let lacks = held.complement(self.manifest.chunk_count);
                match self.peers.get(from) {
                    // A second answer to the manifest (the retained one and a
                    // re-publication back to back), a re-announcement, or a receiver
                    // that restarted from saved state: queue what it lacks, but not
                    // what is on its way to it already.
                    Some(p) if p.state == PeerState::Active => {
                        let unanswered = !p.answered;
                        self.queue_lacking(lacks, p.acked);
                        if unanswered {
                            self.ask_again(now);
                        }
                    }
                    Some(p) if !p.is_gone() => {} // complete
                    _ => self.join(from, lacks, held.len(), from_start, now),
                }
            }
            Ack::Progress { run: r, next_seq, held } => {
                if let Some(p) = self.peers.get_mut(from) {
                    if r == run && next_seq.min(self.next_seq) > p.acked {
                        p.acked = next_seq.min(self.next_seq);
                        self.blocked_since = None;
                        self.credit_in_drain = true;
                    }
                    // Never more than there are (a stream's bound is wider).
                    let held = u64::from(held).min(u64::from(self.manifest.chunk_count));
                    if held > p.held {
                        p.held = held;
                        self.events.push_back(SenderEvent::Progress { receiver: from.clone(), held: p.held });
                    }
                }
            }
            Ack::Missing { run: r, next_seq, mut missing, more } => {
                missing.truncate(self.manifest.chunk_count);
                if !self.peers.get(from).is_some_and(|p| p.state == PeerState::Active) {
                    if self.peers.get(from).is_some_and(|p| !p.is_gone()) {
                        return Ok(());
                    }
                    // Its Ready was lost: this answer is as good a join.
                    let held = u64::from(self.manifest.chunk_count) - missing.len();
                    self.join(from, RangeSet::new(), held, false, now);
                }
                let Some(p) = self.peers.get_mut(from) else { return Ok(()) };
                if r == run {
                    let n = next_seq.min(self.next_seq);
                    if n > p.acked {
                        p.acked = n;
                        self.blocked_since = None;
                    }
                    if let Phase::Draining { next_seq: end, .. } = self.phase {
                        if next_seq >= end {
                            p.answered = true;
                        }
                    }
                }
                // With `more`, only the lowest ranges are listed; count the rest as
                // unknown so that a round is not taken for progress on that alone.
                p.missing = if more { missing.len().saturating_add(1 << 32) } else { missing.len() };
                let held = u64::from(self.manifest.chunk_count).saturating_sub(missing.len());
                let acked = p.acked;
                if !more && held > p.held {
                    p.held = held;
                    self.events.push_back(SenderEvent::Progress { receiver: from.clone(), held });
                }
                // An answer to an end of round has seen everything sent before it, so
                // nothing is in flight past its credit; an answer to a manifest may
                // list chunks still on their way.
                self.queue_lacking(missing, acked);
                self.check_drained(now);
            }
            Ack::Complete { sha256 } => self.on_complete(from, sha256, None, now),
            Ack::Stored { sha256, name, change, detail } => {
                self.on_complete(from, sha256, Some((name, change, detail)), now);
            }
            Ack::Rejected { reason, detail }
                if matches!(reason, RejectReason::Busy | RejectReason::QueueFull) && !self.peers.contains_key(from) =>
            {
                // A refusal of the offer for now, before the receiver took the
                // transfer: offer it again later, within the join timeout.
                if !self.has_room_for_waiting(from) {
                    return Ok(());
                }
                self.queued.remove(from);
                self.refused.insert(from.clone(), (reason, detail));
                let retry_in = self.retry_delay();
                self.busy_retries = self.busy_retries.saturating_add(1);
                if now + retry_in < self.join_deadline {
                    // Sooner than the join backoff would, never later.
                    self.manifest_due = self.manifest_due.min(now + retry_in);
                }
                self.events.push_back(SenderEvent::Retrying { receiver: from.clone(), reason, retry_in });
            }
            Ack::Rejected { reason, detail } => {
                if self.peers.get(from).is_none_or(|p| !p.is_gone()) && self.has_room_for(from) {
                    self.queued.remove(from);
                    self.refused.remove(from);
                    let p = self.peers.entry(from.clone()).or_insert_with(|| Peer::new(self.next_seq, now));
                    p.detail = detail;
                    self.peer_gone(from, Some(reason), now);
                    self.after_peer_change(now);
                }
            }
            Ack::Queued { run: r, position } => {
                // Only for this run's offer, from a receiver that has not taken it yet.
                if r != run || self.peers.contains_key(from) || !self.has_room_for_waiting(from) {
                    return Ok(());
                }
                self.refused.remove(from);
                if self.queued.insert(from.clone(), position) != Some(position) {
                    self.events.push_back(SenderEvent::Queued { receiver: from.clone(), position });
                }
            }
        }
        Ok(())
    }

    /// Handles the passing of the deadline from [`Sender::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.needs_joins() && now >= self.manifest_due && now < self.join_deadline {
            self.publish_manifest(now);
        }
        if self.phase == Phase::Sending && self.input_wait.is_some_and(|t| now >= t + self.cfg.max_rto) {
            // Still here, waiting for input: the answers say what is missing.
            self.push_end_round(self.next_seq);
            self.input_wait = Some(now);
        }
        match self.phase {
            Phase::Joining { .. } | Phase::AwaitingJoins if now >= self.join_deadline => self.fail_no_receivers(),
            Phase::Joining { gather: Some(t) } if now >= t => self.phase = Phase::Sending,
            // The window has been shut for a whole timeout: either the tail of the
            // window or the credit for it was lost. Ask.
            Phase::Sending if self.blocked_since.is_some_and(|t| now >= t + self.cfg.rto) => self.start_drain(now),
            Phase::Draining { next_seq, retries, deadline } if now >= deadline || now >= self.rejoin_at => {
                if now < deadline {
                    // Between retries: only a quiet receiver is asked again.
                    self.rejoin(next_seq, false, now);
                } else if std::mem::take(&mut self.credit_in_drain) {
                    // Chunks are still arriving ahead of the end of round (a slow link
                    // or a slow disk): wait again rather than count a retry. A quiet
                    // receiver is asked all the same.
                    self.phase = Phase::Draining { next_seq, retries, deadline: now + self.backoff(retries) };
                    if now >= self.rejoin_at {
                        self.rejoin(next_seq, false, now);
                    }
                } else if retries >= self.cfg.max_retries {
                    let silent: Vec<ReceiverId> = self
                        .peers
                        .iter()
                        .filter(|(_, p)| p.state == PeerState::Active && !p.answered)
                        .map(|(id, _)| id.clone())
                        .collect();
                    self.peers_lost(silent);
                    self.after_peer_change(now);
                    if let Phase::Draining { .. } = self.phase {
                        self.check_drained(now);
                    }
                } else {
                    let retries = retries + 1;
                    self.phase = Phase::Draining { next_seq, retries, deadline: now + self.backoff(retries) };
                    self.rejoin(next_seq, true, now);
                }
            }
            _ => {}
        }
    }

    /// Tells the sender that the connection to the broker is back. Without a
    /// present session the broker may have forgotten the retained manifest (a broker
    /// restarted without persistence), so it is published again for receivers that
    /// have not joined yet; chunks lost with the session are found by the next end
    /// of round.
    pub fn handle_reconnect(&mut self, session_present: bool, now: Instant) {
        if !session_present && self.phase != Phase::Done {
            self.publish_manifest(now);
        }
    }

    /// Cancels the transfer: receivers are told, and the retained manifest cleared.
    pub fn cancel(&mut self, _now: Instant) {
        if self.phase != Phase::Done {
            self.finish(Some(SendFailure::Cancelled));
        }
    }

    /// Gives up on the transfer because its chunks do not get through: the
    /// runtime saw the connection break again and again right after they went
    /// out (a broker that cuts or stalls the connection at an oversized publish),
    /// which no round may ever show. Receivers are told with an abort of reason
    /// `Failed`, not `Cancelled`, so that one taking one file (`--once`) stays for
    /// the next send; reported as [`SendFailure::NoProgress`].
    pub fn give_up(&mut self, _now: Instant) {
        if self.phase != Phase::Done {
            let chunk_size = self.manifest.chunk_size;
            self.finish(Some(SendFailure::NoProgress { rounds: self.stalled_rounds, chunk_size }));
        }
    }

    /// Replaces the transfer: the runtime starts the same file again as a new
    /// transfer with smaller chunks, because this one's did not get through the
    /// broker. Like [`Sender::cancel`], receivers are told and the retained
    /// manifest cleared, but the abort says `Superseded`: a receiver that takes
    /// one file (`--once`) waits for the successor instead of ending. Reported as
    /// [`SendFailure::Cancelled`].
    pub fn supersede(&mut self, _now: Instant) {
        if self.phase != Phase::Done {
            self.finish_as(AbortReason::Superseded, Some(SendFailure::Cancelled));
        }
    }

    /// Ends the transfer because the file changed while it was being sent (the
    /// runtime saw its size or modification time change): receivers are told
    /// `Abort(Changed)` and drop what they hold, which mixes old and new bytes.
    /// Reported as [`SendFailure::Cancelled`]: the runtime reports its own error.
    pub fn file_changed(&mut self, _now: Instant) {
        if self.phase != Phase::Done {
            self.finish_as(AbortReason::Changed, Some(SendFailure::Cancelled));
        }
    }

    /// Gives up on the transfer for a reason of the sender's own (its file became
    /// unreadable): receivers are told `Abort(Failed)`, as for any sender that gives
    /// up, and keep what they hold for a later send; unlike [`Sender::cancel`], a
    /// receiver that takes one file (`--once`) does not end on it. Reported as
    /// [`SendFailure::Cancelled`]: the runtime reports its own error.
    pub fn abandon(&mut self, _now: Instant) {
        if self.phase != Phase::Done {
            self.finish_as(AbortReason::Failed, Some(SendFailure::Cancelled));
        }
    }

    // ---- output ----

    /// The next message to publish, if any. Call until `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(t) = self.out.pop_front() {
            return Some(t);
        }
        let eager = self.eager();
        if self.phase != Phase::Sending && !eager {
            return None;
        }
        if self.manifest.is_open() && self.unsent < self.manifest.chunk_count {
            // The rest of the stream goes out whatever receivers said they lack.
            self.to_send.insert_range(self.unsent..self.manifest.chunk_count);
        }
        if self.to_send.is_empty() {
            // The end of round carries the hash, which comes from the caller once
            // it has read the whole file (`set_digest`, `wants_digest`).
            self.manifest.sha256?;
            if eager {
                // The whole file went out before anyone answered: the end of round
                // follows it, so that a receiver that got it all verifies it now.
                // Joining goes on as before; whoever joins lacking nothing is
                // waited for to answer this end of round.
                self.push_end_round(self.next_seq);
                self.provisional = false;
                self.eager_end = Some(self.next_seq);
            } else {
                self.start_drain(now);
            }
            return self.out.pop_front();
        }
        // Before anyone joined, the eager window counts from the first transmission.
        let (floor, window) = if eager {
            (0, self.cfg.eager_window.min(self.cfg.window))
        } else {
            (self.window_floor()?, self.cfg.window)
        };
        // What every receiver the window follows has acknowledged is no longer in
        // flight to it.
        let acked = floor.saturating_sub(self.sent_base).min(self.sent.len() as u32);
        self.sent.drain(..acked as usize);
        self.sent_base += acked;
        if self.next_seq >= floor.saturating_add(window) {
            if !eager {
                self.blocked_since.get_or_insert(now);
            }
            return None;
        }
        let Some(next) = self.next_seq.checked_add(1) else {
            // Four billion transmissions without finishing: nothing is getting through.
            let chunk_size = self.manifest.chunk_size;
            self.finish(Some(SendFailure::NoProgress { rounds: self.stalled_rounds, chunk_size }));
            return self.out.pop_front();
        };
        if self.to_send.first()? >= self.readable {
            // An open stream's next chunk is not read yet: `set_readable` wakes us.
            self.input_wait.get_or_insert(now);
            return None;
        }
        self.input_wait = None;
        let index = self.to_send.pop_first()?;
        self.unsent = self.unsent.max(index + 1);
        let seq = self.next_seq;
        self.next_seq = next;
        if self.sent.is_empty() {
            self.sent_base = seq;
        }
        self.sent.push_back(index);
        Some(Transmit {
            topic: self.prefix.chunk(&self.manifest.id, index),
            qos: self.cfg.chunk_qos,
            retain: false,
            payload: Payload::Chunk(ChunkRef {
                run: self.manifest.run,
                seq,
                index,
                offset: self.manifest.chunk_offset(index),
                len: self.manifest.chunk_len(index),
            }),
        })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }

    /// When [`Sender::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Joining { gather } => Some(gather.map_or(self.join_deadline, |g| g.min(self.join_deadline))),
            Phase::AwaitingJoins => Some(self.join_deadline),
            Phase::Sending => {
                let blocked = self.blocked_since.map(|t| t + self.cfg.rto);
                let waiting = self.input_wait.map(|t| t + self.cfg.max_rto);
                blocked.into_iter().chain(waiting).min()
            }
            Phase::Draining { deadline, .. } => Some(deadline.min(self.rejoin_at)),
            Phase::Done => return None,
        };
        let manifest = (self.needs_joins() && self.manifest_due < self.join_deadline).then_some(self.manifest_due);
        match (phase, manifest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals ----

    /// How many receivers the wait policy needs.
    fn wanted(&self) -> usize {
        match &self.cfg.wait {
            Wait::Count(n) => (*n).max(1),
            Wait::Ids(ids) => ids.len(),
        }
    }

    /// True while chunks go out before any receiver joined (PROTOCOL.md 8.2).
    fn eager(&self) -> bool {
        self.provisional && self.phase == (Phase::Joining { gather: None })
    }

    /// True while fewer receivers have joined than the wait policy needs: the
    /// manifest is then re-published with backoff, for receivers that missed it.
    fn needs_joins(&self) -> bool {
        if self.phase == Phase::Done {
            return false;
        }
        match &self.cfg.wait {
            Wait::Count(_) => self.peers.values().filter(|p| !p.is_gone()).count() < self.wanted(),
            Wait::Ids(ids) => ids.iter().any(|id| !self.peers.contains_key(id)),
        }
    }

    fn backoff(&self, retries: u32) -> Duration {
        self.cfg.rto.saturating_mul(1 << retries.min(16)).min(self.cfg.max_rto)
    }

    fn publish_manifest(&mut self, now: Instant) {
        self.push_manifest();
        self.manifest_due = now + self.backoff(self.manifest_sends);
        self.manifest_sends += 1;
    }

    /// The manifest, retained: a live publication reaches current subscribers even
    /// on a broker that hands retained messages to none of them.
    fn push_manifest(&mut self) {
        self.out.push_back(Transmit {
            topic: self.prefix.manifest(&self.manifest.id),
            qos: Qos::AtLeastOnce,
            retain: true,
            payload: Payload::Bytes(self.manifest.encode()),
        });
    }

    /// Asks again for the answers to the end of round at `next_seq`: always on a
    /// `retry`, otherwise only when a receiver is quiet. A quiet receiver (active,
    /// not answered, nothing from it for `rto`) may have restarted and subscribed
    /// again without getting the retained manifest, so the manifest goes out first:
    /// the receiver accepts it, answers `Ready` with what it saved, and then answers
    /// the end of round behind it.
    fn rejoin(&mut self, next_seq: u32, retry: bool, now: Instant) {
        let since = self.asked_at;
        let rto = self.cfg.rto;
        let quiet =
            self.peers.values().any(|p| p.state == PeerState::Active && !p.answered && now >= p.heard.max(since) + rto);
        if quiet {
            self.push_manifest();
        }
        if quiet || retry {
            self.push_end_round(next_seq);
            self.asked_at = now;
        }
        self.rejoin_at = now + self.cfg.rejoin_interval;
    }

    /// A receiver that has not answered the end of round being drained said `Ready`:
    /// it has the manifest, and either restarted or heard nothing for a while, so the
    /// end of round it answers may never have reached it. (rumqttd hands a returning
    /// session its kept control messages before its kept manifests, so the ends of
    /// round arrive while the receiver does not know the transfer yet.) Publish it
    /// again now rather than at the next check, at most once per `rto` whoever asks.
    fn ask_again(&mut self, now: Instant) {
        if let Phase::Draining { next_seq, .. } = self.phase {
            if now >= self.asked_at + self.cfg.rto {
                self.push_end_round(next_seq);
                self.asked_at = now;
            }
        }
    }

    /// Adds to `to_send` the chunks of `lacks`, except those sent to the receiver
    /// with a `seq` at or above its credit `acked`: they are still on their way, and
    /// if they are lost the next end of round says so. Without this a receiver that
    /// answers the manifest twice (retained, then re-published) would have every chunk
    /// in flight queued a second time.
    /// Returns whether it lacks anything not in flight.
    fn queue_lacking(&mut self, mut lacks: RangeSet, acked: u32) -> bool {
        let skip = acked.saturating_sub(self.sent_base) as usize;
        for &index in self.sent.iter().skip(skip) {
            lacks.remove(index);
        }
        self.to_send.union_with(&lacks);
        !lacks.is_empty()
    }

    fn push_ctl(&mut self, ctl: Ctl) {
        self.out.push_back(Transmit {
            topic: self.prefix.ctl(&self.manifest.id),
            qos: Qos::AtLeastOnce,
            retain: false,
            payload: Payload::Bytes(ctl.encode()),
        });
    }

    /// The credit the window counts from: the lowest of the active receivers
    /// waited for by id, so that a stranger cannot throttle the transfer; of all
    /// active receivers when the policy is a count or none of those is active.
    fn window_floor(&self) -> Option<u32> {
        let active = self.peers.iter().filter(|(_, p)| p.state == PeerState::Active);
        if let Wait::Ids(ids) = &self.cfg.wait {
            let waited = active.clone().filter(|(id, _)| ids.contains(*id)).map(|(_, p)| p.acked).min();
            if waited.is_some() {
                return waited;
            }
        }
        active.map(|(_, p)| p.acked).min()
    }

    /// True when a receiver may be remembered as queued or refusing for now: the same
    /// bound as joined receivers, so a flood of fake answers cannot grow memory.
    fn has_room_for_waiting(&self, id: &ReceiverId) -> bool {
        self.queued.contains_key(id)
            || self.refused.contains_key(id)
            || self.queued.len() + self.refused.len() < self.cfg.max_receivers
            || self.waits_for(id)
    }

    /// The pause before the next offer to a receiver that refused it for now:
    /// [`FIRST_RETRY_DELAY`] doubling to [`MAX_RETRY_DELAY`], plus up to a half
    /// more of jitter so that senders refused together do not come back together.
    /// The jitter derives from the run, a random number per sender, so the state
    /// machine stays deterministic.
    fn retry_delay(&self) -> Duration {
        let base = FIRST_RETRY_DELAY.saturating_mul(1 << self.busy_retries.min(8)).min(MAX_RETRY_DELAY);
        let mix = self.manifest.run.wrapping_add(self.busy_retries.wrapping_mul(0x9e37_79b9)).wrapping_mul(0x85eb_ca6b);
        let per_mille = (mix >> 16) % 500;
        base + base * per_mille / 1000
    }

    /// True when a receiver unknown so far may be tracked: while there is room, and
    /// always for a receiver waited for by id.
    fn has_room_for(&self, id: &ReceiverId) -> bool {
        self.peers.contains_key(id) || self.peers.len() < self.cfg.max_receivers || self.waits_for(id)
    }

    /// A receiver has the file ([`Ack::Complete`], or [`Ack::Stored`] with the
    /// name it stored it under).
    fn on_complete(
        &mut self,
        from: &ReceiverId,
        sha256: [u8; 32],
        stored: Option<(String, NameChange, String)>,
        now: Instant,
    ) {
        if !self.has_room_for(from) {
            return;
        }
        if self.manifest.sha256.is_none() {
            // Checked once the file is read (`set_digest`): a receiver matches
            // files by name and size before it can know their bytes are these.
            if self.claims.contains_key(from) || self.claims.len() < self.cfg.max_receivers || self.waits_for(from) {
                self.claims.insert(from.clone(), (sha256, stored));
            }
            return;
        }
        if !self.peers.contains_key(from) && self.manifest.sha256 != Some(sha256) {
            // A receiver that never joined answers with another file's hash: a claim
            // made on a manifest without the hash (the retained copy, or one sent
            // before the sender had read its file), not a file that failed its
            // check, which only a receiver that has the hash could report. It is
            // not this file; the manifest goes out again, with the hash, so that
            // the receiver takes the transfer as an offer (at most once per `rto`,
            // whoever claims).
            self.answer_claim(now);
            return;
        }
        if !self.peers.contains_key(from) && self.offered_without_hash {
            // The same hash from a receiver that never joined: a claim that holds,
            // but the receiver made it on a manifest without the hash, and confirms
            // its file only once it sees the manifest with it (PROTOCOL.md 8.3).
            self.answer_claim(now);
        }
        // Unknown: a receiver that had the file before we asked.
        let p = self.peers.entry(from.clone()).or_insert(Peer::new(self.next_seq, now));
        // Only an active receiver, or one given up as lost that was only slow.
        if !matches!(p.state, PeerState::Active | PeerState::Gone(None)) {
            return;
        }
        if self.manifest.sha256 == Some(sha256) {
            *p = Peer::complete(p.acked, self.manifest.chunk_count, now);
            if let Some((name, change, detail)) = stored {
                self.events.push_back(SenderEvent::StoredAs { receiver: from.clone(), name, change, detail });
            }
            self.events.push_back(SenderEvent::ReceiverComplete { receiver: from.clone() });
        } else {
            self.peer_gone(from, Some(RejectReason::HashMismatch), now);
        }
        self.after_peer_change(now);
    }

    /// A receiver joins, lacking `lacks`. One that got the chunks `from_start`
    /// (PROTOCOL.md 8.2) has the transmissions the sender still tracks on their way
    /// to it: its credit starts at the oldest of them, and they are not queued
    /// again. Any other starts at the current `seq`, with nothing in flight to it.
    /// Publishes the manifest, with the hash, for a receiver that claimed the file
    /// on a manifest without it; at most once per `rto`, whoever claims.
    fn answer_claim(&mut self, now: Instant) {
        if self.claim_answered_at.is_none_or(|t| now >= t + self.cfg.rto) {
            self.claim_answered_at = Some(now);
            self.push_manifest();
        }
    }

    fn join(&mut self, from: &ReceiverId, lacks: RangeSet, held: u64, from_start: bool, now: Instant) {
        if !self.has_room_for(from) {
            return;
        }
        self.queued.remove(from);
        self.refused.remove(from);
        let acked = if from_start && !self.sent.is_empty() { self.sent_base } else { self.next_seq };
        let mut peer = Peer::new(acked, now);
        peer.held = held;
        peer.missing = lacks.len();
        // A receiver that joins during a drain is asked in the next one; its lacks
        // are already queued.
        peer.answered = true;
        self.peers.insert(from.clone(), peer);
        if std::mem::take(&mut self.provisional) {
            // The eager plan was the whole file; from now on, what receivers lack.
            self.to_send = RangeSet::new();
        }
        let lacks = self.queue_lacking(lacks, acked);
        self.events.push_back(SenderEvent::ReceiverJoined { receiver: from.clone(), held });
        if matches!(self.phase, Phase::Joining { .. } | Phase::AwaitingJoins)
            && !lacks
            && acked < self.next_seq
            && self.eager_end == Some(self.next_seq)
        {
            // It has the whole file and the end of round behind it on their way:
            // wait for its answer to that one instead of asking again.
            if let Some(p) = self.peers.get_mut(from) {
                p.answered = false;
            }
            self.credit_in_drain = false;
            (self.asked_at, self.rejoin_at) = (now, now + self.cfg.rto);
            self.phase = Phase::Draining { next_seq: self.next_seq, retries: 0, deadline: now + self.cfg.rto };
            return;
        }
        match self.phase {
            // Start at once when everyone is here, else after a short grace.
            Phase::Joining { .. } | Phase::AwaitingJoins if !self.needs_joins() => self.phase = Phase::Sending,
            Phase::Joining { gather: None } => self.phase = Phase::Joining { gather: Some(now + self.cfg.join_grace) },
            Phase::AwaitingJoins => self.phase = Phase::Sending,
            // A drain waits for every active receiver, and one that died (a pool
            // member killed mid-transfer, whose offer went to another member) keeps
            // it waiting until it is declared lost, a minute later. The joiner's
            // lacks need no answer from anyone: send them now; whoever has not
            // answered is asked again at the next end of round.
            Phase::Draining { .. } if lacks => {
                self.blocked_since = None;
                self.phase = Phase::Sending;
            }
            _ => {}
        }
    }

    fn start_drain(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            p.answered = p.state != PeerState::Active;
        }
        self.blocked_since = None;
        self.credit_in_drain = false;
        self.rejoin_at = now + self.cfg.rto;
        self.asked_at = now;
        self.phase = Phase::Draining { next_seq: self.next_seq, retries: 0, deadline: now + self.cfg.rto };
        self.push_end_round(self.next_seq);
    }

    /// The end of round at `next_seq`, with the file's hash once it is known.
    fn push_end_round(&mut self, next_seq: u32) {
        let size = (self.manifest.stream && !self.manifest.is_open()).then_some(self.manifest.size);
        self.push_ctl(Ctl::EndRound { run: self.manifest.run, next_seq, sha256: self.manifest.sha256, size });
    }

    /// Ends the drain once every active receiver answered.
    fn check_drained(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Draining { .. }) {
            return;
        }
        let mut active = self.peers.iter().filter(|(_, p)| p.state == PeerState::Active).peekable();
        if active.peek().is_none() {
            self.after_peer_change(now);
            return;
        }
        let mut all_answered = true;
        let mut progress = false;
        for (id, p) in active {
            // Receivers outside a list of ids get what they ask for, but a drain
            // does not wait for them.
            all_answered &= p.answered || !self.matters(id);
            progress |= p.missing < p.best || p.held > p.best_held;
        }
        if !all_answered {
            return;
        }
        // A round made progress when some receiver lacks fewer chunks, or holds
        // more, than ever before.
        for p in self.peers.values_mut() {
            p.best = p.best.min(p.missing);
            p.best_held = p.best_held.max(p.held);
        }
        if self.to_send.is_empty() {
            // Every active receiver holds every chunk and is still verifying (reading
            // chunks back for the hash, or moving the file into place). That is not
            // a stall; ask again with backoff, a bounded number of times.
            self.verify_rounds += 1;
            if self.verify_rounds > self.cfg.max_retries.saturating_mul(2) {
                let slow: Vec<ReceiverId> =
                    self.peers.iter().filter(|(_, p)| p.state == PeerState::Active).map(|(id, _)| id.clone()).collect();
                self.peers_lost(slow);
                self.after_peer_change(now);
                return;
            }
            let deadline = now + self.backoff(self.verify_rounds - 1);
            self.phase = Phase::Draining { next_seq: self.next_seq, retries: 0, deadline };
            // Nobody is asked before the deadline, so nobody is quiet before it.
            (self.asked_at, self.rejoin_at) = (deadline, deadline);
            for p in self.peers.values_mut() {
                p.answered = p.state != PeerState::Active;
            }
            // The end of round goes out again when the deadline passes.
            return;
        }
        self.verify_rounds = 0;
        if progress {
            self.stalled_rounds = 0;
        } else {
            self.stalled_rounds += 1;
            if self.stalled_rounds >= self.cfg.max_stalled_rounds {
                self.finish(Some(SendFailure::NoProgress {
                    rounds: self.stalled_rounds,
                    chunk_size: self.manifest.chunk_size,
                }));
                return;
            }
        }
        self.phase = Phase::Sending;
    }

    fn peer_gone(&mut self, id: &ReceiverId, reason: Option<RejectReason>, _now: Instant) {
        if let Some(failure) = self.mark_gone(id, reason) {
            self.finish(Some(failure));
        }
    }

    /// Receivers that stopped answering in the same drain: each one is reported,
    /// then the transfer fails once, for the first of them it waits for. Failing
    /// inside the loop would report one terminal failure per receiver.
    fn peers_lost(&mut self, ids: Vec<ReceiverId>) {
        let mut failure = None;
        for id in ids {
            let lost = self.mark_gone(&id, None);
            failure = failure.or(lost);
        }
        if let Some(failure) = failure {
            self.finish(Some(failure));
        }
    }

    /// Marks a known receiver gone and reports it. Returns the failure of the
    /// transfer when the wait policy names it; the caller finishes with it.
    fn mark_gone(&mut self, id: &ReceiverId, reason: Option<RejectReason>) -> Option<SendFailure> {
        let p = self.peers.get_mut(id)?;
        p.state = PeerState::Gone(reason);
        let detail = p.detail.clone();
        self.events.push_back(SenderEvent::ReceiverFailed { receiver: id.clone(), reason });
        self.waits_for(id).then(|| match reason {
            None => SendFailure::ReceiverLost { receiver: id.clone() },
            Some(RejectReason::HashMismatch) => SendFailure::HashMismatch { receiver: id.clone() },
            Some(reason) => SendFailure::Rejected { receiver: id.clone(), reason, detail },
        })
    }

    /// True when `id` counts toward the wait policy: any receiver for a count, only
    /// the listed ones otherwise.
    fn matters(&self, id: &ReceiverId) -> bool {
        match &self.cfg.wait {
            Wait::Ids(ids) => ids.contains(id),
            Wait::Count(_) => true,
        }
    }

    /// True when `id`'s failure fails the transfer.
    fn waits_for(&self, id: &ReceiverId) -> bool {
        match &self.cfg.wait {
            Wait::Ids(ids) => ids.contains(id),
            // Any receiver will do: a failure is fatal only when too few are left.
            Wait::Count(_) => false,
        }
    }

    /// Re-evaluates completion after a receiver completed, failed or went away.
    fn after_peer_change(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        let complete = self.peers.values().filter(|p| p.state == PeerState::Complete).count();
        let active = self.peers.values().filter(|p| p.state == PeerState::Active).count();
        let satisfied = match &self.cfg.wait {
            Wait::Count(n) => complete >= (*n).max(1),
            Wait::Ids(ids) => ids.iter().all(|id| self.peers.get(id).is_some_and(|p| p.state == PeerState::Complete)),
        };
        if satisfied {
            self.finish(None);
        } else if active == 0 {
            if matches!(self.cfg.wait, Wait::Count(_)) && self.peers.values().any(Peer::is_gone) {
                // Everyone who came has finished or failed, and not enough finished:
                // report the failure now rather than at the join deadline.
                self.fail_no_receivers();
                return;
            }
            if now >= self.join_deadline {
                self.fail_no_receivers();
                return;
            }
            // Everyone who came is done; wait for more receivers to join.
            self.phase = Phase::AwaitingJoins;
            self.to_send = RangeSet::new();
        } else if let Phase::Draining { .. } = self.phase {
            self.check_drained(now);
        }
    }

    fn fail_no_receivers(&mut self) {
        let wanted = self.wanted();
        // Only the receivers waited for count: `--to gw3` with gw1 answering is
        // "0 of 1", never "1 of 1".
        let joined = self.peers.iter().filter(|(id, p)| !p.is_gone() && self.matters(id)).count();
        // A receiver that refused or was lost is reported as such.
        let gone = self.peers.iter().find_map(|(id, p)| match p.state {
            PeerState::Gone(reason) if self.matters(id) => Some((id.clone(), reason, p.detail.clone())),
            _ => None,
        });
        // Then one still queued, then one that kept refusing for now: each says
        // more than "nobody answered".
        let queued = self.queued.iter().find(|(id, _)| self.matters(id));
        let refused = self.refused.iter().find(|(id, _)| self.matters(id));
        let failure = match (gone, queued, refused) {
            (Some((receiver, None, _)), ..) => SendFailure::ReceiverLost { receiver },
            (Some((receiver, Some(RejectReason::HashMismatch), _)), ..) => SendFailure::HashMismatch { receiver },
            (Some((receiver, Some(reason), detail)), ..) => SendFailure::Rejected { receiver, reason, detail },
            (None, Some((receiver, &position)), _) => SendFailure::StillQueued { receiver: receiver.clone(), position },
            (None, None, Some((receiver, (reason, detail)))) => {
                SendFailure::Rejected { receiver: receiver.clone(), reason: *reason, detail: detail.clone() }
            }
            (None, None, None) => SendFailure::NoReceivers { joined, wanted },
        };
        self.finish(Some(failure));
    }

    /// Ends the transfer: tells the receivers, clears the retained manifest and
    /// reports the one terminal event. Once done, later calls do nothing, so that
    /// an outcome is reported, and the abort published, exactly once.
    fn finish(&mut self, failure: Option<SendFailure>) {
        let reason = match &failure {
            None => AbortReason::Finished,
            Some(SendFailure::Cancelled) => AbortReason::Cancelled,
            Some(_) => AbortReason::Failed,
        };
        self.finish_as(reason, failure);
    }

    /// Ends the transfer with an abort of `reason` to the receivers.
    fn finish_as(&mut self, reason: AbortReason, failure: Option<SendFailure>) {
        if self.phase == Phase::Done {
            return;
        }
        self.push_ctl(Ctl::Abort { run: self.manifest.run, reason });
        // Clear the retained manifest so that receivers starting later do not find a
        // transfer nobody serves.
        self.out.push_back(Transmit {
            topic: self.prefix.manifest(&self.manifest.id),
            qos: Qos::AtLeastOnce,
            retain: true,
            payload: Payload::Bytes(Vec::new()),
        });
        self.phase = Phase::Done;
        self.to_send = RangeSet::new();
        self.events.push_back(match failure {
            None => SenderEvent::Finished,
            Some(f) => SenderEvent::Failed(f),
        });
    }
}

impl Peer {
    fn new(acked: u32, now: Instant) -> Self {
        Peer {
            heard: now,
            state: PeerState::Active,
            acked,
            answered: false,
            missing: u64::MAX,
            held: 0,
            best: u64::MAX,
            best_held: 0,
            detail: String::new(),
        }
    }

    fn is_gone(&self) -> bool {
        matches!(self.state, PeerState::Gone(_))
    }

    fn complete(acked: u32, chunks: u32, now: Instant) -> Self {
        Peer {
            heard: now,
            state: PeerState::Complete,
            acked,
            answered: true,
            missing: 0,
            held: u64::from(chunks),
            best: 0,
            best_held: u64::from(chunks),
            detail: String::new(),
        }
    }
}

#[cfg(test)]
mod tests;
