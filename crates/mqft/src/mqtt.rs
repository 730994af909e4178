//! The MQTT version adapter: the one module that knows rumqttc has two trees.
//!
//! rumqttc keeps MQTT 3.1.1 (`rumqttc::`) and MQTT 5 (`rumqttc::v5::`) in separate,
//! near-duplicate modules. Everything else in this crate sees one [`Client`] (publish,
//! subscribe, unsubscribe, disconnect), one [`EventLoop`] whose `poll` yields a small
//! [`Incoming`], and one [`Failure`] for what went wrong.
//!
//! Two gaps of rumqttc are covered here, since they need its state: what it drops
//! when the broker starts a new session ([`Dropped`]), and whether rumqttc acks
//! the QoS 1 publishes it reads ([`EventLoop::set_auto_ack`]): the connection
//! turns that off while the engine is behind and sends those acks itself later
//! ([`Client::ack`]), which is how it holds a publisher back (see `conn.rs`).
//!
//! What MQTT 5 brokers announce about flow is rumqttc's to keep: it takes no more
//! QoS 1 publishes in flight than the CONNACK's Receive Maximum (and our own cap,
//! [`Options::inflight`]). Topic aliases are never sent, so the broker's Topic Alias
//! Maximum holds trivially: an alias would save a chunk topic's 50-odd bytes, under
//! 0.1 % of a chunk, at the price of state that a reconnect resets, and a publish
//! sent again after one would have to carry its topic again.
//!
//! A little over 600 lines: it is the one place both rumqttc trees (3.1.1 and 5)
//! appear, each operation written twice side by side so they stay in step. Its tests
//! live in `mqtt/tests.rs`.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::tokio_rustls::rustls::pki_types::pem::PemObject;
use rumqttc::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rumqttc::tokio_rustls::rustls::{ClientConfig, RootCertStore};
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{TlsConfiguration, Transport};

use crate::config::{Config, MqttVersion, Tls};
use crate::error::ConnectError;
use crate::proto::Qos;
use crate::Error;

/// Settings for one client, resolved from a [`Config`] and the role.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub version: MqttVersion,
    pub client_id: String,
    /// Keep the session at the broker across disconnects, for this long (MQTT 5).
    pub persistent: Option<Duration>,
    /// The largest packet accepted from the broker (announced to it under MQTT 5).
    pub max_incoming: u32,
    /// The largest packet sent (3.1.1; under MQTT 5 the broker's limit applies).
    pub max_outgoing: u32,
    /// Unacknowledged QoS 1 publishes in flight at once.
    pub inflight: u16,
    /// Capacity of rumqttc's request channel.
    pub request_capacity: usize,
}

/// What the broker said, reduced to what the driver needs.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A connection is up. `dropped` is what rumqttc kept for it from the
    /// connection before and dropped because the broker has no session for us.
    ConnAck { info: ConnAckInfo, dropped: Dropped },
    /// A message arrived. `ack` is its packet id when it is a QoS 1 publish that
    /// rumqttc did not ack (see [`EventLoop::set_auto_ack`]): the caller must ack
    /// it, in the order received.
    /// A topic that is not UTF-8 comes as an empty one (it matches nothing).
    /// `retain` is set on a retained message the broker hands a new subscription.
    Publish { topic: String, payload: Bytes, qos: Qos, ack: Option<u16>, retain: bool },
    /// One of our QoS 1 publishes was written to the connection (a new one, or
    /// one sent again after a reconnect): the broker owes its PUBACK.
    PublishSent,
    /// The broker acknowledged one of our QoS 1 publishes.
    PubAck,
    /// The broker answered a SUBSCRIBE or UNSUBSCRIBE of ours.
    SubAck,
    /// Our DISCONNECT went out: the event loop is done.
    DisconnectSent,
}

/// Our QoS 1 publishes, and a DISCONNECT, that rumqttc dropped at a new session,
/// in the order they were queued.
///
/// When a connection breaks, rumqttc keeps the QoS 1 publishes the broker has not
/// acknowledged, and every request still in its channel, to send them on the next
/// connection. But if the broker answers that CONNECT without a session (always,
/// for a clean session; for a persistent one, when the broker lost it), rumqttc
/// drops them all, without a word (`EventLoop::poll` in `eventloop.rs` and
/// `v5/eventloop.rs`, 0.25). The adapter copies them after each error, so that the
/// caller can queue them again ([`EventLoop::requeue`]) or at least count them.
#[derive(Debug)]
pub(crate) enum Dropped {
    V311(Vec<rumqttc::Request>),
    V5(Vec<rumqttc::v5::Request>),
}

