//! The sender state machine's unit tests: one per rule, on the helpers at the
//! top. Over 600 lines because the rules are many (windows, claims, streams,
//! rounds, receivers joining, leaving and lost); fuzz regressions are pinned
//! here by name.

use super::*;
use crate::wire::Meta;

fn rid(s: &str) -> ReceiverId {
    ReceiverId::new(s).unwrap()
}

/// Runs the sender until it is done: every transmit goes to `answer`, whose acks
/// are handled at once, and the timer fires at each deadline. Returns what the
/// sender published.
fn run(
    tx: &mut Sender,
    mut now: Instant,
    mut answer: impl FnMut(&Transmit) -> Vec<(ReceiverId, Ack)>,
) -> Vec<Transmit> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        while let Some(t) = tx.poll_transmit(now) {
            for (from, ack) in answer(&t) {
                tx.handle_ack(&from, &ack.encode(), now).unwrap();
            }
            out.push(t);
        }
        let Some(deadline) = tx.poll_timeout() else { return out };
        now = now.max(deadline);
        tx.handle_timeout(now);
    }
    panic!("the sender never finished");
}

fn ctl(t: &Transmit) -> Option<Ctl> {
    match &t.payload {
        Payload::Bytes(b) if t.topic.ends_with("/ctl") => Some(Ctl::decode(b).unwrap()),
        _ => None,
    }
}

/// Two receivers waited for by id that joined run 7 of a 3-chunk file.
fn joined_pair(now: Instant) -> (Sender, ReceiverId, ReceiverId) {
    let m = Manifest::new("f".into(), 10, 4, Some([1; 32]), Meta::default(), 7).unwrap();
    let (r0, r1) = (rid("r0"), rid("r1"));
    let cfg =
        SenderConfig { wait: Wait::Ids([r0.clone(), r1.clone()].into()), max_retries: 2, ..SenderConfig::default() };
    let mut tx = Sender::new(cfg, Prefix::default(), m, now);
    let ready = Ack::Ready { run: 7, held: RangeSet::new(), from_start: false }.encode();
    tx.handle_ack(&r0, &ready, now).unwrap();
    tx.handle_ack(&r1, &ready, now).unwrap();
    (tx, r0, r1)
}

/// One abort, one clear of the retained manifest, and the events (progress
/// aside): both receivers joined, both lost, then the one terminal failure, last.
fn assert_failed_once(tx: &mut Sender, out: &[Transmit], r0: ReceiverId, r1: ReceiverId) {
    assert!(tx.is_done());
    assert_eq!(tx.poll_timeout(), None);
    let aborts = out.iter().filter(|t| matches!(ctl(t), Some(Ctl::Abort { .. })));
    assert_eq!(aborts.count(), 1, "one abort");
    let manifest_topic = Prefix::default().manifest(&tx.manifest().id);
    let clears = out.iter().filter(|t| t.topic == manifest_topic && t.payload == Payload::Bytes(vec![]));
    assert_eq!(clears.count(), 1, "the manifest cleared once");
    let events: Vec<SenderEvent> =
        std::iter::from_fn(|| tx.poll_event()).filter(|e| !matches!(e, SenderEvent::Progress { .. })).collect();
    assert_eq!(
        events,
        [
            SenderEvent::ReceiverJoined { receiver: r0.clone(), held: 0 },
            SenderEvent::ReceiverJoined { receiver: r1.clone(), held: 0 },
            SenderEvent::ReceiverFailed { receiver: r0.clone(), reason: None },
            SenderEvent::ReceiverFailed { receiver: r1, reason: None },
            SenderEvent::Failed(SendFailure::ReceiverLost { receiver: r0 }),
        ]
    );
}

