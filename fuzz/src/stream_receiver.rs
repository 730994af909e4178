//! `stream_receiver`: a [`Receiver`] of an open stream (protocol version 6, the
//! size not known until its end), driven by honest and lying chunks, ends of round
//! with any size and hash, the closed manifest, and hash reads.
//!
//! After every step the harness checks that:
//! - a write is at its chunk's offset, 1 to `chunk_size` bytes, for a chunk not
//!   written before; once the stream is closed, below its chunk count and of the
//!   length its size gives;
//! - at most one chunk shorter than `chunk_size` is written, and nothing past it;
//! - `Verified` comes only for a closed stream whose every chunk was written, and
//!   whose written bytes, in order, are exactly its size and hash to the SHA-256
//!   the sender gave: a receiver never confirms a stream it does not hold whole;
//! - a receiver whose sender never lied (no raw payload, no chunk past the end,
//!   no false size or hash) verifies the stream once it has it all, its end and
//!   its hash reads served.
//!
//! # Input
//! The stream's length (`u16`, at most 4096 bytes), the chunk size (`u8`: 1 to
//! 256), then [`Op`]s until the input ends (see [`Op::read`]).

use std::collections::BTreeMap;
use std::time::Instant;

use mqft_proto::{integrity, Chunk, Ctl, Manifest, Meta, Prefix, Receiver, ReceiverConfig, ReceiverEvent, ReceiverId};

use crate::input::{Reader, Writer};

/// The sender's run.
const RUN: u32 = 7;

/// One step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Chunk `index` of the true stream (a full chunk of zeros past its end: a
    /// sender that lies about where it ends).
    Honest(u16),
    /// A payload on `chunk/<index>`.
    Raw {
        /// The topic's index.
        index: u32,
        /// The payload.
        payload: &'a [u8],
    },
    /// An end of round with this size (`true_size`: the stream's) and the true
    /// hash, or (`!good`) another.
    End {
        /// The size carried, unless `true_size`.
        size: u64,
        /// Use the stream's own size.
        true_size: bool,
        /// The right hash.
        good: bool,
    },
    /// The manifest published again, closed at the stream's true size.
    Closed,
    /// The caller serves every hash read asked for.
    HashReads,
}

impl<'a> Op<'a> {
    /// Reads the next op; `None` at the end of the input.
    pub fn read(r: &mut Reader<'a>) -> Option<Self> {
        if r.is_empty() {
            return None;
        }
        Some(match r.u8() % 5 {
            0 => Op::Honest(r.u16()),
            1 => Op::Raw { index: r.u32(), payload: r.bytes() },
            2 => {
                let flags = r.u8();
                Op::End { size: r.u64(), true_size: flags & 1 == 0, good: flags & 2 == 0 }
            }
            3 => Op::Closed,
            _ => Op::HashReads,
        })
    }

    /// Writes the op as [`Op::read`] reads it.
    pub fn write(&self, w: &mut Writer) {
        match *self {
            Op::Honest(i) => w.u8(0).u16(i),
            Op::Raw { index, payload } => w.u8(1).u32(index).bytes(payload),
            Op::End { size, true_size, good } => w.u8(2).u8(u8::from(!true_size) | u8::from(!good) << 1).u64(size),
            Op::Closed => w.u8(3),
            Op::HashReads => w.u8(4),
        };
    }
}

/// How a run ended, for the seed generator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Chunks written.
    pub written: usize,
    /// `Verified` was reported.
    pub verified: bool,
    /// A failure was reported.
    pub failed: bool,
}

/// Runs one input.
pub fn run(data: &[u8]) -> Outcome {
    let mut r = Reader::new(data);
    let len = usize::from(r.u16() % 4097);
    let chunk_size = 1 + u32::from(r.u8());
    let stream: Vec<u8> = (0..len).map(|i| (i * 31 + i / 7) as u8).collect();
    let open = Manifest::new_stream("s.tar".into(), chunk_size, Meta::default(), RUN).expect("a valid stream");
    let now = Instant::now();
    let rid = ReceiverId::new("fuzz").expect("a valid receiver id");
    let rx = Receiver::new(ReceiverConfig::default(), Prefix::default(), rid, open.clone(), None, now)
        .expect("a fresh receiver");
    let mut h = Harness {
        stream,
        open,
        rx,
        now,
        written: BTreeMap::new(),
        verified: false,
        failed: false,
        seq: 0,
        lied: false,
    };
    h.drain();
    while let Some(op) = Op::read(&mut r) {
        crate::trace!("{op:?}");
        h.apply(op);
        h.drain();
    }
    // A sender that never lied is believed once it sent it all and its end.
    if !h.failed && !h.verified {
        let count = len.div_ceil(chunk_size as usize) as u16;
        for i in 0..count {
            h.apply(Op::Honest(i));
        }
        h.apply(Op::End { size: 0, true_size: true, good: true });
        h.apply(Op::HashReads);
        h.drain();
        assert!(h.verified || h.lied, "an honest stream was not verified");
    }
    Outcome { written: h.written.len(), verified: h.verified, failed: h.failed }
}

