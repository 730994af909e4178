//! A fault-injecting TCP proxy, for the network between an MQTT client and
//! its broker.
//!
//! A [`Proxy`] listens on a free `127.0.0.1` port and forwards every
//! connection to an upstream address (a [`crate::Broker`]). A test points a
//! client at the proxy instead of the broker, then injects faults while the
//! client works:
//!
//! - [`Proxy::set_latency`]: every byte is delivered this much later, in both
//!   directions, or in one ([`Proxy::set_one_way_latency`]): a delay line,
//!   which delays the flow without cutting its throughput;
//! - [`Proxy::set_bandwidth`]: at most this many bytes a second in one
//!   [`Direction`]. The proxy buffers little (see [`BUFFERED_READS`]), so a
//!   slow link pushes back on the sender of the bytes as a real one does: the
//!   broker's socket to a throttled subscriber fills, and its queue grows;
//! - [`Proxy::cut_mid_packet`]: the next large read in one direction is cut
//!   in half: the first half is delivered, then both sockets are reset
//!   (`RST`, by closing them with `SO_LINGER` 0), so the peer holds half an
//!   MQTT packet when the connection dies;
//! - [`Proxy::reset_all`]: reset every connection now;
//! - [`Proxy::black_hole`]: the connections open now stop forwarding in both
//!   directions, while their sockets stay open: a half-open connection, as a
//!   NAT box that lost its state or a dead link leaves behind. Only a
//!   keep-alive can find it. New connections work normally;
//! - [`Proxy::cut_publishes_over`]: a connection whose client sends an MQTT
//!   PUBLISH larger than a limit is reset before the packet is forwarded, as
//!   rumqttd does with an oversized publish. The client-to-server stream is
//!   followed packet by packet from its fixed headers (`PacketScanner`);
//! - [`Proxy::stall_publishes_over`]: a connection whose client sends an MQTT
//!   PUBLISH larger than a limit goes on forwarding everything but PUBLISH
//!   packets: that one and every later one are swallowed, so the broker never
//!   acknowledges them, while pings (and their answers) still pass and the TCP
//!   connection stays open. RabbitMQ 3.10 does this with a publish over its
//!   `max_message_size`: it closes the AMQP channel behind the MQTT connection;
//! - [`Proxy::down_for`]: the link goes down: every connection is reset, and
//!   new ones are reset as soon as they are accepted, until the time is up.
//!   (A client sees its connect succeed and the connection reset before
//!   CONNACK, rather than `ECONNREFUSED`: closing the listener could lose the
//!   port to another test.)
//!
//! Counters ([`Proxy::accepted`], [`Proxy::refused`], [`Proxy::resets`],
//! [`Proxy::received`], [`Proxy::forwarded`], [`Proxy::max_inflight`]) and a capture of the bytes read
//! ([`Proxy::start_capture`]) let a test wait for a fault, or for a client to
//! have written something, with [`crate::wait_until`], instead of sleeping.
//!
//! # Threads
//!
//! Plain std threads, no async runtime, so that a proxy works the same under
//! sync and async tests and never competes with the code under test for a
//! tokio worker. One thread accepts; each connection has, per direction, a
//! reader (socket to a bounded channel, stamped with the time read) and a
//! writer (channel to socket, applying latency and bandwidth). Every
//! blocking call has a timeout of [`POLL`], after which the thread looks at
//! the connection's state again, so a reset or a dropped proxy ends every
//! thread within a fraction of a second; dropping the [`Proxy`] ends them all.
//! Sleeping inside the proxy is the simulated network's delay, not a test's
//! synchronisation.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::HOST;

/// How long any blocking call in the proxy waits before it checks for
/// faults, resets and shutdown again.
pub const POLL: Duration = Duration::from_millis(20);

/// Bytes per socket read, and so the largest piece the writer sends at once.
const READ_SIZE: usize = 16 * 1024;

/// Reads that may wait between a direction's reader and its writer: at most
/// `BUFFERED_READS * READ_SIZE` bytes (1 MiB) per direction sit in the proxy.
/// Enough for latency not to cut loopback throughput much, small enough that
/// a throttled link pushes back on its sender.
pub const BUFFERED_READS: usize = 64;

