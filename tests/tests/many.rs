//! Many senders into one receiver (issue 9, items 7 and 4), through the `mqft`
//! binary and a default Mosquitto: offers past the receiver's cap on open
//! transfers wait in its queue instead of being refused; a full queue refuses
//! with "receiver queue full" after the sender retried; `receive --once` ends
//! when the sender of its transfer aborts; and a receiver that cannot write to
//! its directory says so at start (exit 8), or tells the sender the OS's reason.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use mqft::proto::{AbortReason, Ctl, Manifest, Meta, Prefix};
use mqft_tests::{
    broker_flags as at, files_equal, mqft_command as mqft, random_file, show_output as show, wait_until, Broker,
    Process, HOST,
};

/// The bound on one whole test's processes.
const WAIT: Duration = Duration::from_secs(240);

/// Starts `mqft receive` into `out` and waits until it subscribed to manifests.
fn start_receiver(broker: &Broker, out: &Path, extra: &[&str]) -> Process {
    let before = broker.subscribers(&Prefix::default().manifest_filter()).len();
    let mut command = mqft(["receive", "--name", "gw1", "--out"]);
    command.arg(out).args(at(broker.port())).args(extra);
    let receiver = Process::spawn(&mut command);
    assert!(
        wait_until(Duration::from_secs(30), || broker.subscribers(&Prefix::default().manifest_filter()).len() > before),
        "mqft receive did not subscribe\nstdout: {}\nstderr: {}",
        receiver.stdout(),
        receiver.stderr(),
    );
    receiver
}

/// Publishes `payload` on `topic` at QoS 1 with `mosquitto_pub`: a sender by
/// hand, which offers a file and never sends a chunk.
fn mosquitto_pub(broker: &Broker, topic: &str, payload: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload");
    std::fs::write(&path, payload).unwrap();
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", HOST, "-p", &broker.port().to_string(), "-q", "1", "-t", topic, "-f"])
        .arg(&path)
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub failed");
}

/// A manifest for a file nobody will send the chunks of: it holds a transfer
/// slot until aborted.
fn slot_holder(name: &str, run: u32) -> Manifest {
    Manifest::new(name.into(), 1 << 20, 64 << 10, Some([5; 32]), Meta::default(), run).unwrap()
}

/// The peak resident set of a running process, from `VmHWM` in
/// `/proc/<pid>/status`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("a VmHWM line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM in kB");
    kib * 1024
}

/// The files (not hidden) in `dir`.
fn visible_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 9, item 7: twenty cameras start together, each with five 500 KB images,
/// into one receiver with its default cap of 16 open transfers. Before the queue,
/// 18 of the 20 senders failed at once with "receiver busy" (exit 5). Now every
/// image arrives byte-identical, every sender exits 0, and the receiver's peak RSS
/// stays within 64 MiB.
#[test]
fn twenty_cameras_of_five_images_all_arrive() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut receiver = start_receiver(&broker, out.path(), &[]);

    let mut cameras = Vec::new();
    for cam in 0..20u64 {
        let files: Vec<PathBuf> = (0..5u64)
            .map(|i| random_file(src.path(), &format!("cam{cam:02}_img{i}.jpg"), 500_000, 9000 + cam * 10 + i))
            .collect();
        cameras.push(files);
    }
    let senders: Vec<Process> =
        cameras.iter().map(|files| Process::spawn(mqft(["send"]).args(files).args(at(broker.port())))).collect();
    let outputs: Vec<Output> = senders.into_iter().map(|s| s.finish_within(WAIT)).collect();
    for (cam, output) in outputs.iter().enumerate() {
        assert_eq!(output.status.code(), Some(0), "camera {cam}\n{}", show(output));
    }
    assert!(
        wait_until(Duration::from_secs(30), || visible_files(out.path()).len() == 100),
        "{} of 100 images arrived\nreceiver stderr:\n{}",
        visible_files(out.path()).len(),
        receiver.stderr()
    );
    for file in cameras.iter().flatten() {
        let arrived = out.path().join(file.file_name().unwrap());
        assert!(files_equal(file, &arrived), "{} differs after the transfer", arrived.display());
    }
    let queued = receiver.stderr().matches("queued").count();
    assert!(queued > 0, "no offer was queued: the test did not exceed the cap\n{}", receiver.stderr());
    let peak = peak_rss(receiver.id());
    eprintln!("receiver peak RSS: {:.1} MiB, {queued} offers queued", peak as f64 / f64::from(1 << 20));
    assert!(peak <= 64 << 20, "receiver peak RSS {peak} bytes is above 64 MiB");
    receiver.kill();
}

