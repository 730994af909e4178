//! The seed corpus: real encodings of every message, and message sequences that
//! walk the state machines through whole transfers, so that the fuzzer starts
//! from deep states instead of having to discover a valid CRC or transfer id.
//!
//! `examples/seeds.rs` writes these to `corpus/<target>/<name>`, or checks that the
//! files there are still what these functions build (they go stale when the wire
//! format changes, and a fuzzer seeded with payloads that all fail the version
//! check explores little). Each seed is also run through its target, and the
//! state-machine seeds are checked to end where their names say.

use std::time::Instant;

use mqft_proto::receiver::ReceiveFailure;
use mqft_proto::{
    AbortReason, Ack, Chunk, Ctl, Manifest, Meta, NameChange, Prefix, RangeSet, Receiver, ReceiverConfig, ReceiverId,
    RejectReason, SendFailure, TransferId,
};

use crate::fixtures::{fixture, RUN};
use crate::input::Writer;
use crate::{decoders, receiver, receiver_endpoint, resume, sender, stream_receiver};

/// Every target, by name.
pub const TARGETS: &[&str] = &[
    "decode_manifest",
    "decode_ack",
    "decode_ctl",
    "decode_chunk",
    "decode_ranges",
    "parse_topic",
    "resume",
    "receiver",
    "receiver_endpoint",
    "sender",
    "stream_receiver",
];

/// One seed file.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target's name.
    pub target: &'static str,
    /// The file name in `corpus/<target>/`.
    pub name: String,
    /// The input.
    pub data: Vec<u8>,
}

/// Runs `data` through target `target`.
pub fn run_target(target: &str, data: &[u8]) {
    match target {
        "decode_manifest" => decoders::manifest(data),
        "decode_ack" => decoders::ack(data),
        "decode_ctl" => decoders::ctl(data),
        "decode_chunk" => decoders::chunk(data),
        "decode_ranges" => decoders::ranges(data),
        "parse_topic" => decoders::topic(data),
        "resume" => resume::run(data),
        "receiver" => {
            receiver::run(data);
        }
        "receiver_endpoint" => {
            receiver_endpoint::run(data);
        }
        "sender" => {
            sender::run(data);
        }
        "stream_receiver" => {
            stream_receiver::run(data);
        }
        other => panic!("no target {other}"),
    }
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        out.push(Seed { target, name: name.to_owned(), data });
    };
    for (name, data) in manifests() {
        add("decode_manifest", &name, data);
    }
    for (name, data) in acks() {
        add("decode_ack", &name, data);
    }
    for (name, data) in ctls() {
        add("decode_ctl", &name, data);
    }
    for (name, data) in chunks() {
        add("decode_chunk", &name, data);
    }
    for (name, data) in ranges() {
        add("decode_ranges", &name, data);
    }
    for (name, data) in topics() {
        add("parse_topic", &name, data);
    }
    for (name, data) in resumes() {
        add("resume", &name, data);
    }
    for (name, data) in receivers() {
        add("receiver", &name, data);
    }
    for (name, data) in endpoints() {
        add("receiver_endpoint", &name, data);
    }
    for (name, data) in senders() {
        add("sender", &name, data);
    }
    for (name, data) in stream_receivers() {
        add("stream_receiver", &name, data);
    }
    out
}

type Named = Vec<(String, Vec<u8>)>;