/// A read at least this large can be cut by [`Proxy::cut_mid_packet`]: it is
/// part of a chunk publish, not a small ack or a ping.
const CUT_MIN: usize = 1024;

/// The longest a connection to the upstream may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client that connected to the proxy, to the upstream (the
    /// broker): a sender's chunks, a receiver's acks.
    ClientToServer,
    /// From the upstream to the client: a receiver's chunks, a sender's acks.
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// A TCP proxy on `127.0.0.1:<port>` in front of an upstream address, with
/// faults to inject. Dropping it closes every connection and ends its
/// threads.
///
/// ```no_run
/// use mqft_tests::proxy::{Direction, Proxy};
/// let broker = mqft_tests::Broker::start();
/// let proxy = Proxy::start(broker.addr());
/// proxy.set_bandwidth(Direction::ServerToClient, Some(2 << 20));
/// // ... point a client at 127.0.0.1:proxy.port() ...
/// ```
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Start a proxy to `upstream` on a free loopback port.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind((HOST, 0)).unwrap_or_else(|e| panic!("proxy: cannot bind {HOST}:0: {e}"));
        let port = listener.local_addr().unwrap_or_else(|e| panic!("proxy: no local address: {e}")).port();
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            links: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            received: [AtomicU64::new(0), AtomicU64::new(0)],
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
            max_inflight: AtomicI64::new(0),
            captures: Mutex::new([None, None]),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("proxy-{port}-accept"))
            .spawn(move || accept_loop(&listener, &accept_shared))
            .unwrap_or_else(|e| panic!("proxy: cannot start a thread: {e}"));
        Proxy { port, shared, accept_thread: Some(accept_thread) }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Delay every byte by `latency`, in both directions, from now on
    /// (bytes read but not yet delivered are delayed too).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults().latency = [latency; 2];
    }

    /// Delay every byte in `direction` by `latency`, from now on.
    pub fn set_one_way_latency(&self, direction: Direction, latency: Duration) {
        self.shared.faults().latency[direction.index()] = latency;
    }

    /// Forward at most `bytes_per_sec` in `direction` (`None`: no limit),
    /// from now on, on every connection.
    pub fn set_bandwidth(&self, direction: Direction, bytes_per_sec: Option<u64>) {
        self.shared.faults().bandwidth[direction.index()] = bytes_per_sec.map(|b| b.max(1));
    }

    /// Cut the next read of at least 1 KiB in `direction` (a piece of a chunk
    /// publish) in half: deliver the first half, then reset the connection.
    /// [`Proxy::resets`] counts it once it happened. Each call arms one cut.
    pub fn cut_mid_packet(&self, direction: Direction) {
        self.shared.faults().cut[direction.index()] = true;
    }

    /// Reset, from now on, every connection whose client sends a PUBLISH packet
    /// of more than `bytes` bytes (fixed header included), before any byte of
    /// it is forwarded; `None` lifts the limit. Each such reset counts in
    /// [`Proxy::resets`].
    pub fn cut_publishes_over(&self, bytes: Option<u64>) {
        self.shared.faults().max_publish = bytes;
    }

    /// From now on, swallow every PUBLISH packet of a connection from the first
    /// one of more than `bytes` bytes (fixed header included) on, forwarding
    /// the rest of its packets both ways: a broker that stops acknowledging
    /// publishes but answers pings. `None` lifts the limit for publishes to
    /// come; a connection already stalled stays so. Each connection stalled
    /// counts in [`Proxy::stalls`].
    pub fn stall_publishes_over(&self, bytes: Option<u64>) {
        self.shared.faults().stall_publish = bytes;
    }

    /// Connections stalled by [`Proxy::stall_publishes_over`] so far.
    pub fn stalls(&self) -> u64 {
        self.shared.stalls.load(Ordering::SeqCst)
    }

    /// Reset every open connection now (`RST` to both ends). Returns how many.
    pub fn reset_all(&self) -> usize {
        self.shared.reset_all()
    }

    /// Stop forwarding on every open connection, both ways, keeping the
    /// sockets open: they are half-open from then on, until a client gives up
    /// on its own (or the proxy is dropped). New connections are not
    /// affected. Returns how many connections it caught.
    pub fn black_hole(&self) -> usize {
        let mut n = 0;
        for link in self.shared.live_links() {
            if link.state.compare_exchange(OPEN, BLACK_HOLED, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Take the link down for `duration`: reset every open connection now, and
    /// reset new ones as soon as they are accepted until `duration` has
    /// passed. Returns how many connections it reset.
    pub fn down_for(&self, duration: Duration) -> usize {
        self.shared.faults().down_until = Some(Instant::now() + duration);
        self.shared.reset_all()
    }

    /// Whether the link is down (see [`Proxy::down_for`]).
    pub fn is_down(&self) -> bool {
        self.shared.is_down()
    }

    /// Connections accepted and forwarded to the upstream so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections reset at once: the link was down, or the upstream was
    /// unreachable.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections reset by a fault ([`Proxy::cut_mid_packet`],
    /// [`Proxy::reset_all`], [`Proxy::down_for`]).
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Bytes handed on in `direction` so far, over every connection (counted as
    /// each write starts).
    pub fn forwarded(&self, direction: Direction) -> u64 {
        self.shared.forwarded[direction.index()].load(Ordering::SeqCst)
    }

    /// The most QoS 1 and 2 PUBLISH packets a client had sent on one connection
    /// without the broker's PUBACK (or PUBREC) for them, over every connection so
    /// far: publishes counted as the proxy reads them from the client, acks as
    /// it reads them from the broker, so the count is never lower than what the
    /// client itself has in flight. Meant for a client that publishes only (a
    /// sender): the acks of a subscriber's own acks are not told apart.
    pub fn max_inflight(&self) -> i64 {
        self.shared.max_inflight.load(Ordering::SeqCst)
    }

    /// Bytes read in `direction` so far, over every connection, delivered or
    /// not (yet).
    pub fn received(&self, direction: Direction) -> u64 {
        self.shared.received[direction.index()].load(Ordering::SeqCst)
    }

    /// Keep every byte read in `direction` from now on, delivered or not:
    /// what a client wrote, for a test to parse. Meant for one connection at a
    /// time (the reads of several would interleave) and small flows.
    pub fn start_capture(&self, direction: Direction) {
        self.shared.captures()[direction.index()] = Some(Vec::new());
    }

    /// The bytes read in `direction` since [`Proxy::start_capture`] (empty
    /// without one).
    pub fn captured(&self, direction: Direction) -> Vec<u8> {
        self.shared.captures()[direction.index()].clone().unwrap_or_default()
    }

    /// Connections whose threads still run (open, black-holed, or closing).
    pub fn live_connections(&self) -> usize {
        self.shared.live_links().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop, blocked in accept(), with one last connection.
        let _ = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.port)), POLL);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        // Connection threads see `stopping` within POLL and end; they are not
        // joined, so a drop never waits on a socket.
    }
}

