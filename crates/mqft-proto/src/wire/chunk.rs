//! Chunks: encoded by hand, decoded without copying, optionally zstd-compressed.

use super::*;

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
        // In an open stream any chunk may be the last, so shorter (never empty);
        // the receiver checks it against the size once that is known.
        let open = manifest.is_open();
        let raw_ok = |len: u64| len == expected || open && len > 0 && len < expected;
        // Compressed, it must have shrunk: a sender sends a chunk that does not
        // raw, and this bounds the decoder's input by the chunk's length too.
        if !compressed && !raw_ok(w.data.len() as u64) || compressed && w.data.len() as u64 >= expected {
            return Err(DecodeError::BadChunkLength { index: w.index, len: w.data.len(), expected });
        }
        // Checked before decompressing: a corrupt chunk costs no decoder time.
        let wire_crc = u32::from_le_bytes(w.crc32);
        if integrity::crc32(w.data) != wire_crc {
            return Err(DecodeError::BadCrc(w.index));
        }
        let (data, crc32) = if compressed {
            let data = decompress(w.data, expected)
                .filter(|d| raw_ok(d.len() as u64))
                .ok_or(DecodeError::BadCompression(w.index))?;
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
        match compress_if_it_pays(data) {
            Some(z) => {
                Self::encode_parts(out, run, seq, index, CHUNK_ZSTD, &z);
                z.len()
            }
            None => {
                Self::encode_parts(out, run, seq, index, 0, data);
                data.len()
            }
        }
    }

    /// Encodes a chunk payload of `len` bytes of data that `fill` writes straight
    /// into it: the payload is allocated once, at its final length, `fill` gets
    /// the slice after the header (zeroed), and the header, whose CRC32 comes
    /// before the data, is written after it. The bytes are exactly
    /// [`Chunk::encode`]'s of what `fill` wrote; a sender reads the file into
    /// the slice, and hashes it there, so the chunk's bytes are never copied.
    /// An error of `fill` is returned as it is.
    pub fn encode_from<E>(
        run: u32,
        seq: u32,
        index: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Vec<u8>, E> {
        // The header's length depends on the data's length, not on its CRC.
        let (_, at) = header(run, seq, index, 0, 0, len);
        // `vec!` of zeros: large buffers come zeroed from the allocator (calloc)
        // rather than by a pass over them.
        let mut out = vec![0u8; at + len];
        fill(&mut out[at..])?;
        let (head, n) = header(run, seq, index, 0, integrity::crc32(&out[at..]), len);
        out[..n].copy_from_slice(&head[..n]);
        Ok(out)
    }

    /// Like [`Chunk::encode_from`], zstd-compressed as
    /// [`Chunk::encode_compressed_into`] would: a chunk that does not shrink
    /// enough goes raw in the buffer it was read into, and one that does is
    /// encoded anew around its compressed bytes. Returns the payload and the
    /// bytes of chunk data it puts on the wire.
    pub fn encode_compressed_from<E>(
        run: u32,
        seq: u32,
        index: u32,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(Vec<u8>, usize), E> {
        let raw = Self::encode_from(run, seq, index, len, fill)?;
        let data = &raw[raw.len() - len..];
        Ok(match compress_if_it_pays(data) {
            Some(z) => {
                let mut out = Vec::new();
                Self::encode_parts(&mut out, run, seq, index, CHUNK_ZSTD, &z);
                (out, z.len())
            }
            None => (raw, len),
        })
    }

    /// The layout of a chunk payload around `body`, the bytes on the wire.
    pub(super) fn encode_parts(out: &mut Vec<u8>, run: u32, seq: u32, index: u32, flags: u8, body: &[u8]) {
        out.clear();
        let (head, n) = header(run, seq, index, flags, integrity::crc32(body), body.len());
        out.reserve(n + body.len());
        out.extend_from_slice(&head[..n]);
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

/// The zstd frame `z` decompressed, if it is at most `len` bytes (the caller
/// checks the length it got). The buffer is allocated at `len`, the manifest's
/// chunk length (at most [`MAX_CHUNK_SIZE`]), and the decoder fails rather than
/// write past it: input that would inflate further never costs more memory.
fn decompress(z: &[u8], len: u64) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok()?;
    let mut out = Vec::with_capacity(len);
    let n = zstd::bulk::Decompressor::new().ok()?.decompress_to_buffer(z, &mut out).ok()?;
    (n == out.len()).then_some(out)
}

/// The compressed `data`, if zstd saves at least 1/32 of it (3 %).
fn compress_if_it_pays(data: &[u8]) -> Option<Vec<u8>> {
    // An error of the encoder (it has none for a valid level and input below
    // its limits) sends the chunk raw, as if it had not shrunk.
    zstd::bulk::compress(data, ZSTD_LEVEL)
        .ok()
        .filter(|z| z.len() + data.len() / 32 <= data.len() && z.len() < data.len())
}

/// Room for a header whose data length, unlike a chunk's, needs more than 5 varint
/// bytes (a `usize` takes up to 10): the encoders never panic on a length.
const HEADER_ROOM: usize = MAX_CHUNK_HEADER_LEN + 5;

/// The bytes of a chunk payload before its data (version, run, seq, index,
/// flags, CRC32 and the data's length), and how many there are: the one place
/// that lays the header out, for [`Chunk::encode_parts`] and
/// [`Chunk::encode_from`].
fn header(run: u32, seq: u32, index: u32, flags: u8, crc32: u32, len: usize) -> ([u8; HEADER_ROOM], usize) {
    let mut head = [0u8; HEADER_ROOM];
    let mut at = 0;
    let mut push = |bytes: &[u8]| {
        head[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    push(&[PROTOCOL_VERSION]);
    push(varint(u64::from(run)).as_slice());
    push(varint(u64::from(seq)).as_slice());
    push(varint(u64::from(index)).as_slice());
    push(&[flags]);
    push(&crc32.to_le_bytes());
    push(varint(len as u64).as_slice());
    (head, at)
}

/// postcard's unsigned varint: 7 bits a byte, least significant first, high bit set
/// on every byte but the last.
fn varint(mut v: u64) -> Varint {
    let mut out = Varint { bytes: [0; 10], len: 0 };
    while v >= 0x80 {
        out.bytes[out.len] = (v as u8) | 0x80;
        out.len += 1;
        v >>= 7;
    }
    out.bytes[out.len] = v as u8;
    out.len += 1;
    out
}

/// A varint's bytes: at most 10 for a `u64`.
struct Varint {
    bytes: [u8; 10],
    len: usize,
}

impl Varint {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
