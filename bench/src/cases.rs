//! What is measured, and how one repetition runs.
//!
//! Every repetition starts the receiving program first and waits until the broker
//! log shows its subscription; then the clock starts and the sending program is
//! started. The end-to-end time runs until both programs have exited (the
//! receiver exits once the file is under its final name; mqft's receiver only after
//! the SHA-256 matched). The received file is then compared byte for byte with the
//! original, outside the clock. Each repetition uses its own topic prefix and
//! client ids, so nothing left at the broker by one repetition reaches the next.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use mqft_tests::{files_equal, random_file, wait_until, Broker};

use crate::measure::{self, Timed};
use crate::pump::Version;
use crate::report::{self, CaseResult, Sample};
use crate::RunArgs;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// The constrained broker's `max_packet_size`, as AWS IoT's 128 KB.
pub const SMALL_PACKET: u32 = 131_072;

/// How long a sender may take to exit after its receiver did, before it counts as
/// one that never got the receiver's confirmation.
const SENDER_GRACE: Duration = Duration::from_secs(3);

/// How many 200 KiB images the many-files scenario sends.
const IMAGE_COUNT: usize = 1000;
const IMAGE_SIZE: u64 = 200 * KIB;

/// Which broker a case runs against; one of each is started per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BrokerKind {
    /// Mosquitto's defaults (plus `sys_interval 1`, to read its drop counter).
    Default,
    /// `max_packet_size 131072`.
    Small,
    /// `max_queued_messages 0` (no limit): where a sender without flow control
    /// loses nothing, for baseline B's ceiling on 1 GiB.
    Unlimited,
    /// `set_tcp_nodelay true`: Mosquitto without Nagle's algorithm on its sockets,
    /// as the README recommends. Small request-answer exchanges otherwise wait for
    /// the client's delayed ACK (40 ms on Linux) whenever the broker's previous
    /// packet to that client is unacknowledged; no client can switch that off.
    NoDelay,
}

/// The files a case moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input {
    /// One file of this many bytes.
    One(u64),
    /// [`IMAGE_COUNT`] files of [`IMAGE_SIZE`].
    Images,
    /// One file of this many bytes of log lines, which zstd shrinks (for
    /// `--compress zstd`).
    Text(u64),
}

/// The programs on both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    /// `mqft send` into `mqft receive`.
    Mqft {
        /// MQTT version.
        version: Version,
        /// Chunk QoS.
        qos: u8,
        /// `--chunk-size`, `None` for auto.
        chunk: Option<u32>,
        /// `--window`, `None` for the default.
        window: Option<u32>,
        /// `--encrypt-to` a key the receiver opens with `--identity`.
        encrypt: bool,
        /// `--compress zstd`.
        compress: bool,
        /// Through pipes: `cat FILE | mqft send - --name NAME` into
        /// `mqft receive --once --stdout > OUT/NAME` (one file only).
        stdio: bool,
    },
    /// `mqft send --hold 1h` run to its end with no receiver, then `mqft receive
    /// --once` started after it exited: the file from the broker's retained copies
    /// alone (offline receivers). Timed from the send's start to the receive's end.
    Held,
    /// Baseline A: `mosquitto_pub -f` (one message, QoS 1) into `mosquitto_sub -C 1 -N`.
    Recipe,
    /// `mosquitto_pub -f` per file in a shell loop into `mosquitto_sub -C <n> -N`.
    RecipeLoop,
    /// Baseline B: the bare rumqttc pump.
    Pump {
        /// MQTT version.
        version: Version,
        /// Chunk size.
        chunk: u32,
    },
}

/// Why a case is in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Baseline A of its scenario.
    BaselineA,
    /// Baseline B of its scenario.
    BaselineB,
    /// mqft.
    Subject,
    /// Shown for information.
    Other,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Case {
    /// The scenario it belongs to (`--cases` selects scenarios).
    pub scenario: &'static str,
    /// The row's label.
    pub label: String,
    /// The programs.
    pub tool: Tool,
    /// The broker.
    pub broker: BrokerKind,
    /// The files.
    pub input: Input,
    /// Repetitions.
    pub reps: usize,
    /// Baseline or subject.
    pub role: Role,
}

impl Case {
    /// Bytes moved per repetition.
    pub fn bytes(&self) -> u64 {
        match self.input {
            Input::One(n) | Input::Text(n) => n,
            Input::Images => IMAGE_COUNT as u64 * IMAGE_SIZE,
        }
    }

    /// How long one repetition may take before it counts as failed.
    fn timeout(&self) -> Duration {
        Duration::from_secs(60 + self.bytes() / (8 * MIB))
    }
}

