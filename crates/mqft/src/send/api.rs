//! The sender's public face: its options, the files it takes, its events and
//! its report.

use super::*;

/// [`SendOptions::window_bytes`] by default.
pub const DEFAULT_WINDOW_BYTES: u64 = 64 << 20;

/// Files in flight at once by default ([`SendOptions::concurrency`]): enough that
/// the broker's per-file exchanges (manifest and ready, end of round and
/// complete) of many small files overlap. Measured with 200 files of 200 KiB on a
/// default Mosquitto (docs/PERFORMANCE.md): 8 took 0.83 times as long as 64, and
/// 32 as long as 64.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// [`SendOptions::in_flight_bytes`] by default.
pub const DEFAULT_IN_FLIGHT_BYTES: u64 = 64 << 20;

/// How to send.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SendOptions {
    /// Chunk size: [`ChunkSize::Auto`] by default.
    pub chunk_size: ChunkSize,
    /// The protocol's tunables: window, chunk QoS, timeouts, retries, and which
    /// receivers to wait for ([`proto::Wait`], by default any one).
    pub protocol: proto::SenderConfig,
    /// How many files are in flight at once (hashing or sending), at most
    /// ([`DEFAULT_CONCURRENCY`] by default); fewer while the files being sent
    /// are large (see `in_flight_bytes`).
    pub concurrency: usize,
    /// The bytes of the files being sent past which no other file starts (one
    /// always may; [`DEFAULT_IN_FLIGHT_BYTES`] by default): a batch of large files
    /// goes one or a few at a time, each at full speed and the first done first,
    /// a batch of small ones many at once.
    pub in_flight_bytes: u64,
    /// How chunks are encoded: [`proto::wire::Compression::Zstd`] compresses each
    /// chunk that shrinks by at least 3 % and sends the others raw. Off by default:
    /// it costs CPU on both sides, and most large files (images, video, archives)
    /// are compressed already.
    pub compress: proto::wire::Compression,
    /// The window in bytes: each file's window of unacknowledged chunks
    /// ([`proto::SenderConfig::window`]) is cut to this many bytes of chunks (one
    /// chunk at least). It bounds what one transfer leaves queued at the broker and
    /// in flight when chunks are large; a receiver bounds its own memory whatever
    /// the window. The default, 64 MiB, is the 256 chunks of 256 KiB that the
    /// window sweep in docs/PERFORMANCE.md found fastest.
    pub window_bytes: u64,
    /// Bytes of chunks each file sends before any receiver answered
    /// ([`proto::SenderConfig::eager_window`], PROTOCOL.md 8.2): receivers already
    /// subscribed get them with no round trip first. The default, 4 MiB, covers a
    /// round trip of 40 ms at 100 MiB/s, and is what a file costs on the link if
    /// nobody is listening; 0 waits for a receiver's `Ready`.
    pub eager_bytes: u64,
    /// The sender name every manifest carries ([`Manifest::sender`]): `[0-9a-z_-]`,
    /// at most [`proto::wire::MAX_SENDER_LEN`] bytes, or empty (the default) for
    /// an unnamed sender. Receivers show it, and may file by it.
    pub from: String,
    /// Sign every manifest with this key (`--sign`): receivers that trust it
    /// accept the file, and see this key as its sender. See [`crate::keys`].
    pub sign: Option<crate::keys::SecretKey>,
    /// Encrypt each file for these recipients (`--encrypt-to`): the broker and
    /// other subscribers see only ciphertext, the name and metadata included.
    /// See [`proto::sealed`].
    pub encrypt_to: Vec<crate::keys::PublicKey>,
    /// Hold each file at the broker for this long (`--hold`), for receivers that
    /// come online later: the manifest and every chunk are published retained with
    /// an MQTT 5 Message Expiry Interval, and the send ends once the broker has
    /// acknowledged them all, whoever is online. The receivers it is for are those
    /// of `protocol.wait` when it names them (`--to`), anybody otherwise. Needs
    /// MQTT 5 (3.1.1 has no expiry: refused as a usage error). See PROTOCOL.md 17.
    pub hold: Option<std::time::Duration>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            chunk_size: ChunkSize::Auto,
            protocol: proto::SenderConfig::default(),
            concurrency: DEFAULT_CONCURRENCY,
            in_flight_bytes: DEFAULT_IN_FLIGHT_BYTES,
            compress: proto::wire::Compression::None,
            window_bytes: DEFAULT_WINDOW_BYTES,
            eager_bytes: 4 << 20,
            sign: None,
            encrypt_to: Vec::new(),
            from: String::new(),
            hold: None,
        }
    }
}

