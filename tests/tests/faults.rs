//! Nothing lost, nothing escapes: transfers through real Mosquitto brokers
//! that crash, restart, queue too little or drop large messages, and peers
//! that die in the middle of a file.
//!
//! Each test that expects a transfer to survive asserts a byte-identical file
//! that was not sent again from the start: the sender's count of chunk
//! publishes (`transmissions`) stays under one and a half times the chunk
//! count (under twice where the broker drops chunks by design), and a
//! restarted receiver resumes from its saved state. Each test that expects a
//! failure asserts a clear error (message and exit code, or error kind) within
//! a bound, never a hang.
//!
//! "Mid-transfer" is always read from progress events: the receiver holds
//! part of the file, but not all of it. Where a fault must land inside a
//! transfer, the receiver's link is paced ([`fault_util::paced_link`], a
//! bandwidth-limited proxy) so that it lasts a few seconds on any machine.
//! Faults of the network itself are in `faults_net`.
//!
//! [`fault_util::paced_link`]: crate::fault_util::paced_link

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use mqft::proto::ReceiveFailure;
use mqft::{ChunkSize, ErrorKind, MqttVersion, ReceiveEvent, SendEvent, SendOptions};
use mqft_tests::proxy::{Direction, Proxy};
use mqft_tests::{files_equal, random_file, Broker, Process};

use crate::fault_util::{
    at, client_at, held_at_least, mqft, paced_link, poll_until, timed, windowed, windowed_flags, Cli, DroppedMessages,
    CHUNK, WAIT, WINDOW,
};
use crate::util::{connected, drain, next_matching, receive_opts, visible, within};

/// The size of the files that cross a broker outage or a killed process: a
/// [`paced_link`] takes about 2.5 s to carry it.
const LEN: u64 = 20 << 20;

/// What happens to the broker in the middle of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// `SIGKILL`, then started again: a crash.
    Crash,
    /// `SIGTERM` (mosquitto saves its database and closes every connection),
    /// then started again: maintenance.
    CleanStop,
}