/// A `Ready` from a receiver that has not answered the end of round gets the end
/// of round again, but a flood of them gets one per `rto`, and none of them queues
/// a chunk that is in flight to it.
#[test]
fn readys_while_draining_ask_again_once_per_rto() {
    let now = Instant::now();
    let (mut tx, r0, _) = joined_pair(now);
    let sent: Vec<Transmit> = std::iter::from_fn(|| tx.poll_transmit(now)).collect();
    assert_eq!(sent.iter().filter(|t| matches!(t.payload, Payload::Chunk(_))).count(), 3);
    assert!(matches!(sent.last().and_then(ctl), Some(Ctl::EndRound { next_seq: 3, .. })));
    let ready = Ack::Ready { run: 7, held: RangeSet::new(), from_start: false }.encode();
    let count_end_rounds = |tx: &mut Sender, at| {
        std::iter::from_fn(|| tx.poll_transmit(at))
            .filter(|t| {
                assert!(!matches!(t.payload, Payload::Chunk(_)), "no chunk while draining");
                matches!(ctl(t), Some(Ctl::EndRound { .. }))
            })
            .count()
    };
    // Within rto of the end of round: it is on its way, nobody is asked again.
    for _ in 0..100 {
        tx.handle_ack(&r0, &ready, now).unwrap();
    }
    assert_eq!(count_end_rounds(&mut tx, now), 0);
    let later = now + Duration::from_millis(1500);
    for _ in 0..100 {
        tx.handle_ack(&r0, &ready, later).unwrap();
    }
    assert_eq!(count_end_rounds(&mut tx, later), 1);
    // All three chunks are in flight to r0 (credit 0): none is queued again, so
    // the round that follows the drain is empty of them.
    let missing = Ack::Missing { run: 7, next_seq: 3, missing: RangeSet::new(), more: false }.encode();
    tx.handle_ack(&rid("r1"), &missing, later).unwrap();
    tx.handle_ack(&r0, &missing, later).unwrap();
    assert_eq!(count_end_rounds(&mut tx, later), 0, "the drain ended; a verify round waits");
}

fn is_manifest(t: &Transmit) -> bool {
    t.topic.ends_with("/manifest") && t.payload != Payload::Bytes(Vec::new())
}

/// A one-receiver sender of a 3-chunk file, run 7, join timeout 10 s.
fn lone_sender(now: Instant) -> Sender {
    let m = Manifest::new("f".into(), 10, 4, Some([1; 32]), Meta::default(), 7).unwrap();
    let cfg = SenderConfig { join_timeout: Duration::from_secs(10), ..SenderConfig::default() };
    Sender::new(cfg, Prefix::default(), m, now)
}

/// A receiver that holds the offer in its queue is waited for, past every
/// manifest re-publication, and joins when it answers Ready: the transfer
/// finishes.
/// A `Stored` is a `Complete` that names where the file went: the sender
/// reports the name, then the receiver complete, and finishes.
#[test]
fn a_stored_answer_completes_and_names_the_file() {
    let t0 = Instant::now();
    let mut tx = lone_sender(t0);
    let r = rid("gw1");
    let sha = tx.manifest().sha256.unwrap();
    let stored = Ack::Stored {
        sha256: sha,
        name: "f (1)".into(),
        change: NameChange::Renamed,
        detail: "a different f was there".into(),
    };
    // A receiver that had the file under another name answers the manifest at once.
    run(&mut tx, t0, |t| if is_manifest(t) { vec![(r.clone(), stored.clone())] } else { Vec::new() });
    let events: Vec<SenderEvent> = std::iter::from_fn(|| tx.poll_event()).collect();
    assert_eq!(
        events,
        [
            SenderEvent::StoredAs {
                receiver: r.clone(),
                name: "f (1)".into(),
                change: NameChange::Renamed,
                detail: "a different f was there".into(),
            },
            SenderEvent::ReceiverComplete { receiver: r },
            SenderEvent::Finished,
        ]
    );
}

#[test]
fn a_queued_receiver_is_waited_for_and_joins_later() {
    let t0 = Instant::now();
    let mut tx = lone_sender(t0);
    let r = rid("gw1");
    let mut offers = 0;
    let sha = tx.manifest().sha256.unwrap();
    let out = run(&mut tx, t0, |t| {
        if !is_manifest(t) {
            return match ctl(t) {
                // A queued receiver drops the chunks sent before anyone joined,
                // and the end of round behind them.
                Some(Ctl::EndRound { .. }) if offers > 3 => vec![(r.clone(), Ack::Complete { sha256: sha })],
                _ => Vec::new(),
            };
        }
        offers += 1;
        // Queued at 3, then 1, then taken at the fourth offer (~7 s in).
        match offers {
            1 => vec![(r.clone(), Ack::Queued { run: 7, position: 3 })],
            2 | 3 => vec![(r.clone(), Ack::Queued { run: 7, position: 1 })],
            _ => vec![(r.clone(), Ack::Ready { run: 7, held: RangeSet::new(), from_start: false })],
        }
    });
    assert!(out.iter().filter(|t| is_manifest(t)).count() >= 4);
    let events: Vec<SenderEvent> =
        std::iter::from_fn(|| tx.poll_event()).filter(|e| !matches!(e, SenderEvent::Progress { .. })).collect();
    assert_eq!(
        events,
        [
            SenderEvent::Queued { receiver: r.clone(), position: 3 },
            SenderEvent::Queued { receiver: r.clone(), position: 1 },
            SenderEvent::ReceiverJoined { receiver: r.clone(), held: 0 },
            SenderEvent::ReceiverComplete { receiver: r },
            SenderEvent::Finished,
        ]
    );
}

