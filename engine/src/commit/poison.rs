//! The store's poison: after the first fatal error (the device or the index failed,
//! or data read back is damaged) the store refuses every later write, reporting that
//! first error whole. There is one poison per store, set through
//! [`Poison::poisoning`] only.

use crate::error::{Error, Result};
use hashkv_blockdev::DeviceError;
use parking_lot::Mutex;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Poison {
    first: Mutex<Option<Arc<Error>>>,
}

impl Poison {
    /// Passes `r` through; a fatal error poisons the store on its way out. The caller
    /// gets its own error back, later writers get `Error::Poisoned` naming the first.
    ///
    /// A write the device refused because an earlier write of it failed
    /// (`DeviceError::Poisoned`) is a consequence, and the device hands over its cause:
    /// two flushes' writes run side by side, so the write that meets the device's error
    /// may be the later flush's while the earlier flush, whose outcome the commit
    /// thread reports first, is refused. So a refusal poisons the store with its cause,
    /// and its caller gets `Error::Poisoned` naming the first error the store recorded.
    pub fn poisoning<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Err(e) if e.is_fatal() => {
                let mut first = self.first.lock();
                if first.is_none() && !matches!(e, Error::Poisoned { .. }) {
                    let cause = match &e {
                        Error::Device(DeviceError::Poisoned { cause, .. }) => {
                            Error::Device((**cause).clone())
                        }
                        other => other.clone(),
                    };
                    *first = Some(Arc::new(cause));
                }
                match (is_device_refusal(&e), first.as_ref()) {
                    (true, Some(cause)) => Err(Error::Poisoned {
                        first_error: cause.clone(),
                    }),
                    // Otherwise the caller sees what failed, not "poisoned".
                    _ => Err(e),
                }
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

/// The device refused a write because an earlier one failed.
pub(crate) fn is_device_refusal(e: &Error) -> bool {
    matches!(e, Error::Device(DeviceError::Poisoned { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eio() -> Error {
        Error::Device(DeviceError::Io {
            op: "write",
            offset: 4096,
            len: 4096,
            source: std::io::Error::from_raw_os_error(5),
        })
    }

    /// The device's refusal of a write after `cause`.
    fn refused_by(cause: Error) -> Error {
        let Error::Device(cause) = cause else {
            unreachable!("a device's refusal has a device error for its cause")
        };
        Error::Device(DeviceError::refusal(Arc::new(cause)))
    }

    #[test]
    fn a_refusal_that_carries_its_cause_reports_the_cause() {
        let p = Poison::default();
        let e = p.poisoning::<()>(Err(refused_by(eio()))).unwrap_err();
        assert!(
            matches!(&e, Error::Poisoned { first_error }
                if matches!(**first_error, Error::Device(DeviceError::Io { .. }))),
            "{e:?}"
        );
        assert!(!is_device_refusal(&p.first_error().unwrap()));
        // A later error, a refusal or not, does not replace the first.
        let other = Error::Device(DeviceError::Io {
            op: "flush",
            offset: 0,
            len: 0,
            source: std::io::Error::from_raw_os_error(5),
        });
        let e = p.poisoning::<()>(Err(other)).unwrap_err();
        assert!(
            matches!(e, Error::Device(DeviceError::Io { op: "flush", .. })),
            "{e:?}"
        );
        let e = p.poisoning::<()>(Err(refused_by(eio()))).unwrap_err();
        assert!(
            matches!(&e, Error::Poisoned { first_error }
                if matches!(**first_error, Error::Device(DeviceError::Io { op: "write", .. }))),
            "{e:?}"
        );
    }
}