fn manifests() -> Named {
    let mut out: Named = (0..crate::fixtures::COUNT)
        .map(|i| {
            let m = fixture(i).manifest;
            (format!("fixture-{}", m.name), m.encode())
        })
        .collect();
    let meta = Meta {
        content_type: Some("image/jpeg".into()),
        modified_ms: Some(-1_700_000_000_000),
        user: vec![("camera".into(), "north-gate".into()), ("k".into(), String::new())],
    };
    let m = Manifest::new("photo 2024-05-01.jpg".into(), 5 << 20, 256 << 10, None, meta, u32::MAX)
        .and_then(|m| m.with_sender("cam-7"))
        .unwrap();
    out.push(("meta".into(), m.encode()));
    let big = Manifest::new("big.iso".into(), 1 << 46, 16 << 20, Some([1; 32]), Meta::default(), 0).unwrap();
    out.push(("largest".into(), big.encode()));
    // Version 3: a relative path, addressed to two receivers.
    let to = ["gw1", "gw-3"].map(|r| mqft_proto::ReceiverId::new(r).expect("a valid receiver id"));
    let addressed = Manifest::new("photos/2026/a.jpg".into(), 1000, 256, None, Meta::default(), 9)
        .and_then(|m| m.with_to(to))
        .unwrap();
    out.push(("addressed-path".into(), addressed.encode()));
    // Version 6: a stream, open, and closed with its size and hash.
    let open = Manifest::new_stream("dir.tar".into(), 256 << 10, Meta::default(), 9).unwrap();
    out.push(("stream-open".into(), open.encode()));
    out.push(("stream-closed".into(), open.close(1_000_000).unwrap().with_digest([2; 32]).encode()));
    // Version 3: a signed manifest, so that mutations reach the signature's fields.
    let mut signed = fixture(0).manifest;
    mqft_proto::trust::sign(&mut signed, &mqft_proto::trust::SigningKey::from_bytes(&[1; 32]), 1_700_000_000_000);
    out.push(("signed".into(), signed.encode()));
    // And an encrypted one, for the same key (the chunk hash is not checked here).
    let plain = fixture(0).manifest;
    let pk = mqft_proto::trust::SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
    let sealed = mqft_proto::sealed::seal(&plain, &[pk], &[7; 32], &[[8; 32]], [9; 32]).unwrap();
    out.push(("sealed".into(), sealed.encode()));
    out
}

fn ack_seed(count: u32, ack: &Ack) -> Vec<u8> {
    Writer::new().u32(count).raw(&ack.encode()).finish()
}

fn acks() -> Named {
    let set: RangeSet = [0, 1, 2, 5, 9].into_iter().collect();
    // Every other chunk of 1100: more ranges than one message carries.
    let sparse: RangeSet = (0..550).map(|i| i * 2).collect();
    vec![
        ("ready".into(), ack_seed(10, &Ack::Ready { run: RUN, held: set.clone(), from_start: false })),
        ("ready-empty".into(), ack_seed(10, &Ack::Ready { run: RUN, held: RangeSet::new(), from_start: false })),
        ("progress".into(), ack_seed(10, &Ack::Progress { run: RUN, next_seq: 300, held: 9 })),
        ("missing".into(), ack_seed(10, &Ack::Missing { run: RUN, next_seq: 12, missing: set, more: false })),
        (
            "missing-cut".into(),
            ack_seed(1100, &Ack::Missing { run: RUN, next_seq: 70_000, missing: sparse, more: false }),
        ),
        ("complete".into(), ack_seed(10, &Ack::Complete { sha256: fixture(0).manifest.sha256.unwrap_or_default() })),
        ("rejected".into(), ack_seed(10, &Ack::Rejected { reason: RejectReason::DiskFull, detail: String::new() })),
        (
            "rejected-unknown".into(),
            ack_seed(10, &Ack::Rejected { reason: RejectReason::Other(999), detail: String::new() }),
        ),
        (
            "rejected-detail".into(),
            ack_seed(10, &Ack::Rejected { reason: RejectReason::Io, detail: "read-only file system".into() }),
        ),
        ("queued".into(), ack_seed(10, &Ack::Queued { run: RUN, position: 3 })),
        (
            "stored".into(),
            ack_seed(
                10,
                &Ack::Stored {
                    sha256: [3; 32],
                    name: "img_0001 (1).jpg".into(),
                    change: NameChange::Renamed,
                    detail: "a different img_0001.jpg was there".into(),
                },
            ),
        ),
    ]
}

fn ctls() -> Named {
    vec![
        ("end-round".into(), Ctl::EndRound { run: RUN, next_seq: 1000, sha256: None, size: None }.encode()),
        (
            "end-round-hash".into(),
            Ctl::EndRound { run: RUN, next_seq: 1000, sha256: Some([0xd8; 32]), size: None }.encode(),
        ),
        // Version 6: a stream's end, with its size.
        (
            "end-round-stream".into(),
            Ctl::EndRound { run: RUN, next_seq: 1000, sha256: Some([0xd8; 32]), size: Some(1 << 33) }.encode(),
        ),
        ("abort-cancelled".into(), Ctl::Abort { run: RUN, reason: AbortReason::Cancelled }.encode()),
        ("abort-finished".into(), Ctl::Abort { run: u32::MAX, reason: AbortReason::Finished }.encode()),
        ("abort-unknown".into(), Ctl::Abort { run: 0, reason: AbortReason::Other(4000) }.encode()),
    ]
}

