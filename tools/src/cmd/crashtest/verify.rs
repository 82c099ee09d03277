//! The checker: does what the store holds after a kill agree with the operation log?
//!
//! Every put writes version = its operation's id, so what a key holds names the exact
//! operation that wrote it. Per key, the store must hold the state of one of the
//! operations on it (or the state verified after the previous cycle), and:
//! - no value that was never written: a value that does not decode, or whose version
//!   no operation wrote to that key;
//! - no durable write lost and no durably deleted key back: the state must be that of
//!   the newest durable operation on the key or of a later one.
//!
//! Then, over all keys at once: the store must equal the state after some prefix of
//! the operations, cut at or after the durability point (the engine promises that what
//! survives a crash is a prefix of the acknowledged writes, and a batch is all or
//! nothing). A sweep over the cut points finds one; when none fits, the two keys that
//! exclude each other are named: one batch half there is a torn batch (or a torn
//! pending operation), otherwise writes survived out of order.

use super::cycle_log::{CycleLog, LoggedOp};
use crate::cmd::stress::values::show_key;

/// Per key index: the version it holds, or `None` when it holds no value.
pub type KeyStates = Vec<Option<u64>>;

/// What a key reads back as after the kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Absent,
    Version(u64),
    /// A value no write produced for this key: why it is none.
    Foreign(String),
}

impl Seen {
    fn state(&self) -> Option<Option<u64>> {
        match self {
            Seen::Absent => Some(None),
            Seen::Version(v) => Some(Some(*v)),
            Seen::Foreign(_) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Seen::Absent => "no value".into(),
            Seen::Version(v) => format!("version {v}"),
            Seen::Foreign(why) => format!("a value never written ({why})"),
        }
    }
}

/// A violation, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: u32,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// What every key holds now: the base of the next cycle.
    pub state: KeyStates,
    /// Keys whose newest durable operation of this cycle was found (or superseded).
    pub durable_keys_verified: u64,
    /// Acknowledged operations past the durability point that the kill lost (allowed:
    /// they were not durable).
    pub acked_ops_lost: u64,
}

fn show_state(state: Option<u64>) -> String {
    match state {
        Some(v) => format!("version {v}"),
        None => "no value".into(),
    }
}

/// The state a cycle starts from, in words.
fn before_cycle(cycle: u32) -> String {
    match cycle {
        0 | 1 => "the store as formatted (empty)".into(),
        _ => format!(
            "the state verified after cycle {} (closed cleanly)",
            cycle - 1
        ),
    }
}

fn describe_op(op: &LoggedOp) -> String {
    let status = if op.acked {
        "acknowledged"
    } else {
        "pending, unacknowledged"
    };
    format!(
        "op #{} ({}, {} key(s), {status})",
        op.id,
        op.kind.name(),
        op.entries.len()
    )
}

/// The operations on one key: its state before the cycle, then (op id, state after).
struct History {
    base: Option<u64>,
    writes: Vec<(u64, Option<u64>)>,
}

impl History {
    /// The key's state with the operations before `cut` applied.
    fn state_at(&self, cut: u64) -> Option<u64> {
        let applied = self.writes.partition_point(|&(op, _)| op < cut);
        if applied == 0 {
            self.base
        } else {
            self.writes[applied - 1].1
        }
    }

    /// States in order with the cut points each holds over: state j holds for cuts in
    /// `from..=to` (cut = id of the first operation not applied).
    fn spans(&self, first_op: u64, end_op: u64) -> Vec<(Option<u64>, u64, u64)> {
        let mut spans = Vec::with_capacity(self.writes.len() + 1);
        let mut from = first_op;
        let mut state = self.base;
        for &(op, next) in &self.writes {
            spans.push((state, from, op));
            from = op + 1;
            state = next;
        }
        spans.push((state, from, end_op));
        spans
    }
}

fn histories(base: &KeyStates, log: &CycleLog) -> Result<Vec<History>, Finding> {
    let mut h: Vec<History> = base
        .iter()
        .map(|&b| History {
            base: b,
            writes: Vec::new(),
        })
        .collect();
    for op in &log.ops {
        for e in &op.entries {
            let Some(key) = h.get_mut(e.key as usize) else {
                return Err(Finding {
                    key: e.key,
                    what: format!("the log's op #{} names a key beyond the key space", op.id),
                });
            };
            key.writes.push((op.id, e.put.then_some(op.id)));
        }
    }
    Ok(h)
}

