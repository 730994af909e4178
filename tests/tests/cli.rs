//! The `mqft` binary, run as a user runs it: `receive` and `send` as two
//! processes through a broker, the exit codes of the documented failures,
//! `--json` output, plain logs when not on a terminal, and `demo` with its
//! embedded broker.
//!
//! The binary is the one cargo built (see [`mqft_tests::mqft_bin`]).

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use mqft::proto::Prefix;
use mqft_tests::{
    broker_flags as at, files_equal, mqft_command as mqft, random_file, show_output as show, wait_until, Broker,
    ClosedPort, Process, HOST,
};
use serde_json::Value;

/// The bound on each process's run; each takes a few seconds at most.
const WAIT: Duration = Duration::from_secs(60);

/// Starts `mqft receive` with `extra` flags into `out`, and waits until it has
/// subscribed to the manifests, so that the sender started next finds it.
fn start_receiver(broker: &Broker, out: &Path, extra: &[&str]) -> Process {
    let before = broker.subscribers(&Prefix::default().manifest_filter()).len();
    let mut command = mqft(["receive", "--once", "--out"]);
    command.arg(out).args(at(broker.port())).args(extra);
    let receiver = Process::spawn(&mut command);
    assert!(
        wait_until(WAIT, || broker.subscribers(&Prefix::default().manifest_filter()).len() > before),
        "mqft receive did not subscribe\nstdout: {}\nstderr: {}\nbroker log:\n{}",
        receiver.stdout(),
        receiver.stderr(),
        broker.log()
    );
    receiver
}

#[test]
fn receive_and_send_move_a_file_between_two_processes() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "img_0042.jpg", 1_500_000, 5001);
    let receiver = start_receiver(&broker, out.path(), &[]);

    let sent = Process::spawn(mqft(["send".as_ref(), file.as_os_str()]).args(at(broker.port()))).finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "mqft send\n{}", show(&sent));
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(0), "mqft receive\n{}", show(&received));

    let arrived = out.path().join("img_0042.jpg");
    assert!(files_equal(&file, &arrived), "the file differs after the transfer");
    // The one line a script wants: where the file is.
    assert_eq!(String::from_utf8_lossy(&received.stdout), format!("{}\n", arrived.display()), "{}", show(&received));
}

#[test]
fn json_prints_one_event_object_per_line() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "data.bin", 700_000, 5101);
    let receiver = start_receiver(&broker, out.path(), &["--json"]);

    let sent = Process::spawn(mqft(["send".as_ref(), file.as_os_str(), "--json".as_ref()]).args(at(broker.port())))
        .finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(0), "mqft send --json\n{}", show(&sent));
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(0), "mqft receive --json\n{}", show(&received));
    let arrived = out.path().join("data.bin");
    assert!(files_equal(&file, &arrived));

    let sent_events = json_lines(&sent);
    let finished = sent_events.iter().find(|e| e["event"] == "finished").unwrap_or_else(|| panic!("{}", show(&sent)));
    assert_eq!(finished["path"], file.to_str().unwrap());
    assert!(sent_events.iter().any(|e| e["event"] == "started" && e["size"] == 700_000), "{}", show(&sent));

    let received_events = json_lines(&received);
    let completed =
        received_events.iter().find(|e| e["event"] == "completed").unwrap_or_else(|| panic!("{}", show(&received)));
    assert_eq!(completed["path"], arrived.to_str().unwrap());
    assert_eq!(completed["size"], 700_000);
    assert_eq!(completed["transfer"], finished["transfer"], "both sides name the same transfer");
}

/// Every stdout line as a JSON object with an `event` name.
fn json_lines(output: &Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.is_empty(), "no JSON at all\n{}", show(output));
    stdout
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{}", show(output)));
            assert!(value["event"].is_string(), "an object with an event name: {line}");
            value
        })
        .collect()
}

#[test]
fn send_with_no_receiver_exits_4_after_its_timeout() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "lonely.bin", 1000, 5201);
    let started = Instant::now();
    let sent = Process::spawn(
        mqft(["send".as_ref(), file.as_os_str(), "--timeout".as_ref(), "2".as_ref()]).args(at(broker.port())),
    )
    .finish_within(WAIT);
    let took = started.elapsed();
    assert_eq!(sent.status.code(), Some(4), "{}", show(&sent));
    assert!(took >= Duration::from_secs(2), "it gave up after {took:?}, before its 2 s timeout");
    assert!(String::from_utf8_lossy(&sent.stderr).contains("no receiver"), "{}", show(&sent));
}