/// A file to send, and the name receivers will give it.
///
/// Made from a path (`&str`, `String`, `&Path`, `PathBuf`) the name is the path's
/// file name; [`SendFile::named`] sends it under another name, for a device that
/// writes to temporary files.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SendFile {
    /// Where the file is.
    pub path: PathBuf,
    /// The name to send instead of the path's file name. Receivers sanitize
    /// whatever they get (see [`crate::sanitize_file_name`]).
    pub name: Option<String>,
    /// The file's SHA-256 when it is already known (a [`crate::spool::Spool`] hashed
    /// it as it was written), so that the send does not read it twice. It must be
    /// right: a wrong one fails at every receiver as an integrity error.
    pub sha256: Option<[u8; 32]>,
    /// A stream still being copied into `path` ([`crate::spool::Spool::send_stream`]):
    /// sent as a stream (protocol version 6) whose chunks go out as they are
    /// copied, and whose size is known at the end. `None` for a file.
    pub stream: Option<tokio::sync::watch::Receiver<crate::spool::Filled>>,
}

impl SendFile {
    /// The file at `path`, under its own name.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SendFile { path: path.into(), name: None, sha256: None, stream: None }
    }

    /// The file at `path`, under `name`.
    pub fn named(path: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        SendFile { path: path.into(), name: Some(name.into()), sha256: None, stream: None }
    }

    /// The same file, whose SHA-256 is already known to be `sha256` (see
    /// [`SendFile::sha256`]).
    pub fn with_sha256(mut self, sha256: [u8; 32]) -> Self {
        self.sha256 = Some(sha256);
        self
    }
}

impl From<PathBuf> for SendFile {
    fn from(p: PathBuf) -> Self {
        SendFile::new(p)
    }
}

impl From<&PathBuf> for SendFile {
    fn from(p: &PathBuf) -> Self {
        SendFile::new(p)
    }
}

impl From<&Path> for SendFile {
    fn from(p: &Path) -> Self {
        SendFile::new(p)
    }
}

impl From<&str> for SendFile {
    fn from(p: &str) -> Self {
        SendFile::new(p)
    }
}

impl From<String> for SendFile {
    fn from(p: String) -> Self {
        SendFile::new(p)
    }
}

