//! Lying manifests and chunks.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_above_the_limit_or_the_free_space_are_refused_before_anything_is_written() {
    let broker = Broker::start();
    let client = client(&broker, MqttVersion::V5);
    let mut raw = Raw::connect(&broker, "raw-sizes").await;
    raw.subscribe(&broker, "raw-sizes", "files/+/ack/+").await;
    let lie =
        |name: &str, size: u64| Manifest::new(name.into(), size, 16 << 20, Some([7; 32]), Meta::default(), 1).unwrap();

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
    let other = Manifest::new("other.bin".into(), 10, 4, Some([1; 32]), Meta::default(), 1).unwrap();
    raw.publish(&prefix.manifest(&m.id), other.encode()).await; // another transfer's, under this id
    raw.publish(&prefix.manifest(&m.id), [&[proto::PROTOCOL_VERSION][..], b"garbage"].concat()).await;
    // The same transfer with other metadata and a new run: the same transfer.
    // (The modification time is part of the id since version 4, so it stays.)
    let meta = Meta {
        content_type: Some("application/x-evil".into()),
        modified_ms: m.meta.modified_ms,
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
