//! Connection settings, broker URLs, and the chunk-size rule.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::proto::{self, Prefix};
use crate::Error;

// The chunk-size rule has its own module; its functions are part of this one's API.
pub use crate::packet::{chunk_packet_size, settle_chunk_size};

/// The largest chunk `ChunkSize::Auto` picks under MQTT 5, even when the broker
/// allows larger packets: big enough that per-message costs vanish, small enough
/// that a window of chunks stays a few dozen MiB.
pub const AUTO_CHUNK_CAP: u32 = 256 << 10;

/// The chunk size `ChunkSize::Auto` picks under MQTT 3.1.1, whose CONNACK does not
/// say how large a packet the broker takes. 64 KiB passes every broker we know of.
pub const V311_DEFAULT_CHUNK: u32 = 64 << 10;

/// Room for the MQTT header and the chunk header above the chunk size, in the
/// packet limits this crate sets on its own clients.
pub const PACKET_OVERHEAD: u32 = 64 << 10;

/// How long a send waits for an unreachable broker to come back, unless
/// [`Config::broker_timeout`] says otherwise.
pub const DEFAULT_SEND_BROKER_TIMEOUT: Duration = Duration::from_secs(60);

/// The default broker port without TLS.
pub const DEFAULT_PORT: u16 = 1883;
/// The default broker port with TLS.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// How to reach and talk to the broker.
///
/// Build one with [`Config::new`] or [`Config::from_url`], then adjust the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Broker host name or IP address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name and password, if the broker wants them.
    pub credentials: Option<Credentials>,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<Tls>,
    /// MQTT protocol version: 5 by default.
    pub version: MqttVersion,
    /// The topic prefix all transfers live under.
    pub prefix: Prefix,
    /// The MQTT client id. By default a sender picks a random one and a receiver a
    /// stable one derived from its receiver id, so that its session survives a
    /// restart.
    pub client_id: Option<String>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
    /// How long the first connection may take, retries included, before the
    /// broker counts as unreachable.
    pub connect_timeout: Duration,
    /// How long the broker may stay unreachable, once connected, before giving up
    /// with [`crate::Error::BrokerLost`]. `None` (the default) means
    /// [`DEFAULT_SEND_BROKER_TIMEOUT`] for a send, and never for a receive: a
    /// receiver is often a service that should ride out a broker's restart. Set it
    /// to give up on a receive too, or to change a send's limit.
    pub broker_timeout: Option<Duration>,
    /// The longest pause between reconnection attempts (the pause doubles from
    /// 100 ms up to this).
    pub max_backoff: Duration,
    /// How long the broker keeps a receiver's session (subscriptions and queued
    /// messages) after a disconnect. MQTT 5 only; 3.1.1 brokers keep it until the
    /// client comes back or the broker's own limit.
    pub session_expiry: Duration,
    /// The most bytes per second this client publishes, control messages and MQTT
    /// headers included (see `pace.rs`); `None`: no limit.
    pub rate: Option<u64>,
    /// The most publishes per second this client sends, control messages
    /// included; `None`: no limit.
    pub max_publish_rate: Option<u32>,
    /// After a PUBACK that leaves nothing of ours unacknowledged, publish an empty
    /// QoS 0 message to `<prefix>/nudge`, which no mqft client subscribes to, so
    /// that the TCP ACK of the PUBACK goes out at once rather than after the
    /// kernel's delayed-ACK timer: a broker without `TCP_NODELAY` (Mosquitto as
    /// installed) holds its next small write back until then, about 40 ms per
    /// request-answer exchange (docs/PERFORMANCE.md). On by default; never while a
    /// rate limit is set (a nudge is a publish the limit would have to count).
    /// The CLI turns it off with `MQFT_NUDGE=0`.
    pub nudge: bool,
}