/// A library receiver (on a paced link) and sender through `broker`; the
/// broker goes through `outage` once the receiver holds an eighth of the file
/// (and, with `snapshot`, once the broker has saved a persistence snapshot).
/// Both must come back and finish the file, without sending it all again.
async fn broker_outage_mid_transfer(
    mut broker: Broker,
    outage: Outage,
    snapshot: bool,
    version: MqttVersion,
    seed: u64,
) {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "outage.bin", LEN, seed);
    let link = paced_link(&broker);
    let mut opts = receive_opts("rx-outage");
    opts.once = true;
    let mut rx = client_at(link.port(), version).receive(out.path(), opts);
    connected(&mut rx).await;
    let mut send = client_at(broker.port(), version).send([&path], windowed());

    let held = held_at_least(&mut rx, LEN / 8).await;
    assert!(held < LEN, "the transfer should still be running");
    if snapshot {
        // A crash leaves the last snapshot behind: wait for there to be one, so
        // that the broker comes back with stale sessions and a stale queue.
        let db = broker.dir().join("mosquitto.db");
        assert!(poll_until(WAIT, || db.exists()).await, "no snapshot was saved\n{}", broker.log());
    }
    tokio::task::block_in_place(|| match outage {
        Outage::Crash => {
            broker.kill();
            broker.restart();
        }
        Outage::CleanStop => {
            let status = broker.stop();
            assert!(status.is_some_and(|s| s.success()), "mosquitto stopped with {status:?}\n{}", broker.log());
            broker.restart();
        }
    });

    let rx_events = drain(&mut rx).await;
    let received = within("the receive", rx.wait()).await.unwrap_or_else(|e| panic!("receive: {e}\n{}", broker.log()));
    let send_events = drain(&mut send).await;
    let report = within("the send", send.wait()).await.unwrap_or_else(|e| panic!("send: {e}\n{}", broker.log()));

    // Both sides lost the broker, came back, and the file arrived after that.
    let rx_down = rx_events.iter().position(|e| matches!(e, ReceiveEvent::Disconnected { .. }));
    let rx_up = rx_events.iter().rposition(|e| matches!(e, ReceiveEvent::Connected { .. }));
    let completed = rx_events.iter().position(|e| matches!(e, ReceiveEvent::Completed(_)));
    assert!(
        rx_down < rx_up && rx_up < completed && rx_down.is_some(),
        "the receiver should disconnect, reconnect, then complete: {rx_events:#?}"
    );
    let tx_down = send_events.iter().position(|e| matches!(e, SendEvent::Disconnected { .. }));
    let tx_up = send_events.iter().rposition(|e| matches!(e, SendEvent::Connected));
    assert!(tx_down.is_some() && tx_down < tx_up, "the sender should disconnect and reconnect: {send_events:#?}");

    assert_eq!(received.files.len(), 1);
    assert!(files_equal(&path, &out.path().join("outage.bin")), "the file differs after the outage");
    let sent = &report.files[0];
    assert!(
        sent.transmissions < sent.chunks + sent.chunks / 2,
        "{} chunk publishes for {} chunks: the outage should cost a window's worth, not the file",
        sent.transmissions,
        sent.chunks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_crash_without_persistence_mid_transfer_is_survived() {
    // The restarted broker has forgotten every session, subscription, queued
    // chunk and the retained manifest.
    let broker = Broker::builder().persistence(false).start();
    broker_outage_mid_transfer(broker, Outage::Crash, false, MqttVersion::V5, 9001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_crash_with_persistence_mid_transfer_is_survived() {
    // The restarted broker restores a snapshot up to a second old: the
    // receiver's session comes back with stale queued chunks (duplicates), and
    // the retained manifest with it. MQTT 3.1.1 here, 5 in the others.
    let broker = Broker::builder().persistence(true).config_line("autosave_interval 1").start();
    broker_outage_mid_transfer(broker, Outage::Crash, true, MqttVersion::V311, 9002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_broker_restart_mid_transfer_is_survived() {
    // mosquitto saves its database on SIGTERM: the receiver's session and the
    // chunks queued for it survive the restart.
    let broker = Broker::builder().persistence(true).start();
    broker_outage_mid_transfer(broker, Outage::CleanStop, false, MqttVersion::V5, 9003).await;
}

#[test]
fn a_killed_receiver_process_resumes_from_its_saved_state() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "crash.bin", LEN, 9101);
    let link = paced_link(&broker);
    let mut rx = Cli::receive(link.port(), out.path(), "rx-crash", &[]);
    let sender = Cli::send(broker.port(), &path, &windowed_flags());

    // Half the file in (the receiver saves its state every 64 chunks, so some
    // of it is on record), then the receiver dies without a word.
    let held = rx.wait_held(LEN / 2);
    rx.kill();
    assert!(rx.events().iter().all(|e| e["event"] != "completed"), "the file arrived before the kill\n{}", rx.output());
    // The sender keeps running; the receiver comes back under the same name,
    // so into the same broker session, and finds its saved state.
    let rx = Cli::receive(link.port(), out.path(), "rx-crash", &[]);
    let sent = sender.finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&path, &out.path().join("crash.bin")), "the file differs after the resume");

    let (chunks, transmissions) = (sent.summary_number("chunks"), sent.summary_number("transmissions"));
    assert!(
        transmissions < chunks + chunks / 2,
        "{transmissions} chunk publishes for {chunks} chunks: the receiver should have resumed\n{}",
        sent.text
    );
    let resumed = received.summary_number("resumed_bytes");
    assert!(resumed > 0 && resumed < LEN, "resumed {resumed} bytes\n{}", received.text);
    let accepted = received.event("accepted").unwrap_or_else(|| panic!("no accepted event\n{}", received.text));
    assert_eq!(accepted["resumed_bytes"], resumed, "{}", received.text);
    // No re-hash: the saved hash state covered what was on record. Only chunks
    // that arrived out of order after the restart were read back from the
    // partial file, and those all lie beyond the point the transfer had
    // reached when the receiver died: at most half the file. (How much
    // depends on a race: when credit from the restarted receiver reopens the
    // sender's window before an end of round has reported the chunks lost
    // with the unsaved tail, the sender sends the rest of the file first and
    // the lost chunks last, so everything after them is read back; otherwise
    // nothing is.)
    let read_back = received.summary_number("read_back_bytes");
    assert!(read_back <= LEN - held, "read back {read_back} bytes to hash a {LEN}-byte file\n{}", received.text);
}

#[test]
fn a_killed_sender_process_started_again_resumes_from_what_the_receiver_holds() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "again.bin", LEN, 9201);
    let link = paced_link(&broker);
    let mut rx = Cli::receive(link.port(), out.path(), "rx-steady", &[]);
    let mut sender = Cli::send(broker.port(), &path, &windowed_flags());
    let held = rx.wait_held(LEN / 2);
    sender.kill();

    // The same send again: the same transfer id, a new run. The receiver
    // answers its manifest with what it lacks.
    let again = Cli::send(broker.port(), &path, &windowed_flags()).finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert_eq!(again.code, Some(0), "{}", again.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&path, &out.path().join("again.bin")), "the file differs after the second send");

    let (chunks, transmissions) = (again.summary_number("chunks"), again.summary_number("transmissions"));
    let held_chunks = held / u64::from(CHUNK);
    // What the receiver lacked, plus at most a couple of windows that were in
    // flight when the first sender died.
    let bound = chunks - held_chunks + 2 * u64::from(WINDOW);
    assert!(
        transmissions <= bound && transmissions < chunks * 3 / 4,
        "the second sender published {transmissions} of {chunks} chunks, the receiver held {held_chunks}\n{}",
        again.text
    );
    let joined = again.event("receiver_joined").unwrap_or_else(|| panic!("no receiver_joined\n{}", again.text));
    assert!(joined["held_bytes"].as_u64().is_some_and(|b| b >= held), "{}", again.text);
}

