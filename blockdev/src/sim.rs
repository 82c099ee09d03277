//! An in-memory block device with seeded crash and fault injection, for tests.
//!
//! Modelled on TigerBeetle's `testing/storage.zig` and sled's fault-injection points:
//! the engine's crash tests run their workload on a [`SimDevice`], "pull the plug" at
//! any point, and reopen the engine on the image a real device could have been left
//! with. Everything random is decided by the seed in [`SimConfig`], so a failing test
//! reproduces from the seed it prints.
//!
//! # The model
//! - The device keeps a *durable* image (what survives a power cut) and, in completion
//!   order, the list of writes that completed but are not yet durable. Reads see every
//!   completed write: the latest data, as from a drive's volatile write cache.
//! - [`BlockDevice::flush`] makes every completed write durable. A write submitted with
//!   `fua` is durable when it completes.
//! - [`SimDevice::crash`] freezes the device (every later operation fails) and returns a
//!   fresh device holding the post-crash image: the durable image with each non-durable
//!   write, in completion order, *applied*, *lost* or *torn* at `sector_bytes`
//!   granularity (each sector wholly new or wholly old), as the seed decides. Durable
//!   data always survives. [`SimDevice::crash_with_report`] also says what happened to
//!   each write.
//! - [`SimDevice::arm_crash_after_ops`] and [`SimDevice::freeze`] stop the device from
//!   another thread: every later operation fails with an I/O error, so the code under
//!   test stops where it stands; `crash()` then gives the recovered image.
//! - [`FaultRule`]s inject EIO (on reads, writes or flushes, chosen by operation index,
//!   offset range and/or a seeded probability) and bit flips on reads. An I/O error
//!   poisons the device as the [`BlockDevice`] contract says: later writes and flushes
//!   return [`DeviceError::Poisoned`]; reads are still served.
//!
//! Operation indices: every request that passes validation (each `IoOp` of a batch, and
//! each flush) gets the next index, starting at 0, in the order the device serves them.
//! With one submitting thread the indices, and so every seeded decision, are the same
//! from run to run; with several threads they follow the interleaving.

use crate::device::{check_op, BlockDevice, CounterSnapshot, Counters, Geometry, IoOp};
use crate::error::{DeviceError, Result};
use parking_lot::Mutex;
use std::ops::Range;
use std::sync::Arc;

/// Default logical block: the engine assumes at least 4 KiB (DESIGN.md, "On the device").
pub const DEFAULT_LOGICAL_BLOCK_BYTES: u32 = 4096;
/// Default tearing granularity: the classic disk sector, the smallest unit a drive
/// writes atomically; a 4 KiB block can therefore tear into eight parts.
pub const DEFAULT_SECTOR_BYTES: u32 = 512;
/// The smallest sector we simulate; no real device writes less atomically.
pub const SECTOR_BYTES_MIN: u32 = 512;
/// Images are stored sparsely in chunks of this size, so a large simulated device costs
/// memory only for the parts that were written. 64 KiB keeps the chunk table small for
/// multi-GiB devices and the waste small for tests that write a few blocks.
const IMAGE_CHUNK_BYTES: u64 = 64 * 1024;

/// Stream tags that keep the seeded decisions of different purposes independent.
const STREAM_CRASH: u64 = 0x6372_6173_6800_0001;
const STREAM_FAULT: u64 = 0x6661_756c_7400_0002;
const STREAM_BITFLIP: u64 = 0x6269_7466_6c00_0003;
const STREAM_CHILD_SEED: u64 = 0x6368_696c_6400_0004;

/// How likely each outcome is for one non-durable write at a crash. Weights are
/// relative; a write of a single sector cannot tear, so for it the torn weight is
/// ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashWeights {
    pub applied: u32,
    pub lost: u32,
    pub torn: u32,
}

impl Default for CrashWeights {
    fn default() -> Self {
        CrashWeights {
            applied: 1,
            lost: 1,
            torn: 1,
        }
    }
}

/// Configuration of a [`SimDevice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Device size; a multiple of `logical_block_bytes`.
    pub size_bytes: u64,
    /// Alignment every request must have (reported as the logical block size).
    pub logical_block_bytes: u32,
    /// Unit of tearing at a crash (reported as the physical block size): a power of
    /// two, at least 512, dividing `logical_block_bytes`. Equal to the block size means
    /// a one-block write never tears.
    pub sector_bytes: u32,
    /// Decides every random outcome: crash outcomes, probabilistic faults, bit positions.
    pub seed: u64,
    pub crash_weights: CrashWeights,
}

