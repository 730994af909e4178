//! How the CLI shows what happens: indicatif progress bars on stderr (hidden when
//! stderr is not a terminal), one JSON object per line on stdout with `--json`, or
//! nothing but errors with `--quiet`.
//!
//! Names that came over the network are escaped before they are printed, so a file
//! name cannot move the cursor or recolour the terminal.
//!
//! Over 600 lines: one `Reporter` draws the bars and lines of every command and
//! event, and each event's JSON shape sits next to it (`--json` prints the same
//! events the bars show); its tests are at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mqft::proto::wire::UNKNOWN_SIZE;
use mqft::proto::TransferId;
use mqft::{ReceiveEvent, SendEvent};
use serde_json::{json, Value};

use crate::args::OutputArgs;

/// The reporter for one command.
pub struct Reporter {
    mode: Mode,
    multi: MultiProgress,
    /// One bar per (transfer, receiver) on the sender, per transfer on the receiver.
    bars: HashMap<(TransferId, String), ProgressBar>,
    /// A spinner per transfer while it waits for receivers.
    waiting: HashMap<TransferId, ProgressBar>,
    /// Prefix for the bars of one side in the demo ("send", "recv").
    side: &'static str,
    /// A spinner while the first connection is on its way, so that a closed port
    /// or a silent broker does not look like a hang.
    connecting: Option<ProgressBar>,
    /// Print the path of a file found already complete on stdout too (`--once`).
    print_already_complete: bool,
    /// When this command started, for the summary's rate.
    started: Instant,
    /// Receive: when the first transfer was accepted (idle time is no transfer time).
    first_accepted: Option<Instant>,
    /// Receive: when the last transfer ended (time idle after it is no transfer time).
    last_ended: Option<Instant>,
    /// Send: each file's size and the least any receiver held already, for the
    /// bytes this send really sent.
    sent: HashMap<TransferId, (u64, Option<u64>)>,
    /// Send: the spool file of `send -`, shown as what it is (its name, from
    /// standard input) rather than as a path under `$TMPDIR`.
    stdin_spool: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Json,
    Quiet,
}

