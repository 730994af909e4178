//! Encrypted transfers: only the recipients read the file, its name or its
//! metadata (issue 12). The construction is age's, on the keys `mqft keygen`
//! makes:
//!
//! - the sender draws a random 32-byte **file key** per transfer;
//! - for each recipient it draws an ephemeral key, agrees an X25519 secret with
//!   the recipient's key (an Ed25519 key's Montgomery form, the well-known
//!   birational map) and wraps the file key with ChaCha20-Poly1305 under
//!   HKDF-SHA-256(salt = ephemeral public || recipient public, ikm = the shared
//!   secret, info = [`WRAP_INFO`]);
//! - the real name, size, chunk size, SHA-256 and metadata ([`Inner`]) are
//!   encrypted under a key derived from the file key ([`BODY_INFO`]);
//! - each chunk is encrypted under another derived key ([`CHUNK_INFO`]) with its
//!   index in the nonce: a chunk moved to another index, or taken from another
//!   transfer (another file key), fails its tag. It grows by the 16-byte tag.
//!
//! The manifest on the wire then describes the ciphertext: name [`SEALED_NAME`],
//! chunks of `chunk_size + 16` bytes, `size + 16 * chunk_count` bytes, and the
//! SHA-256 of the concatenated encrypted chunks, so the protocol's CRC32s and
//! hash check work on what travels, unchanged. A receiver decrypts once the
//! ciphertext checked out, and checks the real SHA-256 of the plaintext.
//!
//! Pure computation: the caller brings the randomness.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::wire::{DecodeError, Manifest, Meta, Recipient, Sealed, MAX_NAME_LEN};

/// What an encrypted chunk adds to its plaintext: the Poly1305 tag.
pub const TAG_LEN: u32 = 16;
/// The name an encrypted manifest shows on the wire.
pub const SEALED_NAME: &str = "sealed";
/// HKDF info of the key that wraps a file key.
pub const WRAP_INFO: &[u8] = b"mqft file key wrap v3";
/// HKDF info of the key of the encrypted description.
pub const BODY_INFO: &[u8] = b"mqft manifest body v3";
/// HKDF info of the chunk key.
pub const CHUNK_INFO: &[u8] = b"mqft chunks v3";

/// Why an encrypted transfer cannot be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// A recipient's key is not a valid Ed25519 public key.
    #[error("bad recipient key")]
    BadRecipient,
    /// None of the wrapped keys opens with this identity.
    #[error("encrypted for other recipients")]
    NotForUs,
    /// The encrypted description does not open or does not describe the ciphertext.
    #[error("the encrypted description is invalid")]
    BadBody,
    /// A chunk fails its tag.
    #[error("chunk {0} fails its authentication tag")]
    BadChunk(u32),
    /// The manifest is not encrypted.
    #[error("not encrypted")]
    NotSealed,
    /// The file cannot be described (too many chunks for the size...).
    #[error(transparent)]
    Manifest(#[from] DecodeError),
}

/// What the encrypted description holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inner {
    /// The file name as the sender has it: untrusted, to be sanitized.
    pub name: String,
    /// The plaintext's size in bytes.
    pub size: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// SHA-256 of the plaintext file.
    pub sha256: [u8; 32],
    /// Its metadata.
    pub meta: Meta,
}

/// The chunk cipher of one transfer.
#[derive(Clone)]
pub struct ChunkCipher(ChaCha20Poly1305);

impl std::fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkCipher")
    }
}

impl ChunkCipher {
    /// The chunk cipher of the transfer whose file key is `file_key`.
    pub fn new(file_key: &[u8; 32]) -> Self {
        ChunkCipher(aead(&derive(file_key, CHUNK_INFO)))
    }

    /// Appends chunk `index`'s plaintext `data`, encrypted, and its tag to `out`.
    pub fn seal(&self, index: u32, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(data);
        out.resize(out.len() + TAG_LEN as usize, 0);
        // Fails only without room for the tag, which was just made, or past the
        // cipher's limit (see `seal_in_place`); the tag's bytes stay 0 then,
        // and the chunk fails at its receiver.
        let _ = self.seal_in_place(index, &mut out[start..]);
    }

