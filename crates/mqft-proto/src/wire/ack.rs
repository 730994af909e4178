//! Acks: what a receiver tells a sender.

use super::*;

/// The postcard shape of an ack payload (after the version byte).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum AckWire {
    Ready { run: u32, held: WireRanges, from_start: bool },
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
        /// The receiver's subscription to the transfer's chunks was in effect before
        /// the manifest reached it live (not as a retained copy): it gets every chunk
        /// transmission of this run, those sent before the sender read this `Ready`
        /// included, so the sender counts them as in flight to it rather than sending
        /// them again (protocol version 5, PROTOCOL.md 8.2).
        from_start: bool,
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
            Ack::Ready { run, held, from_start } => {
                AckWire::Ready { run: *run, held: held.to_wire().0, from_start: *from_start }
            }
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
            AckWire::Ready { run, held, from_start } => Ack::Ready { run, held: held.to_set(chunk_count)?, from_start },
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
