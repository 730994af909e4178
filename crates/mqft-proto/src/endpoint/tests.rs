use super::*;
use crate::{AbortReason, Meta, Payload};

fn manifest(name: &str) -> Manifest {
    Manifest::new(name.into(), 10, 4, Some([7; 32]), Meta::default(), 1).unwrap()
}

fn endpoint(limits: Limits) -> (ReceiverEndpoint, Prefix) {
    let prefix = Prefix::new("mqft").unwrap();
    (ReceiverEndpoint::new(prefix.clone(), ReceiverId::new("r1").unwrap(), limits), prefix)
}

/// The acks the endpoint sent, decoded.
fn acks(ep: &mut ReceiverEndpoint, chunk_count: u32) -> Vec<Ack> {
    std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| match t.payload {
            Payload::Bytes(b) => Ack::decode(&b, chunk_count).unwrap(),
            Payload::Chunk(_) => panic!("an endpoint sends no chunks"),
        })
        .collect()
}

#[test]
fn messages_of_open_transfers_are_routed_to_them() {
    let (mut ep, p) = endpoint(Limits::default());
    let m = manifest("a");
    assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), Some(Routed::Offer(m.clone())));
    ep.accept(m.id);
    assert_eq!(ep.handle(&p.chunk(&m.id, 2), b"x"), Some(Routed::Chunk(m.id, 2)));
    assert_eq!(ep.handle(&p.ctl(&m.id), b"x"), Some(Routed::Ctl(m.id)));
    assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), Some(Routed::Manifest(m.clone())));
    // Garbage under a transfer in progress is ignored, not refused.
    assert_eq!(ep.handle(&p.manifest(&m.id), b"\x02junk"), None);
    assert!(ep.poll_transmit().is_none());
    // Other receivers' acks and other prefixes are none of ours.
    assert_eq!(ep.handle(&p.ack(&m.id, &ReceiverId::new("r2").unwrap()), b""), None);
    assert_eq!(ep.handle("other/x", b""), None);
}

#[test]
fn bad_and_misplaced_manifests() {
    let (mut ep, p) = endpoint(Limits::default());
    let (a, b) = (manifest("a"), manifest("b"));
    // Under another transfer's topic: ignored without an answer.
    assert_eq!(ep.handle(&p.manifest(&a.id), &b.encode()), None);
    assert!(ep.poll_transmit().is_none());
    // A cleared manifest is never answered.
    assert_eq!(ep.handle(&p.manifest(&a.id), b""), None);
    assert!(ep.poll_transmit().is_none());
    // Undecodable: refused as BadManifest, with the decoder's words.
    assert_eq!(ep.handle(&p.manifest(&a.id), b"\x01"), None);
    assert!(matches!(&acks(&mut ep, 3)[..], [Ack::Rejected { reason: RejectReason::BadManifest, detail }]
        if !detail.is_empty()));
}

#[test]
fn a_completed_transfer_is_answered_from_history_only_after_a_check() {
    let (mut ep, p) = endpoint(Limits::default());
    let m = manifest("a");
    ep.accept(m.id);
    ep.ended(&m.id);
    ep.completed(m.clone());
    ep.closed(&m.id);
    assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), Some(Routed::CheckHistory(m.clone())));
    assert!(ep.poll_transmit().is_none(), "nothing is confirmed before the disk is checked");
    assert_eq!(ep.history_checked(m.clone(), m.sha256), None);
    assert_eq!(acks(&mut ep, m.chunk_count), [Ack::Complete { sha256: m.sha256.unwrap() }]);
    // A lost Complete: the sender's end of round asks again.
    let end = Ctl::EndRound { run: 1, next_seq: 9, sha256: None, size: None }.encode();
    assert_eq!(ep.handle(&p.ctl(&m.id), &end), Some(Routed::CheckHistory(m.clone())));
    // The file changed since: forgotten, and offered anew.
    assert_eq!(ep.history_checked(m.clone(), None), Some(Routed::Offer(m.clone())));
    assert!(ep.poll_transmit().is_none());
    assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), Some(Routed::Offer(m)));
}

#[test]
fn stale_chunk_subscriptions_are_dropped_once() {
    let (mut ep, p) = endpoint(Limits::default());
    let m = manifest("a");
    assert_eq!(ep.handle(&p.chunk(&m.id, 0), b""), Some(Routed::Unsubscribe(p.chunk_filter(&m.id))));
    assert_eq!(ep.handle(&p.chunk(&m.id, 1), b""), None);
}

