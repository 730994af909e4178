//! A broker with a packet size limit refuses a file sent as ONE publish: the
//! reason mqft cuts files into chunks.
//!
//! Each test starts mosquitto with `max_packet_size 131072` and tries to
//! publish a 20 MiB file as a single message, one way a user might: rumqttc
//! over MQTT 5, MQTT 5 spoken by hand (a client that ignores the limit),
//! rumqttc over MQTT 3.1.1, and `mosquitto_pub -f`.
//!
//! What happens (seen with mosquitto 2.0.11 and rumqttc 0.25, and asserted
//! below):
//!
//! - MQTT 5: the broker announces its limit in CONNACK (Maximum Packet Size
//!   131072), and the client refuses the publish itself: rumqttc fails the
//!   event loop with `OutgoingPacketTooLarge`, `mosquitto_pub -V 5` sends no
//!   PUBLISH at all (and still exits 0). A client that sends it anyway is
//!   disconnected as soon as the broker has read the fixed header: DISCONNECT
//!   with reason code 0x95 (Packet too large).
//! - MQTT 3.1.1 has no way to announce a limit: the client starts sending, the
//!   broker reads the declared length, logs "disconnected due to oversize
//!   packet" and closes the connection under the client, which sees a reset
//!   connection (`mosquitto_pub -V 311` exits 7, "connection was lost").
//! - A subscriber never receives the file.
//!
//! "Never receives" is shown without sleeping: after the refusal, a small
//! sentinel message goes to the same topic, and it must be the first (and so
//! the only) message the subscriber gets. The big publish was refused before
//! the sentinel was sent, so had the broker forwarded it, it would have come
//! first. The subscribers accept packets of up to 64 MiB, so it is never their
//! own limit that keeps the file away.
//!
//! The last tests are the other half: through the same broker, mqft delivers
//! the same 20 MiB file, byte for byte, in chunks that fit. Under MQTT 5 the
//! automatic chunk size comes from the limit in CONNACK; under 3.1.1, which
//! cannot announce one, the default chunk size is small enough.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mqft::config::V311_DEFAULT_CHUNK;
use mqft::proto::wire::MAX_CHUNK_HEADER_LEN;
use mqft::{MqttVersion, ReceiveOptions, SendEvent, SendOptions};
use mqft_tests::{files_equal, mosquitto_client, random_file, wait_until, Broker, Process, HOST};
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use rumqttc::v5::mqttbytes::QoS as QoS5;

/// The broker's `max_packet_size`.
const LIMIT: u32 = 128 * 1024;
/// The file published whole: far above [`LIMIT`].
const FILE_LEN: u64 = 20 << 20;
/// What test clients accept and may send; rumqttc's default is only 10 KiB.
const CLIENT_MAX: u32 = 64 << 20;
/// The topic every test publishes the file to.
const TOPIC: &str = "mqft/test/whole-file";
/// The message that must reach the subscriber first.
const SENTINEL: &[u8] = b"sentinel";
/// The bound on every wait; the tests take well under a second each.
const WAIT: Duration = Duration::from_secs(10);
/// The broker's log line for a client cut off for an oversize packet.
const OVERSIZE_LOG: &str = "disconnected due to oversize packet";

/// A broker that refuses packets over [`LIMIT`].
fn constrained_broker() -> Broker {
    Broker::builder().max_packet_size(LIMIT).start()
}

/// The whole test file, in memory, as a one-message publish would carry it.
fn whole_file(dir: &Path) -> Vec<u8> {
    let path = random_file(dir, "whole.bin", FILE_LEN, 0x5EED);
    std::fs::read(&path).expect("read the test file")
}

/// Await `future` for at most [`WAIT`], panicking with `what` after that.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// An MQTT 5 client subscribed to [`TOPIC`] at QoS 1.
struct Subscriber {
    // Kept so that the event loop's request channel stays open.
    _client: v5::AsyncClient,
    events: v5::EventLoop,
}

