//! A receiver run as a service (issue 10, item 4), through the `mqft` binary and
//! real Mosquitto: `--exec` hooks that run once per completed file (not again for
//! a file offered again, nor after a restart, but again after a crash cut one
//! short), each path printed once, the `completed` JSON event with the SHA-256,
//! SIGTERM as a clean stop with exit 0, the config file and its precedence, the
//! systemd unit in `contrib/` run as written, and the sender's resume note and
//! summary line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mqft::proto::Prefix;
use mqft_tests::{
    broker_flags as at, files_equal, find_program, mqft_bin, mqft_command as mqft, random_file, show_output as show,
    wait_until, Broker, ClosedPort, Process, HOST,
};
use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;

use crate::fault_util::{paced_link, windowed_flags, Cli};

/// The bound on each wait; each step takes a second or two.
const WAIT: Duration = Duration::from_secs(60);

/// Runs `command` to its end.
fn run(command: &mut Command) -> Output {
    Process::spawn(command).finish_within(WAIT)
}

/// Starts `command` (an `mqft receive`) and waits until it has subscribed to the
/// manifests under `prefix`, so that a sender started next finds it.
fn start_receiver(broker: &Broker, prefix: &str, command: &mut Command) -> Process {
    let filter = Prefix::new(prefix).unwrap().manifest_filter();
    let before = broker.subscribers(&filter).len();
    let receiver = Process::spawn(command);
    assert!(
        wait_until(WAIT, || broker.subscribers(&filter).len() > before),
        "mqft receive did not subscribe under {prefix}\nstdout: {}\nstderr: {}",
        receiver.stdout(),
        receiver.stderr()
    );
    receiver
}

/// `mqft send FILE` to the broker, which must succeed.
fn send(broker: &Broker, file: &Path, extra: &[&str]) -> Output {
    let sent = run(mqft(["send".as_ref(), file.as_os_str()]).args(at(broker.port())).args(extra));
    assert_eq!(sent.status.code(), Some(0), "mqft send\n{}", show(&sent));
    sent
}

/// Sends `signal` and waits for the exit.
fn signal(p: Process, signal: Signal) -> Output {
    let pid = Pid::from_raw(i32::try_from(p.id()).unwrap()).unwrap();
    kill_process(pid, signal).unwrap();
    p.finish_within(WAIT)
}

/// The lines of a file, none if it is not there.
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// `sha256sum`'s hex digest of `path`.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// Every stdout line that is a JSON object.
fn json_events(stdout: &str) -> Vec<Value> {
    stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// A hook that appends `{} size sha256 [sender]` to `log`.
fn logging_hook(log: &Path) -> String {
    format!("echo {{}} $MQFT_SIZE $MQFT_SHA256 [$MQFT_SENDER] >> '{}'", log.display())
}

#[test]
fn exec_runs_once_per_completed_file_and_not_again_after_a_restart() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("hooks.log");
    let file = random_file(src.path(), "img 0001.jpg", 300_000, 7001);
    let arrived = out.path().join("img 0001.jpg");
    let receiver_command = || {
        let mut c = mqft(["receive", "--exec", &logging_hook(&log), "--name", "svc", "--out"]);
        c.arg(out.path()).args(at(broker.port()));
        c
    };

    let receiver = start_receiver(&broker, "files", &mut receiver_command());
    send(&broker, &file, &["--from", "cam-3"]);
    assert!(wait_until(WAIT, || lines(&log).len() == 1), "the hook did not run\n{}", receiver.stderr());
    // The same file again: "already have it", no second run, no second path.
    send(&broker, &file, &[]);
    let first = signal(receiver, Signal::TERM);
    assert_eq!(first.status.code(), Some(0), "SIGTERM\n{}", show(&first));
    assert_eq!(String::from_utf8_lossy(&first.stdout), format!("{}\n", arrived.display()), "{}", show(&first));
    assert!(String::from_utf8_lossy(&first.stderr).contains("exec for"), "exit status logged\n{}", show(&first));
    assert!(files_equal(&file, &arrived));
    let size = std::fs::metadata(&file).unwrap().len();
    // `{}` is one word however the name is spaced; MQFT_SENDER is the sender's --from.
    assert_eq!(lines(&log), vec![format!("{} {size} {} [cam-3]", arrived.display(), sha256sum(&file))]);

    // A restarted receiver, offered the file once more, runs nothing and prints nothing.
    let receiver = start_receiver(&broker, "files", &mut receiver_command());
    send(&broker, &file, &[]);
    let second = signal(receiver, Signal::TERM);
    assert_eq!(second.status.code(), Some(0), "{}", show(&second));
    assert_eq!(String::from_utf8_lossy(&second.stdout), "", "a path printed again\n{}", show(&second));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already have"), "{}", show(&second));
    assert_eq!(lines(&log).len(), 1, "the hook ran again: {:?}", lines(&log));
}

