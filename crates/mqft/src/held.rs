//! Held transfers (`send --hold`, PROTOCOL.md 17): what sender and receiver share,
//! and the receiver's side.
//!
//! A held transfer lives at the broker as retained messages with an MQTT 5
//! Message Expiry Interval: its manifest, every chunk, and the confirmations of
//! the receivers that got it. This module knows how to publish them with the
//! time that is left ([`expiry_for`]) and how to clear them ([`clear`]).
//!
//! On a receiver, [`Holds`] watches the held transfers it accepted: it
//! subscribes to the confirmations of the other receivers the transfer is for,
//! serves the state machine's [`proto::ReceiverEvent::Refetch`] by subscribing to
//! single chunk topics, and once its own confirmation makes the set complete (all
//! of `to`, or itself when the transfer is for anybody) it clears the transfer at
//! the broker, so that nothing stays retained once everyone has it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tracing::{debug, info};

use crate::conn::Outbox;
use crate::proto::{self, Ack, Manifest, Prefix, Qos, ReceiverId, Topic, TransferId, Transmit};

/// The bytes the Message Expiry Interval property adds to every PUBLISH (one
/// byte of identifier, four of value): a held chunk is that much smaller than the
/// broker's maximum packet would otherwise allow.
pub(crate) const EXPIRY_PROPERTY_LEN: u32 = 5;

