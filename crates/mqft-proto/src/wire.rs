//! Wire messages: what each topic carries, encoded with postcard.
//!
//! Every payload starts with one byte, the protocol version ([`PROTOCOL_VERSION`]);
//! the rest is the postcard encoding of the message. Decoding goes straight into
//! checked types: an unknown version, trailing bytes, a varint longer than needed,
//! an oversized payload, name, map or range list, or an index past the end is a
//! [`DecodeError`], never a panic, and allocation stays proportional to the
//! payload's size, which is capped. So every message has exactly one encoding.
//!
//! Chunk payloads are encoded by hand (the layout is exactly what postcard writes for
//! [`ChunkWire`]) so that a chunk's bytes are copied once, straight after a small
//! header, and decoded without copying at all, unless compressed: a chunk's
//! `flags` say whether its bytes are zstd-compressed ([`CHUNK_ZSTD`]), and
//! [`Chunk::decode`] decompresses them into a buffer of at most the chunk's length
//! in the manifest, so a chunk that would inflate past it (a decompression bomb)
//! is refused without allocating more.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::integrity;
use crate::ranges::{RangeError, RangeSet, WireRanges};
use crate::topic::TransferId;

/// The protocol version this crate speaks; the first byte of every payload.
pub const PROTOCOL_VERSION: u8 = 3;
/// The longest file name a manifest may carry, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;
/// The most `/`-separated components a file name may have (`a/b/c.jpg` has 3):
/// a directory tree is sent with relative paths, and a receiver creates no
/// deeper tree than this.
pub const MAX_NAME_DEPTH: usize = 16;
/// The most receivers a manifest may address ([`Manifest::to`]).
pub const MAX_TO: usize = 32;
/// The longest content type, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 127;
/// The most user metadata entries.
pub const MAX_USER_ENTRIES: usize = 16;
/// The longest user metadata key, in bytes.
pub const MAX_USER_KEY_LEN: usize = 64;
/// The longest user metadata value, in bytes.
pub const MAX_USER_VALUE_LEN: usize = 256;
/// The largest chunk, in bytes.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// The most chunks in one transfer.
pub const MAX_CHUNK_COUNT: u32 = 1 << 22;
/// The largest manifest payload, in bytes.
pub const MAX_MANIFEST_LEN: usize = 8 << 10;
/// The largest ack or control payload, in bytes.
pub const MAX_CONTROL_LEN: usize = 8 << 10;
/// The longest human-readable detail of an [`Ack::Rejected`], in bytes of UTF-8:
/// room for an OS error text ("read-only file system") without letting a peer
/// make the sender print pages.
pub const MAX_REJECT_DETAIL_LEN: usize = 200;
/// The most bytes a chunk header takes: version, run, seq and index as varints,
/// the flags, the CRC and the data length.
pub const MAX_CHUNK_HEADER_LEN: usize = 1 + 5 + 5 + 5 + 1 + 4 + 5;
/// Chunk flag (bit 0): the chunk's bytes are one zstd frame that decompresses to
/// exactly the chunk's length.
pub const CHUNK_ZSTD: u8 = 0x01;
/// The chunk flags this version knows; a chunk with any other bit set is refused.
pub const KNOWN_CHUNK_FLAGS: u8 = CHUNK_ZSTD;
/// The zstd level senders compress chunks at: zstd's default, which compresses
/// text and logs to a third or less at hundreds of MB/s a core, far above what a
/// link worth compressing for carries.
pub const ZSTD_LEVEL: i32 = 3;
/// The longest sender name, in bytes: the same bound as a receiver id, whose
/// alphabet (`[0-9a-z_-]`) it shares.
pub const MAX_SENDER_LEN: usize = crate::topic::MAX_RECEIVER_ID_LEN;
/// The longest name an [`Ack::Stored`] reports, in bytes of UTF-8: a file name
/// with room for a directory part.
pub const MAX_STORED_NAME_LEN: usize = 1024;

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is empty.
    #[error("empty payload")]
    Empty,
    /// The first byte names a protocol version this crate does not speak.
    #[error("protocol version {0}, this peer speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion(u8),
    /// The payload is larger than its message kind allows.
    #[error("payload of {0} bytes is too large")]
    TooLarge(usize),
    /// The bytes are not a valid encoding of the message.
    #[error("malformed payload")]
    Malformed,
    /// The message ended before the payload did.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A varint has more bytes than its value needs (`80 00` for 0): the payload is
    /// not the one encoding of its message.
    #[error("non-minimal varint")]
    NonMinimalVarint,
    /// The file name is empty or longer than [`MAX_NAME_LEN`].
    #[error("bad file name length")]
    BadName,
    /// Metadata exceeds one of its caps.
    #[error("metadata exceeds its limits")]
    BadMeta,
    /// The chunk size is 0 or above [`MAX_CHUNK_SIZE`].
    #[error("bad chunk size")]
    BadChunkSize,
    /// The chunk count does not match the size and chunk size, or exceeds
    /// [`MAX_CHUNK_COUNT`].
    #[error("bad chunk count")]
    BadChunkCount,
    /// The transfer id does not match the one derived from the manifest.
    #[error("transfer id does not match the manifest")]
    IdMismatch,
    /// A chunk index at or past the chunk count.
    #[error("chunk index {index} is past the last chunk ({count} chunks)")]
    IndexOutOfRange {
        /// The index received.
        index: u32,
        /// The transfer's chunk count.
        count: u32,
    },
    /// The index in the payload differs from the one in the topic.
    #[error("chunk index {payload} in the payload, {topic} in the topic")]
    IndexMismatch {
        /// Index from the topic.
        topic: u32,
        /// Index from the payload.
        payload: u32,
    },
    /// The chunk's length is not what the manifest says chunk `index` has.
    #[error("chunk {index} has {len} bytes, expected {expected}")]
    BadChunkLength {
        /// The chunk index.
        index: u32,
        /// Bytes received.
        len: usize,
        /// Bytes the manifest implies.
        expected: u64,
    },
    /// The chunk's bytes do not match its CRC32.
    #[error("chunk {0} fails its CRC32")]
    BadCrc(u32),
    /// A range list is malformed or reaches past the last chunk.
    #[error(transparent)]
    Ranges(#[from] RangeError),
    /// The detail of an [`Ack::Rejected`] is longer than [`MAX_REJECT_DETAIL_LEN`].
    #[error("rejection detail of {0} bytes is too long")]
    BadDetail(usize),
    /// An [`Ack::Progress`] claims more chunks held than the transfer has.
    #[error("progress reports {held} chunks held of {count}")]
    HeldOutOfRange {
        /// The count received.
        held: u32,
        /// The transfer's chunk count.
        count: u32,
    },
    /// A chunk's flags have a bit this version does not know.
    #[error("chunk flags {0:#04x} unknown")]
    UnknownChunkFlags(u8),
    /// A compressed chunk is not a zstd frame of exactly the chunk's length (it is
    /// malformed, or inflates past the length: a decompression bomb), or it is no
    /// shorter than the chunk itself.
    #[error("chunk {0} does not decompress to its length")]
    BadCompression(u32),
    /// [`Manifest::to`] lists more than [`MAX_TO`] receivers, or one that is not a
    /// valid receiver id.
    #[error("bad list of addressed receivers")]
    BadTo,
    /// The manifest's sender name is longer than [`MAX_SENDER_LEN`] or has a
    /// character outside `[0-9a-z_-]`.
    #[error("bad sender name")]
    BadSender,
    /// The name of an [`Ack::Stored`] is empty or longer than
    /// [`MAX_STORED_NAME_LEN`].
    #[error("stored name of {0} bytes is empty or too long")]
    BadStoredName(usize),
}