fn mqft(version: Version, qos: u8, chunk: Option<u32>, window: Option<u32>) -> Tool {
    Tool::Mqft { version, qos, chunk, window, encrypt: false, compress: false, stdio: false }
}

/// `mqft send --compress zstd` with the defaults otherwise.
fn mqft_zstd() -> Tool {
    Tool::Mqft { version: Version::V5, qos: 1, chunk: None, window: None, encrypt: false, compress: true, stdio: false }
}

/// The chunk size `--chunk-size auto` picks on the default broker under MQTT 5.
pub const DEFAULT_CHUNK: u32 = 256 << 10;
/// The sender's default window at [`DEFAULT_CHUNK`]: 256 chunks, which is also
/// `mqft::send::DEFAULT_WINDOW_BYTES` (64 MiB) of them.
pub const DEFAULT_WINDOW: u32 = 256;

/// Every case of a run, in order.
pub fn plan(a: &RunArgs) -> Vec<Case> {
    let reps = if a.quick { 1 } else { a.reps.max(1) };
    let reps_1g = if a.quick { 1 } else { a.reps_1g.max(1) };
    let sweep_reps = if a.quick { 1 } else { a.sweep_reps.max(1) };
    let v5 = Version::V5;
    let case = |scenario, label: &str, tool, broker, input, reps, role| Case {
        scenario,
        label: label.to_owned(),
        tool,
        broker,
        input,
        reps,
        role,
    };
    use BrokerKind::{Default as Def, NoDelay, Small};
    use Role::{BaselineA as A, BaselineB as B, Subject as S};
    let m100 = Input::One(100 * MIB);
    let mut cases = vec![
        case("5m", "A: mosquitto_pub -f", Tool::Recipe, Def, Input::One(5 * MIB), reps, A),
        case(
            "5m",
            "B: rumqttc pump 256 KiB",
            Tool::Pump { version: v5, chunk: DEFAULT_CHUNK },
            Def,
            Input::One(5 * MIB),
            reps,
            B,
        ),
        case("5m", "mqft (defaults)", mqft(v5, 1, None, None), Def, Input::One(5 * MIB), reps, S),
        case("100m", "A: mosquitto_pub -f", Tool::Recipe, Def, m100, reps, A),
        case("100m", "B: rumqttc pump 256 KiB", Tool::Pump { version: v5, chunk: DEFAULT_CHUNK }, Def, m100, reps, B),
        case("100m", "mqft (defaults)", mqft(v5, 1, None, None), Def, m100, reps, S),
        case("qos", "mqft QoS 0 chunks", mqft(v5, 0, None, None), Def, m100, reps, S),
        case(
            "encrypted",
            "mqft --encrypt-to (defaults otherwise)",
            Tool::Mqft { version: v5, qos: 1, chunk: None, window: None, encrypt: true, compress: false, stdio: false },
            Def,
            m100,
            reps,
            S,
        ),
        case(
            "v311",
            "B: rumqttc pump 3.1.1 64 KiB",
            Tool::Pump { version: Version::V311, chunk: 64 << 10 },
            Def,
            m100,
            reps,
            B,
        ),
        case("v311", "mqft MQTT 3.1.1 (auto: 64 KiB)", mqft(Version::V311, 1, None, None), Def, m100, reps, S),
        case("v311", "mqft MQTT 3.1.1 256 KiB", mqft(Version::V311, 1, Some(DEFAULT_CHUNK), None), Def, m100, reps, S),
        case(
            "constrained",
            "B: rumqttc pump 127 KiB",
            Tool::Pump { version: v5, chunk: 127 << 10 },
            Small,
            m100,
            reps,
            B,
        ),
        case("constrained", "mqft (auto: fits 128 KiB)", mqft(v5, 1, None, None), Small, m100, reps, S),
        case("images", "A: mosquitto_pub -f loop", Tool::RecipeLoop, Def, Input::Images, reps, A),
        case("images", "mqft send (one invocation)", mqft(v5, 1, None, None), Def, Input::Images, reps, S),
        case("5m-nodelay", "A: mosquitto_pub -f", Tool::Recipe, NoDelay, Input::One(5 * MIB), reps, A),
        case("5m-nodelay", "mqft (defaults)", mqft(v5, 1, None, None), NoDelay, Input::One(5 * MIB), reps, S),
        case("images-nodelay", "A: mosquitto_pub -f loop", Tool::RecipeLoop, NoDelay, Input::Images, reps, A),
        case("images-nodelay", "mqft send (one invocation)", mqft(v5, 1, None, None), NoDelay, Input::Images, reps, S),
        // What --compress zstd costs where it cannot help (random data, sent raw
        // after zstd tried) and what it gives where it can (log lines).
        case("zstd", "mqft (defaults), random", mqft(v5, 1, None, None), Def, m100, reps, S),
        case("zstd", "mqft --compress zstd, random", mqft_zstd(), Def, m100, reps, S),
        case("zstd", "mqft (defaults), log lines", mqft(v5, 1, None, None), Def, Input::Text(100 * MIB), reps, S),
        case("zstd", "mqft --compress zstd, log lines", mqft_zstd(), Def, Input::Text(100 * MIB), reps, S),
        // What the pipes cost: the spool of `send -` (the manifest wants the
        // digest first) and the copy out of `receive --stdout`.
        case("stdio", "mqft (defaults), files", mqft(v5, 1, None, None), Def, m100, reps, S),
        case(
            "stdio",
            "pipes: cat into send -, receive --stdout into a file",
            Tool::Mqft { version: v5, qos: 1, chunk: None, window: None, encrypt: false, compress: false, stdio: true },
            Def,
            m100,
            reps,
            S,
        ),
        // What holding costs: the same 100 MiB left at the broker by a sender that
        // exits, and fetched by a receiver started after it (the live rows above).
        case("hold", "mqft send --hold, then a late receive --once", Tool::Held, Def, m100, reps, S),
    ];
    if !a.quick {
        let g1 = Input::One(1 << 30);
        let pump = Tool::Pump { version: v5, chunk: DEFAULT_CHUNK };
        let label = "rumqttc pump 256 KiB, default broker";
        cases.push(case("1g", label, pump.clone(), Def, g1, 1, Role::Other));
        let label = "B: rumqttc pump 256 KiB, max_queued_messages 0";
        cases.push(case("1g", label, pump, BrokerKind::Unlimited, g1, reps_1g, B));
        cases.push(case("1g", "mqft (defaults)", mqft(v5, 1, None, None), Def, g1, reps_1g, S));
    }
    let chunks: &[u32] = if a.quick {
        &[64 << 10, 256 << 10, 1 << 20]
    } else {
        &[16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20]
    };
    for &c in chunks {
        let label = format!("mqft chunk {}", report::size_label(u64::from(c)));
        cases.push(case("sweep-chunk", &label, mqft(v5, 1, Some(c), None), Def, m100, sweep_reps, S));
        let label = format!("B: pump chunk {}", report::size_label(u64::from(c)));
        cases.push(case("sweep-chunk", &label, Tool::Pump { version: v5, chunk: c }, Def, m100, sweep_reps, B));
    }
    let windows: &[u32] = if a.quick { &[64, 256] } else { &[16, 64, 128, 256, 512, 900] };
    for &w in windows {
        let label = format!("mqft window {w}");
        cases.push(case("sweep-window", &label, mqft(v5, 1, None, Some(w)), Def, m100, sweep_reps, S));
    }
    if !a.cases.is_empty() {
        cases.retain(|c| a.cases.iter().any(|s| s == c.scenario));
    }
    cases
}

