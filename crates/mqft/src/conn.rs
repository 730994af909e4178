//! One connection to the broker, as four parts that can never wait on each other
//! in a circle:
//!
//! - the **poll task** owns the rumqttc event loop and never stops polling it, so
//!   that keep-alive pings go out whatever the engine does (rumqttc writes, pings
//!   included, only inside `poll`). It forwards what arrives into a bounded channel
//!   to the engine without ever waiting for room (see "Memory" below). After an
//!   error it sleeps with exponential backoff before polling again, which is when
//!   rumqttc reconnects (rumqttc itself would retry at once, in a tight loop).
//! - the **ack task** sends the acks of incoming QoS 1 publishes that must wait for
//!   the engine to catch up (below); rumqttc sends the others as it reads them.
//! - the **feed task** takes requests from a small bounded channel and awaits
//!   rumqttc's `AsyncClient`. Awaiting the client from the poll task would deadlock
//!   once rumqttc's request channel is full; here the wait only holds up the feed.
//!   Every publish and subscription passes it, so it is also where the rate
//!   limits hold them back (`pace.rs`), before rumqttc has them.
//! - the [`Outbox`], on the engine's side: requests go into the bounded channel with
//!   `try_send`, so the engine never blocks on the network either. Control messages
//!   that find the channel full wait in a short local backlog; chunks are only
//!   produced while there is room ([`Outbox::has_room`]), which is the backpressure
//!   that keeps the sender's memory to a few chunks.
//!
//! # Memory
//!
//! The protocol's credit bounds what a well-behaved sender has on the way (a
//! receiver grants credit only for chunks it has taken out), but anybody allowed to
//! publish under the prefix can send as much as the broker takes, as fast as it
//! takes it: zero-byte payloads on 64 KiB topics, say. So every received message is
//! charged its topic, its payload and [`MESSAGE_OVERHEAD`] against a byte budget
//! until the engine drops it (a receiver's chunk: until a writer thread has
//! written it, module `writer`), and:
//!
//! - a QoS 0 message that would take the budget past [`MAX_BUFFERED`] is dropped
//!   (QoS 0 may be lost; the protocol repairs);
//! - a QoS 1 message is acknowledged at once (by rumqttc, as it reads the batch of
//!   at most 10 packets it reads at a time) only while the budget is within
//!   [`MAX_BUFFERED`] and no other ack waits; otherwise its ack waits, in order, in
//!   the ack task until the engine has dropped enough. The broker sends at most its
//!   in-flight limit of unacknowledged QoS 1 messages (Mosquitto's
//!   `max_inflight_messages`, 20 by default), so it stops sending and queues the
//!   rest, or drops them past its own queue limit, as it would for a slow reader;
//! - a QoS 1 message that would take the budget past twice [`MAX_BUFFERED`] (a
//!   broker with a large in-flight limit, large messages) is dropped too; its ack
//!   still waits for room, so the broker is held back all the same.
//!
//! So the messages waiting for the engine hold at most 2 × [`MAX_BUFFERED`] plus
//! one message (a message larger than the budget is taken when nothing else is
//! waiting), each message costing at least [`MESSAGE_OVERHEAD`], which bounds the
//! channel's length too ([`EVENT_CAPACITY`]). None of it ever stops the polling,
//! so the connection stays alive while the engine is behind.
//!
//! Subscriptions are kept in the outbox and re-sent after every CONNACK: rumqttc
//! does not restore them, and a broker that lost our session has none.
//!
//! Closing must not lose what was sent last, such as a receiver's `Complete`: once
//! the engine has stopped, nothing else would send it again. So the feed task hands
//! over the DISCONNECT only when the broker has acknowledged every QoS 1 publish
//! before it: it counts the publishes it hands to rumqttc, and the poll task counts
//! the PUBACKs into a `watch`. A connection that breaks meanwhile is reconnected as
//! at any other time, and rumqttc sends the publishes again in the same session;
//! where the broker has no session for us, the poll task queues them again itself.
//!
//! A broker that stays unreachable ends the engine's wait for events after the
//! broker timeout ([`Connection::set_broker_timeout`], [`Inbox::recv`]): a send
//! gives up rather than retrying for ever, and closes at once.
//!
//! Over 600 lines: the four tasks (poll, feed, ack, nudge) share the budget, the
//! ack counts and the close sequence, whose reasoning is written next to each; split,
//! that reasoning would be spread over files. Its tests live in `conn/tests.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::ConnectError;
use crate::mqtt::{self, ConnAckInfo, Failure, Incoming, Options};
use crate::pace::{Pacer, HEADER_ESTIMATE};
use crate::proto::{Qos, Transmit};
use crate::Error;