/// Checks the version byte and size cap, and returns the body.
fn open(payload: &[u8], max: usize) -> Result<&[u8], DecodeError> {
    let (&version, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if payload.len() > max {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    Ok(body)
}

/// Decodes a whole postcard body, refusing trailing bytes and non-minimal varints.
fn take_all<'a, T: Deserialize<'a> + Serialize>(body: &'a [u8]) -> Result<T, DecodeError> {
    let (v, rest) = postcard::take_from_bytes(body).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    // postcard reads `80 00` as 0. How many bytes a varint takes is the only choice
    // postcard leaves an encoder (tags, strings, arrays are fixed by the value, and
    // the wire types map codes back to the same codes), and a longer varint makes a
    // longer message, so a body exactly as long as the message's own encoding is that
    // encoding. Measuring it allocates nothing, and a chunk's data only adds its
    // length: no copy, no pass over the bytes.
    let canonical = postcard::serialize_with_flavor(&v, postcard::ser_flavors::Size::default())
        .expect("measuring an encoding has no buffer to run out of");
    if canonical != body.len() {
        return Err(DecodeError::NonMinimalVarint);
    }
    Ok(v)
}

/// Version byte followed by the postcard encoding of `msg`.
fn seal<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing plain data into a growable Vec cannot fail.
    postcard::to_extend(msg, vec![PROTOCOL_VERSION]).expect("postcard encoding into a Vec cannot fail")
}

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
    /// File size in bytes.
    pub size: u64,
    /// Bytes per chunk; every chunk but the last is exactly this long.
    pub chunk_size: u32,
    /// `ceil(size / chunk_size)`; 0 for an empty file.
    pub chunk_count: u32,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
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
}

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
        sha256: [u8; 32],
        meta: Meta,
        run: u32,
    ) -> Result<Self, DecodeError> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(DecodeError::BadChunkSize);
        }
        let count = size.div_ceil(u64::from(chunk_size));
        let chunk_count =
            u32::try_from(count).ok().filter(|&c| c <= MAX_CHUNK_COUNT).ok_or(DecodeError::BadChunkCount)?;
        let id = integrity::transfer_id(&sha256, size, chunk_size, &name);
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
        };
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
        }
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(DecodeError::BadName);
        }
        if !is_sender_name(&self.sender) {
            return Err(DecodeError::BadSender);
        }
        self.meta.check()?;
        if self.to.len() > MAX_TO || !self.to.iter().all(|r| crate::ReceiverId::new(r).is_ok()) {
            return Err(DecodeError::BadTo);
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return Err(DecodeError::BadChunkSize);
        }
        if self.chunk_count > MAX_CHUNK_COUNT
            || u64::from(self.chunk_count) != self.size.div_ceil(u64::from(self.chunk_size))
        {
            return Err(DecodeError::BadChunkCount);
        }
        if self.id != integrity::transfer_id(&self.sha256, self.size, self.chunk_size, &self.name) {
            return Err(DecodeError::IdMismatch);
        }
        Ok(())
    }

    /// The manifest addressed to these receivers only (see [`Manifest::to`]).
    pub fn with_to(mut self, to: impl IntoIterator<Item = crate::ReceiverId>) -> Result<Self, DecodeError> {
        self.to = to.into_iter().map(|r| r.as_str().to_owned()).collect();
        self.check()?;
        Ok(self)
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

    /// The length of chunk `index`: `chunk_size`, except for a shorter last chunk.
    pub fn chunk_len(&self, index: u32) -> u64 {
        let start = u64::from(index) * u64::from(self.chunk_size);
        self.size.saturating_sub(start).min(u64::from(self.chunk_size))
    }

    /// The byte offset of chunk `index` in the file.
    pub fn chunk_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// True when `other` describes the same transfer: the same id, name, size,
    /// chunking and hash. The run and the metadata may differ (a file sent again
    /// with a new modification time is still the same bytes, and resumes).
    pub fn same_transfer(&self, other: &Manifest) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.size == other.size
            && self.chunk_size == other.chunk_size
            && self.chunk_count == other.chunk_count
            && self.sha256 == other.sha256
    }
}

/// True for a valid [`Manifest::sender`]: empty, or at most [`MAX_SENDER_LEN`]
/// bytes of `[0-9a-z_-]`.
pub fn is_sender_name(s: &str) -> bool {
    s.len() <= MAX_SENDER_LEN
        && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_' || b == b'-')
}

/// The postcard shape of a chunk payload (after the version byte). Documented and
/// tested against the hand-written encoder; not used on the hot path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkWire<'a> {
    /// The sender's run (see [`Manifest::run`]).
    pub run: u32,
    /// Transmission number within the run: counts every chunk publish, first sends
    /// and repairs alike, and drives flow control.
    pub seq: u32,
    /// The chunk index; must equal the index in the topic.
    pub index: u32,
    /// Bit 0 ([`CHUNK_ZSTD`]): `data` is zstd-compressed. Other bits are 0.
    pub flags: u8,
    /// CRC32 of `data` as it is on the wire (compressed or not), little-endian.
    pub crc32: [u8; 4],
    /// The chunk's bytes, compressed or not.
    #[serde(borrow)]
    pub data: &'a [u8],
}