impl SimConfig {
    /// A device of `size_bytes` with 4 KiB blocks, 512-byte sectors and equal crash
    /// weights.
    pub fn new(size_bytes: u64, seed: u64) -> SimConfig {
        SimConfig {
            size_bytes,
            logical_block_bytes: DEFAULT_LOGICAL_BLOCK_BYTES,
            sector_bytes: DEFAULT_SECTOR_BYTES,
            seed,
            crash_weights: CrashWeights::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        let config_error = |reason: String| Err(DeviceError::Config { reason });
        let block = self.logical_block_bytes;
        let sector = self.sector_bytes;
        if !block.is_power_of_two() || block < SECTOR_BYTES_MIN {
            return config_error(format!(
                "logical_block_bytes {block} must be a power of two of at least {SECTOR_BYTES_MIN}"
            ));
        }
        if !sector.is_power_of_two() || sector < SECTOR_BYTES_MIN || !block.is_multiple_of(sector) {
            return config_error(format!(
                "sector_bytes {sector} must be a power of two of at least {SECTOR_BYTES_MIN} \
                 that divides logical_block_bytes {block}"
            ));
        }
        if u64::from(block) > IMAGE_CHUNK_BYTES {
            return config_error(format!(
                "logical_block_bytes {block} is larger than the simulator's {IMAGE_CHUNK_BYTES}-byte image chunk"
            ));
        }
        if self.size_bytes == 0 || !self.size_bytes.is_multiple_of(u64::from(block)) {
            return config_error(format!(
                "size_bytes {} must be a non-zero multiple of logical_block_bytes {block}",
                self.size_bytes
            ));
        }
        let w = self.crash_weights;
        if u64::from(w.applied) + u64::from(w.lost) == 0 {
            // Single-sector writes can only be applied or lost; one of them must be possible.
            return config_error("crash_weights: applied and lost cannot both be 0".into());
        }
        Ok(())
    }
}

/// The kind of an operation, for matching fault rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Read,
    Write,
    Flush,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultEffect {
    /// The operation fails with EIO and poisons the device. A failed write changes
    /// nothing that reads return, but it may still have partly reached the media: at a
    /// crash it is applied, lost or torn like any non-durable write.
    Eio,
    /// The read succeeds but one bit of the returned data is flipped (the stored data
    /// is unchanged: a transient media or transfer error). Reads only.
    BitFlipOnRead,
}

/// Which operations a fault hits. Every condition that is set must hold; then the fault
/// fires with `probability` (decided from the seed and the operation index), at most
/// `max_hits` times.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub effect: FaultEffect,
    /// Only operations of this kind (a bit flip is always on reads).
    pub kind: Option<OpKind>,
    /// Only the operation with this index.
    pub op_index: Option<u64>,
    /// Only operations whose byte range overlaps this range (flushes have no range and
    /// never match a rule that sets one).
    pub offset_range: Option<Range<u64>>,
    /// Chance in [0, 1] that a matching operation is hit.
    pub probability: f64,
    /// Stop firing after this many hits.
    pub max_hits: Option<u64>,
}

impl FaultRule {
    /// EIO on every operation, until narrowed with the builder methods.
    pub fn eio() -> FaultRule {
        FaultRule {
            effect: FaultEffect::Eio,
            kind: None,
            op_index: None,
            offset_range: None,
            probability: 1.0,
            max_hits: None,
        }
    }

    /// A flipped bit on every read, until narrowed with the builder methods.
    pub fn bit_flip_on_read() -> FaultRule {
        FaultRule {
            effect: FaultEffect::BitFlipOnRead,
            kind: Some(OpKind::Read),
            ..FaultRule::eio()
        }
    }

    pub fn on(mut self, kind: OpKind) -> FaultRule {
        self.kind = Some(kind);
        self
    }

    pub fn at_op(mut self, op_index: u64) -> FaultRule {
        self.op_index = Some(op_index);
        self
    }

    pub fn in_range(mut self, offset_range: Range<u64>) -> FaultRule {
        self.offset_range = Some(offset_range);
        self
    }

    pub fn with_probability(mut self, probability: f64) -> FaultRule {
        self.probability = probability;
        self
    }

