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

pub mod proxy;

/// The only address tests use: brokers listen here and clients connect here.
pub const HOST: &str = "127.0.0.1";

/// How long a broker may take to start listening (or to exit after `SIGTERM`).
///
/// Generous for a 2-core CI machine running tests in parallel; a healthy
/// mosquitto needs a few milliseconds.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a fresh broker is given a new port when its first one was
/// taken between [`free_port`] and mosquitto's `bind`.
const START_ATTEMPTS: usize = 5;

/// How many trailing log lines a broker prints when dropped during a panic.
const LOG_TAIL_LINES: usize = 80;

/// The message shown when `mosquitto` cannot be found.
const MOSQUITTO_MISSING: &str = "mosquitto not found: install it with \
     `apt-get update && apt-get install -y mosquitto mosquitto-clients` (or run scripts/test, which does)";

/// Options for a [`Broker`], turned into a mosquitto config file by
/// [`BrokerBuilder::start`].
///
/// The defaults are an anonymous listener on a free `127.0.0.1` port with
/// persistence off and mosquitto's own limits.
#[derive(Debug, Clone, Default)]
pub struct BrokerBuilder {
    max_packet_size: Option<u32>,
    max_queued_messages: Option<u32>,
    max_inflight_messages: Option<u32>,
    persistence: bool,
    verbose_log: bool,
    extra_lines: Vec<String>,
}

impl BrokerBuilder {
    /// Refuse packets larger than `bytes` (`max_packet_size`): the broker
    /// disconnects a client that sends one, and announces the limit to MQTT 5
    /// clients in CONNACK.
    pub fn max_packet_size(mut self, bytes: u32) -> Self {
        self.max_packet_size = Some(bytes);
        self
    }

    /// Queue at most `count` QoS 1/2 messages per offline or busy client
    /// (`max_queued_messages`; mosquitto's default is 1000, 0 means no limit).
    pub fn max_queued_messages(mut self, count: u32) -> Self {
        self.max_queued_messages = Some(count);
        self
    }

    /// Have at most `count` QoS 1/2 messages in flight to each client
    /// (`max_inflight_messages`; mosquitto's default is 20, 0 means no limit).
    pub fn max_inflight_messages(mut self, count: u32) -> Self {
        self.max_inflight_messages = Some(count);
        self
    }

    /// Keep sessions and queued messages across restarts (`persistence true`),
    /// in the broker's temp dir. mosquitto writes its database on a clean
    /// [`Broker::stop`]; after [`Broker::kill`] only what an autosave wrote
    /// survives (add `autosave_interval` with [`BrokerBuilder::config_line`]).
    pub fn persistence(mut self, on: bool) -> Self {
        self.persistence = on;
        self
    }

    /// Log everything (`log_type all`), including each packet, instead of
    /// errors, warnings, notices, information and subscriptions only.
    pub fn verbose_log(mut self, on: bool) -> Self {
        self.verbose_log = on;
        self
    }

