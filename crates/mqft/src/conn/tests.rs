use super::*;

#[test]
fn large_packets_get_shorter_queues() {
    // A receiver (nothing large to send) and 256 KiB chunks: the full queues.
    assert_eq!(fitting(INFLIGHT_BYTES, 0, 32), 32);
    assert_eq!(fitting(INFLIGHT_BYTES, 256 << 10, 32), 32);
    assert_eq!(fitting(REQUEST_BYTES, 256 << 10, 16), 16);
    // 1 MiB chunks: 8 in flight and 4 in each channel, 16 MiB in all.
    assert_eq!(fitting(INFLIGHT_BYTES, 1 << 20, 32), 8);
    assert_eq!(fitting(REQUEST_BYTES, 1 << 20, 16), 4);
    // Never fewer than 4.
    assert_eq!(fitting(REQUEST_BYTES, 64 << 20, 16), 4);
}

fn outbox(capacity: usize) -> (Outbox, mpsc::Receiver<Request>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Outbox { tx, backlog: VecDeque::new(), subscriptions: BTreeMap::new(), queued_qos1: 0 }, rx)
}

fn topic(r: Request) -> String {
    match r {
        Request::Publish { topic, .. }
        | Request::Subscribe(topic)
        | Request::SubscribeLive(topic)
        | Request::Unsubscribe(topic) => topic,
        Request::Disconnect => "disconnect".into(),
    }
}

#[tokio::test]
async fn a_full_channel_backs_up_in_order_and_drains() {
    let (mut out, mut rx) = outbox(2);
    assert!(out.has_room());
    for t in ["a", "b", "c", "d"] {
        out.publish(t.into(), Qos::AtLeastOnce, false, vec![1]);
    }
    // Two went into the channel; two wait, and nothing new may be produced.
    assert!(!out.has_room());
    assert_eq!(out.backlog.len(), 2);
    assert_eq!(topic(rx.recv().await.unwrap()), "a");
    // Room again: writable resolves, and a flush moves the next one along.
    out.writable().await;
    out.flush();
    assert_eq!(out.backlog.len(), 1);
    assert!(!out.has_room());
    let mut rest = Vec::new();
    while rest.len() < 3 {
        rest.push(topic(rx.recv().await.unwrap()));
        out.flush();
    }
    assert_eq!(rest, ["b", "c", "d"]);
    assert!(out.has_room());
}

#[tokio::test]
async fn subscriptions_come_back_after_a_reconnect() {
    let (mut out, mut rx) = outbox(16);
    out.subscribe("x/+/manifest".into());
    out.subscribe("x/+/ctl".into());
    out.subscribe("x/+/ctl".into()); // once is enough
    out.subscribe("x/1/chunk/+".into());
    out.unsubscribe("x/1/chunk/+".into());
    let sent: Vec<String> = (0..4).map(|_| topic(rx.try_recv().unwrap())).collect();
    assert_eq!(sent, ["x/+/manifest", "x/+/ctl", "x/1/chunk/+", "x/1/chunk/+"]);
    assert!(rx.try_recv().is_err());
    out.resubscribe();
    let again: Vec<String> = (0..2).map(|_| topic(rx.try_recv().unwrap())).collect();
    assert_eq!(again, ["x/+/ctl", "x/+/manifest"]);
    assert!(rx.try_recv().is_err());
}

/// A connection whose poll task is the test: it feeds `events` by hand.
fn fake_connection(connect_timeout: Duration) -> (Connection, mpsc::Sender<ConnEvent>) {
    let (event_tx, events) = mpsc::channel(16);
    let (out, _rx) = outbox(4);
    let conn = Connection {
        events: Inbox::new(events, "127.0.0.1:1883".into()),
        out,
        addr: "127.0.0.1:1883".into(),
        connect_timeout,
        acked: watch::channel(0).1,
        taken: Arc::default(),
        closing: CancellationToken::new(),
        stop: CancellationToken::new(),
        poll_task: tokio::spawn(async {}),
        feed_task: tokio::spawn(async {}),
        ack_task: tokio::spawn(async {}),
    };
    (conn, event_tx)
}

