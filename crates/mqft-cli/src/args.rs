//! Command-line flags, and turning them into the library's settings.
//!
//! Broker flags follow `mosquitto_pub`/`mosquitto_sub` (`-h -p -u -P -i -q -V`,
//! `--cafile --cert --key`), so `-h` is the host and help is `--help` only. Secrets can
//! come from the environment or a file, so they need not appear in process arguments,
//! and `--help` names the variables that can hold one (`MQFT_BROKER`, `MQFT_USERNAME`,
//! `MQFT_PASSWORD`) without showing their values.
//!
//! Over 600 lines: the clap definitions of every command and flag with their help
//! text, and next to each its conversion to the library's settings; split, a
//! flag's help and what it does would sit in two files. Its tests are at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand};
use mqft::proto::{self, PrefixPattern, ReceiverId, Wait};
use mqft::{ChunkSize, Config, Credentials, MqttVersion};

/// Move large files over an MQTT broker: chunked, checked (CRC32 per chunk, SHA-256
/// per file), repaired, resumable.
#[derive(Debug, Parser)]
#[command(name = "mqft", version, disable_help_flag = true, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Print help.
    #[arg(long, action = ArgAction::Help, global = true)]
    help: Option<bool>,

    /// `mqft -h` prints help too, as `mosquitto_pub -h` does not but users type
    /// anyway. Only before a subcommand: after one, `-h` is the broker host.
    #[arg(short = 'h', action = ArgAction::Help, hide = true)]
    short_help: Option<bool>,

    /// Settings from this TOML file (see README "Run it as a service"); flags and
    /// environment variables override it. Default: $XDG_CONFIG_HOME/mqft/mqft.toml,
    /// else /etc/mqft/mqft.toml, whichever exists first.
    #[arg(long, global = true, env = "MQFT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Append everything this program writes to stderr (logs, notes, errors, the
    /// output of --exec commands) to this file instead.
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
}

/// The smallest `-k`. The library raises a shorter keep-alive to 5 s (mqtt.rs):
/// refusing it says so instead of silently running with another value.
pub const MIN_KEEPALIVE: u64 = 5;
/// The largest `-k`: MQTT carries the keep-alive in 16 bits.
pub const MAX_KEEPALIVE: u64 = 65535;