/// Still queued when the join timeout ends: the failure says so, not "no
/// receiver answered".
#[test]
fn a_receiver_still_queued_at_the_join_timeout_is_named() {
    let t0 = Instant::now();
    let mut tx = lone_sender(t0);
    let r = rid("gw1");
    run(&mut tx, t0, |t| if is_manifest(t) { vec![(r.clone(), Ack::Queued { run: 7, position: 2 })] } else { vec![] });
    let last = std::iter::from_fn(|| tx.poll_event()).last();
    assert_eq!(last, Some(SenderEvent::Failed(SendFailure::StillQueued { receiver: r, position: 2 })));
}

/// A Queued answer for another run, or from a receiver that joined, changes
/// nothing.
#[test]
fn stale_queued_answers_are_ignored() {
    let t0 = Instant::now();
    let mut tx = lone_sender(t0);
    let r = rid("gw1");
    tx.handle_ack(&r, &Ack::Queued { run: 6, position: 1 }.encode(), t0).unwrap();
    assert_eq!(tx.poll_event(), None);
    tx.handle_ack(&r, &Ack::Ready { run: 7, held: RangeSet::new(), from_start: false }.encode(), t0).unwrap();
    tx.handle_ack(&r, &Ack::Queued { run: 7, position: 1 }.encode(), t0).unwrap();
    let events: Vec<SenderEvent> = std::iter::from_fn(|| tx.poll_event()).collect();
    assert_eq!(events, [SenderEvent::ReceiverJoined { receiver: r, held: 0 }]);
}

/// A receiver whose queue is full is offered the file again, 0.5 s doubling
/// to 5 s (plus up to half again of jitter), until the join timeout; then the
/// send fails with its refusal and detail.
#[test]
fn a_full_queue_is_retried_with_backoff_then_fails_with_its_reason() {
    let t0 = Instant::now();
    let mut tx = lone_sender(t0);
    let r = rid("gw1");
    let refusal = || Ack::Rejected { reason: RejectReason::QueueFull, detail: "256 offers waiting".into() };
    let mut offers = 0;
    run(&mut tx, t0, |t| {
        if is_manifest(t) {
            offers += 1;
            vec![(r.clone(), refusal())]
        } else {
            vec![]
        }
    });
    let events: Vec<SenderEvent> = std::iter::from_fn(|| tx.poll_event()).collect();
    let delays: Vec<Duration> = events
        .iter()
        .filter_map(|e| match e {
            SenderEvent::Retrying { retry_in, reason: RejectReason::QueueFull, .. } => Some(*retry_in),
            _ => None,
        })
        .collect();
    // 0.5, 1, 2, 4 s (each up to 1.5 times that) fit in 10 s: at least 4 offers.
    assert!(offers >= 4, "{offers} offers");
    for (i, d) in delays.iter().enumerate() {
        let base = (FIRST_RETRY_DELAY * (1 << i)).min(MAX_RETRY_DELAY);
        assert!(*d >= base && *d <= base * 3 / 2, "retry {i} after {d:?}");
    }
    assert_eq!(
        events.last(),
        Some(&SenderEvent::Failed(SendFailure::Rejected {
            receiver: r,
            reason: RejectReason::QueueFull,
            detail: "256 offers waiting".into()
        }))
    );
}