impl Reporter {
    pub fn new(out: OutputArgs) -> Self {
        Self::with_multi(out, MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), "")
    }

    /// A reporter that draws into a shared [`MultiProgress`], for the demo.
    pub fn with_multi(out: OutputArgs, multi: MultiProgress, side: &'static str) -> Self {
        let mode = if out.json {
            Mode::Json
        } else if out.quiet {
            Mode::Quiet
        } else {
            Mode::Bars
        };
        Reporter {
            mode,
            multi,
            bars: HashMap::new(),
            waiting: HashMap::new(),
            side,
            connecting: None,
            print_already_complete: false,
            started: Instant::now(),
            first_accepted: None,
            last_ended: None,
            sent: HashMap::new(),
            stdin_spool: None,
        }
    }

    /// Whether a file found already complete has its path printed on stdout: only
    /// when that path is the command's one answer (`--once`). A long-running
    /// receiver prints each path once, when the file completes, so that a
    /// `| while read` loop does not act on it twice.
    pub fn print_already_complete(&mut self, on: bool) {
        self.print_already_complete = on;
    }

    /// Shows "connecting to `addr` ..." until the first `Connected` event (on a
    /// terminal; elsewhere the library logs a wait longer than a second).
    pub fn connecting(&mut self, addr: &str) {
        if self.mode == Mode::Bars && !self.multi.is_hidden() {
            let spinner = self.multi.add(ProgressBar::new_spinner());
            spinner.set_message(format!("connecting to {addr} ..."));
            spinner.enable_steady_tick(Duration::from_millis(100));
            self.connecting = Some(spinner);
        }
    }

    fn connected(&mut self) {
        if let Some(s) = self.connecting.take() {
            s.finish_and_clear();
        }
    }

    /// Prints a line to stderr without tearing the bars (not in JSON or quiet mode).
    pub fn note(&self, line: &str) {
        if self.mode == Mode::Bars {
            if self.multi.is_hidden() {
                eprintln!("{line}");
            } else {
                let _ = self.multi.println(line);
            }
        }
    }

    /// The bar of `transfer` (and receiver `who`), made at position `start` if new.
    ///
    /// Its rate and eta count only the bytes that moved since: a resumed file's
    /// bytes already held are no speed (indicatif's own rate would count them as
    /// moved in an instant: "869 GiB/s eta 0s").
    fn bar(&mut self, transfer: TransferId, who: &str, total: u64, start: u64, label: String) -> &ProgressBar {
        let multi = &self.multi;
        self.bars.entry((transfer, who.to_owned())).or_insert_with(|| {
            let rate = move |state: &indicatif::ProgressState| {
                let secs = state.elapsed().as_secs_f64();
                let moved = state.pos().saturating_sub(start);
                if secs > 0.2 && moved > 0 {
                    Some(moved as f64 / secs)
                } else {
                    None
                }
            };
            // A stream's size is not known until its end: no bar, no eta.
            let template = if total == UNKNOWN_SIZE {
                "{prefix:.bold} {bytes} (size not known yet) {rate} {msg}"
            } else {
                "{prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {rate} eta {left} {msg}"
            };
            let style = ProgressStyle::with_template(template)
                .expect("the template is valid")
                .with_key("rate", move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = match rate(state) {
                        Some(r) => write!(w, "{}/s", indicatif::HumanBytes(r as u64)),
                        None => write!(w, "-"),
                    };
                })
                .with_key("left", move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let left = state.len().unwrap_or(0).saturating_sub(state.pos());
                    let _ = match rate(state) {
                        Some(r) => match Duration::try_from_secs_f64(left as f64 / r) {
                            Ok(eta) => write!(w, "{}", indicatif::HumanDuration(eta)),
                            Err(_) => write!(w, "-"),
                        },
                        None => write!(w, "-"),
                    };
                })
                .progress_chars("=> ");
            let bar = multi.add(ProgressBar::new(total).with_style(style).with_prefix(label).with_position(start));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        })
    }

    /// `send -`: the file at `spool` is standard input; say so rather than show
    /// where it was spooled.
    pub fn stdin_spool(&mut self, spool: PathBuf) {
        self.stdin_spool = Some(spool);
    }

    /// A sent file's path as the user knows it.
    fn shown(&self, path: &Path) -> String {
        match &self.stdin_spool {
            Some(spool) if spool == path => format!("{} (standard input)", file_name(path)),
            _ => display_path(path),
        }
    }

    pub fn send_event(&mut self, e: &SendEvent) {
        if matches!(e, SendEvent::Connected) {
            self.connected();
        }
        match e {
            SendEvent::Started { transfer, size, .. } => {
                self.sent.insert(*transfer, (*size, None));
            }
            SendEvent::ReceiverJoined { transfer, held_bytes, .. } => {
                if let Some((_, held)) = self.sent.get_mut(transfer) {
                    *held = Some(held.map_or(*held_bytes, |h| h.min(*held_bytes)));
                }
            }
            // A stream's size, once its end is read.
            SendEvent::StreamEnded { transfer, size, .. } => {
                if let Some((known, _)) = self.sent.get_mut(transfer) {
                    *known = *size;
                }
            }
            _ => {}
        }
        if self.mode == Mode::Json {
            println!("{}", send_json(e));
            return;
        }
        if self.mode == Mode::Quiet {
            return;
        }
        match e {
            SendEvent::Started { path, transfer, size, .. } => {
                let spinner = self.multi.add(ProgressBar::new_spinner());
                spinner.set_message(format!("{}: waiting for receivers ({})", self.shown(path), size_text(*size)));
                spinner.enable_steady_tick(Duration::from_millis(100));
                self.waiting.insert(*transfer, spinner);
            }
            SendEvent::ReceiverJoined { path, transfer, receiver, held_bytes } => {
                if let Some(s) = self.waiting.remove(transfer) {
                    s.finish_and_clear();
                }
                if *held_bytes > 0 {
                    self.note(&format!(
                        "{}{}: resuming: {} already held by {receiver}",
                        self.side,
                        self.shown(path),
                        bytes(*held_bytes)
                    ));
                }
                // The size the send started with: a stream's spool is still growing.
                let total = self.sent.get(transfer).map_or(0, |(size, _)| *size);
                let label = format!("{}{} -> {}", self.side, file_name(path), receiver);
                let bar = self.bar(*transfer, receiver.as_str(), total, *held_bytes, label);
                bar.set_position(*held_bytes);
            }
            SendEvent::Progress { transfer, receiver, bytes, total, path } => {
                let label = format!("{}{} -> {}", self.side, file_name(path), receiver);
                let bar = self.bar(*transfer, receiver.as_str(), *total, *bytes, label);
                if *total != UNKNOWN_SIZE {
                    bar.set_length(*total);
                }
                bar.set_position(*bytes);
            }
            SendEvent::ReceiverComplete { transfer, receiver, path } => {
                if let Some(bar) = self.bars.get(&(*transfer, receiver.to_string())) {
                    bar.set_position(bar.length().unwrap_or(0));
                    bar.finish_with_message("verified");
                } else {
                    // Complete without ever joining: it had the file already (as
                    // rsync says "up to date"), so nothing was sent to it.
                    self.note(&format!("{}{}: {receiver} already has it", self.side, self.shown(path)));
                }
            }
            SendEvent::ReceiverFailed { path, receiver, reason, transfer } => {
                let why = reason.map_or_else(|| "stopped answering".to_owned(), |r| r.to_string());
                if let Some(bar) = self.bars.get(&(*transfer, receiver.to_string())) {
                    bar.abandon_with_message(format!("failed: {why}"));
                } else {
                    self.note(&format!("{}: receiver {receiver} failed: {why}", self.shown(path)));
                }
            }
            SendEvent::StoredAs { path, receiver, name, change, detail, .. } => {
                // The receiver's detail says it in its words ("a different x.jpg was
                // there"); the change's name is the fallback.
                let why = if detail.is_empty() { change.to_string() } else { escape(detail) };
                self.note(&format!(
                    "{}{}: {receiver} stored it as {} ({why})",
                    self.side,
                    self.shown(path),
                    escape(name)
                ));
            }
            SendEvent::Queued { path, receiver, position, .. } => {
                self.note(&format!("{}{}: queued at position {position} at {receiver}", self.side, self.shown(path)));
            }
            SendEvent::Retrying { path, receiver, reason, retry_in, .. } => self.note(&format!(
                "{}{}: {receiver} refused it for now ({reason}); offering again in {:.1} s",
                self.side,
                self.shown(path),
                retry_in.as_secs_f64()
            )),
            SendEvent::Finished { path, transfer } => {
                if let Some(s) = self.waiting.remove(transfer) {
                    s.finish_and_clear();
                }
                self.note(&format!("{}sent {}", self.side, self.shown(path)));
            }
            SendEvent::Failed { path, transfer, message, .. } => {
                if let Some(s) = transfer.and_then(|t| self.waiting.remove(&t)) {
                    s.finish_and_clear();
                }
                self.note(&format!("{}failed {}: {message}", self.side, self.shown(path)));
            }
            SendEvent::Disconnected { reason } => {
                self.note(&format!("{}disconnected: {reason}; reconnecting", self.side))
            }
            SendEvent::ChunkSizeLowered { path, transfer, chunk_size, retry_with } => {
                if let Some(s) = self.waiting.remove(transfer) {
                    s.finish_and_clear();
                }
                for ((t, _), bar) in &self.bars {
                    if t == transfer {
                        bar.abandon_with_message("chunks too large for the broker");
                    }
                }
                self.note(&format!(
                    "{}{}: chunks of {} do not get through this broker; retrying with {}",
                    self.side,
                    self.shown(path),
                    bytes(u64::from(*chunk_size)),
                    bytes(u64::from(*retry_with))
                ));
            }
            SendEvent::Connected => {}
            _ => {}
        }
    }

    pub fn receive_event(&mut self, e: &ReceiveEvent) {
        if matches!(e, ReceiveEvent::Connected { .. }) {
            self.connected();
        }
        if self.mode == Mode::Json {
            println!("{}", receive_json(e));
            return;
        }
        if matches!(e, ReceiveEvent::Accepted { .. }) && self.first_accepted.is_none() {
            self.first_accepted = Some(Instant::now());
        }
        if matches!(e, ReceiveEvent::Completed(_) | ReceiveEvent::Failed { .. }) {
            self.last_ended = Some(Instant::now());
        }
        let print = match e {
            ReceiveEvent::Completed(mqft::VerifiedFile { path, .. }) => Some(path),
            ReceiveEvent::AlreadyComplete(mqft::VerifiedFile { path, .. }) if self.print_already_complete => Some(path),
            _ => None,
        };
        if let Some(path) = print {
            // The one line a script wants: where the file is.
            if self.side.is_empty() {
                // Hide the bars while printing, or the line tears them.
                self.multi.suspend(|| println!("{}", display_path(path)));
            }
        }
        if self.mode == Mode::Quiet {
            return;
        }
        match e {
            ReceiveEvent::Connected { receiver } => {
                self.note(&format!("{}listening as receiver {receiver}", self.side));
            }
            ReceiveEvent::Rejected { name, reason, detail, sender, .. } => {
                let detail = if detail.is_empty() { String::new() } else { format!(": {}", escape(detail)) };
                self.note(&format!("{}refused {}{}: {reason}{detail}", self.side, escape(name), from(sender)));
            }
            ReceiveEvent::Signed { signer, .. } => {
                self.note(&format!("{}signed by {}", self.side, escape(signer)));
            }
            ReceiveEvent::Queued { name, position, .. } => {
                self.note(&format!("{}queued {} at position {position}: every slot is taken", self.side, escape(name)));
            }
            ReceiveEvent::Accepted { transfer, path, size, resumed_bytes, sender } => {
                let label = format!("{}{}{}", self.side, file_name(path), from(sender));
                let bar = self.bar(*transfer, "", *size, *resumed_bytes, label);
                bar.set_position(*resumed_bytes);
                if *resumed_bytes > 0 {
                    bar.set_message(format!("(resumed at {})", bytes(*resumed_bytes)));
                }
            }
            ReceiveEvent::Progress { transfer, path, bytes, total } => {
                let label = format!("{}{}", self.side, file_name(path));
                let bar = self.bar(*transfer, "", *total, *bytes, label);
                bar.set_position(*bytes);
            }
            ReceiveEvent::Completed(mqft::VerifiedFile { transfer, path, size, sender, change, .. }) => {
                match self.bars.get(&(*transfer, String::new())) {
                    Some(bar) => {
                        // A stream's bar started without its size.
                        bar.set_length(*size);
                        bar.set_position(*size);
                        bar.finish_with_message("sha-256 ok");
                    }
                    None => self.note(&format!("{}received {}{}", self.side, display_path(path), from(sender))),
                }
                if let Some(change) = change {
                    self.note(&format!("{}stored as {}: {change}", self.side, display_path(path)));
                }
            }
            ReceiveEvent::AlreadyComplete(mqft::VerifiedFile { path, sender, .. }) => {
                self.note(&format!("{}already have {}{}", self.side, display_path(path), from(sender)));
            }
            ReceiveEvent::Failed { transfer, path, failure } => match self.bars.get(&(*transfer, String::new())) {
                Some(bar) => bar.abandon_with_message(format!("failed: {failure}")),
                None => self.note(&format!("{}failed {}: {failure}", self.side, display_path(path))),
            },
            ReceiveEvent::Disconnected { reason } => {
                self.note(&format!("{}disconnected: {reason}; reconnecting", self.side))
            }
            _ => {}
        }
    }

    /// The sender's last line: files, the bytes this send really sent (not those
    /// receivers held already), time and rate, as rsync and croc end.
    pub fn send_summary(&self, report: &mqft::SendReport) {
        let moved = self.sent_bytes();
        let mut line = summary_line("sent", report.files.len(), moved, self.started.elapsed());
        line.push_str(&saving(report));
        if self.mode == Mode::Bars {
            self.note(&line);
        }
    }

    /// `send --hold`: per file, what the broker holds, for how long, for whom,
    /// and who confirmed before the send ended ("held at the broker for 24h for
    /// dev-1, dev-2; 0 confirmed so far").
    pub fn held(&self, report: &mqft::SendReport, hold: Option<Duration>, to: &[String]) {
        let Some(hold) = hold else { return };
        for f in report.files.iter().filter(|f| f.held_until_ms.is_some()) {
            let whom = if to.is_empty() { "any receiver".to_owned() } else { to.join(", ") };
            let confirmed = f.receivers.iter().map(|r| r.as_str()).collect::<Vec<_>>();
            let mut line = format!(
                "{}: held at the broker for {} for {whom}; {} confirmed so far",
                self.shown(&f.path),
                duration_text(hold),
                confirmed.len()
            );
            if !confirmed.is_empty() {
                line.push_str(&format!(" ({})", confirmed.join(", ")));
            }
            self.note(&line);
        }
    }

    /// Bytes a send moved: per file, its size less what the receiver holding the
    /// least had already.
    pub fn sent_bytes(&self) -> u64 {
        // A stream that never ended (cancelled, or started again with smaller
        // chunks) has no size to count.
        self.sent
            .values()
            .filter(|(size, _)| *size != UNKNOWN_SIZE)
            .filter_map(|(size, held)| held.map(|h| size.saturating_sub(h)))
            .fold(0, u64::saturating_add)
    }

    /// The receiver's last line: files, bytes received (resumed bytes not counted),
    /// time from the first accepted offer to the last transfer's end, and rate.
    pub fn receive_summary(&self, report: &mqft::ReceiveReport) {
        let moved = received_bytes(report);
        let took = match (self.first_accepted, self.last_ended) {
            (Some(first), Some(last)) if last >= first => last - first,
            (Some(first), _) => first.elapsed(),
            _ => Duration::ZERO,
        };
        if self.mode == Mode::Bars {
            self.note(&summary_line("received", report.files.len(), moved, took));
        }
    }

    /// Clears every bar still drawn.
    pub fn finish(&mut self) {
        self.connected();
        for (_, s) in self.waiting.drain() {
            s.finish_and_clear();
        }
        for (_, b) in self.bars.drain() {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}

/// Escapes control characters, bidirectional controls, invisible characters and
/// look-alikes of `/` and `\` (see [`mqft::name::escape`]): a name from the network
/// can neither drive the terminal nor pass for another name or a path.
pub fn escape(s: &str) -> String {
    mqft::name::escape(s)
}

pub fn display_path(p: &Path) -> String {
    escape(&p.display().to_string())
}

fn file_name(p: &Path) -> String {
    escape(&p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string()))
}

