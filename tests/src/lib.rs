//! Shared harness for mqft's integration tests.
//!
//! The integration tests run against real programs on the loopback interface,
//! never against mocks: a `mosquitto` broker started per test, the
//! `mosquitto_pub`/`mosquitto_sub` clients, the `mqft` runtime and the `mqft`
//! CLI. This crate holds what every test needs for that.
//!
//! # Layout
//!
//! In the order a test uses them:
//!
//! - [`random_file`] writes a large file of deterministic pseudo-random bytes,
//!   the payload a test moves.
//! - [`Broker`] (configured through [`BrokerBuilder`]) is one `mosquitto`
//!   process on a free `127.0.0.1` port, with a generated config file, log and
//!   persistence directory in its own temp dir. It can be killed (`SIGKILL`),
//!   stopped (`SIGTERM`) and restarted on the same port, and it is killed when
//!   dropped.
//! - [`wait_until`] polls a condition up to a deadline: tests never sleep a
//!   fixed amount, and never wait without a bound.
//! - [`Process`] runs a client program (`mosquitto_sub`, the `mqft` CLI
//!   found by [`mqft_bin`]) in the background, capturing its output, with
//!   bounded waits.
//! - [`files_equal`] compares what arrived with what was sent.
//! - [`ClosedPort`] is a loopback port that refuses connections, for tests of
//!   an unreachable broker.
//! - [`TmpfsMount`] is a small tmpfs (it needs root, as CI has), for tests of a
//!   full disk.
//! - [`proxy::Proxy`] sits between a client and its broker and injects
//!   network faults: latency, bandwidth limits, resets in the middle of a
//!   packet, half-open connections, a link that goes down for a while.
//! - [`free_port`] and [`find_program`] are the small pieces underneath.
//!
//! # Failures
//!
//! Helpers panic with a message that says what to do (install mosquitto, read
//! the broker log, ...): they run inside tests, where a panic is the failure
//! report. A [`Broker`] dropped while its test panics prints the tail of its
//! log, so a failing test shows what the broker saw.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod broker;
mod files;
mod net;
mod process;
pub mod proxy;

pub use broker::*;
pub use files::*;
pub use net::*;
pub use process::*;

/// The only address tests use: brokers listen here and clients connect here.
pub const HOST: &str = "127.0.0.1";

/// How long a broker may take to start listening (or to exit after `SIGTERM`).
///
/// Generous for a 2-core CI machine running tests in parallel; a healthy
/// mosquitto needs a few milliseconds.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// How one attempt to start mosquitto ended, short of a panic.
enum Spawn {
    Ready,
    AddressInUse,
}

/// Poll `condition` until it holds or `timeout` has passed; return whether it
/// held.
///
/// The condition is checked at once, then with short pauses that grow from
/// 1 ms to 50 ms, so a quick event is seen quickly and a slow one costs little
/// CPU. Assert on the result with a message (and the broker's
/// [`Broker::log`]): a `false` is the test's failure, not a reason to wait
/// longer. This blocks the thread: in async tests prefer awaiting the event
/// itself under `tokio::time::timeout`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_stream() {
        // First outputs for seed 0 of the reference C implementation.
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn random_files_are_deterministic_prefixes_and_compare_as_expected() {
        let dir = tempfile::tempdir().unwrap();
        let a = random_file(dir.path(), "a", 3 * (1 << 20) + 5, 7);
        let b = random_file(dir.path(), "b", 3 * (1 << 20) + 5, 7);
        let short = random_file(dir.path(), "short", 1000, 7);
        let other = random_file(dir.path(), "other", 3 * (1 << 20) + 5, 8);
        assert_eq!(fs::metadata(&a).unwrap().len(), 3 * (1 << 20) + 5);
        assert!(files_equal(&a, &b));
        assert!(!files_equal(&a, &other));
        assert!(!files_equal(&a, &short));
        assert_eq!(fs::read(&short).unwrap(), fs::read(&a).unwrap()[..1000]);

        // One flipped byte in the last, partial block is found.
        let mut bytes = fs::read(&b).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&b, bytes).unwrap();
        assert!(!files_equal(&a, &b));
    }

    #[test]
    fn wait_until_reports_success_and_timeout() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(30), || false));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn config_has_the_listener_limits_and_extra_lines() {
        let config = Broker::builder()
            .max_packet_size(131072)
            .max_queued_messages(5)
            .max_inflight_messages(2)
            .persistence(true)
            .config_line("require_certificate false")
            .config(1234, Path::new("/tmp/x"));
        for expected in [
            "user root",
            "log_dest file /tmp/x/mosquitto.log",
            "persistence true",
            "persistence_location /tmp/x/",
            "max_packet_size 131072",
            "max_queued_messages 5",
            "max_inflight_messages 2",
            "listener 1234 127.0.0.1",
            "allow_anonymous true",
        ] {
            assert!(config.lines().any(|line| line == expected), "no {expected:?} in:\n{config}");
        }
        let listener = config.find("listener").unwrap();
        assert!(config.find("require_certificate false").unwrap() > listener, "extra lines go after the listener");
        assert!(Broker::builder().config(1, Path::new("/d")).contains("persistence false\n"));
    }
}
