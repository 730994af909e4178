//! Encrypted transfers in the runtime: the sender's pass that encrypts the file
//! once to learn the SHA-256 of what will travel, the chunk transform on the
//! way out, and the receiver's in-place decryption before the final rename.
//! The construction itself is [`proto::sealed`].
//!
//! The receiver's `.part` holds ciphertext while chunks arrive (the protocol's
//! CRC32s, resume proofs and hash check all work on what travelled). Once that
//! checks out, the file is decrypted in place, chunk by chunk in index order:
//! chunk `i`'s plaintext goes to `i * chunk_size`, which is never past where its
//! ciphertext was (`i * (chunk_size + 16)`), so no chunk is overwritten before it
//! is read. Then the file is cut to the plaintext's size and its real SHA-256
//! checked. The same file, the same inode: the rename's checks still hold.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

use sha2::{Digest as _, Sha256};

use crate::keys::PublicKey;
use crate::proto::sealed::{self, ChunkCipher, Opened};
use crate::proto::Manifest;

/// Encrypts `plain` (whose chunk size is the wire's, already settled) for
/// `recipients`: returns the manifest to publish and the chunk cipher. Reads
/// and encrypts the whole file once, hashing the plaintext for the encrypted
/// description and the ciphertext for the manifest in the same pass. Blocks.
pub(crate) fn seal_file(
    file: &File,
    plain: &Manifest,
    recipients: &[PublicKey],
) -> io::Result<(Manifest, ChunkCipher)> {
    let bad = |e: sealed::SealError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
    let chunk = sealed::plain_chunk_size(plain.chunk_size)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "chunks too small to encrypt"))?;
    // The tag takes 16 bytes of each chunk, so that an encrypted chunk is as
    // large as the settled size (which fits the broker's limit).
    let plain = Manifest::new(plain.name.clone(), plain.size, chunk, plain.sha256, plain.meta.clone(), plain.run)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let file_key: [u8; 32] = rand::random();
    let cipher = ChunkCipher::new(&file_key);
    let mut hasher = Sha256::new();
    let mut plain_hasher = Sha256::new();
    let mut data = vec![0u8; chunk as usize];
    let mut out = Vec::with_capacity(chunk as usize + sealed::TAG_LEN as usize);
    for i in 0..plain.chunk_count {
        let len = plain.chunk_len(i) as usize;
        file.read_exact_at(&mut data[..len], plain.chunk_offset(i))?;
        plain_hasher.update(&data[..len]);
        out.clear();
        cipher.seal(i, &data[..len], &mut out);
        hasher.update(&out);
    }
    let plain_sha: [u8; 32] = plain_hasher.finalize().into();
    if plain.sha256.is_some_and(|known| known != plain_sha) {
        return Err(io::Error::other("the file changed while it was being encrypted"));
    }
    let plain = plain.with_digest(plain_sha);
    let keys: Vec<[u8; 32]> = recipients.iter().map(|k| k.key).collect();
    let ephemeral: Vec<[u8; 32]> = keys.iter().map(|_| rand::random()).collect();
    let outer = sealed::seal(&plain, &keys, &file_key, &ephemeral, hasher.finalize().into()).map_err(bad)?;
    Ok((outer, cipher))
}

/// Chunk `index` of a sealed transfer, read from the plaintext `file` into
/// `buf` and encrypted there: `buf` is as long as the chunk on the wire, the
/// plaintext and room for its tag, and is the slice of the payload after the
/// header ([`crate::proto::ChunkRef::encode_from`]), so the chunk is read once and
/// never copied. Blocks.
pub(crate) fn read_sealed_into(
    file: &File,
    cipher: &ChunkCipher,
    wire_chunk: u32,
    index: u32,
    buf: &mut [u8],
) -> io::Result<()> {
    let plain_chunk = u64::from(wire_chunk - sealed::TAG_LEN);
    let len = buf.len().checked_sub(sealed::TAG_LEN as usize).ok_or_else(|| io::Error::other("short chunk"))?;
    file.read_exact_at(&mut buf[..len], u64::from(index) * plain_chunk)?;
    cipher.seal_in_place(index, buf).map_err(io::Error::other)
}

/// What the writer needs to decrypt a verified `.part` in place.
#[derive(Debug, Clone)]
pub(crate) struct Unseal {
    pub opened: std::sync::Arc<Opened>,
    /// The wire manifest's chunk size, size and count.
    pub wire_chunk: u32,
    pub wire_size: u64,
    pub count: u32,
}

/// Decrypts the verified ciphertext in `file` in place and checks the real
/// SHA-256. Blocks.
pub(crate) fn unseal_in_place(file: &File, u: &Unseal) -> io::Result<()> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let plain_chunk = u64::from(u.opened.inner.chunk_size);
    let wire_chunk = u64::from(u.wire_chunk);
    let mut buf = vec![0u8; u.wire_chunk as usize];
    let mut hasher = Sha256::new();
    for i in 0..u.count {
        let at = u64::from(i) * wire_chunk;
        let len = u.wire_size.saturating_sub(at).min(wire_chunk) as usize;
        file.read_exact_at(&mut buf[..len], at)?;
        let n = u.opened.cipher.open(i, &mut buf[..len]).map_err(|e| invalid(e.to_string()))?;
        hasher.update(&buf[..n]);
        file.write_all_at(&buf[..n], u64::from(i) * plain_chunk)?;
    }
    file.set_len(u.opened.inner.size)?;
    if <[u8; 32]>::from(hasher.finalize()) != u.opened.inner.sha256 {
        return Err(invalid("the decrypted file does not match its encrypted sha-256".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::keys::SecretKey;

    /// A file sealed chunk by chunk and written as a receiver stores it, then
    /// decrypted in place: the plaintext, cut to its size. A flipped byte fails.
    #[test]
    fn a_verified_part_is_decrypted_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let src = dir.path().join("src");
        std::fs::write(&src, &data).unwrap();
        let key = SecretKey::generate();
        let sha = crate::proto::integrity::sha256(&data);
        let plain = Manifest::new("f".into(), data.len() as u64, 1016, Some(sha), Default::default(), 1).unwrap();
        let (outer, cipher) = seal_file(&File::open(&src).unwrap(), &plain, &[key.public()]).unwrap();
        assert_eq!(outer.chunk_size, 1016);
        let opened = std::sync::Arc::new(sealed::open(&outer, key.signing_key()).unwrap());
        let part_path = dir.path().join("part");
        let mut part = File::create(&part_path).unwrap();
        for i in 0..outer.chunk_count {
            let mut c = vec![0; outer.chunk_len(i) as usize];
            read_sealed_into(&File::open(&src).unwrap(), &cipher, outer.chunk_size, i, &mut c).unwrap();
            part.write_all(&c).unwrap();
        }
        drop(part);
        let u = Unseal { opened, wire_chunk: outer.chunk_size, wire_size: outer.size, count: outer.chunk_count };
        let bad = dir.path().join("bad");
        std::fs::copy(&part_path, &bad).unwrap();
        let rw = |p: &std::path::Path| std::fs::OpenOptions::new().read(true).write(true).open(p).unwrap();
        unseal_in_place(&rw(&part_path), &u).unwrap();
        assert_eq!(std::fs::read(&part_path).unwrap(), data);

        rw(&bad).write_all_at(&[0xff], 5000).unwrap();
        let err = unseal_in_place(&rw(&bad), &u).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}
