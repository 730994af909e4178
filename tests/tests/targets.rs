//! Who gets a file, and under which prefix (issue 10 items 2 and 3), through the
//! `mqft` binary against real Mosquitto: default receiver ids unique per host
//! and directory and stable across restarts, `--to` that restricts, several
//! `--prefix`es and `+` levels on a receiver, `send DIR` with relative paths, and
//! a symlink planted at a directory of such a path.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use mqft_tests::{
    broker_flags as at, files_equal, mqft_command as mqft, random_file, show_output as show, wait_until, Broker,
    Process,
};
use serde_json::Value;

/// The bound on each process's run and each wait.
const WAIT: Duration = Duration::from_secs(60);

/// Starts `mqft receive --json` into `out` with `extra` flags, and waits until
/// `filter` has one more subscriber.
fn start_receiver(broker: &Broker, out: &Path, filter: &str, extra: &[&str]) -> Process {
    let before = broker.subscribers(filter).len();
    let mut command = mqft(["receive", "--json", "--out"]);
    command.arg(out).args(at(broker.port())).args(extra);
    let receiver = Process::spawn(&mut command);
    assert!(
        wait_until(WAIT, || broker.subscribers(filter).len() > before),
        "mqft receive did not subscribe to {filter}\nstdout: {}\nstderr: {}",
        receiver.stdout(),
        receiver.stderr()
    );
    receiver
}

/// The manifest filter of the default prefix.
const FILES: &str = "files/+/manifest";

/// The JSON events a process printed so far.
fn events(text: &str) -> Vec<Value> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The receiver id a `--json` receiver said it connected as.
fn connected_id(p: &Process) -> String {
    let mut id = None;
    assert!(
        wait_until(WAIT, || {
            id = events(&p.stdout()).iter().find(|e| e["event"] == "connected").map(|e| e["receiver"].to_string());
            id.is_some()
        }),
        "no connected event\n{}",
        p.stderr()
    );
    id.unwrap_or_default().trim_matches('"').to_owned()
}

/// Runs `mqft send` with `args` to completion.
fn send(broker: &Broker, args: &[&std::ffi::OsStr]) -> Output {
    Process::spawn(mqft(["send"]).args(args).args(at(broker.port()))).finish_within(WAIT)
}

/// Every entry under `dir`, hidden ones included, relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_owned();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            // The receiver's own state folder is not something it wrote for a
            // transfer, but a partial file in it is.
            let a_part = rel.starts_with(".mqft/part") && rel != Path::new(".mqft/part");
            if rel.starts_with(".mqft") && !a_part {
                continue;
            }
            all.push(rel);
        }
    }
    all.sort();
    all
}

/// Issue 10 item 3: two receivers on one host, into two directories, with
/// default ids, are two receivers to `send -n 2`; one killed mid-transfer and
/// restarted keeps its id and resumes.
#[test]
fn two_receivers_on_one_host_have_distinct_stable_ids_and_resume() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let (out1, out2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = random_file(src.path(), "big.bin", 24 << 20, 9001);
    let rx1 = start_receiver(&broker, out1.path(), FILES, &[]);
    let mut rx2 = start_receiver(&broker, out2.path(), FILES, &[]);
    let (id1, id2) = (connected_id(&rx1), connected_id(&rx2));
    assert_ne!(id1, id2, "two output directories, two default ids");

    let sender = Process::spawn(
        mqft(["send".as_ref(), file.as_os_str()])
            .args(["-n", "2", "--chunk-size", "16k", "--window", "16", "--json"])
            .args(at(broker.port())),
    );
    // rx2 holds part of the file, and has saved its state...
    let held = |p: &Process| {
        events(&p.stdout()).iter().filter(|e| e["event"] == "progress").filter_map(|e| e["bytes"].as_u64()).max()
    };
    assert!(
        wait_until(WAIT, || held(&rx2).is_some_and(|b| b >= 4 << 20)),
        "rx2 made no progress\n{}\n{}",
        rx2.stderr(),
        sender.stderr()
    );
    let checkpointed = || tree(out2.path()).iter().any(|p| p.to_string_lossy().ends_with(".state"));
    assert!(wait_until(WAIT, checkpointed), "no checkpoint\n{}", rx2.stderr());
    // ...when it is killed, and started again on the same directory.
    rx2.kill();
    let rx2 = start_receiver(&broker, out2.path(), FILES, &[]);
    assert_eq!(connected_id(&rx2), id2, "a restart keeps the default id");

    let sent = sender.finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "send -n 2\n{}", show(&sent));
    let summary = events(&String::from_utf8_lossy(&sent.stdout)).into_iter().find(|e| e["event"] == "summary");
    let text = format!("{summary:?}");
    assert!(text.contains(&id1) && text.contains(&id2), "both confirmed: {text}\n{}", show(&sent));
    assert!(wait_until(WAIT, || out2.path().join("big.bin").exists()), "{}", rx2.stderr());
    let resumed = events(&rx2.stdout())
        .iter()
        .find(|e| e["event"] == "accepted")
        .and_then(|e| e["resumed_bytes"].as_u64())
        .unwrap_or(0);
    assert!(resumed > 0, "the restarted receiver resumed\n{}", rx2.stdout());
    assert!(files_equal(&file, &out1.path().join("big.bin")) && files_equal(&file, &out2.path().join("big.bin")));
    drop(rx1);
}

