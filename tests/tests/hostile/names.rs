//! Names.

use super::*;

/// Pieces hostile names are made of.
const FRAGMENTS: &[&str] = &[
    // Path syntax of every platform.
    "/",
    "\\",
    "..",
    ".",
    "../",
    "..\\",
    "C:",
    "C:\\",
    "c:x",
    "\\\\?\\",
    "\\\\server\\share\\",
    "~",
    "/etc/passwd",
    // Separator and dot look-alikes, some of which NFKC folds into the real thing.
    "\u{2215}",
    "\u{2044}",
    "\u{FF0F}",
    "\u{29F8}",
    "\u{FF3C}",
    "\u{2216}",
    "\u{FE68}",
    "\u{2025}",
    "\u{FF0E}",
    "\u{2105}",
    // NUL, controls and terminal escape sequences.
    "\0",
    "\x1b[2J",
    "\x1b]0;pwned\x07",
    "\x1b[31m",
    "\u{9b}6n",
    "\r",
    "\n",
    "\t",
    "\x7f",
    // Unicode: NFC/NFD spellings, invisible characters, bidi controls.
    "e\u{301}",
    "\u{e9}",
    "\u{212B}",
    "\u{200B}",
    "\u{200D}",
    "\u{FEFF}",
    "\u{00AD}",
    "\u{202E}",
    "\u{2066}",
    "\u{200F}",
    "\u{2028}",
    "\u{E0041}",
    "\u{FE0F}",
    // Windows device names, streams, forbidden characters and junk.
    "CON",
    "nul.txt",
    "COM1",
    "LPT9",
    "aux",
    "COM\u{b9}",
    "PRN.tar.gz",
    " ",
    ". ",
    "::$DATA",
    "<>:\"|?*",
    // Plain and multi-byte text, extensions.
    "photo",
    ".jpg",
    ".tar.gz",
    "\u{1F600}",
    "写真",
];

/// A hostile name: up to a dozen pieces, plain or multi-byte runs long enough
/// to reach the 255-byte cut.
fn hostile_name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(FRAGMENTS).prop_map(str::to_owned),
        1 => "[a-z0-9 ._-]{1,40}",
        1 => "[\u{e9}\u{20ac}\u{1F600}\u{5199}]{1,90}",
        1 => "[\\x00-\\x1f\\x7f-\\u{9f}]{1,3}",
        1 => "\\PC{1,8}",
        1 => (1usize..300).prop_map(|n| "x".repeat(n)),
    ];
    prop::collection::vec(piece, 1..12).prop_map(|v| v.concat())
}

/// Characters no sanitized name may hold, listed here independently of
/// `mqft::name`: controls, `/`, `\`, what Windows forbids, bidi controls,
/// invisible characters, separator look-alikes.
fn is_unsafe_in_a_name(c: char) -> bool {
    c.is_control() || matches!(c, '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*') || is_unsafe_to_print(c)
}

/// Characters that must not reach a terminal raw (besides controls).
fn is_unsafe_to_print(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{3164}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{E0000}'..='\u{E0FFF}'
                | '\u{2044}'
                | '\u{2215}'
                | '\u{29F8}'
                | '\u{FF0F}'
                | '\u{2216}'
                | '\u{FE68}'
                | '\u{FF3C}'
                | '\u{2105}'
        )
}

/// `CON`, `nul.txt`, `COM1`, ...: a Windows device name, extension or not.
fn is_windows_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end().to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$")
        || ["COM", "LPT"].iter().any(|p| {
            stem.strip_prefix(p).is_some_and(|d| {
                let mut ch = d.chars();
                matches!((ch.next(), ch.next()), (Some('0'..='9' | '\u{b9}' | '\u{b2}' | '\u{b3}'), None))
            })
        })
}

