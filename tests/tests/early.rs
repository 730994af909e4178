//! Protocol version 5: a sender sends its first chunks before anyone answered
//! (PROTOCOL.md 8.2), and a receiver subscribed to every transfer's chunks from
//! the start takes them, so a file needs no round trip before its data.

use mqft::{ChunkSize, MqttVersion, SendOptions};
use mqft_tests::{files_equal, random_file, Broker};

use crate::util::{client, connected, receive_opts, within, LIMIT};

/// A 2 MiB file in 32 chunks of 64 KiB: all of it within the 4 MiB sent before
/// anyone answers.
const SIZE: u64 = 2 << 20;
const CHUNKS: u32 = 32;

fn send_opts() -> SendOptions {
    let mut o = SendOptions::default();
    o.chunk_size = ChunkSize::Fixed(64 << 10);
    o
}

/// Sends the file to one receiver, started first with `early_chunks`, and
/// returns how many chunk publishes the send took.
async fn transmissions(version: MqttVersion, early_chunks: bool) -> u32 {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "early.bin", SIZE, 51);
    let client = client(&broker, version);
    let mut opts = receive_opts("rx-early");
    opts.once = true;
    opts.early_chunks = early_chunks;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;
    // The subscriptions in place at the broker before the manifest comes.
    let last = if early_chunks { "files/+/chunk/+" } else { "files/+/ctl" };
    assert!(mqft_tests::wait_until(LIMIT, || !broker.subscribers(last).is_empty()), "never subscribed to {last}");
    let report = within("the send", client.send([&path], send_opts()).wait()).await.unwrap();
    within("the receive", rx.wait()).await.unwrap();
    assert!(files_equal(&path, &out.path().join("early.bin")));
    assert_eq!(report.files[0].chunks, CHUNKS);
    report.files[0].transmissions
}

/// Subscribed to every transfer's chunks, the receiver gets each chunk once: the
/// ones sent before its `Ready` reached the sender included. One that subscribes
/// only once it took the file misses those, and they go out again: so they did
/// go out before anyone answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunks_go_out_before_the_ready_and_are_used() {
    for version in [MqttVersion::V5, MqttVersion::V311] {
        assert_eq!(transmissions(version, true).await, CHUNKS, "{version:?}, early chunks");
        // How many depends on how far the sender got before the `Ready` came.
        let late = transmissions(version, false).await;
        assert!(late > CHUNKS && late <= 2 * CHUNKS, "{version:?}, chunks once taken: {late}");
    }
}

/// `send --eager 0` waits for a receiver before its first chunk: nothing is
/// sent twice even to a receiver that subscribes to chunks only once it took the
/// file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_eager_bytes_waits_for_a_receiver() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "late.bin", SIZE, 52);
    let client = client(&broker, MqttVersion::V5);
    let mut opts = receive_opts("rx-late");
    opts.once = true;
    opts.early_chunks = false;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;
    let mut send = send_opts();
    send.eager_bytes = 0;
    let report = within("the send", client.send([&path], send).wait()).await.unwrap();
    within("the receive", rx.wait()).await.unwrap();
    assert!(files_equal(&path, &out.path().join("late.bin")));
    assert_eq!(report.files[0].transmissions, CHUNKS);
}
