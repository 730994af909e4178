//! The receiver's file work for one transfer, off the engine: a thread that takes
//! jobs in order (write a chunk at its offset, checkpoint, read back, finalize,
//! discard) from a small bounded queue.
//!
//! Before, the engine awaited every positional write on tokio's blocking pool:
//! a thread hand-off each way per chunk, and the next chunk's CRC and SHA-256
//! waited for the page-cache copy of the last one. Now the engine hashes chunk
//! `n + 1` while this thread writes chunk `n`, and a checkpoint's fdatasync no
//! longer holds up the network.
//!
//! Order is what makes that safe. Every job runs after the jobs queued before it,
//! so a checkpoint's fdatasync covers every chunk the state it records says is
//! held, a read-back for the hash sees the bytes written before it, and the final
//! rename sees the whole file. After a failed write or checkpoint the thread does
//! no more writes and no more checkpoints for the transfer: the state machine
//! counts a chunk as held before it is written, so a state saved after a lost
//! write would claim bytes the file does not have. The last good checkpoint
//! stands, and the engine learns of the failure through [`WriterEvent::Failed`].
//!
//! The queue holds [`QUEUE_BYTES`] of chunks (2 to 16 jobs); the engine awaits
//! room, which leaves later messages in the connection's channel, where the
//! connection's own budget bounds them.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::proto::{ResumeState, TransferId};
use crate::sealing::Unseal;
use crate::store::{self, Paths};

/// Bytes of chunks queued to one writer thread: a few chunks in flight to the page
/// cache are enough to keep it busy, and each holds a chunk's bytes. 16 chunks of
/// 256 KiB; 4 of 1 MiB.
pub(crate) const QUEUE_BYTES: usize = 4 << 20;

/// Work for a writer thread.
pub(crate) enum Job {
    /// Write a chunk's bytes at its offset in the `.part`.
    Write { offset: u64, data: Bytes },
    /// Make the `.part` durable, then save this state beside it.
    Checkpoint(ResumeState),
    /// Read bytes back for the hash.
    Read { offset: u64, len: u64, reply: oneshot::Sender<io::Result<Vec<u8>>> },
    /// Give the verified file its final name ([`store::finalize`]); answered with
    /// [`WriterEvent::Finalized`].
    Finalize {
        complete: ResumeState,
        conflict: store::OnConflict,
        modified_ms: Option<i64>,
        unseal: Option<Box<Unseal>>,
    },
    /// Remove the `.part` and the state: the bytes are known bad.
    Discard,
}

/// What a writer thread tells the engine.
#[derive(Debug)]
pub(crate) enum WriterEvent {
    /// A write or checkpoint failed; the thread writes nothing more for this
    /// transfer.
    Failed { id: TransferId, op: &'static str, path: PathBuf, error: io::Error },
    /// The outcome of a [`Job::Finalize`].
    Finalized { id: TransferId, result: io::Result<PathBuf> },
}

/// The engine's end of one transfer's writer thread.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Starts the thread for a transfer of `chunk_size` chunks whose `.part` is
    /// open as `file`.
    pub fn spawn(
        id: TransferId,
        chunk_size: u32,
        file: Arc<File>,
        paths: Paths,
        events: mpsc::UnboundedSender<WriterEvent>,
    ) -> io::Result<Writer> {
        let (jobs, rx) = mpsc::channel(queue_len(chunk_size));
        let thread = std::thread::Builder::new()
            .name(format!("mqft-write-{}", &id.to_string()[..8]))
            .spawn(move || work(id, &file, &paths, rx, &events))?;
        Ok(Writer { jobs, thread })
    }

    /// Queues a job, waiting for room.
    pub async fn send(&self, job: Job) {
        // The thread only stops once this end is dropped (or it panicked, which
        // the join in `finish` reports); a job refused here has nobody to do it.
        if self.jobs.send(job).await.is_err() {
            warn!("writer thread gone; job dropped");
        }
    }

    /// Reads `len` bytes at `offset`, after every write queued before.
    pub async fn read(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Read { offset, len, reply }).await;
        answer.await.unwrap_or_else(|_| Err(io::Error::other("writer thread gone")))
    }

    /// Closes the queue; the thread finishes what is queued, then ends. Join the
    /// handle before the process may exit, or the last checkpoint may be lost.
    pub fn finish(self) -> std::thread::JoinHandle<()> {
        drop(self.jobs);
        self.thread
    }
}

/// How many jobs a writer's queue holds for chunks of `chunk_size`.
fn queue_len(chunk_size: u32) -> usize {
    (QUEUE_BYTES / (chunk_size as usize).max(1)).clamp(2, 16)
}

/// The thread's loop: jobs in order until the queue closes.
fn work(
    id: TransferId,
    file: &File,
    paths: &Paths,
    mut jobs: mpsc::Receiver<Job>,
    events: &mpsc::UnboundedSender<WriterEvent>,
) {
    let mut failed = false;
    // The engine may be gone already when the process stops; its events then
    // have nobody to read them, which is fine.
    let fail = |op, path: &std::path::Path, error| {
        let _ = events.send(WriterEvent::Failed { id, op, path: path.to_owned(), error });
    };
    while let Some(job) = jobs.blocking_recv() {
        match job {
            Job::Write { .. } | Job::Checkpoint(_) if failed => {}
            Job::Write { offset, data } => {
                if let Err(e) = store::write_at(file, offset, &data) {
                    failed = true;
                    fail("write", &paths.part, e);
                }
            }
            Job::Checkpoint(state) => {
                if let Err(e) = store::checkpoint(file, paths, &state) {
                    failed = true;
                    fail("write", &paths.state, e);
                }
            }
            Job::Read { offset, len, reply } => {
                let data = if failed {
                    Err(io::Error::other("an earlier write failed"))
                } else {
                    store::read_at(file, offset, len)
                };
                let _ = reply.send(data);
            }
            Job::Finalize { complete, conflict, modified_ms, unseal } => {
                let result = if failed {
                    Err(io::Error::other("an earlier write failed"))
                } else {
                    // An encrypted transfer's ciphertext checked out: decrypt it in
                    // place first (crate::sealing).
                    unseal.as_ref().map_or(Ok(()), |u| crate::sealing::unseal_in_place(file, u)).and_then(|()| {
                        let content = unseal.as_ref().map(|u| (u.opened.inner.size, u.opened.inner.sha256));
                        store::finalize(file, paths, &complete, content, conflict, modified_ms)
                    })
                };
                let _ = events.send(WriterEvent::Finalized { id, result });
            }
            Job::Discard => store::discard(paths),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::queue_len;

    #[test]
    fn the_queue_holds_a_few_megabytes_of_chunks() {
        assert_eq!(queue_len(256 << 10), 16);
        assert_eq!(queue_len(1 << 20), 4);
        assert_eq!(queue_len(16 << 10), 16);
        assert_eq!(queue_len(8 << 20), 2);
    }
}
