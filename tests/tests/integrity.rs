//! A receiver confirms only bytes it verified on disk: through the `mqft`
//! binary and real Mosquitto.
//!
//! - A file received once and then changed under its name (zeros over it, or
//!   other bytes written with the old modification time set back, as `cp -p`
//!   does) is never answered `Complete` when the same file is sent again,
//!   neither from the receiver's marker on disk nor from a running receiver's
//!   memory: it is refused as an existing file (exit 5), or, with
//!   `--overwrite`, received again.
//! - A receiver killed mid-transfer whose partial file or state changed while it
//!   was down (chunks overwritten, the file cut short, the state missing,
//!   empty, garbage or another transfer's) ends, once restarted, with the file
//!   byte for byte.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mqft_tests::{files_equal, random_file, wait_until, Broker, Process};

use crate::fault_util::{at, mqft, paced_link, windowed_flags, Cli, Finished, CHUNK, WAIT};

/// The size of the files sent twice: a few chunks.
const SMALL: u64 = 300_000;
/// The size of the files whose receiver is killed: with the paced link, about
/// two seconds, so the kill lands mid-transfer.
const LEN: u64 = 16 << 20;

/// Overwrites the bytes of `path` at `offset` with `bytes`, in place: the same
/// inode, the same size.
fn overwrite_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Sends `file` and waits for the sender to exit.
fn send(port: u16, file: &Path) -> Finished {
    Cli::send(port, file, &[]).finish_within(WAIT)
}

/// Receives `file` with a `--once` receiver into `out`, both exiting 0.
fn receive_once(port: u16, out: &Path, file: &Path) {
    let rx = Cli::receive(port, out, "rx-first", &[]);
    let sent = send(port, file);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(file, &out.join(file.file_name().unwrap())));
}

/// The receiver's events, for a file sent again: the second send must not have
/// been confirmed from what was on record.
fn assert_not_confirmed(received: &Finished) {
    assert!(received.event("already_complete").is_none(), "a changed file was confirmed\n{}", received.text);
}

#[test]
fn a_received_copy_zeroed_is_refused_not_confirmed_when_sent_again() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "zeroed.bin", SMALL, 9301);
    receive_once(broker.port(), out.path(), &path);
    let copy = out.path().join("zeroed.bin");
    overwrite_at(&copy, 0, &vec![0; SMALL as usize]);

    // A receiver started again finds its marker; the file under the name is no
    // longer the one received, so it is someone's other file: refused.
    // `fail`: the default, `rename`, would keep both.
    let mut rx = Cli::receive(broker.port(), out.path(), "rx-again", &["--on-conflict", "fail"]);
    let sent = send(broker.port(), &path);
    assert_eq!(sent.code, Some(5), "the second send must be refused (exit 5)\n{}", sent.text);
    let rejected = rx.wait_for("rejected", WAIT, |e| e["event"] == "rejected");
    assert_eq!(rejected["reason"], "file exists", "{}", rx.output());
    rx.kill();
    assert_eq!(fs::read(&copy).unwrap(), vec![0; SMALL as usize], "a refused file is left alone");

    // With --overwrite, the file is received again.
    let rx = Cli::receive(broker.port(), out.path(), "rx-overwrite", &["--overwrite"]);
    let sent = send(broker.port(), &path);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert_not_confirmed(&received);
    assert!(received.event("completed").is_some(), "{}", received.text);
    assert!(files_equal(&path, &copy), "the file is not the one sent");
}

