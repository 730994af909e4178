//! `mqft-rumqttd`: rumqttd, the broker `mqft demo` embeds, as a process of its own,
//! so that the broker matrix (`tests/src/bin/brokers`) starts and stops it like
//! Mosquitto, NATS and RabbitMQ.
//!
//! ```text
//! mqft-rumqttd --v4 PORT --v5 PORT [--max-payload BYTES]
//! ```
//!
//! It listens on `127.0.0.1` with an MQTT 3.1.1 listener on `--v4` and an MQTT 5
//! listener on `--v5`, prints `listening` on stdout once both accept TCP
//! connections, and runs until it is killed. `--max-payload` is rumqttd's
//! `max_payload_size`: a client that publishes more is disconnected (rumqttd 0.20
//! announces no Maximum Packet Size in CONNACK).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// rumqttd's default-sized payload limit here: room for any chunk mqft picks
/// under MQTT 3.1.1 or 5 (the protocol's largest chunk is 16 MiB, plus headers).
const DEFAULT_MAX_PAYLOAD: usize = 17 << 20;

/// How long the listeners may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mqft-rumqttd: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut v4 = None;
    let mut v5 = None;
    let mut max_payload = DEFAULT_MAX_PAYLOAD;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--v4" => v4 = Some(value.parse::<u16>().map_err(|e| format!("--v4 {value}: {e}"))?),
            "--v5" => v5 = Some(value.parse::<u16>().map_err(|e| format!("--v5 {value}: {e}"))?),
            "--max-payload" => max_payload = value.parse().map_err(|e| format!("--max-payload {value}: {e}"))?,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; usage: mqft-rumqttd --v4 PORT --v5 PORT [--max-payload BYTES]"
                ))
            }
        }
    }
    let (v4, v5) = match (v4, v5) {
        (Some(v4), Some(v5)) => (v4, v5),
        _ => return Err("both --v4 PORT and --v5 PORT are needed".into()),
    };
    let listen = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let server = |name: &str, port| rumqttd::ServerSettings {
        name: name.into(),
        listen: listen(port),
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    // The router settings of `mqft demo` (crates/mqft-cli/src/demo.rs).
    let config = rumqttd::Config {
        router: rumqttd::RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            // Bounds the broker's memory: 8 segments of 16 MiB.
            max_segment_size: 16 << 20,
            max_segment_count: 8,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_owned(), server("v4", v4))])),
        v5: Some(HashMap::from([("v5".to_owned(), server("v5", v5))])),
        ..Default::default()
    };
    let broker = std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            broker.start().map_err(|e| e.to_string())
        })
        .map_err(|e| format!("cannot start the broker thread: {e}"))?;

    let deadline = Instant::now() + START_TIMEOUT;
    for port in [v4, v5] {
        // A connect can reach another process that took the port first; the
        // broker's thread then ends with its bind error, checked below.
        while TcpStream::connect(listen(port)).is_err() && !broker.is_finished() {
            if Instant::now() > deadline {
                return Err(format!("rumqttd did not start listening on 127.0.0.1:{port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if !broker.is_finished() {
        println!("listening");
    }
    match broker.join() {
        Ok(Ok(())) => Err("rumqttd stopped".into()),
        Ok(Err(e)) => Err(format!("rumqttd stopped: {e}")),
        Err(_) => Err("rumqttd panicked".into()),
    }
}
