//! Garbage.

use super::*;

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
    let rx = start_receive(&broker, &client, out.path(), receive_opts(&rid)).await;
    let mut raw = Raw::connect(&broker, "raw-garbage").await;
    raw.subscribe(&broker, "raw-garbage", "files/+/ack/+").await;

    // A transfer in progress, so that its chunk topics are subscribed too.
    let stalled = random_file(src.path(), "stalled.bin", 100_000, 7701);
    let m = manifest_of(&stalled, "stalled.bin", 16 * 1024, 1);
    assert!(matches!(offer(&mut raw, &m, &rid).await, Ack::Ready { .. }));
    let unknown = TransferId([0xab; 16]);
    let valid_manifest = Manifest::new("x.bin".into(), 10, 4, Some([1; 32]), Meta::default(), 1).unwrap();
    let valid_ctl = Ctl::EndRound { run: 1, next_seq: 5, sha256: None, size: None }.encode();
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
    let events = stop_receive(rx).await;
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
        Ack::Ready { run: 0, held: proto::RangeSet::new(), from_start: false }.encode(),
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
