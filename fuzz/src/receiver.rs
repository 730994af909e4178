//! `receiver`: a [`Receiver`] for a fixed file, driven by an arbitrary sequence of
//! messages on its topics, timer ticks and the caller's commands.
//!
//! The harness plays the caller: it writes every [`Write`] into a shadow copy of the
//! file, answers [`Receiver::next_hash_read`] from that copy, and drains transmits
//! and events after every step, checking them against what it has seen:
//! - a write is for a chunk not written before, at the chunk's offset, with the
//!   chunk's length, inside the file, and never after the transfer ended;
//! - the held set is exactly the set of chunks written, and `bytes_held` their size;
//! - `Verified` means every chunk was written and the shadow file hashes to the
//!   manifest's SHA-256; a hash mismatch means every chunk was written and it does
//!   not; `SenderGone` means the sender really was silent for `give_up_after`;
//! - every ack decodes, is on this receiver's ack topic, and agrees with the held
//!   set; `Complete` is sent only once the caller finalized a verified file;
//! - a receiver still receiving always has a deadline (else its driver would sleep
//!   forever), and it resumes from its own snapshot at any point.
//!
//! # Input
//! A fixture selector (`u8`, see [`fixture`]) and `ack_every` (`u8`), then [`Op`]s
//! until the input ends, each a tag byte and its fields (see [`Op::read`]).

use std::time::{Duration, Instant};

use mqft_proto::receiver::{HashFeedError, ReceiveFailure};
use mqft_proto::{
    integrity, Ack, Chunk, Ctl, HashState, Manifest, Payload, Prefix, Qos, RangeSet, Receiver, ReceiverConfig, ReceiverEvent,
    ReceiverId, RejectReason, ResumeState,
};

use crate::fixtures::{fixture, Fixture};
use crate::input::{Reader, Writer};

/// One step of a receiver's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// A payload on `chunk/<index>`.
    RawChunk {
        /// The index in the topic.
        index: u32,
        /// The payload.
        payload: &'a [u8],
    },
    /// A well-formed chunk of the fixture's file on `chunk/<index>`; with a nonzero
    /// `flip`, one byte of its data is flipped before the CRC is computed, as a
    /// sender with a bad disk would send it.
    Chunk {
        /// The chunk index, in the topic and the payload.
        index: u32,
        /// The sender run in the payload.
        run: u32,
        /// The transmission number in the payload.
        seq: u32,
        /// 0, or one more than the position of the byte to flip.
        flip: u16,
    },
    /// Well-formed chunks `start`, `start + step`, ... (`n` of them, `step` at least
    /// 1) of the current run, numbered on from the last: a whole file in a few bytes.
    Chunks {
        /// The first chunk index.
        start: u32,
        /// How many chunks.
        n: u16,
        /// The distance between two indexes.
        step: u8,
    },
    /// A payload on `ctl`.
    Ctl(&'a [u8]),
    /// A payload on `manifest`, handed to the receiver when it decodes.
    Manifest(&'a [u8]),
    /// The same manifest with another run: the sender restarted.
    Rerun(u32),
    /// Time passes by this many milliseconds, then the timer fires.
    Wait(u32),
    /// The caller serves [`Receiver::next_hash_read`] from the shadow file (mode 0),
    /// or feeds the wrong chunk (1) or a short one (2), which must be refused. A
    /// caller that hashes elsewhere ([`Receiver::hash_elsewhere`]) instead reports
    /// its hash of the written prefix of the shadow file (mode 0), or claims one
    /// chunk past it (1) or hands a state one byte short (2), which must be refused.
    HashRead(u8),
    /// The caller moved the verified file to its final name.
    Finalize,
    /// The caller fails the transfer with this reject code.
    Fail(u16),
    /// The process restarts: a new receiver from the old one's snapshot.
    Restart,
}

impl<'a> Op<'a> {
    /// Reads the next op; `None` at the end of the input.
    pub fn read(r: &mut Reader<'a>) -> Option<Self> {
        if r.is_empty() {
            return None;
        }
        Some(match r.u8() % 11 {
            0 => Op::RawChunk { index: r.u32(), payload: r.bytes() },
            1 => Op::Chunk { index: r.u32(), run: r.u32(), seq: r.u32(), flip: r.u16() },
            2 => Op::Ctl(r.bytes()),
            3 => Op::Manifest(r.bytes()),
            4 => Op::Rerun(r.u32()),
            5 => Op::Wait(r.u32()),
            6 => Op::HashRead(r.u8()),
            7 => Op::Finalize,
            8 => Op::Fail(r.u16()),
            9 => Op::Restart,
            _ => Op::Chunks { start: r.u32(), n: r.u16(), step: r.u8() },
        })
    }

    /// Writes the op as [`Op::read`] reads it.
    pub fn write(&self, w: &mut Writer) {
        match *self {
            Op::RawChunk { index, payload } => w.u8(0).u32(index).bytes(payload),
            Op::Chunk { index, run, seq, flip } => w.u8(1).u32(index).u32(run).u32(seq).u16(flip),
            Op::Ctl(p) => w.u8(2).bytes(p),
            Op::Manifest(p) => w.u8(3).bytes(p),
            Op::Rerun(run) => w.u8(4).u32(run),
            Op::Wait(ms) => w.u8(5).u32(ms),
            Op::HashRead(mode) => w.u8(6).u8(mode),
            Op::Finalize => w.u8(7),
            Op::Fail(code) => w.u8(8).u16(code),
            Op::Restart => w.u8(9),
            Op::Chunks { start, n, step } => w.u8(10).u32(start).u16(n).u8(step),
        };
    }
}

/// How a run ended, for the seed generator to check that its seeds go where they
/// are meant to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Chunks written.
    pub written: u64,
    /// `Verified` was reported.
    pub verified: bool,
    /// The receiver is complete.
    pub complete: bool,
    /// The last failure reported.
    pub failed: Option<ReceiveFailure>,
}

