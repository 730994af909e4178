//! Helpers for the fault tests (`faults`, `faults_net`): the `mqft` binary as
//! a child process that speaks `--json`, library clients that reconnect
//! quickly, links paced so that a transfer lasts a few seconds and a fault
//! lands in the middle of it, and the broker's count of dropped messages.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mqft::{ChunkSize, Client, Config, MqttVersion, ReceiveEvent, ReceiveHandle, SendOptions};
use mqft_tests::proxy::{Direction, Proxy};
use mqft_tests::{mosquitto_client, wait_until, Broker, Process, HOST};
use serde_json::Value;

use crate::util::next_matching;

/// The bound on any one wait for a child process or an event.
pub const WAIT: Duration = Duration::from_secs(60);

/// The chunk size of the fault tests' transfers.
pub const CHUNK: u32 = 64 * 1024;
/// The window of the fault tests' transfers: far below the broker's queue, so
/// a fault costs at most a few windows of chunks sent again, far less than
/// the file.
pub const WINDOW: u32 = 16;

/// The bandwidth of a [`paced_link`]: a 20 MiB file takes about 2.5 s, on any
/// machine and in any build profile, so a fault lands in the middle of it.
pub const PACE: u64 = 8 << 20;

/// The longest pause between reconnection attempts of the library clients
/// here: a client finds a broker (or a link) that came back within half a
/// second. The CLI keeps its default.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// Send options with [`CHUNK`] and [`WINDOW`].
pub fn windowed() -> SendOptions {
    let mut o = SendOptions::default();
    o.chunk_size = ChunkSize::Fixed(CHUNK);
    o.protocol.window = WINDOW;
    o
}

/// The same as CLI flags.
pub fn windowed_flags() -> [String; 4] {
    ["--chunk-size".into(), CHUNK.to_string(), "--window".into(), WINDOW.to_string()]
}

/// A proxy to `broker` that carries [`PACE`] bytes a second towards its
/// client: put a receiver behind it, and the window ties the sender to it.
pub fn paced_link(broker: &Broker) -> Proxy {
    let proxy = Proxy::start(broker.addr());
    proxy.set_bandwidth(Direction::ServerToClient, Some(PACE));
    proxy
}

/// A library client of `127.0.0.1:port` (a broker, or a proxy in front of
/// one) that reconnects within [`RECONNECT_BACKOFF`].
pub fn client_at(port: u16, version: MqttVersion) -> Client {
    let mut cfg = Config::new(HOST, port);
    cfg.version = version;
    cfg.max_backoff = RECONNECT_BACKOFF;
    Client::new(cfg)
}

