//! Reads a table with O_DIRECT (`Fs::open_uncached`): footer, index and filter are
//! loaded at open and pinned in memory (charged against the block cache); data blocks
//! go through the block cache, or, for compactions, around it with readahead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::block::{unseal, Block, RawBlock};
use super::filter::Filter;
use super::footer::{BlockHandle, Footer, FOOTER_BYTES, TABLE_FORMAT_VERSION};
use super::index::Index;
use super::open_files::TableCaches;
use super::readahead::Readahead;
use super::BLOCK_TRAILER_BYTES;
use crate::error::{LsmError, Result};
use crate::fs::FsFile;
use crate::ikey;
use crate::stats::{add, Counters};

/// Who reads a block: user reads fill the cache and count as `bytes_read`; compaction
/// reads bypass the cache (a compaction touches every block once) and count apart.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFor {
    User,
    Compaction,
}

pub(crate) struct TableReader {
    pub number: u64,
    path: PathBuf,
    pub file_bytes: u64,
    pub index: Index,
    filter: Filter,
    /// Bytes of index and filter charged against the block cache while this lives.
    pinned_bytes: u64,
    cache: Arc<TableCaches>,
    counters: Arc<Counters>,
}

impl Drop for TableReader {
    fn drop(&mut self) {
        self.cache.blocks.unpin(self.pinned_bytes);
    }
}

impl TableReader {
    pub fn open(
        path: &Path,
        number: u64,
        cache: Arc<TableCaches>,
        counters: Arc<Counters>,
    ) -> Result<TableReader> {
        let file = cache
            .fs
            .open_uncached(path)
            .map_err(|e| LsmError::io(format!("opening {}", path.display()), e))?;
        let file_bytes = file
            .len_bytes()
            .map_err(|e| LsmError::io(format!("reading the length of {}", path.display()), e))?;
        if file_bytes < FOOTER_BYTES as u64 {
            return Err(LsmError::Corruption {
                file: path.to_path_buf(),
                offset: 0,
                what: format!("table of {file_bytes} bytes is shorter than its footer"),
            });
        }
        let footer_offset = file_bytes - FOOTER_BYTES as u64;
        let mut buf = vec![0u8; FOOTER_BYTES];
        read_exact_at(&*file, path, &mut buf, footer_offset)?;
        let footer =
            Footer::decode(&buf, file_bytes).map_err(|e| e.in_file(path, footer_offset))?;
        if footer.version > TABLE_FORMAT_VERSION {
            return Err(LsmError::NewerFormat {
                file: path.to_path_buf(),
                found: footer.version,
                supported: TABLE_FORMAT_VERSION,
            });
        }
        let filter_payload = read_payload(&*file, path, footer.filter)?;
        let filter = Filter::decode(&filter_payload, footer.version)
            .map_err(|e| e.in_file(path, footer.filter.offset))?;
        let index_payload = read_payload(&*file, path, footer.index)?;
        let index = Index::decode(index_payload, footer.filter.offset)
            .map_err(|e| e.in_file(path, footer.index.offset))?;
        cache.files.insert(number, file, cache.files.next_tick());
        let pinned_bytes = (index.heap_bytes() + filter.heap_bytes()) as u64;
        cache.blocks.pin(pinned_bytes);
        Ok(TableReader {
            number,
            path: path.to_path_buf(),
            file_bytes,
            index,
            filter,
            pinned_bytes,
            cache,
            counters,
        })
    }

    fn file(&self) -> Result<Arc<dyn FsFile>> {
        self.cache
            .files
            .get(&*self.cache.fs, self.number, &self.path)
    }

    /// Block i as read, through the block cache (point lookups).
    fn raw_block(&self, i: usize) -> Result<Arc<RawBlock>> {
        let h = self.index.handle(i);
        if let Some(b) = self.cache.blocks.get(self.number, h.offset) {
            add(&self.counters.block_cache_hits, 1);
            return Ok(b);
        }
        add(&self.counters.block_cache_misses, 1);
        let payload = read_payload(&*self.file()?, &self.path, h)?;
        add(
            &self.counters.bytes_read,
            h.size + BLOCK_TRAILER_BYTES as u64,
        );
        self.cache_block(i, payload)
    }

    fn cache_block(&self, i: usize, payload: Vec<u8>) -> Result<Arc<RawBlock>> {
        let h = self.index.handle(i);
        let raw = Arc::new(RawBlock::new(payload).map_err(|e| e.in_file(&self.path, h.offset))?);
        self.cache.blocks.insert(self.number, h.offset, raw.clone());
        Ok(raw)
    }

