//! The background flusher. When the write cache fills, the write that filled it wakes
//! this thread and returns; the flush (placement, device writes, index commit) runs
//! here while writers fill the next cache (double buffering). A writer waits only when
//! the next cache fills too before that flush is done, or reaches twice its size before
//! this thread froze it (backpressure): it then flushes in its own thread (`write.rs`), which is also where a full store refuses
//! a write, so that a refusal always reaches the writer whose write it was.

use crate::commit::pipeline::Reach;
use crate::db::Inner;
use crate::error::Error;
use parking_lot::{Condvar, Mutex};

#[derive(Default)]
pub(crate) struct Flusher {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    wanted: bool,
    stopping: bool,
    /// The active flush number when a background flush found the store full: no
    /// background flush is tried again until some flush commits (or takes a write
    /// back), since each try would cost a round of GCs of a full store.
    refused_at_flush: Option<u64>,
}

impl Flusher {
    /// Asks for a flush of the write cache; returns at once.
    pub fn request(&self) {
        let mut s = self.state.lock();
        if !s.wanted {
            s.wanted = true;
            self.wake.notify_one();
        }
    }

    /// Stops the thread after the flush it is running.
    pub fn stop(&self) {
        self.state.lock().stopping = true;
        self.wake.notify_one();
    }

    /// Waits for a request; `false` once stopping.
    fn next_request(&self) -> bool {
        let mut s = self.state.lock();
        while !s.wanted && !s.stopping {
            self.wake.wait(&mut s);
        }
        s.wanted = false;
        !s.stopping
    }
}

impl Inner {
    pub(crate) fn flusher_loop(&self) {
        while self.flusher.next_request() {
            self.flush_in_background();
        }
    }

    /// Flushes while the active map is full. Errors are not lost: a fatal one poisons
    /// the store, and every later write returns it as `Error::Poisoned`.
    fn flush_in_background(&self) {
        loop {
            let (flush_no, full) = {
                let cache = self.cache.read();
                let full = cache.active_bytes >= self.options.write_cache_bytes;
                (cache.active_flush, full && !cache.active.is_empty())
            };
            let refused_before = self.flusher.state.lock().refused_at_flush == Some(flush_no);
            if !full || refused_before || self.committer.first_error().is_some() {
                return;
            }
            // Placed is enough: the commit thread commits it while the next one fills.
            match self.flush_through(flush_no, Reach::Placed) {
                Ok(()) => {}
                Err(Error::StoreFull { .. }) => {
                    // The refused map went back under the active map's number.
                    let active = self.cache.read().active_flush;
                    self.flusher.state.lock().refused_at_flush = Some(active);
                    return;
                }
                Err(e) => {
                    if e.is_fatal() {
                        let _ = self.committer.poisoning::<()>(Err(e));
                    }
                    return;
                }
            }
        }
    }
}
