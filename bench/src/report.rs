//! Turning samples into the report: medians and spreads, ratios against the
//! baselines of the same run, the targets, a Markdown table and an SVG plot.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cases::{Case, Role, Tool, DEFAULT_CHUNK, DEFAULT_WINDOW};
use crate::measure::Usage;
use crate::RunArgs;

/// Where the results go in `PERFORMANCE.md`.
const BEGIN: &str = "<!-- mqft-bench results: begin (generated; do not edit by hand) -->";
const END: &str = "<!-- mqft-bench results: end -->";
/// The plot's file name, next to `PERFORMANCE.md`.
pub const PLOT: &str = "perf-sweep.svg";
/// The peak RSS target for mqft's sender and receiver.
const RSS_TARGET_MIB: f64 = 48.0;
/// A default counts as the best when it is within this fraction of the best
/// point's throughput: differences this small are within run-to-run noise here.
const BEST_TOLERANCE: f64 = 0.05;

/// One repetition.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds from the sender's start to the last of both programs' exits.
    pub e2e: f64,
    /// The sending program.
    pub sender: Usage,
    /// The receiving program.
    pub receiver: Usage,
    /// CPU seconds the broker spent meanwhile.
    pub broker_cpu: f64,
    /// The file arrived verified, but the sender never learnt it (it was
    /// interrupted); the time runs to the receiver's exit.
    pub unconfirmed: bool,
    /// Seconds from the sender's start to the first file bytes on the
    /// receiver's disk (mqft cases).
    pub first_data: Option<f64>,
}

/// All repetitions of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case.
    pub case: Case,
    /// Its successful repetitions.
    pub samples: Vec<Sample>,
    /// The first failure, which ended the case.
    pub error: Option<String>,
    /// Publishes the broker dropped during the case.
    pub dropped: Option<u64>,
}

impl CaseResult {
    fn ok(&self) -> bool {
        self.error.is_none() && !self.samples.is_empty()
    }

    fn e2e(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.e2e).collect()
    }

    /// Median seconds to the receiver's first file bytes, when measured.
    fn first_data(&self) -> Option<f64> {
        let t: Vec<f64> = self.samples.iter().filter_map(|s| s.first_data).collect();
        (!t.is_empty()).then(|| median(&t))
    }

    /// Median end-to-end seconds.
    fn median(&self) -> f64 {
        median(&self.e2e())
    }

    /// MiB/s at the median time.
    fn tput(&self) -> f64 {
        mib(self.case.bytes()) / self.median()
    }

    /// MiB/s at the slowest and fastest repetition.
    fn tput_range(&self) -> (f64, f64) {
        let e = self.e2e();
        let (lo, hi) = (e.iter().copied().fold(f64::MAX, f64::min), e.iter().copied().fold(0.0, f64::max));
        (mib(self.case.bytes()) / hi, mib(self.case.bytes()) / lo)
    }

    fn med_of(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&self.samples.iter().map(f).collect::<Vec<_>>())
    }

    fn max_of(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        self.samples.iter().map(f).fold(0.0, f64::max)
    }

    fn is_mqft(&self) -> bool {
        matches!(self.case.tool, Tool::Mqft { .. } | Tool::Held)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// The median (the mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// `5 MiB`, `200 KiB`, `1 GiB`, or bytes.
pub fn size_label(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// The machine and versions, for the report.
pub struct MachineInfo {
    lines: Vec<(String, String)>,
}

impl MachineInfo {
    /// Reads what it can; a missing piece reads "unknown".
    pub fn collect(mqft: &Path) -> Self {
        let run = |cmd: &str, args: &[&str]| -> String {
            Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .map(|o| {
                    let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                    String::from_utf8_lossy(&text)
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".into())
        };
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_else(|_| "?".into());
        let mem = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0))
            })
            .map(|kib| format!("{:.1} GiB", kib as f64 / (1u64 << 20) as f64))
            .unwrap_or_else(|| "unknown".into());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
        let mosquitto = mqft_tests::find_program("mosquitto")
            .map(|p| run(&p.to_string_lossy(), &["-h"]))
            .unwrap_or_else(|| "not found".into());
        let commit = run("git", &["describe", "--always", "--dirty", "--abbrev=12"]);
        let mqft_version = run(&mqft.to_string_lossy(), &["--version"]);
        MachineInfo {
            lines: vec![
                ("date (UTC)".into(), run("date", &["-u", "+%Y-%m-%d %H:%M"])),
                ("CPU".into(), format!("{cpu}, {cores} cores")),
                ("memory".into(), mem),
                ("kernel".into(), kernel),
                ("broker".into(), mosquitto),
                ("rustc".into(), run("rustc", &["--version"])),
                ("mqft".into(), format!("{mqft_version}, commit {commit}")),
            ],
        }
    }
}

