//! Pipes (issue 11 item 2): `mqft send -` sends standard input as a stream
//! (protocol version 6), its chunks read back from a private spool as they fill,
//! and `mqft receive --once --stdout` writes the one file to standard
//! output once its SHA-256 checked out, through the `mqft` binary and a real
//! Mosquitto. Shell pipelines run under `sh -c` with the binary as `$MQFT`.
//!
//! - `tar c dir | mqft send - --name dir.tar` arrives as the archive, and
//!   `mqft receive --once --stdout | tar x` rebuilds the tree a plain send sent;
//! - a multi-megabyte stream goes through both ends at once, byte for byte, and
//!   its first chunks arrive while standard input is still open;
//! - the spool is gone after the send, after a refused send too;
//! - standard output holds nothing when the file fails its check, and the
//!   receiver's private copy is gone;
//! - a reader that quits early gives exit 9; `--stdout` without `--once`, `-`
//!   without `--name`, `-` with other files are usage errors (exit 2).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mqft::proto::Prefix;
use mqft_tests::{
    broker_flags as at, files_equal, mqft_bin, mqft_command as mqft, random_file, show_output as show, wait_until,
    Broker, Process,
};

/// The bound on each process's run.
const WAIT: Duration = Duration::from_secs(60);

/// `sh -c script`, with `$MQFT` the binary and `$AT` the broker flags; like
/// [`mqft`], shielded from the developer's `MQFT_*` settings.
fn sh(script: &str, broker: &Broker) -> Command {
    let mut command = Command::new("sh");
    for (var, _) in std::env::vars_os() {
        if var.to_str().is_some_and(|v| v.starts_with("MQFT_") || v == "RUST_LOG") {
            command.env_remove(var);
        }
    }
    command.arg("-c").arg(format!("set -e; {script}"));
    command.env("MQFT", mqft_bin()).env("AT", at(broker.port()).join(" "));
    command
}

/// Starts `command` (a receiver) and waits until it subscribed to the manifests.
fn start_receiver(broker: &Broker, command: &mut Command) -> Process {
    let before = broker.subscribers(&Prefix::default().manifest_filter()).len();
    let receiver = Process::spawn(command);
    assert!(
        wait_until(WAIT, || broker.subscribers(&Prefix::default().manifest_filter()).len() > before),
        "the receiver did not subscribe\nstdout: {}\nstderr: {}",
        receiver.stdout(),
        receiver.stderr()
    );
    receiver
}

/// A small tree: files at two levels, one empty.
fn make_tree(root: &Path) -> PathBuf {
    let dir = root.join("dir");
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    random_file(&dir, "a.bin", 700_000, 9101);
    random_file(&dir.join("sub"), "b.txt", 12_345, 9102);
    random_file(&dir.join("sub/deeper"), "c.dat", 2_000_000, 9103);
    fs::write(dir.join("empty"), b"").unwrap();
    dir
}

/// Whether the trees under `a` and `b` hold the same files with the same bytes.
fn trees_equal(a: &Path, b: &Path) -> bool {
    let list = |root: &Path| {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_owned());
                }
            }
        }
        out.sort();
        out
    };
    let (la, lb) = (list(a), list(b));
    la == lb && la.iter().all(|rel| files_equal(&a.join(rel), &b.join(rel)))
}

/// The entries of `dir` (a spool's `$TMPDIR`, a private folder).
fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir).map(|rd| rd.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

#[test]
fn tar_piped_into_send_dash_arrives_as_the_archive() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let receiver =
        start_receiver(&broker, mqft(["receive", "--once", "--out"]).arg(out.path()).args(at(broker.port())));

    let sent = Process::spawn(
        sh("tar c -C \"$SRC\" dir | \"$MQFT\" send - --name dir.tar $AT", &broker)
            .env("SRC", src.path())
            .env("TMPDIR", spool.path()),
    )
    .finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "tar | mqft send -\n{}", show(&sent));
    // The user sees what was sent, not where it was spooled.
    let said = String::from_utf8_lossy(&sent.stderr);
    assert!(said.contains("sent dir.tar (standard input)") && !said.contains(".mqft-stdin"), "{said}");
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(0), "{}", show(&received));

    let archive = out.path().join("dir.tar");
    assert!(archive.is_file(), "no dir.tar\n{}", show(&received));
    let untar = Command::new("tar").arg("xf").arg(&archive).arg("-C").arg(dest.path()).status().unwrap();
    assert!(untar.success());
    assert!(trees_equal(&src.path().join("dir"), &dest.path().join("dir")), "the tree differs after tar | send -");
    assert_eq!(entries(spool.path()), Vec::<PathBuf>::new(), "the spool is left behind");
}

