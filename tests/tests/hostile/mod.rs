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

use crate::raw::Raw;
use crate::util::{client, connected, drain, next_matching, receive_opts, stop_receive, visible, within, LIMIT};

mod disk;
mod flood;
mod garbage;
mod links;
mod lying;
mod names;

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
/// The manifest of `path` under `name`, with its hash; its id is the one a
/// real sender of the file derives (name, size, modification time, chunking).
fn manifest_of(path: &Path, name: &str, chunk_size: u32, run: u32) -> Manifest {
    let bytes = fs::read(path).unwrap();
    let sha = proto::integrity::sha256(&bytes);
    let modified = fs::metadata(path).unwrap().modified().unwrap();
    let ms = modified.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let meta = Meta { modified_ms: Some(ms), ..Meta::default() };
    Manifest::new(name.into(), bytes.len() as u64, chunk_size, Some(sha), meta, run).unwrap()
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

/// Publishes `m` with the raw client and returns the ack `from` gives it.
async fn offer(raw: &mut Raw, m: &Manifest, from: &str) -> Ack {
    raw.publish(&Prefix::default().manifest(&m.id), m.encode()).await;
    raw.next_ack(m, from, |_| true).await
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
