//! Signed manifests: who sent a transfer, checked with Ed25519 (issue 12).
//!
//! The manifest carries the file's SHA-256, so a signature over the manifest
//! covers every byte of the file: a chunk changed on the way (with its CRC32
//! fixed up to match) makes the file fail the signed digest, and the receiver
//! discards it before it gets its final name.
//!
//! What is signed is [`SIGNATURE_CONTEXT`] followed by the manifest's own
//! encoding with the 64 signature bytes set to zero: the signer's key and the
//! creation time are inside what is signed, and since the wire decoder accepts
//! only the one encoding of each message, the bytes a receiver checks are the
//! bytes the sender signed.
//!
//! Replays: a captured transfer re-published later carries a valid signature.
//! [`check`] refuses a signature older than the receiver's maximum age (or from
//! the future past [`CLOCK_SKEW_MS`]); within that window the runtime refuses a
//! signature it has already seen complete.
//!
//! Pure computation: the caller passes the time and the keys it trusts.

use ed25519_dalek::Signer as _;
/// The key types, so that callers need not depend on `ed25519-dalek` themselves.
pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::wire::{Manifest, Signature};

/// The domain separation prefix of every signed message: a signature made for
/// anything else (another protocol, another version) never verifies here.
pub const SIGNATURE_CONTEXT: &[u8] = b"mqft manifest signature v3\0";

/// How far in the future a signature's creation time may be: clocks of sender and
/// receiver differ.
pub const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Why a manifest's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The manifest carries no signature.
    #[error("unsigned transfer")]
    Unsigned,
    /// Signed, by a key the receiver does not trust.
    #[error("signed by a key not trusted here")]
    UnknownKey,
    /// The signature does not verify: the manifest was changed after signing.
    #[error("bad signature: the manifest was changed after it was signed")]
    BadSignature,
    /// Signed longer ago than the receiver accepts: possibly a replay.
    #[error("signed {age_s} s ago, past the maximum age of {max_s} s")]
    TooOld {
        /// Seconds since the signature was made.
        age_s: i64,
        /// The receiver's maximum age.
        max_s: i64,
    },
    /// Signed in the future, past the allowed clock skew.
    #[error("signed {0} s in the future")]
    FromTheFuture(i64),
    /// Signed, but without the file's SHA-256: the signature would cover the
    /// name and not the bytes.
    #[error("signed without the file's SHA-256, so the signature does not cover its bytes")]
    NoDigest,
}

/// The bytes a manifest's signature covers: [`SIGNATURE_CONTEXT`], then the
/// manifest encoded with its signature's 64 bytes zeroed (the key and creation
/// time stay). For an unsigned manifest, its plain encoding after the context.
pub fn signed_bytes(m: &Manifest) -> Vec<u8> {
    let mut blank = m.clone();
    if let Some(s) = blank.signature.as_mut() {
        s.sig = [[0; 32]; 2];
    }
    let mut out = SIGNATURE_CONTEXT.to_vec();
    out.extend(blank.encode());
    out
}

/// Signs `m` with `key` as made at `created_ms` (milliseconds since the Unix
/// epoch), replacing any signature it had.
pub fn sign(m: &mut Manifest, key: &SigningKey, created_ms: i64) {
    m.signature = Some(Signature { created_ms, key: key.verifying_key().to_bytes(), sig: [[0; 32]; 2] });
    let sig = key.sign(&signed_bytes(m)).to_bytes();
    let (a, b) = sig.split_at(32);
    if let Some(s) = m.signature.as_mut() {
        // Both halves are 32 bytes of a 64-byte array.
        s.sig = [a.try_into().unwrap_or([0; 32]), b.try_into().unwrap_or([0; 32])];
    }
}

