//! Golden wire vectors: the hex examples of `docs/PROTOCOL.md`, checked against the
//! encoders and decoders, and replayed through the state machines.
//!
//! Every vector is a hex literal here. Each test encodes the message with the crate and
//! compares the bytes with the literal, decodes the literal back, and checks that the
//! specification shows the literal: as an annotated block (the `<!-- golden: name -->`
//! blocks, whose bytes must add up to the literal) and as one hex string. The doc is
//! read with `include_str!`, so it cannot drift from the code without this test failing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mqft_proto::integrity::{self, HashState};
use mqft_proto::ranges::{RangeError, WireRanges, MAX_WIRE_RANGES};
use mqft_proto::receiver::ResumeState;
use mqft_proto::topic::{MAX_PREFIX_LEN, MAX_RECEIVER_ID_LEN};
use mqft_proto::wire::{
    MAX_CHUNK_COUNT, MAX_CHUNK_HEADER_LEN, MAX_CHUNK_SIZE, MAX_CONTENT_TYPE_LEN, MAX_CONTROL_LEN, MAX_MANIFEST_LEN,
    MAX_NAME_DEPTH, MAX_NAME_LEN, MAX_REJECT_DETAIL_LEN, MAX_SENDER_LEN, MAX_STORED_NAME_LEN, MAX_TO, MAX_USER_ENTRIES,
    MAX_USER_KEY_LEN, MAX_USER_VALUE_LEN,
};
use mqft_proto::{
    transfer_id, AbortReason, Ack, Chunk, Ctl, DecodeError, Manifest, Meta, NameChange, Payload, Prefix, Qos, RangeSet,
    Receiver, ReceiverConfig, ReceiverEvent, ReceiverId, RejectReason, Sender, SenderConfig, SenderEvent, Transmit,
    Wait, PROTOCOL_VERSION,
};

const DOC: &str = include_str!("../../../docs/PROTOCOL.md");

// ---- the running example: `Hello, mqft!\n` as hello.txt, 5-byte chunks, run 300 ----

const FILE: &[u8] = b"Hello, mqft!\n";
const NAME: &str = "hello.txt";
const CHUNK_SIZE: u32 = 5;
const RUN: u32 = 300;
const RECEIVER: &str = "gw-7";

const FILE_SHA256: &str = "d8c3a4acb9cab366d77b6de3b594132b57d9f13c72fdb2bdf4ec96315ce63b19";
const ID_PREIMAGE: &str = "6d7166742d69642d76340d0000000000000005000000010068e5cf8b01000068656c6c6f2e747874";
const ID_PREIMAGE_SHA256: &str = "071e6eaf2caa71f42c1082849f866cc07198f88e7ee4aa4084a0e70ff5a620da";
const TRANSFER_ID: &str = "071e6eaf2caa71f42c1082849f866cc0";

const MANIFEST: &str = "06071e6eaf2caa71f42c1082849f866cc0ac020968656c6c6f2e7478740d050300010a746578742f706c61696e0180a0abfef962010663616d65726106676174652d32000563616d2d3700000000";
const MANIFEST_NO_META: &str = "063f96177f91dac53daf6e1798a44c9669ac020968656c6c6f2e7478740d050301d8c3a4acb9cab366d77b6de3b594132b57d9f13c72fdb2bdf4ec96315ce63b19000000000000000000";

const CHUNK_0: &str = "06ac020000008289d1f70548656c6c6f";
const CHUNK_1: &str = "06ac020101008f4edbb0052c206d7166";
const CHUNK_2_REPAIR: &str = "06ac0203020063e5f3c00374210a";

const ACK_READY_EMPTY: &str = "0600ac020001";
const ACK_READY_LATE: &str = "0600ac020000";
const ACK_READY: &str = "0600ac02020001010100";
const ACK_PROGRESS: &str = "0601ac020202";
const ACK_MISSING: &str = "0602ac020301020100";
const ACK_COMPLETE: &str = "0603d8c3a4acb9cab366d77b6de3b594132b57d9f13c72fdb2bdf4ec96315ce63b19";
const ACK_REJECTED: &str = "06040300";
const ACK_REJECTED_UNKNOWN: &str = "0604e80700";
const ACK_REJECTED_DETAIL: &str = "06040715726561642d6f6e6c792066696c652073797374656d";
const ACK_QUEUED: &str = "0605ac0203";
const ACK_STORED: &str =
    "0606d8c3a4acb9cab366d77b6de3b594132b57d9f13c72fdb2bdf4ec96315ce63b190d68656c6c6f202831292e7478740200";

const CTL_END_ROUND: &str = "0600ac020301d8c3a4acb9cab366d77b6de3b594132b57d9f13c72fdb2bdf4ec96315ce63b1900";
const CTL_ABORT: &str = "0601ac0203";

const RANGES: &str = "0301020401020a";

