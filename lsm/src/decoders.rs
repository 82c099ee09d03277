//! Entry points to every on-disk decoder, for the garbage and truncation tests in
//! tests/decoders.rs and the fuzz targets (fuzz/ at the workspace root). Each takes
//! raw bytes and returns Ok or an error; none may panic. Not part of the supported API.

use crate::error::Result;

/// Bytes of a table's footer (at the end of the file).
pub const FOOTER_BYTES: usize = crate::table::footer::FOOTER_BYTES;
/// Bytes of a WAL or manifest file's header.
pub const FILE_HEADER_BYTES: usize = crate::wal::record::WAL_HEADER_BYTES;
/// Bytes of a WAL record's frame before its payload (checksum, length).
pub const RECORD_FRAME_BYTES: usize = crate::wal::record::RECORD_HEADER_BYTES;

/// A WAL record frame followed by its batch payload.
pub fn wal_record(buf: &[u8]) -> Result<usize> {
    let (payload, n) = crate::wal::record::decode_record(buf)?;
    crate::wal::batch::decode_payload(payload)?;
    Ok(n)
}

/// A batch payload (inside a record).
pub fn wal_batch_payload(buf: &[u8]) -> Result<usize> {
    Ok(crate::wal::batch::decode_payload(buf)?.1)
}

pub fn wal_header(buf: &[u8]) -> Result<u32> {
    crate::wal::record::decode_header(buf)
}

/// A sealed block (payload + checksum) decoded as a data block: number of entries.
pub fn data_block(raw: &[u8]) -> Result<usize> {
    let payload = crate::table::block::unseal(raw)?;
    Ok(crate::table::block::Block::decode(payload.to_vec())?.len())
}

/// A block payload without its checksum (what a checksum collision would let through).
pub fn data_block_payload(payload: &[u8]) -> Result<usize> {
    Ok(crate::table::block::Block::decode(payload.to_vec())?.len())
}

/// A point lookup in a block payload searched in place (the get path): the key found
/// for `user_key`, if any.
pub fn data_block_seek(payload: &[u8], user_key: &[u8]) -> Result<Option<Vec<u8>>> {
    let raw = crate::table::block::RawBlock::new(payload.to_vec())?;
    Ok(raw
        .seek(&crate::ikey::seek_key(user_key, crate::ikey::SEQ_MAX))?
        .map(|(k, _)| k))
}

/// An index block payload; handles must lie below `data_end`.
pub fn index_block_payload(payload: &[u8], data_end: u64) -> Result<usize> {
    Ok(crate::table::index::Index::decode(payload.to_vec(), data_end)?.len())
}

/// A filter payload of a table of format `table_version` (1: flat, 2: blocked).
pub fn filter_payload(payload: &[u8], table_version: u32) -> Result<()> {
    crate::table::filter::Filter::decode(payload, table_version).map(|_| ())
}

/// A filter payload probed for `user_key`, as a get probes it: false means absent.
pub fn filter_may_contain(payload: &[u8], table_version: u32, user_key: &[u8]) -> Result<bool> {
    let filter = crate::table::filter::Filter::decode(payload, table_version)?;
    Ok(filter.may_contain(crate::table::filter::hash(user_key)))
}

pub fn footer(buf: &[u8], file_bytes: u64) -> Result<u64> {
    Ok(crate::table::footer::Footer::decode(buf, file_bytes)?.entry_count)
}

/// A version edit payload: number of added tables.
pub fn manifest_edit(buf: &[u8]) -> Result<usize> {
    Ok(crate::manifest::VersionEdit::decode(buf)?.added.len())
}

/// A whole manifest file: number of edits.
pub fn manifest_file(buf: &[u8]) -> Result<usize> {
    Ok(crate::manifest::log::decode_manifest(buf)?.len())
}

/// Encoders for the tests to build valid inputs they then damage.
pub mod encode {
    /// A WAL record holding a batch of `entries` (key, Some(value) for put / None for
    /// delete) starting at sequence `first_seq`.
    pub fn wal_record(first_seq: u64, entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
        let mut b = crate::WriteBatch::new();
        for (k, v) in entries {
            match v {
                Some(v) => b.put(k, v),
                None => b.delete(k),
            }
        }
        let mut payload = Vec::new();
        b.encode_payload(first_seq, &mut payload);
        let mut out = Vec::new();
        crate::wal::record::encode_record(&payload, &mut out);
        out
    }

    /// A sealed data block of `keys` (user keys, ascending) as puts at sequence 1.
    pub fn data_block(keys: &[Vec<u8>]) -> Vec<u8> {
        let mut b = crate::table::block::BlockBuilder::new();
        for k in keys {
            b.add(&crate::ikey::encode(k, 1, crate::ikey::Kind::Put), k);
        }
        let mut raw = b.finish();
        crate::table::block::seal(&mut raw);
        raw
    }

    /// A filter as tables are written with now (blocked, format 2).
    pub fn filter(keys: &[Vec<u8>]) -> Vec<u8> {
        let h = keys.iter().map(|k| crate::table::filter::hash(k));
        crate::table::filter::Blocked::build(h, 10).encode()
    }

    /// A flat filter, as tables of format 1 carry.
    pub fn filter_flat(keys: &[Vec<u8>]) -> Vec<u8> {
        let h: Vec<u64> = keys.iter().map(|k| crate::table::filter::hash(k)).collect();
        crate::table::filter::build_flat(&h, 10)
    }

