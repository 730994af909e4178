//! Sets of chunk indexes kept as sorted, disjoint, non-adjacent half-open ranges.
//!
//! Held and missing sets are what the two sides talk about most. Losses on a real
//! link come in bursts, so a set of a million indexes is usually a handful of ranges;
//! on the wire a set is capped at [`MAX_WIRE_RANGES`] ranges (see [`WireRanges`]) so
//! that it always fits one small packet, and a side that has more to say sends the
//! lowest ranges first and the rest in a later message.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// The most ranges one message carries. Each range costs at most 10 bytes on the
/// wire, so a full list stays under 5.2 KiB.
pub const MAX_WIRE_RANGES: usize = 512;

/// A set of `u32` indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end (exclusive); no two entries overlap or touch.
    map: BTreeMap<u32, u32>,
    /// Number of indexes in the set, kept so `len` is O(1).
    len: u64,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set `0..n`.
    pub fn full(n: u32) -> Self {
        let mut s = Self::new();
        s.insert_range(0..n);
        s
    }

    /// How many indexes the set holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the set holds no index.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many disjoint ranges the set is made of.
    pub fn range_count(&self) -> usize {
        self.map.len()
    }

    /// True when `i` is in the set.
    pub fn contains(&self, i: u32) -> bool {
        self.map.range(..=i).next_back().is_some_and(|(_, &end)| i < end)
    }

    /// Adds `i`; returns true when it was not there before.
    pub fn insert(&mut self, i: u32) -> bool {
        if self.contains(i) {
            return false;
        }
        self.insert_range(i..i + 1);
        true
    }

    /// Adds every index of `r`.
    pub fn insert_range(&mut self, r: Range<u32>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Merge with a range that starts at or before `start` and reaches it.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
                self.len -= u64::from(e - s);
            }
        }
        // Swallow every range that starts inside or right after the new one.
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            end = end.max(e);
            self.map.remove(&s);
            self.len -= u64::from(e - s);
        }
        self.map.insert(start, end);
        self.len += u64::from(end - start);
    }

    /// Removes `i`; returns true when it was there.
    pub fn remove(&mut self, i: u32) -> bool {
        let Some((&s, &e)) = self.map.range(..=i).next_back() else {
            return false;
        };
        if i >= e {
            return false;
        }
        self.map.remove(&s);
        if s < i {
            self.map.insert(s, i);
        }
        if i + 1 < e {
            self.map.insert(i + 1, e);
        }
        self.len -= 1;
        true
    }

    /// Removes and returns the lowest index.
    pub fn pop_first(&mut self) -> Option<u32> {
        let (&s, &e) = self.map.iter().next()?;
        self.map.remove(&s);
        if s + 1 < e {
            self.map.insert(s + 1, e);
        }
        self.len -= 1;
        Some(s)
    }

    /// Removes every index at or above `n`.
    pub fn truncate(&mut self, n: u32) {
        for (s, e) in self.map.split_off(&n) {
            self.len -= u64::from(e - s);
        }
        if let Some(e) = self.map.values_mut().next_back().filter(|e| **e > n) {
            self.len -= u64::from(*e - n);
            *e = n;
        }
    }

    /// The highest index.
    pub fn last(&self) -> Option<u32> {
        self.map.values().next_back().map(|&e| e - 1)
    }

    /// The lowest index.
    pub fn first(&self) -> Option<u32> {
        self.map.keys().next().copied()
    }

    /// The ranges in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u32>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// Adds every index of `other`.
    pub fn union_with(&mut self, other: &RangeSet) {
        for r in other.iter() {
            self.insert_range(r);
        }
    }

    /// The indexes of `0..n` that are not in the set.
    pub fn complement(&self, n: u32) -> RangeSet {
        let mut out = RangeSet::new();
        let mut next = 0;
        for r in self.iter() {
            if r.start >= n {
                break;
            }
            out.insert_range(next..r.start);
            next = r.end;
        }
        if next < n {
            out.insert_range(next..n);
        }
        out
    }

    /// The lowest index of `0..n` not in the set (`n` when the set covers `0..n`).
    pub fn first_gap(&self) -> u32 {
        match self.map.iter().next() {
            Some((&0, &e)) => e,
            _ => 0,
        }
    }

    /// The wire form of the lowest [`MAX_WIRE_RANGES`] ranges, and whether any were
    /// left out.
    pub fn to_wire(&self) -> (WireRanges, bool) {
        let mut pairs = Vec::with_capacity(self.map.len().min(MAX_WIRE_RANGES));
        let mut prev_end = 0;
        for r in self.iter().take(MAX_WIRE_RANGES) {
            pairs.push((r.start - prev_end, r.end - r.start));
            prev_end = r.end;
        }
        (WireRanges(pairs), self.map.len() > MAX_WIRE_RANGES)
    }
}

impl FromIterator<u32> for RangeSet {
    fn from_iter<T: IntoIterator<Item = u32>>(iter: T) -> Self {
        let mut s = RangeSet::new();
        for i in iter {
            s.insert(i);
        }
        s
    }
}