#[test]
fn offers_past_the_slots_wait_in_order_and_leave_when_withdrawn() {
    let (mut ep, p) = endpoint(Limits { max_concurrent: 1, queue: 2, ..Limits::default() });
    let [a, b, c, d] = ["a", "b", "c", "d"].map(manifest);
    assert_eq!(ep.handle(&p.manifest(&a.id), &a.encode()), Some(Routed::Offer(a.clone())));
    ep.accept(a.id);
    for m in [&b, &c, &d] {
        assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), None);
    }
    let [ack_b, ack_c, ack_d] = <[Ack; 3]>::try_from(acks(&mut ep, 3)).unwrap();
    assert_eq!((ack_b, ack_c), (Ack::Queued { run: 1, position: 1 }, Ack::Queued { run: 1, position: 2 }));
    assert!(matches!(ack_d, Ack::Rejected { reason: RejectReason::QueueFull, .. }));
    // A re-published manifest keeps its place and takes the new run.
    let c2 = Manifest { run: 5, ..c.clone() };
    assert_eq!(ep.handle(&p.manifest(&c.id), &c2.encode()), None);
    assert_eq!(acks(&mut ep, 3), [Ack::Queued { run: 5, position: 2 }]);
    // No slot yet.
    assert_eq!(ep.next_admitted(), None);
    // b's sender aborts: it leaves the queue, unanswered.
    let abort = Ctl::Abort { run: 1, reason: AbortReason::Cancelled }.encode();
    assert_eq!(ep.handle(&p.ctl(&b.id), &abort), None);
    assert_eq!(ep.queued_position(&c.id), Some(1));
    assert!(ep.poll_transmit().is_none());
    // a ends: c takes the slot, with its newest run.
    ep.ended(&a.id);
    assert_eq!(ep.next_admitted(), Some(Routed::Offer(c2)));
    ep.accept(c.id);
    assert_eq!(ep.next_admitted(), None);
}

#[test]
fn stopping_tells_every_queued_sender() {
    let (mut ep, p) = endpoint(Limits { max_concurrent: 1, ..Limits::default() });
    let [a, b] = ["a", "b"].map(manifest);
    ep.accept(a.id);
    assert_eq!(ep.handle(&p.manifest(&b.id), &b.encode()), None);
    let _ = acks(&mut ep, 3);
    ep.stop();
    assert!(matches!(&acks(&mut ep, 3)[..], [Ack::Rejected { reason: RejectReason::Cancelled, .. }]));
    assert_eq!(ep.queued(), 0);
    // No new offers once stopping.
    ep.ended(&a.id);
    let c = manifest("c");
    assert_eq!(ep.handle(&p.manifest(&c.id), &c.encode()), None);
    assert!(ep.poll_transmit().is_none());
}

#[test]
fn too_large_is_refused_without_io() {
    let (mut ep, p) = endpoint(Limits { max_size: Some(9), ..Limits::default() });
    let m = manifest("a");
    assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), None);
    assert!(matches!(&acks(&mut ep, 3)[..], [Ack::Rejected { reason: RejectReason::TooLarge, .. }]));
}

/// Fuzz finding (`receiver_endpoint`): a caller that decides on an offer later
/// than at once, while the same transfer queued again, was handed it once more
/// when a slot freed, though it was open.
#[test]
fn an_accepted_offer_leaves_the_queue() {
    let (mut ep, p) = endpoint(Limits { max_concurrent: 2, ..Limits::default() });
    let [a, b] = ["a", "b"].map(manifest);
    ep.accept(a.id);
    assert_eq!(ep.handle(&p.manifest(&b.id), &b.encode()), Some(Routed::Offer(b.clone())));
    ep.accept(manifest("c").id);
    // Slots full now: b offered again queues, then the first offer is accepted.
    assert_eq!(ep.handle(&p.manifest(&b.id), &b.encode()), None);
    assert_eq!(ep.queued_position(&b.id), Some(1));
    ep.ended(&a.id);
    ep.accept(b.id);
    assert_eq!(ep.queued(), 0);
    ep.ended(&b.id);
    assert_eq!(ep.next_admitted(), None);
}

/// Fuzz finding (`receiver_endpoint`): a history check answered after the
/// transfer was taken again offered it a second time, open.
#[test]
fn a_late_history_check_of_an_open_transfer_does_nothing() {
    let (mut ep, p) = endpoint(Limits::default());
    let m = manifest("a");
    ep.completed(m.clone());
    assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), Some(Routed::CheckHistory(m.clone())));
    let end = Ctl::EndRound { run: 1, next_seq: 9, sha256: None, size: None }.encode();
    assert_eq!(ep.handle(&p.ctl(&m.id), &end), Some(Routed::CheckHistory(m.clone())));
    assert_eq!(ep.history_checked(m.clone(), None), Some(Routed::Offer(m.clone())));
    ep.accept(m.id);
    assert_eq!(ep.history_checked(m.clone(), None), None);
    assert_eq!(ep.history_checked(m.clone(), m.sha256), None);
    assert!(ep.poll_transmit().is_none());
}

