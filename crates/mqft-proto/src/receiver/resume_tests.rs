//! Saved state proven against the partial file before a resume.

use super::*;
use crate::integrity;
use crate::wire::Meta;

const CHUNK: u32 = 4;

/// A 38-byte file in 4-byte chunks (10 chunks, the last one short).
fn file() -> (Vec<u8>, Manifest) {
    let data: Vec<u8> = (0..38u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let m = Manifest::new("f".into(), data.len() as u64, CHUNK, Some(integrity::sha256(&data)), Meta::default(), 7)
        .unwrap();
    (data, m)
}

fn new_rx(m: &Manifest, saved: Option<ResumeState>) -> Result<Receiver, ResumeError> {
    let id = ReceiverId::new("r").unwrap();
    Receiver::new(ReceiverConfig::default(), Prefix::default(), id, m.clone(), saved, Instant::now())
}

fn chunk_of(data: &[u8], m: &Manifest, i: u32) -> Vec<u8> {
    let at = m.chunk_offset(i) as usize;
    Chunk::encode(7, i, i, &data[at..at + m.chunk_len(i) as usize])
}

/// The state of a receiver that got `chunks` of `data`, in that order, with
/// its hash reads served.
fn saved_after(data: &[u8], m: &Manifest, chunks: &[u32]) -> ResumeState {
    let mut rx = new_rx(m, None).unwrap();
    for &i in chunks {
        let _ = rx.handle_chunk(i, &chunk_of(data, m, i), Instant::now()).unwrap();
    }
    serve_hash_reads(&mut rx, data);
    rx.snapshot()
}

fn serve_hash_reads(rx: &mut Receiver, file: &[u8]) {
    while let Some(r) = rx.next_hash_read() {
        let at = r.offset as usize;
        rx.hash_chunk(r.index, &file[at..at + r.len as usize]).unwrap();
    }
}

/// `crc_at` over the bytes of a partial file (a short file reads `None`).
fn crc_in(part: &[u8]) -> impl FnMut(HashRead) -> Result<Option<u32>, ()> + '_ {
    |r| {
        let (at, end) = (r.offset as usize, (r.offset + r.len) as usize);
        Ok(part.get(at..end).map(integrity::crc32))
    }
}

/// Gives the resumed receiver every chunk it lacks, serves its hash reads
/// from `part` (updated with what it writes), and returns how it ended.
fn finish(mut rx: Receiver, data: &[u8], m: &Manifest, mut part: Vec<u8>) -> Vec<ReceiverEvent> {
    part.resize(data.len(), 0);
    for i in 0..m.chunk_count {
        if !rx.held().contains(i) {
            let payload = chunk_of(data, m, i);
            if let Some(w) = rx.handle_chunk(i, &payload, Instant::now()).unwrap() {
                part[w.offset as usize..][..w.data.len()].copy_from_slice(&w.data);
            }
        }
        serve_hash_reads(&mut rx, &part);
    }
    std::iter::from_fn(|| rx.poll_event()).collect()
}

/// A file finalized under another name is confirmed with `Stored`, in the
/// first answer and in every later one (an end of round that asks again).
#[test]
fn a_file_stored_under_another_name_is_answered_stored() {
    let (data, m) = file();
    let mut rx = new_rx(&m, None).unwrap();
    let mut part = vec![0; data.len()];
    for i in 0..m.chunk_count {
        if let Some(w) = rx.handle_chunk(i, &chunk_of(&data, &m, i), Instant::now()).unwrap() {
            part[w.offset as usize..][..w.data.len()].copy_from_slice(&w.data);
        }
        serve_hash_reads(&mut rx, &part);
    }
    assert!(std::iter::from_fn(|| rx.poll_event()).any(|e| e == ReceiverEvent::Verified));
    while rx.poll_transmit().is_some() {}
    let stored = StoredAs { name: "f (1)".into(), change: NameChange::Renamed, detail: "taken".into() };
    rx.finalized_as(Some(stored.clone()), Instant::now());
    let end = Ctl::EndRound { run: m.run, next_seq: 99, sha256: None, size: None }.encode();
    rx.handle_ctl(&end, Instant::now()).unwrap();
    let acks: Vec<Ack> = std::iter::from_fn(|| rx.poll_transmit())
        .map(|t| match t.payload {
            Payload::Bytes(b) => Ack::decode(&b, m.chunk_count).unwrap(),
            Payload::Chunk(_) => panic!("a receiver sent a chunk"),
        })
        .collect();
    let want =
        Ack::Stored { sha256: m.sha256.unwrap(), name: stored.name, change: stored.change, detail: stored.detail };
    assert_eq!(acks, [want.clone(), want]);
}

