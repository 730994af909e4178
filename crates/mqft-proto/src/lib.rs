//! The mqft protocol: moving large files over any MQTT broker, sans-IO.
//!
//! This crate holds the whole protocol and nothing else: no sockets, no MQTT client,
//! no files, no clock. Time comes in as a `now: Instant` argument, received messages
//! come in through `handle_*` methods, and work goes out through `poll_*` methods as
//! [`Transmit`]s (a topic, a QoS, a payload) and events. That keeps every behaviour
//! deterministic, so the tests in `tests/` drive a sender and several receivers
//! through a simulated broker with seeded loss, duplication, reordering and restarts.
//!
//! # Layout, in the order data flows
//! - [`topic`]: the topic tree under a prefix: `<prefix>/<id>/manifest`,
//!   `<prefix>/<id>/chunk/<n>`, `<prefix>/<id>/ack/<receiver>`, `<prefix>/<id>/ctl`.
//! - [`integrity`]: the CRC32 of each chunk, a resumable SHA-256 of the whole file,
//!   and the transfer id derived from the content.
//! - [`wire`]: every payload: a version byte, then postcard. Decoding yields checked
//!   types or a [`DecodeError`].
//! - [`ranges`]: the held and missing sets, as range lists capped on the wire.
//! - [`sender`]: publishes the manifest, then chunks under a window of unacknowledged
//!   transmissions, ends each round by asking for what is missing, and finishes when
//!   the receivers it waits for confirm the SHA-256.
//! - [`receiver`]: checks each chunk, hands it out to be written at its offset, hashes
//!   in file order, grants credit, answers rounds with missing ranges, and reports the
//!   file complete only when the SHA-256 matches.
//! - [`endpoint`]: one receiver's many transfers: routes each message by its topic to
//!   the transfer it belongs to, decides on new offers what needs no I/O (PROTOCOL.md
//!   9.2), holds the offers waiting for a slot, and remembers finished transfers, in
//!   the manner of quinn-proto's `Endpoint`; and a sender's, which routes acks.
//!
//! # Driving a state machine
//! Feed input with `handle_*` (a message with its topic, or `handle_timeout` once the
//! deadline from `poll_timeout` has passed), then drain `poll_transmit` until it
//! returns `None` and `poll_event` likewise, then wait for the next input or the
//! deadline. `docs/PROTOCOL.md` in the repository is the normative description.
//!
//! The loop below is the whole of a driver, with a lossless in-memory broker and
//! simulated time in place of sockets and a clock: it moves a file from a
//! [`Sender`] to one [`Receiver`] and stops when the sender reports
//! [`SenderEvent::Finished`]. The runtime crate `mqft` does the same over rumqttc
//! and tokio, with files on disk.
//!
//! ```
//! use std::collections::VecDeque;
//! use std::time::Instant;
//! use mqft_proto::{integrity, Manifest, Meta, Payload, Prefix, Receiver, ReceiverConfig,
//!                  ReceiverEvent, ReceiverId, Sender, SenderConfig, SenderEvent, Topic};
//!
//! let file: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
//! let prefix = Prefix::new("files")?;
//! // No hash yet: the first chunks go out before the file was read to the end.
//! let manifest = Manifest::new("demo.bin".into(), file.len() as u64, 1024,
//!                              None, Meta::default(), 1)?;
//! let mut now = Instant::now();
//! let mut sender = Sender::new(SenderConfig::default(), prefix.clone(), manifest, now);
//! let rx_id = ReceiverId::new("rx")?;
//! let mut receiver: Option<Receiver> = None; // made when the manifest arrives
//! let mut disk = vec![0u8; file.len()]; // the receiver's partial file
//! // The "broker": publishes on their way, as (topic, payload).
//! let (mut to_receiver, mut to_sender) = (VecDeque::new(), VecDeque::new());
//!
//! let mut finished = false;
//! for _ in 0..10_000 { // a bound, so that a live-lock fails instead of hanging
//!     // Output: drain transmits, then events, from both sides.
//!     loop {
//!         let Some(t) = sender.poll_transmit(now) else {
//!             // The end of round carries the file's hash: a runtime hashes the
//!             // chunks as it reads them, and has it when the last one is out.
//!             if !sender.wants_digest() {
//!                 break;
//!             }
//!             sender.set_digest(integrity::sha256(&file), now);
//!             continue;
//!         };
//!         let payload = match t.payload {
//!             Payload::Bytes(b) => b,
//!             // The state machine names the bytes; reading them is the caller's job.
//!             Payload::Chunk(c) => c.encode(&file[c.offset as usize..][..c.len as usize]),
//!         };
//!         to_receiver.push_back((t.topic, payload));
//!     }
//!     while let Some(e) = sender.poll_event() {
//!         finished |= e == SenderEvent::Finished;
//!     }
//!     if let Some(rx) = receiver.as_mut() {
//!         while let Some(t) = rx.poll_transmit() {
//!             let Payload::Bytes(b) = t.payload else { unreachable!("receivers send no chunks") };
//!             to_sender.push_back((t.topic, b));
//!         }
//!         while let Some(e) = rx.poll_event() {
//!             // Verified: the runtime moves the file to its final name here.
//!             assert_eq!(e, ReceiverEvent::Verified);
//!             rx.finalized(now);
//!         }
//!     }
//!     if finished {
//!         break;
//!     }
//!     // Input: deliver one message each way, or else let time pass to the
//!     // earliest deadline and handle the timeouts.
//!     let (a, b) = (to_receiver.pop_front(), to_sender.pop_front());
//!     if let Some((topic, payload)) = &a {
//!         match prefix.parse(topic) {
//!             Some(Topic::Manifest(_)) => {
//!                 let m = Manifest::decode(payload)?;
//!                 match receiver.as_mut() {
//!                     Some(rx) => rx.handle_manifest(&m, now)?,
//!                     None => receiver = Some(Receiver::new(
//!                         ReceiverConfig::default(), prefix.clone(), rx_id.clone(), m, None, now)?),
//!                 }
//!             }
//!             Some(Topic::Chunk(_, n)) => {
//!                 let rx = receiver.as_mut().expect("the manifest comes first");
//!                 if let Some(w) = rx.handle_chunk(n, payload, now)? {
//!                     disk[w.offset as usize..][..w.data.len()].copy_from_slice(&w.data);
//!                 }
//!                 // Chunks that arrived ahead of order are hashed once the gap fills.
//!                 while let Some(h) = rx.next_hash_read() {
//!                     rx.hash_chunk(h.index, &disk[h.offset as usize..][..h.len as usize])?;
//!                 }
//!             }
//!             Some(Topic::Ctl(_)) => receiver.as_mut().expect("after the manifest").handle_ctl(payload, now)?,
//!             _ => {}
//!         }
//!     }
//!     if let Some((topic, payload)) = &b {
//!         if let Some(Topic::Ack(_, from)) = prefix.parse(topic) {
//!             sender.handle_ack(&from, payload, now)?;
//!         }
//!     }
//!     if a.is_none() && b.is_none() {
//!         let deadlines = [sender.poll_timeout(), receiver.as_ref().and_then(|r| r.poll_timeout())];
//!         now = deadlines.into_iter().flatten().min().expect("someone waits for something");
//!         sender.handle_timeout(now);
//!         if let Some(rx) = receiver.as_mut() {
//!             rx.handle_timeout(now);
//!         }
//!     }
//! }
//! assert!(finished, "the transfer did not finish");
//! assert_eq!(disk, file);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod endpoint;
pub mod integrity;
pub mod ranges;
pub mod receiver;
pub mod sealed;
pub mod sender;
pub mod topic;
pub mod trust;
pub mod wire;