/// Checks what the store holds (`seen`, one per key) against `base` (what each key
/// held before the cycle) and the cycle's log.
pub fn verify(base: &KeyStates, log: &CycleLog, seen: &[Seen]) -> Result<Verified, Finding> {
    assert_eq!(base.len(), seen.len(), "one observation per key");
    let hist = histories(base, log)?;
    let mut durable_keys_verified = 0;
    for (key, (h, s)) in hist.iter().zip(seen).enumerate() {
        if check_key(key as u32, h, s, log)? {
            durable_keys_verified += 1;
        }
    }
    let states: Vec<Option<u64>> = seen
        .iter()
        .map(|s| s.state().expect("foreign values were refused"))
        .collect();
    let swept = sweep(&hist, &states, log);
    let cut_max = swept
        .last_fit
        .ok_or_else(|| diagnose_no_prefix(&hist, &states, log, swept.closest.0))?;
    let acked_ops_lost = log
        .ops
        .iter()
        .filter(|o| o.id >= cut_max && o.acked)
        .count() as u64;
    Ok(Verified {
        state: states,
        durable_keys_verified,
        acked_ops_lost,
    })
}

/// The checks of one key on its own. Returns whether the key has a durable operation
/// in this cycle (which it then was found to honour).
fn check_key(key: u32, h: &History, seen: &Seen, log: &CycleLog) -> Result<bool, Finding> {
    let fail = |what: String| Err(Finding { key, what });
    let cycle = log.cycle;
    match seen {
        Seen::Foreign(why) => return fail(format!("holds a value that was never written: {why}")),
        Seen::Version(v) if h.base != Some(*v) && !h.writes.contains(&(*v, Some(*v))) => {
            return fail(if *v < log.first_op {
                format!(
                    "holds version {v}, written before this cycle, but in {} it held {}: an \
                     overwritten or deleted value came back",
                    before_cycle(cycle),
                    show_state(h.base)
                )
            } else {
                format!("holds version {v}, which no operation wrote to it: a value never written")
            })
        }
        _ => {}
    }
    let durable_cut = log.durable_through.map_or(log.first_op, |d| d + 1);
    let durable_writes = h.writes.partition_point(|&(op, _)| op < durable_cut);
    let newest_durable = h.state_at(durable_cut);
    let state = seen.state().expect("foreign values were refused");
    // The states from the newest durable one on.
    let mut allowed =
        std::iter::once(newest_durable).chain(h.writes[durable_writes..].iter().map(|w| w.1));
    if allowed.any(|s| s == state) {
        return Ok(durable_writes > 0);
    }
    let by = match durable_writes.checked_sub(1) {
        Some(i) => describe_op(log.op(h.writes[i].0).expect("logged")),
        None => before_cycle(cycle),
    };
    fail(match (newest_durable, state) {
        (None, Some(v)) => {
            format!("a deleted key came back: deleted durably by {by}, it reads version {v}")
        }
        (Some(d), None) => {
            format!("lost durable write: {by} left version {d}, and the key has no value")
        }
        (Some(d), Some(v)) => format!(
            "lost durable write: {by} left version {d}, and the key reads the older version {v}"
        ),
        (None, None) => unreachable!("no value is always a durable state's match"),
    })
}

/// Where the sweep over cut points ended.
struct Sweep {
    /// The last cut at which the store equals the operations before it.
    last_fit: Option<u64>,
    /// The cut with the fewest keys differing, and their count.
    closest: (u64, usize),
}

/// Sweeps the cut points from the durability point to the end of the log, applying one
/// operation at a time and counting the keys that differ from the store.
fn sweep(hist: &[History], states: &[Option<u64>], log: &CycleLog) -> Sweep {
    let start = log.durable_through.map_or(log.first_op, |d| d + 1);
    let mut differs: Vec<bool> = hist
        .iter()
        .zip(states)
        .map(|(h, &s)| h.state_at(start) != s)
        .collect();
    let mut differing = differs.iter().filter(|&&d| d).count();
    let mut result = Sweep {
        last_fit: (differing == 0).then_some(start),
        closest: (start, differing),
    };
    for op in log.ops.iter().filter(|o| o.id >= start) {
        for e in &op.entries {
            let k = e.key as usize;
            let now = e.put.then_some(op.id) != states[k];
            match (differs[k], now) {
                (true, false) => differing -= 1,
                (false, true) => differing += 1,
                _ => {}
            }
            differs[k] = now;
        }
        if differing == 0 {
            result.last_fit = Some(op.id + 1);
        }
        if differing < result.closest.1 {
            result.closest = (op.id + 1, differing);
        }
    }
    result
}

