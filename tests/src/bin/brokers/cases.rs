//! The cases of the matrix: each runs the `mqft` CLI as a user would (separate
//! `receive` and `send` processes with `--json`), checks exit codes and that every
//! received file is byte-identical to its original, and bounds every wait, so that
//! a hang is a failure with the processes' output, not a stall.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mqft_tests::{files_equal, random_file, wait_until, Process, HOST};
use serde_json::Value;

use crate::servers::Version;

/// How long a receiver may take to say it is connected.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// What the sender's `--timeout` allows receivers to take to answer.
const SEND_TIMEOUT_SECS: u64 = 30;

/// The goal for a receiver killed mid-transfer: from its restart to the file
/// complete (issue 9).
pub const RESTART_GOAL: Duration = Duration::from_secs(10);

/// How long a restarted receiver is given before the case fails as a hang.
const RESTART_WAIT: Duration = Duration::from_secs(45);

/// One case of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    OneMiB,
    TwentyMiB,
    TwoHundredMiB,
    TwoReceivers,
    LateReceiver,
    SmallFiles,
    PacketLimited,
    Oversize,
    KillRestart,
    Stdin,
}

impl Case {
    pub const ALL: [Case; 10] = [
        Case::OneMiB,
        Case::TwentyMiB,
        Case::TwoHundredMiB,
        Case::TwoReceivers,
        Case::LateReceiver,
        Case::SmallFiles,
        Case::PacketLimited,
        Case::Oversize,
        Case::KillRestart,
        Case::Stdin,
    ];

    /// The name on the command line (`--cases`) and in topic prefixes.
    pub fn id(self) -> &'static str {
        match self {
            Case::OneMiB => "1m",
            Case::TwentyMiB => "20m",
            Case::TwoHundredMiB => "200m",
            Case::TwoReceivers => "two-receivers",
            Case::LateReceiver => "late-receiver",
            Case::SmallFiles => "small-files",
            Case::PacketLimited => "packet-limited",
            Case::Oversize => "oversize",
            Case::KillRestart => "kill-restart",
            Case::Stdin => "stdin",
        }
    }

    /// What the case does, for the report.
    pub fn title(self) -> &'static str {
        match self {
            Case::OneMiB => "1 MiB",
            Case::TwentyMiB => "20 MiB",
            Case::TwoHundredMiB => "200 MiB",
            Case::TwoReceivers => "20 MiB to two receivers (`-n 2`)",
            Case::LateReceiver => "20 MiB, second receiver starts after the first joined",
            Case::SmallFiles => "50 small files (4-200 KiB) in one send",
            Case::PacketLimited => "20 MiB, `--chunk-size auto`, broker limited to 128 KiB",
            Case::Oversize => "(probe) 20 MiB in 256 KiB chunks, broker limited to 128 KiB",
            Case::KillRestart => "200 MiB, receiver killed (SIGKILL) mid-transfer and restarted",
            Case::Stdin => "20 MiB piped into `send - --name`",
        }
    }

    /// Whether the case runs against the packet-limited broker.
    pub fn limited(self) -> bool {
        matches!(self, Case::PacketLimited | Case::Oversize)
    }
}

/// The test files, written once and shared by every case.
pub struct Files {
    pub one: PathBuf,
    pub twenty: PathBuf,
    pub two_hundred: PathBuf,
    pub small: Vec<PathBuf>,
}

impl Files {
    pub fn write(dir: &Path) -> Files {
        let small_dir = dir.join("small");
        // The directory is new: `dir` is the run's own temp dir.
        std::fs::create_dir_all(&small_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", small_dir.display()));
        Files {
            one: random_file(dir, "one.bin", 1 << 20, 1),
            twenty: random_file(dir, "twenty.bin", 20 << 20, 20),
            two_hundred: random_file(dir, "two-hundred.bin", 200 << 20, 200),
            small: (1..=50u64)
                .map(|i| random_file(&small_dir, &format!("img-{i:02}.jpg"), 4096 * i + i, 1000 + i))
                .collect(),
        }
    }
}

/// Where and how one case runs.
pub struct Ctx<'a> {
    pub mqft: &'a Path,
    /// The sender's broker port.
    pub port: u16,
    /// The receivers' broker port: another node of a cluster, or `port`.
    pub rx_port: u16,
    pub version: Version,
    /// A unique topic prefix for the case, so that nothing another case left at the
    /// broker (retained manifests) reaches it. Only `[0-9a-z_-]` and `/`: NATS
    /// rejects `.`.
    pub prefix: String,
    /// A directory of the case's own, for what the receivers write.
    pub work: PathBuf,
    pub files: &'a Files,
}

