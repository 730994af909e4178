//! The receiver's public face: its options, its events and its report.

use super::*;

/// [`ReceiveOptions::forget_after`] by default: 30 days.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(30 * 86_400);
/// [`ReceiveOptions::prune_after`] by default: 3 days.
pub const DEFAULT_PRUNE_AFTER: Duration = Duration::from_secs(3 * 86_400);

/// How old a signature a receiver with trusted keys accepts by default: a day,
/// for senders that queue files while offline; the replay memory covers the
/// window.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// How to receive.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReceiveOptions {
    /// This receiver's name in ack topics. By default `<host>-<6 hex>`, the hex
    /// from a hash of the canonical output directory: unique per host and
    /// directory, the same after a restart (see [`default_receiver_id`]). A pool
    /// member's default adds 8 hex digits of its own ([`pool::member_id`]).
    pub receiver_id: Option<ReceiverId>,
    /// The prefixes to receive under, each possibly with `+` levels
    /// (`site/+/cams`); empty for the configuration's one prefix. Each transfer is
    /// answered under the concrete prefix its manifest came on.
    pub prefixes: Vec<PrefixPattern>,
    /// Refuse files larger than this many bytes ([`RejectReason::TooLarge`]).
    pub max_size: Option<u64>,
    /// Keep at most this many transfers open. Offers past it wait in a queue
    /// (answered [`proto::Ack::Queued`]) and are taken, oldest first, as transfers end.
    pub max_concurrent: usize,
    /// The most offers waiting for a slot; past it (or [`ReceiveOptions::queue_bytes`])
    /// an offer is refused with [`RejectReason::QueueFull`] and its sender retries.
    pub queue: usize,
    /// The most bytes of manifests the queue holds.
    pub queue_bytes: usize,
    /// What to do when a different file has the name an offered file would get
    /// (the same bytes under that name are "already have", whatever policy): by
    /// default keep both, the new one under a numbered name.
    pub on_conflict: OnConflict,
    /// Put each sender's files in a directory of its own, named after the
    /// manifest's sender name ([`UNKNOWN_SENDER_DIR`] for an unnamed sender),
    /// created on first use; a symlink or a file planted at that name makes the
    /// offer fail, it is never followed.
    pub per_sender: bool,
    /// Stop after the first file that arrives (or is found already here). A
    /// transfer that fails for good here (SHA-256 mismatch, local I/O error, its
    /// sender cancelled it) stops it too, and [`Handle::wait`] returns that error
    /// ([`Error::Transfer`] "the sender aborted NAME" for a cancelled sender). A
    /// sender that gives up or goes silent does not: that is often a stale retained
    /// manifest, and a sender that tries again resumes.
    pub once: bool,
    /// The protocol's tunables: ack cadence, idle and give-up timeouts.
    pub protocol: proto::ReceiverConfig,
    /// Save the resume state after this many new chunks...
    pub checkpoint_chunks: u32,
    /// ...or this long after the first unsaved chunk, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Accept only transfers signed by one of these keys (`--trust`); empty
    /// accepts unsigned ones. See [`crate::keys`] and docs/PROTOCOL.md.
    pub trust: Vec<crate::keys::PublicKey>,
    /// With `trust`: refuse signatures older than this (a replay window).
    pub max_age: Duration,
    /// The key encrypted transfers are opened with (`--identity`); without it
    /// they are refused ([`RejectReason::Encrypted`]).
    pub identity: Option<crate::keys::SecretKey>,
    /// The state folder (see `store`): by default `.mqft` in the output
    /// directory. Elsewhere, the output directory holds only received files.
    pub state_dir: Option<PathBuf>,
    /// Forget a completed transfer this long after it completed (or was last
    /// verified by a hash); `None` keeps them all. A transfer forgotten and
    /// offered again finds its file there and is refused as existing.
    pub forget_after: Option<Duration>,
    /// Remove the partial files of transfers that have not advanced for this
    /// long (checked at start and every hour, or every `prune_after` if less),
    /// logging each; `None` keeps them. Transfers open in this receive are
    /// never removed.
    pub prune_after: Option<Duration>,
    /// Share the offers under the prefixes with the other receivers of this pool
    /// (`--pool NAME`): each transfer is taken by one member. See [`pool`]; the
    /// name is checked by [`pool::check_pool_name`].
    pub pool: Option<String>,
    /// Subscribe to the chunks of every transfer under the prefixes from the start
    /// (`<prefix>/+/chunk/+`), so that a file's first chunks, which senders send
    /// before anyone answered, arrive with no round trip (PROTOCOL.md 3.6, 8.2).
    /// The price: chunks of transfers this receiver does not take (addressed to
    /// others, refused, queued) reach it too, and are dropped. Off
    /// (`--no-early-chunks`), a transfer's chunks are subscribed to once it is
    /// taken, which suits a receiver on a metered link under a prefix that carries
    /// other receivers' files. Pool members always work so: a shared
    /// subscription would split one transfer's chunks among them.
    pub early_chunks: bool,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            receiver_id: None,
            prefixes: Vec::new(),
            max_size: None,
            max_concurrent: 16,
            queue: 256,
            // 256 manifests of up to 8 KiB would be 2 MiB; the common one is ~100 bytes.
            queue_bytes: 1 << 20,
            on_conflict: OnConflict::default(),
            per_sender: false,
            once: false,
            protocol: proto::ReceiverConfig::default(),
            checkpoint_chunks: 64,
            checkpoint_interval: Duration::from_secs(1),
            trust: Vec::new(),
            max_age: DEFAULT_MAX_AGE,
            identity: None,
            state_dir: None,
            forget_after: Some(DEFAULT_FORGET_AFTER),
            prune_after: Some(DEFAULT_PRUNE_AFTER),
            pool: None,
            early_chunks: true,
        }
    }
}