/// Senders refused together come back apart: the jitter depends on the run.
#[test]
fn retry_jitter_differs_between_runs() {
    let t0 = Instant::now();
    let delays: BTreeSet<Duration> = (0..20u32)
        .map(|run| {
            let m = Manifest::new("f".into(), 10, 4, Some([1; 32]), Meta::default(), run).unwrap();
            Sender::new(SenderConfig::default(), Prefix::default(), m, t0).retry_delay()
        })
        .collect();
    assert!(delays.len() > 10, "{delays:?}");
}

/// Found by fuzzing (`fuzz/corpus/sender/regress-progress-held-past-chunk-count`):
/// a receiver cannot make the sender report more chunks held than the file has.
#[test]
fn progress_past_the_chunk_count_is_refused() {
    let now = Instant::now();
    let (mut tx, r0, _) = joined_pair(now);
    let lie = Ack::Progress { run: 7, next_seq: 0, held: 4 }.encode();
    assert_eq!(tx.handle_ack(&r0, &lie, now), Err(DecodeError::HeldOutOfRange { held: 4, count: 3 }));
    let all = Ack::Progress { run: 7, next_seq: 0, held: 3 }.encode();
    assert_eq!(tx.handle_ack(&r0, &all, now), Ok(()));
    let progress: Vec<SenderEvent> =
        std::iter::from_fn(|| tx.poll_event()).filter(|e| matches!(e, SenderEvent::Progress { .. })).collect();
    assert_eq!(progress, [SenderEvent::Progress { receiver: r0, held: 3 }]);
}

/// A sender that cancels tells receivers `Cancelled`; one that gives up for a
/// reason of its own (an unreadable file) or starts again with smaller chunks
/// says so, and a `--once` receiver waits on for those.
#[test]
fn cancel_abandon_and_supersede_say_why() {
    let t0 = Instant::now();
    for (end, reason) in [
        (Sender::cancel as fn(&mut Sender, Instant), AbortReason::Cancelled),
        (Sender::abandon, AbortReason::Failed),
        (Sender::supersede, AbortReason::Superseded),
    ] {
        let mut tx = lone_sender(t0);
        while tx.poll_transmit(t0).is_some() {}
        end(&mut tx, t0);
        let aborts: Vec<Ctl> = std::iter::from_fn(|| tx.poll_transmit(t0)).filter_map(|t| ctl(&t)).collect();
        assert_eq!(aborts, [Ctl::Abort { run: 7, reason }]);
        assert_eq!(tx.poll_event(), Some(SenderEvent::Failed(SendFailure::Cancelled)));
    }
}

/// Found by fuzzing (`fuzz/corpus/sender/regress-two-lost-receivers-fail-twice`):
/// two receivers waited for by id never answer an end of round. Both are
/// reported lost, and the transfer fails once.
#[test]
fn two_lost_receivers_fail_once() {
    let now = Instant::now();
    let (mut tx, r0, r1) = joined_pair(now);
    let out = run(&mut tx, now, |_| Vec::new());
    assert_failed_once(&mut tx, &out, r0, r1);
}

/// The same through the other loop: both receivers answer every end of round
/// with nothing missing but never confirm the file, until the verify rounds run
/// out.
#[test]
fn two_receivers_that_never_verify_fail_once() {
    let now = Instant::now();
    let (mut tx, r0, r1) = joined_pair(now);
    let (a0, a1) = (r0.clone(), r1.clone());
    let out = run(&mut tx, now, |t| match ctl(t) {
        Some(Ctl::EndRound { run, next_seq, .. }) => [&a0, &a1]
            .map(|r| (r.clone(), Ack::Missing { run, next_seq, missing: RangeSet::new(), more: false }))
            .into(),
        _ => Vec::new(),
    });
    assert_failed_once(&mut tx, &out, r0, r1);
}