#[test]
fn send_to_a_closed_port_exits_3() {
    let closed = ClosedPort::bind();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "x.bin", 10, 5301);
    let started = Instant::now();
    let sent = Process::spawn(
        mqft(["send".as_ref(), file.as_os_str()]).args(at(closed.port())).args(["--connect-timeout", "2"]),
    )
    .finish_within(WAIT);
    let took = started.elapsed();
    assert_eq!(sent.status.code(), Some(3), "{}", show(&sent));
    assert!(String::from_utf8_lossy(&sent.stderr).contains("cannot reach broker"), "{}", show(&sent));
    // It kept trying for the time asked, and not much longer.
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "giving up took {took:?}");
}

#[test]
fn a_broker_that_never_answers_connect_exits_3_after_the_connect_timeout() {
    // A listener nobody accepts from: the kernel completes the TCP handshake, and
    // the CONNECT then sits unread, as with a hung broker or a black-holing proxy.
    let silent = std::net::TcpListener::bind((HOST, 0)).unwrap();
    let port = silent.local_addr().unwrap().port();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "x.bin", 10, 5302);
    let started = Instant::now();
    let sent =
        Process::spawn(mqft(["send".as_ref(), file.as_os_str()]).args(at(port)).args(["--connect-timeout", "2"]))
            .finish_within(WAIT);
    let took = started.elapsed();
    assert_eq!(sent.status.code(), Some(3), "{}", show(&sent));
    assert!(String::from_utf8_lossy(&sent.stderr).contains("cannot reach broker"), "{}", show(&sent));
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "giving up took {took:?}");
    drop(silent);
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let closed = ClosedPort::bind();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "x.bin", 10, 5351);
    // `-vv` logs each failed connection attempt; stderr is a pipe, and no
    // NO_COLOR says to go without colours: the terminal check alone must.
    let mut command = mqft(["send".as_ref(), file.as_os_str(), "-vv".as_ref()]);
    command.args(at(closed.port())).args(["--connect-timeout", "2"]).env_remove("NO_COLOR");
    let sent = Process::spawn(&mut command).finish_within(WAIT);
    assert_eq!(sent.status.code(), Some(3), "{}", show(&sent));
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert!(stderr.contains("DEBUG") && stderr.contains("connection attempt failed"), "{}", show(&sent));
    assert!(!stderr.contains('\x1b'), "escape codes in the log\n{}", show(&sent));
}

#[test]
fn usage_errors_exit_2_before_connecting() {
    // A closed port: had any of these tried to connect, it would exit 3.
    let closed = ClosedPort::bind();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "x.bin", 10, 5401);
    let file = file.to_str().unwrap();
    let port = closed.port().to_string();
    let cases: &[&[&str]] = &[
        &["send", file, "--no-such-flag"],
        &["frobnicate"],
        &["send", file, "-h", HOST, "-p", "not-a-port"],
        &["send", file, "-h", HOST, "-p", &port, "--chunk-size", "17x"],
        &["send", "/nonexistent/file", "-h", HOST, "-p", &port],
        &["send", file, "-h", HOST, "-p", &port, "--prefix", "Bad.Prefix/+"],
    ];
    for args in cases {
        let output = Process::spawn(&mut mqft(*args)).finish_within(WAIT);
        assert_eq!(output.status.code(), Some(2), "mqft {args:?}\n{}", show(&output));
        assert!(!output.stderr.is_empty(), "mqft {args:?} says why\n{}", show(&output));
    }
}

#[test]
fn demo_moves_a_generated_file_through_its_embedded_broker() {
    let out_root = tempfile::tempdir().unwrap();
    let out = out_root.path().join("demo-out");
    let tmp = tempfile::tempdir().unwrap();
    let mut command = mqft(["demo", "--size", "2m", "--out"]);
    // The demo generates its file under the temp dir: a private one, to see
    // that it cleans up.
    command.arg(&out).env("TMPDIR", tmp.path());
    let output = Process::spawn(&mut command).finish_within(WAIT);
    assert_eq!(output.status.code(), Some(0), "mqft demo\n{}", show(&output));

    let visible: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(visible, ["camera-0001.raw"], "{}", show(&output));
    assert_eq!(std::fs::metadata(out.join("camera-0001.raw")).unwrap().len(), 2 << 20);
    assert!(String::from_utf8_lossy(&output.stderr).contains("matches the original"), "{}", show(&output));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the demo left {left:?} in its temp dir");
}
