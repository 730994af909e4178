//! One connection to the broker, as three parts that can never wait on each other
//! in a circle:
//!
//! - the **poll task** owns the rumqttc event loop and does nothing but poll it. It
//!   forwards what arrives into a channel to the engine. The protocol's credit
//!   bounds what is in that channel (a receiver grants credit only for chunks it has
//!   taken out), and a byte budget ([`MAX_BUFFERED`]) bounds it whatever the peers
//!   do: past it the poll task waits for the engine to drop events, and TCP holds
//!   the rest. The engine never waits on the poll task, so that wait always ends.
//!   After an error it sleeps with exponential backoff before polling again, which
//!   is when rumqttc reconnects (rumqttc itself would retry at once, in a tight
//!   loop).
//! - the **feed task** takes requests from a small bounded channel and awaits
//!   rumqttc's `AsyncClient`. Awaiting the client from the poll task would deadlock
//!   once rumqttc's request channel is full; here the wait only holds up the feed.
//! - the [`Outbox`], on the engine's side: requests go into the bounded channel with
//!   `try_send`, so the engine never blocks on the network either. Control messages
//!   that find the channel full wait in a short local backlog; chunks are only
//!   produced while there is room ([`Outbox::has_room`]), which is the backpressure
//!   that keeps the sender's memory to a few chunks.
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

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::Config;
use crate::error::ConnectError;
use crate::mqtt::{self, ConnAckInfo, Failure, Incoming, Options};
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
/// Bytes of received payloads that may wait for the engine. Past this the poll
/// task stops reading the socket until the engine catches up, so TCP and then the
/// broker's queue hold the rest: a sender's window normally keeps well below it,
/// but several large transfers at once, a window set too wide, or anybody
/// publishing on our topics must not grow a receiver's memory without bound.
pub(crate) const MAX_BUFFERED: usize = 8 << 20;
/// QoS 1 publishes in flight to the broker at once, at most...
const INFLIGHT: u16 = 32;
/// ...and at most this many bytes of the largest packet we send (32 of 256 KiB;
/// 8 of 1 MiB).
const INFLIGHT_BYTES: usize = 8 << 20;

/// A request for the feed task.
#[derive(Debug)]
pub(crate) enum Request {
    Publish { topic: String, qos: Qos, retain: bool, payload: Bytes },
    Subscribe(String),
    Unsubscribe(String),
    Disconnect,
}

/// What the connection reports to the engine.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// Connected (again): the CONNACK's numbers.
    Up(ConnAckInfo),
    /// A message arrived. `_budget` holds its share of [`MAX_BUFFERED`] until
    /// the engine drops the event.
    Message { topic: String, payload: Bytes, _budget: Option<OwnedSemaphorePermit> },
    /// The connection failed or broke; the poll task retries after a backoff.
    Down(Failure),
}

/// The engine's side of a connection.
pub(crate) struct Connection {
    /// Events from the poll task.
    pub events: mpsc::UnboundedReceiver<ConnEvent>,
    /// Requests to the feed task.
    pub out: Outbox,
    addr: String,
    connect_timeout: Duration,
    /// Cancelled when [`Connection::close`] begins: the engine reads no more.
    closing: CancellationToken,
    stop: CancellationToken,
    poll_task: JoinHandle<()>,
    feed_task: JoinHandle<()>,
}

impl Connection {
    /// Starts the tasks; the first connection attempt begins at once. Must be called
    /// within a tokio runtime.
    pub fn open(cfg: &Config, opts: &Options) -> Result<Self, Error> {
        let (client, el) = mqtt::new(cfg, opts)?;
        let (event_tx, events) = mpsc::unbounded_channel();
        let (req_tx, req_rx) = mpsc::channel(opts.request_capacity);
        let (acked_tx, acked) = watch::channel(0);
        let closing = CancellationToken::new();
        let stop = CancellationToken::new();
        let poll_task = tokio::spawn(poll_loop(
            el,
            event_tx,
            Arc::new(Semaphore::new(MAX_BUFFERED)),
            acked_tx,
            closing.clone(),
            stop.clone(),
            cfg.max_backoff.max(MIN_BACKOFF),
        ));
        let feed_task = tokio::spawn(feed_loop(client, req_rx, acked));
        Ok(Connection {
            events,
            out: Outbox { tx: req_tx, backlog: VecDeque::new(), subscriptions: BTreeSet::new() },
            addr: cfg.addr(),
            connect_timeout: cfg.connect_timeout,
            closing,
            stop,
            poll_task,
            feed_task,
        })
    }