pub use endpoint::{AckFor, EndpointEvent, Limits, ReceiverEndpoint, Routed, SenderEndpoint};
pub use integrity::{transfer_id, HashState};
pub use ranges::RangeSet;
pub use receiver::{Proof, ReceiveFailure, Receiver, ReceiverConfig, ReceiverEvent, ResumeState, StoredAs, Write};
pub use sender::{SendFailure, Sender, SenderConfig, SenderEvent, Wait};
pub use topic::{Prefix, PrefixPattern, ReceiverId, Topic, TransferId};
pub use wire::{
    AbortReason, Ack, Chunk, Ctl, DecodeError, Manifest, Meta, NameChange, RejectReason, Signature, PROTOCOL_VERSION,
};

/// MQTT quality of service: the protocol needs nothing beyond QoS 1, so it runs on
/// brokers without QoS 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// QoS 0: at most once.
    AtMostOnce,
    /// QoS 1: at least once.
    AtLeastOnce,
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// The topic to publish on.
    pub topic: String,
    /// The QoS to publish with.
    pub qos: Qos,
    /// The MQTT retain flag: set on the manifest so late receivers find it.
    pub retain: bool,
    /// What to publish.
    pub payload: Payload,
}

/// A transmit's payload: ready bytes, or a chunk the caller reads and encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The payload itself. An empty payload with `retain` clears a retained message.
    Bytes(Vec<u8>),
    /// A chunk of the file: the caller reads `len` bytes at `offset` and encodes them
    /// with [`ChunkRef::encode`]. Keeping file reads out of the state machine keeps
    /// it sans-IO and lets the caller read straight into the outgoing buffer.
    Chunk(ChunkRef),
}