/// What a send reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendEvent {
    /// Connected to the broker, at the start or again after a loss.
    Connected,
    /// The connection broke; it is being retried with backoff.
    Disconnected {
        /// What went wrong.
        reason: String,
    },
    /// A file's manifest is out; receivers may join.
    Started {
        /// The file.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
        /// Its size in bytes; for a stream, whose size is known only at its end,
        /// [`proto::wire::UNKNOWN_SIZE`](crate::proto::wire::UNKNOWN_SIZE).
        size: u64,
        /// The chunk size settled for it.
        chunk_size: u32,
    },
    /// A stream's end was read: its size is known now (it was
    /// [`proto::wire::UNKNOWN_SIZE`](crate::proto::wire::UNKNOWN_SIZE) in
    /// [`SendEvent::Started`]).
    StreamEnded {
        /// The stream's spool.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
        /// Its size in bytes.
        size: u64,
    },
    /// With [`ChunkSize::Auto`]: chunks of `chunk_size` do not get through this
    /// broker (the connection broke after each, or rounds repaired nothing while
    /// none arrived). The transfer was abandoned, and the file starts again as a new
    /// transfer with chunks of `retry_with` bytes: a [`SendEvent::Started`] follows.
    ChunkSizeLowered {
        /// The file.
        path: PathBuf,
        /// The abandoned transfer.
        transfer: TransferId,
        /// Its chunk size.
        chunk_size: u32,
        /// The chunk size tried next.
        retry_with: u32,
    },
    /// A receiver accepted the file.
    ReceiverJoined {
        /// The file.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
        /// Who.
        receiver: ReceiverId,
        /// Bytes it already had from an earlier attempt.
        held_bytes: u64,
    },
    /// A receiver holds more of the file.
    Progress {
        /// The file.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
        /// Who.
        receiver: ReceiverId,
        /// Bytes it holds.
        bytes: u64,
        /// The file's size ([`proto::wire::UNKNOWN_SIZE`](crate::proto::wire::UNKNOWN_SIZE)
        /// for a stream until its end is read).
        total: u64,
    },
    /// A receiver has the whole file and confirmed its SHA-256.
    ReceiverComplete {
        /// The file.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
        /// Who.
        receiver: ReceiverId,
    },
    /// A receiver stored the file under another name than the one sent (a
    /// [`SendEvent::ReceiverComplete`] follows).
    StoredAs {
        /// The file.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
        /// Who.
        receiver: ReceiverId,
        /// The name the receiver gave it (untrusted: print it escaped).
        name: String,
        /// Why.
        change: proto::NameChange,
        /// What the receiver changed, for people, or empty (untrusted).
        detail: String,
    },
    /// A receiver refused the file, gave up, or stopped answering.
    ReceiverFailed {
        /// The file.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
        /// Who.
        receiver: ReceiverId,
        /// Its reason; `None` when it stopped answering.
        reason: Option<RejectReason>,
    },
    /// A receiver holds the offer in its queue: all its transfer slots are taken.
    /// The send waits for it, within its timeout.
    Queued {
        /// The file.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
        /// Who.
        receiver: ReceiverId,
        /// Place in its queue, 1 for the head.
        position: u32,
    },
    /// A receiver refused the offer for now (busy, queue full); it is offered again
    /// after `retry_in`, until the timeout.
    Retrying {
        /// The file.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
        /// Who.
        receiver: ReceiverId,
        /// Why it refused.
        reason: RejectReason,
        /// When the offer goes out again.
        retry_in: Duration,
    },
    /// The receivers waited for have the file.
    Finished {
        /// The file.
        path: PathBuf,
        /// Its transfer id.
        transfer: TransferId,
    },
    /// The file could not be sent. [`Handle::wait`] returns the first such error.
    Failed {
        /// The file.
        path: PathBuf,
        /// Its transfer id, if it got that far.
        transfer: Option<TransferId>,
        /// The class of the error.
        kind: ErrorKind,
        /// The error's message.
        message: String,
    },
}

/// What a successful send did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// Every file, in the order given.
    pub files: Vec<SentFile>,
}

/// One file that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentFile {
    /// The file.
    pub path: PathBuf,
    /// Its transfer id.
    pub transfer: TransferId,
    /// The receivers that confirmed it.
    pub receivers: Vec<ReceiverId>,
    /// The file's chunk count.
    pub chunks: u32,
    /// Chunk publishes by this send, repairs included: `chunks` when nothing was
    /// lost and nothing was held already, fewer when receivers resumed.
    pub transmissions: u32,
    /// The file's bytes in those chunk publishes...
    pub data_bytes: u64,
    /// ...and what they took on the wire: fewer when compressed
    /// ([`SendOptions::compress`]), never more. Chunk headers not counted.
    pub wire_bytes: u64,
    /// Held at the broker ([`SendOptions::hold`]) until this time, in milliseconds
    /// since the Unix epoch; `receivers` are those that confirmed before the send
    /// ended. `None` for a live transfer.
    pub held_until_ms: Option<i64>,
}

/// A running send.
pub type SendHandle = Handle<SendEvent, SendReport>;
