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

/// Levels due for compaction, most urgent first: by score, except that L0 goes first
/// whenever it holds `l0_slowdown_trigger` tables.
fn urgency_order(options: &Options, scores: &[f64; LEVELS], l0_tables: usize) -> Vec<usize> {
    let mut s = *scores;
    if l0_tables >= options.l0_slowdown_trigger {
        // Writers are being slowed for L0: draining it goes before a deeper level's
        // size, which costs only write amplification. By score alone, L1 -> L2
        // compactions of an L1 three times over its limit ran for seconds while L0
        // climbed from 20 to the stop trigger (the engine's lsm mode stopped writers
        // for 2-6 s in most runs of `hashkv bench --mode lsm --load-gib 2
        // --update-gib 2 --phases 3`).
        s[0] = f64::INFINITY;
    }
    let mut order: Vec<usize> = (0..LEVELS - 1).filter(|&l| s[l] >= 1.0).collect();
    order.sort_by(|a, b| s[*b].total_cmp(&s[*a]));
    order
}

/// The most urgent compaction whose levels are free.
pub(crate) fn pick(options: &Options, v: &Version, busy: &[bool; LEVELS]) -> Option<Compaction> {
    let order = urgency_order(options, &scores(options, v), v.levels[0].len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l0_goes_first_once_writers_are_slowed_for_it_and_by_score_before() {
        let o = Options {
            l0_compaction_trigger: 8,
            l0_slowdown_trigger: 20,
            ..Options::default()
        };
        let mut s = [0.0; LEVELS];
        // L0 with 16 tables (score 2), L1 three and a half times its limit, L2 under.
        s[0] = 2.0;
        s[1] = 3.5;
        s[2] = 0.5;
        assert_eq!(urgency_order(&o, &s, 16), vec![1, 0]);
        // At the slowdown trigger, L0 first whatever L1's score.
        s[0] = 2.5;
        assert_eq!(urgency_order(&o, &s, 20), vec![0, 1]);
        // Nothing due: nothing, L0 included below its trigger.
        assert!(urgency_order(&o, &[0.5; LEVELS], 4).is_empty());
    }
}
