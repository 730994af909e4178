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