/// The broker's notice when it starts dropping messages for a client over
/// its queue limit.
const DROPPING: &str = "Outgoing messages are being dropped";

/// A library sender with `window`, straight to the broker, and a receiver
/// whose link from the broker carries `rate` bytes a second, through a broker
/// that queues `queue` messages per client. Returns the sender's report and
/// whether the broker dropped any message.
async fn slow_receiver_transfer(queue: u32, window: u32, len: u64, rate: u64, seed: u64) -> (mqft::SentFile, bool) {
    let broker = Broker::builder().max_queued_messages(queue).max_inflight_messages(4).start();
    let proxy = Proxy::start(broker.addr());
    proxy.set_bandwidth(Direction::ServerToClient, Some(rate));
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "slow.bin", len, seed);

    let mut opts = receive_opts("rx-slow");
    opts.once = true;
    let mut rx = client_at(proxy.port(), MqttVersion::V5).receive(out.path(), opts);
    connected(&mut rx).await;
    let mut send_opts = SendOptions::default();
    send_opts.chunk_size = ChunkSize::Fixed(64 * 1024);
    send_opts.protocol.window = window;
    let started = Instant::now();
    let send = client_at(broker.port(), MqttVersion::V5).send([&path], send_opts);
    let report = within("the send", send.wait()).await.unwrap_or_else(|e| panic!("send: {e}\n{}", broker.log()));
    within("the receive", rx.wait()).await.unwrap_or_else(|e| panic!("receive: {e}\n{}", broker.log()));
    let took = started.elapsed();
    assert!(files_equal(&path, &out.path().join("slow.bin")), "the file differs after the slow link");
    // The receiver's link was the bottleneck, as intended.
    let floor = Duration::from_secs_f64(len as f64 / rate as f64 * 0.8);
    assert!(took >= floor, "{len} bytes at {rate} B/s took only {took:?}");
    (report.files[0].clone(), broker.log().contains(DROPPING))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_behind_a_small_broker_queue_loses_nothing() {
    const QUEUE: u32 = 40;
    const RATE: u64 = 3 << 20;
    // A window under the queue: the sender never runs further ahead of the
    // receiver than the broker holds for it.
    let (sent, dropped) = slow_receiver_transfer(QUEUE, QUEUE / 2, 6 << 20, RATE, 9301).await;
    assert!(!dropped, "the broker dropped messages for the slow receiver");
    assert!(
        sent.transmissions <= sent.chunks + sent.chunks / 10,
        "{} chunk publishes for {} chunks",
        sent.transmissions,
        sent.chunks
    );

    // The control: the same link and queue with a window far above the queue.
    // The broker drops chunks (so the limit above was real), and the repairs
    // still deliver the file.
    let (sent, dropped) = slow_receiver_transfer(QUEUE, 512, 3 << 20, RATE, 9302).await;
    assert!(dropped, "with a window above the queue the broker should have dropped chunks");
    assert!(sent.transmissions > sent.chunks, "{} publishes for {} chunks", sent.transmissions, sent.chunks);
}