fn chunk_seed(m: &Manifest, index: u32, data: &[u8]) -> Vec<u8> {
    Writer::new().u64(m.size).u32(m.chunk_size).u32(index).raw(&Chunk::encode(m.run, 3, index, data)).finish()
}

fn chunks() -> Named {
    let f0 = fixture(0);
    let f1 = fixture(1);
    let f3 = fixture(3);
    let last = f0.manifest.chunk_count - 1;
    let mut bad_crc = chunk_seed(&f0.manifest, 1, f0.chunk(1));
    *bad_crc.last_mut().unwrap() ^= 1;
    vec![
        ("first".into(), chunk_seed(&f0.manifest, 0, f0.chunk(0))),
        ("last-short".into(), chunk_seed(&f0.manifest, last, f0.chunk(last))),
        ("only".into(), chunk_seed(&f1.manifest, 0, f1.chunk(0))),
        ("one-byte".into(), chunk_seed(&f3.manifest, 1099, f3.chunk(1099))),
        ("bad-crc".into(), bad_crc),
        // Version 3: a compressed chunk, and a frame that inflates to 16 times the
        // chunk's length (refused as BadCompression without allocating it).
        ("zstd".into(), compressed_seed(&b"abcd".repeat(1024), 4096)),
        ("zstd-bomb".into(), compressed_seed(&[0; 65536], 4096)),
        // Version 6: a short chunk of an open stream, which may be its last.
        (
            "stream-short".into(),
            Writer::new().u64(u64::MAX).u32(64).u32(9).raw(&Chunk::encode(RUN, 3, 9, b"tail")).finish(),
        ),
    ]
}

/// A `decode_chunk` input: chunk 0 of a one-chunk file of `len` bytes (the
/// target's own manifest for that size), `data` compressed.
fn compressed_seed(data: &[u8], len: u32) -> Vec<u8> {
    Writer::new().u64(u64::from(len)).u32(len).u32(0).raw(&Chunk::encode_compressed(RUN, 3, 0, data)).finish()
}

