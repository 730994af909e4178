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