    /// Append a raw line to the config, after the `listener` line, so that
    /// listener options (`cafile`, `certfile`, `keyfile`,
    /// `require_certificate`, ...) apply to the test listener. Files such a
    /// line names (certificates, ...) must exist before the broker starts:
    /// keep them in a temp dir of the test's own and give absolute paths.
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.extra_lines.push(line.into());
        self
    }

    /// Start the broker and wait until it accepts TCP connections.
    ///
    /// # Panics
    ///
    /// If mosquitto is not installed, or does not start listening within
    /// [`BROKER_TIMEOUT`] (the panic message holds its log).
    pub fn start(self) -> Broker {
        let program = mosquitto_program();
        let dir = tempfile::Builder::new()
            .prefix("mqft-broker-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the broker: {e}"));
        let mut broker = Broker { options: self, program, dir, port: 0, child: None };
        for _ in 0..START_ATTEMPTS {
            broker.port = free_port();
            broker.write_config();
            match broker.spawn() {
                Spawn::Ready => return broker,
                // Someone took the port between free_port() and bind: try another.
                Spawn::AddressInUse => continue,
            }
        }
        panic!("mosquitto found no free port in {START_ATTEMPTS} attempts; log:\n{}", broker.log());
    }

    /// The config file's text for a broker on `port` keeping its files in `dir`.
    fn config(&self, port: u16, dir: &Path) -> String {
        let mut config = String::new();
        let mut line = |text: String| {
            config.push_str(&text);
            config.push('\n');
        };
        line("# generated by mqft-tests; one broker per test".into());
        // mosquitto 2 started as root drops privileges to user `mosquitto`,
        // which could not write this temp dir. A non-root run ignores `user`.
        line("user root".into());
        line(format!("log_dest file {}", dir.join(LOG_FILE).display()));
        if self.verbose_log {
            line("log_type all".into());
        } else {
            // `subscribe` logs each subscription once it is in place, which
            // is how tests know a subscriber is ready: see has_subscription.
            for kind in ["error", "warning", "notice", "information", "subscribe"] {
                line(format!("log_type {kind}"));
            }
        }
        if self.persistence {
            line("persistence true".into());
            // The trailing slash matters: mosquitto appends the file name.
            line(format!("persistence_location {}/", dir.display()));
        } else {
            line("persistence false".into());
        }
        if let Some(bytes) = self.max_packet_size {
            line(format!("max_packet_size {bytes}"));
        }
        if let Some(count) = self.max_queued_messages {
            line(format!("max_queued_messages {count}"));
        }
        if let Some(count) = self.max_inflight_messages {
            line(format!("max_inflight_messages {count}"));
        }
        line(format!("listener {port} {HOST}"));
        line("allow_anonymous true".into());
        for extra in &self.extra_lines {
            line(extra.clone());
        }
        config
    }
}

/// A `mosquitto` broker process listening on `127.0.0.1:<port>`.
///
/// Its config, log and persistence files live in a temp dir that is removed
/// when the broker is dropped; dropping it also kills the process.
///
/// ```no_run
/// let broker = mqft_tests::Broker::builder().max_packet_size(128 * 1024).start();
/// println!("connect to {}", broker.url());
/// ```
#[derive(Debug)]
pub struct Broker {
    options: BrokerBuilder,
    program: &'static Path,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

/// The broker's log file name inside [`Broker::dir`].
const LOG_FILE: &str = "mosquitto.log";
/// Where mosquitto's stderr goes: errors from before the log file is open.
const STDERR_FILE: &str = "mosquitto.stderr";
/// The generated config file name inside [`Broker::dir`].
const CONFIG_FILE: &str = "mosquitto.conf";

/// How one attempt to start mosquitto ended, short of a panic.
enum Spawn {
    Ready,
    AddressInUse,
}

impl Broker {
    /// Options for a broker; finish with [`BrokerBuilder::start`].
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Start a broker with the default options.
    ///
    /// # Panics
    ///
    /// As [`BrokerBuilder::start`].
    pub fn start() -> Broker {
        Broker::builder().start()
    }

    /// The TCP port the broker listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host clients connect to: always [`HOST`].
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The listener's socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// The broker URL, `mqtt://127.0.0.1:<port>` (plain TCP: a test that
    /// adds TLS lines builds its own `mqtts://` URL).
    pub fn url(&self) -> String {
        format!("mqtt://{HOST}:{}", self.port)
    }

    /// The broker's temp dir: config, log, stderr and persistence files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated config file's text.
    pub fn config(&self) -> String {
        self.options.config(self.port, self.dir())
    }

    /// Whether the mosquitto process is alive (it may have died on its own).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the broker logged so far, across restarts, followed by
    /// anything it wrote to stderr. Meant for assertion messages.
    pub fn log(&self) -> String {
        let mut log = read_lossy(&self.dir().join(LOG_FILE));
        let stderr = read_lossy(&self.dir().join(STDERR_FILE));
        if !stderr.trim().is_empty() {
            let _ = write!(log, "\n--- mosquitto stderr ---\n{stderr}");
        }
        log
    }

