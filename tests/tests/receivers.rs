//! One send, several receivers: all of them get the file, including one that
//! turns up after the transfer began.

use std::collections::BTreeSet;
use std::path::Path;

use mqft::proto::{ReceiverId, Wait};
use mqft::{ChunkSize, MqttVersion, ReceiveHandle, SendEvent, SendOptions};
use mqft_tests::{files_equal, random_file, Broker};

use crate::util::{client, connected, drain, next_matching, receive_opts, rid, within};

/// A receiver with id `id` writing into `out`, connected.
///
/// It runs until cancelled rather than with `once`: a `once` receiver that
/// stops right after a large file can lose its final acknowledgement (see
/// `transfer::a_once_receivers_last_ack_reaches_the_sender`), and these tests
/// are about fan-out.
async fn receiver(client: &mqft::Client, id: &str, out: &Path) -> ReceiveHandle {
    let mut rx = client.receive(out, receive_opts(id));
    connected(&mut rx).await;
    rx
}

/// Stops a receiver whose sender has finished, and checks that it received
/// exactly `path`'s bytes as `out/<name>`.
async fn received_exactly(id: &str, rx: ReceiveHandle, path: &Path, out: &Path) {
    rx.cancel();
    let received = within("a receive", rx.wait()).await.unwrap_or_else(|e| panic!("{id}: {e}"));
    let arrived = out.join(path.file_name().unwrap());
    assert_eq!(received.files.len(), 1, "{id}: {:?}", received.files);
    assert_eq!(received.files[0].path, arrived, "{id}");
    assert!(files_equal(path, &arrived), "{id}: the file differs");
}

/// Send options that wait for `n` receivers.
fn wait_for(n: usize) -> SendOptions {
    let mut opts = SendOptions::default();
    opts.protocol.wait = Wait::Count(n);
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_receivers_all_get_one_send() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "fanout.bin", 3 * 1024 * 1024 + 7, 3001);
    let client = client(&broker, MqttVersion::V5);
    let ids = ["rx-a", "rx-b", "rx-c"];
    let outs: Vec<_> = ids.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let mut rxs = Vec::new();
    for (id, out) in ids.iter().zip(&outs) {
        rxs.push(receiver(&client, id, out.path()).await);
    }

    let mut send = client.send([&path], wait_for(3));
    let events = drain(&mut send).await;
    let report = within("the send", send.wait()).await.unwrap_or_else(|e| panic!("{e}\n{events:#?}"));
    let confirmed: BTreeSet<ReceiverId> = report.files[0].receivers.iter().cloned().collect();
    assert_eq!(confirmed, ids.iter().map(|id| rid(id)).collect(), "every receiver confirmed the SHA-256");
    for id in ids {
        assert!(
            events.iter().any(|e| matches!(e, SendEvent::ReceiverComplete { receiver, .. } if receiver.as_str() == id)),
            "no ReceiverComplete from {id}: {events:#?}"
        );
    }

    for ((id, out), rx) in ids.iter().zip(&outs).zip(rxs) {
        received_exactly(id, rx, &path, out.path()).await;
    }
}

/// When the late receiver starts, relative to the transfer to the early one.
#[derive(Debug, Clone, Copy)]
enum Late {
    /// Once the early receiver holds part of the file.
    MidTransfer,
    /// Once the early receiver has confirmed the whole file.
    AfterTheFirstCompleted,
}

/// One send that waits for two receivers; the second starts only after the
/// sender's `Started` and the first receiver's join, at the point `late`
/// says. It learns of the file from the retained manifest and must still get
/// all of it.
async fn late_receiver(late: Late) {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let (early_out, late_out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let path = random_file(src.path(), "late.bin", 4 * 1024 * 1024 + 3, 3101);
    let client = client(&broker, MqttVersion::V5);
    let early = receiver(&client, "rx-early", early_out.path()).await;

    let mut opts = wait_for(2);
    // Small chunks and a small window: the transfer takes long enough that the
    // early receiver's acks (one per 32 chunks) report progress before it ends.
    opts.chunk_size = ChunkSize::Fixed(16 * 1024);
    opts.protocol.window = 16;
    let mut send = client.send([&path], opts);
    next_matching(&mut send, "the sender's Started", |e| matches!(e, SendEvent::Started { .. })).await;
    next_matching(
        &mut send,
        "rx-early's join",
        |e| matches!(e, SendEvent::ReceiverJoined { receiver, .. } if receiver.as_str() == "rx-early"),
    )
    .await;
    match late {
        Late::MidTransfer => {
            next_matching(&mut send, "rx-early's progress", |e| {
                matches!(e, SendEvent::Progress { receiver, bytes, .. } if receiver.as_str() == "rx-early" && *bytes > 0)
            })
            .await;
        }
        Late::AfterTheFirstCompleted => {
            next_matching(
                &mut send,
                "rx-early's confirmation",
                |e| matches!(e, SendEvent::ReceiverComplete { receiver, .. } if receiver.as_str() == "rx-early"),
            )
            .await;
        }
    }
    let late_rx = receiver(&client, "rx-late", late_out.path()).await;

    let events = drain(&mut send).await;
    let report = within("the send", send.wait()).await.unwrap_or_else(|e| panic!("{late:?}: {e}\n{events:#?}"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SendEvent::ReceiverJoined { receiver, .. } if receiver.as_str() == "rx-late")),
        "{late:?}: rx-late joined after the transfer began: {events:#?}"
    );
    let confirmed: BTreeSet<ReceiverId> = report.files[0].receivers.iter().cloned().collect();
    assert_eq!(confirmed, [rid("rx-early"), rid("rx-late")].into_iter().collect(), "{late:?}");

    received_exactly("rx-early", early, &path, early_out.path()).await;
    received_exactly("rx-late", late_rx, &path, late_out.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_starts_mid_transfer_still_gets_the_file() {
    late_receiver(Late::MidTransfer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_starts_after_the_first_completed_still_gets_the_file() {
    late_receiver(Late::AfterTheFirstCompleted).await;
}