/// The parts of a CONNACK that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ConnAckInfo {
    /// The broker kept our session.
    pub session_present: bool,
    /// The broker's Maximum Packet Size (MQTT 5).
    pub max_packet_size: Option<u32>,
    /// The broker's Receive Maximum (MQTT 5).
    pub receive_maximum: Option<u16>,
    /// False when the broker said it keeps no retained messages (MQTT 5 Retain
    /// Available 0): `send --hold` cannot work there.
    pub retain_available: bool,
}

/// Why polling failed. The event loop reconnects when polled again, except after
/// [`Failure::Closed`].
#[derive(Debug)]
pub(crate) enum Failure {
    /// The broker refused the CONNECT.
    Refused(String),
    /// The connection failed or broke.
    Connect(ConnectError),
    /// Every client handle is gone; nothing more will be sent.
    Closed,
}

/// Sends requests to the event loop.
#[derive(Clone)]
pub(crate) enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The connection itself. Owned by exactly one task, which does nothing but poll it.
///
/// `held` is a copy of what rumqttc keeps for the next connection, taken after every
/// error: it becomes [`Dropped`] if the next CONNACK has no session.
pub(crate) enum EventLoop {
    V311 {
        el: Box<rumqttc::EventLoop>,
        /// Whether the session is meant to be persistent (see [`EventLoop::poll`]).
        persistent: bool,
        held: Vec<rumqttc::Request>,
        /// Whether rumqttc acked the publishes of the batch it read last.
        acked: bool,
    },
    V5 {
        el: Box<rumqttc::v5::EventLoop>,
        held: Vec<rumqttc::v5::Request>,
        acked: bool,
    },
}

/// The request channel is closed: the event loop is gone.
#[derive(Debug)]
pub(crate) struct Closed;

/// Builds a client and its event loop. Reads the TLS files, so it can fail.
pub(crate) fn new(cfg: &Config, o: &Options) -> Result<(Client, EventLoop), Error> {
    let transport = match &cfg.tls {
        None => Transport::Tcp,
        Some(tls) => Transport::Tls(tls_config(tls)?),
    };
    // rumqttc takes whole seconds; never 0, which would time out at once.
    let timeout_secs = cfg.connect_timeout.as_secs().max(1);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(timeout_secs);
    // The protocol trades small messages (manifest, Ready, EndRound, Complete,
    // DISCONNECT) whose answers gate what comes next; with Nagle on, each waits
    // for the peer's delayed ACK, 40 ms on Linux (docs/PERFORMANCE.md). Chunks
    // are written whole, so there is nothing for Nagle to coalesce.
    net.set_tcp_nodelay(true);
    Ok(match o.version {
        MqttVersion::V311 => {
            let mut m = rumqttc::MqttOptions::new(&o.client_id, &cfg.host, cfg.port);
            m.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(5)));
            m.set_transport(transport);
            // Both directions default to 10 KiB, far below a chunk.
            m.set_max_packet_size(o.max_incoming as usize, o.max_outgoing as usize);
            m.set_clean_session(o.persistent.is_none());
            m.set_inflight(o.inflight);
            if let Some(c) = &cfg.credentials {
                m.set_credentials(&c.username, c.password.as_deref().unwrap_or(""));
            }
            let (client, mut el) = rumqttc::AsyncClient::new(m, o.request_capacity);
            el.set_network_options(net);
            let el = EventLoop::V311 {
                el: Box::new(el),
                persistent: o.persistent.is_some(),
                held: Vec::new(),
                acked: false,
            };
            (Client::V311(client), el)
        }
        MqttVersion::V5 => {
            let mut m = rumqttc::v5::MqttOptions::new(&o.client_id, &cfg.host, cfg.port);
            m.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(5)));
            m.set_transport(transport);
            // `None` would still mean 10 KiB incoming; the broker's own limit, from
            // its CONNACK, caps what we send.
            m.set_max_packet_size(Some(o.max_incoming));
            m.set_outgoing_inflight_upper_limit(o.inflight);
            m.set_connection_timeout(timeout_secs);
            m.set_network_options(net);
            match o.persistent {
                Some(expiry) => {
                    m.set_clean_start(false);
                    let secs = u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX).max(1);
                    m.set_session_expiry_interval(Some(secs));
                }
                None => {
                    m.set_clean_start(true);
                }
            }
            if let Some(c) = &cfg.credentials {
                m.set_credentials(&c.username, c.password.as_deref().unwrap_or(""));
            }
            let (client, el) = rumqttc::v5::AsyncClient::new(m, o.request_capacity);
            (Client::V5(client), EventLoop::V5 { el: Box::new(el), held: Vec::new(), acked: false })
        }
    })
}

