use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Job, Pool, Writer, WriterEvent};
use crate::conn::{Charge, MAX_BUFFERED};
use std::os::unix::fs::FileExt;

use crate::proto::{integrity, HashState, Manifest, Meta, ReceiveFailure, ReceiverEvent, ResumeState};
use crate::store::{self, OnConflict, Paths, StateDir};

/// A chunk's share of a budget nobody else uses.
fn charge() -> Charge {
    Charge::detached(0, 0)
}

/// A state folder in a new temporary output folder (kept alive by the first
/// value), and a pool of `threads` writer threads whose events come out of the
/// receiver.
fn pool_in_tempdir(threads: usize) -> (tempfile::TempDir, Arc<StateDir>, mpsc::UnboundedReceiver<WriterEvent>, Pool) {
    let out = tempfile::tempdir().unwrap();
    let state = StateDir::open(out.path(), None, None).unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    (out, state, events, Pool::new(threads, tx).unwrap())
}

/// A transfer of `data` (4-byte chunks) named `name` into `out`, its `.part` open.
fn transfer(state: &Arc<StateDir>, name: &str, data: &[u8]) -> (Manifest, Paths, std::fs::File) {
    transfer_in(state, name, data, 4)
}

/// [`transfer`], in chunks of `chunk_size`.
fn transfer_in(state: &Arc<StateDir>, name: &str, data: &[u8], chunk_size: u32) -> (Manifest, Paths, std::fs::File) {
    let sha = integrity::sha256(data);
    let m = Manifest::new(name.into(), data.len() as u64, chunk_size, Some(sha), Meta::default(), 1).unwrap();
    let rel = crate::name::sanitize_path(name).unwrap();
    let paths = Paths::new(state, &state.out, &rel, &m.id);
    let (f, _) = store::open_part(&paths, &m).unwrap();
    (m, paths, f)
}

/// The state of `m`'s transfer before anything arrived.
fn fresh(m: &Manifest) -> ResumeState {
    ResumeState { manifest: m.clone(), held: Vec::new(), hash: HashState::new(), hashed: 0, crcs: Vec::new() }
}

/// The complete state of `m`'s transfer of `data`.
fn complete(m: &Manifest, data: &[u8]) -> ResumeState {
    let crcs = (0..m.chunk_count)
        .map(|i| integrity::crc32(&data[m.chunk_offset(i) as usize..][..m.chunk_len(i) as usize]))
        .collect();
    let mut hash = HashState::new();
    hash.update(data);
    ResumeState { manifest: m.clone(), held: vec![(0, m.chunk_count)], hash, hashed: m.chunk_count, crcs }
}

/// The next event that is not the hash's progress.
async fn outcome(events: &mut mpsc::UnboundedReceiver<WriterEvent>) -> Option<WriterEvent> {
    loop {
        match events.recv().await {
            Some(WriterEvent::Hashed { .. }) => {}
            other => return other,
        }
    }
}

fn finalize(m: &Manifest, data: &[u8]) -> Job {
    Job::Finalize { complete: complete(m, data), conflict: OnConflict::Fail, modified_ms: None, unseal: None }
}

/// Many transfers at once on a pool of two: two threads, and each transfer's
/// jobs in the order they were queued (every write lands over the one before,
/// and a read sees the last).
#[tokio::test]
async fn many_transfers_run_on_few_threads_each_in_order() {
    let (_out, state, _events, pool) = pool_in_tempdir(2);
    let mut writers = Vec::new();
    for n in 0..12 {
        let (m, paths, f) = transfer(&state, &format!("f{n}"), &[0; 64]);
        writers.push(Writer::spawn(&pool, &fresh(&m), Arc::new(f), paths).unwrap());
    }
    assert_eq!(pool.threads(), 2);
    // Interleaved across transfers, 40 writes each over the same bytes.
    for round in 0..40u8 {
        for (n, w) in writers.iter().enumerate() {
            let byte = round.wrapping_mul(7).wrapping_add(n as u8);
            w.write(charge(), 2, 8, Bytes::from(vec![byte; 16]));
        }
    }
    for (n, w) in writers.iter().enumerate() {
        let last = 39u8.wrapping_mul(7).wrapping_add(n as u8);
        assert_eq!(w.read(8, 16).await.unwrap(), vec![last; 16], "transfer {n}");
    }
    drop(writers);
    assert_eq!(pool.join(), 0);
}