/// A broker of the run, and its pid for CPU readings.
struct RunningBroker {
    broker: Broker,
    pid: u32,
    dropped: DropWatch,
}

/// Everything a repetition needs.
struct Env {
    time_bin: PathBuf,
    mqft: PathBuf,
    me: PathBuf,
    mosquitto_pub: PathBuf,
    mosquitto_sub: PathBuf,
    work: PathBuf,
    ticks: f64,
    brokers: BTreeMap<BrokerKind, RunningBroker>,
    inputs: BTreeMap<Input, Vec<PathBuf>>,
    /// Counts repetitions, for unique prefixes and client ids.
    serial: u32,
    /// Extra config lines for every broker.
    broker_config: Vec<String>,
}

/// Runs the benchmark: every case, then the report.
pub fn run(a: RunArgs) -> Result<()> {
    let started = Instant::now();
    let cases = plan(&a);
    ensure!(!cases.is_empty(), "no case matches --cases {:?}", a.cases);
    let time_bin = PathBuf::from("/usr/bin/time");
    ensure!(time_bin.exists(), "/usr/bin/time (GNU time) is missing: apt-get install -y time");
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let mqft_src = match &a.mqft {
        Some(p) => p.clone(),
        None => me.with_file_name("mqft"),
    };
    ensure!(
        mqft_src.exists(),
        "{} is missing: build it with `cargo build --release -p mqft-cli -p mqft-bench`",
        mqft_src.display()
    );
    let (work, _tmp) = match &a.work {
        Some(w) => {
            fs::create_dir_all(w)?;
            (w.clone(), None)
        }
        None => {
            let t = tempfile_dir()?;
            (t.clone(), Some(t))
        }
    };
    // A copy of the binaries, so that a rebuild during the run changes nothing.
    let bin = work.join("bin");
    fs::create_dir_all(&bin)?;
    let mqft = bin.join("mqft");
    fs::copy(&mqft_src, &mqft).with_context(|| format!("cannot copy {}", mqft_src.display()))?;
    let me_copy = bin.join("mqft-bench");
    fs::copy(&me, &me_copy)?;
    let mut env = Env {
        time_bin,
        mqft,
        me: me_copy,
        mosquitto_pub: mqft_tests::mosquitto_client("mosquitto_pub"),
        mosquitto_sub: mqft_tests::mosquitto_client("mosquitto_sub"),
        work: work.clone(),
        ticks: measure::clock_ticks(),
        brokers: BTreeMap::new(),
        inputs: BTreeMap::new(),
        serial: 0,
        broker_config: a.broker_config.clone(),
    };
    let load_before = report::load_average();
    let mut results = Vec::new();
    for case in &cases {
        eprintln!("== {} / {} ({} reps)", case.scenario, case.label, case.reps);
        let r = env.run_case(case);
        results.push(r);
    }
    let mut info = report::MachineInfo::collect(&mqft_src);
    info.add("load average (1, 5, 15 min) before / after", format!("{load_before} / {}", report::load_average()));
    if !a.broker_config.is_empty() {
        info.add("extra broker config (not Mosquitto's defaults)", a.broker_config.join("; "));
    }
    let text = report::render(&results, &info, &a, started.elapsed());
    println!("{text}");
    if let Some(out) = &a.out {
        report::write_out(out, &text, &results)?;
    }
    if a.keep || a.work.is_some() {
        eprintln!("work directory kept: {}", work.display());
    } else {
        let _ = fs::remove_dir_all(&work);
    }
    Ok(())
}

