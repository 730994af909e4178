//! The caller's end of a running send or receive: its events, its cancellation, and
//! its result.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// A running send ([`crate::SendHandle`]) or receive ([`crate::ReceiveHandle`]).
///
/// Events are buffered until read. Past a few thousand unread, news (progress,
/// connection changes, offers) is dropped to keep memory bounded, but an event that
/// ends a file ([`ReceiveEvent::Completed`](crate::ReceiveEvent::Completed),
/// [`SendEvent::Finished`](crate::SendEvent::Finished), their failures and
/// refusals) is never dropped: it waits until read, so a caller that holds a
/// handle for a long time must read its events. A caller that does not care about
/// them can go straight to [`Handle::wait`], which stops the buffering.
///
/// Dropping the handle does not stop the work, which runs on in the background:
/// cancel it first.
#[derive(Debug)]
#[must_use = "the work runs on in the background even if the handle is dropped; cancel() stops it"]
pub struct Handle<E, R> {
    events: EventQueue<E>,
    task: JoinHandle<Result<R, Error>>,
    cancel: CancellationToken,
}

impl<E, R> Handle<E, R> {
    pub(crate) fn new(events: EventQueue<E>, task: JoinHandle<Result<R, Error>>, cancel: CancellationToken) -> Self {
        Handle { events, task, cancel }
    }

    /// The next event; `None` once the work has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<E> {
        self.events.next().await
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
            Err(e) => Err(Error::joined("transfer", e)),
        }
    }
}

/// Unread events past which news is dropped. A long-running receive whose caller
/// never reads events must not grow without end, and the engine must never wait on
/// its caller.
const EVENT_BUFFER: usize = 4096;

/// Which events a full queue may drop.
pub(crate) trait Event {
    /// True for an event that ends something the caller is owed an answer for (a
    /// file completed, failed or refused, a receiver done): kept whatever the queue
    /// holds. Everything else is news, which a later event supersedes.
    fn is_terminal(&self) -> bool;
}

impl Event for crate::ReceiveEvent {
    fn is_terminal(&self) -> bool {
        use crate::ReceiveEvent::*;
        matches!(self, Rejected { .. } | Completed(_) | AlreadyComplete(_) | Failed { .. })
    }
}

impl Event for crate::SendEvent {
    fn is_terminal(&self) -> bool {
        use crate::SendEvent::*;
        matches!(self, ReceiverComplete { .. } | ReceiverFailed { .. } | Finished { .. } | Failed { .. })
    }
}

#[derive(Debug)]
struct Queue<E> {
    events: VecDeque<E>,
    /// Live [`Events`] clones; none left means no more events will come.
    senders: usize,
    /// The reader is gone ([`Handle::wait`] or a dropped handle): events are discarded.
    closed: bool,
}

#[derive(Debug)]
struct Shared<E> {
    queue: Mutex<Queue<E>>,
    /// Wakes the one reader.
    ready: Notify,
}

impl<E> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, Queue<E>> {
        // The queue holds plain data and no code that can panic runs under the lock
        // (a push or pop), so a poisoned lock still holds a consistent queue.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The work's end of the event queue. Emitting never waits.
#[derive(Debug)]
pub(crate) struct Events<E>(Arc<Shared<E>>);

/// The caller's end of the event queue.
#[derive(Debug)]
pub(crate) struct EventQueue<E>(Arc<Shared<E>>);

impl<E: Event> Events<E> {
    pub fn channel() -> (Self, EventQueue<E>) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { events: VecDeque::new(), senders: 1, closed: false }),
            ready: Notify::new(),
        });
        (Events(shared.clone()), EventQueue(shared))
    }

    /// Queues `e` for the caller. When the queue is full, news is dropped, and a
    /// terminal event takes the place of the oldest news in the queue (or, when
    /// there is none, is kept on top: terminal events are bounded by the files the
    /// work handles, and the caller is owed each).
    pub fn emit(&self, e: E) {
        {
            let mut q = self.0.lock();
            if q.closed {
                return;
            }
            if q.events.len() >= EVENT_BUFFER {
                if !e.is_terminal() {
                    tracing::debug!("event dropped: the caller is not reading events");
                    return;
                }
                if let Some(at) = q.events.iter().position(|old| !old.is_terminal()) {
                    q.events.remove(at);
                }
            }
            q.events.push_back(e);
        }
        self.0.ready.notify_one();
    }
}

