//! The manifest: what a transfer is ([`Manifest`]), and its metadata, signature and
//! sealed (encrypted) parts.

use super::*;

/// Optional information about the file, bounded by the `MAX_*` constants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// A MIME type such as `image/jpeg`.
    pub content_type: Option<String>,
    /// Modification time in milliseconds since the Unix epoch.
    pub modified_ms: Option<i64>,
    /// A small user key/value map, in the sender's order.
    pub user: Vec<(String, String)>,
}

impl Meta {
    pub(crate) fn check(&self) -> Result<(), DecodeError> {
        let ct_ok = self.content_type.as_ref().is_none_or(|c| c.len() <= MAX_CONTENT_TYPE_LEN);
        let user_ok = self.user.len() <= MAX_USER_ENTRIES
            && self.user.iter().all(|(k, v)| k.len() <= MAX_USER_KEY_LEN && v.len() <= MAX_USER_VALUE_LEN);
        if ct_ok && user_ok {
            Ok(())
        } else {
            Err(DecodeError::BadMeta)
        }
    }
}

/// What the file is: published (retained) on `<prefix>/<id>/manifest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The transfer id; must equal [`integrity::transfer_id`] of the fields below.
    pub id: TransferId,
    /// The sender's run: a number the sender picks at each start, echoed in acks so
    /// that a restarted sender is told apart from its earlier self.
    pub run: u32,
    /// The file name as the sender has it: untrusted, to be sanitized by receivers.
    pub name: String,
    /// File size in bytes, or [`UNKNOWN_SIZE`] in an open stream's manifest
    /// ([`Manifest::is_open`]).
    pub size: u64,
    /// Bytes per chunk; every chunk but the last is exactly this long.
    pub chunk_size: u32,
    /// `ceil(size / chunk_size)`; 0 for an empty file; [`MAX_CHUNK_COUNT`], a
    /// bound, in an open stream's manifest.
    pub chunk_count: u32,
    /// SHA-256 of the whole file, when the sender knew it as it published the
    /// manifest (a signed, encrypted or held transfer, or a re-publication after
    /// the sender read the file); otherwise it arrives with the end of round
    /// ([`crate::wire::Ctl::EndRound`]). Not part of the transfer id.
    pub sha256: Option<[u8; 32]>,
    /// Optional metadata.
    pub meta: Meta,
    /// The receivers this transfer is for, by id ([`crate::ReceiverId`] rules, at
    /// most [`MAX_TO`]); empty for anyone. A receiver not listed ignores the
    /// transfer without a word. Not part of the transfer id: the same file sent to
    /// others is the same transfer.
    pub to: Vec<String>,
    /// Who sent it: a name of `[0-9a-z_-]`, at most [`MAX_SENDER_LEN`] bytes (the
    /// receiver-id alphabet, so that it is safe as a directory name and in a
    /// log), or empty for an unnamed sender. Claimed, not proven: it is not part
    /// of the transfer id, and any sender may use any name. Set it after
    /// [`Manifest::new`] (or with [`Manifest::with_sender`]).
    pub sender: String,
    /// The sender's signature over everything above (version 3; see
    /// [`crate::trust`]), or `None` for an unsigned transfer.
    pub signature: Option<Signature>,
    /// For an encrypted transfer (version 3; see [`crate::sealed`]): the file key
    /// wrapped for each recipient, and the real name, size, chunking, hash and
    /// metadata, encrypted. The fields above then describe the ciphertext.
    pub sealed: Option<Sealed>,
    /// For a transfer held at the broker for receivers that come online later
    /// (`mqft send --hold`; PROTOCOL.md 17): until when, in milliseconds since the
    /// Unix epoch. The manifest and every chunk are then retained and expire at the
    /// broker then; a receiver fetches them from the broker alone and does not give
    /// up on the silent sender before this time. `None` for a live transfer. Signed
    /// with the rest when the manifest is.
    pub hold_until_ms: Option<i64>,
    /// A stream (version 6, `mqft send -`): its size was not known when the
    /// transfer began. Its id derives from the name, chunk size and run instead of
    /// the size ([`integrity::stream_id`]), so the manifest stays the same
    /// transfer when the size becomes known: an open manifest ([`UNKNOWN_SIZE`])
    /// is closed by the end of round that carries the size, or by the same
    /// manifest published again with it. Never signed, encrypted or held: those
    /// need the hash before the first chunk.
    pub stream: bool,
}

/// The size of an open stream, one whose end the sender has not read yet.
pub const UNKNOWN_SIZE: u64 = u64::MAX;