/// Each annotated block of the doc, by the name in its `<!-- golden: name -->` marker,
/// and the vector its bytes must add up to.
const BLOCKS: &[(&str, &str)] = &[
    ("id-preimage", ID_PREIMAGE),
    ("manifest", MANIFEST),
    ("chunk-0", CHUNK_0),
    ("chunk-2-repair", CHUNK_2_REPAIR),
    ("ack-ready-empty", ACK_READY_EMPTY),
    ("ack-ready", ACK_READY),
    ("ack-progress", ACK_PROGRESS),
    ("ack-missing", ACK_MISSING),
    ("ack-complete", ACK_COMPLETE),
    ("ack-rejected", ACK_REJECTED),
    ("ack-rejected-unknown", ACK_REJECTED_UNKNOWN),
    ("ack-rejected-detail", ACK_REJECTED_DETAIL),
    ("ack-queued", ACK_QUEUED),
    ("ack-stored", ACK_STORED),
    ("ctl-end-round", CTL_END_ROUND),
    ("ctl-abort", CTL_ABORT),
    ("ranges", RANGES),
];

// ---- helpers ----

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex literal {s}: {e}"))
}

fn sha() -> [u8; 32] {
    unhex(FILE_SHA256).try_into().unwrap()
}

fn meta() -> Meta {
    Meta {
        content_type: Some("text/plain".into()),
        modified_ms: Some(1_700_000_000_000),
        user: vec![("camera".into(), "gate-2".into())],
    }
}

/// The sender name of the running example.
const SENDER: &str = "cam-7";

/// The manifest of the running example, with metadata and a sender name.
fn manifest() -> Manifest {
    Manifest::new(NAME.into(), FILE.len() as u64, CHUNK_SIZE, None, meta(), RUN).unwrap().with_sender(SENDER).unwrap()
}

fn chunk_data(index: u32) -> &'static [u8] {
    let start = (index * CHUNK_SIZE) as usize;
    &FILE[start..(start + CHUNK_SIZE as usize).min(FILE.len())]
}

fn receiver_id() -> ReceiverId {
    ReceiverId::new(RECEIVER).unwrap()
}

/// Asserts that the doc shows `hex` as one string.
fn assert_in_doc(hex: &str) {
    assert!(DOC.contains(hex), "docs/PROTOCOL.md does not show {hex}");
}

/// The bytes of the annotated block after `<!-- golden: name -->`, as hex. In the block,
/// a line that does not start with a space holds hex bytes up to the first two spaces;
/// the rest of the line is commentary.
fn annotated(name: &str) -> String {
    let marker = format!("<!-- golden: {name} -->");
    let at = DOC.find(&marker).unwrap_or_else(|| panic!("no annotated block {name:?} in the doc"));
    let rest = &DOC[at + marker.len()..];
    let body = rest.trim_start().strip_prefix("```text\n").unwrap_or_else(|| panic!("block {name:?}: no ```text"));
    let body = &body[..body.find("```").unwrap_or_else(|| panic!("block {name:?} is not closed"))];
    let mut out = String::new();
    for line in body.lines().filter(|l| !l.is_empty() && !l.starts_with(' ')) {
        let bytes = line.split("  ").next().unwrap_or_default();
        for token in bytes.split(' ') {
            assert!(
                !token.is_empty()
                    && token.len() % 2 == 0
                    && token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "block {name:?}: {token:?} in {line:?} is not lowercase hex bytes"
            );
            out.push_str(token);
        }
    }
    out
}

fn bytes(t: &Transmit) -> &[u8] {
    match &t.payload {
        Payload::Bytes(b) => b,
        Payload::Chunk(c) => panic!("expected bytes, got chunk {}", c.index),
    }
}

// ---- the vectors ----

#[test]
fn every_annotated_block_adds_up_and_is_checked() {
    let names: BTreeSet<&str> = BLOCKS.iter().map(|&(n, _)| n).collect();
    assert_eq!(names.len(), BLOCKS.len(), "duplicate block name");
    let in_doc: BTreeSet<&str> = DOC
        .match_indices("<!-- golden: ")
        .map(|(at, m)| {
            let rest = &DOC[at + m.len()..];
            &rest[..rest.find(" -->").expect("unterminated golden marker")]
        })
        .collect();
    assert_eq!(in_doc, names, "the doc's annotated blocks and this test's list differ");
    for &(name, hex) in BLOCKS {
        assert_eq!(annotated(name), hex, "annotated block {name:?}");
        assert_in_doc(hex);
    }
}

#[test]
fn transfer_id_is_derived_as_documented() {
    assert_eq!(hex::encode(integrity::sha256(FILE)), FILE_SHA256);
    let mut preimage = b"mqft-id-v4".to_vec();
    preimage.extend_from_slice(&(FILE.len() as u64).to_le_bytes());
    preimage.extend_from_slice(&CHUNK_SIZE.to_le_bytes());
    preimage.push(1);
    preimage.extend_from_slice(&meta().modified_ms.unwrap().to_le_bytes());
    preimage.extend_from_slice(NAME.as_bytes());
    assert_eq!(hex::encode(&preimage), ID_PREIMAGE);
    assert_eq!(hex::encode(integrity::sha256(&unhex(ID_PREIMAGE))), ID_PREIMAGE_SHA256);
    assert!(ID_PREIMAGE_SHA256.starts_with(TRANSFER_ID));
    let id = transfer_id(FILE.len() as u64, CHUNK_SIZE, meta().modified_ms, NAME, None);
    assert_eq!(id.to_string(), TRANSFER_ID);
    assert_eq!(manifest().id, id);
    for s in [FILE_SHA256, ID_PREIMAGE_SHA256, TRANSFER_ID] {
        assert_in_doc(s);
    }
}

