//! Network input never panics: every decoder and both state machines take arbitrary
//! bytes on every topic and answer with a typed error or by ignoring them.

use std::time::{Duration, Instant};

use mqft_proto::{
    integrity, Ack, Chunk, Ctl, Manifest, Meta, Prefix, Receiver, ReceiverConfig, ReceiverId, Sender, SenderConfig,
};
use proptest::prelude::*;

fn manifest() -> Manifest {
    let data = vec![7u8; 10_000];
    Manifest::new("x.bin".into(), data.len() as u64, 1000, integrity::sha256(&data), Meta::default(), 1).unwrap()
}

/// Valid payloads of every kind, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let m = manifest();
    let held: mqft_proto::RangeSet = [1, 2, 5].into_iter().collect();
    vec![
        m.encode(),
        Chunk::encode(1, 3, 2, &[7; 1000]),
        Ack::Ready { run: 1, held: held.clone() }.encode(),
        Ack::Progress { run: 1, next_seq: 9, held: 3 }.encode(),
        Ack::Missing { run: 1, next_seq: 9, missing: held, more: false }.encode(),
        Ack::Complete { sha256: m.sha256 }.encode(),
        Ctl::EndRound { run: 1, next_seq: 4 }.encode(),
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
        which in 0usize..7,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        idx in 0u32..12,
    ) {
        let payload = mutate(seeds()[which].clone(), &edits);
        let m = manifest();
        let now = Instant::now();
        let prefix = Prefix::default();
        let rid = ReceiverId::new("r").unwrap();

        // The decoders: a value or a typed error.
        if let Ok(d) = Manifest::decode(&payload) {
            // Anything that decodes re-encodes to the same bytes: no two spellings.
            prop_assert_eq!(d.encode(), payload.clone());
        }
        let _ = Ack::decode(&payload, m.chunk_count);
        let _ = Ctl::decode(&payload);

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
