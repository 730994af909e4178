//! Micro-benchmarks of the wire formats and the integrity checks: what every chunk
//! costs before it reaches a socket or a disk. Run with `cargo bench -p mqft-proto
//! --bench wire`; `docs/PERFORMANCE.md` has numbers from the development machine.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mqft_proto::{integrity, Ack, Chunk, Ctl, HashState, Manifest, Meta, Prefix, RangeSet};

/// Chunk sizes worth comparing: 3.1.1's default, the 128 KB-broker size, MQTT 5's cap.
const SIZES: [usize; 3] = [64 << 10, 127 << 10, 256 << 10];

/// Deterministic filler bytes.
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn manifest(size: u64, chunk: u32) -> Manifest {
    Manifest::new("img_0042.jpg".into(), size, chunk, None, Meta::default(), 1).expect("a valid manifest")
}

fn chunks(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk");
    for size in SIZES {
        let bytes = data(size);
        let m = manifest(size as u64 * 8, size as u32);
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = Vec::new();
        g.bench_with_input(BenchmarkId::new("encode_into", size), &bytes, |b, d| {
            b.iter(|| Chunk::encode_into(&mut buf, 1, black_box(1234), 3, d));
        });
        g.bench_with_input(BenchmarkId::new("encode_alloc", size), &bytes, |b, d| {
            b.iter(|| Chunk::encode(1, black_box(1234), 3, d));
        });
        let payload = Chunk::encode(1, 1234, 3, &bytes);
        g.bench_with_input(BenchmarkId::new("decode_checked", size), &payload, |b, p| {
            b.iter(|| Chunk::decode(black_box(p), 3, &m).expect("a valid chunk").data.len());
        });
    }
    g.finish();
}

fn integrity_checks(c: &mut Criterion) {
    let mut g = c.benchmark_group("integrity");
    let size = 256 << 10;
    let bytes = data(size);
    g.throughput(Throughput::Bytes(size as u64));
    g.bench_function("crc32_256k", |b| b.iter(|| integrity::crc32(black_box(&bytes))));
    g.bench_function("sha256_resumable_256k", |b| {
        b.iter(|| {
            let mut h = HashState::new();
            h.update(black_box(&bytes));
            h.len()
        })
    });
    g.bench_function("sha256_oneshot_256k", |b| b.iter(|| integrity::sha256(black_box(&bytes))));
    g.finish();
}

fn control(c: &mut Criterion) {
    let mut g = c.benchmark_group("control");
    let m = manifest(1 << 30, 256 << 10);
    let encoded = m.encode();
    g.bench_function("manifest_encode", |b| b.iter(|| black_box(&m).encode()));
    g.bench_function("manifest_decode", |b| b.iter(|| Manifest::decode(black_box(&encoded)).expect("valid")));
    let progress = Ack::Progress { run: 1, next_seq: 40_000, held: 39_000 };
    let p = progress.encode();
    g.bench_function("ack_progress_encode", |b| b.iter(|| black_box(&progress).encode()));
    g.bench_function("ack_progress_decode", |b| b.iter(|| Ack::decode(black_box(&p), 1 << 22).expect("valid")));
    // A badly fragmented missing set: 512 ranges, the wire cap.
    let missing: RangeSet = (0..1024u32).map(|i| i * 3).collect();
    let miss = Ack::Missing { run: 1, next_seq: 5000, missing, more: false };
    let mp = miss.encode();
    g.bench_function("ack_missing_512_ranges_encode", |b| b.iter(|| black_box(&miss).encode()));
    g.bench_function("ack_missing_512_ranges_decode", |b| {
        b.iter(|| Ack::decode(black_box(&mp), 1 << 22).expect("valid"))
    });
    let ctl = Ctl::EndRound { run: 1, next_seq: 4096, sha256: Some([7; 32]), size: None };
    let cp = ctl.encode();
    g.bench_function("ctl_encode", |b| b.iter(|| black_box(&ctl).encode()));
    g.bench_function("ctl_decode", |b| b.iter(|| Ctl::decode(black_box(&cp)).expect("valid")));
    g.finish();
}

fn topics(c: &mut Criterion) {
    let mut g = c.benchmark_group("topic");
    let prefix = Prefix::new("site-1/cams").expect("a valid prefix");
    let id = manifest(1 << 30, 256 << 10).id;
    let topic = prefix.chunk(&id, 4095);
    g.bench_function("chunk_topic_format", |b| b.iter(|| prefix.chunk(black_box(&id), black_box(4095))));
    g.bench_function("chunk_topic_parse", |b| b.iter(|| prefix.parse(black_box(&topic))));
    g.finish();
}

criterion_group!(benches, chunks, integrity_checks, control, topics);
criterion_main!(benches);
