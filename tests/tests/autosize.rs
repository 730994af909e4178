//! `--chunk-size auto` finds a chunk size that gets through brokers that do not
//! announce their message size limit (project issue 9, item 3).
//!
//! Mosquitto's `message_size_limit` acknowledges an oversized publish and
//! forwards it to nobody (under MQTT 5 with PUBACK reason 0x95, which rumqttc
//! takes for a broken connection); rumqttd cuts the connection, which the
//! fault proxy plays here ([`Proxy::cut_publishes_over`]). With `auto` the
//! sender halves the chunk size as a new transfer until chunks arrive, within
//! seconds; an explicit chunk size still fails clearly (exit 7).

use std::fs;
use std::path::Path;
use std::time::Duration;

use mqft::{MqttVersion, SendEvent, SendOptions};
use mqft_tests::proxy::Proxy;
use mqft_tests::{files_equal, random_file, Broker};

use crate::fault_util::{poll_until, timed, Cli, Finished, WAIT};
use crate::util::{client, connected, drain, receive_opts, within};

/// How long converging and sending may take: the sizes tried cost about a
/// second or two each, and the files move in well under a second.
const BOUND: Duration = Duration::from_secs(30);

/// The chunk sizes a send tried, in order, from its `started` events.
fn sizes_tried(sent: &Finished) -> Vec<u64> {
    sent.events.iter().filter(|e| e["event"] == "started").filter_map(|e| e["chunk_size"].as_u64()).collect()
}

/// The `chunk_size_lowered` events of a send, as (from, to).
fn lowered(sent: &Finished) -> Vec<(u64, u64)> {
    sent.events
        .iter()
        .filter(|e| e["event"] == "chunk_size_lowered")
        .map(|e| (e["chunk_size"].as_u64().unwrap_or(0), e["retry_with"].as_u64().unwrap_or(0)))
        .collect()
}