/// What a passed case measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// From the sender's start to the last process's exit.
    pub secs: f64,
    /// Chunks of the files, and chunk publishes the sender made (repairs
    /// included), from `send --json`'s summary.
    pub chunks: u64,
    pub transmissions: u64,
    /// Chunks the receivers got twice.
    pub duplicates: u64,
    /// The chunk size the sender chose.
    pub chunk_size: Option<u64>,
    /// Kill-restart: from the restart to the file complete.
    pub restart_secs: Option<f64>,
    /// What a probe found, instead of a time.
    pub note: Option<String>,
}

pub type Outcome = Result<Measured, String>;

/// Run `case`.
pub fn run(case: Case, ctx: &Ctx<'_>) -> Outcome {
    std::fs::create_dir_all(&ctx.work).map_err(|e| format!("cannot create {}: {e}", ctx.work.display()))?;
    let outcome = match case {
        Case::OneMiB => single(ctx, &ctx.files.one),
        Case::TwentyMiB | Case::PacketLimited => single(ctx, &ctx.files.twenty),
        Case::TwoHundredMiB => single(ctx, &ctx.files.two_hundred),
        Case::TwoReceivers => two_receivers(ctx, false),
        Case::LateReceiver => two_receivers(ctx, true),
        Case::SmallFiles => small_files(ctx),
        Case::Oversize => oversize(ctx),
        Case::KillRestart => kill_restart(ctx),
        Case::Stdin => piped(ctx, &ctx.files.twenty),
    };
    // The chunk size is news only where the broker's limit chose it.
    let outcome = outcome.map(|m| Measured { chunk_size: m.chunk_size.filter(|_| case.limited()), ..m });
    // The copies are up to 200 MiB each: do not keep them.
    let _ = std::fs::remove_dir_all(&ctx.work);
    outcome
}

/// The bound on a whole transfer of `bytes`: generous, as a debug-profile mqft on
/// a loaded 2-core machine is slow, but a hang still ends.
fn transfer_wait(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (2 << 20))
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `mqft ARGS` against the case's broker, shielded from the developer's `MQFT_*`
/// settings.
fn mqft(ctx: &Ctx<'_>, port: u16, sub: &str) -> Command {
    let mut command = Command::new(ctx.mqft);
    for (var, _) in std::env::vars_os() {
        if var.to_str().is_some_and(|v| v.starts_with("MQFT_") || v == "RUST_LOG") {
            command.env_remove(var);
        }
    }
    command.arg(sub).args([
        "--json",
        "-h",
        HOST,
        "-p",
        &port.to_string(),
        "-V",
        ctx.version.flag(),
        "--prefix",
        &ctx.prefix,
    ]);
    command
}

/// A running `mqft receive` named `name` into `out`, connected to the broker.
fn receiver(ctx: &Ctx<'_>, name: &str, out: &Path, once: bool) -> Result<Process, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut command = mqft(ctx, ctx.rx_port, "receive");
    // A fixed client id, so that a restarted receiver takes its session back.
    let client_id = format!("{}-{name}", ctx.prefix.replace('/', "-"));
    command.arg("--out").arg(out).args(["--name", name, "-i", &client_id]);
    if once {
        command.arg("--once");
    }
    let mut process = Process::spawn(&mut command);
    let connected =
        wait_until(CONNECT_WAIT, || process.stdout().contains(r#""event":"connected""#) || !process.is_running());
    if !connected || !process.is_running() {
        return Err(format!("receiver {name} did not connect within {CONNECT_WAIT:?}\n{}", show(&mut process)));
    }
    Ok(process)
}

/// A running `mqft send` of `files` that waits for `receivers`.
fn sender(ctx: &Ctx<'_>, files: &[PathBuf], receivers: usize) -> Process {
    sender_with(ctx, files, receivers, &[])
}

/// [`sender`] with `extra` flags.
fn sender_with(ctx: &Ctx<'_>, files: &[PathBuf], receivers: usize, extra: &[&str]) -> Process {
    let mut command = mqft(ctx, ctx.port, "send");
    command.args(["--timeout", &SEND_TIMEOUT_SECS.to_string(), "-n", &receivers.to_string()]).args(extra).args(files);
    Process::spawn(&mut command)
}

/// A process's status and output so far, indented, for a failure message.
fn show(process: &mut Process) -> String {
    let status = match process.wait_within(Duration::ZERO) {
        Some(status) => status.to_string(),
        None => "still running".into(),
    };
    let clip = |text: String| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..].iter().map(|l| format!("    {l}\n")).collect::<String>()
    };
    format!("  {status}\n  stdout (end):\n{}  stderr (end):\n{}", clip(process.stdout()), clip(process.stderr()))
}