/// A fresh directory under the system's temp dir.
fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let dir = base.join(format!("mqft-bench-{}-{i}", std::process::id()));
        if fs::create_dir(&dir).is_ok() {
            return Ok(dir);
        }
    }
    bail!("cannot create a work directory under {}", base.display())
}

impl Env {
    fn run_case(&mut self, case: &Case) -> CaseResult {
        let mut result = CaseResult { case: case.clone(), samples: Vec::new(), error: None, dropped: None };
        let dropped_before = match self.broker(case.broker) {
            Ok(_) => self.brokers[&case.broker].dropped.get(),
            Err(e) => {
                result.error = Some(format!("{e:#}"));
                return result;
            }
        };
        for rep in 0..case.reps {
            match self.run_rep(case) {
                Ok(s) => {
                    eprintln!(
                        "   rep {rep}: {:.3} s, {:.1} MiB/s, cpu s/r/b {:.2}/{:.2}/{:.2}, rss s/r {:.1}/{:.1} MiB",
                        s.e2e,
                        case.bytes() as f64 / MIB as f64 / s.e2e,
                        s.sender.cpu(),
                        s.receiver.cpu(),
                        s.broker_cpu,
                        s.sender.rss_mib(),
                        s.receiver.rss_mib()
                    );
                    result.samples.push(s);
                }
                Err(e) => {
                    eprintln!("   rep {rep}: FAILED: {e:#}");
                    result.error = Some(first_line(&format!("{e:#}")));
                    break;
                }
            }
        }
        // The broker publishes its counters every second.
        std::thread::sleep(Duration::from_millis(1100));
        if let (Some(before), Some(after)) = (dropped_before, self.brokers[&case.broker].dropped.get()) {
            result.dropped = Some(after.saturating_sub(before));
        }
        result
    }

    /// The port of the broker of `kind`, started on first use.
    fn broker(&mut self, kind: BrokerKind) -> Result<u16> {
        if let Some(b) = self.brokers.get(&kind) {
            return Ok(b.broker.port());
        }
        let mut builder = Broker::builder().config_line("sys_interval 1");
        for line in &self.broker_config {
            builder = builder.config_line(line.clone());
        }
        match kind {
            BrokerKind::Default => {}
            BrokerKind::Small => builder = builder.max_packet_size(SMALL_PACKET),
            BrokerKind::Unlimited => builder = builder.max_queued_messages(0),
            BrokerKind::NoDelay => builder = builder.config_line("set_tcp_nodelay true"),
        }
        let broker = builder.start();
        let conf = broker.dir().join("mosquitto.conf");
        let pid = measure::find_pid(&conf.to_string_lossy()).ok_or_else(|| anyhow!("cannot find the broker's pid"))?;
        let port = broker.port();
        let dropped = DropWatch::start(&self.mosquitto_sub, port)?;
        self.brokers.insert(kind, RunningBroker { broker, pid, dropped });
        Ok(port)
    }

