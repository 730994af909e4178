//! Offers that wait for a transfer slot.
//!
//! A receiver keeps at most [`ReceiveOptions::max_concurrent`] transfers open: that
//! bounds its memory and file handles. An offer past that cap is not refused but
//! held here, first come first served, and answered [`Ack::Queued`] with its place;
//! when a transfer ends the head is offered again through the whole decision (size,
//! name, room on disk...), as if it had just arrived. Only a full queue refuses,
//! with [`RejectReason::QueueFull`], and the sender tries again later.
//!
//! The queue is bounded twice: by a count ([`ReceiveOptions::queue`]) and by the
//! bytes of the manifests it holds ([`ReceiveOptions::queue_bytes`]), so a flood of
//! offers from anyone who can publish on the broker cannot grow memory without
//! bound. A queued offer leaves the queue when its sender aborts (`ctl`) or clears
//! its retained manifest, and every queued sender is told `Cancelled` when the
//! receive stops.

use std::collections::VecDeque;
use std::io;

use tracing::{debug, info};

#[cfg(doc)]
use super::ReceiveOptions;
use super::{Engine, ReceiveEvent};
use crate::proto::{self, Ack, Manifest, RejectReason, TransferId};

/// Offers waiting for a slot, oldest first.
#[derive(Debug, Default)]
pub(super) struct OfferQueue {
    offers: VecDeque<Manifest>,
    /// Bytes of the manifests held, as they came on the wire.
    bytes: usize,
}

/// The bytes a queued manifest counts for: its encoding, as received.
fn cost(m: &Manifest) -> usize {
    m.encode().len()
}

impl OfferQueue {
    /// The place of `id` in the queue, 1 for the head.
    fn position(&self, id: &TransferId) -> Option<u32> {
        let at = self.offers.iter().position(|m| m.id == *id)?;
        Some(u32::try_from(at + 1).unwrap_or(u32::MAX))
    }

    /// Drops the offer of `id`, if queued. Returns it.
    pub(super) fn remove(&mut self, id: &TransferId) -> Option<Manifest> {
        let at = self.offers.iter().position(|m| m.id == *id)?;
        let m = self.offers.remove(at)?;
        self.bytes -= cost(&m);
        Some(m)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }

    fn pop(&mut self) -> Option<Manifest> {
        let m = self.offers.pop_front()?;
        self.bytes -= cost(&m);
        Some(m)
    }

    fn drain(&mut self) -> impl Iterator<Item = Manifest> + '_ {
        self.bytes = 0;
        self.offers.drain(..)
    }
}

impl Engine {
    /// Transfers that hold a slot: open and not yet ended.
    pub(super) fn open_transfers(&self) -> usize {
        self.transfers.values().filter(|t| !t.ended).count()
    }

    /// True while every transfer slot is taken.
    pub(super) fn slots_full(&self) -> bool {
        self.open_transfers() >= self.opts.max_concurrent.max(1)
    }

    /// Holds an offer that found every slot taken, or refuses it when the queue is
    /// full. The same transfer offered again (a sender re-publishing its manifest)
    /// keeps its place and is told it again.
    pub(super) fn enqueue(&mut self, m: Manifest) {
        if let Some(at) = self.queue.offers.iter().position(|q| q.id == m.id) {
            // The newest run is the one to answer with `Ready` later.
            let old = std::mem::replace(&mut self.queue.offers[at], m);
            self.queue.bytes = self.queue.bytes - cost(&old) + cost(&self.queue.offers[at]);
            let position = u32::try_from(at + 1).unwrap_or(u32::MAX);
            return self.send_queued(at, position);
        }
        let fits = self.queue.offers.len() < self.opts.queue
            && self.queue.bytes.saturating_add(cost(&m)) <= self.opts.queue_bytes;
        if !fits {
            return self.reject(&m, RejectReason::QueueFull);
        }
        self.queue.bytes += cost(&m);
        self.queue.offers.push_back(m);
        let at = self.queue.offers.len() - 1;
        let position = u32::try_from(at + 1).unwrap_or(u32::MAX);
        let m = &self.queue.offers[at];
        info!(id = %m.id, name = %crate::name::escape(&m.name), position, "queued");
        self.events.emit(ReceiveEvent::Queued { transfer: m.id, name: m.name.clone(), position });
        self.send_queued(at, position);
    }