/// Runs one input.
pub fn run(data: &[u8]) -> Outcome {
    let mut r = Reader::new(data);
    let fx = fixture(r.u8());
    let tunables = r.u8();
    let cfg = ReceiverConfig { ack_every: 1 + u32::from(tunables % 64), ..ReceiverConfig::default() };
    // The top bit: the caller hashes what it writes, as the runtime's writer
    // threads do.
    let mut h = Harness::new(fx, cfg, tunables & 0x80 != 0);
    h.drain();
    while let Some(op) = Op::read(&mut r) {
        crate::trace!("{op:?}");
        h.apply(op);
        h.drain();
        h.check();
    }
    h.check_held_exactly();
    Outcome { written: h.written_count, verified: h.verified, complete: h.rx.is_complete(), failed: h.last_failure }
}

struct Harness {
    fx: Fixture,
    cfg: ReceiverConfig,
    prefix: Prefix,
    rid: ReceiverId,
    rx: Receiver,
    now: Instant,
    /// The last time the receiver accepted a message: `SenderGone` must not come
    /// before `give_up_after` from then.
    last_heard: Instant,
    /// The next transmission number of [`Op::Chunks`].
    seq: u32,
    /// The file as the caller wrote it.
    shadow: Vec<u8>,
    written: Vec<bool>,
    written_count: u64,
    bytes_written: u64,
    /// Since the receiver was (re)started: `Verified` was reported.
    verified: bool,
    /// Since the receiver was (re)started: a failure was reported.
    failed: bool,
    last_failure: Option<ReceiveFailure>,
    /// The reason of a `fail` command that must be reported.
    expect_local: Option<RejectReason>,
    /// The caller hashes the chunks it writes ([`Receiver::hash_elsewhere`]).
    elsewhere: bool,
}

impl Harness {
    fn new(fx: Fixture, cfg: ReceiverConfig, elsewhere: bool) -> Self {
        let now = Instant::now();
        let prefix = Prefix::default();
        let rid = ReceiverId::new("fuzz").expect("a valid receiver id");
        let mut rx = Receiver::new(cfg.clone(), prefix.clone(), rid.clone(), fx.manifest.clone(), None, now)
            .expect("a fresh receiver needs no resume checks");
        if elsewhere {
            rx.hash_elsewhere();
        }
        let size = fx.data.len();
        let count = fx.manifest.chunk_count as usize;
        Harness {
            fx,
            cfg,
            prefix,
            rid,
            rx,
            now,
            last_heard: now,
            seq: 0,
            shadow: vec![0; size],
            written: vec![false; count],
            written_count: 0,
            bytes_written: 0,
            verified: false,
            failed: false,
            last_failure: None,
            expect_local: None,
            elsewhere,
        }
    }

    fn manifest(&self) -> &Manifest {
        &self.fx.manifest
    }

    fn receiving(&self) -> bool {
        !self.verified && !self.failed
    }