/// Issue 9, item 7: two hundred senders of one small image each into a receiver
/// whose queue holds 50. Every image arrives, or its sender retried and then
/// exited 5 with a clear "receiver queue full"; nothing else happens.
#[test]
fn two_hundred_senders_into_a_queue_of_fifty() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut receiver = start_receiver(&broker, out.path(), &["--queue", "50"]);

    let files: Vec<PathBuf> =
        (0..200u64).map(|i| random_file(src.path(), &format!("shot{i:03}.jpg"), 20_000, 7000 + i)).collect();
    // A timeout of 20 s bounds the run: on 2 cores 200 processes take a while to
    // start, and the refused ones give up at it.
    let senders: Vec<Process> = files
        .iter()
        .map(|f| {
            Process::spawn(
                mqft(["send".as_ref(), f.as_os_str(), "--timeout".as_ref(), "20".as_ref()]).args(at(broker.port())),
            )
        })
        .collect();
    let outputs: Vec<Output> = senders.into_iter().map(|s| s.finish_within(WAIT)).collect();
    let (mut arrived, mut full) = (0, 0);
    for (file, output) in files.iter().zip(&outputs) {
        let target = out.path().join(file.file_name().unwrap());
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => {
                assert!(files_equal(file, &target), "{} differs\n{}", target.display(), show(output));
                arrived += 1;
            }
            Some(5) if stderr.contains("receiver queue full") => {
                assert!(stderr.contains("offering again"), "gave up without retrying\n{}", show(output));
                full += 1;
            }
            _ => panic!("{}: neither arrived nor refused as queue full\n{}", file.display(), show(output)),
        }
    }
    eprintln!("{arrived} arrived, {full} refused as queue full");
    assert_eq!(arrived + full, 200);
    receiver.kill();
}

/// Issue 9, item 4: `receive --once` whose accepted transfer is aborted by its
/// sender used to wait forever. It now exits 7 ("the transfer broke down") and
/// names the file.
#[test]
fn once_exits_7_when_the_sender_aborts_its_transfer() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let receiver = start_receiver(&broker, out.path(), &["--once", "--json"]);

    // A sender that offers a file and aborts once it is accepted, by hand.
    let m = Manifest::new("gate.jpg".into(), 1 << 20, 64 << 10, Some([3; 32]), Meta::default(), 77).unwrap();
    let prefix = Prefix::default();
    let publish = |topic: String, payload: &[u8]| mosquitto_pub(&broker, &topic, payload);
    publish(prefix.manifest(&m.id), &m.encode());
    assert!(
        wait_until(Duration::from_secs(30), || receiver.stdout().contains("\"accepted\"")),
        "the receiver did not accept\n{}",
        receiver.stderr()
    );
    publish(prefix.ctl(&m.id), &Ctl::Abort { run: 77, reason: AbortReason::Cancelled }.encode());
    let output = receiver.finish_within(Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(7), "{}", show(&output));
    // With --json the error is the last event, on stdout.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("the sender aborted gate.jpg"), "{}", show(&output));
}

/// A tmpfs mounted on a temporary directory, read-only or writable, unmounted on
/// drop. The tests run as root, where a 0555 directory is still writable: only a
/// read-only mount refuses root. Mounting fails the test, clearly, without
/// CAP_SYS_ADMIN.
struct Mount(tempfile::TempDir);

impl Mount {
    fn new(read_only: bool) -> Mount {
        use rustix::mount::{mount, MountFlags};
        let dir = tempfile::tempdir().unwrap();
        let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
        if read_only {
            flags |= MountFlags::RDONLY;
        }
        let data = std::ffi::CString::new("size=8m,mode=0755").unwrap();
        mount("tmpfs", dir.path(), "tmpfs", flags, Some(data.as_c_str())).unwrap_or_else(|e| {
            panic!("cannot mount a tmpfs on {}: {e}; this test needs root (CAP_SYS_ADMIN)", dir.path().display())
        });
        Mount(dir)
    }

