//! [`RawMutex`] for `lock_api` (feature `lock_api`): parking_lot's raw
//! mutex whose waits are profiled as [`super::Mutex`]'s are, so that
//! `lock_api::Mutex<kiln_agent::sync::RawMutex, T>` is a drop-in for
//! `parking_lot::Mutex<T>`. A raw mutex is made by a `const`, so it has no
//! creation site: its waits are labelled by the function that waited.

use crate::sys::contention::Site;

/// A raw mutex for `lock_api::Mutex`, profiled when it must wait.
pub struct RawMutex {
    inner: parking_lot::RawMutex,
}

// SAFETY: every method forwards to parking_lot's raw mutex, which upholds
// the trait's contract; the timing around a blocking `lock` changes
// nothing about who holds it.
unsafe impl lock_api::RawMutex for RawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawMutex {
        inner: parking_lot::RawMutex::INIT,
    };
    type GuardMarker = <parking_lot::RawMutex as lock_api::RawMutex>::GuardMarker;

    #[inline]
    fn lock(&self) {
        if !self.inner.try_lock() {
            super::waited(Site::Anon, 0, 0, || self.inner.lock());
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.inner.try_lock()
    }

    #[inline]
    unsafe fn unlock(&self) {
        // SAFETY: the caller holds the lock, as the trait requires.
        unsafe { self.inner.unlock() }
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }
}
