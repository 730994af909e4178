//! One function per wire decoder: each decodes arbitrary bytes and, when they are
//! accepted, checks the promises the decoded type makes, that it survives an
//! encode and decode unchanged, and that its encoding is the input itself.

use std::str::FromStr;

use mqft_proto::ranges::{RangeError, WireRanges, MAX_WIRE_RANGES};
use mqft_proto::wire::{
    ChunkWire, CHUNK_ZSTD, MAX_CHUNK_COUNT, MAX_CHUNK_SIZE, MAX_NAME_LEN, MAX_REJECT_DETAIL_LEN, MAX_STORED_NAME_LEN,
};
use mqft_proto::{
    integrity, Ack, Chunk, Ctl, Manifest, Meta, Prefix, PrefixPattern, RangeSet, ReceiverId, Topic, TransferId,
};

use crate::fixtures::fixture;
use crate::input::Reader;

/// `decode_manifest`: the input is a manifest payload.
pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::decode(data) else { return };
    assert!(!m.name.is_empty() && m.name.len() <= MAX_NAME_LEN);
    assert!(m.chunk_size > 0 && m.chunk_size <= MAX_CHUNK_SIZE);
    assert!(m.chunk_count <= MAX_CHUNK_COUNT);
    if m.is_open() {
        // An open stream (version 6): the bound, no hash, and its end unknown.
        assert!(m.stream && m.chunk_count == MAX_CHUNK_COUNT && m.sha256.is_none());
        assert_eq!(m.chunk_len(MAX_CHUNK_COUNT - 1), u64::from(m.chunk_size));
    } else {
        assert_eq!(u64::from(m.chunk_count), m.size.div_ceil(u64::from(m.chunk_size)));
    }
    // The chunks tile the file: none is empty, and the last ends at its end.
    if let Some(last) = m.chunk_count.checked_sub(1).filter(|_| !m.is_open()) {
        assert!(m.chunk_len(last) > 0);
        assert_eq!(m.chunk_offset(last) + m.chunk_len(last), m.size);
    }
    // What the sender builds from the same fields is the same manifest, id included.
    assert!(mqft_proto::wire::is_sender_name(&m.sender), "sender {:?}", m.sender);
    let built = if m.stream {
        // A stream's sender builds it open, and closes it once it read the end.
        Manifest::new_stream(m.name.clone(), m.chunk_size, m.meta.clone(), m.run)
            .and_then(|b| if m.is_open() { Ok(b) } else { b.close(m.size) })
            .map(|b| Manifest { sha256: m.sha256, ..b })
    } else {
        Manifest::new(m.name.clone(), m.size, m.chunk_size, m.sha256, m.meta.clone(), m.run)
    };
    // `to` and `sender` are not part of the id: the same file to the same receivers
    // from the same sender is the same manifest. The signature, the encryption
    // and the hold are set on top of that.
    let to = m.to.iter().map(|r| ReceiverId::new(r).expect("a decoded `to` holds valid receiver ids"));
    let built = built
        .and_then(|b| b.with_to(to))
        .and_then(|b| b.with_sender(&m.sender))
        .map(|b| Manifest {
            signature: m.signature.clone(),
            sealed: m.sealed.clone(),
            hold_until_ms: m.hold_until_ms,
            ..b
        })
        // An encrypted transfer's id is bound to its ciphertext's hash (version 4).
        .map(|b| Manifest { id: b.derived_id(), ..b });
    assert_eq!(built.as_ref(), Ok(&m));
    assert!(m.to.len() <= mqft_proto::wire::MAX_TO);
    // Checking a signature and opening an encrypted description never panic,
    // whatever the bytes; the seeds' key (seed 01) gets past the cheap refusals.
    let key = mqft_proto::trust::SigningKey::from_bytes(&[1; 32]);
    let _ = mqft_proto::trust::check(&m, &[key.verifying_key().to_bytes()], 1_700_000_000_000, i64::MAX);
    if let Ok(opened) = mqft_proto::sealed::open(&m, &key) {
        assert_eq!(u64::from(opened.inner.chunk_size) + 16, u64::from(m.chunk_size));
    }
    let enc = m.encode();
    assert_eq!(Manifest::decode(&enc), Ok(m));
    assert_canonical(data, &enc);
}

