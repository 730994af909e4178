//! The per-chunk path through both state machines, in memory: the sender hands out
//! a chunk, it is encoded (CRC32) around the file's bytes, its topic is parsed, the
//! receiver checks it (CRC32 again), hashes it (SHA-256) and hands back the write,
//! whose bytes are copied into the output buffer, and credit flows back. No
//! broker, no sockets, no disk: what is left is the CPU the protocol itself costs
//! per chunk, the floor under the runtime's end-to-end numbers.
//!
//! Run with `cargo bench -p mqft-proto --bench chunk_path`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mqft_proto::{
    integrity, Manifest, Meta, Payload, Prefix, Receiver, ReceiverConfig, ReceiverEvent, ReceiverId, Sender,
    SenderConfig, SenderEvent, Topic,
};

/// Moves `file` from a fresh sender to a fresh receiver in `chunk`-byte chunks;
/// returns the chunk transmissions.
fn transfer(file: &[u8], sha256: [u8; 32], chunk: u32, out: &mut [u8]) -> u32 {
    let now = Instant::now();
    let prefix = Prefix::default();
    let rid = ReceiverId::new("bench").expect("a valid receiver id");
    let m = Manifest::new("f.bin".into(), file.len() as u64, chunk, Some(sha256), Meta::default(), 1).expect("valid");
    let mut tx = Sender::new(SenderConfig::default(), prefix.clone(), m.clone(), now);
    let mut rx = Receiver::new(ReceiverConfig::default(), prefix.clone(), rid.clone(), m, None, now).expect("fresh");
    let mut buf = Vec::new();
    let mut chunks = 0;
    // Bounded: a few messages per chunk, and a round or two.
    for _ in 0..(file.len() / chunk as usize + 64) * 8 {
        while let Some(t) = rx.poll_transmit() {
            if let (Some(Topic::Ack(_, from)), Payload::Bytes(p)) = (prefix.parse(&t.topic), &t.payload) {
                tx.handle_ack(&from, p, now).expect("a valid ack");
            }
        }
        while let Some(ev) = rx.poll_event() {
            if ev == ReceiverEvent::Verified {
                rx.finalized(now);
            }
        }
        while let Some(ev) = tx.poll_event() {
            match ev {
                SenderEvent::Finished => return chunks,
                SenderEvent::Failed(f) => panic!("transfer failed: {f}"),
                _ => {}
            }
        }
        let Some(t) = tx.poll_transmit(now) else { continue };
        match (prefix.parse(&t.topic), t.payload) {
            (Some(Topic::Chunk(_, index)), Payload::Chunk(c)) => {
                let start = c.offset as usize;
                c.encode_into(&mut buf, &file[start..start + c.len as usize]);
                chunks += 1;
                if let Some(w) = rx.handle_chunk(index, &buf, now).expect("a valid chunk") {
                    let at = w.offset as usize;
                    out[at..at + w.data.len()].copy_from_slice(&w.data);
                }
            }
            (Some(Topic::Ctl(_)), Payload::Bytes(p)) => rx.handle_ctl(&p, now).expect("a valid ctl"),
            // The manifest (the receiver already has it) and its clearing.
            _ => {}
        }
    }
    panic!("the transfer did not finish within its step bound");
}

fn per_chunk_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk_path");
    g.sample_size(20);
    let size = 16 << 20;
    let file: Vec<u8> = (0..size).map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let sha = integrity::sha256(&file);
    let mut out = vec![0u8; size];
    for chunk in [16u32 << 10, 64 << 10, 256 << 10, 1 << 20] {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("16MiB_file", chunk), &chunk, |b, &chunk| {
            b.iter(|| transfer(black_box(&file), sha, chunk, &mut out));
        });
    }
    // Tiny chunks: what the state machines cost per chunk, with little data to move.
    let small = 1 << 20;
    let sha_small = integrity::sha256(&file[..small]);
    g.throughput(Throughput::Elements((small / 64) as u64));
    g.bench_function("state_machines_per_chunk_64B", |b| {
        b.iter(|| transfer(black_box(&file[..small]), sha_small, 64, &mut out));
    });
    g.finish();
}

criterion_group!(benches, per_chunk_path);
criterion_main!(benches);