/// A receiver that dies mid-transfer leaves a drain waiting for it until it is
/// declared lost. Another that joins meanwhile (a pool member given the
/// manifest published again for the quiet one) gets what it lacks at once, and
/// its `Complete` finishes a count-of-one transfer without that wait.
#[test]
fn a_receiver_joining_a_drain_stuck_on_a_dead_one_is_served_at_once() {
    let now = Instant::now();
    let m = Manifest::new("f".into(), 10, 4, Some([1; 32]), Meta::default(), 7).unwrap();
    let mut tx = Sender::new(SenderConfig::default(), Prefix::default(), m, now);
    let ready = Ack::Ready { run: 7, held: RangeSet::new(), from_start: false }.encode();
    tx.handle_ack(&rid("dead"), &ready, now).unwrap();
    let sent: Vec<Transmit> = std::iter::from_fn(|| tx.poll_transmit(now)).collect();
    assert_eq!(sent.iter().filter(|t| matches!(t.payload, Payload::Chunk(_))).count(), 3);
    assert!(matches!(sent.last().and_then(ctl), Some(Ctl::EndRound { .. })), "draining");
    // "dead" never answers. Quiet past rto, the manifest goes out again...
    let later = now + Duration::from_millis(1500);
    tx.handle_timeout(later);
    let again: Vec<Transmit> = std::iter::from_fn(|| tx.poll_transmit(later)).collect();
    assert!(again.iter().any(is_manifest), "the manifest is published again for a quiet receiver");
    // ...and "next" answers it holding chunk 0 (from a shared partial file).
    let held: RangeSet = [0u32].into_iter().collect();
    tx.handle_ack(&rid("next"), &Ack::Ready { run: 7, held, from_start: false }.encode(), later).unwrap();
    let resent: Vec<u32> = std::iter::from_fn(|| tx.poll_transmit(later))
        .filter_map(|t| match t.payload {
            Payload::Chunk(c) => Some(c.index),
            _ => None,
        })
        .collect();
    assert_eq!(resent, [1, 2], "what the joiner lacks goes out without waiting for the dead one");
    tx.handle_ack(&rid("next"), &Ack::Complete { sha256: [1; 32] }.encode(), later).unwrap();
    assert!(tx.is_done());
    let events: Vec<SenderEvent> = std::iter::from_fn(|| tx.poll_event()).collect();
    assert_eq!(events.last(), Some(&SenderEvent::Finished), "{events:?}");
}

/// The chunks and payload topics the sender publishes now, and whether the last
/// thing was an end of round.
fn chunk_seqs(tx: &mut Sender, now: Instant) -> (Vec<(u32, u32)>, usize) {
    let mut chunks = Vec::new();
    let mut ends = 0;
    while let Some(t) = tx.poll_transmit(now) {
        match t.payload {
            Payload::Chunk(c) => chunks.push((c.index, c.seq)),
            _ if matches!(ctl(&t), Some(Ctl::EndRound { .. })) => ends += 1,
            _ => {}
        }
    }
    (chunks, ends)
}

/// Version 5: the chunks follow the manifest before anyone answered, and the end
/// of round follows them. A receiver that had them from the start joins without
/// any being sent again, and its answer to that end of round finishes it.
#[test]
fn chunks_go_out_before_anyone_answers_and_are_not_sent_twice() {
    let t0 = Instant::now();
    let mut tx = lone_sender(t0);
    let (chunks, ends) = chunk_seqs(&mut tx, t0);
    assert_eq!(chunks, [(0, 0), (1, 1), (2, 2)]);
    assert_eq!(ends, 1, "the end of round follows the last chunk");
    let r = rid("gw1");
    let ready = Ack::Ready { run: 7, held: RangeSet::new(), from_start: true }.encode();
    tx.handle_ack(&r, &ready, t0).unwrap();
    assert_eq!(chunk_seqs(&mut tx, t0), (vec![], 0), "nothing again, not even the end of round");
    tx.handle_ack(&r, &Ack::Complete { sha256: [1; 32] }.encode(), t0).unwrap();
    assert!(tx.is_done());
    assert_eq!(tx.chunks_sent(), 3);
}

/// A receiver that did not get the first chunks (it took the transfer from the
/// retained manifest, or out of its queue) says so, and gets them all again: a
/// repair, without waiting for any timer.
#[test]
fn a_receiver_that_missed_the_first_chunks_gets_them_at_once() {
    let t0 = Instant::now();
    let mut tx = lone_sender(t0);
    assert_eq!(chunk_seqs(&mut tx, t0).0.len(), 3);
    let ready = Ack::Ready { run: 7, held: [1].into_iter().collect(), from_start: false }.encode();
    tx.handle_ack(&rid("late"), &ready, t0).unwrap();
    let (chunks, ends) = chunk_seqs(&mut tx, t0);
    assert_eq!(chunks, [(0, 3), (2, 4)], "what it lacks, at once");
    assert_eq!(ends, 1);
}