impl MachineInfo {
    /// Adds a line.
    pub fn add(&mut self, key: &str, value: String) {
        self.lines.push((key.to_owned(), value));
    }
}

/// `/proc/loadavg`'s first three numbers: other work on the machine skews the
/// results, and this shows how much there was.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The baseline rows a case is compared with: its scenario's own, else those of
/// the 100 MiB scenario (the sweeps, QoS and 3.1.1 cases all move 100 MiB).
fn baselines<'a>(all: &'a [CaseResult], c: &CaseResult) -> (Option<&'a CaseResult>, Option<&'a CaseResult>) {
    let find =
        |scenario: &str, role: Role| all.iter().find(|r| r.case.scenario == scenario && r.case.role == role && r.ok());
    let a = find(c.case.scenario, Role::BaselineA).or_else(|| {
        matches!(c.case.scenario, "qos" | "encrypted" | "v311" | "sweep-chunk" | "sweep-window")
            .then(|| find("100m", Role::BaselineA))
            .flatten()
    });
    let b = match (c.case.scenario, &c.case.tool) {
        // In the sweep, each mqft point against the pump at the same chunk size.
        ("sweep-chunk", Tool::Mqft { chunk: Some(size), .. }) => all.iter().find(|r| {
            r.case.scenario == "sweep-chunk"
                && matches!(r.case.tool, Tool::Pump { chunk, .. } if chunk == *size)
                && r.ok()
        }),
        (s, _) => find(s, Role::BaselineB).or_else(|| {
            matches!(s, "qos" | "encrypted" | "sweep-window").then(|| find("100m", Role::BaselineB)).flatten()
        }),
    };
    (a, b)
}

fn scenario_title(s: &str) -> &'static str {
    match s {
        "5m" => "One 5 MiB image",
        "100m" => "One 100 MiB file",
        "qos" => "100 MiB, QoS 0 chunks (baselines: the 100 MiB rows)",
        "encrypted" => "100 MiB encrypted, --encrypt-to (baselines: the 100 MiB rows)",
        "v311" => "100 MiB over MQTT 3.1.1 (baseline A: the 100 MiB row)",
        "constrained" => "100 MiB through a broker with max_packet_size 131072 (one message is impossible)",
        "images" => "1,000 images of 200 KiB",
        "5m-nodelay" => "One 5 MiB image, Mosquitto with set_tcp_nodelay true",
        "images-nodelay" => "1,000 images of 200 KiB, Mosquitto with set_tcp_nodelay true",
        "zstd" => "100 MiB, --compress zstd against the defaults, on random data and on log lines",
        "stdio" => "100 MiB through pipes: cat | send -, receive --stdout > file, against files",
        "hold" => "100 MiB held at the broker (send --hold), received by a receiver started after the sender exited",
        "1g" => "One 1 GiB file (one message is impossible: MQTT's limit is 256 MiB)",
        "sweep-chunk" => "Sweep: chunk size (100 MiB, the default window: 256 chunks, 64 MiB at most; QoS 1, MQTT 5)",
        "sweep-window" => "Sweep: window (100 MiB, chunk 256 KiB, QoS 1, MQTT 5)",
        _ => "other",
    }
}

