//! A deterministic simulation of one sender, N receivers and a broker, in the spirit
//! of quinn-proto's `Pair`.
//!
//! Time is simulated: nothing sleeps, and a run is a pure function of its seed and
//! settings. The broker keeps the retained manifest, fans each publish out to the
//! receivers that are subscribed, and can lose, duplicate, corrupt, delay and reorder
//! every delivery independently. Each receiver drains its broker queue at a set speed,
//! and the queue can be capped the way Mosquitto's `max_queued_messages` caps it, so
//! flow control is tested against a slow receiver. Receivers and the sender can be
//! killed and started again: a receiver comes back with its last snapshot and the
//! bytes it had written, a sender comes back from scratch with a new run.
//!
//! Each receiver is driven as the runtime drives it: every message goes through its
//! [`ReceiverEndpoint`], which routes it to the transfer's [`Receiver`] or decides on
//! it (offers, the queue, answers from the memory of finished transfers), and the
//! simulation does only what the runtime does with files: accept an offer, check
//! that a finished file is still there, drop a transfer that ended.
//!
//! `drive` runs until nothing is scheduled and fails on a live-lock: a step or time
//! budget that runs out.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use mqft_proto::receiver::ReceiveFailure;
use mqft_proto::wire::Compression;
use mqft_proto::{
    integrity, Limits, Manifest, Meta, Payload, Prefix, Receiver, ReceiverConfig, ReceiverEndpoint, ReceiverEvent,
    ReceiverId, ResumeState, Routed, SendFailure, Sender, SenderConfig, SenderEndpoint, SenderEvent,
};

/// A small, fast, seeded PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// What the broker does with the retained manifest when a receiver subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retained {
    /// Every subscription gets it (Mosquitto 2.0, NATS 2.9).
    Always,
    /// Only a receiver's first subscription: one that comes back with its session
    /// present gets none (rumqttd 0.20).
    FirstSubscription,
    /// Never: receivers subscribe with a wildcard, and RabbitMQ 3.10 never delivers
    /// retained messages to wildcard subscriptions. Only live publishes arrive.
    Never,
}

/// What the link between each client and the broker does to deliveries.
#[derive(Debug, Clone)]
pub struct Link {
    /// Probability that one delivery is lost.
    pub loss: f64,
    /// Probability that one delivery arrives twice.
    pub dup: f64,
    /// Probability that a chunk delivery has one byte flipped.
    pub corrupt: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Up to this much extra random delay per delivery: reorders deliveries.
    pub jitter: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Link { loss: 0.0, dup: 0.0, corrupt: 0.0, delay: Duration::from_millis(5), jitter: Duration::ZERO }
    }
}

#[derive(Debug, Clone)]
enum Ev {
    /// A publish reaches receiver `i`'s queue at the broker.
    ToReceiver(usize, String, Vec<u8>),
    /// The retained manifest, handed to a receiver as it subscribes.
    RetainedToReceiver(usize, String, Vec<u8>),
    /// Receiver `i` takes the next message off its queue.
    Serve(usize),
    /// An ack reaches the sender.
    ToSender(String, Vec<u8>),
    /// Something to do at a time: a scheduled restart or a timer check.
    Wake,
    /// Receiver `i` has moved its verified file into place.
    Finalized(usize),
}