/// What the proxy's threads share.
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    /// The connections, to reset or black-hole them. Weak: a connection's
    /// sockets close when its threads end.
    links: Mutex<Vec<Weak<Link>>>,
    stopping: AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
    resets: AtomicU64,
    stalls: AtomicU64,
    received: [AtomicU64; 2],
    forwarded: [AtomicU64; 2],
    /// The most QoS 1 and 2 publishes a client had sent on one connection that
    /// the broker had not acknowledged yet (see [`Proxy::max_inflight`]).
    max_inflight: AtomicI64,
    /// Bytes read since a capture started, per [`Direction::index`].
    captures: Mutex<[Option<Vec<u8>>; 2]>,
}

impl Shared {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_down(&self) -> bool {
        self.faults().down_until.is_some_and(|until| Instant::now() < until)
    }

    /// The connections whose threads still run; forgets the others.
    fn live_links(&self) -> Vec<Arc<Link>> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.retain(|l| l.strong_count() > 0);
        links.iter().filter_map(Weak::upgrade).collect()
    }

    fn reset_all(&self) -> usize {
        self.live_links().iter().filter(|link| self.reset(link)).count()
    }

    /// Reset one connection; false if it was reset already.
    fn reset(&self, link: &Link) -> bool {
        // Linger 0: the close, when the last thread lets go of the link, sends
        // RST instead of FIN, and drops whatever is unsent.
        let _ = rustix::net::sockopt::set_socket_linger(&link.client, Some(Duration::ZERO));
        let _ = rustix::net::sockopt::set_socket_linger(&link.server, Some(Duration::ZERO));
        let was = link.state.swap(DEAD, Ordering::SeqCst);
        if was != DEAD {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
        was != DEAD
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn captures(&self) -> MutexGuard<'_, [Option<Vec<u8>>; 2]> {
        self.captures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count the bytes just read in `direction`, and capture them if asked.
    fn note_read(&self, direction: Direction, bytes: &[u8]) {
        self.received[direction.index()].fetch_add(bytes.len() as u64, Ordering::SeqCst);
        if let Some(capture) = &mut self.captures()[direction.index()] {
            capture.extend_from_slice(bytes);
        }
    }
}

/// The faults in force.
#[derive(Debug, Default)]
struct Faults {
    /// Per [`Direction::index`].
    latency: [Duration; 2],
    /// Bytes per second, per [`Direction::index`].
    bandwidth: [Option<u64>; 2],
    /// New connections are refused until then.
    down_until: Option<Instant>,
    /// A cut is armed, per [`Direction::index`].
    cut: [bool; 2],
    /// Connections sending larger PUBLISH packets are reset.
    max_publish: Option<u64>,
    /// Connections sending larger PUBLISH packets stall.
    stall_publish: Option<u64>,
}

/// One proxied connection: the client's socket and ours to the upstream.
#[derive(Debug)]
struct Link {
    client: TcpStream,
    server: TcpStream,
    state: AtomicU8,
    /// The client's QoS 1 and 2 publishes the broker has not acknowledged.
    inflight: AtomicI64,
}

/// [`Link::state`] values.
const OPEN: u8 = 0;
const BLACK_HOLED: u8 = 1;
/// Reset: the threads end and the sockets close with `SO_LINGER` 0.
const DEAD: u8 = 2;

impl Link {
    fn state(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }

    /// The socket bytes in `direction` come from, and the one they go to.
    fn ends(&self, direction: Direction) -> (&TcpStream, &TcpStream) {
        match direction {
            Direction::ClientToServer => (&self.client, &self.server),
            Direction::ServerToClient => (&self.server, &self.client),
        }
    }
}

/// What a reader hands its writer.
enum Piece {
    /// Bytes read at this instant.
    Data(Instant, Vec<u8>),
    /// Deliver what came before, then reset the connection.
    Reset,
    /// The source closed its sending side: close ours to the destination.
    Eof,
}

/// Accepts connections until the proxy is dropped.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping() {
            return;
        }
        let Ok(client) = client else {
            // Out of file descriptors, or the like: wait rather than spin.
            thread::sleep(POLL);
            continue;
        };
        if shared.is_down() {
            refuse(shared, &client);
            continue;
        }
        let server = match TcpStream::connect_timeout(&shared.upstream, UPSTREAM_CONNECT_TIMEOUT) {
            Ok(server) => server,
            Err(_) => {
                refuse(shared, &client);
                continue;
            }
        };
        for stream in [&client, &server] {
            // MQTT acks are small: no Nagle delay on top of the latency asked for.
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(POLL));
            let _ = stream.set_write_timeout(Some(POLL));
        }
        let link = Arc::new(Link { client, server, state: AtomicU8::new(OPEN), inflight: AtomicI64::new(0) });
        shared.links.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&link));
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        for direction in [Direction::ClientToServer, Direction::ServerToClient] {
            let (tx, rx) = mpsc::sync_channel(BUFFERED_READS);
            spawn_pump("read", direction, {
                let (shared, link) = (Arc::clone(shared), Arc::clone(&link));
                move || read_loop(&shared, &link, direction, &tx)
            });
            spawn_pump("write", direction, {
                let (shared, link) = (Arc::clone(shared), Arc::clone(&link));
                move || write_loop(&shared, &link, direction, &rx)
            });
        }
    }
}