/// The most recipients an encrypted manifest names.
pub const MAX_RECIPIENTS: usize = 32;

/// The encrypted part of a manifest: see [`crate::sealed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// One entry per recipient, 1 to [`MAX_RECIPIENTS`].
    pub recipients: Vec<Recipient>,
    /// The encrypted description of the file, with its 16-byte tag at the end.
    pub body: Vec<u8>,
}

/// The file key, wrapped for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The sender's ephemeral X25519 public key for this recipient.
    pub epk: [u8; 32],
    /// The 32-byte file key, encrypted.
    pub wrapped: [u8; 32],
    /// Its authentication tag.
    pub tag: [u8; 16],
}

/// An Ed25519 signature over a manifest: who signed it, when, and the signature
/// itself over [`crate::trust::signed_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// When the sender signed, in milliseconds since the Unix epoch: bounds how long
    /// a captured transfer can be replayed (the receiver's `--max-age`).
    pub created_ms: i64,
    /// The signer's Ed25519 public key.
    pub key: [u8; 32],
    /// The 64-byte Ed25519 signature, as two halves (serde's arrays stop at 32).
    pub sig: [[u8; 32]; 2],
}

impl serde::Serialize for TransferId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for TransferId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 16]>::deserialize(d).map(TransferId)
    }
}

