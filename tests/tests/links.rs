//! Constrained and metered links (issue 13, item 1), through the `mqft` binary
//! against real Mosquitto brokers: `--rate` and `--max-publish-rate` keep to
//! their limits within 10 % without resending anything.
//!
//! The achieved rates come from the sender's `--json` summary: the file's bytes
//! and chunk publishes over the whole command's time, connecting and the final
//! check included, so that the tolerance covers everything a user would see.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mqft::proto::Prefix;
use mqft_tests::{
    broker_flags as at, files_equal, mqft_command as mqft, random_file, show_output as show, wait_until, Broker,
    Process,
};
use serde_json::Value;

/// The bound on each process's run; the slowest test takes about 8 s.
const WAIT: Duration = Duration::from_secs(90);

/// Starts `mqft receive --once` with `extra` flags into `out`, subscribed once
/// this returns.
fn start_receiver(broker: &Broker, out: &Path, extra: &[&str]) -> Process {
    let before = broker.subscribers(&Prefix::default().manifest_filter()).len();
    let mut command = mqft(["receive", "--once", "--json", "--out"]);
    command.arg(out).args(at(broker.port())).args(extra);
    let receiver = Process::spawn(&mut command);
    assert!(
        wait_until(WAIT, || broker.subscribers(&Prefix::default().manifest_filter()).len() > before),
        "mqft receive did not subscribe\nstdout: {}\nstderr: {}",
        receiver.stdout(),
        receiver.stderr(),
    );
    receiver
}

/// `mqft send FILE --json EXTRA...` to the broker on `port`, which must succeed.
fn send(file: &Path, port: u16, extra: &[&str]) -> Output {
    let sent = Process::spawn(mqft(["send".as_ref(), file.as_os_str(), "--json".as_ref()]).args(at(port)).args(extra))
        .finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "mqft send\n{}", show(&sent));
    sent
}

/// The last line of a `--json` output: its summary.
fn summary(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no output\n{}", show(output)));
    let value: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"));
    assert_eq!(value["event"], "summary", "{}", show(output));
    value
}

/// Asserts `achieved` is within 10 % of `limit`.
#[track_caller]
fn within_ten_per_cent(achieved: f64, limit: f64, what: &str) {
    let ratio = achieved / limit;
    eprintln!("{what}: {achieved:.1}/s against a limit of {limit}/s ({ratio:.3})");
    assert!((0.9..=1.1).contains(&ratio), "{what}: {achieved:.1}/s against a limit of {limit}/s ({ratio:.3})");
}

#[test]
fn rate_keeps_within_ten_per_cent_and_resends_nothing() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // 4 MiB at 512 KiB/s: 8 s, about 30 times the burst.
    let file = random_file(src.path(), "paced.bin", 4 << 20, 13_001);
    let receiver = start_receiver(&broker, out.path(), &[]);
    let sent = send(&file, broker.port(), &["--rate", "512k"]);
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(0), "mqft receive\n{}", show(&received));
    assert!(files_equal(&file, &out.path().join("paced.bin")));

    let s = summary(&sent);
    let (bytes, secs) = (s["bytes"].as_f64().unwrap(), s["seconds"].as_f64().unwrap());
    within_ten_per_cent(bytes / secs, f64::from(512 << 10), "bytes");
    // Waiting for tokens is not loss: every chunk went out once.
    let f = &s["files"][0];
    assert_eq!(f["transmissions"], f["chunks"], "chunks sent again under pacing\n{}", show(&sent));
}

#[test]
fn max_publish_rate_keeps_within_ten_per_cent() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // 300 chunks of 4 KiB at 100 publishes a second: 3 s, whatever their bytes.
    let file = random_file(src.path(), "counted.bin", 300 * 4096, 13_002);
    let receiver = start_receiver(&broker, out.path(), &[]);
    let sent = send(&file, broker.port(), &["--max-publish-rate", "100", "--chunk-size", "4k"]);
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(0), "mqft receive\n{}", show(&received));
    assert!(files_equal(&file, &out.path().join("counted.bin")));

    let s = summary(&sent);
    let f = &s["files"][0];
    assert_eq!(f["chunks"], 300);
    assert_eq!(f["transmissions"], f["chunks"], "chunks sent again under pacing\n{}", show(&sent));
    within_ten_per_cent(f["transmissions"].as_f64().unwrap() / s["seconds"].as_f64().unwrap(), 100.0, "publishes");
}
