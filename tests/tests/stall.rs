//! A broker that stops acknowledging publishes must not hang a send (project
//! issue 9: "Failures end, clearly and in bounded time").
//!
//! RabbitMQ 3.10 closes the AMQP channel behind an MQTT connection at a publish
//! over its `max_message_size` and from then on acknowledges nothing, while the
//! TCP connection stays open and pings are answered. The fault proxy plays that
//! deterministically ([`Proxy::stall_publishes_over`]): the oversized PUBLISH and
//! every later one of that connection are swallowed, everything else passes.
//! The connection notices PUBACKs owed for a keep-alive (here 5 s) and
//! reconnects; with `auto` the sender then halves its chunks until they get
//! through, and with an explicit size it fails in bounded time.

use std::time::Duration;

use mqft_tests::proxy::Proxy;
use mqft_tests::{files_equal, random_file, Broker};

use crate::fault_util::{timed, Cli, WAIT};

/// The keep-alive of these sends, the least mqft allows: how long a stall lasts
/// before the connection is dropped.
const KEEP_ALIVE: &str = "5";

/// The largest PUBLISH packet the stalling proxy lets through: 32 KiB chunks
/// pass, 64 KiB ones (where `auto` starts under MQTT 3.1.1) do not.
const LIMIT: u64 = 40_000;

#[test]
fn auto_converges_when_the_broker_stops_acknowledging_publishes() {
    let broker = Broker::start();
    let proxy = Proxy::start(broker.addr());
    proxy.stall_publishes_over(Some(LIMIT));
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "stalled.bin", 1 << 20, 9931);

    // The receiver connects to the broker directly; only the sender is stalled.
    let rx = Cli::receive(broker.port(), out.path(), "rx-stall", &["-V", "311"]);
    let flags: Vec<String> = ["-V", "311", "--keepalive", KEEP_ALIVE].map(String::from).to_vec();
    let (sent, took) = timed(|| Cli::send(proxy.port(), &file, &flags).finish_within(WAIT));
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    let received = rx.finish_within(WAIT);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&file, &out.path().join("stalled.bin")), "the file differs");

    let sizes: Vec<u64> =
        sent.events.iter().filter(|e| e["event"] == "started").filter_map(|e| e["chunk_size"].as_u64()).collect();
    assert_eq!(sizes, [64 << 10, 32 << 10], "{}", sent.text);
    assert!(proxy.stalls() >= 1, "{} stalled connections\n{}", proxy.stalls(), sent.text);
    assert!(sent.text.contains("broker stopped acknowledging publishes"), "{}", sent.text);
    eprintln!("auto through a stalling broker: sizes {sizes:?} in {took:?}");
}

#[test]
fn an_explicit_size_the_broker_stalls_on_fails_in_bounded_time() {
    let broker = Broker::start();
    let proxy = Proxy::start(broker.addr());
    proxy.stall_publishes_over(Some(LIMIT));
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "explicit.bin", 1 << 20, 9932);

    let rx = Cli::receive(broker.port(), out.path(), "rx-explicit-stall", &["-V", "311"]);
    let flags: Vec<String> = ["-V", "311", "--keepalive", KEEP_ALIVE, "--chunk-size", "64k"].map(String::from).to_vec();
    // finish_within fails the test on a hang.
    let (failed, took) = timed(|| Cli::send(proxy.port(), &file, &flags).finish_within(WAIT));
    assert!(matches!(failed.code, Some(3 | 7)), "{}", failed.text);
    let error = failed.event("error").unwrap_or_else(|| panic!("no error event\n{}", failed.text));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("64 KiB") || message.contains("65536"), "{message}\n{}", failed.text);
    assert!(proxy.stalls() >= 1, "{}", failed.text);
    assert!(took < Duration::from_secs(45), "took {took:?}\n{}", failed.text);
    eprintln!("explicit 64k through a stalling broker failed in {took:?}: {message}");
    drop(rx);
}
