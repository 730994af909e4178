//! One receiver's many transfers: routing by topic, the offer rules, the queue.
//!
//! A [`Receiver`] knows one transfer. A receiving process sees every
//! message under its prefix: manifests of transfers it never heard of, chunks left
//! over from an earlier run's subscriptions, control messages for transfers it
//! finished long ago. [`ReceiverEndpoint`] takes each of them with its topic and
//! decides, in the manner of quinn-proto's `Endpoint`, what it is:
//!
//! - input for a transfer that is open here ([`Routed::Manifest`], [`Routed::Chunk`],
//!   [`Routed::Ctl`]): the caller feeds it to that transfer's `Receiver`, which the
//!   caller owns, next to its file;
//! - a new offer ([`Routed::Offer`]) that passed every rule needing no I/O: the caller
//!   looks at its disk and calls [`ReceiverEndpoint::accept`],
//!   [`ReceiverEndpoint::refuse`] or [`ReceiverEndpoint::already_complete`];
//! - a transfer finished here before ([`Routed::CheckHistory`]): the endpoint would
//!   answer `Complete` from memory, but remembering proves nothing about the disk now
//!   (PROTOCOL.md 9.2, step 5). The caller checks the file and hands the result to
//!   [`ReceiverEndpoint::history_checked`];
//! - chunks of a transfer nobody here knows ([`Routed::Unsubscribe`]): a subscription
//!   left in the broker's session by an earlier run, to drop once;
//! - or nothing for the caller: ignored, or answered by the endpoint itself (a bad
//!   manifest refused, a queued offer told its place again, a queued offer
//!   withdrawn).
//!
//! The endpoint also holds the offers that find every slot taken, first come first
//! served, bounded by a count and by bytes ([`Limits`]); [`ReceiverEndpoint::next_admitted`]
//! hands out the head when a slot frees. Its memories (finished transfers, dropped
//! chunk subscriptions) are bounded too, so no sequence of messages grows it without
//! bound.
//!
//! # Driving it
//! For each message: [`ReceiverEndpoint::handle`], act on the [`Routed`] it returns,
//! then drain [`ReceiverEndpoint::poll_transmit`] and [`ReceiverEndpoint::poll_event`].
//! Tell it when a transfer stops holding a slot ([`ReceiverEndpoint::ended`], with
//! [`ReceiverEndpoint::completed`] for one that delivered its file), when it is
//! gone ([`ReceiverEndpoint::closed`]), and then ask [`ReceiverEndpoint::next_admitted`]
//! for the offers that may take the freed slots. [`ReceiverEndpoint::stop`] ends it:
//! every queued sender is told `Cancelled`.
//!
//! A sending process has its own, smaller [`SenderEndpoint`]: it routes each ack to
//! the transfer it answers, by the id in its topic, and names the receiver that
//! sent it.
//!
//! One file a little over 600 lines: the receiver endpoint's routing, queue and
//! memories are the rules of PROTOCOL.md 9.2 in their order, and the sender's router is
//! a few lines beside them. Its tests live in `endpoint/tests.rs`.

use std::collections::{BTreeMap, HashSet, VecDeque};

use crate::receiver::ack_transmit;
use crate::topic::PrefixPattern;
use crate::{Ack, Ctl, Manifest, Prefix, Receiver, ReceiverId, RejectReason, Topic, TransferId, Transmit};

/// How many completed transfers' manifests are remembered (8 KiB each at most), to
/// answer a repeated manifest with `Complete` without a new offer, once the file on
/// disk is checked again.
pub const COMPLETED_MEMORY: usize = 256;
/// How many unknown transfers' chunk subscriptions are remembered as dropped.
pub const STALE_MEMORY: usize = 1024;
/// How many offers and history checks handed to the caller remember the prefix
/// they came under, until the caller answers them. A caller answers each before
/// the next message, so a few would do; forgetting one sends its answer under the
/// endpoint's first prefix.
pub const ORIGIN_MEMORY: usize = 64;

/// What a receiver takes on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Transfers open at once; offers past it wait in the queue. At least 1.
    pub max_concurrent: usize,
    /// Refuse files larger than this many bytes ([`RejectReason::TooLarge`]).
    pub max_size: Option<u64>,
    /// The most offers waiting for a slot; past it (or `queue_bytes`) an offer is
    /// refused with [`RejectReason::QueueFull`].
    pub queue: usize,
    /// The most bytes of manifests the queue holds.
    pub queue_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // 256 manifests of up to 8 KiB would be 2 MiB; the common one is ~100 bytes.
        Limits { max_concurrent: 16, max_size: None, queue: 256, queue_bytes: 1 << 20 }
    }
}

