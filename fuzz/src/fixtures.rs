//! The files the state-machine targets transfer: small, so that an input of a few
//! hundred bytes can deliver a whole file, and shaped to reach the edge cases.

use mqft_proto::{integrity, Manifest, Meta};

/// The sender run every fixture's manifest carries.
pub const RUN: u32 = 7;

/// How many fixtures [`fixture`] chooses from.
pub const COUNT: u8 = 4;

/// A file and its manifest.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The file's bytes.
    pub data: Vec<u8>,
    /// Its manifest, with run [`RUN`].
    pub manifest: Manifest,
}

impl Fixture {
    /// The bytes of chunk `index` (empty past the last chunk).
    pub fn chunk(&self, index: u32) -> &[u8] {
        if index >= self.manifest.chunk_count {
            return &[];
        }
        // Below the chunk count, offset + len <= size, which is data.len().
        let offset = self.manifest.chunk_offset(index) as usize;
        &self.data[offset..offset + self.manifest.chunk_len(index) as usize]
    }
}

/// Fixture `selector % COUNT`:
/// 0. 600 bytes in 64-byte chunks: 10 chunks, the last one 24 bytes long;
/// 1. 100 bytes in one short chunk;
/// 2. an empty file: no chunks, verified as soon as it is accepted;
/// 3. 1100 one-byte chunks: enough to hold more than `MAX_WIRE_RANGES` ranges,
///    so range lists get cut on the wire.
pub fn fixture(selector: u8) -> Fixture {
    let (name, size, chunk_size) = match selector % COUNT {
        0 => ("fuzz.bin", 600, 64),
        1 => ("one.txt", 100, 128),
        2 => ("empty", 0, 64),
        _ => ("frag.bin", 1100, 1),
    };
    let data = pattern(size, u64::from(selector % COUNT));
    let meta = Meta { content_type: Some("application/octet-stream".into()), modified_ms: Some(1), user: vec![] };
    let manifest = Manifest::new(name.into(), size as u64, chunk_size, Some(integrity::sha256(&data)), meta, RUN)
        .expect("the fixture manifests are valid");
    Fixture { data, manifest }
}

/// `len` bytes that differ from chunk to chunk, so that a chunk written at the wrong
/// offset changes the file's hash.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
