//! Integrity: the CRC32 of each chunk, a SHA-256 of the whole file that can be saved
//! and resumed, and the transfer id derived from the content.
//!
//! The receiver hashes chunks in file order as they arrive, so in the common case
//! (chunks arriving in order) it never reads the file back. To survive a restart it
//! must save the hash's progress next to the held ranges; `sha2`'s `Sha256` keeps its
//! state private, so [`HashState`] drives the raw SHA-256 compression function itself
//! and exposes the state: eight words, the unprocessed tail of the last block, and
//! the length so far.

use serde::{Deserialize, Serialize};
use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

use crate::topic::TransferId;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// The CRC32 (IEEE, as in zlib and Ethernet) of a chunk's bytes.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The SHA-256 of `data`, for callers that have it all in memory.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Derives the transfer id: the first 16 bytes of
/// `SHA-256("mqft-id-v4" || size as u64 LE || chunk_size as u32 LE || mtime || name || bound)`,
/// where `mtime` is `00` for a file without a modification time, or `01` and the
/// time in milliseconds as an i64 LE, and `bound` is empty, or for an encrypted
/// transfer the 32-byte SHA-256 of its ciphertext (its outer manifest has no name
/// or time of its own to tell it apart by).
///
/// The id does not depend on the file's contents, so a sender can publish it before
/// reading a byte. The same file (the same name, size, modification time and chunk
/// size) gets the same id and so resumes at receivers that hold part of it; a file
/// changed without a new size or time gets the same id too, and its new SHA-256,
/// which arrives at the end, fails the old part: the receiver starts over.
pub fn transfer_id(
    size: u64,
    chunk_size: u32,
    modified_ms: Option<i64>,
    name: &str,
    bound: Option<&[u8; 32]>,
) -> TransferId {
    let mut h = Sha256::new();
    h.update(b"mqft-id-v4");
    h.update(size.to_le_bytes());
    h.update(chunk_size.to_le_bytes());
    put_modified(&mut h, modified_ms);
    h.update(name.as_bytes());
    if let Some(bound) = bound {
        h.update(bound);
    }
    first_half(h)
}

fn put_modified(h: &mut Sha256, modified_ms: Option<i64>) {
    match modified_ms {
        Some(ms) => {
            h.update([1]);
            h.update(ms.to_le_bytes());
        }
        None => h.update([0]),
    }
}

fn first_half(h: Sha256) -> TransferId {
    let digest: [u8; 32] = h.finalize().into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    TransferId(id)
}

/// The transfer id of a stream ([`crate::wire::Manifest::stream`]): the first 16
/// bytes of `SHA-256("mqft-stream-id-v6" || chunk_size as u32 LE || mtime || run
/// as u32 LE || name)`. Its size is not known when the id is made, so it derives
/// from the sender's run instead. A stream cannot be read again,
/// so nothing resumes across a sender's restart, and a new run is a new transfer.
pub fn stream_id(chunk_size: u32, modified_ms: Option<i64>, name: &str, run: u32) -> TransferId {
    let mut h = Sha256::new();
    h.update(b"mqft-stream-id-v6");
    h.update(chunk_size.to_le_bytes());
    put_modified(&mut h, modified_ms);
    h.update(run.to_le_bytes());
    h.update(name.as_bytes());
    first_half(h)
}

/// A SHA-256 in progress whose state can be saved and restored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashState {
    state: [u32; 8],
    /// Bytes not yet compressed; always fewer than 64.
    tail: Vec<u8>,
    /// Bytes hashed so far.
    len: u64,
}

impl HashState {
    /// A hash of nothing yet.
    pub fn new() -> Self {
        HashState { state: H0, tail: Vec::with_capacity(64), len: 0 }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks a restored state: the tail must be shorter than a block and agree with
    /// the length.
    pub fn is_valid(&self) -> bool {
        self.tail.len() < 64 && self.len % 64 == self.tail.len() as u64
    }

    /// Hashes `data` after what came before.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let take = (64 - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() < 64 {
                return;
            }
            let mut block = [0u8; 64];
            block.copy_from_slice(&self.tail);
            compress256(&mut self.state, &[block]);
            self.tail.clear();
        }
        let (blocks, rest) = data.as_chunks::<64>();
        compress256(&mut self.state, blocks);
        self.tail.extend_from_slice(rest);
    }

    /// The digest of everything hashed.
    pub fn finish(&self) -> [u8; 32] {
        let mut state = self.state;
        // Padding: 0x80, zeros, then the bit length as a big-endian u64, to a
        // multiple of 64 bytes.
        let mut last = [0u8; 128];
        last[..self.tail.len()].copy_from_slice(&self.tail);
        last[self.tail.len()] = 0x80;
        let total = if self.tail.len() < 56 { 64 } else { 128 };
        last[total - 8..total].copy_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        let (blocks, _) = last[..total].as_chunks::<64>();
        compress256(&mut state, blocks);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

impl Default for HashState {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HashState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashState").field("len", &self.len).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            hex::encode(HashState::new().finish()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = HashState::new();
        h.update(b"abc");
        assert_eq!(hex::encode(h.finish()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn crc_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xcbf43926);
    }

    proptest! {
        #[test]
        fn matches_sha2_across_splits_and_saves(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut h = HashState::new();
            let mut prev = 0;
            for c in cuts {
                h.update(&data[prev..c]);
                prev = c;
                // Save and restore at every cut, as a restarted receiver does.
                let bytes = postcard::to_allocvec(&h).unwrap();
                h = postcard::from_bytes(&bytes).unwrap();
                prop_assert!(h.is_valid());
            }
            h.update(&data[prev..]);
            prop_assert_eq!(h.finish(), sha256(&data));
        }
    }
}