/// rustls settings from file names. Without a CA file, the system's trusted CAs.
fn tls_config(tls: &Tls) -> Result<TlsConfiguration, Error> {
    if crate::tls::needs_own_config(tls) {
        return Ok(TlsConfiguration::Rustls(std::sync::Arc::new(crate::tls::client_config(tls)?)));
    }
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| Error::io("read", path, e));
    let client_auth = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        (None, None) => None,
        _ => return Err(Error::usage("a client certificate needs both a certificate and a key file")),
    };
    match &tls.ca_file {
        Some(path) => Ok(TlsConfiguration::Simple { ca: read(path)?, alpn: None, client_auth }),
        None => Ok(TlsConfiguration::Rustls(std::sync::Arc::new(system_roots_config(tls, client_auth)?))),
    }
}

/// A rustls client trusting the system's CA certificates, as rustls-native-certs
/// finds them: the files in `SSL_CERT_FILE` and `SSL_CERT_DIR` when either is set,
/// else the platform's store (OpenSSL's locations on Linux, the keychain on macOS,
/// the Windows store). rumqttc's own default panics when it finds none; this is a
/// usage error instead, as is a client certificate or key that does not parse.
fn system_roots_config(tls: &Tls, client_auth: Option<(Vec<u8>, Vec<u8>)>) -> Result<ClientConfig, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // Certificates rustls cannot use, and unreadable files among many, are skipped
    // the way a TLS library skips them in a system store; none at all is an error.
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(Error::usage("no CA file given and no system CA certificates found; set a CA file"));
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let Some((cert, key)) = client_auth else {
        return Ok(builder.with_no_client_auth());
    };
    // `client_auth` is only Some when both paths are.
    let (cert_path, key_path) = (tls.client_cert.as_deref(), tls.client_key.as_deref());
    let shown = |p: Option<&std::path::Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::usage(format!("no PEM certificate in {}", shown(cert_path))))?;
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|_| Error::usage(format!("no PEM private key in {}", shown(key_path))))?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| Error::usage(format!("client certificate {}: {e}", shown(cert_path))))
}

impl Client {
    /// Publishes; `expiry` (seconds) becomes the MQTT 5 Message Expiry Interval.
    /// MQTT 3.1.1 has no expiry: callers refuse what needs one before connecting
    /// (`send --hold`), so here it is dropped.
    pub async fn publish(
        &self,
        topic: String,
        qos: Qos,
        retain: bool,
        payload: Bytes,
        expiry: Option<u32>,
    ) -> Result<(), Closed> {
        match (self, expiry) {
            (Client::V311(c), _) => c.publish_bytes(topic, qos4(qos), retain, payload).await.map_err(|_| Closed),
            (Client::V5(c), None) => c.publish_bytes(topic, qos5(qos), retain, payload).await.map_err(|_| Closed),
            (Client::V5(c), Some(secs)) => {
                let props = p5::PublishProperties { message_expiry_interval: Some(secs), ..Default::default() };
                c.publish_bytes_with_properties(topic, qos5(qos), retain, payload, props).await.map_err(|_| Closed)
            }
        }
    }

    pub async fn subscribe(&self, filter: String, qos: Qos) -> Result<(), Closed> {
        match self {
            Client::V311(c) => c.subscribe(filter, qos4(qos)).await.map_err(|_| Closed),
            Client::V5(c) => c.subscribe(filter, qos5(qos)).await.map_err(|_| Closed),
        }
    }

