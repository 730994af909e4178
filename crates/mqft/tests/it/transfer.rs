//! Files through a broker, end to end.

use std::fs;
use std::path::Path;
use std::time::Duration;

use mqft::proto::{ReceiverId, RejectReason};
use mqft::{
    ChunkSize, Client, Config, ErrorKind, MqttVersion, ReceiveEvent, ReceiveHandle, ReceiveOptions, SendOptions,
};
use rand::RngCore;
use tokio::time::timeout;

use crate::broker::Mosquitto;

/// Upper bound on any one step; a hang fails the test instead of blocking CI.
const LIMIT: Duration = Duration::from_secs(60);

fn random_file(dir: &Path, name: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    let path = dir.join(name);
    fs::write(&path, &data).unwrap();
    (path, data)
}

fn client(broker: &Mosquitto, version: MqttVersion) -> Client {
    let mut cfg = Config::from_url(&broker.url()).unwrap();
    cfg.version = version;
    Client::new(cfg)
}

fn receive_opts(id: &str) -> ReceiveOptions {
    let mut o = ReceiveOptions::default();
    o.receiver_id = Some(ReceiverId::new(id).unwrap());
    o
}

/// Waits for the receiver's first `Connected`, so that the test's sender starts
/// with a receiver in place (the retained manifest would cover a late one too).
async fn connected(rx: &mut ReceiveHandle) {
    loop {
        match timeout(LIMIT, rx.next_event()).await.expect("receiver connects") {
            Some(ReceiveEvent::Connected { .. }) => return,
            Some(_) => {}
            None => panic!("receiver ended before connecting: {:?}", rx_result(rx)),
        }
    }
}

fn rx_result(rx: &ReceiveHandle) -> bool {
    rx.is_finished()
}