/// Which chunk to send, and the numbers its header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// The sender's run.
    pub run: u32,
    /// Transmission number.
    pub seq: u32,
    /// Chunk index.
    pub index: u32,
    /// Byte offset of the chunk in the file.
    pub offset: u64,
    /// Length of the chunk in bytes.
    pub len: u64,
}

impl ChunkRef {
    /// Encodes the chunk payload around `data`, the `len` bytes at `offset`.
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        debug_assert_eq!(data.len() as u64, self.len);
        Chunk::encode(self.run, self.seq, self.index, data)
    }

    /// Like [`ChunkRef::encode`], into a reused buffer.
    pub fn encode_into(&self, out: &mut Vec<u8>, data: &[u8]) {
        Chunk::encode_into(out, self.run, self.seq, self.index, data)
    }

    /// Like [`ChunkRef::encode`], compressed as `compression` says where that
    /// pays; also returns the bytes of chunk data on the wire.
    pub fn encode_with(&self, data: &[u8], compression: crate::wire::Compression) -> (Vec<u8>, usize) {
        debug_assert_eq!(data.len() as u64, self.len);
        match compression {
            crate::wire::Compression::Zstd => {
                let mut out = Vec::new();
                let n = Chunk::encode_compressed_into(&mut out, self.run, self.seq, self.index, data);
                (out, n)
            }
            crate::wire::Compression::None => (self.encode(data), data.len()),
        }
    }

    /// Like [`ChunkRef::encode_with`], with the chunk's `len` bytes written by
    /// `fill` straight into the payload rather than copied from a buffer (see
    /// [`Chunk::encode_from`]): a sender reads the file into the slice it gets
    /// and hashes it there. Uncompressed, that is the payload's one allocation
    /// and the bytes are never copied; compressed, they are compressed from
    /// that slice, and a chunk that does not shrink goes in it as it is.
    pub fn encode_from(
        &self,
        compression: crate::wire::Compression,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
    ) -> std::io::Result<(Vec<u8>, usize)> {
        let len = usize::try_from(self.len).map_err(std::io::Error::other)?;
        match compression {
            crate::wire::Compression::Zstd => Chunk::encode_compressed_from(self.run, self.seq, self.index, len, fill),
            crate::wire::Compression::None => {
                Chunk::encode_from(self.run, self.seq, self.index, len, fill).map(|payload| (payload, len))
            }
        }
    }
}

/// Why a topic name or part of one was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// A prefix must be `/`-separated levels of `[0-9a-z_-]`, at most 128 bytes.
    #[error("topic prefix must be '/'-separated levels of [0-9a-z_-], at most 128 bytes")]
    BadPrefix,
    /// A receiver id must be 1 to 64 characters of `[0-9a-z_-]`.
    #[error("receiver id must be 1 to 64 characters of [0-9a-z_-]")]
    BadReceiverId,
    /// A transfer id is 32 lowercase hex digits.
    #[error("transfer id must be 32 lowercase hex digits")]
    BadTransferId,
}
