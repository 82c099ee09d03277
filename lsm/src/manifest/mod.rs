//! The manifest: the durable description of which table files make up the tree.
//!
//! `MANIFEST-NNNNNN` is an append-only log: a 16-byte header (magic, format version,
//! checksum) then version edits framed like WAL records (masked crc32c | length |
//! payload). `CURRENT` names the live manifest and is replaced atomically (write temp,
//! sync, rename, sync directory). Each open writes a fresh manifest holding one edit
//! with the whole state, so a manifest never grows past one run's edits (and is
//! rewritten in a run once it exceeds `Options::manifest_bytes_max`).
//!
//! Crash points: an edit is appended and synced before any file it deletes is removed
//! and before the WAL it retires is deleted; a torn last record was never acknowledged
//! and is ignored; a damaged record followed by more records is corruption (ignoring it
//! would drop later edits and let their tables be deleted as orphans).

pub(crate) mod edit;
pub(crate) mod log;

pub(crate) use edit::VersionEdit;
