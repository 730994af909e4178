//! Errors, sorted into a few kinds so that a program can map them to exit codes.
//!
//! Messages are lowercase and short, and never repeat their cause: a variant with a
//! `#[source]` leaves the cause out of its own message, so printing the chain
//! (`error: cannot reach broker 127.0.0.1:1883: connection refused`) shows each part
//! once.

use std::io;
use std::path::PathBuf;

use crate::proto::receiver::ReceiveFailure;
use crate::proto::sender::SendFailure;
use crate::proto::{AbortReason, ReceiverId, RejectReason};

/// The class of an [`Error`], for a CLI's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No receiver answered, or too few did.
    NoReceiver,
    /// A receiver refused the file or gave up on it.
    Rejected,
    /// A SHA-256 did not match: the bytes that arrived are not the bytes sent.
    Integrity,
    /// The transfer broke down after it started: a receiver or the sender went
    /// silent, or chunks stopped getting through.
    Transfer,
    /// The broker could not be reached, or refused the connection (bad credentials,
    /// not authorized, TLS failure).
    Broker,
    /// A bad URL, option or argument: fixing the invocation fixes it.
    Usage,
    /// A local file system error.
    Io,
    /// The caller cancelled.
    Cancelled,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A URL, option or argument is unusable; the message says which and why.
    #[error("{0}")]
    Usage(String),
    /// An explicit chunk size does not fit the broker's maximum packet size.
    #[error("chunk size {chunk_size} is too large for the broker: its maximum packet size of {max_packet} bytes allows chunks of at most {max_chunk} bytes")]
    ChunkTooLarge {
        /// The chunk size asked for.
        chunk_size: u32,
        /// The broker's Maximum Packet Size from its CONNACK.
        max_packet: u32,
        /// The largest chunk that fits.
        max_chunk: u32,
    },
    /// The broker could not be reached or the connection failed (network, DNS, TLS).
    #[error("cannot reach broker {addr}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// The last failure.
        #[source]
        source: ConnectError,
    },
    /// The broker answered the CONNECT with a refusal.
    #[error("broker {addr} refused the connection: {reason}")]
    Refused {
        /// `host:port`.
        addr: String,
        /// The broker's reason, e.g. `bad user name or password`.
        reason: String,
    },
    /// The connection broke and the broker stayed unreachable for longer than the
    /// broker timeout ([`crate::Config::broker_timeout`]).
    #[error("broker {addr} unreachable for {secs} s (last error: {last})")]
    BrokerLost {
        /// `host:port`.
        addr: String,
        /// The broker timeout, in seconds.
        secs: u64,
        /// The last failure to connect, in words.
        last: String,
    },
    /// Too few receivers answered the manifest within the join timeout.
    #[error("no receiver answered for {}: {joined} of {wanted} joined", path.display())]
    NoReceiver {
        /// The file being sent.
        path: PathBuf,
        /// How many receivers joined.
        joined: usize,
        /// How many were waited for.
        wanted: usize,
    },
    /// The timeout ended while a receiver still held the file in its queue of
    /// waiting offers: nobody took it.
    #[error("{}: receiver {receiver} still had it queued (position {position}) when the timeout ended", path.display())]
    StillQueued {
        /// The file being sent.
        path: PathBuf,
        /// Who.
        receiver: ReceiverId,
        /// Its last place in the queue.
        position: u32,
    },
    /// A receiver refused the file or gave up on it.
    #[error("receiver {receiver} rejected {}: {reason}{}", path.display(), detail_suffix(detail))]
    Rejected {
        /// The file being sent.
        path: PathBuf,
        /// Who.
        receiver: ReceiverId,
        /// Why.
        reason: RejectReason,
        /// What the receiver saw (an OS error text), as it said it, or empty.
        /// Untrusted: printed escaped.
        detail: String,
    },
    /// A SHA-256 did not match.
    #[error("integrity check failed for {}: {detail}", path.display())]
    Integrity {
        /// The file sent or received.
        path: PathBuf,
        /// What did not match.
        detail: String,
    },
    /// The transfer broke down after it started.
    #[error("transfer of {} failed: {cause}", path.display())]
    Transfer {
        /// The file sent or received.
        path: PathBuf,
        /// What happened.
        cause: TransferFailure,
    },
    /// A file system operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done: `read`, `write`, `create`, `rename`, ...
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The operation was cancelled through its cancellation token.
    #[error("cancelled")]
    Cancelled,
    /// A background task ended without saying why (a bug in this crate).
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A background task panicked (a bug in this crate).
    #[error("internal error: the {task} task panicked: {message}")]
    Panicked {
        /// Which task.
        task: &'static str,
        /// The panic's message, when it had one.
        message: String,
    },
}