/// "sent 2 files, 3.00 MiB in 1.2 s (2.50 MiB/s)".
fn summary_line(verb: &str, files: usize, moved: u64, took: Duration) -> String {
    let secs = took.as_secs_f64();
    let rate = if secs > 0.0 { bytes((moved as f64 / secs) as u64) + "/s" } else { "-".to_owned() };
    let plural = if files == 1 { "" } else { "s" };
    format!("{verb} {files} file{plural}, {} in {secs:.1} s ({rate})", bytes(moved))
}

/// ", 1.6 MiB on the wire, saved 61 %" when compression saved anything; else
/// nothing.
fn saving(report: &mqft::SendReport) -> String {
    let data: u64 = report.files.iter().map(|f| f.data_bytes).sum();
    let wire: u64 = report.files.iter().map(|f| f.wire_bytes).sum();
    if wire >= data || data == 0 {
        return String::new();
    }
    let saved = 100.0 * (data - wire) as f64 / data as f64;
    format!(", {} on the wire, saved {saved:.0} %", bytes(wire))
}

/// Bytes a receive took in: each file's size less what it resumed with.
pub fn received_bytes(report: &mqft::ReceiveReport) -> u64 {
    report.files.iter().map(|f| f.size.saturating_sub(f.resumed_bytes)).sum()
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// A size for people: a stream's is not known until its end.
fn size_text(n: u64) -> String {
    if n == UNKNOWN_SIZE {
        "size not known yet".to_owned()
    } else {
        bytes(n)
    }
}

/// A completed or already-complete file in JSON. "change": why the path's name
/// is not the one sent (the sender was told), or null.
fn verified_json(event: &str, f: &mqft::VerifiedFile) -> Value {
    json!({
        "event": event, "transfer": f.transfer.to_string(), "path": path_json(&f.path), "size": f.size,
        "sha256": crate::service::hex(&f.sha256), "sender": sender_json(&f.sender),
        "change": f.change.map(change_json),
    })
}

/// A size in JSON: `null` for a stream's, not known until its end.
fn size_json(n: u64) -> Value {
    if n == UNKNOWN_SIZE {
        Value::Null
    } else {
        n.into()
    }
}

fn path_json(p: &Path) -> Value {
    Value::String(p.to_string_lossy().into_owned())
}

/// The last line of `send --json`: per file, how many chunk publishes it took.
pub fn send_summary(r: &mqft::SendReport, sent_bytes: u64, took: Duration) -> Value {
    let files: Vec<Value> = r
        .files
        .iter()
        .map(|f| {
            json!({
                "path": path_json(&f.path), "transfer": f.transfer.to_string(),
                "receivers": f.receivers.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "chunks": f.chunks, "transmissions": f.transmissions,
                "data_bytes": f.data_bytes, "wire_bytes": f.wire_bytes,
                "held_until_ms": f.held_until_ms,
            })
        })
        .collect();
    json!({"event": "summary", "files": files, "bytes": sent_bytes, "seconds": took.as_secs_f64()})
}

/// A duration in the flags' units: `24h`, `7d`, `1h30m`, `59m59s` (whole hours
/// under two days as hours, as people say them).
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    if s.is_multiple_of(3600) && s < 2 * 86_400 {
        return format!("{}h", s / 3600);
    }
    let parts = [(s / 86_400, "d"), (s / 3600 % 24, "h"), (s / 60 % 60, "m"), (s % 60, "s")];
    parts.iter().filter(|(n, _)| *n > 0).map(|(n, u)| format!("{n}{u}")).collect()
}

