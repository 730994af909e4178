//! Network faults between a client and its broker, injected by the test
//! proxy ([`mqft_tests::proxy::Proxy`]): latency, bandwidth limits,
//! connections reset in the middle of a packet, half-open connections that
//! only a keep-alive finds, and a link that goes down for seconds. The proxy
//! sits between the sender and the broker in some tests and between the
//! receiver and the broker in others.
//!
//! Each test asserts a byte-identical file that was not sent again from the
//! start (the sender's chunk publishes stay well below one and a half times
//! the chunk count), and where it matters, how long the fault took to notice.
//! As in `faults`, the receiver's link is paced so that a transfer lasts a
//! few seconds, and "mid-transfer" is read from its progress events.
//!
//! The last tests reset a client's link while its last publishes are still
//! on the way, as it closes: a `once` receiver's `Complete`, a sender's
//! `Abort` and the empty manifest that clears the retained one.

use std::process::Command;
use std::time::{Duration, Instant};

use mqft::{Client, Config, MqttVersion, ReceiveEvent, SendEvent, SendReport};
use mqft_tests::proxy::{Direction, Proxy};
use mqft_tests::{files_equal, mosquitto_client, random_file, wait_until, Broker, Process, HOST};

use crate::fault_util::{
    client_at, held_at_least, paced_link, poll_until, windowed, windowed_flags, Cli, Finished, CHUNK,
    RECONNECT_BACKOFF, WAIT,
};
use crate::util::{connected, drain, next_matching, receive_opts, within};

/// The file size of these tests: about a second on a paced link.
const LEN: u64 = 8 << 20;

/// The keep-alive of the half-open tests, the shortest the CLI accepts.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// A half-open connection must be noticed within two keep-alives (a ping
/// goes unanswered, and the next tick finds it still unanswered), plus room
/// for a busy machine.
const NOTICE_HALF_OPEN: Duration = Duration::from_secs(2 * 5 + 3);

/// Asserts that a send did not start over: fewer than one and a half times
/// the chunk count were published.
fn assert_not_started_over(report: &SendReport) {
    let sent = &report.files[0];
    assert!(
        sent.transmissions < sent.chunks + sent.chunks / 2,
        "{} chunk publishes for {} chunks: the faults should cost a few windows, not the file",
        sent.transmissions,
        sent.chunks
    );
}

/// The same for a CLI sender's summary.
fn assert_cli_not_started_over(sent: &Finished) {
    let (chunks, transmissions) = (sent.summary_number("chunks"), sent.summary_number("transmissions"));
    assert!(transmissions < chunks + chunks / 2, "{transmissions} chunk publishes for {chunks} chunks\n{}", sent.text);
}