    /// Whether the log shows that client `client_id` has subscribed to
    /// `filter` (mosquitto logs `<id> <qos> <filter>` once the subscription
    /// is in place, before it sends SUBACK). A message published after this
    /// is true reaches that subscriber; poll it with [`wait_until`].
    pub fn has_subscription(&self, client_id: &str, filter: &str) -> bool {
        self.subscribers(filter).iter().any(|id| id == client_id)
    }

    /// The ids of the clients the log shows subscribing to `filter`, in the
    /// order they did (a client that subscribed twice is listed twice), for a
    /// test that does not choose its subscriber's client id. As
    /// [`Broker::has_subscription`], poll it with [`wait_until`].
    pub fn subscribers(&self, filter: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| {
                let mut words = line.split(' ').skip(1); // the timestamp
                let client_id = words.next()?;
                let subscribed = words.next().is_some_and(|qos| qos.parse::<u8>().is_ok())
                    && words.next() == Some(filter)
                    && words.next().is_none();
                subscribed.then(|| client_id.to_owned())
            })
            .collect()
    }

    /// Kill the broker at once with `SIGKILL`, as a crash would: no goodbye to
    /// clients, no persistence save. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means it already exited; wait() reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the broker cleanly with `SIGTERM` and wait for it to exit (it
    /// saves its persistence database first, if persistence is on).
    ///
    /// Returns its exit status, or `None` if it was not running.
    ///
    /// # Panics
    ///
    /// If it has not exited within [`BROKER_TIMEOUT`] (it is then killed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let pid = rustix::process::Pid::from_child(&child);
        // ESRCH means it exited meanwhile; try_wait below picks that up.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let mut status = None;
        let exited = wait_until(BROKER_TIMEOUT, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosquitto did not exit within {BROKER_TIMEOUT:?} of SIGTERM; log:\n{}", self.log());
        }
        status
    }

    /// Start the broker again on the same port, with the same config and
    /// persistence dir, and wait until it accepts connections. A broker that
    /// is still running is first stopped with [`Broker::stop`]; call
    /// [`Broker::kill`] before to restart after a crash instead.
    ///
    /// # Panics
    ///
    /// If the port stays taken, or the broker does not start listening,
    /// within [`BROKER_TIMEOUT`].
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + BROKER_TIMEOUT;
        loop {
            match self.spawn() {
                Spawn::Ready => return,
                // The old process's socket may linger a moment; or another
                // test took the port, and then waiting does not help.
                Spawn::AddressInUse if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Spawn::AddressInUse => {
                    panic!("port {} stayed in use, cannot restart mosquitto; log:\n{}", self.port, self.log())
                }
            }
        }
    }

    /// Write the config file for the current port.
    fn write_config(&self) {
        let path = self.dir().join(CONFIG_FILE);
        fs::write(&path, self.config()).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Run mosquitto on the written config and wait until it is ready: the
    /// process is alive, its log says it is running (so it is this process
    /// that holds the port, not some other test's), and a TCP connect to the
    /// port succeeds.
    fn spawn(&mut self) -> Spawn {
        let log_path = self.dir().join(LOG_FILE);
        // The log is appended to across restarts: only look at the new part.
        let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let stderr_path = self.dir().join(STDERR_FILE);
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", stderr_path.display()));
        let stderr_start = stderr.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(self.program)
            .arg("-c")
            .arg(self.dir().join(CONFIG_FILE))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program.display()));
        let addr = self.addr();
        let child = self.child.insert(child);
        let mut exit = None;
        let ready = wait_until(BROKER_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exit = Some(status);
                return true;
            }
            read_lossy_from(&log_path, log_start).contains(" running")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if let Some(status) = exit {
            self.child = None;
            let new_output = read_lossy_from(&log_path, log_start) + &read_lossy_from(&stderr_path, stderr_start);
            if new_output.contains("Address already in use") {
                return Spawn::AddressInUse;
            }
            panic!("mosquitto exited at start ({status}); config:\n{}\nlog:\n{}", self.config(), self.log());
        }
        if !ready {
            self.kill();
            panic!("mosquitto did not accept connections on {addr} within {BROKER_TIMEOUT:?}; log:\n{}", self.log());
        }
        Spawn::Ready
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // Shown with the failing test's output (the test harness captures it).
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!("--- last {} lines of the log of the broker on port {} ---", tail.len(), self.port);
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// A child process whose stdout and stderr are captured in the background,
/// so that a test can watch its output while it runs and never blocks on a
/// full pipe. Dropping it kills the process.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Start `command` with stdin closed and stdout/stderr captured.
    ///
    /// # Panics
    ///
    /// If it cannot be started.
    pub fn spawn(command: &mut Command) -> Process {
        let name = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        // Both pipes were just set to piped(), so both are present.
        if let Some(pipe) = child.stdout.take() {
            readers.push(capture(pipe, Arc::clone(&stdout)));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(capture(pipe, Arc::clone(&stderr)));
        }
        Process { name, child, stdout, stderr, readers }
    }

    /// Its stdout so far, invalid UTF-8 replaced.
    pub fn stdout(&self) -> String {
        lossy(&self.stdout)
    }

    /// Its process id, for `/proc/<pid>/...`.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr so far, invalid UTF-8 replaced.
    pub fn stderr(&self) -> String {
        lossy(&self.stderr)
    }

    /// Whether it is still running (it has not exited, or has not been reaped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait up to `timeout` for it to exit; `None` if it is still running.
    pub fn wait_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// Wait up to `timeout` for it to exit and return its status and whole
    /// output.
    ///
    /// # Panics
    ///
    /// If it is still running after `timeout` (it is killed first; the
    /// message holds its output so far).
    pub fn finish_within(mut self, timeout: Duration) -> Output {
        let Some(status) = self.wait_within(timeout) else {
            self.kill();
            panic!(
                "{} did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout(),
                self.stderr()
            );
        };
        // The process has exited, so the pipes are at their end and the
        // readers finish.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let take = |buf: &Mutex<Vec<u8>>| std::mem::take(&mut *buf.lock().unwrap_or_else(|e| e.into_inner()));
        Output { status, stdout: take(&self.stdout), stderr: take(&self.stderr) }
    }

    /// Kill it (`SIGKILL`) and reap it; nothing happens if it already exited.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port on `127.0.0.1` that was free a moment ago.
