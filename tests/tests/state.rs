//! The receiver's state and its lifetime (issue 10, item 1), through the `mqft`
//! binary and real Mosquitto: the output directory holds the received files and
//! one `.mqft` state folder, nothing per file; the completed-transfer log
//! answers a re-send after a restart and survives a torn tail; `--state-dir`
//! moves the state out of the output directory; stale partial files are
//! removed with a log line, and a transfer open in the receiver never is.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use mqft::proto::Prefix;
use mqft_tests::{
    broker_flags as at, files_equal, mqft_command as mqft, random_file, show_output as show, wait_until, Broker,
    Process,
};
use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;

use crate::fault_util::{paced_link, windowed_flags, Cli};

/// The bound on each wait.
const WAIT: Duration = Duration::from_secs(120);

/// Files received in one batch: enough that one marker per file would show.
const MANY: usize = 300;

/// What the receiver logs for each partial file it removes.
const PRUNED: &str = "removed the partial file of a transfer that had not advanced";

/// Starts `mqft receive --json` into `out`, plus `extra`, and waits until it has
/// subscribed to the manifests.
fn start_receiver(broker: &Broker, out: &Path, extra: &[&str]) -> Process {
    let filter = Prefix::default().manifest_filter();
    let before = broker.subscribers(&filter).len();
    let mut command = mqft(["receive", "--json", "--name", "gw", "--out"]);
    command.arg(out).args(at(broker.port())).args(extra);
    let receiver = Process::spawn(&mut command);
    assert!(
        wait_until(WAIT, || broker.subscribers(&filter).len() > before),
        "mqft receive did not subscribe\nstdout: {}\nstderr: {}",
        receiver.stdout(),
        receiver.stderr()
    );
    receiver
}

/// `mqft send --json FILES...`, to its end.
fn send(broker: &Broker, files: &[PathBuf]) -> Output {
    let mut command = mqft(["send", "--json", "--concurrency", "16"]);
    command.args(files).args(at(broker.port()));
    Process::spawn(&mut command).finish_within(WAIT)
}

/// Stops a receiver with SIGTERM (a clean stop) and returns its output.
fn stop(p: Process) -> Output {
    let pid = Pid::from_raw(i32::try_from(p.id()).unwrap()).unwrap();
    kill_process(pid, Signal::TERM).unwrap();
    let out = p.finish_within(WAIT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    out
}

/// The receiver's JSON events named `name` so far.
fn events(p: &Process, name: &str) -> Vec<Value> {
    p.stdout().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|e| e["event"] == name).collect()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    n.sort();
    n
}

/// Bytes taken on disk by everything under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            m.blocks() * 512 + if m.is_dir() { disk_usage(&e.path()) } else { 0 }
        })
        .sum()
}

/// `count` small files in `dir`.
fn small_files(dir: &Path, count: usize, seed: u64) -> Vec<PathBuf> {
    (0..count).map(|i| random_file(dir, &format!("img-{i:05}.jpg"), 2000 + i as u64, seed + i as u64)).collect()
}

/// Plants the files of an abandoned transfer with id `id` in `parts`, last
/// changed `age` ago; returns the `.part`.
fn plant_stale(parts: &Path, id: &str, age: Duration) -> PathBuf {
    fs::create_dir_all(parts).unwrap();
    let when = SystemTime::now() - age;
    let part = parts.join(format!("{id}.part"));
    for (path, len) in [(part.clone(), 100_000), (parts.join(format!("{id}.state")), 300)] {
        fs::write(&path, vec![7u8; len]).unwrap();
        fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
    }
    part
}

