//! Offline receivers (issue 13 item 2): `mqft send --hold D` leaves the file at a
//! real Mosquitto 2.0.11, retained with an MQTT 5 expiry, and exits; receivers
//! that start later get it from the broker alone and confirm it; the receiver
//! that completes the set clears the hold, and an unclaimed hold expires. After
//! either, nothing of the transfer is left retained (checked with a raw client).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mqft_tests::{
    broker_flags as at, files_equal, mqft_command as mqft, random_file, show_output as show, Broker, ClosedPort,
    Process,
};

use crate::raw::Raw;

/// The bound on each process's run.
const WAIT: Duration = Duration::from_secs(60);

/// `mqft send --hold` of `file` with `extra` flags, run to its end.
fn send_held(port: u16, file: &Path, hold: &str, extra: &[&str]) -> Output {
    let mut command = mqft(["send", "--hold", hold]);
    command.arg(file).args(at(port)).args(extra);
    Process::spawn(&mut command).finish_within(WAIT)
}

/// `mqft receive --once` as receiver `name` into `out`, run to its end.
fn receive_once(port: u16, out: &Path, name: &str, extra: &[&str]) -> Output {
    let mut command = mqft(["receive", "--once", "--name", name, "--out"]);
    command.arg(out).args(at(port)).args(extra);
    Process::spawn(&mut command).finish_within(WAIT)
}

/// `mqft status --json`, its lines.
fn status(port: u16) -> Vec<serde_json::Value> {
    let mut command = mqft(["status", "--json"]);
    command.args(at(port));
    let out = Process::spawn(&mut command).finish_within(WAIT);
    assert!(out.status.success(), "status failed\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The topics under the default prefix `files/` that hold a retained message,
/// as a new subscriber sees them. A marker published after the subscription
/// comes back after every retained message (the broker queues them when it
/// handles the SUBSCRIBE, and delivers a client's messages in order), so the
/// list is complete without waiting for a quiet time.
async fn retained(broker: &Broker) -> Vec<String> {
    static PEEKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let id = format!("peek-{}", PEEKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let mut raw = Raw::connect(broker, &id).await;
    raw.subscribe(broker, &id, "files/#").await;
    let marker = format!("peek/{id}");
    raw.subscribe(broker, &id, &marker).await;
    raw.publish(&marker, "end").await;
    let mut topics = Vec::new();
    loop {
        let (topic, _) = raw.next("the retained messages, then the marker", |_, _| true).await;
        if topic == marker {
            return topics;
        }
        topics.push(topic);
    }
}

/// The issue's test, literally: the sender exits 0 with no receiver running; a
/// receiver started 10 s after it left gets an identical file; afterwards nothing
/// is retained under the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_started_10_s_after_the_sender_left_gets_the_file() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "img.jpg", 1_500_000, 13);
    let sent = send_held(broker.port(), &file, "24h", &[]);
    assert!(sent.status.success(), "send --hold failed without a receiver\n{}", show(&sent));
    let said = String::from_utf8_lossy(&sent.stderr);
    assert!(said.contains("held at the broker for 24h for any receiver; 0 confirmed so far"), "{said}");
    let held = retained(&broker).await;
    assert!(held.iter().any(|t| t.ends_with("/manifest")), "{held:?}");
    assert_eq!(held.iter().filter(|t| t.contains("/chunk/")).count(), 6, "every chunk held: {held:?}");

    // The point is that the sender is gone: it exited above. The issue's 10 s.
    std::thread::sleep(Duration::from_secs(10));
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let got = receive_once(broker.port(), &out, "camera-sink", &[]);
    assert!(got.status.success(), "the late receiver failed\n{}", show(&got));
    assert!(files_equal(&file, &out.join("img.jpg")), "the received file differs");
    assert_eq!(retained(&broker).await, Vec::<String>::new(), "left retained after the confirmation");
}

/// Held for two named receivers: the first to confirm leaves the hold in place
/// (`status` shows it confirmed and the other pending); the second clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_receivers_each_confirm_and_the_last_one_clears_the_hold() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "firmware.bin", 700_000, 7);
    let sent = send_held(broker.port(), &file, "7d", &["--to", "dev-1", "--to", "dev-2"]);
    assert!(sent.status.success(), "{}", show(&sent));
    assert!(String::from_utf8_lossy(&sent.stderr).contains("held at the broker for 7d for dev-1, dev-2; 0 confirmed"));

    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let got = receive_once(broker.port(), &a, "dev-1", &[]);
    assert!(got.status.success(), "{}", show(&got));
    assert!(files_equal(&file, &a.join("firmware.bin")));
    let lines = status(broker.port());
    let held: Vec<_> = lines.iter().filter(|l| l["event"] == "held").collect();
    assert_eq!(held.len(), 1, "{lines:?}");
    assert_eq!(held[0]["name"], "firmware.bin");
    assert_eq!(held[0]["confirmed"], serde_json::json!(["dev-1"]));
    assert_eq!(held[0]["pending"], serde_json::json!(["dev-2"]));
    let secs = held[0]["expires_in_seconds"].as_u64().unwrap();
    assert!((7 * 86_400 - 120..=7 * 86_400).contains(&secs), "expires in {secs} s");
    let still = retained(&broker).await;
    assert!(still.iter().any(|t| t.ends_with("/ack/dev-1")), "dev-1's confirmation is retained: {still:?}");
    assert!(still.iter().any(|t| t.ends_with("/manifest")), "{still:?}");

    let got = receive_once(broker.port(), &b, "dev-2", &[]);
    assert!(got.status.success(), "{}", show(&got));
    assert!(files_equal(&file, &b.join("firmware.bin")));
    assert_eq!(retained(&broker).await, Vec::<String>::new(), "left retained once both confirmed");
    let lines = status(broker.port());
    assert_eq!(lines, [serde_json::json!({"event": "summary", "held": 0})]);
}

/// A hold nobody collects expires at the broker: nothing of it stays retained,
/// and a receiver started afterwards gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_hold_expires_and_leaves_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "late.bin", 300_000, 3);
    let sent = send_held(broker.port(), &file, "3s", &[]);
    assert!(sent.status.success(), "{}", show(&sent));
    assert!(!retained(&broker).await.is_empty(), "held at first");
    // The expiry is the broker's clock: looked at until it has passed, bounded.
    let mut left = Vec::new();
    for _ in 0..40 {
        left = retained(&broker).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(left, Vec::<String>::new(), "still retained after the hold");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let got = receive_once(broker.port(), &out, "late", &["--timeout", "3"]);
    assert_eq!(got.status.code(), Some(4), "nothing to receive\n{}", show(&got));
    assert!(!out.join("late.bin").exists());
}

/// MQTT 3.1.1 has no expiry: a hold could stay at the broker for good, so it is
/// refused before anything connects (exit 2, usage).
#[test]
fn hold_is_refused_under_mqtt_3_1_1() {
    let closed = ClosedPort::bind();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "f.bin", 10, 1);
    let out = send_held(closed.port(), &file, "24h", &["-V", "311"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hold needs MQTT 5"), "{}", show(&out));
}

/// A broker hands a new subscriber at most its in-flight plus queue limits of the
/// retained chunks (here 20 + 10 of 196) and drops the rest: the receiver fetches
/// them again by subscribing to each missing chunk's own topic, in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_fetches_again_the_chunks_the_broker_queue_dropped() {
    let broker = Broker::builder().max_queued_messages(10).start();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "big.bin", 800_000, 5);
    let sent = send_held(broker.port(), &file, "1h", &["--chunk-size", "4k"]);
    assert!(sent.status.success(), "{}", show(&sent));
    // (The raw client's peek is cut to 30 by the same limits: not counted here.)
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let got = receive_once(broker.port(), &out, "r", &["-vv"]);
    assert!(got.status.success(), "{}", show(&got));
    assert!(files_equal(&file, &out.join("big.bin")));
    assert!(String::from_utf8_lossy(&got.stderr).contains("fetching held chunks again"), "{}", show(&got));
    assert_eq!(retained(&broker).await, Vec::<String>::new());
}