#[test]
fn receive_stdout_piped_into_tar_x_rebuilds_the_tree() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let dir = make_tree(src.path());
    let archive = src.path().join("dir.tar");
    let tar = Command::new("tar").arg("cf").arg(&archive).arg("-C").arg(src.path()).arg("dir").status().unwrap();
    assert!(tar.success());

    let receiver = start_receiver(
        &broker,
        sh("\"$MQFT\" receive --once --stdout --state-dir \"$STATE\" $AT | tar x -C \"$DEST\"", &broker)
            .env("STATE", state.path())
            .env("DEST", dest.path()),
    );
    let sent = Process::spawn(mqft(["send".as_ref(), archive.as_os_str()]).args(at(broker.port()))).finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(0), "mqft receive --stdout | tar x\n{}", show(&received));

    assert!(trees_equal(&dir, &dest.path().join("dir")), "the tree differs after receive --stdout | tar x");
    assert_eq!(entries(&state.path().join("stdout")), Vec::<PathBuf>::new(), "the private copy is left behind");
}

#[test]
fn a_random_stream_goes_through_send_dash_and_receive_stdout_byte_for_byte() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let got = src.path().join("got.bin");
    let data = random_file(src.path(), "stream.bin", 12 << 20, 9201);

    let receiver = start_receiver(
        &broker,
        sh("\"$MQFT\" receive --once --stdout --json --state-dir \"$STATE\" $AT > \"$GOT\"", &broker)
            .env("STATE", state.path())
            .env("GOT", &got),
    );
    // `cat` makes it a pipe: no size to stat, no seeking.
    let sent = Process::spawn(
        sh("cat \"$DATA\" | \"$MQFT\" send - --name stream.bin $AT", &broker)
            .env("DATA", &data)
            .env("TMPDIR", spool.path()),
    )
    .finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(0), "{}", show(&received));

    assert!(files_equal(&data, &got), "the stream differs after send - | receive --stdout");
    // --json events went to stderr, none of them into the data.
    let stderr = String::from_utf8_lossy(&received.stderr);
    assert!(stderr.contains("\"event\":\"completed\""), "{}", show(&received));
    assert_eq!(entries(spool.path()), Vec::<PathBuf>::new(), "the spool is left behind");
    assert_eq!(entries(&state.path().join("stdout")), Vec::<PathBuf>::new(), "the private copy is left behind");
}

/// `send -` is a stream (protocol version 6): its first chunks reach the
/// receiver while standard input is still open (before version 6 nothing left
/// before its end), and the file is whole and checked once it closes.
#[test]
fn send_dash_sends_its_first_chunks_before_standard_input_ends() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = fs::read(random_file(dir.path(), "live.bin", 3 << 20, 9251)).unwrap();
    let receiver =
        start_receiver(&broker, mqft(["receive", "--once", "--json", "--out"]).arg(&out).args(at(broker.port())));
    let mut command = mqft(["send", "-", "--name", "live.bin"]);
    command.args(at(broker.port())).env("TMPDIR", dir.path());
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, &data[..2 << 20]).unwrap();
    let held = |text: &str| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "progress")
            .filter_map(|e| e["bytes"].as_u64())
            .max()
            .unwrap_or(0)
    };
    assert!(
        wait_until(WAIT, || held(&receiver.stdout()) >= 1 << 20),
        "no chunk arrived while standard input was open\n{}\n{}",
        receiver.stdout(),
        receiver.stderr()
    );
    assert!(child.try_wait().unwrap().is_none(), "the send ended before its input did");
    std::io::Write::write_all(&mut input, &data[2 << 20..]).unwrap();
    drop(input);
    let sent = child.wait_with_output().unwrap();
    assert_eq!(sent.status.code(), Some(0), "{}", String::from_utf8_lossy(&sent.stderr));
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(0), "{}", show(&received));
    assert_eq!(fs::read(out.join("live.bin")).unwrap(), data, "the stream arrived changed");
    // The offer said the size was not known; the end of round brought it.
    let stdout = String::from_utf8_lossy(&received.stdout);
    assert!(stdout.contains("\"size\":null"), "{stdout}");
}

