//! Receiver pools (issue 13, item 3): `mqft receive --pool NAME` members share
//! the offers of a prefix through a shared subscription on a real Mosquitto
//! 2.0.11. Each file is taken by exactly one member; a member killed mid-file
//! is replaced by another, which resumes the partial file of a shared output
//! directory; a dead member swallows no offers; a member that starts after the
//! manifest was published does not take it from the retained copy (Mosquitto
//! hands retained messages to shared subscriptions) when another took it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mqft_tests::{
    broker_flags as at, files_equal, mqft_command as mqft, random_file, show_output as show, wait_until, Broker,
    Process,
};

/// The bound on each wait for a process's output or exit.
const WAIT: Duration = Duration::from_secs(40);

/// A pool member of pool `workers` writing into `out`, started and connected.
fn member(port: u16, out: &Path) -> Process {
    let mut command = mqft(["receive", "--json", "--pool", "workers", "--out"]);
    command.arg(out).args(at(port));
    let p = Process::spawn(&mut command);
    assert!(
        wait_until(WAIT, || p.stdout().contains("\"event\":\"connected\"")),
        "a member did not connect\n{}",
        p.stderr()
    );
    p
}

/// Waits until the broker has the shared manifest subscription of `n` members:
/// an offer published before a member subscribed would go to the others.
fn subscribed(broker: &Broker, n: usize) {
    assert!(
        wait_until(WAIT, || broker.subscribers("$share/workers/files/+/manifest").len() >= n),
        "{n} members never subscribed\n{}",
        broker.log()
    );
}

/// `mqft send --json` of `files` with `extra` flags, running.
fn send(port: u16, files: &[PathBuf], extra: &[&str]) -> Process {
    let mut command = mqft(["send", "--json"]);
    command.args(files).args(at(port)).args(extra);
    Process::spawn(&mut command)
}

/// The received files under `out` (the state folder aside), by name.
fn received(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".mqft")
        .collect();
    names.sort();
    names
}

/// How many copies of each file the members' directories hold, together.
fn copies(outs: &[&Path]) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for out in outs {
        for name in received(out) {
            *count.entry(name).or_insert(0) += 1;
        }
    }
    count
}

#[test]
fn three_members_take_sixty_files_from_two_senders_each_exactly_once() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let files: Vec<Vec<PathBuf>> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(s, sender)| {
            (0..30u64)
                .map(|i| {
                    random_file(
                        src.path(),
                        &format!("{sender}-{i:02}.bin"),
                        20_000 + i * 1_337,
                        13_000 + s as u64 * 100 + i,
                    )
                })
                .collect()
        })
        .collect();
    let outs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _members: Vec<Process> = outs.iter().map(|o| member(broker.port(), o.path())).collect();
    subscribed(&broker, 3);

    let senders: Vec<Process> = files.iter().map(|f| send(broker.port(), f, &[])).collect();
    for s in senders {
        let output = s.finish_within(WAIT);
        assert!(output.status.success(), "{}", show(&output));
    }

    let dirs: Vec<&Path> = outs.iter().map(|o| o.path()).collect();
    let copies = copies(&dirs);
    let all: Vec<&PathBuf> = files.iter().flatten().collect();
    assert_eq!(copies.len(), all.len(), "every file arrived: {copies:?}");
    assert!(copies.values().all(|&n| n == 1), "each file exactly once across the members: {copies:?}");
    for path in all {
        let name = path.file_name().unwrap().to_str().unwrap();
        let at = dirs.iter().map(|d| d.join(name)).find(|p| p.exists()).unwrap();
        assert!(files_equal(path, &at), "{name} differs");
    }
    // The work was shared: every member took some.
    for out in &dirs {
        assert!(!received(out).is_empty(), "a member took nothing: {copies:?}");
    }
}

