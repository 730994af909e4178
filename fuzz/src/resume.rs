//! `resume`: a receiver restarted from a saved [`ResumeState`] that may be damaged,
//! next to a partial file that may have changed.
//!
//! The runtime keeps the state in a file next to the partial file and reads it back
//! at start-up; a crash mid-write, a full disk or a user can leave anything in
//! either. The runtime proves the state against the partial file
//! ([`ResumeState::prove`]) and then resumes ([`Receiver::new`]). What the proof
//! keeps must match the partial file, what it finds inconsistent `Receiver::new`
//! must refuse, and what `Receiver::new` accepts must behave: its held set lies
//! inside the file, its own snapshot resumes to the same state, and delivering
//! every chunk it lacks (with its hash reads served from the partial file) always
//! ends the transfer, verified exactly when the bytes it hashed make the
//! manifest's SHA-256. Above all: verified only when the partial file is the file,
//! and always verified when the saved state was honest, however the partial file
//! was damaged.
//!
//! # Input
//! A fixture selector (`u8`, see [`fixture`]), a damage byte (`0`: the partial
//! file holds the file's bytes; `n > 0`: the first byte of chunk `(n - 1) % count`
//! is flipped; `255`: the partial file is cut in half), then the postcard bytes of
//! a state.

use std::time::Instant;

use mqft_proto::receiver::{ReceiveFailure, ResumeError};
use mqft_proto::{
    integrity, Chunk, HashState, Manifest, Prefix, Receiver, ReceiverConfig, ReceiverEvent, ReceiverId, ResumeState,
};

use crate::decoders::check_set;
use crate::fixtures::{fixture, RUN};
use crate::input::Reader;

/// The damage byte that cuts the partial file in half.
pub const CUT: u8 = 255;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let fx = fixture(r.u8());
    let damage = r.u8();
    let Ok(saved) = postcard::from_bytes::<ResumeState>(r.rest()) else { return };
    let m = &fx.manifest;
    let now = Instant::now();
    let prefix = Prefix::default();
    let rid = ReceiverId::new("fuzz").expect("a valid receiver id");
    let new =
        |s: ResumeState| Receiver::new(ReceiverConfig::default(), prefix.clone(), rid.clone(), m.clone(), Some(s), now);

    // The partial file as the receiver finds it.
    let mut part = fx.data.clone();
    if damage == CUT {
        part.truncate(part.len() / 2);
    } else if damage > 0 && m.chunk_count > 0 {
        let index = u32::from(damage - 1) % m.chunk_count;
        part[m.chunk_offset(index) as usize] ^= 0x5a;
    }
    // Is the saved state what an honest receiver of this file would have saved?
    let honest = is_honest(&saved, m, &fx.data);

    let mut state = saved.clone();
    let proof = state
        .prove(|read| {
            let (at, end) = (read.offset as usize, (read.offset + read.len) as usize);
            Ok::<_, ()>(part.get(at..end).map(integrity::crc32))
        })
        .expect("reading the shadow file does not fail");
    if proof.inconsistent {
        assert_eq!(state, saved, "an inconsistent state is left as it was");
        let refused = new(state).err();
        assert!(
            matches!(refused, Some(ResumeError::Inconsistent | ResumeError::OtherTransfer)),
            "an inconsistent state resumed"
        );
        return;
    }
    // What the proof kept is in the partial file, with its CRC (chunked as the
    // state's own manifest says, which is all the proof knows).
    let sm = &state.manifest;
    let mut crcs = state.crcs.iter();
    for &(a, b) in &state.held {
        for i in a..b {
            let at = sm.chunk_offset(i) as usize;
            let bytes = part.get(at..at + sm.chunk_len(i) as usize).expect("a kept chunk is in the partial file");
            assert_eq!(crcs.next().copied(), Some(integrity::crc32(bytes)), "chunk {i} kept with another CRC");
        }
    }
    if proof.rehash {
        assert_eq!((state.hashed, state.hash.len()), (0, 0), "a rehash starts from nothing");
    }
    // The receiver writes into a file of the full size.
    part.resize(fx.data.len(), 0);

    let Ok(mut rx) = new(state.clone()) else {
        assert!(!honest, "an honest state was refused after its proof");
        return;
    };
    check_set(rx.held(), m.chunk_count);
    assert!(rx.bytes_held() <= m.size);
    let snap = rx.snapshot();
    let again = new(snap.clone()).expect("a receiver resumes from its own snapshot");
    assert_eq!(again.snapshot(), snap);

    for i in 0..m.chunk_count {
        if !rx.held().contains(i) {
            let payload = Chunk::encode(RUN, i, i, fx.chunk(i));
            let w = rx.handle_chunk(i, &payload, now).expect("a good chunk decodes");
            let w = w.filter(|w| w.index == i && w.data == fx.chunk(i)).expect("a lacking chunk is handed out");
            part[w.offset as usize..][..w.data.len()].copy_from_slice(&w.data);
        }
        while let Some(read) = rx.next_hash_read() {
            assert!(rx.held().contains(read.index));
            let at = read.offset as usize;
            rx.hash_chunk(read.index, &part[at..at + read.len as usize]).expect("the chunk asked for is taken");
        }
    }
    let mut events = Vec::new();
    while let Some(ev) = rx.poll_event() {
        events.push(ev);
    }
    // The hash the receiver ends with: the proven state's, over the rest of the
    // partial file as it now is.
    let mut hash = state.hash.clone();
    hash.update(&part[state.hash.len() as usize..]);
    let verified = Some(hash.finish()) == m.sha256;
    let want = if verified { ReceiverEvent::Verified } else { ReceiverEvent::Failed(ReceiveFailure::HashMismatch) };
    assert_eq!(events, vec![want], "a resumed receiver given every chunk did not end as it should");
    if verified {
        assert!(part == fx.data, "verified a partial file that is not the file");
    }
    if honest {
        assert!(verified, "an honest saved state did not end in the file (damage {damage})");
    }
}

/// True when `s` is what an honest receiver of `manifest`, whose file is `data`,
/// could have saved: the same transfer, every chunk it counts as hashed held, its
/// CRCs the chunks' and its hash that of the chunks it counts as hashed.
fn is_honest(s: &ResumeState, manifest: &Manifest, data: &[u8]) -> bool {
    let m = &s.manifest;
    let first_gap = match s.held.first() {
        Some(&(0, end)) => end,
        _ => 0,
    };
    if !m.same_transfer(manifest) || s.hashed > first_gap {
        return false;
    }
    let chunk = |i: u32| data.get(m.chunk_offset(i) as usize..).and_then(|d| d.get(..m.chunk_len(i) as usize));
    let indices = s.held.iter().flat_map(|&(a, b)| a..b);
    let crcs_true = s.held.iter().map(|&(a, b)| u64::from(b.saturating_sub(a))).sum::<u64>() == s.crcs.len() as u64
        && indices.zip(&s.crcs).all(|(i, &c)| chunk(i).map(integrity::crc32) == Some(c));
    let hashed_bytes = m.chunk_offset(s.hashed).min(m.size) as usize;
    let mut honest_hash = HashState::new();
    honest_hash.update(data.get(..hashed_bytes).unwrap_or_default());
    crcs_true && honest_hash == s.hash
}
