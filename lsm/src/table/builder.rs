//! Writes one table file from internal keys added in increasing order. Tables are read
//! back with O_DIRECT, never through the page cache, so the builder drops its pages
//! behind it (`fs::DropBehind`) and the whole file once it is synced.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::block::{seal, BlockBuilder};
use super::filter;
use super::footer::{BlockHandle, Footer, TABLE_FORMAT_VERSION};
use super::index::encode_handle;
use crate::error::{LsmError, Result};
use crate::fs::{AppendWriter, Fs, IfExists};
use crate::ikey;

pub(crate) struct TableInfo {
    pub number: u64,
    pub file_bytes: u64,
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
}

/// Appends are gathered into writes of this size: few calls per table, and a bounded
/// buffer per table being built.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

pub(crate) struct TableBuilder {
    number: u64,
    fs: Arc<dyn Fs>,
    path: PathBuf,
    file: BufWriter<AppendWriter>,
    offset: u64,
    block: BlockBuilder,
    index: BlockBuilder,
    key_hashes: Vec<u64>,
    last_user_key: Vec<u8>,
    smallest: Vec<u8>,
    entry_count: u64,
    block_bytes: usize,
    bloom_bits_per_key: u32,
}

impl TableBuilder {
    pub fn create(
        fs: &Arc<dyn Fs>,
        dir: &Path,
        number: u64,
        block_bytes: usize,
        bloom_bits_per_key: u32,
    ) -> Result<Self> {
        let path = dir.join(crate::files::table_name(number));
        let file = fs
            .create(&path, IfExists::Fail)
            .map_err(|e| LsmError::io(format!("creating {}", path.display()), e))?;
        Ok(TableBuilder {
            number,
            fs: fs.clone(),
            path,
            file: BufWriter::with_capacity(WRITE_BUFFER_BYTES, AppendWriter::new(file)),
            offset: 0,
            block: BlockBuilder::new(),
            index: BlockBuilder::new(),
            key_hashes: Vec::new(),
            last_user_key: Vec::new(),
            smallest: Vec::new(),
            entry_count: 0,
            block_bytes,
            bloom_bits_per_key,
        })
    }

    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.entry_count == 0 {
            self.smallest = key.to_vec();
        }
        let user_key = ikey::user_key(key);
        if self.entry_count == 0 || user_key != self.last_user_key.as_slice() {
            self.key_hashes.push(filter::hash(user_key));
            self.last_user_key.clear();
            self.last_user_key.extend_from_slice(user_key);
        }
        self.block.add(key, value);
        self.entry_count += 1;
        if self.block.estimated_bytes() >= self.block_bytes {
            self.finish_data_block()?;
        }
        Ok(())
    }

    /// Bytes written so far plus the open block: what a compaction cuts outputs at.
    pub fn estimated_bytes(&self) -> u64 {
        self.offset + self.block.estimated_bytes() as u64
    }

    fn write_block(&mut self, mut payload: Vec<u8>) -> Result<BlockHandle> {
        let handle = BlockHandle {
            offset: self.offset,
            size: payload.len() as u64,
        };
        seal(&mut payload);
        self.file
            .write_all(&payload)
            .map_err(|e| LsmError::io(format!("writing {}", self.path.display()), e))?;
        self.offset += payload.len() as u64;
        Ok(handle)
    }

    fn finish_data_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let last_key = self.block.last_key().to_vec();
        let payload = self.block.finish();
        let handle = self.write_block(payload)?;
        let mut h = Vec::with_capacity(20);
        encode_handle(handle, &mut h);
        self.index.add(&last_key, &h);
        Ok(())
    }

    /// Writes filter, index and footer and syncs the file. The caller syncs the
    /// directory before naming the table in the manifest.
    pub fn finish(mut self) -> Result<TableInfo> {
        assert!(self.entry_count > 0, "an empty table is never written");
        let largest = self.block.last_key().to_vec();
        let largest = if largest.is_empty() {
            self.last_index_key()
        } else {
            largest
        };
        self.finish_data_block()?;
        let filter_payload = if self.bloom_bits_per_key == 0 {
            // A filter that admits everything keeps the format uniform.
            filter::Blocked::admitting_all().encode()
        } else {
            filter::Blocked::build(self.key_hashes.iter().copied(), self.bloom_bits_per_key)
                .encode()
        };
        let filter = self.write_block(filter_payload)?;
        let index_payload = self.index.finish();
        let index = self.write_block(index_payload)?;
        let footer = Footer {
            index,
            filter,
            entry_count: self.entry_count,
            version: TABLE_FORMAT_VERSION,
        };
        let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
        self.file
            .write_all(&footer.encode())
            .map_err(|e| LsmError::io(ctx("writing", &self.path), e))?;
        self.offset += super::footer::FOOTER_BYTES as u64;
        let file = self
            .file
            .into_inner()
            .map_err(|e| LsmError::io(ctx("writing", &self.path), e.into_error()))?;
        file.file
            .sync_data()
            .map_err(|e| LsmError::io(ctx("syncing", &self.path), e))?;
        // Every page is clean now; the table is read with O_DIRECT only. Advice: a
        // failure costs only cache space.
        let _ = file.file.drop_cache(0, 0);
        Ok(TableInfo {
            number: self.number,
            file_bytes: self.offset,
            smallest: self.smallest,
            largest,
        })
    }

    fn last_index_key(&self) -> Vec<u8> {
        self.index.last_key().to_vec()
    }

    /// Deletes the partial file (compaction aborted or failed).
    pub fn abandon(self) {
        let path = self.path.clone();
        let fs = self.fs.clone();
        drop(self);
        let _ = fs.remove_file(&path);
    }
}