/// Undoes [`mqft::name::escape`]: `\\`, `\n`, `\t`, `\r` and `\u{..}`.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the name, the sanitized one is a single plain component that
    /// lands inside the directory on a real file system, holds nothing unsafe,
    /// is at most 255 bytes, and cleaning it again changes nothing; or the name
    /// is refused.
    #[test]
    fn hostile_names_land_inside_the_directory_or_are_refused(raw in hostile_name()) {
        let Ok(name) = mqft::sanitize_file_name(&raw) else { return Ok(()) };
        let s = name.as_str();
        prop_assert!(!s.is_empty() && s.len() <= mqft::name::MAX_NAME_BYTES, "{s:?}");
        prop_assert!(!s.chars().any(is_unsafe_in_a_name), "{raw:?} kept an unsafe character: {s:?}");
        prop_assert!(!s.starts_with(|c: char| c == '.' || c.is_whitespace()), "{s:?}");
        prop_assert!(!s.ends_with(|c: char| c == '.' || c.is_whitespace()), "{s:?}");
        // A device name only on Windows: elsewhere `con.jpg` is a plain name.
        prop_assert!(!cfg!(windows) || !is_windows_device(s), "{raw:?} became the device name {s:?}");
        let again = mqft::sanitize_file_name(s);
        prop_assert_eq!(again.as_ref(), Ok(&name), "not idempotent");

        // On a real file system: created where expected, and nowhere else.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        fs::create_dir(&dir).unwrap();
        let path = name.in_dir(&dir);
        prop_assert_eq!(path.parent(), Some(dir.as_path()));
        fs::write(&path, b"x").unwrap();
        let listed: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        prop_assert_eq!(listed, vec![std::ffi::OsString::from(s)]);
        prop_assert_eq!(all_files(root.path()).len(), 1);
    }

    /// The escaping the CLI prints names with (`report::escape` is
    /// `mqft::name::escape`) leaves nothing that drives or fools a terminal,
    /// changes nothing else, and can be undone: two names never print alike.
    #[test]
    fn hostile_names_print_escaped(raw in hostile_name()) {
        let shown = mqft::name::escape(&raw);
        prop_assert!(!shown.chars().any(is_unsafe_to_print), "{raw:?} printed as {shown:?}");
        if !raw.chars().any(|c| c == '\\' || is_unsafe_to_print(c)) {
            prop_assert_eq!(&shown, &raw);
        }
        let undone = unescape(&shown);
        prop_assert_eq!(undone.as_ref(), Some(&raw), "{:?} does not undo", shown);
        // What a sanitized name shows is the name itself.
        if let Ok(name) = mqft::sanitize_file_name(&raw) {
            prop_assert_eq!(mqft::name::escape(name.as_str()), name.as_str());
        }
    }
}

