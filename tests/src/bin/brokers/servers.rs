//! The four brokers of the matrix, each started on free loopback ports in a temp
//! dir of its own and stopped when dropped: Mosquitto (through the harness's
//! [`mqft_tests::Broker`]), rumqttd (the `mqft-rumqttd` binary beside this one),
//! NATS (one node, or a cluster of three) and RabbitMQ with its MQTT plugin.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mqft_tests::{find_program, wait_until, Broker, Process, HOST};
use tempfile::TempDir;

/// The packet limit of the packet-limited brokers: 128 KiB, AWS IoT's message size
/// limit, in each broker's own setting.
pub const PACKET_LIMIT: u32 = 128 << 10;

/// How long a broker may take to accept MQTT connections. RabbitMQ needs ~10 s on
/// an idle machine, a NATS cluster a few seconds to elect its JetStream leader.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a broker may take to exit after `SIGTERM` before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// An MQTT protocol version, as `mqft -V` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl Version {
    pub fn flag(self) -> &'static str {
        match self {
            Version::V5 => "5",
            Version::V311 => "311",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Version::V5 => "MQTT 5",
            Version::V311 => "MQTT 3.1.1",
        }
    }
}

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mosquitto,
    Rumqttd,
    Nats,
    RabbitMq,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Mosquitto, Kind::Rumqttd, Kind::Nats, Kind::RabbitMq];

    /// The name on the command line (`--brokers`) and in topic prefixes.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Mosquitto => "mosquitto",
            Kind::Rumqttd => "rumqttd",
            Kind::Nats => "nats",
            Kind::RabbitMq => "rabbitmq",
        }
    }

    /// The versions the broker speaks.
    pub fn versions(self) -> &'static [Version] {
        match self {
            Kind::Mosquitto | Kind::Rumqttd => &[Version::V5, Version::V311],
            Kind::Nats | Kind::RabbitMq => &[Version::V311],
        }
    }

    /// The setting that limits packets, as the report names it.
    pub fn limit_setting(self) -> String {
        match self {
            Kind::Mosquitto => format!("max_packet_size {PACKET_LIMIT}"),
            Kind::Rumqttd => format!("max_payload_size {PACKET_LIMIT}"),
            Kind::Nats => format!("max_payload: {PACKET_LIMIT}"),
            Kind::RabbitMq => format!("max_message_size = {PACKET_LIMIT}"),
        }
    }

    /// Start one broker; `limited` applies [`PACKET_LIMIT`].
    pub fn start(self, limited: bool) -> Result<Server, String> {
        match self {
            Kind::Mosquitto => {
                let mut builder = Broker::builder();
                if limited {
                    builder = builder.max_packet_size(PACKET_LIMIT);
                }
                // The harness panics with the broker's log when mosquitto cannot start.
                let broker = std::panic::catch_unwind(move || builder.start())
                    .map_err(|_| "mosquitto did not start (its log is above)".to_owned())?;
                let port = broker.port();
                Ok(Server { v311: port, v5: Some(port), nodes: vec![Node::Mosquitto(broker)] })
            }
            Kind::Rumqttd => with_retries(|| start_rumqttd(limited)),
            Kind::Nats => {
                let mut nodes = with_retries(|| start_nats_nodes(1, limited))?;
                let node = nodes.remove(0);
                Ok(Server { v311: node.mqtt_port, v5: None, nodes: vec![Node::Daemon(node.daemon)] })
            }
            Kind::RabbitMq => with_retries(|| start_rabbitmq(limited)),
        }
    }
}

/// A running broker (or cluster), stopped when dropped.
pub struct Server {
    /// The MQTT 3.1.1 port (of the first node).
    v311: u16,
    /// The MQTT 5 port, if the broker speaks MQTT 5.
    v5: Option<u16>,
    nodes: Vec<Node>,
}

impl Server {
    /// The port of `version`'s listener, if the broker has one.
    pub fn port(&self, version: Version) -> Option<u16> {
        match version {
            Version::V5 => self.v5,
            Version::V311 => Some(self.v311),
        }
    }

    /// The last lines of every node's log, for a failure report.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let log = match node {
                Node::Mosquitto(broker) => broker.log(),
                Node::Daemon(daemon) => daemon.log(),
                Node::Rumqttd(process) => process.stderr(),
            };
            let all: Vec<&str> = log.lines().collect();
            for line in &all[all.len().saturating_sub(lines)..] {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }
}

/// One process of a broker.
enum Node {
    Mosquitto(Broker),
    /// `mqft-rumqttd`, killed when dropped.
    Rumqttd(Process),
    Daemon(Daemon),
}

/// A broker process the harness has no type for: its temp dir and log, stopped
/// with `SIGTERM` (then `SIGKILL`) when dropped, and `cleanup` run after.
struct Daemon {
    name: String,
    child: Option<Child>,
    dir: TempDir,
    log: PathBuf,
    /// Run after the process exited (RabbitMQ's epmd).
    cleanup: Option<Command>,
}