struct Harness {
    stream: Vec<u8>,
    open: Manifest,
    rx: Receiver,
    now: Instant,
    /// The bytes handed out to write, by chunk index.
    written: BTreeMap<u32, Vec<u8>>,
    verified: bool,
    failed: bool,
    seq: u32,
    /// A raw payload, a chunk past the end, a false size or hash went in.
    lied: bool,
}

impl Harness {
    fn chunk_size(&self) -> usize {
        self.open.chunk_size as usize
    }

    fn apply(&mut self, op: Op<'_>) {
        match op {
            Op::Honest(index) => {
                let at = usize::from(index) * self.chunk_size();
                let data = if at < self.stream.len() {
                    self.stream[at..(at + self.chunk_size()).min(self.stream.len())].to_vec()
                } else {
                    self.lied = true;
                    vec![0; self.chunk_size()]
                };
                self.seq += 1;
                let payload = Chunk::encode(RUN, self.seq, u32::from(index), &data);
                self.chunk(u32::from(index), &payload);
            }
            Op::Raw { index, payload } => {
                self.lied = true;
                self.chunk(index, payload);
            }
            Op::End { size, true_size, good } => {
                self.lied |= !good || !true_size && size != self.stream.len() as u64;
                let size = if true_size { self.stream.len() as u64 } else { size };
                let mut sha256 = integrity::sha256(&self.stream);
                sha256[0] ^= u8::from(!good);
                let end = Ctl::EndRound { run: RUN, next_seq: self.seq, sha256: Some(sha256), size: Some(size) };
                self.rx.handle_ctl(&end.encode(), self.now).expect("an end of round decodes");
            }
            Op::Closed => {
                let closed = self.open.close(self.stream.len() as u64).expect("the stream fits");
                let _ = self.rx.handle_manifest(&closed.with_digest(integrity::sha256(&self.stream)), self.now);
            }
            Op::HashReads => {
                while let Some(read) = self.rx.next_hash_read() {
                    let data = self.written.get(&read.index).expect("a hash read of a chunk written").clone();
                    assert_eq!(read.len, data.len() as u64, "a hash read of another length than was written");
                    self.rx.hash_chunk(read.index, &data).expect("the chunk asked for is taken");
                }
            }
        }
    }

    fn chunk(&mut self, index: u32, payload: &[u8]) {
        let Ok(Some(w)) = self.rx.handle_chunk(index, payload, self.now) else { return };
        let m = self.rx.manifest();
        let cs = self.chunk_size();
        assert!(!self.verified && !self.failed, "a write after the transfer ended");
        assert_eq!(w.offset, u64::from(w.index) * cs as u64);
        assert!(!w.data.is_empty() && w.data.len() <= cs, "a write of {} bytes", w.data.len());
        if !m.is_open() {
            assert!(w.index < m.chunk_count, "a write past a closed stream's end");
            assert_eq!(w.data.len() as u64, m.chunk_len(w.index));
        }
        // One short chunk at most, and it is the last one written to.
        if let Some((&last, data)) = self.written.iter().next_back() {
            assert!(data.len() == cs || w.index < last, "a chunk written past the short one");
        }
        if w.data.len() < cs {
            assert!(self.written.values().all(|d| d.len() == cs), "a second short chunk");
            assert!(self.written.keys().all(|&i| i < w.index), "a short chunk below a written one");
        }
        assert!(self.written.insert(w.index, w.data.into_owned()).is_none(), "chunk written twice");
    }

    fn drain(&mut self) {
        while let Some(ev) = self.rx.poll_event() {
            match ev {
                ReceiverEvent::Verified => {
                    let m = self.rx.manifest();
                    assert!(!m.is_open(), "verified a stream whose size is not known");
                    assert!((0..m.chunk_count).all(|i| self.written.contains_key(&i)), "verified with chunks missing");
                    let bytes: Vec<u8> = self.written.range(..m.chunk_count).flat_map(|(_, d)| d.clone()).collect();
                    assert_eq!(bytes.len() as u64, m.size, "verified bytes of another length than the size");
                    assert_eq!(Some(integrity::sha256(&bytes)), m.sha256, "verified bytes that do not hash");
                    self.verified = true;
                }
                ReceiverEvent::Failed(_) => self.failed = true,
                other => panic!("the fuzzer does not know receiver event {other:?}"),
            }
        }
        while self.rx.poll_transmit().is_some() {}
    }
}
