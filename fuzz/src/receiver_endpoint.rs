//! `receiver_endpoint`: a [`ReceiverEndpoint`] fed an arbitrary sequence of
//! (topic, payload) messages and the runtime's answers.
//!
//! The harness plays the runtime: it accepts, refuses or confirms the offers the
//! endpoint hands out, answers its history checks, ends and drops transfers, and
//! stops it. After every step it drains transmits and events and checks that:
//! - input is routed to a transfer only while it is accepted and not dropped, and
//!   an offer never names one that is;
//! - an offer is never handed out while stopping, while every slot is taken, or
//!   for a file larger than `max_size`;
//! - the queue never holds more than its bounds, and a `Queued` answer gives a
//!   place inside it;
//! - every transmit is an ack on this receiver's ack topic that decodes, and
//!   `Complete` goes out only for a transfer the runtime confirmed: through
//!   `already_complete`, or a history check it answered "still complete". The
//!   endpoint's memory alone never confirms a file;
//! - a stale chunk subscription is dropped only for a transfer not open;
//! - the endpoint listens under `files` and `site/+/cams`: messages come under
//!   `files`, `site/a/cams` and `site/b/cams`, every answer goes under a concrete
//!   prefix (never the pattern), and an open transfer's under the prefix it was
//!   offered on;
//! - an offer addressed to another receiver (`to`) is never handed out, nor
//!   answered.
//!
//! # Input
//! `max_concurrent` (`u8`), `queue` (`u8`), `max_size` (`u16`, 0 for none), then
//! [`Op`]s until the input ends (see [`Op::read`]).

use std::collections::{BTreeSet, HashSet};

use std::collections::BTreeMap;

use mqft_proto::{
    Ack, EndpointEvent, Limits, Manifest, Payload, Prefix, PrefixPattern, ReceiverEndpoint, ReceiverId, RejectReason,
    Routed, Topic, TransferId,
};

use crate::fixtures::{fixture, COUNT};
use crate::input::{Reader, Writer};

/// One step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// A payload on a topic of transfer `which` (a fixture's id, or one no fixture
    /// has): `kind` picks the manifest, chunk `index`, ctl or ack topic.
    Message {
        /// 0 manifest, 1 chunk, 2 ctl, 3 another receiver's ack.
        kind: u8,
        /// The transfer: fixture `which % COUNT`, or past that an unknown id.
        which: u8,
        /// The chunk index in a chunk topic.
        index: u32,
        /// The payload.
        payload: &'a [u8],
    },
    /// Fixture `which`'s manifest, well formed, with this run: a real offer.
    Offer {
        /// The fixture.
        which: u8,
        /// The sender run.
        run: u32,
    },
    /// A payload on an arbitrary topic string.
    RawTopic {
        /// The topic.
        topic: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// The runtime decides the oldest offer it was handed: 0 accept, 1 refuse, 2
    /// found already complete on disk.
    Decide(u8),
    /// The runtime answers the oldest history check: the file is still there.
    Checked(bool),
    /// The transfer of fixture `which` ends; with `completed`, it delivered.
    End {
        /// The fixture.
        which: u8,
        /// It delivered its file.
        completed: bool,
    },
    /// The runtime drops the transfer of fixture `which`.
    Close(u8),
    /// The runtime asks for the offers that may take freed slots.
    Admit,
    /// The receive stops.
    Stop,
}

impl<'a> Op<'a> {
    /// Reads the next op; `None` at the end of the input.
    pub fn read(r: &mut Reader<'a>) -> Option<Self> {
        if r.is_empty() {
            return None;
        }
        Some(match r.u8() % 9 {
            0 => Op::Message { kind: r.u8(), which: r.u8(), index: r.u32(), payload: r.bytes() },
            1 => Op::Offer { which: r.u8(), run: r.u32() },
            2 => Op::RawTopic { topic: r.bytes(), payload: r.bytes() },
            3 => Op::Decide(r.u8()),
            4 => Op::Checked(r.u8() % 2 == 1),
            5 => Op::End { which: r.u8(), completed: r.u8() % 2 == 1 },
            6 => Op::Close(r.u8()),
            7 => Op::Admit,
            _ => Op::Stop,
        })
    }

