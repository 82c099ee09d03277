//! One cycle's operation log as the checker needs it: the operations in order, which
//! of them were acknowledged, and up to which one they are durable. Built from the
//! records of `oplog`, checking that they tell a story the child could have written
//! (ids in sequence, at most the last operation unacknowledged).

use super::oplog::{Entry, OpKind, Record};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedOp {
    pub id: u64,
    pub kind: OpKind,
    pub entries: Vec<Entry>,
    /// False only for the last operation: the child was killed while it ran (or
    /// before it started).
    pub acked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleLog {
    pub cycle: u32,
    pub first_op: u64,
    pub ops: Vec<LoggedOp>,
    /// Every operation with an id up to this one is durable.
    pub durable_through: Option<u64>,
    pub torn_tail_bytes: usize,
}

impl CycleLog {
    /// The log of a cycle whose child wrote nothing (killed while opening the store).
    pub fn empty(cycle: u32, first_op: u64) -> CycleLog {
        CycleLog {
            cycle,
            first_op,
            ops: Vec::new(),
            durable_through: None,
            torn_tail_bytes: 0,
        }
    }

    /// The id after the last operation logged.
    pub fn end_op(&self) -> u64 {
        self.first_op + self.ops.len() as u64
    }

    pub fn acked_count(&self) -> u64 {
        self.ops.iter().filter(|o| o.acked).count() as u64
    }

    /// Operations up to the durability point.
    pub fn durable_count(&self) -> u64 {
        self.durable_through.map_or(0, |d| d + 1 - self.first_op)
    }

    pub fn op(&self, id: u64) -> Option<&LoggedOp> {
        let at = id.checked_sub(self.first_op)?;
        self.ops.get(usize::try_from(at).ok()?)
    }

    /// Assembles the records of cycle `cycle`, whose ids must start at `first_op`.
    pub fn from_records(
        records: &[Record],
        cycle: u32,
        first_op: u64,
        torn_tail_bytes: usize,
    ) -> Result<CycleLog, String> {
        let mut log = CycleLog::empty(cycle, first_op);
        log.torn_tail_bytes = torn_tail_bytes;
        let Some((first, rest)) = records.split_first() else {
            return Ok(log);
        };
        match first {
            Record::Begin {
                cycle: c,
                first_op: f,
            } if *c == cycle && *f == first_op => {}
            other => {
                return Err(format!(
                "begins with {other:?}, expected Begin {{ cycle: {cycle}, first_op: {first_op} }}"
            ))
            }
        }
        for (i, record) in rest.iter().enumerate() {
            log.add(record)
                .map_err(|why| format!("record {}: {why}", i + 1))?;
        }
        Ok(log)
    }

    fn add(&mut self, record: &Record) -> Result<(), String> {
        let last_acked = self.ops.last().is_none_or(|o| o.acked);
        match record {
            Record::Begin { .. } => Err("a second Begin".into()),
            Record::Pending { op, kind, entries } => {
                if !last_acked {
                    return Err(format!(
                        "op {op} pending before op {} was acknowledged",
                        op - 1
                    ));
                }
                if *op != self.end_op() {
                    return Err(format!("op {op} pending, expected op {}", self.end_op()));
                }
                let mut keys: Vec<u32> = entries.iter().map(|e| e.key).collect();
                keys.sort_unstable();
                if keys.windows(2).any(|w| w[0] == w[1]) {
                    return Err(format!("op {op} names a key twice"));
                }
                self.ops.push(LoggedOp {
                    id: *op,
                    kind: *kind,
                    entries: entries.clone(),
                    acked: false,
                });
                Ok(())
            }
            Record::Acked { op } => match self.ops.last_mut() {
                Some(last) if last.id == *op && !last.acked => {
                    last.acked = true;
                    Ok(())
                }
                _ => Err(format!(
                    "op {op} acknowledged, but it is not the pending op"
                )),
            },
            Record::Durable { through_op } => {
                let newest_acked = self.ops.iter().rev().find(|o| o.acked).map(|o| o.id);
                if newest_acked.is_none_or(|a| *through_op > a) {
                    return Err(format!(
                        "durable through op {through_op}, beyond the newest acknowledged op \
                         {newest_acked:?}"
                    ));
                }
                if self.durable_through.is_some_and(|d| d > *through_op) {
                    return Err(format!("durable point {through_op} goes backwards"));
                }
                self.durable_through = Some(*through_op);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(op: u64, keys: &[u32]) -> Record {
        Record::Pending {
            op,
            kind: OpKind::Batch,
            entries: keys.iter().map(|&key| Entry { key, put: true }).collect(),
        }
    }

    #[test]
    fn a_consistent_log_assembles() {
        let records = vec![
            Record::Begin {
                cycle: 2,
                first_op: 10,
            },
            pending(10, &[1, 2]),
            Record::Acked { op: 10 },
            Record::Durable { through_op: 10 },
            pending(11, &[3]),
        ];
        let log = CycleLog::from_records(&records, 2, 10, 5).unwrap();
        assert_eq!(log.ops.len(), 2);
        assert!(log.ops[0].acked && !log.ops[1].acked);
        assert_eq!(log.durable_through, Some(10));
        assert_eq!(log.end_op(), 12);
        assert_eq!(log.durable_count(), 1);
        assert_eq!(log.torn_tail_bytes, 5);
    }

    #[test]
    fn inconsistent_logs_are_refused() {
        let begin = Record::Begin {
            cycle: 1,
            first_op: 0,
        };
        let cases: Vec<(Vec<Record>, &str)> = vec![
            (
                vec![Record::Begin {
                    cycle: 2,
                    first_op: 0,
                }],
                "expected Begin",
            ),
            (vec![begin.clone(), pending(1, &[1])], "expected op 0"),
            (
                vec![begin.clone(), pending(0, &[1]), pending(1, &[2])],
                "before op 0 was",
            ),
            (
                vec![begin.clone(), Record::Acked { op: 0 }],
                "not the pending op",
            ),
            (
                vec![begin.clone(), pending(0, &[4, 4])],
                "names a key twice",
            ),
            (
                vec![
                    begin.clone(),
                    pending(0, &[1]),
                    Record::Durable { through_op: 0 },
                ],
                "beyond the newest",
            ),
        ];
        for (records, expected) in cases {
            let e = CycleLog::from_records(&records, 1, 0, 0).unwrap_err();
            assert!(e.contains(expected), "{e} lacks {expected}");
        }
    }
}
