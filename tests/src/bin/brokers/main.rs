//! `brokers`: the broker matrix. It runs the `mqft` CLI through Mosquitto,
//! rumqttd, NATS and RabbitMQ, each started here on free loopback ports, under
//! each MQTT version the broker speaks, in every case of [`cases::Case`], plus a
//! NATS cluster of three nodes; prints a result table, and with `--out FILE`
//! writes it into that file between the markers `<!-- matrix:start -->` and
//! `<!-- matrix:end -->` (docs/BROKERS.md). It exits 1 if any case failed.
//!
//! `scripts/brokers` installs the brokers and runs it; `scripts/test` runs that.
//!
//! ```text
//! brokers [--out FILE] [--brokers mosquitto,rumqttd,nats,rabbitmq] [--cases 1m,20m,...]
//!         [--no-cluster] [--mqft PATH] [--work DIR]
//! ```

mod cases;
mod servers;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cases::{Case, Ctx, Files, Measured, Outcome};
use servers::{Kind, NatsCluster, Version};

/// The command line.
struct Args {
    out: Option<PathBuf>,
    brokers: Vec<Kind>,
    cases: Vec<Case>,
    cluster: bool,
    mqft: PathBuf,
    work: Option<PathBuf>,
}

const USAGE: &str = "usage: brokers [--out FILE] [--brokers mosquitto,rumqttd,nats,rabbitmq] \
                     [--cases 1m,20m,200m,two-receivers,late-receiver,small-files,packet-limited,kill-restart,stdin] \
                     [--no-cluster] [--mqft PATH] [--work DIR]";