    /// [`Client::subscribe`] without the retained messages under `filter` (MQTT 5
    /// Retain Handling 2); MQTT 3.1.1 has no such option, and gets them.
    pub async fn subscribe_live(&self, filter: String, qos: Qos) -> Result<(), Closed> {
        match self {
            Client::V311(c) => c.subscribe(filter, qos4(qos)).await.map_err(|_| Closed),
            Client::V5(c) => {
                let mut f = p5::Filter::new(filter, qos5(qos));
                f.retain_forward_rule = p5::RetainForwardRule::Never;
                c.subscribe_many([f]).await.map_err(|_| Closed)
            }
        }
    }

    pub async fn unsubscribe(&self, filter: String) -> Result<(), Closed> {
        match self {
            Client::V311(c) => c.unsubscribe(filter).await.map_err(|_| Closed),
            Client::V5(c) => c.unsubscribe(filter).await.map_err(|_| Closed),
        }
    }

    /// Acknowledges the incoming QoS 1 publish `pkid`, through the request channel.
    pub async fn ack(&self, pkid: u16) -> Result<(), Closed> {
        match self {
            Client::V311(c) => {
                let mut p = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::new());
                p.pkid = pkid;
                c.ack(&p).await.map_err(|_| Closed)
            }
            Client::V5(c) => {
                let mut p = p5::Publish::new("", QoS5::AtLeastOnce, Vec::new(), None);
                p.pkid = pkid;
                c.ack(&p).await.map_err(|_| Closed)
            }
        }
    }

    /// Publishes an empty QoS 0 message to `topic` without waiting (from the poll
    /// task, which must never await the client). `false` when rumqttc's request
    /// channel is full: something else is about to go out then anyway.
    pub fn try_nudge(&self, topic: &str) -> bool {
        match self {
            Client::V311(c) => c.try_publish(topic, rumqttc::QoS::AtMostOnce, false, Vec::new()).is_ok(),
            Client::V5(c) => c.try_publish(topic, QoS5::AtMostOnce, false, Bytes::new()).is_ok(),
        }
    }

    pub async fn disconnect(&self) -> Result<(), Closed> {
        match self {
            Client::V311(c) => c.disconnect().await.map_err(|_| Closed),
            Client::V5(c) => c.disconnect().await.map_err(|_| Closed),
        }
    }
}