/// Checks that `m` is signed by one of `trusted`, validly, and within `max_age_ms`
/// of `now_ms`. Returns the signer's key.
pub fn check(m: &Manifest, trusted: &[[u8; 32]], now_ms: i64, max_age_ms: i64) -> Result<[u8; 32], TrustError> {
    let s = m.signature.as_ref().ok_or(TrustError::Unsigned)?;
    if m.sha256.is_none() {
        return Err(TrustError::NoDigest);
    }
    if !trusted.contains(&s.key) {
        return Err(TrustError::UnknownKey);
    }
    let key = VerifyingKey::from_bytes(&s.key).map_err(|_| TrustError::BadSignature)?;
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&s.sig[0]);
    bytes[32..].copy_from_slice(&s.sig[1]);
    let sig = ed25519_dalek::Signature::from_bytes(&bytes);
    // Strict: no small-order keys or non-canonical signatures, so that no second
    // valid signature can be made from a captured one.
    key.verify_strict(&signed_bytes(m), &sig).map_err(|_| TrustError::BadSignature)?;
    let age = now_ms.saturating_sub(s.created_ms);
    if age > max_age_ms {
        return Err(TrustError::TooOld { age_s: age / 1000, max_s: max_age_ms / 1000 });
    }
    if age < -CLOCK_SKEW_MS {
        return Err(TrustError::FromTheFuture(-age / 1000));
    }
    Ok(s.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Meta;

    const DAY: i64 = 86_400_000;

    fn manifest() -> Manifest {
        Manifest::new("cam.jpg".into(), 10, 4, Some([7; 32]), Meta::default(), 9).unwrap()
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_signed_manifest_round_trips_and_verifies() {
        let mut m = manifest();
        sign(&mut m, &key(1), 1_000);
        let back = Manifest::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        let pk = key(1).verifying_key().to_bytes();
        assert_eq!(check(&back, &[pk], 2_000, DAY), Ok(pk));
    }

    #[test]
    fn refusals() {
        let pk = key(1).verifying_key().to_bytes();
        assert_eq!(check(&manifest(), &[pk], 0, DAY), Err(TrustError::Unsigned));
        let mut m = manifest();
        sign(&mut m, &key(2), 0);
        assert_eq!(check(&m, &[pk], 0, DAY), Err(TrustError::UnknownKey));

        let mut m = manifest();
        sign(&mut m, &key(1), 0);
        // Every field is covered: the run, the metadata, the time, the hash.
        let mut run = m.clone();
        run.run += 1;
        let mut meta = m.clone();
        meta.meta.modified_ms = Some(1);
        let mut time = m.clone();
        time.signature.as_mut().unwrap().created_ms += 1;
        let mut sig = m.clone();
        sig.signature.as_mut().unwrap().sig[1][5] ^= 1;
        for lie in [run, meta, time, sig] {
            assert_eq!(check(&lie, &[pk], 0, DAY), Err(TrustError::BadSignature));
        }
        let other = Manifest::new("cam.jpg".into(), 10, 4, Some([8; 32]), Meta::default(), 9).unwrap();
        let forged = Manifest { signature: m.signature.clone(), ..other };
        assert_eq!(check(&forged, &[pk], 0, DAY), Err(TrustError::BadSignature));
        // Without the hash the signature would not cover the chunks.
        let mut bare = Manifest::new("cam.jpg".into(), 10, 4, None, Meta::default(), 9).unwrap();
        sign(&mut bare, &key(1), 0);
        assert_eq!(check(&bare, &[pk], 0, DAY), Err(TrustError::NoDigest));

        assert_eq!(check(&m, &[pk], DAY + 1, DAY), Err(TrustError::TooOld { age_s: 86_400, max_s: 86_400 }));
        assert_eq!(check(&m, &[pk], -CLOCK_SKEW_MS - 1000, DAY), Err(TrustError::FromTheFuture(301)));
        assert_eq!(check(&m, &[pk], -CLOCK_SKEW_MS, DAY), Ok(pk));
    }

    /// The context keeps a signature over the same bytes made for something else
    /// from verifying.
    #[test]
    fn the_context_is_part_of_what_is_signed() {
        let mut m = manifest();
        sign(&mut m, &key(1), 0);
        let plain = signed_bytes(&m)[SIGNATURE_CONTEXT.len()..].to_vec();
        let bare = key(1).sign(&plain).to_bytes();
        let s = m.signature.as_mut().unwrap();
        s.sig = [bare[..32].try_into().unwrap(), bare[32..].try_into().unwrap()];
        let pk = key(1).verifying_key().to_bytes();
        assert_eq!(check(&m, &[pk], 0, DAY), Err(TrustError::BadSignature));
    }
}