/// What a message is, for the caller. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Routed {
    /// A manifest of a transfer open here: feed it to its `Receiver::handle_manifest`.
    Manifest(Manifest),
    /// A chunk of a transfer open here: feed the payload to its
    /// `Receiver::handle_chunk` with this index.
    Chunk(TransferId, u32),
    /// A control message of a transfer open here: feed the payload to its
    /// `Receiver::handle_ctl`.
    Ctl(TransferId),
    /// A new offer: decide with what only the caller can see (the name as a local
    /// path, the disk) and answer with [`ReceiverEndpoint::accept`],
    /// [`ReceiverEndpoint::refuse`] or [`ReceiverEndpoint::already_complete`].
    Offer(Manifest),
    /// A transfer completed here earlier is asked about again: check that its file
    /// still holds the manifest's bytes, then call [`ReceiverEndpoint::history_checked`].
    CheckHistory(Manifest),
    /// Chunks of a transfer unknown here: unsubscribe this filter.
    Unsubscribe(String),
}

/// What the endpoint did on its own, for the caller's log and its user.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// An offer is being decided on: new, or the head of the queue given a slot.
    Offered {
        /// The transfer.
        id: TransferId,
        /// The name as the sender gave it: untrusted.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// The sender's name from the manifest (claimed, not proven), or empty.
        sender: String,
    },
    /// A new offer waits in the queue at `position` (1 for the head).
    Queued {
        /// The transfer.
        id: TransferId,
        /// The name as the sender gave it: untrusted.
        name: String,
        /// Its place.
        position: u32,
        /// The sender's name from the manifest, or empty.
        sender: String,
    },
    /// An offer was refused, by the endpoint or through [`ReceiverEndpoint::refuse`].
    Refused {
        /// The transfer.
        id: TransferId,
        /// The name as the sender gave it: untrusted.
        name: String,
        /// Why.
        reason: RejectReason,
        /// The detail sent along.
        detail: String,
        /// The sender's name from the manifest, or empty.
        sender: String,
    },
    /// A queued offer left the queue: its sender aborted or cleared its manifest.
    Withdrawn {
        /// The transfer.
        id: TransferId,
    },
    /// A manifest addressed to other receivers ([`Manifest::to`]) was ignored,
    /// without an answer.
    NotAddressed {
        /// The transfer.
        id: TransferId,
    },
}

/// Routes one receiver's messages by topic and keeps the rules that span transfers.
#[derive(Debug)]
pub struct ReceiverEndpoint {
    /// What the receiver listens under, none covering another.
    patterns: Vec<PrefixPattern>,
    rid: ReceiverId,
    limits: Limits,
    /// Transfers the caller accepted and has not closed, with the prefix each lives
    /// under; `true` while the transfer holds a slot (not yet ended).
    open: BTreeMap<TransferId, (bool, Prefix)>,
    /// The prefix of each offer or history check handed to the caller and not yet
    /// answered, newest last; bounded by [`ORIGIN_MEMORY`]. The flag marks an offer
    /// handed over straight from a live manifest while the chunk wildcard was in
    /// effect: every chunk of it reaches the caller ([`ReceiverEndpoint::is_early`]).
    origins: VecDeque<(TransferId, Prefix, bool)>,
    /// The manifests of recently completed transfers, oldest first.
    completed: VecDeque<Manifest>,
    /// Chunk filters of unknown transfers, dropped.
    stale: HashSet<String>,
    queue: OfferQueue,
    stopping: bool,
    /// The caller subscribes every pattern's [`PrefixPattern::chunks_filter`]
    /// ([`ReceiverEndpoint::set_chunk_wildcard`]).
    chunk_wildcard: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
}

impl ReceiverEndpoint {
    /// An endpoint for receiver `rid` under `prefix`.
    pub fn new(prefix: Prefix, rid: ReceiverId, limits: Limits) -> Self {
        Self::with_patterns(vec![prefix.into()], rid, limits)
    }