#[test]
fn many_files_leave_their_entries_and_one_state_folder_and_a_restart_still_knows_them() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = small_files(src.path(), MANY, 11_000);

    let receiver = start_receiver(&broker, out.path(), &[]);
    let sent = send(&broker, &files);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    assert!(
        wait_until(WAIT, || events(&receiver, "completed").len() == MANY),
        "{} of {MANY} completed\n{}",
        events(&receiver, "completed").len(),
        receiver.stderr()
    );
    stop(receiver);

    // Exactly the received files, and the state folder.
    let mut expected: Vec<String> =
        files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    expected.push(".mqft".to_owned());
    expected.sort();
    assert_eq!(names(out.path()), expected);
    for f in &files {
        assert!(files_equal(f, &out.path().join(f.file_name().unwrap())), "{} differs", f.display());
    }
    // In it: the log, and nothing per file.
    let state = out.path().join(".mqft");
    assert_eq!(names(&state), ["completed.log", "lock", "part"]);
    assert!(names(&state.join("part")).is_empty());
    let used = disk_usage(&state);
    assert!(used < 256 << 10, "{used} bytes of state for {MANY} files");

    // A new receiver, offered some of them again, answers from the log: no byte
    // moves, nothing new appears.
    let receiver = start_receiver(&broker, out.path(), &[]);
    let again = &files[..20];
    let sent = send(&broker, again);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    assert!(wait_until(WAIT, || events(&receiver, "already_complete").len() == again.len()), "{}", receiver.stdout());
    let output = stop(receiver);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("\"accepted\""), "a file was received again\n{}", show(&output));
    assert_eq!(names(out.path()), expected);
}

#[test]
fn state_dir_leaves_only_the_received_files_in_the_output_directory() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let files = small_files(src.path(), 5, 12_000);
    let log = state.path().join("hooks.log");
    let hook = format!("echo {{}} >> '{}'", log.display());
    let flags = ["--state-dir", state.path().to_str().unwrap(), "--exec", &hook];

    let receiver = start_receiver(&broker, out.path(), &flags);
    let sent = send(&broker, &files);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    assert!(wait_until(WAIT, || events(&receiver, "completed").len() == files.len()), "{}", receiver.stderr());
    assert!(wait_until(WAIT, || fs::read_to_string(&log).unwrap_or_default().lines().count() == files.len()));
    stop(receiver);

    let mut expected: Vec<String> =
        files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    expected.sort();
    assert_eq!(names(out.path()), expected, "only the received files");
    // The state, the hook journal included, is in the state folder.
    assert_eq!(names(state.path()), ["completed.log", "exec", "hooks.log", "lock", "part"]);

    // And a restart with it still knows the files.
    let receiver = start_receiver(&broker, out.path(), &flags);
    let sent = send(&broker, &files[..1]);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    assert!(wait_until(WAIT, || events(&receiver, "already_complete").len() == 1), "{}", receiver.stdout());
    stop(receiver);
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), files.len(), "a hook ran again");
}

#[test]
fn a_torn_tail_of_the_completed_log_is_cut_off_and_the_receiver_goes_on() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = small_files(src.path(), 2, 13_000);

    // Two files, one after the other: the second one's record is the log's last.
    let receiver = start_receiver(&broker, out.path(), &[]);
    for f in &files {
        let sent = send(&broker, std::slice::from_ref(f));
        assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    }
    assert!(wait_until(WAIT, || events(&receiver, "completed").len() == 2), "{}", receiver.stderr());
    stop(receiver);

    // A crash in the middle of the last append.
    let log = out.path().join(".mqft/completed.log");
    let len = fs::metadata(&log).unwrap().len();
    fs::File::options().write(true).open(&log).unwrap().set_len(len - 10).unwrap();

    let receiver = start_receiver(&broker, out.path(), &[]);
    assert!(wait_until(WAIT, || receiver.stderr().contains("damaged record")), "{}", receiver.stderr());
    // The first file's record is whole: answered from it.
    let sent = send(&broker, &files[..1]);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    assert!(wait_until(WAIT, || events(&receiver, "already_complete").len() == 1), "{}", receiver.stdout());
    // The second's is gone: the file under its name is hashed again before it
    // is confirmed, found identical, and recorded again; no second copy.
    let sent = send(&broker, &files[1..]);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    assert!(wait_until(WAIT, || events(&receiver, "already_complete").len() == 2), "{}", receiver.stdout());
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 3, "two files and .mqft");
    // A new file still arrives.
    let new = random_file(src.path(), "new.jpg", 5000, 13_100);
    let sent = send(&broker, std::slice::from_ref(&new));
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    stop(receiver);
    assert!(files_equal(&new, &out.path().join("new.jpg")));
    for f in &files {
        assert!(files_equal(f, &out.path().join(f.file_name().unwrap())));
    }
}

