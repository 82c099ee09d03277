//! A flush's device writes in flight: submitted on a thread of their own, so that the
//! flusher goes on to the next flush (waiting for room in the pipeline, freezing the
//! next map) while the device writes this one. Two waits order them: the next flush
//! encodes and submits its writes only after these completed (an append rewrites its
//! group's partly written last block, and two writes of one block in flight may land
//! in either order; and its buffers come back to the pool first, so one flush's
//! encoded records are in memory at a time), and the commit thread flushes the device
//! for this flush only after they completed (its index batch may name only durable
//! records).

use crate::error::Result;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

/// The outcome of one flush's writes, once they completed.
#[derive(Debug, Default)]
pub(crate) struct WritesInFlight {
    outcome: Mutex<Option<Result<()>>>,
    completed: Condvar,
}

impl WritesInFlight {
    /// Runs `write` on a new thread and returns at once (a thread per flush: a
    /// flush's writes take milliseconds, a thread's start microseconds). If no thread
    /// can be started, `write` runs here before this returns.
    pub fn start(write: impl FnOnce() -> Result<()> + Send + 'static) -> Arc<Self> {
        type Job = Box<dyn FnOnce() -> Result<()> + Send>;
        let in_flight = Arc::new(WritesInFlight::default());
        let job: Arc<Mutex<Option<Job>>> = Arc::new(Mutex::new(Some(Box::new(write))));
        let (done, queued) = (in_flight.clone(), job.clone());
        let spawned = std::thread::Builder::new()
            .name("hashkv-flush-io".into())
            .spawn(move || {
                if let Some(write) = queued.lock().take() {
                    done.finish(write());
                }
            });
        if spawned.is_err() {
            if let Some(write) = job.lock().take() {
                in_flight.finish(write());
            }
        }
        in_flight
    }

    fn finish(&self, outcome: Result<()>) {
        *self.outcome.lock() = Some(outcome);
        self.completed.notify_all();
    }

    /// Waits until the writes completed; their outcome (every waiter sees it).
    pub fn wait(&self) -> Result<()> {
        let mut outcome = self.outcome.lock();
        while outcome.is_none() {
            self.completed.wait(&mut outcome);
        }
        outcome.clone().expect("completed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn every_waiter_sees_the_outcome_once_the_writes_completed() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let w = WritesInFlight::start(move || {
            rx.recv().unwrap();
            Err(Error::CommitThreadPanicked {
                message: "a failed write".into(),
            })
        });
        let waiter = {
            let w = w.clone();
            std::thread::spawn(move || w.wait())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !waiter.is_finished(),
            "waits while the writes are in flight"
        );
        tx.send(()).unwrap();
        assert!(waiter.join().unwrap().is_err());
        assert!(w.wait().is_err(), "a later waiter sees the same outcome");
    }
}