/// A stuck disk: queuing never waits, the chunks' bytes count until written,
/// and while the budget is full the transfer holding more than its share of
/// it is told so, but not when it is alone; once the disk moves, everything
/// runs in order (the checkpoint queued last records the chunks before it).
#[tokio::test]
async fn a_transfer_behind_its_disk_is_over_its_share_only_beside_others() {
    let (_out, state, _events, pool) = pool_in_tempdir(1);
    let data: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    let (m, paths, f) = transfer_in(&state, "stuck", &data, 1 << 20);
    let state_file = paths.state.clone();
    let w = Writer::spawn(&pool, &fresh(&m), Arc::new(f), paths).unwrap();
    let (release, stuck) = std::sync::mpsc::channel();
    w.queue(Job::Block(stuck));
    for i in 0..5 {
        let at = m.chunk_offset(i);
        w.write(charge(), i, at, Bytes::copy_from_slice(&data[at as usize..][..1 << 20]));
    }
    assert_eq!(w.queued_bytes(), 5 << 20);
    let (full, calm) = (Charge::detached(1, MAX_BUFFERED), Charge::detached(1, 0));
    assert!(w.over_share(&full, 2), "5 MiB queued, over half the budget");
    assert!(!w.over_share(&full, 1), "alone, it has the whole budget");
    assert!(!w.over_share(&calm, 2), "nobody needs the budget");
    let mut held = fresh(&m);
    held.held = vec![(0, 5)];
    w.queue(Job::Checkpoint(held));
    release.send(()).unwrap();
    assert_eq!(w.read(0, 5 << 20).await.unwrap(), data);
    assert_eq!(w.queued_bytes(), 0);
    assert!(!w.over_share(&full, 2), "written: nothing held");
    let saved = store::load_state(&state_file).unwrap().expect("the checkpoint ran");
    assert_eq!(saved.held, vec![(0, 5)]);
    drop(w);
    assert_eq!(pool.join(), 0);
}