///
/// Another process may take it before the caller binds it; [`Broker`] retries
/// with another port when that happens.
///
/// # Panics
///
/// If the OS gives no port.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((HOST, 0)).unwrap_or_else(|e| panic!("cannot bind {HOST}:0: {e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("no local address for {HOST}:0: {e}")).port()
}

/// A TCP port on `127.0.0.1` that refuses connections for as long as this
/// value lives: a socket is bound to it but never listens, so a connect gets
/// `ECONNREFUSED` at once.
///
/// Unlike a port that [`free_port`] found free a moment ago, no broker of a
/// test running in parallel can take it meanwhile: the socket is bound without
/// `SO_REUSEADDR`, so another `bind` to the port fails.
#[derive(Debug)]
pub struct ClosedPort {
    // Held only to keep the port bound.
    _socket: OwnedFd,
    port: u16,
}

impl ClosedPort {
    /// Bind a fresh port.
    ///
    /// # Panics
    ///
    /// If the OS gives no port.
    pub fn bind() -> ClosedPort {
        use rustix::net::{AddressFamily, SocketType};
        let fail = |what: &str, e: rustix::io::Errno| -> ! { panic!("cannot {what} a closed port on {HOST}: {e}") };
        let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)
            .unwrap_or_else(|e| fail("create a socket for", e));
        rustix::net::bind(&socket, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| fail("bind", e));
        let local = rustix::net::getsockname(&socket).unwrap_or_else(|e| fail("name", e));
        let port = SocketAddrV4::try_from(local).unwrap_or_else(|e| fail("read the address of", e)).port();
        ClosedPort { _socket: socket, port }
    }

    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A tmpfs of a fixed size mounted on a fresh temp dir: a real file system that