    /// Writes the op as [`Op::read`] reads it.
    pub fn write(&self, w: &mut Writer) {
        match *self {
            Op::Message { kind, which, index, payload } => w.u8(0).u8(kind).u8(which).u32(index).bytes(payload),
            Op::Offer { which, run } => w.u8(1).u8(which).u32(run),
            Op::RawTopic { topic, payload } => w.u8(2).bytes(topic).bytes(payload),
            Op::Decide(how) => w.u8(3).u8(how),
            Op::Checked(still) => w.u8(4).u8(u8::from(still)),
            Op::End { which, completed } => w.u8(5).u8(which).u8(u8::from(completed)),
            Op::Close(which) => w.u8(6).u8(which),
            Op::Admit => w.u8(7),
            Op::Stop => w.u8(8),
        };
    }
}

/// What a run did, for the seed generator to check that its seeds go where they
/// are meant to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Offers handed to the runtime.
    pub offers: u32,
    /// `Queued` answers sent.
    pub queued: u32,
    /// `Complete` answers sent.
    pub completes: u32,
    /// Refusals sent.
    pub refused: u32,
    /// Messages routed to open transfers.
    pub routed: u32,
}

/// Runs one input.
pub fn run(data: &[u8]) -> Outcome {
    let mut r = Reader::new(data);
    let mut limits = Limits::default();
    limits.max_concurrent = usize::from(r.u8() % 4) + 1;
    limits.queue = usize::from(r.u8() % 8);
    limits.max_size = Some(u64::from(r.u16())).filter(|&s| s > 0);
    let mut h = Harness::new(limits);
    while let Some(op) = Op::read(&mut r) {
        crate::trace!("{op:?}");
        h.apply(op);
        h.drain();
    }
    h.out
}

struct Harness {
    ep: ReceiverEndpoint,
    /// The concrete prefixes messages come under.
    prefixes: [Prefix; 3],
    /// The patterns listened under.
    patterns: Vec<PrefixPattern>,
    /// The prefix each accepted transfer was offered on.
    origin: BTreeMap<TransferId, Prefix>,
    rid: ReceiverId,
    limits: Limits,
    manifests: Vec<Manifest>,
    /// Accepted and not dropped, and of those the ones holding a slot.
    open: BTreeSet<TransferId>,
    holding: BTreeSet<TransferId>,
    /// Offers and history checks handed out, not yet answered.
    offers: Vec<Manifest>,
    checks: Vec<Manifest>,
    /// Transfers the runtime confirmed: `Complete` may go out for them.
    confirmed: HashSet<TransferId>,
    stopping: bool,
    /// The runtime subscribes to every transfer's chunks (half the inputs).
    wildcard: bool,
    out: Outcome,
}

impl Harness {
    fn new(limits: Limits) -> Self {
        let rid = ReceiverId::new("fuzz").expect("a valid receiver id");
        let patterns: Vec<PrefixPattern> =
            ["files", "site/+/cams"].iter().map(|p| PrefixPattern::new(p).expect("a valid pattern")).collect();
        let prefixes = ["files", "site/a/cams", "site/b/cams"].map(|p| Prefix::new(p).expect("a valid prefix"));
        let wildcard = limits.max_concurrent.is_multiple_of(2);
        let mut ep = ReceiverEndpoint::with_patterns(patterns.clone(), rid.clone(), limits.clone());
        ep.set_chunk_wildcard(wildcard);
        Harness {
            ep,
            wildcard,
            prefixes,
            patterns,
            origin: BTreeMap::new(),
            rid,
            limits,
            manifests: (0..COUNT).map(|i| fixture(i).manifest).collect(),
            open: BTreeSet::new(),
            holding: BTreeSet::new(),
            offers: Vec::new(),
            checks: Vec::new(),
            confirmed: HashSet::new(),
            stopping: false,
            out: Outcome::default(),
        }
    }