/// A decoded, checked chunk: its bytes borrowed from the payload, or
/// decompressed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The sender's run.
    pub run: u32,
    /// Transmission number within the run.
    pub seq: u32,
    /// The chunk index, below the manifest's chunk count.
    pub index: u32,
    /// The chunk's flags as received (only [`KNOWN_CHUNK_FLAGS`]).
    pub flags: u8,
    /// The chunk's bytes, decompressed; their length and CRC32 are checked.
    pub data: Cow<'a, [u8]>,
    /// The CRC32 of `data`, the file's bytes (checked as received, or computed
    /// after decompressing): a receiver keeps it to prove, on a resume, that the
    /// bytes it wrote are still in its partial file.
    pub crc32: u32,
    /// The bytes the chunk took on the wire: `data`'s length, or less if
    /// compressed.
    pub wire_len: usize,
}

impl<'a> Chunk<'a> {
    /// Decodes chunk `topic_index` of the transfer `manifest` describes, checking the
    /// index, length and CRC32.
    pub fn decode(payload: &'a [u8], topic_index: u32, manifest: &Manifest) -> Result<Self, DecodeError> {
        let max = MAX_CHUNK_HEADER_LEN + manifest.chunk_size as usize;
        let w: ChunkWire<'a> = take_all(open(payload, max)?)?;
        if w.index != topic_index {
            return Err(DecodeError::IndexMismatch { topic: topic_index, payload: w.index });
        }
        if w.index >= manifest.chunk_count {
            return Err(DecodeError::IndexOutOfRange { index: w.index, count: manifest.chunk_count });
        }
        if w.flags & !KNOWN_CHUNK_FLAGS != 0 {
            return Err(DecodeError::UnknownChunkFlags(w.flags));
        }
        let expected = manifest.chunk_len(w.index);
        let compressed = w.flags & CHUNK_ZSTD != 0;
        // Compressed, it must have shrunk: a sender sends a chunk that does not
        // raw, and this bounds the decoder's input by the chunk's length too.
        if !compressed && w.data.len() as u64 != expected || compressed && w.data.len() as u64 >= expected {
            return Err(DecodeError::BadChunkLength { index: w.index, len: w.data.len(), expected });
        }
        // Checked before decompressing: a corrupt chunk costs no decoder time.
        let wire_crc = u32::from_le_bytes(w.crc32);
        if integrity::crc32(w.data) != wire_crc {
            return Err(DecodeError::BadCrc(w.index));
        }
        let (data, crc32) = if compressed {
            let data = decompress(w.data, expected).ok_or(DecodeError::BadCompression(w.index))?;
            let crc32 = integrity::crc32(&data);
            (Cow::Owned(data), crc32)
        } else {
            (Cow::Borrowed(w.data), wire_crc)
        };
        Ok(Chunk { run: w.run, seq: w.seq, index: w.index, flags: w.flags, data, crc32, wire_len: w.data.len() })
    }

    /// Encodes a chunk payload into `out` (cleared first), computing the CRC32.
    pub fn encode_into(out: &mut Vec<u8>, run: u32, seq: u32, index: u32, data: &[u8]) {
        Self::encode_parts(out, run, seq, index, 0, data);
    }

    /// Like [`Chunk::encode_into`], zstd-compressed at [`ZSTD_LEVEL`] if that
    /// saves at least 1/32 of the chunk (3 %); else raw: a JPEG or random data
    /// never grows. Returns the bytes of chunk data it put on the wire.
    pub fn encode_compressed_into(out: &mut Vec<u8>, run: u32, seq: u32, index: u32, data: &[u8]) -> usize {
        match zstd::bulk::compress(data, ZSTD_LEVEL) {
            Ok(z) if z.len() + data.len() / 32 <= data.len() && z.len() < data.len() => {
                Self::encode_parts(out, run, seq, index, CHUNK_ZSTD, &z);
                z.len()
            }
            // An error of the encoder (it has none for a valid level and input
            // below its limits) sends the chunk raw, as if it had not shrunk.
            _ => {
                Self::encode_parts(out, run, seq, index, 0, data);
                data.len()
            }
        }
    }

    /// The layout of a chunk payload around `body`, the bytes on the wire.
    fn encode_parts(out: &mut Vec<u8>, run: u32, seq: u32, index: u32, flags: u8, body: &[u8]) {
        out.clear();
        out.reserve(MAX_CHUNK_HEADER_LEN + body.len());
        out.push(PROTOCOL_VERSION);
        put_varint(out, u64::from(run));
        put_varint(out, u64::from(seq));
        put_varint(out, u64::from(index));
        out.push(flags);
        out.extend_from_slice(&integrity::crc32(body).to_le_bytes());
        put_varint(out, body.len() as u64);
        out.extend_from_slice(body);
    }

    /// Encodes a compressed chunk payload into a new buffer (see
    /// [`Chunk::encode_compressed_into`]).
    pub fn encode_compressed(run: u32, seq: u32, index: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Self::encode_compressed_into(&mut out, run, seq, index, data);
        out
    }

    /// Encodes a chunk payload into a new buffer.
    pub fn encode(run: u32, seq: u32, index: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Self::encode_into(&mut out, run, seq, index, data);
        out
    }
}

/// How a sender encodes its chunks' bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// As they are in the file.
    #[default]
    None,
    /// zstd, per chunk, where it saves at least 3 % ([`Chunk::encode_compressed_into`]).
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "off" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(format!("unknown compression '{s}': use zstd or none")),
        }
    }
}

/// The zstd frame `z` decompressed, if it is exactly `len` bytes. The buffer is
/// allocated at `len`, the manifest's chunk length (at most [`MAX_CHUNK_SIZE`]),
/// and the decoder fails rather than write past it: input that would inflate
/// further never costs more memory.
fn decompress(z: &[u8], len: u64) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok()?;
    let mut out = Vec::with_capacity(len);
    let n = zstd::bulk::Decompressor::new().ok()?.decompress_to_buffer(z, &mut out).ok()?;
    (n == len && out.len() == len).then_some(out)
}