impl EventLoop {
    /// The next event that matters; `Ok(None)` for the ones that do not (other acks,
    /// pings, our own outgoing packets).
    ///
    /// A publish whose packet id is still in flight is parked by rumqttc as a
    /// "collision", and rumqttc takes no new request until that id is acked. Its
    /// clean-up after an error keeps the parked publish there while it forgets the
    /// ids in flight, so after a reconnect the ack never comes, and nothing is sent
    /// until two keep-alives later rumqttc gives up on the collision. Connections
    /// that break in quick succession with many publishes in flight (a broker that
    /// breaks the connection at each oversized chunk) got stuck for a minute that
    /// way. So after an error the parked publish joins the others to send again.
    ///
    /// Under MQTT 3.1.1 a packet larger than our limit ends the connection, and the
    /// broker cannot be told the limit (MQTT 5 announces it, and the broker then
    /// drops such packets for us). With a persistent session the broker keeps an
    /// oversized QoS 1 message and sends it again at every reconnect: one such
    /// publish, by anyone allowed to publish on a topic we subscribe to, would keep
    /// a receiver off the broker for good. So after that error the next connection
    /// starts a clean session, which drops the message (the protocol repairs what
    /// else the session held), and the one after it is persistent again.
    pub async fn poll(&mut self) -> Result<Option<Incoming>, Failure> {
        match self {
            EventLoop::V311 { el, persistent, held, acked } => {
                use rumqttc::{Event, Outgoing, Packet};
                // rumqttc reads a batch of packets at once and hands them out one a
                // poll; a poll with none left over reads a new batch, acking its
                // publishes or not as `manual_acks` says then.
                if el.state.events.is_empty() {
                    *acked = !el.state.manual_acks;
                }
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        el.mqtt_options.set_clean_session(!*persistent);
                        // rumqttc sends what it held again only into the same session.
                        let held = std::mem::take(held);
                        let dropped = if ack.session_present { Vec::new() } else { held };
                        Ok(Some(Incoming::ConnAck {
                            info: ConnAckInfo {
                                session_present: ack.session_present,
                                retain_available: true,
                                ..ConnAckInfo::default()
                            },
                            dropped: Dropped::V311(dropped),
                        }))
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let qos = if p.qos == rumqttc::QoS::AtMostOnce { Qos::AtMostOnce } else { Qos::AtLeastOnce };
                        let ack = (qos == Qos::AtLeastOnce && !*acked).then_some(p.pkid);
                        Ok(Some(Incoming::Publish { topic: p.topic, payload: p.payload, qos, ack, retain: p.retain }))
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => Ok(Some(Incoming::PubAck)),
                    Ok(Event::Incoming(Packet::SubAck(_) | Packet::UnsubAck(_))) => Ok(Some(Incoming::SubAck)),
                    // QoS 0 publishes have no packet id.
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => Ok(Some(Incoming::PublishSent)),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Some(Incoming::DisconnectSent)),
                    Ok(_) => Ok(None),
                    Err(e) => {
                        // rumqttc has just moved what it will send again into `pending`.
                        keep4(el, held);
                        if *persistent && is_oversized4(&e) {
                            tracing::debug!("oversized packet from the broker; the next session starts clean");
                            el.mqtt_options.set_clean_session(true);
                        }
                        Err(failure4(e))
                    }
                }
            }
            EventLoop::V5 { el, held, acked } => {
                use rumqttc::v5::Event;
                use rumqttc::Outgoing;
                if el.state.events.is_empty() {
                    *acked = !el.state.manual_acks;
                }
                match el.poll().await {
                    Ok(Event::Incoming(p5::Packet::ConnAck(ack))) => {
                        let props = ack.properties.as_ref();
                        let held = std::mem::take(held);
                        let dropped = if ack.session_present { Vec::new() } else { held };
                        Ok(Some(Incoming::ConnAck {
                            info: ConnAckInfo {
                                session_present: ack.session_present,
                                max_packet_size: props.and_then(|p| p.max_packet_size),
                                receive_maximum: props.and_then(|p| p.receive_max),
                                retain_available: props.and_then(|p| p.retain_available) != Some(0),
                            },
                            dropped: Dropped::V5(dropped),
                        }))
                    }
                    Ok(Event::Incoming(p5::Packet::Publish(p))) => {
                        // The spec makes topics UTF-8; a broker that breaks that sent
                        // nothing of ours, but a QoS 1 publish still wants its ack.
                        let topic = String::from_utf8(p.topic.to_vec()).unwrap_or_default();
                        let qos = if p.qos == QoS5::AtMostOnce { Qos::AtMostOnce } else { Qos::AtLeastOnce };
                        let ack = (qos == Qos::AtLeastOnce && !*acked).then_some(p.pkid);
                        Ok(Some(Incoming::Publish { topic, payload: p.payload, qos, ack, retain: p.retain }))
                    }
                    // With an error reason too: the broker has decided, and sending
                    // the publish again would not change its mind.
                    Ok(Event::Incoming(p5::Packet::PubAck(_))) => Ok(Some(Incoming::PubAck)),
                    Ok(Event::Incoming(p5::Packet::SubAck(_) | p5::Packet::UnsubAck(_))) => Ok(Some(Incoming::SubAck)),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => Ok(Some(Incoming::PublishSent)),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Some(Incoming::DisconnectSent)),
                    Ok(_) => Ok(None),
                    Err(e) => {
                        keep5(el, held);
                        Err(failure5(e))
                    }
                }
            }
        }
    }

    /// Drops the connection although it has not failed (the broker stopped
    /// acknowledging our publishes, see `conn.rs`): the next [`EventLoop::poll`]
    /// connects again, after which everything unacknowledged is sent again, as
    /// after an error.
    pub fn abandon(&mut self) {
        match self {
            EventLoop::V311 { el, held, .. } => {
                el.clean();
                keep4(el, held);
            }
            EventLoop::V5 { el, held, .. } => {
                el.clean();
                keep5(el, held);
            }
        }
    }

    /// Queues what a new session dropped again, ahead of any new request. The
    /// publishes go out as new ones, with fresh packet ids: the broker has no
    /// session in which the old ids mean anything.
    pub fn requeue(&mut self, dropped: Dropped) {
        match (self, dropped) {
            (EventLoop::V311 { el, .. }, Dropped::V311(requests)) => {
                el.pending.extend(requests.into_iter().map(|r| match r {
                    rumqttc::Request::Publish(mut p) => {
                        p.pkid = 0;
                        p.dup = false;
                        rumqttc::Request::Publish(p)
                    }
                    other => other,
                }));
            }
            (EventLoop::V5 { el, .. }, Dropped::V5(requests)) => {
                el.pending.extend(requests.into_iter().map(|r| match r {
                    rumqttc::v5::Request::Publish(mut p) => {
                        p.pkid = 0;
                        p.dup = false;
                        rumqttc::v5::Request::Publish(p)
                    }
                    other => other,
                }));
            }
            // A `Dropped` only comes from `poll` of this same event loop.
            _ => unreachable!("dropped requests of the other mqtt version"),
        }
    }

    /// Whether rumqttc acks the QoS 1 publishes it reads from now on, as it reads
    /// them (the fastest way: in the same write as the rest of the batch). Off,
    /// their [`Incoming::Publish`] carry the packet id to ack.
    pub fn set_auto_ack(&mut self, on: bool) {
        match self {
            EventLoop::V311 { el, .. } => el.state.manual_acks = !on,
            EventLoop::V5 { el, .. } => el.state.manual_acks = !on,
        }
    }
}

