//! The flags people already type (issue 10, items 5 and 6), run through the
//! `mqft` binary against real Mosquitto brokers: `mosquitto_pub`'s spellings of
//! `-V`, `mqft -h`, `--capath`, `--insecure` and `--tls-version` against a TLS
//! listener, `-k` below 5, a missing `--password-file`, an `-o` that is a file,
//! shell completions and the man page, the demo's temporary directory, and a
//! default log level that keeps rumqttc's bookkeeping warnings from users.
//!
//! ws:// and wss:// are not here: Debian's Mosquitto 2.0.11 is built without
//! websockets (README, "Transports").

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use mqft::proto::Prefix;
use mqft_tests::{mosquitto_client, mqft_command as mqft, random_file, show_output as show, Broker, Process, HOST};

use crate::tls::pki;

/// The bound on each process's run; each takes a few seconds at most.
const WAIT: Duration = Duration::from_secs(60);

fn run(command: &mut Command) -> Output {
    Process::spawn(command).finish_within(WAIT)
}

/// `mqft send FILE -h HOST -p PORT --timeout 1 EXTRA...`: with no receiver, it
/// exits 4 once connected (the broker took it), 3 if it could not connect, 2 on a
/// usage error.
fn send_alone(file: &Path, host: &str, port: u16, extra: &[&str]) -> Output {
    let mut command = mqft(["send".as_ref(), file.as_os_str()]);
    command.args(["-h", host, "-p", &port.to_string(), "--timeout", "1", "--connect-timeout", "5"]).args(extra);
    run(&mut command)
}

#[test]
fn mqtt_version_takes_mosquitto_pub_spellings() {
    let broker = Broker::builder().verbose_log(true).start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "v.bin", 10, 6001);
    // Mosquitto logs the protocol of each connection: p2 is 3.1.1, p5 is 5.
    for (spelling, logged) in [("5", "p5"), ("mqttv5", "p5"), ("311", "p2"), ("mqttv311", "p2")] {
        let id = format!("version-{spelling}");
        let out = send_alone(&file, HOST, broker.port(), &["-V", spelling, "-i", &id]);
        assert_eq!(out.status.code(), Some(4), "-V {spelling}\n{}", show(&out));
        let connected = format!("as {id} ({logged},");
        assert!(broker.log().contains(&connected), "-V {spelling}: no '{connected}' in the log:\n{}", broker.log());
    }
    // MQTT 3.1 is refused by name, before connecting.
    let out = send_alone(&file, HOST, broker.port(), &["-V", "mqttv31"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3.1) is not supported"), "{}", show(&out));
    // The help says which spellings it takes.
    let help = run(&mut mqft(["send", "--help"]));
    assert!(String::from_utf8_lossy(&help.stdout).contains("mqttv311"), "{}", show(&help));
}

#[test]
fn mqft_dash_h_prints_help() {
    let out = run(&mut mqft(["-h"]));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Usage: mqft") && stdout.contains("receive"), "{}", show(&out));
}

/// A broker with a TLS listener (certificates from [`pki`] in `p`) that speaks
/// TLS 1.3 only (Mosquitto's `tls_version` is the lowest it accepts) and wants no
/// client certificate.
fn tls13_broker(p: &Path) -> Broker {
    Broker::builder()
        .config_line(format!("cafile {}", p.join("ca.crt").display()))
        .config_line(format!("certfile {}", p.join("server.crt").display()))
        .config_line(format!("keyfile {}", p.join("server.key").display()))
        .config_line("tls_version tlsv1.3")
        .start()
}