/// Shown under `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    internal error
  2    usage error (bad flag, URL, option or file argument)
  3    broker unreachable (at first, or for --broker-timeout later), or it
       refused the connection (credentials, TLS)
  4    no receiver answered (send); nothing arrived before --timeout (receive)
  5    a receiver rejected the file (too large, bad name, exists, skipped, disk
       full, busy)
  6    integrity failure: a SHA-256 did not match
  7    the transfer broke down: a peer went silent, or chunks stopped getting through
  8    local I/O error
  9    standard output closed before the whole file was written
       (receive --stdout into a pipe whose reader quit)
  130  interrupted (Ctrl-C)";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send files to the receivers listening under the prefix.
    #[command(disable_help_flag = true)]
    Send(SendArgs),
    /// Receive files into a directory.
    #[command(disable_help_flag = true)]
    Receive(ReceiveArgs),
    /// List the transfers held at the broker (`send --hold`) under the prefix,
    /// and who confirmed each so far; then exit.
    #[command(disable_help_flag = true)]
    Status(StatusArgs),
    /// Write a new Ed25519 key pair for signed transfers: the secret key to PATH
    /// (mode 0600), the public key to PATH.pub, which receivers --trust.
    #[command(disable_help_flag = true)]
    Keygen(KeygenArgs),
    /// See it work with no broker installed: starts an embedded broker, a receiver
    /// and a sender in this process, and moves a file (a 20 MiB test image if none
    /// is given).
    #[cfg(feature = "demo")]
    #[command(disable_help_flag = true)]
    Demo(DemoArgs),
    /// Print a shell completion script: `mqft completions bash > /etc/bash_completion.d/mqft`.
    #[command(disable_help_flag = true)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff): `mqft man | man -l -`; with --dir, write the
    /// pages of mqft and of each subcommand there.
    #[command(disable_help_flag = true)]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Seconds to wait, at most, for the broker to hand over what it holds
    /// (normally a round trip; see README "Offline receivers").
    #[arg(long, default_value_t = 5)]
    pub wait: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where the secret key goes; the public key goes to PATH.pub. Neither may
    /// exist.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// The name written after the public key, which receivers show as the signer
    /// (they may rename it in their trusted-keys file). Default: the host name.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write mqft.1, mqft-send.1, ... into this directory instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// How to reach the broker.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Broker URL: mqtt://[user[:pass]@]host[:port] or mqtts://... (TLS).
    #[arg(short = 'b', long, env = "MQFT_BROKER", hide_env_values = true, value_name = "URL")]
    pub broker: Option<String>,
    /// Broker host (overrides the URL's).
    #[arg(short = 'h', long, env = "MQFT_HOST")]
    pub host: Option<String>,
    /// Broker port (overrides the URL's).
    #[arg(short = 'p', long, env = "MQFT_PORT")]
    pub port: Option<u16>,
    /// User name.
    #[arg(short = 'u', long, env = "MQFT_USERNAME", hide_env_values = true)]
    pub username: Option<String>,
    /// Password. Prefer MQFT_PASSWORD or --password-file: a flag shows in `ps`.
    #[arg(short = 'P', long, env = "MQFT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Read the password from this file (first line). A file that cannot be read
    /// is a usage error (exit 2).
    #[arg(long, env = "MQFT_PASSWORD_FILE", value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// MQTT client id (default: random for senders, stable for receivers).
    #[arg(short = 'i', long = "id", value_name = "CLIENT_ID")]
    pub client_id: Option<String>,
    /// MQTT version: 5 (or mqttv5) or 311 (or mqttv311), as mosquitto_pub -V takes
    /// them. MQTT 3.1 (mqttv31) is not supported.
    #[arg(short = 'V', long = "mqtt-version", default_value = "5", value_name = "VERSION")]
    pub version: MqttVersion,
    /// CA certificates (PEM) to verify the broker with; turns TLS on.
    #[arg(long, value_name = "PATH")]
    pub cafile: Option<PathBuf>,
    /// Client certificate chain (PEM), for brokers that want one; needs --key.
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// A directory of CA certificates (PEM, one or more per file, any file names)
    /// to verify the broker with; turns TLS on.
    #[arg(long, value_name = "DIR")]
    pub capath: Option<PathBuf>,
    /// UNSAFE: do not verify the broker's certificate or host name; turns TLS on.
    /// The connection is encrypted, but anyone on the path can pose as the broker
    /// and read the files and the password. For a test broker with a self-made
    /// certificate only: prefer --cafile with its CA.
    #[arg(long)]
    pub insecure: bool,
    /// Speak only this TLS version: tlsv1.2 or tlsv1.3 (default: 1.3, else 1.2);
    /// turns TLS on.
    #[arg(long, value_name = "VERSION", value_parser = clap::value_parser!(mqft::TlsVersion))]
    pub tls_version: Option<mqft::TlsVersion>,
    /// Topic prefix the transfers live under. A receiver takes it repeated
    /// (`--prefix site1/cams --prefix site2/cams`) and with `+` for one whole level
    /// (`--prefix 'site/+/cams'`); a sender takes one, without wildcards.
    #[arg(long, env = "MQFT_PREFIX", default_value = "files", action = ArgAction::Append)]
    pub prefix: Vec<String>,
    /// Seconds to keep trying to reach the broker before giving up (exit 3).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// Once connected, seconds the broker may stay unreachable before giving up
    /// (exit 3). Default: 60 for send; a receive keeps retrying unless this is given.
    #[arg(long, value_name = "SECS")]
    pub broker_timeout: Option<u64>,
    /// MQTT keep-alive in seconds, 5 to 65535 (outside is a usage error): a dead
    /// connection is noticed within about one and a half of these.
    #[arg(short = 'k', long, default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(MIN_KEEPALIVE..=MAX_KEEPALIVE))]
    pub keepalive: u64,
    /// The most bytes per second to publish, control messages and MQTT headers
    /// included: bytes, or with k, m, g (binary: 512k is 524288). For a broker that
    /// limits each connection (AWS IoT Core: 512k) or a link paid by the byte.
    /// Default: no limit.
    #[arg(long, value_name = "BYTES", value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// The most publishes per second, control messages included (AWS IoT Core:
    /// 100). Default: no limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_publish_rate: Option<u32>,
}

