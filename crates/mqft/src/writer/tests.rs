use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{queue_len, Job, Pool, Writer, WriterEvent};
use crate::proto::{integrity, HashState, Manifest, Meta, ResumeState};
use crate::store::{self, OnConflict, Paths, StateDir};

#[test]
fn the_queue_holds_a_few_megabytes_of_chunks() {
    assert_eq!(queue_len(256 << 10), 16);
    assert_eq!(queue_len(1 << 20), 4);
    assert_eq!(queue_len(16 << 10), 16);
    assert_eq!(queue_len(8 << 20), 2);
}

/// A transfer of `data` (4-byte chunks) named `name` into `out`, its `.part` open.
fn transfer(state: &Arc<StateDir>, name: &str, data: &[u8]) -> (Manifest, Paths, std::fs::File) {
    let sha = integrity::sha256(data);
    let m = Manifest::new(name.into(), data.len() as u64, 4, Some(sha), Meta::default(), 1).unwrap();
    let rel = crate::name::sanitize_path(name).unwrap();
    let paths = Paths::new(state, &state.out, &rel, &m.id);
    let (f, _) = store::open_part(&paths, &m).unwrap();
    (m, paths, f)
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

fn finalize(m: &Manifest, data: &[u8]) -> Job {
    Job::Finalize { complete: complete(m, data), conflict: OnConflict::Fail, modified_ms: None, unseal: None }
}

/// Many transfers at once on a pool of two: two threads, and each transfer's
/// jobs in the order they were queued (every write lands over the one before,
/// and a read sees the last).
#[tokio::test]
async fn many_transfers_run_on_few_threads_each_in_order() {
    let out = tempfile::tempdir().unwrap();
    let state = StateDir::open(out.path(), None, None).unwrap();
    let (tx, _events) = mpsc::unbounded_channel();
    let pool = Pool::new(2, tx).unwrap();
    let mut writers = Vec::new();
    for n in 0..12 {
        let (m, paths, f) = transfer(&state, &format!("f{n}"), &[0; 64]);
        writers.push(Writer::spawn(&pool, m.id, m.chunk_size, Arc::new(f), paths).unwrap());
    }
    assert_eq!(pool.threads(), 2);
    // Interleaved across transfers, 40 writes each over the same bytes (more
    // than a queue holds, so the engine's side waits for room too).
    for round in 0..40u8 {
        for (n, w) in writers.iter().enumerate() {
            let byte = round.wrapping_mul(7).wrapping_add(n as u8);
            w.send(Job::Write { offset: 8, data: Bytes::from(vec![byte; 16]) }).await;
        }
    }
    for (n, w) in writers.iter().enumerate() {
        let last = 39u8.wrapping_mul(7).wrapping_add(n as u8);
        assert_eq!(w.read(8, 16).await.unwrap(), vec![last; 16], "transfer {n}");
    }
    drop(writers);
    assert_eq!(pool.join(), 0);
}

/// A job that panics fails its own transfer (an event, and no more writes or
/// reads for it), the thread goes on with the other transfers, and the join
/// reports it.
#[tokio::test]
async fn a_panic_in_a_job_fails_its_transfer_and_is_reported() {
    let out = tempfile::tempdir().unwrap();
    let state = StateDir::open(out.path(), None, None).unwrap();
    let (tx, mut events) = mpsc::unbounded_channel();
    let pool = Pool::new(1, tx).unwrap();
    let (a, pa, fa) = transfer(&state, "a", b"aaaaaaaa");
    let (b, pb, fb) = transfer(&state, "b", b"bbbbbbbb");
    let wa = Writer::spawn(&pool, a.id, a.chunk_size, Arc::new(fa), pa).unwrap();
    let wb = Writer::spawn(&pool, b.id, b.chunk_size, Arc::new(fb), pb).unwrap();
    assert_eq!(pool.threads(), 1, "both on one thread");
    wa.send(Job::Panic).await;
    match events.recv().await {
        Some(WriterEvent::Failed { id, error, .. }) => {
            assert_eq!(id, a.id);
            assert!(error.to_string().contains("panicked"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(wa.read(0, 8).await.is_err(), "nothing more for the failed transfer");
    wb.send(Job::Write { offset: 0, data: Bytes::from_static(b"bbbbbbbb") }).await;
    assert_eq!(wb.read(0, 8).await.unwrap(), b"bbbbbbbb");
    wb.send(finalize(&b, b"bbbbbbbb")).await;
    match events.recv().await {
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
    let w = Writer::spawn(&pool, m.id, m.chunk_size, Arc::new(f), paths).unwrap();
    w.send(Job::Write { offset: 0, data: Bytes::from_static(b"just one") }).await;
    w.send(finalize(&m, b"just one")).await;
    let Some(WriterEvent::Finalized { result: Ok(_), .. }) = events.recv().await else { panic!("not finalized") };
    assert_eq!(syncs.load(Ordering::SeqCst), 1);
    assert_eq!(seen.lock().unwrap()[0], ["alone.jpg"]);

    // Eight at once, on four threads.
    let mut writers = Vec::new();
    for n in 0..8 {
        let data = format!("image {n}");
        let (m, paths, f) = transfer(&state, &format!("img{n}.jpg"), data.as_bytes());
        let w = Writer::spawn(&pool, m.id, m.chunk_size, Arc::new(f), paths).unwrap();
        w.send(Job::Write { offset: 0, data: Bytes::from(data.clone().into_bytes()) }).await;
        writers.push((w, m, data));
    }
    for (w, m, data) in &writers {
        w.send(finalize(m, data.as_bytes())).await;
    }
    for _ in 0..8 {
        let Some(WriterEvent::Finalized { result, .. }) = events.recv().await else { panic!("not finalized") };
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