/// `decode_ack`: a chunk count (`u32`), then an ack payload.
pub fn ack(data: &[u8]) {
    let mut r = Reader::new(data);
    let count = r.u32();
    let payload = r.rest();
    let Ok(ack) = Ack::decode(payload, count) else { return };
    match &ack {
        Ack::Ready { held: set, .. } | Ack::Missing { missing: set, .. } => {
            check_set(set, count);
            assert!(set.range_count() <= MAX_WIRE_RANGES);
        }
        // A receiver cannot hold more chunks than the file has.
        Ack::Progress { held, .. } => assert!(*held <= count, "progress holds {held} of {count}"),
        Ack::Rejected { detail, .. } => assert!(detail.len() <= MAX_REJECT_DETAIL_LEN, "detail of {}", detail.len()),
        Ack::Stored { name, detail, .. } => {
            assert!(!name.is_empty() && name.len() <= MAX_STORED_NAME_LEN, "stored name of {}", name.len());
            assert!(detail.len() <= MAX_REJECT_DETAIL_LEN, "detail of {}", detail.len());
        }
        Ack::Complete { .. } | Ack::Queued { .. } => {}
    }
    let enc = ack.encode();
    assert_eq!(Ack::decode(&enc, count), Ok(ack));
    assert_canonical(payload, &enc);
}

/// `decode_ctl`: the input is a control payload.
pub fn ctl(data: &[u8]) {
    let Ok(ctl) = Ctl::decode(data) else { return };
    let enc = ctl.encode();
    assert_eq!(Ctl::decode(&enc), Ok(ctl));
    assert_canonical(data, &enc);
}

/// `decode_chunk`: a file size (`u64`), chunk size (`u32`) and topic index (`u32`),
/// then a chunk payload. The payload is decoded against the manifest of that size
/// and chunk size, or against a fixed one when those make no valid manifest.
pub fn chunk(data: &[u8]) {
    let mut r = Reader::new(data);
    let (size, chunk_size, topic_index) = (r.u64(), r.u32(), r.u32());
    let payload = r.rest();
    // The size of an open stream (version 6) picks one: any chunk may be its last.
    let m = if size == mqft_proto::wire::UNKNOWN_SIZE {
        Manifest::new_stream("c".into(), chunk_size, Meta::default(), 1)
    } else {
        Manifest::new("c".into(), size, chunk_size, Some([0; 32]), Meta::default(), 1)
    };
    let m = m.unwrap_or_else(|_| fixture(0).manifest);
    let Ok(c) = Chunk::decode(payload, topic_index, &m) else { return };
    assert_eq!(c.index, topic_index);
    assert!(c.index < m.chunk_count);
    if m.is_open() {
        assert!(!c.data.is_empty() && c.data.len() as u64 <= m.chunk_len(c.index));
    } else {
        assert_eq!(c.data.len() as u64, m.chunk_len(c.index));
        assert!(m.chunk_offset(c.index) + c.data.len() as u64 <= m.size);
    }
    // The CRC it was checked against is the one in the payload, over the bytes
    // on the wire; the chunk's own is over its decompressed bytes.
    let wire: ChunkWire<'_> = postcard::from_bytes(&payload[1..]).expect("an accepted chunk is a ChunkWire");
    assert_eq!(integrity::crc32(wire.data), u32::from_le_bytes(wire.crc32));
    assert_eq!(integrity::crc32(&c.data), c.crc32);
    if c.flags & CHUNK_ZSTD != 0 {
        // Decompressed, from fewer bytes than the chunk has: no encoding to compare.
        assert!(wire.data.len() < c.data.len());
        return;
    }
    // Raw, the data is borrowed from the payload, not copied.
    let within = payload.as_ptr_range();
    assert!(within.start <= c.data.as_ptr() && c.data.as_ptr_range().end <= within.end);
    let enc = Chunk::encode(c.run, c.seq, c.index, &c.data);
    assert_eq!(Chunk::decode(&enc, topic_index, &m), Ok(c));
    assert_canonical(payload, &enc);
}

