//! `mqft demo`: a whole transfer in one process, on a machine with no broker.
//!
//! It starts rumqttd (an embeddable MQTT broker from the same project as our client
//! library, rumqttc) on a free loopback port, a receiver writing into `--out`, and a
//! sender, and moves one file between them with progress bars for both sides. The
//! embedded broker is only for this demonstration: real deployments use their own
//! broker (Mosquitto, EMQX, HiveMQ, ...).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressDrawTarget};
use mqft::proto::{HashState, ReceiverId};
use mqft::{Client, Config, MqttVersion, ReceiveEvent};

use crate::args::{make_out_dir, DemoArgs};
use crate::report::{display_path, Reporter};

pub async fn run(a: DemoArgs) -> Result<()> {
    let started = Instant::now();
    // Starting the broker, making the test image and the folders is file and
    // socket work: off the async workers (crate::blocking), as the check below.
    let port = crate::blocking(start_broker).await?;
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let mut tx_report = Reporter::with_multi(a.output, multi.clone(), "send ");
    let mut rx_report = Reporter::with_multi(a.output, multi, "recv ");
    rx_report.note(&format!("embedded broker (rumqttd) listening on 127.0.0.1:{port}"));

    // Everything the demo makes goes into a temporary directory, removed when
    // `scratch` drops (on errors too): the generated file, and the received copy
    // unless `--out` says where to keep it. Nothing lands in the working tree.
    let (file, size, out) = (a.file.clone(), a.size, a.out.clone());
    let (scratch, source, out) = crate::blocking(move || {
        let scratch = tempfile::Builder::new()
            .prefix("mqft-demo-")
            .tempdir()
            .with_context(|| format!("cannot create a directory in {}", std::env::temp_dir().display()))?;
        let source = match file {
            Some(f) => f,
            None => {
                let path = scratch.path().join("camera-0001.raw");
                generate(&path, size)?;
                path
            }
        };
        let out = match out {
            Some(out) => {
                make_out_dir(&out)?;
                out
            }
            None => {
                let out = scratch.path().join("received");
                std::fs::create_dir(&out).with_context(|| format!("cannot create {}", out.display()))?;
                out
            }
        };
        Ok((scratch, source, out))
    })
    .await?;
    if a.file.is_none() {
        rx_report.note(&format!("generated a {} test image", indicatif::HumanBytes(size)));
    }

    let mut cfg = Config::new("127.0.0.1", port);
    cfg.version = MqttVersion::V311;
    let client = Client::new(cfg);

    // The receiver first, so that it is listening when the manifest goes out.
    let mut ropts = mqft::ReceiveOptions::default();
    ropts.once = true;
    ropts.on_conflict = mqft::OnConflict::Overwrite;
    ropts.receiver_id = Some(ReceiverId::new("demo-receiver").expect("a valid receiver id"));
    let mut receiver = client.receive(out, ropts);
    loop {
        match receiver.next_event().await {
            Some(e @ ReceiveEvent::Connected { .. }) => {
                rx_report.receive_event(&e);
                break;
            }
            Some(e) => rx_report.receive_event(&e),
            None => break,
        }
    }
    let rx_task = tokio::spawn(async move {
        while let Some(e) = receiver.next_event().await {
            rx_report.receive_event(&e);
        }
        rx_report.finish();
        receiver.wait().await
    });

    let mut sender = client.send([source.clone()], mqft::SendOptions::default());
    while let Some(e) = sender.next_event().await {
        tx_report.send_event(&e);
    }
    tx_report.finish();
    let sent = sender.wait().await;
    let received = rx_task.await.map_err(|_| anyhow!("the receiver task failed"))?;
    sent?;
    let report = received?;
    let file = report.files.first().ok_or_else(|| anyhow!("the receiver ended without a file"))?;

    // Check for ourselves what the receiver already checked.
    let received_path = file.path.clone();
    let ((a_hash, size), (b_hash, _)) =
        crate::blocking(move || Ok((sha256_file(&source)?, sha256_file(&received_path)?))).await?;
    if a_hash != b_hash {
        bail!(mqft::Error::Integrity { path: file.path.clone(), detail: "demo copy differs".into() });
    }
    let secs = started.elapsed().as_secs_f64();
    if !a.output.quiet && !a.output.json {
        eprintln!(
            "\nreceived {} ({}) in {:.2} s, sha-256 {} matches the original",
            display_path(&file.path),
            indicatif::HumanBytes(size),
            secs,
            hex(&b_hash),
        );
        if a.out.is_none() {
            eprintln!("(a temporary copy, removed now; -o DIR keeps one)");
        }
        eprintln!("next: run `mqft receive` and `mqft send FILE` against your own broker (see README.md)");
    }
    crate::blocking(move || scratch.close().context("cannot remove the demo's temporary directory")).await
}

/// Starts rumqttd on a free loopback port (MQTT 3.1.1) and waits until it accepts
/// connections.
fn start_broker() -> Result<u16> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let server = rumqttd::ServerSettings {
        name: "demo-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            // Room for any chunk the runtime picks under MQTT 3.1.1.
            max_payload_size: 2 << 20,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
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
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new().name("rumqttd".into()).spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(e) = broker.start() {
            eprintln!("mqft: embedded broker stopped: {e}");
        }
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        if Instant::now() > deadline {
            bail!("the embedded broker did not start listening on {listen}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(port)
}

/// Writes `size` pseudo-random bytes (a stand-in for a camera image).
fn generate(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut state = 0x243f_6a88_85a3_08d3u64 ^ size;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            // xorshift64*: fast, and incompressible enough for a demo.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn sha256_file(path: &PathBuf) -> Result<([u8; 32], u64)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = HashState::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok((h.finish(), h.len()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