impl Subscriber {
    /// Connect and subscribe; return once the broker has acknowledged the
    /// subscription, so everything published after this reaches it.
    async fn connect(broker: &Broker) -> Subscriber {
        let mut options = v5::MqttOptions::new("subscriber", HOST, broker.port());
        options.set_max_packet_size(Some(CLIENT_MAX));
        let (client, mut events) = v5::AsyncClient::new(options, 10);
        client.subscribe(TOPIC, QoS5::AtLeastOnce).await.expect("queue the subscription");
        within("the subscriber's SUBACK", async {
            loop {
                match events.poll().await {
                    Ok(v5::Event::Incoming(Packet5::SubAck(_))) => break,
                    Ok(_) => {}
                    Err(e) => panic!("subscriber failed: {e:?}\nbroker log:\n{}", broker.log()),
                }
            }
        })
        .await;
        Subscriber { _client: client, events }
    }

    /// The payload of the next message it receives.
    async fn next_payload(&mut self) -> Vec<u8> {
        within("a message at the subscriber", async {
            loop {
                match self.events.poll().await {
                    Ok(v5::Event::Incoming(Packet5::Publish(publish))) => return publish.payload.to_vec(),
                    Ok(_) => {}
                    Err(e) => panic!("subscriber failed: {e:?}"),
                }
            }
        })
        .await
    }

    /// Publish [`SENTINEL`] from another client, then assert that it is the
    /// first message this subscriber receives: the file never came.
    async fn assert_file_never_arrives(&mut self, broker: &Broker) {
        publish_sentinel(broker).await;
        let payload = self.next_payload().await;
        assert_eq!(
            payload.len(),
            SENTINEL.len(),
            "the subscriber's first message is {} bytes, not the {}-byte sentinel\nbroker log:\n{}",
            payload.len(),
            SENTINEL.len(),
            broker.log()
        );
        assert_eq!(payload, SENTINEL);
    }
}