/// `mqft status`: one line per held transfer (or one JSON object per line with
/// `--json`), then how many. Names from the network are escaped.
pub fn print_status(held: &[mqft::HeldTransfer], out: OutputArgs) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    for h in held {
        let left = Duration::from_millis(u64::try_from(h.hold_until_ms.saturating_sub(now_ms)).unwrap_or(0));
        let confirmed: Vec<&str> = h.confirmed.iter().map(|r| r.as_str()).collect();
        let pending: Vec<&str> = h.to.iter().map(String::as_str).filter(|r| !confirmed.contains(r)).collect();
        if out.json {
            println!(
                "{}",
                json!({
                    "event": "held", "transfer": h.transfer.to_string(), "name": h.name, "size": h.size,
                    "sender": h.sender, "to": h.to, "hold_until_ms": h.hold_until_ms,
                    "expires_in_seconds": left.as_secs(), "confirmed": confirmed, "pending": pending,
                    "signed": h.signed, "encrypted": h.encrypted,
                })
            );
        } else if !out.quiet {
            let whom = if h.to.is_empty() { "anyone".to_owned() } else { h.to.join(", ") };
            let from = if h.sender.is_empty() { String::new() } else { format!(" from {}", h.sender) };
            let from = if h.encrypted { format!("{from}, encrypted") } else { from };
            let mut line = format!(
                "{} {} ({}){from} for {whom}, expires in {}: confirmed: {}",
                h.transfer,
                escape(&h.name),
                bytes(h.size),
                duration_text(Duration::from_secs(left.as_secs())),
                if confirmed.is_empty() { "none".to_owned() } else { confirmed.join(", ") },
            );
            if !pending.is_empty() {
                line.push_str(&format!("; pending: {}", pending.join(", ")));
            }
            println!("{line}");
        }
    }
    if out.json {
        println!("{}", json!({"event": "summary", "held": held.len()}));
    } else if !out.quiet {
        println!("{} held", held.len());
    }
}

