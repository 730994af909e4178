//! mqft: move large files over an MQTT broker, on tokio and rumqttc.
//!
//! The protocol lives in [`proto`] (the `mqft-proto` crate), sans-IO: state machines
//! that take input and time and hand back messages to publish. This crate is the
//! runtime around them: the MQTT connection, the files, the clock, and an API a
//! device program can call without any command line.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mqft::Error> {
//! use mqft::{Client, Config, ReceiveOptions, SendOptions};
//!
//! let client = Client::new(Config::from_url("mqtt://user:secret@127.0.0.1:1883")?);
//!
//! // On the device: send two files, watching progress.
//! let mut send = client.send(["/data/cam-1.jpg", "/data/log.txt"], SendOptions::default());
//! while let Some(event) = send.next_event().await {
//!     println!("{event:?}");
//! }
//! let report = send.wait().await?;
//! println!("sent {} files", report.files.len());
//!
//! // At the other end: receive one file, then stop.
//! let mut opts = ReceiveOptions::default();
//! opts.once = true;
//! let received = client.receive("/srv/incoming", opts).wait().await?;
//! println!("got {:?}", received.files[0].path);
//! # Ok(()) }
//! ```
//!
//! # The data path
//! 1. **File to manifest** ([`send`]): the sender hashes the file (SHA-256,
//!    streaming), settles the chunk size (from the broker's Maximum Packet Size
//!    under MQTT 5; see [`ChunkSize`]) and builds the manifest: name, size, chunk
//!    size, hash. The transfer id is derived from all of these, so the same file
//!    sent again gets the same id and resumes.
//! 2. **Chunks to topics**: the manifest goes out retained on
//!    `<prefix>/<id>/manifest`; each chunk on `<prefix>/<id>/chunk/<n>` with its
//!    CRC32, read from the file only when the state machine asks for it and the
//!    connection has room for it.
//! 3. **Broker**: any MQTT 3.1.1 or 5 broker. Receivers keep a persistent session,
//!    so chunks published during a short disconnect wait for them there.
//! 4. **Receiver** ([`receive`]): sees the manifest on `<prefix>/+/manifest`, checks
//!    size and name ([`sanitize_file_name`]), and subscribes to the chunks. Acks on
//!    `<prefix>/<id>/ack/<receiver>` grant the sender credit and, at the end of each
//!    round, list what is missing, which the sender sends again.
//! 5. **`.part` file** (`store`): each chunk is written at its offset into
//!    `<id>.part` in the receiver's state folder (`.mqft/part/` in the output
//!    directory by default), with the resume state beside it, saved every few chunks.
//! 6. **Hash**: chunks are hashed in file order as they arrive (read back only when
//!    they came out of order); the SHA-256 must match the manifest's.
//! 7. **Final name**: the `.part` is synced and renamed to `<name>`, never over an
//!    existing file unless asked; only then does the receiver report `Complete`,
//!    and records the transfer in the state folder's `completed.log`.
//!
//! # Tasks
//! Each [`Client::send`] or [`Client::receive`] runs as one engine task that owns its
//! state machines, plus two tasks for its connection (module `conn`): one polls
//! the rumqttc event loop and does nothing else; the other feeds it requests.
//! Nothing ever waits on a task that might be waiting on it: `conn`'s docs say why
//! that needs the split. A receiver writes each transfer's file on a thread of its
//! own, in order (module `writer`); other file work runs on tokio's blocking threads.
//! The MQTT 3.1.1 / 5 differences stay in one module, `mqtt`.
//!
//! # Modules, in the order data flows
//! [`config`] (settings, URLs, chunk size), [`spool`] (a stream of unknown size
//! made a file, for `send -`), [`send`], `conn` and `mqtt` (the
//! connection, internal; `tls` builds the rustls settings rumqttc's simple ones
//! cannot express), [`receive`], [`name`] (untrusted names), `store` (the
//! receiver's files, internal; its layout is described under [`receive`]), and
//! [`error`]. [`handle`] is the caller's end of a running send or receive.

#![forbid(unsafe_code)]

pub use mqft_proto as proto;

