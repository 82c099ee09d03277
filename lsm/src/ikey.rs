//! Internal keys: user key ++ 8-byte little-endian trailer (sequence << 8 | kind).
//! Ordered by user key ascending, then trailer descending, so that the newest version
//! of a user key comes first and a seek to (key, snapshot) lands on the newest version
//! visible to that snapshot.

use std::cmp::Ordering;

pub(crate) const TRAILER_BYTES: usize = 8;
/// Sequence numbers use 56 bits; the low byte of the trailer holds the kind.
pub(crate) const SEQ_MAX: u64 = (1 << 56) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Delete = 0,
    Put = 1,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Delete),
            1 => Some(Kind::Put),
            _ => None,
        }
    }
}

/// The trailer of version `seq` of kind `kind`.
pub(crate) fn pack_trailer(seq: u64, kind: Kind) -> u64 {
    (seq << 8) | kind as u64
}

/// Appends a trailer in its encoded form: after the user key, it makes an internal key.
pub(crate) fn push_trailer(out: &mut Vec<u8>, trailer: u64) {
    out.extend_from_slice(&trailer.to_le_bytes());
}

pub(crate) fn encode(user_key: &[u8], seq: u64, kind: Kind) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + TRAILER_BYTES);
    out.extend_from_slice(user_key);
    push_trailer(&mut out, pack_trailer(seq, kind));
    out
}

/// The smallest internal key of `user_key` visible at `seq`: seeking to it finds the
/// newest version with sequence <= seq.
pub(crate) fn seek_key(user_key: &[u8], seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + TRAILER_BYTES);
    out.extend_from_slice(user_key);
    push_trailer(&mut out, seek_trailer(seq));
    out
}

/// The trailer of `seek_key`: above every kind's trailer at `seq`, so it sorts first.
pub(crate) fn seek_trailer(seq: u64) -> u64 {
    (seq << 8) | 0xff
}

/// The largest internal key of `user_key` (its oldest possible version).
pub(crate) fn last_key(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + TRAILER_BYTES);
    out.extend_from_slice(user_key);
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

pub(crate) fn is_valid(ikey: &[u8]) -> bool {
    ikey.len() >= TRAILER_BYTES && Kind::from_u8(ikey[ikey.len() - TRAILER_BYTES]).is_some()
}

/// Callers pass keys checked by `is_valid` (decoders do) or built by `encode`.
pub(crate) fn user_key(ikey: &[u8]) -> &[u8] {
    &ikey[..ikey.len() - TRAILER_BYTES]
}

pub(crate) fn trailer(ikey: &[u8]) -> u64 {
    u64::from_le_bytes(
        ikey[ikey.len() - TRAILER_BYTES..]
            .try_into()
            .expect("8 bytes"),
    )
}

pub(crate) fn seq(ikey: &[u8]) -> u64 {
    trailer(ikey) >> 8
}

pub(crate) fn kind(ikey: &[u8]) -> Kind {
    Kind::from_u8(trailer(ikey) as u8).unwrap_or(Kind::Delete)
}

/// The bytes two keys share at their start.
pub(crate) fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The first 8 bytes of `user` as a big-endian integer, zero-padded: integers compare
/// as the bytes do, except that padding ties a shorter key with its extensions by
/// zeros (a tie is then settled by comparing the keys). Searches over sorted keys
/// compare these first, in a dense array, and read a key only on a tie.
pub(crate) fn prefix_of(user: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    let n = user.len().min(8);
    p[..n].copy_from_slice(&user[..n]);
    u64::from_be_bytes(p)
}

pub(crate) fn compare(a: &[u8], b: &[u8]) -> Ordering {
    user_key(a)
        .cmp(user_key(b))
        .then_with(|| trailer(b).cmp(&trailer(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_sort_first() {
        let a = encode(b"k", 5, Kind::Put);
        let b = encode(b"k", 3, Kind::Delete);
        let c = encode(b"l", 9, Kind::Put);
        assert_eq!(compare(&a, &b), Ordering::Less);
        assert_eq!(compare(&b, &c), Ordering::Less);
        assert_eq!(compare(&seek_key(b"k", 4), &b), Ordering::Less);
        assert_eq!(compare(&a, &seek_key(b"k", 4)), Ordering::Less);
        assert_eq!(compare(&b, &last_key(b"k")), Ordering::Less);
    }
}