    /// Waits for the first CONNACK. Network errors are retried until the connect
    /// timeout; a refusal or a TLS failure ends the wait at once, since retrying
    /// cannot fix them.
    pub async fn wait_up(&mut self, cancel: &CancellationToken) -> Result<ConnAckInfo, Error> {
        let deadline = Instant::now() + self.connect_timeout;
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
                ev = self.events.recv() => match ev {
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
    pub async fn close(mut self, grace: Duration) {
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
    }
}

/// The engine's queue of requests in front of the feed task.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Request>,
    /// Requests that found the channel full, oldest first.
    backlog: VecDeque<Request>,
    /// Filters to restore after every CONNACK.
    subscriptions: BTreeSet<String>,
}

impl Outbox {
    /// Queues a request behind everything queued before it.
    pub fn push(&mut self, req: Request) {
        self.backlog.push_back(req);
        self.flush();
    }

    /// Queues a protocol transmit whose payload is ready.
    pub fn publish(&mut self, topic: String, qos: Qos, retain: bool, payload: Vec<u8>) {
        self.push(Request::Publish { topic, qos, retain, payload: Bytes::from(payload) });
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
        if self.subscriptions.insert(filter.clone()) {
            self.push(Request::Subscribe(filter));
        }
    }

    /// Unsubscribes, and forgets the filter.
    pub fn unsubscribe(&mut self, filter: String) {
        self.subscriptions.remove(&filter);
        self.push(Request::Unsubscribe(filter));
    }