/// The first pause after a failed connection; it doubles up to
/// [`Config::max_backoff`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Capacity of the channel between the outbox and the feed task, and of rumqttc's
/// own request channel behind it, at most...
const REQUEST_CAPACITY: usize = 16;
/// ...and at most this many bytes of the largest packet we send, so that large
/// chunks do not multiply what a sender holds (16 of 256 KiB; 4 of 1 MiB).
const REQUEST_BYTES: usize = 4 << 20;
/// Bytes of received messages that may wait for the engine before the broker is
/// held back (see "Memory" above): a sender's window normally keeps well below it,
/// but several large transfers at once, a window set too wide, or anybody
/// publishing on our topics must not grow a receiver's memory without bound.
pub(crate) const MAX_BUFFERED: usize = 8 << 20;
/// What a received message costs beyond its topic and payload: the event in the
/// channel, the `String` and `Bytes` headers, the allocator's rounding.
pub(crate) const MESSAGE_OVERHEAD: usize = 512;
/// Capacity of the channel to the engine: the messages the budget allows, each
/// costing at least [`MESSAGE_OVERHEAD`] of at most 2 × [`MAX_BUFFERED`] (plus the
/// one larger than the budget), and room for `Up`/`Down` events.
const EVENT_CAPACITY: usize = 2 * MAX_BUFFERED / MESSAGE_OVERHEAD + 64;
/// Acks waiting for the budget, at most: one per unacknowledged QoS 1 publish,
/// which packet ids limit to 65535 even for a broker that ignores its in-flight
/// limit.
const DEFERRED_ACKS: usize = 1 << 16;
/// How long the first connection may be silent before the wait is logged.
const CONNECT_NOTICE: Duration = Duration::from_secs(1);
/// QoS 1 publishes in flight to the broker at once, at most...
const INFLIGHT: u16 = 32;
/// ...and at most this many bytes of the largest packet we send (32 of 256 KiB;
/// 8 of 1 MiB).
const INFLIGHT_BYTES: usize = 8 << 20;
/// Capacity of the channel to the feed task under a rate limit (see
/// [`Connection::open`]).
pub(crate) const PACED_CAPACITY: usize = 1;

/// A request for the feed task.
#[derive(Debug)]
pub(crate) enum Request {
    /// `expiry`: the MQTT 5 Message Expiry Interval in seconds, for a held
    /// transfer's retained messages (`None`: never expires; ignored under 3.1.1).
    Publish {
        topic: String,
        qos: Qos,
        retain: bool,
        payload: Bytes,
        expiry: Option<u32>,
    },
    Subscribe(String),
    /// A subscription that the broker's retained messages do not come with (MQTT
    /// 5 only; see [`Outbox::subscribe_live`]).
    SubscribeLive(String),
    Unsubscribe(String),
    Disconnect,
}

/// What the connection reports to the engine.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// Connected (again): the CONNACK's numbers.
    Up(ConnAckInfo),
    /// A message arrived. `charge` holds its share of the budget until the
    /// engine drops it (a receiver's chunk: until it is written). `retain`: a
    /// retained message handed to a new subscription, not a live publication.
    Message { topic: String, payload: Bytes, retain: bool, charge: Charge },
    /// The connection failed or broke; the poll task retries after a backoff.
    Down(Failure),
}

/// The engine's side of a connection.
pub(crate) struct Connection {
    /// Events from the poll task.
    pub events: Inbox,
    /// Requests to the feed task.
    pub out: Outbox,
    addr: String,
    connect_timeout: Duration,
    /// PUBACKs counted by the poll task, and QoS 1 publishes taken by the feed
    /// task: what the broker still owes us.
    acked: watch::Receiver<u64>,
    taken: Arc<AtomicU64>,
    /// Cancelled when [`Connection::close`] begins: the engine reads no more.
    closing: CancellationToken,
    stop: CancellationToken,
    poll_task: JoinHandle<()>,
    feed_task: JoinHandle<()>,
    ack_task: JoinHandle<()>,
}

impl Connection {
    /// Starts the tasks; the first connection attempt begins at once. Must be called
    /// within a tokio runtime.
    pub async fn open(cfg: &Config, opts: &Options) -> Result<Self, Error> {
        // The TLS files and the system's CA store are read here: off the async
        // workers.
        let (c, o) = (cfg.clone(), opts.clone());
        let built = tokio::task::spawn_blocking(move || mqtt::new(&c, &o)).await;
        let (client, el) = built.map_err(|e| Error::joined("connection set-up", e))??;
        let (event_tx, events) = mpsc::channel(EVENT_CAPACITY);
        // Paced, requests wait in the feed task for their turn: one in the channel
        // is enough to keep it busy, and the engine's backlog keeps the rest, so
        // that chunks are read only when they can go and a control message waits
        // behind two packets at most (`pace::queue_time`).
        let pacer = Pacer::new(cfg, Instant::now());
        let capacity = if pacer.is_some() { PACED_CAPACITY } else { opts.request_capacity };
        let (req_tx, req_rx) = mpsc::channel(capacity);
        let (acked_tx, acked) = watch::channel(0);
        let (ack_tx, ack_rx) = mpsc::channel(DEFERRED_ACKS);
        let closing = CancellationToken::new();
        let stop = CancellationToken::new();
        let acks =
            Acks { budget: Arc::default(), deferred: ack_tx, waiting: Arc::default(), generation: Arc::default() };
        let ack_task = tokio::spawn(ack_loop(client.clone(), ack_rx, acks.clone(), closing.clone()));
        // Not while paced: a nudge would be a publish the pacer never counted.
        let nudger = (cfg.nudge && pacer.is_none()).then(|| Arc::new(Nudger::default()));
        if let Some(n) = nudger.clone() {
            // It ends with `stop`, as the others do.
            let topic = format!("{}/nudge", cfg.prefix.as_str());
            tokio::spawn(nudge_loop(client.clone(), topic, n, stop.clone()));
        }
        let poll_task = tokio::spawn(poll_loop(
            el,
            event_tx,
            acks,
            acked_tx,
            closing.clone(),
            stop.clone(),
            PollSettings {
                max_backoff: cfg.max_backoff.max(MIN_BACKOFF),
                ack_limit: ack_limit(cfg),
                nudger: nudger.clone(),
            },
        ));
        let taken = Arc::new(AtomicU64::new(0));
        let feed_task = tokio::spawn(feed_loop(client, req_rx, acked.clone(), taken.clone(), pacer, nudger));
        Ok(Connection {
            events: Inbox::new(events, cfg.addr()),
            out: Outbox { tx: req_tx, backlog: VecDeque::new(), subscriptions: BTreeMap::new(), queued_qos1: 0 },
            addr: cfg.addr(),
            connect_timeout: cfg.connect_timeout,
            acked,
            taken,
            closing,
            stop,
            poll_task,
            feed_task,
            ack_task,
        })
    }