    /// Block i's payload for a cursor walking the table: from the cursor's run read
    /// ahead, else read (with the run that follows it, if the walk is in order).
    fn read_ahead(&self, i: usize, ra: &mut Readahead) -> Result<Vec<u8>> {
        let h = self.index.handle(i);
        let end = h.offset + h.size + BLOCK_TRAILER_BYTES as u64;
        let counter = match ra.read_for {
            ReadFor::User => &self.counters.bytes_read,
            ReadFor::Compaction => &self.counters.compaction_bytes_read,
        };
        let run = ra.visit(i);
        if ra.get(h.offset, end).is_none() {
            let Some(run_bytes) = run else {
                add(counter, end - h.offset);
                return read_payload(&*self.file()?, &self.path, h);
            };
            let run_end = self.index.span_end(i, run_bytes);
            let mut data = vec![0u8; (run_end - h.offset) as usize];
            read_exact_at(&*self.file()?, &self.path, &mut data, h.offset)?;
            add(counter, data.len() as u64);
            ra.fill(h.offset, data);
        }
        let raw = ra.get(h.offset, end).expect("the run read holds the block");
        let payload = unseal(raw).map_err(|e| e.in_file(&self.path, h.offset))?;
        Ok(payload.to_vec())
    }

    /// Block i decoded whole, for a cursor (iterators, compactions). User reads go
    /// through the block cache; compaction reads bypass it (a compaction touches every
    /// block once). Blocks missing from the cache are read ahead (`readahead`).
    pub fn block(&self, i: usize, ra: &mut Readahead) -> Result<Block> {
        let h = self.index.handle(i);
        let payload = match ra.read_for {
            ReadFor::User => match self.cache.blocks.get(self.number, h.offset) {
                Some(b) => {
                    add(&self.counters.block_cache_hits, 1);
                    b.payload().to_vec()
                }
                None => {
                    add(&self.counters.block_cache_misses, 1);
                    let payload = self.read_ahead(i, ra)?;
                    self.cache_block(i, payload)?.payload().to_vec()
                }
            },
            ReadFor::Compaction => self.read_ahead(i, ra)?,
        };
        Block::decode(payload).map_err(|e| e.in_file(&self.path, h.offset))
    }

    /// The newest entry of `user_key` at or below the sequence in `seek` (an
    /// `ikey::seek_key`): Some((internal key, value)), tombstones included.
    pub fn get(&self, seek: &[u8], key_hash: u64) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(i) = self.candidate_block(seek, key_hash) else {
            return Ok(None);
        };
        let block = self.raw_block(i)?;
        let found = block
            .seek(seek)
            .map_err(|e| e.in_file(&self.path, self.index.handle(i).offset))?;
        // The index promises an entry >= seek in block i (its last key is >= seek).
        let Some((k, v)) = found else {
            return Err(LsmError::Corruption {
                file: self.path.clone(),
                offset: self.index.handle(i).offset,
                what: "index key is larger than the block's last key".into(),
            });
        };
        if ikey::user_key(&k) == ikey::user_key(seek) {
            return Ok(Some((k, v)));
        }
        Ok(None)
    }
}

/// Where a get would find a key in one table, judged without reading (`Db::prefetch`).
pub(crate) enum Probe {
    /// Not in this table (the filter, the index or the cached block says so).
    Absent,
    /// In the cached block the get will read (or that block is damaged: the get says).
    Found,
    /// Maybe in block i, which is not cached.
    Uncached(usize),
}

impl TableReader {
    /// The data block that may hold `seek`'s key, unless the filter or the index
    /// rules the table out.
    fn candidate_block(&self, seek: &[u8], key_hash: u64) -> Option<usize> {
        if !self.filter.may_contain(key_hash) {
            return None;
        }
        let i = self.index.find(seek);
        (i < self.index.len()).then_some(i)
    }

    /// What a get of `seek` would read here (`Probe`); reads nothing.
    pub fn probe(&self, seek: &[u8], key_hash: u64) -> Probe {
        let Some(i) = self.candidate_block(seek, key_hash) else {
            return Probe::Absent;
        };
        match self
            .cache
            .blocks
            .get(self.number, self.index.handle(i).offset)
        {
            None => Probe::Uncached(i),
            Some(block) => match block.seek(seek) {
                Ok(Some((k, _))) if ikey::user_key(&k) != ikey::user_key(seek) => Probe::Absent,
                _ => Probe::Found,
            },
        }
    }

    /// Reads data block i into the block cache, unless it is there.
    pub fn fetch(&self, i: usize) -> Result<()> {
        self.raw_block(i).map(|_| ())
    }
}

fn read_exact_at(file: &dyn FsFile, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        LsmError::io(
            format!(
                "reading {} bytes at {offset} of {}",
                buf.len(),
                path.display()
            ),
            e,
        )
    })
}

fn read_payload(file: &dyn FsFile, path: &Path, h: BlockHandle) -> Result<Vec<u8>> {
    let mut raw = vec![0u8; h.size as usize + BLOCK_TRAILER_BYTES];
    read_exact_at(file, path, &mut raw, h.offset)?;
    unseal(&raw).map_err(|e| e.in_file(path, h.offset))?;
    raw.truncate(h.size as usize);
    Ok(raw)
}
