//! Network input never panics: every decoder and both state machines take arbitrary
//! bytes on every topic and answer with a typed error or by ignoring them. What the
//! decoders accept is the one encoding of what they decoded.

use std::time::{Duration, Instant};

use mqft_proto::{
    integrity, Ack, Chunk, Ctl, DecodeError, Manifest, Meta, Prefix, Receiver, ReceiverConfig, ReceiverId, Sender,
    SenderConfig,
};
use proptest::prelude::*;

fn manifest() -> Manifest {
    let data = vec![7u8; 10_000];
    Manifest::new("x.bin".into(), data.len() as u64, 1000, Some(integrity::sha256(&data)), Meta::default(), 1).unwrap()
}

/// Valid payloads of every kind, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let m = manifest();
    let held: mqft_proto::RangeSet = [1, 2, 5].into_iter().collect();
    vec![
        m.encode(),
        Chunk::encode(1, 3, 2, &[7; 1000]),
        Ack::Ready { run: 1, held: held.clone(), from_start: false }.encode(),
        Ack::Progress { run: 1, next_seq: 9, held: 3 }.encode(),
        Ack::Missing { run: 1, next_seq: 9, missing: held, more: false }.encode(),
        Ack::Complete { sha256: m.sha256.unwrap() }.encode(),
        Ctl::EndRound { run: 1, next_seq: 4, sha256: None, size: None }.encode(),
        Ctl::EndRound { run: 1, next_seq: 4, sha256: m.sha256, size: None }.encode(),
        Ack::Rejected { reason: mqft_proto::RejectReason::Io, detail: "read-only file system".into() }.encode(),
        Ack::Queued { run: 1, position: 3 }.encode(),
    ]
}

fn mutate(mut p: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, v) in edits {
        if p.is_empty() {
            p.push(v);
            continue;
        }
        let i = at % p.len();
        match op % 4 {
            0 => p[i] = v,
            1 => p.truncate(i),
            2 => p.insert(i, v),
            _ => p.extend(std::iter::repeat_n(v, i % 64)),
        }
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), idx in any::<u32>()) {
        let m = manifest();
        let _ = Manifest::decode(&bytes);
        let _ = Ack::decode(&bytes, m.chunk_count);
        let _ = Ack::decode(&bytes, u32::MAX);
        let _ = Ctl::decode(&bytes);
        let _ = Chunk::decode(&bytes, idx, &m);
    }

    #[test]
    fn mutated_payloads_never_panic_anything(
        which in 0usize..9,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        idx in 0u32..12,
    ) {
        let payload = mutate(seeds()[which].clone(), &edits);
        let m = manifest();
        let now = Instant::now();
        let prefix = Prefix::default();
        let rid = ReceiverId::new("r").unwrap();

        // The decoders: a value or a typed error. Anything that decodes re-encodes
        // to the same bytes: no two spellings.
        if let Ok(d) = Manifest::decode(&payload) {
            prop_assert_eq!(d.encode(), payload.clone());
        }
        if let Ok(d) = Ack::decode(&payload, m.chunk_count) {
            prop_assert_eq!(d.encode(), payload.clone());
        }
        if let Ok(d) = Ctl::decode(&payload) {
            prop_assert_eq!(d.encode(), payload.clone());
        }
        if let Ok(c) = Chunk::decode(&payload, idx, &m) {
            // Raw chunks have one encoding; a compressed one decodes to its length.
            if c.flags == 0 {
                prop_assert_eq!(Chunk::encode(c.run, c.seq, c.index, &c.data), payload.clone());
            } else {
                prop_assert_eq!(c.data.len() as u64, m.chunk_len(c.index));
            }
        }

        // A receiver fed the payload on every topic keeps going.
        let mut rx = Receiver::new(ReceiverConfig::default(), prefix.clone(), rid.clone(), m.clone(), None, now).unwrap();
        let _ = rx.handle_chunk(idx, &payload, now);
        let _ = rx.handle_ctl(&payload, now);
        if let Ok(other) = Manifest::decode(&payload) {
            let _ = rx.handle_manifest(&other, now);
        }
        rx.handle_timeout(now + Duration::from_secs(1));
        while rx.poll_transmit().is_some() {}
        // A valid chunk is still accepted afterwards.
        let good = Chunk::encode(1, 0, 0, &[7; 1000]);
        prop_assert!(rx.handle_chunk(0, &good, now).is_ok());

        // A sender fed the payload as an ack keeps going.
        let mut tx = Sender::new(SenderConfig::default(), prefix, m, now);
        let _ = tx.handle_ack(&rid, &payload, now);
        tx.handle_timeout(now + Duration::from_secs(1));
        let mut sent = 0;
        while tx.poll_transmit(now).is_some() {
            sent += 1;
            prop_assert!(sent <= 300, "a window bounds what one ack can release");
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Reproducers from fuzzing (`fuzz/corpus/<target>/regress-*`), as payloads.
#[test]
fn fuzz_regressions() {
    // The reproducers were found under protocol version 1; the version byte is the
    // current one here (and in the corpus files), the rest as found, but for the
    // fields added since (a manifest ends with an empty `to`, an empty sender, no
    // signature and no encryption since version 3; its hash is optional, and its id
    // derived from its name, size, time and chunking, since version 4; an end of
    // round ends with its optional hash, and since version 6 its optional size; no
    // hold since the held transfers of PROTOCOL.md 17; not a stream since version 6).
    // decode_ctl/regress-overlong-varint: `EndRound { run: 0, next_seq: 0 }` with the
    // run spelled `80 00`.
    assert_eq!(Ctl::decode(&unhex("06008000000000")), Err(DecodeError::NonMinimalVarint));
    assert_eq!(
        Ctl::decode(&unhex("060000000000")),
        Ok(Ctl::EndRound { run: 0, next_seq: 0, sha256: None, size: None })
    );

    // decode_manifest/regress-overlong-varint: a valid manifest but for its run, 7
    // spelled `87 00`.
    let overlong = unhex(concat!(
        "0665472ed0d5b9c894ba4435715c9aebf987000866757a7a2e62696ed804400a014e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4",
        "e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e01186170706c69636174696f6e2f6f637465742d73747265616d010200000000000000",
    ));
    assert_eq!(Manifest::decode(&overlong), Err(DecodeError::NonMinimalVarint));
    let mut minimal = overlong.clone();
    minimal.splice(17..19, [0x07]);
    assert_eq!(Manifest::decode(&minimal).map(|m| m.run), Ok(7));

    // decode_ack/regress-progress-held-past-chunk-count: 10 chunks, then
    // `Progress { run: 7, next_seq: 0, held: 4294967295 }`.
    let input = unhex("0a00000006010700ffffffff0f");
    let (count, payload) = input.split_at(4);
    let count = u32::from_le_bytes(count.try_into().unwrap());
    assert_eq!(Ack::decode(payload, count), Err(DecodeError::HeldOutOfRange { held: u32::MAX, count: 10 }));
}