    /// Sends every remembered subscription again, after a CONNACK.
    pub fn resubscribe(&mut self) {
        let filters: Vec<String> = self.subscriptions.iter().cloned().collect();
        for f in filters {
            self.push(Request::Subscribe(f));
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

/// The poll task: owns the event loop; forwards, counts PUBACKs into `acked`, and
/// backs off after errors.
async fn poll_loop(
    mut el: mqtt::EventLoop,
    tx: mpsc::UnboundedSender<ConnEvent>,
    buffered: Arc<Semaphore>,
    acked: watch::Sender<u64>,
    closing: CancellationToken,
    stop: CancellationToken,
    max_backoff: Duration,
) {
    let mut backoff = MIN_BACKOFF;
    // After our DISCONNECT is written, keep reading until the broker closes the
    // connection. Dropping a socket with unread input makes the kernel send a reset,
    // and a broker that gets a reset discards what it had not read yet: the last
    // acks before the DISCONNECT (a receiver's Complete!) would be lost.
    let mut disconnecting = false;
    // Once the engine reads no more, incoming publishes stay unacked (see
    // `EventLoop::stop_acking`).
    let mut acking = true;
    loop {
        if acking && closing.is_cancelled() {
            el.stop_acking();
            acking = false;
        }
        let polled = tokio::select! {
            _ = stop.cancelled() => return,
            r = el.poll() => r,
        };
        let event = match polled {
            Ok(None) => continue,
            Ok(Some(Incoming::ConnAck { .. })) if disconnecting => return,
            Ok(Some(Incoming::ConnAck { info, dropped })) => {
                backoff = MIN_BACKOFF;
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
                continue;
            }
            Ok(Some(Incoming::Publish { topic, payload })) => {
                // A payload larger than the whole budget takes all of it.
                let share = u32::try_from(payload.len().min(MAX_BUFFERED)).unwrap_or(u32::MAX);
                let budget = tokio::select! {
                    _ = stop.cancelled() => return,
                    // A closing engine reads no more: waiting for it to free room
                    // would only hold up the DISCONNECT.
                    _ = closing.cancelled() => continue,
                    permit = buffered.clone().acquire_many_owned(share) => permit.ok(),
                };
                ConnEvent::Message { topic, payload, _budget: budget }
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
                let _ = tx.send(ConnEvent::Down(failure));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        if tx.send(event).is_err() {
            return; // the engine is gone
        }
    }
}

/// The feed task: awaits the client, so that nobody else has to. It holds a
/// DISCONNECT back until `acked` has caught up with the QoS 1 publishes it handed
/// over. A connection that breaks before the DISCONNECT is reconnected and the
/// publishes are sent again; one that breaks after it is the end, and whatever was
/// still on the way is lost with it.
async fn feed_loop(client: mqtt::Client, mut rx: mpsc::Receiver<Request>, mut acked: watch::Receiver<u64>) {
    let mut handed: u64 = 0;
    while let Some(req) = rx.recv().await {
        let sent = match req {
            Request::Publish { topic, qos, retain, payload } => {
                let sent = client.publish(topic, qos, retain, payload).await;
                if sent.is_ok() && qos == Qos::AtLeastOnce {
                    handed += 1;
                }
                sent
            }
            Request::Subscribe(filter) => client.subscribe(filter, Qos::AtLeastOnce).await,
            Request::Unsubscribe(filter) => client.unsubscribe(filter).await,
            Request::Disconnect => {
                // An error means the poll task is gone, and the DISCONNECT with it.
                if acked.wait_for(|&n| n >= handed).await.is_ok() {
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
mod tests {
    use super::*;

    #[test]
    fn large_packets_get_shorter_queues() {
        // A receiver (nothing large to send) and 256 KiB chunks: the full queues.
        assert_eq!(fitting(INFLIGHT_BYTES, 0, 32), 32);
        assert_eq!(fitting(INFLIGHT_BYTES, 256 << 10, 32), 32);
        assert_eq!(fitting(REQUEST_BYTES, 256 << 10, 16), 16);
        // 1 MiB chunks: 8 in flight and 4 in each channel, 16 MiB in all.
        assert_eq!(fitting(INFLIGHT_BYTES, 1 << 20, 32), 8);
        assert_eq!(fitting(REQUEST_BYTES, 1 << 20, 16), 4);
        // Never fewer than 4.
        assert_eq!(fitting(REQUEST_BYTES, 64 << 20, 16), 4);
    }

    fn outbox(capacity: usize) -> (Outbox, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Outbox { tx, backlog: VecDeque::new(), subscriptions: BTreeSet::new() }, rx)
    }

    fn topic(r: Request) -> String {
        match r {
            Request::Publish { topic, .. } | Request::Subscribe(topic) | Request::Unsubscribe(topic) => topic,
            Request::Disconnect => "disconnect".into(),
        }
    }

    #[tokio::test]
    async fn a_full_channel_backs_up_in_order_and_drains() {
        let (mut out, mut rx) = outbox(2);
        assert!(out.has_room());
        for t in ["a", "b", "c", "d"] {
            out.publish(t.into(), Qos::AtLeastOnce, false, vec![1]);
        }
        // Two went into the channel; two wait, and nothing new may be produced.
        assert!(!out.has_room());
        assert_eq!(out.backlog.len(), 2);
        assert_eq!(topic(rx.recv().await.unwrap()), "a");
        // Room again: writable resolves, and a flush moves the next one along.
        out.writable().await;
        out.flush();
        assert_eq!(out.backlog.len(), 1);
        assert!(!out.has_room());
        let mut rest = Vec::new();
        while rest.len() < 3 {
            rest.push(topic(rx.recv().await.unwrap()));
            out.flush();
        }
        assert_eq!(rest, ["b", "c", "d"]);
        assert!(out.has_room());
    }

    #[tokio::test]
    async fn subscriptions_come_back_after_a_reconnect() {
        let (mut out, mut rx) = outbox(16);
        out.subscribe("x/+/manifest".into());
        out.subscribe("x/+/ctl".into());
        out.subscribe("x/+/ctl".into()); // once is enough
        out.subscribe("x/1/chunk/+".into());
        out.unsubscribe("x/1/chunk/+".into());
        let sent: Vec<String> = (0..4).map(|_| topic(rx.try_recv().unwrap())).collect();
        assert_eq!(sent, ["x/+/manifest", "x/+/ctl", "x/1/chunk/+", "x/1/chunk/+"]);
        assert!(rx.try_recv().is_err());
        out.resubscribe();
        let again: Vec<String> = (0..2).map(|_| topic(rx.try_recv().unwrap())).collect();
        assert_eq!(again, ["x/+/ctl", "x/+/manifest"]);
        assert!(rx.try_recv().is_err());
    }

    /// A connection whose poll task is the test: it feeds `events` by hand.
    fn fake_connection(connect_timeout: Duration) -> (Connection, mpsc::UnboundedSender<ConnEvent>) {
        let (event_tx, events) = mpsc::unbounded_channel();
        let (out, _rx) = outbox(4);
        let conn = Connection {
            events,
            out,
            addr: "127.0.0.1:1883".into(),
            connect_timeout,
            closing: CancellationToken::new(),
            stop: CancellationToken::new(),
            poll_task: tokio::spawn(async {}),
            feed_task: tokio::spawn(async {}),
        };
        (conn, event_tx)
    }

    fn down(kind: io::ErrorKind) -> ConnEvent {
        ConnEvent::Down(Failure::Connect(ConnectError::Io(io::Error::new(kind, "x"))))
    }

    #[tokio::test(start_paused = true)]
    async fn network_errors_are_retried_until_the_connect_timeout() {
        let (mut conn, events) = fake_connection(Duration::from_secs(10));
        let cancel = CancellationToken::new();
        let started = Instant::now();
        events.send(down(io::ErrorKind::ConnectionRefused)).unwrap();
        events.send(down(io::ErrorKind::ConnectionReset)).unwrap();
        match conn.wait_up(&cancel).await {
            Err(Error::Unreachable { source: ConnectError::Io(e), .. }) => {
                // The last failure is the one reported.
                assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connack_after_failures_is_a_connection() {
        let (mut conn, events) = fake_connection(Duration::from_secs(10));
        let cancel = CancellationToken::new();
        events.send(down(io::ErrorKind::ConnectionRefused)).unwrap();
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let info = ConnAckInfo { session_present: true, max_packet_size: Some(1000), receive_maximum: None };
            events.send(ConnEvent::Up(info)).unwrap();
            events
        });
        let info = conn.wait_up(&cancel).await.unwrap();
        assert_eq!(info.max_packet_size, Some(1000));
        drop(feeder.await);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_and_tls_failures_end_the_wait_at_once() {
        let cancel = CancellationToken::new();
        for (event, refused) in [
            (ConnEvent::Down(Failure::Refused("not authorized".into())), true),
            (ConnEvent::Down(Failure::Connect(ConnectError::Tls("bad certificate".into()))), false),
        ] {
            let (mut conn, events) = fake_connection(Duration::from_secs(10));
            let started = Instant::now();
            events.send(event).unwrap();
            let err = conn.wait_up(&cancel).await.unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Broker);
            assert_eq!(matches!(err, Error::Refused { .. }), refused, "{err:?}");
            assert_eq!(started.elapsed(), Duration::ZERO);
        }
        let (mut conn, _events) = fake_connection(Duration::from_secs(10));
        cancel.cancel();
        assert!(matches!(conn.wait_up(&cancel).await, Err(Error::Cancelled)));
    }

    /// Lets every task run until all wait: with the clock paused, the sleep ends
    /// only once nothing else can run.
    async fn settle() {
        sleep(Duration::from_secs(1)).await;
    }

    /// What rumqttc has taken from the feed task so far: its `clean` moves the
    /// requests waiting in its channel into `pending`, where a test can see them.
    fn taken(el: &mut rumqttc::v5::EventLoop) -> Vec<rumqttc::v5::Request> {
        el.clean();
        el.pending.drain(..).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_disconnect_waits_for_the_acks_of_every_qos1_publish() {
        let cfg = Config::new("127.0.0.1", 1883);
        let (client, el) = mqtt::new(&cfg, &options(&cfg, "c".into(), false, 1024, 1024)).unwrap();
        let mqtt::EventLoop::V5 { mut el, .. } = el else { panic!("mqtt 5 is the default") };
        let (req_tx, req_rx) = mpsc::channel(8);
        let (acked_tx, acked) = watch::channel(0);
        let feed = tokio::spawn(feed_loop(client, req_rx, acked));
        for qos in [Qos::AtLeastOnce, Qos::AtMostOnce, Qos::AtLeastOnce] {
            let publish = Request::Publish { topic: "t".into(), qos, retain: false, payload: Bytes::new() };
            req_tx.send(publish).await.unwrap();
        }
        req_tx.send(Request::Disconnect).await.unwrap();
        settle().await;
        assert_eq!(taken(&mut el).len(), 3, "the three publishes, and no disconnect yet");
        // One of the two QoS 1 publishes acked: still held back.
        acked_tx.send(1).unwrap();
        settle().await;
        assert!(taken(&mut el).is_empty());
        acked_tx.send(2).unwrap();
        feed.await.unwrap();
        assert_eq!(taken(&mut el), [rumqttc::v5::Request::Disconnect]);
    }

    #[tokio::test]
    async fn a_closed_channel_drops_requests() {
        let (mut out, rx) = outbox(1);
        drop(rx);
        out.publish("a".into(), Qos::AtMostOnce, false, vec![]);
        assert!(out.backlog.is_empty());
    }
}
