//! Signed transfers (issue 12), through the `mqft` binary and real Mosquitto.
//!
//! - `mqft keygen` writes a secret key only its owner can read, and a public
//!   one; a secret key others can read is refused, as ssh refuses one.
//! - A receiver that `--trust`s a key takes a file signed with it and names the
//!   signer as its own trusted-keys entry does.
//! - It refuses, with a reason the sender and the receiver both print, and with
//!   nothing written under a final name: an unsigned transfer, one signed by
//!   another key, a manifest changed after signing (re-published by a raw
//!   client with a valid encoding), a chunk changed on the way with its CRC32
//!   fixed up (the file fails the signed digest, and is discarded), and a
//!   captured transfer replayed after it completed.
//!
//! The raw client is rumqttc with the `mqft_proto` encoders: it captures what a
//! real sender published and publishes it again, changed or not.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use mqft::proto::{self, Ack, Chunk, Ctl, Manifest, Prefix};
use mqft_tests::{files_equal, random_file, Broker, HOST};

use crate::fault_util::{mqft, Cli, WAIT};
use crate::raw::Raw;

/// A file of a few chunks.
const LEN: u64 = 200_000;
/// Small chunks, so that a transfer has several.
const CHUNK: &str = "65536";

/// Runs `mqft keygen --out dir/name --name name`; returns the secret and public
/// key paths.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let secret = dir.join(name);
    let out = mqft(["keygen", "--name", name, "--out"]).arg(&secret).output().unwrap();
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    (secret.clone(), dir.join(format!("{name}.pub")))
}

fn signed(key: &Path) -> Vec<String> {
    vec!["--sign".into(), key.display().to_string(), "--chunk-size".into(), CHUNK.into()]
}

fn unsigned() -> Vec<String> {
    vec!["--chunk-size".into(), CHUNK.into()]
}

/// A receiver into `out` that trusts `public`.
fn trusting(port: u16, out: &Path, name: &str, public: &Path) -> Cli {
    Cli::receive(port, out, name, &["--trust", public.to_str().unwrap()])
}

/// The names in `dir` that are not hidden: what arrived under a final name.
fn visible(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn keygen_writes_a_secret_key_only_its_owner_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "cam-01");
    assert_eq!(fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    let text = fs::read_to_string(&secret).unwrap();
    assert!(text.starts_with("mqft-ed25519-secret:"), "{text}");
    let public_text = fs::read_to_string(&public).unwrap();
    assert!(public_text.starts_with("mqft-ed25519:") && public_text.trim_end().ends_with(" cam-01"), "{public_text}");
    assert!(!public_text.contains(text.trim().trim_start_matches("mqft-ed25519-secret:")));

    // Never over an existing key.
    let again = mqft(["keygen", "--out"]).arg(&secret).output().unwrap();
    assert!(!again.status.success());
    assert_eq!(fs::read_to_string(&secret).unwrap(), text, "an existing key is left alone");

    // A secret key that others may read is refused before anything is sent.
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let file = random_file(dir.path(), "f.bin", 10, 1);
    let sent = mqft(["send", "-p", "1", "--sign"]).arg(&secret).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert_eq!(sent.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("readable by group or others"), "{stderr}");
}

#[test]
fn a_signed_file_reaches_a_receiver_that_trusts_its_key_and_names_the_signer() {
    let broker = Broker::start();
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(keys.path(), "cam-01");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "signed.bin", LEN, 1201);

    let rx = trusting(broker.port(), out.path(), "rx-signed", &public);
    let sent = Cli::send(broker.port(), &file, &signed(&secret)).finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&file, &out.path().join("signed.bin")));
    let signer = received.event("signed").unwrap_or_else(|| panic!("no signed event\n{}", received.text));
    let signer = signer["signer"].as_str().unwrap();
    assert!(signer.starts_with("cam-01 (ed25519:"), "{signer}");
}