#[test]
fn a_sender_endpoint_routes_acks_of_open_transfers() {
    let p = Prefix::new("mqft").unwrap();
    let mut ep = SenderEndpoint::new(p.clone());
    let (m, rid) = (manifest("a"), ReceiverId::new("r1").unwrap());
    assert_eq!(ep.handle(&p.ack(&m.id, &rid)), None);
    ep.opened(m.id);
    ep.opened(m.id);
    assert_eq!(ep.handle(&p.ack(&m.id, &rid)), Some(AckFor { id: m.id, from: rid.clone() }));
    assert_eq!(ep.handle(&p.manifest(&m.id)), None);
    assert_eq!(ep.handle(&p.ctl(&m.id)), None);
    ep.closed(&m.id);
    assert!(ep.is_open(&m.id), "one run of it is still open");
    ep.closed(&m.id);
    assert_eq!(ep.handle(&p.ack(&m.id, &rid)), None);
}

#[test]
fn a_manifest_addressed_to_others_is_ignored_without_a_word() {
    let (mut ep, p) = endpoint(Limits::default());
    let r2 = ReceiverId::new("r2").unwrap();
    let m = manifest("a").with_to([r2]).unwrap();
    assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), None);
    assert!(ep.poll_transmit().is_none(), "no ack, not even a refusal");
    assert_eq!(ep.poll_event(), Some(EndpointEvent::NotAddressed { id: m.id }));
    // Nor does it answer from history a transfer it was not sent.
    let end = Ctl::EndRound { run: 1, next_seq: 9, sha256: None, size: None }.encode();
    assert_eq!(ep.handle(&p.ctl(&m.id), &end), None);
    // Listed among others: an offer.
    let m = manifest("b").with_to([ReceiverId::new("r2").unwrap(), ReceiverId::new("r1").unwrap()]).unwrap();
    assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), Some(Routed::Offer(m)));
}

#[test]
fn several_prefixes_and_wildcards_answer_under_the_concrete_prefix() {
    let pats = ["site1/cams", "site/+/cams", "site/a/cams"].map(|p| PrefixPattern::new(p).unwrap());
    let mut ep = ReceiverEndpoint::with_patterns(pats.to_vec(), ReceiverId::new("r1").unwrap(), Limits::default());
    // The covered pattern is dropped: a broker would deliver its messages twice.
    assert_eq!(ep.patterns(), &pats[..2]);
    let (a, b) = (Prefix::new("site/a/cams").unwrap(), Prefix::new("site1/cams").unwrap());
    let m = manifest("a");
    assert_eq!(ep.handle(&a.manifest(&m.id), &m.encode()), Some(Routed::Offer(m.clone())));
    assert_eq!(ep.origin(&m.id), Some(&a));
    ep.accept(m.id);
    assert_eq!(ep.origin(&m.id), Some(&a));
    assert_eq!(ep.handle(&a.chunk(&m.id, 1), b""), Some(Routed::Chunk(m.id, 1)));
    // The same transfer under another prefix waits until this one ends.
    assert_eq!(ep.handle(&b.manifest(&m.id), &m.encode()), None);
    assert_eq!(ep.handle(&b.chunk(&m.id, 1), b""), None);
    // Refusals go where the offer came from.
    let n = manifest("n");
    assert_eq!(ep.handle(&b.manifest(&n.id), &n.encode()), Some(Routed::Offer(n.clone())));
    ep.refuse(&n, RejectReason::Exists, String::new());
    assert_eq!(ep.poll_transmit().map(|t| t.topic), Some(b.ack(&n.id, &ReceiverId::new("r1").unwrap())));
    // Stale chunks are dropped under their own prefix.
    let x = manifest("x");
    assert_eq!(ep.handle(&b.chunk(&x.id, 0), b""), Some(Routed::Unsubscribe(b.chunk_filter(&x.id))));
    assert_eq!(ep.handle(&a.chunk(&x.id, 0), b""), Some(Routed::Unsubscribe(a.chunk_filter(&x.id))));
    // Undecodable manifests are refused under their own prefix too.
    assert_eq!(ep.handle(&b.manifest(&x.id), b"\x01"), None);
    assert_eq!(ep.poll_transmit().map(|t| t.topic), Some(b.ack(&x.id, &ReceiverId::new("r1").unwrap())));
    // Not listened under: nothing.
    assert_eq!(ep.handle(&Prefix::new("site/a/b/cams").unwrap().manifest(&x.id), &x.encode()), None);
}