    /// Encrypts chunk `index` in place: `buf` is the plaintext followed by
    /// [`TAG_LEN`] bytes of room, which get the tag. The same bytes as
    /// [`ChunkCipher::seal`], without a buffer of its own: a sender reads the
    /// plaintext straight into its payload and seals it there.
    pub fn seal_in_place(&self, index: u32, buf: &mut [u8]) -> Result<(), SealError> {
        let len = buf.len().checked_sub(TAG_LEN as usize).ok_or(SealError::BadChunk(index))?;
        let (msg, room) = buf.split_at_mut(len);
        // ChaCha20-Poly1305 fails only past 256 GiB in one message; chunks are
        // at most 16 MiB.
        let tag = self
            .0
            .encrypt_inout_detached(&chunk_nonce(index), &[], msg.into())
            .map_err(|_| SealError::BadChunk(index))?;
        room.copy_from_slice(&tag);
        Ok(())
    }

    /// Decrypts chunk `index` in place: `buf` is ciphertext and tag; on success
    /// its first `len - 16` bytes are the plaintext, and that length is returned.
    pub fn open(&self, index: u32, buf: &mut [u8]) -> Result<usize, SealError> {
        let len = buf.len().checked_sub(TAG_LEN as usize).ok_or(SealError::BadChunk(index))?;
        let (msg, tag) = buf.split_at_mut(len);
        let tag = Tag::try_from(&*tag).map_err(|_| SealError::BadChunk(index))?;
        self.0
            .decrypt_inout_detached(&chunk_nonce(index), &[], msg.into(), &tag)
            .map_err(|_| SealError::BadChunk(index))?;
        Ok(len)
    }
}

/// A sealed transfer opened with the recipient's key.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The real description of the file.
    pub inner: Inner,
    /// The chunk cipher.
    pub cipher: ChunkCipher,
}

/// The encrypted manifest of `plain` (the file as it is, chunks of
/// `plain.chunk_size`) for `recipients` (Ed25519 public keys), with `file_key`
/// and one ephemeral seed per recipient (fresh randomness, both), given the
/// SHA-256 of the encrypted chunks in order ([`ChunkCipher::seal`]).
pub fn seal(
    plain: &Manifest,
    recipients: &[[u8; 32]],
    file_key: &[u8; 32],
    ephemeral: &[[u8; 32]],
    cipher_sha256: [u8; 32],
) -> Result<Manifest, SealError> {
    let mut wrapped = Vec::with_capacity(recipients.len());
    for (pk, seed) in recipients.iter().zip(ephemeral) {
        let their = VerifyingKey::from_bytes(pk).map_err(|_| SealError::BadRecipient)?.to_montgomery();
        let eph = SigningKey::from_bytes(seed);
        let epk = eph.verifying_key().to_montgomery();
        let shared = their.mul_clamped(eph.to_scalar_bytes());
        let wrap = aead(&wrap_key(&epk, &their, &shared));
        let mut key = *file_key;
        let tag = wrap
            .encrypt_inout_detached(&Nonce::default(), &[], (&mut key[..]).into())
            .map_err(|_| SealError::BadRecipient)?;
        let mut t = [0u8; 16];
        t.copy_from_slice(&tag);
        wrapped.push(Recipient { epk: epk.to_bytes(), wrapped: key, tag: t });
    }
    let inner = Inner {
        name: plain.name.clone(),
        size: plain.size,
        chunk_size: plain.chunk_size,
        // The receiver checks the plaintext against it: an encrypted sender reads
        // the file before it publishes.
        sha256: plain.sha256.ok_or(SealError::BadBody)?,
        meta: plain.meta.clone(),
    };
    // A Vec is always large enough for postcard.
    let mut body = postcard::to_allocvec(&inner).map_err(|_| SealError::BadBody)?;
    let tag = aead(&derive(file_key, BODY_INFO))
        .encrypt_inout_detached(&Nonce::default(), &[], (&mut body[..]).into())
        .map_err(|_| SealError::BadBody)?;
    body.extend_from_slice(&tag);
    let count = u64::from(plain.chunk_count);
    let mut outer = Manifest::new(
        SEALED_NAME.into(),
        plain.size + count * u64::from(TAG_LEN),
        plain.chunk_size.checked_add(TAG_LEN).ok_or(DecodeError::BadChunkSize)?,
        Some(cipher_sha256),
        Meta::default(),
        plain.run,
    )?;
    outer.sealed = Some(Sealed { recipients: wrapped, body });
    // Bound to the ciphertext's digest, now that it is sealed.
    outer.id = outer.derived_id();
    Ok(outer)
}