fn parse_args() -> Result<Args, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this program: {e}"))?;
    let mut args = Args {
        out: None,
        brokers: Kind::ALL.to_vec(),
        cases: Case::ALL.to_vec(),
        cluster: true,
        // cargo puts every binary of a profile in one directory.
        mqft: exe.with_file_name(format!("mqft{}", std::env::consts::EXE_SUFFIX)),
        work: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--out" => args.out = Some(value()?.into()),
            "--mqft" => args.mqft = value()?.into(),
            "--work" => args.work = Some(value()?.into()),
            "--no-cluster" => args.cluster = false,
            "--brokers" => {
                args.brokers = value()?
                    .split(',')
                    .map(|id| Kind::ALL.into_iter().find(|k| k.id() == id).ok_or(format!("unknown broker {id}")))
                    .collect::<Result<_, _>>()?;
            }
            "--cases" => {
                args.cases = value()?
                    .split(',')
                    .map(|id| Case::ALL.into_iter().find(|c| c.id() == id).ok_or(format!("unknown case {id}")))
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if !args.mqft.exists() {
        return Err(format!(
            "no mqft binary at {}: build it (cargo build --profile test -p mqft-cli) or pass --mqft",
            args.mqft.display()
        ));
    }
    Ok(args)
}

/// One cell of the matrix.
struct Cell {
    kind: Kind,
    version: Version,
    case: Case,
    outcome: Outcome,
}

/// One NATS cluster transfer.
struct ClusterRun {
    size: &'static str,
    rx_node: usize,
    outcome: Outcome,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("brokers: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let work = match &args.work {
        Some(dir) => tempfile::Builder::new().prefix("mqft-brokers-").tempdir_in(dir),
        None => tempfile::Builder::new().prefix("mqft-brokers-").tempdir(),
    };
    let work = match work {
        Ok(work) => work,
        Err(e) => {
            eprintln!("brokers: cannot create a work dir: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("brokers: writing the test files in {}", work.path().display());
    let files = Files::write(work.path());

    let mut cells = Vec::new();
    for &kind in &args.brokers {
        for limited in [false, true] {
            let cases: Vec<Case> = args.cases.iter().copied().filter(|c| c.limited() == limited).collect();
            if cases.is_empty() {
                continue;
            }
            let what = if limited { format!("{} ({})", kind.id(), kind.limit_setting()) } else { kind.id().to_owned() };
            eprintln!("brokers: starting {what}");
            let t = Instant::now();
            let server = match kind.start(limited) {
                Ok(server) => server,
                Err(e) => {
                    eprintln!("brokers: {what} did not start: {e}");
                    for &version in kind.versions() {
                        for &case in &cases {
                            cells.push(Cell {
                                kind,
                                version,
                                case,
                                outcome: Err(format!("the broker did not start: {e}")),
                            });
                        }
                    }
                    continue;
                }
            };
            eprintln!("brokers: {what} ready in {:.1} s", t.elapsed().as_secs_f64());
            for &version in kind.versions() {
                // Every version this broker has a listener for.
                let Some(port) = server.port(version) else { continue };
                for &case in &cases {
                    let ctx = Ctx {
                        mqft: &args.mqft,
                        port,
                        rx_port: port,
                        version,
                        prefix: format!("matrix/{}-{}/{}", kind.id(), version.flag(), case.id()),
                        work: work.path().join(format!("{}-{}-{}", kind.id(), version.flag(), case.id())),
                        files: &files,
                    };
                    let outcome = cases::run(case, &ctx);
                    log_outcome(&format!("{} {} {}", kind.id(), version.label(), case.id()), &outcome);
                    if outcome.is_err() {
                        eprintln!("  broker log (end):\n{}", server.log_tail(15));
                    }
                    cells.push(Cell { kind, version, case, outcome });
                }
            }
        }
    }

    let mut cluster_runs = Vec::new();
    if args.cluster {
        eprintln!("brokers: starting a NATS cluster of three nodes");
        let t = Instant::now();
        match NatsCluster::start() {
            Err(e) => {
                eprintln!("brokers: the NATS cluster did not start: {e}");
                cluster_runs.push(ClusterRun { size: "20 MiB", rx_node: 1, outcome: Err(e) });
            }
            Ok(cluster) => {
                eprintln!("brokers: NATS cluster ready in {:.1} s", t.elapsed().as_secs_f64());
                for (size, case) in [("20 MiB", Case::TwentyMiB), ("200 MiB", Case::TwoHundredMiB)] {
                    for rx_node in [0, 1] {
                        let ctx = Ctx {
                            mqft: &args.mqft,
                            port: cluster.port(0),
                            rx_port: cluster.port(rx_node),
                            version: Version::V311,
                            prefix: format!("matrix/nats-cluster/{}-n{rx_node}", case.id()),
                            work: work.path().join(format!("cluster-{}-{rx_node}", case.id())),
                            files: &files,
                        };
                        let outcome = cases::run(case, &ctx);
                        log_outcome(&format!("nats cluster {size}, sender n0, receiver n{rx_node}"), &outcome);
                        if outcome.is_err() {
                            eprintln!("  cluster logs (end):\n{}", cluster.log_tail(10));
                        }
                        cluster_runs.push(ClusterRun { size, rx_node, outcome });
                    }
                }
            }
        }
    }

    let report = report(&args, &cells, &cluster_runs, started.elapsed().as_secs_f64());
    println!("{report}");
    if let Some(out) = &args.out {
        if let Err(e) = write_between_markers(out, &report) {
            eprintln!("brokers: {e}");
            return ExitCode::from(1);
        }
        eprintln!("brokers: results written to {}", out.display());
    }
    let failed = cells.iter().filter(|c| c.outcome.is_err()).count()
        + cluster_runs.iter().filter(|r| r.outcome.is_err()).count();
    if failed > 0 {
        eprintln!("brokers: {failed} case(s) failed");
        return ExitCode::from(1);
    }
    eprintln!("brokers: all passed in {:.0} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}

fn log_outcome(what: &str, outcome: &Outcome) {
    match outcome {
        Ok(m) => eprintln!("  ok    {what}: {}", cell_text(m)),
        Err(e) => eprintln!("  FAIL  {what}: {e}"),
    }
}

/// A passed cell: the end-to-end time, and what else the case measured.
fn cell_text(m: &Measured) -> String {
    if let Some(note) = &m.note {
        return note.clone();
    }
    let mut text = format!("{:.2} s", m.secs);
    if let Some(restart) = m.restart_secs {
        let _ = write!(text, " (restart to done {restart:.2} s)");
    }
    if let Some(chunk) = m.chunk_size.filter(|_| m.restart_secs.is_none()) {
        if chunk % 1024 == 0 {
            let _ = write!(text, ", {} KiB chunks", chunk / 1024);
        } else {
            let _ = write!(text, ", {chunk} B chunks");
        }
    }
    let resent = m.transmissions.saturating_sub(m.chunks);
    if resent > 0 {
        let _ = write!(text, ", {resent} resent");
    }
    text
}

fn column_label(kind: Kind, version: Version) -> String {
    let name = match kind {
        Kind::Mosquitto => "Mosquitto",
        Kind::Rumqttd => "rumqttd",
        Kind::Nats => "NATS",
        Kind::RabbitMq => "RabbitMQ",
    };
    format!("{name} {}", version.label().trim_start_matches("MQTT "))
}

/// The results as Markdown.
fn report(args: &Args, cells: &[Cell], cluster: &[ClusterRun], secs: f64) -> String {
    let mut out = String::new();
    let columns: Vec<(Kind, Version)> =
        args.brokers.iter().flat_map(|&k| k.versions().iter().map(move |&v| (k, v))).collect();
    let _ = writeln!(
        out,
        "Run by `scripts/brokers` with the `mqft` binary {}, in {secs:.0} s on this machine ({} cores).\n",
        args.mqft.display(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let _ = write!(out, "| case |");
    for &(k, v) in &columns {
        let _ = write!(out, " {} |", column_label(k, v));
    }
    let _ = write!(out, "\n|---|");
    for _ in &columns {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    let mut failures = Vec::new();
    for &case in &args.cases {
        let _ = write!(out, "| {} |", case.title());
        for &(k, v) in &columns {
            let cell = cells.iter().find(|c| c.kind == k && c.version == v && c.case == case);
            let text = match cell.map(|c| &c.outcome) {
                None => "not run".to_owned(),
                Some(Ok(m)) => cell_text(m),
                Some(Err(e)) => {
                    let n = failures.len() + 1;
                    let first = e.lines().next().unwrap_or("").replace('|', "/");
                    failures.push(format!("{n}. **{}, {}**: {first}", column_label(k, v), case.title()));
                    format!("**FAIL** ({n})")
                }
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out.push_str(
        "\nEach cell: seconds from the sender's start until the last `mqft` process exited, \
         after every received file was compared byte for byte with its original; \
         \"N resent\": chunk publishes beyond the file's chunk count (repairs).\n",
    );
    if !failures.is_empty() {
        out.push_str("\nFailures (the runner prints each one's output and broker log):\n\n");
        for f in &failures {
            let _ = writeln!(out, "{f}");
        }
    }
    if !cluster.is_empty() {
        out.push_str(
            "\n#### NATS cluster of three nodes (MQTT 3.1.1), sender on node 0\n\n\
             | file | receiver on | time | chunks | chunk publishes | resent | duplicates at the receiver |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for run in cluster {
            let node =
                if run.rx_node == 0 { "node 0 (same)".to_owned() } else { format!("node {} (other)", run.rx_node) };
            match &run.outcome {
                Ok(m) => {
                    let _ = writeln!(
                        out,
                        "| {} | {node} | {:.2} s | {} | {} | {} | {} |",
                        run.size,
                        m.secs,
                        m.chunks,
                        m.transmissions,
                        m.transmissions.saturating_sub(m.chunks),
                        m.duplicates
                    );
                }
                Err(e) => {
                    let first = e.lines().next().unwrap_or("").replace('|', "/");
                    let _ = writeln!(out, "| {} | {node} | **FAIL**: {first} | | | | |", run.size);
                }
            }
        }
    }
    out
}

const START: &str = "<!-- matrix:start -->";
const END: &str = "<!-- matrix:end -->";

/// Replace what lies between the markers in `path` with `report`.
fn write_between_markers(path: &Path, report: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        return Err(format!("{} has no {START} ... {END} markers", path.display()));
    };
    if end < start {
        return Err(format!("{}: {END} comes before {START}", path.display()));
    }
    let new = format!("{}{START}\n{report}{}", &text[..start], &text[end..]);
    std::fs::write(path, new).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