    /// The files of `input`, written on first use.
    fn input(&mut self, input: Input) -> Result<Vec<PathBuf>> {
        if let Some(f) = self.inputs.get(&input) {
            return Ok(f.clone());
        }
        let dir = self.work.join("in");
        fs::create_dir_all(&dir)?;
        eprintln!("   writing test input {input:?}");
        let files = match input {
            Input::One(n) => {
                vec![random_file(&dir, &format!("file-{}.bin", report::size_label(n).replace(' ', "")), n, n)]
            }
            Input::Text(n) => vec![log_file(&dir, n)?],
            Input::Images => {
                let d = dir.join("images");
                fs::create_dir_all(&d)?;
                (0..IMAGE_COUNT).map(|i| random_file(&d, &format!("img_{i:04}.jpg"), IMAGE_SIZE, i as u64)).collect()
            }
        };
        self.inputs.insert(input, files.clone());
        Ok(files)
    }

    fn run_rep(&mut self, case: &Case) -> Result<Sample> {
        let port = self.broker(case.broker)?;
        let files = self.input(case.input)?;
        self.serial += 1;
        let n = self.serial;
        let dir = self.work.join(format!("run-{n:04}"));
        let out = dir.join("out");
        fs::create_dir_all(&out)?;
        let prefix = format!("bench/r{n}");
        let deadline = |t0: Instant| t0 + case.timeout();
        let timed = |name: &str, program: &Path, args: Vec<OsString>, stdout: Stdio| {
            Timed::spawn(
                &self.time_bin,
                program,
                &args,
                stdout,
                dir.join(format!("{name}.time")),
                dir.join(format!("{name}.stderr")),
            )
        };
        let rb = &self.brokers[&case.broker];
        let (broker, broker_pid) = (&rb.broker, rb.pid);
        let host_args = |v: Version| -> Vec<OsString> {
            let v = match v {
                Version::V5 => "5",
                Version::V311 => "311",
            };
            ["-h", "127.0.0.1", "-p", &port.to_string(), "--prefix", &prefix, "-V", v].map(OsString::from).to_vec()
        };
        let wait_subscribed = |id: &str, filter: &str| -> Result<()> {
            ensure!(
                wait_until(Duration::from_secs(10), || broker.has_subscription(id, filter)),
                "{id} did not subscribe to {filter}"
            );
            Ok(())
        };

        let sample = match &case.tool {
            Tool::Mqft { version, qos, chunk, window, encrypt, compress, stdio } => {
                let rx_id = format!("bench-rx-{n}");
                // A key pair for the encrypted case, made before the clock starts.
                let key = dir.join("identity");
                if *encrypt {
                    let made = std::process::Command::new(&self.mqft)
                        .args(["keygen", "--name", "bench", "--out"])
                        .arg(&key)
                        .stdout(Stdio::null())
                        .status()?;
                    ensure!(made.success(), "mqft keygen failed");
                }
                let many = case.input == Input::Images;
                let name = files[0].file_name().ok_or_else(|| anyhow!("no file name"))?.to_owned();
                let mut rx_args: Vec<OsString> = if *stdio {
                    let state = dir.join("state").into();
                    vec!["receive".into(), "--stdout".into(), "--state-dir".into(), state]
                } else {
                    vec!["receive".into(), "--out".into(), out.clone().into()]
                };
                if !many {
                    rx_args.push("--once".into());
                }
                rx_args.extend(host_args(*version));
                rx_args.extend(["-i".into(), rx_id.clone().into(), "--quiet".into()]);
                if *encrypt {
                    rx_args.extend(["--identity".into(), key.clone().into()]);
                }
                let rx_out = if *stdio { Stdio::from(File::create(out.join(&name))?) } else { Stdio::null() };
                let mut rx = timed("receiver", &self.mqft, rx_args, rx_out)?;
                wait_subscribed(&rx_id, &format!("{prefix}/+/manifest"))?;
                wait_subscribed(&rx_id, &format!("{prefix}/+/ctl"))?;
                let mut tx_args: Vec<OsString> = vec!["send".into()];
                if *stdio {
                    tx_args.extend(["-".into(), "--name".into(), name.clone()]);
                } else {
                    tx_args.extend(files.iter().map(|f| f.clone().into_os_string()));
                }
                tx_args.extend(host_args(*version));
                tx_args.extend([
                    "-q".into(),
                    qos.to_string().into(),
                    "--quiet".into(),
                    "--concurrency".into(),
                    "4".into(),
                ]);
                if let Some(c) = chunk {
                    tx_args.extend(["--chunk-size".into(), c.to_string().into()]);
                }
                if let Some(w) = window {
                    tx_args.extend(["--window".into(), w.to_string().into()]);
                }
                if *encrypt {
                    tx_args.extend(["--encrypt-to".into(), dir.join("identity.pub").into()]);
                }
                if *compress {
                    tx_args.extend(["--compress".into(), "zstd".into()]);
                }
                let cpu0 = measure::process_cpu(broker_pid, self.ticks)?;
                let t0 = Instant::now();
                let first = FirstData::watch(&out, t0);
                let mut tx = if *stdio {
                    // `sh -c 'cat "$0" | "$@"' FILE mqft send - ...`: standard input is
                    // a pipe; GNU time's peak RSS is the largest of sh's children.
                    let mut args: Vec<OsString> = vec!["-c".into(), "cat \"$0\" | \"$@\"".into()];
                    args.extend([files[0].clone().into_os_string(), self.mqft.clone().into_os_string()]);
                    args.extend(tx_args);
                    timed("sender", Path::new("/bin/sh"), args, Stdio::null())?
                } else {
                    timed("sender", &self.mqft, tx_args, Stdio::null())?
                };
                let mut unconfirmed = false;
                let (end, s) = if many {
                    // Every file was confirmed (after its rename) when the sender
                    // exits; the receiver runs until told to stop.
                    let s = tx.wait_until(deadline(t0))?;
                    ensure!(s.status.success(), "mqft send failed ({}): {}", s.status, tx.stderr_tail());
                    rx.interrupt();
                    rx.wait_until(Instant::now() + Duration::from_secs(20))?;
                    (s.at, s)
                } else {
                    // `receive --once` exits once the file is verified and under its
                    // final name. A sender that has not exited soon after never got
                    // the receiver's Complete (see docs/PERFORMANCE.md): the file
                    // arrived, so the time counts, but the repetition is marked.
                    let r = rx.wait_until(deadline(t0))?;
                    ensure!(r.status.success(), "mqft receive failed ({}): {}", r.status, rx.stderr_tail());
                    let s = match tx.try_wait_until(r.at.max(Instant::now()) + SENDER_GRACE)? {
                        Some(s) => s,
                        None => {
                            unconfirmed = true;
                            tx.interrupt();
                            tx.wait_until(Instant::now() + Duration::from_secs(10))?
                        }
                    };
                    ensure!(unconfirmed || s.status.success(), "mqft send failed ({}): {}", s.status, tx.stderr_tail());
                    let end = if unconfirmed { r.at } else { r.at.max(s.at) };
                    (end, s)
                };
                let cpu1 = measure::process_cpu(broker_pid, self.ticks)?;
                let r = rx.wait_until(Instant::now())?;
                for f in &files {
                    let name = f.file_name().ok_or_else(|| anyhow!("no file name"))?;
                    let got = out.join(name);
                    ensure!(got.exists() && files_equal(f, &got), "{} did not arrive intact", got.display());
                }
                Sample {
                    e2e: (end - t0).as_secs_f64(),
                    sender: s.usage,
                    receiver: r.usage,
                    broker_cpu: cpu1 - cpu0,
                    unconfirmed,
                    first_data: first.stop(),
                }
            }
            Tool::Held => {
                let mut tx_args: Vec<OsString> = vec!["send".into(), "--hold".into(), "1h".into()];
                tx_args.extend(files.iter().map(|f| f.clone().into_os_string()));
                tx_args.extend(host_args(Version::V5));
                tx_args.push("--quiet".into());
                let cpu0 = measure::process_cpu(broker_pid, self.ticks)?;
                let t0 = Instant::now();
                let mut tx = timed("sender", &self.mqft, tx_args, Stdio::null())?;
                let s = tx.wait_until(deadline(t0))?;
                ensure!(s.status.success(), "mqft send --hold failed ({}): {}", s.status, tx.stderr_tail());
                let mut rx_args: Vec<OsString> = vec!["receive".into(), "--out".into(), out.clone().into()];
                rx_args.push("--once".into());
                rx_args.extend(host_args(Version::V5));
                rx_args.extend(["-i".into(), format!("bench-rx-{n}").into(), "--quiet".into()]);
                let mut rx = timed("receiver", &self.mqft, rx_args, Stdio::null())?;
                let r = rx.wait_until(deadline(t0))?;
                ensure!(r.status.success(), "mqft receive failed ({}): {}", r.status, rx.stderr_tail());
                let cpu1 = measure::process_cpu(broker_pid, self.ticks)?;
                for f in &files {
                    let name = f.file_name().ok_or_else(|| anyhow!("no file name"))?;
                    let got = out.join(name);
                    ensure!(got.exists() && files_equal(f, &got), "{} did not arrive intact", got.display());
                }
                Sample {
                    e2e: (r.at - t0).as_secs_f64(),
                    sender: s.usage,
                    receiver: r.usage,
                    broker_cpu: cpu1 - cpu0,
                    unconfirmed: false,
                    first_data: None,
                }
            }
            Tool::Recipe | Tool::RecipeLoop => {
                let sub_id = format!("bench-sub-{n}");
                let topic = format!("{prefix}/file");
                let got = out.join("received");
                let count = files.len();
                let sub_args: Vec<OsString> = [
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-q",
                    "1",
                    "-t",
                    &topic,
                    "-C",
                    &count.to_string(),
                    "-N",
                    "-i",
                    &sub_id,
                ]
                .map(OsString::from)
                .to_vec();
                let sink = File::create(&got)?;
                let mosquitto_sub = self.mosquitto_sub.clone();
                let mut sub = timed("receiver", &mosquitto_sub, sub_args, Stdio::from(sink))?;
                wait_subscribed(&sub_id, &topic)?;
                let pub_common = ["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", &topic];
                let cpu0 = measure::process_cpu(broker_pid, self.ticks)?;
                let t0 = Instant::now();
                let mut publisher = if case.tool == Tool::Recipe {
                    let mut args: Vec<OsString> = pub_common.map(OsString::from).to_vec();
                    args.extend(["-f".into(), files[0].clone().into_os_string()]);
                    timed("sender", &self.mosquitto_pub.clone(), args, Stdio::null())?
                } else {
                    let script = format!(
                        "for f; do {} {} -f \"$f\" || exit 1; done",
                        self.mosquitto_pub.display(),
                        pub_common.join(" ")
                    );
                    let mut args: Vec<OsString> = vec!["-c".into(), script.into(), "sh".into()];
                    args.extend(files.iter().map(|f| f.clone().into_os_string()));
                    timed("sender", Path::new("/bin/sh"), args, Stdio::null())?
                };
                let s = publisher.wait_until(deadline(t0))?;
                ensure!(s.status.success(), "mosquitto_pub failed ({}): {}", s.status, publisher.stderr_tail());
                let r = sub.wait_until(deadline(t0))?;
                ensure!(r.status.success(), "mosquitto_sub failed ({}): {}", r.status, sub.stderr_tail());
                let cpu1 = measure::process_cpu(broker_pid, self.ticks)?;
                ensure!(concat_equal(&files, &got)?, "what mosquitto_sub wrote differs from what was sent");
                Sample {
                    e2e: (r.at.max(s.at) - t0).as_secs_f64(),
                    sender: s.usage,
                    receiver: r.usage,
                    broker_cpu: cpu1 - cpu0,
                    unconfirmed: false,
                    first_data: None,
                }
            }
            Tool::Pump { version, chunk } => {
                let sub_id = format!("bench-pump-{n}");
                let got = out.join("received");
                let v = match version {
                    Version::V5 => "5",
                    Version::V311 => "311",
                };
                let secs = case.timeout().as_secs().to_string();
                let common = |extra: &[&str]| -> Vec<OsString> {
                    let mut v: Vec<OsString> = [
                        "--port",
                        &port.to_string(),
                        "--prefix",
                        &prefix,
                        "--chunk",
                        &chunk.to_string(),
                        "-V",
                        v,
                        "--timeout",
                        &secs,
                    ]
                    .map(OsString::from)
                    .to_vec();
                    v.extend(extra.iter().map(OsString::from));
                    v
                };
                let mut sub_args = vec![OsString::from("pump-sub")];
                sub_args.extend(common(&["--id", &sub_id, "--size", &case.bytes().to_string()]));
                sub_args.extend(["--out".into(), got.clone().into_os_string()]);
                let me = self.me.clone();
                let mut sub = timed("receiver", &me, sub_args, Stdio::null())?;
                wait_subscribed(&sub_id, &format!("{prefix}/#"))?;
                let mut pub_args = vec![OsString::from("pump-pub")];
                pub_args.extend(common(&[]));
                pub_args.extend(["--file".into(), files[0].clone().into_os_string()]);
                let cpu0 = measure::process_cpu(broker_pid, self.ticks)?;
                let t0 = Instant::now();
                let mut publisher = timed("sender", &me, pub_args, Stdio::null())?;
                let s = publisher.wait_until(deadline(t0))?;
                ensure!(s.status.success(), "pump-pub failed ({}): {}", s.status, publisher.stderr_tail());
                let r = sub.wait_until(deadline(t0))?;
                ensure!(r.status.success(), "pump-sub failed ({}): {}", r.status, sub.stderr_tail());
                let cpu1 = measure::process_cpu(broker_pid, self.ticks)?;
                ensure!(files_equal(&files[0], &got), "the pump's copy differs");
                Sample {
                    e2e: (r.at.max(s.at) - t0).as_secs_f64(),
                    sender: s.usage,
                    receiver: r.usage,
                    broker_cpu: cpu1 - cpu0,
                    unconfirmed: false,
                    first_data: None,
                }
            }
        };
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        Ok(sample)
    }
}

