//! Hostile or broken input: whatever a sender, or anyone else who can publish
//! to the broker or write to the output directory, throws at a receiver, the
//! receiver answers with a clear refusal or ignores it, keeps serving, and
//! writes nothing outside its output directory or through a link planted in it.
//!
//! - names: a generator of hostile file names (path syntax of every platform,
//!   separator look-alikes, controls and terminal escapes, invisible and bidi
//!   characters, NFC/NFD spellings, Windows device names, multi-byte text at
//!   the 255-byte cut) drives property tests of `sanitize_file_name` and of the
//!   escaping the CLI prints names with, and a sample of it goes through a real
//!   receiver;
//! - links: symlinks, hard links and a FIFO planted at the final name, the
//!   `.part`, the `.state` and its temporary file (in the state folder);
//! - lying manifests and chunks, garbage on every topic, a flood of manifests,
//!   garbage acks at a sender, and a disk that fills up mid-transfer.
//!
//! Everything crosses a real mosquitto on loopback; the test publishes its
//! crafted payloads with a raw rumqttc client, built with the `mqft_proto`
//! encoders.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use mqft::proto::{
    self, AbortReason, Ack, Chunk, Ctl, Manifest, Meta, Prefix, ReceiveFailure, RejectReason, TransferId,
};
use mqft::{ChunkSize, MqttVersion, ReceiveEvent, ReceiveHandle, SendFile, SendOptions};
use mqft_tests::{files_equal, random_file, wait_until, Broker, Process, TmpfsMount, HOST};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tokio::sync::mpsc;

use crate::util::{client, connected, drain, next_matching, receive_opts, visible, within, LIMIT};

// ---------------------------------------------------------------------------
// A raw MQTT client for crafted payloads.