/// Reset a connection the proxy will not forward.
fn refuse(shared: &Shared, client: &TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(client, Some(Duration::ZERO));
    shared.refused.fetch_add(1, Ordering::SeqCst);
    // Dropped by the caller: RST.
}

fn spawn_pump(role: &str, direction: Direction, f: impl FnOnce() + Send + 'static) {
    let name = format!("proxy-{role}-{direction:?}");
    thread::Builder::new().name(name).spawn(f).unwrap_or_else(|e| panic!("proxy: cannot start a thread: {e}"));
}

/// Whether an I/O error is a timeout of ours rather than a broken socket.
fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

/// One direction's reader: socket to channel.
fn read_loop(shared: &Shared, link: &Link, direction: Direction, tx: &SyncSender<Piece>) {
    let (from, _) = link.ends(direction);
    let mut buf = vec![0u8; READ_SIZE];
    // Follows the client's packets from the first byte, so that a limit set
    // later applies to the same connection.
    let mut packets = PacketScanner::default();
    let mut swallow = Swallow::default();
    loop {
        if shared.stopping() || link.state() == DEAD {
            return;
        }
        if link.state() == BLACK_HOLED {
            // Leave the bytes unread: the sender's socket fills, as on a dead link.
            thread::sleep(POLL);
            continue;
        }
        let n = match (&*from).read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Piece::Eof);
                return;
            }
            Ok(n) => n,
            Err(e) if timed_out(&e) => continue,
            Err(_) => {
                // The peer reset or broke its side: pass the reset on.
                shared.reset(link);
                return;
            }
        };
        let now = Instant::now();
        shared.note_read(direction, &buf[..n]);
        let mut data = buf[..n].to_vec();
        if direction == Direction::ServerToClient {
            packets.feed(&buf[..n]);
            let acks = std::mem::take(&mut packets.acks);
            link.inflight.fetch_sub(acks as i64, Ordering::SeqCst);
        }
        if direction == Direction::ClientToServer {
            let largest = packets.feed(&buf[..n]);
            let sent = std::mem::take(&mut packets.qos_publishes);
            let now_inflight = link.inflight.fetch_add(sent as i64, Ordering::SeqCst) + sent as i64;
            shared.max_inflight.fetch_max(now_inflight, Ordering::SeqCst);
            let limit = shared.faults().max_publish;
            if limit.is_some_and(|limit| largest.is_some_and(|size| size > limit)) {
                // Nothing of this read goes on: the broker never sees the packet.
                let _ = tx.send(Piece::Reset);
                return;
            }
            let was = swallow.on;
            data = swallow.feed(&buf[..n], shared.faults().stall_publish);
            if swallow.on && !was {
                shared.stalls.fetch_add(1, Ordering::SeqCst);
            }
            if data.is_empty() {
                continue;
            }
        }
        let n = data.len();
        let cut = n >= CUT_MIN && std::mem::take(&mut shared.faults().cut[direction.index()]);
        let sent = if cut {
            data.truncate(n / 2);
            tx.send(Piece::Data(now, data)).and_then(|()| tx.send(Piece::Reset))
        } else {
            tx.send(Piece::Data(now, data))
        };
        if cut || sent.is_err() {
            // A cut is the writer's to carry out; a gone writer means the link died.
            return;
        }
    }
}