/// A job that panics fails its own transfer (an event, and no more writes or
/// reads for it), the thread goes on with the other transfers, and the join
/// reports it.
#[tokio::test]
async fn a_panic_in_a_job_fails_its_transfer_and_is_reported() {
    let (_out, state, mut events, pool) = pool_in_tempdir(1);
    let (a, pa, fa) = transfer(&state, "a", b"aaaaaaaa");
    let (b, pb, fb) = transfer(&state, "b", b"bbbbbbbb");
    let wa = Writer::spawn(&pool, &fresh(&a), Arc::new(fa), pa).unwrap();
    let wb = Writer::spawn(&pool, &fresh(&b), Arc::new(fb), pb).unwrap();
    assert_eq!(pool.threads(), 1, "both on one thread");
    wa.queue(Job::Panic);
    match events.recv().await {
        Some(WriterEvent::Failed { id, error, .. }) => {
            assert_eq!(id, a.id);
            assert!(error.to_string().contains("panicked"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(wa.read(0, 8).await.is_err(), "nothing more for the failed transfer");
    wb.write(charge(), 0, 0, Bytes::from_static(b"bbbbbbbb"));
    assert_eq!(wb.read(0, 8).await.unwrap(), b"bbbbbbbb");
    wb.queue(finalize(&b, b"bbbbbbbb"));
    match outcome(&mut events).await {
        Some(WriterEvent::Finalized { id, result }) => {
            assert_eq!(id, b.id);
            assert_eq!(std::fs::read(result.unwrap()).unwrap(), b"bbbbbbbb");
        }
        other => panic!("{other:?}"),
    }
    drop((wa, wb));
    assert_eq!(pool.join(), 1);
}

/// Finalized files are answered only after a directory sync that their names
/// were in, whichever batch they fell in; a lone file is synced at once (its
/// answer comes without any other file to wait for).
#[tokio::test]
async fn a_file_is_confirmed_only_after_a_sync_that_covers_its_name() {
    let out = tempfile::tempdir().unwrap();
    let state = StateDir::open(out.path(), None, None).unwrap();
    let (tx, mut events) = mpsc::unbounded_channel();
    // The names in the output folder at each directory sync.
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let syncs = Arc::new(AtomicUsize::new(0));
    let sync = {
        let (seen, syncs, dir) = (Arc::clone(&seen), Arc::clone(&syncs), out.path().to_owned());
        Arc::new(move |fd: std::os::fd::BorrowedFd<'_>| {
            let names = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap());
            seen.lock().unwrap().push(names.filter(|n| n != crate::store::STATE_DIR_NAME).collect());
            syncs.fetch_add(1, Ordering::SeqCst);
            rustix::fs::fsync(fd).map_err(std::io::Error::from)
        })
    };
    let pool = Pool::with_sync(4, tx, sync).unwrap();

    // Alone.
    let (m, paths, f) = transfer(&state, "alone.jpg", b"just one");
    let w = Writer::spawn(&pool, &fresh(&m), Arc::new(f), paths).unwrap();
    w.write(charge(), 0, 0, Bytes::from_static(b"just one"));
    w.queue(finalize(&m, b"just one"));
    let Some(WriterEvent::Finalized { result: Ok(_), .. }) = outcome(&mut events).await else {
        panic!("not finalized")
    };
    assert_eq!(syncs.load(Ordering::SeqCst), 1);
    assert_eq!(seen.lock().unwrap()[0], ["alone.jpg"]);

    // Eight at once, on four threads.
    let mut writers = Vec::new();
    for n in 0..8 {
        let data = format!("image {n}");
        let (m, paths, f) = transfer(&state, &format!("img{n}.jpg"), data.as_bytes());
        let w = Writer::spawn(&pool, &fresh(&m), Arc::new(f), paths).unwrap();
        w.write(charge(), 0, 0, Bytes::from(data.clone().into_bytes()));
        writers.push((w, m, data));
    }
    for (w, m, data) in &writers {
        w.queue(finalize(m, data.as_bytes()));
    }
    for _ in 0..8 {
        let Some(WriterEvent::Finalized { result, .. }) = outcome(&mut events).await else { panic!("not finalized") };
        let name = result.unwrap().file_name().unwrap().to_str().unwrap().to_owned();
        // The sync that confirmed it ran before this answer, and saw the name.
        assert!(seen.lock().unwrap().iter().skip(1).any(|names| names.contains(&name)), "{name}");
    }
    assert!(syncs.load(Ordering::SeqCst) <= 1 + 8);
    assert_eq!(state.completed_count(), 9);
    drop(writers);
    drop(w);
    assert_eq!(pool.join(), 0);
}

/// The hash's progress events until one covers `through` chunks: the last one,
/// and the bytes read back over them all.
async fn hashed_until(events: &mut mpsc::UnboundedReceiver<WriterEvent>, through: u32) -> (HashState, u64) {
    let mut read_back = 0;
    loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv()).await;
        match ev.expect("no hash progress within 10 s") {
            Some(WriterEvent::Hashed { through: t, hash, read_back: r, .. }) => {
                read_back += r;
                assert!(t <= through, "hashed through {t}, past {through}");
                if t == through {
                    return (hash, read_back);
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Chunk `i` of `data`, in 4-byte chunks.
fn chunk(data: &[u8], i: u32) -> Bytes {
    let at = i as usize * 4;
    Bytes::copy_from_slice(&data[at..(at + 4).min(data.len())])
}

/// Chunks written in any order, the first one last: nothing is hashed until it
/// comes, then the thread reads the rest back, and the hash is the file's.
#[tokio::test]
async fn the_hash_of_chunks_written_in_any_order_is_the_files() {
    let (_out, state, mut events, pool) = pool_in_tempdir(1);
    // Ten chunks, the last one short.
    let data: Vec<u8> = (0..38u8).map(|b| b.wrapping_mul(37)).collect();
    let (m, paths, f) = transfer(&state, "any-order", &data);
    let part = paths.part.clone();
    let w = Writer::spawn(&pool, &fresh(&m), Arc::new(f), paths).unwrap();
    for i in [5, 9, 1, 3, 2, 8, 7, 4, 6] {
        w.write(charge(), i, m.chunk_offset(i), chunk(&data, i));
    }
    // Every write before it is done: still no progress, chunk 0 is missing.
    assert_eq!(w.read(0, 38).await.unwrap()[4..], data[4..]);
    assert!(events.try_recv().is_err(), "hashed with chunk 0 missing");
    w.write(charge(), 0, 0, chunk(&data, 0));
    let (hash, read_back) = hashed_until(&mut events, 10).await;
    assert_eq!(hash.finish(), integrity::sha256(&data));
    assert_eq!(hash.finish(), integrity::sha256(&std::fs::read(&part).unwrap()));
    assert_eq!(read_back, 38 - 4, "every chunk but the first read back, the short last one at its length");
    drop(w);
    assert_eq!(pool.join(), 0);
}

/// A byte changed on disk in a chunk written ahead of a gap is in the hash
/// (the thread reads the file back, not what it was handed), and the state
/// machine, handed that hash, fails the transfer instead of verifying it.
#[tokio::test]
async fn a_byte_changed_on_disk_ahead_of_a_gap_fails_verification() {
    let (_out, state, mut events, pool) = pool_in_tempdir(1);
    let data = b"0123456789ab".to_vec();
    let (m, paths, f) = transfer(&state, "changed", &data);
    let part = paths.part.clone();
    let now = std::time::Instant::now();
    let rid = crate::proto::ReceiverId::new("r").unwrap();
    let mut rx =
        crate::proto::Receiver::new(Default::default(), Default::default(), rid, m.clone(), None, now).unwrap();
    rx.hash_elsewhere();
    let w = Writer::spawn(&pool, &rx.snapshot(), Arc::new(f), paths).unwrap();
    for i in [2, 1, 0] {
        let payload = crate::proto::wire::Chunk::encode(m.run, i, i, &chunk(&data, i));
        let write = rx.handle_chunk(i, &payload, now).unwrap().expect("a new chunk");
        let bytes = Bytes::copy_from_slice(&write.data);
        if i == 0 {
            // Chunks 1 and 2 are on disk, waiting for chunk 0: one byte of chunk
            // 2 changes there (a failing disk, another program).
            assert_eq!(w.read(4, 8).await.unwrap(), &data[4..]);
            std::fs::OpenOptions::new().write(true).open(&part).unwrap().write_all_at(b"X", 9).unwrap();
        }
        w.write(charge(), i, write.offset, bytes);
    }
    let (hash, read_back) = hashed_until(&mut events, 3).await;
    assert_eq!(read_back, 8);
    assert_eq!(hash.finish(), integrity::sha256(b"012345678Xab"), "the bytes on disk");
    rx.hashed_through(3, hash).unwrap();
    assert_eq!(rx.poll_event(), Some(ReceiverEvent::Failed(ReceiveFailure::HashMismatch)));
    drop(w);
    assert_eq!(pool.join(), 0);
}

/// A resumed transfer's thread takes the hash on from the saved state: it reads
/// back the held chunks that follow on from it at once, and those past the next
/// gap once it fills.
#[tokio::test]
async fn a_resumed_transfer_hashes_on_from_its_saved_state() {
    let (_out, state, mut events, pool) = pool_in_tempdir(1);
    let data: Vec<u8> = (0..24u8).collect();
    let (m, paths, f) = transfer(&state, "resumed", &data);
    // Held from before: chunks 0..3 and 5, on disk; the hash covers chunk 0.
    for i in [0, 1, 2, 5] {
        f.write_all_at(&chunk(&data, i), m.chunk_offset(i)).unwrap();
    }
    let mut hash = HashState::new();
    hash.update(&data[..4]);
    let crcs = [0, 1, 2, 5].map(|i| integrity::crc32(&chunk(&data, i))).to_vec();
    let saved = ResumeState { manifest: m.clone(), held: vec![(0, 3), (5, 6)], hash, hashed: 1, crcs };
    let w = Writer::spawn(&pool, &saved, Arc::new(f), paths).unwrap();
    let (hash, read_back) = hashed_until(&mut events, 3).await;
    assert_eq!((hash.len(), read_back), (12, 8), "chunks 1 and 2 read back at once");
    for i in [3, 4] {
        w.write(charge(), i, m.chunk_offset(i), chunk(&data, i));
    }
    let (hash, read_back) = hashed_until(&mut events, 6).await;
    assert_eq!(read_back, 4, "chunk 5 read back");
    assert_eq!(hash.finish(), integrity::sha256(&data));
    drop(w);
    assert_eq!(pool.join(), 0);
}
