//! Choosing the next compaction.

use super::Compaction;
use crate::options::Options;
use std::sync::Arc;

use crate::version::{FileMeta, Version, LEVELS};

/// Bytes level `level` (>= 1) may hold before it is compacted.
pub(crate) fn level_bytes_max(options: &Options, level: usize) -> u64 {
    let mut m = options.level1_bytes_max;
    for _ in 1..level {
        m = m.saturating_mul(options.level_size_ratio);
    }
    m
}

/// Compaction pressure per level (>= 1.0 means over its limit). The last level has no
/// limit.
pub(crate) fn scores(options: &Options, v: &Version) -> [f64; LEVELS] {
    let mut s = [0.0; LEVELS];
    s[0] = v.levels[0].len() as f64 / options.l0_compaction_trigger as f64;
    for (level, score) in s.iter_mut().enumerate().take(LEVELS - 1).skip(1) {
        *score = v.level_bytes(level) as f64 / level_bytes_max(options, level) as f64;
    }
    s
}

/// The most urgent compaction whose levels are free.
pub(crate) fn pick(options: &Options, v: &Version, busy: &[bool; LEVELS]) -> Option<Compaction> {
    let s = scores(options, v);
    let mut order: Vec<usize> = (0..LEVELS - 1).filter(|&l| s[l] >= 1.0).collect();
    order.sort_by(|a, b| s[*b].total_cmp(&s[*a]));
    for level in order {
        if busy[level] || busy[level + 1] {
            continue;
        }
        if level == 0 {
            return Some(for_level0(v));
        }
        let f = least_overlapping(v, level);
        let next_inputs = v.overlapping(level + 1, Some(f.smallest_user()), Some(f.largest_user()));
        return Some(Compaction {
            level,
            inputs: vec![f],
            output_level: level + 1,
            next_inputs,
        });
    }
    None
}

/// The table of `level` (>= 1, not empty) whose compaction rewrites the fewest bytes of
/// the level below per byte it moves down (RocksDB's `kMinOverlappingRatio`): with
/// random keys every table overlaps about as much, but after skewed or sequential
/// writes this moves down the tables that cost least, and it moves a table with
/// nothing under it without rewriting anything (a trivial move). Round robin, which
/// this replaced, rewrote whatever lay next in key order.
fn least_overlapping(v: &Version, level: usize) -> Arc<FileMeta> {
    let below = &v.levels[level + 1];
    let overlap_bytes = |f: &FileMeta| -> u64 {
        let first = below.partition_point(|b| b.largest_user() < f.smallest_user());
        below[first..]
            .iter()
            .take_while(|b| b.smallest_user() <= f.largest_user())
            .map(|b| b.file_bytes)
            .sum()
    };
    let cost = |f: &FileMeta| overlap_bytes(f) as f64 / f.file_bytes.max(1) as f64;
    v.levels[level]
        .iter()
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .expect("a level over its limit holds tables")
        .clone()
}

/// All of L0 (its tables overlap, and leaving an older one behind would let it shadow
/// newer data moved to L1) plus the L1 tables under their key range.
pub(crate) fn for_level0(v: &Version) -> Compaction {
    let inputs = v.levels[0].clone();
    let lo = inputs
        .iter()
        .map(|f| f.smallest_user())
        .min()
        .map(|k| k.to_vec());
    let hi = inputs
        .iter()
        .map(|f| f.largest_user())
        .max()
        .map(|k| k.to_vec());
    let next_inputs = v.overlapping(1, lo.as_deref(), hi.as_deref());
    Compaction {
        level: 0,
        inputs,
        output_level: 1,
        next_inputs,
    }
}

/// For a manual compaction of [begin, end] at `level`: the tables there overlapping
/// the range (all of L0), and what lies under them.
pub(crate) fn for_range(
    v: &Version,
    level: usize,
    begin: Option<&[u8]>,
    end: Option<&[u8]>,
) -> Option<Compaction> {
    if level == 0 {
        if v.overlapping(0, begin, end).is_empty() {
            return None;
        }
        return Some(for_level0(v));
    }
    let inputs = v.overlapping(level, begin, end);
    if inputs.is_empty() {
        return None;
    }
    let lo = inputs.first().expect("non-empty").smallest_user().to_vec();
    let hi = inputs.last().expect("non-empty").largest_user().to_vec();
    let next_inputs = v.overlapping(level + 1, Some(&lo), Some(&hi));
    Some(Compaction {
        level,
        inputs,
        output_level: level + 1,
        next_inputs,
    })
}

/// For a manual compaction: the tables of `level` (>= 1, the deepest holding data in
/// the range) overlapping [begin, end], rewritten in place. They are contiguous in their
/// sorted level, so the outputs take exactly their place.
pub(crate) fn in_place(
    v: &Version,
    level: usize,
    begin: Option<&[u8]>,
    end: Option<&[u8]>,
) -> Option<Compaction> {
    assert!(
        level >= 1,
        "L0 tables overlap each other and are never rewritten in place"
    );
    let inputs = v.overlapping(level, begin, end);
    (!inputs.is_empty()).then_some(Compaction {
        level,
        inputs,
        output_level: level,
        next_inputs: Vec::new(),
    })
}
