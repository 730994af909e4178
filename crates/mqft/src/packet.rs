//! The chunk-size rule: the largest chunk whose PUBLISH fits what the broker takes.
//!
//! A broker drops (MQTT 3.1.1) or refuses (MQTT 5) a packet over its limit, so the
//! chunk size is derived from the limit by counting every byte of the packet that
//! carries the longest chunk topic of the transfer: fixed header, remaining-length
//! varint, topic, packet id, properties and the chunk header at its largest.

use crate::config::{ChunkSize, MqttVersion, AUTO_CHUNK_CAP, V311_DEFAULT_CHUNK};
use crate::error::Error;
use crate::proto::{self, Prefix};

/// Bytes an MQTT variable byte integer takes for `n`.
fn varint_len(n: u64) -> u64 {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Decimal digits of `n`.
fn digits(n: u32) -> u64 {
    u64::from(n.checked_ilog10().unwrap_or(0) + 1)
}

/// Length of the longest chunk topic of a transfer whose last chunk is `max_index`:
/// `<prefix>/<32 hex>/chunk/<max_index>`.
fn chunk_topic_len(prefix: &Prefix, max_index: u32) -> u64 {
    prefix.as_str().len() as u64 + "/".len() as u64 + 32 + "/chunk/".len() as u64 + digits(max_index)
}

/// Everything in a chunk PUBLISH besides the chunk's bytes and the fixed header:
/// topic length field and topic, packet id, (MQTT 5) the properties length byte,
/// and the chunk header.
fn variable_overhead(version: MqttVersion, topic_len: u64) -> u64 {
    let props = match version {
        MqttVersion::V5 => 1,
        MqttVersion::V311 => 0,
    };
    2 + topic_len + 2 + props + proto::wire::MAX_CHUNK_HEADER_LEN as u64
}

/// The size of the whole PUBLISH packet that carries `chunk` bytes of data on a
/// topic of `topic_len` bytes, at most (the chunk header is counted at its largest).
pub fn chunk_packet_size(version: MqttVersion, topic_len: u64, chunk: u32) -> u64 {
    let remaining = variable_overhead(version, topic_len) + u64::from(chunk);
    1 + varint_len(remaining) + remaining
}

/// The largest chunk whose PUBLISH fits in `max_packet` bytes, or `None` when not
/// even one byte fits.
fn max_chunk_for(version: MqttVersion, topic_len: u64, max_packet: u32) -> Option<u32> {
    let fixed = variable_overhead(version, topic_len);
    // The fixed header's length field grows with the packet: try each width, widest
    // chunk first, and keep the first that is self-consistent.
    (1..=4u64)
        .find_map(|width| {
            let chunk = u64::from(max_packet).checked_sub(1 + width + fixed)?;
            (chunk > 0 && varint_len(fixed + chunk) <= width).then_some(chunk)
        })
        .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
}

/// The index of the last chunk of a `size`-byte file cut into `chunk`-byte chunks.
fn max_index(size: u64, chunk: u32) -> u32 {
    let count = size.div_ceil(u64::from(chunk.max(1)));
    u32::try_from(count.saturating_sub(1)).unwrap_or(u32::MAX)
}

/// Settles the chunk size of one file once the broker's CONNACK is in:
/// `broker_max` is its Maximum Packet Size (MQTT 5 only).
pub fn settle_chunk_size(
    setting: ChunkSize,
    version: MqttVersion,
    broker_max: Option<u32>,
    prefix: &Prefix,
    file_size: u64,
) -> Result<u32, Error> {
    let broker_max = broker_max.filter(|_| version == MqttVersion::V5);
    // A stream's size is not known (`UNKNOWN_SIZE`, PROTOCOL.md 18): its chunks
    // may number up to the bound, so its topics are as long as the longest index,
    // and no chunk size is too small for it up front (a stream that runs past the
    // bound fails at its end).
    let stream = file_size == proto::wire::UNKNOWN_SIZE;
    let max_index = |size, chunk| if stream { proto::wire::MAX_CHUNK_COUNT - 1 } else { max_index(size, chunk) };
    // The largest chunk that fits the broker. The topic's length depends on the chunk
    // count, which depends on the chunk size: start from the longest index and
    // shorten. A larger chunk means fewer chunks and never a longer topic, so this
    // settles within a few steps on a size that fits its own longest topic.
    let fits = |max_packet: u32| -> Option<u32> {
        let mut index = u32::MAX;
        loop {
            let chunk = max_chunk_for(version, chunk_topic_len(prefix, index), max_packet)?;
            let next = max_index(file_size, chunk);
            if digits(next) == digits(index) {
                return Some(chunk);
            }
            index = next;
        }
    };
    // Fewer than MAX_CHUNK_COUNT chunks: a huge file needs larger chunks.
    let min_for_count = match stream {
        true => 1,
        false => u32::try_from(file_size.div_ceil(u64::from(proto::wire::MAX_CHUNK_COUNT))).unwrap_or(u32::MAX),
    };
    let chunk = match setting {
        ChunkSize::Fixed(c) => {
            if c == 0 || c > proto::wire::MAX_CHUNK_SIZE {
                return Err(Error::usage(format!(
                    "chunk size must be 1 to {} bytes, not {c}",
                    proto::wire::MAX_CHUNK_SIZE
                )));
            }
            if let Some(max_packet) = broker_max {
                let needed = chunk_packet_size(version, chunk_topic_len(prefix, max_index(file_size, c)), c);
                if needed > u64::from(max_packet) {
                    let max_chunk = fits(max_packet).unwrap_or(0);
                    return Err(Error::ChunkTooLarge { chunk_size: c, max_packet, max_chunk });
                }
            }
            c
        }
        ChunkSize::Auto => {
            let limit = match (version, broker_max) {
                (MqttVersion::V311, _) => V311_DEFAULT_CHUNK,
                (MqttVersion::V5, None) => AUTO_CHUNK_CAP,
                (MqttVersion::V5, Some(max_packet)) => fits(max_packet)
                    .ok_or_else(|| {
                        Error::usage(format!("the broker's maximum packet size of {max_packet} bytes is too small"))
                    })?
                    .min(AUTO_CHUNK_CAP),
            };
            if min_for_count > limit {
                // Only a file beyond a terabyte gets here; say so rather than send a
                // manifest nobody accepts.
                return Err(Error::usage(format!(
                    "a file of {file_size} bytes needs chunks of at least {min_for_count} bytes; set a larger chunk size"
                )));
            }
            limit
        }
    };
    if chunk < min_for_count {
        return Err(Error::usage(format!(
            "a file of {file_size} bytes needs chunks of at least {min_for_count} bytes, not {chunk}"
        )));
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_size_counts_every_byte() {
        // v5, 40-byte topic, 50 bytes of data: 1 (type) + 1 (length) + 2 + 40 + 2
        // (packet id) + 1 (properties) + 26 (chunk header, at most) + 50.
        assert_eq!(chunk_packet_size(MqttVersion::V5, 40, 50), 1 + 1 + 2 + 40 + 2 + 1 + 26 + 50);
        assert_eq!(chunk_packet_size(MqttVersion::V311, 40, 50), 1 + 1 + 2 + 40 + 2 + 26 + 50);
        // 60 bytes more and the remaining length needs a second byte.
        assert_eq!(chunk_packet_size(MqttVersion::V311, 40, 110), 1 + 2 + 2 + 40 + 2 + 26 + 110);
        // The length field widens at 128, 16384 and 2 MiB of remaining length.
        assert_eq!(chunk_packet_size(MqttVersion::V311, 0, 1 << 20) - (1 << 20), 1 + 3 + 2 + 2 + 26);
    }

    #[test]
    fn auto_chunk_size_fills_the_broker_limit_exactly() {
        let p = Prefix::default();
        for max_packet in [200u32, 1000, 16_384, 16_500, 100_000, 2_097_152 + 50, 300_000] {
            for size in [1u64, 10_000, 1 << 26] {
                let c = settle_chunk_size(ChunkSize::Auto, MqttVersion::V5, Some(max_packet), &p, size).unwrap();
                let topic = chunk_topic_len(&p, max_index(size, c));
                if c < AUTO_CHUNK_CAP {
                    // It fits its own longest topic, and one byte more would not.
                    assert!(chunk_packet_size(MqttVersion::V5, topic, c) <= u64::from(max_packet));
                    assert!(
                        chunk_packet_size(MqttVersion::V5, topic, c + 1) > u64::from(max_packet),
                        "max {max_packet} size {size}: {c}"
                    );
                } else {
                    assert_eq!(c, AUTO_CHUNK_CAP);
                }
            }
        }
    }

    #[test]
    fn chunk_size_rules() {
        let p = Prefix::new("site-1/cams").unwrap();
        let auto = |v, max, size| settle_chunk_size(ChunkSize::Auto, v, max, &p, size);
        assert_eq!(auto(MqttVersion::V5, None, 1 << 20).unwrap(), AUTO_CHUNK_CAP);
        assert_eq!(auto(MqttVersion::V311, None, 1 << 20).unwrap(), V311_DEFAULT_CHUNK);
        // 3.1.1 has no broker limit to respect; one in the options is ignored.
        assert_eq!(auto(MqttVersion::V311, Some(1000), 1 << 20).unwrap(), V311_DEFAULT_CHUNK);
        assert!(auto(MqttVersion::V5, Some(60), 1).is_err());

        let fixed = |c, max| settle_chunk_size(ChunkSize::Fixed(c), MqttVersion::V5, max, &p, 1 << 20);
        assert_eq!(fixed(1 << 20, None).unwrap(), 1 << 20);
        let max_chunk = auto(MqttVersion::V5, Some(10_000), 1 << 20).unwrap();
        assert_eq!(fixed(max_chunk, Some(10_000)).unwrap(), max_chunk);
        match fixed(max_chunk + 1, Some(10_000)) {
            Err(Error::ChunkTooLarge { chunk_size, max_packet: 10_000, max_chunk: m }) => {
                assert_eq!((chunk_size, m), (max_chunk + 1, max_chunk));
            }
            other => panic!("{other:?}"),
        }
        assert!(fixed(0, None).is_err());
        // Four million chunks at most: a 1 TiB file cannot go in 64 KiB chunks.
        let huge = settle_chunk_size(ChunkSize::Fixed(65536), MqttVersion::V5, None, &p, 1 << 40);
        assert_eq!(huge.unwrap_err().kind(), crate::ErrorKind::Usage);
    }

    /// A stream's size is not known: any chunk size goes (under 3.1.1's smaller
    /// default too), and its topics are counted at the longest index.
    #[test]
    fn a_stream_takes_any_chunk_size_and_the_longest_topic() {
        let p = Prefix::new("site-1/cams").unwrap();
        let stream = proto::wire::UNKNOWN_SIZE;
        let settle = |c, v, max| settle_chunk_size(c, v, max, &p, stream);
        assert_eq!(settle(ChunkSize::Auto, MqttVersion::V311, None).unwrap(), V311_DEFAULT_CHUNK);
        assert_eq!(settle(ChunkSize::Fixed(4096), MqttVersion::V5, None).unwrap(), 4096);
        let for_stream = settle(ChunkSize::Auto, MqttVersion::V5, Some(10_000)).unwrap();
        let for_small_file = settle_chunk_size(ChunkSize::Auto, MqttVersion::V5, Some(10_000), &p, 10).unwrap();
        assert!(for_stream < for_small_file, "a stream's chunk topics are longer: {for_stream} vs {for_small_file}");
    }
}
