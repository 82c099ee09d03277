//! Keys and values that check themselves. A key names its index; a value names its key
//! and its version, and every byte of it (its length included) follows from those two,
//! so a reader can tell the exact write a value came from, and any value that no write
//! produced (another key's, a damaged one, a torn one) is recognised as such.

/// Values shorter than this stay inline in the index (the engine's selective
/// separation); the stores of crashtest and soak are opened with it, and the value
/// sizes below are drawn around it.
pub const SEPARATION_THRESHOLD_BYTES: u64 = 128;

/// Bytes at the head of every value: the key index (u32 LE) and the version (u64 LE).
const VALUE_HEADER_BYTES: usize = 12;

/// Size classes of values: (weight out of 100, shortest, longest). About a third stay
/// inline, a sixth straddle the threshold by a few bytes on each side (the boundary is
/// where a mode could misfile a value), and the rest go to the value store, from a
/// fraction of a block to several blocks. The last class is of values over
/// `LARGE_VALUE_BYTES_MIN`: the engine's writers copy those into aligned buffers of
/// their own, and flushes write their whole sectors from there (the spliced path of
/// `engine/src/record_write.rs`), not from the flush's encoded buffer.
const VALUE_SIZE_CLASSES: [(u64, usize, usize); 5] = [
    (30, 16, SEPARATION_THRESHOLD_BYTES as usize - 9),
    (
        15,
        SEPARATION_THRESHOLD_BYTES as usize - 8,
        SEPARATION_THRESHOLD_BYTES as usize + 8,
    ),
    (40, SEPARATION_THRESHOLD_BYTES as usize + 9, 2048),
    (10, 2049, LARGE_VALUE_BYTES_MIN - 1),
    (5, LARGE_VALUE_BYTES_MIN, VALUE_BYTES_MAX),
];

/// Values from this length on take the engine's path for large values: longer than
/// the 16 KiB its write cache's arena holds (`cache_map::ARENA_VALUE_BYTES_MAX`).
pub const LARGE_VALUE_BYTES_MIN: usize = (16 << 10) + 1;

/// The longest value: seven blocks, within half the stores' log segments (a record
/// never spans two), and long enough that on 4 KiB sectors some large values are
/// padded onto a sector and written spliced (padding of at most an eighth of them).
pub const VALUE_BYTES_MAX: usize = 28 << 10;

const _: () = assert!(VALUE_SIZE_CLASSES[0].1 >= VALUE_HEADER_BYTES);
const _: () = {
    let (mut sum, mut i) = (0, 0);
    while i < VALUE_SIZE_CLASSES.len() {
        sum += VALUE_SIZE_CLASSES[i].0;
        i += 1;
    }
    assert!(sum == 100);
};

/// Prefix of every key.
const KEY_PREFIX: &str = "ck";
/// Digits after the prefix: zero-padded, so key order is index order and a range of
/// indexes is a range of keys.
const KEY_DIGITS: usize = 10;

/// The key of index `index`.
pub fn key(index: u32) -> Vec<u8> {
    format!("{KEY_PREFIX}{index:0KEY_DIGITS$}").into_bytes()
}

/// The index a key names, if it is one of `key`'s.
pub fn key_index(key: &[u8]) -> Option<u32> {
    let digits = key.strip_prefix(KEY_PREFIX.as_bytes())?;
    if digits.len() != KEY_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A key for messages: its text (every key of `key` is printable).
pub fn show_key(index: u32) -> String {
    String::from_utf8_lossy(&key(index)).into_owned()
}

/// SplitMix64: a small, well-mixed deterministic function of its input.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn value_seed(key: u32, version: u64) -> u64 {
    mix(mix(version) ^ u64::from(key))
}