impl Daemon {
    fn spawn(name: &str, mut command: Command, dir: TempDir) -> Result<Daemon, String> {
        let log = dir.path().join(format!("{name}.out"));
        let out = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run {name} ({command:?}): {e}"))?;
        Ok(Daemon { name: name.to_owned(), child: Some(child), dir, log, cleanup: None })
    }

    fn log(&self) -> String {
        let mut text = String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned();
        // RabbitMQ logs to files of its own under the temp dir.
        if let Ok(entries) = fs::read_dir(self.dir.path().join("log")) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    text.push_str(&String::from_utf8_lossy(&fs::read(entry.path()).unwrap_or_default()));
                }
            }
        }
        text
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Wait until an MQTT 3.1.1 client can connect to `port` and publish at QoS 1
    /// (a TCP accept is not enough: NATS and RabbitMQ listen before their MQTT
    /// layer works).
    fn wait_mqtt(&mut self, port: u16) -> Result<(), String> {
        let publish = find_program("mosquitto_pub").ok_or("mosquitto_pub not found: install mosquitto-clients")?;
        let started = Instant::now();
        let mut died = false;
        let ready = wait_until(START_TIMEOUT, || {
            if !self.running() {
                died = true;
                return true;
            }
            TcpStream::connect((HOST, port)).is_ok()
                && Command::new(&publish)
                    .args(["-h", HOST, "-p", &port.to_string(), "-V", "311", "-q", "1", "-t", "mqft-probe/ready"])
                    .args(["-m", "ready", "-i", &format!("probe-{port}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        });
        if died || !ready {
            let why = if died { "exited" } else { "did not accept MQTT" };
            return Err(format!(
                "{} {why} on port {port} within {:.0?}; log:\n{}",
                self.name,
                started.elapsed(),
                tail(&self.log(), 40)
            ));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_child(&child);
            // ESRCH: it exited already; wait() below reaps it either way.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if !wait_until(STOP_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_)))) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if let Some(cleanup) = &mut self.cleanup {
            let _ = cleanup.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

/// `n` distinct TCP ports on `127.0.0.1` that were free a moment ago: all bound
/// at once, so that none repeats, then released for the broker to bind. Another
/// process may still take one meanwhile; [`with_retries`] starts again then.
fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind((HOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot bind {HOST}:0: {e}"))?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(|e| format!("no local address: {e}"))?.port();
    }
    Ok(ports)
}

/// How many times a broker is started on fresh ports when one of its ports was
/// taken between [`free_ports`] and its `bind` (other tests run on this machine).
const START_ATTEMPTS: usize = 4;

/// Run `start` until it does not fail for a port in use, at most
/// [`START_ATTEMPTS`] times.
fn with_retries<T>(mut start: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(e) if attempt < START_ATTEMPTS && port_taken(&e) => {
                eprintln!("brokers: a port was taken, starting again on others");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Whether a start failure's message (with the broker's log) says a port was in use.
fn port_taken(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("address already in use") || lower.contains("eaddrinuse")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn temp_dir(prefix: &str) -> Result<TempDir, String> {
    tempfile::Builder::new().prefix(prefix).tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))
}

/// rumqttd: the `mqft-rumqttd` binary cargo built beside this one.
fn start_rumqttd(limited: bool) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this program: {e}"))?;
    let program = exe.with_file_name(format!("mqft-rumqttd{}", std::env::consts::EXE_SUFFIX));
    if !program.exists() {
        return Err(format!("no {}: build it with cargo build -p mqft-tests --bins", program.display()));
    }
    let [v4, v5] = free_ports()?;
    let mut command = Command::new(&program);
    command.args(["--v4", &v4.to_string(), "--v5", &v5.to_string()]);
    if limited {
        command.args(["--max-payload", &PACKET_LIMIT.to_string()]);
    }
    let mut process = Process::spawn(&mut command);
    let started =
        wait_until(Duration::from_secs(20), || process.stdout().contains("listening") || !process.is_running());
    if !started || !process.is_running() {
        return Err(format!("mqft-rumqttd did not start:\n{}", process.stderr()));
    }
    Ok(Server { v311: v4, v5: Some(v5), nodes: vec![Node::Rumqttd(process)] })
}

/// One NATS node of [`start_nats_nodes`].
pub struct NatsNode {
    daemon: Daemon,
    pub mqtt_port: u16,
}

/// `count` NATS servers with MQTT (which needs JetStream and a server name), on
/// free loopback ports, in a cluster when `count > 1`, each with its own JetStream
/// store; ready when each accepts an MQTT QoS 1 publish (in a cluster that takes
/// the JetStream meta leader's election).
fn start_nats_nodes(count: usize, limited: bool) -> Result<Vec<NatsNode>, String> {
    if count > 3 {
        return Err(format!("at most 3 NATS nodes, not {count}"));
    }
    let program = find_program("nats-server").ok_or("nats-server not found: apt-get install nats-server")?;
    // Three ports a node: cluster routes, NATS clients, MQTT.
    let ports: [u16; 9] = free_ports()?;
    let cluster_ports = &ports[..count];
    let mut nodes = Vec::new();
    for i in 0..count {
        let dir = temp_dir("mqft-nats-")?;
        let (client_port, mqtt_port) = (ports[3 + 2 * i], ports[4 + 2 * i]);
        let mut config = String::new();
        let _ = writeln!(config, "server_name: mqft-n{i}");
        let _ = writeln!(config, "listen: {HOST}:{client_port}");
        if limited {
            let _ = writeln!(config, "max_payload: {PACKET_LIMIT}");
        }
        let _ = writeln!(config, "jetstream {{ store_dir: \"{}\" }}", dir.path().join("js").display());
        let _ = writeln!(config, "mqtt {{ listen: {HOST}:{mqtt_port} }}");
        if count > 1 {
            let routes: Vec<String> = cluster_ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, port)| format!("nats-route://{HOST}:{port}"))
                .collect();
            let _ = writeln!(
                config,
                "cluster {{ name: mqft, listen: {HOST}:{}, routes: [{}] }}",
                cluster_ports[i],
                routes.join(", ")
            );
        }
        let path = dir.path().join("nats.conf");
        fs::write(&path, config).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut command = Command::new(&program);
        command.arg("-c").arg(&path);
        let daemon = Daemon::spawn(&format!("nats-n{i}"), command, dir)?;
        nodes.push(NatsNode { daemon, mqtt_port });
    }
    for node in &mut nodes {
        node.daemon.wait_mqtt(node.mqtt_port)?;
    }
    Ok(nodes)
}

/// A NATS cluster of three nodes; MQTT 3.1.1 ports in node order.
pub struct NatsCluster {
    nodes: Vec<NatsNode>,
}

impl NatsCluster {
    pub fn start() -> Result<NatsCluster, String> {
        Ok(NatsCluster { nodes: with_retries(|| start_nats_nodes(3, false))? })
    }

    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node].mqtt_port
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.nodes.iter().map(|n| tail(&n.daemon.log(), lines)).collect::<Vec<_>>().join("\n")
    }
}

/// RabbitMQ with its MQTT plugin, as a node of its own: its own node name, AMQP,
/// distribution, epmd and MQTT ports on loopback, its database and logs in a temp
/// dir, the plugin enabled by an `enabled_plugins` file there. `guest` may log in
/// from loopback, which is where mqft connects from; MQTT clients without
/// credentials log in as `guest`.
fn start_rabbitmq(limited: bool) -> Result<Server, String> {
    let program = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if !program.exists() {
        return Err("rabbitmq-server not found: apt-get install rabbitmq-server".into());
    }
    let dir = temp_dir("mqft-rabbitmq-")?;
    let [amqp, dist, epmd, mqtt] = free_ports()?;
    let mut config = String::new();
    let _ = writeln!(config, "listeners.tcp.default = {HOST}:{amqp}");
    let _ = writeln!(config, "mqtt.listeners.tcp.default = {HOST}:{mqtt}");
    let _ = writeln!(config, "mqtt.allow_anonymous = true");
    if limited {
        let _ = writeln!(config, "max_message_size = {PACKET_LIMIT}");
    }
    let path = |name: &str| dir.path().join(name);
    fs::write(path("rabbitmq.conf"), config).map_err(|e| format!("cannot write rabbitmq.conf: {e}"))?;
    fs::write(path("enabled_plugins"), "[rabbitmq_mqtt].\n")
        .map_err(|e| format!("cannot write enabled_plugins: {e}"))?;
    let node = format!("mqft-{mqtt}@localhost");
    let mut command = Command::new(program);
    // Erlang writes its cookie to $HOME.
    command
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("RABBITMQ_NODENAME", &node)
        .env("RABBITMQ_NODE_IP_ADDRESS", HOST)
        .env("RABBITMQ_NODE_PORT", amqp.to_string())
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
        .env("RABBITMQ_LOG_BASE", path("log"))
        .env("RABBITMQ_PID_FILE", path("rabbitmq.pid"))
        .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
        // The distribution listener and epmd on loopback only, epmd on a port of
        // its own so that it is ours to stop.
        .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
        .env("ERL_EPMD_ADDRESS", HOST)
        .env("ERL_EPMD_PORT", epmd.to_string());
    let mut daemon = Daemon::spawn("rabbitmq", command, dir)?;
    // The node starts an epmd daemon that outlives it: stop it afterwards.
    let mut stop_epmd = Command::new(find_program("epmd").unwrap_or_else(|| PathBuf::from("epmd")));
    stop_epmd.args(["-port", &epmd.to_string(), "-kill"]);
    daemon.cleanup = Some(stop_epmd);
    daemon.wait_mqtt(mqtt)?;
    Ok(Server { v311: mqtt, v5: None, nodes: vec![Node::Daemon(daemon)] })
}