/// The last line of `receive --json`: per file, what was resumed, read back,
/// dropped as corrupt, received twice and dropped while its writes held more than its share.
pub fn receive_summary(r: &mqft::ReceiveReport) -> Value {
    let files: Vec<Value> = r
        .files
        .iter()
        .map(|f| {
            json!({
                "path": path_json(&f.path), "transfer": f.transfer.to_string(), "size": f.size,
                "resumed_bytes": f.resumed_bytes, "read_back_bytes": f.read_back_bytes,
                "corrupt_chunks": f.corrupt_chunks, "duplicate_chunks": f.duplicate_chunks,
                "over_share_drops": f.over_share_drops,
            })
        })
        .collect();
    json!({"event": "summary", "files": files, "bytes": received_bytes(r)})
}

/// A send event as JSON.
pub fn send_json(e: &SendEvent) -> Value {
    match e {
        SendEvent::Connected => json!({"event": "connected"}),
        SendEvent::Disconnected { reason } => json!({"event": "disconnected", "reason": reason}),
        SendEvent::Started { path, transfer, size, chunk_size } => json!({
            "event": "started", "path": path_json(path), "transfer": transfer.to_string(),
            "size": size_json(*size), "chunk_size": chunk_size,
        }),
        SendEvent::ReceiverJoined { path, transfer, receiver, held_bytes } => json!({
            "event": "receiver_joined", "path": path_json(path), "transfer": transfer.to_string(),
            "receiver": receiver.as_str(), "held_bytes": held_bytes,
        }),
        SendEvent::Progress { path, transfer, receiver, bytes, total } => json!({
            "event": "progress", "path": path_json(path), "transfer": transfer.to_string(),
            "receiver": receiver.as_str(), "bytes": bytes, "total": size_json(*total),
        }),
        SendEvent::ReceiverComplete { path, transfer, receiver } => json!({
            "event": "receiver_complete", "path": path_json(path), "transfer": transfer.to_string(),
            "receiver": receiver.as_str(),
        }),
        SendEvent::ReceiverFailed { path, transfer, receiver, reason } => json!({
            "event": "receiver_failed", "path": path_json(path), "transfer": transfer.to_string(),
            "receiver": receiver.as_str(), "reason": reason.map(|r| r.to_string()),
        }),
        SendEvent::StoredAs { path, transfer, receiver, name, change, detail } => json!({
            "event": "stored_as", "path": path_json(path), "transfer": transfer.to_string(),
            "receiver": receiver.as_str(), "name": name, "change": change_json(*change), "detail": detail,
        }),
        SendEvent::Queued { path, transfer, receiver, position } => json!({
            "event": "queued", "path": path_json(path), "transfer": transfer.to_string(),
            "receiver": receiver.as_str(), "position": position,
        }),
        SendEvent::Retrying { path, transfer, receiver, reason, retry_in } => json!({
            "event": "retrying", "path": path_json(path), "transfer": transfer.to_string(),
            "receiver": receiver.as_str(), "reason": reason.to_string(), "code": reason.code(),
            "retry_in_ms": u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
        }),
        SendEvent::StreamEnded { path, transfer, size } => json!({
            "event": "stream_ended", "path": path_json(path), "transfer": transfer.to_string(), "size": size,
        }),
        SendEvent::Finished { path, transfer } => json!({
            "event": "finished", "path": path_json(path), "transfer": transfer.to_string(),
        }),
        SendEvent::ChunkSizeLowered { path, transfer, chunk_size, retry_with } => json!({
            "event": "chunk_size_lowered", "path": path_json(path), "transfer": transfer.to_string(),
            "chunk_size": chunk_size, "retry_with": retry_with,
        }),
        SendEvent::Failed { path, transfer, kind, message } => json!({
            "event": "failed", "path": path_json(path), "transfer": transfer.map(|t| t.to_string()),
            "kind": format!("{kind:?}"), "message": message,
        }),
        other => json!({"event": "other", "debug": format!("{other:?}")}),
    }
}