#[test]
fn queued_offers_are_answered_under_their_own_prefix() {
    let pats = ["p1", "p2"].map(|p| PrefixPattern::new(p).unwrap());
    let limits = Limits { max_concurrent: 1, ..Limits::default() };
    let mut ep = ReceiverEndpoint::with_patterns(pats.to_vec(), ReceiverId::new("r1").unwrap(), limits);
    let (p1, p2) = (Prefix::new("p1").unwrap(), Prefix::new("p2").unwrap());
    let [a, b] = ["a", "b"].map(manifest);
    assert!(ep.handle(&p1.manifest(&a.id), &a.encode()).is_some());
    ep.accept(a.id);
    assert_eq!(ep.handle(&p2.manifest(&b.id), &b.encode()), None);
    let rid = ReceiverId::new("r1").unwrap();
    assert_eq!(ep.poll_transmit().map(|t| t.topic), Some(p2.ack(&b.id, &rid)));
    ep.ended(&a.id);
    assert_eq!(ep.next_admitted(), Some(Routed::Offer(b.clone())));
    assert_eq!(ep.origin(&b.id), Some(&p2));
    ep.accept(b.id);
    assert_eq!(ep.origin(&b.id), Some(&p2));
}

#[test]
fn the_queue_counts_bytes() {
    let mut q = OfferQueue::default();
    let (a, b) = (manifest("a"), manifest("bb"));
    q.push(a.clone(), Prefix::default());
    q.push(b.clone(), Prefix::default());
    assert_eq!(q.position(&b.id), Some(2));
    assert_eq!(q.remove(&a.id), Some(a));
    assert_eq!(q.position(&b.id), Some(1));
    assert_eq!(q.bytes, cost(&b));
    assert_eq!(q.pop(), Some((b, Prefix::default())));
    assert_eq!(q.bytes, 0);
}

#[test]
fn memories_stay_bounded() {
    let (mut ep, p) = endpoint(Limits::default());
    for i in 0..(COMPLETED_MEMORY + 10) {
        ep.completed(manifest(&format!("f{i}")));
    }
    assert_eq!(ep.completed.len(), COMPLETED_MEMORY);
    for i in 0..(STALE_MEMORY as u64 + 10) {
        let id = crate::transfer_id(i, 1, None, "x", None);
        let _ = ep.handle(&p.chunk(&id, 0), b"");
    }
    assert!(ep.stale.len() <= STALE_MEMORY);
}

/// With the chunk wildcard, an offer handed over straight from a live manifest
/// is accepted as early; one from a retained copy, one taken out of the queue,
/// or any without the wildcard is not. Chunks of transfers not open are dropped
/// silently under the wildcard, and unsubscribed without it.
#[test]
fn only_a_live_offer_under_the_chunk_wildcard_is_early() {
    let limits = Limits { max_concurrent: 1, ..Limits::default() };
    let (mut ep, p) = endpoint(limits.clone());
    ep.set_chunk_wildcard(true);
    let (live, retained, queued) = (manifest("live"), manifest("retained"), manifest("queued"));
    assert_eq!(ep.handle(&p.chunk(&live.id, 0), b"x"), None, "no unsubscribe under the wildcard");
    assert_eq!(ep.handle(&p.manifest(&live.id), &live.encode()), Some(Routed::Offer(live.clone())));
    assert!(ep.is_early(&live.id));
    assert!(ep.accept(live.id));
    // The one slot is taken: the next offer waits in the queue.
    assert_eq!(ep.handle(&p.manifest(&queued.id), &queued.encode()), None);
    ep.ended(&live.id);
    ep.closed(&live.id);
    assert_eq!(ep.next_admitted(), Some(Routed::Offer(queued.clone())));
    assert!(!ep.accept(queued.id), "its first chunks came while it waited");
    ep.ended(&queued.id);
    ep.closed(&queued.id);
    assert_eq!(
        ep.handle_retained(&p.manifest(&retained.id), &retained.encode()),
        Some(Routed::Offer(retained.clone()))
    );
    assert!(!ep.accept(retained.id), "a retained copy may be old");

    let (mut ep, p) = endpoint(limits);
    let m = manifest("plain");
    assert_eq!(ep.handle(&p.manifest(&m.id), &m.encode()), Some(Routed::Offer(m.clone())));
    assert!(!ep.accept(m.id), "without the wildcard");
    let other = manifest("other");
    assert_eq!(ep.handle(&p.chunk(&other.id, 0), b"x"), Some(Routed::Unsubscribe(p.chunk_filter(&other.id))));
}