/// Whether `got` is the concatenation of `files`, in order.
/// `n` bytes of log lines, varied enough that zstd keeps to a fifth or so of them.
fn log_file(dir: &Path, n: u64) -> Result<PathBuf> {
    use std::fmt::Write as _;
    let path = dir.join(format!("log-{}.txt", report::size_label(n).replace(' ', "")));
    let mut text = String::with_capacity(n as usize + 128);
    let mut x = n | 1;
    let mut i = 0u64;
    while (text.len() as u64) < n {
        // xorshift: readings that change from line to line.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
        let level = ["INFO", "WARN", "DEBUG", "INFO"][(x % 4) as usize];
        let _ = writeln!(
            text,
            "2026-12-07T{:02}:{:02}:{:02}.{:03}Z {level} gw-7 sensor={} t={}.{}C rh={}% seq={i}",
            i / 3_600_000 % 24,
            i / 60_000 % 60,
            i / 1000 % 60,
            i % 1000,
            x % 16,
            15 + x % 20,
            x % 10,
            30 + x % 60
        );
    }
    text.truncate(n as usize);
    fs::write(&path, text)?;
    Ok(path)
}

fn concat_equal(files: &[PathBuf], got: &Path) -> Result<bool> {
    let total: u64 = files.iter().map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    if fs::metadata(got)?.len() != total {
        return Ok(false);
    }
    let mut g = File::open(got)?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for f in files {
        a.clear();
        File::open(f)?.read_to_end(&mut a)?;
        b.resize(a.len(), 0);
        g.read_exact(&mut b)?;
        if a != b {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Follows the broker's `$SYS/broker/publish/messages/dropped` (publishes it
/// dropped because a client's queue was full) with a `mosquitto_sub` that runs as
/// long as the broker. (Asking for the retained value before and after each case
/// proved unreliable: after some cases Mosquitto 2.0.11 no longer hands it out.)
/// Time from the sender's start to the first file bytes on the receiver's disk:
/// the first allocated block of a partial file under `<out>/.mqft/part` (they
/// are created sparse at their full size), or a file under its final name in
/// `<out>`, polled every millisecond by a thread of its own.
struct FirstData {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<f64>>,
}

impl FirstData {
    fn watch(out: &Path, t0: Instant) -> FirstData {
        use std::os::unix::fs::MetadataExt as _;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (out, flag) = (out.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            let part = out.join(".mqft").join("part");
            let any = |dir: &Path, ok: &dyn Fn(&fs::Metadata) -> bool| {
                fs::read_dir(dir).is_ok_and(|d| d.flatten().any(|e| e.metadata().is_ok_and(|m| ok(&m))))
            };
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if any(&part, &|m| m.is_file() && m.blocks() > 0) || any(&out, &|m| m.is_file()) {
                    return Some(t0.elapsed().as_secs_f64());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        });
        FirstData { stop, thread }
    }

    fn stop(self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

struct DropWatch {
    child: std::process::Child,
    latest: std::sync::Arc<std::sync::Mutex<Option<u64>>>,
}

impl DropWatch {
    fn start(mosquitto_sub: &Path, port: u16) -> Result<DropWatch> {
        let mut child = Command::new(mosquitto_sub)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "$SYS/broker/publish/messages/dropped"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run mosquitto_sub for the broker's drop counter")?;
        let latest = std::sync::Arc::new(std::sync::Mutex::new(None));
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let sink = latest.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(n) = line.trim().parse::<u64>() {
                    *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
                }
            }
        });
        let watch = DropWatch { child, latest };
        // The retained value arrives at once; give it a moment.
        wait_until(Duration::from_secs(5), || watch.get().is_some());
        Ok(watch)
    }

    /// The counter's latest value, if one arrived.
    fn get(&self) -> Option<u64> {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn first_line(s: &str) -> String {
    s.lines().take(3).collect::<Vec<_>>().join(" / ")
}