    pub fn max_hits(mut self, max_hits: u64) -> FaultRule {
        self.max_hits = Some(max_hits);
        self
    }

    fn validate(&self) -> Result<()> {
        let reason = if !(0.0..=1.0).contains(&self.probability) {
            format!(
                "fault probability {} is not within [0, 1]",
                self.probability
            )
        } else if self.effect == FaultEffect::BitFlipOnRead && self.kind != Some(OpKind::Read) {
            format!("a bit flip can only hit reads, not {:?}", self.kind)
        } else if self.offset_range.as_ref().is_some_and(|r| r.start >= r.end) {
            format!("fault offset range {:?} is empty", self.offset_range)
        } else {
            return Ok(());
        };
        Err(DeviceError::Config { reason })
    }
}

/// Handle of an injected fault rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

/// What a crash did to one non-durable write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Applied,
    Lost,
    /// Sector `i` of the write (`sector_bytes` each, from its offset) reached the media
    /// iff `sectors_new[i]`; at least one did and at least one did not.
    Torn {
        sectors_new: Vec<bool>,
    },
}

/// One non-durable write at the time of a crash and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashedWrite {
    pub op_index: u64,
    pub offset: u64,
    pub len_bytes: u64,
    /// Written with FUA: durable, always applied.
    pub fua: bool,
    /// Failed with an injected EIO (reads never saw it).
    pub failed: bool,
    pub outcome: WriteOutcome,
}

/// What [`SimDevice::crash_with_report`] did, in the order the writes completed (later
/// writes are applied over earlier ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashReport {
    /// Seed of the device that crashed.
    pub seed: u64,
    /// Which crash of that device this was (0 for the first).
    pub crash_index: u64,
    pub sector_bytes: u32,
    pub writes: Vec<CrashedWrite>,
}

impl CrashReport {
    pub fn count(&self, pred: impl Fn(&WriteOutcome) -> bool) -> usize {
        self.writes.iter().filter(|w| pred(&w.outcome)).count()
    }
}

/// A completed write that is not yet durable.
#[derive(Debug, Clone)]
struct PendingWrite {
    op_index: u64,
    offset: u64,
    data: Vec<u8>,
    fua: bool,
    failed: bool,
}

/// A sparse byte image: chunks never written read as zeros.
#[derive(Debug, Clone)]
struct Image {
    chunks: Vec<Option<Box<[u8]>>>,
}