/// How to report.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputArgs {
    /// One JSON object per line on stdout for every event, instead of progress bars.
    #[arg(long)]
    pub json: bool,
    /// No progress, only errors.
    #[arg(long, short = 's', conflicts_with = "json")]
    pub quiet: bool,
    /// Log protocol details to stderr (repeat for more).
    #[arg(long, short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The files to send; a directory is sent with everything under it, each file
    /// named by its path from the directory's parent (`photos/2026/a.jpg`). `-`
    /// alone reads standard input to its end, then sends it as --name (a file
    /// named `-` is `./-`).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// With `-`: the name standard input is sent under (`tar c dir | mqft send -
    /// --name dir.tar`); receivers sanitize it as any name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// QoS of chunk publishes: 0 or 1 (control messages always use 1).
    #[arg(short = 'q', long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Chunk size: auto (from the broker's limit under MQTT 5, halved while chunks do
    /// not get through), or bytes: 65536, 64k, 1m.
    #[arg(long, default_value = "auto")]
    pub chunk_size: ChunkSize,
    /// Chunks in flight that the slowest receiver has not acknowledged. By default
    /// 256, and no more than 64 MiB of chunks.
    #[arg(long)]
    pub window: Option<u32>,
    /// Bytes of chunks sent before any receiver answered (4m by default): a
    /// receiver already listening gets a file with no round trip first. 0 waits
    /// for a receiver, for a metered link where nobody may be listening.
    #[arg(long, value_name = "SIZE", default_value = "4m", value_parser = parse_size)]
    pub eager: u64,
    /// How many receivers must confirm each file.
    #[arg(short = 'n', long, default_value_t = 1, conflicts_with = "to")]
    pub receivers: usize,
    /// Send to these receivers only (by receiver id), and wait for each; repeatable.
    /// Receivers not listed ignore the transfer.
    #[arg(long, value_name = "RECEIVER_ID")]
    pub to: Vec<String>,
    /// Hold each file at the broker for this long (30m, 24h, 7d) for receivers
    /// that come online later, and exit once the broker holds it all, whoever is
    /// online: no receiver is needed. With --to it is held for those receivers
    /// until each confirmed, without for the first one. Needs MQTT 5; the broker
    /// keeps the whole file in memory meanwhile (README "Offline receivers").
    #[arg(long, value_name = "DURATION", value_parser = parse_hold)]
    pub hold: Option<Duration>,
    /// Follow symbolic links in a directory sent (`send DIR`); without it they are
    /// skipped, with a note.
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Seconds to wait for receivers to answer.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Files in flight at once, at most; fewer while those being sent are large
    /// (64 MiB in flight).
    #[arg(long, default_value_t = mqft::send::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Sign each file's manifest with this secret key (from `mqft keygen`):
    /// receivers that --trust its public key accept it.
    #[arg(long, value_name = "KEYFILE")]
    pub sign: Option<PathBuf>,
    /// Encrypt each file for this recipient's public key (mqft-ed25519:..., a .pub
    /// file, or a file of such lines); repeatable. The broker and other subscribers
    /// see only ciphertext, the name and metadata included; the recipient receives
    /// with --identity.
    #[arg(long, value_name = "PUBKEY_OR_FILE")]
    pub encrypt_to: Vec<String>,

    /// Compress chunks: zstd or none. Each chunk that zstd shrinks by at least
    /// 3 % goes compressed, the others raw (JPEG, video, archives), so nothing
    /// grows; the summary shows the saving. For text, logs and raw sensor data on
    /// a slow or metered link.
    #[arg(long, default_value = "none", value_name = "ALGO")]
    pub compress: proto::wire::Compression,

    /// This sender's name in every manifest, shown by receivers and usable as
    /// their directory (`receive --out 'DIR/{sender}'`): lowercase letters,
    /// digits, `_` and `-`, at most 64 (default: from the host name). Claimed,
    /// not proven.
    #[arg(long, env = "MQFT_FROM", value_name = "NAME")]
    pub from: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Directory to put files in. With `{sender}` as its last part
    /// (`/srv/in/{sender}`), each sender's files go to a directory of their own
    /// under the part before it, named after the sender (`_unknown` for a sender
    /// without a name), created as needed; a symlink there is never followed.
    #[arg(short = 'o', long, default_value = ".")]
    pub out: PathBuf,
    /// Exit after the first file.
    #[arg(long)]
    pub once: bool,
    /// With --once: write the file to standard output instead of a directory,
    /// only after its SHA-256 checked out (it is received into the state folder
    /// first, then removed). Everything else this prints goes to stderr.
    #[arg(long, requires = "once", conflicts_with_all = ["out", "exec"])]
    pub stdout: bool,
    /// Give up (exit 4) if no file has arrived after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Refuse files larger than this: bytes, or with k, m, g (binary units).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// What to do when a different file of the same name is there: rename
    /// (keep both, the new one as `name (1).ext`), overwrite, skip (keep the old
    /// one; the sender exits 5, "file exists, skipped") or fail (the sender exits
    /// 5, "file exists"). The same bytes under that name are "already have"
    /// whatever this says.
    #[arg(long, value_name = "POLICY", default_value = "rename", value_parser = parse_conflict)]
    pub on_conflict: mqft::OnConflict,
    /// Same as --on-conflict overwrite.
    #[arg(long, conflicts_with = "on_conflict")]
    pub overwrite: bool,
    /// This receiver's id in ack topics (default: `<host>-<6 hex>`, the hex from
    /// the output directory: unique per host and directory, stable across restarts).
    #[arg(long = "name", value_name = "RECEIVER_ID")]
    pub receiver_id: Option<String>,
    /// Transfers received at once; more wait in a queue (see --queue).
    #[arg(long, default_value_t = 16)]
    pub max_concurrent: usize,
    /// Offers that may wait for a free slot, first come first served; past it an
    /// offer is refused as "receiver queue full" and its sender retries.
    #[arg(long = "queue", value_name = "N", default_value_t = 256)]
    pub queue: usize,
    /// Run this shell command for each completed file, once (not again for a file
    /// offered again, nor after a restart, unless a crash cut it short); `{}` is the
    /// file's path, quoted. Its environment has MQFT_PATH, MQFT_SIZE, MQFT_SHA256,
    /// MQFT_TRANSFER and MQFT_SENDER (empty: not known yet).
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// --exec commands run at once; more wait their turn.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub exec_jobs: usize,
    /// Accept only files signed by this key: a public key (mqft-ed25519:...), a
    /// .pub file, or a file of such lines; repeatable. Unsigned files, other keys'
    /// signatures, changed manifests or chunks, and replays are refused.
    #[arg(long, value_name = "PUBKEY_OR_FILE")]
    pub trust: Vec<String>,
    /// With --trust: refuse signatures older than this many seconds, so that a
    /// captured transfer cannot be replayed later.
    #[arg(long, value_name = "SECS", default_value_t = 86400, requires = "trust")]
    pub max_age: u64,
    /// Open encrypted files with this secret key (from `mqft keygen`); without it
    /// they are refused.
    #[arg(long, value_name = "KEYFILE")]
    pub identity: Option<PathBuf>,
    /// Keep the receiver's state (partial files, the memory of received files,
    /// the --exec journal) here instead of in OUT/.mqft, so that OUT holds only
    /// received files.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Forget a received file this long after it arrived (then a sender offering
    /// it again is told it exists rather than "already have"): 30d, 12h, 90m,
    /// 45s, or off to remember for ever.
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = parse_age)]
    pub forget_after: Age,
    /// Remove the partial files of transfers that have not advanced for this long
    /// (checked at start and hourly; each removal is logged): 3d, 12h, 90m, 45s,
    /// or off (also 0) to keep them.
    #[arg(long, value_name = "AGE", default_value = "3d", value_parser = parse_age)]
    pub prune_after: Age,
    /// Share the offers under the prefix with the other receivers started with
    /// the same --pool NAME (an MQTT shared subscription): each file is taken
    /// by one member, and a member that dies mid-file is replaced by another.
    /// Members may share one --out (a takeover then resumes the partial file).
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
    /// Subscribe to a file's chunks only once it is taken, not to every file's
    /// from the start: no other receiver's chunks reach this one (for a metered
    /// link under a shared prefix), at one round trip per file.
    #[arg(long)]
    pub no_early_chunks: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[cfg(feature = "demo")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// File to send (default: a 20 MiB generated test image).
    pub file: Option<PathBuf>,
    /// Where the received copy goes (default: a temporary directory, removed
    /// afterwards).
    #[arg(short = 'o', long)]
    pub out: Option<PathBuf>,
    /// Size of the generated test file: bytes, or with k, m, g.
    #[arg(long, default_value = "20m", value_parser = parse_size)]
    pub size: u64,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl BrokerArgs {
    /// The library's connection settings.
    pub fn config(&self) -> Result<Config> {
        let mut cfg = match &self.broker {
            Some(url) => Config::from_url(url)?,
            None => Config::new("localhost", mqft::config::DEFAULT_PORT),
        };
        if let Some(h) = &self.host {
            cfg.host = h.clone();
        }
        if let Some(p) = self.port {
            cfg.port = p;
        }
        let password = match (&self.password, &self.password_file) {
            (_, Some(path)) => {
                // A wrong path is a mistake in the command, like a bad flag.
                let text = std::fs::read_to_string(path)
                    .map_err(|e| usage(format!("cannot read password file {}: {e}", path.display())))?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            (Some(p), None) => Some(p.clone()),
            (None, None) => cfg.credentials.as_ref().and_then(|c| c.password.clone()),
        };
        if let Some(username) = self.username.clone().or_else(|| cfg.credentials.as_ref().map(|c| c.username.clone())) {
            cfg.credentials = Some(Credentials { username, password });
        } else if password.is_some() {
            bail!(usage("a password needs a user name (-u or MQFT_USERNAME)"));
        }
        if self.cafile.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.capath.is_some()
            || self.insecure
            || self.tls_version.is_some()
        {
            let mut tls = cfg.tls.take().unwrap_or_default();
            tls.ca_file = self.cafile.clone().or(tls.ca_file);
            tls.client_cert = self.cert.clone().or(tls.client_cert);
            tls.client_key = self.key.clone().or(tls.client_key);
            tls.ca_path = self.capath.clone().or(tls.ca_path);
            tls.insecure |= self.insecure;
            tls.version = self.tls_version.or(tls.version);
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                bail!(usage("--cert and --key go together"));
            }
            cfg.tls = Some(tls);
            if self.broker.is_none() && self.port.is_none() {
                cfg.port = mqft::config::DEFAULT_TLS_PORT;
            }
        }
        cfg.version = self.version;
        cfg.prefix = self.prefixes()?.first().and_then(PrefixPattern::concrete).unwrap_or_default();
        cfg.client_id = self.client_id.clone();
        cfg.connect_timeout = Duration::from_secs(self.connect_timeout.max(1));
        cfg.keep_alive = Duration::from_secs(self.keepalive);
        cfg.broker_timeout = self.broker_timeout.map(|s| Duration::from_secs(s.max(1)));
        cfg.rate = self.rate;
        cfg.max_publish_rate = self.max_publish_rate;
        // A switch for measuring (docs/PERFORMANCE.md), not a flag users need.
        cfg.nudge = std::env::var_os("MQFT_NUDGE").is_none_or(|v| v != "0");
        Ok(cfg)
    }
}

impl BrokerArgs {
    /// Every `--prefix`, checked: `+` only as a whole level, `#` never (the
    /// protocol's own levels follow the prefix).
    pub fn prefixes(&self) -> Result<Vec<PrefixPattern>> {
        self.prefix
            .iter()
            .map(|p| {
                if p.contains('#') {
                    return Err(usage(format!("--prefix {p}: '#' is not allowed, use '+' for one level")).into());
                }
                PrefixPattern::new(p).map_err(|e| usage(format!("--prefix {p}: {e}")).into())
            })
            .collect()
    }
}

impl SendArgs {
    /// `send -`: the name standard input goes under; `None` for files. `-` must
    /// be the only file (one stream, one name), and --name comes with it only.
    pub fn stdin_name(&self) -> Result<Option<String>> {
        let dashes = self.files.iter().filter(|f| f.as_os_str() == "-").count();
        match (dashes, &self.name) {
            (0, None) => Ok(None),
            (0, Some(_)) => bail!(usage("--name names standard input: use it with '-' (send - --name NAME)")),
            (_, _) if self.files.len() > 1 => bail!(usage(
                "'-' (standard input) must be the only file; send files in another run, or a file named - as ./-"
            )),
            (_, None) => bail!(usage("send - needs --name NAME: the name the receivers store standard input under")),
            (_, Some(name)) if name.is_empty() || name.len() > proto::wire::MAX_NAME_LEN => {
                bail!(usage(format!("--name: use 1 to {} bytes", proto::wire::MAX_NAME_LEN)))
            }
            (_, Some(name)) => Ok(Some(name.clone())),
        }
    }

    /// The library's send options.
    pub fn options(&self) -> Result<mqft::SendOptions> {
        match &self.broker.prefixes()?[..] {
            [one] if one.concrete().is_some() => {}
            _ => bail!(usage("send takes one --prefix, without '+'")),
        }
        let mut opts = mqft::SendOptions::default();
        opts.chunk_size = self.chunk_size;
        if let Some(w) = self.window {
            if w == 0 {
                bail!(usage("--window must be at least 1"));
            }
            opts.protocol.window = w;
            // Asked for in chunks: no cut to the default's bytes.
            opts.window_bytes = u64::MAX;
        }
        opts.eager_bytes = self.eager;
        opts.protocol.chunk_qos = if self.qos == 0 { proto::Qos::AtMostOnce } else { proto::Qos::AtLeastOnce };
        opts.protocol.join_timeout = Duration::from_secs(self.timeout);
        opts.protocol.wait = if self.to.is_empty() {
            if self.receivers == 0 {
                bail!(usage("--receivers must be at least 1"));
            }
            Wait::Count(self.receivers)
        } else {
            let ids = self
                .to
                .iter()
                .map(|t| ReceiverId::new(t).map_err(|e| usage(format!("--to {t}: {e}"))))
                .collect::<Result<_, _>>()?;
            Wait::Ids(ids)
        };
        opts.concurrency = self.concurrency.max(1);
        if let Some(path) = &self.sign {
            opts.sign = Some(mqft::keys::SecretKey::read(path).map_err(|e| usage(format!("--sign: {e}")))?);
        }
        for k in &self.encrypt_to {
            opts.encrypt_to
                .extend(mqft::keys::PublicKey::from_arg(k).map_err(|e| usage(format!("--encrypt-to: {e}")))?);
        }
        if opts.encrypt_to.len() > proto::wire::MAX_RECIPIENTS {
            bail!(usage(format!("--encrypt-to: at most {} recipients", proto::wire::MAX_RECIPIENTS)));
        }
        opts.compress = self.compress;
        opts.hold = self.hold;
        opts.from = match &self.from {
            Some(name) if proto::wire::is_sender_name(name) => name.clone(),
            Some(name) => bail!(usage(format!(
                "--from {name}: use at most {} lowercase letters, digits, '_' and '-'",
                proto::wire::MAX_SENDER_LEN
            ))),
            None => default_sender_name(),
        };
        if !opts.encrypt_to.is_empty() && opts.compress != proto::wire::Compression::None {
            // Ciphertext does not compress, and compressing before sealing would
            // tell the broker how compressible each chunk is.
            bail!(usage("--compress with --encrypt-to: encrypted chunks do not compress; compress the file first"));
        }
        Ok(opts)
    }
}

impl ReceiveArgs {
    /// The library's receive options.
    pub fn options(&self) -> Result<mqft::ReceiveOptions> {
        let mut opts = mqft::ReceiveOptions::default();
        opts.once = self.once;
        opts.on_conflict = if self.overwrite { mqft::OnConflict::Overwrite } else { self.on_conflict };
        opts.per_sender = self.out_dir()?.1;
        opts.max_concurrent = self.max_concurrent.max(1);
        opts.queue = self.queue;
        opts.max_size = self.max_size;
        opts.prefixes = self.broker.prefixes()?;
        if let Some(id) = &self.receiver_id {
            opts.receiver_id = Some(ReceiverId::new(id).map_err(|e| usage(format!("--name {id}: {e}")))?);
        }
        for t in &self.trust {
            opts.trust.extend(mqft::keys::PublicKey::from_arg(t).map_err(|e| usage(format!("--trust: {e}")))?);
        }
        opts.max_age = Duration::from_secs(self.max_age);
        if let Some(path) = &self.identity {
            opts.identity = Some(mqft::keys::SecretKey::read(path).map_err(|e| usage(format!("--identity: {e}")))?);
        }
        opts.state_dir.clone_from(&self.state_dir);
        opts.forget_after = self.forget_after.0;
        opts.prune_after = self.prune_after.0;
        if let Some(name) = &self.pool {
            mqft::receive::pool::check_pool_name(name).map_err(|e| usage(format!("--pool: {e}")))?;
            opts.pool = Some(name.clone());
        }
        opts.early_chunks = !self.no_early_chunks;
        Ok(opts)
    }

    /// The state folder: `--state-dir`, or `.mqft` in the output directory's
    /// root (`out`, as [`ReceiveArgs::out_dir`] gives it).
    pub fn state_root(&self, out: &Path) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| out.join(mqft::receive::STATE_DIR_NAME))
    }
}

