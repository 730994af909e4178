//! Held transfers (PROTOCOL.md 17): no sender, the chunks at the broker.

use super::*;
use crate::integrity;
use crate::wire::Meta;

/// A 40-chunk file of 4-byte chunks, its manifest held, and a receiver of it
/// held for an hour from `now`.
fn held(now: Instant) -> (Vec<u8>, Manifest, Receiver) {
    let data: Vec<u8> = (0..160u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut m = Manifest::new("f".into(), 160, 4, Some(integrity::sha256(&data)), Meta::default(), 9).unwrap();
    m.hold_until_ms = Some(1_700_000_000_000);
    let id = ReceiverId::new("r").unwrap();
    let mut rx = Receiver::new(ReceiverConfig::default(), Prefix::default(), id, m.clone(), None, now).unwrap();
    rx.set_hold_until(now + Duration::from_secs(3600));
    (data, m, rx)
}

fn give(rx: &mut Receiver, data: &[u8], i: u32, now: Instant) {
    let at = i as usize * 4;
    let payload = Chunk::encode(9, i, i, &data[at..at + 4]);
    assert!(rx.handle_chunk(i, &payload, now).unwrap().is_some(), "chunk {i} was new");
}

fn events(rx: &mut Receiver) -> Vec<ReceiverEvent> {
    std::iter::from_fn(|| rx.poll_event()).collect()
}

/// A receiver of a live transfer gives up on a silent sender after
/// `give_up_after`; of a held one, not before the hold ends: nobody is meant
/// to be sending, the broker holds the chunks.
#[test]
fn a_held_transfer_is_not_given_up_on_within_the_hold() {
    let now = Instant::now();
    let (data, _, mut rx) = held(now);
    give(&mut rx, &data, 0, now);
    let end = now + Duration::from_secs(3600);
    let mut timers = 0;
    loop {
        let t = rx.poll_timeout().expect("a timer while receiving");
        if t >= end {
            break;
        }
        timers += 1;
        rx.handle_timeout(t);
        assert!(!events(&mut rx).iter().any(|e| matches!(e, ReceiverEvent::Failed(_))), "gave up at {t:?}");
        assert!(!rx.is_done());
    }
    assert!(timers > 200, "it kept announcing itself through the hour: {timers} timers");
    rx.handle_timeout(end);
    assert!(events(&mut rx).contains(&ReceiverEvent::Failed(ReceiveFailure::SenderGone)));
}

/// What the broker did not hand over on the wildcard subscription (its queue
/// limit) is asked for again in batches: the first at a silence, each next one
/// as soon as the last has arrived, until the file is whole.
#[test]
fn missing_chunks_of_a_held_transfer_are_fetched_again_in_batches() {
    let now = Instant::now();
    let (data, m, mut rx) = held(now);
    for i in 0..10 {
        give(&mut rx, &data, i, now);
    }
    assert_eq!(events(&mut rx), [], "no refetch while chunks arrive");
    // The credit timer first, then the silence (`held_silence`).
    rx.handle_timeout(now + ReceiverConfig::default().ack_delay);
    assert_eq!(events(&mut rx), []);
    let silence = now + ReceiverConfig::default().held_silence;
    assert_eq!(rx.poll_timeout(), Some(silence));
    rx.handle_timeout(silence);
    assert_eq!(events(&mut rx), [ReceiverEvent::Refetch((10..26).collect())]);
    for i in 10..25 {
        give(&mut rx, &data, i, silence);
    }
    assert_eq!(events(&mut rx), [], "the batch is not in yet");
    give(&mut rx, &data, 25, silence);
    assert_eq!(events(&mut rx), [ReceiverEvent::Refetch((26..40).collect())], "the next batch at once");
    for i in 26..40 {
        give(&mut rx, &data, i, silence);
    }
    assert_eq!(events(&mut rx), [ReceiverEvent::Verified]);
    while rx.poll_transmit().is_some() {}
    rx.finalized(silence);
    let confirm = rx.poll_transmit().expect("the confirmation");
    assert!(confirm.retain, "a held transfer's confirmation stays at the broker");
    assert_eq!(confirm.topic, Prefix::default().ack(&m.id, &ReceiverId::new("r").unwrap()));
}

/// A live transfer's missing chunks are the sender's to repair: no refetch, and
/// the confirmation is not retained.
#[test]
fn a_live_transfer_is_never_refetched() {
    let now = Instant::now();
    let data: Vec<u8> = (0..16u8).collect();
    let m = Manifest::new("f".into(), 16, 4, Some(integrity::sha256(&data)), Meta::default(), 9).unwrap();
    let id = ReceiverId::new("r").unwrap();
    let mut rx = Receiver::new(ReceiverConfig::default(), Prefix::default(), id, m, None, now).unwrap();
    give(&mut rx, &data, 0, now);
    for _ in 0..5 {
        let t = rx.poll_timeout().unwrap();
        rx.handle_timeout(t);
    }
    assert!(!events(&mut rx).iter().any(|e| matches!(e, ReceiverEvent::Refetch(_))));
    for i in 1..4 {
        give(&mut rx, &data, i, now);
    }
    assert_eq!(events(&mut rx), [ReceiverEvent::Verified]);
    while rx.poll_transmit().is_some() {}
    rx.finalized(now);
    assert!(!rx.poll_transmit().unwrap().retain);
}