    /// Gives up once the broker has been unreachable for `limit` without a break
    /// (`None`: never): [`Inbox::recv`] then fails with [`Error::BrokerLost`].
    pub fn set_broker_timeout(&mut self, limit: Option<Duration>) {
        self.events.broker_timeout = limit;
    }

    /// Waits for the first CONNACK. Network errors are retried until the connect
    /// timeout; a refusal or a TLS failure ends the wait at once, since retrying
    /// cannot fix them. A wait longer than [`CONNECT_NOTICE`] is logged, so that
    /// a closed port or a silent broker does not look like a hang.
    pub async fn wait_up(&mut self, cancel: &CancellationToken) -> Result<ConnAckInfo, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let mut notice = Some(Instant::now() + CONNECT_NOTICE);
        let mut last: Option<ConnectError> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                _ = sleep_until(deadline) => {
                    let source = last.unwrap_or_else(|| {
                        ConnectError::Io(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
                    });
                    return Err(Error::Unreachable { addr: self.addr.clone(), source });
                }
                _ = sleep_until(notice.unwrap_or(deadline)), if notice.is_some() => {
                    notice = None;
                    let secs = self.connect_timeout.as_secs();
                    match &last {
                        Some(e) => info!(broker = %self.addr, error = %e, "still connecting; giving up after {secs} s"),
                        None => info!(broker = %self.addr, "still waiting for the broker to answer; giving up after {secs} s"),
                    }
                }
                ev = self.events.rx.recv() => match ev {
                    Some(ConnEvent::Up(info)) => return Ok(info),
                    Some(ConnEvent::Down(Failure::Refused(reason))) => {
                        return Err(Error::Refused { addr: self.addr.clone(), reason });
                    }
                    Some(ConnEvent::Down(Failure::Connect(source @ ConnectError::Tls(_)))) => {
                        return Err(Error::Unreachable { addr: self.addr.clone(), source });
                    }
                    Some(ConnEvent::Down(Failure::Connect(e))) => {
                        debug!(error = %e, "connection attempt failed");
                        last = Some(e);
                    }
                    Some(ConnEvent::Down(Failure::Closed)) | None => {
                        return Err(Error::Internal("connection task ended"));
                    }
                    Some(ConnEvent::Message { .. }) => {}
                },
            }
        }
    }

    /// Sends what is queued, waits for the broker to acknowledge every QoS 1
    /// publish, then sends a DISCONNECT and waits for it to go out; all of it within
    /// `grace`. Then stops both tasks. Messages queued before the DISCONNECT reach
    /// the broker first: one channel, one TCP stream, in order.
    ///
    /// After [`Inbox::recv`] gave up on the broker there is nobody to wait for,
    /// and closing is immediate. So it is while the connection is down with
    /// nothing of ours on the way (nothing queued, every QoS 1 publish acked): a
    /// reconnect would only carry the DISCONNECT, and waiting for it would hold up
    /// the exit (Ctrl-C on a receiver whose broker is gone).
    pub async fn close(mut self, grace: Duration) {
        let nothing_owed = self.out.backlog.is_empty()
            && self.out.tx.capacity() == self.out.tx.max_capacity()
            && *self.acked.borrow() >= self.taken.load(Ordering::SeqCst);
        let pointless = self.events.gave_up || (!self.events.is_up() && nothing_owed);
        let grace = if pointless { Duration::ZERO } else { grace };
        let deadline = Instant::now() + grace;
        self.closing.cancel();
        self.out.push(Request::Disconnect);
        loop {
            self.out.flush();
            if self.out.backlog.is_empty() {
                break;
            }
            tokio::select! {
                _ = self.out.writable() => {}
                _ = sleep_until(deadline) => break,
            }
        }
        // The feed task holds the DISCONNECT back until the acks are in; the poll
        // task ends once it is written and the broker has closed the connection.
        let poll = &mut self.poll_task;
        if tokio::time::timeout_at(deadline, poll).await.is_err() {
            debug!("broker did not take the disconnect in time");
        }
        self.stop.cancel();
        self.poll_task.abort();
        self.feed_task.abort();
        self.ack_task.abort();
    }

    /// True once the broker has acknowledged every QoS 1 publish queued through
    /// [`Connection::out`] so far: for `send --hold`, the moment the broker holds
    /// the file. Counted on the engine's side of the queue, so a publish still in
    /// the backlog or the channel is owed. A reconnect without a session counts the
    /// publishes it dropped as acknowledged (they never will be): the engine learns
    /// of that loss from [`ConnEvent::Up`] and must publish them again.
    pub fn all_acked(&self) -> bool {
        *self.acked.borrow() >= self.out.queued_qos1
    }

    /// The broker's count of PUBACKs, to wait on for [`Connection::all_acked`].
    pub fn acked_watch(&self) -> watch::Receiver<u64> {
        self.acked.clone()
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // An engine that returns early (an error) must not leave tasks behind.
        self.stop.cancel();
        self.poll_task.abort();
        self.feed_task.abort();
        self.ack_task.abort();
    }
}

