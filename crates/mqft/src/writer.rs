//! The receiver's file work, off the engine: a small pool of threads that take
//! each transfer's jobs in order (write a chunk at its offset, checkpoint, read
//! back, finalize, discard), and one committer thread that makes the names of
//! files finalized close together durable in one go.
//!
//! Before, the engine awaited every positional write on tokio's blocking pool:
//! a thread hand-off each way per chunk, and the next chunk's CRC and SHA-256
//! waited for the page-cache copy of the last one. Now the engine checks chunk
//! `n + 1`'s CRC while a writer thread writes chunk `n`, a checkpoint's fdatasync
//! no longer holds up the network, and the file's SHA-256 is made here too, from
//! the bytes each job writes (module `hash`): the engine's task neither hashes
//! nor waits for a read-back, so one slow disk holds up no other transfer's
//! timers or messages. The thread tells the engine how far the hash has come
//! ([`WriterEvent::Hashed`]). The threads are a [`Pool`]: a transfer is
//! bound to one of them for its whole life, and they are started as transfers
//! need them, up to the pool's size, and joined when the receiver stops. (One
//! thread per transfer cost a thread's start and end per file: 1,000 of them
//! for 1,000 small files.)
//!
//! Order is what makes that safe. Every job of a transfer runs on its thread,
//! after the jobs queued before it, so a checkpoint's fdatasync covers every
//! chunk the state it records says is held, a read-back for the hash sees the
//! bytes written before it, and the final rename sees the whole file. After a
//! failed write or checkpoint the thread does no more writes and no more
//! checkpoints for the transfer: the state machine counts a chunk as held
//! before it is written, so a state saved after a lost write would claim bytes
//! the file does not have. The last good checkpoint stands, and the engine
//! learns of the failure through [`WriterEvent::Failed`]. A job that panics
//! counts as such a failure (the transfer fails, the thread goes on with the
//! other transfers' jobs), and [`Pool::join`] reports how many did.
//!
//! # Group commit
//! A finalize fsyncs the file and takes its final name on the transfer's
//! thread ([`store::place_verified`]), then hands it to the committer, which
//! takes every file handed to it so far as one batch: one fsync per directory,
//! one append to the completed log ([`store::commit`]), then a
//! [`WriterEvent::Finalized`] for each, so the engine confirms a file only once
//! its name is durable. It never waits for company: a file finalized alone is
//! synced at once, and files that finish while a batch is being synced make up
//! the next one.
//!
//! # Never waited for
//! The engine never waits for a writer. A chunk goes to its transfer's queue
//! with the share of the connection's byte budget its message was charged
//! ([`Charge`], module `conn`), and gives it back once written. So the budget
//! bounds every received byte not yet on disk, in the connection's channel or
//! in a writer's queue, and a disk behind the link throttles the broker
//! through the connection's own rules (a QoS 1 chunk's ack waits; a QoS 0 one
//! past the budget is lost and repaired), while the engine goes on handling
//! every other message, acknowledgement and timer. Waiting for room instead
//! held up all of those behind one slow file.
//!
//! One transfer must not take the whole budget from the others, either: once
//! the budget is full, a chunk of a transfer whose queue holds more than its
//! share ([`Writer::over_share`]) is dropped before the state machine sees it,
//! as if the broker had lost it, and is requested again at the end of the
//! round. A transfer alone has the whole budget and loses nothing. Jobs that
//! are not chunks (checkpoint, finalize, discard, catch-up) are charged
//! nothing: the engine queues at most one checkpoint per batch of chunks
//! written, and one finalize or discard per transfer.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as chan, Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::mpsc;
#[cfg(test)]
use tokio::sync::oneshot;
use tracing::warn;

use crate::conn::{Charge, MAX_BUFFERED};
use crate::proto::{HashState, ResumeState, TransferId};
use crate::sealing::Unseal;
use crate::store::{self, Paths};

mod hash;

pub(crate) use hash::Hashing;

/// The most writer threads a receiver runs. Their work is mostly waiting on the
/// disk (fsyncs), so a few more than the cores keep it busy; past that they only
/// contend.
pub(crate) const MAX_THREADS: usize = 8;