#[test]
fn a_hook_cut_short_by_a_crash_runs_again_at_the_next_start_and_then_never() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (log, go) = (work.path().join("hooks.log"), work.path().join("go"));
    let file = random_file(src.path(), "crash.bin", 200_000, 7101);
    // Each run logs its start, then holds until the test creates `go`.
    let hook = format!(
        "echo run >> '{log}'; while [ ! -e '{go}' ]; do sleep 0.05; done; echo end >> '{log}'",
        log = log.display(),
        go = go.display()
    );
    let receiver_command = || {
        let mut c = mqft(["receive", "--json", "--exec", &hook, "--out"]);
        c.arg(out.path()).args(at(broker.port()));
        c
    };

    let mut receiver = start_receiver(&broker, "files", &mut receiver_command());
    send(&broker, &file, &[]);
    assert!(wait_until(WAIT, || lines(&log) == ["run"]), "the hook did not start: {:?}", lines(&log));
    // A crash while the hook runs: nothing says it finished.
    receiver.kill();
    std::fs::write(&go, "").unwrap();
    // (The orphaned first run sees `go` and ends too.)
    assert!(wait_until(WAIT, || lines(&log) == ["run", "end"]), "{:?}", lines(&log));

    let receiver = Process::spawn(&mut receiver_command());
    assert!(wait_until(WAIT, || lines(&log).len() == 4), "the cut-short hook did not run again: {:?}", lines(&log));
    let restarted = signal(receiver, Signal::TERM);
    assert_eq!(restarted.status.code(), Some(0), "{}", show(&restarted));
    let exec = json_events(&String::from_utf8_lossy(&restarted.stdout))
        .into_iter()
        .find(|e| e["event"] == "exec")
        .unwrap_or_else(|| panic!("no exec event\n{}", show(&restarted)));
    assert_eq!(exec["status"], 0, "{}", show(&restarted));

    // Its run is on record now: a third start runs nothing.
    let receiver = start_receiver(&broker, "files", &mut receiver_command());
    send(&broker, &file, &[]);
    let third = signal(receiver, Signal::TERM);
    assert_eq!(third.status.code(), Some(0), "{}", show(&third));
    assert_eq!(lines(&log), ["run", "end", "run", "end"], "{}", show(&third));
}

#[test]
fn a_hook_killed_by_a_signal_runs_again_at_the_next_start() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (log, go) = (work.path().join("hooks.log"), work.path().join("go"));
    let file = random_file(src.path(), "sig.bin", 100_000, 7151);
    // Killed by SIGKILL (as Ctrl-C or a shutdown would end it) until `go` exists.
    let hook = format!(
        "echo run >> '{log}'; [ -e '{go}' ] || kill -KILL $$; echo end >> '{log}'",
        log = log.display(),
        go = go.display()
    );
    let receiver_command = || {
        let mut c = mqft(["receive", "--exec", &hook, "--out"]);
        c.arg(out.path()).args(at(broker.port()));
        c
    };
    let receiver = start_receiver(&broker, "files", &mut receiver_command());
    send(&broker, &file, &[]);
    assert!(wait_until(WAIT, || lines(&log) == ["run"]), "{:?}", lines(&log));
    let first = signal(receiver, Signal::TERM);
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    assert!(String::from_utf8_lossy(&first.stderr).contains("killed by signal 9"), "{}", show(&first));

    std::fs::write(&go, "").unwrap();
    let receiver = Process::spawn(&mut receiver_command());
    assert!(wait_until(WAIT, || lines(&log) == ["run", "run", "end"]), "not run again: {:?}", lines(&log));
    let second = signal(receiver, Signal::TERM);
    assert_eq!(second.status.code(), Some(0), "{}", show(&second));
}