/// Waits until the receiver holds at least `bytes` of a file (its progress
/// events say so) and returns what it holds then.
pub async fn held_at_least(rx: &mut ReceiveHandle, bytes: u64) -> u64 {
    let what = format!("the receiver to hold {bytes} bytes");
    match next_matching(rx, &what, |e| matches!(e, ReceiveEvent::Progress { bytes: b, .. } if *b >= bytes)).await {
        ReceiveEvent::Progress { bytes, .. } => bytes,
        _ => unreachable!("next_matching returns a Progress"),
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passed, without
/// blocking the runtime's thread; returns whether it held.
pub async fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub use mqft_tests::mqft_command as mqft;

/// `-h 127.0.0.1 -p <port>`.
pub fn at(port: u16) -> [String; 4] {
    ["-h".into(), HOST.into(), "-p".into(), port.to_string()]
}

/// An `mqft send` or `mqft receive` process run with `--json`, whose events a
/// test reads while it runs.
#[derive(Debug)]
pub struct Cli {
    process: Process,
    what: String,
}

impl Cli {
    /// `mqft receive --once --json --name <name> --out <out>` at
    /// `127.0.0.1:port`, plus `extra`; returns once it is connected.
    pub fn receive(port: u16, out: &Path, name: &str, extra: &[&str]) -> Cli {
        let mut command = mqft(["receive", "--once", "--json", "--name", name, "--out"]);
        command.arg(out).args(at(port)).args(extra);
        let mut cli = Cli { process: Process::spawn(&mut command), what: format!("mqft receive --name {name}") };
        cli.wait_for("connected", WAIT, |e| e["event"] == "connected");
        cli
    }

    /// `mqft send --json <file>` at `127.0.0.1:port`, plus `extra`.
    pub fn send(port: u16, file: &Path, extra: &[String]) -> Cli {
        let mut command = mqft(["send".as_ref(), "--json".as_ref(), file.as_os_str()]);
        command.args(at(port)).args(extra);
        Cli { process: Process::spawn(&mut command), what: format!("mqft send {}", file.display()) }
    }

    /// Every complete line of JSON it printed so far.
    pub fn events(&self) -> Vec<Value> {
        parse_events(&self.process.stdout(), &self.what)
    }

    /// Waits up to `timeout` for an event for which `wanted` holds, and
    /// returns it.
    ///
    /// # Panics
    ///
    /// On the timeout, or if the process exits first, with its output.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut wanted: impl FnMut(&Value) -> bool) -> Value {
        let (name, process) = (&self.what, &mut self.process);
        let mut found = None;
        let mut exited = false;
        wait_until(timeout, || {
            found = parse_events(&process.stdout(), name).into_iter().find(&mut wanted);
            if found.is_none() && !process.is_running() {
                // Look once more: it may have printed the event just before it exited.
                found = parse_events(&process.stdout(), name).into_iter().find(&mut wanted);
                exited = found.is_none();
            }
            found.is_some() || exited
        });
        found.unwrap_or_else(|| {
            let how = if exited { "it exited first" } else { "timed out" };
            panic!("{}: no {what} event ({how})\n{}", self.what, self.output())
        })
    }

    /// Waits until a receiver's progress events show at least `bytes` held,
    /// and returns the bytes held then.
    pub fn wait_held(&mut self, bytes: u64) -> u64 {
        let event = self.wait_for(&format!("progress to {bytes} bytes"), WAIT, |e| {
            e["event"] == "progress" && e["bytes"].as_u64().is_some_and(|b| b >= bytes)
        });
        event["bytes"].as_u64().unwrap_or_default()
    }

    /// Kill it with `SIGKILL`: no goodbye, no last save.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Its stdout and stderr so far, for assertion messages.
    pub fn output(&self) -> String {
        format!("--- stdout ---\n{}--- stderr ---\n{}", self.process.stdout(), self.process.stderr())
    }

    /// Waits up to `timeout` for it to exit.
    ///
    /// # Panics
    ///
    /// If it is still running then (it is killed; the message holds its output).
    pub fn finish_within(self, timeout: Duration) -> Finished {
        let output = self.process.finish_within(timeout);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        Finished {
            code: output.status.code(),
            events: parse_events(&stdout, &self.what),
            text: format!(
                "{} exited with {}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
                self.what, output.status
            ),
        }
    }
}

/// An `mqft` process that exited.
#[derive(Debug)]
pub struct Finished {
    /// Its exit code (`None` if a signal ended it).
    pub code: Option<i32>,
    /// Its JSON events.
    pub events: Vec<Value>,
    /// Its status and whole output, for assertion messages.
    pub text: String,
}

impl Finished {
    /// The first event named `name`.
    pub fn event(&self, name: &str) -> Option<&Value> {
        self.events.iter().find(|e| e["event"] == name)
    }

    /// The one file of the final `{"event":"summary"}` line.
    ///
    /// # Panics
    ///
    /// If there is no summary of exactly one file.
    pub fn summary_file(&self) -> &Value {
        let summary = self.event("summary").unwrap_or_else(|| panic!("no summary\n{}", self.text));
        let files = summary["files"].as_array().unwrap_or_else(|| panic!("a summary without files\n{}", self.text));
        assert_eq!(files.len(), 1, "{}", self.text);
        &files[0]
    }

    /// A number of the summary's file.
    pub fn summary_number(&self, key: &str) -> u64 {
        self.summary_file()[key].as_u64().unwrap_or_else(|| panic!("no number {key} in the summary\n{}", self.text))
    }
}

/// The complete lines of `stdout` as JSON objects with an `event` name.
fn parse_events(stdout: &str, what: &str) -> Vec<Value> {
    // A line still being written has no newline yet: leave it for later.
    let complete = stdout.rfind('\n').map_or("", |end| &stdout[..end]);
    complete
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line:?}"));
            assert!(value["event"].is_string(), "{what}: an object with an event name: {line}");
            value
        })
        .collect()
}

/// The broker's count of messages it dropped for its queue limits
/// (`$SYS/broker/publish/messages/dropped`), read by a `mosquitto_sub` that
/// runs alongside. The broker needs `sys_interval 1` to update it every
/// second.
#[derive(Debug)]
pub struct DroppedMessages {
    subscriber: Process,
}

impl DroppedMessages {
    /// The `$SYS` line a broker needs for this counter to be fresh.
    pub const CONFIG: &'static str = "sys_interval 1";
    const TOPIC: &'static str = "$SYS/broker/publish/messages/dropped";

    /// Subscribe to the counter; returns once its first value arrived.
    pub fn watch(broker: &Broker) -> DroppedMessages {
        let mut command = Command::new(mosquitto_client("mosquitto_sub"));
        command.args(["-h", HOST, "-p", &broker.port().to_string(), "-t", Self::TOPIC]);
        let watch = DroppedMessages { subscriber: Process::spawn(&mut command) };
        assert!(
            wait_until(WAIT, || watch.latest().is_some()),
            "no value on {}: {}\n{}",
            Self::TOPIC,
            watch.subscriber.stderr(),
            broker.log()
        );
        watch
    }

    /// The latest value the broker published, if any yet.
    pub fn latest(&self) -> Option<u64> {
        let out = self.subscriber.stdout();
        let complete = out.rfind('\n').map_or("", |end| &out[..end]);
        complete.lines().filter_map(|l| l.trim().parse().ok()).next_back()
    }

    /// Waits up to `timeout` until the count is at least `count`; returns the
    /// latest value.
    pub fn reach(&self, count: u64, timeout: Duration) -> u64 {
        wait_until(timeout, || self.latest().is_some_and(|n| n >= count));
        self.latest().unwrap_or_default()
    }
}

/// How long `f` took, with its result.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}