#[test]
fn a_member_killed_mid_file_is_replaced_and_its_partial_file_resumed() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let big = random_file(src.path(), "big.bin", 16_000_000, 13_101);
    // Three members into one shared output directory (and so one state folder).
    let mut members: Vec<Process> = (0..3).map(|_| member(broker.port(), out.path())).collect();
    subscribed(&broker, 3);

    // 4 MB/s: the file takes about 4 s, long enough to kill its member mid-way.
    let sender = send(broker.port(), std::slice::from_ref(&big), &["--rate", "4M"]);
    let mut taker = None;
    assert!(
        wait_until(WAIT, || {
            taker = members.iter().position(|m| m.stdout().contains("\"event\":\"accepted\""));
            taker.is_some()
        }),
        "no member accepted the file\n{}",
        sender.stderr()
    );
    let taker = taker.unwrap();
    // Kill it once it has saved its progress (a `.state` next to the `.part`),
    // so that the member taking over has something to resume.
    let parts = out.path().join(".mqft").join("part");
    assert!(
        wait_until(WAIT, || fs::read_dir(&parts)
            .is_ok_and(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "state")))),
        "the taker never saved its progress\n{}",
        members[taker].stderr()
    );
    members[taker].kill();
    assert!(!sender.stdout().contains("\"event\":\"finished\""), "killed after the file finished: too late to test");

    let output = sender.finish_within(WAIT);
    assert!(output.status.success(), "{}", show(&output));
    assert!(files_equal(&big, &out.path().join("big.bin")), "the file arrived whole");
    assert_eq!(received(out.path()), ["big.bin"], "once");
    // Another member took it over, from what the dead one had written.
    let resumer = members
        .iter()
        .enumerate()
        .find(|(i, m)| *i != taker && m.stdout().contains("\"event\":\"completed\""))
        .map(|(_, m)| m.stdout())
        .unwrap_or_else(|| panic!("no other member completed the file\n{}", show(&output)));
    let accepted = resumer.lines().find(|l| l.contains("\"event\":\"accepted\"")).unwrap();
    assert!(
        !accepted.contains("\"resumed_bytes\":0,"),
        "the member taking over resumed the shared partial file: {accepted}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wire: u64 = stdout
        .lines()
        .find(|l| l.contains("\"event\":\"summary\""))
        .and_then(|l| l.split("\"wire_bytes\":").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no summary\n{stdout}"));
    assert!(wire < 2 * 16_000_000, "the resumed part was not sent twice: {wire} bytes on the wire");

    // A dead member swallows no offers: each of these is offered once (a join
    // timeout of 1 s leaves no time for a second offer), and every one of them
    // must reach a live member. A persistent session of the dead member would
    // keep taking its turn, and a third of them would fail.
    let small: Vec<PathBuf> =
        (0..6u64).map(|i| random_file(src.path(), &format!("after-{i}.bin"), 10_000 + i, 13_200 + i)).collect();
    let output = send(broker.port(), &small, &["--timeout", "1"]).finish_within(WAIT);
    assert!(output.status.success(), "an offer went to the dead member\n{}", show(&output));
    for path in &small {
        assert!(files_equal(path, &out.path().join(path.file_name().unwrap())));
    }
    // Members sharing a folder on purpose are not warned about it.
    for m in &members {
        assert!(!m.stderr().contains("another receiver is using this state folder"), "{}", m.stderr());
    }
}

#[test]
fn members_that_start_after_the_offer_take_it_once_not_from_the_retained_copy() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "early.bin", 300_000, 13_301);
    // 100 kB/s: the file takes 3 s, so that it is still being sent (and its
    // manifest still retained) while the later members subscribe.
    let sender = send(broker.port(), std::slice::from_ref(&file), &["--rate", "100k", "--chunk-size", "16k"]);
    assert!(
        wait_until(WAIT, || sender.stdout().contains("\"event\":\"started\"")),
        "the send never started\n{}",
        sender.stderr()
    );
    // The manifest is retained now; Mosquitto hands it to every shared
    // subscriber that subscribes. The sender's next live offer goes to one.
    let outs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _members: Vec<Process> = outs.iter().map(|o| member(broker.port(), o.path())).collect();
    let output = sender.finish_within(WAIT);
    assert!(output.status.success(), "{}", show(&output));
    let dirs: Vec<&Path> = outs.iter().map(|o| o.path()).collect();
    let copies = copies(&dirs);
    assert_eq!(copies, BTreeMap::from([("early.bin".to_owned(), 1)]), "taken by one member only");
    let at = dirs.iter().map(|d| d.join("early.bin")).find(|p| p.exists()).unwrap();
    assert!(files_equal(&file, &at));
}

#[test]
fn a_pool_name_that_would_change_the_filter_is_a_usage_error() {
    let out = tempfile::tempdir().unwrap();
    for bad in ["a/b", "+", "#", "Upper", ""] {
        let mut command = mqft(["receive", "--pool", bad, "--out"]);
        // Nothing listens on port 1: a name that passed would fail to connect (exit 3).
        command.arg(out.path()).args(["-h", "127.0.0.1", "-p", "1"]);
        let output = Process::spawn(&mut command).finish_within(WAIT);
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {}", show(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains("--pool"), "{bad:?}: {}", show(&output));
    }
    assert!(received(out.path()).is_empty() && !out.path().join(".mqft").exists(), "nothing created");
}

#[test]
fn a_member_killed_mid_file_into_its_own_directory_is_replaced_and_the_file_starts_over() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let big = random_file(src.path(), "big.bin", 16_000_000, 13_401);
    // Three members, each into its own directory: nothing to resume from.
    let outs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut members: Vec<Process> = outs.iter().map(|o| member(broker.port(), o.path())).collect();
    subscribed(&broker, 3);

    let sender = send(broker.port(), std::slice::from_ref(&big), &["--rate", "4M"]);
    let mut taker = None;
    // Killed once it has written some of the file.
    assert!(
        wait_until(WAIT, || {
            taker = members.iter().position(|m| {
                m.stdout().lines().any(|l| l.contains("\"event\":\"progress\"") && !l.contains("\"bytes\":0,"))
            });
            taker.is_some()
        }),
        "no member made progress\n{}",
        sender.stderr()
    );
    let taker = taker.unwrap();
    members[taker].kill();
    assert!(!sender.stdout().contains("\"event\":\"finished\""), "killed after the file finished: too late to test");

    let output = sender.finish_within(WAIT);
    assert!(output.status.success(), "{}", show(&output));
    let dirs: Vec<&Path> = outs.iter().map(|o| o.path()).collect();
    assert_eq!(copies(&dirs), BTreeMap::from([("big.bin".to_owned(), 1)]), "once, and not in the dead member's");
    assert!(received(dirs[taker]).is_empty(), "the dead member stored nothing");
    let at = dirs.iter().map(|d| d.join("big.bin")).find(|p| p.exists()).unwrap();
    assert!(files_equal(&big, &at), "the file arrived whole");
    let resumer = members.iter().map(Process::stdout).find(|s| s.contains("\"event\":\"completed\"")).unwrap();
    let accepted = resumer.lines().find(|l| l.contains("\"event\":\"accepted\"")).unwrap();
    assert!(accepted.contains("\"resumed_bytes\":0,"), "started over: {accepted}");
}