#[test]
fn a_receiver_offline_for_longer_than_the_broker_queues_catches_up_through_repairs() {
    const QUEUE: u32 = 20;
    let broker = Broker::builder().max_queued_messages(QUEUE).config_line(DroppedMessages::CONFIG).start();
    let dropped = DroppedMessages::watch(&broker);
    // The sender's link paces it (not its window, which is far above the
    // file's chunk count), so it goes on publishing while the receiver is away.
    let proxy = Proxy::start(broker.addr());
    proxy.set_bandwidth(Direction::ClientToServer, Some(6 << 20));
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "away.bin", LEN, 9401);

    let mut rx = Cli::receive(broker.port(), out.path(), "rx-away", &[]);
    let flags = ["--chunk-size".to_owned(), "64k".to_owned(), "--window".to_owned(), "1000".to_owned()];
    let sender = Cli::send(proxy.port(), &path, &flags);
    rx.wait_held(LEN / 5);
    // The resume asserted below needs a saved state, which may trail the progress
    // event on a loaded machine.
    let saved = || hidden_files(out.path()).iter().any(|n| n.ends_with(".state"));
    assert!(mqft_tests::wait_until(WAIT, saved), "no state saved\n{}", rx.output());
    rx.kill();
    let before = dropped.latest().unwrap_or_default();
    // Far more is published for the absent receiver than its queue holds.
    let wanted = before + 5 * u64::from(QUEUE);
    let now = dropped.reach(wanted, WAIT);
    assert!(
        now >= wanted,
        "the broker dropped {} messages while the receiver was away\n{}",
        now - before,
        broker.log()
    );

    let rx = Cli::receive(broker.port(), out.path(), "rx-away", &[]);
    let sent = sender.finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&path, &out.path().join("away.bin")), "the file differs after the repairs");
    let (chunks, transmissions) = (sent.summary_number("chunks"), sent.summary_number("transmissions"));
    // The dropped chunks were sent again (asked for as missing), and only those.
    assert!(
        transmissions > chunks + u64::from(QUEUE) && transmissions < 2 * chunks,
        "{transmissions} chunk publishes for {chunks} chunks\n{}",
        sent.text
    );
    assert!(received.summary_number("resumed_bytes") > 0, "{}", received.text);
}