/// Names a sender may put in a manifest (1 to 255 bytes), drawn from
/// [`hostile_name`] with a fixed seed, plus one of each kind by hand.
fn sample_of_hostile_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "../../escape.bin",
        "/etc/cron.d/evil",
        "C:\\Windows\\System32\\evil.dll",
        "c:evil.bin",
        "..\u{2215}..\u{2215}spoof\u{2215}passwd",
        "\u{FF0F}etc\u{FF0F}shadow",
        "\x1b[2J\x1b]0;pwned\x07red.bin",
        "photo\u{202E}gnp.exe",
        "zero\u{200B}width\u{FEFF}.bin",
        "caf\u{e9}.bin",
        "cafe\u{301}.bin",
        "nul.txt",
        "COM1 .log",
        "LPT9",
        "..",
        " . ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // 253 bytes of 4-byte characters: the hidden names' 200-byte cut falls
    // inside one. And 255 bytes exactly, the most a manifest carries.
    names.push(format!("a{}.jpg", "\u{1F600}".repeat(62)));
    names.push(format!("{}\u{e9}.bin", "x".repeat(249)));
    let mut runner = TestRunner::deterministic();
    let strategy = hostile_name();
    while names.len() < 40 {
        let name = strategy.new_tree(&mut runner).unwrap().current();
        if (1..=proto::wire::MAX_NAME_LEN).contains(&name.len()) {
            names.push(name);
        }
    }
    // One send per name and per sanitized name: two names that clean up alike
    // would race for one file (the second refused as existing, which is right,
    // but not what this test looks at). Likewise a name that cleans up to a
    // directory of another's path (`_` and `_/x`): one of them cannot be placed.
    let (mut raw_seen, mut clean_seen) = (HashSet::new(), HashSet::<String>::new());
    names.retain(|n| {
        raw_seen.insert(n.clone())
            && match mqft::sanitize_path(n) {
                Ok(clean) => {
                    let clean = String::from(clean);
                    let clash = clean_seen
                        .iter()
                        .any(|c| clean.starts_with(&format!("{c}/")) || c.starts_with(&format!("{clean}/")));
                    !clash && clean_seen.insert(clean)
                }
                Err(_) => true,
            }
    });
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_hostile_names_through_a_real_receiver() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("a").join("b").join("out");
    fs::create_dir_all(&out).unwrap();
    let content = random_file(src.path(), "content.bin", 3000, 7001);
    let client = client(&broker, MqttVersion::V5);
    let mut opts = receive_opts("rx-hostile-names");
    opts.max_concurrent = 64;
    let mut rx = client.receive(&out, opts);
    connected(&mut rx).await;

    let names = sample_of_hostile_names();
    let files: Vec<SendFile> = names.iter().map(|n| SendFile::named(&content, n.clone())).collect();
    let mut send_opts = fixed_chunks(1024);
    send_opts.concurrency = 8;
    let mut send = client.send(files, send_opts);
    drain(&mut send).await;
    let _ = within("the send", send.wait()).await;
    let events = stop_receive(rx).await;

    let mut landed = BTreeSet::new();
    for raw in &names {
        let id = manifest_of(&content, raw, 1024, 0).id;
        let completed = events.iter().find_map(|e| match e {
            ReceiveEvent::Completed(mqft::VerifiedFile { transfer, path, .. }) if *transfer == id => Some(path.clone()),
            _ => None,
        });
        let rejected = events.iter().find_map(|e| match e {
            ReceiveEvent::Rejected { transfer, reason, .. } if *transfer == id => Some(*reason),
            _ => None,
        });
        match (mqft::sanitize_path(raw), completed, rejected) {
            (Ok(name), Some(path), None) => {
                assert_eq!(path, out.join(name.as_str()), "{raw:?}");
                let meta = fs::symlink_metadata(&path).unwrap();
                assert!(meta.is_file(), "{raw:?}");
                assert!(files_equal(&content, &path), "{raw:?}");
                landed.insert(path);
            }
            (Err(_), None, Some(RejectReason::BadName)) => {}
            (expected, completed, rejected) => {
                panic!("{raw:?}: expected {expected:?}, completed {completed:?}, rejected {rejected:?}")
            }
        }
    }
    // Nothing anywhere but in the output directory, and there only the files
    // that arrived and the receiver's state folder.
    for path in all_files(root.path()) {
        if path.starts_with(out.join(".mqft")) {
            continue;
        }
        assert!(path.starts_with(&out), "{} is outside the output directory", path.display());
        assert!(landed.contains(&path), "{}", path.display());
    }
    // Both spellings of `café` arrived, as two files: names are kept byte for byte.
    assert!(landed.contains(&out.join("caf\u{e9}.bin")) && landed.contains(&out.join("cafe\u{301}.bin")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_hostile_names_escaped() {
    let broker = Broker::start();
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let content = random_file(src.path(), "content.bin", 2000, 7101);
    let before = broker.subscribers(&Prefix::default().manifest_filter()).len();
    // With its logs (-v) too, which name names; colours off, or their escape
    // sequences would be all this test sees: the CLI colours its logs even when
    // stderr is not a terminal.
    let receiver = Process::spawn(
        mqft_command().env("NO_COLOR", "1").args(["receive", "--once", "-v", "--out"]).arg(out.path()).args([
            "-h",
            HOST,
            "-p",
            &broker.port().to_string(),
            "--name",
            "rx-cli-names",
        ]),
    );
    wait_subscribed(&broker, before, &receiver);
    let client = client(&broker, MqttVersion::V5);
    // Refused (nothing left once cleaned: the last component is `..`), so
    // printed raw but escaped...
    let refused = "nul.\x1b[31m\u{202E}\u{2215}txt/..";
    let err = within("the refused send", client.send([SendFile::named(&content, refused)], fixed_chunks(1024)).wait())
        .await
        .unwrap_err();
    assert!(matches!(err, mqft::Error::Rejected { reason: RejectReason::BadName, .. }), "{err:?}");
    // ...then accepted under its clean name, which is printed.
    let accepted = "\x1b[2J\x1b]0;pwned\x07photo\u{202E}gnp\u{2215}.exe";
    within("the send", client.send([SendFile::named(&content, accepted)], fixed_chunks(1024)).wait()).await.unwrap();
    let output = receiver.finish_within(LIMIT);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        let bad: Vec<char> = text.chars().filter(|&c| c != '\n' && is_unsafe_to_print(c)).collect();
        assert!(bad.is_empty(), "{what} holds {bad:?} raw:\n{text}");
    }
    assert!(stderr.contains("nul.\\u{1b}[31m\\u{202e}\\u{2215}txt"), "the refused name, escaped:\n{stderr}");
    let clean = mqft::sanitize_file_name(accepted).unwrap();
    assert_eq!(stdout.trim_end(), out.path().join(clean.as_str()).display().to_string());
}