#[test]
fn topics() {
    let p = Prefix::default();
    let id = manifest().id;
    for topic in [p.manifest(&id), p.chunk(&id, 2), p.ack(&id, &receiver_id()), p.ctl(&id)] {
        assert!(DOC.contains(&format!("\n{topic}\n")), "the doc does not list topic {topic}");
        assert!(p.parse(&topic).is_some());
    }
    for filter in [p.manifest_filter(), p.ctl_filter()] {
        assert!(DOC.contains(&filter.replace("files", "<prefix>")), "{filter}");
    }
}

#[test]
fn manifest_vectors() {
    let m = manifest();
    assert_eq!(hex::encode(m.encode()), MANIFEST);
    assert_eq!(Manifest::decode(&unhex(MANIFEST)).unwrap(), m);
    assert_eq!(unhex(MANIFEST).len(), 78);
    assert_in_doc("Whole payload (78 bytes)");

    let bare = Manifest::new(NAME.into(), FILE.len() as u64, CHUNK_SIZE, Some(sha()), Meta::default(), RUN).unwrap();
    assert_eq!(hex::encode(bare.encode()), MANIFEST_NO_META);
    assert_eq!(Manifest::decode(&unhex(MANIFEST_NO_META)).unwrap(), bare);
    assert!(MANIFEST_NO_META.ends_with("000000"));
    assert!(bare.same_transfer(&Manifest { run: 1, ..bare.clone() }));
    assert_in_doc(MANIFEST_NO_META);
}

#[test]
fn chunk_vectors() {
    let m = manifest();
    for (hex, run, seq, index) in [(CHUNK_0, RUN, 0, 0), (CHUNK_1, RUN, 1, 1), (CHUNK_2_REPAIR, RUN, 3, 2)] {
        let data = chunk_data(index);
        assert_eq!(hex::encode(Chunk::encode(run, seq, index, data)), hex);
        let payload = unhex(hex);
        assert_eq!(
            Chunk::decode(&payload, index, &m).unwrap(),
            Chunk { run, seq, index, flags: 0, data: data.into(), crc32: integrity::crc32(data), wire_len: data.len() }
        );
        assert_in_doc(hex);
        // The CRC is shown as a number in the doc, and little-endian in the bytes.
        let crc = integrity::crc32(data);
        assert_in_doc(&format!("0x{crc:08x}"));
        assert!(hex.contains(&hex::encode(crc.to_le_bytes())));
    }
    assert!(unhex(CHUNK_0).len() <= MAX_CHUNK_HEADER_LEN + CHUNK_SIZE as usize);
    assert_eq!(integrity::crc32(b"123456789"), 0xcbf43926);
    assert_in_doc("0xcbf43926");
}

#[test]
fn ack_vectors() {
    let n = manifest().chunk_count;
    let vectors = [
        (Ack::Ready { run: RUN, held: RangeSet::new(), from_start: true }, ACK_READY_EMPTY),
        (Ack::Ready { run: RUN, held: [0, 2].into_iter().collect(), from_start: false }, ACK_READY),
        (Ack::Progress { run: RUN, next_seq: 2, held: 2 }, ACK_PROGRESS),
        (Ack::Missing { run: RUN, next_seq: 3, missing: [2].into_iter().collect(), more: false }, ACK_MISSING),
        (Ack::Complete { sha256: sha() }, ACK_COMPLETE),
        (Ack::Rejected { reason: RejectReason::DiskFull, detail: String::new() }, ACK_REJECTED),
        (Ack::Rejected { reason: RejectReason::Other(1000), detail: String::new() }, ACK_REJECTED_UNKNOWN),
        (Ack::Rejected { reason: RejectReason::Io, detail: "read-only file system".into() }, ACK_REJECTED_DETAIL),
        (Ack::Queued { run: RUN, position: 3 }, ACK_QUEUED),
        (
            Ack::Stored {
                sha256: sha(),
                name: "hello (1).txt".into(),
                change: NameChange::Renamed,
                detail: String::new(),
            },
            ACK_STORED,
        ),
    ];
    for (ack, hex) in vectors {
        assert_eq!(hex::encode(ack.encode()), hex, "{ack:?}");
        assert_eq!(Ack::decode(&unhex(hex), n).unwrap(), ack, "{hex}");
        assert_in_doc(hex);
    }
    // The variant indexes of the table.
    for (index, name, hex) in [
        (0, "Ready", ACK_READY),
        (1, "Progress", ACK_PROGRESS),
        (2, "Missing", ACK_MISSING),
        (3, "Complete", ACK_COMPLETE),
        (4, "Rejected", ACK_REJECTED),
        (5, "Queued", ACK_QUEUED),
        (6, "Stored", ACK_STORED),
    ] {
        assert_eq!(unhex(hex)[1], index);
        assert_in_doc(&format!("| {index} | `{name}` |"));
    }
}

#[test]
fn ctl_vectors() {
    for (ctl, hex, index, name) in [
        (Ctl::EndRound { run: RUN, next_seq: 3, sha256: Some(sha()), size: None }, CTL_END_ROUND, 0, "EndRound"),
        (Ctl::Abort { run: RUN, reason: AbortReason::Finished }, CTL_ABORT, 1, "Abort"),
    ] {
        assert_eq!(hex::encode(ctl.encode()), hex);
        assert_eq!(Ctl::decode(&unhex(hex)).unwrap(), ctl);
        assert_eq!(unhex(hex)[1], index);
        assert_in_doc(hex);
        assert_in_doc(&format!("| {index} | `{name}` |"));
    }
}

