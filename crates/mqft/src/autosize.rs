//! `--chunk-size auto` against brokers that do not say how large a message they
//! take.
//!
//! Under MQTT 5 a broker may announce its Maximum Packet Size, and [`crate::config`]
//! sizes chunks from it. Many do not, and some limit the payload rather than the
//! packet: Mosquitto's `message_size_limit` acknowledges an oversized publish and
//! forwards it to nobody (under MQTT 5 with reason code 0x95, which rumqttc takes for
//! a broken connection); rumqttd cuts the connection. Either way chunks of that size
//! never arrive, and without help the send ends after its stalled rounds or its
//! reconnects with "no chunk got through".
//!
//! With [`crate::ChunkSize::Auto`] the sender watches each transfer ([`Probe`]) for
//! the two signs that its chunks are too large while none of them has arrived
//! anywhere: the connection breaks again and again right after chunks went out
//! ([`BREAKS_LIMIT`]), or answered rounds repair nothing ([`STALLED_LIMIT`]). It then
//! abandons the transfer (an `Abort` and a cleared manifest, as for a cancel) and
//! starts the file again as a new transfer with half the chunk size
//! ([`smaller`]), down to [`FLOOR`]. The size is part of the transfer id, so
//! receivers see a new offer; the abandoned one held nothing, and leaves nothing
//! behind.
//!
//! What was learned is kept per broker address in a [`SizeMemory`] that the
//! [`crate::Client`] owns, so that the next file of the same send, and later sends of
//! the same client, start at the size that gets through. An explicit chunk size is
//! never changed: the user asked for it, and gets the clear failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The smallest chunk size `auto` falls back to. Below it, per-message costs
/// dominate and a broker that cannot take 4 KiB is not one to send files through.
pub const FLOOR: u32 = 4 << 10;

/// Connection breaks, each right after chunks of a transfer went out with none of
/// them arrived, that mark the chunk size as too large. One break is a network
/// hiccup; a broker that cuts every oversized publish breaks the connection at
/// every round (about one a second, the retransmission timeout), so three take
/// about two seconds.
pub const BREAKS_LIMIT: u32 = 3;

/// Stalled rounds ([`crate::proto::Sender::stalled_rounds`]) with nothing arrived
/// that mark the chunk size as too large. 1 is the second answered round in which
/// every receiver still lacks every chunk it lacked at the start: the broker took
/// the chunks (they are QoS 1 and were acknowledged) and delivered none.
pub const STALLED_LIMIT: u32 = 1;

/// The chunk sizes that got through, per broker (`host:port`). Cheap to clone; the
/// clones share one table.
#[derive(Debug, Clone, Default)]
pub(crate) struct SizeMemory(Arc<Mutex<HashMap<String, u32>>>);

impl SizeMemory {
    /// The largest chunk size `auto` may use with `broker`, if one was learned.
    pub fn ceiling(&self, broker: &str) -> Option<u32> {
        self.table().get(broker).copied()
    }

    /// Records that chunks larger than `size` do not get through `broker`.
    pub fn lower(&self, broker: &str, size: u32) {
        let mut table = self.table();
        let entry = table.entry(broker.to_owned()).or_insert(size);
        *entry = (*entry).min(size);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic elsewhere while holding the lock left a valid map behind.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the sender has seen of one transfer's chunks getting through.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probe {
    /// Some receiver holds more of the file than when it joined: chunks of this
    /// size do get through.
    pub arrived: bool,
    /// Connections that broke after chunks went out, while nothing had arrived.
    pub breaks: u32,
    /// Chunk transmissions of the transfer when the connection last came up.
    sent_at_up: u32,
}

impl Probe {
    /// The connection came (back) up; `sent` is the transfer's chunk
    /// transmissions so far.
    pub fn on_up(&mut self, sent: u32) {
        self.sent_at_up = sent;
    }

    /// The connection broke; `sent` as for [`Probe::on_up`]. It counts only when
    /// chunks went out on the connection that broke.
    pub fn on_down(&mut self, sent: u32) {
        if !self.arrived && sent > self.sent_at_up {
            self.breaks += 1;
        }
        self.sent_at_up = sent;
    }

    /// True when the chunks look too large to get through: see [`BREAKS_LIMIT`] and
    /// [`STALLED_LIMIT`].
    pub fn too_large(&self, stalled_rounds: u32) -> bool {
        !self.arrived && (self.breaks >= BREAKS_LIMIT || stalled_rounds >= STALLED_LIMIT)
    }
}

/// The chunk size to try after chunks of `chunk_size` did not get through, for a
/// file of `file_size` bytes; `None` at the floor. Half the size, and below the
/// largest chunk that actually went out: a file smaller than its chunk size sent
/// one chunk of its own size, and halving a size it never used would change
/// nothing.
pub fn smaller(chunk_size: u32, file_size: u64) -> Option<u32> {
    let largest = u64::from(chunk_size).min(file_size);
    if largest <= u64::from(FLOOR) {
        return None;
    }
    let mut next = chunk_size / 2;
    while u64::from(next) >= largest && next > FLOOR {
        next /= 2;
    }
    Some(next.max(FLOOR))
}

/// `1 KiB`-style sizes for messages: whole KiB or MiB when exact, bytes otherwise.
pub fn human(bytes: u32) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_halve_down_to_the_floor() {
        assert_eq!(smaller(256 << 10, 1 << 30), Some(128 << 10));
        assert_eq!(smaller(128 << 10, 1 << 30), Some(64 << 10));
        assert_eq!(smaller(8 << 10, 1 << 30), Some(FLOOR));
        assert_eq!(smaller(6 << 10, 1 << 30), Some(FLOOR));
        assert_eq!(smaller(FLOOR, 1 << 30), None);
        assert_eq!(smaller(1024, 1 << 30), None);
    }

    #[test]
    fn a_file_smaller_than_its_chunk_halves_from_its_own_size() {
        // One chunk of 100 000 bytes went out: the next try is below that.
        assert_eq!(smaller(256 << 10, 100_000), Some(64 << 10));
        assert_eq!(smaller(256 << 10, 10_000), Some(8 << 10));
        // Nothing to gain below the floor.
        assert_eq!(smaller(256 << 10, 4000), None);
    }

    #[test]
    fn only_breaks_after_chunks_with_nothing_arrived_count() {
        let mut p = Probe::default();
        p.on_up(0);
        p.on_down(0); // nothing sent on that connection
        assert_eq!(p.breaks, 0);
        for sent in [4, 8, 12] {
            p.on_up(sent - 4);
            p.on_down(sent);
        }
        assert!(p.too_large(0));
        let mut p = Probe { arrived: true, ..Probe::default() };
        for sent in [4, 8, 12, 16] {
            p.on_down(sent);
        }
        assert!(!p.too_large(5), "chunks of this size arrived: not a size problem");
        assert!(Probe::default().too_large(STALLED_LIMIT));
        assert!(!Probe::default().too_large(0));
    }

    #[test]
    fn the_memory_only_goes_down() {
        let m = SizeMemory::default();
        assert_eq!(m.ceiling("h:1"), None);
        m.lower("h:1", 64 << 10);
        m.clone().lower("h:1", 128 << 10);
        assert_eq!(m.ceiling("h:1"), Some(64 << 10));
        assert_eq!(m.ceiling("h:2"), None);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(256 << 10), "256 KiB");
        assert_eq!(human(1 << 20), "1 MiB");
        assert_eq!(human(100_000), "100000 bytes");
    }
}
