//! Links planted in the output directory.

use super::*;

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
    let events = stop_receive(rx).await;

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
