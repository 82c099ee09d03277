//! hashkv-blockdev: the devices hashkv stores values on, and the I/O it drives them with.
//!
//! - [`device`]: the narrow [`BlockDevice`] trait every device implements.
//! - [`file`]: opening raw block devices, partitions and regular files with O_DIRECT,
//!   learning their size and block sizes, locking them against a second opener.
//! - [`uring`]: io_uring I/O driven by the calling threads, each on a ring of the
//!   device's pool.
//! - [`pending`]: reads started now and collected later (read-ahead), owning their
//!   buffers.
//! - [`stripe`]: one address space striped over several member devices.
//! - [`identity`]: the per-member identity header (stripe uuid, index, count).
//! - [`sim`]: an in-memory device with seeded crash and fault injection, for tests.
//! - [`buf`]: aligned buffers.

pub mod buf;
pub mod device;
pub mod error;
pub mod file;
pub mod identity;
pub mod loop_devices;
pub mod pending;
pub mod sim;
pub mod stripe;
pub mod uring;

pub use buf::{AlignedBuf, BUFFER_ALIGN_BYTES};
pub use device::{check_op, BlockDevice, CounterSnapshot, Counters, Geometry, IoOp};
pub use error::{DeviceError, Result};
pub use pending::{read_ops, OwnedRead, PendingReads};
