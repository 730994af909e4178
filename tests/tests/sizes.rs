//! The sizes where chunking goes wrong first: nothing, one byte, an exact
//! multiple of the chunk size, one byte over, and a large file, each
//! byte-identical after the transfer, under both MQTT versions.

use std::collections::HashMap;
use std::path::PathBuf;

use mqft::config::{AUTO_CHUNK_CAP, V311_DEFAULT_CHUNK};
use mqft::{MqttVersion, SendEvent, SendOptions};
use mqft_tests::{files_equal, random_file, Broker};

use crate::util::{client, connected, drain, receive_opts, rid, within};

/// The large file: 20 MiB.
const LARGE: u64 = 20 << 20;

/// Sends the five files in one `send` with the default (auto) chunk size and
/// checks each one that arrives. `chunk` is the size auto must pick: mosquitto
/// announces no packet limit by default, so MQTT 5 gets the cap and 3.1.1 its
/// default.
async fn edge_sizes(version: MqttVersion, chunk: u32, seed: u64) {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let chunk = u64::from(chunk);
    let files: Vec<PathBuf> = [
        ("empty.bin", 0),
        ("one.bin", 1),
        ("multiple.bin", 3 * chunk),
        ("over.bin", 3 * chunk + 1),
        ("large.bin", LARGE),
    ]
    .into_iter()
    .zip(seed..)
    .map(|((name, len), seed)| random_file(src.path(), name, len, seed))
    .collect();
    let client = client(&broker, version);
    let mut rx = client.receive(out.path(), receive_opts("rx-sizes"));
    connected(&mut rx).await;

    let mut send = client.send(&files, SendOptions::default());
    let events = drain(&mut send).await;
    let report = within("the send", send.wait()).await.unwrap_or_else(|e| panic!("{version}: {e}\n{events:#?}"));
    assert_eq!(report.files.len(), files.len());
    for sent in &report.files {
        assert_eq!(sent.receivers, [rid("rx-sizes")], "{}", sent.path.display());
    }

    // What each file started with: its size and the chunk size settled for it.
    let started: HashMap<PathBuf, (u64, u32)> = events
        .iter()
        .filter_map(|e| match e {
            SendEvent::Started { path, size, chunk_size, .. } => Some((path.clone(), (*size, *chunk_size))),
            _ => None,
        })
        .collect();
    for path in &files {
        let len = std::fs::metadata(path).unwrap().len();
        let (size, c) = started.get(path).copied().unwrap_or_else(|| panic!("no Started for {}", path.display()));
        assert_eq!(size, len, "{}", path.display());
        // Otherwise "multiple" and "over" would not be what their names say.
        assert_eq!(u64::from(c), chunk, "{version}: chunk size of {}", path.display());
    }

    rx.cancel();
    let received = within("the receive", rx.wait()).await.unwrap();
    assert_eq!(received.files.len(), files.len(), "{:?}", received.files);
    for path in &files {
        let name = path.file_name().unwrap();
        let arrived = out.path().join(name);
        assert!(files_equal(path, &arrived), "{version}: {} differs after the transfer", path.display());
        assert!(received.files.iter().any(|f| f.path == arrived), "{} not in the receive report", arrived.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sizes_and_20_mib_are_identical_after_mqtt_5() {
    edge_sizes(MqttVersion::V5, AUTO_CHUNK_CAP, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sizes_and_20_mib_are_identical_after_mqtt_3_1_1() {
    edge_sizes(MqttVersion::V311, V311_DEFAULT_CHUNK, 2000).await;
}
