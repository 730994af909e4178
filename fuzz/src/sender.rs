//! `sender`: a [`Sender`] of a fixed file, driven by an arbitrary sequence of acks
//! from up to four receivers, timer ticks, reconnections and a cancel.
//!
//! After every step the harness drains transmits and events and checks them:
//! - chunk transmissions are numbered 0, 1, 2, ... in the sender's run, name a real
//!   chunk with its offset and length, and stop once the transfer ended;
//! - flow control: after the last ack that could grant credit, at most `window`
//!   chunks go out before the next one;
//! - every end of round decodes and counts exactly the chunks sent so far; every
//!   manifest publish is the manifest, retained, or the empty payload that clears
//!   it once the transfer ended;
//! - there is exactly one terminal event, and nothing after it, `Finished` only once
//!   enough receivers sent a `Complete` with the right SHA-256, `Failed(Cancelled)`
//!   only after a cancel; at most one `Ctl::Abort` goes out;
//! - a sender not done always has a deadline (else its driver would sleep forever;
//!   an open stream waiting for input has one too, its keep-alive), and one step
//!   never makes it publish without end.
//!
//! # Input
//! A fixture selector (`u8`, see [`fixture`]), the window (`u8`: 1 to 32) and the
//! wait policy (`u8`: any 1 receiver, any 2, `r0`, or `r0` and `r1`; bits 2-3 the
//! eager window; bit 4 sends the fixture as a stream, protocol version 6, whose
//! chunks become readable a few at each [`Op::Wait`] and whose size the sender
//! learns once they all are), then [`Op`]s until the input ends, each a tag byte
//! and its fields (see [`Op::read`]).
//!
//! A stream's chunks are checked against what was readable when they went out,
//! and its ends of round carry its size exactly once it is closed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mqft_proto::{
    Ack, Ctl, Manifest, Payload, Prefix, RangeSet, ReceiverId, RejectReason, SendFailure, Sender, SenderConfig,
    SenderEndpoint, SenderEvent, Wait,
};

use crate::fixtures::{fixture, Fixture};
use crate::input::{Reader, Writer};

/// How many receiver ids the inputs choose from: `r0` to `r3`.
pub const RECEIVERS: u8 = 4;

/// One step of a sender's life. `from` picks receiver `r<from % 4>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// A payload on `ack/<from>`.
    RawAck {
        /// Who.
        from: u8,
        /// The payload.
        payload: &'a [u8],
    },
    /// `Ready` holding chunks `start..start + len` (cut to the file).
    Ready {
        /// Who.
        from: u8,
        /// The run answered.
        run: u32,
        /// First chunk held.
        start: u16,
        /// Chunks held.
        len: u16,
    },
    /// `Progress`: credit up to `next_seq`.
    Progress {
        /// Who.
        from: u8,
        /// The run the numbers refer to.
        run: u32,
        /// One past the highest transmission seen.
        next_seq: u32,
        /// Chunks held.
        held: u32,
    },
    /// `Missing` chunks `start..start + len` (cut to the file).
    Missing {
        /// Who.
        from: u8,
        /// The run the numbers refer to.
        run: u32,
        /// One past the highest transmission seen.
        next_seq: u32,
        /// First chunk missing.
        start: u16,
        /// Chunks missing.
        len: u16,
        /// More ranges are missing than listed.
        more: bool,
    },
    /// `Complete`, with the file's SHA-256 or (`good == false`) another one.
    Complete {
        /// Who.
        from: u8,
        /// The right hash.
        good: bool,
    },
    /// `Rejected` with this reason code.
    Rejected {
        /// Who.
        from: u8,
        /// The reason code.
        code: u16,
    },
    /// `Queued` for this run at this position.
    Queued {
        /// Who.
        from: u8,
        /// The run answered.
        run: u32,
        /// The place in the queue.
        position: u32,
    },
    /// Time passes by this many milliseconds, then the timer fires.
    Wait(u32),
    /// The connection to the broker came back, with or without a session.
    Reconnect(bool),
    /// The user cancels.
    Cancel,
}