/// A stream being received reserves no disk space for its unknown size: a file
/// offered meanwhile is taken, not refused as "disk full".
#[test]
fn a_file_sent_while_a_stream_is_received_is_taken() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let receiver = start_receiver(&broker, mqft(["receive", "--json", "--out"]).arg(&out).args(at(broker.port())));
    let mut command = mqft(["send", "-", "--name", "open.bin"]);
    command.args(at(broker.port())).env("TMPDIR", dir.path());
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, &[7; 600_000]).unwrap();
    assert!(
        wait_until(WAIT, || receiver.stdout().contains("\"accepted\"")),
        "the stream was not taken\n{}",
        receiver.stderr()
    );
    let file = random_file(dir.path(), "photo.jpg", 300_000, 9271);
    let sent = Process::spawn(mqft(["send"]).arg(&file).args(at(broker.port()))).finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    assert!(files_equal(&file, &out.join("photo.jpg")));
    drop(input);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(wait_until(WAIT, || out.join("open.bin").exists()), "{}", receiver.stderr());
    assert_eq!(fs::read(out.join("open.bin")).unwrap(), vec![7; 600_000]);
}

#[test]
fn a_refused_send_dash_leaves_no_spool() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let data = random_file(src.path(), "big.bin", 200_000, 9301);
    let receiver = start_receiver(
        &broker,
        mqft(["receive", "--once", "--max-size", "1k", "--out"]).arg(out.path()).args(at(broker.port())),
    );
    let sent = Process::spawn(
        sh("cat \"$DATA\" | \"$MQFT\" send - --name big.bin $AT", &broker)
            .env("DATA", &data)
            .env("TMPDIR", spool.path()),
    )
    .finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(5), "a receiver refused it\n{}", show(&sent));
    drop(receiver);
    assert_eq!(entries(spool.path()), Vec::<PathBuf>::new(), "the spool of a refused send is left behind");
}

#[test]
fn a_stop_signal_while_spooling_or_sending_removes_the_spool() {
    use rustix::process::{kill_process, Pid, Signal};
    let broker = Broker::start();
    let spool = tempfile::tempdir().unwrap();

    // Ctrl-C while standard input is still open: the spool is half written.
    let mut command = mqft(["send", "-", "--name", "half.bin"]);
    command.args(at(broker.port())).env("TMPDIR", spool.path());
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, &[1; 100_000]).unwrap();
    assert!(wait_until(WAIT, || !entries(spool.path()).is_empty()), "no spool appeared");
    kill_process(Pid::from_child(&child), Signal::INT).unwrap();
    let mut status = None;
    assert!(wait_until(WAIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(130));
    assert_eq!(entries(spool.path()), Vec::<PathBuf>::new(), "Ctrl-C while spooling left the spool");
    drop(input);

    // SIGTERM while the send waits for a receiver that never comes.
    let src = tempfile::tempdir().unwrap();
    let data = random_file(src.path(), "data.bin", 300_000, 9601);
    let sender = Process::spawn(
        sh("exec \"$MQFT\" send - --name waiting.bin --json --timeout 60 $AT < \"$DATA\"", &broker)
            .env("DATA", &data)
            .env("TMPDIR", spool.path()),
    );
    assert!(wait_until(WAIT, || sender.stdout().contains("\"started\"")), "{}", sender.stderr());
    assert_eq!(entries(spool.path()).len(), 1, "the spool is there while it is sent");
    kill_process(Pid::from_raw(sender.id().try_into().unwrap()).unwrap(), Signal::TERM).unwrap();
    let out = sender.finish_within(WAIT);
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert_eq!(entries(spool.path()), Vec::<PathBuf>::new(), "SIGTERM while sending left the spool");
}