    fn apply(&mut self, op: Op<'_>) {
        match op {
            Op::RawChunk { index, payload } => self.chunk(index, payload),
            Op::Chunk { index, run, seq, flip } => {
                let mut data = self.fx.chunk(index).to_vec();
                if flip != 0 && !data.is_empty() {
                    let at = usize::from(flip - 1) % data.len();
                    data[at] ^= 0x01;
                }
                self.chunk(index, &Chunk::encode(run, seq, index, &data));
            }
            Op::Chunks { start, n, step } => {
                let run = self.rx.manifest().run;
                let count = self.manifest().chunk_count;
                for k in 0..u32::from(n) {
                    // Indexes only grow: stop at the first past the file.
                    let index = k.saturating_mul(u32::from(step.max(1))).saturating_add(start);
                    if index >= count {
                        break;
                    }
                    let seq = self.seq;
                    self.seq = self.seq.wrapping_add(1);
                    self.chunk(index, &Chunk::encode(run, seq, index, self.fx.chunk(index)));
                    // A driver drains after every message.
                    self.drain();
                }
            }
            Op::Ctl(payload) => {
                let valid = Ctl::decode(payload).is_ok();
                let res = self.rx.handle_ctl(payload, self.now);
                assert_eq!(res.is_ok(), valid, "handle_ctl accepts exactly what decodes");
                if valid {
                    self.last_heard = self.now;
                }
            }
            Op::Manifest(payload) => {
                if let Ok(m) = Manifest::decode(payload) {
                    self.handle_manifest(&m);
                }
            }
            Op::Rerun(run) => {
                let m = Manifest { run, ..self.manifest().clone() };
                self.handle_manifest(&m);
            }
            Op::Wait(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.rx.handle_timeout(self.now);
            }
            Op::HashRead(mode) => self.hash_read(mode),
            Op::Finalize => {
                self.rx.finalized(self.now);
                if self.verified && !self.failed {
                    assert!(self.rx.is_complete(), "finalizing a verified file completes the transfer");
                }
            }
            Op::Fail(code) => {
                let reason = RejectReason::from_code(code);
                if !self.rx.is_done() {
                    self.expect_local = Some(reason);
                }
                self.rx.fail(reason, self.now);
            }
            Op::Restart => self.restart(),
        }
    }

    fn chunk(&mut self, index: u32, payload: &[u8]) {
        let valid = Chunk::decode(payload, index, self.manifest()).is_ok();
        let receiving = self.receiving();
        let res = self.rx.handle_chunk(index, payload, self.now);
        assert_eq!(res.is_ok(), valid, "handle_chunk accepts exactly what decodes");
        match res {
            Ok(Some(w)) => {
                self.last_heard = self.now;
                let m = &self.fx.manifest;
                assert!(receiving, "a write after the transfer ended");
                assert_eq!(w.index, index);
                assert!(w.index < m.chunk_count);
                assert_eq!(w.offset, m.chunk_offset(w.index));
                assert_eq!(w.data.len() as u64, m.chunk_len(w.index));
                let end = w.offset.checked_add(w.data.len() as u64).expect("a write's end fits a u64");
                assert!(end <= m.size, "a write past the end of the file");
                let i = w.index as usize;
                assert!(!self.written[i], "chunk {i} handed out to write twice");
                self.written[i] = true;
                self.written_count += 1;
                self.bytes_written += w.data.len() as u64;
                self.shadow[w.offset as usize..end as usize].copy_from_slice(&w.data);
            }
            Ok(None) => {
                self.last_heard = self.now;
                assert!(!receiving || self.written[index as usize], "a new chunk accepted but not handed out");
            }
            Err(_) => {}
        }
    }

    fn handle_manifest(&mut self, m: &Manifest) {
        let same = m.same_transfer(self.manifest());
        let res = self.rx.handle_manifest(m, self.now);
        assert_eq!(res.is_ok(), same, "a manifest is refused exactly when it describes another file");
        if same {
            self.last_heard = self.now;
            assert_eq!(self.rx.manifest().run, m.run);
        }
    }

    fn hash_read(&mut self, mode: u8) {
        if self.elsewhere {
            return self.hashed_elsewhere(mode);
        }
        let Some(read) = self.rx.next_hash_read() else {
            assert!(self.rx.hash_chunk(u32::from(mode), &[]).is_err(), "a hash feed nobody asked for is accepted");
            return;
        };
        let m = &self.fx.manifest;
        assert!(self.receiving(), "a hash read after the transfer ended");
        assert!(read.index < m.chunk_count);
        assert_eq!(read.offset, m.chunk_offset(read.index));
        assert_eq!(read.len, m.chunk_len(read.index));
        assert!(self.written[read.index as usize], "a hash read of a chunk never written");
        let bytes = self.shadow[read.offset as usize..(read.offset + read.len) as usize].to_vec();
        match mode % 3 {
            0 => self.rx.hash_chunk(read.index, &bytes).expect("the chunk asked for is taken"),
            1 => {
                let wrong = read.index.wrapping_add(1);
                assert_eq!(self.rx.hash_chunk(wrong, &bytes), Err(HashFeedError::OutOfOrder(wrong)));
            }
            _ => {
                let short = &bytes[..bytes.len() - 1];
                assert_eq!(self.rx.hash_chunk(read.index, short), Err(HashFeedError::BadLength(read.index)));
            }
        }
    }

