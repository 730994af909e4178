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

use crate::util::{client, connected, drain, within};

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

    rx.cancel();
    let events = drain(&mut rx).await;
    within("the receive", rx.wait()).await.unwrap();

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
            ReceiveEvent::Completed { transfer, path, .. } => {
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