pub struct SimReceiver {
    pub id: ReceiverId,
    /// Routes its messages and decides on offers; a new one at each start, as a
    /// restarted process forgets.
    pub endpoint: ReceiverEndpoint,
    pub rx: Option<Receiver>,
    /// The transfer moved its file into place: dropped once its last words are out.
    closing: bool,
    /// Loss and the like on this receiver's side, on top of the common link.
    pub link: Link,
    /// The bytes written to the "partial file".
    pub disk: Vec<u8>,
    /// The last snapshot, as saved to "disk".
    pub saved: Option<ResumeState>,
    /// The file under its final name, once finalized.
    pub final_file: Option<Vec<u8>>,
    pub failure: Option<ReceiveFailure>,
    /// Times it gave up on a silent sender.
    pub gave_up: u32,
    pub online: bool,
    /// Messages queued for it at the broker.
    /// Messages the broker holds for it: topic, payload, and whether it is a
    /// retained copy handed over at subscription.
    pub queue: std::collections::VecDeque<(String, Vec<u8>, bool)>,
    pub serving: bool,
    /// Time to handle one message (a slow disk).
    pub service: Duration,
    /// Messages the broker dropped because the queue was full.
    pub broker_drops: u64,
    pub chunks_seen: u64,
    /// Chunks that failed their checks.
    pub corrupt_seen: u64,
    /// Snapshot after this many handled messages.
    pub snapshot_every: u32,
    /// How long moving the verified file into place takes.
    pub finalize_after: Duration,
    /// Has subscribed before: the broker keeps its session.
    pub subscribed: bool,
    /// What the broker keeps for it while it is offline ([`Sim::offline_session`]).
    pub session: Vec<(String, Vec<u8>)>,
    /// When it was last started by [`Action::StartReceiver`].
    pub started_at: Option<Instant>,
    /// Every transfer slot is taken (by transfers outside the simulation): a new
    /// offer waits in the queue, answered `Queued`, until [`Action::FreeSlot`]; or,
    /// with `queue_full`, is refused with `QueueFull`. The runtime's queue, for one
    /// transfer.
    pub slots_full: bool,
    pub queue_full: bool,
    /// The endpoint holds the transfer that stands for `slots_full`.
    phantom_open: bool,
    handled: u32,
}

impl SimReceiver {
    /// An endpoint with one slot, so that [`SimReceiver::slots_full`] can take it.
    fn new_endpoint(prefix: &Prefix, id: &ReceiverId, early_chunks: bool) -> ReceiverEndpoint {
        let mut limits = Limits::default();
        limits.max_concurrent = 1;
        let mut endpoint = ReceiverEndpoint::new(prefix.clone(), id.clone(), limits);
        endpoint.set_chunk_wildcard(early_chunks);
        endpoint
    }

    /// Brings the endpoint in line with `slots_full` and `queue_full`: a transfer
    /// from outside the simulation holds the one slot, and a full queue has room
    /// for nothing.
    fn sync_slots(&mut self) {
        let phantom = integrity::transfer_id(0, 1, None, "outside the simulation", None);
        if self.slots_full != self.phantom_open {
            if self.slots_full {
                self.endpoint.accept(phantom);
            } else {
                self.endpoint.ended(&phantom);
                self.endpoint.closed(&phantom);
            }
            self.phantom_open = self.slots_full;
        }
        let mut limits = self.endpoint.limits().clone();
        limits.queue = if self.queue_full { 0 } else { Limits::default().queue };
        self.endpoint.set_limits(limits);
    }

    /// What the runtime's `store::find_identical` finds: the final file holds the
    /// manifest's bytes, or for a manifest without a hash, is as long (a claim the
    /// sender checks): the file's hash then.
    fn has_file(&self, m: &Manifest) -> Option<[u8; 32]> {
        let f = self.final_file.as_ref().filter(|f| f.len() as u64 == m.size)?;
        let sha = integrity::sha256(f);
        m.sha256.is_none_or(|d| d == sha).then_some(sha)
    }
}