/// Names why no cut fits: the key needing the latest cut against the key needing the
/// earliest, or else the closest cut's first difference.
fn diagnose_no_prefix(
    hist: &[History],
    states: &[Option<u64>],
    log: &CycleLog,
    closest: u64,
) -> Finding {
    let start = log.durable_through.map_or(log.first_op, |d| d + 1);
    let end = log.end_op();
    // Per key: the hull of the cuts at which it holds what it holds.
    let hulls: Vec<(u32, u64, u64)> = hist
        .iter()
        .zip(states)
        .enumerate()
        .filter(|(_, (h, _))| !h.writes.is_empty())
        .filter_map(|(k, (h, &s))| {
            let fits = h
                .spans(log.first_op, end)
                .into_iter()
                .filter(|&(st, from, to)| st == s && from.max(start) <= to.min(end));
            let (lo, hi) = fits.fold((u64::MAX, 0), |(lo, hi), (_, from, to)| {
                (lo.min(from.max(start)), hi.max(to.min(end)))
            });
            (lo <= hi).then_some((k as u32, lo, hi))
        })
        .collect();
    let latest = hulls.iter().max_by_key(|h| h.1);
    let earliest = hulls.iter().min_by_key(|h| h.2);
    if let (Some(&(a, lo_a, _)), Some(&(b, _, hi_b))) = (latest, earliest) {
        if lo_a > hi_b {
            return out_of_order(log, a, lo_a - 1, b, hi_b, states[b as usize]);
        }
    }
    closest_cut(hist, states, log, closest)
}

fn out_of_order(
    log: &CycleLog,
    a: u32,
    op_a: u64,
    b: u32,
    op_b: u64,
    b_state: Option<u64>,
) -> Finding {
    let op_a = log.op(op_a).expect("a key's cut names a logged op");
    let op_b = log.op(op_b).expect("a key's cut names a logged op");
    let what = if op_a.id == op_b.id {
        format!(
            "{} is only partly in the store (a batch must be all or nothing): key {} holds its \
             write, key {} does not (it holds {})",
            describe_op(op_a),
            show_key(a),
            show_key(b),
            show_state(b_state)
        )
    } else {
        format!(
            "writes survived out of order (the store must hold a prefix of the operations): \
             key {} holds the write of {}, but key {} lacks the earlier {} (it holds {})",
            show_key(a),
            describe_op(op_a),
            show_key(b),
            describe_op(op_b),
            show_state(b_state)
        )
    };
    Finding { key: b, what }
}