/// A plain rumqttc (MQTT 3.1.1) client that publishes whatever the test
/// builds, and collects what arrives on its subscriptions.
struct Raw {
    client: rumqttc::AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Raw {
    async fn connect(broker: &Broker, client_id: &str) -> Raw {
        let mut o = rumqttc::MqttOptions::new(client_id, HOST, broker.port());
        // Room for the oversized garbage this client sends.
        o.set_max_packet_size(64 << 20, 64 << 20);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = rumqttc::AsyncClient::new(o, 256);
        let (tx, messages) = mpsc::unbounded_channel();
        let (up_tx, up) = tokio::sync::oneshot::channel();
        let mut up_tx = Some(up_tx);
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(t) = up_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send((p.topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        within("the raw client's CONNACK", up).await.unwrap();
        Raw { client, messages, task }
    }

    /// Publishes `payload` on `topic`, QoS 1, not retained.
    async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into()).await.unwrap();
    }

    /// Subscribes to `filter` and waits until the broker has it in place.
    async fn subscribe(&self, broker: &Broker, client_id: &str, filter: &str) {
        self.client.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.unwrap();
        until("the raw client's subscription", || broker.has_subscription(client_id, filter)).await;
    }

    /// The next ack receiver `from` published for transfer `m`, decoded, for
    /// which `wanted` holds.
    async fn next_ack(&mut self, m: &Manifest, from: &str, wanted: impl Fn(&Ack) -> bool) -> Ack {
        let prefix = Prefix::default();
        within("an ack", async {
            loop {
                let (topic, payload) = self.messages.recv().await.expect("the raw client's task runs");
                if let Some(proto::Topic::Ack(id, rid)) = prefix.parse(&topic) {
                    if id == m.id && rid.as_str() == from {
                        if let Ok(ack) = Ack::decode(&payload, m.chunk_count) {
                            if wanted(&ack) {
                                return ack;
                            }
                        }
                    }
                }
            }
        })
        .await
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` every 10 ms until it holds, within [`LIMIT`].
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Starts a receive into `dir`, and waits until it is subscribed to the
/// manifests: the test's own manifests are not retained, so one published
/// before would be lost (the library's sender retains and repeats its own).
async fn start_receive(
    broker: &Broker,
    client: &mqft::Client,
    dir: &Path,
    opts: mqft::ReceiveOptions,
) -> ReceiveHandle {
    let filter = Prefix::default().manifest_filter();
    let before = broker.subscribers(&filter).len();
    let mut rx = client.receive(dir, opts);
    connected(&mut rx).await;
    until("the receiver's subscription", || broker.subscribers(&filter).len() > before).await;
    rx
}

/// The manifest the library's sender builds for `path` under `name` with
/// chunks of `chunk_size` bytes (the run aside, which only the sender knows):
/// its id is derived from these, so the test knows the transfer's topics and
/// hidden file names before it starts.
fn manifest_of(path: &Path, name: &str, chunk_size: u32, run: u32) -> Manifest {
    let bytes = fs::read(path).unwrap();
    let sha = proto::integrity::sha256(&bytes);
    Manifest::new(name.into(), bytes.len() as u64, chunk_size, sha, Meta::default(), run).unwrap()
}

/// The chunk payload of chunk `index` of `path`, as a sender of run `run` sends it.
fn chunk_of(path: &Path, m: &Manifest, run: u32, seq: u32, index: u32) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    let start = m.chunk_offset(index) as usize;
    let end = start + m.chunk_len(index) as usize;
    Chunk::encode(run, seq, index, &bytes[start..end])
}

/// The partial file of transfer `m` received into `out` (in its state folder).
fn part_path(out: &Path, _name: &str, m: &Manifest) -> PathBuf {
    parts_dir(out).join(format!("{}.part", m.id))
}

/// Its state file.
fn state_path(out: &Path, _name: &str, m: &Manifest) -> PathBuf {
    parts_dir(out).join(format!("{}.state", m.id))
}

/// Checks that `out` holds only the state folder, and returns how many files of
/// transfers in progress are in it.
fn only_the_state_folder(out: &Path) -> usize {
    let names: Vec<_> = fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [".mqft"], "{}", out.display());
    fs::read_dir(parts_dir(out)).unwrap().count()
}

/// Where a receiver into `out` keeps the files of transfers in progress.
fn parts_dir(out: &Path) -> PathBuf {
    out.join(".mqft/part")
}

/// Every file under `dir`, recursively (symlinks listed, not followed).
fn all_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            files.extend(all_files(&entry.path()));
        } else {
            files.insert(entry.path());
        }
    }
    files
}

/// Send options whose chunk size is known up front (so are the transfer ids).
fn fixed_chunks(chunk_size: u32) -> SendOptions {
    let mut o = SendOptions::default();
    o.chunk_size = ChunkSize::Fixed(chunk_size);
    o.protocol.join_timeout = Duration::from_secs(10);
    o
}

// ---------------------------------------------------------------------------
// Names.

/// Pieces hostile names are made of.
const FRAGMENTS: &[&str] = &[
    // Path syntax of every platform.
    "/",
    "\\",
    "..",
    ".",
    "../",
    "..\\",
    "C:",
    "C:\\",
    "c:x",
    "\\\\?\\",
    "\\\\server\\share\\",
    "~",
    "/etc/passwd",
    // Separator and dot look-alikes, some of which NFKC folds into the real thing.
    "\u{2215}",
    "\u{2044}",
    "\u{FF0F}",
    "\u{29F8}",
    "\u{FF3C}",
    "\u{2216}",
    "\u{FE68}",
    "\u{2025}",
    "\u{FF0E}",
    "\u{2105}",
    // NUL, controls and terminal escape sequences.
    "\0",
    "\x1b[2J",
    "\x1b]0;pwned\x07",
    "\x1b[31m",
    "\u{9b}6n",
    "\r",
    "\n",
    "\t",
    "\x7f",
    // Unicode: NFC/NFD spellings, invisible characters, bidi controls.
    "e\u{301}",
    "\u{e9}",
    "\u{212B}",
    "\u{200B}",
    "\u{200D}",
    "\u{FEFF}",
    "\u{00AD}",
    "\u{202E}",
    "\u{2066}",
    "\u{200F}",
    "\u{2028}",
    "\u{E0041}",
    "\u{FE0F}",
    // Windows device names, streams, forbidden characters and junk.
    "CON",
    "nul.txt",
    "COM1",
    "LPT9",
    "aux",
    "COM\u{b9}",
    "PRN.tar.gz",
    " ",
    ". ",
    "::$DATA",
    "<>:\"|?*",
    // Plain and multi-byte text, extensions.
    "photo",
    ".jpg",
    ".tar.gz",
    "\u{1F600}",
    "写真",
];

/// A hostile name: up to a dozen pieces, plain or multi-byte runs long enough
/// to reach the 255-byte cut.
fn hostile_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(FRAGMENTS).prop_map(str::to_owned),
        1 => "[a-z0-9 ._-]{1,40}",
        1 => "[\u{e9}\u{20ac}\u{1F600}\u{5199}]{1,90}",
        1 => "[\\x00-\\x1f\\x7f-\\u{9f}]{1,3}",
        1 => "\\PC{1,8}",
        1 => (1usize..300).prop_map(|n| "x".repeat(n)),
    ];
    prop::collection::vec(piece, 1..12).prop_map(|v| v.concat())
}

/// Characters no sanitized name may hold, listed here independently of
/// `mqft::name`: controls, `/`, `\`, what Windows forbids, bidi controls,
/// invisible characters, separator look-alikes.
fn is_unsafe_in_a_name(c: char) -> bool {
    c.is_control() || matches!(c, '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*') || is_unsafe_to_print(c)
}

/// Characters that must not reach a terminal raw (besides controls).
fn is_unsafe_to_print(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{3164}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{E0000}'..='\u{E0FFF}'
                | '\u{2044}'
                | '\u{2215}'
                | '\u{29F8}'
                | '\u{FF0F}'
                | '\u{2216}'
                | '\u{FE68}'
                | '\u{FF3C}'
                | '\u{2105}'
        )
}

/// `CON`, `nul.txt`, `COM1`, ...: a Windows device name, extension or not.
fn is_windows_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end().to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$")
        || ["COM", "LPT"].iter().any(|p| {
            stem.strip_prefix(p).is_some_and(|d| {
                let mut ch = d.chars();
                matches!((ch.next(), ch.next()), (Some('0'..='9' | '\u{b9}' | '\u{b2}' | '\u{b3}'), None))
            })
        })
}

/// Undoes [`mqft::name::escape`]: `\\`, `\n`, `\t`, `\r` and `\u{..}`.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the name, the sanitized one is a single plain component that
    /// lands inside the directory on a real file system, holds nothing unsafe,
    /// is at most 255 bytes, and cleaning it again changes nothing; or the name
    /// is refused.
    #[test]
    fn hostile_names_land_inside_the_directory_or_are_refused(raw in hostile_name()) {
        let Ok(name) = mqft::sanitize_file_name(&raw) else { return Ok(()) };
        let s = name.as_str();
        prop_assert!(!s.is_empty() && s.len() <= mqft::name::MAX_NAME_BYTES, "{s:?}");
        prop_assert!(!s.chars().any(is_unsafe_in_a_name), "{raw:?} kept an unsafe character: {s:?}");
        prop_assert!(!s.starts_with(|c: char| c == '.' || c.is_whitespace()), "{s:?}");
        prop_assert!(!s.ends_with(|c: char| c == '.' || c.is_whitespace()), "{s:?}");
        // A device name only on Windows: elsewhere `con.jpg` is a plain name.
        prop_assert!(!cfg!(windows) || !is_windows_device(s), "{raw:?} became the device name {s:?}");
        let again = mqft::sanitize_file_name(s);
        prop_assert_eq!(again.as_ref(), Ok(&name), "not idempotent");

        // On a real file system: created where expected, and nowhere else.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        fs::create_dir(&dir).unwrap();
        let path = name.in_dir(&dir);
        prop_assert_eq!(path.parent(), Some(dir.as_path()));
        fs::write(&path, b"x").unwrap();
        let listed: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        prop_assert_eq!(listed, vec![std::ffi::OsString::from(s)]);
        prop_assert_eq!(all_files(root.path()).len(), 1);
    }

    /// The escaping the CLI prints names with (`report::escape` is
    /// `mqft::name::escape`) leaves nothing that drives or fools a terminal,
    /// changes nothing else, and can be undone: two names never print alike.
    #[test]
    fn hostile_names_print_escaped(raw in hostile_name()) {
        let shown = mqft::name::escape(&raw);
        prop_assert!(!shown.chars().any(is_unsafe_to_print), "{raw:?} printed as {shown:?}");
        if !raw.chars().any(|c| c == '\\' || is_unsafe_to_print(c)) {
            prop_assert_eq!(&shown, &raw);
        }
        let undone = unescape(&shown);
        prop_assert_eq!(undone.as_ref(), Some(&raw), "{:?} does not undo", shown);
        // What a sanitized name shows is the name itself.
        if let Ok(name) = mqft::sanitize_file_name(&raw) {
            prop_assert_eq!(mqft::name::escape(name.as_str()), name.as_str());
        }
    }
}

/// Names a sender may put in a manifest (1 to 255 bytes), drawn from
/// [`hostile_name`] with a fixed seed, plus one of each kind by hand.
fn sample_of_hostile_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "../../escape.bin",
        "/etc/cron.d/evil",
        "C:\\Windows\\System32\\evil.dll",
        "c:evil.bin",
        "..\u{2215}..\u{2215}spoof\u{2215}passwd",
        "\u{FF0F}etc\u{FF0F}shadow",
        "\x1b[2J\x1b]0;pwned\x07red.bin",
        "photo\u{202E}gnp.exe",
        "zero\u{200B}width\u{FEFF}.bin",
        "caf\u{e9}.bin",
        "cafe\u{301}.bin",
        "nul.txt",
        "COM1 .log",
        "LPT9",
        "..",
        " . ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // 253 bytes of 4-byte characters: the hidden names' 200-byte cut falls
    // inside one. And 255 bytes exactly, the most a manifest carries.
    names.push(format!("a{}.jpg", "\u{1F600}".repeat(62)));
    names.push(format!("{}\u{e9}.bin", "x".repeat(249)));
    let mut runner = TestRunner::deterministic();
    let strategy = hostile_name();
    while names.len() < 40 {
        let name = strategy.new_tree(&mut runner).unwrap().current();
        if (1..=proto::wire::MAX_NAME_LEN).contains(&name.len()) {
            names.push(name);
        }
    }
    // One send per name and per sanitized name: two names that clean up alike
    // would race for one file (the second refused as existing, which is right,
    // but not what this test looks at). Likewise a name that cleans up to a
    // directory of another's path (`_` and `_/x`): one of them cannot be placed.
    let (mut raw_seen, mut clean_seen) = (HashSet::new(), HashSet::<String>::new());
    names.retain(|n| {
        raw_seen.insert(n.clone())
            && match mqft::sanitize_path(n) {
                Ok(clean) => {
                    let clean = String::from(clean);
                    let clash = clean_seen
                        .iter()
                        .any(|c| clean.starts_with(&format!("{c}/")) || c.starts_with(&format!("{clean}/")));
                    !clash && clean_seen.insert(clean)
                }
                Err(_) => true,
            }
    });
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_hostile_names_through_a_real_receiver() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("a").join("b").join("out");
    fs::create_dir_all(&out).unwrap();
    let content = random_file(src.path(), "content.bin", 3000, 7001);
    let client = client(&broker, MqttVersion::V5);
    let mut opts = receive_opts("rx-hostile-names");
    opts.max_concurrent = 64;
    let mut rx = client.receive(&out, opts);
    connected(&mut rx).await;

    let names = sample_of_hostile_names();
    let files: Vec<SendFile> = names.iter().map(|n| SendFile::named(&content, n.clone())).collect();
    let mut send_opts = fixed_chunks(1024);
    send_opts.concurrency = 8;
    let mut send = client.send(files, send_opts);
    drain(&mut send).await;
    let _ = within("the send", send.wait()).await;
    rx.cancel();
    let events = drain(&mut rx).await;
    within("the receive", rx.wait()).await.unwrap();

    let mut landed = BTreeSet::new();
    for raw in &names {
        let id = manifest_of(&content, raw, 1024, 0).id;
        let completed = events.iter().find_map(|e| match e {
            ReceiveEvent::Completed { transfer, path, .. } if *transfer == id => Some(path.clone()),
            _ => None,
        });
        let rejected = events.iter().find_map(|e| match e {
            ReceiveEvent::Rejected { transfer, reason, .. } if *transfer == id => Some(*reason),
            _ => None,
        });
        match (mqft::sanitize_path(raw), completed, rejected) {
            (Ok(name), Some(path), None) => {
                assert_eq!(path, out.join(name.as_str()), "{raw:?}");
                let meta = fs::symlink_metadata(&path).unwrap();
                assert!(meta.is_file(), "{raw:?}");
                assert!(files_equal(&content, &path), "{raw:?}");
                landed.insert(path);
            }
            (Err(_), None, Some(RejectReason::BadName)) => {}
            (expected, completed, rejected) => {
                panic!("{raw:?}: expected {expected:?}, completed {completed:?}, rejected {rejected:?}")
            }
        }
    }
    // Nothing anywhere but in the output directory, and there only the files
    // that arrived and the receiver's state folder.
    for path in all_files(root.path()) {
        if path.starts_with(out.join(".mqft")) {
            continue;
        }
        assert!(path.starts_with(&out), "{} is outside the output directory", path.display());
        assert!(landed.contains(&path), "{}", path.display());
    }
    // Both spellings of `café` arrived, as two files: names are kept byte for byte.
    assert!(landed.contains(&out.join("caf\u{e9}.bin")) && landed.contains(&out.join("cafe\u{301}.bin")));
}

/// Waits until the receiver process has subscribed to the manifests.
fn wait_subscribed(broker: &Broker, before: usize, process: &Process) {
    assert!(
        wait_until(LIMIT, || broker.subscribers(&Prefix::default().manifest_filter()).len() > before),
        "mqft receive did not subscribe\nstdout: {}\nstderr: {}",
        process.stdout(),
        process.stderr()
    );
}

/// An `mqft` command, shielded from the developer's `MQFT_*` settings.
fn mqft_command() -> Command {
    mqft_tests::mqft_command(std::iter::empty::<&str>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_hostile_names_escaped() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let content = random_file(src.path(), "content.bin", 2000, 7101);
    let before = broker.subscribers(&Prefix::default().manifest_filter()).len();
    // With its logs (-v) too, which name names; colours off, or their escape
    // sequences would be all this test sees: the CLI colours its logs even when
    // stderr is not a terminal.
    let receiver = Process::spawn(
        mqft_command().env("NO_COLOR", "1").args(["receive", "--once", "-v", "--out"]).arg(out.path()).args([
            "-h",
            HOST,
            "-p",
            &broker.port().to_string(),
            "--name",
            "rx-cli-names",
        ]),
    );
    wait_subscribed(&broker, before, &receiver);
    let client = client(&broker, MqttVersion::V5);
    // Refused (nothing left once cleaned: the last component is `..`), so
    // printed raw but escaped...
    let refused = "nul.\x1b[31m\u{202E}\u{2215}txt/..";
    let err = within("the refused send", client.send([SendFile::named(&content, refused)], fixed_chunks(1024)).wait())
        .await
        .unwrap_err();
    assert!(matches!(err, mqft::Error::Rejected { reason: RejectReason::BadName, .. }), "{err:?}");
    // ...then accepted under its clean name, which is printed.
    let accepted = "\x1b[2J\x1b]0;pwned\x07photo\u{202E}gnp\u{2215}.exe";
    within("the send", client.send([SendFile::named(&content, accepted)], fixed_chunks(1024)).wait()).await.unwrap();
    let output = receiver.finish_within(LIMIT);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        let bad: Vec<char> = text.chars().filter(|&c| c != '\n' && is_unsafe_to_print(c)).collect();
        assert!(bad.is_empty(), "{what} holds {bad:?} raw:\n{text}");
    }
    assert!(stderr.contains("nul.\\u{1b}[31m\\u{202e}\\u{2215}txt"), "the refused name, escaped:\n{stderr}");
    let clean = mqft::sanitize_file_name(accepted).unwrap();
    assert_eq!(stdout.trim_end(), out.path().join(clean.as_str()).display().to_string());
}

// ---------------------------------------------------------------------------
// Links planted in the output directory.

/// A file outside the output directory that a planted link points at.
struct Victim {
    path: PathBuf,
    content: Vec<u8>,
    ino: u64,
    modified: SystemTime,
}

impl Victim {
    fn new(dir: &Path, name: &str, content: &[u8]) -> Victim {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        let meta = fs::metadata(&path).unwrap();
        Victim { path, content: content.to_vec(), ino: meta.ino(), modified: meta.modified().unwrap() }
    }

    /// The same inode, with the same bytes and modification time.
    fn assert_untouched(&self, what: &str) {
        let meta = fs::metadata(&self.path).unwrap_or_else(|e| panic!("{what}: the victim is gone: {e}"));
        assert_eq!(meta.ino(), self.ino, "{what}: the victim was replaced");
        assert!(fs::read(&self.path).unwrap() == self.content, "{what}: the victim's bytes changed");
        assert_eq!(meta.modified().unwrap(), self.modified, "{what}: the victim was written to");
    }
}

/// Where a trap is planted, and what it is.
#[derive(Debug, Clone, Copy)]
enum Trap {
    SymlinkAtFinal,
    DanglingSymlinkAtFinal,
    SymlinkAtPart,
    HardLinkAtPart,
    SymlinkAtState,
    HardLinkAtState,
    FifoAtState,
    SymlinkAtStateTmp,
}

impl Trap {
    const ALL: [Trap; 8] = [
        Trap::SymlinkAtFinal,
        Trap::DanglingSymlinkAtFinal,
        Trap::SymlinkAtPart,
        Trap::HardLinkAtPart,
        Trap::SymlinkAtState,
        Trap::HardLinkAtState,
        Trap::FifoAtState,
        Trap::SymlinkAtStateTmp,
    ];

    /// Plants the trap for transfer `m` of `name` in `out`, pointing at `victim`.
    fn plant(self, out: &Path, name: &str, m: &Manifest, victim: &Victim) {
        use std::os::unix::fs::symlink;
        let _ = name;
        fs::create_dir_all(parts_dir(out)).unwrap();
        let hidden = |ext: &str| parts_dir(out).join(format!("{}.{ext}", m.id));
        match self {
            Trap::SymlinkAtFinal => symlink(&victim.path, out.join(name)).unwrap(),
            Trap::DanglingSymlinkAtFinal => symlink(victim.path.with_extension("nowhere"), out.join(name)).unwrap(),
            Trap::SymlinkAtPart => symlink(&victim.path, hidden("part")).unwrap(),
            Trap::HardLinkAtPart => fs::hard_link(&victim.path, hidden("part")).unwrap(),
            Trap::SymlinkAtState => symlink(&victim.path, hidden("state")).unwrap(),
            Trap::HardLinkAtState => fs::hard_link(&victim.path, hidden("state")).unwrap(),
            Trap::FifoAtState => {
                let made = Command::new("mkfifo").arg(hidden("state")).status().unwrap();
                assert!(made.success(), "mkfifo");
            }
            Trap::SymlinkAtStateTmp => symlink(&victim.path, hidden("state.tmp")).unwrap(),
        }
    }

    /// Whether the receiver must refuse the file (something is at its name)
    /// rather than receive it.
    fn refused(self) -> bool {
        matches!(self, Trap::SymlinkAtFinal | Trap::DanglingSymlinkAtFinal)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_in_the_output_directory_are_never_written_through() {
    const CHUNK: u32 = 16 * 1024;
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let client = client(&broker, MqttVersion::V5);

    // One file per trap, each with a victim of the file's own size (a resume
    // would take a .part of the right size), holding other bytes.
    let mut cases = Vec::new();
    for (i, trap) in Trap::ALL.into_iter().enumerate() {
        let name = format!("trap{i}.bin");
        let len = 40_000 + i as u64 * 1000;
        let path = random_file(src.path(), &name, len, 7200 + i as u64);
        let m = manifest_of(&path, &name, CHUNK, 0);
        let victim = Victim::new(elsewhere.path(), &format!("victim{i}"), &vec![b'v'; len as usize]);
        trap.plant(out.path(), &name, &m, &victim);
        cases.push((trap, name, path, m, victim));
    }

    let mut opts = receive_opts("rx-traps");
    // Refused rather than kept beside (the default): a trap at the final name
    // must stay as it is.
    opts.on_conflict = mqft::OnConflict::Fail;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;
    let files: Vec<SendFile> = cases.iter().map(|(_, name, path, ..)| SendFile::named(path, name.clone())).collect();
    let mut send_opts = fixed_chunks(CHUNK);
    send_opts.concurrency = Trap::ALL.len();
    let mut send = client.send(files, send_opts);
    drain(&mut send).await;
    let _ = within("the send", send.wait()).await;
    rx.cancel();
    let events = drain(&mut rx).await;
    within("the receive", rx.wait()).await.unwrap();

    for (trap, name, path, m, victim) in &cases {
        let what = format!("{trap:?}");
        victim.assert_untouched(&what);
        let rejected = events.iter().find_map(|e| match e {
            ReceiveEvent::Rejected { transfer, reason, .. } if *transfer == m.id => Some(*reason),
            _ => None,
        });
        let final_path = out.path().join(name);
        if trap.refused() {
            assert_eq!(rejected, Some(RejectReason::Exists), "{what}: {events:#?}");
            assert!(fs::symlink_metadata(&final_path).unwrap().is_symlink(), "{what}: the link was replaced");
            assert!(!part_path(out.path(), name, m).exists(), "{what}: nothing was started");
        } else {
            assert_eq!(rejected, None, "{what}");
            let meta = fs::symlink_metadata(&final_path).unwrap_or_else(|e| panic!("{what}: not received: {e}"));
            assert!(meta.is_file() && meta.nlink() == 1, "{what}: {meta:?}");
            assert!(files_equal(path, &final_path), "{what}: the received file differs");
            // Nothing is left of the transfer's own files: the completed store
            // remembers it.
            for left in [part_path(out.path(), name, m), state_path(out.path(), name, m)] {
                assert!(fs::symlink_metadata(&left).is_err(), "{what}: {} is left", left.display());
            }
        }
    }
    // The victims' directory holds the victims and nothing else.
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_replaces_a_symlink_at_the_final_name_not_its_target() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "over.bin", 30_000, 7301);
    let victim = Victim::new(elsewhere.path(), "victim", b"precious, elsewhere");
    std::os::unix::fs::symlink(&victim.path, out.path().join("over.bin")).unwrap();
    let client = client(&broker, MqttVersion::V311);
    let mut opts = receive_opts("rx-overwrite");
    opts.on_conflict = mqft::OnConflict::Overwrite;
    opts.once = true;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;
    within("the send", client.send([&path], SendOptions::default()).wait()).await.unwrap();
    within("the receive", rx.wait()).await.unwrap();
    victim.assert_untouched("overwrite");
    let meta = fs::symlink_metadata(out.path().join("over.bin")).unwrap();
    assert!(meta.is_file(), "the symlink itself is replaced: {meta:?}");
    assert!(files_equal(&path, &out.path().join("over.bin")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_file_swapped_for_a_hard_link_is_not_resumed_into() {
    const CHUNK: u32 = 16 * 1024;
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let len = 4 << 20;
    let path = random_file(src.path(), "swap.bin", len, 7401);
    let m = manifest_of(&path, "swap.bin", CHUNK, 0);
    let (part, state) = (part_path(out.path(), "swap.bin", &m), state_path(out.path(), "swap.bin", &m));
    let client = client(&broker, MqttVersion::V5);

    // A first attempt stops half way, leaving a .part and its state.
    let mut opts = receive_opts("rx-swap");
    opts.checkpoint_chunks = 4;
    let mut rx = client.receive(out.path(), opts.clone());
    connected(&mut rx).await;
    let mut slow = fixed_chunks(CHUNK);
    slow.protocol.window = 16;
    let send = client.send([&path], slow.clone());
    next_matching(&mut rx, "the first bytes", |e| matches!(e, ReceiveEvent::Progress { bytes, .. } if *bytes > 0))
        .await;
    until("a checkpoint", || state.exists()).await;
    rx.cancel();
    within("the receive", rx.wait()).await.unwrap();
    let _ = within("the first send", send.wait()).await;
    assert!(state.exists() && part.exists(), "a resumable partial transfer is left");

    // Someone swaps the .part for a hard link to a file of theirs, of the
    // right size, and leaves the state that says half of it is there.
    let victim = Victim::new(elsewhere.path(), "victim", &vec![b'v'; len as usize]);
    fs::remove_file(&part).unwrap();
    fs::hard_link(&victim.path, &part).unwrap();

    opts.once = true;
    let mut rx = client.receive(out.path(), opts);
    connected(&mut rx).await;
    let send = client.send([&path], slow);
    let accepted = next_matching(&mut rx, "the second Accepted", |e| matches!(e, ReceiveEvent::Accepted { .. })).await;
    assert!(matches!(accepted, ReceiveEvent::Accepted { resumed_bytes: 0, .. }), "resumed into the link: {accepted:?}");
    within("the second send", send.wait()).await.unwrap();
    within("the second receive", rx.wait()).await.unwrap();
    victim.assert_untouched("hard link at the .part of a resume");
    assert!(files_equal(&path, &out.path().join("swap.bin")));
}

// ---------------------------------------------------------------------------
// Lying manifests and chunks.

/// Publishes `m` with the raw client and returns the ack `from` gives it.
async fn offer(raw: &mut Raw, m: &Manifest, from: &str) -> Ack {
    raw.publish(&Prefix::default().manifest(&m.id), m.encode()).await;
    raw.next_ack(m, from, |_| true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_above_the_limit_or_the_free_space_are_refused_before_anything_is_written() {
    let broker = Broker::start();
    let client = client(&broker, MqttVersion::V5);
    let mut raw = Raw::connect(&broker, "raw-sizes").await;
    raw.subscribe(&broker, "raw-sizes", "files/+/ack/+").await;
    let lie = |name: &str, size: u64| Manifest::new(name.into(), size, 16 << 20, [7; 32], Meta::default(), 1).unwrap();

    // A receiver on a 4 MiB file system, that takes files up to 1 GiB.
    let small = TmpfsMount::new(4 << 20);
    let mut opts = receive_opts("rx-small");
    opts.max_size = Some(1 << 30);
    let rx = start_receive(&broker, &client, small.path(), opts).await;
    // Above max_size: refused whatever the disk.
    let m = lie("huge.bin", 2 << 30);
    assert_eq!(
        offer(&mut raw, &m, "rx-small").await,
        Ack::Rejected { reason: RejectReason::TooLarge, detail: String::new() }
    );
    // Below max_size, above the free space.
    let m = lie("fat.bin", 8 << 20);
    assert!(matches!(offer(&mut raw, &m, "rx-small").await, Ack::Rejected { reason: RejectReason::DiskFull, .. }));
    // Nothing was written, not even a partial file.
    assert_eq!(only_the_state_folder(small.path()), 0);
    // A file that fits still does.
    let src = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "fits.bin", 1 << 20, 7501);
    within("the send", client.send([&path], SendOptions::default()).wait()).await.unwrap();
    assert!(files_equal(&path, &small.path().join("fits.bin")));
    rx.cancel();
    within("the receive", rx.wait()).await.unwrap();

    // A receiver on an ordinary disk, with no size limit, offered more than
    // any disk holds: 64 TiB (which some file systems would take as a sparse
    // .part, and ext4 refuses only once the .part is created).
    let big = tempfile::tempdir().unwrap();
    let rx = start_receive(&broker, &client, big.path(), receive_opts("rx-big")).await;
    let m = lie("galactic.bin", 1 << 46);
    assert!(matches!(offer(&mut raw, &m, "rx-big").await, Ack::Rejected { reason: RejectReason::DiskFull, .. }));
    assert_eq!(only_the_state_folder(big.path()), 0);
    rx.cancel();
    within("the receive", rx.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_chunks_and_manifests_mid_transfer_are_dropped_and_the_file_still_arrives() {
    const CHUNK: u32 = 16 * 1024;
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "lied-to.bin", 20 * u64::from(CHUNK) + 5000, 7601);
    let m = manifest_of(&path, "lied-to.bin", CHUNK, 1);
    assert_eq!(m.chunk_count, 21);
    let prefix = Prefix::default();
    let client = client(&broker, MqttVersion::V311);
    let mut opts = receive_opts("rx-lies");
    opts.once = true;
    let mut rx = start_receive(&broker, &client, out.path(), opts).await;
    let mut raw = Raw::connect(&broker, "raw-lies").await;
    raw.subscribe(&broker, "raw-lies", &prefix.ack_filter(&m.id)).await;

    // The test starts the transfer itself, as a sender of run 1.
    let ack = offer(&mut raw, &m, "rx-lies").await;
    assert!(matches!(ack, Ack::Ready { run: 1, .. }), "{ack:?}");

    // Chunks that lie, each dropped.
    let good = |i: u32| chunk_of(&path, &m, 1, i, i);
    let mut bad_crc = good(3);
    *bad_crc.last_mut().unwrap() ^= 0xff;
    let truncated = good(4);
    let mut trailing = good(5);
    trailing.push(0);
    let mut version = good(6);
    version[0] = proto::PROTOCOL_VERSION + 1;
    let lies: Vec<(u32, Vec<u8>)> = vec![
        (0, Chunk::encode(1, 0, 0, &[1; 100])),                // shorter than chunk 0 is
        (20, Chunk::encode(1, 0, 20, &[1; CHUNK as usize])),   // longer than the last chunk is
        (21, Chunk::encode(1, 0, 21, &[1; 5000])),             // past the end
        (4_000_000, Chunk::encode(1, 0, 4_000_000, &[1; 10])), // far past the end
        (2, good(1)),                                          // chunk 1's payload under chunk 2's topic
        (3, bad_crc),                                          // a flipped byte
        (4, truncated[..truncated.len() / 2].to_vec()),        // cut short
        (5, trailing),                                         // a byte too many
        (6, version),                                          // a protocol version from the future
        (7, Vec::new()),                                       // empty
        (8, vec![proto::PROTOCOL_VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]), // a varint overflow
    ];
    let corrupt = lies.len() as u64;
    for (index, payload) in &lies {
        raw.publish(&prefix.chunk(&m.id, *index), payload.clone()).await;
    }

    // Manifests that lie about the transfer in progress, each ignored.
    let mut other_size = m.clone();
    other_size.size += 1; // the id no longer matches: IdMismatch
    raw.publish(&prefix.manifest(&m.id), other_size.encode()).await;
    let other = Manifest::new("other.bin".into(), 10, 4, [1; 32], Meta::default(), 1).unwrap();
    raw.publish(&prefix.manifest(&m.id), other.encode()).await; // another transfer's, under this id
    raw.publish(&prefix.manifest(&m.id), [&[proto::PROTOCOL_VERSION][..], b"garbage"].concat()).await;
    // The same transfer with other metadata and a new run: the same transfer.
    let meta = Meta {
        content_type: Some("application/x-evil".into()),
        modified_ms: Some(-1),
        user: vec![("k".into(), "v".into())],
    };
    let renewed = Manifest::new(m.name.clone(), m.size, CHUNK, m.sha256, meta, 2).unwrap();
    assert_eq!(renewed.id, m.id);
    raw.publish(&prefix.manifest(&m.id), renewed.encode()).await;
    let ack = raw.next_ack(&m, "rx-lies", |a| matches!(a, Ack::Missing { .. })).await;
    assert!(matches!(&ack, Ack::Missing { missing, .. } if missing.len() == 21), "{ack:?}");

    // Half of the real chunks from the test's "sender", the rest from a real
    // send of the file, which finds the transfer under way.
    for i in (0..m.chunk_count).step_by(2) {
        raw.publish(&prefix.chunk(&m.id, i), good(i)).await;
    }
    let ack = raw.next_ack(&m, "rx-lies", |a| matches!(a, Ack::Progress { held: 11, .. })).await;
    assert!(matches!(ack, Ack::Progress { .. }));
    within("the real send", client.send([&path], fixed_chunks(CHUNK)).wait()).await.unwrap();
    let events = drain(&mut rx).await;
    let report = within("the receive", rx.wait()).await.unwrap();

    assert_eq!(report.files.len(), 1);
    assert_eq!(report.files[0].corrupt_chunks, corrupt, "{:?}", report.files[0]);
    assert!(files_equal(&path, &out.path().join("lied-to.bin")));
    let accepted = events.iter().filter(|e| matches!(e, ReceiveEvent::Accepted { .. })).count();
    assert_eq!(accepted, 1, "one transfer, accepted once: {events:#?}");
    assert!(!events.iter().any(|e| matches!(e, ReceiveEvent::Rejected { .. } | ReceiveEvent::Failed { .. })));
    assert_eq!(visible(out.path()), ["lied-to.bin"]);
}

// ---------------------------------------------------------------------------
// Garbage.

/// Deterministic junk: `len` bytes from `seed`.
fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Payloads that are not what any topic expects: empty, a version byte
/// alone, unknown versions, random bytes of several sizes, valid messages cut
/// short or followed by more.
fn garbage_payloads(valid: &[u8]) -> Vec<Vec<u8>> {
    // The version this build speaks, and the ones on either side of it.
    let v = proto::PROTOCOL_VERSION;
    let (mut newer, mut older) = (valid.to_vec(), valid.to_vec());
    newer[0] = v + 1;
    older[0] = v - 1;
    let mut trailing = valid.to_vec();
    trailing.push(0);
    vec![
        Vec::new(),
        vec![v],
        vec![0],
        newer,
        older,
        trailing,
        valid[..valid.len() / 2].to_vec(),
        vec![v, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        junk(16, 1),
        [&[v][..], &junk(1000, 2)].concat(),
        junk(100 << 10, 3),
    ]
}

/// The largest packet a receiver takes: the protocol's largest chunk and room
/// for headers (mqft's `MAX_CHUNK_SIZE + PACKET_OVERHEAD`).
const RECEIVER_MAX_PACKET: usize = (16 << 20) + (64 << 10);

async fn garbage_on_every_topic(version: MqttVersion) {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let prefix = Prefix::default();
    let client = client(&broker, version);
    let rid = format!("rx-garbage-{}", if version == MqttVersion::V5 { 5 } else { 311 });
    let mut rx = start_receive(&broker, &client, out.path(), receive_opts(&rid)).await;
    let mut raw = Raw::connect(&broker, "raw-garbage").await;
    raw.subscribe(&broker, "raw-garbage", "files/+/ack/+").await;

    // A transfer in progress, so that its chunk topics are subscribed too.
    let stalled = random_file(src.path(), "stalled.bin", 100_000, 7701);
    let m = manifest_of(&stalled, "stalled.bin", 16 * 1024, 1);
    assert!(matches!(offer(&mut raw, &m, &rid).await, Ack::Ready { .. }));
    let unknown = TransferId([0xab; 16]);
    let valid_manifest = Manifest::new("x.bin".into(), 10, 4, [1; 32], Meta::default(), 1).unwrap();
    let valid_ctl = Ctl::EndRound { run: 1, next_seq: 5 }.encode();
    let valid_ack = Ack::Progress { run: 1, next_seq: 5, held: 1 }.encode();
    let valid_chunk = chunk_of(&stalled, &m, 1, 0, 0);

    let mut barrage: Vec<(String, Vec<u8>)> = Vec::new();
    for id in [m.id, unknown] {
        for p in garbage_payloads(&valid_manifest.encode()) {
            barrage.push((prefix.manifest(&id), p));
        }
        for p in garbage_payloads(&valid_ctl) {
            barrage.push((prefix.ctl(&id), p));
        }
        for p in garbage_payloads(&valid_ack) {
            barrage.push((prefix.ack(&id, &crate::util::rid(&rid)), p));
        }
        for index in [0, 1, 6, 7, 1000, u32::MAX] {
            for p in garbage_payloads(&valid_chunk) {
                barrage.push((prefix.chunk(&id, index), p));
            }
        }
    }
    // Topics under the prefix that are not mqft's, with valid payloads even.
    let hex = m.id.to_string();
    for topic in [
        format!("files/{}/manifest", hex.to_uppercase()),
        format!("files/{hex}0/manifest"),
        format!("files/{}/manifest", &hex[..31]),
        "files//manifest".to_owned(),
        "files/not-an-id/manifest".to_owned(),
        format!("files/{hex}/manifest/extra"),
        format!("files/{hex}/chunk/-1"),
        format!("files/{hex}/chunk/01"),
        format!("files/{hex}/chunk/0x1"),
        format!("files/{hex}/chunk/99999999999999999999"),
        format!("files/{hex}/chunk/"),
        format!("files/{hex}/chunk"),
        format!("files/{hex}/ack/"),
        format!("files/{hex}/ack/UPPER"),
        format!("files/{hex}/ctl/extra"),
        format!("files/{hex}/other"),
        format!("files/{hex}"),
        "files".to_owned(),
        "files/".to_owned(),
    ] {
        barrage.push((topic.clone(), valid_manifest.encode()));
        barrage.push((topic, valid_chunk.clone()));
    }
    for (topic, payload) in &barrage {
        raw.publish(topic, payload.clone()).await;
    }
    // Refused as a bad manifest where the id is unknown.
    let unknown_m = Manifest { id: unknown, ..valid_manifest.clone() };
    let ack = raw.next_ack(&unknown_m, &rid, |_| true).await;
    assert!(matches!(ack, Ack::Rejected { reason: RejectReason::BadManifest, .. }), "{ack:?}");

    // Larger than the receiver takes, on topics it subscribes to. MQTT 5 tells
    // the broker the limit, and the broker drops these for the receiver; under
    // 3.1.1 each costs the receiver its connection, and its persistent session
    // would bring it back at every reconnect, for ever, but for the clean
    // session the runtime then starts (see `mqft::mqtt`).
    raw.publish(&prefix.manifest(&unknown), junk(RECEIVER_MAX_PACKET + 1024, 4)).await;
    raw.publish(&prefix.chunk(&m.id, 0), junk(RECEIVER_MAX_PACKET + 1024, 5)).await;

    // And the receiver keeps serving: a real file after the barrage.
    let path = random_file(src.path(), "after.bin", 1 << 20, 7702);
    let mut send_opts = SendOptions::default();
    send_opts.protocol.join_timeout = Duration::from_secs(20);
    within("the send after the barrage", client.send([&path], send_opts).wait()).await.unwrap();
    assert!(files_equal(&path, &out.path().join("after.bin")));
    rx.cancel();
    let events = drain(&mut rx).await;
    within("the receive", rx.wait()).await.unwrap();
    // The stalled transfer is still the one it was: garbage never failed it.
    assert!(
        !events.iter().any(|e| matches!(e, ReceiveEvent::Failed { transfer, failure, .. }
            if *transfer == m.id && *failure != ReceiveFailure::Local(RejectReason::Cancelled))),
        "{events:#?}"
    );
    let offered: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            ReceiveEvent::Offered { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(offered, ["stalled.bin", "after.bin"], "nothing in the barrage was taken for an offer");
    assert_eq!(visible(out.path()), ["after.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_topic_leaves_a_receiver_serving_mqtt_5() {
    garbage_on_every_topic(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_topic_leaves_a_receiver_serving_mqtt_3_1_1() {
    garbage_on_every_topic(MqttVersion::V311).await;
}

async fn garbage_acks_at_a_sender(version: MqttVersion) {
    const CHUNK: u32 = 16 * 1024;
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = random_file(src.path(), "pelted.bin", 3 << 20, 7801);
    let m = manifest_of(&path, "pelted.bin", CHUNK, 0);
    let client = client(&broker, version);
    let mut opts = receive_opts("rx-pelted");
    opts.once = true;
    let rx = start_receive(&broker, &client, out.path(), opts).await;
    let raw = Raw::connect(&broker, "raw-acks").await;

    let mut slow = fixed_chunks(CHUNK);
    slow.protocol.window = 32;
    let send = client.send([&path], slow);
    // Garbage on the ack topics of the transfer, under the real receiver's id
    // and others, for as long as the send runs.
    let prefix = Prefix::default();
    let lies = [
        Ack::Ready { run: 0, held: proto::RangeSet::new() }.encode(),
        Ack::Missing { run: 0, next_seq: 0, missing: (0..10_000).collect(), more: true }.encode(),
        Ack::Progress { run: 0, next_seq: 1, held: 1 }.encode(),
    ];
    let mut payloads: Vec<Vec<u8>> = lies.iter().flat_map(|l| garbage_payloads(l)).collect();
    // Above what a sender takes (64 KiB). MQTT 5 tells the broker, which then
    // drops such packets for the sender; under 3.1.1 each one costs the sender
    // its connection (and a reconnect), so a stream of them is a denial of
    // service that only the broker's own `max_packet_size` prevents: send one.
    let oversized = junk(200 << 10, 6);
    if version == MqttVersion::V5 {
        payloads.push(oversized);
    } else {
        payloads.retain(|p| p.len() < 32 << 10);
        raw.publish(&prefix.ack(&m.id, &crate::util::rid("rx-pelted")), oversized).await;
    }
    let started = Instant::now();
    let mut sent = 0;
    while !send.is_finished() && started.elapsed() < LIMIT {
        for from in ["rx-pelted", "ghost", "a"] {
            for p in &payloads {
                raw.publish(&prefix.ack(&m.id, &crate::util::rid(from)), p.clone()).await;
                sent += 1;
            }
        }
    }
    within("the pelted send", send.wait()).await.unwrap();
    within("the receive", rx.wait()).await.unwrap();
    assert!(sent > 100, "the barrage ran: {sent} acks");
    assert!(files_equal(&path, &out.path().join("pelted.bin")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_pelted_with_garbage_acks_still_finishes_mqtt_5() {
    garbage_acks_at_a_sender(MqttVersion::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_pelted_with_garbage_acks_still_finishes_mqtt_3_1_1() {
    garbage_acks_at_a_sender(MqttVersion::V311).await;
}

// ---------------------------------------------------------------------------
// A flood of manifests.

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The JSON events a `mqft receive --json` printed so far.
fn json_events(process: &Process) -> Vec<serde_json::Value> {
    process.stdout().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn count(events: &[serde_json::Value], event: &str) -> usize {
    events.iter().filter(|e| e["event"] == event).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_manifests_leaves_the_receiver_bounded_and_serving() {
    const FLOOD: usize = 3000;
    const MAX_CONCURRENT: usize = 4;
    // Offers past the cap wait in a queue this long; the rest are refused.
    const QUEUE: usize = 16;
    // No queue limit: mosquitto would otherwise drop what a busy subscriber
    // has not taken past 1000 messages, and this test is about the receiver.
    let broker = Broker::builder().max_queued_messages(0).start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let before = broker.subscribers(&Prefix::default().manifest_filter()).len();
    let mut receiver = Process::spawn(
        mqft_command().args(["receive", "--json", "--name", "rx-flood", "--out"]).arg(out.path()).args([
            "--max-concurrent",
            &MAX_CONCURRENT.to_string(),
            "--queue",
            &QUEUE.to_string(),
            "-h",
            HOST,
            "-p",
            &broker.port().to_string(),
        ]),
    );
    wait_subscribed(&broker, before, &receiver);
    let pid = receiver.id();
    let rss_before = rss_kib(pid);

    // Three thousand distinct, valid manifests, as fast as the broker takes them.
    let raw = Raw::connect(&broker, "raw-flood").await;
    let manifests: Vec<Manifest> = (0..FLOOD)
        .map(|i| {
            let sha = proto::integrity::sha256(&i.to_le_bytes());
            Manifest::new(format!("flood-{i}.bin"), 1 << 20, 64 << 10, sha, Meta::default(), 1).unwrap()
        })
        .collect();
    let prefix = Prefix::default();
    let (mut most_files, mut most_rss) = (0, rss_before);
    let sample = |most_files: &mut usize, most_rss: &mut u64| {
        let parts = fs::read_dir(parts_dir(out.path())).map_or(0, Iterator::count);
        *most_files = (*most_files).max(fs::read_dir(out.path()).unwrap().count() + parts);
        *most_rss = (*most_rss).max(rss_kib(pid));
    };
    for (i, m) in manifests.iter().enumerate() {
        raw.publish(&prefix.manifest(&m.id), m.encode()).await;
        if i % 100 == 0 {
            sample(&mut most_files, &mut most_rss);
        }
    }
    let deadline = Instant::now() + LIMIT;
    while count(&json_events(&receiver), "offered") < FLOOD {
        assert!(Instant::now() < deadline, "the receiver did not get through the flood in {LIMIT:?}");
        sample(&mut most_files, &mut most_rss);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sample(&mut most_files, &mut most_rss);
    let events = json_events(&receiver);
    let accepted: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "accepted")
        .map(|e| e["transfer"].as_str().unwrap().to_owned())
        .collect();
    let queued: Vec<String> =
        events.iter().filter(|e| e["event"] == "queued").map(|e| e["transfer"].as_str().unwrap().to_owned()).collect();
    let full = events.iter().filter(|e| e["event"] == "rejected" && e["code"] == 10).count();
    assert_eq!(accepted.len(), MAX_CONCURRENT, "no more transfers open than allowed");
    assert_eq!(queued.len(), QUEUE, "no more offers waiting than the queue holds");
    assert_eq!(full, FLOOD - MAX_CONCURRENT - QUEUE, "every other one refused as queue full");
    // A .part and a .state per open transfer (and a state's temporary file),
    // and the state folder.
    assert!(most_files <= 3 * MAX_CONCURRENT + 1, "{most_files} files in the output directory");
    let grown = most_rss.saturating_sub(rss_before);
    assert!(grown < 16 << 10, "the receiver grew by {grown} KiB (from {rss_before} KiB)");

    // The flood's senders give up (as a silent one would, in two minutes): the
    // open transfers end, and the queued offers are withdrawn (or, taken into a
    // freed slot meanwhile, end too); then a real file goes through.
    let held = |m: &&Manifest| accepted.contains(&m.id.to_string()) || queued.contains(&m.id.to_string());
    for m in manifests.iter().filter(held) {
        raw.publish(&prefix.ctl(&m.id), Ctl::Abort { run: 1, reason: AbortReason::Failed }.encode()).await;
    }
    let client = client(&broker, MqttVersion::V5);
    let path = random_file(src.path(), "after-the-flood.bin", 1 << 20, 7901);
    within("the send after the flood", client.send([&path], SendOptions::default()).wait()).await.unwrap();
    assert!(files_equal(&path, &out.path().join("after-the-flood.bin")));
    assert!(receiver.wait_within(Duration::ZERO).is_none(), "the receiver is still running");
    receiver.kill();
}

// ---------------------------------------------------------------------------
// A full disk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_up_mid_transfer_fails_cleanly_and_the_transfer_resumes() {
    use rustix::process::{kill_process, Pid, Signal};
    const CHUNK: u32 = 16 * 1024;
    let broker = Broker::start();
    // A real file system of 12 MiB, for a file of 8 MiB: it fits when offered.
    let disk = TmpfsMount::new(12 << 20);
    let src = tempfile::tempdir().unwrap();
    let len = 8 << 20;
    let path = random_file(src.path(), "big.bin", len, 8001);
    let m = manifest_of(&path, "big.bin", CHUNK, 0);
    let (state, final_path) = (state_path(disk.path(), "big.bin", &m), disk.path().join("big.bin"));
    let client = client(&broker, MqttVersion::V5);
    let mut opts = receive_opts("rx-full");
    opts.checkpoint_chunks = 4;
    let mut rx = start_receive(&broker, &client, disk.path(), opts).await;
    let send = || {
        let mut command = mqft_command();
        command.arg("send").arg(&path).args(["--chunk-size", "16k", "--window", "16"]);
        command.args(["-h", HOST, "-p", &broker.port().to_string()]);
        Process::spawn(&mut command)
    };

    // Once part of the file is on disk and checkpointed, the sender is paused,
    // the disk filled, and the sender let go on: the next write fails.
    let sender = send();
    until("the first checkpoint", || state.exists()).await;
    let pid = Pid::from_raw(sender.id() as i32).unwrap();
    kill_process(pid, Signal::STOP).unwrap();
    assert!(!final_path.exists(), "the transfer was too quick to be caught half way");
    let filler = disk.fill("filler");
    kill_process(pid, Signal::CONT).unwrap();
    let failed = next_matching(&mut rx, "the receiver's failure", |e| matches!(e, ReceiveEvent::Failed { .. })).await;
    let ReceiveEvent::Failed { transfer, failure, .. } = failed else { unreachable!("next_matching returns a Failed") };
    assert_eq!((transfer, failure), (m.id, ReceiveFailure::Local(RejectReason::DiskFull)));
    let output = tokio::task::spawn_blocking(move || sender.finish_within(LIMIT)).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("rejected") && stderr.contains("disk full"), "{stderr}");
    // Nothing under the final name; what arrived stays for a resume.
    assert!(!final_path.exists());
    assert!(state.exists() && part_path(disk.path(), "big.bin", &m).exists());

    // Room again: the same file sent again resumes and completes.
    fs::remove_file(&filler).unwrap();
    let sender = send();
    let accepted = next_matching(&mut rx, "the second Accepted", |e| matches!(e, ReceiveEvent::Accepted { .. })).await;
    let ReceiveEvent::Accepted { resumed_bytes, .. } = accepted else { unreachable!("an Accepted") };
    assert!(resumed_bytes > 0 && resumed_bytes < len, "resumed {resumed_bytes} bytes");
    next_matching(&mut rx, "the completion", |e| matches!(e, ReceiveEvent::Completed { .. })).await;
    let output = tokio::task::spawn_blocking(move || sender.finish_within(LIMIT)).await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(files_equal(&path, &final_path));
    rx.cancel();
    within("the receive", rx.wait()).await.unwrap();
}