#[test]
fn capath_insecure_and_tls_version_against_a_tls_listener() {
    let pki_dir = tempfile::tempdir().unwrap();
    let p = pki_dir.path();
    pki(p);
    let broker = tls13_broker(p);
    let port = broker.port();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "t.bin", 10, 6101);
    let ca = p.join("ca.crt");
    let ca = ca.to_str().unwrap();

    // Trusting only the system's CAs, the test CA's certificate is refused.
    let out = send_alone(&file, HOST, port, &["--tls-version", "tlsv1.3"]);
    assert_eq!(out.status.code(), Some(3), "system CAs\n{}", show(&out));

    // --capath: a directory with the CA among other files.
    let capath = tempfile::tempdir().unwrap();
    fs::copy(p.join("ca.crt"), capath.path().join("5f2a1c3b.0")).unwrap();
    fs::write(capath.path().join("README"), "not a certificate\n").unwrap();
    let out = send_alone(&file, HOST, port, &["--capath", capath.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "--capath\n{}", show(&out));
    // A directory without any certificate is a usage error that says so.
    let empty = tempfile::tempdir().unwrap();
    let out = send_alone(&file, HOST, port, &["--capath", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "empty --capath\n{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no CA certificate"), "{}", show(&out));

    // --insecure: no CA at all, and a host name the certificate does not name
    // (it names 127.0.0.1 only): accepted, as documented.
    let out = send_alone(&file, "localhost", port, &["--insecure"]);
    assert_eq!(out.status.code(), Some(4), "--insecure\n{}", show(&out));
    // Without it, the same connection is refused even with the right CA.
    let out = send_alone(&file, "localhost", port, &["--cafile", ca]);
    assert_eq!(out.status.code(), Some(3), "wrong host name without --insecure\n{}", show(&out));
    let help = run(&mut mqft(["send", "--help"]));
    assert!(String::from_utf8_lossy(&help.stdout).contains("UNSAFE"), "{}", show(&help));

    // --tls-version: the listener speaks 1.3 only.
    let out = send_alone(&file, HOST, port, &["--cafile", ca, "--tls-version", "tlsv1.3"]);
    assert_eq!(out.status.code(), Some(4), "tlsv1.3\n{}", show(&out));
    let out = send_alone(&file, HOST, port, &["--cafile", ca, "--tls-version", "tlsv1.2"]);
    assert_eq!(out.status.code(), Some(3), "tlsv1.2 against a 1.3-only listener\n{}", show(&out));
    assert!(broker.log().contains("unsupported protocol"), "refused for its version:\n{}", broker.log());
    let out = send_alone(&file, HOST, port, &["--cafile", ca, "--tls-version", "tlsv1.1"]);
    assert_eq!(out.status.code(), Some(2), "tlsv1.1\n{}", show(&out));
}

#[test]
fn keepalive_below_5_is_refused() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "k.bin", 10, 6201);
    for k in ["4", "0", "65536"] {
        let out = send_alone(&file, HOST, broker.port(), &["-k", k]);
        assert_eq!(out.status.code(), Some(2), "-k {k}\n{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("5..=65535"), "-k {k}\n{}", show(&out));
    }
    let out = send_alone(&file, HOST, broker.port(), &["-k", "5"]);
    assert_eq!(out.status.code(), Some(4), "-k 5\n{}", show(&out));
}

#[test]
fn a_missing_password_file_is_a_usage_error() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "p.bin", 10, 6301);
    let missing = src.path().join("no-such-password");
    let out = send_alone(&file, HOST, broker.port(), &["-u", "cam", "--password-file", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read password file") && stderr.contains("no-such-password"), "{}", show(&out));
}

#[test]
fn receive_into_a_file_says_not_a_directory() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = random_file(dir.path(), "photo.jpg", 10, 6401);
    let mut command = mqft(["receive".as_ref(), "--once".as_ref(), "-o".as_ref(), not_a_dir.as_os_str()]);
    command.args(["-h", HOST, "-p", &broker.port().to_string()]);
    let out = run(&mut command);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("photo.jpg: not a directory"), "{}", show(&out));
}