#[test]
fn stdout_holds_nothing_when_the_file_fails_its_check() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let data = random_file(src.path(), "bad.bin", 1_000_000, 9401);
    let receiver = start_receiver(
        &broker,
        mqft(["receive", "--once", "--stdout", "--state-dir"]).arg(state.path()).args(at(broker.port())),
    );
    // Every chunk arrives intact, but the manifest's SHA-256 is not the file's:
    // the receiver holds every byte and must still write none.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sent = rt.block_on(async {
        let client = mqft::Client::new(mqft::Config::from_url(&broker.url()).unwrap());
        let file = mqft::SendFile::named(&data, "bad.bin").with_sha256([7; 32]);
        tokio::time::timeout(WAIT, client.send([file], mqft::SendOptions::default()).wait()).await.unwrap()
    });
    assert!(sent.is_err(), "a file that fails its check was confirmed");
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(6), "an integrity failure\n{}", show(&received));
    assert!(
        received.stdout.is_empty(),
        "unverified bytes on stdout: {} bytes\n{}",
        received.stdout.len(),
        show(&received)
    );
    let left: Vec<_> = entries(&state.path().join("stdout"));
    assert!(left.iter().all(|p| p.extension().is_none_or(|e| e != "bin")), "a private copy is left: {left:?}");
}

#[test]
fn a_reader_that_quits_early_gives_exit_9() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let data = random_file(src.path(), "long.bin", 3_000_000, 9501);
    let mut command = mqft(["receive", "--once", "--stdout", "--state-dir"]);
    command.arg(state.path()).args(at(broker.port()));
    let before = broker.subscribers(&Prefix::default().manifest_filter()).len();
    // Standard output is a pipe whose reading end is closed at once.
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    assert!(wait_until(WAIT, || broker.subscribers(&Prefix::default().manifest_filter()).len() > before));
    let sent = Process::spawn(mqft(["send".as_ref(), data.as_os_str()]).args(at(broker.port()))).finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "{}", show(&sent));
    let mut status = None;
    assert!(wait_until(WAIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.unwrap().code(), Some(9), "{stderr}");
    assert!(stderr.contains("broken pipe"), "{stderr}");
    assert_eq!(entries(&state.path().join("stdout")), Vec::<PathBuf>::new(), "the private copy is left behind");
}

#[test]
fn pipes_misused_are_usage_errors() {
    let spool = tempfile::tempdir().unwrap();
    let f = tempfile::NamedTempFile::new().unwrap();
    let cases: Vec<Vec<&std::ffi::OsStr>> = vec![
        vec!["receive".as_ref(), "--stdout".as_ref()],
        vec!["receive".as_ref(), "--once".as_ref(), "--stdout".as_ref(), "--out".as_ref(), "x".as_ref()],
        vec!["receive".as_ref(), "--once".as_ref(), "--stdout".as_ref(), "--exec".as_ref(), "true".as_ref()],
        vec!["send".as_ref(), "-".as_ref()],
        vec!["send".as_ref(), "-".as_ref(), "-".as_ref(), "--name".as_ref(), "x".as_ref()],
        vec!["send".as_ref(), "-".as_ref(), f.path().as_os_str(), "--name".as_ref(), "x".as_ref()],
        vec!["send".as_ref(), f.path().as_os_str(), "--name".as_ref(), "x".as_ref()],
    ];
    for args in cases {
        let mut command = mqft(&args);
        command.env("TMPDIR", spool.path()).args(["-p", "1"]);
        let out = Process::spawn(&mut command).finish_within(WAIT);
        assert_eq!(out.status.code(), Some(2), "mqft {args:?}\n{}", show(&out));
    }
    assert_eq!(entries(spool.path()), Vec::<PathBuf>::new(), "a refused send - left a spool");
}