#[test]
fn the_completed_event_carries_the_sha256_and_a_file_held_already_is_an_event() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "data.bin", 250_000, 7201);
    let mut command = mqft(["receive", "--json", "--out"]);
    command.arg(out.path()).args(at(broker.port()));
    let receiver = start_receiver(&broker, "files", &mut command);
    send(&broker, &file, &["--from", "cam-3"]);
    // Offered again to the receiver that has it in memory. The sender may be gone
    // before the receiver has seen the manifest with the hash that makes its
    // answer news (it confirms a claim at once): the event is waited for.
    let seen = |p: &Process| p.stdout().matches("\"event\":\"already_complete\"").count();
    send(&broker, &file, &[]);
    assert!(wait_until(WAIT, || seen(&receiver) >= 1), "no already_complete\n{}", receiver.stdout());
    let first = signal(receiver, Signal::TERM);
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    // Restarted, and offered the file again.
    let receiver = start_receiver(&broker, "files", &mut command);
    send(&broker, &file, &[]);
    assert!(wait_until(WAIT, || seen(&receiver) >= 1), "no already_complete\n{}", receiver.stdout());
    let second = signal(receiver, Signal::TERM);
    assert_eq!(second.status.code(), Some(0), "{}", show(&second));
    let output = Output {
        status: second.status,
        stdout: [first.stdout, second.stdout].concat(),
        stderr: [first.stderr, second.stderr].concat(),
    };
    let events = json_events(&String::from_utf8_lossy(&output.stdout));
    let named = |name: &str| events.iter().filter(|e| e["event"] == name).collect::<Vec<_>>();
    let completed = named("completed");
    assert_eq!(completed.len(), 1, "{}", show(&output));
    assert_eq!(completed[0]["sha256"], sha256sum(&file).as_str());
    assert_eq!(completed[0]["size"], 250_000);
    // Who sent it, as it named itself (--from).
    assert_eq!(completed[0]["sender"], "cam-3");
    let again = named("already_complete");
    assert_eq!(again.len(), 2, "once from memory, once after the restart\n{}", show(&output));
    for e in again {
        assert_eq!(e["sha256"], completed[0]["sha256"]);
        assert_eq!(e["path"], completed[0]["path"]);
    }
    assert!(named("error").is_empty(), "{}", show(&output));
}

#[test]
fn sigterm_stops_a_receiver_with_exit_0_and_ctrl_c_is_no_error() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let mut command = mqft(["receive", "--out"]);
    command.arg(out.path()).args(at(broker.port()));
    let receiver = start_receiver(&broker, "files", &mut command);
    let output = signal(receiver, Signal::TERM);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("error"), "{}", show(&output));

    let receiver = start_receiver(&broker, "files", &mut command);
    let output = signal(receiver, Signal::INT);
    // Interrupted, as shells expect of Ctrl-C, but stopped cleanly: no error.
    assert_eq!(output.status.code(), Some(130), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stopped cleanly") && !stderr.contains("error"), "{}", show(&output));
}