/// How many events of `events` match.
fn count<E>(events: &[E], wanted: impl Fn(&E) -> bool) -> usize {
    events.iter().filter(|e| wanted(e)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_laggy_network_neither_loses_nor_resends_anything() {
    const RATE: u64 = 6 << 20;
    let broker = Broker::start();
    // 25 ms each way on both links (a 100 ms round trip from the sender to the
    // receiver and back), and the sender's uplink at 6 MiB/s.
    let to_sender = Proxy::start(broker.addr());
    to_sender.set_latency(Duration::from_millis(25));
    to_sender.set_bandwidth(Direction::ClientToServer, Some(RATE));
    let to_receiver = Proxy::start(broker.addr());
    to_receiver.set_latency(Duration::from_millis(25));
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "laggy.bin", LEN, 9801);

    let mut opts = receive_opts("rx-laggy");
    opts.once = true;
    let mut rx = client_at(to_receiver.port(), MqttVersion::V5).receive(out.path(), opts);
    connected(&mut rx).await;
    let started = Instant::now();
    let report = within("the send", client_at(to_sender.port(), MqttVersion::V5).send([&path], windowed()).wait())
        .await
        .unwrap();
    within("the receive", rx.wait()).await.unwrap();
    let took = started.elapsed();
    assert!(files_equal(&path, &out.path().join("laggy.bin")));
    assert!(took >= Duration::from_secs_f64(LEN as f64 / RATE as f64 * 0.8), "{LEN} bytes at {RATE} B/s in {took:?}");
    // A slow link is not a lossy one: not one chunk was sent twice.
    let sent = &report.files[0];
    assert_eq!(sent.transmissions, sent.chunks, "chunks were sent again over a link that lost nothing");
}

/// A library sender through `sender_link` and a receiver through
/// `receiver_link`; `fault` arms a reset when the receiver holds 1/8, 3/8 and
/// 5/8 of the file, and each time the test waits until it happened. Returns
/// both sides' events and the send's report.
async fn transfer_with_three_resets(
    sender_link: &Proxy,
    receiver_link: &Proxy,
    name: &str,
    seed: u64,
    fault: impl Fn(),
) -> (Vec<SendEvent>, Vec<ReceiveEvent>, SendReport) {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), name, LEN, seed);
    let mut opts = receive_opts("rx-faults");
    opts.once = true;
    let mut rx = client_at(receiver_link.port(), MqttVersion::V5).receive(out.path(), opts);
    connected(&mut rx).await;
    let mut send = client_at(sender_link.port(), MqttVersion::V5).send([&path], windowed());
    let resets = || sender_link.resets() + receiver_link.resets();
    let mut rx_events = Vec::new();
    for k in 0..3 {
        let target = LEN * (1 + 2 * k) / 8;
        within(&format!("the receiver to hold {target} bytes"), async {
            loop {
                let event = rx.next_event().await.expect("the receive ended early");
                let there = matches!(event, ReceiveEvent::Progress { bytes, .. } if bytes >= target);
                rx_events.push(event);
                if there {
                    return;
                }
            }
        })
        .await;
        let before = resets();
        fault();
        assert!(poll_until(WAIT, || resets() > before).await, "reset {k} did not happen within {WAIT:?}");
    }
    rx_events.extend(drain(&mut rx).await);
    within("the receive", rx.wait()).await.unwrap();
    let send_events = drain(&mut send).await;
    let report = within("the send", send.wait()).await.unwrap();
    assert!(files_equal(&path, &out.path().join(name)), "the file differs after the resets");
    (send_events, rx_events, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_in_the_middle_of_chunk_publishes_on_the_senders_link() {
    let broker = Broker::start();
    let to_sender = Proxy::start(broker.addr());
    let to_receiver = paced_link(&broker);
    // Each time: the broker gets half of a chunk publish, then a reset.
    let (send_events, _, report) = transfer_with_three_resets(&to_sender, &to_receiver, "cut-tx.bin", 9901, || {
        to_sender.cut_mid_packet(Direction::ClientToServer)
    })
    .await;
    assert_eq!(to_sender.resets(), 3);
    assert!(to_sender.accepted() >= 4, "the sender should have connected 4 times, not {}", to_sender.accepted());
    assert!(count(&send_events, |e| matches!(e, SendEvent::Disconnected { .. })) >= 3, "{send_events:#?}");
    assert_not_started_over(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_in_the_middle_of_chunk_deliveries_on_the_receivers_link() {
    let broker = Broker::start();
    let to_sender = Proxy::start(broker.addr());
    let to_receiver = paced_link(&broker);
    // Each time: the receiver gets half of a chunk, then a reset. Its broker
    // session keeps what was not acknowledged, and sends it again.
    let (_, rx_events, report) = transfer_with_three_resets(&to_sender, &to_receiver, "cut-rx.bin", 9902, || {
        to_receiver.cut_mid_packet(Direction::ServerToClient)
    })
    .await;
    assert_eq!(to_receiver.resets(), 3);
    assert!(count(&rx_events, |e| matches!(e, ReceiveEvent::Disconnected { .. })) >= 3, "{rx_events:#?}");
    assert_not_started_over(&report);
}

/// A library client of `port` with the short [`KEEPALIVE`].
fn short_keepalive(port: u16) -> Client {
    let mut cfg = Config::new(HOST, port);
    cfg.keep_alive = KEEPALIVE;
    cfg.max_backoff = RECONNECT_BACKOFF;
    Client::new(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_to_the_receiver_is_noticed_by_its_keepalive() {
    let broker = Broker::start();
    let to_receiver = paced_link(&broker);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "half-open-rx.bin", LEN, 10001);
    let mut opts = receive_opts("rx-half-open");
    opts.once = true;
    let mut rx = short_keepalive(to_receiver.port()).receive(out.path(), opts);
    connected(&mut rx).await;
    let send = client_at(broker.port(), MqttVersion::V5).send([&path], windowed());

    held_at_least(&mut rx, LEN / 8).await;
    // Nothing moves either way from now on, and nothing closes.
    assert_eq!(to_receiver.black_hole(), 1);
    let silenced = Instant::now();
    next_matching(&mut rx, "the receiver to notice", |e| matches!(e, ReceiveEvent::Disconnected { .. })).await;
    let noticed = silenced.elapsed();
    assert!(noticed <= NOTICE_HALF_OPEN, "a half-open connection went unnoticed for {noticed:?}");
    // It reconnects (a new connection through the proxy works), takes its
    // session back from the half-open one, and finishes.
    let events = drain(&mut rx).await;
    within("the receive", rx.wait()).await.unwrap();
    assert!(events.iter().any(|e| matches!(e, ReceiveEvent::Completed(_))), "{events:#?}");
    let report = within("the send", send.wait()).await.unwrap();
    assert!(files_equal(&path, &out.path().join("half-open-rx.bin")));
    assert_not_started_over(&report);
}

#[test]
fn a_half_open_connection_to_the_sender_is_noticed_by_its_keepalive() {
    let broker = Broker::start();
    let to_sender = Proxy::start(broker.addr());
    let to_receiver = paced_link(&broker);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "half-open-tx.bin", LEN, 10002);
    let mut rx = Cli::receive(to_receiver.port(), out.path(), "rx-of-half-open", &[]);
    let mut flags = windowed_flags().to_vec();
    flags.extend(["-k".into(), KEEPALIVE.as_secs().to_string()]);
    let mut sender = Cli::send(to_sender.port(), &path, &flags);

    rx.wait_held(LEN / 8);
    assert_eq!(to_sender.black_hole(), 1);
    let silenced = Instant::now();
    sender.wait_for("disconnected", NOTICE_HALF_OPEN + Duration::from_secs(5), |e| e["event"] == "disconnected");
    let noticed = silenced.elapsed();
    assert!(noticed <= NOTICE_HALF_OPEN, "a half-open connection went unnoticed for {noticed:?}");

    let sent = sender.finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&path, &out.path().join("half-open-tx.bin")));
    assert!(to_sender.accepted() >= 2, "the sender should have connected again");
    assert_cli_not_started_over(&sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receivers_link_down_for_seconds_is_survived() {
    const DOWN: Duration = Duration::from_secs(3);
    let broker = Broker::start();
    let to_receiver = paced_link(&broker);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "down-rx.bin", LEN, 10101);
    let mut opts = receive_opts("rx-down");
    opts.once = true;
    let mut rx = client_at(to_receiver.port(), MqttVersion::V5).receive(out.path(), opts);
    connected(&mut rx).await;
    let send = client_at(broker.port(), MqttVersion::V5).send([&path], windowed());

    held_at_least(&mut rx, LEN / 8).await;
    assert_eq!(to_receiver.down_for(DOWN), 1);
    let down = Instant::now();
    next_matching(&mut rx, "the receiver's disconnection", |e| matches!(e, ReceiveEvent::Disconnected { .. })).await;
    next_matching(&mut rx, "the receiver's reconnection", |e| matches!(e, ReceiveEvent::Connected { .. })).await;
    let back = down.elapsed();
    // It kept trying while the link was down, and was back soon after.
    assert!(to_receiver.refused() >= 1, "no attempt while the link was down");
    assert!(back >= DOWN && back <= DOWN + RECONNECT_BACKOFF + Duration::from_secs(3), "back after {back:?}");
    let events = drain(&mut rx).await;
    within("the receive", rx.wait()).await.unwrap();
    assert!(events.iter().any(|e| matches!(e, ReceiveEvent::Completed(_))), "{events:#?}");
    let report = within("the send", send.wait()).await.unwrap();
    assert!(files_equal(&path, &out.path().join("down-rx.bin")));
    assert_not_started_over(&report);
}

#[test]
fn the_senders_link_down_for_seconds_is_survived() {
    const DOWN: Duration = Duration::from_secs(3);
    let broker = Broker::start();
    let to_sender = Proxy::start(broker.addr());
    let to_receiver = paced_link(&broker);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "down-tx.bin", LEN, 10102);
    let mut rx = Cli::receive(to_receiver.port(), out.path(), "rx-of-down", &[]);
    let mut sender = Cli::send(to_sender.port(), &path, &windowed_flags());

    rx.wait_held(LEN / 8);
    assert_eq!(to_sender.down_for(DOWN), 1);
    // The CLI's reconnection backoff doubles from 100 ms: it tries at about
    // 0.1, 0.3, 0.7, 1.5 and 3.1 s, then 6.3 s.
    sender.wait_for("disconnected", WAIT, |e| e["event"] == "disconnected");
    let sent = sender.finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&path, &out.path().join("down-tx.bin")));
    assert!(to_sender.refused() >= 1, "no attempt while the link was down");
    let down = sent.events.iter().position(|e| e["event"] == "disconnected");
    let up = sent.events.iter().rposition(|e| e["event"] == "connected");
    assert!(down.is_some() && down < up, "the sender should reconnect after the link came back\n{}", sent.text);
    assert_cli_not_started_over(&sent);
}