#[test]
fn reason_code_tables() {
    for code in 1..=11 {
        let reason = RejectReason::from_code(code);
        assert_eq!(reason.code(), code);
        assert_in_doc(&format!("| {code} | `{reason:?}` |"));
    }
    for code in 1..=5 {
        let reason = AbortReason::from_code(code);
        assert_eq!(reason.code(), code);
        assert_in_doc(&format!("| {code} | `{reason:?}` |"));
    }
    for code in 1..=2 {
        let change = NameChange::from_code(code);
        assert_eq!(change.code(), code);
        assert_in_doc(&format!("| {code} | `{change:?}` |"));
    }
    assert_eq!(RejectReason::from_code(1000), RejectReason::Other(1000));
    assert_eq!(AbortReason::from_code(0), AbortReason::Other(0));
}

#[test]
fn range_list_vector() {
    let set: RangeSet = [1, 2, 7].into_iter().chain(10..20).collect();
    let (wire, cut) = set.to_wire();
    assert!(!cut);
    assert_eq!(wire, WireRanges(vec![(1, 2), (4, 1), (2, 10)]));
    assert_eq!(hex::encode(postcard::to_allocvec(&wire).unwrap()), RANGES);
    let decoded: WireRanges = postcard::from_bytes(&unhex(RANGES)).unwrap();
    assert_eq!(decoded.to_set(20).unwrap(), set);
    assert_eq!(decoded.to_set(19), Err(RangeError::OutOfRange));
    assert_in_doc(RANGES);
}

#[test]
fn varint_table() {
    fn row(ty: &str, value: impl std::fmt::Display, bytes: &[u8]) {
        let spaced: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_in_doc(&format!("| {ty} | {value} | `{}` |", spaced.join(" ")));
    }
    for v in [0u32, 1, 127, 128, 300, 16383, 16384, 70000, u32::MAX] {
        row("u32", v, &postcard::to_allocvec(&v).unwrap());
    }
    for v in [0i64, -1, 1, -5, 1_700_000_000_000] {
        row("i64", v, &postcard::to_allocvec(&v).unwrap());
    }
    // postcard takes a longer-than-needed varint within the maximum (the payload
    // decoders refuse it: see `rejected_payloads`), and refuses one past it.
    assert_eq!(postcard::from_bytes::<u32>(&[0x80, 0x00]).unwrap(), 0);
    assert!(postcard::from_bytes::<u32>(&[0xff, 0xff, 0xff, 0xff, 0x10]).is_err());
    assert!(postcard::from_bytes::<u16>(&[0xff, 0xff, 0x04]).is_err());
    assert!(postcard::from_bytes::<u64>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).is_err());
    assert!(postcard::from_bytes::<bool>(&[2]).is_err());
    assert!(postcard::from_bytes::<Option<u8>>(&[2, 0]).is_err());
}

/// What a payload of the rejection table is received as.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A chunk on `.../chunk/<n>`.
    Chunk(u32),
    Manifest,
    Ack,
    Ctl,
}

/// The manifest of the running example without metadata, with the first id byte changed.
const BAD_ID_MANIFEST: &str = "063e96177f91dac53daf6e1798a44c9669ac020968656c6c6f2e7478740d050301d8c3a4acb9cab366d77b6de3b594132b57d9f13c72fdb2bdf4ec96315ce63b19000000000000000000";
/// The same with `chunk_count` 4.
const BAD_COUNT_MANIFEST: &str = "063f96177f91dac53daf6e1798a44c9669ac020968656c6c6f2e7478740d050401d8c3a4acb9cab366d77b6de3b594132b57d9f13c72fdb2bdf4ec96315ce63b19000000000000000000";
/// Chunk 3 of a 3-chunk file.
const PAST_END_CHUNK: &str = "06ac020403008316dc8c0178";
/// Chunk 2 with 5 bytes where it has 3.
const LONG_CHUNK: &str = "06ac0202020022f99f1f0574210a2121";

