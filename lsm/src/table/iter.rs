//! A cursor over one table in either direction, owning its table so that it can live
//! inside a `RangeIter` that outlives the borrow of any tree structure.

use std::sync::Arc;

use super::block::Block;
use super::readahead::Readahead;
use super::reader::{ReadFor, TableReader};
use crate::error::Result;
use crate::ikey;
use crate::iter::InternalIter;

pub(crate) struct TableIter {
    table: Arc<TableReader>,
    forward: bool,
    /// Forward: first entry >= start. Backward: last entry <= start. None: from the end.
    start: Option<Vec<u8>>,
    started: bool,
    block_idx: usize,
    block: Option<Block>,
    /// Forward: next entry to yield. Backward: one past the next entry to yield.
    pos: usize,
    readahead: Readahead,
    done: bool,
}

impl TableIter {
    pub fn new(
        table: Arc<TableReader>,
        forward: bool,
        start: Option<Vec<u8>>,
        read_for: ReadFor,
    ) -> Self {
        TableIter {
            table,
            forward,
            start,
            started: false,
            block_idx: 0,
            block: None,
            pos: 0,
            readahead: Readahead::new(read_for),
            done: false,
        }
    }

    fn load(&mut self, i: usize) -> Result<()> {
        self.block_idx = i;
        self.block = Some(self.table.block(i, &mut self.readahead)?);
        Ok(())
    }

    fn seek(&mut self) -> Result<()> {
        let n = self.table.index.len();
        if n == 0 {
            self.done = true;
            return Ok(());
        }
        let start = self.start.take();
        if self.forward {
            let i = start.as_deref().map_or(0, |s| self.table.index.find(s));
            if i >= n {
                self.done = true;
                return Ok(());
            }
            self.load(i)?;
            self.pos = start
                .as_deref()
                .map_or(0, |s| self.block.as_ref().expect("loaded").seek(s));
        } else {
            let i = start.as_deref().map_or(n, |s| self.table.index.find(s));
            if i >= n {
                self.load(n - 1)?;
                self.pos = self.block.as_ref().expect("loaded").len();
            } else {
                self.load(i)?;
                let b = self.block.as_ref().expect("loaded");
                let s = start.as_deref().expect("start is set when i < n");
                let p = b.seek(s);
                self.pos = if p < b.len() && ikey::compare(b.key(p), s).is_eq() {
                    p + 1
                } else {
                    p
                };
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if !self.started {
            self.started = true;
            self.seek()?;
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let b = self.block.as_ref().expect("loaded");
            if self.forward {
                if self.pos < b.len() {
                    let e = (b.key(self.pos).to_vec(), b.value(self.pos).to_vec());
                    self.pos += 1;
                    return Ok(Some(e));
                }
                if self.block_idx + 1 >= self.table.index.len() {
                    self.done = true;
                    continue;
                }
                self.load(self.block_idx + 1)?;
                self.pos = 0;
            } else {
                if self.pos > 0 {
                    self.pos -= 1;
                    return Ok(Some((b.key(self.pos).to_vec(), b.value(self.pos).to_vec())));
                }
                if self.block_idx == 0 {
                    self.done = true;
                    continue;
                }
                self.load(self.block_idx - 1)?;
                self.pos = self.block.as_ref().expect("loaded").len();
            }
        }
    }
}

impl InternalIter for TableIter {
    fn next_entry(&mut self) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