pub struct Sim {
    pub now: Instant,
    pub start: Instant,
    pub rng: Rng,
    pub prefix: Prefix,
    pub file: Vec<u8>,
    /// The bytes the sender actually reads (differs from `file` to simulate a file
    /// changed under the sender).
    pub source: Vec<u8>,
    /// The hash the sender sets when it asks for one, instead of that of
    /// `source` (a sender whose hashing and reading disagree).
    pub digest_override: Option<[u8; 32]>,
    pub manifest: Manifest,
    /// How the sender encodes chunks...
    pub compression: Compression,
    /// ...and how many went out compressed.
    pub compressed_chunks: u64,
    pub sender_cfg: SenderConfig,
    pub receiver_cfg: ReceiverConfig,
    pub sender: Option<Sender>,
    /// Routes the acks to `sender`.
    pub sender_endpoint: SenderEndpoint,
    pub sender_events: Vec<SenderEvent>,
    pub receivers: Vec<SimReceiver>,
    pub link: Link,
    /// Broker queue cap per receiver (Mosquitto's `max_queued_messages`).
    pub queue_cap: Option<usize>,
    pub retained: Option<Vec<u8>>,
    /// Which subscriptions get the retained manifest.
    pub retained_mode: Retained,
    /// The broker keeps an offline receiver's session: the manifests and control
    /// messages published while it is down are handed over when it comes back, all
    /// control messages first, then the manifests, because rumqttd 0.20 keeps one log
    /// per subscription filter and drains them one after the other. (Chunks it would
    /// get too are left out: a receiver that has not accepted the transfer again
    /// drops them.)
    pub offline_session: bool,
    /// See [`SimBuilder::early_chunks`].
    pub early_chunks: bool,
    /// See [`SimBuilder::stream`]; and when the sender began reading it.
    pub stream: Option<Duration>,
    /// See [`SimBuilder::stream_stalls`].
    pub stream_stalls: bool,
    pub stream_started: Instant,
    /// Chunk publishes before the sender had read the stream's end.
    pub chunks_before_end: Option<u64>,
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    evs: Vec<Option<Ev>>,
    order: u64,
    /// Chunk publishes by all sender runs.
    pub chunk_transmissions: u64,
    /// Scheduled actions: (at, action).
    pub script: Vec<(Duration, Action)>,
    pub steps: u64,
    /// When the sender reported its outcome.
    pub finished_at: Option<Instant>,
}

/// Something a test schedules at a simulated time.
#[derive(Debug, Clone)]
pub enum Action {
    KillReceiver(usize),
    StartReceiver(usize),
    KillSender,
    StartSender,
    /// A slot frees at receiver `i` (see [`SimReceiver::slots_full`]): its queued
    /// offer, if any, is accepted.
    FreeSlot(usize),
    /// Receiver `i`'s queue empties: offers are queued again, not refused.
    QueueRoom(usize),
}

pub struct SimBuilder {
    pub seed: u64,
    pub size: usize,
    pub chunk_size: u32,
    pub receivers: usize,
    pub link: Link,
    pub sender_cfg: SenderConfig,
    pub receiver_cfg: ReceiverConfig,
    pub queue_cap: Option<usize>,
    /// A file of four letters (2 bits a byte), which zstd shrinks, instead of
    /// random bytes.
    pub compressible: bool,
    /// The manifest carries the hash, as a signed or encrypted sender's does;
    /// otherwise the sender sets it when it asks ([`Sender::wants_digest`]), as
    /// the runtime does once it has read the file. A third of the seeds.
    pub digest_first: bool,
    /// Receivers subscribe to every transfer's chunks from the start
    /// ([`ReceiverEndpoint::set_chunk_wildcard`]), as the reference runtime does,
    /// so the chunks a sender sends before anyone answered reach them; otherwise
    /// they subscribe to a transfer's chunks once they take it, as a pool member
    /// does. Two thirds of the seeds.
    pub early_chunks: bool,
    /// The file is a stream ([`Manifest::new_stream`], `mqft send -`): its bytes
    /// become readable evenly over this long, as from a pipe, and the sender
    /// learns the size only at the end.
    pub stream: Option<Duration>,
    /// The stream's first half is readable at once, the rest only after the
    /// whole of `stream`: a pipe that stalls.
    pub stream_stalls: bool,
}

impl SimBuilder {
    pub fn new(seed: u64, size: usize, chunk_size: u32) -> Self {
        SimBuilder {
            seed,
            size,
            chunk_size,
            receivers: 1,
            link: Link::default(),
            sender_cfg: SenderConfig::default(),
            receiver_cfg: ReceiverConfig::default(),
            queue_cap: None,
            compressible: false,
            digest_first: seed.is_multiple_of(3),
            early_chunks: !seed.is_multiple_of(3) || seed.is_multiple_of(2),
            stream: None,
            stream_stalls: false,
        }
    }

    pub fn receivers(mut self, n: usize) -> Self {
        self.receivers = n;
        self
    }

    pub fn link(mut self, link: Link) -> Self {
        self.link = link;
        self
    }