/// postcard's unsigned varint: 7 bits a byte, least significant first, high bit set
/// on every byte but the last.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Why a receiver refused or gave up on a transfer; a `u16` code on the wire, so that
/// a peer can add codes without breaking older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The file is larger than the receiver accepts (code 1).
    TooLarge,
    /// The file name is unusable (code 2).
    BadName,
    /// Not enough disk space (code 3).
    DiskFull,
    /// The receiver has too many transfers open (code 4).
    Busy,
    /// Every chunk arrived but the SHA-256 of the file does not match (code 5).
    HashMismatch,
    /// The manifest is not acceptable: unknown version or malformed (code 6).
    BadManifest,
    /// A local I/O error (code 7).
    Io,
    /// A file of that name exists and may not be replaced (code 8).
    Exists,
    /// The receiver was told to stop (code 9).
    Cancelled,
    /// The receiver has too many transfers open and its queue of waiting offers
    /// is full too (code 10): try again later.
    QueueFull,
    /// A different file of that name exists and the receiver's conflict policy
    /// is to keep it and skip the new one (code 11).
    Skipped,
    /// The receiver trusts only signed transfers and this one's signature is
    /// missing, from a key it does not trust, invalid, too old or a replay
    /// (code 12); the detail says which.
    Untrusted,
    /// The transfer is encrypted and this receiver cannot open it: it has no
    /// identity key, or is not among the recipients (code 13).
    Encrypted,
    /// A code this version does not know.
    Other(u16),
}

impl RejectReason {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            RejectReason::TooLarge => 1,
            RejectReason::BadName => 2,
            RejectReason::DiskFull => 3,
            RejectReason::Busy => 4,
            RejectReason::HashMismatch => 5,
            RejectReason::BadManifest => 6,
            RejectReason::Io => 7,
            RejectReason::Exists => 8,
            RejectReason::Cancelled => 9,
            RejectReason::QueueFull => 10,
            RejectReason::Skipped => 11,
            RejectReason::Untrusted => 12,
            RejectReason::Encrypted => 13,
            RejectReason::Other(c) => c,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => RejectReason::TooLarge,
            2 => RejectReason::BadName,
            3 => RejectReason::DiskFull,
            4 => RejectReason::Busy,
            5 => RejectReason::HashMismatch,
            6 => RejectReason::BadManifest,
            7 => RejectReason::Io,
            8 => RejectReason::Exists,
            9 => RejectReason::Cancelled,
            10 => RejectReason::QueueFull,
            11 => RejectReason::Skipped,
            12 => RejectReason::Untrusted,
            13 => RejectReason::Encrypted,
            c => RejectReason::Other(c),
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::TooLarge => f.write_str("file too large"),
            RejectReason::BadName => f.write_str("bad file name"),
            RejectReason::DiskFull => f.write_str("disk full"),
            RejectReason::Busy => f.write_str("receiver busy"),
            RejectReason::HashMismatch => f.write_str("sha-256 mismatch"),
            RejectReason::BadManifest => f.write_str("bad manifest"),
            RejectReason::Io => f.write_str("i/o error"),
            RejectReason::Exists => f.write_str("file exists"),
            RejectReason::Cancelled => f.write_str("cancelled"),
            RejectReason::QueueFull => f.write_str("receiver queue full"),
            RejectReason::Skipped => f.write_str("file exists, skipped"),
            RejectReason::Untrusted => f.write_str("not signed by a trusted key"),
            RejectReason::Encrypted => f.write_str("encrypted for another recipient"),
            RejectReason::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

impl Serialize for RejectReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.code().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RejectReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(RejectReason::from_code)
    }
}

/// Why a sender stopped serving a transfer; a `u16` code on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortReason {
    /// The sender's user cancelled (code 1).
    Cancelled,
    /// The sender gave up: retries exhausted or no receiver (code 2).
    Failed,
    /// The receivers the sender waited for are done; others must resume with a new
    /// send (code 3).
    Finished,
    /// The sender started the same file again as a new transfer, with smaller chunks
    /// (those of this one did not get through the broker); a receiver drops this
    /// one and takes its successor (code 4).
    Superseded,
    /// A code this version does not know.
    Other(u16),
}

impl AbortReason {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            AbortReason::Cancelled => 1,
            AbortReason::Failed => 2,
            AbortReason::Finished => 3,
            AbortReason::Superseded => 4,
            AbortReason::Other(c) => c,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => AbortReason::Cancelled,
            2 => AbortReason::Failed,
            3 => AbortReason::Finished,
            4 => AbortReason::Superseded,
            c => AbortReason::Other(c),
        }
    }
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortReason::Cancelled => f.write_str("cancelled"),
            AbortReason::Failed => f.write_str("gave up"),
            AbortReason::Finished => f.write_str("finished with the receivers it waited for"),
            AbortReason::Superseded => f.write_str("started again with smaller chunks"),
            AbortReason::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

impl Serialize for AbortReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.code().serialize(s)
    }
}

impl<'de> Deserialize<'de> for AbortReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(AbortReason::from_code)
    }
}

/// Why a receiver stored a file under another name than the manifest's; a `u16`
/// code on the wire, like [`RejectReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameChange {
    /// The name was not safe to use as it came (a directory part, a leading dot,
    /// a character that is not allowed in a file name...): it was cleaned (code 1).
    Sanitized,
    /// A different file of that name was already there, and the receiver keeps
    /// both: the new one got a free name such as `img (1).jpg` (code 2).
    Renamed,
    /// A code this version does not know.
    Other(u16),
}

impl NameChange {
    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            NameChange::Sanitized => 1,
            NameChange::Renamed => 2,
            NameChange::Other(c) => c,
        }
    }

    /// The reason for a wire code.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => NameChange::Sanitized,
            2 => NameChange::Renamed,
            c => NameChange::Other(c),
        }
    }
}

impl std::fmt::Display for NameChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameChange::Sanitized => f.write_str("the name was not safe as it came"),
            NameChange::Renamed => f.write_str("a different file of that name exists"),
            NameChange::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

impl Serialize for NameChange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.code().serialize(s)
    }
}

impl<'de> Deserialize<'de> for NameChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(NameChange::from_code)
    }
}

/// The postcard shape of an ack payload (after the version byte).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum AckWire {
    Ready { run: u32, held: WireRanges },
    Progress { run: u32, next_seq: u32, held: u32 },
    Missing { run: u32, next_seq: u32, missing: WireRanges, more: bool },
    Complete { sha256: [u8; 32] },
    Rejected { reason: RejectReason, detail: String },
    Queued { run: u32, position: u32 },
    Stored { sha256: [u8; 32], name: String, change: NameChange, detail: String },
}