/// Issue 10 item 3: `--to gw3` with gw1, gw2 and gw3 listening: only gw3 takes
/// the file, the others write nothing (and, started with `--once`, keep waiting),
/// and the sender counts gw3 alone.
#[test]
fn to_restricts_who_takes_the_file() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "only-gw3.bin", 300_000, 9101);
    let outs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut rxs: Vec<Process> = ["gw1", "gw2", "gw3"]
        .iter()
        .zip(&outs)
        .map(|(id, out)| start_receiver(&broker, out.path(), FILES, &["--once", "-v", "--name", id]))
        .collect();

    let sent = send(&broker, &[file.as_os_str(), "--to".as_ref(), "gw3".as_ref(), "--json".as_ref()]);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    let summary = events(&String::from_utf8_lossy(&sent.stdout)).into_iter().find(|e| e["event"] == "summary");
    let receivers = summary.as_ref().map(|s| s["files"][0]["receivers"].clone());
    assert_eq!(receivers, Some(serde_json::json!(["gw3"])), "1 of 1\n{}", show(&sent));

    let gw3 = rxs.pop().unwrap().finish_within(WAIT);
    assert_eq!(gw3.status.code(), Some(0), "{}", show(&gw3));
    assert!(files_equal(&file, &outs[2].path().join("only-gw3.bin")));
    for (rx, out) in rxs.iter_mut().zip(&outs) {
        assert!(rx.is_running(), "a --once receiver not addressed keeps waiting\n{}", rx.stderr());
        assert_eq!(tree(out.path()), Vec::<PathBuf>::new(), "nothing written by a receiver not addressed");
        assert!(rx.stderr().contains("not for me"), "-v says why\n{}", rx.stderr());
    }
}

/// Issue 10 item 3: `--to gw3` with only gw1 and gw2 listening fails as "no
/// receiver" (exit 4) counting gw3 alone, and nothing is written.
#[test]
fn to_an_absent_receiver_fails_and_nobody_writes() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "nobody.bin", 100_000, 9201);
    let outs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let _rxs: Vec<Process> = ["gw1", "gw2"]
        .iter()
        .zip(&outs)
        .map(|(id, out)| start_receiver(&broker, out.path(), FILES, &["--name", id]))
        .collect();
    let sent = send(&broker, &[file.as_os_str(), "--to".as_ref(), "gw3".as_ref(), "--timeout".as_ref(), "3".as_ref()]);
    assert_eq!(sent.status.code(), Some(4), "{}", show(&sent));
    assert!(String::from_utf8_lossy(&sent.stderr).contains("0 of 1 joined"), "{}", show(&sent));
    for out in &outs {
        assert_eq!(tree(out.path()), Vec::<PathBuf>::new(), "nothing written");
    }
}

/// Issue 10 item 2: one receiver, two `--prefix`es: files sent under either arrive.
#[test]
fn one_receiver_serves_two_prefixes() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let a = random_file(src.path(), "a.bin", 200_000, 9301);
    let b = random_file(src.path(), "b.bin", 200_000, 9302);
    let before = broker.subscribers("site2/cams/+/manifest").len();
    let _rx = start_receiver(
        &broker,
        out.path(),
        "site1/cams/+/manifest",
        &["--prefix", "site1/cams", "--prefix", "site2/cams"],
    );
    assert!(wait_until(WAIT, || broker.subscribers("site2/cams/+/manifest").len() > before));
    for (file, prefix) in [(&a, "site1/cams"), (&b, "site2/cams")] {
        let sent = send(&broker, &[file.as_os_str(), "--prefix".as_ref(), prefix.as_ref()]);
        assert_eq!(sent.status.code(), Some(0), "{prefix}\n{}", show(&sent));
    }
    assert!(files_equal(&a, &out.path().join("a.bin")) && files_equal(&b, &out.path().join("b.bin")));
}