/// runs out of space, for tests of a full disk. Writes past its size fail with
/// `ENOSPC`, and `statvfs` reports its free space. It is unmounted (detached, so
/// that files still open do not keep it) when dropped.
///
/// Mounting needs `CAP_SYS_ADMIN`: tests run as root, in CI as here.
#[derive(Debug)]
pub struct TmpfsMount {
    dir: TempDir,
}

impl TmpfsMount {
    /// Mount a tmpfs of `bytes` bytes (rounded up to whole pages by the kernel).
    ///
    /// # Panics
    ///
    /// If it cannot be mounted, saying that the test needs root.
    pub fn new(bytes: u64) -> TmpfsMount {
        use rustix::mount::{mount, MountFlags};
        let dir = tempfile::Builder::new()
            .prefix("mqft-tmpfs-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir to mount a tmpfs on: {e}"));
        let data = std::ffi::CString::new(format!("size={bytes},mode=0755")).expect("no NUL in the mount options");
        mount("tmpfs", dir.path(), "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, Some(data.as_c_str()))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot mount a {bytes}-byte tmpfs on {}: {e}; the disk-full tests need root \
                     (CAP_SYS_ADMIN), as CI runs them",
                    dir.path().display()
                )
            });
        TmpfsMount { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill the free space with the file `name`: write until the file system
    /// says it is full, and return the file's path. Removing the file frees the
    /// space again.
    ///
    /// # Panics
    ///
    /// On any error but `ENOSPC`.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        let mut file = File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let block = vec![0x5a_u8; 64 << 10];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("cannot fill {}: {e}", path.display()),
            }
        }
        path
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // Then the TempDir removes the (empty) directory underneath.
        let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

/// The `mqft` command-line program under test: `$MQFT_BIN` if set, else the
/// `mqft` binary that cargo put next to this test binary's directory (a test
/// runs as `target/<profile>/deps/integration-<hash>`, the CLI is
/// `target/<profile>/mqft`).
///
/// `cargo test` does not build another package's binaries: build it first
/// with `cargo build -p mqft-cli`, which `scripts/test` does. A binary left
/// over from an older build is used as it is.
///
/// # Panics
///
/// If there is no such executable, saying how to build it.
pub fn mqft_bin() -> PathBuf {
    const BUILD_IT: &str = "build it first: cargo build -p mqft-cli (scripts/test does)";
    if let Some(path) = std::env::var_os("MQFT_BIN") {
        let path = PathBuf::from(path);
        assert!(is_executable(&path), "MQFT_BIN={} is not an executable file", path.display());
        return path;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("cannot locate the test executable: {e}"));
    // deps/ -> <profile>/
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| {
        panic!("the test executable {} is not in target/<profile>/deps; set MQFT_BIN", exe.display())
    });
    let path = profile_dir.join(format!("mqft{}", std::env::consts::EXE_SUFFIX));
    if !is_executable(&path) {
        panic!("no mqft binary at {} (or set MQFT_BIN): {BUILD_IT}", path.display());
    }
    path
}

/// An `mqft` command ([`mqft_bin`]) with `args`, shielded from the developer's
/// settings: every `MQFT_*` variable and `RUST_LOG` removed from its environment.
pub fn mqft_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(mqft_bin());
    for (var, _) in std::env::vars_os() {
        if var.to_str().is_some_and(|v| v.starts_with("MQFT_") || v == "RUST_LOG") {
            command.env_remove(var);
        }
    }
    command.args(args);
    command
}

/// `-h 127.0.0.1 -p <port>`: the broker flags of a CLI test.
pub fn broker_flags(port: u16) -> [String; 4] {
    ["-h".into(), HOST.into(), "-p".into(), port.to_string()]
}