/// Opens an encrypted manifest with `identity`: unwraps the file key and
/// decrypts and checks the description against the ciphertext's.
pub fn open(outer: &Manifest, identity: &SigningKey) -> Result<Opened, SealError> {
    let sealed = outer.sealed.as_ref().ok_or(SealError::NotSealed)?;
    let ours = identity.verifying_key().to_montgomery();
    let scalar = identity.to_scalar_bytes();
    let file_key = sealed
        .recipients
        .iter()
        .find_map(|r| {
            let epk = MontgomeryPoint(r.epk);
            let shared = epk.mul_clamped(scalar);
            let mut key = r.wrapped;
            let tag = Tag::from(r.tag);
            aead(&wrap_key(&epk, &ours, &shared))
                .decrypt_inout_detached(&Nonce::default(), &[], (&mut key[..]).into(), &tag)
                .ok()
                .map(|()| key)
        })
        .ok_or(SealError::NotForUs)?;
    let mut body = sealed.body.clone();
    let len = body.len().checked_sub(TAG_LEN as usize).ok_or(SealError::BadBody)?;
    let (msg, tag) = body.split_at_mut(len);
    let tag = Tag::try_from(&*tag).map_err(|_| SealError::BadBody)?;
    aead(&derive(&file_key, BODY_INFO))
        .decrypt_inout_detached(&Nonce::default(), &[], msg.into(), &tag)
        .map_err(|_| SealError::BadBody)?;
    let (inner, rest): (Inner, _) = postcard::take_from_bytes(msg).map_err(|_| SealError::BadBody)?;
    if !rest.is_empty() || inner.name.is_empty() || inner.name.len() > MAX_NAME_LEN || inner.meta.check().is_err() {
        return Err(SealError::BadBody);
    }
    // The description must be the ciphertext's: the same chunks, each 16 longer.
    let count = u64::from(outer.chunk_count);
    let consistent = inner.chunk_size > 0
        && inner.chunk_size.checked_add(TAG_LEN) == Some(outer.chunk_size)
        && inner.size.div_ceil(u64::from(inner.chunk_size)) == count
        && inner.size.checked_add(count * u64::from(TAG_LEN)) == Some(outer.size);
    if !consistent {
        return Err(SealError::BadBody);
    }
    Ok(Opened { inner, cipher: ChunkCipher::new(&file_key) })
}

/// The plaintext chunk size a sealed transfer of wire chunks of `chunk_size`
/// uses, or `None` if that leaves no room.
pub fn plain_chunk_size(chunk_size: u32) -> Option<u32> {
    chunk_size.checked_sub(TAG_LEN).filter(|&c| c > 0)
}

fn aead(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&(*key).into())
}

fn derive(file_key: &[u8; 32], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA-256's limit of 8160.
    let _ = Hkdf::<Sha256>::new(None, file_key).expand(info, &mut out);
    out
}

fn wrap_key(epk: &MontgomeryPoint, recipient: &MontgomeryPoint, shared: &MontgomeryPoint) -> [u8; 32] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(epk.as_bytes());
    salt[32..].copy_from_slice(recipient.as_bytes());
    let mut out = [0u8; 32];
    let _ = Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes()).expand(WRAP_INFO, &mut out);
    out
}

