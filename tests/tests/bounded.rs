//! Failures end, clearly and in bounded time (issue 9, item 4): a send whose
//! broker dies for good gives up after `--broker-timeout` with exit 3, Ctrl-C ends
//! a send within a second whether the broker answers or not, and a first connect
//! that takes a while says what it is waiting for.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use mqft_tests::{
    broker_flags as at, mqft_command as mqft, random_file, show_output as show, wait_until, Broker, ClosedPort,
    Process, HOST,
};
use rustix::process::{kill_process, Pid, Signal};

/// The bound on waits for a process's output; each step takes a second or two.
const WAIT: Duration = Duration::from_secs(30);

/// `mqft send --json <file>` to `port` with `extra` flags. Nobody receives: the
/// send waits for receivers for 30 s, far longer than these tests take.
fn start_send(file: &Path, port: u16, extra: &[&str]) -> Process {
    let mut command = mqft(["send".as_ref(), file.as_os_str(), "--json".as_ref(), "--timeout".as_ref(), "30".as_ref()]);
    command.args(at(port)).args(extra);
    Process::spawn(&mut command)
}

/// Waits until the process has printed a JSON event named `event`.
fn wait_for_event(p: &Process, event: &str) {
    let needle = format!("\"event\":\"{event}\"");
    assert!(
        wait_until(WAIT, || p.stdout().contains(&needle)),
        "no {event} event\nstdout:\n{}\nstderr:\n{}",
        p.stdout(),
        p.stderr()
    );
}

/// Sends SIGINT, as Ctrl-C does, and returns the output and how long the exit took.
fn interrupt(p: Process) -> (Output, Duration) {
    let pid = Pid::from_raw(i32::try_from(p.id()).unwrap()).unwrap();
    let sent = Instant::now();
    kill_process(pid, Signal::INT).unwrap();
    // Bounded well above the one second asked for, so that a slow exit shows its
    // time in the message below rather than as a timeout.
    let output = p.finish_within(Duration::from_secs(15));
    (output, sent.elapsed())
}

#[test]
fn a_send_whose_broker_dies_for_good_exits_3_after_the_broker_timeout() {
    let mut broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "cam.jpg", 200_000, 9401);
    let port = broker.port();
    let send = start_send(&file, port, &["--broker-timeout", "3"]);
    wait_for_event(&send, "started");
    broker.kill();
    let killed = Instant::now();
    let output = send.finish_within(WAIT);
    let took = killed.elapsed();
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = format!("broker {HOST}:{port} unreachable for 3 s (last error: Connection refused");
    assert!(stdout.contains(&said), "{}", show(&output));
    // The connection broke at once (the broker's port is closed); the limit ran
    // from there, and the send did not wait for its 30 s receiver timeout.
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(8), "giving up took {took:?}");
}

#[test]
fn a_broker_timeout_for_receive_is_only_what_is_asked_for() {
    // The default: a receiver rides out the outage...
    let mut broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let mut command = mqft(["receive", "--json", "--out"]);
    command.arg(out.path()).args(at(broker.port()));
    let mut patient = Process::spawn(&mut command);
    let mut command = mqft(["receive", "--json", "--broker-timeout", "2", "--name", "impatient", "--out"]);
    command.arg(out.path()).args(at(broker.port()));
    let impatient = Process::spawn(&mut command);
    wait_for_event(&patient, "connected");
    wait_for_event(&impatient, "connected");
    broker.kill();
    // ...while one given a limit gives up after it.
    let output = impatient.finish_within(WAIT);
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("unreachable for 2 s"), "{}", show(&output));
    assert!(patient.is_running(), "the receiver without a limit gave up\n{}", patient.stderr());
}

#[test]
fn ctrl_c_ends_a_send_within_a_second_while_the_broker_answers() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "x.bin", 20 << 20, 9402);
    let mut command = mqft(["receive", "--json", "--out"]);
    command.arg(out.path()).args(at(broker.port()));
    let receiver = Process::spawn(&mut command);
    wait_for_event(&receiver, "connected");
    // Small chunks, one at a time: the transfer takes seconds, so that Ctrl-C
    // comes in the middle of it.
    let send = start_send(&file, broker.port(), &["--chunk-size", "16k", "--window", "1"]);
    wait_for_event(&send, "progress");
    let (output, took) = interrupt(send);
    assert_eq!(output.status.code(), Some(130), "{}", show(&output));
    assert!(took < Duration::from_millis(1500), "Ctrl-C took {took:?}\n{}", show(&output));
    // The shorter grace still got the abort out: the receiver hears it, rather
    // than waiting for a silent sender.
    assert!(
        wait_until(Duration::from_secs(5), || receiver.stdout().contains("sender stopped")),
        "the receiver did not hear of the abort\n{}",
        receiver.stdout()
    );
}

#[test]
fn ctrl_c_ends_a_send_within_a_second_while_the_broker_is_gone() {
    let mut broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "x.bin", 100_000, 9403);
    let send = start_send(&file, broker.port(), &[]);
    wait_for_event(&send, "started");
    broker.kill();
    wait_for_event(&send, "disconnected");
    let (output, took) = interrupt(send);
    assert_eq!(output.status.code(), Some(130), "{}", show(&output));
    assert!(took < Duration::from_millis(1500), "Ctrl-C took {took:?}\n{}", show(&output));
}

#[test]
fn a_slow_first_connect_says_what_it_waits_for() {
    // A closed port (every attempt refused) and a listener that never answers
    // the CONNECT: after a second, either is named in the log (stderr is a pipe,
    // so there is no spinner).
    let closed = ClosedPort::bind();
    let silent = std::net::TcpListener::bind((HOST, 0)).unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "x.bin", 10, 9404);
    for (port, says) in [
        (closed.port(), "still connecting; giving up after 3 s"),
        (silent.local_addr().unwrap().port(), "still waiting for the broker to answer; giving up after 3 s"),
    ] {
        let mut command = mqft(["send".as_ref(), file.as_os_str(), "-v".as_ref()]);
        command.args(at(port)).args(["--connect-timeout", "3"]);
        let send = Process::spawn(&mut command);
        // Said while it waits, not only in the final error.
        assert!(wait_until(WAIT, || send.stderr().contains(says)), "port {port}: not said\n{}", send.stderr());
        let addr = format!("{HOST}:{port}");
        assert!(send.stderr().contains(&addr), "the broker is named\n{}", send.stderr());
        let output = send.finish_within(WAIT);
        assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    }
    drop(silent);
}

#[test]
fn ctrl_c_ends_an_idle_receive_within_a_second_while_the_broker_is_gone() {
    let mut broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let mut command = mqft(["receive", "--json", "--out"]);
    command.arg(out.path()).args(at(broker.port()));
    let receiver = Process::spawn(&mut command);
    wait_for_event(&receiver, "connected");
    broker.kill();
    wait_for_event(&receiver, "disconnected");
    // Nothing of its own on the way: no reason to wait for a broker to come back.
    let (output, took) = interrupt(receiver);
    assert_eq!(output.status.code(), Some(130), "{}", show(&output));
    assert!(took < Duration::from_millis(1500), "Ctrl-C took {took:?}\n{}", show(&output));
}
