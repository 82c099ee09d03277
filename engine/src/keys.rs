//! Namespaces in the LSM tree: user keys and the engine's own metadata share one tree,
//! so that a flush commits new value locations and the segment table in one atomic
//! batch (see FORMAT.md, "Commit").

/// Prefix of every user key in the tree.
pub const USER: u8 = 0x01;
/// Prefix of the engine's metadata entries; sorts before every user key.
pub const META: u8 = 0x00;

/// `META "g" group(u32 BE)` -> the group's segment chain.
pub fn group_key(group: u32) -> Vec<u8> {
    let mut k = vec![META, b'g'];
    k.extend_from_slice(&group.to_be_bytes());
    k
}

pub fn group_key_prefix() -> [u8; 2] {
    [META, b'g']
}

/// `META "c" segment(u32 BE)` -> a cold data log segment's state (hashkv mode).
pub fn cold_key(segment: u32) -> Vec<u8> {
    let mut k = vec![META, b'c'];
    k.extend_from_slice(&segment.to_be_bytes());
    k
}

pub fn cold_key_prefix() -> [u8; 2] {
    [META, b'c']
}

/// `META "s"` -> the highest sequence number handed out by a committed flush.
pub fn seq_key() -> [u8; 2] {
    [META, b's']
}

/// `META "v"` -> the value log's head and tail (vlog mode).
pub fn vlog_key() -> [u8; 2] {
    [META, b'v']
}

/// `META "u"` -> the stripe uuid of the devices this index belongs to.
pub fn uuid_key() -> [u8; 2] {
    [META, b'u']
}

pub fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    user_key_into(&mut k, key);
    k
}

/// `user_key` into `out`, replacing what it held: one buffer serves every key of a
/// flush or GC commit, instead of an allocation per key.
pub fn user_key_into<'o>(out: &'o mut Vec<u8>, key: &[u8]) -> &'o [u8] {
    out.clear();
    out.push(USER);
    out.extend_from_slice(key);
    out
}
