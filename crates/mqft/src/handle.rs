//! The caller's end of a running send or receive: its events, its cancellation, and
//! its result.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// A running send ([`crate::SendHandle`]) or receive ([`crate::ReceiveHandle`]).
///
/// Events are buffered until read (up to a few thousand; past that, new ones are
/// dropped); a caller that does not care about them can go straight to
/// [`Handle::wait`]. Dropping the handle does not stop the work: cancel it first.
#[derive(Debug)]
pub struct Handle<E, R> {
    events: mpsc::Receiver<E>,
    task: JoinHandle<Result<R, Error>>,
    cancel: CancellationToken,
}

impl<E, R> Handle<E, R> {
    pub(crate) fn new(
        events: mpsc::Receiver<E>,
        task: JoinHandle<Result<R, Error>>,
        cancel: CancellationToken,
    ) -> Self {
        Handle { events, task, cancel }
    }

    /// The next event; `None` once the work has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<E> {
        self.events.recv().await
    }

    /// Asks the work to stop. A send tells its receivers and clears its retained
    /// manifests; a receive saves its partial files' state for a later resume.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The token that [`Handle::cancel`] cancels, to wire to a signal handler or a
    /// parent token.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// True once the work has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the end, dropping any events not read yet.
    pub async fn wait(self) -> Result<R, Error> {
        drop(self.events);
        match self.task.await {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Err(Error::Cancelled),
            Err(_) => Err(Error::Internal("task panicked")),
        }
    }
}

/// Events buffered for a caller that reads them late. Past this many, new events
/// are dropped rather than kept: a long-running receive whose caller never reads
/// events must not grow without end, and the engine must never wait on its caller.
const EVENT_BUFFER: usize = 4096;

/// Sends events, ignoring a caller that stopped listening or fell far behind.
#[derive(Debug, Clone)]
pub(crate) struct Events<E>(mpsc::Sender<E>);

impl<E> Events<E> {
    pub fn channel() -> (Self, mpsc::Receiver<E>) {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        (Events(tx), rx)
    }

    pub fn emit(&self, e: E) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.0.try_send(e) {
            tracing::debug!("event dropped: the caller is not reading events");
        }
    }
}
