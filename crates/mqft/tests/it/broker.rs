//! A Mosquitto broker of the test's own: a free loopback port, a generated config
//! in a temporary directory, and the process killed on drop.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "mosquitto is not installed: apt-get install -y mosquitto mosquitto-clients";

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker with the base config.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a broker with `extra` lines appended to its config.
    pub fn start_with(extra: &str) -> Self {
        let bin = find_mosquitto().unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}\n"))
            .expect("write mosquitto.conf");
        let log = fs::File::create(dir.path().join("mosquitto.log")).expect("log file");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL_HINT}", bin.display()));
        let mut broker = Mosquitto { child, port, dir };
        broker.wait_ready();
        broker
    }

    /// Kills the broker and starts it again on the same port with the same config:
    /// without persistence it forgets every session, subscription and retained
    /// message.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let bin = find_mosquitto().unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let log = fs::OpenOptions::new().append(true).open(self.dir.path().join("mosquitto.log")).expect("log file");
        self.child = Command::new(&bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.wait_ready();
    }

    /// Polls the port until the broker accepts connections, within a deadline.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mosquitto exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "mosquitto did not listen on {} in time:\n{}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto` on PATH, or in /usr/sbin where Debian puts it (often not on a
/// user's PATH).
fn find_mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}