/// Sends `file` with `flags` to a receiver trusting `public`: the sender is
/// refused (exit 5), the receiver says why, and nothing arrives.
fn assert_refused(port: u16, public: &Path, file: &Path, flags: &[String], why: &str) {
    let out = tempfile::tempdir().unwrap();
    let mut rx = trusting(port, out.path(), "rx-refusing", public);
    let sent = Cli::send(port, file, flags).finish_within(WAIT);
    assert_eq!(sent.code, Some(5), "the send must be refused\n{}", sent.text);
    assert!(sent.text.contains(why), "the sender is told why ({why})\n{}", sent.text);
    let rejected = rx.wait_for("rejected", WAIT, |e| e["event"] == "rejected");
    assert_eq!(rejected["reason"], "not signed by a trusted key", "{}", rx.output());
    assert_eq!(rejected["detail"], why, "{}", rx.output());
    assert_eq!(rejected["code"], 12);
    rx.kill();
    assert!(received(out.path()).is_empty(), "an untrusted offer writes nothing");
}

#[test]
fn unsigned_transfers_and_other_keys_are_refused() {
    let broker = Broker::start();
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = keygen(keys.path(), "trusted");
    let (other, _) = keygen(keys.path(), "stranger");
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "refused.bin", LEN, 1202);
    assert_refused(broker.port(), &public, &file, &unsigned(), "unsigned transfer");
    assert_refused(broker.port(), &public, &file, &signed(&other), "signed by a key not trusted here");
}

// ---------------------------------------------------------------------------
// Playing a sender with the raw client.

/// Plays the sender of `m`, whose file is `bytes`: the manifest (retained),
/// and once receiver `rid` is ready, every chunk and an end of round. `tamper`
/// changes a chunk's data before it is encoded, so that its CRC32 is right.
async fn send_as(raw: &mut Raw, m: &Manifest, manifest_payload: Vec<u8>, bytes: &[u8], rid: &str, tamper: Option<u32>) {
    let prefix = Prefix::default();
    raw.publish_retained(&prefix.manifest(&m.id), manifest_payload).await;
    let ack_topic = format!("{}/{rid}", prefix.ack_filter(&m.id).trim_end_matches("/+"));
    let count = m.chunk_count;
    raw.next("the receiver's Ready", |t, p| t == ack_topic && matches!(Ack::decode(p, count), Ok(Ack::Ready { .. })))
        .await;
    for index in 0..m.chunk_count {
        let start = m.chunk_offset(index) as usize;
        let mut data = bytes[start..start + m.chunk_len(index) as usize].to_vec();
        if tamper == Some(index) {
            data[7] ^= 0x20;
        }
        raw.publish(&prefix.chunk(&m.id, index), Chunk::encode(m.run, index, index, &data)).await;
    }
    raw.publish(
        &prefix.ctl(&m.id),
        Ctl::EndRound { run: m.run, next_seq: m.chunk_count, sha256: None, size: None }.encode(),
    )
    .await;
}

/// A signed transfer as it went through a broker: the broker, the trusted public
/// key, the file, and its signed manifest as published (captured by a raw
/// client).
struct Captured {
    broker: Broker,
    public: PathBuf,
    file: PathBuf,
    manifest: Vec<u8>,
    /// The keys' and the file's directories, alive as long as this.
    _dirs: [tempfile::TempDir; 2],
}

