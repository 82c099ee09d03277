//! Ordered iteration over a memtable that owns an `Arc` of it. Nodes are never removed
//! or moved while the memtable lives, so the cursor keeps the address of the entry it
//! returned last: a forward step follows that node's level-0 link, a backward step
//! searches for the last node before it (the list has no backward links).

use std::sync::Arc;

use super::arena::Addr;
use super::node::SearchKey;
use super::Memtable;

pub(crate) struct MemIter {
    mem: Arc<Memtable>,
    forward: bool,
    state: State,
    /// The current node's user key, for a backward step's search.
    user_key: Vec<u8>,
}

enum State {
    /// Not started: the internal key to start at (forward: the first entry >= it,
    /// backward: the last entry <= it), or from the first or last entry.
    Start(Option<Vec<u8>>),
    /// At the entry returned last.
    At(Addr),
    Done,
}

impl MemIter {
    pub fn new(mem: Arc<Memtable>, forward: bool, start: Option<Vec<u8>>) -> MemIter {
        MemIter {
            mem,
            forward,
            state: State::Start(start),
            user_key: Vec::new(),
        }
    }

    /// The next entry in the cursor's direction: (internal key, value).
    pub fn step(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let next = match std::mem::replace(&mut self.state, State::Done) {
            State::Start(start) => self.first(start.as_deref()),
            State::At(at) if self.forward => self.mem.node(at).next(0),
            State::At(at) => self.before(at),
            State::Done => None,
        };
        let at = next?;
        self.state = State::At(at);
        let node = self.mem.node(at);
        let (mut key, mut value) = (Vec::new(), Vec::new());
        node.internal_key_into(&mut key);
        node.value_into(&mut value);
        Some((key, value))
    }

    fn first(&self, start: Option<&[u8]>) -> Option<Addr> {
        let mem = &self.mem;
        match (start, self.forward) {
            (None, true) => mem.node(mem.head).next(0),
            (None, false) => mem.last(),
            (Some(k), true) => mem.find(&SearchKey::internal(k), false, None).1,
            (Some(k), false) => mem.not_head(mem.find(&SearchKey::internal(k), true, None).0),
        }
    }

    /// The last node before `at`.
    fn before(&mut self, at: Addr) -> Option<Addr> {
        let node = self.mem.node(at);
        self.user_key.clear();
        node.user_key_into(&mut self.user_key);
        let key = SearchKey {
            user: &self.user_key,
            trailer: node.trailer(),
        };
        self.mem.not_head(self.mem.find(&key, false, None).0)
    }
}

impl Memtable {
    /// The last node, searching from the top level.
    fn last(&self) -> Option<Addr> {
        let mut at = self.head;
        for level in (0..self.height.load(std::sync::atomic::Ordering::Acquire)).rev() {
            while let Some(n) = self.node(at).next(level) {
                at = n;
            }
        }
        self.not_head(at)
    }

    fn not_head(&self, at: Addr) -> Option<Addr> {
        (at != self.head).then_some(at)
    }
}
