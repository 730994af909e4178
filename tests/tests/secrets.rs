//! Secrets stay secret: a broker password given through the environment
//! (`MQFT_PASSWORD`) or a file (`--password-file`) never shows in the process's
//! arguments (what `ps` and `/proc/<pid>/cmdline` show anyone on the host), and
//! no password, however given, shows in logs (`-vv`), errors (a refused
//! connection, a bad broker URL) or `--json` output, and `--help` does not show
//! the values of the variables that hold one.
//!
//! The broker checks passwords with a file made by `mosquitto_passwd`.

use std::process::{Command, Output};

use mqft::proto::{Manifest, Meta, Prefix};
use mqft::{Client, Config, ErrorKind, MqttVersion};
use mqft_tests::{files_equal, mosquitto_client, random_file, wait_until, Broker, Process, HOST};

use crate::util::{receive_opts, within, LIMIT};

/// The password the broker knows for `alice`.
const SECRET: &str = "Zq9-sEcReT-7741";
/// A password the broker does not take, as secret as the right one.
const WRONG: &str = "Wr0ng-sEcReT-9912";

/// A broker that knows `alice` with [`SECRET`], and a temp dir for the test's
/// files (the password file among them).
fn broker_with_passwords() -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let made = Process::spawn(
        Command::new(mosquitto_client("mosquitto_passwd")).arg("-b").arg("-c").arg(&passwd).args(["alice", SECRET]),
    )
    .finish_within(LIMIT);
    assert!(made.status.success(), "mosquitto_passwd: {}", String::from_utf8_lossy(&made.stderr));
    let broker = Broker::builder().config_line(format!("password_file {}", passwd.display())).start();
    (broker, dir)
}

/// An `mqft` command with `args`, shielded from the developer's `MQFT_*`
/// settings, logging everything (`-vv` goes with each command) without colours.
fn mqft<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = mqft_tests::mqft_command(args);
    command.env("NO_COLOR", "1");
    command
}

/// The process's command line, as `ps` shows it to everyone on the host.
fn cmdline(process: &Process) -> String {
    let raw = std::fs::read(format!("/proc/{}/cmdline", process.id())).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Asserts that neither password is anywhere in `text`.
fn assert_no_secret(what: &str, text: &str) {
    for secret in [SECRET, WRONG] {
        assert!(!text.contains(secret), "{what} shows a password:\n{text}");
    }
}

/// Asserts that no password is in the output, and returns it as text.
fn checked_output(what: &str, output: &Output) -> String {
    let text = format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_no_secret(what, &text);
    text
}

/// `-h 127.0.0.1 -p <port>`.
fn at(broker: &Broker) -> [String; 4] {
    ["-h".into(), HOST.into(), "-p".into(), broker.port().to_string()]
}

#[test]
fn passwords_from_the_environment_or_a_file_stay_out_of_arguments_logs_and_output() {
    let (broker, dir) = broker_with_passwords();
    let pwfile = dir.path().join("mqft-password");
    std::fs::write(&pwfile, format!("{SECRET}\n")).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let file = random_file(dir.path(), "secret-plans.bin", 300_000, 9001);

    // The sender first, with the password in a file: it waits for a receiver,
    // so it is surely running (not still being exec'd) when its command line
    // is read.
    let id = {
        // The id the sender derives: name, size, modification time, chunk size.
        let meta = std::fs::metadata(&file).unwrap();
        let ms = meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let meta = Meta { modified_ms: Some(ms as i64), ..Meta::default() };
        Manifest::new("secret-plans.bin".into(), std::fs::metadata(&file).unwrap().len(), 65536, None, meta, 0)
            .unwrap()
            .id
    };
    let sender = Process::spawn(
        mqft(["send".as_ref(), file.as_os_str(), "-vv".as_ref(), "--json".as_ref()])
            .args(["-u", "alice", "--password-file"])
            .arg(&pwfile)
            .args(["--chunk-size", "64k", "--timeout", "30"])
            .args(at(&broker)),
    );
    let ack_filter = Prefix::default().ack_filter(&id);
    assert!(
        wait_until(LIMIT, || !broker.subscribers(&ack_filter).is_empty()),
        "the sender did not subscribe\n{}\n{}",
        sender.stdout(),
        sender.stderr()
    );
    let sender_args = cmdline(&sender);
    assert!(sender_args.contains("--password-file"), "{sender_args}");
    assert_no_secret("the sender's command line", &sender_args);

    // The receiver, with the password in the environment.
    let mut command = mqft(["receive", "--once", "-vv", "--json", "--name", "rx-secrets", "-u", "alice", "--out"]);
    command.arg(&out).args(at(&broker)).env("MQFT_PASSWORD", SECRET);
    let receiver = Process::spawn(&mut command);
    // Read as soon as it is exec'd: with the sender waiting, the receiver may
    // take the file and exit within milliseconds.
    let mut receiver_args = String::new();
    assert!(
        wait_until(LIMIT, || {
            receiver_args = cmdline(&receiver);
            receiver_args.contains("receive")
        }),
        "the receiver never showed its command line: {receiver_args:?}\n{}",
        receiver.stderr()
    );
    assert_no_secret("the receiver's command line", &receiver_args);

    let received = receiver.finish_within(LIMIT);
    let sent = sender.finish_within(LIMIT);
    let received_text = checked_output("mqft receive -vv --json", &received);
    let sent_text = checked_output("mqft send -vv --json", &sent);
    assert_eq!(received.status.code(), Some(0), "{received_text}");
    assert_eq!(sent.status.code(), Some(0), "{sent_text}");
    // The logs were on, at debug level, and said something about the broker.
    for (text, output) in [(&received_text, &received), (&sent_text, &sent)] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("DEBUG") && stderr.contains("connected"), "{text}");
    }
    assert!(files_equal(&file, &out.join("secret-plans.bin")));
}