/// The directory of an unnamed sender's files with [`ReceiveOptions::per_sender`].
/// A named sender could call itself that too: sender names are claims.
pub const UNKNOWN_SENDER_DIR: &str = "_unknown";

/// What a receive reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiveEvent {
    /// Connected to the broker (again, after a loss) as `receiver`.
    Connected {
        /// This receiver's id in ack topics.
        receiver: ReceiverId,
    },
    /// The connection broke; it is being retried with backoff.
    Disconnected {
        /// What went wrong.
        reason: String,
    },
    /// A sender offers a file.
    Offered {
        /// The transfer id.
        transfer: TransferId,
        /// The name as the sender gave it: untrusted, not yet sanitized.
        name: String,
        /// Its size in bytes ([`proto::wire::UNKNOWN_SIZE`](crate::proto::wire::UNKNOWN_SIZE)
        /// for a stream, whose size comes at its end).
        size: u64,
        /// The sender's name from the manifest (claimed, not proven), or empty.
        sender: String,
    },
    /// Every transfer slot is taken: the offer waits in the queue at `position`
    /// (1 for the head), and the sender is told so.
    Queued {
        /// The transfer id.
        transfer: TransferId,
        /// The name as the sender gave it: untrusted, not yet sanitized.
        name: String,
        /// Place in the queue.
        position: u32,
        /// The sender's name from the manifest, or empty.
        sender: String,
    },
    /// The offer is refused; the sender is told why.
    Rejected {
        /// The transfer id.
        transfer: TransferId,
        /// The name as the sender gave it.
        name: String,
        /// Why.
        reason: RejectReason,
        /// What the receiver saw, in words ("unsigned transfer"), or empty.
        detail: String,
        /// The sender's name from the manifest, or empty.
        sender: String,
    },
    /// The offer is accepted; chunks go to a partial file in the state folder.
    Accepted {
        /// The transfer id.
        transfer: TransferId,
        /// Where the file will be once complete.
        path: PathBuf,
        /// Its size in bytes ([`proto::wire::UNKNOWN_SIZE`](crate::proto::wire::UNKNOWN_SIZE)
        /// for a stream, whose size comes at its end).
        size: u64,
        /// Bytes already held from an earlier attempt.
        resumed_bytes: u64,
        /// The sender's name from the manifest, or empty.
        sender: String,
    },
    /// More of a file is in.
    Progress {
        /// The transfer id.
        transfer: TransferId,
        /// Where the file will be.
        path: PathBuf,
        /// Bytes held.
        bytes: u64,
        /// The file's size ([`proto::wire::UNKNOWN_SIZE`](crate::proto::wire::UNKNOWN_SIZE)
        /// for a stream until its end of round brought it).
        total: u64,
    },
    /// A file arrived, its SHA-256 matched, and it has its final name.
    Completed(VerifiedFile),
    /// A file offered again is already here, complete (its SHA-256 the one the file
    /// on disk was found to have); the sender is told so.
    AlreadyComplete(VerifiedFile),
    /// A signed offer checked out against a trusted key (`--trust`); sent just
    /// before its `Accepted`.
    Signed {
        /// The transfer id.
        transfer: TransferId,
        /// The signer, as the receiver's trusted-keys entry names it, and the
        /// key's fingerprint: never a name the sender chose.
        signer: String,
    },
    /// An accepted transfer failed. Unless the bytes were bad, its partial file and
    /// state stay for a resume when the sender tries again.
    Failed {
        /// The transfer id.
        transfer: TransferId,
        /// Where the file would have been.
        path: PathBuf,
        /// Why.
        failure: ReceiveFailure,
    },
}

/// A file that is here under its final name and checked out: what
/// [`ReceiveEvent::Completed`] and [`ReceiveEvent::AlreadyComplete`] say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedFile {
    /// The transfer id.
    pub transfer: TransferId,
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256: the manifest's, which the bytes on disk match.
    pub sha256: [u8; 32],
    /// The sender's name from the manifest, or empty.
    pub sender: String,
    /// Why `path` has another name than the manifest's (which the sender is
    /// told), or `None`.
    pub change: Option<NameChange>,
}

/// What a receive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiveReport {
    /// The files received (or found already complete), in order.
    pub files: Vec<ReceivedFile>,
}

/// One file received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedFile {
    /// The transfer id.
    pub transfer: TransferId,
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes already held when this run accepted it (resumed from saved state).
    pub resumed_bytes: u64,
    /// Bytes read back from the partial file to hash chunks that had arrived out of
    /// order; 0 when every chunk came in order or a resume's hash state covered it.
    pub read_back_bytes: u64,
    /// Chunk messages dropped while the file's writes were behind and held more
    /// than its share of the receive budget that other files needed; the sender
    /// sent them again.
    pub over_share_drops: u64,
    /// Chunk messages dropped for a bad CRC, length or index.
    pub corrupt_chunks: u64,
    /// Chunk messages that repeated a chunk already held.
    pub duplicate_chunks: u64,
}

/// A running receive.
pub type ReceiveHandle = Handle<ReceiveEvent, ReceiveReport>;
