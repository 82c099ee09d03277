//! A sorted run: immutable entries in internal key order, encoded back to back in one
//! buffer, with the start of each entry in a second one. Each entry:
//!
//! | bytes | holds |
//! |---|---|
//! | 8 | the user key's first 8 bytes as a big-endian integer, zero-padded (its prefix) |
//! | 8 | the trailer (sequence << 8 \| kind), little-endian |
//! | 4 | user key bytes, little-endian |
//! | 4 | value bytes, little-endian |
//! | .. | the user key, then the value |
//!
//! Comparing prefixes as integers decides most comparisons without a memcmp: where two
//! prefixes differ, so do the keys, in the same order (a zero pad only ever meets a
//! byte >= 0, which the shorter key is below anyway).

use std::cmp::Ordering;

use crate::ikey::{self, Kind};
use crate::table::filter::{self, Blocked as Filter};

/// A run's filter: about 1.2% false positives (blocked), for 1.25 bytes a key.
const FILTER_BITS_PER_KEY: u32 = 10;
const HEADER_BYTES: usize = 24;
const _: () = assert!(HEADER_BYTES == 2 * size_of::<u64>() + 2 * size_of::<u32>());

/// A key to search for: a user key and a trailer, ordered as `ikey::compare` orders
/// internal keys (user key ascending, then trailer descending).
#[derive(Clone, Copy)]
pub(super) struct SearchKey<'a> {
    pub user: &'a [u8],
    pub trailer: u64,
    prefix: u64,
}

impl<'a> SearchKey<'a> {
    pub fn new(user: &'a [u8], trailer: u64) -> SearchKey<'a> {
        SearchKey {
            user,
            trailer,
            prefix: ikey::prefix_of(user),
        }
    }

    /// The key of an internal key (`ikey` format, checked by the caller or built by it).
    pub fn internal(ikey: &'a [u8]) -> SearchKey<'a> {
        SearchKey::new(ikey::user_key(ikey), ikey::trailer(ikey))
    }
}

/// One entry of a run, borrowed.
#[derive(Clone, Copy)]
pub(super) struct Entry<'a> {
    prefix: u64,
    pub trailer: u64,
    pub user_key: &'a [u8],
    pub value: &'a [u8],
    /// The whole encoded entry, for copying it into a merged run.
    encoded: &'a [u8],
}

impl Entry<'_> {
    /// This entry against `key`, in internal key order.
    pub fn cmp_key(&self, key: &SearchKey) -> Ordering {
        self.prefix
            .cmp(&key.prefix)
            .then_with(|| self.user_key.cmp(key.user))
            .then_with(|| key.trailer.cmp(&self.trailer))
    }

    /// Internal key order between two entries.
    pub fn cmp_entry(&self, other: &Entry) -> Ordering {
        self.cmp_key(&other.search_key())
    }

    fn search_key(&self) -> SearchKey<'_> {
        SearchKey {
            user: self.user_key,
            trailer: self.trailer,
            prefix: self.prefix,
        }
    }

    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.trailer as u8).unwrap_or(Kind::Delete)
    }

    /// The internal key (`ikey` format) and the value, copied.
    pub fn to_owned_pair(self) -> (Vec<u8>, Vec<u8>) {
        let mut key = Vec::with_capacity(self.user_key.len() + ikey::TRAILER_BYTES);
        self.internal_key_into(&mut key);
        (key, self.value.to_vec())
    }

    pub fn internal_key_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.user_key);
        ikey::push_trailer(out, self.trailer);
    }
}

fn read_u64(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

fn read_u32(data: &[u8], at: usize) -> usize {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize
}

/// Decodes the entry at `start` of `data` (written by `push_entry`).
fn entry_at(data: &[u8], start: usize) -> Entry<'_> {
    let key_len = read_u32(data, start + 16);
    let value_len = read_u32(data, start + 20);
    let key_at = start + HEADER_BYTES;
    let end = key_at + key_len + value_len;
    Entry {
        prefix: u64::from_be_bytes(data[start..start + 8].try_into().expect("8 bytes")),
        trailer: read_u64(data, start + 8),
        user_key: &data[key_at..key_at + key_len],
        value: &data[key_at + key_len..end],
        encoded: &data[start..end],
    }
}