/// Passes a client's byte stream on packet by packet, without its PUBLISH
/// packets from the first one over a limit on (see
/// [`Proxy::stall_publishes_over`]). While a limit is set, a fixed header split
/// over reads is held until it is whole, so that the packet's fate is known
/// before any of it goes on; it never holds more than a header. Without one,
/// bytes go on as they come (the proxy also carries streams that are not MQTT).
#[derive(Debug, Default)]
struct Swallow {
    /// A PUBLISH was over the limit: every PUBLISH from now on is swallowed.
    on: bool,
    /// Bytes of the current packet's body still to pass over or on...
    skip: u64,
    /// ...and whether they are swallowed.
    dropping: bool,
    header: Vec<u8>,
    /// Bytes of `header` already forwarded (no limit was set when they came).
    forwarded: usize,
    /// The stream is not MQTT (a bad length): forward it as it comes.
    lost: bool,
}

impl Swallow {
    /// Takes the next bytes of the stream; returns those to forward.
    fn feed(&mut self, mut bytes: &[u8], limit: Option<u64>) -> Vec<u8> {
        let passthrough = limit.is_none() && !self.on;
        let mut out = Vec::with_capacity(bytes.len());
        while !bytes.is_empty() {
            if self.lost {
                out.extend_from_slice(bytes);
                break;
            }
            if self.skip > 0 {
                let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(bytes.len());
                if !self.dropping {
                    out.extend_from_slice(&bytes[..n]);
                }
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(bytes[0]);
            if passthrough {
                out.push(bytes[0]);
                self.forwarded += 1;
            }
            bytes = &bytes[1..];
            let length = &self.header[1..];
            if length.is_empty() || length.last().is_some_and(|b| b & 0x80 != 0) {
                if length.len() >= 4 {
                    self.lost = true;
                    out.extend_from_slice(&self.header[self.forwarded..]);
                }
                continue;
            }
            let remaining = length.iter().rev().fold(0u64, |n, b| (n << 7) | u64::from(b & 0x7f));
            let total = self.header.len() as u64 + remaining;
            let publish = self.header[0] >> 4 == 3;
            // A packet whose header went on already goes on whole.
            let whole = self.forwarded == 0;
            if publish && whole && limit.is_some_and(|limit| total > limit) {
                self.on = true;
            }
            self.dropping = publish && whole && self.on;
            if !self.dropping {
                out.extend_from_slice(&self.header[self.forwarded..]);
            }
            self.header.clear();
            self.forwarded = 0;
            self.skip = remaining;
        }
        out
    }
}

/// Finds the MQTT packets in one direction's byte stream from their fixed
/// headers: a type nibble and flags, then the remaining length as a variable
/// byte integer (at most 4 bytes). It never holds more than a header.
#[derive(Debug, Default)]
struct PacketScanner {
    /// Bytes of the current packet's body still to pass over.
    skip: u64,
    /// The fixed header read so far, when it spans reads.
    header: Vec<u8>,
    /// The stream is not MQTT (a bad length): stop looking.
    lost: bool,
    /// PUBLISH packets of QoS 1 or 2 whose fixed header was read, and PUBACK
    /// and PUBREC packets: taken by the reader after each feed.
    qos_publishes: u64,
    acks: u64,
}

impl PacketScanner {
    /// Takes the next bytes of the stream. Returns the size of the largest
    /// PUBLISH packet (type 3) whose fixed header ends in them.
    fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        let mut largest = None;
        while !bytes.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(bytes.len());
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            let length = &self.header[1..];
            if length.is_empty() {
                continue;
            }
            if length.last().is_some_and(|b| b & 0x80 != 0) {
                // The length goes on in the next byte, for at most 4 bytes.
                self.lost = length.len() >= 4;
                continue;
            }
            let remaining = length.iter().rev().fold(0u64, |n, b| (n << 7) | u64::from(b & 0x7f));
            let total = self.header.len() as u64 + remaining;
            match self.header[0] >> 4 {
                3 => {
                    largest = largest.max(Some(total));
                    if (self.header[0] >> 1) & 3 != 0 {
                        self.qos_publishes += 1;
                    }
                }
                4 | 5 => self.acks += 1,
                _ => {}
            }
            self.skip = remaining;
            self.header.clear();
        }
        largest
    }
}