#[test]
fn a_broker_that_silently_drops_large_messages_fails_the_send_clearly() {
    // mosquitto takes a publish over the limit, acknowledges it, and forwards
    // it to nobody. Under MQTT 3.1.1 the PUBACK is a normal one. Under MQTT 5
    // it carries reason code 0x95 (packet too large), which rumqttc takes for
    // a broken connection: the sender reconnects after each oversized chunk,
    // and must come to the same clear end.
    const SIZE_LIMIT: u32 = 32 * 1024;
    let broker = Broker::builder().config_line(format!("message_size_limit {SIZE_LIMIT}")).start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "large-chunks.bin", 1 << 20, 9501);
    let rx = Cli::receive(broker.port(), out.path(), "rx-limited", &["-V", "311"]);

    // Chunks of 64 KiB under 3.1.1 and 256 KiB under 5, asked for explicitly:
    // every chunk vanishes. (With `auto` the sender would lower the size until
    // chunks get through: see the `autosize` tests.)
    for (version, chunk) in [("311", "64k"), ("5", "256k")] {
        let flags = ["-V".to_owned(), version.to_owned(), "--chunk-size".to_owned(), chunk.to_owned()];
        let (failed, took) = timed(|| Cli::send(broker.port(), &path, &flags).finish_within(WAIT));
        assert_eq!(failed.code, Some(7), "MQTT {version}: {}", failed.text);
        let error = failed.event("error").unwrap_or_else(|| panic!("no error event\n{}", failed.text));
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("no chunk got through") && message.contains("the broker may drop messages this large"),
            "MQTT {version}: {}",
            failed.text
        );
        assert_eq!(error["exit"], 7, "{}", failed.text);
        assert!(took < Duration::from_secs(30), "MQTT {version}: giving up took {took:?}");
        // Not one byte of it reached the receiver.
        let transfer = failed.event("started").map(|e| e["transfer"].clone()).unwrap_or_default();
        let rx_events = rx.events();
        let tried: Vec<_> = rx_events.iter().filter(|e| e["transfer"] == transfer).collect();
        assert!(tried.iter().any(|e| e["event"] == "accepted"), "MQTT {version}: {}", rx.output());
        assert!(tried.iter().all(|e| e["event"] != "progress" || e["bytes"] == 0), "{}", rx.output());
    }

    // The same file in chunks under the limit goes through, to the same receiver.
    let small = ["-V".to_owned(), "311".to_owned(), "--chunk-size".to_owned(), "16k".to_owned()];
    let sent = Cli::send(broker.port(), &path, &small).finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    let received = rx.finish_within(WAIT);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&path, &out.path().join("large-chunks.bin")));
}

#[test]
fn receive_with_nothing_arriving_exits_4_after_its_timeout() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let mut command = mqft(["receive", "--timeout", "2", "--out"]);
    command.arg(out.path()).args(at(broker.port()));
    let (output, took) = timed(|| Process::spawn(&mut command).finish_within(WAIT));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("nothing arrived within 2 s"), "{stderr}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "giving up took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_whose_sender_vanishes_gives_up_and_keeps_its_partial_file() {
    const GIVE_UP: Duration = Duration::from_secs(3);
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "orphan.bin", LEN, 9601);
    let mut opts = receive_opts("rx-orphan");
    opts.once = true;
    opts.protocol.give_up_after = GIVE_UP;
    opts.protocol.idle = Duration::from_millis(500);
    opts.protocol.max_idle = Duration::from_secs(1);
    let link = paced_link(&broker);
    let mut rx = client_at(link.port(), MqttVersion::V5).receive(out.path(), opts);
    connected(&mut rx).await;
    let mut sender = Cli::send(broker.port(), &path, &windowed_flags());

    held_at_least(&mut rx, LEN / 8).await;
    let killed = Instant::now();
    sender.kill();
    let failed = next_matching(&mut rx, "the receiver to give up", |e| matches!(e, ReceiveEvent::Failed { .. })).await;
    let took = killed.elapsed();
    let ReceiveEvent::Failed { failure, .. } = failed else { unreachable!("next_matching returns a Failed") };
    assert_eq!(failure, ReceiveFailure::SenderGone);
    assert_eq!(failure.to_string(), "sender silent for too long");
    // It waited for the sender as long as asked, and not much longer.
    assert!(took >= GIVE_UP - Duration::from_millis(500) && took < GIVE_UP + Duration::from_secs(5), "{took:?}");

    // Nothing under the final name; the partial file and its state stay, for
    // a resume when the sender tries again.
    assert!(visible(out.path()).is_empty(), "{:?}", visible(out.path()));
    let hidden = hidden_files(out.path());
    assert!(hidden.iter().any(|n| n.ends_with(".part")) && hidden.iter().any(|n| n.ends_with(".state")), "{hidden:?}");
    rx.cancel();
    let report = within("the receive", rx.wait()).await.unwrap();
    assert!(report.files.is_empty());
}