/// The whole results section, Markdown.
pub fn render(results: &[CaseResult], info: &MachineInfo, a: &RunArgs, took: Duration) -> String {
    let mut o = String::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(
        o,
        "Command: `target/release/mqft-bench {}` (the whole run took {:.1} min).\n",
        args.join(" "),
        took.as_secs_f64() / 60.0
    );
    let _ = writeln!(o, "| machine | |\n|---|---|");
    for (k, v) in &info.lines {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(
        o,
        "\nMedians over the repetitions (1 GiB: {} reps; sweep points: {}; other cases: {}); spread is min–max of the \
         end-to-end time. Throughput is file bytes over the median end-to-end time. CPU is user + system seconds \
         (median), peak RSS the largest of the repetitions. \"dropped\" is the broker's \
         `$SYS/broker/publish/messages/dropped` over the whole case. \"unconfirmed\" counts repetitions where the file \
         arrived verified under its final name but the sender never received the receiver's Complete and had to be \
         interrupted (their time runs to the receiver's exit). A ratio compares with the baselines of the same run.\n",
        if a.quick { 1 } else { a.reps_1g },
        if a.quick { 1 } else { a.sweep_reps },
        if a.quick { 1 } else { a.reps }
    );
    let mut scenario = "";
    for r in results {
        if r.case.scenario != scenario {
            scenario = r.case.scenario;
            let _ = writeln!(o, "\n#### {}\n", scenario_title(scenario));
            let _ = writeln!(
                o,
                "| case | reps | end-to-end (s) | spread (s) | MiB/s | time ÷ A | MiB/s ÷ B | CPU s: sender | receiver | \
                 broker | peak RSS MiB: sender | receiver | dropped | unconfirmed | first data (s) |"
            );
            let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        }
        let dropped = r.dropped.map_or("?".into(), |d| d.to_string());
        if !r.ok() {
            let err = r.error.clone().unwrap_or_else(|| "no sample".into()).replace('|', "/");
            let _ = writeln!(
                o,
                "| {} | {} | failed: {} | | | | | | | | | | {dropped} | | |",
                r.case.label,
                r.samples.len(),
                err
            );
            continue;
        }
        let e = r.e2e();
        let (lo, hi) = (e.iter().copied().fold(f64::MAX, f64::min), e.iter().copied().fold(0.0, f64::max));
        let (ba, bb) = baselines(results, r);
        let ratio_a = match (r.case.role, ba) {
            (Role::BaselineA, _) => "1".into(),
            (_, Some(ba)) => format!("{:.2}", r.median() / ba.median()),
            _ => "–".into(),
        };
        let ratio_b = match (r.case.role, bb) {
            (Role::BaselineB, _) if r.case.scenario != "sweep-chunk" => "1".into(),
            (Role::BaselineB, _) => "–".into(),
            (_, Some(bb)) => format!("{:.2}", r.tput() / bb.tput()),
            _ => "–".into(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {:.3} | {:.3}–{:.3} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} | {} |",
            r.case.label,
            r.samples.len(),
            r.median(),
            lo,
            hi,
            r.tput(),
            ratio_a,
            ratio_b,
            r.med_of(|s| s.sender.cpu()),
            r.med_of(|s| s.receiver.cpu()),
            r.med_of(|s| s.broker_cpu),
            r.max_of(|s| s.sender.rss_mib()),
            r.max_of(|s| s.receiver.rss_mib()),
            dropped,
            r.samples.iter().filter(|s| s.unconfirmed).count(),
            r.first_data().map_or("–".into(), |t| format!("{t:.3}"))
        );
    }
    let _ = writeln!(o, "\n#### Targets\n\n{}", targets(results));
    let _ = writeln!(o, "![throughput against chunk size and window]({PLOT})");
    o
}

/// The targets, each with the numbers that decide it.
fn targets(results: &[CaseResult]) -> String {
    let find = |scenario: &str, role: Role| {
        results.iter().find(|r| r.case.scenario == scenario && r.case.role == role && r.ok())
    };
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let verdict = |ok: bool| if ok { "met".to_owned() } else { "**not met**".to_owned() };
    let missing = || ("not measured".to_owned(), "–".to_owned());

    let (v, d) = match (find("100m", Role::Subject), find("100m", Role::BaselineA)) {
        (Some(m), Some(a)) => {
            let x = m.median() / a.median();
            (verdict(x <= 0.4), format!("{:.3} s ÷ {:.3} s = {x:.3}", m.median(), a.median()))
        }
        _ => missing(),
    };
    rows.push(("100 MiB: end-to-end ≤ 0.4 × baseline A".into(), v, d));

    let (v, d) = match (
        results.iter().find(|r| r.case.scenario == "1g" && r.case.role == Role::Subject),
        find("1g", Role::BaselineB),
    ) {
        (Some(m), b) if m.ok() => {
            let dropped = m.dropped.unwrap_or(u64::MAX);
            match b {
                Some(b) => {
                    let x = m.tput() / b.tput();
                    (
                        verdict(x >= 0.8 && dropped == 0),
                        format!(
                            "{:.1} ÷ {:.1} MiB/s = {x:.3}; dropped at the broker: {}",
                            m.tput(),
                            b.tput(),
                            m.dropped.map_or("?".into(), |d| d.to_string())
                        ),
                    )
                }
                None => ("**not met**".into(), "baseline B failed".into()),
            }
        }
        (Some(m), _) => ("**not met**".into(), format!("failed: {}", m.error.clone().unwrap_or_default())),
        _ => missing(),
    };
    rows.push(("1 GiB: completes on default Mosquitto, nothing dropped, ≥ 0.8 × baseline B's throughput".into(), v, d));

    let mqft_rows: Vec<&CaseResult> = results.iter().filter(|r| r.is_mqft() && r.ok()).collect();
    let (v, d) = if mqft_rows.is_empty() {
        missing()
    } else {
        let worst_s = mqft_rows
            .iter()
            .max_by(|a, b| a.max_of(|s| s.sender.rss_mib()).total_cmp(&b.max_of(|s| s.sender.rss_mib())));
        let worst_r = mqft_rows
            .iter()
            .max_by(|a, b| a.max_of(|s| s.receiver.rss_mib()).total_cmp(&b.max_of(|s| s.receiver.rss_mib())));
        match (worst_s, worst_r) {
            (Some(s), Some(r)) => {
                let (sm, rm) = (s.max_of(|x| x.sender.rss_mib()), r.max_of(|x| x.receiver.rss_mib()));
                (
                    verdict(sm <= RSS_TARGET_MIB && rm <= RSS_TARGET_MIB),
                    format!(
                        "largest: sender {sm:.1} MiB ({}: {}), receiver {rm:.1} MiB ({}: {})",
                        s.case.scenario, s.case.label, r.case.scenario, r.case.label
                    ),
                )
            }
            _ => missing(),
        }
    };
    rows.push(("peak RSS ≤ 48 MiB for sender and receiver, any file size".into(), v, d));

    for (scenario, broker) in [("5m", ""), ("5m-nodelay", ", Mosquitto set_tcp_nodelay true")] {
        let (v, d) = match (find(scenario, Role::Subject), find(scenario, Role::BaselineA)) {
            (Some(m), Some(a)) => {
                let x = m.median() / a.median();
                (verdict(x <= 1.0), format!("{:.3} s ÷ {:.3} s = {x:.3}", m.median(), a.median()))
            }
            _ => missing(),
        };
        rows.push((format!("5 MiB: no slower than baseline A end to end{broker}"), v, d));
    }

    for (scenario, broker) in [("images", ""), ("images-nodelay", ", Mosquitto set_tcp_nodelay true")] {
        let (v, d) = match (find(scenario, Role::Subject), find(scenario, Role::BaselineA)) {
            (Some(m), Some(a)) => {
                let x = a.median() / m.median();
                let how = if x >= 1.0 { format!("{x:.2} × faster") } else { format!("{:.2} × slower", 1.0 / x) };
                (verdict(x >= 3.0), format!("loop {:.2} s, mqft {:.2} s: mqft is {how}", a.median(), m.median()))
            }
            _ => missing(),
        };
        rows.push((format!("1,000 × 200 KiB: ≥ 3 × faster than a mosquitto_pub loop{broker}"), v, d));
    }

    let (v, d) = match (find("constrained", Role::Subject), find("100m", Role::Subject)) {
        (Some(c), Some(u)) => {
            let x = c.tput() / u.tput();
            (verdict(x >= 0.7), format!("{:.1} ÷ {:.1} MiB/s = {x:.3}", c.tput(), u.tput()))
        }
        _ => missing(),
    };
    rows.push(("128 KiB packets: ≥ 0.7 × unconstrained throughput".into(), v, d));

    let best = |scenario: &str, key: fn(&Tool) -> Option<u32>| -> Option<(u32, f64)> {
        results
            .iter()
            .filter(|r| r.case.scenario == scenario && r.is_mqft() && r.ok())
            .filter_map(|r| key(&r.case.tool).map(|k| (k, r.tput())))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let at = |scenario: &str, key: fn(&Tool) -> Option<u32>, want: u32| -> Option<f64> {
        results
            .iter()
            .find(|r| r.case.scenario == scenario && r.is_mqft() && r.ok() && key(&r.case.tool) == Some(want))
            .map(|r| r.tput())
    };
    let chunk_of: fn(&Tool) -> Option<u32> = |t| match t {
        Tool::Mqft { chunk, .. } => *chunk,
        _ => None,
    };
    let window_of: fn(&Tool) -> Option<u32> = |t| match t {
        Tool::Mqft { window, .. } => *window,
        _ => None,
    };
    let mut parts = Vec::new();
    let mut all_ok = true;
    let mut measured = false;
    if let (Some((bc, bt)), Some(dt)) = (best("sweep-chunk", chunk_of), at("sweep-chunk", chunk_of, DEFAULT_CHUNK)) {
        measured = true;
        all_ok &= dt >= bt * (1.0 - BEST_TOLERANCE);
        parts.push(format!(
            "chunk: best {} at {bt:.1} MiB/s, default {} at {dt:.1}",
            size_label(u64::from(bc)),
            size_label(u64::from(DEFAULT_CHUNK))
        ));
    }
    if let (Some((bw, bt)), Some(dt)) = (best("sweep-window", window_of), at("sweep-window", window_of, DEFAULT_WINDOW))
    {
        measured = true;
        all_ok &= dt >= bt * (1.0 - BEST_TOLERANCE);
        parts.push(format!("window: best {bw} at {bt:.1} MiB/s, default {DEFAULT_WINDOW} at {dt:.1}"));
    }
    if let (Some(e), Some(p)) = (find("encrypted", Role::Subject), find("100m", Role::Subject)) {
        let ratio = e.median() / p.median();
        rows.push((
            "an encrypted 100 MiB send within 1.3 × an unencrypted one".to_owned(),
            verdict(ratio <= 1.3),
            format!("{:.3} s against {:.3} s: {ratio:.2} ×", e.median(), p.median()),
        ));
    }
    if let (Some(q0), Some(q1)) = (find("qos", Role::Subject), find("100m", Role::Subject)) {
        measured = true;
        all_ok &= q1.tput() >= q0.tput() * (1.0 - BEST_TOLERANCE);
        parts.push(format!("QoS: 1 (default) at {:.1} MiB/s, 0 at {:.1}", q1.tput(), q0.tput()));
    }
    let (v, d) = if measured { (verdict(all_ok), parts.join("; ")) } else { missing() };
    rows.push((format!("defaults are the sweep's best (within {:.0}%)", BEST_TOLERANCE * 100.0), v, d));

    let mut o = String::from("| target | verdict | measured |\n|---|---|---|\n");
    for (t, v, d) in rows {
        let _ = writeln!(o, "| {t} | {v} | {d} |");
    }
    o
}

/// Writes the results between the markers of `out/PERFORMANCE.md` and the plot.
pub fn write_out(out: &Path, text: &str, results: &[CaseResult]) -> Result<()> {
    fs::create_dir_all(out)?;
    let doc = out.join("PERFORMANCE.md");
    let section = format!("{BEGIN}\n{text}\n{END}");
    let new = match fs::read_to_string(&doc) {
        Ok(old) => match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => format!("{}{section}{}", &old[..b], &old[e + END.len()..]),
            _ => format!("{old}\n{section}\n"),
        },
        Err(_) => format!("# mqft performance\n\n{section}\n"),
    };
    fs::write(&doc, new).with_context(|| format!("cannot write {}", doc.display()))?;
    let svg = plot(results);
    fs::write(out.join(PLOT), svg).with_context(|| format!("cannot write {}", out.join(PLOT).display()))?;
    eprintln!("wrote {} and {}", doc.display(), out.join(PLOT).display());
    Ok(())
}

/// One line of a plot: (x, median, low, high) points.
struct Series {
    name: &'static str,
    color: &'static str,
    points: Vec<(f64, f64, f64, f64)>,
}

/// Throughput against chunk size (mqft and baseline B) and against window (mqft),
/// side by side, as SVG.
pub fn plot(results: &[CaseResult]) -> String {
    let series = |scenario: &str, pick: fn(&Tool) -> Option<u32>, name, color| {
        let mut points: Vec<(f64, f64, f64, f64)> = results
            .iter()
            .filter(|r| r.case.scenario == scenario && r.ok())
            .filter_map(|r| {
                let x = pick(&r.case.tool)?;
                let (lo, hi) = r.tput_range();
                Some((f64::from(x), r.tput(), lo, hi))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Series { name, color, points }
    };
    let chunk_mqft = series(
        "sweep-chunk",
        |t| if let Tool::Mqft { chunk, .. } = t { *chunk } else { None },
        "mqft (window 256, QoS 1)",
        "#1f77b4",
    );
    let chunk_pump = series(
        "sweep-chunk",
        |t| if let Tool::Pump { chunk, .. } = t { Some(*chunk) } else { None },
        "baseline B: rumqttc pump",
        "#ff7f0e",
    );
    let window_mqft = series(
        "sweep-window",
        |t| if let Tool::Mqft { window, .. } = t { *window } else { None },
        "mqft (chunk 256 KiB, QoS 1)",
        "#1f77b4",
    );
    let (w, h) = (1000.0, 420.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    panel(
        &mut s,
        10.0,
        "Throughput against chunk size (100 MiB, MQTT 5, loopback)",
        "chunk size",
        &[chunk_mqft, chunk_pump],
        |x| size_label(x as u64).replace(' ', "\u{a0}"),
    );
    panel(
        &mut s,
        510.0,
        "Throughput against window (100 MiB, chunk 256 KiB)",
        "window (chunks)",
        &[window_mqft],
        |x| format!("{x}"),
    );
    s.push_str("</svg>\n");
    s
}

/// Draws one panel at `left`: log-scale x, linear y from 0, median lines with
/// min–max bars.
fn panel(s: &mut String, left: f64, title: &str, xlabel: &str, series: &[Series], label: impl Fn(f64) -> String) {
    let (top, pw, ph) = (40.0, 420.0, 300.0);
    let x0 = left + 60.0;
    let y0 = top + ph;
    let xs: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    let ymax = series.iter().flat_map(|s| s.points.iter().map(|p| p.3)).fold(1.0, f64::max) * 1.1;
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        left + 10.0,
        escape(title)
    );
    if xs.is_empty() {
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\">not measured in this run</text>", x0 + 100.0, top + ph / 2.0);
        return;
    }
    let (lx0, lx1) =
        (xs.iter().copied().fold(f64::MAX, f64::min).log2(), xs.iter().copied().fold(0.0, f64::max).log2());
    let span = (lx1 - lx0).max(1.0);
    let px = |x: f64| x0 + 20.0 + (x.log2() - lx0) / span * (pw - 40.0);
    let py = |y: f64| y0 - y / ymax * ph;
    // Axes, grid and ticks.
    let _ = writeln!(s, "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"black\"/>", x0 + pw);
    let _ = writeln!(s, "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{top}\" stroke=\"black\"/>");
    let step = nice_step(ymax / 6.0);
    let mut y = 0.0;
    while y <= ymax {
        let yy = py(y);
        let _ = writeln!(s, "<line x1=\"{x0}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>", x0 + pw);
        let _ = writeln!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.0}</text>", x0 - 5.0, yy + 4.0);
        y += step;
    }
    let mut ticks = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for &x in &ticks {
        let xx = px(x);
        let _ = writeln!(s, "<line x1=\"{xx:.1}\" y1=\"{y0}\" x2=\"{xx:.1}\" y2=\"{}\" stroke=\"black\"/>", y0 + 4.0);
        let _ =
            writeln!(s, "<text x=\"{xx:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>", y0 + 18.0, escape(&label(x)));
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        x0 + pw / 2.0,
        y0 + 38.0,
        escape(xlabel)
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">MiB/s (median; bars: min–max)</text>",
        left + 16.0,
        top + ph / 2.0,
        left + 16.0,
        top + ph / 2.0
    );
    for (i, ser) in series.iter().enumerate() {
        let pts: Vec<String> = ser.points.iter().map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1))).collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            ser.color,
            pts.join(" ")
        );
        for p in &ser.points {
            let (xx, lo, hi) = (px(p.0), py(p.2), py(p.3));
            let _ = writeln!(
                s,
                "<line x1=\"{xx:.1}\" y1=\"{lo:.1}\" x2=\"{xx:.1}\" y2=\"{hi:.1}\" stroke=\"{}\"/>",
                ser.color
            );
            let _ = writeln!(s, "<circle cx=\"{xx:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\"/>", py(p.1), ser.color);
        }
        // The legend goes in the lower right corner, where the lines rarely are.
        let ly = y0 - 14.0 - (series.len() - 1 - i) as f64 * 16.0;
        let lx = x0 + pw - 230.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"/>",
            lx + 20.0,
            ser.color
        );
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\">{}</text>", lx + 25.0, ly + 4.0, escape(ser.name));
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|s| *s >= raw).unwrap_or(10.0 * p)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