    /// An endpoint for receiver `rid` under several prefixes, or prefixes with `+`
    /// levels. A pattern that another one covers ([`PrefixPattern::covers`]) is
    /// dropped: its messages match the other. Each transfer lives under the
    /// concrete prefix its manifest came on, and is answered there.
    pub fn with_patterns(patterns: Vec<PrefixPattern>, rid: ReceiverId, limits: Limits) -> Self {
        let mut kept: Vec<PrefixPattern> = Vec::new();
        for p in patterns {
            if kept.iter().any(|k| k.covers(&p)) {
                continue;
            }
            kept.retain(|k| !p.covers(k));
            kept.push(p);
        }
        if kept.is_empty() {
            kept.push(Prefix::default().into());
        }
        ReceiverEndpoint {
            patterns: kept,
            rid,
            limits,
            open: BTreeMap::new(),
            origins: VecDeque::new(),
            completed: VecDeque::new(),
            stale: HashSet::new(),
            queue: OfferQueue::default(),
            stopping: false,
            chunk_wildcard: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Tells the endpoint that the caller subscribes, for every pattern, to the
    /// chunks of all transfers ([`PrefixPattern::chunks_filter`]), in effect before
    /// any manifest it handles: senders send chunks before anyone answers
    /// (PROTOCOL.md 8.2), and a receiver subscribed to them takes a transfer with
    /// no round trip before its data. An offer that came from a live manifest is
    /// then accepted as early ([`ReceiverEndpoint::accept`]); chunks of transfers
    /// not open here are dropped without a word (they are someone else's, or of
    /// an offer refused or queued).
    pub fn set_chunk_wildcard(&mut self, on: bool) {
        self.chunk_wildcard = on;
    }

    // Getters.

    /// True when the caller subscribes to every transfer's chunks
    /// ([`ReceiverEndpoint::set_chunk_wildcard`]).
    pub fn chunk_wildcard(&self) -> bool {
        self.chunk_wildcard
    }

    /// The patterns listened under, none covering another: subscribe to each one's
    /// manifest and control filters.
    pub fn patterns(&self) -> &[PrefixPattern] {
        &self.patterns
    }

    /// The concrete prefix transfer `id` lives under: where its manifest came from,
    /// for an open, queued or offered transfer. Create its `Receiver` and chunk
    /// subscription under it.
    pub fn origin(&self, id: &TransferId) -> Option<&Prefix> {
        self.open
            .get(id)
            .map(|(_, p)| p)
            .or_else(|| self.origins.iter().rev().find(|(i, ..)| i == id).map(|(_, p, _)| p))
            .or_else(|| self.queue.offers.iter().find(|(m, _)| m.id == *id).map(|(_, p)| p))
    }

    /// The prefix to answer `id` under: its origin, or the first pattern's prefix
    /// for a caller that answers what it was never handed.
    fn reply_prefix(&self, id: &TransferId) -> Prefix {
        self.origin(id).cloned().unwrap_or_else(|| self.patterns[0].concrete().unwrap_or_default())
    }

    fn remember_origin(&mut self, id: TransferId, prefix: Prefix) {
        self.origins.retain(|(i, ..)| *i != id);
        if self.origins.len() >= ORIGIN_MEMORY {
            self.origins.pop_front();
        }
        self.origins.push_back((id, prefix, false));
    }

    fn forget_origin(&mut self, id: &TransferId) {
        self.origins.retain(|(i, ..)| i != id);
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Transfers that hold a slot: accepted and not yet ended.
    pub fn open_transfers(&self) -> usize {
        self.open.values().filter(|(holds, _)| *holds).count()
    }

    /// True while every slot is taken.
    pub fn slots_full(&self) -> bool {
        self.open_transfers() >= self.limits.max_concurrent.max(1)
    }

    /// The place of `id` in the queue, 1 for the head.
    pub fn queued_position(&self, id: &TransferId) -> Option<u32> {
        self.queue.position(id)
    }

    /// Offers waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.offers.len()
    }

    /// True once [`ReceiverEndpoint::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    // Input.

    /// Takes one message under the prefix. See [`Routed`] for what comes back; what
    /// the endpoint answers itself goes out through
    /// [`ReceiverEndpoint::poll_transmit`].
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> Option<Routed> {
        self.handle_as(topic, payload, false)
    }

    /// [`ReceiverEndpoint::handle`] for a message the broker delivered as a retained
    /// copy (because a subscription was made, not because it was just published):
    /// a manifest that arrives so may have been published long before, and its
    /// first chunks with it, so it is never accepted as early.
    pub fn handle_retained(&mut self, topic: &str, payload: &[u8]) -> Option<Routed> {
        self.handle_as(topic, payload, true)
    }

    fn handle_as(&mut self, topic: &str, payload: &[u8], retained: bool) -> Option<Routed> {
        let (prefix, parsed) = self.patterns.iter().find_map(|p| p.parse(topic))?;
        if let Some((_, open_under)) = self.open.get(parsed.transfer_id()) {
            if *open_under != prefix {
                // The same file sent under another prefix while it is open here
                // under this one: one at a time. That sender hears nothing until
                // this one ends, then asks again and is answered from history.
                return None;
            }
        }
        match parsed {
            Topic::Manifest(id) => {
                let routed = self.on_manifest(prefix, id, payload);
                if let Some(Routed::Offer(m)) = &routed {
                    // The offer's origin was remembered last, as it was handed over.
                    if let Some((_, _, early)) = self.origins.back_mut().filter(|(i, ..)| *i == m.id) {
                        *early = self.chunk_wildcard && !retained;
                    }
                }
                routed
            }
            Topic::Chunk(id, index) => self.on_chunk(prefix, id, index),
            Topic::Ctl(id) => self.on_ctl(prefix, id, payload),
            // Other receivers' acks: not ours to read.
            Topic::Ack(..) => None,
        }
    }

    fn on_manifest(&mut self, prefix: Prefix, id: TransferId, payload: &[u8]) -> Option<Routed> {
        if payload.is_empty() {
            // A sender cleared its retained manifest: it serves the transfer no more.
            self.unqueue(&id);
            return None;
        }
        let m = match Manifest::decode(payload) {
            Ok(m) if m.id == id => m,
            // Published under another transfer's topic.
            Ok(_) => return None,
            // Garbage under a transfer in progress is not the sender's word: ignore
            // it rather than drop out of the transfer.
            Err(_) if self.open.contains_key(&id) => return None,
            Err(e) => {
                // The decode error says why, e.g. "protocol version 1, this peer speaks 2".
                let ack = Ack::Rejected { reason: RejectReason::BadManifest, detail: e.to_string() };
                self.transmits.push_back(ack_transmit(&prefix, &id, &self.rid, &ack));
                return None;
            }
        };
        if self.open.contains_key(&id) {
            // The sender restarted or re-published: the transfer's machine answers.
            return Some(Routed::Manifest(m));
        }
        if !m.is_for(&self.rid) {
            // Addressed to others: not a word, not even a refusal (PROTOCOL.md 5.1),
            // so the sender counts only the receivers it named.
            self.events.push_back(EndpointEvent::NotAddressed { id });
            return None;
        }
        if self.completed.iter().any(|c| c.id == id) {
            self.remember_origin(id, prefix);
            return Some(Routed::CheckHistory(m));
        }
        self.route_offer(prefix, m)
    }

    fn on_chunk(&mut self, prefix: Prefix, id: TransferId, index: u32) -> Option<Routed> {
        if self.open.contains_key(&id) {
            return Some(Routed::Chunk(id, index));
        }
        if self.chunk_wildcard {
            // Through the wildcard: another receiver's, or of an offer not taken.
            return None;
        }
        // A chunk of a transfer this endpoint does not know: a subscription left in
        // the broker's session by an earlier run. Dropped once; the memory is
        // bounded, and forgetting only costs one more unsubscribe.
        if self.stale.len() >= STALE_MEMORY {
            self.stale.clear();
        }
        let filter = prefix.chunk_filter(&id);
        self.stale.insert(filter.clone()).then_some(Routed::Unsubscribe(filter))
    }

    fn on_ctl(&mut self, prefix: Prefix, id: TransferId, payload: &[u8]) -> Option<Routed> {
        if self.open.contains_key(&id) {
            return Some(Routed::Ctl(id));
        }
        match Ctl::decode(payload) {
            // A sender that stops serving its transfer withdraws a queued offer.
            Ok(Ctl::Abort { .. }) => {
                self.unqueue(&id);
                None
            }
            // The sender asks a receiver that already finished: its Complete was lost.
            Ok(Ctl::EndRound { .. }) => {
                let m = self.completed.iter().find(|m| m.id == id && m.is_for(&self.rid)).cloned()?;
                self.remember_origin(id, prefix);
                Some(Routed::CheckHistory(m))
            }
            _ => None,
        }
    }

    /// The answer to a [`Routed::CheckHistory`]: whether the file of that transfer
    /// still holds the manifest's bytes. If it does, the sender is told `Complete`;
    /// if not, the transfer is forgotten and `m` decided on as a new offer, which
    /// may come back as [`Routed::Offer`] (refused as existing, or received again
    /// where files are replaced).
    pub fn history_checked(&mut self, m: Manifest, found: Option<[u8; 32]>) -> Option<Routed> {
        self.history_checked_as(m, found, None)
    }

    /// [`ReceiverEndpoint::history_checked`] for a caller that found the file
    /// under another name than the manifest's (`stored`): the sender is told that
    /// name with [`Ack::Stored`] instead of `Complete`.
    pub fn history_checked_as(
        &mut self,
        m: Manifest,
        found: Option<[u8; 32]>,
        stored: Option<&crate::receiver::StoredAs>,
    ) -> Option<Routed> {
        if self.open.contains_key(&m.id) {
            // Taken meanwhile (a caller that checks later than at once): the
            // transfer's own machine answers its sender now.
            return None;
        }
        let prefix = self.reply_prefix(&m.id);
        self.forget_origin(&m.id);
        if let Some(sha256) = found {
            self.transmits.push_back(match stored {
                Some(s) => Receiver::already_stored(&prefix, &self.rid, &m, sha256, s),
                None => Receiver::already_complete(&prefix, &self.rid, &m, sha256),
            });
            return None;
        }
        self.completed.retain(|c| c.id != m.id);
        self.route_offer(prefix, m)
    }

    /// A manifest of a transfer not open here: the queue's rules, then the offer.
    fn route_offer(&mut self, prefix: Prefix, m: Manifest) -> Option<Routed> {
        if self.queue.position(&m.id).is_some() {
            // Offered again while waiting: it keeps its place, and is told it.
            self.enqueue(prefix, m);
            return None;
        }
        if self.stopping {
            return None;
        }
        if !self.queue.offers.is_empty() {
            // First come, first served: a new offer goes behind those waiting, even
            // if a slot just freed (`next_admitted` gives it to the head).
            self.events.push_back(offered(&m));
            self.enqueue(prefix, m);
            return None;
        }
        self.offer(prefix, m)
    }

    /// Decides what needs no I/O on an offer; the rest is the caller's.
    fn offer(&mut self, prefix: Prefix, m: Manifest) -> Option<Routed> {
        self.events.push_back(offered(&m));
        if self.slots_full() {
            self.enqueue(prefix, m);
            return None;
        }
        self.remember_origin(m.id, prefix);
        // An open stream's size is not known: its receiver checks the bound as
        // chunks arrive ([`crate::ReceiverConfig::max_size`]).
        if self.limits.max_size.is_some_and(|max| m.size > max) && !m.is_open() {
            self.refuse(&m, RejectReason::TooLarge, String::new());
            return None;
        }
        Some(Routed::Offer(m))
    }

    /// Holds an offer that found every slot taken, or refuses it when the queue is
    /// full. The same transfer offered again keeps its place and is told it again.
    fn enqueue(&mut self, prefix: Prefix, m: Manifest) {
        if let Some(at) = self.queue.offers.iter().position(|(q, _)| q.id == m.id) {
            // The newest run is the one to answer with `Ready` later, where it asked.
            self.queue.replace(at, m, prefix);
            return self.send_queued(at);
        }
        let fits = self.queue.offers.len() < self.limits.queue
            && self.queue.bytes.saturating_add(cost(&m)) <= self.limits.queue_bytes;
        if !fits {
            let ack = Ack::Rejected { reason: RejectReason::QueueFull, detail: String::new() };
            self.transmits.push_back(ack_transmit(&prefix, &m.id, &self.rid, &ack));
            let (id, name, sender) = (m.id, m.name, m.sender);
            self.events.push_back(EndpointEvent::Refused {
                id,
                name,
                reason: RejectReason::QueueFull,
                detail: String::new(),
                sender,
            });
            return;
        }
        self.queue.push(m, prefix);
        let at = self.queue.offers.len() - 1;
        let (m, _) = &self.queue.offers[at];
        let position = position_of(at);
        self.events.push_back(EndpointEvent::Queued {
            id: m.id,
            name: m.name.clone(),
            position,
            sender: m.sender.clone(),
        });
        self.send_queued(at);
    }

    fn send_queued(&mut self, at: usize) {
        let (m, prefix) = &self.queue.offers[at];
        self.transmits.push_back(Receiver::queued(prefix, &self.rid, m, position_of(at)));
    }

    fn unqueue(&mut self, id: &TransferId) {
        if self.queue.remove(id).is_some() {
            self.events.push_back(EndpointEvent::Withdrawn { id: *id });
        }
    }

    // Commands: the caller's answers and news.

    /// Changes the limits; they apply from the next offer on. Offers already queued
    /// stay, whatever the new bounds.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// True when the offer of `id` reached the caller through a live manifest
    /// while the chunk wildcard was in effect: what [`ReceiverEndpoint::accept`]
    /// will say, for a caller that makes the transfer's `Receiver` first.
    pub fn is_early(&self, id: &TransferId) -> bool {
        self.origins.iter().rev().find(|(i, ..)| i == id).is_some_and(|(.., early)| *early)
    }

    /// The caller took the offer: its messages are routed to it from now on, and it
    /// holds a slot. Returns true when every chunk of it reached the caller since
    /// before its manifest ([`ReceiverEndpoint::set_chunk_wildcard`]): make its
    /// `Receiver` with [`Receiver::new_early`], whose `Ready` tells the sender so.
    pub fn accept(&mut self, id: TransferId) -> bool {
        // An offer of it that queued meanwhile (a caller that decides later than
        // at once) has been answered by this.
        let early = self.is_early(&id);
        let prefix = self.reply_prefix(&id);
        self.forget_origin(&id);
        self.queue.remove(&id);
        self.open.insert(id, (true, prefix));
        early
    }

    /// The caller refuses the offer `m`; the sender is told why, with `detail` for
    /// people (never a local path).
    pub fn refuse(&mut self, m: &Manifest, reason: RejectReason, detail: String) {
        let prefix = self.reply_prefix(&m.id);
        self.forget_origin(&m.id);
        self.transmits.push_back(Receiver::reject_with(&prefix, &self.rid, m, reason, detail.clone()));
        self.events.push_back(EndpointEvent::Refused {
            id: m.id,
            name: m.name.clone(),
            reason,
            detail,
            sender: m.sender.clone(),
        });
    }

    /// The caller found the offered file already here, verified: the sender is told
    /// `Complete`, and the transfer remembered.
    pub fn already_complete(&mut self, m: Manifest, sha256: [u8; 32]) {
        let prefix = self.reply_prefix(&m.id);
        self.forget_origin(&m.id);
        self.transmits.push_back(Receiver::already_complete(&prefix, &self.rid, &m, sha256));
        self.completed(m.with_digest(sha256));
    }

    /// [`ReceiverEndpoint::already_complete`] for a file found under another name
    /// than the manifest's: the sender is told that name ([`Ack::Stored`]).
    pub fn already_stored(&mut self, m: Manifest, sha256: [u8; 32], stored: &crate::receiver::StoredAs) {
        let prefix = self.reply_prefix(&m.id);
        self.forget_origin(&m.id);
        self.transmits.push_back(Receiver::already_stored(&prefix, &self.rid, &m, sha256, stored));
        self.completed(m.with_digest(sha256));
    }

    /// The transfer of `m` delivered its file: remembered, so that the same offer
    /// again is answered from history (after a check of the disk).
    pub fn completed(&mut self, m: Manifest) {
        if self.completed.iter().any(|c| c.id == m.id) {
            return;
        }
        if self.completed.len() >= COMPLETED_MEMORY {
            self.completed.pop_front();
        }
        self.completed.push_back(m);
    }

    /// An open transfer ended (completed or failed): it frees its slot, and its
    /// messages still reach it until [`ReceiverEndpoint::closed`].
    pub fn ended(&mut self, id: &TransferId) {
        if let Some((holds, _)) = self.open.get_mut(id) {
            *holds = false;
        }
    }

    /// The caller dropped the transfer: its messages are no longer routed to it.
    pub fn closed(&mut self, id: &TransferId) {
        self.open.remove(id);
    }

    /// The head of the queue, decided on again as a new offer, while a slot is free.
    /// Call it until `None` after transfers end; each offer may still be refused.
    pub fn next_admitted(&mut self) -> Option<Routed> {
        while !self.stopping && !self.slots_full() {
            let (m, prefix) = self.queue.pop()?;
            if let Some(routed) = self.offer(prefix, m) {
                return Some(routed);
            }
        }
        None
    }

    /// The receive is stopping: no new offers, and every queued sender is told
    /// `Cancelled`, so none waits for a slot that will not come.
    pub fn stop(&mut self) {
        self.stopping = true;
        let ack = Ack::Rejected { reason: RejectReason::Cancelled, detail: String::new() };
        for (m, prefix) in self.queue.drain() {
            self.transmits.push_back(ack_transmit(&prefix, &m.id, &self.rid, &ack));
        }
    }

    // Output.

    /// The next message to publish: the endpoint's own answers, in order.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing the endpoint did on its own.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }
}

/// Routes a sending process's acks to its transfers.
#[derive(Debug, Clone)]
pub struct SenderEndpoint {
    prefix: Prefix,
    /// Transfers open, with how many senders of the caller's each id has (one, but
    /// a caller that overlaps two runs of one transfer must not lose the routing
    /// when the first is dropped).
    open: BTreeMap<TransferId, u32>,
}

/// An ack for an open transfer: feed the payload to its `Sender::handle_ack`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct AckFor {
    /// The transfer it answers.
    pub id: TransferId,
    /// The receiver that sent it.
    pub from: ReceiverId,
}

impl SenderEndpoint {
    /// An endpoint for transfers under `prefix`.
    pub fn new(prefix: Prefix) -> Self {
        SenderEndpoint { prefix, open: BTreeMap::new() }
    }

