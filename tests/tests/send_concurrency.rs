//! `SendOptions::concurrency` (`--concurrency`): files beyond the limit start as
//! earlier ones finish.

use mqft::{MqttVersion, SendOptions};
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