/// The MQTT packet type of PUBLISH (the high nibble of its first byte).
const PUBLISH: u8 = 3;
/// The MQTT packet type of DISCONNECT.
const DISCONNECT: u8 = 14;

/// The packets in `stream`, the bytes a client wrote from its CONNECT on:
/// each one's first byte and its body (what follows the remaining length).
/// A packet cut short at the end is left out.
fn packets(stream: &[u8]) -> Vec<(u8, &[u8])> {
    let mut packets = Vec::new();
    let mut at = 0;
    while let Some(&first) = stream.get(at) {
        // The remaining length: 7 bits a byte, lowest first, at most 4 bytes.
        let (mut len, mut i) = (0usize, at + 1);
        for shift in [0, 7, 14, 21] {
            let Some(&b) = stream.get(i) else { return packets };
            len |= usize::from(b & 0x7f) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let Some(body) = stream.get(i..i + len) else { return packets };
        packets.push((first, body));
        at = i + len;
    }
    packets
}

/// The MQTT packet types (the high nibble of each fixed header) of the
/// packets in `stream`, as [`packets`] splits it.
fn packet_types(stream: &[u8]) -> Vec<u8> {
    packets(stream).into_iter().map(|(first, _)| first >> 4).collect()
}

/// Whether `stream` holds a publish that clears a retained message: QoS 1,
/// retained, no payload. Its body is the topic (with its 2-byte length) and
/// the packet id, and under MQTT 5 an empty property list (one 0 byte).
fn clears_retained(stream: &[u8]) -> bool {
    packets(stream).into_iter().any(|(first, body)| {
        // The flags: DUP (either), QoS 1, RETAIN.
        if first >> 4 != PUBLISH || first & 0x07 != 0x03 || body.len() < 2 {
            return false;
        }
        let header = 2 + usize::from(u16::from_be_bytes([body[0], body[1]])) + 2;
        matches!(body.get(header..), Some([] | [0]))
    })
}

/// The topics of the messages `broker` retains under `filter` (which
/// `sentinel` must match): a new subscriber gets them first, then the
/// sentinel published once it has subscribed, which is not retained and
/// ends `mosquitto_sub --retained-only`.
fn retained_topics(broker: &Broker, filter: &str, sentinel: &str) -> Vec<String> {
    const ID: &str = "retained-check";
    let port = broker.port().to_string();
    let mut sub = Command::new(mosquitto_client("mosquitto_sub"));
    sub.args(["-h", HOST, "-p", &port, "-i", ID, "-t", filter, "-q", "1", "-F", "%t", "--retained-only", "-W", "20"]);
    let subscriber = Process::spawn(&mut sub);
    assert!(wait_until(WAIT, || broker.has_subscription(ID, filter)), "mosquitto_sub did not subscribe");
    let mut publish = Command::new(mosquitto_client("mosquitto_pub"));
    publish.args(["-h", HOST, "-p", &port, "-t", sentinel, "-q", "1", "-m", "sentinel"]);
    assert!(Process::spawn(&mut publish).finish_within(WAIT).status.success(), "mosquitto_pub failed");
    let output = subscriber.finish_within(WAIT);
    assert!(output.status.success(), "mosquitto_sub: {}", output.status);
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

/// A `once` receiver takes a small file over a link that delays what it
/// writes by half a second. With `reset`, the link is reset as soon as the
/// receiver has written its DISCONNECT: its last acks (the `Complete`) die in
/// the delay line, while a new connection would work at once. Returns the
/// receive's and the send's results.
async fn last_ack_and_a_reset(
    reset: bool,
) -> (Result<mqft::ReceiveReport, mqft::Error>, Result<SendReport, mqft::Error>) {
    const DELAY: Duration = Duration::from_millis(500);
    let broker = Broker::start();
    let link = Proxy::start(broker.addr());
    link.set_one_way_latency(Direction::ClientToServer, DELAY);
    link.start_capture(Direction::ClientToServer);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "last-ack.bin", 8 * u64::from(CHUNK), 10201);
    let mut opts = receive_opts("rx-last-ack");
    opts.once = true;
    let mut rx = client_at(link.port(), MqttVersion::V5).receive(out.path(), opts);
    connected(&mut rx).await;
    // Short timeouts (the receiver counts as lost about 2.6 s after the first
    // unanswered end of round), still far longer than the delay.
    let mut send_opts = windowed();
    send_opts.protocol.rto = Duration::from_millis(200);
    send_opts.protocol.max_rto = Duration::from_secs(1);
    send_opts.protocol.max_retries = 3;
    let send = client_at(broker.port(), MqttVersion::V5).send([&path], send_opts);

    next_matching(&mut rx, "the file to arrive", |e| matches!(e, ReceiveEvent::Completed(_))).await;
    if reset {
        let disconnected =
            poll_until(WAIT, || packet_types(&link.captured(Direction::ClientToServer)).contains(&DISCONNECT));
        assert!(disconnected.await, "the receiver did not disconnect");
        assert_eq!(link.reset_all(), 1);
    }
    let received = within("the receive", rx.wait()).await;
    let sent = within("the send", send.wait()).await;
    assert!(files_equal(&path, &out.path().join("last-ack.bin")));
    (received, sent)
}

#[test]
fn packet_types_splits_a_stream_of_mqtt_packets() {
    // CONNECT (2-byte remaining length), PUBACK, DISCONNECT, half a PUBLISH.
    let mut stream = vec![0x10, 0x80, 0x01];
    stream.extend([0u8; 128]);
    stream.extend([0x40, 0x02, 0x00, 0x01, 0xe0, 0x00, 0x30, 0x05, 0x00]);
    assert_eq!(packet_types(&stream), [1, 4, DISCONNECT]);
}

#[test]
fn clears_retained_finds_an_empty_retained_publish() {
    // Topic "a/m", packet id 7: retained with a payload, not retained and
    // empty, then retained and empty (MQTT 3.1.1, and 5 with no properties).
    let with_payload = [0x33, 0x08, 0x00, 0x03, b'a', b'/', b'm', 0x00, 0x07, b'x'];
    let not_retained = [0x32, 0x07, 0x00, 0x03, b'a', b'/', b'm', 0x00, 0x07];
    let v311 = [0x33, 0x07, 0x00, 0x03, b'a', b'/', b'm', 0x00, 0x07];
    let v5 = [0x3b, 0x08, 0x00, 0x03, b'a', b'/', b'm', 0x00, 0x07, 0x00];
    assert!(!clears_retained(&[&with_payload[..], &not_retained].concat()));
    assert!(clears_retained(&[&with_payload[..], &v311].concat()));
    assert!(clears_retained(&v5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_last_ack_delayed_on_its_link_reaches_the_sender() {
    // The control for the test below: the same slow link, no reset.
    let (received, sent) = last_ack_and_a_reset(false).await;
    received.unwrap();
    sent.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_a_receivers_last_ack_still_lets_the_sender_finish() {
    let (received, sent) = last_ack_and_a_reset(true).await;
    // The receiver reports success: it has the file...
    received.unwrap();
    // ...so the sender must learn it too: the Complete went out at QoS 1 on a
    // persistent session, and a new connection works at once.
    sent.unwrap();
}

/// A sender behind a link that delays what it writes by half a second, its
/// `once` receiver straight on the broker. As soon as the sender has written
/// the empty retained manifest that clears the finished transfer, the link is
/// reset: that publish and the `Abort` before it die in the delay line. The
/// sender's session is clean, so the broker has nothing of them to resume,
/// and rumqttc drops them at the reconnect: the closing sender must publish
/// them again itself, or the manifest stays retained for a transfer nobody
/// serves.
async fn a_reset_as_a_sender_closes(version: MqttVersion) {
    const DELAY: Duration = Duration::from_millis(500);
    let broker = Broker::start();
    let link = Proxy::start(broker.addr());
    link.set_one_way_latency(Direction::ClientToServer, DELAY);
    link.start_capture(Direction::ClientToServer);
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "closing.bin", 8 * u64::from(CHUNK), 10301);
    let mut opts = receive_opts("rx-of-closing");
    opts.once = true;
    let mut rx = client_at(broker.port(), version).receive(out.path(), opts);
    connected(&mut rx).await;
    let send = client_at(link.port(), version).send([&path], windowed());

    let cleared = poll_until(WAIT, || clears_retained(&link.captured(Direction::ClientToServer)));
    assert!(cleared.await, "the sender did not clear its manifest");
    assert_eq!(link.reset_all(), 1);
    within("the send", send.wait()).await.unwrap();
    within("the receive", rx.wait()).await.unwrap();
    assert!(files_equal(&path, &out.path().join("closing.bin")));
    assert!(link.accepted() >= 2, "the sender did not reconnect");
    let left = retained_topics(&broker, "files/+/manifest", "files/sentinel/manifest");
    assert!(left.is_empty(), "still retained: {left:?}\n{}", broker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_as_a_sender_closes_loses_none_of_its_last_publishes_v5() {
    a_reset_as_a_sender_closes(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_as_a_sender_closes_loses_none_of_its_last_publishes_v311() {
    a_reset_as_a_sender_closes(MqttVersion::V311).await;
}
