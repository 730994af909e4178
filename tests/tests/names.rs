//! File names are the sender's, so untrusted: whatever a sender calls a file,
//! the receiver writes it inside its output directory, under a sanitized name,
//! or refuses it as a bad name. Nothing appears anywhere else.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mqft::proto::{RejectReason, TransferId};
use mqft::{MqttVersion, ReceiveEvent, SendEvent, SendFile, SendOptions};
use mqft_tests::{files_equal, random_file, Broker};

use crate::util::{client, connected, drain, stop_receive, within};

/// Names a hostile or careless sender might give, and whether each must be
/// refused: `..` has no usable name left in it, and a path that climbs or is
/// absolute is refused whole.
const HOSTILE: &[(&str, bool)] = &[
    ("../../escape.jpg", true),
    ("/etc/x", true),
    ("..", true),
    ("a/b\\c.jpg", false),
    ("bell\u{7}and\nnewline.jpg", false),
    ("\u{1b}[2J\u{1b}[31mred.jpg", false),
];

/// Every file under `dir`, recursively.
fn all_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(all_files(&path));
        } else {
            files.insert(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_sanitized_into_the_output_directory_or_refused() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    // Deep enough that `../../escape.jpg` taken literally would still land in
    // the test's own temp dir, where the test can see it.
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("a").join("b");
    let out = parent.join("out");
    fs::create_dir_all(&out).unwrap();
    let out = out.canonicalize().unwrap();
    let etc_x_existed = Path::new("/etc/x").exists();

    let content = random_file(src.path(), "content.jpg", 70_000, 4001);
    let client = client(&broker, MqttVersion::V5);
    let mut rx = client.receive(&out, crate::util::receive_opts("rx-hostile"));
    connected(&mut rx).await;

    let files: Vec<SendFile> = HOSTILE.iter().map(|(name, _)| SendFile::named(&content, *name)).collect();
    let mut opts = SendOptions::default();
    opts.protocol.join_timeout = Duration::from_secs(10);
    let mut send = client.send(files, opts);
    let send_events = drain(&mut send).await;
    let err = within("the send", send.wait()).await.expect_err("`..` cannot be accepted");
    assert!(
        matches!(err, mqft::Error::Rejected { reason: RejectReason::BadName, .. }),
        "the first failure is the refused `..`: {err:?}\n{send_events:#?}"
    );
    // Every file was finished or refused as a bad name, never anything else.
    let finished = send_events.iter().filter(|e| matches!(e, SendEvent::Finished { .. })).count();
    let bad_name = send_events
        .iter()
        .filter(|e| matches!(e, SendEvent::ReceiverFailed { reason: Some(RejectReason::BadName), .. }))
        .count();
    assert_eq!(finished + bad_name, HOSTILE.len(), "{send_events:#?}");

    let events = stop_receive(rx).await;

    // The offered (raw) name of each transfer, and how each ended.
    let mut offered: HashMap<TransferId, String> = HashMap::new();
    let mut outcome: HashMap<String, Result<PathBuf, RejectReason>> = HashMap::new();
    for e in &events {
        match e {
            ReceiveEvent::Offered { transfer, name, .. } => {
                offered.insert(*transfer, name.clone());
            }
            ReceiveEvent::Rejected { name, reason, .. } => {
                outcome.insert(name.clone(), Err(*reason));
            }
            ReceiveEvent::Completed(mqft::VerifiedFile { transfer, path, .. }) => {
                let name = offered.get(transfer).unwrap_or_else(|| panic!("Completed before Offered: {events:#?}"));
                outcome.insert(name.clone(), Ok(path.clone()));
            }
            _ => {}
        }
    }

    let mut landed = BTreeSet::new();
    for &(name, must_refuse) in HOSTILE {
        // The documented rules (mqft::name) say what each name becomes.
        let expected = mqft::sanitize_path(name);
        assert_eq!(expected.is_err(), must_refuse, "{name:?}: {expected:?}");
        match outcome.get(name) {
            Some(Err(reason)) => {
                assert_eq!(*reason, RejectReason::BadName, "{name:?} refused for another reason");
                assert!(expected.is_err(), "{name:?} refused, though it cleans up to {expected:?}");
            }
            Some(Ok(path)) => {
                assert!(!must_refuse, "{name:?} was accepted as {}", path.display());
                let real = path.canonicalize().unwrap_or_else(|e| panic!("{name:?}: {}: {e}", path.display()));
                assert!(real.starts_with(&out), "{name:?} landed at {}, outside {}", real.display(), out.display());
                let rel = real.strip_prefix(&out).unwrap().to_str().unwrap().to_owned();
                assert_eq!(Ok(rel.as_str()), expected.as_ref().map(|n| n.as_str()), "{name:?}");
                let file_name = real.file_name().unwrap().to_str().unwrap();
                assert!(
                    !file_name.starts_with('.')
                        && !file_name.contains(['/', '\\'])
                        && !file_name.contains(char::is_control),
                    "{name:?} kept an unsafe name: {file_name:?}"
                );
                assert!(files_equal(&content, &real), "{name:?}: the content differs");
                // What shows at the top of the output directory.
                landed.insert(out.join(rel.split('/').next().unwrap()));
            }
            None => panic!("{name:?} was neither completed nor refused: {events:#?}"),
        }
    }

    // Nothing new anywhere but inside the output directory: the visible files
    // are exactly those that arrived (the rest are the receiver's hidden
    // markers, inside it too).
    for path in all_files(root.path()) {
        let real = path.canonicalize().unwrap();
        assert!(real.starts_with(&out), "{} was created outside the output directory", real.display());
    }
    let visible: BTreeSet<PathBuf> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(visible, landed);
    let beside_out: Vec<_> = fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside_out, ["out"], "new files next to the output directory");
    assert_eq!(Path::new("/etc/x").exists(), etc_x_existed, "/etc/x was created");
}

