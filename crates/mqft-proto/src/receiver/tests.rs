use super::*;
use crate::integrity;
use crate::wire::Meta;

/// The `held` of each `Progress` published so far.
fn progress_counts(rx: &mut Receiver, chunk_count: u32) -> Vec<u32> {
    std::iter::from_fn(|| rx.poll_transmit())
        .filter_map(|t| match t.payload {
            Payload::Bytes(b) => match Ack::decode(&b, chunk_count).unwrap() {
                Ack::Progress { held, .. } => Some(held),
                _ => None,
            },
            Payload::Chunk(_) => None,
        })
        .collect()
}

/// Found by fuzzing (`fuzz/corpus/receiver/regress-progress-lags-one-chunk`): the
/// `Progress` a chunk triggers counts that chunk among the held ones.
#[test]
fn progress_counts_the_chunk_that_triggered_it() {
    let now = Instant::now();
    let data = b"0123456789";
    let m = Manifest::new("f".into(), 10, 4, Some(integrity::sha256(data)), Meta::default(), 7).unwrap();
    let cfg = ReceiverConfig { ack_every: 1, ..ReceiverConfig::default() };
    let id = ReceiverId::new("r").unwrap();
    let mut rx = Receiver::new(cfg, Prefix::default(), id, m.clone(), None, now).unwrap();
    assert_eq!(progress_counts(&mut rx, 3), [], "only the Ready so far");

    let chunk = |seq, index: u32| {
        let at = index as usize * 4;
        Chunk::encode(7, seq, index, &data[at..(at + 4).min(data.len())])
    };
    assert!(rx.handle_chunk(1, &chunk(0, 1), now).unwrap().is_some());
    assert_eq!(progress_counts(&mut rx, 3), [1]);
    // A duplicate still grants credit, and holds nothing more.
    assert!(rx.handle_chunk(1, &chunk(1, 1), now).unwrap().is_none());
    assert_eq!(progress_counts(&mut rx, 3), [1]);
    assert!(rx.handle_chunk(0, &chunk(2, 0), now).unwrap().is_some());
    assert_eq!(progress_counts(&mut rx, 3), [2]);
    // The last chunk: the file is whole, and the credit says so.
    assert!(rx.handle_chunk(2, &chunk(3, 2), now).unwrap().is_some());
    assert_eq!(progress_counts(&mut rx, 3), [3]);
}

/// An open stream (PROTOCOL.md 18): its short chunk is its last, chunks that
/// contradict that are dropped, the end of round's size closes it, and the file
/// verifies at its real length.
#[test]
fn an_open_stream_ends_at_its_short_chunk_and_closes_at_its_size() {
    let now = Instant::now();
    let data = b"0123456789";
    let m = Manifest::new_stream("s".into(), 4, Meta::default(), 7).unwrap();
    let id = ReceiverId::new("r").unwrap();
    let mut rx = Receiver::new(ReceiverConfig::default(), Prefix::default(), id, m, None, now).unwrap();
    let chunk = |index: u32, bytes: &[u8]| Chunk::encode(7, index, index, bytes);
    assert!(rx.handle_chunk(1, &chunk(1, &data[4..8]), now).unwrap().is_some());
    // A short chunk below a held one cannot be the last.
    assert!(rx.handle_chunk(0, &chunk(0, b"01"), now).is_err());
    assert!(rx.handle_chunk(2, &chunk(2, &data[8..]), now).unwrap().is_some());
    assert_eq!(rx.bytes_held(), 6);
    // Past the short chunk, or a second short one: dropped.
    assert!(rx.handle_chunk(3, &chunk(3, b"xxxx"), now).is_err());
    assert!(rx.handle_chunk(1, &chunk(1, b"x"), now).is_err());
    assert!(rx.handle_chunk(0, &chunk(0, &data[..4]), now).unwrap().is_some());
    // Chunks 1 and 2 arrived first: they are read back for the hash.
    while let Some(h) = rx.next_hash_read() {
        rx.hash_chunk(h.index, &data[h.offset as usize..(h.offset + h.len) as usize]).unwrap();
    }
    while rx.poll_transmit().is_some() {}
    let end = Ctl::EndRound { run: 7, next_seq: 3, sha256: Some(integrity::sha256(data)), size: Some(10) };
    rx.handle_ctl(&end.encode(), now).unwrap();
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Verified));
    assert_eq!((rx.manifest().size, rx.manifest().chunk_count), (10, 3));
}

/// A size that contradicts the chunks held fails the transfer, loudly.
#[test]
fn a_stream_size_that_contradicts_its_chunks_fails() {
    let now = Instant::now();
    for (size, why) in
        [(6, "a chunk held past the end"), (11, "the last chunk's length"), (12, "a short chunk not last")]
    {
        let m = Manifest::new_stream("s".into(), 4, Meta::default(), 7).unwrap();
        let id = ReceiverId::new("r").unwrap();
        let mut rx = Receiver::new(ReceiverConfig::default(), Prefix::default(), id, m, None, now).unwrap();
        rx.handle_chunk(2, &Chunk::encode(7, 0, 2, b"89"), now).unwrap();
        let end = Ctl::EndRound { run: 7, next_seq: 1, sha256: None, size: Some(size) };
        rx.handle_ctl(&end.encode(), now).unwrap();
        assert_eq!(
            rx.poll_event(),
            Some(ReceiverEvent::Failed(ReceiveFailure::Local(RejectReason::BadManifest))),
            "{why}"
        );
    }
}

