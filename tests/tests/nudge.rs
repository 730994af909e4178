//! The nudge ([`mqft::Config::nudge`]): when the broker has answered us (a PUBACK,
//! a SUBACK) and nothing of ours follows within a millisecond, an empty QoS 0
//! publish to `<prefix>/nudge` carries our TCP ACK at once, so that a broker
//! without `TCP_NODELAY` (Mosquitto as installed) does not hold its next small
//! write, the answer we wait for, until our kernel's delayed ACK (~40 ms). What it
//! saves is measured by the benchmark (docs/PERFORMANCE.md); here, that it goes
//! where it should and nowhere else, and never when it must not: under a rate
//! limit (it is a publish the limit does not count) or when turned off.

use std::ffi::OsString;
use std::process::Command;

use mqft_tests::{files_equal, mosquitto_client, random_file, wait_until, Broker, Process, HOST};

use crate::fault_util::{at, mqft, WAIT};

/// How many messages went to `files/nudge`, and to anything else under `files/`
/// that is not a transfer's, while one file went through with `extra` flags on both
/// sides (and `env` set for both).
fn nudges_during_a_send(extra: &[&str], env: &[(&str, &str)]) -> (usize, Vec<String>) {
    let broker = Broker::start();
    let port = broker.port().to_string();
    let mut watcher = Process::spawn(
        Command::new(mosquitto_client("mosquitto_sub"))
            .args(["-h", HOST, "-p", &port, "-i", "watcher", "-t", "files/#", "-F", "%t"]),
    );
    assert!(wait_until(WAIT, || broker.has_subscription("watcher", "files/#")), "{}", broker.log());

    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "nudged.bin", 3 << 20, 4711);
    let command = |args: Vec<OsString>| {
        let mut c = mqft(args);
        c.args(at(broker.port())).args(extra);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    };
    let rx = Process::spawn(&mut command(vec!["receive".into(), "--once".into(), "-o".into(), out.path().into()]));
    let sent = Process::spawn(&mut command(vec!["send".into(), file.clone().into()])).finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert!(sent.status.success(), "{}", mqft_tests::show_output(&sent));
    assert!(received.status.success(), "{}", mqft_tests::show_output(&received));
    assert!(files_equal(&file, &out.path().join("nudged.bin")));

    watcher.kill();
    let topics = String::from_utf8(watcher.finish_within(WAIT).stdout).unwrap();
    let nudges = topics.lines().filter(|t| *t == "files/nudge").count();
    // Every other topic is a transfer's: files/<32 hex>/...
    let stray = topics
        .lines()
        .filter(|t| *t != "files/nudge")
        .filter(|t| !t.split('/').nth(1).is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())))
        .map(str::to_owned)
        .collect();
    (nudges, stray)
}

#[test]
fn a_transfer_nudges_under_its_prefix_only() {
    let (nudges, stray) = nudges_during_a_send(&[], &[]);
    // At least the manifest's PUBACK (the sender then waits for Ready) and the
    // end of round's (it then waits for Complete).
    assert!(nudges >= 2, "{nudges} nudges");
    assert!(stray.is_empty(), "messages outside the transfer's topics: {stray:?}");
}

#[test]
fn no_nudge_under_a_rate_limit_or_when_turned_off() {
    let (paced, _) = nudges_during_a_send(&["--max-publish-rate", "10000"], &[]);
    assert_eq!(paced, 0, "a nudge is a publish the rate limit would not count");
    let (off, _) = nudges_during_a_send(&[], &[("MQFT_NUDGE", "0")]);
    assert_eq!(off, 0);
}
