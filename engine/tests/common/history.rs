//! The writes a test made, in order, and what a store recovered from them must be: the
//! state after some prefix of the batches (each batch wholly there or wholly absent,
//! none out of order) that holds every batch acknowledged as durable. Shared by the
//! crash test and the fault sweep.

use hashkv::Db;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// Keys and their values.
pub type State = BTreeMap<Vec<u8>, Vec<u8>>;
/// One atomic write: keys with their new value, or None for a delete.
pub type Batch = Vec<(Vec<u8>, Option<Vec<u8>>)>;

pub fn apply(state: &mut State, batch: &Batch) {
    for (k, v) in batch {
        match v {
            Some(v) => state.insert(k.clone(), v.clone()),
            None => state.remove(k),
        };
    }
}

#[derive(Default)]
pub struct History {
    /// Every batch issued, in order; one that failed included (it may be there).
    pub batches: Vec<Batch>,
    /// The first `durable` batches were acknowledged as durable.
    pub durable: usize,
    /// The state after every batch.
    pub latest: State,
    /// Every key ever written or deleted.
    pub keys: BTreeSet<Vec<u8>>,
}

impl History {
    pub fn push(&mut self, batch: Batch) {
        apply(&mut self.latest, &batch);
        self.keys.extend(batch.iter().map(|(k, _)| k.clone()));
        self.batches.push(batch);
    }

    /// Every batch issued so far is durable (a durability call returned Ok).
    pub fn all_durable(&mut self) {
        self.durable = self.batches.len();
    }

    pub fn state_after(&self, n: usize) -> State {
        let mut state = State::new();
        for b in &self.batches[..n] {
            apply(&mut state, b);
        }
        state
    }

    /// The length of the prefix of at least `lowest` batches whose state is `got`, or
    /// a description of how `got` differs from the durable state.
    pub fn matching_prefix(&self, got: &State, lowest: usize) -> Result<usize, String> {
        let mut state = self.state_after(lowest);
        if state == *got {
            return Ok(lowest);
        }
        for (i, b) in self.batches.iter().enumerate().skip(lowest) {
            apply(&mut state, b);
            if state == *got {
                return Ok(i + 1);
            }
        }
        let durable = self.state_after(lowest);
        let differing: Vec<String> = durable
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .chain(
                got.keys()
                    .filter(|k| !durable.contains_key(*k))
                    .map(|k| format!("{} (not durable)", String::from_utf8_lossy(k))),
            )
            .take(5)
            .collect();
        Err(format!(
            "the recovered state ({} keys) is no prefix of the {} batches holding the {lowest} \
             durable ones; keys differing from the durable state: {differing:?}",
            got.len(),
            self.batches.len()
        ))
    }

    /// What `db` holds of the keys ever written: gets of each, checked against one full
    /// scan, which must return these keys only.
    pub fn read_all(&self, db: &Db) -> Result<State, String> {
        let mut got = State::new();
        for k in &self.keys {
            let v = db
                .get(k)
                .map_err(|e| format!("get {:?}: {e}", String::from_utf8_lossy(k)))?;
            if let Some(v) = v {
                got.insert(k.clone(), v);
            }
        }
        let scanned: State = db
            .scan(Bound::Unbounded, Bound::Unbounded)
            .map_err(|e| format!("scan: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("scan: {e}"))?;
        if scanned != got {
            return Err(format!(
                "a full scan ({} keys) disagrees with gets ({} keys)",
                scanned.len(),
                got.len()
            ));
        }
        Ok(got)
    }
}
