//! `mqtts://`: a CA, server and client certificates made with openssl, and a
//! Mosquitto listener that requires client certificates.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mqft::proto::ReceiverId;
use mqft::{Client, Config, ErrorKind, ReceiveOptions, SendOptions, Tls};
use mqft_tests::{mqft_command, Broker, Process, HOST};
use tokio::time::timeout;

fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs: apt-get install -y openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, and a certificate signed by it for `cn` with the given extensions.
fn issue(dir: &Path, name: &str, cn: &str, ext: &str) {
    fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            .into_iter()
            .chain(["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &subj])
            .collect::<Vec<_>>(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

pub(crate) fn pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=mqft test ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    issue(
        dir,
        "server",
        "127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    issue(
        dir,
        "client",
        "mqft-client",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    // Mosquitto started as root may drop to its own user before it loads the
    // key (the harness's config keeps it root, but a config line could change
    // that): let it read these throwaway files.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        fs::set_permissions(entry.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// A broker whose listener speaks TLS with the certificates [`pki`] made in `p`,
/// and wants client certificates. (The lines follow the harness's `listener`
/// line, so they apply to it.)
fn tls_broker(p: &Path) -> Broker {
    Broker::builder()
        .config_line(format!("cafile {}", p.join("ca.crt").display()))
        .config_line(format!("certfile {}", p.join("server.crt").display()))
        .config_line(format!("keyfile {}", p.join("server.key").display()))
        .config_line("require_certificate true")
        .start()
}

/// Client TLS settings from the files in `p`: trust `ca`, and present the client
/// certificate with `key` as its key, if any.
fn client_tls(p: &Path, ca: &str, key: Option<&str>) -> Tls {
    let mut tls = Tls::default();
    tls.ca_file = Some(p.join(ca));
    if let Some(key) = key {
        tls.client_cert = Some(p.join("client.crt"));
        tls.client_key = Some(p.join(key));
    }
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_crosses_tls_with_client_certificates() {
    let pki_dir = tempfile::tempdir().unwrap();
    let p = pki_dir.path();
    pki(p);
    let broker = tls_broker(p);
    let url = format!("mqtts://{HOST}:{}", broker.port());

    let mut cfg = Config::from_url(&url).unwrap();
    cfg.tls = Some(client_tls(p, "ca.crt", Some("client.key")));
    let client = Client::new(cfg);

    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.path().join("secret.bin"), &data).unwrap();
    let mut opts = ReceiveOptions::default();
    opts.receiver_id = Some(ReceiverId::new("rx-tls").unwrap());
    opts.once = true;
    let rx = client.receive(out.path(), opts);
    let limit = Duration::from_secs(60);
    timeout(limit, client.send([src.path().join("secret.bin")], SendOptions::default()).wait()).await.unwrap().unwrap();
    timeout(limit, rx.wait()).await.unwrap().unwrap();
    assert_eq!(fs::read(out.path().join("secret.bin")).unwrap(), data);

    // Without our CA the server's certificate is not trusted: a broker error, at
    // once rather than after the connect timeout.
    let mut cfg = Config::from_url(&url).unwrap();
    // Any certificate that is not the CA as the trust anchor.
    cfg.tls = Some(client_tls(p, "client.crt", Some("client.key")));
    cfg.connect_timeout = Duration::from_secs(30);
    let started = std::time::Instant::now();
    let err = timeout(limit, Client::new(cfg).send([src.path().join("secret.bin")], SendOptions::default()).wait())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Broker, "{err}");
    assert!(matches!(err, mqft::Error::Unreachable { source: mqft::ConnectError::Tls(_), .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "a tls failure is not retried");

    // A missing key file is a local error before any connection.
    let mut cfg = Config::from_url(&url).unwrap();
    cfg.tls = Some(client_tls(p, "ca.crt", Some("nope.key")));
    let err = Client::new(cfg).send([src.path().join("secret.bin")], SendOptions::default()).wait().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_or_a_wrong_host_name_is_refused() {
    let pki_dir = tempfile::tempdir().unwrap();
    let p = pki_dir.path();
    pki(p);
    let broker = tls_broker(p);
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("x.bin"), b"x").unwrap();
    let limit = Duration::from_secs(60);
    let send = |cfg: Config| {
        let file = src.path().join("x.bin");
        async move { timeout(limit, Client::new(cfg).send([file], SendOptions::default()).wait()).await.unwrap() }
    };

    // The broker wants a client certificate and gets none: a broker error once
    // the connect timeout is up (under TLS 1.3 the client learns of the refusal
    // only when it reads, which looks like a broken connection).
    let mut cfg = Config::from_url(&format!("mqtts://{HOST}:{}", broker.port())).unwrap();
    cfg.tls = Some(client_tls(p, "ca.crt", None));
    cfg.connect_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let err = send(cfg).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Broker, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    // The server's certificate names 127.0.0.1 only; reached as `localhost` it
    // does not match, which is a TLS error at once, whatever the CA.
    let mut cfg = Config::from_url(&format!("mqtts://localhost:{}", broker.port())).unwrap();
    cfg.tls = Some(client_tls(p, "ca.crt", Some("client.key")));
    cfg.connect_timeout = Duration::from_secs(30);
    let started = std::time::Instant::now();
    let err = send(cfg).await.unwrap_err();
    assert!(matches!(err, mqft::Error::Unreachable { source: mqft::ConnectError::Tls(_), .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "a tls failure is not retried");
}

/// With no CA file, the system's CA certificates are trusted, found the way
/// OpenSSL finds them: here through `SSL_CERT_DIR`, a directory holding only the
/// test CA (the hand-written search before rustls-native-certs knew
/// `SSL_CERT_FILE` and fixed paths only, so it failed the handshake: exit 3). The
/// client certificate is presented too, parsed by the same path. Connected, the
/// send waits for a receiver that never comes: exit 4.
#[test]
fn without_a_ca_file_the_system_roots_from_ssl_cert_dir_are_trusted() {
    let pki_dir = tempfile::tempdir().unwrap();
    let p = pki_dir.path();
    pki(p);
    let roots = p.join("roots");
    fs::create_dir(&roots).unwrap();
    fs::copy(p.join("ca.crt"), roots.join("test-ca.pem")).unwrap();
    let broker = tls_broker(p);
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("x.bin");
    fs::write(&file, b"x").unwrap();
    let url = format!("mqtts://{HOST}:{}", broker.port());
    let mut command = mqft_command(["send".as_ref(), file.as_os_str(), "-b".as_ref(), url.as_ref()]);
    command
        .args(["--timeout", "1", "--connect-timeout", "5", "--cert"])
        .arg(p.join("client.crt"))
        .arg("--key")
        .arg(p.join("client.key"))
        .env_remove("SSL_CERT_FILE")
        .env("SSL_CERT_DIR", &roots);
    let output = Process::spawn(&mut command).finish_within(Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "connected, then no receiver; stderr:\n{stderr}");
    assert!(stderr.contains("no receiver"), "{stderr}");
}