impl Dropped {
    /// How many QoS 1 publishes were dropped.
    pub fn publishes(&self) -> usize {
        match self {
            Dropped::V311(r) => r.iter().filter(|r| matches!(r, rumqttc::Request::Publish(_))).count(),
            Dropped::V5(r) => r.iter().filter(|r| matches!(r, rumqttc::v5::Request::Publish(_))).count(),
        }
    }
}

/// After rumqttc's clean-up (an error, or [`EventLoop::abandon`]), which moved what
/// it will send again into `pending`: adds a publish parked on a packet-id
/// collision (see [`EventLoop::poll`]) and copies what is worth keeping into
/// `held`.
fn keep4(el: &mut rumqttc::EventLoop, held: &mut Vec<rumqttc::Request>) {
    if let Some(p) = el.state.collision.take() {
        el.pending.push_back(rumqttc::Request::Publish(p));
    }
    *held = el.pending.iter().filter(|r| held4(r)).cloned().collect();
}

/// [`keep4`] for MQTT 5.
fn keep5(el: &mut rumqttc::v5::EventLoop, held: &mut Vec<rumqttc::v5::Request>) {
    if let Some(p) = el.state.collision.take() {
        el.pending.push_back(rumqttc::v5::Request::Publish(p));
    }
    *held = el.pending.iter().filter(|r| held5(r)).cloned().collect();
}

/// True for the 3.1.1 requests worth keeping from a dropped session: QoS 1 publishes,
/// which the caller waits to see acknowledged, and a DISCONNECT, which it waits to
/// see go out. QoS 0 publishes promised nothing; subscriptions are the caller's to
/// restore.
fn held4(r: &rumqttc::Request) -> bool {
    match r {
        rumqttc::Request::Publish(p) => p.qos != rumqttc::QoS::AtMostOnce,
        rumqttc::Request::Disconnect(_) => true,
        _ => false,
    }
}

/// [`held4`] for MQTT 5.
fn held5(r: &rumqttc::v5::Request) -> bool {
    match r {
        rumqttc::v5::Request::Publish(p) => p.qos != QoS5::AtMostOnce,
        rumqttc::v5::Request::Disconnect => true,
        _ => false,
    }
}

/// `QuotaExceeded` as `quota exceeded`.
fn words(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn qos4(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
    }
}

fn qos5(q: Qos) -> QoS5 {
    match q {
        Qos::AtMostOnce => QoS5::AtMostOnce,
        Qos::AtLeastOnce => QoS5::AtLeastOnce,
    }
}

