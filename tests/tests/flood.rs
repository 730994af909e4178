//! Bounded memory against a hostile publisher (issue 9, item 5): anybody allowed
//! to publish under the prefix floods a receiver with messages that cost it
//! nothing in payload but 60 KiB of topic each, while a real transfer runs. The
//! receiver's memory stays bounded, its connection stays up (a short keep-alive
//! would notice any stall in its polling), and the transfer completes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mqft::proto::Prefix;
use mqft_tests::{files_equal, mqft_command as mqft, random_file, wait_until, Broker, Process, HOST};

use crate::raw::Raw;

/// The bound on each step; the transfer takes a few seconds even under the flood.
const WAIT: Duration = Duration::from_secs(120);

/// A topic level of 60 KiB of letters.
fn long_level() -> String {
    (0..60 << 10).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
}

/// Publishes zero-byte messages on 60 KiB topics that the receiver's
/// `files/+/ctl` and `files/+/manifest` subscriptions match, QoS 0 and QoS 1 in
/// turn, as fast as the broker takes them, until `stop`. Returns how many went out.
fn flood(port: u16, name: &str, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) -> JoinHandle<()> {
    let name = name.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let raw = Raw::connect_to(port, &name).await;
            let level = long_level();
            let mut n: u64 = 0;
            while !stop.load(Ordering::SeqCst) {
                let (kind, qos1) = if n.is_multiple_of(2) { ("ctl", false) } else { ("manifest", true) };
                // A different level each time, so that no broker could coalesce them.
                let topic = format!("files/{n:08}{level}/{kind}");
                if !raw.publish_qos(&topic, qos1, Vec::<u8>::new()).await {
                    break;
                }
                n += 1;
                sent.fetch_add(1, Ordering::SeqCst);
            }
        });
    })
}

/// The process's peak resident set (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[test]
fn a_flood_of_long_topics_leaves_the_receiver_small_connected_and_receiving() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "real.bin", 20 << 20, 9501);
    let at = ["-h".to_owned(), HOST.to_owned(), "-p".to_owned(), broker.port().to_string()];

    // Keep-alive 5 s: polling that stalls for 7.5 s loses the connection.
    let mut command = mqft(["receive", "--json", "-v", "-k", "5", "--out"]);
    command.arg(out.path()).args(&at);
    let receiver = Process::spawn(&mut command);
    let manifests = Prefix::default().manifest_filter();
    assert!(wait_until(WAIT, || !broker.subscribers(&manifests).is_empty()), "no receiver\n{}", receiver.stderr());

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // Two publishers: together they outrun what one receiver takes.
    let flooders: Vec<_> =
        ["flood-a", "flood-b"].iter().map(|name| flood(broker.port(), name, stop.clone(), sent.clone())).collect();
    // The flood is well under way (over a GiB of topics) before the file.
    assert!(wait_until(WAIT, || sent.load(Ordering::SeqCst) >= 20_000), "the flood did not start");

    let mut command = mqft(["send".as_ref(), file.as_os_str()]);
    command.args(&at);
    let send = Process::spawn(&mut command).finish_within(WAIT);
    assert_eq!(
        send.status.code(),
        Some(0),
        "mqft send\n{}\nflood: {} messages; receiver peak RSS {} MiB\nreceiver stdout:\n{}\nreceiver stderr:\n{}",
        String::from_utf8_lossy(&send.stderr),
        sent.load(Ordering::SeqCst),
        peak_rss(receiver.id()) >> 20,
        receiver.stdout(),
        receiver.stderr()
    );
    assert!(
        wait_until(WAIT, || receiver.stdout().contains("\"event\":\"completed\"")),
        "the receiver did not complete\n{}",
        receiver.stdout()
    );
    // Taken while the receiver still runs, and the flood with it.
    let peak = peak_rss(receiver.id());
    let flooded = sent.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for f in flooders {
        f.join().unwrap();
    }

    assert!(files_equal(&file, &out.path().join("real.bin")), "the file differs");
    let events = receiver.stdout();
    assert!(!events.contains("\"event\":\"disconnected\""), "the receiver lost its connection\n{events}");
    assert!(peak < 48 << 20, "peak RSS {} MiB under a flood of {flooded} messages", peak >> 20);
    eprintln!("peak RSS {} MiB under a flood of {flooded} messages", peak >> 20);
}