/// Before anyone answered, no more than the eager window goes out, and a shut
/// eager window is no stall: the sender waits for a receiver, not for credit.
#[test]
fn the_eager_window_bounds_what_goes_out_before_anyone_answers() {
    let t0 = Instant::now();
    let m = Manifest::new("f".into(), 100, 1, Some([1; 32]), Meta::default(), 7).unwrap();
    let cfg = SenderConfig { eager_window: 4, ..SenderConfig::default() };
    let mut tx = Sender::new(cfg, Prefix::default(), m, t0);
    assert_eq!(chunk_seqs(&mut tx, t0).0, [(0, 0), (1, 1), (2, 2), (3, 3)]);
    let t1 = t0 + Duration::from_secs(5);
    tx.handle_timeout(t1);
    assert_eq!(chunk_seqs(&mut tx, t1), (vec![], 0), "no probe: nobody to ask");
    // One that had them from the start takes the rest, under the usual window.
    tx.handle_ack(&rid("r"), &Ack::Ready { run: 7, held: RangeSet::new(), from_start: true }.encode(), t1).unwrap();
    let (chunks, _) = chunk_seqs(&mut tx, t1);
    assert_eq!(chunks.first(), Some(&(4, 4)));
    assert_eq!(chunks.len(), 96);

    // Without an eager window the sender waits for a `Ready`, as before version 5.
    let m = Manifest::new("f".into(), 100, 1, Some([1; 32]), Meta::default(), 7).unwrap();
    let cfg = SenderConfig { eager_window: 0, ..SenderConfig::default() };
    let mut tx = Sender::new(cfg, Prefix::default(), m, t0);
    assert_eq!(chunk_seqs(&mut tx, t0), (vec![], 0));
}

/// A receiver that never joined and answers with another file's hash made a claim
/// on a manifest without the hash, which reached it before the sender had read
/// its file: not a failure of the transfer. The manifest goes out again, now with
/// the hash, and the receiver takes the transfer.
#[test]
fn a_late_claim_that_fails_offers_the_manifest_again() {
    let t0 = Instant::now();
    let m = Manifest::new("f".into(), 10, 4, None, Meta::default(), 7).unwrap();
    let mut tx = Sender::new(SenderConfig::default(), Prefix::default(), m, t0);
    let _ = chunk_seqs(&mut tx, t0);
    assert!(tx.wants_digest());
    tx.set_digest([1; 32], t0);
    let _ = chunk_seqs(&mut tx, t0);
    let r = rid("r");
    tx.handle_ack(&r, &Ack::Complete { sha256: [2; 32] }.encode(), t0).unwrap();
    assert!(!tx.is_done(), "a claim that failed fails nothing");
    let again = tx.poll_transmit(t0).expect("the manifest again");
    let Payload::Bytes(b) = &again.payload else { panic!("{again:?}") };
    assert!(is_manifest(&again));
    assert_eq!(Manifest::decode(b).unwrap().sha256, Some([1; 32]), "with the hash");
    tx.handle_ack(&r, &Ack::Complete { sha256: [2; 32] }.encode(), t0).unwrap();
    assert!(tx.poll_transmit(t0).is_none(), "at most once per rto");
    tx.handle_ack(&r, &Ack::Ready { run: 7, held: RangeSet::new(), from_start: false }.encode(), t0).unwrap();
    assert_eq!(chunk_seqs(&mut tx, t0).0.len(), 3);
}

/// A claim that comes before the hash is known is checked once it is: the
/// manifest goes out again with the hash once, however the claim is then
/// answered (twice made a receiver report "already have it" twice).
#[test]
fn a_claim_before_the_hash_republishes_the_manifest_once() {
    let t0 = Instant::now();
    let m = Manifest::new("f".into(), 10, 4, None, Meta::default(), 7).unwrap();
    let mut tx = Sender::new(SenderConfig::default(), Prefix::default(), m, t0);
    let _ = chunk_seqs(&mut tx, t0);
    tx.handle_ack(&rid("r"), &Ack::Complete { sha256: [1; 32] }.encode(), t0).unwrap();
    assert!(tx.wants_digest());
    tx.set_digest([1; 32], t0);
    let manifests: Vec<Transmit> = std::iter::from_fn(|| tx.poll_transmit(t0)).filter(is_manifest).collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let Payload::Bytes(b) = &manifests[0].payload else { panic!("{manifests:?}") };
    assert_eq!(Manifest::decode(b).unwrap().sha256, Some([1; 32]), "with the hash");
}