/// A failure in a few words, for the message of [`Error::BrokerLost`].
fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Refused(r) => format!("refused: {r}"),
        Failure::Connect(e) => e.to_string(),
        Failure::Closed => "closed".to_owned(),
    }
}

/// The engine's end of the event channel, which watches how long the broker has
/// been unreachable.
pub(crate) struct Inbox {
    rx: mpsc::Receiver<ConnEvent>,
    addr: String,
    /// How long the broker may stay unreachable before [`Inbox::recv`] gives up;
    /// `None`: never.
    broker_timeout: Option<Duration>,
    /// Since when the connection has been down, and why, last.
    down_since: Option<Instant>,
    last_failure: String,
    /// [`Inbox::recv`] gave up: closing has nobody to talk to.
    gave_up: bool,
}

impl Inbox {
    fn new(rx: mpsc::Receiver<ConnEvent>, addr: String) -> Self {
        Inbox { rx, addr, broker_timeout: None, down_since: None, last_failure: String::new(), gave_up: false }
    }

    /// True unless the connection is down (after the first CONNACK).
    pub fn is_up(&self) -> bool {
        self.down_since.is_none()
    }

    /// The next event, after the first CONNACK. Fails with [`Error::BrokerLost`]
    /// once the broker has been unreachable, without a break, for longer than the
    /// broker timeout. Cancel-safe.
    pub async fn recv(&mut self) -> Result<ConnEvent, Error> {
        let limit = self.down_since.zip(self.broker_timeout).map(|(since, limit)| since + limit);
        let ev = tokio::select! {
            ev = self.rx.recv() => ev.ok_or(Error::Internal("connection task ended"))?,
            _ = sleep_until(limit.unwrap_or_else(Instant::now)), if limit.is_some() => {
                self.gave_up = true;
                return Err(Error::BrokerLost {
                    addr: self.addr.clone(),
                    secs: self.broker_timeout.unwrap_or_default().as_secs(),
                    last: std::mem::take(&mut self.last_failure),
                });
            }
        };
        match &ev {
            ConnEvent::Up(_) => self.down_since = None,
            ConnEvent::Down(failure) => {
                self.down_since.get_or_insert_with(Instant::now);
                self.last_failure = describe(failure);
            }
            ConnEvent::Message { .. } => {}
        }
        Ok(ev)
    }
}

/// The engine's queue of requests in front of the feed task.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Request>,
    /// Requests that found the channel full, oldest first.
    backlog: VecDeque<Request>,
    /// Filters to restore after every CONNACK, each with whether it was made
    /// without retained messages ([`Outbox::subscribe_live`]).
    subscriptions: BTreeMap<String, bool>,
    /// QoS 1 publishes queued so far, for [`Connection::all_acked`].
    queued_qos1: u64,
}

impl Outbox {
    /// Queues a request behind everything queued before it.
    pub fn push(&mut self, req: Request) {
        if matches!(req, Request::Publish { qos: Qos::AtLeastOnce, .. }) {
            self.queued_qos1 += 1;
        }
        self.backlog.push_back(req);
        self.flush();
    }

    /// Queues a protocol transmit whose payload is ready.
    pub fn publish(&mut self, topic: String, qos: Qos, retain: bool, payload: Vec<u8>) {
        self.push(Request::Publish { topic, qos, retain, payload: Bytes::from(payload), expiry: None });
    }

    /// [`Outbox::publish`] with an MQTT 5 Message Expiry Interval (seconds): the
    /// broker drops the message, retained or queued, once it has expired.
    pub fn publish_expiring(&mut self, topic: String, qos: Qos, retain: bool, payload: Vec<u8>, expiry: u32) {
        self.push(Request::Publish { topic, qos, retain, payload: Bytes::from(payload), expiry: Some(expiry) });
    }

    /// Subscribes to `filter` again even if it is subscribed already, so that the
    /// broker hands over its retained messages once more (MQTT 5 retain handling 0;
    /// Mosquitto does the same under 3.1.1). Remembered for reconnections.
    pub fn subscribe_again(&mut self, filter: String) {
        self.subscriptions.entry(filter.clone()).or_insert(false);
        self.push(Request::Subscribe(filter));
    }