#[test]
fn a_received_copy_rewritten_with_its_old_times_is_received_again() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "same-times.bin", SMALL, 9302);
    receive_once(broker.port(), out.path(), &path);
    let copy = out.path().join("same-times.bin");

    // Other bytes of the same size, carrying the received copy's modification
    // time, copied over it with `cp -p`: size and mtime as before.
    let before = fs::metadata(&copy).unwrap();
    let other = random_file(src.path(), "other.bin", SMALL, 9303);
    fs::File::options().write(true).open(&other).unwrap().set_modified(before.modified().unwrap()).unwrap();
    let cp = Command::new("cp").arg("-p").arg(&other).arg(&copy).status().unwrap();
    assert!(cp.success());
    let after = fs::metadata(&copy).unwrap();
    assert_eq!((after.len(), after.modified().unwrap()), (before.len(), before.modified().unwrap()));

    let rx = Cli::receive(broker.port(), out.path(), "rx-again", &["--overwrite"]);
    let sent = send(broker.port(), &path);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert_not_confirmed(&received);
    assert!(files_equal(&path, &copy), "the file is not the one sent");
}

#[test]
fn a_running_receiver_does_not_confirm_from_memory_a_file_changed_since() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "memory.bin", SMALL, 9304);
    // One receiver for both sends, so the second finds the transfer in its
    // memory of completed ones.
    let mut command = mqft(["receive", "--json", "--overwrite", "--name", "rx-memory", "--out"]);
    command.arg(out.path()).args(at(broker.port()));
    let mut rx = Process::spawn(&mut command);
    assert!(wait_until(WAIT, || rx.stdout().contains(r#""event":"connected""#)), "{}", rx.stderr());

    let sent = send(broker.port(), &path);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    let copy = out.path().join("memory.bin");
    assert!(files_equal(&path, &copy));
    overwrite_at(&copy, 0, &vec![0; SMALL as usize]);

    let sent = send(broker.port(), &path);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert!(files_equal(&path, &copy), "the second send was confirmed over a zeroed file");
    // Printed before its Complete went out; read from the pipe by another thread.
    let received_twice = wait_until(WAIT, || rx.stdout().matches(r#""event":"completed""#).count() == 2);
    assert!(received_twice, "the file was not received again\n{}", rx.stdout());
    assert!(!rx.stdout().contains(r#""event":"already_complete""#), "{}", rx.stdout());
    rx.kill();
}

/// What happens to a killed receiver's files before it is started again.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Chunks overwritten with zeros: two at the start (inside what the saved
    /// hash covers) and one in the middle of what is held.
    ChunksZeroed,
    /// The partial file cut to a quarter of the file.
    PartCut,
    /// The state file deleted.
    StateMissing,
    /// The state file emptied.
    StateEmpty,
    /// The state file overwritten with garbage.
    StateGarbage,
    /// The state file replaced by another transfer's.
    StateOfAnotherFile,
}

/// The one file of a transfer in progress in `dir` (in its state folder) whose
/// name ends with `suffix`.
fn hidden(dir: &Path, suffix: &str) -> Option<PathBuf> {
    fs::read_dir(dir.join(".mqft/part"))
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().ends_with(suffix))
}

/// Kills a receiver mid-transfer, does `damage` to its files, starts it again
/// and checks that the file ends byte for byte, both sides exiting 0; returns
/// the restarted receiver's outcome.
fn killed_receiver_restarts_after(damage: Damage, seed: u64) -> Finished {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();

    // Another transfer's state, for `StateOfAnotherFile`: one left by a
    // receiver killed half way through another file, elsewhere and under
    // another prefix (so its sender's manifest never reaches the receiver here).
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign = matches!(damage, Damage::StateOfAnotherFile).then(|| {
        let other = random_file(src.path(), "other.bin", LEN, seed + 1);
        let link = paced_link(&broker);
        let mut rx = Cli::receive(link.port(), elsewhere.path(), "rx-other", &["--prefix", "other"]);
        let mut flags = windowed_flags().to_vec();
        flags.extend(["--prefix".to_owned(), "other".to_owned()]);
        let mut sender = Cli::send(broker.port(), &other, &flags);
        rx.wait_held(LEN / 8);
        assert!(wait_until(WAIT, || hidden(elsewhere.path(), ".state").is_some()), "{}", rx.output());
        rx.kill();
        sender.kill();
        hidden(elsewhere.path(), ".state").expect("a state of a transfer in progress")
    });

    let path = random_file(src.path(), "killed.bin", LEN, seed);
    let link = paced_link(&broker);
    let mut rx = Cli::receive(link.port(), out.path(), "rx-killed", &[]);
    let sender = Cli::send(broker.port(), &path, &windowed_flags());
    // Half the file in and a state on record, then the receiver dies without a
    // last save.
    let held = rx.wait_held(LEN / 2);
    assert!(wait_until(WAIT, || hidden(out.path(), ".state").is_some()), "no state saved\n{}", rx.output());
    rx.kill();
    let part = hidden(out.path(), ".part").expect("a partial file");
    let state = hidden(out.path(), ".state").expect("a state file");
    match damage {
        Damage::ChunksZeroed => {
            let chunk = u64::from(CHUNK);
            overwrite_at(&part, 0, &vec![0; 2 * chunk as usize]);
            overwrite_at(&part, (held / 2 / chunk) * chunk, &vec![0; chunk as usize]);
        }
        Damage::PartCut => OpenOptions::new().write(true).open(&part).unwrap().set_len(LEN / 4).unwrap(),
        Damage::StateMissing => fs::remove_file(&state).unwrap(),
        Damage::StateEmpty => fs::write(&state, b"").unwrap(),
        Damage::StateGarbage => {
            fs::write(&state, (0..4096u32).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>()).unwrap()
        }
        Damage::StateOfAnotherFile => {
            fs::copy(foreign.expect("a foreign state for this damage"), &state).unwrap();
        }
    }

    let rx = Cli::receive(link.port(), out.path(), "rx-killed", &[]);
    let sent = sender.finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{damage:?}: {}", sent.text);
    assert_eq!(received.code, Some(0), "{damage:?}: {}", received.text);
    assert!(files_equal(&path, &out.path().join("killed.bin")), "{damage:?}: the file differs after the restart");
    received
}

#[test]
fn a_killed_receiver_whose_part_had_chunks_overwritten_ends_with_the_file() {
    let received = killed_receiver_restarts_after(Damage::ChunksZeroed, 9310);
    // It resumed what was still proven, and rebuilt the hash by reading back.
    let resumed = received.summary_number("resumed_bytes");
    assert!(resumed > 0 && resumed < LEN, "resumed {resumed} bytes\n{}", received.text);
    assert!(received.summary_number("read_back_bytes") > 0, "the hash was not rebuilt\n{}", received.text);
}

#[test]
fn a_killed_receiver_whose_part_was_cut_short_resumes_what_is_left() {
    let received = killed_receiver_restarts_after(Damage::PartCut, 9311);
    let resumed = received.summary_number("resumed_bytes");
    assert!(
        resumed > 0 && resumed <= LEN / 4,
        "resumed {resumed} bytes of a part cut to {}\n{}",
        LEN / 4,
        received.text
    );
}

#[test]
fn a_killed_receiver_whose_state_is_missing_starts_over() {
    let received = killed_receiver_restarts_after(Damage::StateMissing, 9312);
    assert_eq!(received.summary_number("resumed_bytes"), 0, "{}", received.text);
}

#[test]
fn a_killed_receiver_whose_state_is_empty_starts_over() {
    let received = killed_receiver_restarts_after(Damage::StateEmpty, 9313);
    assert_eq!(received.summary_number("resumed_bytes"), 0, "{}", received.text);
}

#[test]
fn a_killed_receiver_whose_state_is_garbage_starts_over() {
    let received = killed_receiver_restarts_after(Damage::StateGarbage, 9314);
    assert_eq!(received.summary_number("resumed_bytes"), 0, "{}", received.text);
}

#[test]
fn a_killed_receiver_whose_state_is_another_files_starts_over() {
    let received = killed_receiver_restarts_after(Damage::StateOfAnotherFile, 9315);
    assert_eq!(received.summary_number("resumed_bytes"), 0, "{}", received.text);
}