impl<E> Clone for Events<E> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Events(self.0.clone())
    }
}

impl<E> Drop for Events<E> {
    fn drop(&mut self) {
        let last = {
            let mut q = self.0.lock();
            q.senders -= 1;
            q.senders == 0
        };
        if last {
            self.0.ready.notify_one();
        }
    }
}

impl<E> EventQueue<E> {
    /// The next event; `None` once every sender is gone and the queue is empty.
    async fn next(&mut self) -> Option<E> {
        loop {
            {
                let mut q = self.0.lock();
                if let Some(e) = q.events.pop_front() {
                    return Some(e);
                }
                if q.senders == 0 {
                    return None;
                }
            }
            // A notification sent between the check above and this wait is kept
            // as Notify's single permit, so none is lost.
            self.0.ready.notified().await;
        }
    }
}

impl<E> Drop for EventQueue<E> {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.closed = true;
        q.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Ev {
        News(usize),
        Done(usize),
    }

    impl Event for Ev {
        fn is_terminal(&self) -> bool {
            matches!(self, Ev::Done(_))
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_news_but_never_a_terminal_event() {
        let (tx, mut rx) = Events::channel();
        for i in 0..EVENT_BUFFER {
            tx.emit(Ev::News(i));
        }
        tx.emit(Ev::News(EVENT_BUFFER));
        for i in 0..10 {
            tx.emit(Ev::Done(i));
        }
        drop(tx);
        let mut all = Vec::new();
        while let Some(e) = rx.next().await {
            all.push(e);
        }
        assert_eq!(all.len(), EVENT_BUFFER, "news made room for the terminal events");
        // The oldest news went; the terminal events are all there, in order, last.
        assert_eq!(all[0], Ev::News(10));
        let done: Vec<_> = all.iter().filter(|e| e.is_terminal()).collect();
        assert_eq!(done, (0..10).map(Ev::Done).collect::<Vec<_>>().iter().collect::<Vec<_>>());
        assert!(!all.contains(&Ev::News(EVENT_BUFFER)), "news past the limit is dropped");
    }

    #[tokio::test]
    async fn terminal_events_are_kept_past_the_limit_when_there_is_no_news_to_drop() {
        let (tx, mut rx) = Events::channel();
        for i in 0..EVENT_BUFFER + 5 {
            tx.emit(Ev::Done(i));
        }
        drop(tx);
        let mut n = 0;
        while let Some(e) = rx.next().await {
            assert_eq!(e, Ev::Done(n));
            n += 1;
        }
        assert_eq!(n, EVENT_BUFFER + 5);
    }

    #[tokio::test]
    async fn the_reader_wakes_for_an_event_and_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = Events::channel();
        let tx2 = tx.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(e) = rx.next().await {
                got.push(e);
            }
            got
        });
        tokio::task::yield_now().await;
        tx.emit(Ev::News(1));
        drop(tx);
        tx2.emit(Ev::Done(2));
        drop(tx2);
        assert_eq!(reader.await.unwrap(), vec![Ev::News(1), Ev::Done(2)]);
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_reported_with_its_message() {
        let (_tx, rx) = Events::<Ev>::channel();
        let task = tokio::spawn(async { panic!("bad state {}", 7) });
        let handle: Handle<Ev, ()> = Handle::new(rx, task, CancellationToken::new());
        match handle.wait().await {
            Err(Error::Panicked { message, .. }) => assert_eq!(message, "bad state 7"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn events_after_the_reader_left_are_discarded() {
        let (tx, rx) = Events::channel();
        tx.emit(Ev::News(1));
        drop(rx);
        tx.emit(Ev::Done(1));
        assert!(tx.0.lock().events.is_empty());
    }
}