impl Config {
    /// Settings for a plain-TCP broker at `host:port` with every default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Config {
            host: host.into(),
            port,
            credentials: None,
            tls: None,
            version: MqttVersion::V5,
            prefix: Prefix::default(),
            client_id: None,
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            broker_timeout: None,
            max_backoff: Duration::from_secs(30),
            session_expiry: Duration::from_secs(3600),
            rate: None,
            max_publish_rate: None,
            nudge: true,
        }
    }

    /// Settings from a URL: `mqtt://[user[:password]@]host[:port]` for plain TCP
    /// (port 1883 by default), `mqtts://...` for TLS with the system's CA
    /// certificates (port 8883 by default). `tcp://` and `ssl://` are accepted as
    /// aliases, and a bare `host[:port]` means `mqtt://`. User and password may be
    /// percent-encoded; an IPv6 address goes in brackets: `mqtt://[::1]:1883`.
    ///
    /// ```
    /// let cfg = mqft::Config::from_url("mqtts://dev:s%40crt@broker.example:8884")?;
    /// assert_eq!((cfg.host.as_str(), cfg.port), ("broker.example", 8884));
    /// assert_eq!(cfg.credentials.unwrap().password.as_deref(), Some("s@crt"));
    /// assert!(cfg.tls.is_some());
    /// # Ok::<(), mqft::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self, Error> {
        // The URL may carry a password: errors show it without.
        let bad = |why: &str| Error::usage(format!("bad broker url '{}': {why}", redact_url(url)));
        let (tls, rest) = match url.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "mqtt" | "tcp" => (false, rest),
                "mqtts" | "ssl" => (true, rest),
                _ => return Err(bad("scheme must be mqtt:// or mqtts://")),
            },
            None => (false, url),
        };
        let (authority, tail) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !(tail.is_empty() || tail == "/") {
            return Err(bad("no path or query is allowed"));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                let username = percent_decode(user).ok_or_else(|| bad("bad percent-encoding in the user name"))?;
                let password = match pass {
                    Some(p) => Some(percent_decode(p).ok_or_else(|| bad("bad percent-encoding in the password"))?),
                    None => None,
                };
                if username.is_empty() {
                    return Err(bad("empty user name"));
                }
                Some(Credentials { username, password })
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '[' in the host"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after the IPv6 address"))?),
            };
            (host, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => {
                if tls {
                    DEFAULT_TLS_PORT
                } else {
                    DEFAULT_PORT
                }
            }
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad("port must be 1 to 65535"))?,
        };
        let mut cfg = Config::new(host, port);
        cfg.credentials = credentials;
        cfg.tls = tls.then(Tls::default);
        Ok(cfg)
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `url` with the password of its user info, if any, replaced by `***`, for
/// messages. Works on URLs too broken to parse: everything between the first `:`
/// after the scheme and the last `@` before the host is taken for the password.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// A user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password; MQTT allows a user name without one.
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    // Keeps passwords out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// TLS settings (rustls). With no CA file, the system's CA bundle is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tls {
    /// PEM file of the CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, for brokers that want client
    /// certificates; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client's private key (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
    /// A directory whose files hold CA certificates (PEM) to trust, with
    /// `ca_file`'s if both are given (instead of the system's).
    pub ca_path: Option<PathBuf>,
    /// Verify nothing: any certificate, for any host name, is accepted. The
    /// connection is encrypted but anyone on the path can pose as the broker;
    /// for testing against a broker with a self-made certificate only.
    pub insecure: bool,
    /// The one TLS version to speak; `None` lets rustls pick (1.3, else 1.2).
    pub version: Option<crate::TlsVersion>,
}

/// The MQTT protocol version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5: the broker announces its maximum packet size, which sizes chunks.
    #[default]
    V5,
}

impl FromStr for MqttVersion {
    type Err = Error;
    /// Accepts `5`, `v5`, `5.0`, `3.1.1`, `311`, `v3.1.1` and `4`, and
    /// `mosquitto_pub -V`'s `mqttv5` and `mqttv311`. MQTT 3.1 (`mqttv31`) is
    /// refused: rumqttc does not speak it.
    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.to_ascii_lowercase();
        match lower.strip_prefix("mqtt").unwrap_or(&lower).trim_start_matches('v') {
            "5" | "5.0" => Ok(MqttVersion::V5),
            "3.1.1" | "311" | "4" => Ok(MqttVersion::V311),
            "31" | "3.1" | "3" => {
                Err(Error::usage(format!("mqtt version '{s}' (3.1) is not supported: use 5 or 311 (3.1.1)")))
            }
            _ => Err(Error::usage(format!("unknown mqtt version '{s}': use 5, 311, mqttv5 or mqttv311"))),
        }
    }
}

impl fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        })
    }
}

/// How large the chunks of a file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChunkSize {
    /// Under MQTT 5, as large as the broker's Maximum Packet Size allows, up to
    /// [`AUTO_CHUNK_CAP`]; under 3.1.1, [`V311_DEFAULT_CHUNK`]. When chunks of that
    /// size do not get through (a broker that drops or cuts off messages over a
    /// limit it does not announce), the sender starts the file again with half the
    /// size, down to 4 KiB, and the [`crate::Client`] remembers the size for that
    /// broker ([`crate::SendEvent::ChunkSizeLowered`]).
    #[default]
    Auto,
    /// Exactly this many bytes; a size the broker does not accept is an error
    /// before anything is sent, and chunks that do not get through end the send
    /// ("no chunk got through").
    Fixed(u32),
}