impl<'a> Op<'a> {
    /// Reads the next op; `None` at the end of the input.
    pub fn read(r: &mut Reader<'a>) -> Option<Self> {
        if r.is_empty() {
            return None;
        }
        Some(match r.u8() % 10 {
            0 => Op::RawAck { from: r.u8(), payload: r.bytes() },
            1 => Op::Ready { from: r.u8(), run: r.u32(), start: r.u16(), len: r.u16() },
            2 => Op::Progress { from: r.u8(), run: r.u32(), next_seq: r.u32(), held: r.u32() },
            3 => Op::Missing {
                from: r.u8(),
                run: r.u32(),
                next_seq: r.u32(),
                start: r.u16(),
                len: r.u16(),
                more: r.u8() & 1 == 1,
            },
            4 => Op::Complete { from: r.u8(), good: r.u8() & 1 == 0 },
            5 => Op::Rejected { from: r.u8(), code: r.u16() },
            6 => Op::Wait(r.u32()),
            7 => Op::Reconnect(r.u8() & 1 == 1),
            9 => Op::Queued { from: r.u8(), run: r.u32(), position: r.u32() },
            _ => Op::Cancel,
        })
    }

    /// Writes the op as [`Op::read`] reads it.
    pub fn write(&self, w: &mut Writer) {
        match *self {
            Op::RawAck { from, payload } => w.u8(0).u8(from).bytes(payload),
            Op::Ready { from, run, start, len } => w.u8(1).u8(from).u32(run).u16(start).u16(len),
            Op::Progress { from, run, next_seq, held } => w.u8(2).u8(from).u32(run).u32(next_seq).u32(held),
            Op::Missing { from, run, next_seq, start, len, more } => {
                w.u8(3).u8(from).u32(run).u32(next_seq).u16(start).u16(len).u8(u8::from(more))
            }
            Op::Complete { from, good } => w.u8(4).u8(from).u8(u8::from(!good)),
            Op::Rejected { from, code } => w.u8(5).u8(from).u16(code),
            Op::Wait(ms) => w.u8(6).u32(ms),
            Op::Reconnect(session) => w.u8(7).u8(u8::from(session)),
            Op::Cancel => w.u8(8),
            Op::Queued { from, run, position } => w.u8(9).u8(from).u32(run).u32(position),
        };
    }
}

/// How a run ended, for the seed generator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Chunk transmissions.
    pub chunks_sent: u32,
    /// `Finished` was reported.
    pub finished: bool,
    /// The failure reported.
    pub failed: Option<SendFailure>,
}

/// Runs one input.
pub fn run(data: &[u8]) -> Outcome {
    let mut r = Reader::new(data);
    let selector = r.u8();
    let mut fx = fixture(selector);
    if selector & 0x80 != 0 {
        // Version 4's usual case: the hash comes from reading the file, when the
        // sender asks for it (`Harness::drain`).
        fx.manifest.sha256 = None;
    }
    let window = 1 + u32::from(r.u8() % 32);
    let policy = r.u8();
    let wait = match policy % 4 {
        0 => Wait::Count(1),
        1 => Wait::Count(2),
        2 => Wait::Ids([rid(0)].into()),
        _ => Wait::Ids([rid(0), rid(1)].into()),
    };
    // Chunks before anyone joined (version 5): none, a few, or the default.
    let eager_window = [0, 1, 4, 16][usize::from(policy >> 2) % 4];
    let stream = policy & 0x10 != 0;
    let mut h = Harness::new(fx, SenderConfig { window, wait, eager_window, ..SenderConfig::default() }, stream);
    h.drain();
    while let Some(op) = Op::read(&mut r) {
        crate::trace!("{op:?}");
        h.apply(op);
        h.drain();
    }
    Outcome { chunks_sent: h.sent, finished: h.finished, failed: h.failed }
}

/// Receiver `r<n % RECEIVERS>`.
pub fn rid(n: u8) -> ReceiverId {
    ReceiverId::new(&format!("r{}", n % RECEIVERS)).expect("a valid receiver id")
}

