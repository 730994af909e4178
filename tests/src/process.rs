//! [`Process`]: a client program run in the background with its output
//! captured, and how tests find and run programs (`mqft`, mosquitto's clients).

use super::*;

/// A child process whose stdout and stderr are captured in the background,
/// so that a test can watch its output while it runs and never blocks on a
/// full pipe. Dropping it kills the process.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Start `command` with stdin closed and stdout/stderr captured.
    ///
    /// # Panics
    ///
    /// If it cannot be started.
    pub fn spawn(command: &mut Command) -> Process {
        let name = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        // Both pipes were just set to piped(), so both are present.
        if let Some(pipe) = child.stdout.take() {
            readers.push(capture(pipe, Arc::clone(&stdout)));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(capture(pipe, Arc::clone(&stderr)));
        }
        Process { name, child, stdout, stderr, readers }
    }

    /// Its stdout so far, invalid UTF-8 replaced.
    pub fn stdout(&self) -> String {
        lossy(&self.stdout)
    }

    /// How many bytes it has written to stdout so far (binary output included).
    pub fn stdout_len(&self) -> usize {
        self.stdout.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Its process id, for `/proc/<pid>/...`.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr so far, invalid UTF-8 replaced.
    pub fn stderr(&self) -> String {
        lossy(&self.stderr)
    }

    /// Whether it is still running (it has not exited, or has not been reaped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait up to `timeout` for it to exit; `None` if it is still running.
    pub fn wait_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// Wait up to `timeout` for it to exit and return its status and whole
    /// output.
    ///
    /// # Panics
    ///
    /// If it is still running after `timeout` (it is killed first; the
    /// message holds its output so far).
    pub fn finish_within(mut self, timeout: Duration) -> Output {
        let Some(status) = self.wait_within(timeout) else {
            self.kill();
            panic!(
                "{} did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout(),
                self.stderr()
            );
        };
        // The process has exited, so the pipes are at their end and the
        // readers finish.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let take = |buf: &Mutex<Vec<u8>>| std::mem::take(&mut *buf.lock().unwrap_or_else(|e| e.into_inner()));
        Output { status, stdout: take(&self.stdout), stderr: take(&self.stderr) }
    }

    /// Kill it (`SIGKILL`) and reap it; nothing happens if it already exited.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `mqft` command-line program under test: `$MQFT_BIN` if set, else the
/// `mqft` binary that cargo put next to this test binary's directory (a test
/// runs as `target/<profile>/deps/integration-<hash>`, the CLI is
/// `target/<profile>/mqft`).
///
/// `cargo test` does not build another package's binaries: build it first
/// with `cargo build -p mqft-cli`, which `scripts/test` does. A binary left
/// over from an older build is used as it is.
///
/// # Panics
///
/// If there is no such executable, saying how to build it.
pub fn mqft_bin() -> PathBuf {
    const BUILD_IT: &str = "build it first: cargo build -p mqft-cli (scripts/test does)";
    if let Some(path) = std::env::var_os("MQFT_BIN") {
        let path = PathBuf::from(path);
        assert!(is_executable(&path), "MQFT_BIN={} is not an executable file", path.display());
        return path;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("cannot locate the test executable: {e}"));
    // deps/ -> <profile>/
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| {
        panic!("the test executable {} is not in target/<profile>/deps; set MQFT_BIN", exe.display())
    });
    let path = profile_dir.join(format!("mqft{}", std::env::consts::EXE_SUFFIX));
    if !is_executable(&path) {
        panic!("no mqft binary at {} (or set MQFT_BIN): {BUILD_IT}", path.display());
    }
    path
}

/// An `mqft` command ([`mqft_bin`]) with `args`, shielded from the developer's
/// settings: every `MQFT_*` variable and `RUST_LOG` removed from its environment.
pub fn mqft_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(mqft_bin());
    for (var, _) in std::env::vars_os() {
        if var.to_str().is_some_and(|v| v.starts_with("MQFT_") || v == "RUST_LOG") {
            command.env_remove(var);
        }
    }
    command.args(args);
    command
}

/// A finished process's exit status and output as text, for assertion messages.
pub fn show_output(output: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The path of an installed program: `$PATH` first, then the `sbin`
/// directories Debian uses for daemons (`/usr/sbin/mosquitto` is not on a
/// non-root `$PATH`). `None` if it is nowhere.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    path_dirs.into_iter().chain(sbin).map(|dir| dir.join(name)).find(|path| is_executable(path))
}

/// Whether `path` is a file someone may execute.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A thread that appends everything `pipe` yields to `sink` until its end.
pub(crate) fn capture(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The pipe is gone: nothing more to capture.
                Err(_) => break,
            }
        }
    })
}

/// A captured output's text so far, invalid UTF-8 replaced.
pub(crate) fn lossy(buf: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
