//! `SendOptions::concurrency` (`--concurrency`): files beyond the limit start as
//! earlier ones finish.

use mqft::{MqttVersion, SendEvent, SendOptions};
use mqft_tests::{files_equal, random_file, Broker};

use crate::util::{client, connected, receive_opts, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_at_a_time_sends_every_file() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..3u64).map(|i| random_file(src.path(), &format!("f{i}.bin"), 100_000, 60 + i)).collect();
    let client = client(&broker, MqttVersion::V5);
    let mut rx = client.receive(out.path(), receive_opts("rx-one-at-a-time"));
    connected(&mut rx).await;

    let mut opts = SendOptions::default();
    opts.concurrency = 1;
    // Before the fix the send stalled for good once the first file was sent: the
    // slot it freed was handed out only on the next event, and none came.
    let report = within("the send", client.send(&files, opts).wait()).await.unwrap();
    assert_eq!(report.files.len(), files.len());

    rx.cancel();
    within("the receive", rx.wait()).await.unwrap();
    for path in &files {
        assert!(files_equal(path, &out.path().join(path.file_name().unwrap())), "{}", path.display());
    }
}

/// `in_flight_bytes`: a file starts only while the files being sent hold less,
/// so nothing starts beside a large file (and two large ones never go together),
/// while small ones still go several at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_one_at_a_time_and_small_ones_together() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let big: Vec<_> = (0..2u64).map(|i| random_file(src.path(), &format!("big{i}.bin"), 3 << 20, 70 + i)).collect();
    let small: Vec<_> = (0..6u64).map(|i| random_file(src.path(), &format!("s{i}.bin"), 20_000, 80 + i)).collect();
    let files: Vec<_> = big.iter().chain(&small).cloned().collect();
    let client = client(&broker, MqttVersion::V5);
    let mut rx = client.receive(out.path(), receive_opts("rx-in-flight"));
    connected(&mut rx).await;

    let mut opts = SendOptions::default();
    opts.concurrency = 8;
    opts.in_flight_bytes = 2 << 20;
    let mut send = client.send(&files, opts);
    // Whether a file started while a large one was being sent, and the most small
    // ones in flight at once.
    let (mut in_flight, mut beside_big, mut most_small, mut seen) = (Vec::new(), false, 0, Vec::new());
    while let Some(event) = within("the sender's events", send.next_event()).await {
        match event {
            SendEvent::Started { path, .. } => {
                seen.push(format!("started {}", path.display()));
                beside_big |= in_flight.iter().any(|p| big.contains(p));
                in_flight.push(path);
            }
            SendEvent::Finished { path, .. } => {
                seen.push(format!("finished {}", path.display()));
                in_flight.retain(|p| *p != path);
            }
            _ => continue,
        }
        if !in_flight.iter().any(|p| big.contains(p)) {
            most_small = most_small.max(in_flight.len());
        }
    }
    within("the send", send.wait()).await.unwrap();
    assert!(!beside_big, "a file started while a large one was being sent: {seen:#?}");
    assert!(most_small > 1, "the small files went one at a time: {seen:#?}");

    rx.cancel();
    within("the receive", rx.wait()).await.unwrap();
    for path in &files {
        assert!(files_equal(path, &out.path().join(path.file_name().unwrap())), "{}", path.display());
    }
}