    /// The caller's hash, as a writer thread makes it: over the chunks written,
    /// as far as they follow on from the start.
    fn hashed_elsewhere(&mut self, mode: u8) {
        assert_eq!(self.rx.next_hash_read(), None, "a hash read asked of a caller that hashes itself");
        let m = &self.fx.manifest;
        let through = u32::try_from(self.written.iter().take_while(|&&w| w).count()).expect("chunk counts fit a u32");
        let prefix = |n: u32| {
            let mut h = HashState::new();
            h.update(&self.shadow[..m.chunk_offset(n).min(m.size) as usize]);
            h
        };
        let before = self.rx.snapshot();
        match mode % 3 {
            0 => self.rx.hashed_through(through, prefix(through)).expect("a hash of the written prefix is taken"),
            1 => {
                // One chunk more than is written (or past the end): refused while
                // receiving, ignored once it ended.
                let claim = through + 1;
                let res = self.rx.hashed_through(claim, prefix(claim.min(m.chunk_count)));
                assert_eq!(res.is_err(), self.receiving() && claim > before.hashed, "{res:?}");
            }
            _ => {
                let mut short = HashState::new();
                let end = (m.chunk_offset(through).min(m.size) as usize).saturating_sub(1);
                short.update(&self.shadow[..end]);
                let res = self.rx.hashed_through(through, short);
                assert_eq!(res.is_err(), self.receiving() && through > before.hashed, "{res:?}");
            }
        }
        if !mode.is_multiple_of(3) {
            assert_eq!(self.rx.snapshot(), before, "a refused hash changed the state");
        }
    }

    fn restart(&mut self) {
        let snap = self.rx.snapshot();
        let bytes = postcard::to_allocvec(&snap).expect("a snapshot serializes");
        let back: ResumeState = postcard::from_bytes(&bytes).expect("a snapshot deserializes");
        assert_eq!(back, snap);
        let held = self.rx.held().clone();
        let m = self.rx.manifest().clone();
        self.rx = Receiver::new(self.cfg.clone(), self.prefix.clone(), self.rid.clone(), m, Some(back), self.now)
            .expect("a receiver resumes from its own snapshot");
        if self.elsewhere {
            self.rx.hash_elsewhere();
        }
        assert_eq!(self.rx.held(), &held);
        self.verified = false;
        self.failed = false;
        self.expect_local = None;
        self.last_heard = self.now;
    }

