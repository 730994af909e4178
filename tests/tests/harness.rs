//! The harness itself: brokers start, die, stop and restart the way the other
//! tests rely on.

use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use mqft_tests::{mosquitto_client, wait_until, Broker, Process, HOST};

const WAIT: Duration = Duration::from_secs(10);
const TOPIC: &str = "mqft/test/harness";

/// Whether something accepts TCP connections at the broker's address.
fn accepts(broker: &Broker) -> bool {
    TcpStream::connect_timeout(&broker.addr(), Duration::from_millis(200)).is_ok()
}

/// A mosquitto client command aimed at `broker` and [`TOPIC`].
fn client(broker: &Broker, program: &str) -> Command {
    let mut command = Command::new(mosquitto_client(program));
    command.args(["-h", HOST, "-p", &broker.port().to_string(), "-t", TOPIC, "-q", "1", "-V", "5"]);
    command
}

/// Run `mosquitto_pub` with `args` and assert that it succeeds.
fn publish(broker: &Broker, args: &[&str]) {
    let output = Process::spawn(client(broker, "mosquitto_pub").args(args)).finish_within(WAIT);
    assert!(output.status.success(), "mosquitto_pub failed: {}\n{}", output.status, broker.log());
}

/// Subscribe, then publish `"sentinel"`; return the first message
/// `mosquitto_sub` prints. A retained message comes before the sentinel.
fn first_message(broker: &Broker) -> String {
    let subscriber = Process::spawn(client(broker, "mosquitto_sub").args(["-i", "harness-sub", "-C", "1", "-W", "20"]));
    assert!(
        wait_until(WAIT, || broker.has_subscription("harness-sub", TOPIC)),
        "mosquitto_sub did not subscribe: {}\n{}",
        subscriber.stderr(),
        broker.log()
    );
    publish(broker, &["-m", "sentinel"]);
    let Output { status, stdout, .. } = subscriber.finish_within(WAIT);
    assert!(status.success(), "mosquitto_sub: {status}");
    String::from_utf8_lossy(&stdout).trim_end().to_owned()
}

#[test]
fn broker_listens_on_loopback_and_restarts_on_the_same_port_after_a_kill() {
    let mut broker = Broker::start();
    let port = broker.port();
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{port}"));
    assert!(broker.addr().ip().is_loopback());
    assert!(accepts(&broker));
    assert!(broker.log().contains(" running"), "log: {}", broker.log());

    broker.kill();
    assert!(!broker.is_running());
    assert!(wait_until(WAIT, || !accepts(&broker)), "the port still accepts after SIGKILL");

    broker.restart();
    assert_eq!(broker.port(), port);
    assert!(broker.is_running());
    assert!(accepts(&broker));
    assert_eq!(first_message(&broker), "sentinel");
}

#[test]
fn persistence_keeps_retained_messages_across_a_clean_stop() {
    let mut broker = Broker::builder().persistence(true).start();
    publish(&broker, &["-r", "-m", "kept"]);

    let status = broker.stop().expect("it was running");
    assert!(status.success(), "mosquitto exit status {status}\n{}", broker.log());
    assert!(broker.dir().join("mosquitto.db").is_file(), "no database written\n{}", broker.log());

    broker.restart();
    assert_eq!(first_message(&broker), "kept", "log:\n{}", broker.log());
}

#[test]
fn without_persistence_a_restart_forgets_retained_messages() {
    let mut broker = Broker::start();
    publish(&broker, &["-r", "-m", "forgotten"]);
    broker.restart();
    assert_eq!(first_message(&broker), "sentinel", "log:\n{}", broker.log());
}

#[test]
fn dropping_the_broker_kills_it() {
    let broker = Broker::start();
    let addr = broker.addr();
    drop(broker);
    assert!(
        wait_until(WAIT, || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()),
        "{addr} still accepts after the broker was dropped"
    );
}

#[test]
fn a_closed_port_refuses_connections_and_cannot_be_taken() {
    let closed = mqft_tests::ClosedPort::bind();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], closed.port()));
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect_err("nothing listens there");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // std's listener sets SO_REUSEADDR, as mosquitto does: still refused.
    assert!(std::net::TcpListener::bind(addr).is_err(), "another socket took the closed port");
}