#[test]
fn an_unchanged_part_is_resumed_as_saved() {
    let (data, m) = file();
    let mut saved = saved_after(&data, &m, &[0, 1, 2, 6, 7]);
    assert_eq!((saved.hashed, saved.crcs.len()), (3, 5));
    let before = saved.clone();
    let proof = saved.prove(crc_in(&data)).unwrap();
    assert_eq!(proof, Proof { kept: 5, ..Proof::default() });
    assert_eq!(saved, before);
    let rx = new_rx(&m, Some(saved.clone())).unwrap();
    assert_eq!(rx.snapshot(), saved, "a resumed receiver saves the same CRCs again");
    assert_eq!(finish(rx, &data, &m, data.clone()), [ReceiverEvent::Verified]);
}

#[test]
fn a_changed_chunk_past_the_hash_is_dropped_and_fetched_again() {
    let (data, m) = file();
    let mut saved = saved_after(&data, &m, &[0, 1, 2, 6, 7]);
    let mut part = data.clone();
    part[m.chunk_offset(6) as usize] ^= 0xff;
    let proof = saved.prove(crc_in(&part)).unwrap();
    assert_eq!(proof, Proof { kept: 4, dropped: 1, ..Proof::default() });
    assert_eq!((saved.held.as_slice(), saved.hashed), (&[(0, 3), (7, 8)][..], 3), "the hash state stands");
    let rx = new_rx(&m, Some(saved)).unwrap();
    assert!(!rx.held().contains(6));
    assert_eq!(finish(rx, &data, &m, part), [ReceiverEvent::Verified]);
}

#[test]
fn a_changed_chunk_inside_the_hash_restarts_it_from_the_proven_chunks() {
    let (data, m) = file();
    let mut saved = saved_after(&data, &m, &[0, 1, 2, 3, 4, 8]);
    assert_eq!(saved.hashed, 5);
    // Chunk 1 zeroed, as a user overwriting the partial file would.
    let mut part = data.clone();
    part[4..8].fill(0);
    let proof = saved.prove(crc_in(&part)).unwrap();
    assert_eq!(proof, Proof { kept: 5, dropped: 1, rehash: true, inconsistent: false });
    assert_eq!((saved.hashed, saved.hash.len()), (0, 0));
    let rx = new_rx(&m, Some(saved)).unwrap();
    assert_eq!(rx.next_hash_read().map(|r| r.index), Some(0), "the hash is rebuilt by reading back");
    assert_eq!(finish(rx, &data, &m, part), [ReceiverEvent::Verified]);
}

/// Without the proof, the same partial file is confirmed as it is: the saved
/// hash covers the zeroed chunk, so the SHA-256 never sees it. The check
/// above is what keeps such a file from being answered complete.
#[test]
fn without_the_proof_a_changed_hashed_chunk_goes_unseen() {
    let (data, m) = file();
    let saved = saved_after(&data, &m, &[0, 1, 2, 3, 4, 8]);
    let mut part = data.clone();
    part[4..8].fill(0);
    let rx = new_rx(&m, Some(saved)).unwrap();
    assert_eq!(finish(rx, &data, &m, part.clone()), [ReceiverEvent::Verified]);
    assert_ne!(integrity::sha256(&part), m.sha256.unwrap(), "the bytes behind that Verified are wrong");
}

#[test]
fn a_part_cut_short_keeps_only_what_it_still_holds() {
    let (data, m) = file();
    let mut saved = saved_after(&data, &m, &(0..10).collect::<Vec<_>>());
    let part = &data[..13];
    let proof = saved.prove(crc_in(part)).unwrap();
    assert_eq!(proof, Proof { kept: 3, dropped: 7, rehash: true, inconsistent: false });
    assert_eq!(saved.held, [(0, 3)]);
    let rx = new_rx(&m, Some(saved)).unwrap();
    assert_eq!(finish(rx, &data, &m, part.to_vec()), [ReceiverEvent::Verified]);
}