/// Chunk `index`'s nonce: the index, little-endian, in the first four bytes.
fn chunk_nonce(index: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&index.to_le_bytes());
    n.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity;

    fn sealed_for(keys: &[&SigningKey], data: &[u8], chunk: u32) -> (Manifest, [u8; 32]) {
        let meta = Meta { modified_ms: Some(5), ..Meta::default() };
        let plain =
            Manifest::new("secret plans.pdf".into(), data.len() as u64, chunk, Some(integrity::sha256(data)), meta, 7)
                .unwrap();
        let file_key = [9u8; 32];
        let cipher = ChunkCipher::new(&file_key);
        let mut stream = Vec::new();
        for i in 0..plain.chunk_count {
            let start = plain.chunk_offset(i) as usize;
            cipher.seal(i, &data[start..start + plain.chunk_len(i) as usize], &mut stream);
        }
        let pks: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        let eph: Vec<[u8; 32]> = (0..keys.len()).map(|i| [i as u8 + 100; 32]).collect();
        let outer = seal(&plain, &pks, &file_key, &eph, integrity::sha256(&stream)).unwrap();
        (outer, file_key)
    }

    #[test]
    fn a_recipient_opens_what_was_sealed_and_others_do_not() {
        let (a, b, c) =
            (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]), SigningKey::from_bytes(&[3; 32]));
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let (outer, _) = sealed_for(&[&a, &b], &data, 300);
        let back = Manifest::decode(&outer.encode()).unwrap();
        assert_eq!(back, outer);
        assert_eq!(outer.name, SEALED_NAME);
        assert_eq!((outer.chunk_size, outer.chunk_count, outer.size), (316, 4, 1064));
        assert_eq!(outer.meta, Meta::default());
        for k in [&a, &b] {
            let o = open(&back, k).unwrap();
            assert_eq!(o.inner.name, "secret plans.pdf");
            assert_eq!(o.inner.sha256, integrity::sha256(&data));
            assert_eq!(o.inner.meta.modified_ms, Some(5));
        }
        assert_eq!(open(&back, &c).unwrap_err(), SealError::NotForUs);
        // The name appears nowhere in the encoding.
        let enc = outer.encode();
        assert!(!enc.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn chunks_are_bound_to_their_index_and_untouched() {
        let c = ChunkCipher::new(&[4; 32]);
        let mut out = Vec::new();
        c.seal(3, b"hello world", &mut out);
        assert_eq!(out.len(), 11 + 16);
        let mut ok = out.clone();
        assert_eq!(c.open(3, &mut ok), Ok(11));
        assert_eq!(&ok[..11], b"hello world");
        let mut moved = out.clone();
        assert_eq!(c.open(4, &mut moved), Err(SealError::BadChunk(4)));
        let mut flipped = out.clone();
        flipped[2] ^= 1;
        assert_eq!(c.open(3, &mut flipped), Err(SealError::BadChunk(3)));
        let mut other = out.clone();
        assert!(ChunkCipher::new(&[5; 32]).open(3, &mut other).is_err());
        assert_eq!(c.open(0, &mut [0u8; 5]), Err(SealError::BadChunk(0)));
    }

    #[test]
    fn a_chunk_sealed_in_place_is_the_sealed_chunk() {
        let c = ChunkCipher::new(&[4; 32]);
        for data in [&b""[..], b"x", b"hello world", &[7u8; 4096][..]] {
            let mut expected = Vec::new();
            c.seal(9, data, &mut expected);
            let mut buf = data.to_vec();
            buf.extend([0xee; TAG_LEN as usize]);
            c.seal_in_place(9, &mut buf).unwrap();
            assert_eq!(buf, expected);
            assert_eq!(c.open(9, &mut buf), Ok(data.len()));
            assert_eq!(&buf[..data.len()], data);
        }
        // No room for the tag: refused, not a panic.
        assert_eq!(c.seal_in_place(1, &mut [0u8; 15]), Err(SealError::BadChunk(1)));
    }

    #[test]
    fn a_changed_description_or_key_does_not_open() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let (outer, _) = sealed_for(&[&a], b"abcdefgh", 3);
        let mut body = outer.clone();
        body.sealed.as_mut().unwrap().body[0] ^= 1;
        assert_eq!(open(&body, &a).unwrap_err(), SealError::BadBody);
        let mut wrapped = outer.clone();
        wrapped.sealed.as_mut().unwrap().recipients[0].wrapped[0] ^= 1;
        assert_eq!(open(&wrapped, &a).unwrap_err(), SealError::NotForUs);
        // A description that does not match the ciphertext's chunking.
        let mut lie =
            Manifest::new(SEALED_NAME.into(), outer.size + 1, outer.chunk_size, Some([0; 32]), Meta::default(), 7)
                .unwrap();
        lie.sealed = outer.sealed.clone();
        assert_eq!(open(&lie, &a).unwrap_err(), SealError::BadBody);
        let too_many =
            Sealed { recipients: vec![outer.sealed.as_ref().unwrap().recipients[0].clone(); 33], body: vec![] };
        let mut big = outer.clone();
        big.sealed = Some(too_many);
        assert_eq!(Manifest::decode(&big.encode()), Err(DecodeError::BadMeta));
    }
}