    fn send_queued(&mut self, at: usize, position: u32) {
        let m = &self.queue.offers[at];
        self.conn.out.transmit(proto::Receiver::queued(&self.prefix, &self.rid, m, position));
    }

    /// Offers the queue's head again while a slot is free: each goes through the
    /// whole decision, and may still be refused (a file of that name arrived
    /// meanwhile, the disk filled...).
    pub(super) async fn admit_queued(&mut self) {
        while self.stopping.is_none() && !self.slots_full() && self.conn.out.has_room() {
            let Some(m) = self.queue.pop() else { return };
            debug!(id = %m.id, "a slot freed: offering the head of the queue again");
            self.offer(m).await;
        }
    }

    /// A sender aborted or cleared its manifest: its offer leaves the queue.
    pub(super) fn unqueue(&mut self, id: &TransferId) {
        if self.queue.remove(id).is_some() {
            info!(%id, "queued offer withdrawn by its sender");
        }
    }

    /// The queue's place of `id`, for a re-offered manifest.
    pub(super) fn queued_position(&self, id: &TransferId) -> Option<u32> {
        self.queue.position(id)
    }

    /// The receive is stopping: every queued sender is told, so none waits for a
    /// slot that will not come.
    pub(super) fn cancel_queued(&mut self) {
        let offers: Vec<Manifest> = self.queue.drain().collect();
        for m in offers {
            let ack = Ack::Rejected { reason: RejectReason::Cancelled, detail: String::new() };
            self.conn.out.transmit(proto::receiver::ack_transmit(&self.prefix, &m.id, &self.rid, &ack));
        }
    }
}

/// What a sender is told of a local I/O error: the operating system's words,
/// without the "(os error N)" tail, such as "read-only file system". Never the
/// error's own message, which may name local paths: only the OS's text for its
/// code, or the kind of error.
pub(super) fn os_reason(e: &io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => {
            let full = io::Error::from_raw_os_error(code).to_string();
            full.split(" (os error").next().unwrap_or(&full).to_owned()
        }
        None => e.kind().to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Checks at start that files can be created in `dir`: a probe file is created
/// (never through an existing name: `create_new` fails on anything there, a
/// symlink included) and removed. Returns the OS error otherwise, so that a
/// read-only or foreign directory stops the receive at once rather than refusing
/// every file later.
pub(super) fn probe_dir(dir: &std::path::Path) -> io::Result<()> {
    let name = format!(".mqft-probe-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let path = dir.join(name);
    std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_reasons_are_the_os_words() {
        assert_eq!(os_reason(&io::Error::from_raw_os_error(30)), "read-only file system");
        assert_eq!(os_reason(&io::Error::from_raw_os_error(13)), "permission denied");
        // The message may name local paths: only the kind goes out.
        let full = io::Error::new(io::ErrorKind::StorageFull, "9 bytes needed, 1 free in /srv/in");
        assert_eq!(os_reason(&full), "no storage space");
    }

    #[test]
    fn the_queue_counts_bytes() {
        let m = |n: &str| Manifest::new(n.into(), 1, 1, [0; 32], proto::Meta::default(), 1).unwrap();
        let mut q = OfferQueue::default();
        let (a, b) = (m("a"), m("bb"));
        q.bytes += cost(&a) + cost(&b);
        q.offers.extend([a.clone(), b.clone()]);
        assert_eq!(q.position(&b.id), Some(2));
        assert_eq!(q.remove(&a.id), Some(a));
        assert_eq!(q.position(&b.id), Some(1));
        assert_eq!(q.bytes, cost(&b));
        assert_eq!(q.pop(), Some(b));
        assert_eq!(q.bytes, 0);
        assert!(q.is_empty());
    }
}