/// One direction's writer: channel to socket, late and slow as asked.
fn write_loop(shared: &Shared, link: &Link, direction: Direction, rx: &Receiver<Piece>) {
    let (_, to) = link.ends(direction);
    // When the link may next send a byte, under its bandwidth limit.
    let mut next_free = Instant::now();
    loop {
        if shared.stopping() || link.state() == DEAD {
            return;
        }
        let piece = match rx.recv_timeout(POLL) {
            Ok(piece) => piece,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let (read_at, bytes) = match piece {
            Piece::Data(at, bytes) => (at, bytes),
            Piece::Reset => {
                shared.reset(link);
                return;
            }
            Piece::Eof => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        };
        let (latency, bandwidth) = {
            let faults = shared.faults();
            (faults.latency[direction.index()], faults.bandwidth[direction.index()])
        };
        if !pause_until(shared, link, read_at + latency) {
            return;
        }
        // Smaller pieces under a bandwidth limit, so that the flow is smooth.
        let piece_len = if bandwidth.is_some() { 4096 } else { bytes.len() };
        for piece in bytes.chunks(piece_len.max(1)) {
            if let Some(rate) = bandwidth {
                let start = next_free.max(Instant::now());
                if !pause_until(shared, link, start) {
                    return;
                }
                next_free = start + Duration::from_secs_f64(piece.len() as f64 / rate as f64);
            }
            // Counted before the write: once it is written the peer may read it and
            // a test look at the count, before this thread gets to run again.
            shared.forwarded[direction.index()].fetch_add(piece.len() as u64, Ordering::SeqCst);
            if !write_all(shared, link, to, piece) {
                return;
            }
        }
    }
}

/// Sleep until `at` in steps of at most [`POLL`], and while the link is
/// black-holed; false if the link died or the proxy is stopping meanwhile.
fn pause_until(shared: &Shared, link: &Link, at: Instant) -> bool {
    loop {
        if shared.stopping() || link.state() == DEAD {
            return false;
        }
        let now = Instant::now();
        if link.state() == BLACK_HOLED {
            thread::sleep(POLL);
        } else if now < at {
            thread::sleep((at - now).min(POLL));
        } else {
            return true;
        }
    }
}

/// Write all of `bytes`, retrying after write timeouts; false if the link
/// died (or the destination broke, which resets the link).
fn write_all(shared: &Shared, link: &Link, mut to: &TcpStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        if !pause_until(shared, link, Instant::now()) {
            return false;
        }
        match to.write(bytes) {
            Ok(0) => {
                shared.reset(link);
                return false;
            }
            Ok(n) => bytes = &bytes[n..],
            Err(e) if timed_out(&e) => {}
            Err(_) => {
                shared.reset(link);
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every connection back, for as long as it lives.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((HOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(proxy: &Proxy) -> TcpStream {
        let stream = TcpStream::connect((HOST, proxy.port())).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    }

    /// Send `len` bytes and read them back; the error of the first failure.
    fn echo(stream: &mut TcpStream, len: usize) -> io::Result<Vec<u8>> {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        stream.write_all(&data)?;
        let mut back = vec![0u8; len];
        stream.read_exact(&mut back)?;
        assert_eq!(back, data);
        Ok(back)
    }

    #[test]
    fn forwards_both_ways_and_counts() {
        let proxy = Proxy::start(echo_server());
        let mut stream = connect(&proxy);
        echo(&mut stream, 1000).unwrap();
        proxy.start_capture(Direction::ServerToClient);
        let sent = echo(&mut stream, 99_000).unwrap();
        assert_eq!(proxy.accepted(), 1);
        for direction in [Direction::ClientToServer, Direction::ServerToClient] {
            assert_eq!(proxy.forwarded(direction), 100_000);
            assert_eq!(proxy.received(direction), 100_000);
        }
        assert_eq!(proxy.captured(Direction::ServerToClient), sent);
        assert!(proxy.captured(Direction::ClientToServer).is_empty());
    }

    #[test]
    fn latency_and_bandwidth_slow_the_flow() {
        let proxy = Proxy::start(echo_server());
        proxy.set_latency(Duration::from_millis(100));
        let mut stream = connect(&proxy);
        let started = Instant::now();
        echo(&mut stream, 10).unwrap();
        // Both ways: at least twice the one-way latency.
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());

        proxy.set_latency(Duration::ZERO);
        proxy.set_one_way_latency(Direction::ServerToClient, Duration::from_millis(100));
        let started = Instant::now();
        echo(&mut stream, 10).unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_millis(200), "{took:?}");

        proxy.set_latency(Duration::ZERO);
        proxy.set_bandwidth(Direction::ServerToClient, Some(400_000));
        let started = Instant::now();
        echo(&mut stream, 200_000).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());
    }

    #[test]
    fn a_cut_delivers_half_a_read_then_resets() {
        let proxy = Proxy::start(echo_server());
        let mut stream = connect(&proxy);
        echo(&mut stream, 10).unwrap();
        proxy.cut_mid_packet(Direction::ClientToServer);
        // Small writes pass: only a large read is cut.
        echo(&mut stream, 100).unwrap();
        let err = echo(&mut stream, 8000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(proxy.resets(), 1);
        // The next connection is fine.
        echo(&mut connect(&proxy), 8000).unwrap();
    }

    #[test]
    fn the_scanner_finds_publishes_across_reads() {
        // A CONNECT of 12 bytes, a PUBLISH of 2 + 200 bytes (length 0xC8 0x01),
        // a PINGREQ.
        let mut stream = vec![0x10, 10];
        stream.extend([0u8; 10]);
        stream.extend([0x32, 0xC8, 0x01]);
        stream.extend([7u8; 200]);
        stream.extend([0xC0, 0x00]);
        let mut whole = PacketScanner::default();
        assert_eq!(whole.feed(&stream), Some(203));
        for split in [1, 12, 13, 14, 100, 214] {
            let mut parts = PacketScanner::default();
            let (a, b) = stream.split_at(split);
            assert_eq!(parts.feed(a).max(parts.feed(b)), Some(203), "split at {split}");
            assert!(parts.header.is_empty() && parts.skip == 0);
        }
        let mut bad = PacketScanner::default();
        assert_eq!(bad.feed(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), None);
        assert!(bad.lost);
    }

    #[test]
    fn swallow_drops_publishes_from_the_first_oversized_one_on() {
        // A small PUBLISH (2 + 5), a large one (3 + 200), a PINGREQ, a small
        // PUBLISH again, a PUBACK (2 + 2).
        let small = [0x32, 5, 0, 1, b't', 0, 1];
        let mut stream = small.to_vec();
        stream.extend([0x32, 0xC8, 0x01]);
        stream.extend([7u8; 200]);
        stream.extend([0xC0, 0x00]);
        stream.extend(small);
        stream.extend([0x40, 2, 0, 9]);
        let mut expected = small.to_vec();
        expected.extend([0xC0, 0x00, 0x40, 2, 0, 9]);
        for split in [1, 7, 8, 9, 10, 100, 210, 211, 212, stream.len()] {
            let mut swallow = Swallow::default();
            let (a, b) = stream.split_at(split);
            let mut out = swallow.feed(a, Some(100));
            out.extend(swallow.feed(b, Some(100)));
            assert_eq!(out, expected, "split at {split}");
            assert!(swallow.on);
        }
        // Without a limit, everything goes on, as it comes: half a header too.
        let mut open = Swallow::default();
        assert_eq!(open.feed(&stream[..8], None), stream[..8]);
        assert_eq!(open.feed(&stream[8..], None), stream[8..]);
        assert!(!open.on);
    }

    #[test]
    fn black_hole_keeps_the_socket_open_and_silent() {
        let proxy = Proxy::start(echo_server());
        let mut stream = connect(&proxy);
        echo(&mut stream, 10).unwrap();
        assert_eq!(proxy.black_hole(), 1);
        stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        stream.write_all(b"anyone?").unwrap();
        let mut buf = [0u8; 16];
        let err = stream.read(&mut buf).unwrap_err();
        assert!(timed_out(&err), "silence, not an error or EOF: {err}");
        // A new connection works.
        echo(&mut connect(&proxy), 1000).unwrap();
    }

    #[test]
    fn down_resets_and_refuses_until_the_time_is_up() {
        let proxy = Proxy::start(echo_server());
        let mut stream = connect(&proxy);
        echo(&mut stream, 10).unwrap();
        assert_eq!(proxy.down_for(Duration::from_millis(500)), 1);
        assert!(proxy.is_down());
        assert!(echo(&mut stream, 10).is_err());
        let mut refused = connect(&proxy);
        assert!(echo(&mut refused, 10).is_err());
        assert!(crate::wait_until(Duration::from_secs(5), || !proxy.is_down()));
        echo(&mut connect(&proxy), 10).unwrap();
        assert_eq!(proxy.refused(), 1);
    }
}
