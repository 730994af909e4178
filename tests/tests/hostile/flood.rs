//! A flood of manifests.

use super::*;

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
            Manifest::new(format!("flood-{i}.bin"), 1 << 20, 64 << 10, Some(sha), Meta::default(), 1).unwrap()
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