    fn remount_read_only(&self) {
        use rustix::mount::{mount_remount, MountFlags};
        mount_remount(self.0.path(), MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV, "")
            .unwrap_or_else(|e| panic!("cannot remount {} read-only: {e}", self.0.path().display()));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.0.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

/// Issue 9, item 4: a receiver whose output directory is not writable used to
/// start and then refuse every file with "i/o error". It now exits 8 at start
/// with the OS's reason.
#[test]
fn receive_into_a_read_only_directory_exits_8_at_start() {
    let broker = Broker::start();
    let ro = Mount::new(true);
    let mut command = mqft(["receive", "--out"]);
    command.arg(ro.0.path()).args(at(broker.port()));
    let output = Process::spawn(&mut command).finish_within(Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(8), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("read-only file system"), "{}", show(&output));
}

/// Issue 9, item 4: when a file is refused for a local I/O error (here the
/// directory became read-only after the receiver started), the sender prints
/// what the receiver saw, not just "i/o error".
#[test]
fn the_sender_prints_the_receivers_os_reason() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let dir = Mount::new(false);
    let mut receiver = start_receiver(&broker, dir.0.path(), &[]);
    dir.remount_read_only();
    let file = random_file(src.path(), "plate.jpg", 100_000, 31);
    let output = Process::spawn(mqft(["send".as_ref(), file.as_os_str()]).args(at(broker.port())))
        .finish_within(Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(5), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gw1") && stderr.contains("i/o error: read-only file system"), "{}", show(&output));
    receiver.kill();
}

/// The queue's order, deterministically: one slot, held by a transfer whose
/// chunks never come. A sender is told it is queued (and says so), waits, and is
/// taken as soon as the slot frees (its holder aborts); it exits 0.
#[test]
fn a_queued_sender_is_taken_when_a_slot_frees() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut receiver = start_receiver(&broker, out.path(), &["--max-concurrent", "1", "--json"]);
    let holder = slot_holder("held.bin", 5);
    let prefix = Prefix::default();
    mosquitto_pub(&broker, &prefix.manifest(&holder.id), &holder.encode());
    assert!(
        wait_until(Duration::from_secs(30), || receiver.stdout().contains("\"accepted\"")),
        "the slot holder was not accepted\n{}",
        receiver.stdout()
    );

    let file = random_file(src.path(), "cam07.jpg", 300_000, 77);
    let mut sender = Process::spawn(mqft(["send".as_ref(), file.as_os_str()]).args(at(broker.port())));
    assert!(
        wait_until(Duration::from_secs(30), || sender.stderr().contains("queued at position 1 at gw1")),
        "the sender did not say it is queued\n{}",
        sender.stderr()
    );
    assert!(sender.is_running(), "the sender gave up while queued\n{}", sender.stderr());
    mosquitto_pub(&broker, &prefix.ctl(&holder.id), &Ctl::Abort { run: 5, reason: AbortReason::Failed }.encode());
    let output = sender.finish_within(Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(files_equal(&file, &out.path().join("cam07.jpg")));
    receiver.kill();
}

/// A full queue: one slot (held), a queue of one (held too). A sender is refused
/// with "receiver queue full", offers again with backoff until its timeout, and
/// exits 5 with that reason.
#[test]
fn a_full_queue_refuses_after_the_sender_retried() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let receiver = start_receiver(&broker, out.path(), &["--max-concurrent", "1", "--queue", "1", "--json"]);
    let prefix = Prefix::default();
    for (name, run) in [("held.bin", 5), ("waiting.bin", 6)] {
        let m = slot_holder(name, run);
        mosquitto_pub(&broker, &prefix.manifest(&m.id), &m.encode());
    }
    assert!(
        wait_until(Duration::from_secs(30), || receiver.stdout().contains("\"queued\"")),
        "the second offer was not queued\n{}",
        receiver.stdout()
    );

    let file = random_file(src.path(), "cam08.jpg", 50_000, 78);
    let started = std::time::Instant::now();
    let output = Process::spawn(
        mqft(["send".as_ref(), file.as_os_str(), "--timeout".as_ref(), "4".as_ref()]).args(at(broker.port())),
    )
    .finish_within(Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(5), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rejected") && stderr.contains("receiver queue full"), "{}", show(&output));
    let retries = stderr.matches("offering again").count();
    assert!(retries >= 2, "{retries} retries\n{}", show(&output));
    assert!(started.elapsed() >= Duration::from_secs(4), "gave up before its timeout");
}