/// Why a transfer that had started broke down: the state machine's own reason, or
/// what the runtime saw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferFailure {
    /// The sending state machine ended it: a receiver stopped answering, or rounds
    /// stopped making progress.
    #[error(transparent)]
    Send(SendFailure),
    /// The receiving state machine ended it: the sender went silent, or a local
    /// failure.
    #[error(transparent)]
    Receive(ReceiveFailure),
    /// The sender aborted the file (a receive that takes one file ends with it).
    #[error("the sender aborted {}: {}", crate::name::escape(name), aborted_why(*reason))]
    SenderAborted {
        /// The file's name, as the receiver would have stored it.
        name: String,
        /// The sender's reason.
        reason: AbortReason,
    },
    /// No chunk got through: the connection broke each time right after chunks went
    /// out, as when a broker cuts publishes over its size limit.
    #[error(
        "no chunk got through: the connection broke {breaks} times right after chunks of {} ({chunk_size} bytes) went out; \
         the broker may drop messages this large: try a smaller --chunk-size, or auto",
        crate::autosize::human(*chunk_size)
    )]
    NothingGotThrough {
        /// Connection breaks counted.
        breaks: u32,
        /// The chunk size that did not get through.
        chunk_size: u32,
    },
}

fn aborted_why(reason: AbortReason) -> String {
    match reason {
        AbortReason::Cancelled => "it was cancelled".to_owned(),
        AbortReason::Failed => "it gave up".to_owned(),
        AbortReason::Finished => "it finished with other receivers".to_owned(),
        AbortReason::Superseded => "it started the file again with smaller chunks".to_owned(),
        other => format!("reason code {}", other.code()),
    }
}

/// The message of a panic's payload: the text given to `panic!`, when it had one.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(|| "no message".to_owned(), |s| (*s).to_owned()),
    }
}

impl Error {
    /// A task of ours that did not finish: cancelled (the runtime is shutting
    /// down), or `task` panicked, with the panic's message.
    pub(crate) fn joined(task: &'static str, e: tokio::task::JoinError) -> Error {
        if e.is_cancelled() {
            Error::Cancelled
        } else {
            Error::Panicked { task, message: panic_message(e.into_panic()) }
        }
    }

    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) | Error::ChunkTooLarge { .. } => ErrorKind::Usage,
            Error::Unreachable { .. } | Error::Refused { .. } | Error::BrokerLost { .. } => ErrorKind::Broker,
            Error::NoReceiver { .. } | Error::StillQueued { .. } => ErrorKind::NoReceiver,
            Error::Rejected { .. } => ErrorKind::Rejected,
            Error::Integrity { .. } => ErrorKind::Integrity,
            Error::Transfer { .. } | Error::Internal(_) | Error::Panicked { .. } => ErrorKind::Transfer,
            Error::Io { .. } => ErrorKind::Io,
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }

    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }
}

/// Why a connection attempt failed, at the lowest level reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A network error: refused, reset, timed out, name not resolved.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The TLS handshake or its configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The MQTT conversation went wrong (a protocol error, or the broker closed it).
    #[error("mqtt: {0}")]
    Protocol(String),
}

/// ": detail", escaped (a receiver's text is untrusted), or nothing.
fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {}", detail.escape_debug())
    }
}