    /// True while a transfer of `id` is open: another of the same id must wait,
    /// since acks name only the id.
    pub fn is_open(&self, id: &TransferId) -> bool {
        self.open.contains_key(id)
    }

    /// Routes a message: an ack of an open transfer, or nothing (another topic,
    /// or a transfer not open here).
    pub fn handle(&self, topic: &str) -> Option<AckFor> {
        match self.prefix.parse(topic)? {
            Topic::Ack(id, from) if self.open.contains_key(&id) => Some(AckFor { id, from }),
            _ => None,
        }
    }

    /// A transfer of `id` starts: its acks are routed from now on.
    pub fn opened(&mut self, id: TransferId) {
        *self.open.entry(id).or_default() += 1;
    }

    /// A transfer of `id` was dropped.
    pub fn closed(&mut self, id: &TransferId) {
        if let Some(n) = self.open.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(id);
            }
        }
    }
}

/// Offers waiting for a slot, oldest first, with the bytes they hold.
#[derive(Debug, Default)]
struct OfferQueue {
    /// Each with the prefix it came under, to answer it there.
    offers: VecDeque<(Manifest, Prefix)>,
    /// Bytes of the manifests held, as encoded on the wire.
    bytes: usize,
}

impl OfferQueue {
    fn position(&self, id: &TransferId) -> Option<u32> {
        self.offers.iter().position(|(m, _)| m.id == *id).map(position_of)
    }

