//! The store's poison: after the first fatal error (the device or the index failed,
//! or data read back is damaged) the store refuses every later write, reporting that
//! first error whole. There is one poison per store, set through
//! [`Poison::poisoning`] only.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Poison {
    first: Mutex<Option<Arc<Error>>>,
}

impl Poison {
    /// Passes `r` through; a fatal error poisons the store on its way out. The caller
    /// gets its own error back, later writers get `Error::Poisoned` naming the first.
    pub fn poisoning<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Err(e) if e.is_fatal() => {
                let mut first = self.first.lock();
                if first.is_none() && !matches!(e, Error::Poisoned { .. }) {
                    *first = Some(Arc::new(e.clone()));
                }
                // The caller sees what failed, not "poisoned".
                Err(e)
            }
            other => other,
        }
    }

    pub fn first_error(&self) -> Option<Arc<Error>> {
        self.first.lock().clone()
    }

    /// `Error::Poisoned` once poisoned.
    pub fn check(&self) -> Result<()> {
        match self.first_error() {
            Some(first_error) => Err(Error::Poisoned { first_error }),
            None => Ok(()),
        }
    }
}