/// The sender of an open stream in 4-byte chunks, run 7.
fn stream_sender(cfg: SenderConfig, now: Instant) -> Sender {
    let m = Manifest::new_stream("s".into(), 4, Meta::default(), 7).unwrap();
    Sender::new(cfg, Prefix::default(), m, now)
}

/// An open stream's sender sends only what it has read, does not count the wait
/// as a stall, and once the end is read sends the short last chunk and an end of
/// round with the size and hash.
#[test]
fn a_stream_sends_what_is_read_and_ends_with_its_size() {
    let mut now = Instant::now();
    let cfg = SenderConfig { eager_window: 16, ..SenderConfig::default() };
    let mut s = stream_sender(cfg, now);
    let chunks = |s: &mut Sender, now| {
        std::iter::from_fn(|| s.poll_transmit(now))
            .filter_map(|t| match t.payload {
                Payload::Chunk(c) => Some((c.index, c.len)),
                Payload::Bytes(_) => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(chunks(&mut s, now), [], "nothing read yet");
    s.set_readable(2);
    assert_eq!(chunks(&mut s, now), [(0, 4), (1, 4)]);
    now += Duration::from_secs(5);
    s.handle_timeout(now);
    assert_eq!(chunks(&mut s, now), [], "waiting for input is not a stall");
    assert!(!s.is_done());
    s.set_readable(1);
    s.stream_ended(9).unwrap();
    assert_eq!(s.stream_ended(9), Err(DecodeError::BadChunkCount), "closed once");
    assert_eq!(chunks(&mut s, now), [(2, 1)]);
    assert!(s.wants_digest());
    s.set_digest([3; 32], now);
    let end = std::iter::from_fn(|| s.poll_transmit(now)).find_map(|t| ctl(&t));
    assert_eq!(end, Some(Ctl::EndRound { run: 7, next_seq: 3, sha256: Some([3; 32]), size: Some(9) }));
}

/// A stream that ends where fewer chunks exist than were already read is refused.
#[test]
fn a_stream_cannot_end_before_what_was_read() {
    let now = Instant::now();
    let mut s = stream_sender(SenderConfig::default(), now);
    s.set_readable(3);
    assert_eq!(s.stream_ended(8), Err(DecodeError::BadChunkCount));
    assert!(s.manifest().is_open());
    assert_eq!(s.stream_ended(12), Ok(()));
}

/// A receiver's claim on an open stream waits for its end: the hash cannot be
/// asked for before the stream is read to it.
#[test]
fn a_claim_on_an_open_stream_waits_for_its_end() {
    let now = Instant::now();
    let mut s = stream_sender(SenderConfig::default(), now);
    let r = rid("r");
    s.handle_ack(&r, &Ack::Complete { sha256: [3; 32] }.encode(), now).unwrap();
    assert!(!s.wants_digest(), "asked for the hash of a stream not read to its end");
    s.set_readable(2);
    s.stream_ended(8).unwrap();
    assert!(s.wants_digest(), "the claim is checked once the end is read");
}

/// A slow pipe: while an open stream waits for input, an end of round goes out
/// every `max_rto`, so that its receivers hear from the sender.
#[test]
fn a_stream_waiting_for_input_is_not_a_silent_sender() {
    let mut now = Instant::now();
    let cfg = SenderConfig { eager_window: 0, ..SenderConfig::default() };
    let max_rto = cfg.max_rto;
    let mut s = stream_sender(cfg, now);
    let r = rid("r");
    let ready = Ack::Ready { run: 7, held: RangeSet::new(), from_start: false };
    s.handle_ack(&r, &ready.encode(), now).unwrap();
    s.set_readable(1);
    assert_eq!(chunk_seqs(&mut s, now), (vec![(0, 0)], 0));
    assert_eq!(s.poll_timeout(), Some(now + max_rto), "a deadline while waiting for input");
    for _ in 0..3 {
        now += max_rto;
        s.handle_timeout(now);
        assert_eq!(chunk_seqs(&mut s, now).1, 1, "an end of round after {max_rto:?} of waiting");
    }
    assert!(!s.is_done());
}

/// Found by fuzzing (`fuzz/corpus/sender/regress-stream-progress-past-the-end`):
/// a stream's acks are decoded against the bound, so a `Progress` (or `Ready`)
/// may hold more chunks than the closed stream has; the sender counts no more
/// than there are.
#[test]
fn a_streams_receiver_holds_no_more_chunks_than_there_are() {
    let now = Instant::now();
    let mut s = stream_sender(SenderConfig::default(), now);
    let r = rid("r");
    s.set_readable(2);
    s.stream_ended(10).unwrap();
    // Answers made before the receiver learned the size.
    s.handle_ack(&r, &Ack::Ready { run: 7, held: RangeSet::full(50), from_start: false }.encode(), now).unwrap();
    s.handle_ack(&r, &Ack::Progress { run: 9, next_seq: 0, held: 2560 }.encode(), now).unwrap();
    let held: Vec<u64> = std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            SenderEvent::ReceiverJoined { held, .. } | SenderEvent::Progress { held, .. } => Some(held),
            _ => None,
        })
        .collect();
    assert!(held.iter().all(|&h| h <= 3), "{held:?}");
}

/// Found by fuzzing (`fuzz/corpus/sender/regress-stream-joined-lacking-nothing`):
/// a receiver of an open stream that answers lacking nothing (no honest one
/// does: the rest of the stream was never sent) left the sender with nothing to
/// send and no deadline. The rest of a stream goes out whatever receivers lack.
#[test]
fn the_rest_of_a_stream_goes_out_whatever_receivers_say_they_lack() {
    let now = Instant::now();
    let cfg = SenderConfig { eager_window: 0, ..SenderConfig::default() };
    let mut s = stream_sender(cfg, now);
    let r = rid("r");
    let nothing = Ack::Missing { run: 7, next_seq: 0, missing: RangeSet::new(), more: false };
    s.handle_ack(&r, &nothing.encode(), now).unwrap();
    s.set_readable(2);
    assert_eq!(chunk_seqs(&mut s, now).0, [(0, 0), (1, 1)]);
    assert!(s.poll_timeout().is_some(), "a sender waiting for input has a deadline");
}

/// Found by fuzzing (`fuzz/corpus/sender/regress-claim-on-a-stream-that-ended`):
/// a claim made while a stream was open, on a transfer that then failed, and the
/// stream's end read after: the sender wanted the hash, and `set_digest` on a
/// finished transfer does nothing, so a caller that gives it when asked looped
/// for ever. A finished transfer wants no hash.
#[test]
fn a_finished_transfer_wants_no_hash() {
    let mut now = Instant::now();
    let cfg = SenderConfig::default();
    let join_timeout = cfg.join_timeout;
    let mut s = stream_sender(cfg, now);
    let r = rid("r");
    s.handle_ack(&r, &Ack::Complete { sha256: [3; 32] }.encode(), now).unwrap();
    now += join_timeout;
    s.handle_timeout(now);
    assert!(s.is_done(), "no receiver joined");
    s.stream_ended(0).unwrap();
    assert!(!s.wants_digest());
}

/// Found by fuzzing (`fuzz/corpus/sender/regress-second-claim-after-the-end`):
/// two receivers claimed an open stream; once its hash was known the first claim
/// finished the transfer, clearing the manifest, and the second published it
/// again, retained, for ever. The claims after the end change nothing.
#[test]
fn claims_checked_after_the_transfer_finished_publish_nothing() {
    let now = Instant::now();
    let mut s = stream_sender(SenderConfig::default(), now);
    let sha = [3; 32];
    // "a" joined; "b" never did, and claims on the retained manifest.
    let ready = Ack::Ready { run: 7, held: RangeSet::new(), from_start: false };
    s.handle_ack(&rid("a"), &ready.encode(), now).unwrap();
    for r in ["a", "b"] {
        s.handle_ack(&rid(r), &Ack::Complete { sha256: sha }.encode(), now).unwrap();
    }
    s.stream_ended(0).unwrap();
    while s.poll_transmit(now).is_some() {}
    s.set_digest(sha, now);
    let manifests: Vec<Transmit> =
        std::iter::from_fn(|| s.poll_transmit(now)).filter(|t| t.topic.ends_with("/manifest")).collect();
    assert!(s.is_done());
    assert!(manifests.last().is_some_and(|t| !is_manifest(t)), "the last manifest publish clears it");
}
