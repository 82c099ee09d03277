//! One batch on each of several devices from one thread, all of them working at once.

use super::batch::RingBatch;
use super::device::UringDevice;
use super::request::Prepared;
use crate::device::IoOp;
use crate::error::Result;

/// Submits one batch per device and returns when all of them have completed: every
/// batch is validated first (nothing is issued if any op is invalid), then all are put
/// on their devices' rings, then waited for, so the devices work concurrently from one
/// thread. Returns the first error.
pub fn submit_across(work: &mut [(&UringDevice, &mut [IoOp<'_>])]) -> Result<()> {
    let mut prepared = Vec::with_capacity(work.len());
    for (device, ops) in work.iter_mut() {
        prepared.push((*device, device.prepare(ops)?));
    }
    run_across(prepared)
}

/// Flushes every device, all at once from this thread; returns the first error.
pub fn flush_across(devices: &[&UringDevice]) -> Result<()> {
    let mut prepared = Vec::with_capacity(devices.len());
    let mut first_error = None;
    for device in devices {
        // A poisoned member refuses; the others are still flushed.
        match device.prepare_flush() {
            Ok(p) => prepared.push((*device, p)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let result = run_across(prepared);
    match first_error {
        Some(e) => Err(e),
        None => result,
    }
}

/// Starts every batch on a ring of its device, then waits for each. A caller waits for
/// a ring only while it holds none: a device whose pool has no ring free (and may not
/// grow) is left for the next round, after this round's rings are back. Two callers
/// that each hold a ring the other waits for would deadlock otherwise.
fn run_across<'d, 'a>(mut work: Vec<(&'d UringDevice, Prepared<'a>)>) -> Result<()> {
    work.retain(|(_, p)| !p.requests.is_empty());
    let mut first_error = None;
    while !work.is_empty() {
        let mut started: Vec<RingBatch<'d, 'a>> = Vec::with_capacity(work.len());
        let mut later = Vec::new();
        for (device, prepared) in work {
            let lease = if started.is_empty() {
                Some(device.checkout())
            } else {
                device.try_checkout()
            };
            match lease {
                Some(lease) => {
                    let mut batch = RingBatch::new(device, lease, prepared);
                    batch.start();
                    started.push(batch);
                }
                None => later.push((device, prepared)),
            }
        }
        for batch in started {
            if let Err(e) = batch.run() {
                first_error.get_or_insert(e);
            }
        }
        work = later;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