/// A manifest's sender name: `null` for an unnamed sender.
fn sender_json(sender: &str) -> Value {
    if sender.is_empty() {
        Value::Null
    } else {
        Value::from(sender)
    }
}

/// Why a receiver stored a file under another name, as a stable word.
fn change_json(change: mqft::proto::NameChange) -> Value {
    match change {
        mqft::proto::NameChange::Sanitized => "sanitized".into(),
        mqft::proto::NameChange::Renamed => "renamed".into(),
        other => format!("code {}", other.code()).into(),
    }
}

/// " from NAME" for a named sender, for the human output.
fn from(sender: &str) -> String {
    if sender.is_empty() {
        String::new()
    } else {
        format!(" from {sender}")
    }
}

/// A receive event as JSON.
pub fn receive_json(e: &ReceiveEvent) -> Value {
    match e {
        ReceiveEvent::Connected { receiver } => json!({"event": "connected", "receiver": receiver.as_str()}),
        ReceiveEvent::Disconnected { reason } => json!({"event": "disconnected", "reason": reason}),
        ReceiveEvent::Offered { transfer, name, size, sender } => json!({
            "event": "offered", "transfer": transfer.to_string(), "name": name, "size": size_json(*size),
            "sender": sender_json(sender),
        }),
        ReceiveEvent::Rejected { transfer, name, reason, detail, sender } => json!({
            "event": "rejected", "transfer": transfer.to_string(), "name": name,
            "reason": reason.to_string(), "code": reason.code(), "detail": detail,
            "sender": sender_json(sender),
        }),
        ReceiveEvent::Signed { transfer, signer } => json!({
            "event": "signed", "transfer": transfer.to_string(), "signer": signer,
        }),
        ReceiveEvent::Queued { transfer, name, position, sender } => json!({
            "event": "queued", "transfer": transfer.to_string(), "name": name, "position": position,
            "sender": sender_json(sender),
        }),
        ReceiveEvent::Accepted { transfer, path, size, resumed_bytes, sender } => json!({
            "event": "accepted", "transfer": transfer.to_string(), "path": path_json(path),
            "size": size_json(*size), "resumed_bytes": resumed_bytes, "sender": sender_json(sender),
        }),
        ReceiveEvent::Progress { transfer, path, bytes, total } => json!({
            "event": "progress", "transfer": transfer.to_string(), "path": path_json(path),
            "bytes": bytes, "total": size_json(*total),
        }),
        ReceiveEvent::Completed(f) => verified_json("completed", f),
        ReceiveEvent::AlreadyComplete(f) => verified_json("already_complete", f),
        ReceiveEvent::Failed { transfer, path, failure } => json!({
            "event": "failed", "transfer": transfer.to_string(), "path": path_json(path),
            "message": failure.to_string(),
        }),
        other => json!({"event": "other", "debug": format!("{other:?}")}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_sequences() {
        assert_eq!(escape("a\x1b[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(escape("plain.jpg"), "plain.jpg");
        assert_eq!(escape("photo\u{202e}gnp.exe"), "photo\\u{202e}gnp.exe");
        assert_eq!(escape("..\u{2215}..\u{2215}etc"), "..\\u{2215}..\\u{2215}etc");
    }

    #[test]
    fn durations_read_as_the_flags_take_them() {
        let text = |s| duration_text(Duration::from_secs(s));
        assert_eq!(text(86_400), "24h");
        assert_eq!(text(7 * 86_400), "7d");
        assert_eq!(text(3), "3s");
        assert_eq!(text(5400), "1h30m");
        assert_eq!(text(3599), "59m59s");
        assert_eq!(text(2 * 86_400 + 60), "2d1m");
    }
}