/// A receiver's report, published on `<prefix>/<id>/ack/<receiver>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// The receiver accepted the manifest of run `run` and already holds `held`
    /// (possibly only the lowest part of what it holds, if that is too fragmented
    /// for one message: reporting less is always safe).
    Ready {
        /// The run of the manifest being answered.
        run: u32,
        /// Chunks the receiver already has.
        held: RangeSet,
    },
    /// Flow-control credit: the receiver has seen chunk transmissions of run `run`
    /// up to `next_seq - 1`, and holds `held` distinct chunks.
    Progress {
        /// The sender run the numbers refer to.
        run: u32,
        /// One past the highest `seq` seen.
        next_seq: u32,
        /// Distinct chunks held: at most the chunk count, which
        /// [`Ack::decode`] checks.
        held: u32,
    },
    /// The answer to an end of round: what the receiver still lacks.
    Missing {
        /// The sender run the numbers refer to.
        run: u32,
        /// One past the highest `seq` seen.
        next_seq: u32,
        /// The lowest missing ranges.
        missing: RangeSet,
        /// True when more ranges are missing than one message can carry.
        more: bool,
    },
    /// Every chunk is in place and the file's SHA-256 checked out.
    Complete {
        /// The SHA-256 the receiver computed.
        sha256: [u8; 32],
    },
    /// The receiver refuses or has given up the transfer.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// What the receiver saw, for people: an OS error text such as "read-only
        /// file system", or empty. At most [`MAX_REJECT_DETAIL_LEN`] bytes on the
        /// wire (the encoder cuts a longer one at a character boundary). Untrusted:
        /// print it escaped.
        detail: String,
    },
    /// The receiver holds the manifest of run `run` in its queue of waiting offers
    /// (all its transfer slots are taken) and will answer [`Ack::Ready`] when one
    /// frees. Not a refusal: the sender keeps waiting, within its join timeout.
    Queued {
        /// The run of the manifest being answered.
        run: u32,
        /// Place in the receiver's queue, 1 for the head.
        position: u32,
    },
    /// [`Ack::Complete`], with the file stored under another name than the
    /// manifest's: what the sender should look for at the receiver, and why.
    Stored {
        /// The SHA-256 the receiver computed.
        sha256: [u8; 32],
        /// The name the file has at the receiver, relative to the directory it
        /// receives this sender's files into: 1 to [`MAX_STORED_NAME_LEN`] bytes.
        /// Untrusted: print it escaped.
        name: String,
        /// Why the name differs.
        change: NameChange,
        /// What was changed, for people ("leading dots removed"), or empty; at
        /// most [`MAX_REJECT_DETAIL_LEN`] bytes, cut like a rejection's.
        /// Untrusted: print it escaped.
        detail: String,
    },
}

impl Ack {
    /// Encodes the ack payload; range sets are cut to the wire cap, lowest first.
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            Ack::Ready { run, held } => AckWire::Ready { run: *run, held: held.to_wire().0 },
            Ack::Progress { run, next_seq, held } => AckWire::Progress { run: *run, next_seq: *next_seq, held: *held },
            Ack::Missing { run, next_seq, missing, more } => {
                let (missing, cut) = missing.to_wire();
                AckWire::Missing { run: *run, next_seq: *next_seq, missing, more: *more || cut }
            }
            Ack::Complete { sha256 } => AckWire::Complete { sha256: *sha256 },
            Ack::Rejected { reason, detail } => {
                AckWire::Rejected { reason: *reason, detail: cut_detail(detail).to_owned() }
            }
            Ack::Queued { run, position } => AckWire::Queued { run: *run, position: *position },
            Ack::Stored { sha256, name, change, detail } => AckWire::Stored {
                sha256: *sha256,
                name: name.clone(),
                change: *change,
                detail: cut_detail(detail).to_owned(),
            },
        };
        seal(&wire)
    }

    /// Decodes an ack for a transfer of `chunk_count` chunks: range lists and the
    /// `Progress` count must stay within them.
    pub fn decode(payload: &[u8], chunk_count: u32) -> Result<Self, DecodeError> {
        Ok(match take_all(open(payload, MAX_CONTROL_LEN)?)? {
            AckWire::Ready { run, held } => Ack::Ready { run, held: held.to_set(chunk_count)? },
            AckWire::Progress { held, .. } if held > chunk_count => {
                return Err(DecodeError::HeldOutOfRange { held, count: chunk_count });
            }
            AckWire::Progress { run, next_seq, held } => Ack::Progress { run, next_seq, held },
            AckWire::Missing { run, next_seq, missing, more } => {
                Ack::Missing { run, next_seq, missing: missing.to_set(chunk_count)?, more }
            }
            AckWire::Complete { sha256 } => Ack::Complete { sha256 },
            AckWire::Rejected { detail, .. } if detail.len() > MAX_REJECT_DETAIL_LEN => {
                return Err(DecodeError::BadDetail(detail.len()));
            }
            AckWire::Rejected { reason, detail } => Ack::Rejected { reason, detail },
            AckWire::Queued { run, position } => Ack::Queued { run, position },
            AckWire::Stored { name, .. } if name.is_empty() || name.len() > MAX_STORED_NAME_LEN => {
                return Err(DecodeError::BadStoredName(name.len()));
            }
            AckWire::Stored { detail, .. } if detail.len() > MAX_REJECT_DETAIL_LEN => {
                return Err(DecodeError::BadDetail(detail.len()));
            }
            AckWire::Stored { sha256, name, change, detail } => Ack::Stored { sha256, name, change, detail },
        })
    }
}

/// `detail` cut to at most [`MAX_REJECT_DETAIL_LEN`] bytes, at a character boundary.
fn cut_detail(detail: &str) -> &str {
    let mut end = detail.len().min(MAX_REJECT_DETAIL_LEN);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    &detail[..end]
}

/// The sender's control message, published on `<prefix>/<id>/ctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ctl {
    /// End of a round: the sender has published chunk transmissions up to
    /// `next_seq - 1` of run `run`; every receiver answers with
    /// [`Ack::Missing`] or [`Ack::Complete`].
    EndRound {
        /// The sender's run.
        run: u32,
        /// One past the last `seq` sent.
        next_seq: u32,
    },
    /// The sender stops serving this transfer.
    Abort {
        /// The sender's run.
        run: u32,
        /// Why.
        reason: AbortReason,
    },
}

impl Ctl {
    /// Encodes the control payload.
    pub fn encode(&self) -> Vec<u8> {
        seal(self)
    }