#[test]
fn rejected_payloads() {
    let m = manifest();
    let cases = [
        ("01ac0200008289d1f70548656c6c6f", Kind::Chunk(0), DecodeError::UnsupportedVersion(1)),
        ("06ac020000008289d1f70548656c6c", Kind::Chunk(0), DecodeError::Malformed),
        ("06ac020000008289d1f70548656c6c6e", Kind::Chunk(0), DecodeError::BadCrc(0)),
        ("06ac02008000008289d1f70548656c6c6f", Kind::Chunk(0), DecodeError::NonMinimalVarint),
        (CHUNK_0, Kind::Chunk(1), DecodeError::IndexMismatch { topic: 1, payload: 0 }),
        (PAST_END_CHUNK, Kind::Chunk(3), DecodeError::IndexOutOfRange { index: 3, count: 3 }),
        (LONG_CHUNK, Kind::Chunk(2), DecodeError::BadChunkLength { index: 2, len: 5, expected: 3 }),
        (BAD_ID_MANIFEST, Kind::Manifest, DecodeError::IdMismatch),
        (BAD_COUNT_MANIFEST, Kind::Manifest, DecodeError::BadChunkCount),
        ("0600ac02020001000100", Kind::Ack, DecodeError::Ranges(RangeError::NotCanonical)),
        ("0600ac0201020200", Kind::Ack, DecodeError::Ranges(RangeError::OutOfRange)),
        ("0601ac020304", Kind::Ack, DecodeError::HeldOutOfRange { held: 4, count: 3 }),
        ("0602ac0203010102", Kind::Ack, DecodeError::Malformed),
        ("0607", Kind::Ack, DecodeError::Malformed),
        ("0600ac0203000000", Kind::Ctl, DecodeError::TrailingBytes(1)),
        ("0600ac0283000000", Kind::Ctl, DecodeError::NonMinimalVarint),
    ];
    for (hex, kind, want) in cases {
        let payload = unhex(hex);
        let got = match kind {
            Kind::Chunk(topic) => Chunk::decode(&payload, topic, &m).map(drop),
            Kind::Manifest => Manifest::decode(&payload).map(drop),
            Kind::Ack => Ack::decode(&payload, m.chunk_count).map(drop),
            Kind::Ctl => Ctl::decode(&payload).map(drop),
        };
        assert_eq!(got, Err(want), "{hex} as {kind:?}");
        assert_in_doc(&format!("| `{hex}` |"));
    }

    // How the bad ones were made: each differs from a good payload in one way.
    assert_eq!(hex::encode(Chunk::encode(RUN, 4, 3, b"x")), PAST_END_CHUNK);
    assert_eq!(hex::encode(Chunk::encode(RUN, 2, 2, b"t!\n!!")), LONG_CHUNK);
    let mut bad_id = unhex(MANIFEST_NO_META);
    bad_id[1] ^= 1;
    assert_eq!(hex::encode(bad_id), BAD_ID_MANIFEST);
    let bare = Manifest::decode(&unhex(MANIFEST_NO_META)).unwrap();
    assert_eq!(hex::encode(Manifest { chunk_count: 4, ..bare }.encode()), BAD_COUNT_MANIFEST);
    assert_eq!(hex::encode(Ack::Progress { run: RUN, next_seq: 3, held: 4 }.encode()), "0601ac020304");
    // The non-minimal ones spell one varint of a good payload a byte longer.
    assert_eq!(CHUNK_0.replacen("06ac020000", "06ac02008000", 1), "06ac02008000008289d1f70548656c6c6f");
    let early = hex::encode(Ctl::EndRound { run: RUN, next_seq: 3, sha256: None, size: None }.encode());
    assert_eq!(format!("{early}00"), "0600ac0203000000");
    assert_eq!(early.replacen("ac0203", "ac028300", 1), "0600ac0283000000");

    // The empty payload, oversized ones, and an over-long range list.
    assert_eq!(Manifest::decode(&[]), Err(DecodeError::Empty));
    let mut big = unhex(CTL_END_ROUND);
    big.resize(MAX_CONTROL_LEN + 1, 0);
    assert_eq!(Ctl::decode(&big), Err(DecodeError::TooLarge(MAX_CONTROL_LEN + 1)));
    let mut big = unhex(CHUNK_0);
    big.resize(MAX_CHUNK_HEADER_LEN + CHUNK_SIZE as usize + 1, 0);
    assert_eq!(Chunk::decode(&big, 0, &m), Err(DecodeError::TooLarge(big.len())));
    let too_many = WireRanges(vec![(1, 1); MAX_WIRE_RANGES + 1]);
    assert_eq!(too_many.to_set(u32::MAX), Err(RangeError::TooMany(MAX_WIRE_RANGES + 1)));
}

#[test]
fn limits_table_matches_the_constants() {
    for (name, value) in [
        ("PROTOCOL_VERSION", u64::from(PROTOCOL_VERSION)),
        ("MAX_PREFIX_LEN", MAX_PREFIX_LEN as u64),
        ("MAX_RECEIVER_ID_LEN", MAX_RECEIVER_ID_LEN as u64),
        ("MAX_NAME_LEN", MAX_NAME_LEN as u64),
        ("MAX_CONTENT_TYPE_LEN", MAX_CONTENT_TYPE_LEN as u64),
        ("MAX_USER_ENTRIES", MAX_USER_ENTRIES as u64),
        ("MAX_USER_KEY_LEN", MAX_USER_KEY_LEN as u64),
        ("MAX_USER_VALUE_LEN", MAX_USER_VALUE_LEN as u64),
        ("MAX_CHUNK_SIZE", u64::from(MAX_CHUNK_SIZE)),
        ("MAX_CHUNK_COUNT", u64::from(MAX_CHUNK_COUNT)),
        ("MAX_MANIFEST_LEN", MAX_MANIFEST_LEN as u64),
        ("MAX_CONTROL_LEN", MAX_CONTROL_LEN as u64),
        ("MAX_CHUNK_HEADER_LEN", MAX_CHUNK_HEADER_LEN as u64),
        ("MAX_WIRE_RANGES", MAX_WIRE_RANGES as u64),
        ("MAX_REJECT_DETAIL_LEN", MAX_REJECT_DETAIL_LEN as u64),
        ("MAX_TO", MAX_TO as u64),
        ("MAX_NAME_DEPTH", MAX_NAME_DEPTH as u64),
        ("MAX_SENDER_LEN", MAX_SENDER_LEN as u64),
        ("MAX_STORED_NAME_LEN", MAX_STORED_NAME_LEN as u64),
    ] {
        assert_in_doc(&format!("| `{name}` | {value} "));
    }
}