#[test]
fn stale_partial_files_are_removed_at_start_with_a_log_line() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let parts = out.path().join(".mqft/part");
    let stale = plant_stale(&parts, &"ab".repeat(16), Duration::from_secs(4 * 86_400));
    let recent = plant_stale(&parts, &"cd".repeat(16), Duration::from_secs(2 * 86_400));

    // The default --prune-after is 3 days.
    let receiver = start_receiver(&broker, out.path(), &[]);
    assert!(wait_until(WAIT, || receiver.stderr().contains(PRUNED)), "{}", receiver.stderr());
    let output = stop(receiver);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&stale.display().to_string()) && stderr.contains("4d"), "{stderr}");
    assert_eq!(stderr.matches(PRUNED).count(), 1, "{stderr}");
    assert!(!stale.exists() && !stale.with_extension("state").exists());
    assert!(recent.exists() && recent.with_extension("state").exists(), "a 2-day-old transfer was removed");

    // Off keeps everything, however old.
    let kept = plant_stale(&parts, &"ef".repeat(16), Duration::from_secs(400 * 86_400));
    let receiver = start_receiver(&broker, out.path(), &["--prune-after", "off"]);
    let output = stop(receiver);
    assert!(!String::from_utf8_lossy(&output.stderr).contains(PRUNED), "{}", show(&output));
    assert!(kept.exists());
}

#[test]
fn a_transfer_open_in_the_receiver_is_never_pruned() {
    const LEN: u64 = 32 << 20;
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "slow.bin", LEN, 14_000);
    let parts = out.path().join(".mqft/part");
    let link = paced_link(&broker);
    let mut rx = Cli::receive(link.port(), out.path(), "rx-prune", &["--prune-after", "1s"]);
    let mut command = mqft(["send".as_ref(), "--json".as_ref(), path.as_os_str()]);
    command.args(at(broker.port())).args(windowed_flags());
    let sender = Process::spawn(&mut command);
    rx.wait_held(LEN / 8);
    // The sender pauses: the open transfer stops advancing.
    let pid = Pid::from_raw(i32::try_from(sender.id()).unwrap()).unwrap();
    kill_process(pid, Signal::STOP).unwrap();
    let idle = |p: &Path| {
        fs::read_dir(p).unwrap().all(|e| {
            let m = e.unwrap().metadata().unwrap();
            m.modified().unwrap().elapsed().is_ok_and(|d| d > Duration::from_secs(2))
        })
    };
    assert!(wait_until(WAIT, || !names(&parts).is_empty() && idle(&parts)), "{:?}", names(&parts));
    let open: Vec<String> = names(&parts);
    // An abandoned transfer beside it: its removal shows a pass ran while the
    // open one had been idle for longer than --prune-after.
    let stale = plant_stale(&parts, &"ab".repeat(16), Duration::from_secs(60));
    assert!(wait_until(WAIT, || !stale.exists()), "{}", rx.output());
    assert!(rx.output().contains(PRUNED), "{}", rx.output());
    for name in &open {
        assert!(parts.join(name).exists(), "{name} of the open transfer was removed\n{}", rx.output());
    }
    // The sender goes on, and the file arrives whole.
    kill_process(pid, Signal::CONT).unwrap();
    let sent = sender.finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    let received = rx.finish_within(WAIT);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&path, &out.path().join("slow.bin")));
}

#[test]
fn a_second_receiver_into_the_same_state_folder_is_warned_and_both_run() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let first = start_receiver(&broker, out.path(), &[]);
    let mut command = mqft(["receive", "--name", "gw2", "--out"]);
    command.arg(out.path()).args(at(broker.port()));
    let mut second = Process::spawn(&mut command);
    assert!(
        wait_until(WAIT, || second.stderr().contains("another receiver is using this state folder")),
        "{}",
        second.stderr()
    );
    assert!(second.is_running(), "{}", second.stderr());
    second.kill();
    let output = stop(first);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("another receiver"), "{}", show(&output));
}
