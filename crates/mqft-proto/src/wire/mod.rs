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
pub const PROTOCOL_VERSION: u8 = 6;
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
    /// An encrypted manifest without the SHA-256 of its ciphertext, which its id
    /// is bound to.
    #[error("encrypted manifest without the SHA-256 of its ciphertext")]
    SealedWithoutDigest,
    /// A held manifest without the file's SHA-256: no end of round will bring
    /// it ([`Manifest::hold_until_ms`]).
    #[error("held manifest without the file's SHA-256")]
    HeldWithoutDigest,
    /// A stream manifest that breaks a stream's rules ([`Manifest::stream`]): an
    /// open one without the chunk-count bound or with a hash, or a stream that
    /// is signed, encrypted or held.
    #[error("bad stream manifest")]
    BadStream,
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

mod ack;
mod chunk;
mod ctl;
mod manifest;
mod reason;
#[cfg(test)]
mod tests;

pub use ack::*;
pub use chunk::*;
pub use ctl::*;
pub use manifest::*;
pub use reason::*;