/// Every place the prose names the version byte names this version's: a version
/// bump once left "`01` for this version" behind in two sections.
#[test]
fn prose_names_the_current_version_byte() {
    let byte = format!("`{PROTOCOL_VERSION:02x}`");
    assert_in_doc(&format!("**version byte**, {byte} for this version"));
    assert_in_doc(&format!("a version byte other than {byte} (`UnsupportedVersion`)"));
    assert_in_doc(&format!("The first byte of every payload is the protocol version, {byte} here."));
    assert_in_doc(&format!("# The mqft protocol, version {PROTOCOL_VERSION}\n"));
}

#[test]
fn defaults_table_matches_the_config() {
    fn secs(d: Duration) -> String {
        if d.subsec_millis() == 0 {
            format!("{} s", d.as_secs())
        } else {
            format!("{} ms", d.as_millis())
        }
    }
    let s = SenderConfig::default();
    assert_eq!(s.chunk_qos, Qos::AtLeastOnce);
    assert_eq!(s.wait, Wait::Count(1));
    let r = ReceiverConfig::default();
    for (name, value) in [
        ("window", s.window.to_string()),
        ("chunk_qos", "1".to_owned()),
        ("rto", secs(s.rto)),
        ("max_rto", secs(s.max_rto)),
        ("max_retries", s.max_retries.to_string()),
        ("join_timeout", secs(s.join_timeout)),
        ("join_grace", secs(s.join_grace)),
        ("max_stalled_rounds", s.max_stalled_rounds.to_string()),
        ("wait", "Count(1)".to_owned()),
        ("max_receivers", s.max_receivers.to_string()),
        ("ack_every", r.ack_every.to_string()),
        ("ack_delay", secs(r.ack_delay)),
        ("idle", secs(r.idle)),
        ("max_idle", secs(r.max_idle)),
        ("give_up_after", secs(r.give_up_after)),
    ] {
        assert_in_doc(&format!("| `{name}` | {value} |"));
    }
}

// ---- the sequence diagrams, replayed through the state machines ----

/// One sender and receiver `gw-7` of the running example, with the wire in between
/// left to the test.
struct Pair {
    now: Instant,
    prefix: Prefix,
    sender: Sender,
    receiver: Receiver,
}

impl Pair {
    /// Starts the sender, checks its manifest publish, and lets the receiver accept it
    /// and announce itself: it got the manifest live, subscribed to the prefix's
    /// chunks, so its `Ready` says `from_start`. The test delivers that `Ready`.
    fn start() -> Self {
        let now = Instant::now();
        let prefix = Prefix::default();
        let m = manifest();
        let mut sender = Sender::new(SenderConfig::default(), prefix.clone(), m.clone(), now);
        let t = sender.poll_transmit(now).expect("manifest");
        assert_eq!((t.topic.as_str(), t.qos, t.retain), (prefix.manifest(&m.id).as_str(), Qos::AtLeastOnce, true));
        assert_eq!(hex::encode(bytes(&t)), MANIFEST);

        let decoded = Manifest::decode(bytes(&t)).unwrap();
        let receiver =
            Receiver::new_early(ReceiverConfig::default(), prefix.clone(), receiver_id(), decoded, None, now).unwrap();
        let mut pair = Pair { now, prefix, sender, receiver };
        assert_eq!(pair.acks(), [ACK_READY_EMPTY]);
        pair
    }

    /// The receiver's `Ready` reaches the sender after the chunks went out: it
    /// joins, and nothing is sent again.
    fn join(&mut self) {
        self.deliver_ack(ACK_READY_EMPTY);
        assert!(matches!(self.sender.poll_event(), Some(SenderEvent::ReceiverJoined { held: 0, .. })));
        assert_eq!(self.publishes(), [], "the chunks already sent are on their way to it");
    }

    /// The receiver's pending acks, as hex, checking their topic, QoS and retain flag.
    fn acks(&mut self) -> Vec<String> {
        let topic = self.prefix.ack(&manifest().id, &receiver_id());
        std::iter::from_fn(|| self.receiver.poll_transmit())
            .map(|t| {
                assert_eq!((&t.topic, t.qos, t.retain), (&topic, Qos::AtLeastOnce, false));
                hex::encode(bytes(&t))
            })
            .collect()
    }

    fn deliver_ack(&mut self, ack: &str) {
        self.sender.handle_ack(&receiver_id(), &unhex(ack), self.now).unwrap();
    }