/// A stream's size limit is checked as its chunks arrive.
#[test]
fn a_stream_past_the_size_limit_fails_as_too_large() {
    let now = Instant::now();
    let m = Manifest::new_stream("s".into(), 4, Meta::default(), 7).unwrap();
    let cfg = ReceiverConfig { max_size: Some(8), ..ReceiverConfig::default() };
    let mut rx = Receiver::new(cfg, Prefix::default(), ReceiverId::new("r").unwrap(), m, None, now).unwrap();
    assert!(rx.handle_chunk(1, &Chunk::encode(7, 0, 1, b"4567"), now).unwrap().is_some());
    assert!(rx.handle_chunk(2, &Chunk::encode(7, 1, 2, b"8"), now).unwrap().is_none());
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Failed(ReceiveFailure::Local(RejectReason::TooLarge))));
}

/// A receiver that hashes elsewhere ([`Receiver::hash_elsewhere`]) of a 10-byte
/// file in 4-byte chunks, and the file.
fn hashed_elsewhere() -> (Receiver, Manifest, &'static [u8]) {
    let data: &[u8] = b"0123456789";
    let m = Manifest::new("f".into(), 10, 4, Some(integrity::sha256(data)), Meta::default(), 7).unwrap();
    let mut rx = Receiver::new(
        ReceiverConfig::default(),
        Prefix::default(),
        ReceiverId::new("r").unwrap(),
        m.clone(),
        None,
        Instant::now(),
    )
    .unwrap();
    rx.hash_elsewhere();
    (rx, m, data)
}

/// Hands every chunk of `data` to `rx`, in `order`.
fn deliver(rx: &mut Receiver, data: &[u8], order: &[u32]) {
    for (seq, &i) in order.iter().enumerate() {
        let at = i as usize * 4;
        let chunk = Chunk::encode(7, seq as u32, i, &data[at..(at + 4).min(data.len())]);
        assert!(rx.handle_chunk(i, &chunk, Instant::now()).unwrap().is_some());
    }
}

/// The hash of `data`'s first `chunks` 4-byte chunks.
fn hash_of(data: &[u8], chunks: u32) -> HashState {
    let mut h = HashState::new();
    h.update(&data[..(chunks as usize * 4).min(data.len())]);
    h
}

/// Hashed by the caller: nothing is hashed or asked for here, and the file is
/// verified only once the caller's hash covers every chunk, and matches.
#[test]
fn a_hash_made_elsewhere_verifies_the_file_once_it_covers_every_chunk() {
    let (mut rx, m, data) = hashed_elsewhere();
    deliver(&mut rx, data, &[2, 0, 1]);
    assert_eq!(rx.next_hash_read(), None, "nothing read back here");
    assert_eq!(rx.snapshot().hashed, 0, "nothing hashed here");
    assert_eq!(rx.poll_event(), None);
    rx.hashed_through(1, hash_of(data, 1)).unwrap();
    assert_eq!(rx.poll_event(), None, "one chunk of three");
    // A resume from here starts the hash where the caller had it.
    let saved = rx.snapshot();
    assert_eq!((saved.hashed, saved.hash.len()), (1, 4));
    assert!(Receiver::new(
        ReceiverConfig::default(),
        Prefix::default(),
        ReceiverId::new("r").unwrap(),
        m,
        Some(saved),
        Instant::now()
    )
    .is_ok());
    rx.hashed_through(3, hash_of(data, 3)).unwrap();
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Verified));
}

/// The bytes the caller hashed (those in its file) are what count: a byte
/// changed there fails the transfer, whatever the chunks' CRCs said.
#[test]
fn a_hash_made_elsewhere_over_other_bytes_fails_the_transfer() {
    let (mut rx, _, data) = hashed_elsewhere();
    deliver(&mut rx, data, &[1, 2, 0]);
    let mut on_disk = data.to_vec();
    on_disk[5] ^= 1;
    rx.hashed_through(3, hash_of(&on_disk, 3)).unwrap();
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Failed(ReceiveFailure::HashMismatch)));
}

/// A report that claims chunks not held, or a state of the wrong length, is
/// refused; an old one is ignored.
#[test]
fn a_hash_made_elsewhere_must_fit_what_is_held() {
    let (mut rx, _, data) = hashed_elsewhere();
    deliver(&mut rx, data, &[0, 2]);
    assert_eq!(rx.hashed_through(2, hash_of(data, 2)), Err(HashFeedError::NotHeld(2)), "chunk 1 is not here");
    assert_eq!(rx.hashed_through(1, hash_of(data, 2)), Err(HashFeedError::NotHeld(1)), "the state is two chunks long");
    rx.hashed_through(1, hash_of(data, 1)).unwrap();
    rx.hashed_through(1, HashState::new()).unwrap();
    assert_eq!(rx.snapshot().hash, hash_of(data, 1), "an old report changes nothing");
    deliver(&mut rx, data, &[1]);
    assert_eq!(rx.hashed_through(4, hash_of(data, 3)), Err(HashFeedError::NotHeld(4)), "past the last chunk");
    rx.hashed_through(3, hash_of(data, 3)).unwrap();
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Verified));
}

/// A short copy of a chunk held whole contradicts the stream: dropped, and the
/// stream still ends where its chunks say.
#[test]
fn a_short_copy_of_a_chunk_held_whole_is_dropped() {
    let now = Instant::now();
    let m = Manifest::new_stream("s".into(), 4, Meta::default(), 7).unwrap();
    let id = ReceiverId::new("r").unwrap();
    let mut rx = Receiver::new(ReceiverConfig::default(), Prefix::default(), id, m, None, now).unwrap();
    assert!(rx.handle_chunk(0, &Chunk::encode(7, 0, 0, b"0123"), now).unwrap().is_some());
    assert!(rx.handle_chunk(0, &Chunk::encode(7, 1, 0, b"01"), now).is_err());
    assert_eq!(rx.bytes_held(), 4);
}