    /// Drains events, then transmits, checking each.
    fn drain(&mut self) {
        while let Some(ev) = self.rx.poll_event() {
            crate::trace!("  event {ev:?}");
            let all_written = self.written_count == u64::from(self.manifest().chunk_count);
            match &ev {
                ReceiverEvent::Verified => {
                    assert!(!self.verified && !self.failed, "verified twice, or after failing");
                    assert!(all_written, "verified with chunks never written");
                    assert_eq!(
                        Some(integrity::sha256(&self.shadow)),
                        self.manifest().sha256,
                        "verified a file that does not match"
                    );
                    self.verified = true;
                }
                ReceiverEvent::Failed(f) => {
                    assert!(!self.failed, "failed twice");
                    match f {
                        ReceiveFailure::HashMismatch => {
                            assert!(all_written, "hash mismatch with chunks never written");
                            assert_ne!(
                                Some(integrity::sha256(&self.shadow)),
                                self.manifest().sha256,
                                "a good file failed its hash"
                            );
                        }
                        ReceiveFailure::SenderGone => {
                            assert!(
                                self.now >= self.last_heard + self.cfg.give_up_after,
                                "gave up on the sender too early"
                            );
                        }
                        ReceiveFailure::Local(reason) => {
                            assert_eq!(self.expect_local.take(), Some(*reason), "a local failure nobody asked for");
                        }
                        ReceiveFailure::SenderAborted(_) => {}
                        other => panic!("unknown failure {other:?}"),
                    }
                    self.failed = true;
                    self.last_failure = Some(f.clone());
                }
                other => panic!("the fuzzer does not know receiver event {other:?}"),
            }
        }
        assert_eq!(self.expect_local, None, "a local failure was not reported");

        let m = self.fx.manifest.clone();
        let mut sent = 0;
        while let Some(t) = self.rx.poll_transmit() {
            crate::trace!("  -> {} {:?}", t.topic, t.payload);
            sent += 1;
            assert!(sent <= 16, "one step produced {sent} acks");
            assert_eq!(t.topic, self.prefix.ack(&m.id, &self.rid));
            assert_eq!((t.qos, t.retain), (Qos::AtLeastOnce, false));
            let Payload::Bytes(payload) = &t.payload else { panic!("a receiver sent a chunk") };
            let ack = Ack::decode(payload, m.chunk_count).expect("the receiver's own acks decode");
            let held = self.rx.held();
            match ack {
                Ack::Ready { run, held: reported, from_start } => {
                    assert_eq!(run, self.rx.manifest().run);
                    assert!(!from_start, "a receiver made with `new` never had the chunks from the start");
                    assert!(covers(held, &reported), "reports a chunk it does not hold");
                }
                Ack::Progress { held: n, .. } => {
                    let (n, held) = (u64::from(n), held.len());
                    assert_eq!(n, held, "progress says {n} held, {held} are");
                }
                Ack::Missing { missing, more, .. } => {
                    assert!(!overlaps(held, &missing), "reports a held chunk missing");
                    if !more {
                        assert_eq!(missing.len() + held.len(), u64::from(m.chunk_count), "missing chunks left out");
                    }
                }
                Ack::Complete { sha256 } => {
                    assert_eq!(Some(sha256), m.sha256);
                    assert!(self.rx.is_complete(), "complete before the file was finalized");
                }
                Ack::Rejected { .. } => assert!(self.failed, "rejected without reporting a failure"),
                // Only the runtime queues offers, never a `Receiver`.
                Ack::Queued { .. } => panic!("a receiver state machine answered Queued"),
                // Only for a file finalized under another name, which this target
                // never reports.
                Ack::Stored { .. } => panic!("a receiver state machine answered Stored"),
            }
        }
    }

    /// What holds after every step.
    fn check(&self) {
        let m = self.manifest();
        assert!(self.rx.manifest().same_transfer(m));
        let held = self.rx.held();
        assert!(held.len() <= u64::from(m.chunk_count));
        assert_eq!(held.len(), self.written_count);
        assert_eq!(self.rx.bytes_held(), self.bytes_written);
        if self.receiving() {
            assert!(self.rx.poll_timeout().is_some(), "a receiver still receiving has no deadline");
        }
        if self.rx.is_complete() {
            assert!(self.verified, "complete without being verified");
        }
        if self.rx.is_done() {
            assert!(self.verified || self.failed, "done without an event");
        }
    }

    /// The held set is exactly the chunks written. Once per run: it walks every
    /// chunk.
    fn check_held_exactly(&self) {
        let held = self.rx.held();
        crate::decoders::check_set(held, self.manifest().chunk_count);
        for (i, &w) in self.written.iter().enumerate() {
            assert_eq!(held.contains(i as u32), w, "chunk {i}: held and written disagree");
        }
    }
}

/// True when every index of `small` is in `big`; linear in their range counts.
fn covers(big: &RangeSet, small: &RangeSet) -> bool {
    let mut bigs = big.iter().peekable();
    small.iter().all(|r| {
        // Skip the ranges of `big` that end before `r` starts.
        while bigs.next_if(|b| b.end <= r.start).is_some() {}
        bigs.peek().is_some_and(|b| b.start <= r.start && r.end <= b.end)
    })
}

/// True when `a` and `b` share an index; linear in their range counts.
fn overlaps(a: &RangeSet, b: &RangeSet) -> bool {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        if x.start < y.end && y.start < x.end {
            return true;
        }
        if x.end <= y.end {
            a.next();
        } else {
            b.next();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `covers` and `overlaps` agree with index-by-index checks.
    #[test]
    fn range_helpers_agree_with_indexes() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = |n: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(n)) as u32
        };
        for _ in 0..2000 {
            let mut a = RangeSet::new();
            let mut b = RangeSet::new();
            for _ in 0..rand(6) {
                let s = rand(40);
                a.insert_range(s..s + rand(6));
            }
            for _ in 0..rand(6) {
                let s = rand(40);
                b.insert_range(s..s + rand(6));
            }
            let naive_covers = b.iter().flatten().all(|i| a.contains(i));
            let naive_overlaps = b.iter().flatten().any(|i| a.contains(i));
            assert_eq!(covers(&a, &b), naive_covers, "{a:?} {b:?}");
            assert_eq!(overlaps(&a, &b), naive_overlaps, "{a:?} {b:?}");
        }
    }
}