/// Issue 10 item 2: `--prefix 'site/+/cams'` takes files sent on `site/a/cams`
/// and `site/b/cams`, and answers each under its concrete prefix (the senders
/// complete: they listen there, not under the pattern).
#[test]
fn a_wildcard_prefix_answers_under_the_concrete_prefix() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let a = random_file(src.path(), "from-a.bin", 200_000, 9401);
    let b = random_file(src.path(), "from-b.bin", 200_000, 9402);
    let _rx = start_receiver(&broker, out.path(), "site/+/cams/+/manifest", &["--prefix", "site/+/cams"]);
    for (file, prefix) in [(&a, "site/a/cams"), (&b, "site/b/cams")] {
        let sent = send(
            &broker,
            &[file.as_os_str(), "--prefix".as_ref(), prefix.as_ref(), "--timeout".as_ref(), "10".as_ref()],
        );
        assert_eq!(sent.status.code(), Some(0), "{prefix}\n{}", show(&sent));
    }
    assert!(files_equal(&a, &out.path().join("from-a.bin")) && files_equal(&b, &out.path().join("from-b.bin")));
    // A sender's '+' is refused: it publishes under one prefix.
    let sent = send(&broker, &[a.as_os_str(), "--prefix".as_ref(), "site/+/cams".as_ref()]);
    assert_eq!(sent.status.code(), Some(2), "{}", show(&sent));
}

/// Issue 10 item 2: `send DIR` keeps relative paths at the receiver, skips a
/// symlink, and an entry it cannot send (a FIFO) fails alone: the rest arrive,
/// and the exit code is the I/O one (8), as for an unreadable file.
#[test]
fn send_dir_keeps_relative_paths_and_a_bad_entry_fails_alone() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let top = src.path().join("photos");
    fs::create_dir_all(top.join("2026/b")).unwrap();
    let files = [
        random_file(&top.join("2026"), "a.jpg", 50_000, 9501),
        random_file(&top.join("2026/b"), "c.jpg", 60_000, 9502),
        random_file(&top, "z.jpg", 70_000, 9503),
    ];
    let outside = random_file(src.path(), "secret.txt", 1000, 9504);
    symlink(&outside, top.join("link.txt")).unwrap();
    let made = std::process::Command::new("mkfifo").arg(top.join("2026/pipe")).status().unwrap();
    assert!(made.success());
    let mut rx = start_receiver(&broker, out.path(), FILES, &[]);

    let sent = send(&broker, &[top.as_os_str()]);
    assert_eq!(sent.status.code(), Some(8), "{}", show(&sent));
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert!(stderr.contains("pipe") && stderr.contains("not a regular file"), "{}", show(&sent));
    assert!(stderr.contains("link.txt"), "the skipped link is named\n{}", show(&sent));
    for (file, rel) in files.iter().zip(["photos/2026/a.jpg", "photos/2026/b/c.jpg", "photos/z.jpg"]) {
        assert!(
            wait_until(WAIT, || out.path().join(rel).exists()),
            "{rel} did not arrive\n{}\n{:?}",
            rx.stderr(),
            tree(out.path())
        );
        assert!(files_equal(file, &out.path().join(rel)), "{rel}");
    }
    assert!(!out.path().join("photos/link.txt").exists(), "the link was not followed");
    assert!(!out.path().join("photos/2026/pipe").exists());
    rx.kill();
}

/// A symlink planted in the output directory where a directory of a received
/// path goes (`out/photos -> elsewhere`) is not followed: nothing is written
/// through it, the receiver refuses the offer as a local I/O error before a byte
/// comes, and the sender is told (exit 5).
#[test]
fn a_planted_symlink_at_a_directory_component_is_not_followed() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let top = src.path().join("photos");
    fs::create_dir_all(&top).unwrap();
    random_file(&top, "a.jpg", 40_000, 9601);
    symlink(elsewhere.path(), out.path().join("photos")).unwrap();
    let _rx = start_receiver(&broker, out.path(), FILES, &[]);

    let sent = send(&broker, &[top.as_os_str()]);
    assert_eq!(sent.status.code(), Some(5), "{}", show(&sent));
    assert_eq!(tree(elsewhere.path()), Vec::<PathBuf>::new(), "written through the planted link");
    assert!(fs::symlink_metadata(out.path().join("photos")).unwrap().file_type().is_symlink());
    // Refused at the offer, before a byte came: no partial file or state either.
    assert_eq!(tree(out.path()), [PathBuf::from("photos")], "{}", show(&sent));
}