    pub fn footer(
        index_offset: u64,
        index_bytes: u64,
        filter_offset: u64,
        filter_bytes: u64,
    ) -> Vec<u8> {
        use crate::table::footer::{BlockHandle, Footer, TABLE_FORMAT_VERSION};
        Footer {
            index: BlockHandle {
                offset: index_offset,
                size: index_bytes,
            },
            filter: BlockHandle {
                offset: filter_offset,
                size: filter_bytes,
            },
            entry_count: 1,
            version: TABLE_FORMAT_VERSION,
        }
        .encode()
        .to_vec()
    }

    /// An index block payload over `blocks` consecutive blocks of `block_bytes` each.
    pub fn index_payload(blocks: u64, block_bytes: u64) -> Vec<u8> {
        let mut b = crate::table::block::BlockBuilder::new();
        for i in 0..blocks {
            let mut h = Vec::new();
            crate::table::index::encode_handle(
                crate::table::footer::BlockHandle {
                    offset: i * (block_bytes + 4),
                    size: block_bytes,
                },
                &mut h,
            );
            b.add(
                &crate::ikey::encode(format!("k{i:08}").as_bytes(), 1, crate::ikey::Kind::Put),
                &h,
            );
        }
        b.finish()
    }

    /// A version edit adding `tables` tables at level 1.
    pub fn manifest_edit(tables: u64) -> Vec<u8> {
        let mut e = crate::manifest::VersionEdit {
            log_number: Some(3),
            next_file_number: Some(100),
            last_sequence: Some(12345),
            ..Default::default()
        };
        for i in 0..tables {
            e.added.push(crate::manifest::edit::AddedTable {
                level: 1,
                number: 10 + i,
                file_bytes: 4096,
                smallest: crate::ikey::encode(
                    format!("a{i:04}").as_bytes(),
                    1,
                    crate::ikey::Kind::Put,
                ),
                largest: crate::ikey::encode(
                    format!("b{i:04}").as_bytes(),
                    1,
                    crate::ikey::Kind::Put,
                ),
            });
        }
        e.encode()
    }
}

/// Rewrites the format version of a file's header or footer in place (checksum
/// recomputed), to test that newer formats are refused.
pub mod reversion {
    use crate::coding::masked_crc;

    /// WAL and manifest files: the 16-byte header at the start.
    pub fn header(file: &mut [u8], version: u32) {
        file[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = masked_crc(&file[..12]);
        file[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    /// The version a WAL or manifest file's header names.
    pub fn header_version(file: &[u8]) -> u32 {
        u32::from_le_bytes(file[8..12].try_into().expect("4 bytes"))
    }

    /// The version a table file's footer names.
    pub fn table_version(file: &[u8]) -> u32 {
        let at = file.len() - crate::table::footer::FOOTER_BYTES;
        u32::from_le_bytes(file[at + 40..at + 44].try_into().expect("4 bytes"))
    }

    /// A valid table file's footer.
    fn footer_of(file: &[u8]) -> crate::error::Result<crate::table::footer::Footer> {
        use crate::table::footer::{Footer, FOOTER_BYTES};
        Footer::decode(&file[file.len() - FOOTER_BYTES..], file.len() as u64)
    }

    /// The payload of the block `h` names in a table file, its checksum checked.
    fn block_payload(
        file: &[u8],
        h: crate::table::footer::BlockHandle,
    ) -> crate::error::Result<Vec<u8>> {
        let end = (h.offset + h.size) as usize + crate::table::BLOCK_TRAILER_BYTES;
        Ok(crate::table::block::unseal(&file[h.offset as usize..end])?.to_vec())
    }

    /// The filter payload of a valid table file.
    pub fn table_filter(file: &[u8]) -> crate::error::Result<Vec<u8>> {
        block_payload(file, footer_of(file)?.filter)
    }

    /// A valid table file rewritten as format 1 wrote it: the same data blocks and
    /// index, a flat filter over the same user keys (10 bits per key), and a footer of
    /// version 1. For the test that tables of format 1 are still read; like the other
    /// helpers here, it expects a file at least a footer long (shorter ones panic).
    pub fn table_as_format_1(file: &[u8]) -> crate::error::Result<Vec<u8>> {
        use crate::table::block::{seal, Block};
        use crate::table::footer::{BlockHandle, Footer};
        let footer = footer_of(file)?;
        let payload = |h: BlockHandle| block_payload(file, h);
        let index_payload = payload(footer.index)?;
        let index =
            crate::table::index::Index::decode(index_payload.clone(), footer.filter.offset)?;
        let mut hashes = Vec::new();
        for i in 0..index.len() {
            let block = Block::decode(payload(index.handle(i))?)?;
            for e in 0..block.len() {
                let user_key = crate::ikey::user_key(block.key(e));
                hashes.push(crate::table::filter::hash(user_key));
            }
        }
        hashes.dedup();
        let mut out = file[..footer.filter.offset as usize].to_vec();
        let block_at = |mut payload: Vec<u8>, out: &mut Vec<u8>| {
            let handle = BlockHandle {
                offset: out.len() as u64,
                size: payload.len() as u64,
            };
            seal(&mut payload);
            out.extend_from_slice(&payload);
            handle
        };
        let filter = block_at(crate::table::filter::build_flat(&hashes, 10), &mut out);
        let index = block_at(index_payload, &mut out);
        let footer = Footer {
            index,
            filter,
            entry_count: footer.entry_count,
            version: 1,
        };
        out.extend_from_slice(&footer.encode());
        Ok(out)
    }

    /// Table files: the footer at the end.
    pub fn table_footer(file: &mut [u8], version: u32) {
        let at = file.len() - crate::table::footer::FOOTER_BYTES;
        let f = &mut file[at..];
        f[40..44].copy_from_slice(&version.to_le_bytes());
        let crc = masked_crc(&f[..44]);
        f[44..48].copy_from_slice(&crc.to_le_bytes());
    }
}