/// Wait up to `timeout` for `process` to exit with `code`.
fn expect_exit(what: &str, process: &mut Process, timeout: Duration, code: i32) -> Result<(), String> {
    match process.wait_within(timeout) {
        None => {
            let shown = show(process);
            process.kill();
            Err(format!("{what} did not exit within {timeout:?} (killed)\n{shown}"))
        }
        Some(status) if status.code() == Some(code) => Ok(()),
        Some(status) => Err(format!("{what} exited with {status}, not {code}\n{}", show(process))),
    }
}

/// The `--json` events a process printed.
fn events(process: &Process) -> Vec<Value> {
    process.stdout().lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// Fill `m` from the sender's and receivers' JSON summaries.
fn account(m: &mut Measured, sender: &Process, receivers: &[&Process]) {
    for event in events(sender) {
        match event["event"].as_str() {
            // The last one: `auto` may start a file again with smaller chunks.
            Some("started") => m.chunk_size = event["chunk_size"].as_u64(),
            Some("summary") => {
                for file in event["files"].as_array().into_iter().flatten() {
                    m.chunks += file["chunks"].as_u64().unwrap_or(0);
                    m.transmissions += file["transmissions"].as_u64().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    for receiver in receivers {
        for event in events(receiver).iter().filter(|e| e["event"] == "summary") {
            for file in event["files"].as_array().into_iter().flatten() {
                m.duplicates += file["duplicate_chunks"].as_u64().unwrap_or(0);
            }
        }
    }
}

/// Check that `out` holds a byte-identical copy of each of `files`.
fn same_files(files: &[PathBuf], out: &Path) -> Result<(), String> {
    for file in files {
        // Each test file has a name: Files::write made them.
        let copy = out.join(file.file_name().unwrap_or_default());
        if !copy.exists() {
            return Err(format!("{} never arrived", copy.display()));
        }
        if !files_equal(file, &copy) {
            return Err(format!("{} differs from {}", copy.display(), file.display()));
        }
    }
    Ok(())
}

/// One file, one receiver (`--once`).
fn single(ctx: &Ctx<'_>, file: &Path) -> Outcome {
    let out = ctx.work.join("out");
    let mut rx = receiver(ctx, "rx", &out, true)?;
    let started = Instant::now();
    let mut tx = sender(ctx, &[file.to_owned()], 1);
    let wait = transfer_wait(size_of(file));
    expect_exit("mqft send", &mut tx, wait, 0)?;
    expect_exit("mqft receive --once", &mut rx, wait, 0)?;
    let mut m = Measured { secs: started.elapsed().as_secs_f64(), ..Measured::default() };
    same_files(&[file.to_owned()], &out)?;
    account(&mut m, &tx, &[&rx]);
    Ok(m)
}

/// One file through a pipe: `cat FILE | mqft send - --name NAME`, one receiver.
fn piped(ctx: &Ctx<'_>, file: &Path) -> Outcome {
    let out = ctx.work.join("out");
    let mut rx = receiver(ctx, "rx", &out, true)?;
    let started = Instant::now();
    let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut send = mqft(ctx, ctx.port, "send");
    send.args(["--timeout", &SEND_TIMEOUT_SECS.to_string(), "-n", "1", "--name", &name, "-"]);
    // `sh -c 'cat "$0" | "$@"' FILE mqft send ...`: standard input is a pipe, and
    // the exit status is mqft's.
    let mut command = Command::new("sh");
    command.arg("-c").arg("cat \"$0\" | \"$@\"").arg(file).arg(send.get_program()).args(send.get_args());
    for (var, value) in send.get_envs() {
        match value {
            Some(v) => command.env(var, v),
            None => command.env_remove(var),
        };
    }
    let mut tx = Process::spawn(&mut command);
    let wait = transfer_wait(size_of(file));
    expect_exit("cat | mqft send -", &mut tx, wait, 0)?;
    expect_exit("mqft receive --once", &mut rx, wait, 0)?;
    let mut m = Measured { secs: started.elapsed().as_secs_f64(), ..Measured::default() };
    same_files(&[file.to_owned()], &out)?;
    account(&mut m, &tx, &[&rx]);
    Ok(m)
}

/// One 20 MiB send to two receivers (`-n 2`); with `late`, the second receiver
/// starts only once the first one has joined the transfer, so it learns of the
/// file from the retained manifest or the sender's re-publication.
fn two_receivers(ctx: &Ctx<'_>, late: bool) -> Outcome {
    let file = ctx.files.twenty.clone();
    let (out_a, out_b) = (ctx.work.join("a"), ctx.work.join("b"));
    let mut rx_a = receiver(ctx, "rx-a", &out_a, true)?;
    let mut rx_b = if late { None } else { Some(receiver(ctx, "rx-b", &out_b, true)?) };
    let started = Instant::now();
    let mut tx = sender(ctx, std::slice::from_ref(&file), 2);
    if late {
        let joined =
            wait_until(CONNECT_WAIT, || tx.stdout().contains(r#""event":"receiver_joined""#) || !tx.is_running());
        if !joined || !tx.is_running() {
            return Err(format!("the first receiver never joined\n{}", show(&mut tx)));
        }
        rx_b = Some(receiver(ctx, "rx-b", &out_b, true)?);
    }
    // Both branches above set it.
    let Some(mut rx_b) = rx_b else { return Err("no second receiver".into()) };
    let wait = transfer_wait(size_of(&file));
    expect_exit("mqft send -n 2", &mut tx, wait, 0)?;
    expect_exit("receiver a", &mut rx_a, wait, 0)?;
    expect_exit("receiver b", &mut rx_b, wait, 0)?;
    let mut m = Measured { secs: started.elapsed().as_secs_f64(), ..Measured::default() };
    same_files(std::slice::from_ref(&file), &out_a)?;
    same_files(&[file], &out_b)?;
    account(&mut m, &tx, &[&rx_a, &rx_b]);
    Ok(m)
}

/// 50 small files in one send, to one receiver that keeps running; it is stopped
/// with SIGINT (exit 130, "interrupted") once it reported all 50.
fn small_files(ctx: &Ctx<'_>) -> Outcome {
    let files = &ctx.files.small;
    let out = ctx.work.join("out");
    let mut rx = receiver(ctx, "rx", &out, false)?;
    let started = Instant::now();
    let mut tx = sender(ctx, files, 1);
    let wait = transfer_wait(files.iter().map(|f| size_of(f)).sum());
    expect_exit("mqft send (50 files)", &mut tx, wait, 0)?;
    let completed = || rx.stdout().matches(r#""event":"completed""#).count();
    if !wait_until(CONNECT_WAIT, || completed() >= files.len()) {
        return Err(format!("the receiver reported {} of {} files\n{}", completed(), files.len(), show(&mut rx)));
    }
    let secs = started.elapsed().as_secs_f64();
    let pid = rustix::process::Pid::from_raw(rx.id() as i32).ok_or("the receiver has no pid")?;
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    expect_exit("mqft receive after SIGINT", &mut rx, CONNECT_WAIT, 130)?;
    let mut m = Measured { secs, ..Measured::default() };
    same_files(files, &out)?;
    account(&mut m, &tx, &[&rx]);
    Ok(m)
}

/// 200 MiB to one receiver that is killed with SIGKILL once it has part of the
/// file, and restarted at once with the same `--out` and client id (`-i`); the
/// send must still succeed, and the restarted receiver finish within
/// [`RESTART_GOAL`].
fn kill_restart(ctx: &Ctx<'_>) -> Outcome {
    let file = ctx.files.two_hundred.clone();
    let total = size_of(&file);
    let out = ctx.work.join("out");
    let mut rx = receiver(ctx, "rx", &out, true)?;
    let started = Instant::now();
    let mut tx = sender(ctx, std::slice::from_ref(&file), 1);
    let wait = transfer_wait(total);
    // Kill once a progress event shows a part of the file, neither none nor all.
    let partial = |rx: &Process| {
        events(rx).iter().any(|e| e["event"] == "progress" && e["bytes"].as_u64().is_some_and(|b| b > 0 && b < total))
    };
    if !wait_until(wait, || partial(&rx) || !rx.is_running()) || !rx.is_running() {
        return Err(format!("the receiver showed no partial progress to kill it at\n{}", show(&mut rx)));
    }
    rx.kill();
    let restarted = Instant::now();
    let mut rx2 = receiver(ctx, "rx", &out, true)?;
    let rx_result = expect_exit("the restarted receiver", &mut rx2, RESTART_WAIT, 0);
    let restart_secs = restarted.elapsed().as_secs_f64();
    // A sender whose receiver never finished is not waited for long.
    let tx_wait = if rx_result.is_ok() { RESTART_WAIT } else { Duration::from_secs(5) };
    let tx_result = expect_exit("mqft send", &mut tx, tx_wait, 0);
    let mut why = String::new();
    for result in [rx_result, tx_result] {
        if let Err(e) = result {
            let _ = writeln!(why, "{e}");
        }
    }
    if !why.is_empty() {
        return Err(format!("after the restart: {why}"));
    }
    let mut m =
        Measured { secs: started.elapsed().as_secs_f64(), restart_secs: Some(restart_secs), ..Measured::default() };
    same_files(&[file], &out)?;
    account(&mut m, &tx, &[&rx2]);
    if restart_secs > RESTART_GOAL.as_secs_f64() {
        return Err(format!(
            "complete, but {restart_secs:.1} s from the restart, over the {} s goal",
            RESTART_GOAL.as_secs()
        ));
    }
    Ok(m)
}

/// A probe of the broker's limit: 20 MiB in 256 KiB chunks, twice the limit,
/// through the packet-limited broker. Whatever the broker does about it, mqft must
/// end in bounded time: an exit 7 when the broker drops the chunks, an exit 3 when
/// it cuts the connection or stops acknowledging publishes (RabbitMQ closes the
/// channel behind the MQTT connection), or the file delivered when the broker does
/// not enforce its setting. The probe reports which; a hang fails it (issue 9:
/// "Failures end, clearly and in bounded time").
fn oversize(ctx: &Ctx<'_>) -> Outcome {
    let file = ctx.files.twenty.clone();
    let out = ctx.work.join("out");
    let mut rx = receiver(ctx, "rx", &out, true)?;
    let started = Instant::now();
    // A keep-alive of 5 s: a broker that stops acknowledging is given up on
    // after one keep-alive without a PUBACK, and an explicit size after three
    // such breaks right after new chunks went out (a reconnect that only sends
    // the old ones again does not count): four or five keep-alives, then the
    // close's 5 s grace for the abort.
    let keepalive = 5;
    let flags = ["--chunk-size", "256k", "--keepalive", "5"];
    let mut tx = sender_with(ctx, std::slice::from_ref(&file), 1, &flags);
    // The sender's --timeout plus its stall detection's rounds, or six
    // keep-alives plus the reconnections' backoff and the close.
    let bound = Duration::from_secs(SEND_TIMEOUT_SECS.max(6 * keepalive) + 15);
    let Some(status) = tx.wait_within(bound) else {
        let shown = show(&mut tx);
        tx.kill();
        rx.kill();
        return Err(format!("mqft send hangs: still running after {} s\n{shown}", bound.as_secs()));
    };
    let secs = started.elapsed().as_secs_f64();
    let note = match status.code() {
        Some(0) => {
            same_files(&[file], &out)?;
            "delivered: the limit does not apply".to_owned()
        }
        Some(code) => format!("send exit {code} in {secs:.1} s"),
        None => format!("send killed by a signal ({status})"),
    };
    rx.kill();
    Ok(Measured { secs, note: Some(note), ..Measured::default() })
}