/// The hold in whole seconds for the Message Expiry Interval: rounded up, at
/// least 1 (0 would not be an expiry), at most what the property holds.
pub(crate) fn expiry_secs(hold: Duration) -> u32 {
    let secs = hold.as_secs() + u64::from(hold.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// Clears a held transfer at the broker: empty retained publishes on its manifest,
/// every chunk topic and the acks of `confirmed` (MQTT's way to delete a retained
/// message). The manifest goes first, so nobody starts on a hold being cleared.
pub(crate) fn clear<'a>(
    out: &mut Outbox,
    prefix: &Prefix,
    m: &Manifest,
    confirmed: impl IntoIterator<Item = &'a ReceiverId>,
) {
    out.publish(prefix.manifest(&m.id), Qos::AtLeastOnce, true, Vec::new());
    for index in 0..m.chunk_count {
        out.publish(prefix.chunk(&m.id, index), Qos::AtLeastOnce, true, Vec::new());
    }
    for r in confirmed {
        out.publish(prefix.ack(&m.id, r), Qos::AtLeastOnce, true, Vec::new());
    }
}

/// The expiry left of a held transfer's hold, in seconds for the Message Expiry
/// Interval (at least 1), or `None` for a transfer that is not held.
pub(crate) fn expiry_for(m: &Manifest) -> Option<u32> {
    let left = m.hold_until_ms?.saturating_sub(crate::trusted::unix_ms());
    Some(expiry_secs(Duration::from_millis(u64::try_from(left).unwrap_or(0))))
}

/// How long is left of a held transfer's hold (zero once it is over), or `None`
/// for a transfer that is not held.
pub(crate) fn time_left(m: &Manifest) -> Option<Duration> {
    let left = m.hold_until_ms?.saturating_sub(crate::trusted::unix_ms());
    Some(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
}

/// Queues a receiver's transmit: a retained one of a held transfer (its
/// confirmation) expires with the hold.
pub(crate) fn transmit(out: &mut Outbox, t: Transmit, m: &Manifest) {
    match (t.retain, expiry_for(m), t.payload) {
        (true, Some(expiry), proto::Payload::Bytes(b)) => out.publish_expiring(t.topic, t.qos, true, b, expiry),
        (_, _, payload) => out.transmit(Transmit { payload, ..t }),
    }
}

/// The held transfers a receiver accepted, while they may still need it.
#[derive(Default)]
pub(crate) struct Holds {
    watches: BTreeMap<TransferId, Watch>,
}

/// One held transfer a receiver accepted.
struct Watch {
    manifest: Manifest,
    prefix: Prefix,
    /// This receiver.
    me: ReceiverId,
    /// Who confirmed, this receiver included once it has.
    confirmed: BTreeSet<ReceiverId>,
    /// The other receivers' ack topics, subscribed.
    ack_topics: Vec<String>,
    /// The chunk topics of the last refetch, subscribed.
    refetch: Vec<String>,
}

impl Holds {
    /// A held transfer was accepted: the other receivers it is for are watched
    /// for their confirmations, retained ones included. Subscribed before the
    /// chunks, through the same ordered queue, so that their retained
    /// confirmations arrive before the last chunk can.
    pub fn accepted(&mut self, out: &mut Outbox, prefix: &Prefix, me: &ReceiverId, m: &Manifest) {
        self.forget_expired(out);
        if !m.is_held() || self.watches.contains_key(&m.id) {
            return;
        }
        let ack_topics: Vec<String> =
            m.to.iter()
                .filter(|r| r.as_str() != me.as_str())
                .filter_map(|r| ReceiverId::new(r).ok())
                .map(|r| prefix.ack(&m.id, &r))
                .collect();
        for t in &ack_topics {
            out.subscribe(t.clone());
        }
        let watch = Watch {
            manifest: m.clone(),
            prefix: prefix.clone(),
            me: me.clone(),
            confirmed: BTreeSet::new(),
            ack_topics,
            refetch: Vec::new(),
        };
        self.watches.insert(m.id, watch);
    }

    /// Serves [`proto::ReceiverEvent::Refetch`]: the last batch's single-chunk
    /// subscriptions go, this batch's come (a subscription hands over the topic's
    /// retained message, which the wildcard one did not deliver).
    pub fn refetch(&mut self, out: &mut Outbox, id: &TransferId, chunks: &[u32]) {
        let Some(w) = self.watches.get_mut(id) else { return };
        for t in w.refetch.drain(..) {
            out.unsubscribe(t);
        }
        debug!(%id, first = chunks.first(), count = chunks.len(), "fetching held chunks again");
        for &i in chunks {
            let t = w.prefix.chunk(id, i);
            out.subscribe_again(t.clone());
            w.refetch.push(t);
        }
    }

    /// A message on another receiver's ack topic of a watched transfer; false for
    /// any other topic (the caller routes it as usual).
    pub fn on_message(&mut self, out: &mut Outbox, topic: &str, payload: &[u8]) -> bool {
        // Chunks pass here by the thousand: only ack topics are looked up.
        if self.watches.is_empty() || !topic.contains("/ack/") {
            return false;
        }
        let Some((id, from)) = self.watches.iter().find_map(|(id, w)| match w.prefix.parse(topic) {
            Some(Topic::Ack(t, from)) if t == *id => Some((*id, from)),
            _ => None,
        }) else {
            return false;
        };
        let Some(w) = self.watches.get_mut(&id) else { return true };
        if payload.is_empty() {
            return true;
        }
        match Ack::decode(payload, w.manifest.chunk_count) {
            Ok(Ack::Complete { sha256 } | Ack::Stored { sha256, .. }) if Some(sha256) == w.manifest.sha256 => {
                debug!(%id, receiver = %from, "held transfer confirmed by another receiver");
                w.confirmed.insert(from);
                self.clear_if_done(out, &id);
            }
            _ => {}
        }
        true
    }

    /// This receiver confirmed a held transfer (its `Complete` or `Stored` is
    /// queued, retained).
    pub fn confirmed(&mut self, out: &mut Outbox, id: &TransferId) {
        let Some(w) = self.watches.get_mut(id) else { return };
        w.confirmed.insert(w.me.clone());
        self.clear_if_done(out, id);
    }

    /// A held transfer ended here without a confirmation: nothing to watch.
    pub fn ended(&mut self, out: &mut Outbox, id: &TransferId) {
        if self.watches.get(id).is_some_and(|w| !w.confirmed.contains(&w.me)) {
            self.forget(out, id);
        }
    }

    /// Clears the transfer at the broker once this receiver has confirmed and so
    /// has everyone else it is for.
    fn clear_if_done(&mut self, out: &mut Outbox, id: &TransferId) {
        let Some(w) = self.watches.get(id) else { return };
        let everyone = w.manifest.to.iter().all(|r| w.confirmed.iter().any(|c| c.as_str() == r));
        if !w.confirmed.contains(&w.me) || !everyone {
            return;
        }
        info!(%id, "every receiver confirmed the held transfer: clearing it at the broker");
        clear(out, &w.prefix, &w.manifest, w.confirmed.iter());
        self.forget(out, id);
    }

    fn forget(&mut self, out: &mut Outbox, id: &TransferId) {
        if let Some(w) = self.watches.remove(id) {
            for t in w.ack_topics.into_iter().chain(w.refetch) {
                out.unsubscribe(t);
            }
        }
    }

    /// Holds that are over have expired at the broker: their watches go, so a
    /// receiver that runs for months keeps no more than the holds still running.
    fn forget_expired(&mut self, out: &mut Outbox) {
        let over: Vec<TransferId> = self
            .watches
            .iter()
            .filter(|(_, w)| time_left(&w.manifest).is_some_and(|l| l.is_zero()))
            .map(|(id, _)| *id)
            .collect();
        for id in over {
            self.forget(out, &id);
        }
    }
}