    /// Queues a protocol transmit that carries bytes (not a chunk reference).
    pub fn transmit(&mut self, t: Transmit) {
        match t.payload {
            crate::proto::Payload::Bytes(b) => self.publish(t.topic, t.qos, t.retain, b),
            crate::proto::Payload::Chunk(_) => {
                // Chunks are read from the file by the sender engine; a receiver never
                // produces them.
                warn!(topic = %t.topic, "chunk transmit without data dropped");
            }
        }
    }

    /// Subscribes (QoS 1), and remembers the filter for reconnections.
    pub fn subscribe(&mut self, filter: String) {
        if self.subscriptions.insert(filter.clone(), false).is_none() {
            self.push(Request::Subscribe(filter));
        }
    }

    /// [`Outbox::subscribe`], asking the broker (MQTT 5 Retain Handling 2) not to
    /// hand over the retained messages under `filter` now or after a reconnection:
    /// only what is published from then on. Under MQTT 3.1.1 they come all the same.
    pub fn subscribe_live(&mut self, filter: String) {
        if self.subscriptions.insert(filter.clone(), true).is_none() {
            self.push(Request::SubscribeLive(filter));
        }
    }

    /// Unsubscribes, and forgets the filter.
    pub fn unsubscribe(&mut self, filter: String) {
        self.subscriptions.remove(&filter);
        self.push(Request::Unsubscribe(filter));
    }

    /// Sends every remembered subscription again, after a CONNACK.
    pub fn resubscribe(&mut self) {
        let filters: Vec<(String, bool)> = self.subscriptions.iter().map(|(f, &live)| (f.clone(), live)).collect();
        for (f, live) in filters {
            self.push(if live { Request::SubscribeLive(f) } else { Request::Subscribe(f) });
        }
    }

    /// Moves the backlog into the channel while it has room.
    pub fn flush(&mut self) {
        while let Some(req) = self.backlog.pop_front() {
            match self.tx.try_send(req) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(req)) => {
                    self.backlog.push_front(req);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // The feed task is gone; the poll task reports why.
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// True when a new request would go straight into the channel.
    pub fn has_room(&self) -> bool {
        self.backlog.is_empty() && self.tx.capacity() > 0
    }

    /// Resolves once the channel has room (at once if it has). Cancel-safe: the
    /// reserved slot is given back, and only this outbox sends on the channel.
    pub async fn writable(&self) {
        let _ = self.tx.reserve().await;
    }
}

/// Bytes of received messages on their way to the engine (see "Memory" above).
#[derive(Debug, Default)]
struct Budget {
    used: AtomicUsize,
    /// Woken whenever a message's charge is dropped.
    freed: Notify,
}

impl Budget {
    fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes `cost` if the budget stays within `limit`, or if nothing is taken (a
    /// message larger than the whole budget). Only the poll task charges.
    fn try_charge(self: &Arc<Self>, cost: usize, limit: usize) -> Option<Charge> {
        let used = self.used();
        if used != 0 && used.saturating_add(cost) > limit {
            return None;
        }
        self.used.fetch_add(cost, Ordering::SeqCst);
        Some(Charge { budget: self.clone(), cost })
    }

    /// Resolves once at most `limit` bytes are taken.
    async fn within(&self, limit: usize) {
        loop {
            // Registered before the check, so that a release in between wakes it.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.used() <= limit {
                return;
            }
            freed.await;
        }
    }
}

/// One message's share of the budget, given back when the engine drops it
/// (or, for a receiver's chunk, the writer thread once it is written).
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    cost: usize,
}

impl Charge {
    /// Whether the budget this share is of is over [`MAX_BUFFERED`]: received
    /// messages are being held back at the broker, or dropped.
    pub fn budget_full(&self) -> bool {
        self.budget.used() > MAX_BUFFERED
    }

    /// `cost` bytes of a budget of its own, with `used` bytes of it taken
    /// already (tests of what holds charges).
    #[cfg(test)]
    pub fn detached(cost: usize, used: usize) -> Charge {
        let budget = Arc::new(Budget::default());
        budget.used.store(used + cost, Ordering::SeqCst);
        Charge { budget, cost }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.cost, Ordering::SeqCst);
        self.budget.freed.notify_waiters();
    }
}

/// What the poll task and the ack task share about incoming QoS 1 publishes.
#[derive(Clone)]
struct Acks {
    budget: Arc<Budget>,
    /// Acks that wait for the budget, with the connection they belong to...
    deferred: mpsc::Sender<(u64, u16)>,
    /// ...and how many of them are not sent yet.
    waiting: Arc<AtomicUsize>,
    /// Counts connections: an ack from an earlier one is not sent (a resumed
    /// session sends the publish again, and that copy is acked).
    generation: Arc<AtomicU64>,
}