    pub fn build(self) -> Sim {
        let mut rng = Rng::new(self.seed);
        let mut file = rng.bytes(self.size);
        if self.compressible {
            file.iter_mut().for_each(|b| *b = b'a' + *b % 4);
        }
        let run = rng.next_u64() as u32;
        let manifest = if self.stream.is_some() {
            Manifest::new_stream("photo.jpg".into(), self.chunk_size, Meta::default(), run).unwrap()
        } else {
            let digest = self.digest_first.then(|| integrity::sha256(&file));
            Manifest::new("photo.jpg".into(), file.len() as u64, self.chunk_size, digest, Meta::default(), run).unwrap()
        };
        let now = Instant::now();
        let prefix = Prefix::default();
        let receivers = (0..self.receivers)
            .map(|i| SimReceiver {
                id: ReceiverId::new(&format!("rx{i}")).unwrap(),
                endpoint: SimReceiver::new_endpoint(
                    &prefix,
                    &ReceiverId::new(&format!("rx{i}")).unwrap(),
                    self.early_chunks,
                ),
                rx: None,
                closing: false,
                link: Link { delay: Duration::ZERO, ..Link::default() },
                disk: vec![0; file.len()],
                saved: None,
                final_file: None,
                failure: None,
                gave_up: 0,
                online: true,
                queue: Default::default(),
                serving: false,
                service: Duration::ZERO,
                broker_drops: 0,
                chunks_seen: 0,
                corrupt_seen: 0,
                snapshot_every: 1,
                finalize_after: Duration::ZERO,
                subscribed: true,
                session: Vec::new(),
                started_at: None,
                slots_full: false,
                queue_full: false,
                phantom_open: false,
                handled: 0,
            })
            .collect();
        Sim {
            now,
            start: now,
            rng,
            prefix: prefix.clone(),
            source: file.clone(),
            digest_override: None,
            file,
            manifest,
            compression: Compression::None,
            compressed_chunks: 0,
            sender_cfg: self.sender_cfg,
            receiver_cfg: self.receiver_cfg,
            sender: None,
            sender_endpoint: SenderEndpoint::new(prefix.clone()),
            sender_events: Vec::new(),
            receivers,
            link: self.link,
            queue_cap: self.queue_cap,
            retained: None,
            retained_mode: Retained::Always,
            offline_session: false,
            early_chunks: self.early_chunks,
            stream: self.stream,
            stream_stalls: self.stream_stalls,
            stream_started: now,
            chunks_before_end: None,
            heap: BinaryHeap::new(),
            evs: Vec::new(),
            order: 0,
            chunk_transmissions: 0,
            script: Vec::new(),
            steps: 0,
            finished_at: None,
        }
    }
}

impl Sim {
    fn push(&mut self, at: Instant, ev: Ev) {
        self.order += 1;
        self.evs.push(Some(ev));
        self.heap.push(Reverse((at, self.order, self.evs.len() - 1)));
    }

    /// Delay for one delivery over `link`s.
    fn delay(&mut self, extra: &Link) -> Duration {
        let jitter = self.link.jitter + extra.jitter;
        let j = if jitter.is_zero() { 0 } else { self.rng.below(jitter.as_micros() as u64) };
        self.link.delay + extra.delay + Duration::from_micros(j)
    }

    pub fn start_sender(&mut self) {
        let mut m = self.manifest.clone();
        m.run = self.rng.next_u64() as u32;
        if m.stream {
            // A stream's id names its run: a new run is a new transfer.
            m.id = m.derived_id();
            self.manifest = m.clone();
            self.stream_started = self.now;
        }
        // A new process: a new endpoint, with this one transfer open.
        self.sender_endpoint = SenderEndpoint::new(self.prefix.clone());
        self.sender_endpoint.opened(m.id);
        self.sender = Some(Sender::new(self.sender_cfg.clone(), self.prefix.clone(), m, self.now));
    }

    pub fn schedule(&mut self, after: Duration, action: Action) {
        self.script.push((after, action));
        self.push(self.start + after, Ev::Wake);
    }