/// Publish [`SENTINEL`] to [`TOPIC`] at QoS 1 and wait for the broker's PUBACK.
async fn publish_sentinel(broker: &Broker) {
    let (client, mut events) = v5::AsyncClient::new(v5::MqttOptions::new("sentinel", HOST, broker.port()), 10);
    client.publish(TOPIC, QoS5::AtLeastOnce, false, SENTINEL).await.expect("queue the sentinel");
    within("the sentinel's PUBACK", async {
        loop {
            match events.poll().await {
                Ok(v5::Event::Incoming(Packet5::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("sentinel publisher failed: {e:?}\nbroker log:\n{}", broker.log()),
            }
        }
    })
    .await;
}

/// How often the broker has logged cutting off a client for an oversize packet.
fn oversize_disconnects(broker: &Broker) -> usize {
    broker.log().matches(OVERSIZE_LOG).count()
}

#[tokio::test]
async fn mqtt5_client_learns_the_limit_from_connack_and_refuses_the_publish() {
    let broker = constrained_broker();
    let dir = tempfile::tempdir().unwrap();
    let file = whole_file(dir.path());
    let mut subscriber = Subscriber::connect(&broker).await;

    let mut options = v5::MqttOptions::new("publisher5", HOST, broker.port());
    options.set_max_packet_size(Some(CLIENT_MAX));
    let (client, mut events) = v5::AsyncClient::new(options, 10);
    let connack = within("the publisher's CONNACK", events.poll()).await.expect("connect");
    let v5::Event::Incoming(Packet5::ConnAck(connack)) = connack else { panic!("expected CONNACK, got {connack:?}") };
    let announced = connack.properties.and_then(|p| p.max_packet_size);
    assert_eq!(announced, Some(LIMIT), "the broker announces its limit in CONNACK");

    client.publish(TOPIC, QoS5::AtLeastOnce, false, file).await.expect("queue the publish");
    let error = within("the publisher's error", async {
        loop {
            match events.poll().await {
                Ok(v5::Event::Incoming(Packet5::PubAck(ack))) => panic!("the broker acknowledged the file: {ack:?}"),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    })
    .await;
    // Polling again would reconnect; the test is done with this client.
    drop(events);
    let (pkt_size, max) = match error {
        v5::ConnectionError::MqttState(v5::StateError::Deserialization(
            v5::mqttbytes::Error::OutgoingPacketTooLarge { pkt_size, max },
        ))
        | v5::ConnectionError::MqttState(v5::StateError::OutgoingPacketTooLarge { pkt_size, max }) => (pkt_size, max),
        other => panic!("expected rumqttc to refuse the oversize packet, got {other:?}"),
    };
    assert_eq!(max, LIMIT);
    assert!(u64::from(pkt_size) > FILE_LEN, "packet size {pkt_size} is header plus the whole file");

    subscriber.assert_file_never_arrives(&broker).await;
    // The client refused it itself: no oversize packet reached the broker.
    assert_eq!(oversize_disconnects(&broker), 0, "broker log:\n{}", broker.log());
}

/// rumqttc obeys the announced limit, so this test speaks MQTT 5 by hand to
/// show that the broker enforces it too, on the declared length alone.
#[test]
fn mqtt5_broker_disconnects_a_client_that_sends_it_anyway_with_packet_too_large() {
    let broker = constrained_broker();
    let mut stream = TcpStream::connect(broker.addr()).expect("connect to the broker");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();

    // CONNECT: protocol "MQTT" level 5, clean start, keep alive 60 s, no
    // properties, client id "raw".
    stream.write_all(&hex_bytes("1010 0004 4d515454 05 02 003c 00 0003 726177")).unwrap();
    let (kind, body) = read_packet(&mut stream).expect("read CONNACK");
    assert_eq!(kind, 0x20, "expected CONNACK, got packet {kind:#04x} {body:02x?}");
    assert_eq!(body.get(1), Some(&0x00), "CONNACK reason code: success");

    // The fixed header of a QoS 0 PUBLISH carrying the whole file to TOPIC:
    // type, then the remaining length (topic length, topic, empty
    // properties, payload). The broker decides from that length alone. The
    // rest is not sent, so that the broker closes a connection with nothing
    // unread and its DISCONNECT is not lost to a TCP reset.
    let remaining = 2 + TOPIC.len() as u64 + 1 + FILE_LEN;
    let mut publish = vec![0x30];
    publish.extend(encode_remaining_length(remaining));
    stream.write_all(&publish).unwrap();

    let (kind, body) = read_packet(&mut stream).expect("read the broker's answer");
    assert_eq!(kind, 0xE0, "expected DISCONNECT, got packet {kind:#04x} {body:02x?}");
    assert_eq!(body.first(), Some(&0x95), "DISCONNECT reason code: 0x95 Packet too large");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("read to the end of the connection");
    assert!(rest.is_empty(), "nothing after DISCONNECT but the end of the connection: {rest:02x?}");
    assert!(
        wait_until(WAIT, || oversize_disconnects(&broker) == 1),
        "the broker logs the oversize packet\nbroker log:\n{}",
        broker.log()
    );
}

#[tokio::test]
async fn mqtt311_broker_disconnects_the_client_in_the_middle_of_the_publish() {
    let broker = constrained_broker();
    let dir = tempfile::tempdir().unwrap();
    let file = whole_file(dir.path());
    let mut subscriber = Subscriber::connect(&broker).await;

    let mut options = rumqttc::MqttOptions::new("publisher311", HOST, broker.port());
    let client_max = CLIENT_MAX as usize;
    options.set_max_packet_size(client_max, client_max);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
    let connack = within("the publisher's CONNACK", events.poll()).await.expect("connect");
    assert!(
        matches!(connack, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))),
        "expected CONNACK, got {connack:?}"
    );

    client.publish(TOPIC, rumqttc::QoS::AtLeastOnce, false, file).await.expect("queue the publish");
    let error = within("the publisher's error", async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack))) => {
                    panic!("the broker acknowledged the file: {ack:?}")
                }
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    })
    .await;
    drop(events);
    assert!(connection_lost(&error), "expected the broker to cut the connection, got {error:?}");
    assert!(
        wait_until(WAIT, || oversize_disconnects(&broker) == 1),
        "the broker logs cutting off the client\nbroker log:\n{}",
        broker.log()
    );
    assert!(broker.log().contains(&format!("Client publisher311 {OVERSIZE_LOG}")), "{}", broker.log());

    subscriber.assert_file_never_arrives(&broker).await;
}