/// Writes `text` to `dir/mqft.toml`.
fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("mqft.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_config_file_sets_the_flags_and_env_vars_and_flags_override_it() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "conf.bin", 100_000, 7301);
    let cfg = config(
        work.path(),
        &format!(
            "broker = \"mqtt://{HOST}:{}\"\nprefix = \"from/file\"\n\n[receive]\nout = \"{}\"\nonce = true\nquiet = true\n",
            broker.port(),
            out.path().display()
        ),
    );
    // The file alone: its broker, prefix, directory and --once.
    let receiver =
        start_receiver(&broker, "from/file", &mut mqft(["receive".as_ref(), "--config".as_ref(), cfg.as_os_str()]));
    send(&broker, &file, &["--prefix", "from/file"]);
    let received = receiver.finish_within(WAIT);
    assert_eq!(received.status.code(), Some(0), "--once from the file\n{}", show(&received));
    assert!(files_equal(&file, &out.path().join("conf.bin")));
    assert!(
        !String::from_utf8_lossy(&received.stderr).contains("listening"),
        "quiet from the file\n{}",
        show(&received)
    );

    // An environment variable beats the file, and a flag beats both (`--json`
    // given beats `quiet` in the file rather than clashing with it).
    let mut by_env = mqft(["receive".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    by_env.env("MQFT_PREFIX", "from/env");
    let receiver = start_receiver(&broker, "from/env", &mut by_env);
    drop(receiver);
    let mut by_flag = mqft(["receive", "--json", "--prefix", "from/flag"]);
    by_flag.env("MQFT_CONFIG", &cfg).env("MQFT_PREFIX", "from/env");
    let receiver = start_receiver(&broker, "from/flag", &mut by_flag);
    drop(receiver);
}

#[test]
fn a_config_file_with_an_unknown_key_exits_2_naming_it() {
    let closed = ClosedPort::bind();
    let work = tempfile::tempdir().unwrap();
    let port = closed.port();
    let cases = [
        ("[receive]\nmax_sise = \"1g\"\n", "max_sise"),
        ("brokr = \"mqtt://x\"\n", "brokr"),
        ("out = \"/srv\"\n", "[receive]"),
        ("[receive]\nonce = \"yes\"\n", "once"),
        ("[receive]\nmax_size = \"lots\"\n", "lots"),
    ];
    for (text, named) in cases {
        let cfg = config(work.path(), &format!("port = {port}\n{text}"));
        let output = run(&mut mqft(["receive".as_ref(), "--config".as_ref(), cfg.as_os_str()]));
        assert_eq!(output.status.code(), Some(2), "{text:?}\n{}", show(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains(named), "{text:?}\n{}", show(&output));
    }
    // A missing file that was asked for is an error too; a default that is absent is not.
    let output = run(&mut mqft(["receive", "--config", "/nonexistent/mqft.toml"]));
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
}

#[test]
fn a_password_in_a_world_readable_config_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let closed = ClosedPort::bind();
    let work = tempfile::tempdir().unwrap();
    let cfg = config(
        work.path(),
        &format!("host = \"{HOST}\"\nport = {}\nusername = \"u\"\npassword = \"hunter2\"\n", closed.port()),
    );
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(mode)).unwrap();
        // Into the temp dir: a receiver makes its state folder in its output
        // directory (by default the working directory) before it connects.
        let output = run(mqft([
            "receive".as_ref(),
            "--config".as_ref(),
            cfg.as_os_str(),
            "--connect-timeout".as_ref(),
            "1".as_ref(),
        ])
        .current_dir(work.path()));
        assert_eq!(output.status.code(), Some(3), "{}", show(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.contains("anyone on this machine can read it"), warned, "mode {mode:o}\n{}", show(&output));
        assert!(!stderr.contains("hunter2"), "{}", show(&output));
    }
}

/// `contrib/` in the repository.
fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib")
}