fn ranges_seed(count: u32, pairs: &[(u32, u32)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(count);
    for &(gap, len) in pairs {
        w.u32(gap).u32(len);
    }
    w.finish()
}

fn ranges() -> Named {
    vec![
        ("from-zero".into(), ranges_seed(10, &[(0, 3), (2, 1), (1, 4)])),
        ("gap-first".into(), ranges_seed(10, &[(4, 6)])),
        ("near-max".into(), ranges_seed(u32::MAX, &[(u32::MAX - 2, 1), (1, 1)])),
        ("at-cap".into(), ranges_seed(2000, &[(1, 1); 512])),
    ]
}

fn topics() -> Named {
    let id = fixture(0).manifest.id;
    let p = Prefix::new("site-1/cams").unwrap();
    let r = ReceiverId::new("gw_7").unwrap();
    let under = |topic: String| format!("site-1/cams\n{topic}").into_bytes();
    vec![
        ("manifest".into(), Prefix::default().manifest(&id).into_bytes()),
        ("chunk".into(), under(p.chunk(&id, 4_294_967_295))),
        ("ack".into(), under(p.ack(&id, &r))),
        ("ctl".into(), under(p.ctl(&id))),
        ("filter".into(), under(p.chunk_filter(&TransferId([0; 16])))),
        ("pattern".into(), format!("site/+/cams\n{}", Prefix::new("site/a/cams").unwrap().manifest(&id)).into_bytes()),
    ]
}

fn resumes() -> Named {
    let mut out = Named::new();
    let mut add = |name: &str, selector: u8, damage: u8, chunks: &mut dyn Iterator<Item = u32>| {
        let fx = fixture(selector);
        let prefix = Prefix::default();
        let rid = ReceiverId::new("fuzz").unwrap();
        let now = Instant::now();
        let mut rx = Receiver::new(ReceiverConfig::default(), prefix, rid, fx.manifest.clone(), None, now).unwrap();
        for i in chunks {
            let payload = Chunk::encode(RUN, i, i, fx.chunk(i));
            let _ = rx.handle_chunk(i, &payload, now).unwrap();
        }
        let state = postcard::to_allocvec(&rx.snapshot()).unwrap();
        out.push((name.to_owned(), Writer::new().u8(selector).u8(damage).raw(&state).finish()));
    };
    add("fresh", 0, 0, &mut (0..0));
    add("in-order-half", 0, 0, &mut (0..5));
    add("out-of-order", 0, 0, &mut [3, 4, 7].into_iter());
    add("all-held-unhashed", 0, 0, &mut (1..10).chain(0..1));
    add("sparse", 3, 0, &mut (0..300).map(|i| i * 3));
    // The partial file changed while the receiver was down: a chunk inside the
    // hashed part, one past it, the file cut in half.
    add("changed-hashed-chunk", 0, 2, &mut (0..5));
    add("changed-unhashed-chunk", 0, 8, &mut (0..3).chain(6..9));
    add("cut-part", 0, resume::CUT, &mut (0..10));
    out
}

/// A receiver input: fixture, `ack_every`, ops.
fn receiver_seed(selector: u8, ack_every: u8, ops: &[receiver::Op<'_>]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(selector).u8(ack_every);
    for op in ops {
        op.write(&mut w);
    }
    w.finish()
}

fn receivers() -> Named {
    use receiver::Op;
    let chunk = |index: u32| Op::Chunk { index, run: RUN, seq: index, flip: 0 };
    let end_round = Ctl::EndRound { run: RUN, next_seq: 10, sha256: fixture(0).manifest.sha256, size: None }.encode();
    let abort = Ctl::Abort { run: RUN, reason: AbortReason::Cancelled }.encode();
    let f0 = fixture(0);
    let raw_good = Chunk::encode(RUN, 0, 0, f0.chunk(0));
    let mut raw_bad = raw_good.clone();
    *raw_bad.last_mut().unwrap() ^= 1;
    let other = Manifest::new("other".into(), 600, 64, Some([9; 32]), Meta::default(), RUN).unwrap().encode();
    let rerun = Manifest { run: RUN + 1, ..f0.manifest.clone() }.encode();
    let hash = Op::HashRead(0);

    let mut in_order: Vec<Op<'_>> = (0..10).map(chunk).collect();
    in_order.extend([Op::Ctl(&end_round), Op::Finalize, Op::Ctl(&end_round)]);

    let mut reverse: Vec<Op<'_>> = (0..10).rev().map(chunk).collect();
    reverse.extend([Op::HashRead(1), Op::HashRead(2)]);
    reverse.extend(std::iter::repeat_n(hash, 10));
    reverse.push(Op::Finalize);

    let mut lossy = vec![chunk(0), chunk(2), chunk(2), Op::Wait(10), chunk(5), Op::Ctl(&end_round)];
    lossy.extend([chunk(1), chunk(3), chunk(4), Op::Wait(25)]);
    lossy.extend((6..10).map(chunk));
    lossy.extend(std::iter::repeat_n(hash, 10));
    lossy.push(Op::Finalize);

    let mut corrupt = vec![Op::RawChunk { index: 0, payload: &raw_bad }, Op::RawChunk { index: 1, payload: &raw_good }];
    corrupt.extend((0..10).map(|i| Op::Chunk { index: i, run: RUN, seq: i, flip: if i == 4 { 7 } else { 0 } }));
    corrupt.push(Op::Ctl(&end_round));

    let mut restart: Vec<Op<'_>> = [0, 1, 2, 6, 7].into_iter().map(chunk).collect();
    restart.extend([Op::Restart, Op::Manifest(&rerun), Op::Ctl(&end_round)]);
    restart.extend([3, 4, 5, 8, 9].into_iter().map(chunk));
    restart.extend(std::iter::repeat_n(hash, 10));
    restart.extend([Op::Restart, Op::Finalize]);

    let silent = vec![chunk(0), Op::Wait(2_000), Op::Wait(4_000), Op::Wait(60_000), Op::Wait(60_000)];
    let aborted = vec![chunk(0), Op::Manifest(&other), Op::Rerun(RUN + 1), Op::Rerun(RUN), Op::Ctl(&abort)];
    let failed = vec![chunk(0), Op::Fail(3), Op::Ctl(&end_round), Op::Fail(1)];
    let empty = vec![Op::Ctl(&end_round), Op::Finalize, Op::Ctl(&end_round)];
    let one = vec![chunk(0), Op::Finalize];
    // Every other chunk of 1100: the answer to an end of round is cut.
    let sparse = vec![Op::Chunks { start: 0, n: 550, step: 2 }, Op::Ctl(&end_round), Op::Restart, Op::Ctl(&end_round)];
    let whole = vec![Op::Chunks { start: 0, n: 1100, step: 1 }, Op::Ctl(&end_round), Op::Finalize];

    let seeds: Vec<(&str, u8, u8, Vec<Op<'_>>)> = vec![
        ("in-order", 0, 3, in_order),
        ("reverse", 0, 31, reverse.clone()),
        // The top bit of `ack_every`: hashed by the caller, as a writer thread does.
        ("reverse-hashed-elsewhere", 0, 0x80 | 31, reverse),
        ("lossy", 0, 2, lossy),
        ("corrupt", 0, 0, corrupt),
        ("restart", 0, 5, restart.clone()),
        ("restart-hashed-elsewhere", 0, 0x80 | 5, restart),
        ("silent-sender", 0, 31, silent),
        ("aborted", 0, 31, aborted),
        ("local-failure", 0, 31, failed),
        ("empty-file", 2, 31, empty),
        ("one-chunk", 1, 0, one),
        ("sparse", 3, 63, sparse),
        ("whole-in-one-op", 3, 63, whole),
    ];
    seeds
        .into_iter()
        .map(|(name, selector, ack_every, ops)| {
            let data = receiver_seed(selector, ack_every, &ops);
            let got = receiver::run(&data);
            let failed = got.failed.clone();
            let ok = match name {
                "in-order" | "reverse" | "lossy" | "restart" | "one-chunk" | "empty-file" | "whole-in-one-op"
                | "reverse-hashed-elsewhere" | "restart-hashed-elsewhere" => {
                    got.complete && failed.is_none()
                }
                "corrupt" => failed == Some(ReceiveFailure::HashMismatch),
                "silent-sender" => failed == Some(ReceiveFailure::SenderGone),
                "aborted" => failed == Some(ReceiveFailure::SenderAborted(AbortReason::Cancelled)),
                "local-failure" => failed == Some(ReceiveFailure::Local(RejectReason::DiskFull)),
                _ => got.written == 550,
            };
            assert!(ok, "receiver seed {name} ended as {got:?}");
            (name.to_owned(), data)
        })
        .collect()
}

/// A sender input: fixture, window, wait policy, ops.
fn sender_seed(selector: u8, window: u8, wait: u8, ops: &[sender::Op<'_>]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(selector).u8(window).u8(wait);
    for op in ops {
        op.write(&mut w);
    }
    w.finish()
}

fn senders() -> Named {
    use sender::Op;
    let ready = |from: u8| Op::Ready { from, run: RUN, start: 0, len: 0 };
    let progress = |from: u8, next_seq: u32| Op::Progress { from, run: RUN, next_seq, held: next_seq };
    let missing = |from: u8, next_seq: u32, start: u16, len: u16| Op::Missing {
        from,
        run: RUN,
        next_seq,
        start,
        len,
        more: false,
    };
    let complete = |from: u8| Op::Complete { from, good: true };
    let raw_ready = Ack::Ready { run: RUN, held: [1, 2].into_iter().collect(), from_start: false }.encode();

    // Window 4 (byte 3): 10 chunks go out 4 at a time as credit comes back.
    let one = vec![ready(0), Op::Wait(600), progress(0, 4), progress(0, 8), missing(0, 10, 0, 0), complete(0)];
    let two = vec![
        ready(0),
        ready(1),
        progress(0, 8),
        progress(1, 8),
        missing(0, 10, 0, 0),
        missing(1, 10, 7, 2),
        missing(0, 12, 0, 0),
        missing(1, 12, 0, 0),
        complete(0),
        complete(1),
    ];
    let lost = vec![
        ready(0),
        Op::Wait(600),
        Op::Wait(1_000),
        Op::Wait(2_000),
        Op::Wait(4_000),
        Op::Wait(8_000),
        Op::Wait(16_000),
        Op::Wait(16_000),
        Op::Wait(16_000),
        Op::Wait(16_000),
    ];
    let rejected = vec![
        Op::RawAck { from: 1, payload: &raw_ready },
        Op::Wait(600),
        Op::Rejected { from: 1, code: 3 },
        Op::Complete { from: 0, good: false },
    ];
    let nobody = vec![Op::Wait(1_000), Op::Reconnect(false), Op::Wait(2_000), Op::Wait(30_000)];
    // Queued, then refused as queue-full (offered again with backoff), then
    // queued again and finally accepted.
    let queued = vec![
        Op::Queued { from: 0, run: RUN, position: 3 },
        Op::Wait(1_000),
        Op::Rejected { from: 0, code: 10 },
        Op::Wait(600),
        Op::Queued { from: 0, run: RUN, position: 1 },
        ready(0),
        Op::Wait(600),
        complete(0),
    ];
    let cancel = vec![ready(2), Op::Wait(600), Op::Reconnect(true), Op::Cancel, complete(2)];
    // A stream (policy bit 4): its 10 chunks become readable 3 at each wait, its
    // end with the last; the receiver answers the end of round that carries it.
    let mut stream = vec![ready(0)];
    for _ in 0..4 {
        stream.extend([Op::Wait(3), progress(0, 10)]);
    }
    stream.extend([missing(0, 10, 0, 0), complete(0)]);

    let seeds: Vec<(&str, u8, u8, u8, Vec<Op<'_>>)> = vec![
        ("one-receiver", 0, 3, 0, one),
        ("two-receivers", 0, 7, 3, two),
        ("lost-receiver", 0, 31, 2, lost),
        ("rejected", 1, 0, 1, rejected),
        ("no-receiver", 2, 0, 0, nobody),
        ("queued", 0, 3, 0, queued),
        ("cancelled", 3, 15, 0, cancel),
        ("stream", 0, 31, 0x10, stream),
    ];
    seeds
        .into_iter()
        .map(|(name, selector, window, wait, ops)| {
            let data = sender_seed(selector, window, wait, &ops);
            let got = sender::run(&data);
            let ok = match name {
                "one-receiver" | "two-receivers" | "queued" | "stream" => got.finished,
                "lost-receiver" => matches!(got.failed, Some(SendFailure::ReceiverLost { .. })),
                "rejected" => {
                    matches!(got.failed, Some(SendFailure::Rejected { .. } | SendFailure::NoReceivers { .. }))
                }
                "no-receiver" => matches!(got.failed, Some(SendFailure::NoReceivers { .. })),
                _ => got.failed == Some(SendFailure::Cancelled),
            };
            assert!(ok, "sender seed {name} ended as {got:?}");
            (name.to_owned(), data)
        })
        .collect()
}

/// A receiver endpoint input: `max_concurrent`, `queue`, `max_size`, ops.
fn endpoint_seed(slots: u8, queue: u8, max_size: u16, ops: &[receiver_endpoint::Op<'_>]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(slots).u8(queue).u16(max_size);
    for op in ops {
        op.write(&mut w);
    }
    w.finish()
}

fn endpoints() -> Named {
    use receiver_endpoint::Op;
    let offer = |which: u8| Op::Offer { which, run: RUN };
    let chunk = Chunk::encode(RUN, 0, 0, fixture(0).chunk(0));
    let end_round = Ctl::EndRound { run: RUN, next_seq: 10, sha256: fixture(0).manifest.sha256, size: None }.encode();
    let abort = Ctl::Abort { run: RUN, reason: AbortReason::Cancelled }.encode();
    let other = fixture(1).manifest.encode();
    // Max concurrent is `slots % 4 + 1`.
    let routed = vec![
        offer(0),
        Op::Decide(0),
        Op::Message { kind: 1, which: 0, index: 0, payload: &chunk },
        Op::Message { kind: 2, which: 0, index: 0, payload: &end_round },
        offer(0),
    ];
    let queue = vec![
        offer(0),
        Op::Decide(0),
        offer(1),
        offer(2),
        offer(3),
        Op::Message { kind: 2, which: 1, index: 0, payload: &abort },
        Op::End { which: 0, completed: false },
        Op::Close(0),
        Op::Admit,
        Op::Decide(0),
    ];
    let history = vec![
        offer(0),
        Op::Decide(0),
        Op::End { which: 0, completed: true },
        Op::Close(0),
        offer(0),
        Op::Checked(true),
        Op::Message { kind: 2, which: 0, index: 0, payload: &end_round },
        Op::Checked(false),
        Op::Decide(2),
    ];
    let hostile = vec![
        Op::Message { kind: 0, which: 0, index: 0, payload: &[2, 0xff] },
        Op::Message { kind: 0, which: 0, index: 0, payload: &other },
        Op::Message { kind: 0, which: 4, index: 0, payload: &[] },
        Op::Message { kind: 1, which: 4, index: 3, payload: &chunk },
        Op::Message { kind: 1, which: 4, index: 4, payload: &chunk },
        Op::Message { kind: 3, which: 0, index: 0, payload: &[1] },
        Op::RawTopic { topic: b"files/../manifest", payload: &other },
        Op::Stop,
        offer(0),
    ];
    let too_large = vec![offer(0), offer(1), offer(2)];
    let seeds: Vec<(&str, u8, u8, u16, Vec<Op<'_>>)> = vec![
        ("routed", 0, 4, 0, routed),
        ("queue", 0, 2, 0, queue),
        ("history", 1, 4, 0, history),
        ("hostile", 0, 4, 0, hostile),
        ("too-large", 3, 4, 50, too_large),
    ];
    seeds
        .into_iter()
        .map(|(name, slots, queue, max_size, ops)| {
            let data = endpoint_seed(slots, queue, max_size, &ops);
            let got = receiver_endpoint::run(&data);
            let ok = match name {
                "routed" => got.routed == 3 && got.offers == 1,
                "queue" => got.queued == 2 && got.refused == 1 && got.offers == 2,
                "history" => got.completes == 2 && got.offers == 2,
                "hostile" => got.refused == 1 && got.offers == 0 && got.routed == 0,
                _ => got.refused == 2 && got.offers == 1,
            };
            assert!(ok, "receiver endpoint seed {name} ended as {got:?}");
            (name.to_owned(), data)
        })
        .collect()
}

/// `stream_receiver` inputs: a stream in order, reversed with its end first, one
/// whose end lies (a size past what was sent, a wrong hash), and one closed by its
/// manifest.
fn stream_receivers() -> Named {
    use stream_receiver::Op;
    let seed = |len: u16, chunk: u8, ops: &[Op<'_>]| {
        let mut w = Writer::new();
        w.u16(len).u8(chunk);
        for op in ops {
            op.write(&mut w);
        }
        w.finish()
    };
    let end = Op::End { size: 0, true_size: true, good: true };
    let in_order: Vec<Op<'_>> = (0..10).map(Op::Honest).chain([end, Op::HashReads]).collect();
    let reversed: Vec<Op<'_>> = [end].into_iter().chain((0..10).rev().map(Op::Honest)).chain([Op::HashReads]).collect();
    let lies = [Op::Honest(0), Op::Honest(1), Op::End { size: 999, true_size: false, good: true }, Op::Honest(2)];
    let wrong_hash: Vec<Op<'_>> =
        (0..4).map(Op::Honest).chain([Op::End { size: 0, true_size: true, good: false }, Op::HashReads]).collect();
    let closed: Vec<Op<'_>> = [Op::Honest(0), Op::Closed, Op::Honest(1), Op::Honest(2), Op::HashReads].into();
    vec![
        ("in-order".into(), seed(600, 63, &in_order)),
        ("end-first".into(), seed(640, 63, &reversed)),
        ("lying-size".into(), seed(300, 99, &lies)),
        ("wrong-hash".into(), seed(200, 49, &wrong_hash)),
        ("closed-by-manifest".into(), seed(150, 63, &closed)),
        ("empty".into(), seed(0, 7, &[end])),
    ]
}