/// The visible files of a directory, sorted.
fn visible(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

async fn round_trip(version: MqttVersion) {
    let broker = Mosquitto::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Not a multiple of any chunk size: the last chunk is short.
    let (path, data) = random_file(src.path(), "payload.bin", 3 * 1024 * 1024 + 12345);
    let client = client(&broker, version);

    let mut opts = receive_opts("rx-1");
    opts.once = true;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;

    let report = timeout(LIMIT, client.send([&path], SendOptions::default()).wait()).await.unwrap().unwrap();
    assert_eq!(report.files.len(), 1);
    assert_eq!(report.files[0].receivers, vec![ReceiverId::new("rx-1").unwrap()]);

    let received = timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
    assert_eq!(received.files.len(), 1);
    assert_eq!(received.files[0].path, out.path().join("payload.bin"));
    assert_eq!(fs::read(out.path().join("payload.bin")).unwrap(), data);
    assert_eq!(visible(out.path()), ["payload.bin"]);
    // Only the completion marker is left of the hidden files.
    let hidden: Vec<String> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(hidden.len(), 1, "{hidden:?}");
    assert!(hidden[0].ends_with(".state"), "{hidden:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_crosses_mqtt_5() {
    round_trip(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_crosses_mqtt_3_1_1() {
    round_trip(MqttVersion::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_files_pipeline_on_one_connection() {
    let broker = Mosquitto::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = [
        random_file(src.path(), "a.bin", 700_000),
        random_file(src.path(), "b.bin", 1),
        random_file(src.path(), "empty.bin", 0),
        random_file(src.path(), "c.bin", 1_500_000),
        random_file(src.path(), "d.bin", 65_536),
    ];
    let client = client(&broker, MqttVersion::V5);
    let mut rx = client.receive(out.path(), receive_opts("rx-many"));
    connected(&mut rx).await;

    let mut opts = SendOptions::default();
    opts.chunk_size = ChunkSize::Fixed(64 * 1024);
    let report = timeout(LIMIT, client.send(files.iter().map(|(p, _)| p), opts).wait()).await.unwrap().unwrap();
    assert_eq!(report.files.len(), files.len());

    rx.cancel();
    let received = timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
    assert_eq!(received.files.len(), files.len());
    for (path, data) in &files {
        let got = fs::read(out.path().join(path.file_name().unwrap())).unwrap();
        assert_eq!(&got, data, "{}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_send_of_the_same_file_is_answered_at_once() {
    let broker = Mosquitto::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "again.bin", 200_000);
    let client = client(&broker, MqttVersion::V5);

    // A receiver that stops after the first file, then a new one (a restart) that
    // finds the file and its marker on disk.
    for round in 0..2 {
        let mut opts = receive_opts("rx-again");
        opts.once = true;
        let mut rx = client.receive(out.path(), opts);
        connected(&mut rx).await;
        timeout(LIMIT, client.send([&path], SendOptions::default()).wait()).await.unwrap().unwrap();
        let mut already = false;
        while let Some(ev) = timeout(LIMIT, rx.next_event()).await.unwrap() {
            already |= matches!(ev, ReceiveEvent::AlreadyComplete { .. });
        }
        assert_eq!(already, round == 1);
        timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
    }
    assert_eq!(fs::read(out.path().join("again.bin")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_file_is_refused_not_overwritten() {
    let broker = Mosquitto::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "keep.txt", 10_000);
    fs::write(out.path().join("keep.txt"), b"precious").unwrap();
    let client = client(&broker, MqttVersion::V311);
    let mut rx = client.receive(out.path(), receive_opts("rx-keep"));
    connected(&mut rx).await;

    let err = timeout(LIMIT, client.send([&path], SendOptions::default()).wait()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(matches!(err, mqft::Error::Rejected { reason: RejectReason::Exists, .. }), "{err}");
    assert_eq!(fs::read(out.path().join("keep.txt")).unwrap(), b"precious");
    rx.cancel();
    timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_listening_is_a_no_receiver_error() {
    let broker = Mosquitto::start();
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "lonely.bin", 1000);
    let mut opts = SendOptions::default();
    opts.protocol.join_timeout = Duration::from_millis(500);
    let err = timeout(LIMIT, client(&broker, MqttVersion::V5).send([&path], opts).wait()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoReceiver, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_a_broker_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = Config::new("127.0.0.1", port);
    cfg.connect_timeout = Duration::from_millis(500);
    let src = tempfile::tempdir().unwrap();
    let (path, _) = random_file(src.path(), "x.bin", 10);
    let err = timeout(LIMIT, Client::new(cfg).send([&path], SendOptions::default()).wait()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Broker, "{err}");
    assert!(err.to_string().starts_with("cannot reach broker 127.0.0.1:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_fails_before_connecting() {
    // No broker at all: the usage check comes first.
    let cfg = Config::new("127.0.0.1", 9);
    let err = Client::new(cfg).send(["/nonexistent/file"], SendOptions::default()).wait().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_a_broker_error() {
    // A password file made with mosquitto_passwd, then a broker that wants it.
    let pwdir = tempfile::tempdir().unwrap();
    let pwfile = pwdir.path().join("passwd");
    let status = std::process::Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&pwfile)
        .args(["alice", "right"])
        .status()
        .expect("mosquitto_passwd runs: apt-get install -y mosquitto mosquitto-clients");
    assert!(status.success());
    let broker = Mosquitto::start_with(&format!("password_file {}", pwfile.display()));
    assert!(broker.dir().join("mosquitto.conf").exists());
    let broker_conf = fs::read_to_string(broker.dir().join("mosquitto.conf")).unwrap();
    // The generated config lets anonymous clients in; a password file still
    // checks the names it knows.
    assert!(broker_conf.contains("password_file"));
    let out = tempfile::tempdir().unwrap();
    for version in [MqttVersion::V5, MqttVersion::V311] {
        let mut cfg = Config::from_url(&format!("mqtt://alice:wrong@127.0.0.1:{}", broker.port)).unwrap();
        cfg.version = version;
        let err = timeout(LIMIT, Client::new(cfg).receive(out.path(), receive_opts("rx-auth")).wait())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Broker, "{err}");
        assert!(matches!(err, mqft::Error::Refused { .. }), "{version}: {err:?}");

        let mut cfg = Config::from_url(&format!("mqtt://alice:right@127.0.0.1:{}", broker.port)).unwrap();
        cfg.version = version;
        let mut rx = Client::new(cfg).receive(out.path(), receive_opts("rx-auth"));
        connected(&mut rx).await;
        rx.cancel();
        timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_chunks_fit_the_brokers_packet_limit() {
    // Mosquitto announces its limit in the MQTT 5 CONNACK and drops larger packets.
    let broker = Mosquitto::start_with("max_packet_size 20000");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "fits.bin", 300_000);
    let client = client(&broker, MqttVersion::V5);
    let mut opts = receive_opts("rx-fit");
    opts.once = true;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;

    // A fixed chunk size the broker cannot take fails before anything is sent.
    let mut too_big = SendOptions::default();
    too_big.chunk_size = ChunkSize::Fixed(20_000);
    let err = timeout(LIMIT, client.send([&path], too_big).wait()).await.unwrap().unwrap_err();
    assert!(matches!(err, mqft::Error::ChunkTooLarge { max_packet: 20_000, .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Usage);

    let mut send = client.send([&path], SendOptions::default());
    let mut chunk_size = None;
    while let Some(ev) = timeout(LIMIT, send.next_event()).await.unwrap() {
        if let mqft::SendEvent::Started { chunk_size: c, .. } = ev {
            chunk_size = Some(c);
        }
    }
    timeout(LIMIT, send.wait()).await.unwrap().unwrap();
    let c = chunk_size.expect("a Started event");
    assert!(c < 20_000 && c > 19_800, "chunk size {c} should fill a 20000-byte packet");
    timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
    assert_eq!(fs::read(out.path().join("fits.bin")).unwrap(), data);
}

/// Send options that make a transfer take a second or so on loopback: small chunks
/// and a small window, so that the test can act in the middle of it.
fn slow_send() -> SendOptions {
    let mut o = SendOptions::default();
    o.chunk_size = ChunkSize::Fixed(16 * 1024);
    o.protocol.window = 16;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_transfer_is_survived() {
    let mut broker = Mosquitto::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "big.bin", 16 * 1024 * 1024);
    let client = client(&broker, MqttVersion::V5);
    let mut opts = receive_opts("rx-restart");
    opts.once = true;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;

    let send = client.send([&path], slow_send());
    // Restart the broker once the receiver holds part of the file.
    loop {
        match timeout(LIMIT, rx.next_event()).await.unwrap() {
            Some(ReceiveEvent::Progress { bytes, total, .. }) if bytes > 0 => {
                assert!(bytes < total, "the transfer should still be running");
                break;
            }
            Some(_) => {}
            None => panic!("receiver ended early"),
        }
    }
    broker.restart();

    // Both sides reconnect (with backoff), subscribe again, and the protocol
    // repairs what was lost.
    let mut reconnected = false;
    while let Some(ev) = timeout(LIMIT, rx.next_event()).await.unwrap() {
        reconnected |= matches!(ev, ReceiveEvent::Connected { .. });
    }
    assert!(reconnected);
    timeout(LIMIT, send.wait()).await.unwrap().unwrap();
    timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
    assert_eq!(fs::read(out.path().join("big.bin")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_receiver_resumes_where_it_was() {
    let broker = Mosquitto::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (path, data) = random_file(src.path(), "resume.bin", 8 * 1024 * 1024);
    let client = client(&broker, MqttVersion::V311);

    // First attempt: the receiver stops once it holds part of the file.
    let mut rx = client.receive(out.path(), receive_opts("rx-resume"));
    connected(&mut rx).await;
    let send = client.send([&path], slow_send());
    loop {
        match timeout(LIMIT, rx.next_event()).await.unwrap() {
            Some(ReceiveEvent::Progress { bytes, .. }) if bytes > 0 => break,
            Some(_) => {}
            None => panic!("receiver ended early"),
        }
    }
    rx.cancel();
    timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
    let err = timeout(LIMIT, send.wait()).await.unwrap().unwrap_err();
    assert!(
        matches!(err, mqft::Error::Rejected { reason: RejectReason::Cancelled, .. }),
        "the sender is told the receiver stopped: {err:?}"
    );
    assert!(visible(out.path()).is_empty());

    // Second attempt: the same file again; the receiver starts from its saved state.
    let mut opts = receive_opts("rx-resume");
    opts.once = true;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;
    let send = client.send([&path], slow_send());
    let mut resumed = None;
    while let Some(ev) = timeout(LIMIT, rx.next_event()).await.unwrap() {
        if let ReceiveEvent::Accepted { resumed_bytes, .. } = ev {
            resumed = Some(resumed_bytes);
        }
    }
    let resumed = resumed.expect("an Accepted event");
    assert!(resumed > 0 && resumed < data.len() as u64, "resumed {resumed} bytes");
    timeout(LIMIT, send.wait()).await.unwrap().unwrap();
    timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
    assert_eq!(fs::read(out.path().join("resume.bin")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_land_inside_the_output_directory() {
    let broker = Mosquitto::start();
    let src = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    fs::create_dir(&out).unwrap();
    let client = client(&broker, MqttVersion::V5);
    let mut rx = client.receive(&out, receive_opts("rx-names"));
    connected(&mut rx).await;

    let (a, data_a) = random_file(src.path(), "a", 1000);
    let (b, data_b) = random_file(src.path(), "b", 1000);
    let (c, _) = random_file(src.path(), "c", 1000);
    let files = [
        mqft::SendFile::named(&a, "../../escape.txt"),
        mqft::SendFile::named(&b, "C:\\Windows\\.evil\u{7}.ini"),
        mqft::SendFile::named(&c, ".."),
    ];
    let mut opts = SendOptions::default();
    opts.protocol.join_timeout = Duration::from_secs(5);
    let err = timeout(LIMIT, client.send(files, opts).wait()).await.unwrap().unwrap_err();
    // ".." has no usable name left: refused.
    assert!(matches!(err, mqft::Error::Rejected { reason: RejectReason::BadName, .. }), "{err:?}");
    rx.cancel();
    let report = timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
    assert_eq!(report.files.len(), 2);
    assert_eq!(visible(&out), ["escape.txt", "evil_.ini"]);
    assert_eq!(fs::read(out.join("escape.txt")).unwrap(), data_a);
    assert_eq!(fs::read(out.join("evil_.ini")).unwrap(), data_b);
    // Nothing outside.
    assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_while_sent_fails_its_integrity_check_on_both_sides() {
    use std::os::unix::fs::FileExt;

    let broker = Mosquitto::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let len = 8 * 1024 * 1024;
    let (path, _) = random_file(src.path(), "changing.bin", len);
    let client = client(&broker, MqttVersion::V5);
    let mut opts = receive_opts("rx-integrity");
    opts.once = true;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;

    let send = client.send([&path], slow_send());
    loop {
        match timeout(LIMIT, rx.next_event()).await.unwrap() {
            Some(ReceiveEvent::Progress { bytes, .. }) if bytes > 0 => break,
            Some(_) => {}
            None => panic!("receiver ended early"),
        }
    }
    // Change the tail, which has not been sent yet, in place (no truncation: the
    // sender must still be able to read every chunk).
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"changed", len as u64 - 7).unwrap();
    drop(f);

    let err = timeout(LIMIT, send.wait()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err:?}");
    let err = timeout(LIMIT, rx.wait()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err:?}");
    // Known-bad bytes are not kept, under any name.
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}

/// Publishes `payload` once, QoS 1, not retained, with mosquitto_pub.
fn mosquitto_pub(broker: &Mosquitto, topic: &str, payload: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    fs::write(&file, payload).unwrap();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", topic, "-f"])
        .arg(&file)
        .status()
        .expect("mosquitto_pub runs: apt-get install -y mosquitto mosquitto-clients");
    assert!(status.success());
}

async fn session_survives_a_restart(version: MqttVersion) {
    let broker = Mosquitto::start();
    let out = tempfile::tempdir().unwrap();
    let client = client(&broker, version);

    // A receiver connects, then goes away; its session stays at the broker.
    let mut rx = client.receive(out.path(), receive_opts("rx-session"));
    connected(&mut rx).await;
    rx.cancel();
    timeout(LIMIT, rx.wait()).await.unwrap().unwrap();

    // A manifest published while it is away, not retained: only the session can
    // keep it.
    let m = mqft::proto::Manifest::new("late.bin".into(), 10, 4, [1; 32], Default::default(), 7).unwrap();
    mosquitto_pub(&broker, &mqft::proto::Prefix::default().manifest(&m.id), &m.encode());

    // The same receiver (same id, same directory, so the same client id) comes back
    // and is offered it.
    let mut rx = client.receive(out.path(), receive_opts("rx-session"));
    loop {
        match timeout(LIMIT, rx.next_event()).await.unwrap() {
            Some(ReceiveEvent::Offered { transfer, .. }) => {
                assert_eq!(transfer, m.id);
                break;
            }
            Some(_) => {}
            None => panic!("receiver ended without the queued manifest"),
        }
    }
    rx.cancel();
    timeout(LIMIT, rx.wait()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_session_keeps_messages_across_a_restart_mqtt_5() {
    session_survives_a_restart(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_session_keeps_messages_across_a_restart_mqtt_3_1_1() {
    session_survives_a_restart(MqttVersion::V311).await;
}
