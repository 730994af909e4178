//! `mqft status`: the transfers held at the broker (`send --hold`), read from
//! their retained messages.
//!
//! A held transfer is a retained manifest with [`Manifest::hold_until_ms`], and
//! the receivers that confirmed it are retained `Complete`/`Stored` acks on its
//! ack topics (PROTOCOL.md 17). So a status is one subscription to
//! `<prefix>/+/manifest` and one to `<prefix>/+/ack/+`, and the retained messages
//! the broker hands over for them. To know when they are all in without guessing
//! a quiet time, the client then subscribes to a topic of its own and publishes
//! one message there: the broker delivers a client's messages in order, so that
//! message comes after every retained one (Mosquitto queues them as it handles
//! each SUBSCRIBE). A broker that does not deliver it within `wait` (an ACL that
//! refuses the publish) ends the status at `wait` with what arrived.
//!
//! Limits: the broker hands over at most its queue of retained messages at once
//! (Mosquitto: `max_inflight_messages` plus `max_queued_messages`, 1020 by
//! default), manifests and acks together; past that, some held transfers are not
//! listed. Live acks of transfers running meanwhile are read and ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::config::{self, Config};
use crate::conn::{self, ConnEvent, Connection};
use crate::proto::{Ack, Manifest, Qos, ReceiverId, Topic, TransferId};
use crate::{CancellationToken, Error};

/// A transfer held at the broker, as its retained messages describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldTransfer {
    /// Its transfer id.
    pub transfer: TransferId,
    /// The file name from the manifest (for an encrypted transfer, a placeholder).
    pub name: String,
    /// The file size in bytes (for an encrypted transfer, the ciphertext's).
    pub size: u64,
    /// The sender's name, or empty.
    pub sender: String,
    /// The receivers it is held for; empty for anybody.
    pub to: Vec<String>,
    /// When the hold ends, in milliseconds since the Unix epoch.
    pub hold_until_ms: i64,
    /// The receivers that confirmed it so far.
    pub confirmed: Vec<ReceiverId>,
    /// Signed by its sender (checked by receivers that trust the key, not here).
    pub signed: bool,
    /// Encrypted.
    pub encrypted: bool,
}

/// Reads the held transfers under the configured prefix; see the module doc.
pub(crate) async fn status(cfg: Config, wait: Duration, cancel: CancellationToken) -> Result<Vec<HeldTransfer>, Error> {
    let client_id = cfg.client_id.clone().unwrap_or_else(|| format!("mqft-q-{:08x}", rand::random::<u32>()));
    let max_in = crate::proto::wire::MAX_MANIFEST_LEN as u32 + config::PACKET_OVERHEAD;
    let opts = conn::options(&cfg, client_id, false, max_in, config::PACKET_OVERHEAD);
    let mut conn = Connection::open(&cfg, &opts).await?;
    conn.wait_up(&cancel).await?;
    let prefix = cfg.prefix.clone();
    let marker = format!("{}/status/{:016x}", prefix.as_str(), rand::random::<u64>());
    conn.out.subscribe(prefix.manifest_filter());
    conn.out.subscribe(format!("{}/+/ack/+", prefix.as_str()));
    conn.out.subscribe(marker.clone());
    // QoS 1, so that it is not the one message a busy broker drops.
    conn.out.publish(marker.clone(), Qos::AtLeastOnce, false, b"end of retained".to_vec());
    let mut held: BTreeMap<TransferId, Manifest> = BTreeMap::new();
    let mut acks: BTreeMap<TransferId, BTreeMap<ReceiverId, Vec<u8>>> = BTreeMap::new();
    let deadline = Instant::now() + wait;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            _ = tokio::time::sleep_until(deadline) => {
                debug!("status: the end marker did not come back in time");
                break;
            }
            ev = conn.events.recv() => ev?,
        };
        let ConnEvent::Message { topic, payload, retain, .. } = ev else { continue };
        if topic == marker {
            break;
        }
        // Only what the broker holds: a live publication is a transfer running now.
        if !retain || payload.is_empty() {
            continue;
        }
        match prefix.parse(&topic) {
            Some(Topic::Manifest(id)) => {
                if let Some(m) = Manifest::decode(&payload).ok().filter(|m| m.id == id && m.is_held()) {
                    held.insert(id, m);
                }
            }
            Some(Topic::Ack(id, from)) => {
                // Kept raw until the manifest says how to decode it; bounded by
                // the broker's queue, as everything here.
                acks.entry(id).or_default().insert(from, payload.to_vec());
            }
            _ => {}
        }
    }
    conn.close(Duration::from_secs(1)).await;
    let mut out: Vec<HeldTransfer> = held
        .into_values()
        .map(|m| {
            let confirmed = acks
                .remove(&m.id)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, a)| {
                    matches!(Ack::decode(a, m.chunk_count),
                        Ok(Ack::Complete { sha256 } | Ack::Stored { sha256, .. }) if Some(sha256) == m.sha256)
                })
                .map(|(r, _)| r)
                .collect();
            HeldTransfer {
                transfer: m.id,
                size: m.size,
                sender: m.sender.clone(),
                to: m.to.clone(),
                hold_until_ms: m.hold_until_ms.unwrap_or_default(),
                confirmed,
                signed: m.signature.is_some(),
                encrypted: m.sealed.is_some(),
                name: m.name,
            }
        })
        .collect();
    out.sort_by_key(|h| h.hold_until_ms);
    Ok(out)
}