#[test]
fn a_cli_receiver_whose_sender_vanishes_exits_4_at_its_timeout() {
    // Without --timeout, `mqft receive` reports the transfer failed after
    // give_up_after (120 s) and goes on listening, as a daemon should; with
    // it, a file that never completes ends the run with exit code 4.
    const TIMEOUT: u64 = 4;
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "stranded.bin", LEN, 9651);
    let link = paced_link(&broker);
    let started = Instant::now();
    let mut rx = Cli::receive(link.port(), out.path(), "rx-stranded", &["--timeout", &TIMEOUT.to_string()]);
    let mut sender = Cli::send(broker.port(), &path, &windowed_flags());
    rx.wait_held(LEN / 8);
    sender.kill();
    let received = rx.finish_within(WAIT);
    let took = started.elapsed();
    assert_eq!(received.code, Some(4), "{}", received.text);
    let error = received.event("error").unwrap_or_else(|| panic!("no error event\n{}", received.text));
    assert_eq!(error["message"], format!("nothing arrived within {TIMEOUT} s"), "{}", received.text);
    assert!(took < Duration::from_secs(TIMEOUT + 6), "the receiver took {took:?} to give up");
    assert!(visible(out.path()).is_empty(), "{:?}", visible(out.path()));
    assert!(hidden_files(out.path()).iter().any(|n| n.ends_with(".part")), "the partial file is kept for a resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_whose_receiver_vanishes_fails_with_stopped_answering() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "unheard.bin", LEN, 9701);
    let link = paced_link(&broker);
    let mut rx = Cli::receive(link.port(), out.path(), "rx-vanishing", &[]);
    // Short timeouts: the end of round is asked again 3 times, after 0.2, 0.4,
    // 0.8 and 1 s, before the receiver counts as lost (the defaults take 63 s).
    let mut opts = windowed();
    opts.protocol.rto = Duration::from_millis(200);
    opts.protocol.max_rto = Duration::from_secs(1);
    opts.protocol.max_retries = 3;
    let mut send = client_at(broker.port(), MqttVersion::V5).send([&path], opts);

    tokio::task::block_in_place(|| rx.wait_held(LEN / 8));
    let killed = Instant::now();
    rx.kill();
    let events = drain(&mut send).await;
    let err = within("the send", send.wait()).await.expect_err("the send cannot succeed");
    let took = killed.elapsed();
    assert!(
        events.iter().any(|e| matches!(e, SendEvent::ReceiverFailed { reason: None, .. })),
        "the receiver should be reported lost: {events:#?}"
    );
    // ErrorKind::Transfer is the CLI's exit code 7.
    assert_eq!(err.kind(), ErrorKind::Transfer, "{err:?}");
    assert!(err.to_string().contains("receiver rx-vanishing stopped answering"), "{err}");
    assert!(took < Duration::from_secs(10), "the sender took {took:?} to give up");
}

/// The files of transfers in progress in a receiver's output directory (in its
/// state folder's `part/`).
fn hidden_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir.join(".mqft/part")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
}