    fn push(&mut self, m: Manifest, prefix: Prefix) {
        self.bytes += cost(&m);
        self.offers.push_back((m, prefix));
    }

    fn replace(&mut self, at: usize, m: Manifest, prefix: Prefix) {
        self.bytes += cost(&m);
        let (old, _) = std::mem::replace(&mut self.offers[at], (m, prefix));
        self.bytes -= cost(&old);
    }

    fn remove(&mut self, id: &TransferId) -> Option<Manifest> {
        let at = self.offers.iter().position(|(m, _)| m.id == *id)?;
        let (m, _) = self.offers.remove(at)?;
        self.bytes -= cost(&m);
        Some(m)
    }

    fn pop(&mut self) -> Option<(Manifest, Prefix)> {
        let (m, prefix) = self.offers.pop_front()?;
        self.bytes -= cost(&m);
        Some((m, prefix))
    }

    fn drain(&mut self) -> impl Iterator<Item = (Manifest, Prefix)> + '_ {
        self.bytes = 0;
        self.offers.drain(..)
    }
}

/// The bytes a queued manifest counts for: its encoding.
fn cost(m: &Manifest) -> usize {
    m.encode().len()
}

/// A queue index as the 1-based place the sender is told.
fn position_of(at: usize) -> u32 {
    u32::try_from(at + 1).unwrap_or(u32::MAX)
}

fn offered(m: &Manifest) -> EndpointEvent {
    EndpointEvent::Offered { id: m.id, name: m.name.clone(), size: m.size, sender: m.sender.clone() }
}

#[cfg(test)]
mod tests;
