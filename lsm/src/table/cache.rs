//! Block cache: data blocks as read (checksum verified, searched in place) keyed by (table number, block offset), sharded to
//! keep lock hold times short, evicted by CLOCK (a FIFO that gives recently hit blocks
//! a second chance). We cache on top of the page cache because a pread plus checksum
//! of a cached page still costs more than a hash lookup, and the cache keeps the blocks
//! that gets touch hot even when scans and compactions stream through the page cache.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::block::RawBlock as Block;

const SHARDS: usize = 16;

type Key = (u64, u64);

struct Slot {
    block: Arc<Block>,
    referenced: AtomicBool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Key, Slot>,
    clock: VecDeque<Key>,
    charge_bytes: usize,
}

pub(crate) struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_bytes_max: usize,
}

impl BlockCache {
    pub fn new(capacity_bytes: usize) -> BlockCache {
        BlockCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_bytes_max: capacity_bytes / SHARDS,
        }
    }

    fn shard(&self, key: Key) -> &Mutex<Shard> {
        let h = key.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key.1.rotate_left(17);
        &self.shards[(h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SHARDS]
    }

    pub fn get(&self, table: u64, offset: u64) -> Option<Arc<Block>> {
        if self.shard_bytes_max == 0 {
            return None;
        }
        let shard = self.shard((table, offset)).lock();
        let slot = shard.map.get(&(table, offset))?;
        slot.referenced.store(true, Ordering::Relaxed);
        Some(slot.block.clone())
    }

    pub fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        let charge = block.charge_bytes();
        if charge > self.shard_bytes_max {
            return;
        }
        let mut shard = self.shard((table, offset)).lock();
        let shard = &mut *shard;
        if shard.map.contains_key(&(table, offset)) {
            return;
        }
        while shard.charge_bytes + charge > self.shard_bytes_max {
            let Some(victim) = shard.clock.pop_front() else {
                break;
            };
            let Some(slot) = shard.map.get(&victim) else {
                continue;
            };
            if slot.referenced.swap(false, Ordering::Relaxed) {
                shard.clock.push_back(victim);
                continue;
            }
            let slot = shard.map.remove(&victim).expect("present");
            shard.charge_bytes -= slot.block.charge_bytes();
        }
        shard.map.insert(
            (table, offset),
            Slot {
                block,
                referenced: AtomicBool::new(false),
            },
        );
        shard.clock.push_back((table, offset));
        shard.charge_bytes += charge;
    }

    /// Drops the blocks of a deleted table (its number is never reused, so this only
    /// frees memory early).
    pub fn evict_table(&self, table: u64) {
        for s in &self.shards {
            let mut s = s.lock();
            let s = &mut *s;
            let before = s.map.len();
            let mut freed = 0;
            s.map.retain(|k, slot| {
                let keep = k.0 != table;
                if !keep {
                    freed += slot.block.charge_bytes();
                }
                keep
            });
            if s.map.len() != before {
                s.clock.retain(|k| k.0 != table);
                s.charge_bytes -= freed;
            }
        }
    }
}