impl Image {
    fn new(size_bytes: u64) -> Image {
        let chunk_count = size_bytes.div_ceil(IMAGE_CHUNK_BYTES) as usize;
        Image {
            chunks: vec![None; chunk_count],
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let chunk_index = (pos / IMAGE_CHUNK_BYTES) as usize;
            let within = (pos % IMAGE_CHUNK_BYTES) as usize;
            let n = (IMAGE_CHUNK_BYTES as usize - within).min(data.len() - done);
            let chunk = self.chunks[chunk_index]
                .get_or_insert_with(|| vec![0u8; IMAGE_CHUNK_BYTES as usize].into_boxed_slice());
            chunk[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let chunk_index = (pos / IMAGE_CHUNK_BYTES) as usize;
            let within = (pos % IMAGE_CHUNK_BYTES) as usize;
            let n = (IMAGE_CHUNK_BYTES as usize - within).min(buf.len() - done);
            match &self.chunks[chunk_index] {
                Some(chunk) => buf[done..done + n].copy_from_slice(&chunk[within..within + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }

    fn flip_bit(&mut self, byte_offset: u64, bit: u8) {
        let mut byte = [0u8; 1];
        self.read(byte_offset, &mut byte);
        byte[0] ^= 1 << bit;
        self.write(byte_offset, &byte);
    }
}

struct InjectedFault {
    id: FaultId,
    rule: FaultRule,
    hits: u64,
}

struct State {
    /// What reads return: the durable image with every completed write applied.
    current: Image,
    /// What survives a crash for certain.
    durable: Image,
    /// Completed writes not yet durable, in completion order.
    pending: Vec<PendingWrite>,
    faults: Vec<InjectedFault>,
    next_fault_id: u64,
    /// Index the next operation gets.
    next_op_index: u64,
    /// Operations with an index at or past this fail: the device is frozen.
    freeze_at_op: Option<u64>,
    /// The first I/O error, kept for `poisoned()` and `Poisoned` errors.
    first_error: Option<Arc<DeviceError>>,
    crashes: u64,
}

/// The simulated device. `Send + Sync`; share it as `Arc<SimDevice>`.
pub struct SimDevice {
    config: SimConfig,
    geometry: Geometry,
    state: Mutex<State>,
    counters: Counters,
}

/// What the fault rules decided for one operation.
#[derive(Default)]
struct Verdict {
    eio: bool,
    /// Flip one bit within this byte range of the device (inside the read).
    bit_flip: Option<Range<u64>>,
}

impl SimDevice {
    pub fn new(config: SimConfig) -> Result<SimDevice> {
        config.validate()?;
        let image = Image::new(config.size_bytes);
        Ok(SimDevice::with_image(config, image))
    }

    fn with_image(config: SimConfig, image: Image) -> SimDevice {
        let geometry = Geometry {
            size_bytes: config.size_bytes,
            logical_block_bytes: config.logical_block_bytes,
            physical_block_bytes: config.sector_bytes,
        };
        SimDevice {
            config,
            geometry,
            state: Mutex::new(State {
                current: image.clone(),
                durable: image,
                pending: Vec::new(),
                faults: Vec::new(),
                next_fault_id: 0,
                next_op_index: 0,
                freeze_at_op: None,
                first_error: None,
                crashes: 0,
            }),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// Adds a fault rule; it applies to operations served from now on.
    pub fn inject(&self, rule: FaultRule) -> Result<FaultId> {
        rule.validate()?;
        let mut state = self.state.lock();
        let id = FaultId(state.next_fault_id);
        state.next_fault_id += 1;
        state.faults.push(InjectedFault { id, rule, hits: 0 });
        Ok(id)
    }

    /// Removes a rule; returns whether it was there.
    pub fn remove_fault(&self, id: FaultId) -> bool {
        let mut state = self.state.lock();
        let before = state.faults.len();
        state.faults.retain(|f| f.id != id);
        state.faults.len() != before
    }

    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// How many times a rule has fired (0 for an unknown or removed rule).
    pub fn fault_hits(&self, id: FaultId) -> u64 {
        let state = self.state.lock();
        state
            .faults
            .iter()
            .find(|f| f.id == id)
            .map_or(0, |f| f.hits)
    }

    /// Number of operations served so far; the next one gets this index.
    pub fn ops_issued(&self) -> u64 {
        self.state.lock().next_op_index
    }

    /// Lets `ops` more operations through, then fails every later one with an I/O
    /// error, as if the power went at that instant. Re-arming replaces the previous
    /// point. `crash()` afterwards gives the post-crash image.
    pub fn arm_crash_after_ops(&self, ops: u64) {
        let mut state = self.state.lock();
        state.freeze_at_op = Some(state.next_op_index.saturating_add(ops));
    }

    /// Fails every operation from now on (`arm_crash_after_ops(0)`).
    pub fn freeze(&self) {
        self.arm_crash_after_ops(0);
    }

    /// True once operations fail because of `freeze`, `arm_crash_after_ops` or `crash`.
    pub fn is_frozen(&self) -> bool {
        let state = self.state.lock();
        state
            .freeze_at_op
            .is_some_and(|at| state.next_op_index >= at)
    }

    /// Completed writes that are not yet durable.
    pub fn pending_writes(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// Copies what a read would return, without alignment rules, faults or counters.
    pub fn peek(&self, offset: u64, len_bytes: usize) -> Result<Vec<u8>> {
        self.peek_image(offset, len_bytes, false)
    }

    /// Copies what would survive a crash for certain (the durable image).
    pub fn peek_durable(&self, offset: u64, len_bytes: usize) -> Result<Vec<u8>> {
        self.peek_image(offset, len_bytes, true)
    }

    fn peek_image(&self, offset: u64, len_bytes: usize, durable: bool) -> Result<Vec<u8>> {
        self.check_range(offset, len_bytes as u64)?;
        let mut out = vec![0u8; len_bytes];
        let state = self.state.lock();
        let image = if durable {
            &state.durable
        } else {
            &state.current
        };
        image.read(offset, &mut out);
        Ok(out)
    }

    /// Flips bit `bit` (0..8) of the byte at `byte_offset` in the stored data, durable
    /// and current alike: persistent media corruption, for checksum tests.
    pub fn corrupt_bit(&self, byte_offset: u64, bit: u8) -> Result<()> {
        self.check_range(byte_offset, 1)?;
        if bit >= 8 {
            return Err(DeviceError::Config {
                reason: format!("bit index {bit} is not within 0..8"),
            });
        }
        let mut state = self.state.lock();
        state.current.flip_bit(byte_offset, bit);
        state.durable.flip_bit(byte_offset, bit);
        // A pending write over this byte may still land at a crash and cover the flip,
        // as it would on a real device.
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.config.size_bytes)
        {
            return Err(DeviceError::OutOfRange {
                offset,
                len,
                size_bytes: self.config.size_bytes,
            });
        }
        Ok(())
    }

    /// Pulls the plug: freezes this device (every later operation on it fails) and
    /// returns a new device holding the image that survived. See the module docs.
    pub fn crash(&self) -> SimDevice {
        self.crash_with_report().0
    }

    /// As [`SimDevice::crash`], and says what happened to each non-durable write.
    ///
    /// The new device has the same geometry and crash weights, no fault rules, and a
    /// seed derived from this one's seed and crash index (see its `seed()`). Crashing
    /// the same device again gives another, equally seeded, outcome.
    pub fn crash_with_report(&self) -> (SimDevice, CrashReport) {
        let mut state = self.state.lock();
        // Frozen for good: threads of the engine instance that "lost power" must not
        // reach the image any more.
        state.freeze_at_op = Some(0);
        let crash_index = state.crashes;
        state.crashes += 1;

        let mut rng = SplitMix64::new(mix3(self.config.seed, STREAM_CRASH, crash_index));
        let sector_bytes = u64::from(self.config.sector_bytes);
        let weights = self.config.crash_weights;
        let mut image = state.durable.clone();
        let mut writes = Vec::with_capacity(state.pending.len());
        for pending in &state.pending {
            let len_bytes = pending.data.len() as u64;
            let sector_count = (len_bytes / sector_bytes) as usize;
            let outcome = if pending.fua {
                WriteOutcome::Applied
            } else {
                let torn_weight = if sector_count >= 2 { weights.torn } else { 0 };
                let total =
                    u64::from(weights.applied) + u64::from(weights.lost) + u64::from(torn_weight);
                let pick = rng.below(total);
                if pick < u64::from(weights.applied) {
                    WriteOutcome::Applied
                } else if pick < u64::from(weights.applied) + u64::from(weights.lost) {
                    WriteOutcome::Lost
                } else {
                    WriteOutcome::Torn {
                        sectors_new: torn_mask(&mut rng, sector_count),
                    }
                }
            };
            match &outcome {
                WriteOutcome::Applied => image.write(pending.offset, &pending.data),
                WriteOutcome::Lost => {}
                WriteOutcome::Torn { sectors_new } => {
                    for (i, _) in sectors_new.iter().enumerate().filter(|(_, new)| **new) {
                        let start = i * sector_bytes as usize;
                        let sector = &pending.data[start..start + sector_bytes as usize];
                        image.write(pending.offset + start as u64, sector);
                    }
                }
            }
            writes.push(CrashedWrite {
                op_index: pending.op_index,
                offset: pending.offset,
                len_bytes,
                fua: pending.fua,
                failed: pending.failed,
                outcome,
            });
        }
        drop(state);

        let child_config = SimConfig {
            seed: mix3(self.config.seed, STREAM_CHILD_SEED, crash_index),
            ..self.config.clone()
        };
        let report = CrashReport {
            seed: self.config.seed,
            crash_index,
            sector_bytes: self.config.sector_bytes,
            writes,
        };
        (SimDevice::with_image(child_config, image), report)
    }

    /// Gives the operation its index and decides its fate. `range` is `None` for a
    /// flush. Returns the index, or the error the operation must fail with.
    fn admit(
        &self,
        state: &mut State,
        kind: OpKind,
        range: Option<(u64, u64)>,
        name: &'static str,
    ) -> std::result::Result<(u64, Verdict), DeviceError> {
        let op_index = state.next_op_index;
        state.next_op_index += 1;
        let (offset, len) = range.unwrap_or((0, 0));
        if state.freeze_at_op.is_some_and(|at| op_index >= at) {
            let source = std::io::Error::other(format!(
                "simulated power loss: device frozen before op {op_index} (seed {})",
                self.config.seed
            ));
            return Err(self.poison(
                state,
                DeviceError::Io {
                    op: name,
                    offset,
                    len,
                    source,
                },
            ));
        }
        if kind != OpKind::Read {
            if let Some(first_error) = &state.first_error {
                return Err(DeviceError::refusal(first_error.clone()));
            }
        }
        let seed = self.config.seed;
        let mut verdict = Verdict::default();
        for fault in state.faults.iter_mut() {
            let rule = &fault.rule;
            let matches = rule.kind.is_none_or(|k| k == kind)
                && rule.op_index.is_none_or(|i| i == op_index)
                && rule.offset_range.as_ref().is_none_or(|r| {
                    range.is_some_and(|(off, len)| off < r.end && r.start < off + len)
                })
                && rule.max_hits.is_none_or(|max| fault.hits < max)
                && chance(
                    mix3(seed ^ STREAM_FAULT, fault.id.0, op_index),
                    rule.probability,
                );
            if !matches {
                continue;
            }
            fault.hits += 1;
            match rule.effect {
                FaultEffect::Eio => verdict.eio = true,
                FaultEffect::BitFlipOnRead => {
                    // Where the read overlaps the rule's range, so a test can aim the
                    // flip at one record.
                    let read = offset..offset + len;
                    let target = match &rule.offset_range {
                        Some(r) => read.start.max(r.start)..read.end.min(r.end),
                        None => read,
                    };
                    verdict.bit_flip = Some(target);
                }
            }
        }
        Ok((op_index, verdict))
    }

    /// Records the first I/O error and hands the error back.
    fn poison(&self, state: &mut State, error: DeviceError) -> DeviceError {
        if state.first_error.is_none() {
            state.first_error = Some(Arc::new(error.clone()));
        }
        error
    }

    fn injected_eio(
        &self,
        state: &mut State,
        name: &'static str,
        offset: u64,
        len: u64,
    ) -> DeviceError {
        let source = std::io::Error::from_raw_os_error(libc::EIO);
        self.poison(
            state,
            DeviceError::Io {
                op: name,
                offset,
                len,
                source,
            },
        )
    }

    fn serve(&self, state: &mut State, op: &mut IoOp<'_>) -> Result<()> {
        let offset = op.offset();
        let len = op.len();
        let name = op.name();
        match op {
            IoOp::Read { buf, .. } => {
                let (op_index, verdict) =
                    self.admit(state, OpKind::Read, Some((offset, len)), name)?;
                if verdict.eio {
                    return Err(self.injected_eio(state, name, offset, len));
                }
                state.current.read(offset, buf);
                if let Some(target) = verdict.bit_flip {
                    let target_bits = (target.end - target.start) * 8;
                    let bit_index =
                        mix3(self.config.seed ^ STREAM_BITFLIP, op_index, 0) % target_bits;
                    let byte = (target.start - offset + bit_index / 8) as usize;
                    buf[byte] ^= 1 << (bit_index % 8);
                }
                self.counters.record_read(len);
                Ok(())
            }
            IoOp::Write { buf, fua, .. } => {
                let data = buf.to_vec();
                self.serve_write(state, offset, data, *fua, name)
            }
            IoOp::WriteVectored { bufs, fua, .. } => {
                let data = bufs.concat();
                self.serve_write(state, offset, data, *fua, name)
            }
        }
    }

    fn serve_write(
        &self,
        state: &mut State,
        offset: u64,
        data: Vec<u8>,
        fua: bool,
        name: &'static str,
    ) -> Result<()> {
        let len = data.len() as u64;
        let (op_index, verdict) = self.admit(state, OpKind::Write, Some((offset, len)), name)?;
        if verdict.eio {
            // Reads never see a failed write, but it may have partly reached the
            // media, so it stays a candidate at a crash (never forced, even with FUA).
            state.pending.push(PendingWrite {
                op_index,
                offset,
                data,
                fua: false,
                failed: true,
            });
            return Err(self.injected_eio(state, name, offset, len));
        }
        state.current.write(offset, &data);
        // A FUA write is kept in the list (forced to apply at a crash) rather than
        // written to the durable image directly: an older non-durable write to the same
        // sectors must not land over it at the crash.
        state.pending.push(PendingWrite {
            op_index,
            offset,
            data,
            fua,
            failed: false,
        });
        self.counters.record_write(len);
        Ok(())
    }
}

impl BlockDevice for SimDevice {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&self, ops: &mut [IoOp<'_>]) -> Result<()> {
        // The contract: every request is checked before any is issued.
        for op in ops.iter() {
            check_op(&self.geometry, op)?;
        }
        // The whole batch is served under one lock: its requests were "in flight at
        // once", so each one is attempted even after another fails (a write behind a
        // failed one finds the device poisoned), and the first error is returned.
        let mut state = self.state.lock();
        let mut first_error = None;
        for op in ops.iter_mut() {
            if let Err(e) = self.serve(&mut state, op) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn flush(&self) -> Result<()> {
        let mut state = self.state.lock();
        let (_, verdict) = self.admit(&mut state, OpKind::Flush, None, "flush")?;
        if verdict.eio {
            // A failed flush makes nothing durable: what was pending stays pending.
            return Err(self.injected_eio(&mut state, "flush", 0, 0));
        }
        let state = &mut *state;
        for pending in state.pending.drain(..) {
            state.durable.write(pending.offset, &pending.data);
        }
        // `current` already holds every completed write, and a failed write can only be
        // pending while poisoned, when flush never gets here.
        self.counters.record_flush();
        Ok(())
    }

    fn counters(&self) -> Vec<CounterSnapshot> {
        vec![self.counters.snapshot()]
    }

    fn poisoned(&self) -> Option<Arc<DeviceError>> {
        self.state.lock().first_error.clone()
    }
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A mask over `sector_count >= 2` sectors with at least one new and one old sector.
fn torn_mask(rng: &mut SplitMix64, sector_count: usize) -> Vec<bool> {
    debug_assert!(sector_count >= 2);
    let mut mask: Vec<bool> = (0..sector_count).map(|_| rng.next_u64() & 1 == 1).collect();
    if mask.iter().all(|&b| b) || mask.iter().all(|&b| !b) {
        let i = rng.below(sector_count as u64) as usize;
        mask[i] = !mask[i];
    }
    mask
}

/// SplitMix64 (Steele, Lea, Flood 2014). Written out here rather than taken from
/// `rand` because a seed must give the same outcome forever, and `rand` documents
/// that `StdRng`'s algorithm may change between versions.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        finalize(self.state)
    }

    /// Uniform in `0..bound` (`bound > 0`), by widening multiplication; the bias is at
    /// most bound / 2^64, irrelevant here.
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A well-mixed hash of three words: the seeded decision for (seed, stream, index).
fn mix3(a: u64, b: u64, c: u64) -> u64 {
    let mut rng = SplitMix64::new(finalize(a ^ finalize(b.wrapping_add(finalize(c)))));
    rng.next_u64()
}

/// True with probability `p`, decided by the hash `h`.
fn chance(h: u64, p: f64) -> bool {
    if p >= 1.0 {
        return true;
    }
    // 53 random bits give a uniform f64 in [0, 1).
    ((h >> 11) as f64 / (1u64 << 53) as f64) < p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_is_sparse_and_reads_back() {
        let mut image = Image::new(1 << 30);
        assert!(image.chunks.iter().all(Option::is_none));
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        image.write(IMAGE_CHUNK_BYTES - 100, &data);
        let mut back = vec![0u8; data.len()];
        image.read(IMAGE_CHUNK_BYTES - 100, &mut back);
        assert_eq!(back, data);
        assert_eq!(image.chunks.iter().filter(|c| c.is_some()).count(), 5);
        let mut zeros = vec![1u8; 4096];
        image.read(1 << 29, &mut zeros);
        assert!(zeros.iter().all(|&b| b == 0));
    }

    #[test]
    fn torn_mask_is_always_mixed() {
        let mut rng = SplitMix64::new(7);
        for n in 2..40 {
            for _ in 0..50 {
                let m = torn_mask(&mut rng, n);
                assert!(m.iter().any(|&b| b) && m.iter().any(|&b| !b));
            }
        }
    }

    #[test]
    fn chance_matches_probability_roughly() {
        let hits = (0..100_000u64)
            .filter(|&i| chance(mix3(1, 2, i), 0.25))
            .count();
        assert!((23_000..27_000).contains(&hits), "{hits}");
        assert!((0..1000u64).all(|i| !chance(mix3(1, 2, i), 0.0)));
    }
}