/// Largest user key and value an entry's length fields hold.
const LEN_FIELD_MAX: usize = u32::MAX as usize;
const _: () = assert!(crate::KEY_BYTES_MAX <= LEN_FIELD_MAX);
const _: () = assert!(crate::VALUE_BYTES_MAX <= LEN_FIELD_MAX);

/// Appends an entry to `data`.
fn push_entry(data: &mut Vec<u8>, key: &SearchKey, value: &[u8]) {
    assert!(
        key.user.len() <= LEN_FIELD_MAX && value.len() <= LEN_FIELD_MAX,
        "memtable entry too large: key {} bytes, value {} bytes",
        key.user.len(),
        value.len()
    );
    data.extend_from_slice(&key.prefix.to_be_bytes());
    data.extend_from_slice(&key.trailer.to_le_bytes());
    data.extend_from_slice(&(key.user.len() as u32).to_le_bytes());
    data.extend_from_slice(&(value.len() as u32).to_le_bytes());
    data.extend_from_slice(key.user);
    data.extend_from_slice(value);
}

#[derive(Default)]
pub(super) struct Run {
    data: Vec<u8>,
    /// Where each entry starts in `data`, in internal key order.
    starts: Vec<usize>,
    /// Bytes at the start of every user key in the run that all of them share.
    common_len: usize,
    /// Per entry: the 8 bytes of its user key after the shared part, as a big-endian
    /// integer, zero-padded. In key order, so a binary search runs on this dense
    /// array and reads an entry only where prefixes tie: the engine's keys share their
    /// first 5 bytes ("user" after the namespace), and their first 8 bytes alone would
    /// tie for thousands of keys.
    prefixes: Vec<u64>,
    /// Over the user keys, for gets.
    pub filter: Filter,
}

impl Run {
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.data.capacity()
            + self.starts.capacity() * size_of::<usize>()
            + self.prefixes.capacity() * size_of::<u64>()
            + self.filter.heap_bytes()
    }

    /// Fills `common_len`, `prefixes` and `filter` once the entries are in order.
    fn index(mut self) -> Run {
        let ends = (self.get(0), self.get(self.len().wrapping_sub(1)));
        self.common_len = match ends {
            (Some(first), Some(last)) => ikey::common_prefix_len(first.user_key, last.user_key),
            _ => 0,
        };
        let common = self.common_len;
        self.prefixes = (0..self.len())
            .map(|i| ikey::prefix_of(&entry_at(&self.data, self.starts[i]).user_key[common..]))
            .collect();
        self.with_filter()
    }

    fn with_filter(mut self) -> Run {
        let data = &self.data;
        let hashes = self
            .starts
            .iter()
            .map(|&s| filter::hash(entry_at(data, s).user_key));
        self.filter = Filter::build(hashes, FILTER_BITS_PER_KEY);
        self
    }

    pub fn get(&self, i: usize) -> Option<Entry<'_>> {
        Some(entry_at(&self.data, *self.starts.get(i)?))
    }

    /// The number of entries before `key` (with `past_equal`, at or before it): the
    /// index of the first entry >= key (> key).
    pub fn rank(&self, key: &SearchKey, past_equal: bool) -> usize {
        let Some(first) = self.get(0) else { return 0 };
        let common = &first.user_key[..self.common_len];
        let n = key.user.len().min(common.len());
        match key.user[..n].cmp(&common[..n]) {
            Ordering::Less => return 0,
            Ordering::Greater => return self.len(),
            // A proper prefix of every user key here: before them all.
            Ordering::Equal if n < common.len() => return 0,
            Ordering::Equal => {}
        }
        let prefix = ikey::prefix_of(&key.user[n..]);
        let lo = self.prefixes.partition_point(|&p| p < prefix);
        let hi = lo + self.tie_len(lo, prefix);
        lo + self.starts[lo..hi].partition_point(|&s| match entry_at(&self.data, s).cmp_key(key) {
            Ordering::Less => true,
            Ordering::Equal => past_equal,
            Ordering::Greater => false,
        })
    }

    /// How many prefixes from `lo` on equal `prefix` (none below it from there): by
    /// doubling steps, since it is usually 0 or 1 and they are at hand.
    fn tie_len(&self, lo: usize, prefix: u64) -> usize {
        let rest = &self.prefixes[lo..];
        let mut step = 1;
        while step <= rest.len() && rest[step - 1] == prefix {
            step *= 2;
        }
        let window = &rest[step / 2..rest.len().min(step)];
        step / 2 + window.partition_point(|&p| p == prefix)
    }

    /// The run of two runs' entries. Of two equal entries (the same write, replayed
    /// twice) only `newer`'s is kept, as a map keyed by internal key would.
    pub fn merge(older: &Run, newer: &Run) -> Run {
        let common_len = merged_common_len(older, newer);
        // Where the shared part stays the same, the prefixes compare entries (in order,
        // in dense arrays) and carry over to the output.
        let by_prefix = common_len == older.common_len && common_len == newer.common_len;
        let mut out = Run {
            data: Vec::with_capacity(older.data.len() + newer.data.len()),
            starts: Vec::with_capacity(older.len() + newer.len()),
            common_len,
            prefixes: Vec::with_capacity(if by_prefix {
                older.len() + newer.len()
            } else {
                0
            }),
            filter: Filter::default(),
        };
        let (mut i, mut j) = (0, 0);
        loop {
            let order = match (older.get(i), newer.get(j)) {
                (Some(a), Some(b)) if by_prefix => {
                    (older.prefixes[i].cmp(&newer.prefixes[j])).then_with(|| a.cmp_entry(&b))
                }
                (Some(a), Some(b)) => a.cmp_entry(&b),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            let (from, k) = match order {
                Ordering::Less => (older, i),
                Ordering::Equal => (newer, j),
                Ordering::Greater => (newer, j),
            };
            i += usize::from(order != Ordering::Greater);
            j += usize::from(order != Ordering::Less);
            out.starts.push(out.data.len());
            out.data
                .extend_from_slice(from.get(k).expect("in range").encoded);
            if by_prefix {
                out.prefixes.push(from.prefixes[k]);
            }
        }
        if by_prefix {
            out.with_filter()
        } else {
            out.index()
        }
    }
}