struct Harness {
    fx: Fixture,
    cfg: SenderConfig,
    prefix: Prefix,
    /// Routes every ack to `tx`, as the runtime does, by the topic it came on.
    endpoint: SenderEndpoint,
    tx: Sender,
    now: Instant,
    /// Chunk transmissions seen.
    sent: u32,
    /// `sent` when the last ack that could grant credit arrived: chunks numbered
    /// `credit_base + window` and up must wait for another ack.
    credit_base: u32,
    /// Receivers that sent a `Complete` with the right hash.
    completes: BTreeSet<ReceiverId>,
    cancelled: bool,
    /// A `Ctl::Abort` went out.
    aborted: bool,
    finished: bool,
    failed: Option<SendFailure>,
    /// Sent as a stream: the chunks readable so far (all once it is closed).
    stream: Option<u32>,
}

impl Harness {
    fn new(mut fx: Fixture, cfg: SenderConfig, stream: bool) -> Self {
        let now = Instant::now();
        let prefix = Prefix::default();
        if stream {
            let m = &fx.manifest;
            fx.manifest = Manifest::new_stream(m.name.clone(), m.chunk_size, m.meta.clone(), m.run)
                .expect("a fixture's name and chunk size make a stream");
        }
        let tx = Sender::new(cfg.clone(), prefix.clone(), fx.manifest.clone(), now);
        let mut endpoint = SenderEndpoint::new(prefix.clone());
        endpoint.opened(fx.manifest.id);
        Harness {
            fx,
            cfg,
            endpoint,
            prefix,
            tx,
            now,
            sent: 0,
            credit_base: 0,
            completes: BTreeSet::new(),
            cancelled: false,
            aborted: false,
            finished: false,
            failed: None,
            stream: stream.then_some(0),
        }
    }

    /// The file's chunk count, whether or not the sender knows it yet.
    fn count(&self) -> u32 {
        self.fx.data.len().div_ceil(self.fx.manifest.chunk_size as usize) as u32
    }

    /// A stream's next `n` chunks become readable; once all are, its end.
    fn reveal(&mut self, n: u32) {
        let Some(readable) = self.stream else { return };
        let readable = readable.saturating_add(n).min(self.count());
        self.stream = Some(readable);
        self.tx.set_readable(readable);
        if readable == self.count() && self.tx.manifest().is_open() {
            self.tx.stream_ended(self.fx.data.len() as u64).expect("the end fits what was readable");
        }
    }

    fn manifest(&self) -> &Manifest {
        &self.fx.manifest
    }

    fn done(&self) -> bool {
        self.finished || self.failed.is_some()
    }

    /// The chunks `start..start + len`, cut to the file.
    fn set(&self, start: u16, len: u16) -> RangeSet {
        let count = self.count();
        let start = u32::from(start).min(count);
        let mut s = RangeSet::new();
        s.insert_range(start..(start + u32::from(len)).min(count));
        s
    }

    fn apply(&mut self, op: Op<'_>) {
        let sha = mqft_proto::integrity::sha256(&self.fx.data);
        match op {
            Op::RawAck { from, payload } => self.ack(from, payload),
            Op::Ready { from, run, start, len } => {
                let held = self.set(start, len);
                // The top bit of `len` (a length past any file's chunk count
                // anyway) says the receiver had the chunks from the start.
                let from_start = len & 0x8000 != 0;
                self.ack(from, &Ack::Ready { run, held, from_start }.encode());
            }
            Op::Progress { from, run, next_seq, held } => {
                self.ack(from, &Ack::Progress { run, next_seq, held }.encode());
            }
            Op::Missing { from, run, next_seq, start, len, more } => {
                let missing = self.set(start, len);
                self.ack(from, &Ack::Missing { run, next_seq, missing, more }.encode());
            }
            Op::Complete { from, good } => {
                let mut sha256 = sha;
                if !good {
                    sha256[0] ^= 1;
                }
                self.ack(from, &Ack::Complete { sha256 }.encode());
            }
            Op::Rejected { from, code } => {
                let detail = format!("code {code}");
                self.ack(from, &Ack::Rejected { reason: RejectReason::from_code(code), detail }.encode());
            }
            Op::Queued { from, run, position } => {
                self.ack(from, &Ack::Queued { run, position }.encode());
            }
            Op::Wait(ms) => {
                self.reveal(ms % 4);
                self.now += Duration::from_millis(u64::from(ms));
                self.tx.handle_timeout(self.now);
            }
            Op::Reconnect(session) => self.tx.handle_reconnect(session, self.now),
            Op::Cancel => {
                self.cancelled |= !self.done();
                self.tx.cancel(self.now);
            }
        }
    }