    /// Decodes a control payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        take_all(open(payload, MAX_CONTROL_LEN)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(size: u64, chunk_size: u32) -> Manifest {
        Manifest::new("cam.jpg".into(), size, chunk_size, [7; 32], Meta::default(), 9).unwrap()
    }

    #[test]
    fn chunk_encoding_is_postcards() {
        let data = [1u8, 2, 3, 4, 5];
        let ours = Chunk::encode(300, 70000, 2, &data);
        let wire = ChunkWire {
            run: 300,
            seq: 70000,
            index: 2,
            flags: 0,
            crc32: integrity::crc32(&data).to_le_bytes(),
            data: &data,
        };
        let mut theirs = vec![PROTOCOL_VERSION];
        theirs.extend(postcard::to_allocvec(&wire).unwrap());
        assert_eq!(ours, theirs);
    }

    #[test]
    fn compressible_chunks_go_compressed_and_come_back_whole() {
        let data: Vec<u8> = b"2026-12-07 06:19:57 sensor=3 t=21.5C ok\n".repeat(100);
        let m = manifest(data.len() as u64, data.len() as u32);
        let z = Chunk::encode_compressed(1, 0, 0, &data);
        assert!(z.len() < data.len() / 4, "{} bytes", z.len());
        let c = Chunk::decode(&z, 0, &m).unwrap();
        assert_eq!((c.flags, &*c.data, c.crc32), (CHUNK_ZSTD, &data[..], integrity::crc32(&data)));
        assert!(c.wire_len < data.len() / 4);
        // It is postcard's layout, with the flag set and the CRC over the wire bytes.
        let wire: ChunkWire<'_> = postcard::from_bytes(&z[1..]).unwrap();
        assert_eq!(wire.flags, CHUNK_ZSTD);
        assert_eq!(u32::from_le_bytes(wire.crc32), integrity::crc32(wire.data));
    }

    #[test]
    fn incompressible_chunks_go_raw() {
        // Random bytes: zstd cannot shrink them.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let data: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(Chunk::encode_compressed(1, 0, 0, &data), Chunk::encode(1, 0, 0, &data));
        // Nor a chunk that would shrink by less than 3 %: 97 % random.
        let mut mostly = data.clone();
        mostly[..100].fill(0);
        assert_eq!(Chunk::encode_compressed(1, 0, 0, &mostly), Chunk::encode(1, 0, 0, &mostly));
    }

    #[test]
    fn a_chunk_that_inflates_past_its_length_is_refused() {
        // 1 MiB of zeros compresses to a few dozen bytes; the manifest says the
        // chunk has 4 KiB.
        let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], ZSTD_LEVEL).unwrap();
        let m = manifest(4096, 4096);
        let mut payload = Vec::new();
        Chunk::encode_parts(&mut payload, 1, 0, 0, CHUNK_ZSTD, &bomb);
        assert_eq!(Chunk::decode(&payload, 0, &m), Err(DecodeError::BadCompression(0)));
        // One that decompresses short of its length, or is no zstd at all.
        let short = zstd::bulk::compress(&[0u8; 4000], ZSTD_LEVEL).unwrap();
        Chunk::encode_parts(&mut payload, 1, 0, 0, CHUNK_ZSTD, &short);
        assert_eq!(Chunk::decode(&payload, 0, &m), Err(DecodeError::BadCompression(0)));
        Chunk::encode_parts(&mut payload, 1, 0, 0, CHUNK_ZSTD, b"not zstd");
        assert_eq!(Chunk::decode(&payload, 0, &m), Err(DecodeError::BadCompression(0)));
        // "Compressed" bytes as long as the chunk: refused before decoding.
        Chunk::encode_parts(&mut payload, 1, 0, 0, CHUNK_ZSTD, &[0; 4096]);
        assert!(matches!(Chunk::decode(&payload, 0, &m), Err(DecodeError::BadChunkLength { .. })));
        // A flag this version does not know.
        Chunk::encode_parts(&mut payload, 1, 0, 0, 0x02, &[0; 4096]);
        assert_eq!(Chunk::decode(&payload, 0, &m), Err(DecodeError::UnknownChunkFlags(0x02)));
    }

    #[test]
    fn chunk_checks() {
        let m = manifest(10, 4);
        assert_eq!(m.chunk_count, 3);
        let ok = Chunk::encode(1, 0, 2, &[9, 9]);
        assert_eq!(&*Chunk::decode(&ok, 2, &m).unwrap().data, &[9, 9]);
        assert_eq!(Chunk::decode(&ok, 1, &m), Err(DecodeError::IndexMismatch { topic: 1, payload: 2 }));
        let past = Chunk::encode(1, 0, 3, &[9, 9]);
        assert_eq!(Chunk::decode(&past, 3, &m), Err(DecodeError::IndexOutOfRange { index: 3, count: 3 }));
        let short = Chunk::encode(1, 0, 0, &[9, 9]);
        assert!(matches!(Chunk::decode(&short, 0, &m), Err(DecodeError::BadChunkLength { .. })));
        let mut bad = Chunk::encode(1, 0, 2, &[9, 9]);
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(Chunk::decode(&bad, 2, &m), Err(DecodeError::BadCrc(2)));
        let mut trailing = ok.clone();
        trailing.push(0);
        assert_eq!(Chunk::decode(&trailing, 2, &m), Err(DecodeError::TrailingBytes(1)));
        let mut v1 = ok.clone();
        v1[0] = 1;
        assert_eq!(Chunk::decode(&v1, 2, &m), Err(DecodeError::UnsupportedVersion(1)));
        assert_eq!(Chunk::decode(&[], 2, &m), Err(DecodeError::Empty));
        assert_eq!(Chunk::decode(&ok[..ok.len() - 1], 2, &m), Err(DecodeError::Malformed));
    }

    #[test]
    fn manifest_round_trip_and_checks() {
        let mut m = manifest(1 << 20, 1000);
        m.meta = Meta {
            content_type: Some("image/jpeg".into()),
            modified_ms: Some(-5),
            user: vec![("k".into(), "v".into())],
        };
        let m = Manifest::new(m.name.clone(), m.size, m.chunk_size, m.sha256, m.meta.clone(), 3).unwrap();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);

        let mut lie = m.clone();
        lie.chunk_count += 1;
        assert_eq!(Manifest::decode(&lie.encode()), Err(DecodeError::BadChunkCount));
        let mut lie = m.clone();
        lie.size += 1;
        assert_eq!(Manifest::decode(&lie.encode()), Err(DecodeError::IdMismatch));
        let mut lie = m.clone();
        lie.meta.user = vec![("k".into(), "v".into()); MAX_USER_ENTRIES + 1];
        assert_eq!(Manifest::decode(&lie.encode()), Err(DecodeError::BadMeta));
        assert_eq!(
            Manifest::new("x".repeat(MAX_NAME_LEN + 1), 1, 1, [0; 32], Meta::default(), 0),
            Err(DecodeError::BadName)
        );
        assert_eq!(Manifest::new(String::new(), 1, 1, [0; 32], Meta::default(), 0), Err(DecodeError::BadName));
        assert_eq!(Manifest::new("a".into(), 1, 0, [0; 32], Meta::default(), 0), Err(DecodeError::BadChunkSize));
        assert_eq!(
            Manifest::new("a".into(), u64::MAX, 1, [0; 32], Meta::default(), 0),
            Err(DecodeError::BadChunkCount)
        );
        let mut big = m.encode();
        big.resize(MAX_MANIFEST_LEN + 1, 0);
        assert_eq!(Manifest::decode(&big), Err(DecodeError::TooLarge(MAX_MANIFEST_LEN + 1)));
    }

    #[test]
    fn chunk_lengths() {
        let m = manifest(10, 4);
        assert_eq!((0..3).map(|i| m.chunk_len(i)).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(manifest(0, 4).chunk_count, 0);
        assert_eq!(manifest(8, 4).chunk_count, 2);
        assert_eq!(manifest(9, 4).chunk_count, 3);
    }

    #[test]
    fn acks_round_trip_and_check_ranges() {
        let all: RangeSet = [1, 2, 3, 7].into_iter().collect();
        for ack in [
            Ack::Ready { run: 1, held: all.clone() },
            Ack::Progress { run: 1, next_seq: 99, held: 4 },
            Ack::Missing { run: 1, next_seq: 5, missing: all.clone(), more: true },
            Ack::Complete { sha256: [3; 32] },
            Ack::Rejected { reason: RejectReason::DiskFull, detail: String::new() },
            Ack::Rejected { reason: RejectReason::Other(999), detail: "read-only file system".into() },
            Ack::Rejected { reason: RejectReason::QueueFull, detail: "é".repeat(MAX_REJECT_DETAIL_LEN / 2) },
            Ack::Queued { run: 1, position: 300 },
            Ack::Stored { sha256: [3; 32], name: "a (1).jpg".into(), change: NameChange::Renamed, detail: "x".into() },
            Ack::Stored {
                sha256: [3; 32], name: "é".repeat(512), change: NameChange::Other(9), detail: String::new()
            },
        ] {
            assert_eq!(Ack::decode(&ack.encode(), 8).unwrap(), ack);
        }
        let ready = Ack::Ready { run: 1, held: all }.encode();
        assert_eq!(Ack::decode(&ready, 7), Err(DecodeError::Ranges(RangeError::OutOfRange)));
    }

    /// Found by fuzzing (`fuzz/corpus/decode_ack/regress-progress-held-past-chunk-count`):
    /// a `Progress` count is bounded by the chunk count, like the range lists.
    #[test]
    fn progress_holds_at_most_every_chunk() {
        let all = Ack::Progress { run: 1, next_seq: 10, held: 8 };
        assert_eq!(Ack::decode(&all.encode(), 8), Ok(all));
        let empty = Ack::Progress { run: 1, next_seq: 0, held: 0 };
        assert_eq!(Ack::decode(&empty.encode(), 0), Ok(empty));
        let past = Ack::Progress { run: 1, next_seq: 10, held: 9 }.encode();
        assert_eq!(Ack::decode(&past, 8), Err(DecodeError::HeldOutOfRange { held: 9, count: 8 }));
        let max = Ack::Progress { run: 1, next_seq: 10, held: u32::MAX }.encode();
        assert_eq!(Ack::decode(&max, 10), Err(DecodeError::HeldOutOfRange { held: u32::MAX, count: 10 }));
    }

    /// The varint that ends at `at`, one byte longer: `07` becomes `87 00`.
    fn lengthen(payload: &[u8], at: usize) -> Vec<u8> {
        assert!(payload[at] < 0x80, "byte {at} does not end a varint");
        let mut p = payload.to_vec();
        p[at] |= 0x80;
        p.insert(at + 1, 0);
        p
    }

    /// Found by fuzzing (`fuzz/corpus/decode_ctl/regress-overlong-varint`,
    /// `fuzz/corpus/decode_manifest/regress-overlong-varint`): postcard reads
    /// `80 00` as 0, so every message had many spellings. Each varint of each kind
    /// of message, made longer than needed, is refused.
    #[test]
    fn non_minimal_varints_are_refused() {
        let end_round = Ctl::EndRound { run: 300, next_seq: 3 }.encode();
        assert_eq!(end_round, [PROTOCOL_VERSION, 0, 0xac, 0x02, 3]);
        for at in [1, 3, 4] {
            assert_eq!(Ctl::decode(&lengthen(&end_round, at)), Err(DecodeError::NonMinimalVarint), "byte {at}");
        }
        // As long as a u32 can be, and still 0.
        assert_eq!(
            Ctl::decode(&[PROTOCOL_VERSION, 0, 0x80, 0x80, 0x80, 0x80, 0x00, 3]),
            Err(DecodeError::NonMinimalVarint)
        );

        let progress = Ack::Progress { run: 1, next_seq: 300, held: 2 }.encode();
        assert_eq!(progress, [PROTOCOL_VERSION, 1, 1, 0xac, 0x02, 2]);
        for at in [1, 2, 4, 5] {
            assert_eq!(Ack::decode(&lengthen(&progress, at), 8), Err(DecodeError::NonMinimalVarint), "byte {at}");
        }
        // A range list's count, gap and length.
        let ready = Ack::Ready { run: 1, held: [2].into_iter().collect() }.encode();
        assert_eq!(ready, [PROTOCOL_VERSION, 0, 1, 1, 2, 1]);
        for at in [3, 4, 5] {
            assert_eq!(Ack::decode(&lengthen(&ready, at), 8), Err(DecodeError::NonMinimalVarint), "byte {at}");
        }

        let m = manifest(10, 4);
        let enc = m.encode();
        // Version, id, then the run (9) and the name's length (7).
        assert_eq!(enc[17..19], [9, 7]);
        for at in [17, 18] {
            assert_eq!(Manifest::decode(&lengthen(&enc, at)), Err(DecodeError::NonMinimalVarint), "byte {at}");
        }

        // A chunk's run, seq, index and (after the flags and the CRC) data length;
        // the data is not copied to check.
        let chunk = Chunk::encode(1, 2, 2, &[9, 9]);
        assert_eq!(chunk[..5], [PROTOCOL_VERSION, 1, 2, 2, 0]);
        for at in [1, 2, 3, 9] {
            assert_eq!(Chunk::decode(&lengthen(&chunk, at), 2, &m), Err(DecodeError::NonMinimalVarint), "byte {at}");
        }
        assert!(Chunk::decode(&chunk, 2, &m).is_ok());
    }

    /// A v1 peer's message is refused with an error that names both versions, so a
    /// mixed deployment says what is wrong instead of "malformed".
    #[test]
    fn a_v1_message_names_both_versions() {
        let v1 = [1, 0, 0xac, 0x02, 3];
        let err = Ctl::decode(&v1).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion(1));
        assert_eq!(err.to_string(), format!("protocol version 1, this peer speaks {PROTOCOL_VERSION}"));
    }

    /// A rejection's detail is bounded: the encoder cuts a long one at a character
    /// boundary, and a decoder refuses one past the cap.
    #[test]
    fn rejection_details_are_bounded() {
        let long = Ack::Rejected { reason: RejectReason::Io, detail: "é".repeat(MAX_REJECT_DETAIL_LEN) };
        let Ack::Rejected { detail, .. } = Ack::decode(&long.encode(), 1).unwrap() else { panic!() };
        assert_eq!(detail, "é".repeat(MAX_REJECT_DETAIL_LEN / 2));
        // By hand: Rejected (4), reason 7, then a string of 201 bytes.
        let mut over = vec![PROTOCOL_VERSION, 4, 7, 0xc9, 0x01];
        over.extend(std::iter::repeat_n(b'a', MAX_REJECT_DETAIL_LEN + 1));
        assert_eq!(Ack::decode(&over, 1), Err(DecodeError::BadDetail(MAX_REJECT_DETAIL_LEN + 1)));
        over.truncate(over.len() - 1);
        over[3] = 0xc8;
        assert!(matches!(Ack::decode(&over, 1), Ok(Ack::Rejected { reason: RejectReason::Io, .. })));
    }

    /// A sender name is the receiver-id alphabet or empty, bounded; a stored name
    /// is never empty and bounded, and its detail bounded like a rejection's.
    #[test]
    fn sender_and_stored_names_are_bounded() {
        let m = manifest(10, 4);
        assert_eq!(Manifest::decode(&m.encode()).unwrap().sender, "");
        let named = m.clone().with_sender("cam-7").unwrap();
        assert_eq!(Manifest::decode(&named.encode()).unwrap(), named);
        assert_eq!(named.id, m.id, "the sender is not part of the transfer id");
        let longest = "a".repeat(MAX_SENDER_LEN);
        assert!(m.clone().with_sender(&longest).is_ok());
        for bad in ["Cam", "cam 7", "cam.7", "../x", "é"] {
            assert_eq!(m.clone().with_sender(bad), Err(DecodeError::BadSender), "{bad:?}");
            let mut lie = m.clone();
            lie.sender = bad.into();
            assert_eq!(Manifest::decode(&lie.encode()), Err(DecodeError::BadSender), "{bad:?}");
        }
        assert_eq!(m.clone().with_sender(&format!("{longest}a")), Err(DecodeError::BadSender));

        let stored =
            |name: String| Ack::Stored { sha256: [0; 32], name, change: NameChange::Sanitized, detail: String::new() };
        assert_eq!(Ack::decode(&stored(String::new()).encode(), 1), Err(DecodeError::BadStoredName(0)));
        let over = "a".repeat(MAX_STORED_NAME_LEN + 1);
        assert_eq!(Ack::decode(&stored(over).encode(), 1), Err(DecodeError::BadStoredName(MAX_STORED_NAME_LEN + 1)));
        let long = Ack::Stored {
            sha256: [0; 32],
            name: "a".into(),
            change: NameChange::Renamed,
            detail: "é".repeat(MAX_REJECT_DETAIL_LEN),
        };
        let Ack::Stored { detail, .. } = Ack::decode(&long.encode(), 1).unwrap() else { panic!() };
        assert_eq!(detail.len(), MAX_REJECT_DETAIL_LEN, "cut at a character boundary by the encoder");
    }

    #[test]
    fn a_v2_message_names_both_versions() {
        let err = Ctl::decode(&[2, 0, 0xac, 0x02, 3]).unwrap_err();
        assert_eq!(err.to_string(), "protocol version 2, this peer speaks 3");
    }

    /// `to` is bounded and holds only valid receiver ids, and is not part of the
    /// transfer id.
    #[test]
    fn addressed_receivers_are_checked() {
        let rid = |s: &str| crate::ReceiverId::new(s).unwrap();
        let m = manifest(10, 4).with_to([rid("gw3")]).unwrap();
        assert_eq!(m.id, manifest(10, 4).id);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        assert!(m.is_for(&rid("gw3")) && !m.is_for(&rid("gw1")));
        assert!(manifest(10, 4).is_for(&rid("gw1")));
        for bad in [vec!["Gw1".to_owned()], vec![String::new()], vec!["a".to_owned(); MAX_TO + 1]] {
            let m = Manifest { to: bad, ..manifest(10, 4) };
            assert_eq!(Manifest::decode(&m.encode()), Err(DecodeError::BadTo));
        }
        let full = Manifest { to: vec!["a".repeat(64); MAX_TO], ..manifest(10, 4) };
        assert!(full.encode().len() < MAX_MANIFEST_LEN);
        assert_eq!(Manifest::decode(&full.encode()).unwrap(), full);
    }

    #[test]
    fn ctl_round_trip() {
        for c in [Ctl::EndRound { run: 5, next_seq: 1000 }, Ctl::Abort { run: 5, reason: AbortReason::Finished }] {
            assert_eq!(Ctl::decode(&c.encode()).unwrap(), c);
        }
        let mut t = Ctl::EndRound { run: 5, next_seq: 1 }.encode();
        t.push(0);
        assert_eq!(Ctl::decode(&t), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(Ctl::decode(&[PROTOCOL_VERSION, 9]), Err(DecodeError::Malformed));
    }
}