/// Sends `file` with `auto` at `port` to a new receiver at `rx_port` and checks
/// that it arrives whole, within [`BOUND`], with nothing left behind beside it.
/// Returns the send's output and how long it took.
fn send_auto(port: u16, rx_port: u16, file: &Path, version: &str, label: &str) -> (Finished, Duration) {
    let out = tempfile::tempdir().unwrap();
    let rx = Cli::receive(rx_port, out.path(), &format!("rx-{label}"), &["-V", version]);
    let flags = ["-V".to_owned(), version.to_owned()];
    let (sent, took) = timed(|| Cli::send(port, file, &flags).finish_within(WAIT));
    assert_eq!(sent.code, Some(0), "{label}: {}", sent.text);
    let received = rx.finish_within(WAIT);
    assert_eq!(received.code, Some(0), "{label}: {}", received.text);
    let name = file.file_name().unwrap();
    assert!(files_equal(file, &out.path().join(name)), "{label}: the file differs");
    // The abandoned transfers held nothing and left no `.part` or state behind
    // (in the output directory or its state folder).
    let left: Vec<String> = fs::read_dir(out.path())
        .unwrap()
        .chain(fs::read_dir(out.path().join(".mqft/part")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let abandoned: Vec<&str> = sent
        .events
        .iter()
        .filter(|e| e["event"] == "chunk_size_lowered")
        .filter_map(|e| e["transfer"].as_str())
        .collect();
    assert!(
        left.iter().all(|f| abandoned.iter().all(|id| !f.contains(id))),
        "{label}: {left:?} left behind\n{}",
        received.text
    );
    assert!(left.contains(&name.to_string_lossy().into_owned()), "{label}: {left:?}");
    assert!(took < BOUND, "{label}: converging and sending took {took:?}\n{}", sent.text);
    eprintln!("{label}: sizes {:?} in {took:?}", sizes_tried(&sent));
    (sent, took)
}

#[test]
fn auto_converges_under_mosquittos_message_size_limit() {
    // A limit of 100 000 bytes of payload: 64 KiB chunks pass, 128 KiB ones do
    // not. Under 3.1.1 auto starts at 64 KiB, so a second broker with a limit
    // under that makes 3.1.1 converge too.
    let broker = Broker::builder().config_line("message_size_limit 100000").start();
    let tight = Broker::builder().config_line("message_size_limit 40000").start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "limited.bin", 3 << 20, 9901);

    // MQTT 5: the broker announces no limit, auto starts at 256 KiB; the PUBACKs
    // with reason 0x95 break the connection at each chunk.
    let (sent, _) = send_auto(broker.port(), broker.port(), &file, "5", "mqtt5-100000");
    assert_eq!(sizes_tried(&sent), [256 << 10, 128 << 10, 64 << 10], "{}", sent.text);
    assert_eq!(lowered(&sent), [(256 << 10, 128 << 10), (128 << 10, 64 << 10)], "{}", sent.text);

    // MQTT 3.1.1 under the same limit: 64 KiB from the start, nothing to lower.
    let (sent, _) = send_auto(broker.port(), broker.port(), &file, "311", "mqtt311-100000");
    assert_eq!(sizes_tried(&sent), [64 << 10], "{}", sent.text);

    // MQTT 3.1.1 under 40 000 bytes: the PUBACKs are normal ones and the chunks
    // vanish; rounds that repair nothing lower the size.
    let (sent, _) = send_auto(tight.port(), tight.port(), &file, "311", "mqtt311-40000");
    assert_eq!(sizes_tried(&sent), [64 << 10, 32 << 10], "{}", sent.text);
    assert_eq!(lowered(&sent), [(64 << 10, 32 << 10)], "{}", sent.text);
}

#[test]
fn auto_converges_when_the_broker_cuts_oversized_publishes() {
    // rumqttd's way: a publish over its limit (here 128 KiB, whole packet) ends
    // the connection. The sender goes through the proxy, the receiver not.
    let broker = Broker::start();
    let proxy = Proxy::start(broker.addr());
    proxy.cut_publishes_over(Some(128 << 10));
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "cut.bin", 3 << 20, 9902);

    let (sent, _) = send_auto(proxy.port(), broker.port(), &file, "5", "cut-128k");
    // 128 KiB chunks do not fit in a 128 KiB packet with their headers either.
    assert_eq!(sizes_tried(&sent), [256 << 10, 128 << 10, 64 << 10], "{}", sent.text);
    assert!(proxy.resets() >= 2, "the proxy cut {} connections", proxy.resets());

    // An explicit chunk size is the user's to choose: it is never lowered, and
    // the send ends with the clear failure.
    let out = tempfile::tempdir().unwrap();
    let rx = Cli::receive(broker.port(), out.path(), "rx-explicit", &[]);
    let flags = ["--chunk-size".to_owned(), "256k".to_owned()];
    let (failed, took) = timed(|| Cli::send(proxy.port(), &file, &flags).finish_within(WAIT));
    assert_eq!(failed.code, Some(7), "{}", failed.text);
    let error = failed.event("error").unwrap_or_else(|| panic!("no error event\n{}", failed.text));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("no chunk got through"), "{}", failed.text);
    assert!(lowered(&failed).is_empty(), "{}", failed.text);
    assert_eq!(sizes_tried(&failed), [256 << 10], "{}", failed.text);
    eprintln!("explicit 256k through the cutting proxy failed in {took:?}");
    drop(rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_remembers_the_size_that_got_through() {
    let broker = Broker::builder().config_line("message_size_limit 100000").start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let client = client(&broker, MqttVersion::V5);
    let mut rx = client.receive(out.path(), receive_opts("rx-memory"));
    connected(&mut rx).await;

    // Three files in flight at once: each starts at 256 KiB, and all of them
    // end up at the size that gets through.
    let files: Vec<_> = (0..3).map(|i| random_file(src.path(), &format!("f{i}.bin"), 1 << 20, 9910 + i)).collect();
    let mut send = client.send(&files, SendOptions::default());
    let events = drain(&mut send).await;
    let report = within("the first send", send.wait()).await.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    assert_eq!(report.files.len(), 3);
    for f in &files {
        let started: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                SendEvent::Started { path, chunk_size, .. } if path == f => Some(*chunk_size),
                _ => None,
            })
            .collect();
        assert_eq!(started.first(), Some(&(256 << 10)), "{events:#?}");
        assert_eq!(started.last(), Some(&(64 << 10)), "{events:#?}");
    }

    // The next send of the same client starts where the first one ended.
    let next = random_file(src.path(), "next.bin", 1 << 20, 9920);
    let mut send = client.send([&next], SendOptions::default());
    let events = drain(&mut send).await;
    within("the second send", send.wait()).await.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let started: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            SendEvent::Started { chunk_size, .. } => Some(*chunk_size),
            _ => None,
        })
        .collect();
    assert_eq!(started, [64 << 10], "{events:#?}");

    for f in files.iter().chain([&next]) {
        let name = f.file_name().unwrap();
        let arrived = out.path().join(name);
        assert!(poll_until(WAIT, || arrived.exists()).await, "{} never arrived", name.to_string_lossy());
        assert!(files_equal(f, &arrived));
    }
    rx.cancel();
    within("the receiver's end", rx.wait()).await.unwrap();
}