/// `decode_ranges`: a chunk count (`u32`), then `(gap, len)` pairs of `u32`s, as
/// [`WireRanges::to_set`] gets them from a decoded ack.
pub fn ranges(data: &[u8]) {
    let mut r = Reader::new(data);
    let count = r.u32();
    let mut pairs = Vec::new();
    while !r.is_empty() {
        pairs.push((r.u32(), r.u32()));
    }
    let wire = WireRanges(pairs);
    match wire.to_set(count) {
        Ok(set) => {
            check_set(&set, count);
            assert_eq!(set.range_count(), wire.0.len());
            // Accepted lists are canonical: the set's own wire form is the same list.
            assert_eq!(set.to_wire(), (wire, false));
        }
        Err(RangeError::TooMany(n)) => assert!(n > MAX_WIRE_RANGES && n == wire.0.len()),
        Err(_) => assert!(wire.0.len() <= MAX_WIRE_RANGES),
    }
}

/// `parse_topic`: a prefix, a newline, then a topic; or, without a newline, a topic
/// under the default prefix. Both must be UTF-8, as MQTT topics are.
pub fn topic(data: &[u8]) {
    let (prefix, topic) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"files"[..], data),
    };
    let (Ok(prefix), Ok(topic)) = (std::str::from_utf8(prefix), std::str::from_utf8(topic)) else { return };
    for s in [prefix, topic] {
        if let Ok(p) = Prefix::new(s) {
            assert_eq!(p.as_str(), s);
            assert!(!s.is_empty() && s.len() <= 128);
            assert!(s.split('/').all(|l| !l.is_empty()));
        }
        if let Ok(id) = TransferId::from_str(s) {
            assert_eq!(id.to_string(), s, "a transfer id has one spelling");
        }
        if let Ok(id) = ReceiverId::new(s) {
            assert_eq!(id.as_str(), s);
            assert!(!s.contains(['/', '+', '#']), "a receiver id is one topic level with no wildcard");
        }
    }
    // A pattern (`site/+/cams`) matches only topics under a concrete prefix that
    // fits it level by level, and classifies them as that prefix does.
    if let Ok(pattern) = PrefixPattern::new(prefix) {
        if let Some((concrete, parsed)) = pattern.parse(topic) {
            assert!(topic.starts_with(&format!("{concrete}/")));
            let levels = pattern.as_str().split('/').zip(concrete.as_str().split('/'));
            assert_eq!(concrete.as_str().split('/').count(), pattern.as_str().split('/').count());
            assert!(levels.clone().all(|(p, c)| p == "+" || p == c));
            assert_eq!(concrete.parse(topic), Some(parsed));
        }
        if let Some(concrete) = pattern.concrete() {
            assert_eq!(pattern.parse(topic).map(|(_, t)| t), concrete.parse(topic), "a plain pattern is its prefix");
        }
    }
    let p = Prefix::new(prefix).unwrap_or_default();
    let Some(parsed) = p.parse(topic) else { return };
    // A topic that parses is exactly the topic the parsed value names.
    let rebuilt = match &parsed {
        Topic::Manifest(id) => p.manifest(id),
        Topic::Chunk(id, n) => p.chunk(id, *n),
        Topic::Ack(id, r) => p.ack(id, r),
        Topic::Ctl(id) => p.ctl(id),
    };
    assert_eq!(rebuilt, topic);
    assert_eq!(p.parse(&rebuilt), Some(parsed));
}

/// Asserts that `input`, which decoded, is the one encoding of what it decoded to:
/// the decoders refuse over-long varints (`80 00` for 0), the only other spelling
/// postcard would read.
fn assert_canonical(input: &[u8], reencoded: &[u8]) {
    assert_eq!(input, reencoded, "an accepted payload is not the canonical encoding of what it decoded to");
}

/// Every index of `set` is below `count`, and its length adds up.
pub fn check_set(set: &RangeSet, count: u32) {
    let mut len = 0u64;
    let mut prev_end = None;
    for r in set.iter() {
        assert!(r.start < r.end && r.end <= count, "range {r:?} outside 0..{count}");
        // Sorted, disjoint and not touching.
        assert!(prev_end.is_none_or(|e| e < r.start));
        prev_end = Some(r.end);
        len += u64::from(r.end - r.start);
    }
    assert_eq!(set.len(), len);
}