/// The poll task: owns the event loop; forwards, acks, counts PUBACKs into
/// `acked`, and backs off after errors. It never waits for the engine while a
/// connection is up (see "Memory" above).
async fn poll_loop(
    mut el: mqtt::EventLoop,
    tx: mpsc::Sender<ConnEvent>,
    acks: Acks,
    acked: watch::Sender<u64>,
    closing: CancellationToken,
    stop: CancellationToken,
    PollSettings { max_backoff, ack_limit, nudger }: PollSettings,
) {
    let mut backoff = MIN_BACKOFF;
    let mut owed = Owed::default();
    // After our DISCONNECT is written, keep reading until the broker closes the
    // connection. Dropping a socket with unread input makes the kernel send a reset,
    // and a broker that gets a reset discards what it had not read yet: the last
    // acks before the DISCONNECT (a receiver's Complete!) would be lost.
    let mut disconnecting = false;
    // Messages dropped for want of budget, for the debug log.
    let mut dropped: u64 = 0;
    loop {
        // Whether rumqttc acks the QoS 1 publishes of the batch it reads next:
        // only while the engine keeps up, and no earlier ack waits (acks go out in
        // order). Once the engine reads no more, not at all: a message acked but
        // not read would be lost to a persistent session, which keeps an unacked
        // one for the next connection instead; and after our DISCONNECT, MQTT
        // allows no packet at all.
        let keeping_up = acks.waiting.load(Ordering::SeqCst) == 0 && acks.budget.used() <= MAX_BUFFERED;
        el.set_auto_ack(keeping_up && !closing.is_cancelled());
        let overdue = owed.deadline(ack_limit);
        let polled = tokio::select! {
            _ = stop.cancelled() => return,
            r = el.poll() => r,
            // Cancels a poll that may be halfway through writing: harmless, the
            // connection is dropped and everything unacknowledged sent again.
            _ = sleep_until(overdue.unwrap_or_else(Instant::now)), if overdue.is_some() => {
                let secs = ack_limit.as_secs();
                warn!(owed = owed.count, "broker stopped acknowledging publishes (none for {secs} s); reconnecting");
                el.abandon();
                Err(Failure::Connect(ConnectError::Protocol(format!(
                    "broker stopped acknowledging publishes (none for {secs} s)"
                ))))
            }
        };
        match &polled {
            Ok(Some(Incoming::PublishSent)) => {
                owed.sent(Instant::now());
                if let Some(n) = &nudger {
                    n.departed();
                }
            }
            Ok(Some(Incoming::PubAck)) => owed.acked(Instant::now()),
            // A new connection: rumqttc sends what is still unacknowledged again,
            // and each copy counts as it goes out.
            Ok(Some(Incoming::ConnAck { .. })) | Err(_) => owed = Owed::default(),
            _ => {}
        }
        let event = match polled {
            Ok(None) | Ok(Some(Incoming::PublishSent)) => continue,
            Ok(Some(Incoming::ConnAck { .. })) if disconnecting => return,
            Ok(Some(Incoming::ConnAck { info, dropped })) => {
                backoff = MIN_BACKOFF;
                acks.generation.fetch_add(1, Ordering::SeqCst);
                if closing.is_cancelled() {
                    // Nobody else will send them again now; the feed task waits for
                    // their acks.
                    el.requeue(dropped);
                } else {
                    // The engine repairs what a lost session took (it learns of the
                    // loss from `session_present`); they will never be acked.
                    let lost = dropped.publishes() as u64;
                    acked.send_modify(|n| *n += lost);
                }
                ConnEvent::Up(info)
            }
            Ok(Some(Incoming::PubAck)) => {
                acked.send_modify(|n| *n += 1);
                if let Some(n) = &nudger {
                    n.arrived();
                }
                continue;
            }
            Ok(Some(Incoming::SubAck)) => {
                if let Some(n) = &nudger {
                    n.arrived();
                }
                continue;
            }
            // Once the engine reads no more, incoming publishes stay unacked.
            Ok(Some(Incoming::Publish { .. })) if closing.is_cancelled() => continue,
            Ok(Some(Incoming::Publish { topic, payload, qos, ack, retain })) => {
                let cost = topic.len() + payload.len() + MESSAGE_OVERHEAD;
                let charge = admit(&acks.budget, cost, qos);
                if let Some(pkid) = ack {
                    let generation = acks.generation.load(Ordering::SeqCst);
                    if acks.deferred.try_send((generation, pkid)).is_ok() {
                        acks.waiting.fetch_add(1, Ordering::SeqCst);
                    } else {
                        // More unacked publishes than packet ids: not a broker.
                        warn!(pkid, "too many unacknowledged publishes from the broker; ack dropped");
                    }
                }
                let Some(charge) = charge else {
                    dropped += 1;
                    debug!(%topic, dropped, "receive budget spent: message dropped");
                    continue;
                };
                ConnEvent::Message { topic, payload, retain, charge }
            }
            Ok(Some(Incoming::DisconnectSent)) => {
                disconnecting = true;
                continue;
            }
            // Every QoS 1 publish was acked before the DISCONNECT was handed over, so
            // a broken connection now loses nothing of ours.
            Err(_) if disconnecting => return,
            Err(Failure::Closed) => return,
            Err(failure) => {
                acks.generation.fetch_add(1, Ordering::SeqCst);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    sent = tx.send(ConnEvent::Down(failure)) => if sent.is_err() { return },
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        match tx.try_send(event) {
            Ok(()) => {}
            // The budget bounds the messages in the channel below its capacity, so
            // only an `Up` can find it full, behind a budget's worth of messages:
            // it is worth the wait, and no connection is lost by it.
            Err(mpsc::error::TrySendError::Full(event)) => {
                let is_message = matches!(event, ConnEvent::Message { .. });
                if is_message {
                    debug!("event channel full: message dropped");
                } else {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        sent = tx.send(event) => if sent.is_err() { return },
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return, // the engine is gone
        }
    }
}

/// How long the broker may leave our QoS 1 publishes unacknowledged, without
/// acknowledging any of them, before the connection counts as broken: the
/// keep-alive (at least 5 s, as rumqttc has it; 30 s by default).
///
/// A broker can stop acknowledging while the connection stays up: RabbitMQ 3.10
/// closes the AMQP channel behind an MQTT connection at a publish over its
/// `max_message_size` and from then on answers PINGREQs but nothing else, so
/// neither rumqttc's keep-alive nor a broken socket ever ends the wait, and a send
/// would wait for ever. The keep-alive is the user's own statement of how long the
/// broker may go quiet before it is taken for dead (rumqttc gives up on a
/// PINGRESP after one keep-alive), and it is long enough for a healthy broker:
/// the clock restarts at every PUBACK, so it bounds the time one chunk takes to
/// go out and be taken (a 1 MiB chunk in 30 s is 280 kbit/s), not the window's.
/// A slower link raises `--keep-alive`.
fn ack_limit(cfg: &Config) -> Duration {
    cfg.keep_alive.max(Duration::from_secs(5))
}

/// The poll task's settings.
struct PollSettings {
    /// The longest pause between connection attempts.
    max_backoff: Duration,
    /// See [`ack_limit`].
    ack_limit: Duration,
    /// Where it reports for the nudge task, when there is one.
    nudger: Option<Arc<Nudger>>,
}

/// How long after an answer from the broker (a PUBACK, a SUBACK) with nothing
/// of ours written since the nudge task publishes one (see [`Config::nudge`]):
/// one timer tick, against the ~40 ms a delayed ACK would cost.
const NUDGE_AFTER: Duration = Duration::from_millis(1);

/// The poll task's news for the nudge task: an answer arrived, a publish of ours
/// went out.
#[derive(Debug, Default)]
struct Nudger {
    arrived: Notify,
    departures: AtomicU64,
    /// Set by the feed task as it hands over our DISCONNECT, under the lock that
    /// a nudge is made under: no packet may follow a DISCONNECT, and every nudge
    /// before it is one less stall while the last acks come in.
    disconnected: std::sync::Mutex<bool>,
}

impl Nudger {
    fn arrived(&self) {
        self.arrived.notify_one();
    }

    fn departed(&self) {
        self.departures.fetch_add(1, Ordering::SeqCst);
    }

    /// Publishes a nudge unless our DISCONNECT went out.
    fn nudge(&self, client: &mqtt::Client, topic: &str) {
        let disconnected = self.disconnected.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !*disconnected {
            client.try_nudge(topic);
        }
    }

    /// From now on no nudge: the DISCONNECT follows.
    fn disconnect(&self) {
        *self.disconnected.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
    }
}

/// Publishes an empty QoS 0 message when the broker answered us and nothing of
/// ours went out for [`NUDGE_AFTER`], so that our TCP ACK of that answer goes out
/// now. A broker without `TCP_NODELAY` holds its next small write (the answer we
/// wait for) until that ACK; the kernel would delay it ~40 ms. Mosquitto as
/// installed is such a broker. A task of its own because the poll task may not
/// time out a poll halfway through a write, nor await the client.
async fn nudge_loop(client: mqtt::Client, topic: String, nudger: Arc<Nudger>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = nudger.arrived.notified() => {}
        }
        let before = nudger.departures.load(Ordering::SeqCst);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep(NUDGE_AFTER) => {}
        }
        // Also while closing, until the DISCONNECT: the acks of our last
        // publishes are small answers the broker would hold back too.
        if nudger.departures.load(Ordering::SeqCst) == before {
            nudger.nudge(&client, &topic);
        }
    }
}

/// Our QoS 1 publishes written to the current connection and not yet
/// acknowledged, and since when the broker has acknowledged none of them.
#[derive(Debug, Default)]
struct Owed {
    count: u64,
    /// When the oldest one went out, or the last PUBACK came, whichever is later.
    since: Option<Instant>,
}

impl Owed {
    fn sent(&mut self, now: Instant) {
        self.count += 1;
        self.since.get_or_insert(now);
    }

    fn acked(&mut self, now: Instant) {
        self.count = self.count.saturating_sub(1);
        self.since = (self.count > 0).then_some(now);
    }

    /// When the connection counts as broken unless a PUBACK comes first.
    fn deadline(&self, limit: Duration) -> Option<Instant> {
        self.since.map(|since| since + limit)
    }
}

/// A received message's charge of `cost` bytes, or `None` to drop it. QoS 0 may
/// be lost; QoS 1 is held back by its ack first, and dropped only past twice the
/// budget.
fn admit(budget: &Arc<Budget>, cost: usize, qos: Qos) -> Option<Charge> {
    budget.try_charge(cost, if qos == Qos::AtLeastOnce { 2 * MAX_BUFFERED } else { MAX_BUFFERED })
}

/// The ack task: sends the acks the poll task deferred, in order, each once the
/// budget is within [`MAX_BUFFERED`]. Stops acking when the connection closes,
/// for the reason given in the poll task.
async fn ack_loop(client: impl AckSink, mut rx: mpsc::Receiver<(u64, u16)>, acks: Acks, closing: CancellationToken) {
    loop {
        let next = tokio::select! {
            _ = closing.cancelled() => return,
            next = rx.recv() => next,
        };
        let Some((generation, pkid)) = next else { return };
        tokio::select! {
            _ = closing.cancelled() => return,
            _ = acks.budget.within(MAX_BUFFERED) => {}
        }
        if generation == acks.generation.load(Ordering::SeqCst) {
            tokio::select! {
                _ = closing.cancelled() => return,
                sent = client.ack(pkid) => if sent.is_err() { return },
            }
        }
        // Only now may the poll task ack directly again: later acks stay behind.
        acks.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where the ack task sends acks: the client, or a test's channel.
trait AckSink {
    async fn ack(&self, pkid: u16) -> Result<(), mqtt::Closed>;
}

impl AckSink for mqtt::Client {
    async fn ack(&self, pkid: u16) -> Result<(), mqtt::Closed> {
        mqtt::Client::ack(self, pkid).await
    }
}

/// The feed task: awaits the client, so that nobody else has to. It holds a
/// DISCONNECT back until `acked` has caught up with the QoS 1 publishes it handed
/// over. A connection that breaks before the DISCONNECT is reconnected and the
/// publishes are sent again; one that breaks after it is the end, and whatever was
/// still on the way is lost with it.
///
/// `taken` counts the QoS 1 publishes as it takes them, for [`Connection::close`].
/// `pacer` holds each publish and subscription back to the rate limits (`pace.rs`).
async fn feed_loop(
    client: mqtt::Client,
    mut rx: mpsc::Receiver<Request>,
    mut acked: watch::Receiver<u64>,
    taken: Arc<AtomicU64>,
    mut pacer: Option<Pacer>,
    nudger: Option<Arc<Nudger>>,
) {
    let mut handed: u64 = 0;
    while let Some(req) = rx.recv().await {
        if let Some(pacer) = &mut pacer {
            match &req {
                Request::Publish { topic, payload, .. } => {
                    pacer.admit(topic.len() + payload.len() + HEADER_ESTIMATE, true).await;
                }
                Request::Subscribe(filter) | Request::SubscribeLive(filter) | Request::Unsubscribe(filter) => {
                    pacer.admit(filter.len() + HEADER_ESTIMATE, false).await;
                }
                Request::Disconnect => {}
            }
        }
        let sent = match req {
            Request::Publish { topic, qos, retain, payload, expiry } => {
                // Counted before the wait: from here on it is owed an ack (if the
                // client is gone, so is everything else).
                if qos == Qos::AtLeastOnce {
                    handed += 1;
                    taken.fetch_add(1, Ordering::SeqCst);
                }
                client.publish(topic, qos, retain, payload, expiry).await
            }
            Request::Subscribe(filter) => client.subscribe(filter, Qos::AtLeastOnce).await,
            Request::SubscribeLive(filter) => client.subscribe_live(filter, Qos::AtLeastOnce).await,
            Request::Unsubscribe(filter) => client.unsubscribe(filter).await,
            Request::Disconnect => {
                // An error means the poll task is gone, and the DISCONNECT with it.
                if acked.wait_for(|&n| n >= handed).await.is_ok() {
                    if let Some(n) = &nudger {
                        n.disconnect();
                    }
                    let _ = client.disconnect().await;
                }
                return;
            }
        };
        if sent.is_err() {
            return; // the event loop is gone
        }
    }
}

/// rumqttc settings for a role.
pub(crate) fn options(
    cfg: &Config,
    client_id: String,
    persistent: bool,
    max_incoming: u32,
    max_outgoing: u32,
) -> Options {
    // The largest payload we send: a sender's chunks; a receiver's acks are small.
    let payload = max_outgoing.saturating_sub(crate::config::PACKET_OVERHEAD);
    Options {
        version: cfg.version,
        client_id,
        persistent: persistent.then_some(cfg.session_expiry),
        max_incoming,
        max_outgoing,
        inflight: u16::try_from(fitting(INFLIGHT_BYTES, payload, usize::from(INFLIGHT))).unwrap_or(INFLIGHT),
        request_capacity: fitting(REQUEST_BYTES, payload, REQUEST_CAPACITY),
    }
}

/// How many payloads of `payload` bytes make `bytes` (rounded up), between 4 and
/// `most`.
fn fitting(bytes: usize, payload: u32, most: usize) -> usize {
    bytes.div_ceil((payload as usize).max(1)).clamp(4, most)
}

#[cfg(test)]
mod tests;