/// Work for a writer thread.
pub(crate) enum Job {
    /// Write chunk `index`'s bytes at its offset in the `.part`, and hash them
    /// if the hash has come that far (module `hash`).
    Write { index: u32, offset: u64, data: Bytes },
    /// Hash the chunks held from before that the hash can take now (a resume).
    CatchUp,
    /// Make the `.part` durable, then save this state beside it.
    Checkpoint(ResumeState),
    /// Read bytes back (tests: what a job wrote).
    #[cfg(test)]
    Read { offset: u64, len: u64, reply: oneshot::Sender<io::Result<Vec<u8>>> },
    /// Give the verified file its final name ([`store::place_verified`], then the
    /// committer's [`store::commit`]); answered with [`WriterEvent::Finalized`].
    Finalize {
        complete: ResumeState,
        conflict: store::OnConflict,
        modified_ms: Option<i64>,
        unseal: Option<Box<Unseal>>,
    },
    /// Remove the `.part` and the state: the bytes are known bad.
    Discard,
    /// Panics, as a bug in a job would (tests of the pool's panic handling).
    #[cfg(test)]
    Panic,
    /// Holds the thread until the sender end is dropped or sends, as a stuck
    /// disk would (tests of a full queue).
    #[cfg(test)]
    Block(chan::Receiver<()>),
}