/// The length of the value of (`key`, `version`).
pub fn value_len(key: u32, version: u64) -> usize {
    let s = value_seed(key, version);
    let mut pick = s % 100;
    for (weight, shortest, longest) in VALUE_SIZE_CLASSES {
        if pick < weight {
            let span = (longest - shortest + 1) as u64;
            return shortest + (mix(s) % span) as usize;
        }
        pick -= weight;
    }
    unreachable!("the weights add up to 100")
}

/// The value written as version `version` of key `key`.
pub fn value(key: u32, version: u64) -> Vec<u8> {
    let len = value_len(key, version);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    let mut s = value_seed(key, version);
    while v.len() < len {
        s = mix(s);
        let take = (len - v.len()).min(8);
        v.extend_from_slice(&s.to_le_bytes()[..take]);
    }
    v
}

/// The version of `key` that `bytes` is, or why it is no value ever written to `key`.
pub fn decode(key: u32, bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < VALUE_HEADER_BYTES {
        return Err(format!(
            "{} bytes, shorter than any value written ({})",
            bytes.len(),
            describe(bytes)
        ));
    }
    let named_key = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let version = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
    if named_key != key {
        return Err(format!(
            "a value of key {} (version {version}), {} bytes",
            show_key(named_key),
            bytes.len()
        ));
    }
    let expected = value(key, version);
    if expected != bytes {
        let first_diff = expected
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(bytes.len()));
        return Err(format!(
            "{} bytes claiming version {version}, whose value has {} bytes; they differ from \
             byte {first_diff} ({})",
            bytes.len(),
            expected.len(),
            describe(bytes)
        ));
    }
    Ok(version)
}

/// The first bytes of `bytes` in hex, for messages.
fn describe(bytes: &[u8]) -> String {
    const SHOWN_BYTES: usize = 16;
    let hex: String = bytes
        .iter()
        .take(SHOWN_BYTES)
        .map(|b| format!("{b:02x}"))
        .collect();
    let more = if bytes.len() > SHOWN_BYTES { "..." } else { "" };
    format!("starting {hex}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_their_indexes_and_parse_back() {
        assert!(key(9) < key(10) && key(10) < key(1_000_000));
        for i in [0, 7, 4095, u32::MAX] {
            assert_eq!(key_index(&key(i)), Some(i));
        }
        assert_eq!(key_index(b"ck12"), None);
        assert_eq!(key_index(b"xx0000000001"), None);
    }

    #[test]
    fn values_decode_to_their_version_and_nothing_else_does() {
        for version in 0..200u64 {
            let v = value(3, version);
            assert_eq!(decode(3, &v), Ok(version));
            assert!(decode(4, &v)
                .unwrap_err()
                .contains("a value of key ck0000000003"));
            let mut flipped = v.clone();
            *flipped.last_mut().unwrap() ^= 1;
            assert!(decode(3, &flipped).is_err());
            assert!(decode(3, &v[..v.len() - 1]).is_err(), "a torn value");
        }
        assert!(decode(3, b"short").unwrap_err().contains("shorter"));
        assert!(decode(3, &[0u8; 64]).is_err(), "zeros are no value");
    }

    #[test]
    fn sizes_fall_on_both_sides_of_the_threshold() {
        let threshold = SEPARATION_THRESHOLD_BYTES as usize;
        let lens: Vec<usize> = (0..10_000u64).map(|v| value_len(1, v)).collect();
        let inline = lens.iter().filter(|&&l| l < threshold).count();
        let near = lens.iter().filter(|&&l| l.abs_diff(threshold) <= 8).count();
        let large = lens.iter().filter(|&&l| l > 4096).count();
        let spliced = lens.iter().filter(|&&l| l >= LARGE_VALUE_BYTES_MIN).count();
        assert!((3000..4500).contains(&inline), "{inline} inline");
        assert!(near > 1000, "{near} near the threshold");
        assert!(large > 500, "{large} larger than a block");
        assert!(spliced > 300, "{spliced} over 16 KiB");
        assert!(lens.iter().all(|&l| (16..=VALUE_BYTES_MAX).contains(&l)));
    }
}