/// The placeholder in `receive --out` for a directory per sender.
pub const SENDER_PLACEHOLDER: &str = "{sender}";

impl ReceiveArgs {
    /// The output directory's root, and whether each sender's files go to a
    /// directory of their own under it (`--out 'ROOT/{sender}'`).
    pub fn out_dir(&self) -> Result<(PathBuf, bool)> {
        let text = self.out.to_string_lossy();
        if !text.contains('{') {
            return Ok((self.out.clone(), false));
        }
        let root = self.out.parent().filter(|_| self.out.file_name().is_some_and(|n| n == SENDER_PLACEHOLDER));
        match root {
            Some(root) if !root.to_string_lossy().contains(['{', '}']) => {
                let root = if root.as_os_str().is_empty() { PathBuf::from(".") } else { root.to_owned() };
                Ok((root, true))
            }
            _ => bail!(usage(format!(
                "--out {text}: {SENDER_PLACEHOLDER} can only be the last part, as in /srv/in/{SENDER_PLACEHOLDER}"
            ))),
        }
    }
}

/// The host name, lowercased and mapped into the sender-name alphabet (`-` for
/// anything else), cut to its length; empty (an unnamed sender) when there is
/// none.
fn default_sender_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    raw.trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .take(proto::wire::MAX_SENDER_LEN)
        .collect()
}

