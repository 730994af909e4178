//! A full disk.

use super::*;

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
    next_matching(&mut rx, "the completion", |e| matches!(e, ReceiveEvent::Completed(_))).await;
    let output = tokio::task::spawn_blocking(move || sender.finish_within(LIMIT)).await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(files_equal(&path, &final_path));
    rx.cancel();
    within("the receive", rx.wait()).await.unwrap();
}