/// What a writer thread tells the engine.
#[derive(Debug)]
pub(crate) enum WriterEvent {
    /// A write, checkpoint or read-back for the hash failed (or a job panicked);
    /// the thread writes nothing more for this transfer.
    Failed { id: TransferId, op: &'static str, path: PathBuf, error: io::Error },
    /// The SHA-256 of the file now covers chunks `0..through`: for
    /// [`crate::proto::Receiver::hashed_through`]. `read_back` bytes were read
    /// back from the `.part` for it since the last such event.
    Hashed { id: TransferId, through: u32, hash: HashState, read_back: u64 },
    /// The outcome of a [`Job::Finalize`]: `Ok` once the name is durable.
    Finalized { id: TransferId, result: io::Result<PathBuf> },
}

/// How the committer syncs a directory: `fsync`, or what a test puts there.
pub(crate) type SyncDir = Arc<dyn Fn(std::os::fd::BorrowedFd<'_>) -> io::Result<()> + Send + Sync>;

/// One transfer's side of its thread: what its jobs work on.
struct Ctx {
    id: TransferId,
    file: Arc<File>,
    paths: Paths,
    /// A write, checkpoint or read-back for the hash failed: no more writes,
    /// checkpoints or hashing (see the module doc). Only the transfer's one
    /// thread reads or sets it.
    failed: AtomicBool,
    /// The file's SHA-256 so far. Only the transfer's one thread locks it, so
    /// the lock is never waited for.
    hashing: Mutex<Hashing>,
    /// Bytes of chunks in the queue, not written yet.
    queued: AtomicUsize,
}

/// A job on its way to a thread, with its place in the transfer's queue.
struct Task {
    ctx: Arc<Ctx>,
    job: Job,
    /// A chunk's share of the connection's budget, given back once it is
    /// written; other jobs hold none.
    charge: Option<Charge>,
}

/// A file whose name is taken, for the committer.
struct Pending {
    id: TransferId,
    placed: store::Placed,
}

/// One thread of the pool.
struct Worker {
    tasks: chan::Sender<Task>,
    /// Transfers bound to it that have not finished: a new one goes to the
    /// least busy thread.
    load: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

/// The receiver's writer threads and its committer.
pub(crate) struct Pool {
    size: usize,
    workers: Mutex<Vec<Worker>>,
    events: mpsc::UnboundedSender<WriterEvent>,
    commits: chan::Sender<Pending>,
    committer: JoinHandle<()>,
    panics: Arc<AtomicUsize>,
}

impl Pool {
    /// A pool of at most `size` writer threads (at least one, at most
    /// [`MAX_THREADS`]), reporting to `events`. No writer thread starts before
    /// a transfer needs it.
    pub fn new(size: usize, events: mpsc::UnboundedSender<WriterEvent>) -> io::Result<Pool> {
        Pool::with_sync(size, events, Arc::new(|fd| rustix::fs::fsync(fd).map_err(io::Error::from)))
    }

    /// [`Pool::new`], with the committer's directory sync given.
    pub fn with_sync(size: usize, events: mpsc::UnboundedSender<WriterEvent>, sync: SyncDir) -> io::Result<Pool> {
        let panics = Arc::new(AtomicUsize::new(0));
        let (commits, pending) = chan::channel();
        let committer = {
            let (events, panics) = (events.clone(), Arc::clone(&panics));
            std::thread::Builder::new()
                .name("mqft-commit".into())
                .spawn(move || commit_loop(&pending, &events, &*sync, &panics))?
        };
        Ok(Pool {
            size: size.clamp(1, MAX_THREADS),
            workers: Mutex::new(Vec::new()),
            events,
            commits,
            committer,
            panics,
        })
    }

    /// The pool's size for a receiver of `max_concurrent` transfers at once:
    /// no more threads than transfers, nor than [`MAX_THREADS`]; twice the cores
    /// otherwise, since the threads mostly wait on the disk.
    pub fn size_for(max_concurrent: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        max_concurrent.min(2 * cores).clamp(1, MAX_THREADS)
    }

    /// Writer threads started so far.
    #[cfg(test)]
    pub fn threads(&self) -> usize {
        self.workers().len()
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        // A panic while it was held leaves the list whole: every change to it is
        // one push.
        self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The thread a new transfer goes to: an idle one, else a new one while the
    /// pool has room, else the least busy.
    fn pick(&self) -> io::Result<(chan::Sender<Task>, Arc<AtomicUsize>)> {
        let mut workers = self.workers();
        let least = workers.iter().min_by_key(|w| w.load.load(Ordering::Relaxed));
        let idle = least.is_some_and(|w| w.load.load(Ordering::Relaxed) == 0);
        if !idle && workers.len() < self.size {
            let (tasks, rx) = chan::channel();
            let (events, commits, panics) = (self.events.clone(), self.commits.clone(), Arc::clone(&self.panics));
            let thread = std::thread::Builder::new()
                .name(format!("mqft-write-{}", workers.len()))
                .spawn(move || work(&rx, &events, &commits, &panics))?;
            workers.push(Worker { tasks, load: Arc::new(AtomicUsize::new(0)), thread });
        }
        let w = workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .ok_or_else(|| io::Error::other("no writer thread"))?;
        w.load.fetch_add(1, Ordering::Relaxed);
        Ok((w.tasks.clone(), Arc::clone(&w.load)))
    }

    /// Lets every thread finish what is queued, then joins them all, the
    /// committer last (the writers hand it their finalized files). Returns how
    /// many jobs or threads panicked. Call it once every [`Writer`] is
    /// finished or dropped; until it returns, the last checkpoints and names
    /// may not be on disk.
    pub fn join(self) -> usize {
        let Pool { workers, commits, committer, panics, .. } = self;
        let workers = workers.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut dead = 0;
        for w in workers {
            drop(w.tasks);
            dead += usize::from(w.thread.join().is_err());
        }
        drop(commits);
        dead += usize::from(committer.join().is_err());
        dead + panics.load(Ordering::Relaxed)
    }
}

/// The engine's end of one transfer's writer.
pub(crate) struct Writer {
    ctx: Arc<Ctx>,
    tasks: chan::Sender<Task>,
    load: Arc<AtomicUsize>,
}

impl Writer {
    /// Binds the transfer whose state machine stands at `from` (its snapshot)
    /// and whose `.part` is open as `file` to a thread of `pool`. The thread
    /// takes the file's hash on from where `from` has it, and starts by hashing
    /// the chunks held from before that follow on from there.
    pub fn spawn(pool: &Pool, from: &ResumeState, file: Arc<File>, paths: Paths) -> io::Result<Writer> {
        let (tasks, load) = pool.pick()?;
        let id = from.manifest.id;
        let hashing = Hashing::resume(from);
        let behind = hashing.behind();
        let ctx = Arc::new(Ctx {
            id,
            file,
            paths,
            failed: AtomicBool::new(false),
            hashing: Mutex::new(hashing),
            queued: AtomicUsize::new(0),
        });
        let writer = Writer { ctx, tasks, load };
        if behind {
            // Nothing else would take the hash past the chunks held from before
            // (none of them is written again), so this job must go. The thread
            // runs until the pool is joined.
            let task = Task { ctx: Arc::clone(&writer.ctx), job: Job::CatchUp, charge: None };
            writer.tasks.send(task).map_err(|_| io::Error::other("writer thread gone"))?;
        }
        Ok(writer)
    }

    /// Whether a chunk of this transfer is to be dropped for the others' sake:
    /// the budget is full, and this transfer's queue holds more than its share
    /// of it among `transfers` (see the module doc).
    pub fn over_share(&self, charge: &Charge, transfers: usize) -> bool {
        transfers > 1 && charge.budget_full() && self.ctx.queued.load(Ordering::Relaxed) > MAX_BUFFERED / transfers
    }

    /// Queues chunk `index`'s bytes, to be written at `offset`, holding
    /// `charge` until they are.
    pub fn write(&self, charge: Charge, index: u32, offset: u64, data: Bytes) {
        self.ctx.queued.fetch_add(data.len(), Ordering::Relaxed);
        self.push(Job::Write { index, offset, data }, Some(charge));
    }

    /// Queues a job that is not a chunk: it holds no budget, and is never refused.
    pub fn queue(&self, job: Job) {
        debug_assert!(!matches!(job, Job::Write { .. }), "a chunk is queued with its charge");
        self.push(job, None);
    }

    fn push(&self, job: Job, charge: Option<Charge>) {
        // The thread only stops once the pool is joined (or it died outside a
        // job, which the join reports); a job refused here has nobody to do it.
        if self.tasks.send(Task { ctx: Arc::clone(&self.ctx), job, charge }).is_err() {
            warn!("writer thread gone; job dropped");
        }
    }

    /// Bytes of chunks queued and not written yet.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.ctx.queued.load(Ordering::Relaxed)
    }

    /// Reads `len` bytes at `offset`, after every write queued before.
    #[cfg(test)]
    pub async fn read(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let (reply, answer) = oneshot::channel();
        self.queue(Job::Read { offset, len, reply });
        answer.await.unwrap_or_else(|_| Err(io::Error::other("writer thread gone")))
    }

    /// Ends the transfer's use of its thread; what it queued still runs, in
    /// order. [`Pool::join`] waits for it.
    pub fn finish(self) {}
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A writer thread's loop: jobs in order until the pool closes.
fn work(
    tasks: &chan::Receiver<Task>,
    events: &mpsc::UnboundedSender<WriterEvent>,
    commits: &chan::Sender<Pending>,
    panics: &AtomicUsize,
) {
    while let Ok(task) = tasks.recv() {
        let ctx = Arc::clone(&task.ctx);
        let chunk = if let Job::Write { data, .. } = &task.job { data.len() } else { 0 };
        let run = std::panic::AssertUnwindSafe(|| run(task, events, commits));
        let ran = std::panic::catch_unwind(run);
        ctx.queued.fetch_sub(chunk, Ordering::Relaxed);
        if let Err(panic) = ran {
            // A bug, not an I/O error: the transfer fails as if a write had (its
            // file can no longer be trusted), and the others go on.
            panics.fetch_add(1, Ordering::Relaxed);
            ctx.failed.store(true, Ordering::Relaxed);
            let what = crate::error::panic_message(panic);
            let error = io::Error::other(format!("the writer thread panicked: {what}"));
            // The engine may be gone already when the process stops.
            let _ = events.send(WriterEvent::Failed { id: ctx.id, op: "write", path: ctx.paths.part.clone(), error });
        }
    }
}

/// One job of one transfer.
fn run(task: Task, events: &mpsc::UnboundedSender<WriterEvent>, commits: &chan::Sender<Pending>) {
    // A chunk's charge is given back at the end of its job, written or not.
    let Task { ctx, job, charge: _charge } = task;
    let (id, file, paths) = (ctx.id, &*ctx.file, &ctx.paths);
    let failed = ctx.failed.load(Ordering::Relaxed);
    // The engine may be gone already when the process stops; its events then
    // have nobody to read them, which is fine.
    let fail = |op, path: &std::path::Path, error| {
        ctx.failed.store(true, Ordering::Relaxed);
        let _ = events.send(WriterEvent::Failed { id, op, path: path.to_owned(), error });
    };
    match job {
        Job::Write { .. } | Job::Checkpoint(_) if failed => {}
        Job::Write { index, offset, data } => match store::write_at(file, offset, &data) {
            Ok(()) => hash(&ctx, events, |h| h.written(file, index, &data)),
            Err(e) => fail("write", &paths.part, e),
        },
        // After a failed write the hash could cover bytes that are not there.
        Job::CatchUp if failed => {}
        Job::CatchUp => hash(&ctx, events, |h| h.catch_up(file)),
        Job::Checkpoint(state) => {
            if let Err(e) = store::checkpoint(file, paths, &state) {
                fail("write", &paths.state, e);
            }
        }
        #[cfg(test)]
        Job::Read { offset, len, reply } => {
            let data = if failed {
                Err(io::Error::other("an earlier write failed"))
            } else {
                store::read_at(file, offset, len)
            };
            let _ = reply.send(data);
        }
        Job::Finalize { complete, conflict, modified_ms, unseal } => {
            let placed = if failed {
                Err(io::Error::other("an earlier write failed"))
            } else {
                // An encrypted transfer's ciphertext checked out: decrypt it in
                // place first (crate::sealing).
                unseal.as_ref().map_or(Ok(()), |u| crate::sealing::unseal_in_place(file, u)).and_then(|()| {
                    let content = unseal.as_ref().map(|u| (u.opened.inner.size, u.opened.inner.sha256));
                    store::place_verified(file, paths, &complete, content, conflict, modified_ms)
                })
            };
            match placed {
                Ok(placed) => {
                    if let Err(chan::SendError(p)) = commits.send(Pending { id, placed }) {
                        // Only once the pool is joined, and it joins the writers
                        // first: commit here rather than lose the answer.
                        let result =
                            store::commit(vec![p.placed]).pop().unwrap_or_else(|| Err(io::Error::other("lost")));
                        let _ = events.send(WriterEvent::Finalized { id, result });
                    }
                }
                Err(e) => {
                    let _ = events.send(WriterEvent::Finalized { id, result: Err(e) });
                }
            }
        }
        Job::Discard => store::discard(paths),
        #[cfg(test)]
        Job::Panic => panic!("a test asked for it"),
        #[cfg(test)]
        Job::Block(release) => {
            let _ = release.recv();
        }
    }
}

/// Takes the transfer's hash on with `step`, and tells the engine how far it
/// came; a read-back that failed fails the transfer, as a failed write does (its
/// hash can go no further).
fn hash(ctx: &Ctx, events: &mpsc::UnboundedSender<WriterEvent>, step: impl FnOnce(&mut Hashing) -> io::Result<()>) {
    // Poisoned only by a panic in an earlier step, which failed the transfer.
    let mut hashing = ctx.hashing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let stepped = step(&mut hashing);
    let id = ctx.id;
    // The progress made before an error is still true; the engine may be gone
    // already when the process stops.
    if let Some(h) = hashing.report() {
        let _ = events.send(WriterEvent::Hashed { id, through: h.through, hash: h.hash, read_back: h.read_back });
    }
    if let Err(error) = stepped {
        ctx.failed.store(true, Ordering::Relaxed);
        let _ = events.send(WriterEvent::Failed { id, op: "read", path: ctx.paths.part.clone(), error });
    }
}

/// The committer's loop: whatever is ready, as one batch, until the pool closes.
fn commit_loop(
    pending: &chan::Receiver<Pending>,
    events: &mpsc::UnboundedSender<WriterEvent>,
    sync: &(dyn Fn(std::os::fd::BorrowedFd<'_>) -> io::Result<()> + Send + Sync),
    panics: &AtomicUsize,
) {
    while let Ok(first) = pending.recv() {
        // What is ready now, and nothing waited for: a lone file goes at once.
        let batch: Vec<Pending> = std::iter::once(first).chain(pending.try_iter()).collect();
        let ids: Vec<TransferId> = batch.iter().map(|p| p.id).collect();
        let placed = batch.into_iter().map(|p| p.placed).collect();
        let commit = std::panic::AssertUnwindSafe(|| store::commit_with(placed, &mut |fd| sync(fd)));
        let results = match std::panic::catch_unwind(commit) {
            Ok(results) => results,
            Err(panic) => {
                panics.fetch_add(1, Ordering::Relaxed);
                let what = crate::error::panic_message(panic);
                ids.iter().map(|_| Err(io::Error::other(format!("the committer panicked: {what}")))).collect()
            }
        };
        for (id, result) in ids.into_iter().zip(results) {
            let _ = events.send(WriterEvent::Finalized { id, result });
        }
    }
}

#[cfg(test)]
mod tests;
