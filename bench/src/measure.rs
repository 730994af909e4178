//! Measuring child processes: wall time, CPU seconds and peak RSS of each one,
//! and the broker's CPU seconds.
//!
//! Every measured program runs under GNU `time` (`/usr/bin/time -f '%e %U %S %M'`),
//! which reads the child's own `rusage` from `wait4`: CPU and peak RSS per process,
//! even while the sender and the receiver run at the same time (a
//! `getrusage(RUSAGE_CHILDREN)` delta could not tell them apart, and the workspace
//! forbids the `unsafe` a raw `wait4` would need). A shell loop's figures include
//! every program it ran and waited for; its peak RSS is the largest of them.
//!
//! Each child gets its own process group, so that a signal reaches the program
//! under `time` (which ignores `SIGINT` itself) and nothing else. A thread per
//! child waits for it and notes the instant it exited, so end-to-end times are not
//! rounded up to a polling interval.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rustix::process::{kill_process_group, Pid, Signal};

/// What `time` reports for one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Seconds of user CPU.
    pub user: f64,
    /// Seconds of system CPU.
    pub sys: f64,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

impl Usage {
    /// User plus system CPU seconds.
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }

    /// Peak RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

/// A program running under `time`, in its own process group.
pub struct Timed {
    name: String,
    pgid: Pid,
    report: PathBuf,
    stderr: PathBuf,
    exited: mpsc::Receiver<(Instant, std::io::Result<ExitStatus>)>,
    done: Option<(Instant, ExitStatus)>,
}

/// How a measured program ended.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// When it exited, as seen by the thread that waited for it.
    pub at: Instant,
    /// Its exit status (that of `time`, which passes the program's on).
    pub status: ExitStatus,
    /// Its CPU and memory.
    pub usage: Usage,
}

impl Timed {
    /// Starts `program args` under `time_bin`. `report` receives `time`'s line,
    /// `stderr` the program's stderr, `stdout` its stdout.
    pub fn spawn(
        time_bin: &Path,
        program: &Path,
        args: &[OsString],
        stdout: Stdio,
        report: PathBuf,
        stderr: PathBuf,
    ) -> Result<Timed> {
        let name = program.file_name().map_or_else(|| program.display().to_string(), |n| n.to_string_lossy().into());
        let err_file = File::create(&stderr).with_context(|| format!("cannot create {}", stderr.display()))?;
        let mut child = Command::new(time_bin)
            .arg("-f")
            .arg("%e %U %S %M")
            .arg("-o")
            .arg(&report)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(err_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot run {} {}", time_bin.display(), program.display()))?;
        let pgid = Pid::from_child(&child);
        let (tx, exited) = mpsc::channel();
        thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send((Instant::now(), status));
        });
        Ok(Timed { name, pgid, report, stderr, exited, done: None })
    }

    /// Waits until it exits, at most until `deadline`; kills its process group
    /// then and fails.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<Finished> {
        match self.try_wait_until(deadline)? {
            Some(f) => Ok(f),
            None => {
                self.kill();
                bail!("{} did not finish in time; its stderr:\n{}", self.name, self.stderr_tail());
            }
        }
    }

    /// Waits until it exits, at most until `deadline`; `None` if it is still
    /// running then (it is left running).
    pub fn try_wait_until(&mut self, deadline: Instant) -> Result<Option<Finished>> {
        if self.done.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.exited.recv_timeout(left) {
                Ok((at, status)) => {
                    let status = status.with_context(|| format!("cannot wait for {}", self.name))?;
                    self.done = Some((at, status));
                }
                Err(_) => return Ok(None),
            }
        }
        let (at, status) = self.done.ok_or_else(|| anyhow!("{} has no exit status", self.name))?;
        Ok(Some(Finished { at, status, usage: self.usage()? }))
    }

    /// Sends `SIGINT` to the program (`time` ignores it).
    pub fn interrupt(&self) {
        let _ = kill_process_group(self.pgid, Signal::INT);
    }

    /// Kills the whole process group and waits (briefly) for the exit.
    pub fn kill(&mut self) {
        if self.done.is_some() {
            return;
        }
        let _ = kill_process_group(self.pgid, Signal::KILL);
        if let Ok((at, Ok(status))) = self.exited.recv_timeout(Duration::from_secs(5)) {
            self.done = Some((at, status));
        }
    }

    /// The last lines of its stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Parses `time`'s report: its last line is `wall user sys maxrss`.
    fn usage(&self) -> Result<Usage> {
        let text = fs::read_to_string(&self.report).with_context(|| format!("no time report for {}", self.name))?;
        let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || anyhow!("cannot parse time's report for {}: {text:?}", self.name);
        if f.len() != 4 {
            return Err(bad());
        }
        Ok(Usage {
            user: f[1].parse().map_err(|_| bad())?,
            sys: f[2].parse().map_err(|_| bad())?,
            max_rss_kib: f[3].parse().map_err(|_| bad())?,
        })
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32, ticks_per_sec: f64) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("no process {pid}"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let ticks = |i: usize| -> Result<f64> {
        fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))
    };
    Ok((ticks(11)? + ticks(12)?) / ticks_per_sec)
}

/// The pid of the process whose command line mentions `needle` (the broker's
/// config file path, which is unique to it).
pub fn find_pid(needle: &str) -> Option<u32> {
    let me = std::process::id();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        text.contains(needle).then_some(pid)
    })
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