impl Manifest {
    /// Builds the manifest of a file, deriving its chunk count and transfer id.
    pub fn new(
        name: String,
        size: u64,
        chunk_size: u32,
        sha256: Option<[u8; 32]>,
        meta: Meta,
        run: u32,
    ) -> Result<Self, DecodeError> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(DecodeError::BadChunkSize);
        }
        let count = size.div_ceil(u64::from(chunk_size));
        let chunk_count =
            u32::try_from(count).ok().filter(|&c| c <= MAX_CHUNK_COUNT).ok_or(DecodeError::BadChunkCount)?;
        let id = integrity::transfer_id(size, chunk_size, meta.modified_ms, &name, None);
        let m = Manifest {
            id,
            run,
            name,
            size,
            chunk_size,
            chunk_count,
            sha256,
            meta,
            to: Vec::new(),
            sender: String::new(),
            signature: None,
            sealed: None,
            hold_until_ms: None,
            stream: false,
        };
        m.check()?;
        Ok(m)
    }

    /// Builds the open manifest of a stream whose size is not known yet
    /// ([`Manifest::stream`]): the sender closes it with [`Manifest::close`] once
    /// it has read the end.
    pub fn new_stream(name: String, chunk_size: u32, meta: Meta, run: u32) -> Result<Self, DecodeError> {
        let mut m = Manifest::new(name, 0, chunk_size, None, meta, run)?;
        m.size = UNKNOWN_SIZE;
        m.chunk_count = MAX_CHUNK_COUNT;
        m.stream = true;
        m.id = m.derived_id();
        m.check()?;
        Ok(m)
    }

    /// True for a stream whose size is not known yet: `size` is [`UNKNOWN_SIZE`]
    /// and `chunk_count` the bound [`MAX_CHUNK_COUNT`]. Every chunk but the last
    /// is `chunk_size` long; the last may be shorter.
    pub fn is_open(&self) -> bool {
        self.size == UNKNOWN_SIZE
    }

    /// The open stream's manifest with its size now known: the same transfer
    /// ([`Manifest::same_transfer`]), with the real size and chunk count. An
    /// error for a size past [`MAX_CHUNK_COUNT`] chunks, or a manifest that is
    /// not an open stream's.
    pub fn close(&self, size: u64) -> Result<Self, DecodeError> {
        if !self.is_open() || size == UNKNOWN_SIZE {
            return Err(DecodeError::BadChunkCount);
        }
        let count = size.div_ceil(u64::from(self.chunk_size));
        let chunk_count =
            u32::try_from(count).ok().filter(|&c| c <= MAX_CHUNK_COUNT).ok_or(DecodeError::BadChunkCount)?;
        let m = Manifest { size, chunk_count, ..self.clone() };
        m.check()?;
        Ok(m)
    }

    /// The manifest with its sender name set, checked like a decoded one's.
    pub fn with_sender(mut self, sender: &str) -> Result<Self, DecodeError> {
        if !is_sender_name(sender) {
            return Err(DecodeError::BadSender);
        }
        self.sender = sender.to_owned();
        Ok(self)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if let Some(s) = &self.sealed {
            if s.recipients.is_empty() || s.recipients.len() > MAX_RECIPIENTS {
                return Err(DecodeError::BadMeta);
            }
            if self.sha256.is_none() {
                return Err(DecodeError::SealedWithoutDigest);
            }
        }
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(DecodeError::BadName);
        }
        if !is_sender_name(&self.sender) {
            return Err(DecodeError::BadSender);
        }
        if self.hold_until_ms.is_some() && self.sha256.is_none() {
            return Err(DecodeError::HeldWithoutDigest);
        }
        self.meta.check()?;
        if self.to.len() > MAX_TO || !self.to.iter().all(|r| crate::ReceiverId::new(r).is_ok()) {
            return Err(DecodeError::BadTo);
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(DecodeError::BadChunkSize);
        }
        if self.stream && (self.signature.is_some() || self.sealed.is_some() || self.hold_until_ms.is_some()) {
            return Err(DecodeError::BadStream);
        }
        if self.is_open() {
            // What an open stream's chunks may reach; no hash before its end.
            if !self.stream || self.chunk_count != MAX_CHUNK_COUNT || self.sha256.is_some() {
                return Err(DecodeError::BadStream);
            }
        } else if self.chunk_count > MAX_CHUNK_COUNT
            || u64::from(self.chunk_count) != self.size.div_ceil(u64::from(self.chunk_size))
        {
            return Err(DecodeError::BadChunkCount);
        }
        if self.id != self.derived_id() {
            return Err(DecodeError::IdMismatch);
        }
        Ok(())
    }

    /// The id this manifest's fields give ([`integrity::transfer_id`]); an
    /// encrypted transfer's is bound to its ciphertext's digest, and a stream's
    /// to its run rather than its size ([`integrity::stream_id`]).
    pub fn derived_id(&self) -> TransferId {
        if self.stream {
            return integrity::stream_id(self.chunk_size, self.meta.modified_ms, &self.name, self.run);
        }
        let bound = self.sealed.as_ref().and(self.sha256.as_ref());
        integrity::transfer_id(self.size, self.chunk_size, self.meta.modified_ms, &self.name, bound)
    }

    /// The manifest addressed to these receivers only (see [`Manifest::to`]).
    pub fn with_to(mut self, to: impl IntoIterator<Item = crate::ReceiverId>) -> Result<Self, DecodeError> {
        self.to = to.into_iter().map(|r| r.as_str().to_owned()).collect();
        self.check()?;
        Ok(self)
    }

    /// True for a transfer held at the broker ([`Manifest::hold_until_ms`]).
    pub fn is_held(&self) -> bool {
        self.hold_until_ms.is_some()
    }

    /// True when receiver `rid` may take this transfer: it is listed in
    /// [`Manifest::to`], or the list is empty.
    pub fn is_for(&self, rid: &crate::ReceiverId) -> bool {
        self.to.is_empty() || self.to.iter().any(|r| r == rid.as_str())
    }

    /// Encodes the manifest payload.
    pub fn encode(&self) -> Vec<u8> {
        seal(self)
    }

    /// Decodes and checks a manifest payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let m: Manifest = take_all(open(payload, MAX_MANIFEST_LEN)?)?;
        m.check()?;
        Ok(m)
    }

    /// The length of chunk `index`: `chunk_size`, except for a shorter last chunk
    /// (in an open stream, not known yet: `chunk_size` for every chunk).
    pub fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * u64::from(self.chunk_size);
        self.size.saturating_sub(start).min(u64::from(self.chunk_size))
    }

    /// The byte offset of chunk `index` in the file.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// True when `other` describes the same transfer: the same id, name, size,
    /// modification time and chunking, and no two different hashes. The run and the
    /// rest of the metadata may differ, and one may carry the hash that the other
    /// did not know yet; of a stream, one may be open and the other closed.
    pub fn same_transfer(&self, other: &Manifest) -> bool {
        let sized = self.stream && other.stream && (self.is_open() || other.is_open())
            || self.size == other.size && self.chunk_count == other.chunk_count;
        self.id == other.id
            && self.name == other.name
            && self.stream == other.stream
            && sized
            && self.meta.modified_ms == other.meta.modified_ms
            && self.chunk_size == other.chunk_size
            && match (self.sha256, other.sha256) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The manifest with its hash filled in, once the sender has read the file.
    pub fn with_digest(mut self, sha256: [u8; 32]) -> Self {
        self.sha256 = Some(sha256);
        self
    }
}

/// True for a valid [`Manifest::sender`]: empty, or at most [`MAX_SENDER_LEN`]
/// bytes of `[0-9a-z_-]`.
pub fn is_sender_name(s: &str) -> bool {
    s.len() <= MAX_SENDER_LEN
        && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_' || b == b'-')
}