/// The length of the part all user keys of two runs share.
fn merged_common_len(a: &Run, b: &Run) -> usize {
    fn ends(r: &Run) -> Option<(Entry<'_>, Entry<'_>)> {
        Some((r.get(0)?, r.get(r.len().checked_sub(1)?)?))
    }
    match (ends(a), ends(b)) {
        (Some((a0, a1)), Some((b0, b1))) => {
            let first = if a0.cmp_entry(&b0).is_le() { a0 } else { b0 };
            let last = if a1.cmp_entry(&b1).is_ge() { a1 } else { b1 };
            ikey::common_prefix_len(first.user_key, last.user_key)
        }
        (Some(_), None) => a.common_len,
        (None, Some(_)) => b.common_len,
        (None, None) => 0,
    }
}

/// Collects a write batch's entries, then sorts them into a run.
#[derive(Default)]
pub(super) struct RunBuilder {
    run: Run,
}

impl RunBuilder {
    pub fn push(&mut self, key: &SearchKey, value: &[u8]) {
        self.run.starts.push(self.run.data.len());
        push_entry(&mut self.run.data, key, value);
    }

    pub fn is_empty(&self) -> bool {
        self.run.starts.is_empty()
    }

    /// The run, sorted (its entries stay where they were written; only `starts` move)
    /// and indexed.
    ///
    /// Entries are sorted by the 8 bytes of their user key after the part all of them
    /// share first, held with their starts in one dense array, and compared whole
    /// only on ties: the entries' own prefixes (their first 8 bytes) nearly always tie
    /// on the engine's keys, and each comparison then read two entries scattered over
    /// `data` (a GC's batch of 60,000 entries: sorting was 14% of the GC thread's CPU).
    /// Those are the run's `prefixes` already.
    pub fn finish(self) -> Run {
        let mut run = self.run;
        let data = &run.data;
        let common_len = match run.starts.first() {
            None => 0,
            Some(&first) => {
                let first = entry_at(data, first).user_key;
                run.starts.iter().fold(first.len(), |n, &s| {
                    ikey::common_prefix_len(&first[..n], entry_at(data, s).user_key)
                })
            }
        };
        let mut keyed: Vec<(u64, usize)> = run
            .starts
            .iter()
            .map(|&s| {
                (
                    ikey::prefix_of(&entry_at(data, s).user_key[common_len..]),
                    s,
                )
            })
            .collect();
        keyed.sort_unstable_by(|a, b| {
            (a.0.cmp(&b.0)).then_with(|| entry_at(data, a.1).cmp_entry(&entry_at(data, b.1)))
        });
        run.common_len = common_len;
        run.starts = keyed.iter().map(|&(_, s)| s).collect();
        run.prefixes = keyed.into_iter().map(|(p, _)| p).collect();
        run.with_filter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_run_is_in_internal_key_order_with_its_index() {
        // Keys sharing a part, zero bytes, keys shorter than the shared part plus 8,
        // ties on 8 bytes after it, and versions of one key.
        let mut users: Vec<Vec<u8>> = Vec::new();
        for i in 0..200u32 {
            let mut k = b"user".to_vec();
            k.extend_from_slice(&(i % 37).to_be_bytes());
            k.extend(std::iter::repeat_n(0u8, (i % 5) as usize));
            k.extend_from_slice(&(i % 3).to_be_bytes()[..(i % 4) as usize]);
            users.push(k);
        }
        users.push(b"user".to_vec());
        let mut b = RunBuilder::default();
        let mut ikeys = Vec::new();
        for (n, u) in users.iter().enumerate() {
            let ikey = ikey::encode(u, n as u64 % 7, Kind::Put);
            b.push(&SearchKey::internal(&ikey), &n.to_le_bytes());
            ikeys.push(ikey);
        }
        let run = b.finish();
        ikeys.sort_by(|a, b| ikey::compare(a, b));
        let got: Vec<(&[u8], u64)> = (0..run.len())
            .map(|i| run.get(i).unwrap())
            .map(|e| (e.user_key, e.trailer))
            .collect();
        let want: Vec<(&[u8], u64)> = ikeys
            .iter()
            .map(|k| (ikey::user_key(k), ikey::trailer(k)))
            .collect();
        assert_eq!(got, want);
        // The index is what `index` computes from the sorted entries.
        let (prefixes, common_len) = (run.prefixes.clone(), run.common_len);
        let again = Run {
            data: run.data.clone(),
            starts: run.starts.clone(),
            ..Run::default()
        }
        .index();
        assert_eq!((prefixes, common_len), (again.prefixes, again.common_len));
    }

    #[test]
    fn prefix_then_bytes_comparison_is_internal_key_order() {
        let users: [&[u8]; 9] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\0\0\0\0\0\0",
            b"a\0\0\0\0\0\0\0\0",
            b"abcdefgh",
            b"abcdefgh\x01",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        let mut ikeys = Vec::new();
        for u in users {
            for seq in [0, 7, ikey::SEQ_MAX] {
                for kind in [Kind::Put, Kind::Delete] {
                    ikeys.push(ikey::encode(u, seq, kind));
                }
            }
        }
        let mut data = Vec::new();
        for a in &ikeys {
            data.clear();
            push_entry(&mut data, &SearchKey::internal(a), b"value");
            let e = entry_at(&data, 0);
            assert_eq!((e.user_key, e.value), (ikey::user_key(a), &b"value"[..]));
            for b in &ikeys {
                let want = ikey::compare(a, b);
                assert_eq!(e.cmp_key(&SearchKey::internal(b)), want, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn merge_keeps_order_and_every_entry() {
        let build = |keys: &[&[u8]], seq0: u64| {
            let mut b = RunBuilder::default();
            for (i, k) in keys.iter().enumerate() {
                let trailer = ikey::pack_trailer(seq0 + i as u64, Kind::Put);
                b.push(&SearchKey::new(k, trailer), k);
            }
            b.finish()
        };
        let older = build(&[b"m", b"a", b"z", b"k"], 1);
        let newer = build(&[b"k", b"b", b"zz"], 10);
        let merged = Run::merge(&older, &newer);
        let got: Vec<(Vec<u8>, u64)> = (0..merged.len())
            .map(|i| merged.get(i).expect("in range"))
            .map(|e| (e.user_key.to_vec(), e.trailer >> 8))
            .collect();
        let want: Vec<(Vec<u8>, u64)> = [
            ("a", 2),
            ("b", 11),
            ("k", 10),
            ("k", 4),
            ("m", 1),
            ("z", 3),
            ("zz", 12),
        ]
        .iter()
        .map(|(k, s)| (k.as_bytes().to_vec(), *s))
        .collect();
        assert_eq!(got, want);
        assert_eq!(
            merged.rank(&SearchKey::new(b"k", ikey::seek_trailer(5)), false),
            3
        );
        assert_eq!(
            merged.rank(
                &SearchKey::new(b"k", ikey::pack_trailer(4, Kind::Put)),
                true
            ),
            4
        );
    }
}