/// Whether a 3.1.1 event loop error means the peer closed or reset the
/// connection (which of these depends on how far the write had got).
fn connection_lost(error: &rumqttc::ConnectionError) -> bool {
    use rumqttc::{ConnectionError, StateError};
    let io = match error {
        ConnectionError::MqttState(StateError::ConnectionAborted) => return true,
        ConnectionError::MqttState(StateError::Deserialization(rumqttc::Error::Io(e)))
        | ConnectionError::MqttState(StateError::Io(e))
        | ConnectionError::Io(e) => e,
        _ => return false,
    };
    matches!(
        io.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

#[test]
fn mosquitto_pub_of_the_whole_file_never_reaches_mosquitto_sub() {
    let broker = constrained_broker();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "whole.bin", FILE_LEN, 0x5EED);
    let port = broker.port().to_string();
    let client = |program: &str| {
        let mut command = Command::new(mosquitto_client(program));
        command.args(["-h", HOST, "-p", &port, "-t", TOPIC, "-q", "1"]);
        command
    };

    // One message, printed as "<length> <payload>"; -W bounds its own life.
    let subscriber = Process::spawn(
        client("mosquitto_sub").args(["-V", "5", "-i", "sub-cli", "-C", "1", "-W", "30", "-F", "%l %p"]),
    );
    assert!(
        wait_until(WAIT, || broker.has_subscription("sub-cli", TOPIC)),
        "mosquitto_sub did not subscribe\nstderr: {}\nbroker log:\n{}",
        subscriber.stderr(),
        broker.log()
    );

    let file_arg = file.to_str().expect("temp paths are UTF-8");
    let v311 = Process::spawn(client("mosquitto_pub").args(["-V", "311", "-d", "-f", file_arg])).finish_within(WAIT);
    let (stdout, stderr) = (String::from_utf8_lossy(&v311.stdout), String::from_utf8_lossy(&v311.stderr));
    assert!(!v311.status.success(), "mosquitto_pub -V 311 must fail, got {}\n{stdout}{stderr}", v311.status);
    assert!(stderr.contains("connection was lost"), "mosquitto_pub -V 311 stderr: {stderr}");
    assert!(
        wait_until(WAIT, || oversize_disconnects(&broker) == 1),
        "the broker logs cutting off mosquitto_pub\nbroker log:\n{}",
        broker.log()
    );

    // libmosquitto knows the limit from CONNACK and drops the PUBLISH before
    // sending it; mosquitto_pub still exits 0, so only its debug output and
    // the subscriber tell that nothing was sent.
    let v5 = Process::spawn(client("mosquitto_pub").args(["-V", "5", "-d", "-f", file_arg])).finish_within(WAIT);
    let stdout = String::from_utf8_lossy(&v5.stdout);
    assert!(stdout.contains("received CONNACK"), "mosquitto_pub -V 5 connected: {stdout}");
    assert!(!stdout.contains("sending PUBLISH"), "mosquitto_pub -V 5 sent the file: {stdout}");
    assert_eq!(oversize_disconnects(&broker), 1, "no second oversize packet\nbroker log:\n{}", broker.log());

    let sentinel = std::str::from_utf8(SENTINEL).unwrap();
    let sent = Process::spawn(client("mosquitto_pub").args(["-V", "5", "-m", sentinel])).finish_within(WAIT);
    assert!(sent.status.success(), "sentinel publish failed: {}", String::from_utf8_lossy(&sent.stderr));

    // -C 1: had the file come before the sentinel, it would be the one
    // message printed.
    let received = subscriber.finish_within(WAIT);
    let stdout = String::from_utf8_lossy(&received.stdout);
    assert!(received.status.success(), "mosquitto_sub: {}\n{stdout}", received.status);
    assert!(!stdout.starts_with(&format!("{FILE_LEN} ")), "the file reached mosquitto_sub");
    assert_eq!(stdout, format!("{} {sentinel}\n", SENTINEL.len()), "mosquitto_sub's one message is the sentinel");
}

/// The largest a chunk PUBLISH of mqft can be, for a `chunk`-byte chunk of a
/// [`FILE_LEN`] file under the default prefix: the fixed header (type and
/// remaining length), the topic's length and the topic
/// `files/<32 hex>/chunk/<last index>`, the packet id, the MQTT 5
/// properties' length, mqft's chunk header at its largest, and the chunk.
fn chunk_publish_size(chunk: u32) -> u64 {
    let last_index = FILE_LEN.div_ceil(u64::from(chunk)) - 1;
    let topic = "files/".len() + 32 + "/chunk/".len() + last_index.to_string().len();
    let remaining = (2 + topic + 2 + 1 + MAX_CHUNK_HEADER_LEN) as u64 + u64::from(chunk);
    1 + encode_remaining_length(remaining).len() as u64 + remaining
}

/// mqft moves the 20 MiB file through the constrained broker with the
/// default options (automatic chunk size); returns the chunk size it chose.
/// Its waits are bounded by `util::LIMIT`, not [`WAIT`]: a transfer is more
/// than one round trip.
async fn mqft_delivers_the_file(version: MqttVersion) -> u32 {
    let broker = constrained_broker();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "camera.raw", FILE_LEN, 0x5EED);
    let mut cfg = mqft::Config::from_url(&broker.url()).unwrap();
    cfg.version = version;
    let client = mqft::Client::new(cfg);

    // Not `once`: a `once` receiver that stops right after a large file can
    // lose its last acknowledgement (transfer::a_once_receivers_last_ack_reaches_the_sender);
    // this one is cancelled once the sender has its confirmation.
    let mut options = ReceiveOptions::default();
    options.receiver_id = Some(mqft::proto::ReceiverId::new("constrained-rx").unwrap());
    let mut receiver = client.receive(out.path(), options);
    loop {
        match crate::util::within("the receiver's connection", receiver.next_event()).await {
            Some(mqft::ReceiveEvent::Connected { .. }) => break,
            Some(_) => {}
            None => panic!("the receiver ended before it connected\nbroker log:\n{}", broker.log()),
        }
    }

    let mut send = client.send([&path], SendOptions::default());
    let mut chunk_size = None;
    let mut events = Vec::new();
    while let Some(event) = crate::util::within("the sender's events", send.next_event()).await {
        if let SendEvent::Started { chunk_size: c, size, .. } = &event {
            assert_eq!(*size, FILE_LEN);
            chunk_size = Some(*c);
        }
        events.push(event);
    }
    let sent = crate::util::within("the send", send.wait()).await;
    sent.unwrap_or_else(|e| panic!("{version}: {e}\n{events:#?}\nbroker log:\n{}", broker.log()));
    receiver.cancel();
    let received = crate::util::within("the receive", receiver.wait()).await;
    let received = received.unwrap_or_else(|e| panic!("{version}: {e}\nbroker log:\n{}", broker.log()));

    let arrived = out.path().join("camera.raw");
    assert_eq!(received.files.len(), 1, "{:?}", received.files);
    assert_eq!(received.files[0].path, arrived);
    assert!(files_equal(&path, &arrived), "{version}: the file differs after the transfer");
    assert_eq!(oversize_disconnects(&broker), 0, "no oversize packet\nbroker log:\n{}", broker.log());
    chunk_size.expect("a Started event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_mqft_fits_its_chunks_to_the_announced_limit() {
    let chunk = mqft_delivers_the_file(MqttVersion::V5).await;
    let packet = chunk_publish_size(chunk);
    assert!(packet <= u64::from(LIMIT), "a {chunk}-byte chunk makes packets of up to {packet} bytes, over {LIMIT}");
    // Auto fills the packet (its cap, 256 KiB, is above this limit).
    assert!(chunk > LIMIT - 256, "chunk size {chunk} should fill a {LIMIT}-byte packet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_mqft_default_chunks_fit_the_unannounced_limit() {
    let chunk = mqft_delivers_the_file(MqttVersion::V311).await;
    assert_eq!(chunk, V311_DEFAULT_CHUNK);
    let packet = chunk_publish_size(chunk);
    assert!(packet <= u64::from(LIMIT), "a {chunk}-byte chunk makes packets of up to {packet} bytes, over {LIMIT}");
}

/// Bytes from hex digits, spaces allowed for readability.
fn hex_bytes(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).expect("hex digits"))
        .collect()
}

/// MQTT's variable byte integer: 7 bits a byte, low first, high bit = more.
fn encode_remaining_length(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Read one MQTT packet: its first byte and its body.
fn read_packet(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    let kind = byte[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        stream.read_exact(&mut byte)?;
        len |= usize::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "remaining length over 4 bytes"));
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok((kind, body))
}

#[test]
fn remaining_length_encoding_matches_the_spec_examples() {
    assert_eq!(encode_remaining_length(0), [0x00]);
    assert_eq!(encode_remaining_length(127), [0x7f]);
    assert_eq!(encode_remaining_length(128), [0x80, 0x01]);
    assert_eq!(encode_remaining_length(16_383), [0xff, 0x7f]);
    assert_eq!(encode_remaining_length(2_097_152), [0x80, 0x80, 0x80, 0x01]);
}