    /// Publishes from the sender: the broker fans out to receivers.
    fn broker_publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        if retain {
            self.retained = (!payload.is_empty()).then(|| payload.clone());
        }
        let is_chunk = topic.contains("/chunk/");
        for i in 0..self.receivers.len() {
            let r = &mut self.receivers[i];
            if !r.online && self.offline_session && r.subscribed && !is_chunk {
                r.session.push((topic.clone(), payload.clone()));
                continue;
            }
            // Chunks reach only receivers subscribed to the transfer, or to all.
            if !r.online || (is_chunk && r.rx.is_none() && !self.early_chunks) {
                continue;
            }
            let extra = r.link.clone();
            let loss = 1.0 - (1.0 - self.link.loss) * (1.0 - extra.loss);
            if self.rng.chance(loss) {
                continue;
            }
            let copies = if self.rng.chance(self.link.dup.max(extra.dup)) { 2 } else { 1 };
            for _ in 0..copies {
                let mut p = payload.clone();
                if is_chunk && !p.is_empty() && self.rng.chance(self.link.corrupt.max(extra.corrupt)) {
                    let at = self.rng.below(p.len() as u64) as usize;
                    p[at] ^= 1 << self.rng.below(8);
                }
                let at = self.now + self.delay(&extra);
                self.push(at, Ev::ToReceiver(i, topic.clone(), p));
            }
        }
    }

    fn receiver_publish(&mut self, i: usize, topic: String, payload: Vec<u8>) {
        let extra = self.receivers[i].link.clone();
        let loss = 1.0 - (1.0 - self.link.loss) * (1.0 - extra.loss);
        if self.rng.chance(loss) {
            return;
        }
        let copies = if self.rng.chance(self.link.dup.max(extra.dup)) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now + self.delay(&extra);
            self.push(at, Ev::ToSender(topic.clone(), payload.clone()));
        }
    }

    /// Moves every pending output into the network.
    /// How many bytes of the stream the sender can read by now, if it is one.
    fn stream_read(&self) -> Option<usize> {
        let over = self.stream?;
        let elapsed = self.now - self.stream_started;
        let len = self.source.len();
        Some(match elapsed >= over {
            true => len,
            false if self.stream_stalls => len / 2,
            false => (len as u128 * elapsed.as_nanos() / over.as_nanos()) as usize,
        })
    }

    fn flush(&mut self) {
        if let Some(mut s) = self.sender.take() {
            if let Some(read) = self.stream_read().filter(|_| s.manifest().is_open()) {
                s.set_readable((read / s.manifest().chunk_size as usize) as u32);
                if read == self.source.len() {
                    self.chunks_before_end = Some(self.chunk_transmissions);
                    s.stream_ended(read as u64).unwrap();
                }
            }
            loop {
                let Some(t) = s.poll_transmit(self.now) else {
                    if !s.wants_digest() {
                        break;
                    }
                    let digest = self.digest_override.unwrap_or_else(|| integrity::sha256(&self.source));
                    s.set_digest(digest, self.now);
                    continue;
                };
                let payload = match t.payload {
                    Payload::Bytes(b) => b,
                    Payload::Chunk(c) => {
                        self.chunk_transmissions += 1;
                        let range = c.offset as usize..(c.offset + c.len) as usize;
                        let (payload, wire) = c.encode_with(&self.source[range], self.compression);
                        if wire < c.len as usize {
                            self.compressed_chunks += 1;
                        }
                        payload
                    }
                };
                self.broker_publish(t.topic, payload, t.retain);
            }
            while let Some(e) = s.poll_event() {
                if matches!(e, SenderEvent::Finished | SenderEvent::Failed(_)) {
                    self.finished_at = Some(self.now);
                }
                self.sender_events.push(e);
            }
            self.sender = Some(s);
        }
        for i in 0..self.receivers.len() {
            self.flush_endpoint(i);
            let Some(mut rx) = self.receivers[i].rx.take() else { continue };
            while let Some(t) = rx.poll_transmit() {
                let Payload::Bytes(b) = t.payload else { panic!("receivers send no chunks") };
                self.receiver_publish(i, t.topic, b);
            }
            let mut keep = true;
            while let Some(e) = rx.poll_event() {
                match e {
                    ReceiverEvent::Verified => {
                        // The runtime renames the file here, then confirms.
                        let at = self.now + self.receivers[i].finalize_after;
                        self.push(at, Ev::Finalized(i));
                    }
                    ReceiverEvent::Failed(f) => {
                        self.receivers[i].gave_up += u32::from(f == ReceiveFailure::SenderGone);
                        self.receivers[i].failure = Some(f);
                        self.receivers[i].endpoint.ended(&rx.manifest().id);
                        keep = false;
                    }
                    other => panic!("the harness does not know receiver event {other:?}"),
                }
            }
            // A transfer that ended is dropped once its last transmits are out, as the
            // runtime does; its saved state stays.
            let r = &mut self.receivers[i];
            if keep && !std::mem::take(&mut r.closing) {
                r.rx = Some(rx);
            } else {
                r.endpoint.closed(&rx.manifest().id);
            }
        }
    }

    /// Publishes what receiver `i`'s endpoint answered itself.
    fn flush_endpoint(&mut self, i: usize) {
        let out: Vec<_> = std::iter::from_fn(|| self.receivers[i].endpoint.poll_transmit()).collect();
        for t in out {
            let Payload::Bytes(b) = t.payload else { panic!("receivers send no chunks") };
            self.receiver_publish(i, t.topic, b);
        }
        while self.receivers[i].endpoint.poll_event().is_some() {}
    }

    /// Receiver `i` decides on an offer the endpoint let through, as the runtime
    /// would: a file already here is confirmed, anything else accepted (resuming
    /// from the saved state).
    fn take_offer(&mut self, i: usize, m: Manifest) {
        let (prefix, cfg, now) = (self.prefix.clone(), self.receiver_cfg.clone(), self.now);
        let r = &mut self.receivers[i];
        if let Some(sha) = r.has_file(&m) {
            return r.endpoint.already_complete(m, sha);
        }
        r.failure = None;
        let rx = if r.endpoint.accept(m.id) {
            Receiver::new_early(cfg, prefix, r.id.clone(), m, r.saved.clone(), now)
        } else {
            Receiver::new(cfg, prefix, r.id.clone(), m, r.saved.clone(), now)
        };
        r.rx = Some(rx.unwrap());
    }

    fn next_timer(&self) -> Option<Instant> {
        let mut s = self.sender.as_ref().and_then(|s| s.poll_timeout());
        if self.sender.as_ref().is_some_and(|s| s.manifest().is_open()) {
            // The pipe fills on: look again a millisecond later.
            let tick = self.now + Duration::from_millis(1);
            s = Some(s.map_or(tick, |t| t.min(tick)));
        }
        let r = self.receivers.iter().filter_map(|r| r.rx.as_ref()?.poll_timeout()).min();
        match (s, r) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs until nothing is scheduled. Panics on a live-lock: more than `max_steps`
    /// steps or `max_time` of simulated time.
    pub fn drive(&mut self, max_time: Duration) {
        self.drive_inner(max_time, None);
    }

    /// Runs until simulated time `at` (from the start), or until nothing is scheduled.
    pub fn run_until(&mut self, at: Duration) {
        self.drive_inner(at + Duration::from_secs(1), Some(self.start + at));
    }

    fn drive_inner(&mut self, max_time: Duration, stop_at: Option<std::time::Instant>) {
        let max_steps = 5_000_000;
        loop {
            self.flush();
            let timer = self.next_timer();
            let next_ev = self.heap.peek().map(|Reverse((t, _, _))| *t);
            let next = match (timer, next_ev) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => return,
            };
            if stop_at.is_some_and(|t| next > t) {
                return;
            }
            self.steps += 1;
            assert!(
                self.steps < max_steps && next - self.start < max_time,
                "live-lock: {} steps, {:?} simulated; last sender events {:?}",
                self.steps,
                next - self.start,
                &self.sender_events[self.sender_events.len().saturating_sub(8)..]
            );
            self.now = self.now.max(next);
            self.run_scripts();
            while let Some(&Reverse((t, _, idx))) = self.heap.peek() {
                if t > self.now {
                    break;
                }
                self.heap.pop();
                let ev = self.evs[idx].take().expect("each event runs once");
                self.handle(ev);
                self.flush();
            }
            if let Some(s) = self.sender.as_mut() {
                if s.poll_timeout().is_some_and(|t| t <= self.now) {
                    s.handle_timeout(self.now);
                }
            }
            for r in &mut self.receivers {
                if let Some(rx) = r.rx.as_mut() {
                    if rx.poll_timeout().is_some_and(|t| t <= self.now) {
                        rx.handle_timeout(self.now);
                    }
                }
            }
        }
    }

    fn run_scripts(&mut self) {
        let due: Vec<Action> = {
            let elapsed = self.now - self.start;
            let (due, rest): (Vec<_>, Vec<_>) = self.script.drain(..).partition(|(at, _)| *at <= elapsed);
            self.script = rest;
            due.into_iter().map(|(_, a)| a).collect()
        };
        for a in due {
            match a {
                Action::KillReceiver(i) => {
                    let r = &mut self.receivers[i];
                    r.rx = None;
                    r.online = false;
                    r.queue.clear();
                }
                Action::StartReceiver(i) => {
                    let r = &mut self.receivers[i];
                    r.endpoint = SimReceiver::new_endpoint(&self.prefix, &r.id, self.early_chunks);
                    r.phantom_open = false;
                    r.online = true;
                    r.started_at = Some(self.now);
                    // The broker hands a subscriber the retained manifest, unless it
                    // is one that skips it.
                    let gets_retained = match self.retained_mode {
                        Retained::Always => true,
                        Retained::FirstSubscription => !r.subscribed,
                        Retained::Never => false,
                    };
                    r.subscribed = true;
                    // Control messages before manifests: one filter's log, then the next.
                    let mut kept = std::mem::take(&mut r.session);
                    kept.sort_by_key(|(topic, _)| !topic.ends_with("/ctl"));
                    let at = self.now + self.link.delay;
                    for (topic, payload) in kept {
                        self.push(at, Ev::ToReceiver(i, topic, payload));
                    }
                    if let Some(m) = self.retained.clone().filter(|_| gets_retained) {
                        let topic = self.prefix.manifest(&self.manifest.id);
                        self.push(at, Ev::RetainedToReceiver(i, topic, m));
                    }
                }
                Action::KillSender => self.sender = None,
                Action::StartSender => self.start_sender(),
                Action::FreeSlot(i) => {
                    let r = &mut self.receivers[i];
                    r.slots_full = false;
                    if r.online {
                        r.sync_slots();
                        if let Some(Routed::Offer(m)) = r.endpoint.next_admitted() {
                            self.take_offer(i, m);
                        }
                        self.flush_endpoint(i);
                    }
                }
                Action::QueueRoom(i) => self.receivers[i].queue_full = false,
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        let retained = matches!(ev, Ev::RetainedToReceiver(..));
        match ev {
            Ev::Wake => {}
            Ev::Finalized(i) => {
                let r = &mut self.receivers[i];
                if let Some(rx) = r.rx.as_mut() {
                    r.final_file = Some(r.disk.clone());
                    rx.finalized(self.now);
                    r.saved = Some(rx.snapshot());
                    r.endpoint.ended(&rx.manifest().id);
                    r.endpoint.completed(rx.manifest().clone());
                    r.closing = true;
                }
            }
            Ev::ToSender(topic, payload) => {
                let Some(s) = self.sender.as_mut() else { return };
                // Routed as the runtime routes them: by the id in the topic, to the
                // transfer open under it.
                if let Some(ack) = self.sender_endpoint.handle(&topic) {
                    let _ = s.handle_ack(&ack.from, &payload, self.now);
                }
            }
            Ev::ToReceiver(i, topic, payload) | Ev::RetainedToReceiver(i, topic, payload) => {
                let cap = self.queue_cap;
                let r = &mut self.receivers[i];
                if !r.online {
                    return;
                }
                if cap.is_some_and(|c| r.queue.len() >= c) {
                    r.broker_drops += 1;
                    return;
                }
                r.queue.push_back((topic, payload, retained));
                if !r.serving {
                    r.serving = true;
                    let at = self.now + r.service;
                    self.push(at, Ev::Serve(i));
                }
            }
            Ev::Serve(i) => {
                let Some((topic, payload, retained)) = self.receivers[i].queue.pop_front() else {
                    self.receivers[i].serving = false;
                    return;
                };
                self.deliver(i, &topic, &payload, retained);
                let r = &mut self.receivers[i];
                if r.queue.is_empty() {
                    r.serving = false;
                } else {
                    let at = self.now + r.service;
                    self.push(at, Ev::Serve(i));
                }
            }
        }
    }

    /// Receiver `i` handles one message, as the runtime would.
    fn deliver(&mut self, i: usize, topic: &str, payload: &[u8], retained: bool) {
        let now = self.now;
        let r = &mut self.receivers[i];
        if !r.online {
            return;
        }
        r.sync_slots();
        let routed =
            if retained { r.endpoint.handle_retained(topic, payload) } else { r.endpoint.handle(topic, payload) };
        match routed {
            Some(Routed::Manifest(m)) => {
                if let Some(rx) = r.rx.as_mut() {
                    let _ = rx.handle_manifest(&m, now);
                }
            }
            Some(Routed::Chunk(_, n)) => {
                if let Some(rx) = r.rx.as_mut() {
                    r.chunks_seen += 1;
                    match rx.handle_chunk(n, payload, now) {
                        Ok(Some(w)) => {
                            let at = w.offset as usize;
                            r.disk[at..at + w.data.len()].copy_from_slice(&w.data);
                        }
                        Ok(None) => {}
                        Err(_) => r.corrupt_seen += 1,
                    }
                    while let Some(h) = rx.next_hash_read() {
                        let range = h.offset as usize..(h.offset + h.len) as usize;
                        rx.hash_chunk(h.index, &r.disk[range]).unwrap();
                    }
                }
            }
            Some(Routed::Ctl(_)) => {
                if let Some(rx) = r.rx.as_mut() {
                    let _ = rx.handle_ctl(payload, now);
                }
            }
            Some(Routed::Offer(m)) => self.take_offer(i, m),
            Some(Routed::CheckHistory(m)) => {
                let still = r.has_file(&m);
                if let Some(Routed::Offer(m)) = r.endpoint.history_checked(m, still) {
                    self.take_offer(i, m);
                }
            }
            Some(Routed::Unsubscribe(_)) | None => {}
            Some(other) => panic!("the harness does not know route {other:?}"),
        }
        self.flush_endpoint(i);
        let r = &mut self.receivers[i];
        r.handled += 1;
        if r.handled.is_multiple_of(r.snapshot_every.max(1)) {
            if let Some(rx) = r.rx.as_ref() {
                r.saved = Some(rx.snapshot());
            }
        }
    }

    /// The sender's terminal event.
    pub fn outcome(&self) -> Option<Result<(), SendFailure>> {
        self.sender_events.iter().rev().find_map(|e| match e {
            SenderEvent::Finished => Some(Ok(())),
            SenderEvent::Failed(f) => Some(Err(f.clone())),
            _ => None,
        })
    }

    /// Checks the one invariant that holds whatever happened: a file under its final
    /// name is byte-identical to the sent one.
    pub fn assert_no_wrong_file(&self) {
        for r in &self.receivers {
            if let Some(f) = &r.final_file {
                assert!(f == &self.file, "receiver {} finalized a file that differs", r.id);
            }
        }
    }

    /// Asserts the transfer finished and receivers `ids` hold the file.
    pub fn assert_delivered(&self, ids: impl IntoIterator<Item = usize>) {
        let tail = &self.sender_events[self.sender_events.len().saturating_sub(8)..];
        assert_eq!(self.outcome(), Some(Ok(())), "last sender events: {tail:?}");
        for i in ids {
            let r = &self.receivers[i];
            assert!(r.final_file.as_ref() == Some(&self.file), "receiver {i} lacks the file ({:?})", r.failure);
        }
        self.assert_no_wrong_file();
    }

    pub fn receiver_ids(&self, which: impl IntoIterator<Item = usize>) -> BTreeSet<ReceiverId> {
        which.into_iter().map(|i| self.receivers[i].id.clone()).collect()
    }
}