/// Sends a file `name` of `LEN` bytes (the stream of `seed`), signed by
/// `cam-01`, to a receiver into `out` that trusts that key, while a raw client
/// captures the manifest as published.
async fn a_captured_transfer(name: &str, seed: u64, out: &Path) -> Captured {
    let broker = Broker::start();
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(keys.path(), "cam-01");
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), name, LEN, seed);
    let mut raw = Raw::connect(&broker, "capture").await;
    raw.subscribe(&broker, "capture", &Prefix::default().manifest_filter()).await;
    let port = broker.port();
    let (sent, received) = tokio::task::block_in_place(|| {
        let rx = trusting(port, out, "rx-first", &public);
        let sent = Cli::send(port, &file, &signed(&secret)).finish_within(WAIT);
        (sent, rx.finish_within(WAIT))
    });
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    let (_, manifest) = raw.next("the signed manifest", |t, p| t.ends_with("/manifest") && !p.is_empty()).await;
    Captured { broker, public, file, manifest, _dirs: [keys, src] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_changed_after_signing_is_refused() {
    let first = tempfile::tempdir().unwrap();
    let Captured { broker, public, manifest: captured, _dirs, .. } =
        a_captured_transfer("changed.bin", 1203, first.path()).await;

    // One field changed, the encoding still valid and the id still the same:
    // the content type.
    let mut m = Manifest::decode(&captured).unwrap();
    m.meta.content_type = Some("application/x-changed".into());
    let changed = m.encode();
    assert_ne!(changed, captured);

    let out = tempfile::tempdir().unwrap();
    let raw = Raw::connect(&broker, "tamper").await;
    let mut rx = tokio::task::block_in_place(|| trusting(broker.port(), out.path(), "rx-second", &public));
    raw.publish_retained(&Prefix::default().manifest(&m.id), changed).await;
    let rejected = tokio::task::block_in_place(|| rx.wait_for("rejected", WAIT, |e| e["event"] == "rejected"));
    assert_eq!(rejected["detail"], "bad signature: the manifest was changed after it was signed", "{}", rx.output());
    rx.kill();
    assert!(received(out.path()).is_empty(), "a changed manifest writes nothing");
    raw.publish_retained(&Prefix::default().manifest(&m.id), Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_changed_on_the_way_with_a_valid_crc_fails_the_signed_digest() {
    let first = tempfile::tempdir().unwrap();
    let Captured { broker, public, file, manifest: captured, _dirs } =
        a_captured_transfer("chunky.bin", 1204, first.path()).await;
    let m = Manifest::decode(&captured).unwrap();
    assert!(m.chunk_count >= 3, "a few chunks: {}", m.chunk_count);

    // The genuine signed manifest, then the chunks with the second one changed
    // and its CRC32 computed over the changed bytes.
    let out = tempfile::tempdir().unwrap();
    let mut raw = Raw::connect(&broker, "tamper").await;
    raw.subscribe(&broker, "tamper", &Prefix::default().ack_filter(&m.id)).await;
    let rx = tokio::task::block_in_place(|| trusting(broker.port(), out.path(), "rx-second", &public));
    let bytes = fs::read(&file).unwrap();
    send_as(&mut raw, &m, captured, &bytes, "rx-second", Some(1)).await;
    let received = tokio::task::block_in_place(|| rx.finish_within(WAIT));
    assert_eq!(received.code, Some(6), "an integrity failure\n{}", received.text);
    assert!(received.text.contains("does not match the signed digest"), "{}", received.text);
    assert!(received.event("signed").is_some(), "the manifest itself was genuine\n{}", received.text);
    assert!(visible(out.path()).is_empty(), "nothing under a final name: {:?}", visible(out.path()));
    // (Partial files live in the state folder, `.mqft/part/`.)
    let parts: Vec<_> =
        crate::trust::received(out.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "part")).collect();
    assert!(parts.is_empty(), "the bad bytes are discarded: {parts:?}");
    raw.publish_retained(&Prefix::default().manifest(&m.id), Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_signed_transfer_replayed_later_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let Captured { broker, public, manifest: captured, _dirs, .. } =
        a_captured_transfer("replayed.bin", 1205, out.path()).await;
    let m = Manifest::decode(&captured).unwrap();
    // The user moves the file away, as an inbox's consumer does.
    fs::remove_file(out.path().join("replayed.bin")).unwrap();

    // The whole transfer again, byte for byte as the sender published it.
    let mut raw = Raw::connect(&broker, "replay").await;
    raw.subscribe(&broker, "replay", &Prefix::default().ack_filter(&m.id)).await;
    let mut rx = tokio::task::block_in_place(|| trusting(broker.port(), out.path(), "rx-first", &public));
    raw.publish_retained(&Prefix::default().manifest(&m.id), captured).await;
    let rejected = tokio::task::block_in_place(|| rx.wait_for("rejected", WAIT, |e| e["event"] == "rejected"));
    assert_eq!(rejected["detail"], "replay of a signed transfer already received here", "{}", rx.output());
    let (_, ack) = raw.next("the refusal", |t, _| t.ends_with("/rx-first")).await;
    assert!(
        matches!(Ack::decode(&ack, m.chunk_count), Ok(Ack::Rejected { reason: proto::RejectReason::Untrusted, .. })),
        "the replayer is told"
    );
    rx.kill();
    assert!(visible(out.path()).is_empty(), "a replay writes nothing: {:?}", visible(out.path()));
    raw.publish_retained(&Prefix::default().manifest(&m.id), Vec::new()).await;
}

// ---------------------------------------------------------------------------
// Encrypted transfers.

/// The file's 16-byte runs, for looking them up in a capture.
fn runs_of_16(bytes: &[u8]) -> std::collections::HashSet<&[u8]> {
    bytes.windows(16).collect()
}

#[test]
fn an_encrypted_file_reaches_its_recipient_and_a_subscriber_sees_only_ciphertext() {
    let broker = Broker::start();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = keygen(keys.path(), "server");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let name = "quarterly-payroll-secret.csv";
    let file = random_file(src.path(), name, LEN, 1206);

    // Anyone allowed to subscribe: a plain mosquitto_sub of everything under the prefix.
    let mut sub =
        mqft_tests::Process::spawn(std::process::Command::new(mqft_tests::mosquitto_client("mosquitto_sub")).args([
            "-h",
            HOST,
            "-p",
            &broker.port().to_string(),
            "-i",
            "eavesdropper",
            "-q",
            "1",
            "-t",
            "files/#",
            "-v",
        ]));
    assert!(mqft_tests::wait_until(WAIT, || broker.has_subscription("eavesdropper", "files/#")), "{}", broker.log());

    let rx = Cli::receive(broker.port(), out.path(), "rx-sealed", &["--identity", identity.to_str().unwrap()]);
    let mut flags = unsigned();
    flags.extend(["--encrypt-to".to_owned(), public.display().to_string()]);
    let sent = Cli::send(broker.port(), &file, &flags).finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);
    assert!(files_equal(&file, &out.path().join(name)), "the recipient has the identical file");
    let completed = received.event("completed").unwrap();
    assert_eq!(completed["size"], LEN, "the real size, not the ciphertext's\n{}", received.text);
    let bytes = fs::read(&file).unwrap();
    assert_eq!(completed["sha256"], hex(&mqft::proto::integrity::sha256(&bytes)));
    assert_eq!(visible(out.path()), vec![name.to_owned()]);

    // QoS 1, the broker drops nothing for it; a slow machine may still have it
    // behind: the whole transfer (at least the file's size) is read before the kill.
    let caught_up = mqft_tests::wait_until(WAIT, || sub.stdout_len() as u64 > LEN);
    assert!(caught_up, "the capture holds the transfer: {} bytes", sub.stdout_len());
    sub.kill();
    let capture = sub.finish_within(WAIT).stdout;
    // Every chunk went past the eavesdropper: it saw at least the file's size.
    assert!(capture.len() as u64 > LEN, "the capture holds the transfer: {} bytes", capture.len());
    assert!(!capture.windows(name.len()).any(|w| w == name.as_bytes()), "the name is in the capture");
    assert!(!capture.windows(9).any(|w| w == b"quarterly"), "part of the name is in the capture");
    let runs = runs_of_16(&bytes);
    let leaked = capture.windows(16).filter(|w| runs.contains(w)).count();
    assert_eq!(leaked, 0, "16-byte runs of the file are in the capture");
    // The same check finds the file in a capture of a plain transfer.
    assert!(capture.len() > 16 && runs.len() as u64 > LEN - 32);
}

/// An encrypted file kept under another name (a different file of its name was
/// there) arrives, but the name it took is not told back: it would travel in the
/// clear, where the name sent did not.
#[test]
fn an_encrypted_file_renamed_at_the_receiver_is_not_named_back_in_the_clear() {
    let broker = Broker::start();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = keygen(keys.path(), "server");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "payroll.csv", LEN, 1208);
    fs::write(out.path().join("payroll.csv"), b"another file of that name").unwrap();
    let mut flags = unsigned();
    flags.extend(["--encrypt-to".to_owned(), public.display().to_string()]);
    let rx = Cli::receive(broker.port(), out.path(), "rx-renamed", &["--identity", identity.to_str().unwrap()]);
    let sent = Cli::send(broker.port(), &file, &flags).finish_within(WAIT);
    let received = rx.finish_within(WAIT);
    assert_eq!((sent.code, received.code), (Some(0), Some(0)), "{}\n{}", sent.text, received.text);
    assert!(files_equal(&file, &out.path().join("payroll (1).csv")), "kept beside the other\n{}", received.text);
    assert!(sent.event("stored_as").is_none(), "the new name went back to the sender\n{}", sent.text);
    assert!(!sent.text.contains("payroll (1)"), "{}", sent.text);
}

/// The same encrypted file sent again (its `Complete` lost, or a camera that
/// sends twice) is found by its plaintext: "already have", no second copy, and
/// its name not told back in the clear.
#[test]
fn an_encrypted_file_sent_again_is_already_had() {
    let broker = Broker::start();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = keygen(keys.path(), "server");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "again.bin", LEN, 1207);
    let mut flags = unsigned();
    flags.extend(["--encrypt-to".to_owned(), public.display().to_string()]);
    let id = ["--identity", identity.to_str().unwrap()];
    for round in ["first", "again"] {
        let rx = Cli::receive(broker.port(), out.path(), "rx-again", &id);
        let sent = Cli::send(broker.port(), &file, &flags).finish_within(WAIT);
        let received = rx.finish_within(WAIT);
        assert_eq!(sent.code, Some(0), "{round}: {}", sent.text);
        assert_eq!(received.code, Some(0), "{round}: {}", received.text);
        if round == "again" {
            let had = received.event("already_complete").expect("already had");
            assert_eq!(had["size"], LEN, "the real size\n{}", received.text);
            assert!(!sent.text.contains("again.bin (1)"), "{}", sent.text);
        }
    }
    assert_eq!(visible(out.path()), vec!["again.bin".to_owned()], "one copy");
    assert!(files_equal(&file, &out.path().join("again.bin")));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_plain_capture_does_show_the_file_so_the_encrypted_check_can_fail() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "plain.bin", LEN, 1207);
    let mut sub =
        mqft_tests::Process::spawn(std::process::Command::new(mqft_tests::mosquitto_client("mosquitto_sub")).args([
            "-h",
            HOST,
            "-p",
            &broker.port().to_string(),
            "-i",
            "eavesdropper",
            "-q",
            "1",
            "-t",
            "files/#",
            "-v",
        ]));
    assert!(mqft_tests::wait_until(WAIT, || broker.has_subscription("eavesdropper", "files/#")));
    let rx = Cli::receive(broker.port(), out.path(), "rx-plain", &[]);
    let sent = Cli::send(broker.port(), &file, &unsigned()).finish_within(WAIT);
    assert_eq!(rx.finish_within(WAIT).code, Some(0));
    assert_eq!(sent.code, Some(0), "{}", sent.text);
    // QoS 1, the broker drops nothing for it; a slow machine may still have it
    // behind: the whole transfer (at least the file's size) is read before the kill.
    let caught_up = mqft_tests::wait_until(WAIT, || sub.stdout_len() as u64 > LEN);
    assert!(caught_up, "the capture holds the transfer: {} bytes", sub.stdout_len());
    sub.kill();
    let capture = sub.finish_within(WAIT).stdout;
    let bytes = fs::read(&file).unwrap();
    let runs = runs_of_16(&bytes);
    assert!(capture.windows(16).any(|w| runs.contains(w)));
    assert!(capture.windows(9).any(|w| w == b"plain.bin"));
}