#[test]
fn state_whose_crcs_do_not_fit_its_ranges_is_refused_unread() {
    let (data, m) = file();
    let good = saved_after(&data, &m, &[0, 1, 5]);
    let mut cases = Vec::new();
    let mut short = good.clone();
    short.crcs.pop();
    cases.push(short);
    let mut unordered = good.clone();
    unordered.held.reverse();
    cases.push(unordered);
    let mut outside = good.clone();
    outside.held.push((10, 11));
    outside.crcs.push(0);
    cases.push(outside);
    for mut s in cases {
        let proof = s.prove(|_| -> Result<Option<u32>, ()> { panic!("read for an inconsistent state") }).unwrap();
        assert!(proof.inconsistent, "{s:?}");
        assert_eq!(new_rx(&m, Some(s)).unwrap_err(), ResumeError::Inconsistent);
    }
}

#[test]
fn a_read_error_stops_the_proof_and_changes_nothing() {
    let (data, m) = file();
    let mut saved = saved_after(&data, &m, &[0, 1, 5]);
    let before = saved.clone();
    assert_eq!(saved.prove(|r| if r.index == 1 { Err("eio") } else { Ok(Some(0)) }), Err("eio"));
    assert_eq!(saved, before);
}

/// Saved state of an open stream is not resumed: it does not say how long the
/// short last chunk is. Once closed, a stream resumes like a file.
#[test]
fn an_open_stream_starts_over_after_a_restart() {
    let now = Instant::now();
    let open = Manifest::new_stream("s".into(), 4, Meta::default(), 7).unwrap();
    let id = ReceiverId::new("r").unwrap();
    let mut rx =
        Receiver::new(ReceiverConfig::default(), Prefix::default(), id.clone(), open.clone(), None, now).unwrap();
    rx.handle_chunk(0, &Chunk::encode(7, 0, 0, b"0123"), now).unwrap();
    let saved = rx.snapshot();
    let again = Receiver::new(ReceiverConfig::default(), Prefix::default(), id.clone(), open.clone(), Some(saved), now);
    assert_eq!(again.err(), Some(ResumeError::OpenStream));
    let end = Ctl::EndRound { run: 7, next_seq: 1, sha256: None, size: Some(10) };
    rx.handle_ctl(&end.encode(), now).unwrap();
    let closed = rx.snapshot();
    let resumed = Receiver::new(ReceiverConfig::default(), Prefix::default(), id, open, Some(closed), now).unwrap();
    assert!(resumed.held().contains(0));
}

/// Saved after the stream closed, then offered the retained open manifest from
/// before its end: the saved size holds, and the short last chunk held keeps its
/// length (the file verifies rather than failing as a contradiction).
#[test]
fn a_closed_stream_resumes_when_offered_open_again() {
    let now = Instant::now();
    let data = b"0123456789";
    let open = Manifest::new_stream("s".into(), 4, Meta::default(), 7).unwrap();
    let id = ReceiverId::new("r").unwrap();
    let mut rx =
        Receiver::new(ReceiverConfig::default(), Prefix::default(), id.clone(), open.clone(), None, now).unwrap();
    rx.handle_chunk(0, &Chunk::encode(7, 0, 0, &data[..4]), now).unwrap();
    rx.handle_chunk(2, &Chunk::encode(7, 2, 2, &data[8..]), now).unwrap();
    let end = Ctl::EndRound { run: 7, next_seq: 3, sha256: Some(integrity::sha256(data)), size: Some(10) };
    rx.handle_ctl(&end.encode(), now).unwrap();
    let saved = rx.snapshot();
    let mut rx = Receiver::new(ReceiverConfig::default(), Prefix::default(), id, open, Some(saved), now).unwrap();
    assert_eq!((rx.manifest().size, rx.manifest().chunk_count), (10, 3));
    assert_eq!(rx.bytes_held(), 6);
    rx.handle_chunk(1, &Chunk::encode(7, 3, 1, &data[4..8]), now).unwrap();
    while let Some(h) = rx.next_hash_read() {
        rx.hash_chunk(h.index, &data[h.offset as usize..(h.offset + h.len) as usize]).unwrap();
    }
    let events: Vec<_> = std::iter::from_fn(|| rx.poll_event()).collect();
    assert_eq!(events, [ReceiverEvent::Verified]);
}