#[test]
fn the_systemd_units_command_line_receives_a_file_and_stops_with_exit_0() {
    let unit = std::fs::read_to_string(contrib().join("mqft-receive.service")).unwrap();
    let exec_start =
        unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap_or_else(|| panic!("no ExecStart in the unit"));
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("receive.log");
    // The example config as shipped, pointed at the test broker and directory,
    // logging to a file.
    let example = std::fs::read_to_string(contrib().join("mqft.toml")).unwrap();
    let example = example
        .replace("mqtt://localhost:1883", &format!("mqtt://{HOST}:{}", broker.port()))
        .replace("/srv/mqft", &out.path().display().to_string())
        .replace("# log_file = \"/var/log/mqft/receive.log\"", &format!("log_file = \"{}\"", log.display()));
    assert!(example.contains(&out.path().display().to_string()), "the example config names /srv/mqft");
    let cfg = config(work.path(), &example);

    let words: Vec<String> = exec_start
        .split_whitespace()
        .map(|w| match w {
            "/usr/local/bin/mqft" => mqft_bin().display().to_string(),
            "/etc/mqft/mqft.toml" => cfg.display().to_string(),
            other => other.to_owned(),
        })
        .collect();
    assert_eq!(words[0], mqft_bin().display().to_string(), "ExecStart runs /usr/local/bin/mqft: {exec_start}");
    let mut command = mqft(&words[1..]);
    command.env("JOURNAL_STREAM", "8:1234");
    let receiver = start_receiver(&broker, "files", &mut command);
    let file = random_file(src.path(), "unit.bin", 400_000, 7401);
    send(&broker, &file, &["--to", "archive"]);
    let output = signal(receiver, Signal::TERM);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(files_equal(&file, &out.path().join("unit.bin")));
    // Its notes went to the log file, with the summary line last.
    let logged = lines(&log);
    assert!(logged.iter().any(|l| l.contains("listening as receiver archive")), "{logged:?}");
    assert!(logged.last().is_some_and(|l| l.starts_with("received 1 file, ")), "{logged:?}\n{}", show(&output));

    if let Some(analyze) = find_program("systemd-analyze") {
        let unit_copy = work.path().join("mqft-receive.service");
        std::fs::write(&unit_copy, unit.replace("/usr/local/bin/mqft", &mqft_bin().display().to_string())).unwrap();
        let verified = run(Command::new(analyze).args(["verify", "--man=no"]).arg(&unit_copy));
        assert!(verified.status.success(), "systemd-analyze verify\n{}", show(&verified));
        assert!(verified.stderr.is_empty(), "systemd-analyze verify\n{}", show(&verified));
    }
}

#[test]
fn a_resumed_send_says_so_and_its_summary_counts_only_the_bytes_it_sent() {
    const LEN: u64 = 20 << 20;
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "resume.bin", LEN, 7501);
    let link = paced_link(&broker);
    let mut rx = Cli::receive(link.port(), out.path(), "rx-resume", &[]);
    let mut first = Cli::send(broker.port(), &path, &windowed_flags());
    let held = rx.wait_held(LEN / 2);
    first.kill();

    let again = run(mqft(["send".as_ref(), path.as_os_str()]).args(at(broker.port())).args(windowed_flags()));
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    let received = rx.finish_within(WAIT);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&path, &out.path().join("resume.bin")));
    let stderr = String::from_utf8_lossy(&again.stderr);
    let resuming = stderr.lines().find(|l| l.contains("resuming: ")).unwrap_or_else(|| panic!("{}", show(&again)));
    assert!(resuming.contains("already held by rx-resume"), "{resuming}");
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("sent 1 file, ") && summary.contains(" in ") && summary.ends_with("/s)"),
        "{}",
        show(&again)
    );
    // Not the whole 20 MiB: the half the receiver held was not sent again.
    let mut amount = summary["sent 1 file, ".len()..].split(' ');
    let (number, unit) = (amount.next().unwrap(), amount.next().unwrap());
    let unit = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        other => panic!("{other} in {summary}"),
    };
    let sent = number.parse::<f64>().unwrap() * unit;
    assert!(sent <= (LEN - held) as f64 * 1.01, "held {held}: {summary}");
    // The receiver's own summary counts what it took in, not what it resumed with.
    let resumed = received.summary_number("resumed_bytes");
    let total = received.event("summary").unwrap()["bytes"].as_u64();
    assert_eq!(total, Some(LEN - resumed), "{}", received.text);
}