    /// The sender's pending publishes: chunks as `(index, payload hex)`, others as
    /// `(u32::MAX, payload hex)`; ctl and manifest topics and flags are checked.
    fn publishes(&mut self) -> Vec<(u32, String)> {
        let id = manifest().id;
        let mut out = Vec::new();
        loop {
            let Some(t) = self.sender.poll_transmit(self.now) else {
                // The runtime hashes the file as it reads it for sending.
                if !self.sender.wants_digest() {
                    break;
                }
                self.sender.set_digest(sha(), self.now);
                continue;
            };
            match t.payload {
                Payload::Chunk(c) => {
                    assert_eq!(
                        (&t.topic, t.qos, t.retain),
                        (&self.prefix.chunk(&id, c.index), Qos::AtLeastOnce, false)
                    );
                    out.push((c.index, hex::encode(c.encode(chunk_data(c.index)))));
                }
                Payload::Bytes(ref b) if t.topic == self.prefix.ctl(&id) => {
                    assert_eq!((t.qos, t.retain), (Qos::AtLeastOnce, false));
                    out.push((u32::MAX, hex::encode(b)));
                }
                Payload::Bytes(ref b) => {
                    assert_eq!((&t.topic, t.qos, t.retain), (&self.prefix.manifest(&id), Qos::AtLeastOnce, true));
                    out.push((u32::MAX, hex::encode(b)));
                }
            }
        }
        out
    }

    /// Delivers a chunk publish to the receiver, writing nothing (the test keeps no file).
    fn chunk_to_receiver(&mut self, index: u32, payload: &str) {
        let payload = unhex(payload);
        let w = self.receiver.handle_chunk(index, &payload, self.now).unwrap().expect("a new chunk");
        assert_eq!((w.index, &*w.data), (index, chunk_data(index)));
        while let Some(h) = self.receiver.next_hash_read() {
            self.receiver.hash_chunk(h.index, chunk_data(h.index)).unwrap();
        }
    }

    /// The receiver verified the file; the runtime moves it into place.
    fn finalize(&mut self) {
        assert_eq!(self.receiver.poll_event(), Some(ReceiverEvent::Verified));
        self.receiver.finalized(self.now);
        assert_eq!(self.acks(), [ACK_COMPLETE]);
    }

    /// Ends the transfer with the receiver's `Complete`.
    fn finish(&mut self) {
        self.deliver_ack(ACK_COMPLETE);
        assert_eq!(self.publishes(), [(u32::MAX, CTL_ABORT.to_owned()), (u32::MAX, String::new())]);
        assert!(self.sender.is_done());
        let events: Vec<SenderEvent> = std::iter::from_fn(|| self.sender.poll_event()).collect();
        assert_eq!(events.last(), Some(&SenderEvent::Finished));
    }
}

#[test]
fn normal_transfer_diagram() {
    let mut p = Pair::start();
    // Chunks follow the manifest at once; the end of round follows the last one.
    let sent = p.publishes();
    let want: Vec<(u32, String)> = vec![
        (0, CHUNK_0.to_owned()),
        (1, CHUNK_1.to_owned()),
        (2, hex::encode(Chunk::encode(RUN, 2, 2, chunk_data(2)))),
        (u32::MAX, CTL_END_ROUND.to_owned()),
    ];
    assert_eq!(sent, want);
    p.join();

    p.chunk_to_receiver(0, CHUNK_0);
    p.chunk_to_receiver(1, CHUNK_1);
    // Credit falls due `ack_delay` after the first unacknowledged chunk.
    p.now += ReceiverConfig::default().ack_delay;
    p.receiver.handle_timeout(p.now);
    assert_eq!(p.acks(), [ACK_PROGRESS]);
    p.deliver_ack(ACK_PROGRESS);

    p.chunk_to_receiver(2, &sent[2].1);
    // Every chunk is in and hashed; the hash to check against comes with the end
    // of round, which the receiver answers with nothing missing.
    assert_eq!(p.receiver.poll_event(), None, "verified before the sender's hash arrived");
    p.receiver.handle_ctl(&unhex(CTL_END_ROUND), p.now).unwrap();
    let none_missing = Ack::Missing { run: RUN, next_seq: 3, missing: RangeSet::new(), more: false };
    assert_eq!(p.acks(), [hex::encode(none_missing.encode())]);
    assert_in_doc("ack/gw-7: Missing {300, 3, [], false}");
    p.finalize();
    p.receiver.handle_ctl(&unhex(CTL_END_ROUND), p.now).unwrap();
    assert_eq!(p.acks(), [ACK_COMPLETE], "a complete receiver answers the end of round with Complete");
    p.finish();
}

#[test]
fn repair_round_diagram() {
    let mut p = Pair::start();
    let sent = p.publishes();
    assert_eq!(sent.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2, u32::MAX]);
    assert_eq!(sent[3].1, CTL_END_ROUND);
    p.join();
    p.chunk_to_receiver(0, &sent[0].1);
    p.chunk_to_receiver(1, &sent[1].1);
    // Chunk 2 is lost; the end of round arrives.
    p.receiver.handle_ctl(&unhex(CTL_END_ROUND), p.now).unwrap();
    assert_eq!(p.acks(), [ACK_MISSING]);
    p.deliver_ack(ACK_MISSING);

    let repair = p.publishes();
    assert_eq!(
        repair,
        [
            (2, CHUNK_2_REPAIR.to_owned()),
            (u32::MAX, hex::encode(Ctl::EndRound { run: RUN, next_seq: 4, sha256: Some(sha()), size: None }.encode()))
        ]
    );
    p.chunk_to_receiver(2, CHUNK_2_REPAIR);
    p.finalize();
    p.finish();
}