mod autosize;
pub mod config;
mod conn;
pub mod error;
pub mod handle;
mod held;
pub mod keys;
mod mqtt;
pub mod name;
mod pace;
mod packet;
pub mod receive;
mod sealing;
pub mod send;
pub mod spool;
pub mod status;
mod store;
mod tls;
pub mod tree;
mod trusted;
mod writer;

use std::path::PathBuf;

pub use config::{ChunkSize, Config, Credentials, MqttVersion, Tls};
pub use error::{ConnectError, Error, ErrorKind, TransferFailure};
pub use handle::Handle;
pub use name::{sanitize_file_name, sanitize_path, NameError, SafeName, SafePath};
pub use receive::{
    OnConflict, ReceiveEvent, ReceiveHandle, ReceiveOptions, ReceiveReport, ReceivedFile, VerifiedFile,
    UNKNOWN_SENDER_DIR,
};
pub use send::{SendEvent, SendFile, SendHandle, SendOptions, SendReport, SentFile};
pub use status::HeldTransfer;
pub use tls::TlsVersion;
pub use tokio_util::sync::CancellationToken;

/// The entry point: broker settings, from which sends and receives start.
///
/// Each send or receive opens its own connection: a receiver keeps a persistent
/// session under a stable client id, a sender a clean one. Clones share what
/// [`ChunkSize::Auto`] learned about the broker's message size (see [`ChunkSize`]).
#[derive(Debug, Clone)]
pub struct Client {
    config: Config,
    /// Chunk sizes that got through, per broker, for `auto`.
    sizes: autosize::SizeMemory,
}

impl Client {
    /// A client for the broker `config` describes. Nothing connects yet.
    pub fn new(config: Config) -> Self {
        Client { config, sizes: autosize::SizeMemory::default() }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sends files (paths, or [`SendFile`]s to choose the names) to the receivers
    /// listening under the configured prefix: up to
    /// [`SendOptions::concurrency`] at once over one connection. The returned handle
    /// yields [`SendEvent`]s, cancels, and gives the result: a [`SendReport`] once
    /// every file arrived, or the first file's error.
    ///
    /// Must be called within a tokio runtime.
    pub fn send<I, F>(&self, files: I, opts: SendOptions) -> SendHandle
    where
        I: IntoIterator<Item = F>,
        F: Into<SendFile>,
    {
        send::spawn(self.config.clone(), files.into_iter().map(Into::into).collect(), opts, self.sizes.clone())
    }

    /// Receives files into `out_dir` (which must exist) until cancelled, or until
    /// the first transfer ends with [`ReceiveOptions::once`]. Cancelling a receive is
    /// its normal end: the result is then the [`ReceiveReport`] of what arrived.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), mqft::Error> {
    /// let client = mqft::Client::new(mqft::Config::new("127.0.0.1", 1883));
    /// let mut rx = client.receive("/srv/incoming", mqft::ReceiveOptions::default());
    /// // Stop after an hour; a program would wire this to its signal handler.
    /// let stop = rx.cancellation_token();
    /// tokio::spawn(async move {
    ///     tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    ///     stop.cancel();
    /// });
    /// while let Some(event) = rx.next_event().await {
    ///     if let mqft::ReceiveEvent::Completed(file) = event {
    ///         println!("{}", file.path.display());
    ///     }
    /// }
    /// rx.wait().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Must be called within a tokio runtime.
    pub fn receive(&self, out_dir: impl Into<PathBuf>, opts: ReceiveOptions) -> ReceiveHandle {
        receive::spawn(self.config.clone(), out_dir.into(), opts)
    }

    /// The transfers held at the broker under the configured prefix
    /// ([`SendOptions::hold`]) and who confirmed each, from their retained
    /// messages; waits at most `wait` for the broker to hand them over (see
    /// [`status`]). Soonest to expire first.
    pub async fn status(
        &self,
        wait: std::time::Duration,
        cancel: CancellationToken,
    ) -> Result<Vec<HeldTransfer>, Error> {
        status::status(self.config.clone(), wait, cancel).await
    }
}

/// The protocol's clock: tokio's, so that tests can pause and advance it.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// A protocol deadline as a tokio instant.
pub(crate) fn to_tokio(t: std::time::Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(t)
}