// ---- names from many senders (issue 10 item 2), through the `mqft` binary ----

use crate::fault_util::{Cli, Finished, WAIT};

/// `mqft send --json FILE --from NAME` plus `extra`, run to its end.
fn send_from(port: u16, file: &Path, from: &str, extra: &[&str]) -> Finished {
    let mut args = vec![format!("--from={from}")];
    args.extend(extra.iter().map(|s| s.to_string()));
    Cli::send(port, file, &args).finish_within(WAIT)
}

/// `dir/name` holding `len` bytes of the stream of `seed`: two senders' files
/// of one name and different bytes.
fn camera_file(dir: &Path, name: &str, seed: u64) -> PathBuf {
    random_file(dir, name, 200_000, seed)
}

/// The visible files of `dir` (not the receiver's hidden ones), by name.
fn visible(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Two cameras send different `img_0001.jpg`: by default the receiver keeps
/// both, the second as `img_0001 (1).jpg`; its events say who sent each and
/// where it went, its hook sees the sender, and the second sender is told the
/// name.
#[test]
fn two_senders_of_one_name_keep_both_files_by_default() {
    let broker = Broker::start();
    let (cam1, cam2, out, hooks) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let first = camera_file(cam1.path(), "img_0001.jpg", 1001);
    let second = camera_file(cam2.path(), "img_0001.jpg", 1002);
    let hook = format!("printf %s \"$MQFT_SENDER\" > {}/sender", hooks.path().display());

    let rx = Cli::receive(broker.port(), out.path(), "rx-names", &[]);
    let sent = send_from(broker.port(), &first, "cam1", &[]);
    let received = rx.finish_within(WAIT);
    assert_eq!((sent.code, received.code), (Some(0), Some(0)), "{}\n{}", sent.text, received.text);
    let done = received.event("completed").unwrap_or_else(|| panic!("{}", received.text));
    assert_eq!(done["sender"], "cam1", "{}", received.text);
    assert!(done["change"].is_null(), "{}", received.text);
    assert!(sent.event("stored_as").is_none(), "the first file kept its name\n{}", sent.text);

    let rx = Cli::receive(broker.port(), out.path(), "rx-names", &["--exec", &hook]);
    let sent = send_from(broker.port(), &second, "cam2", &[]);
    let received = rx.finish_within(WAIT);
    assert_eq!(sent.code, Some(0), "the second file is kept, not refused\n{}", sent.text);
    assert_eq!(received.code, Some(0), "{}", received.text);

    assert_eq!(visible(out.path()), BTreeSet::from(["img_0001.jpg".to_owned(), "img_0001 (1).jpg".to_owned()]));
    assert!(files_equal(&first, &out.path().join("img_0001.jpg")), "the first file was touched");
    assert!(files_equal(&second, &out.path().join("img_0001 (1).jpg")));
    let offered = received.event("offered").unwrap_or_else(|| panic!("{}", received.text));
    assert_eq!(offered["sender"], "cam2");
    let done = received.event("completed").unwrap_or_else(|| panic!("{}", received.text));
    assert_eq!(done["sender"], "cam2", "{}", received.text);
    assert_eq!(done["change"], "renamed", "{}", received.text);
    assert!(done["path"].as_str().unwrap().ends_with("/img_0001 (1).jpg"), "{}", received.text);
    let told = sent.event("stored_as").unwrap_or_else(|| panic!("the sender was not told\n{}", sent.text));
    assert_eq!(told["name"], "img_0001 (1).jpg", "{}", sent.text);
    assert_eq!(told["change"], "renamed", "{}", sent.text);
    assert_eq!(told["receiver"], "rx-names");
    assert_eq!(fs::read_to_string(hooks.path().join("sender")).unwrap(), "cam2", "MQFT_SENDER in the hook");
}

/// `--on-conflict skip`, `fail` and `overwrite` (and `--overwrite`, its alias)
/// against a different file under the name: each does what it says, with the
/// documented exit codes, and only `overwrite` touches the old file.
#[test]
fn skip_fail_and_overwrite_do_what_they_say() {
    let broker = Broker::start();
    let (cam1, cam2, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = camera_file(cam1.path(), "img_0001.jpg", 2001);
    let second = camera_file(cam2.path(), "img_0001.jpg", 2002);
    let rx = Cli::receive(broker.port(), out.path(), "rx-policy", &[]);
    assert_eq!(send_from(broker.port(), &first, "cam1", &[]).code, Some(0));
    assert_eq!(rx.finish_within(WAIT).code, Some(0));
    let kept = out.path().join("img_0001.jpg");

    for (policy, reason) in [("skip", "file exists, skipped"), ("fail", "file exists")] {
        let mut rx = Cli::receive(broker.port(), out.path(), "rx-policy", &["--on-conflict", policy]);
        let sent = send_from(broker.port(), &second, "cam2", &[]);
        assert_eq!(sent.code, Some(5), "{policy}: the sender exits 5\n{}", sent.text);
        assert!(sent.text.contains(reason), "{policy}: the sender says {reason:?}\n{}", sent.text);
        let rejected = rx.wait_for("rejected", WAIT, |e| e["event"] == "rejected");
        assert_eq!(rejected["reason"], reason, "{policy}");
        assert_eq!(rejected["sender"], "cam2", "{policy}");
        rx.kill();
        assert!(files_equal(&first, &kept), "{policy} touched the file that was there");
        assert_eq!(visible(out.path()), BTreeSet::from(["img_0001.jpg".to_owned()]), "{policy}");
    }

    for flags in [&["--on-conflict", "overwrite"][..], &["--overwrite"][..]] {
        let (old, new) = if files_equal(&first, &kept) { (&first, &second) } else { (&second, &first) };
        let rx = Cli::receive(broker.port(), out.path(), "rx-policy", flags);
        let sent = send_from(broker.port(), new, "cam2", &[]);
        let received = rx.finish_within(WAIT);
        assert_eq!((sent.code, received.code), (Some(0), Some(0)), "{flags:?}\n{}\n{}", sent.text, received.text);
        assert!(files_equal(new, &kept), "{flags:?}: the file was not replaced");
        assert!(!files_equal(old, &kept));
        assert_eq!(visible(out.path()), BTreeSet::from(["img_0001.jpg".to_owned()]), "{flags:?}");
    }
}

/// The same bytes sent again under the same name are "already have", whatever
/// chunk size or MQTT version the sender used (the transfer id differs), and
/// nothing is stored twice, even with `--on-conflict fail`.
#[test]
fn the_same_bytes_again_are_already_here_whatever_the_chunk_size_or_mqtt_version() {
    let broker = Broker::start();
    let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = random_file(src.path(), "img_0001.jpg", 300_000, 3001);
    let rx = Cli::receive(broker.port(), out.path(), "rx-same", &[]);
    let sent = send_from(broker.port(), &file, "cam1", &["-V", "5", "--chunk-size", "64k"]);
    assert_eq!((sent.code, rx.finish_within(WAIT).code), (Some(0), Some(0)), "{}", sent.text);

    for (extra, policy) in [
        (&["-V", "5", "--chunk-size", "32k"][..], "rename"),
        (&["-V", "311"][..], "rename"),
        (&["-V", "311", "--chunk-size", "100000"][..], "fail"),
    ] {
        let rx = Cli::receive(broker.port(), out.path(), "rx-same", &["--on-conflict", policy]);
        let sent = send_from(broker.port(), &file, "cam2", extra);
        let received = rx.finish_within(WAIT);
        assert_eq!(sent.code, Some(0), "{extra:?}: the file is already there\n{}", sent.text);
        assert_eq!(received.code, Some(0), "{}", received.text);
        let have = received.event("already_complete").unwrap_or_else(|| panic!("{extra:?}\n{}", received.text));
        assert_eq!(have["sender"], "cam2");
        assert!(received.event("accepted").is_none(), "{extra:?}: sent again\n{}", received.text);
        assert_eq!(visible(out.path()), BTreeSet::from(["img_0001.jpg".to_owned()]), "{extra:?}");
    }

    // Without --json, the sender says so (as rsync says "up to date").
    let rx = Cli::receive(broker.port(), out.path(), "rx-same", &[]);
    let mut human = mqft_tests::mqft_command(["send".as_ref(), "--from=cam3".as_ref(), file.as_os_str()]);
    human.args(crate::fault_util::at(broker.port()));
    let sent = mqft_tests::Process::spawn(&mut human).finish_within(WAIT);
    let said = String::from_utf8_lossy(&sent.stderr);
    assert_eq!((sent.status.code(), rx.finish_within(WAIT).code), (Some(0), Some(0)), "{said}");
    assert!(said.contains("rx-same already has it"), "{said}");
}

/// `--out 'DIR/{sender}'`: each sender's files in a directory of its own
/// (`_unknown` for an unnamed one), created as needed; a symlink planted at a
/// sender's directory name is not followed, and that sender is told.
#[test]
fn per_sender_directories_are_created_and_a_planted_symlink_is_not_followed() {
    let broker = Broker::start();
    let (src, root, elsewhere) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = random_file(src.path(), "img_0001.jpg", 100_000, 4001);
    let template = root.path().join("{sender}");
    let template = template.to_str().unwrap();
    let receive = |name: &str| Cli::receive(broker.port(), Path::new(template), name, &[]);

    for (from, dir) in [("cam1", "cam1"), ("", mqft::UNKNOWN_SENDER_DIR)] {
        let rx = receive("rx-dirs");
        let sent = send_from(broker.port(), &file, from, &[]);
        let received = rx.finish_within(WAIT);
        assert_eq!((sent.code, received.code), (Some(0), Some(0)), "{from:?}\n{}\n{}", sent.text, received.text);
        let path = root.path().join(dir).join("img_0001.jpg");
        assert!(files_equal(&file, &path), "{from:?}: not at {}\n{}", path.display(), received.text);
        assert!(!fs::symlink_metadata(root.path().join(dir)).unwrap().file_type().is_symlink());
    }
    assert!(!root.path().join("{sender}").exists(), "the placeholder was taken literally");

    std::os::unix::fs::symlink(elsewhere.path(), root.path().join("cam2")).unwrap();
    let mut rx = receive("rx-dirs");
    let sent = send_from(broker.port(), &file, "cam2", &[]);
    assert_eq!(sent.code, Some(5), "a symlinked sender directory refuses the file\n{}", sent.text);
    assert!(sent.text.contains("symbolic link"), "the sender is told why\n{}", sent.text);
    let rejected = rx.wait_for("rejected", WAIT, |e| e["event"] == "rejected");
    assert_eq!(rejected["sender"], "cam2");
    rx.kill();
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0, "something was written through the symlink");
}

/// A name the receiver changes is reported to the sender with the reason
/// (`.hidden.jpg` is stored as `hidden.jpg`), and `con.jpg`, a Windows device
/// name, is a plain name on Linux.
#[test]
fn changed_names_are_reported_to_the_sender_and_con_is_a_fine_name_on_linux() {
    let broker = Broker::start();
    let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hidden = random_file(src.path(), ".hidden.jpg", 50_000, 5001);
    let con = random_file(src.path(), "con.jpg", 50_000, 5002);

    let rx = Cli::receive(broker.port(), out.path(), "rx-changed", &[]);
    let sent = send_from(broker.port(), &hidden, "cam1", &[]);
    let received = rx.finish_within(WAIT);
    assert_eq!((sent.code, received.code), (Some(0), Some(0)), "{}\n{}", sent.text, received.text);
    assert!(files_equal(&hidden, &out.path().join("hidden.jpg")));
    let told = sent.event("stored_as").unwrap_or_else(|| panic!("the sender was not told\n{}", sent.text));
    assert_eq!(told["name"], "hidden.jpg");
    assert_eq!(told["change"], "sanitized");
    assert_eq!(told["detail"], "leading dots or spaces removed");
    assert_eq!(received.event("completed").unwrap()["change"], "sanitized");

    // Said in the sender's own words too, not only in JSON.
    let rx = Cli::receive(broker.port(), out.path(), "rx-changed", &["--on-conflict", "overwrite"]);
    let mut text = mqft_tests::mqft_command(["send", "--from", "cam1"]);
    text.arg(&hidden).args(mqft_tests::broker_flags(broker.port()));
    let output = text.output().unwrap();
    assert!(rx.finish_within(WAIT).code == Some(0) && output.status.success(), "{}", mqft_tests::show_output(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stored it as hidden.jpg") && stderr.contains("leading dots"), "{stderr}");

    let rx = Cli::receive(broker.port(), out.path(), "rx-changed", &[]);
    let sent = send_from(broker.port(), &con, "cam1", &[]);
    let received = rx.finish_within(WAIT);
    assert_eq!((sent.code, received.code), (Some(0), Some(0)), "{}\n{}", sent.text, received.text);
    assert!(files_equal(&con, &out.path().join("con.jpg")));
    assert!(sent.event("stored_as").is_none(), "{}", sent.text);
}

/// A file kept under a numbered name and sent again is "already have", and the
/// sender is told the numbered name again: from a fresh receiver (found on
/// disk), and from a running one (its memory of finished transfers, checked
/// against the disk).
#[test]
fn a_renamed_file_sent_again_is_already_here_under_its_numbered_name() {
    let broker = Broker::start();
    let (cam1, cam2, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = camera_file(cam1.path(), "img_0001.jpg", 6001);
    let second = camera_file(cam2.path(), "img_0001.jpg", 6002);
    let mut command = mqft_tests::mqft_command(["receive", "--json", "--name", "rx-again", "--out"]);
    command.arg(out.path()).args(mqft_tests::broker_flags(broker.port()));
    let mut rx = mqft_tests::Process::spawn(&mut command);
    assert!(mqft_tests::wait_until(WAIT, || rx.stdout().contains(r#""event":"connected""#)), "{}", rx.stderr());

    assert_eq!(send_from(broker.port(), &first, "cam1", &[]).code, Some(0));
    for round in 0..2 {
        let sent = send_from(broker.port(), &second, "cam2", &[]);
        assert_eq!(sent.code, Some(0), "round {round}\n{}", sent.text);
        let told = sent.event("stored_as").unwrap_or_else(|| panic!("round {round}: not told\n{}", sent.text));
        assert_eq!(told["name"], "img_0001 (1).jpg", "round {round}");
        assert_eq!(told["change"], "renamed", "round {round}");
    }
    let already = |rx: &mqft_tests::Process| rx.stdout().matches(r#""event":"already_complete""#).count();
    assert!(mqft_tests::wait_until(WAIT, || already(&rx) == 1), "{}", rx.stdout());
    rx.kill();
    assert_eq!(
        visible(out.path()),
        BTreeSet::from(["img_0001.jpg".to_owned(), "img_0001 (1).jpg".to_owned()]),
        "stored once, not again as (2)"
    );

    // A receiver started afresh finds it on disk.
    let fresh = Cli::receive(broker.port(), out.path(), "rx-again", &[]);
    let sent = send_from(broker.port(), &second, "cam2", &["--chunk-size", "32k"]);
    let received = fresh.finish_within(WAIT);
    assert_eq!((sent.code, received.code), (Some(0), Some(0)), "{}\n{}", sent.text, received.text);
    assert_eq!(sent.event("stored_as").map(|e| e["name"].clone()), Some("img_0001 (1).jpg".into()), "{}", sent.text);
    let have = received.event("already_complete").unwrap_or_else(|| panic!("{}", received.text));
    assert_eq!(have["change"], "renamed");
    assert_eq!(visible(out.path()).len(), 2);
}
