//! Baseline B: a bare pump on rumqttc, the ceiling that the client library and
//! the broker allow.
//!
//! `pump-pub` publishes a file as QoS 1 chunks on `<prefix>/<index>`, pipelined up
//! to rumqttc's in-flight limit, and exits once the broker acknowledged them all.
//! `pump-sub` subscribes to `<prefix>/#` and writes each chunk at its offset
//! (`index * chunk`) in its output file, until every chunk is there. No manifest,
//! no acknowledgement to the sender, no CRC, no hash, no flow control: if the broker
//! drops a chunk (a full queue), the subscriber times out and says how many it got.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;

/// rumqttc's default in-flight window for QoS 1 publishes.
const INFLIGHT: u16 = 100;
/// Room for MQTT headers above a chunk.
const OVERHEAD: u32 = 64 << 10;

/// Which MQTT version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    /// MQTT 5.
    #[value(name = "5")]
    V5,
    /// MQTT 3.1.1.
    #[value(name = "311")]
    V311,
}

/// `pump-pub` flags.
#[derive(Debug, Args)]
pub struct PubArgs {
    /// Broker port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Topic prefix; chunk `i` goes to `<prefix>/<i>`.
    #[arg(long)]
    prefix: String,
    /// The file to send.
    #[arg(long)]
    file: PathBuf,
    /// Chunk size in bytes.
    #[arg(long)]
    chunk: u32,
    /// MQTT version.
    #[arg(short = 'V', long, value_enum, default_value = "5")]
    version: Version,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// `pump-sub` flags.
#[derive(Debug, Args)]
pub struct SubArgs {
    /// Broker port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Topic prefix to subscribe under.
    #[arg(long)]
    prefix: String,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// How many bytes to expect.
    #[arg(long)]
    size: u64,
    /// Chunk size in bytes.
    #[arg(long)]
    chunk: u32,
    /// MQTT client id (so the caller can see the subscription in the broker log).
    #[arg(long)]
    id: String,
    /// MQTT version.
    #[arg(short = 'V', long, value_enum, default_value = "5")]
    version: Version,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// Runs `pump-pub`.
pub fn publish(a: PubArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let timeout = Duration::from_secs(a.timeout);
    rt.block_on(async {
        match tokio::time::timeout(timeout, publish_all(&a)).await {
            Ok(r) => r,
            Err(_) => bail!("pump-pub: timed out"),
        }
    })
}

/// Runs `pump-sub`.
pub fn subscribe(a: SubArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(receive_all(&a))
}

/// The ceiling sets `TCP_NODELAY` (rumqttc's default leaves Nagle on).
fn nodelay() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

/// Reads chunk `i` of `file`.
fn read_chunk(file: &File, i: u64, chunk: u32, size: u64) -> Result<Bytes> {
    let off = i * u64::from(chunk);
    let len = (size - off).min(u64::from(chunk));
    let mut buf = vec![0u8; usize::try_from(len)?];
    file.read_exact_at(&mut buf, off)?;
    Ok(Bytes::from(buf))
}

async fn publish_all(a: &PubArgs) -> Result<()> {
    let file = File::open(&a.file).with_context(|| format!("cannot open {}", a.file.display()))?;
    let size = file.metadata()?.len();
    let count = size.div_ceil(u64::from(a.chunk));
    let id = format!("pump-pub-{}", std::process::id());
    let max = a.chunk + OVERHEAD;
    match a.version {
        Version::V311 => {
            use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
            let mut o = MqttOptions::new(id, "127.0.0.1", a.port);
            o.set_max_packet_size(max as usize, max as usize);
            o.set_inflight(INFLIGHT);
            o.set_keep_alive(Duration::from_secs(30));
            let (client, mut el) = AsyncClient::new(o, 64);
            el.set_network_options(nodelay());
            let poller = tokio::spawn(async move {
                let mut acks = 0u64;
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acks += 1;
                            if acks == count {
                                return Ok(acks);
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(acks),
                        Ok(_) => {}
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
            });
            for i in 0..count {
                let data = read_chunk(&file, i, a.chunk, size)?;
                client.publish_bytes(format!("{}/{i}", a.prefix), QoS::AtLeastOnce, false, data).await?;
            }
            let acks = poller.await??;
            if acks != count {
                bail!("pump-pub: {acks} of {count} acknowledged");
            }
            let _ = client.try_disconnect();
        }
        Version::V5 => {
            use rumqttc::v5::mqttbytes::v5::Packet;
            use rumqttc::v5::mqttbytes::QoS;
            use rumqttc::v5::{AsyncClient, Event, MqttOptions};
            use rumqttc::Outgoing;
            let mut o = MqttOptions::new(id, "127.0.0.1", a.port);
            o.set_max_packet_size(Some(max));
            o.set_outgoing_inflight_upper_limit(INFLIGHT);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_network_options(nodelay());
            let (client, mut el) = AsyncClient::new(o, 64);
            let poller = tokio::spawn(async move {
                let mut acks = 0u64;
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acks += 1;
                            if acks == count {
                                return Ok(acks);
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(acks),
                        Ok(_) => {}
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
            });
            for i in 0..count {
                let data = read_chunk(&file, i, a.chunk, size)?;
                client.publish_bytes(format!("{}/{i}", a.prefix), QoS::AtLeastOnce, false, data).await?;
            }
            let acks = poller.await??;
            if acks != count {
                bail!("pump-pub: {acks} of {count} acknowledged");
            }
            let _ = client.try_disconnect();
        }
    }
    Ok(())
}

/// What the subscriber holds so far.
struct Sink {
    file: File,
    chunk: u64,
    size: u64,
    seen: Vec<bool>,
    bytes: u64,
    chunks: u64,
    /// When the last new chunk arrived.
    last: Option<tokio::time::Instant>,
}

/// Once chunks flow, this long without a new one means the rest was dropped.
const IDLE: Duration = Duration::from_secs(5);

impl Sink {
    /// The overall deadline, or sooner once chunks stopped coming.
    fn deadline(&self, overall: tokio::time::Instant) -> tokio::time::Instant {
        self.last.map_or(overall, |l| overall.min(l + IDLE))
    }

    fn stalled(&self) -> anyhow::Error {
        match self.last {
            Some(_) => anyhow::anyhow!("no new chunk for {IDLE:?}: the broker dropped the rest"),
            None => anyhow::anyhow!("timed out"),
        }
    }

    /// Writes one chunk; true once the file is whole.
    fn put(&mut self, topic: &[u8], payload: &[u8]) -> Result<bool> {
        let index: usize = std::str::from_utf8(topic)
            .ok()
            .and_then(|t| t.rsplit('/').next())
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("odd topic {:?}", String::from_utf8_lossy(topic)))?;
        if index < self.seen.len() && !self.seen[index] {
            self.file.write_all_at(payload, index as u64 * self.chunk)?;
            self.seen[index] = true;
            self.bytes += payload.len() as u64;
            self.chunks += 1;
            self.last = Some(tokio::time::Instant::now());
        }
        Ok(self.bytes >= self.size)
    }
}

async fn receive_all(a: &SubArgs) -> Result<()> {
    let file = File::create(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    file.set_len(a.size)?;
    let count = usize::try_from(a.size.div_ceil(u64::from(a.chunk)))?;
    let mut sink = Sink {
        file,
        chunk: u64::from(a.chunk),
        size: a.size,
        seen: vec![false; count],
        bytes: 0,
        chunks: 0,
        last: None,
    };
    let filter = format!("{}/#", a.prefix);
    let max = a.chunk + OVERHEAD;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
    let result: Result<()> = match a.version {
        Version::V311 => {
            use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
            let mut o = MqttOptions::new(a.id.clone(), "127.0.0.1", a.port);
            o.set_max_packet_size(max as usize, max as usize);
            o.set_keep_alive(Duration::from_secs(30));
            let (client, mut el) = AsyncClient::new(o, 64);
            el.set_network_options(nodelay());
            client.subscribe(filter, QoS::AtLeastOnce).await?;
            loop {
                let ev = tokio::time::timeout_at(sink.deadline(deadline), el.poll()).await;
                match ev {
                    Err(_) => break Err(sink.stalled()),
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        if sink.put(p.topic.as_bytes(), &p.payload)? {
                            let _ = client.try_disconnect();
                            break Ok(());
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break Err(e.into()),
                }
            }
        }
        Version::V5 => {
            use rumqttc::v5::mqttbytes::v5::Packet;
            use rumqttc::v5::mqttbytes::QoS;
            use rumqttc::v5::{AsyncClient, Event, MqttOptions};
            let mut o = MqttOptions::new(a.id.clone(), "127.0.0.1", a.port);
            o.set_max_packet_size(Some(max));
            o.set_keep_alive(Duration::from_secs(30));
            o.set_network_options(nodelay());
            let (client, mut el) = AsyncClient::new(o, 64);
            client.subscribe(filter, QoS::AtLeastOnce).await?;
            loop {
                let ev = tokio::time::timeout_at(sink.deadline(deadline), el.poll()).await;
                match ev {
                    Err(_) => break Err(sink.stalled()),
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        if sink.put(&p.topic, &p.payload)? {
                            let _ = client.try_disconnect();
                            break Ok(());
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break Err(e.into()),
                }
            }
        }
    };
    result.with_context(|| format!("pump-sub: received {} of {count} chunks", sink.chunks))
}
