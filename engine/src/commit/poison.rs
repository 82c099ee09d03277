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
    /// (`DeviceError::Poisoned`) is a consequence, not a cause: two flushes' writes run
    /// side by side, so the write that meets the device's error may be the later
    /// flush's while the earlier flush, whose outcome the commit thread reports first,
    /// is refused. So a cause replaces a recorded consequence, and a caller whose write
    /// was refused gets `Error::Poisoned` naming the cause once it is known (the
    /// device's message names it either way). A device that keeps its first error
    /// hands it over with the refusal (`cause`), and then the refused caller always
    /// gets `Error::Poisoned` naming it.
    pub fn poisoning<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Err(e) if e.is_fatal() => {
                let mut first = self.first.lock();
                // A refusal that carries its cause is recorded as that cause.
                let candidate = match &e {
                    Error::Device(DeviceError::Poisoned {
                        cause: Some(cause), ..
                    }) => Error::Device((**cause).clone()),
                    other => other.clone(),
                };
                let replaces = match first.as_deref() {
                    None => true,
                    Some(recorded) => is_device_refusal(recorded) && !is_device_refusal(&candidate),
                };
                if replaces && !matches!(candidate, Error::Poisoned { .. }) {
                    *first = Some(Arc::new(candidate));
                }
                if is_device_refusal(&e) {
                    if let Some(cause) = first.as_ref().filter(|f| !is_device_refusal(f)) {
                        return Err(Error::Poisoned {
                            first_error: cause.clone(),
                        });
                    }
                }
                // Otherwise the caller sees what failed, not "poisoned".
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

    /// A refusal without its cause, as a stripe gives (only the member's message).
    fn refusal() -> Error {
        Error::Device(DeviceError::Poisoned {
            first_error: "write at offset 4096 (+4096 bytes) failed".into(),
            cause: None,
        })
    }

    #[test]
    fn a_device_refusal_gives_way_to_its_cause() {
        // The refusal arrives first (an earlier flush's writes, committed first):
        // recorded, its caller sees it as it is.
        let p = Poison::default();
        let e = p.poisoning::<()>(Err(refusal())).unwrap_err();
        assert!(is_device_refusal(&e), "{e:?}");
        assert!(is_device_refusal(&p.first_error().unwrap()));
        // The cause replaces it; its caller sees it as it is.
        let e = p.poisoning::<()>(Err(eio())).unwrap_err();
        assert!(matches!(e, Error::Device(DeviceError::Io { .. })), "{e:?}");
        assert!(matches!(
            *p.first_error().unwrap(),
            Error::Device(DeviceError::Io { .. })
        ));
        // A later refusal reaches its caller as the store's poison, naming the cause,
        // and a later cause does not replace the first.
        let e = p.poisoning::<()>(Err(refusal())).unwrap_err();
        assert!(
            matches!(&e, Error::Poisoned { first_error } if !is_device_refusal(first_error)),
            "{e:?}"
        );
        let other = Error::Device(DeviceError::Io {
            op: "flush",
            offset: 0,
            len: 0,
            source: std::io::Error::from_raw_os_error(5),
        });
        let _ = p.poisoning::<()>(Err(other));
        assert!(matches!(
            &*p.first_error().unwrap(),
            Error::Device(DeviceError::Io { op: "write", .. })
        ));
    }

    #[test]
    fn a_refusal_that_carries_its_cause_reports_the_cause() {
        let p = Poison::default();
        let Error::Device(cause) = eio() else {
            unreachable!()
        };
        let refused = Error::Device(DeviceError::Poisoned {
            first_error: cause.to_string(),
            cause: Some(Arc::new(cause)),
        });
        let e = p.poisoning::<()>(Err(refused)).unwrap_err();
        assert!(
            matches!(&e, Error::Poisoned { first_error }
                if matches!(**first_error, Error::Device(DeviceError::Io { .. }))),
            "{e:?}"
        );
        assert!(!is_device_refusal(&p.first_error().unwrap()));
    }
}
