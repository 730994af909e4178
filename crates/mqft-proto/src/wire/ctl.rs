//! Control messages: what a sender tells its receivers besides chunks.

use super::*;

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
        /// The SHA-256 of the whole file, once the sender knows it: always at the
        /// end of a round in which it sent the last chunk, and after.
        sha256: Option<[u8; 32]>,
        /// A stream's size (version 6), once the sender has read its end: it
        /// closes the open manifest ([`Manifest::close`]). `None` for a file,
        /// whose manifest has its size.
        size: Option<u64>,
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
