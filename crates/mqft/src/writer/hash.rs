//! The SHA-256 of a transfer's file, made on its writer thread, which has the
//! bytes of every chunk it writes: a chunk written at the hashed frontier (the
//! next in file order) is hashed from its buffer right there; one written ahead
//! of a gap is only noted, and read back from the `.part` and hashed once the
//! gap before it fills. The engine never hashes nor reads back; it is told how
//! far the hash has come ([`super::WriterEvent::Hashed`]) and hands that to the
//! state machine ([`crate::proto::Receiver::hashed_through`]), which finishes the hash
//! and compares it with the manifest's.
//!
//! What is hashed is what the thread wrote, and a read-back reads the file, so
//! the digest is of the bytes on disk: a chunk changed there between its write
//! and its read-back fails the transfer rather than completing it.

use std::cmp::Ordering;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::proto::{HashState, RangeSet, ResumeState};

/// How far a transfer's hash has come; its writer thread's alone.
pub(crate) struct Hashing {
    chunk_size: u64,
    hash: HashState,
    /// Chunks `0..through` are in `hash`.
    through: u32,
    /// Chunks written (or, after a resume, proven held) beyond `through` and not
    /// hashed yet. A set of ranges: a few numbers, however many chunks.
    ahead: RangeSet,
    /// A chunk shorter than `chunk_size` (only the last one can be) and its
    /// length, for reading it back.
    short: Option<(u32, u64)>,
    /// Bytes read back since the last report.
    read_back: u64,
    /// `through` at the last report.
    reported: u32,
}

/// How far the hash has come, for the engine.
#[derive(Debug)]
pub(crate) struct Hashed {
    /// Chunks `0..through` are hashed.
    pub through: u32,
    /// The hash over them.
    pub hash: HashState,
    /// Bytes read back from the `.part` for it since the last report.
    pub read_back: u64,
}

impl Hashing {
    /// Where the hash of a transfer stands when it is opened, from the state
    /// machine's [`crate::proto::Receiver::snapshot`]: nothing for a fresh one; for a
    /// resumed one the saved hash, and the proven chunks beyond it as written
    /// ahead (a resume whose proof restarted the hash reads them all back).
    pub fn resume(from: &ResumeState) -> Hashing {
        let m = &from.manifest;
        let mut ahead = RangeSet::new();
        for &(a, b) in &from.held {
            let a = a.max(from.hashed);
            if a < b {
                ahead.insert_range(a..b);
            }
        }
        let short = m.chunk_count.checked_sub(1).map(|last| (last, m.chunk_len(last)));
        Hashing {
            chunk_size: u64::from(m.chunk_size),
            hash: from.hash.clone(),
            through: from.hashed,
            ahead,
            short: short.filter(|&(_, len)| len < u64::from(m.chunk_size)),
            read_back: 0,
            reported: from.hashed,
        }
    }

    /// True when chunks held from before can be hashed now ([`Hashing::catch_up`]).
    pub fn behind(&self) -> bool {
        self.ahead.contains(self.through)
    }

    /// Chunk `index`, `data`, was just written to `file`: hashed now if it is the
    /// next in file order (then those written ahead that now follow it, read back
    /// from `file`), noted otherwise.
    pub fn written(&mut self, file: &File, index: u32, data: &[u8]) -> io::Result<()> {
        if (data.len() as u64) < self.chunk_size {
            self.short = Some((index, data.len() as u64));
        }
        match index.cmp(&self.through) {
            Ordering::Equal => {
                self.hash.update(data);
                self.through += 1;
                self.catch_up(file)
            }
            Ordering::Greater => {
                self.ahead.insert(index);
                Ok(())
            }
            // The state machine hands out each chunk once; a chunk hashed already
            // is never written again.
            Ordering::Less => Ok(()),
        }
    }

    /// Hashes the chunks written ahead that now follow on from the frontier,
    /// reading them back from `file`. On an error the hash stands where it got to.
    pub fn catch_up(&mut self, file: &File) -> io::Result<()> {
        // One buffer for the run, of a chunk's size; dropped after it, so a
        // transfer holds no read-back memory while it receives in order.
        let mut buf = Vec::new();
        while self.ahead.contains(self.through) {
            let index = self.through;
            let len = match self.short {
                Some((i, len)) if i == index => len,
                _ => self.chunk_size,
            };
            buf.resize(usize::try_from(len).map_err(io::Error::other)?, 0);
            file.read_exact_at(&mut buf, u64::from(index) * self.chunk_size)?;
            self.hash.update(&buf);
            self.ahead.remove(index);
            self.through += 1;
            self.read_back += len;
        }
        Ok(())
    }

    /// The progress since the last report, if there is any.
    pub fn report(&mut self) -> Option<Hashed> {
        if self.through == self.reported {
            return None;
        }
        self.reported = self.through;
        Some(Hashed { through: self.through, hash: self.hash.clone(), read_back: std::mem::take(&mut self.read_back) })
    }
}