    fn ack(&mut self, from: u8, payload: &[u8]) {
        let topic = self.prefix.ack(&self.manifest().id, &rid(from));
        let routed = self.endpoint.handle(&topic).expect("an ack of the open transfer is routed");
        assert_eq!(routed.id, self.manifest().id, "routed to the transfer in its topic");
        let from = routed.from;
        // A stream's receivers may list chunks up to the bound.
        let bound = if self.stream.is_some() { mqft_proto::wire::MAX_CHUNK_COUNT } else { self.manifest().chunk_count };
        let decoded = Ack::decode(payload, bound);
        let res = self.tx.handle_ack(&from, payload, self.now);
        assert_eq!(res.is_ok(), decoded.is_ok(), "handle_ack accepts exactly what decodes");
        match decoded {
            // A rejection never makes a receiver that grants credit.
            Ok(Ack::Rejected { .. } | Ack::Queued { .. }) | Err(_) => {}
            Ok(ack) => {
                self.credit_base = self.sent;
                // A claim made before the sender knew its hash counts once it does.
                let sha256 = mqft_proto::integrity::sha256(&self.fx.data);
                if matches!(ack, Ack::Complete { sha256: s } | Ack::Stored { sha256: s, .. } if s == sha256) {
                    self.completes.insert(from);
                }
            }
        }
    }