    /// Fixture `which`'s id, or past the fixtures an id none of them has.
    fn id(&self, which: u8) -> TransferId {
        match self.manifests.get(usize::from(which % (COUNT + 1))) {
            Some(m) => m.id,
            None => mqft_proto::transfer_id(1, 1, None, "unknown", None),
        }
    }

    fn apply(&mut self, op: Op<'_>) {
        match op {
            Op::Message { kind, which, index, payload } => {
                let id = self.id(which);
                let prefix = &self.prefixes[usize::from(kind / 4 % 3)];
                let topic = match kind % 4 {
                    0 => prefix.manifest(&id),
                    1 => prefix.chunk(&id, index),
                    2 => prefix.ctl(&id),
                    _ => prefix.ack(&id, &ReceiverId::new("other").expect("a valid receiver id")),
                };
                self.message(&topic, payload);
            }
            Op::Offer { which, run } => {
                let mut m = Manifest { run, ..self.manifests[usize::from(which % COUNT)].clone() };
                // Some offers are addressed, to this receiver or to another.
                match run % 4 {
                    1 => m.to = vec!["other".into()],
                    2 => m.to = vec!["other".into(), self.rid.as_str().into()],
                    _ => {}
                }
                let topic = self.prefixes[usize::from(which / COUNT % 3)].manifest(&m.id);
                self.message(&topic, &m.encode());
            }
            Op::RawTopic { topic, payload } => self.message(&String::from_utf8_lossy(topic), payload),
            Op::Decide(how) => {
                if self.offers.is_empty() {
                    return;
                }
                let m = self.offers.remove(0);
                match how % 3 {
                    // A second offer of a transfer already accepted meanwhile would
                    // be a runtime bug, not the endpoint's: it routes that manifest
                    // to the transfer from then on.
                    0 if !self.open.contains(&m.id) => {
                        if let Some(p) = self.ep.origin(&m.id) {
                            self.origin.insert(m.id, p.clone());
                        }
                        let early = self.ep.accept(m.id);
                        assert!(self.wildcard || !early, "early without the chunk wildcard");
                        if let (Some(p), Some(kept)) = (self.origin.get(&m.id), self.ep.origin(&m.id)) {
                            assert_eq!(p, kept, "an accepted transfer moved to another prefix");
                        }
                        self.open.insert(m.id);
                        self.holding.insert(m.id);
                    }
                    0 | 1 => self.ep.refuse(&m, RejectReason::Exists, String::new()),
                    _ => {
                        self.confirmed.insert(m.id);
                        let sha = m.sha256.unwrap_or_default();
                        self.ep.already_complete(m, sha);
                    }
                }
            }
            Op::Checked(still) => {
                if self.checks.is_empty() {
                    return;
                }
                let m = self.checks.remove(0);
                if still {
                    self.confirmed.insert(m.id);
                }
                let found = still.then(|| m.sha256.unwrap_or_default());
                let next = self.ep.history_checked(m, found);
                self.routed(next);
            }
            Op::End { which, completed } => {
                let id = self.id(which);
                self.ep.ended(&id);
                self.holding.remove(&id);
                if completed && self.open.contains(&id) {
                    let m = self.manifests.iter().find(|m| m.id == id).cloned();
                    if let Some(m) = m {
                        self.ep.completed(m);
                    }
                }
            }
            Op::Close(which) => {
                let id = self.id(which);
                self.ep.closed(&id);
                self.open.remove(&id);
                self.origin.remove(&id);
                self.holding.remove(&id);
            }
            Op::Admit => {
                while let Some(next) = self.ep.next_admitted() {
                    self.routed(Some(next));
                }
            }
            Op::Stop => {
                self.ep.stop();
                self.stopping = true;
                assert_eq!(self.ep.queued(), 0, "stopping empties the queue");
            }
        }
    }