impl FromStr for ChunkSize {
    type Err = Error;
    /// Accepts `auto`, a byte count, or a count with a `k`/`kib` or `m`/`mib` suffix
    /// (binary units): `65536`, `64k`, `1MiB`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::usage(format!("bad chunk size '{s}': use auto, or bytes like 65536, 64k, 1m"));
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(ChunkSize::Auto);
        }
        let bytes = parse_bytes(s).and_then(|b| u32::try_from(b).ok()).ok_or_else(bad)?;
        if bytes == 0 || bytes > proto::wire::MAX_CHUNK_SIZE {
            return Err(Error::usage(format!(
                "chunk size must be 1 to {} bytes, not {s}",
                proto::wire::MAX_CHUNK_SIZE
            )));
        }
        Ok(ChunkSize::Fixed(bytes))
    }
}

/// A byte count: digits, then optionally a binary unit, in any case and with or
/// without a space: `b`, `k`/`kb`/`kib`, `m`/`mb`/`mib`, `g`/`gb`/`gib`. So
/// `65536`, `64k` and `64 KiB` are the same. `None` for anything else, or a count
/// past `u64::MAX`. The one parser for every size the library and the CLI take.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = Config::from_url("mqtt://user:pa%3Ass@host.example:1884").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("host.example", 1884));
        let cred = c.credentials.unwrap();
        assert_eq!(cred.username, "user");
        assert_eq!(cred.password.as_deref(), Some("pa:ss"));
        assert!(c.tls.is_none());

        let c = Config::from_url("mqtts://broker").unwrap();
        assert_eq!(c.port, DEFAULT_TLS_PORT);
        assert_eq!(c.tls, Some(Tls::default()));
        assert!(c.credentials.is_none());

        let c = Config::from_url("localhost").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("localhost", DEFAULT_PORT));

        let c = Config::from_url("tcp://[::1]:1999/").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 1999));
        assert_eq!(c.addr(), "[::1]:1999");

        let c = Config::from_url("ssl://only-user@h").unwrap();
        assert_eq!(c.credentials.unwrap().password, None);

        // '@' in a password must be encoded, but the last '@' separates the host.
        let c = Config::from_url("mqtt://u:a@b@h:1").unwrap();
        assert_eq!(c.credentials.unwrap().password.as_deref(), Some("a@b"));
        assert_eq!(c.host, "h");

        for bad in [
            "http://h",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:65536",
            "mqtt://h:x",
            "mqtt://h/path",
            "mqtt://h?x=1",
            "mqtt://[::1",
            "mqtt://[::1]x",
            "mqtt://u:%zz@h",
            "mqtt://:p@h",
        ] {
            let e = Config::from_url(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Usage, "{bad}");
        }
    }

    #[test]
    fn bad_urls_do_not_repeat_their_password() {
        for url in [
            "mqtt://u:hunter2@h:0",
            "http://u:hunter2@h",
            "mqtt://u:hunter2@h/path",
            "mqtt://u:hun@ter2@h:x",
            "u:hunter2@h:99999",
            "mqtt://u:%zzhunter2@h",
            "mqtt://:hunter2@h",
            "mqtt://u:hunter2@[::1",
        ] {
            let e = Config::from_url(url).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("ter2"), "{url}: {e}");
            assert!(e.contains("***@"), "{url}: {e}");
        }
        assert_eq!(redact_url("mqtt://h:1883"), "mqtt://h:1883");
        assert_eq!(redact_url("mqtt://user@h"), "mqtt://user@h");
    }

    #[test]
    fn passwords_stay_out_of_debug() {
        let c = Credentials { username: "u".into(), password: Some("hunter2".into()) };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn versions_and_sizes_parse() {
        assert_eq!("5".parse::<MqttVersion>().unwrap(), MqttVersion::V5);
        assert_eq!("v3.1.1".parse::<MqttVersion>().unwrap(), MqttVersion::V311);
        assert!("3".parse::<MqttVersion>().is_err());
        assert_eq!("mqttv5".parse::<MqttVersion>().unwrap(), MqttVersion::V5);
        assert_eq!("MQTTv311".parse::<MqttVersion>().unwrap(), MqttVersion::V311);
        assert!("mqttv31".parse::<MqttVersion>().unwrap_err().to_string().contains("not supported"));
        assert_eq!("auto".parse::<ChunkSize>().unwrap(), ChunkSize::Auto);
        assert_eq!("65536".parse::<ChunkSize>().unwrap(), ChunkSize::Fixed(65536));
        assert_eq!("64k".parse::<ChunkSize>().unwrap(), ChunkSize::Fixed(65536));
        assert_eq!("1MiB".parse::<ChunkSize>().unwrap(), ChunkSize::Fixed(1 << 20));
        for bad in ["0", "", "k", "17m", "5x", "-1", "99999999999999999999"] {
            assert!(bad.parse::<ChunkSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_counts_parse_in_binary_units() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("64k"), Some(65536));
        assert_eq!(parse_bytes(" 64 KiB "), Some(65536));
        assert_eq!(parse_bytes("20M"), Some(20 << 20));
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("7b"), Some(7));
        for bad in ["", "x", "k", "5t", "-1", "1.5m", "99999999999999999999", "17179869184g"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }
}
