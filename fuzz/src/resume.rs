//! `resume`: a receiver restarted from a saved [`ResumeState`] that may be damaged.
//!
//! The runtime keeps the state in a file next to the partial file and reads it back
//! with postcard at start-up; a crash mid-write, a full disk or a user can leave
//! anything there. [`Receiver::new`] must refuse what does not add up, and what it
//! accepts must behave: its held set lies inside the file, its own snapshot resumes
//! to the same state, and delivering every chunk it lacks (with its hash reads
//! served from the file) always ends the transfer, verified exactly when the saved
//! hash really is the hash of the file's first bytes.
//!
//! # Input
//! A fixture selector (`u8`, see [`fixture`]), then the postcard bytes of a state.

use std::time::Instant;

use mqft_proto::receiver::ReceiveFailure;
use mqft_proto::{Chunk, HashState, Prefix, Receiver, ReceiverConfig, ReceiverEvent, ReceiverId, ResumeState};

use crate::decoders::check_set;
use crate::fixtures::{fixture, RUN};
use crate::input::Reader;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let fx = fixture(r.u8());
    let Ok(state) = postcard::from_bytes::<ResumeState>(r.rest()) else { return };
    let m = &fx.manifest;
    let now = Instant::now();
    let prefix = Prefix::default();
    let rid = ReceiverId::new("fuzz").expect("a valid receiver id");
    let new =
        |s: ResumeState| Receiver::new(ReceiverConfig::default(), prefix.clone(), rid.clone(), m.clone(), Some(s), now);
    let Ok(mut rx) = new(state.clone()) else { return };

    check_set(rx.held(), m.chunk_count);
    assert!(rx.bytes_held() <= m.size);
    let snap = rx.snapshot();
    let again = new(snap.clone()).expect("a receiver resumes from its own snapshot");
    assert_eq!(again.snapshot(), snap);

    // Accepted, so the saved hash covers the first `len` bytes of the file.
    let hashed = usize::try_from(state.hash.len()).expect("an accepted hash length is within the file");
    let mut honest = HashState::new();
    honest.update(&fx.data[..hashed]);
    let good = honest == state.hash;

    for i in 0..m.chunk_count {
        if !rx.held().contains(i) {
            let payload = Chunk::encode(RUN, i, i, fx.chunk(i));
            let w = rx.handle_chunk(i, &payload, now).expect("a good chunk decodes");
            assert!(w.is_some_and(|w| w.index == i && w.data == fx.chunk(i)), "chunk {i} not handed out");
        }
    }
    while let Some(read) = rx.next_hash_read() {
        assert!(rx.held().contains(read.index));
        let at = read.offset as usize;
        rx.hash_chunk(read.index, &fx.data[at..at + read.len as usize]).expect("the chunk asked for is taken");
    }
    let mut events = Vec::new();
    while let Some(ev) = rx.poll_event() {
        events.push(ev);
    }
    let want = if good { ReceiverEvent::Verified } else { ReceiverEvent::Failed(ReceiveFailure::HashMismatch) };
    assert_eq!(events, vec![want], "a resumed receiver given every chunk did not end as it should");
}
