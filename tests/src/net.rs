//! Loopback ports: a free one, and one that refuses connections.

use super::*;

/// A TCP port on `127.0.0.1` that was free a moment ago.
///
/// Another process may take it before the caller binds it; [`Broker`] retries
/// with another port when that happens.
///
/// # Panics
///
/// If the OS gives no port.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((HOST, 0)).unwrap_or_else(|e| panic!("cannot bind {HOST}:0: {e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("no local address for {HOST}:0: {e}")).port()
}

/// A TCP port on `127.0.0.1` that refuses connections for as long as this
/// value lives: a socket is bound to it but never listens, so a connect gets
/// `ECONNREFUSED` at once.
///
/// Unlike a port that [`free_port`] found free a moment ago, no broker of a
/// test running in parallel can take it meanwhile: the socket is bound without
/// `SO_REUSEADDR`, so another `bind` to the port fails.
#[derive(Debug)]
pub struct ClosedPort {
    // Held only to keep the port bound.
    _socket: OwnedFd,
    port: u16,
}

impl ClosedPort {
    /// Bind a fresh port.
    ///
    /// # Panics
    ///
    /// If the OS gives no port.
    pub fn bind() -> ClosedPort {
        use rustix::net::{AddressFamily, SocketType};
        let fail = |what: &str, e: rustix::io::Errno| -> ! { panic!("cannot {what} a closed port on {HOST}: {e}") };
        let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)
            .unwrap_or_else(|e| fail("create a socket for", e));
        rustix::net::bind(&socket, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| fail("bind", e));
        let local = rustix::net::getsockname(&socket).unwrap_or_else(|e| fail("name", e));
        let port = SocketAddrV4::try_from(local).unwrap_or_else(|e| fail("read the address of", e)).port();
        ClosedPort { _socket: socket, port }
    }

    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}