/// The innermost message of an error chain: rumqttc's messages repeat their
/// causes, so only the last one is kept.
fn root_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The innermost `io::Error` of a chain, if the chain ends in one.
fn root_io(e: &(dyn std::error::Error + 'static)) -> Option<io::Error> {
    let mut cur = e;
    loop {
        if let Some(io) = cur.downcast_ref::<io::Error>() {
            if io.get_ref().is_none() || cur.source().is_none() {
                return Some(io::Error::new(io.kind(), root_message(cur)));
            }
        }
        cur = cur.source()?;
    }
}

/// True for the error of an incoming 3.1.1 packet above our size limit.
fn is_oversized4(e: &rumqttc::ConnectionError) -> bool {
    matches!(
        e,
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(_)
        ))
    )
}

fn failure4(e: rumqttc::ConnectionError) -> Failure {
    use rumqttc::{ConnectReturnCode as C, ConnectionError as E};
    match e {
        E::ConnectionRefused(code) => Failure::Refused(
            match code {
                C::BadUserNamePassword => "bad user name or password",
                C::NotAuthorized => "not authorized",
                C::BadClientId => "client id rejected",
                C::RefusedProtocolVersion => "mqtt 3.1.1 not supported",
                C::ServiceUnavailable => "service unavailable",
                C::Success => "no reason given",
            }
            .to_owned(),
        ),
        E::RequestsDone => Failure::Closed,
        E::Io(io) => Failure::Connect(io_failure(io)),
        E::NetworkTimeout | E::FlushTimeout => {
            Failure::Connect(ConnectError::Io(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
        }
        E::Tls(t) => Failure::Connect(tls_failure(&t)),
        other => Failure::Connect(protocol_failure(&other)),
    }
}

fn failure5(e: rumqttc::v5::ConnectionError) -> Failure {
    use p5::ConnectReturnCode as C;
    use rumqttc::v5::ConnectionError as E;
    use rumqttc::v5::StateError;
    match e {
        E::ConnectionRefused(code) | E::MqttState(StateError::ConnFail { reason: code }) => {
            Failure::Refused(match code {
                C::BadUserNamePassword => "bad user name or password".to_owned(),
                C::NotAuthorized => "not authorized".to_owned(),
                C::ClientIdentifierNotValid | C::BadClientId => "client id rejected".to_owned(),
                C::UnsupportedProtocolVersion | C::RefusedProtocolVersion => "mqtt 5 not supported".to_owned(),
                C::Banned => "banned".to_owned(),
                C::ServerBusy | C::ServerUnavailable | C::ServiceUnavailable => "server unavailable".to_owned(),
                other => words(&format!("{other:?}")),
            })
        }
        E::RequestsDone => Failure::Closed,
        E::Io(io) => Failure::Connect(io_failure(io)),
        E::Timeout(_) => Failure::Connect(ConnectError::Io(io::Error::new(io::ErrorKind::TimedOut, "timed out"))),
        E::Tls(t) => Failure::Connect(tls_failure(&t)),
        other => Failure::Connect(protocol_failure(&other)),
    }
}

/// An I/O error, unless it carries a rustls error: tokio-rustls reports a failed
/// handshake (an untrusted certificate, say) as `io::Error`, and that is a TLS
/// failure, which retrying cannot fix.
fn io_failure(io: io::Error) -> ConnectError {
    match rustls_error(&io) {
        Some(tls) => ConnectError::Tls(tls.to_string()),
        None => ConnectError::Io(io),
    }
}

fn rustls_error(io: &io::Error) -> Option<&rumqttc::tokio_rustls::rustls::Error> {
    io.get_ref().and_then(|e| e.downcast_ref())
}

fn tls_failure(e: &rumqttc::TlsError) -> ConnectError {
    match e {
        // The handshake's own error, or a plain network error on the way to it.
        rumqttc::TlsError::Io(io) => match rustls_error(io) {
            Some(tls) => ConnectError::Tls(tls.to_string()),
            None => ConnectError::Io(io::Error::new(io.kind(), root_message(io))),
        },
        // Certificates or keys that do not load, a bad server name.
        other => ConnectError::Tls(root_message(other)),
    }
}

fn protocol_failure(e: &(dyn std::error::Error + 'static)) -> ConnectError {
    match root_io(e) {
        Some(io) => ConnectError::Io(io),
        None => ConnectError::Protocol(root_message(e)),
    }
}

#[cfg(test)]
mod tests;
