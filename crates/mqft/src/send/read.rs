//! A chunk read for sending: once, straight into its payload.
//!
//! The payload is allocated at its final length and the file is read into the
//! slice after the header ([`proto::ChunkRef::encode_from`]); the CRC32 and the
//! file's in-order SHA-256 ([`InOrderHash`]) are taken from that same slice. So
//! an uncompressed chunk costs one allocation, one read and no copy of its
//! bytes on our side. A compressed chunk is compressed from that slice, and one
//! that does not shrink goes as it is; a sealed chunk is read into the slice and
//! encrypted there.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::Mutex;

use super::InOrderHash;
use crate::proto::sealed::ChunkCipher;
use crate::proto::{self, wire::Compression};

/// How a chunk's bytes go on the wire.
#[derive(Clone, Copy)]
pub(super) enum Body<'a> {
    /// The file's bytes, compressed where that pays.
    Plain(Compression),
    /// Encrypted with `cipher`; `wire_chunk` is the chunk size on the wire
    /// (the plaintext's and the tag's).
    Sealed { cipher: &'a ChunkCipher, wire_chunk: u32 },
}

/// Reads chunk `c` of `file` and encodes its payload; returns it and the bytes
/// of chunk data it puts on the wire. A plain chunk's bytes go into `hash` too,
/// if they are the next in file order; a sealed file's hash is taken when it is
/// encrypted, before the send ([`crate::sealing::seal_file`]). Blocks.
pub(super) fn read_chunk(
    file: &File,
    c: proto::ChunkRef,
    body: Body<'_>,
    hash: Option<&Mutex<InOrderHash>>,
) -> io::Result<(Vec<u8>, usize)> {
    match body {
        Body::Sealed { cipher, wire_chunk } => c.encode_from(Compression::None, |buf| {
            crate::sealing::read_sealed_into(file, cipher, wire_chunk, c.index, buf)
        }),
        Body::Plain(compression) => c.encode_from(compression, |buf| {
            // A stream's spool is read the same way: the chunk is in it once the
            // state machine hands it out (`Sender::set_readable`).
            file.read_exact_at(buf, c.offset)?;
            // Busy only while `finish_hash` reads the rest, which covers these
            // bytes too.
            if let Some(mut h) = hash.and_then(|h| h.try_lock().ok()) {
                let done = h.digest.is_some();
                h.feed(c.offset, buf);
                if !done && h.digest.is_some() {
                    h.check_unchanged(file)?;
                }
            }
            Ok(())
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::proto::{Chunk, ChunkRef, Manifest};

    /// A file of `len` bytes, some compressible and some not.
    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let data: Vec<u8> = (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // The first half random, the second half text.
                if i < len / 2 {
                    x as u8
                } else {
                    b"sensor=3 t=21.5C ok\n"[i % 20]
                }
            })
            .collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        (f, data)
    }

    fn chunk(m: &Manifest, index: u32, seq: u32) -> ChunkRef {
        ChunkRef { run: m.run, seq, index, offset: m.chunk_offset(index), len: m.chunk_len(index) }
    }

    #[test]
    fn a_chunk_read_into_its_payload_is_the_chunk_and_feeds_the_hash() {
        // 5 chunks of 64 KiB and a short last one.
        let (f, data) = file_of(5 * 65_536 + 300);
        let m = Manifest::new("f".into(), data.len() as u64, 65_536, None, Default::default(), 300).unwrap();
        let file = f.reopen().unwrap();
        let modified = file.metadata().unwrap().modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap();
        let modified_ms = Some(modified.as_millis() as i64);
        for compression in [Compression::None, Compression::Zstd] {
            let hash = Mutex::new(InOrderHash::new(m.size, modified_ms));
            for i in 0..m.chunk_count {
                let c = chunk(&m, i, i + 200);
                let (payload, wire) = read_chunk(&file, c, Body::Plain(compression), Some(&hash)).unwrap();
                let range = c.offset as usize..(c.offset + c.len) as usize;
                assert_eq!((payload, wire), c.encode_with(&data[range], compression), "chunk {i}");
            }
            let h = hash.into_inner().unwrap();
            assert_eq!(h.digest, Some(<[u8; 32]>::from(Sha256::digest(&data))));
            assert!(!h.changed);
        }
        // With the last chunk read, the file was checked against its manifest:
        // a modification time other than the file's is a change.
        let hash = Mutex::new(InOrderHash::new(m.size, Some(5)));
        for i in 0..m.chunk_count {
            read_chunk(&file, chunk(&m, i, i), Body::Plain(Compression::None), Some(&hash)).unwrap();
        }
        assert!(hash.into_inner().unwrap().changed);
        // The text half went compressed, the random half raw.
        let zstd = |i| read_chunk(&file, chunk(&m, i, i), Body::Plain(Compression::Zstd), None).unwrap().1;
        assert_eq!(zstd(0), 65_536);
        assert!(zstd(4) < 65_536 / 4);
    }

    #[test]
    fn a_chunk_past_the_end_is_an_error() {
        // A file that shrank while it was sent: its last chunk reaches past it.
        let (f, _) = file_of(1000);
        let file = f.reopen().unwrap();
        let c = ChunkRef { run: 1, seq: 0, index: 1, offset: 900, len: 200 };
        for compression in [Compression::None, Compression::Zstd] {
            let err = read_chunk(&file, c, Body::Plain(compression), None).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn a_sealed_chunk_is_read_and_encrypted_in_its_payload() {
        let (f, data) = file_of(3000);
        let file = f.reopen().unwrap();
        let cipher = ChunkCipher::new(&[3; 32]);
        // Wire chunks of 1016 bytes: 1000 of plaintext and the tag.
        let wire_chunk = 1000 + proto::sealed::TAG_LEN;
        for index in 0..3u32 {
            let c = ChunkRef { run: 2, seq: index, index, offset: u64::from(index * wire_chunk), len: 1016 };
            let (payload, wire) = read_chunk(&file, c, Body::Sealed { cipher: &cipher, wire_chunk }, None).unwrap();
            let mut sealed = Vec::new();
            cipher.seal(index, &data[index as usize * 1000..][..1000], &mut sealed);
            assert_eq!(payload, Chunk::encode(2, index, index, &sealed));
            assert_eq!(wire, 1016);
        }
    }
}