#[test]
fn completions_and_man_page_come_from_the_flags() {
    let out = run(&mut mqft(["completions", "bash"]));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(script.contains("_mqft()") && script.contains("complete -F _mqft"), "{}", show(&out));
    assert!(script.contains("--tls-version") && script.contains("--capath"), "the new flags complete too");
    // It is a bash script that bash accepts.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mqft.bash");
    fs::write(&path, &script).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(checked.status.success(), "bash -n: {}", String::from_utf8_lossy(&checked.stderr));
    for shell in ["zsh", "fish"] {
        let out = run(&mut mqft(["completions", shell]));
        assert_eq!(out.status.code(), Some(0), "{shell}\n{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("mqft"), "{shell}\n{}", show(&out));
    }

    let out = run(&mut mqft(["man"]));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH mqft 1"), "{page}");
    for sub in ["send", "receive", "demo", "completions", "man"] {
        assert!(page.contains(&format!("mqft\\-{sub}(1)")), "the page does not name {sub}:\n{page}");
    }
    // --dir: a page per subcommand, with its flags.
    let out = run(mqft(["man", "--dir"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for page in ["mqft.1", "mqft-send.1", "mqft-receive.1", "mqft-demo.1"] {
        assert!(dir.path().join(page).is_file(), "no {page}");
    }
    let send = fs::read_to_string(dir.path().join("mqft-send.1")).unwrap();
    assert!(send.contains("insecure") && send.contains("mqttv311"), "{send}");
}

#[test]
fn demo_leaves_the_working_directory_untouched() {
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut command = mqft(["demo", "--size", "1m"]);
    command.current_dir(cwd.path()).env("TMPDIR", tmp.path());
    let out = run(&mut command);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches the original"), "{}", show(&out));
    let listing = |dir: &Path| fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
    assert!(listing(cwd.path()).is_empty(), "the demo wrote {:?} into its working directory", listing(cwd.path()));
    assert!(listing(tmp.path()).is_empty(), "the demo left {:?} in the temp dir", listing(tmp.path()));
}

/// rumqttc warns about its own bookkeeping: here an UNSUBACK with "no
/// subscription existed", as after a broker restart. The receiver's session holds
/// a stale `files/#` subscription (made with its client id by `mosquitto_sub`)
/// and a chunk of a transfer it does not know; the receiver drops the chunk and
/// unsubscribes that transfer's chunk filter, which the broker never had. By
/// default none of this reaches the user; `-v` still shows it.
#[test]
fn rumqttc_warnings_stay_out_of_the_default_output() {
    let broker = Broker::start();
    let port = broker.port().to_string();
    let client_id = "rx-quiet";
    let stale = format!("{}/0123456789abcdef0123456789abcdef/chunk/0", Prefix::default().as_str());
    let sub = Command::new(mosquitto_client("mosquitto_sub"))
        .args(["-h", HOST, "-p", &port, "-V", "mqttv5", "-i", client_id, "-c", "-x", "3600", "-q", "1"])
        .args(["-t", &format!("{}/#", Prefix::default().as_str()), "-E"])
        .output()
        .unwrap();
    assert!(sub.status.success(), "mosquitto_sub: {}", String::from_utf8_lossy(&sub.stderr));

    let out = tempfile::tempdir().unwrap();
    for (verbose, expect_rumqttc) in [(false, false), (true, true)] {
        let published = Command::new(mosquitto_client("mosquitto_pub"))
            .args(["-h", HOST, "-p", &port, "-q", "1", "-t", &stale, "-m", "not a chunk"])
            .output()
            .unwrap();
        assert!(published.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&published.stderr));
        let mut command = mqft(["receive".as_ref(), "-o".as_ref(), out.path().as_os_str()]);
        // Chunks of a transfer unknown here, under their own subscription: a
        // receiver that subscribes per transfer drops that subscription.
        command.args(["-h", HOST, "-p", &port, "-i", client_id, "--timeout", "3", "--no-early-chunks"]);
        if verbose {
            command.arg("-v");
        }
        let received = run(&mut command);
        // Nothing arrives: exit 4 after --timeout.
        assert_eq!(received.status.code(), Some(4), "{}", show(&received));
        let stderr = String::from_utf8_lossy(&received.stderr);
        assert_eq!(stderr.contains("rumqttc"), expect_rumqttc, "verbose {verbose}\n{}", show(&received));
        if verbose {
            assert!(stderr.contains("NoSubscriptionExisted"), "{}", show(&received));
        }
        // The next run finds the stale subscription again: mosquitto_sub's
        // files/# is still in the session, only the chunk filter was "removed".
    }
}