/// A finished process's exit status and output as text, for assertion messages.
pub fn show_output(output: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Write `len` deterministic pseudo-random bytes to `dir/name` and return the
/// path.
///
/// The bytes depend only on `seed` (the same seed always gives the same
/// stream, and a shorter file is a prefix of a longer one), so a failing test
/// reproduces exactly. The file is written a block at a time, so any size
/// fits in little memory. Not cryptographic: a SplitMix64 stream.
///
/// # Panics
///
/// On I/O errors.
pub fn random_file(dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    const BLOCK: usize = 1 << 20;
    let path = dir.join(name);
    let mut file = File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let mut rng = SplitMix64(seed);
    let mut block = vec![0u8; BLOCK];
    let mut left = len;
    while left > 0 {
        // Fill whole 8-byte words; the last block may use only part of one.
        for word in block.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        let n = usize::try_from(left).map_or(BLOCK, |left| left.min(BLOCK));
        file.write_all(&block[..n]).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        left -= n as u64;
    }
    file.sync_all().unwrap_or_else(|e| panic!("cannot sync {}: {e}", path.display()));
    path
}

/// Whether two files have the same length and the same bytes, read a block at
/// a time so that any size fits in little memory.
///
/// # Panics
///
/// If either file cannot be read.
pub fn files_equal(a: &Path, b: &Path) -> bool {
    const BLOCK: usize = 1 << 20;
    let open = |path: &Path| File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let len =
        |f: &File, path: &Path| f.metadata().unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display())).len();
    if len(&fa, a) != len(&fb, b) {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let na = read_full(&mut fa, &mut ba).unwrap_or_else(|e| panic!("cannot read {}: {e}", a.display()));
        let nb = read_full(&mut fb, &mut bb).unwrap_or_else(|e| panic!("cannot read {}: {e}", b.display()));
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
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

/// The path of an installed program: `$PATH` first, then the `sbin`
/// directories Debian uses for daemons (`/usr/sbin/mosquitto` is not on a
/// non-root `$PATH`). `None` if it is nowhere.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    path_dirs.into_iter().chain(sbin).map(|dir| dir.join(name)).find(|path| is_executable(path))
}

/// The path of a mosquitto client program (`mosquitto_pub`, `mosquitto_sub`,
/// ...).
///
/// # Panics
///
/// If it is not installed, saying how to install it.
pub fn mosquitto_client(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!(
            "{name} not found: install it with `apt-get update && apt-get install -y mosquitto mosquitto-clients` \
             (or run scripts/test, which does)"
        )
    })
}

/// The `mosquitto` broker program: `$MQFT_MOSQUITTO` if set, else found by
/// [`find_program`]. Looked up once per test binary.
///
/// # Panics
///
/// If it is not installed, saying how to install it.
fn mosquitto_program() -> &'static Path {
    static PROGRAM: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| match std::env::var_os("MQFT_MOSQUITTO") {
            Some(path) => Some(PathBuf::from(path)),
            None => find_program("mosquitto"),
        })
        .as_deref()
        .unwrap_or_else(|| panic!("{MOSQUITTO_MISSING}"))
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A file's text from byte `offset` on, invalid UTF-8 replaced; empty if it
/// cannot be read (a log that does not exist yet is simply empty).
fn read_lossy_from(path: &Path, offset: u64) -> String {
    let Ok(bytes) = fs::read(path) else { return String::new() };
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// A whole file's text, as [`read_lossy_from`] at offset 0.
fn read_lossy(path: &Path) -> String {
    read_lossy_from(path, 0)
}

/// A thread that appends everything `pipe` yields to `sink` until its end.
fn capture(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The pipe is gone: nothing more to capture.
                Err(_) => break,
            }
        }
    })
}

/// A captured output's text so far, invalid UTF-8 replaced.
fn lossy(buf: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Read until `buf` is full or the reader is at its end; return the count.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed forever, unlike
/// a library RNG whose stream may change between versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