fn closest_cut(hist: &[History], states: &[Option<u64>], log: &CycleLog, cut: u64) -> Finding {
    let keys: Vec<u32> = hist
        .iter()
        .zip(states)
        .enumerate()
        .filter(|(_, (h, &s))| h.state_at(cut) != s)
        .map(|(k, _)| k as u32)
        .collect();
    let key = keys[0];
    let h = &hist[key as usize];
    Finding {
        key,
        what: format!(
            "no prefix of the cycle's operations explains the store: the closest, the first \
             {} operations, differs in {} key(s); key {} should hold {} there and holds {}",
            cut - log.first_op,
            keys.len(),
            show_key(key),
            show_state(h.state_at(cut)),
            show_state(states[key as usize])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::oplog::{Entry, OpKind};
    use super::*;

    /// Cycle 2 from op 100 over 5 keys; key 4 held version 7 before it.
    /// 100 put k0 | 101 batch put k1 k2 | 102 flush (durable) | 103 delete k1
    /// 104 put k0 | 105 write_sync put k3, delete k4 | 106 delete k0
    /// 107 batch put k1 k2 (pending)
    fn scenario(durable_through: Option<u64>, last_acked: bool) -> (KeyStates, CycleLog) {
        let ops: Vec<(OpKind, Vec<(u32, bool)>)> = vec![
            (OpKind::Put, vec![(0, true)]),
            (OpKind::Batch, vec![(1, true), (2, true)]),
            (OpKind::Flush, vec![]),
            (OpKind::Delete, vec![(1, false)]),
            (OpKind::Put, vec![(0, true)]),
            (OpKind::WriteSync, vec![(3, true), (4, false)]),
            (OpKind::Delete, vec![(0, false)]),
            (OpKind::Batch, vec![(1, true), (2, true)]),
        ];
        let n = ops.len();
        let mut log = CycleLog::empty(2, 100);
        for (i, (kind, entries)) in ops.into_iter().enumerate() {
            log.ops.push(LoggedOp {
                id: 100 + i as u64,
                kind,
                entries: entries
                    .into_iter()
                    .map(|(key, put)| Entry { key, put })
                    .collect(),
                acked: i + 1 < n || last_acked,
            });
        }
        log.durable_through = durable_through;
        (vec![None, None, None, None, Some(7)], log)
    }

    fn seen(states: &[Option<u64>]) -> Vec<Seen> {
        states
            .iter()
            .map(|s| s.map_or(Seen::Absent, Seen::Version))
            .collect()
    }

    fn finding(durable: Option<u64>, states: &[Option<u64>]) -> Finding {
        let (base, log) = scenario(durable, false);
        verify(&base, &log, &seen(states)).unwrap_err()
    }

    #[test]
    fn every_prefix_from_the_durability_point_on_passes() {
        let (base, log) = scenario(Some(102), false);
        let cuts: [&[Option<u64>]; 6] = [
            &[Some(100), Some(101), Some(101), None, Some(7)],
            &[Some(100), None, Some(101), None, Some(7)],
            &[Some(104), None, Some(101), None, Some(7)],
            &[Some(104), None, Some(101), Some(105), None],
            &[None, None, Some(101), Some(105), None],
            &[None, Some(107), Some(107), Some(105), None],
        ];
        for (i, states) in cuts.iter().enumerate() {
            let v = verify(&base, &log, &seen(states)).unwrap_or_else(|f| panic!("cut {i}: {f:?}"));
            assert_eq!(v.state, states.to_vec());
            assert_eq!(
                v.durable_keys_verified, 3,
                "keys 0, 1, 2 had durable writes"
            );
        }
        let lost = verify(&base, &log, &seen(cuts[0])).unwrap().acked_ops_lost;
        assert_eq!(lost, 4, "ops 103..=106 were acknowledged and lost");
    }

    #[test]
    fn a_lost_durable_write_is_reported() {
        let f = finding(Some(102), &[Some(100), Some(101), None, None, Some(7)]);
        assert_eq!(f.key, 2);
        assert!(
            f.what.contains("lost durable write: op #101 (batch"),
            "{}",
            f.what
        );
        // A key this cycle never touched must keep what the last cycle verified.
        let (mut base, log) = scenario(Some(102), false);
        base.push(Some(9));
        let mut s = seen(&[Some(100), Some(101), Some(101), None, Some(7)]);
        s.push(Seen::Absent);
        let f = verify(&base, &log, &s).unwrap_err();
        assert_eq!(f.key, 5);
        assert!(
            f.what
                .contains("lost durable write: the state verified after cycle 1"),
            "{}",
            f.what
        );
    }

    #[test]
    fn a_durably_deleted_key_that_comes_back_is_reported() {
        let f = finding(Some(106), &[Some(104), None, Some(101), Some(105), None]);
        assert_eq!(f.key, 0);
        assert!(
            f.what
                .contains("a deleted key came back: deleted durably by op #106"),
            "{}",
            f.what
        );
        let f = finding(Some(105), &[Some(104), None, Some(101), Some(105), Some(7)]);
        assert_eq!(f.key, 4);
        assert!(f.what.contains("deleted key came back"), "{}", f.what);
    }

    #[test]
    fn values_never_written_are_reported() {
        let f = finding(None, &[Some(101), None, None, None, Some(7)]);
        assert_eq!(f.key, 0);
        assert!(
            f.what
                .contains("version 101, which no operation wrote to it"),
            "{}",
            f.what
        );
        let f = finding(None, &[None, None, None, Some(5), Some(7)]);
        assert!(f.what.contains("written before this cycle"), "{}", f.what);
        let (base, log) = scenario(None, false);
        let mut s = seen(&base);
        s[2] = Seen::Foreign("16 bytes of zeros".into());
        let f = verify(&base, &log, &s).unwrap_err();
        assert_eq!(f.key, 2);
        assert!(
            f.what.contains("never written: 16 bytes of zeros"),
            "{}",
            f.what
        );
    }

    #[test]
    fn a_torn_batch_is_reported_pending_or_acknowledged() {
        for acked in [false, true] {
            let (base, log) = scenario(Some(102), acked);
            let s = seen(&[None, Some(107), Some(101), Some(105), None]);
            let f = verify(&base, &log, &s).unwrap_err();
            assert_eq!(f.key, 2);
            assert!(f.what.contains("op #107 (batch, 2 key(s)"), "{}", f.what);
            assert!(f.what.contains("only partly in the store"), "{}", f.what);
        }
        // A torn write_sync past the durability point.
        let f = finding(Some(102), &[Some(104), None, Some(101), Some(105), Some(7)]);
        assert!(
            f.what
                .contains("op #105 (write_sync, 2 key(s), acknowledged) is only partly"),
            "{}",
            f.what
        );
    }

    #[test]
    fn writes_surviving_out_of_order_are_reported() {
        // Key 3 holds op 105's write, key 0 lacks op 104 (acknowledged before it).
        let f = finding(Some(102), &[Some(100), None, Some(101), Some(105), None]);
        assert_eq!(f.key, 0);
        assert!(f.what.contains("survived out of order"), "{}", f.what);
        assert!(
            f.what.contains("lacks the earlier op #104 (put"),
            "{}",
            f.what
        );
    }
}