/// `rename`, `overwrite`, `skip` or `fail`, as a clap value parser.
pub fn parse_conflict(s: &str) -> Result<mqft::OnConflict, UsageError> {
    match s {
        "rename" => Ok(mqft::OnConflict::Rename),
        "overwrite" => Ok(mqft::OnConflict::Overwrite),
        "skip" => Ok(mqft::OnConflict::Skip),
        "fail" => Ok(mqft::OnConflict::Fail),
        _ => Err(usage(format!("bad conflict policy '{s}': use rename, overwrite, skip or fail"))),
    }
}

/// Creates `-o PATH`, which must name a directory or nothing yet: a file there is
/// a usage error that says so, rather than `create_dir_all`'s "File exists".
/// Blocks.
pub fn make_out_dir(out: &std::path::Path) -> Result<()> {
    if std::fs::metadata(out).is_ok_and(|meta| !meta.is_dir()) {
        bail!(usage(format!("--out {}: not a directory", out.display())));
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// An age for `--forget-after` and `--prune-after`; `None` is `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Option<Duration>);

/// `30d`, `12h`, `90m`, `45s`, `3600` (seconds), or `off`; `0` is `off` too.
pub fn parse_age(s: &str) -> Result<Age, UsageError> {
    let bad = || usage(format!("bad age '{s}': use 30d, 12h, 90m, 45s, or off"));
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(Age(None));
    }
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    Ok(Age((secs > 0).then(|| Duration::from_secs(secs))))
}

/// `--hold`: a duration as for ages (30d, 12h, 90m, 45s), not 0 and not off.
pub fn parse_hold(s: &str) -> Result<Duration, UsageError> {
    match parse_age(s) {
        Ok(Age(Some(d))) => Ok(d),
        _ => Err(usage(format!("bad hold '{s}': use 7d, 24h, 30m or 45s"))),
    }
}

/// A usage error, tagged so `main` exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// `123`, `64k`, `10m`, `2g` (binary units; [`mqft::config::parse_bytes`]), as a
/// clap value parser: a bad size is a usage error before anything starts.
pub fn parse_size(s: &str) -> Result<u64, UsageError> {
    mqft::config::parse_bytes(s).ok_or_else(|| usage(format!("bad size '{s}': use bytes like 1048576, 64k, 10m, 2g")))
}

/// A `--rate`: a size ([`parse_size`]) of at least one byte.
pub fn parse_rate(s: &str) -> Result<u64, UsageError> {
    match parse_size(s)? {
        0 => Err(usage("a rate of 0 would send nothing: leave --rate out for no limit")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("20M").unwrap(), 20 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("x").is_err());
        assert!(parse_size("5t").is_err());
    }

    #[test]
    fn rate_flags_reach_the_config() {
        let cli = Cli::try_parse_from(["mqft", "receive", "--rate", "512k", "--max-publish-rate", "100"]).unwrap();
        let Command::Receive(args) = cli.command else { panic!() };
        let cfg = args.broker.config().unwrap();
        assert_eq!((cfg.rate, cfg.max_publish_rate), (Some(512 << 10), Some(100)));
        assert!(Cli::try_parse_from(["mqft", "send", "f", "--rate", "0"]).is_err());
        assert!(Cli::try_parse_from(["mqft", "send", "f", "--max-publish-rate", "0"]).is_err());
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("30d").unwrap(), Age(Some(Duration::from_secs(30 * 86_400))));
        assert_eq!(parse_age("12h").unwrap(), Age(Some(Duration::from_secs(12 * 3600))));
        assert_eq!(parse_age("90m").unwrap(), Age(Some(Duration::from_secs(5400))));
        assert_eq!(parse_age("45").unwrap(), Age(Some(Duration::from_secs(45))));
        assert_eq!(parse_age("1s").unwrap(), Age(Some(Duration::from_secs(1))));
        assert_eq!(parse_age("off").unwrap(), Age(None));
        assert_eq!(parse_age("0").unwrap(), Age(None));
        for bad in ["", "d", "3w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_build_a_config() {
        let cli = Cli::try_parse_from([
            "mqft",
            "send",
            "a.jpg",
            "-h",
            "broker.local",
            "-p",
            "1999",
            "-u",
            "cam",
            "-V",
            "311",
            "--prefix",
            "site/cams",
            "-n",
            "3",
        ])
        .unwrap();
        let Command::Send(args) = cli.command else { panic!() };
        let cfg = args.broker.config().unwrap();
        assert_eq!((cfg.host.as_str(), cfg.port), ("broker.local", 1999));
        assert_eq!(cfg.version, MqttVersion::V311);
        assert_eq!(cfg.prefix.as_str(), "site/cams");
        assert_eq!(cfg.credentials.unwrap().username, "cam");
        assert_eq!(args.options().unwrap().protocol.wait, Wait::Count(3));
    }

    #[test]
    fn tls_flags_turn_tls_on() {
        let cli = Cli::try_parse_from([
            "mqft",
            "send",
            "a",
            "--insecure",
            "--capath",
            "/etc/ssl/certs",
            "--tls-version",
            "tlsv1.3",
        ])
        .unwrap();
        let Command::Send(args) = cli.command else { panic!() };
        let cfg = args.broker.config().unwrap();
        assert_eq!(cfg.port, mqft::config::DEFAULT_TLS_PORT);
        let tls = cfg.tls.unwrap();
        assert!(tls.insecure);
        assert_eq!(tls.ca_path.as_deref(), Some(std::path::Path::new("/etc/ssl/certs")));
        assert_eq!(tls.version, Some(mqft::TlsVersion::Tls13));
        assert!(Cli::try_parse_from(["mqft", "send", "a", "-k", "4"]).is_err());
        assert!(Cli::try_parse_from(["mqft", "send", "a", "-k", "5"]).is_ok());
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let cli = Cli::try_parse_from(["mqft", "send", "a", "--prefix", "Bad.Prefix"]).unwrap();
        let Command::Send(args) = cli.command else { panic!() };
        assert!(args.broker.config().unwrap_err().downcast_ref::<UsageError>().is_some());
        let cli = Cli::try_parse_from(["mqft", "send", "a", "--cert", "c.pem"]).unwrap();
        let Command::Send(args) = cli.command else { panic!() };
        assert!(args.broker.config().is_err());
        assert!(Cli::try_parse_from(["mqft", "send", "a", "-q", "2"]).is_err());
        // Parsed by clap, with the library's FromStr: refused before anything runs.
        assert!(Cli::try_parse_from(["mqft", "send", "a", "--chunk-size", "17x"]).is_err());
        assert!(Cli::try_parse_from(["mqft", "send", "a", "-V", "3"]).is_err());
        assert!(Cli::try_parse_from(["mqft", "receive", "--max-size", "5t"]).is_err());
        assert!(Cli::try_parse_from(["mqft", "receive", "--on-conflict", "merge"]).is_err());
        assert!(Cli::try_parse_from(["mqft", "receive", "--on-conflict", "skip", "--overwrite"]).is_err());
        let cli = Cli::try_parse_from(["mqft", "send", "a", "--from", "Cam 1"]).unwrap();
        let Command::Send(args) = cli.command else { panic!() };
        assert!(args.options().unwrap_err().downcast_ref::<UsageError>().is_some());
    }

    #[test]
    fn a_sender_placeholder_ends_the_out_dir() {
        let out = |o: &str| {
            let cli = Cli::try_parse_from(["mqft", "receive", "--out", o]).unwrap();
            let Command::Receive(args) = cli.command else { panic!() };
            args.out_dir().map_err(|e| e.downcast::<UsageError>().unwrap().0)
        };
        assert_eq!(out("/srv/in").unwrap(), (PathBuf::from("/srv/in"), false));
        assert_eq!(out("/srv/in/{sender}").unwrap(), (PathBuf::from("/srv/in"), true));
        assert_eq!(out("{sender}").unwrap(), (PathBuf::from("."), true));
        assert!(out("/srv/{sender}/in").is_err());
        assert!(out("/srv/in-{sender}").is_err());
        assert!(out("/srv/{x}/{sender}").is_err());
    }
}