fn down(kind: io::ErrorKind) -> ConnEvent {
    ConnEvent::Down(Failure::Connect(ConnectError::Io(io::Error::new(kind, "x"))))
}

#[tokio::test(start_paused = true)]
async fn network_errors_are_retried_until_the_connect_timeout() {
    let (mut conn, events) = fake_connection(Duration::from_secs(10));
    let cancel = CancellationToken::new();
    let started = Instant::now();
    events.try_send(down(io::ErrorKind::ConnectionRefused)).unwrap();
    events.try_send(down(io::ErrorKind::ConnectionReset)).unwrap();
    match conn.wait_up(&cancel).await {
        Err(Error::Unreachable { source: ConnectError::Io(e), .. }) => {
            // The last failure is the one reported.
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_connack_after_failures_is_a_connection() {
    let (mut conn, events) = fake_connection(Duration::from_secs(10));
    let cancel = CancellationToken::new();
    events.try_send(down(io::ErrorKind::ConnectionRefused)).unwrap();
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let info = ConnAckInfo {
            session_present: true,
            max_packet_size: Some(1000),
            receive_maximum: None,
            retain_available: true,
        };
        events.try_send(ConnEvent::Up(info)).unwrap();
        events
    });
    let info = conn.wait_up(&cancel).await.unwrap();
    assert_eq!(info.max_packet_size, Some(1000));
    drop(feeder.await);
}

#[tokio::test(start_paused = true)]
async fn refusals_and_tls_failures_end_the_wait_at_once() {
    let cancel = CancellationToken::new();
    for (event, refused) in [
        (ConnEvent::Down(Failure::Refused("not authorized".into())), true),
        (ConnEvent::Down(Failure::Connect(ConnectError::Tls("bad certificate".into()))), false),
    ] {
        let (mut conn, events) = fake_connection(Duration::from_secs(10));
        let started = Instant::now();
        events.try_send(event).unwrap();
        let err = conn.wait_up(&cancel).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Broker);
        assert_eq!(matches!(err, Error::Refused { .. }), refused, "{err:?}");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
    let (mut conn, _events) = fake_connection(Duration::from_secs(10));
    cancel.cancel();
    assert!(matches!(conn.wait_up(&cancel).await, Err(Error::Cancelled)));
}

/// Lets every task run until all wait: with the clock paused, the sleep ends
/// only once nothing else can run.
async fn settle() {
    sleep(Duration::from_secs(1)).await;
}

/// What rumqttc has taken from the feed task so far: its `clean` moves the
/// requests waiting in its channel into `pending`, where a test can see them.
fn taken(el: &mut rumqttc::v5::EventLoop) -> Vec<rumqttc::v5::Request> {
    el.clean();
    el.pending.drain(..).collect()
}

#[tokio::test(start_paused = true)]
async fn the_disconnect_waits_for_the_acks_of_every_qos1_publish() {
    let cfg = Config::new("127.0.0.1", 1883);
    let (client, el) = mqtt::new(&cfg, &options(&cfg, "c".into(), false, 1024, 1024)).unwrap();
    let mqtt::EventLoop::V5 { mut el, .. } = el else { panic!("mqtt 5 is the default") };
    let (req_tx, req_rx) = mpsc::channel(8);
    let (acked_tx, acked) = watch::channel(0);
    let feed = tokio::spawn(feed_loop(client, req_rx, acked, Arc::default(), None, None));
    for qos in [Qos::AtLeastOnce, Qos::AtMostOnce, Qos::AtLeastOnce] {
        let publish = Request::Publish { topic: "t".into(), qos, retain: false, payload: Bytes::new(), expiry: None };
        req_tx.send(publish).await.unwrap();
    }
    req_tx.send(Request::Disconnect).await.unwrap();
    settle().await;
    assert_eq!(taken(&mut el).len(), 3, "the three publishes, and no disconnect yet");
    // One of the two QoS 1 publishes acked: still held back.
    acked_tx.send(1).unwrap();
    settle().await;
    assert!(taken(&mut el).is_empty());
    acked_tx.send(2).unwrap();
    feed.await.unwrap();
    assert_eq!(taken(&mut el), [rumqttc::v5::Request::Disconnect]);
}

/// While a closing connection waits for the acks of its last publishes, a
/// broker's answer is still nudged (the next ack would otherwise wait ~40 ms
/// for our delayed TCP ACK); once the DISCONNECT is handed over, nothing is.
#[tokio::test(start_paused = true)]
async fn nudges_go_out_while_closing_until_the_disconnect_and_never_after() {
    let cfg = Config::new("127.0.0.1", 1883);
    let (client, el) = mqtt::new(&cfg, &options(&cfg, "c".into(), false, 1024, 1024)).unwrap();
    let mqtt::EventLoop::V5 { mut el, .. } = el else { panic!("mqtt 5 is the default") };
    let nudger = Arc::new(Nudger::default());
    let stop = CancellationToken::new();
    tokio::spawn(nudge_loop(client.clone(), "files/nudge".into(), nudger.clone(), stop.clone()));
    let (req_tx, req_rx) = mpsc::channel(8);
    let (acked_tx, acked) = watch::channel(0);
    let feed = tokio::spawn(feed_loop(client, req_rx, acked, Arc::default(), None, Some(nudger.clone())));
    let is_nudge = |r: &rumqttc::v5::Request| matches!(r, rumqttc::v5::Request::Publish(p) if p.topic == "files/nudge");
    for _ in 0..2 {
        let publish = Request::Publish {
            topic: "t".into(),
            qos: Qos::AtLeastOnce,
            retain: false,
            payload: Bytes::new(),
            expiry: None,
        };
        req_tx.send(publish).await.unwrap();
    }
    req_tx.send(Request::Disconnect).await.unwrap();
    settle().await;
    assert_eq!(taken(&mut el).len(), 2, "the two publishes");
    // The first PUBACK: the DISCONNECT still waits for the second, and the
    // broker's answer is nudged.
    acked_tx.send(1).unwrap();
    nudger.arrived();
    settle().await;
    let after_first = taken(&mut el);
    assert_eq!(after_first.len(), 1, "{after_first:?}");
    assert!(is_nudge(&after_first[0]), "{after_first:?}");
    // The second: the DISCONNECT, and no nudge after it.
    acked_tx.send(2).unwrap();
    feed.await.unwrap();
    nudger.arrived();
    settle().await;
    assert_eq!(taken(&mut el), [rumqttc::v5::Request::Disconnect]);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn the_broker_timeout_runs_from_the_first_failure_and_ends_at_a_connack() {
    let (mut conn, events) = fake_connection(Duration::from_secs(10));
    conn.set_broker_timeout(Some(Duration::from_secs(3)));
    let up = || ConnEvent::Up(ConnAckInfo::default());
    let started = Instant::now();
    // Down, then back up after 2 s: no failure.
    events.try_send(down(io::ErrorKind::ConnectionRefused)).unwrap();
    assert!(matches!(conn.events.recv().await, Ok(ConnEvent::Down(_))));
    assert!(!conn.events.is_up());
    sleep(Duration::from_secs(2)).await;
    events.try_send(up()).unwrap();
    assert!(matches!(conn.events.recv().await, Ok(ConnEvent::Up(_))));
    assert!(conn.events.is_up());
    // Down again: the limit runs from this first failure, not from a later one.
    events.try_send(down(io::ErrorKind::ConnectionReset)).unwrap();
    assert!(matches!(conn.events.recv().await, Ok(ConnEvent::Down(_))));
    let down_at = Instant::now();
    sleep(Duration::from_secs(1)).await;
    events.try_send(down(io::ErrorKind::ConnectionRefused)).unwrap();
    assert!(matches!(conn.events.recv().await, Ok(ConnEvent::Down(_))));
    match conn.events.recv().await {
        Err(e @ Error::BrokerLost { .. }) => {
            assert_eq!(e.kind(), crate::ErrorKind::Broker);
            assert!(e.to_string().ends_with("unreachable for 3 s (last error: x)"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(down_at.elapsed(), Duration::from_secs(3));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    // Closing after giving up does not wait for a broker that is gone.
    let closing = Instant::now();
    conn.close(Duration::from_secs(5)).await;
    assert_eq!(closing.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn closing_while_down_waits_only_for_what_is_owed() {
    for owed in [false, true] {
        let (mut conn, events) = fake_connection(Duration::from_secs(10));
        // A poll task that would run until the broker took the DISCONNECT.
        conn.poll_task = tokio::spawn(std::future::pending());
        events.try_send(down(io::ErrorKind::ConnectionRefused)).unwrap();
        assert!(matches!(conn.events.recv().await, Ok(ConnEvent::Down(_))));
        if owed {
            // A QoS 1 publish handed over and not acked: worth the grace, a
            // reconnect would send it again.
            conn.taken.store(1, Ordering::SeqCst);
        }
        let started = Instant::now();
        conn.close(Duration::from_secs(5)).await;
        let waited = if owed { Duration::from_secs(5) } else { Duration::ZERO };
        assert_eq!(started.elapsed(), waited, "owed: {owed}");
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_broker_timeout_an_outage_never_ends_the_wait() {
    let (mut conn, events) = fake_connection(Duration::from_secs(10));
    events.try_send(down(io::ErrorKind::ConnectionRefused)).unwrap();
    assert!(matches!(conn.events.recv().await, Ok(ConnEvent::Down(_))));
    let waited = tokio::time::timeout(Duration::from_secs(3600), conn.events.recv()).await;
    assert!(waited.is_err(), "{waited:?}");
}

#[test]
fn past_the_budget_qos0_is_dropped_and_qos1_up_to_twice_it() {
    let budget = Arc::new(Budget::default());
    let mib = 1 << 20;
    let (q0, q1) = (Qos::AtMostOnce, Qos::AtLeastOnce);
    // QoS 0 fills the budget, then is dropped.
    let mut held: Vec<Charge> = (0..8).map(|_| admit(&budget, mib, q0).unwrap()).collect();
    assert_eq!(budget.used(), MAX_BUFFERED);
    assert!(admit(&budget, 1, q0).is_none());
    // QoS 1 (its ack deferred by the poll task meanwhile) up to twice the budget.
    held.extend((0..8).map(|_| admit(&budget, mib, q1).unwrap()));
    assert_eq!(budget.used(), 2 * MAX_BUFFERED);
    assert!(admit(&budget, 1, q1).is_none());
    // The engine drops messages: room again.
    held.truncate(4);
    assert_eq!(budget.used(), 4 * mib);
    held.extend(admit(&budget, mib, q0));
    // Topics count: an empty payload on a 64 KiB topic is not free.
    drop(held);
    let charge = admit(&budget, (64 << 10) + MESSAGE_OVERHEAD, q0);
    assert_eq!(budget.used(), (64 << 10) + MESSAGE_OVERHEAD);
    // One message larger than the whole budget is taken when nothing waits.
    drop(charge);
    assert!(admit(&budget, 3 * MAX_BUFFERED, q0).is_some());
}

#[tokio::test(start_paused = true)]
async fn deferred_acks_go_out_in_order_once_the_engine_makes_room() {
    struct Sink(mpsc::UnboundedSender<u16>);
    impl AckSink for Sink {
        async fn ack(&self, pkid: u16) -> Result<(), mqtt::Closed> {
            self.0.send(pkid).map_err(|_| mqtt::Closed)
        }
    }
    let (sent_tx, mut sent) = mpsc::unbounded_channel();
    let (ack_tx, ack_rx) = mpsc::channel(8);
    let acks = Acks { budget: Arc::default(), deferred: ack_tx, waiting: Arc::default(), generation: Arc::default() };
    let closing = CancellationToken::new();
    let task = tokio::spawn(ack_loop(Sink(sent_tx), ack_rx, acks.clone(), closing.clone()));
    let over = acks.budget.try_charge(MAX_BUFFERED + 1, usize::MAX).unwrap();
    // One ack from a connection that has since broken, two from this one.
    for (generation, pkid) in [(0, 1), (1, 2), (1, 3)] {
        acks.deferred.try_send((generation, pkid)).unwrap();
        acks.waiting.fetch_add(1, Ordering::SeqCst);
    }
    acks.generation.store(1, Ordering::SeqCst);
    settle().await;
    assert!(sent.try_recv().is_err(), "no ack while the budget is spent");
    assert_eq!(acks.waiting.load(Ordering::SeqCst), 3);
    drop(over);
    settle().await;
    let mut out = Vec::new();
    while let Ok(pkid) = sent.try_recv() {
        out.push(pkid);
    }
    assert_eq!(out, [2, 3], "in order, the stale one skipped");
    assert_eq!(acks.waiting.load(Ordering::SeqCst), 0);
    // Closing stops the acks for good.
    closing.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn owed_publishes_fall_due_a_keep_alive_after_the_last_puback() {
    let limit = Duration::from_secs(30);
    let mut owed = Owed::default();
    assert_eq!(owed.deadline(limit), None, "nothing owed, nothing due");
    let t0 = Instant::now();
    owed.sent(t0);
    owed.sent(t0 + Duration::from_secs(10));
    // Due from the oldest, not from the newest.
    assert_eq!(owed.deadline(limit), Some(t0 + limit));
    // A PUBACK is progress: the clock starts again.
    owed.acked(t0 + Duration::from_secs(20));
    assert_eq!(owed.deadline(limit), Some(t0 + Duration::from_secs(50)));
    owed.acked(t0 + Duration::from_secs(25));
    assert_eq!(owed.deadline(limit), None, "all acked");
    // A stray PUBACK (one of a connection before) never underflows.
    owed.acked(t0 + Duration::from_secs(26));
    assert_eq!((owed.count, owed.deadline(limit)), (0, None));
    // The bound is the keep-alive, at least rumqttc's 5 s.
    let mut cfg = Config::new("127.0.0.1", 1883);
    assert_eq!(ack_limit(&cfg), Duration::from_secs(30));
    cfg.keep_alive = Duration::from_secs(1);
    assert_eq!(ack_limit(&cfg), Duration::from_secs(5));
}

#[tokio::test]
async fn a_closed_channel_drops_requests() {
    let (mut out, rx) = outbox(1);
    drop(rx);
    out.publish("a".into(), Qos::AtMostOnce, false, vec![]);
    assert!(out.backlog.is_empty());
}

/// A subscription made without retained messages is made so again after a
/// reconnection, or the broker would hand over every retained chunk of every
/// held transfer at each one.
#[tokio::test]
async fn a_live_subscription_stays_live_after_a_reconnect() {
    let (mut out, mut rx) = outbox(16);
    out.subscribe("x/+/manifest".into());
    out.subscribe_live("x/+/chunk/+".into());
    let live = |r: Request| matches!(r, Request::SubscribeLive(ref f) if f == "x/+/chunk/+");
    assert!(!live(rx.try_recv().unwrap()));
    assert!(live(rx.try_recv().unwrap()));
    out.resubscribe();
    let again: Vec<Request> = (0..2).map(|_| rx.try_recv().unwrap()).collect();
    assert_eq!(again.into_iter().filter(|r| matches!(r, Request::SubscribeLive(_))).count(), 1);
    out.unsubscribe("x/+/chunk/+".into());
    let _ = rx.try_recv();
    out.subscribe("x/+/chunk/+".into());
    assert!(matches!(rx.try_recv().unwrap(), Request::Subscribe(_)), "forgotten with the unsubscribe");
}