#[test]
fn resumed_and_refusing_receivers() {
    let now = Instant::now();
    let prefix = Prefix::default();
    let m = manifest();
    // Chunks 0 and 2 kept from an earlier attempt; chunk 0 hashed.
    let mut hash = HashState::new();
    hash.update(chunk_data(0));
    let crcs = vec![integrity::crc32(chunk_data(0)), integrity::crc32(chunk_data(2))];
    let saved =
        ResumeState { manifest: Manifest { run: 7, ..m.clone() }, held: vec![(0, 1), (2, 3)], hash, hashed: 1, crcs };
    let mut r =
        Receiver::new(ReceiverConfig::default(), prefix.clone(), receiver_id(), m.clone(), Some(saved), now).unwrap();
    let t = r.poll_transmit().unwrap();
    assert_eq!(hex::encode(bytes(&t)), ACK_READY);

    // A local failure is reported with its reason.
    r.fail(RejectReason::DiskFull, now);
    assert_eq!(r.poll_event(), Some(ReceiverEvent::Failed(mqft_proto::ReceiveFailure::Local(RejectReason::DiskFull))));
    assert_eq!(hex::encode(bytes(&r.poll_transmit().unwrap())), ACK_REJECTED);
    // A receiver that will not take the transfer at all.
    let t = Receiver::reject(&prefix, &receiver_id(), &m, RejectReason::DiskFull);
    assert_eq!((&t.topic, t.qos, t.retain), (&prefix.ack(&m.id, &receiver_id()), Qos::AtLeastOnce, false));
    assert_eq!(hex::encode(bytes(&t)), ACK_REJECTED);
}

#[test]
fn queued_receiver_diagram() {
    let now = Instant::now();
    let prefix = Prefix::default();
    let m = manifest();
    let mut sender = Sender::new(SenderConfig::default(), prefix.clone(), m.clone(), now);
    assert_eq!(hex::encode(bytes(&sender.poll_transmit(now).expect("manifest"))), MANIFEST);
    // The chunks go out before anyone answered; gw-7 drops them: it has not taken
    // the transfer.
    let eager: Vec<u32> = std::iter::from_fn(|| sender.poll_transmit(now))
        .filter_map(|t| match t.payload {
            Payload::Chunk(c) => Some(c.seq),
            _ => None,
        })
        .collect();
    assert_eq!(eager, [0, 1, 2]);

    // Every slot of gw-7 is taken: it holds the offer at the head of its queue.
    let t = Receiver::queued(&prefix, &receiver_id(), &m, 1);
    assert_eq!(hex::encode(bytes(&t)), "0605ac0201");
    sender.handle_ack(&receiver_id(), bytes(&t), now).unwrap();
    assert!(matches!(sender.poll_event(), Some(SenderEvent::Queued { position: 1, .. })));

    // A slot frees: gw-7 accepts the offer from its queue and announces itself,
    // without `from_start`: it dropped what came before.
    let mut receiver = Receiver::new(ReceiverConfig::default(), prefix.clone(), receiver_id(), m, None, now).unwrap();
    let ready = receiver.poll_transmit().expect("Ready");
    assert_eq!(hex::encode(bytes(&ready)), ACK_READY_LATE);
    assert_in_doc("ack/gw-7: Ready {300, held [], from_start false}");
    sender.handle_ack(&receiver_id(), bytes(&ready), now).unwrap();
    assert!(matches!(sender.poll_event(), Some(SenderEvent::ReceiverJoined { held: 0, .. })));
    let first = sender.poll_transmit(now).expect("the first chunk again");
    assert!(matches!(first.payload, Payload::Chunk(ref c) if c.index == 0 && c.seq == 3));
}

// ---- section 15: a signed manifest ----

/// The running example's manifest without metadata, signed at 2023-11-14T22:13:20Z
/// by the Ed25519 key whose 32-byte seed is `01` repeated.
const SIGNED_MANIFEST: &str = "063f96177f91dac53daf6e1798a44c9669ac020968656c6c6f2e7478740d050301d8c3a4acb9cab366d77b6de3b594132b57d9f13c72fdb2bdf4ec96315ce63b1900000000000180a0abfef9628a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c70772d1307aa462fddfc73155140e497a6e8da2c6907ccf4c00e987e93f77bac372b045eb8b81d402e25df1b2af1ba2cde46dfdf0efac6cbf06b978d33c2b10e000000";

#[test]
fn signed_manifest_vector() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let mut m = Manifest::new(NAME.into(), FILE.len() as u64, CHUNK_SIZE, Some(sha()), Meta::default(), RUN).unwrap();
    mqft_proto::trust::sign(&mut m, &key, 1_700_000_000_000);
    let enc = hex::encode(m.encode());
    assert_eq!(enc, SIGNED_MANIFEST);
    assert_eq!(Manifest::decode(&unhex(SIGNED_MANIFEST)).unwrap(), m);
    let pk = key.verifying_key().to_bytes();
    assert_eq!(mqft_proto::trust::check(&m, &[pk], 1_700_000_000_000, 1000), Ok(pk));
    assert_in_doc(SIGNED_MANIFEST);
    assert_in_doc(&hex::encode(pk));
    assert!(DOC.contains("mqft manifest signature v3\\0"));
}