#[test]
fn help_names_the_secret_environment_variables_but_not_their_values() {
    let url = format!("mqtt://alice:{SECRET}@{HOST}:1883");
    for args in [&["--help"][..], &["send", "--help"], &["receive", "--help"], &["help", "receive"]] {
        let mut command = mqft(args);
        command.env("MQFT_BROKER", &url).env("MQFT_USERNAME", "alice").env("MQFT_PASSWORD", WRONG);
        let output = Process::spawn(&mut command).finish_within(LIMIT);
        let text = checked_output(&format!("mqft {}", args.join(" ")), &output);
        assert_eq!(output.status.code(), Some(0), "{text}");
        assert!(!text.contains("alice"), "mqft {} shows the user name:\n{text}", args.join(" "));
        if args != ["--help"] {
            // The variables are named, where a value would follow an `=`. Help
            // wraps its lines, maybe inside the brackets.
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for var in ["MQFT_BROKER", "MQFT_USERNAME", "MQFT_PASSWORD"] {
                assert!(flat.contains(&format!("[env: {var}]")), "mqft {} names no {var}:\n{text}", args.join(" "));
            }
        }
    }
}

/// Runs `mqft receive` that must fail with `code`, and checks its output.
fn refused(what: &str, mut command: Command, code: i32) -> String {
    command.args(["--connect-timeout", "5"]);
    let output = Process::spawn(&mut command).finish_within(LIMIT);
    let text = checked_output(what, &output);
    assert_eq!(output.status.code(), Some(code), "{what}\n{text}");
    text
}

#[test]
fn refused_passwords_and_bad_urls_are_not_repeated() {
    let (broker, dir) = broker_with_passwords();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let pwfile = dir.path().join("wrong-password");
    std::fs::write(&pwfile, WRONG).unwrap();
    let receive = |json: bool| {
        let mut command = mqft(["receive", "--once", "-vv", "--out"]);
        command.arg(&out);
        if json {
            command.arg("--json");
        }
        command
    };
    let url = format!("mqtt://alice:{WRONG}@{HOST}:{}", broker.port());

    for json in [false, true] {
        // A wrong password from the environment, from a file, in a URL given as
        // a flag (which `ps` shows, as documented, but errors need not repeat)
        // and in a URL from the environment.
        let mut c = receive(json);
        c.args(["-u", "alice"]).args(at(&broker)).env("MQFT_PASSWORD", WRONG);
        let text = refused("MQFT_PASSWORD", c, 3);
        assert!(text.contains("refused the connection"), "{text}");
        let mut c = receive(json);
        c.args(["-u", "alice", "--password-file"]).arg(&pwfile).args(at(&broker));
        refused("--password-file", c, 3);
        let mut c = receive(json);
        c.args(["--broker", &url]);
        refused("--broker with a password", c, 3);
        let mut c = receive(json);
        c.env("MQFT_BROKER", &url);
        refused("MQFT_BROKER with a password", c, 3);

        // URLs that do not parse, with a password in them.
        for bad in [
            format!("mqtt://alice:{WRONG}@{HOST}:0"),
            format!("http://alice:{WRONG}@{HOST}"),
            format!("mqtt://alice:{WRONG}@{HOST}/path"),
            format!("mqtt://alice:{WRONG}@[::1"),
        ] {
            let mut c = receive(json);
            c.env("MQFT_BROKER", &bad);
            let text = refused("a bad MQFT_BROKER", c, 2);
            assert!(text.contains("bad broker url"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_keeps_passwords_out_of_its_errors_and_debug_output() {
    let (broker, dir) = broker_with_passwords();
    let url = format!("mqtt://alice:{WRONG}@{HOST}:{}", broker.port());
    for version in [MqttVersion::V5, MqttVersion::V311] {
        let mut cfg = Config::from_url(&url).unwrap();
        cfg.version = version;
        assert_no_secret("Config's Debug", &format!("{cfg:?}"));
        let client = Client::new(cfg);
        assert_no_secret("Client's Debug", &format!("{client:?}"));
        let err =
            within("the refused receive", client.receive(dir.path(), receive_opts("rx-lib")).wait()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Broker, "{err}");
        assert_no_secret("the error", &format!("{err} / {err:?} / {err:#?}"));
    }
    let err = Config::from_url(&format!("mqtt://alice:{WRONG}@{HOST}:99999")).unwrap_err();
    assert_no_secret("a bad URL's error", &format!("{err} / {err:?}"));
}