#[test]
fn a_receiver_without_the_identity_refuses_an_encrypted_file_clearly() {
    let broker = Broker::start();
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = keygen(keys.path(), "server");
    let (other, _) = keygen(keys.path(), "someone-else");
    let src = tempfile::tempdir().unwrap();
    let file = random_file(src.path(), "sealed.bin", LEN, 1208);
    let mut flags = unsigned();
    flags.extend(["--encrypt-to".to_owned(), public.display().to_string()]);
    for (identity, why) in
        [(None, "encrypted; this receiver has no --identity"), (Some(&other), "encrypted for other recipients")]
    {
        let out = tempfile::tempdir().unwrap();
        let extra: Vec<&str> = identity.map(|p| vec!["--identity", p.to_str().unwrap()]).unwrap_or_default();
        let mut rx = Cli::receive(broker.port(), out.path(), "rx-outsider", &extra);
        let sent = Cli::send(broker.port(), &file, &flags).finish_within(WAIT);
        assert_eq!(sent.code, Some(5), "{}", sent.text);
        assert!(sent.text.contains(why), "the sender is told why\n{}", sent.text);
        let rejected = rx.wait_for("rejected", WAIT, |e| e["event"] == "rejected");
        assert_eq!(rejected["reason"], "encrypted for another recipient", "{}", rx.output());
        assert_eq!(rejected["detail"], why);
        assert_eq!(rejected["code"], 13);
        rx.kill();
        assert!(received(out.path()).is_empty(), "nothing written");
    }
}

/// What a receiver put in `out`, but for its state folder (`.mqft`), and there no
/// partial file either.
fn received(out: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> =
        fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).filter(|p| !p.ends_with(".mqft")).collect();
    if let Ok(parts) = fs::read_dir(out.join(".mqft/part")) {
        found.extend(parts.map(|e| e.unwrap().path()));
    }
    found
}
