//! Files: the payloads tests move, their comparison, and a small tmpfs for a
//! full disk.

use super::*;

/// A tmpfs of a fixed size mounted on a fresh temp dir: a real file system that
/// runs out of space, for tests of a full disk. Writes past its size fail with
/// `ENOSPC`, and `statvfs` reports its free space. It is unmounted (detached, so
/// that files still open do not keep it) when dropped.
///
/// Mounting needs `CAP_SYS_ADMIN`: tests run as root, in CI as here.
#[derive(Debug)]
pub struct TmpfsMount {
    dir: TempDir,
}

impl TmpfsMount {
    /// Mount a tmpfs of `bytes` bytes (rounded up to whole pages by the kernel).
    ///
    /// # Panics
    ///
    /// If it cannot be mounted, saying that the test needs root.
    pub fn new(bytes: u64) -> TmpfsMount {
        use rustix::mount::{mount, MountFlags};
        let dir = tempfile::Builder::new()
            .prefix("mqft-tmpfs-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir to mount a tmpfs on: {e}"));
        let data = std::ffi::CString::new(format!("size={bytes},mode=0755")).expect("no NUL in the mount options");
        mount("tmpfs", dir.path(), "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, Some(data.as_c_str()))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot mount a {bytes}-byte tmpfs on {}: {e}; the disk-full tests need root \
                     (CAP_SYS_ADMIN), as CI runs them",
                    dir.path().display()
                )
            });
        TmpfsMount { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill the free space with the file `name`: write until the file system
    /// says it is full, and return the file's path. Removing the file frees the
    /// space again.
    ///
    /// # Panics
    ///
    /// On any error but `ENOSPC`.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        let mut file = File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let block = vec![0x5a_u8; 64 << 10];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("cannot fill {}: {e}", path.display()),
            }
        }
        path
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // Then the TempDir removes the (empty) directory underneath.
        let _ = rustix::mount::unmount(self.dir.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

/// Write `len` deterministic pseudo-random bytes to `dir/name` and return the
/// path.
///
/// The bytes depend only on `seed` (the same seed always gives the same
/// stream, and a shorter file is a prefix of a longer one), so a failing test
/// reproduces exactly. The file is written a block at a time, so any size
/// fits in little memory. Not cryptographic: a SplitMix64 stream.
///
/// # Panics
///
/// On I/O errors.
pub fn random_file(dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    const BLOCK: usize = 1 << 20;
    let path = dir.join(name);
    let mut file = File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let mut rng = SplitMix64(seed);
    let mut block = vec![0u8; BLOCK];
    let mut left = len;
    while left > 0 {
        // Fill whole 8-byte words; the last block may use only part of one.
        for word in block.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        let n = usize::try_from(left).map_or(BLOCK, |left| left.min(BLOCK));
        file.write_all(&block[..n]).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        left -= n as u64;
    }
    file.sync_all().unwrap_or_else(|e| panic!("cannot sync {}: {e}", path.display()));
    path
}

/// Whether two files have the same length and the same bytes, read a block at
/// a time so that any size fits in little memory.
///
/// # Panics
///
/// If either file cannot be read.
pub fn files_equal(a: &Path, b: &Path) -> bool {
    const BLOCK: usize = 1 << 20;
    let open = |path: &Path| File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let len =
        |f: &File, path: &Path| f.metadata().unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display())).len();
    if len(&fa, a) != len(&fb, b) {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let na = read_full(&mut fa, &mut ba).unwrap_or_else(|e| panic!("cannot read {}: {e}", a.display()));
        let nb = read_full(&mut fb, &mut bb).unwrap_or_else(|e| panic!("cannot read {}: {e}", b.display()));
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

/// A file's text from byte `offset` on, invalid UTF-8 replaced; empty if it
/// cannot be read (a log that does not exist yet is simply empty).
pub(crate) fn read_lossy_from(path: &Path, offset: u64) -> String {
    let Ok(bytes) = fs::read(path) else { return String::new() };
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// A whole file's text, as [`read_lossy_from`] at offset 0.
pub(crate) fn read_lossy(path: &Path) -> String {
    read_lossy_from(path, 0)
}

/// Read until `buf` is full or the reader is at its end; return the count.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed forever, unlike
/// a library RNG whose stream may change between versions.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