    /// Drains transmits, then events, checking each.
    fn drain(&mut self) {
        let m = self.fx.manifest.clone();
        // What the chunks are checked against: a stream's, once closed, has its size.
        let now_m = self.tx.manifest().clone();
        let mut control = 0;
        let mut cleared = false;
        loop {
            let Some(t) = self.tx.poll_transmit(self.now) else {
                if !self.tx.wants_digest() {
                    break;
                }
                self.tx.set_digest(mqft_proto::integrity::sha256(&self.fx.data), self.now);
                continue;
            };
            crate::trace!("  -> {} {:?}", t.topic, t.payload);
            match t.payload {
                Payload::Chunk(c) => {
                    assert!(!self.done(), "a chunk after the transfer ended");
                    assert_eq!(c.run, m.run);
                    assert_eq!(c.seq, self.sent, "chunk transmissions are numbered in order");
                    assert!(c.index < now_m.chunk_count, "chunk {} of {}", c.index, now_m.chunk_count);
                    assert!(self.stream.is_none_or(|r| c.index < r), "chunk {} not readable yet", c.index);
                    assert_eq!((c.offset, c.len), (now_m.chunk_offset(c.index), now_m.chunk_len(c.index)));
                    assert_eq!(t.topic, self.prefix.chunk(&m.id, c.index));
                    assert_eq!((t.qos, t.retain), (self.cfg.chunk_qos, false));
                    assert!(
                        c.seq < self.credit_base.saturating_add(self.cfg.window),
                        "chunk seq {} past the window: {} sent at the last ack, window {}",
                        c.seq,
                        self.credit_base,
                        self.cfg.window
                    );
                    self.sent += 1;
                }
                Payload::Bytes(b) => {
                    control += 1;
                    assert!(control <= 64, "one step made the sender publish {control} control messages");
                    if t.topic == self.prefix.ctl(&m.id) {
                        assert!(!t.retain);
                        match Ctl::decode(&b).expect("the sender's own control messages decode") {
                            Ctl::EndRound { run, next_seq, sha256, size } => {
                                assert_eq!(run, m.run);
                                let closed = self.stream.is_some() && !now_m.is_open();
                                let want = closed.then_some(self.fx.data.len() as u64);
                                assert_eq!(size, want, "an end of round with the size {size:?}");
                                if let Some(sha256) = sha256 {
                                    assert_eq!(
                                        sha256,
                                        mqft_proto::integrity::sha256(&self.fx.data),
                                        "an end of round with a wrong hash"
                                    );
                                }
                                assert_eq!(next_seq, self.sent, "an end of round that miscounts the chunks sent");
                            }
                            Ctl::Abort { run, .. } => {
                                assert_eq!(run, m.run);
                                assert!(!self.aborted, "a second abort");
                                self.aborted = true;
                            }
                        }
                    } else if t.topic == self.prefix.manifest(&m.id) {
                        assert!(t.retain, "the manifest is retained");
                        if b.is_empty() {
                            cleared = true;
                        } else {
                            assert!(!cleared, "the manifest published again after it was cleared");
                            // The same manifest, with the hash once the sender knows it
                            // (a stream's closed once its end is read).
                            let base = if self.stream.is_some() { now_m.clone() } else { m.clone() };
                            let want = self.tx.manifest().sha256.map_or(base.clone(), |d| base.with_digest(d));
                            assert_eq!(Manifest::decode(&b).as_ref(), Ok(&want));
                        }
                    } else {
                        panic!("a publish on {}", t.topic);
                    }
                }
            }
        }
        assert_eq!(self.tx.chunks_sent(), self.sent);

        while let Some(ev) = self.tx.poll_event() {
            crate::trace!("  event {ev:?}");
            // The terminal event is the last one, so this also catches a second one.
            assert!(!self.done(), "{ev:?} after the terminal event");
            match ev {
                SenderEvent::Finished => {
                    let enough = match &self.cfg.wait {
                        Wait::Count(n) => self.completes.len() >= (*n).max(1),
                        Wait::Ids(ids) => ids.is_subset(&self.completes),
                        other => panic!("the fuzzer does not know {other:?}"),
                    };
                    assert!(enough, "finished with complete receivers {:?}", self.completes);
                    self.finished = true;
                }
                SenderEvent::Failed(f) => {
                    if f == SendFailure::Cancelled {
                        assert!(self.cancelled, "cancelled without a cancel");
                    }
                    self.failed = Some(f);
                }
                SenderEvent::ReceiverJoined { held, .. } => {
                    assert!(held <= u64::from(now_m.chunk_count), "a receiver holds {held} chunks");
                }
                SenderEvent::Progress { held, .. } => {
                    assert!(held <= u64::from(now_m.chunk_count), "a receiver holds {held} chunks");
                }
                SenderEvent::ReceiverComplete { receiver } => {
                    assert!(self.completes.contains(&receiver), "{receiver} complete without saying so");
                }
                SenderEvent::ReceiverFailed { .. } => {}
                SenderEvent::Queued { .. } => {}
                // Said just before its ReceiverComplete, and only for a Stored.
                SenderEvent::StoredAs { receiver, name, .. } => {
                    assert!(self.completes.contains(&receiver), "{receiver} stored without saying so");
                    assert!(!name.is_empty() && name.len() <= mqft_proto::wire::MAX_STORED_NAME_LEN);
                }
                SenderEvent::Retrying { retry_in, .. } => {
                    assert!(retry_in <= mqft_proto::sender::MAX_RETRY_DELAY * 3 / 2, "retry in {retry_in:?}");
                }
                other => panic!("the fuzzer does not know sender event {other:?}"),
            }
        }
        assert_eq!(self.tx.is_done(), self.done(), "is_done disagrees with the events");
        if cleared {
            assert!(self.done(), "the manifest cleared while the transfer goes on");
        }
        if !self.done() {
            assert!(self.tx.poll_timeout().is_some(), "a sender not done has no deadline");
        }
    }
}