/// A broker that keeps no retained messages says so in its CONNACK (Retain
/// Available 0): a hold there is refused (exit 2), nothing published.
#[test]
fn hold_is_refused_by_a_broker_that_keeps_no_retained_messages() {
    let broker = Broker::builder().config_line("retain_available false").start();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "f.bin", 10, 1);
    let out = send_held(broker.port(), &file, "24h", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeps no retained messages"), "{}", show(&out));
}

/// A receiver online while the sender holds the file gets it as the chunks go
/// out, confirms, and (the only one it is for) clears the hold: nothing stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_online_during_the_hold_gets_the_file_and_clears_it() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "live.bin", 2_000_000, 11);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut command = mqft(["receive", "--once", "--name", "gw", "--out"]);
    command.arg(&out).args(at(broker.port()));
    let receiver = Process::spawn(&mut command);
    assert!(
        mqft_tests::wait_until(WAIT, || !broker.subscribers("files/+/manifest").is_empty()),
        "the receiver never subscribed\n{}",
        receiver.stderr()
    );
    let sent = send_held(broker.port(), &file, "1h", &["--to", "gw"]);
    assert!(sent.status.success(), "{}", show(&sent));
    let got = receiver.finish_within(WAIT);
    assert!(got.status.success(), "{}", show(&got));
    assert!(files_equal(&file, &out.join("live.bin")));
    assert_eq!(retained(&broker).await, Vec::<String>::new(), "left retained after the confirmation");
}

/// A receiver that already has the held file confirms it without a byte sent,
/// and that confirmation clears the hold like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_already_has_the_file_confirms_and_clears_the_hold() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "again.jpg", 400_000, 17);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::copy(&file, out.join("again.jpg")).unwrap();
    let sent = send_held(broker.port(), &file, "1h", &["--to", "cam-sink"]);
    assert!(sent.status.success(), "{}", show(&sent));
    assert!(!retained(&broker).await.is_empty(), "held at first");
    let got = receive_once(broker.port(), &out, "cam-sink", &[]);
    assert!(got.status.success(), "{}", show(&got));
    assert!(String::from_utf8_lossy(&got.stderr).contains("already"), "{}", show(&got));
    assert_eq!(retained(&broker).await, Vec::<String>::new(), "left retained after the confirmation");
}