    fn message(&mut self, topic: &str, payload: &[u8]) {
        // About a third arrive as the broker's retained copies.
        let routed = if payload.len().is_multiple_of(3) {
            self.ep.handle_retained(topic, payload)
        } else {
            self.ep.handle(topic, payload)
        };
        self.routed(routed);
    }

    /// Checks what the endpoint handed out, and keeps what awaits an answer.
    fn routed(&mut self, routed: Option<Routed>) {
        let Some(routed) = routed else { return };
        match routed {
            Routed::Manifest(m) => {
                assert!(self.open.contains(&m.id), "a manifest routed to a transfer not open");
                self.out.routed += 1;
            }
            Routed::Chunk(id, _) | Routed::Ctl(id) => {
                assert!(self.open.contains(&id), "input routed to a transfer not open");
                self.out.routed += 1;
            }
            Routed::Offer(m) => {
                assert!(!self.open.contains(&m.id), "an offer of a transfer already open");
                assert!(m.is_for(&self.rid), "an offer addressed to another receiver");
                assert!(!self.stopping, "an offer while stopping");
                assert!(self.holding.len() < self.limits.max_concurrent, "an offer with every slot taken");
                assert!(self.limits.max_size.is_none_or(|max| m.size <= max), "an offer past max_size");
                self.out.offers += 1;
                self.offers.push(m);
            }
            Routed::CheckHistory(m) => {
                assert!(!self.open.contains(&m.id), "a history check of a transfer open");
                assert!(m.is_for(&self.rid), "a history check of a transfer addressed to another receiver");
                self.checks.push(m);
            }
            Routed::Unsubscribe(filter) => {
                assert!(!self.wildcard, "the chunk wildcard is never dropped, nor anything under it");
                let open = self.open.iter().any(|id| self.prefixes.iter().any(|p| p.chunk_filter(id) == filter));
                assert!(!open, "the chunk subscription of an open transfer dropped");
            }
            other => panic!("the fuzzer does not know route {other:?}"),
        }
    }

    /// Drains transmits and events, and checks the bounds.
    fn drain(&mut self) {
        assert!(self.ep.queued() <= self.limits.queue, "the queue outgrew its bound");
        while let Some(t) = self.ep.poll_transmit() {
            let Some((prefix, Topic::Ack(id, rid))) = self.patterns.iter().find_map(|p| p.parse(&t.topic)) else {
                panic!("an endpoint transmit off the ack topics: {}", t.topic);
            };
            assert!(self.prefixes.contains(&prefix), "an answer under {prefix}, not a concrete prefix of ours");
            if let Some(origin) = self.origin.get(&id) {
                assert_eq!(&prefix, origin, "an open transfer answered under another prefix");
            }
            assert_eq!(rid, self.rid, "an ack under another receiver's name");
            let Payload::Bytes(b) = t.payload else { panic!("an endpoint sends no chunks") };
            // Acks of these kinds carry no ranges: any chunk count decodes them.
            match Ack::decode(&b, u32::MAX).expect("every endpoint ack decodes") {
                Ack::Complete { .. } => {
                    assert!(self.confirmed.contains(&id), "Complete for a file the runtime did not confirm");
                    self.out.completes += 1;
                }
                Ack::Queued { position, .. } => {
                    assert!(!self.stopping, "queued while stopping");
                    let position = usize::try_from(position).unwrap_or(usize::MAX);
                    assert!(position >= 1 && position <= self.limits.queue, "a place outside the queue");
                    self.out.queued += 1;
                }
                Ack::Rejected { .. } => self.out.refused += 1,
                other => panic!("an endpoint answered {other:?}"),
            }
        }
        while let Some(ev) = self.ep.poll_event() {
            if let EndpointEvent::Offered { id, .. } = ev {
                assert!(!self.open.contains(&id), "an offer of a transfer already open");
            }
        }
    }
}