/// A range set as it travels: up to [`MAX_WIRE_RANGES`] `(gap, len)` pairs, where
/// `gap` counts the indexes skipped since the end of the previous range (or since 0)
/// and `len` is the range's length (at least 1). Deltas keep the numbers small, so a
/// pair is usually 2 to 4 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRanges(pub Vec<(u32, u32)>);

impl WireRanges {
    /// Checks the pairs against a file of `chunk_count` chunks and builds the set.
    pub fn to_set(&self, chunk_count: u32) -> Result<RangeSet, RangeError> {
        if self.0.len() > MAX_WIRE_RANGES {
            return Err(RangeError::TooMany(self.0.len()));
        }
        let mut set = RangeSet::new();
        let mut pos: u32 = 0;
        for (i, &(gap, len)) in self.0.iter().enumerate() {
            // Only the first range may start right at 0 with no gap; every later one
            // must leave a gap of at least 1, or it would touch its predecessor.
            if len == 0 || (i > 0 && gap == 0) {
                return Err(RangeError::NotCanonical);
            }
            let start = pos.checked_add(gap).ok_or(RangeError::OutOfRange)?;
            let end = start.checked_add(len).ok_or(RangeError::OutOfRange)?;
            if end > chunk_count {
                return Err(RangeError::OutOfRange);
            }
            set.insert_range(start..end);
            pos = end;
        }
        Ok(set)
    }
}

/// Why a wire range list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// More than [`MAX_WIRE_RANGES`] pairs.
    #[error("range list has {0} ranges, more than {MAX_WIRE_RANGES}")]
    TooMany(usize),
    /// A range of length 0, or a range that touches the one before it.
    #[error("range list is not canonical")]
    NotCanonical,
    /// A range that reaches past the file's last chunk.
    #[error("range reaches past the last chunk")]
    OutOfRange,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn insert_merges_neighbours() {
        let mut s = RangeSet::new();
        s.insert_range(0..2);
        s.insert_range(5..7);
        s.insert(3);
        assert_eq!(s.range_count(), 3);
        s.insert(2);
        s.insert(4);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..7]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.first_gap(), 7);
        assert_eq!(s.complement(10).iter().collect::<Vec<_>>(), vec![7..10]);
    }

    #[test]
    fn wire_form_is_capped_and_deltas() {
        let s: RangeSet = (0..2000).map(|i| i * 2).collect();
        let (w, more) = s.to_wire();
        assert!(more);
        assert_eq!(w.0.len(), MAX_WIRE_RANGES);
        assert_eq!(w.0[0], (0, 1));
        assert_eq!(w.0[1], (1, 1));
        let enc = postcard::to_allocvec(&w).unwrap();
        assert!(enc.len() < 1100, "{}", enc.len());
    }

    #[test]
    fn wire_checks_bounds() {
        assert_eq!(WireRanges(vec![(0, 0)]).to_set(5), Err(RangeError::NotCanonical));
        assert_eq!(WireRanges(vec![(0, 1), (0, 1)]).to_set(5), Err(RangeError::NotCanonical));
        assert_eq!(WireRanges(vec![(4, 2)]).to_set(5), Err(RangeError::OutOfRange));
        assert_eq!(WireRanges(vec![(u32::MAX, 2)]).to_set(5), Err(RangeError::OutOfRange));
        assert_eq!(
            WireRanges(vec![(1, 1); MAX_WIRE_RANGES + 1]).to_set(u32::MAX),
            Err(RangeError::TooMany(MAX_WIRE_RANGES + 1))
        );
        assert_eq!(WireRanges(vec![(1, 2)]).to_set(5).unwrap().iter().collect::<Vec<_>>(), vec![1..3]);
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreeset(ops in proptest::collection::vec((0u8..3, 0u32..200, 1u32..20), 0..200)) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for (op, a, n) in ops {
                match op {
                    0 => { s.insert_range(a..a + n); model.extend(a..a + n); }
                    1 => { prop_assert_eq!(s.remove(a), model.remove(&a)); }
                    2 if n == 1 => { s.truncate(a); model.retain(|&i| i < a); }
                    _ => { prop_assert_eq!(s.pop_first(), model.pop_first()); }
                }
                prop_assert_eq!(s.len(), model.len() as u64);
                let flat: Vec<u32> = s.iter().flatten().collect();
                let want: Vec<u32> = model.iter().copied().collect();
                prop_assert_eq!(&flat, &want);
                // Canonical: sorted, disjoint, non-adjacent.
                let rs: Vec<_> = s.iter().collect();
                for w in rs.windows(2) { prop_assert!(w[0].end < w[1].start); }
                let comp: Vec<u32> = s.complement(250).iter().flatten().collect();
                let want_comp: Vec<u32> = (0..250).filter(|i| !model.contains(i)).collect();
                prop_assert_eq!(comp, want_comp);
                let (w, more) = s.to_wire();
                if !more {
                    prop_assert_eq!(w.to_set(u32::MAX).unwrap(), s.clone());
                }
            }
        }
    }
}
