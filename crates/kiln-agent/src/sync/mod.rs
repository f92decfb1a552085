//! Locks that say who waits on them: [`Mutex`] and [`RwLock`] are
//! `std::sync`'s, with the same API, guards and poisoning (a std
//! [`Condvar`](std::sync::Condvar) waits on a [`Mutex`]'s guard as on
//! std's). An acquisition that succeeds at once is std's own fast path
//! (one compare-and-swap); one that must wait is timed, counted in its
//! lock's wait histogram (p50/p99 in the agent's `/metrics`) and sampled
//! in proportion to its wait, with the waiter's stack, into the
//! `mutex:contentions` and `mutex:delay` profiles labelled `lock`: the
//! name given to [`Mutex::named`], or the `file:line` that created the
//! lock. Without a running agent a wait costs two clock reads more than
//! std's.
//!
//! ```
//! let cache = kiln_agent::sync::Mutex::new(std::collections::HashMap::<u64, String>::new());
//! let index = kiln_agent::sync::RwLock::named("index", Vec::<u64>::new());
//! cache.lock().unwrap().insert(1, "one".into());
//! assert_eq!(index.read().unwrap().len(), 0);
//! ```
//!
//! With the `lock_api` feature, [`RawMutex`] gives `lock_api` and
//! `parking_lot` users the same: `lock_api::Mutex<kiln_agent::sync::RawMutex, T>`
//! (its waits are labelled by the function that waited: a `const` raw
//! mutex has no creation site).
//!
//! A wait inside [`Condvar::wait`](std::sync::Condvar::wait) to take the
//! lock back is std's own and not seen.

#[cfg(feature = "lock_api")]
#[allow(unsafe_code)]
mod raw;

use std::fmt;
use std::panic::Location;
use std::sync::{
    LockResult, MutexGuard, RwLockReadGuard, RwLockWriteGuard, TryLockError, TryLockResult,
};
use std::time::Instant;

#[cfg(feature = "lock_api")]
pub use raw::RawMutex;

pub use crate::sys::contention::Site;
use crate::sys::contention::{begin_wait_on, contended, end_wait, my_tid};
use std::sync::atomic::{AtomicU32, Ordering};

/// Default mean nanoseconds of waiting between lock samples.
pub const DEFAULT_SAMPLE_NS: u64 = 100_000;

/// Times the wait for `take`, once an immediate attempt failed; `lock`
/// and `holder` (the lock's address and the thread that last took it,
/// 0 when unknown) are published for the deadlock check while it waits.
#[inline(never)]
fn waited<R>(site: Site, lock: usize, holder: u32, take: impl FnOnce() -> R) -> R {
    /// Unmarks the thread as waiting however `take` ends.
    struct Waiting(Option<usize>);
    impl Drop for Waiting {
        fn drop(&mut self) {
            end_wait(self.0.take());
        }
    }
    // The bookkeeping is part of the wait, as the waiter sees it.
    let t0 = Instant::now();
    let waiting = Waiting(begin_wait_on(lock, holder, site));
    let r = take();
    let waited = t0.elapsed().as_nanos() as u64;
    drop(waiting);
    contended(site, waited);
    r
}

/// A mutual exclusion lock: `std::sync::Mutex`, whose waits are profiled.
pub struct Mutex<T: ?Sized> {
    site: Site,
    /// The thread that last took it (0: none yet): what the deadlock
    /// check names as a waiter's holder. One relaxed store per lock.
    holder: AtomicU32,
    inner: std::sync::Mutex<T>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex, labelled by where this is called.
    #[track_caller]
    pub const fn new(t: T) -> Self {
        Mutex {
            site: Site::At(Location::caller()),
            holder: AtomicU32::new(0),
            inner: std::sync::Mutex::new(t),
        }
    }

    /// A new unlocked mutex, labelled `name` in lock profiles.
    pub const fn named(name: &'static str, t: T) -> Self {
        Mutex {
            site: Site::Named(name),
            holder: AtomicU32::new(0),
            inner: std::sync::Mutex::new(t),
        }
    }

    /// Consumes the mutex, returning the data.
    pub fn into_inner(self) -> LockResult<T> {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Acquires the mutex, blocking until it is available.
    #[inline]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let r = match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(e)) => Err(e),
            Err(TryLockError::WouldBlock) => self.lock_contended(),
        };
        self.holder.store(my_tid(), Ordering::Relaxed);
        r
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> LockResult<MutexGuard<'_, T>> {
        let at = &self.holder as *const AtomicU32 as usize;
        let holder = self.holder.load(Ordering::Relaxed);
        waited(self.site, at, holder, || self.inner.lock())
    }

    /// Attempts to acquire the mutex without blocking.
    #[inline]
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        let r = self.inner.try_lock();
        if !matches!(r, Err(TryLockError::WouldBlock)) {
            self.holder.store(my_tid(), Ordering::Relaxed);
        }
        r
    }

    /// Whether a thread panicked while holding the mutex.
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Clears the poisoned state.
    pub fn clear_poison(&self) {
        self.inner.clear_poison();
    }

    /// A mutable reference to the data (no locking: the borrow is unique).
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.inner.get_mut()
    }

    /// The `lock` label of this mutex's waits.
    pub fn site(&self) -> Site {
        self.site
    }
}

impl<T: Default> Default for Mutex<T> {
    #[track_caller]
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    #[track_caller]
    fn from(t: T) -> Self {
        Mutex::new(t)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("site", &self.site)
            .field("inner", &&self.inner)
            .finish()
    }
}

/// A reader-writer lock: `std::sync::RwLock`, whose waits are profiled
/// (readers waiting for a writer and writers waiting for anyone).
pub struct RwLock<T: ?Sized> {
    site: Site,
    /// The thread that last took it for writing (0: none yet); readers
    /// are not named.
    holder: AtomicU32,
    inner: std::sync::RwLock<T>,
}

impl<T> RwLock<T> {
    /// A new unlocked lock, labelled by where this is called.
    #[track_caller]
    pub const fn new(t: T) -> Self {
        RwLock {
            site: Site::At(Location::caller()),
            holder: AtomicU32::new(0),
            inner: std::sync::RwLock::new(t),
        }
    }

    /// A new unlocked lock, labelled `name` in lock profiles.
    pub const fn named(name: &'static str, t: T) -> Self {
        RwLock {
            site: Site::Named(name),
            holder: AtomicU32::new(0),
            inner: std::sync::RwLock::new(t),
        }
    }

    /// Consumes the lock, returning the data.
    pub fn into_inner(self) -> LockResult<T> {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks with shared read access, blocking while a writer holds it.
    #[inline]
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        match self.inner.try_read() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(e)) => Err(e),
            Err(TryLockError::WouldBlock) => self.read_contended(),
        }
    }

    #[cold]
    #[inline(never)]
    fn read_contended(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        let at = &self.holder as *const AtomicU32 as usize;
        waited(self.site, at, self.holder.load(Ordering::Relaxed), || {
            self.inner.read()
        })
    }

    /// Locks with exclusive write access, blocking while anyone holds it.
    #[inline]
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let r = match self.inner.try_write() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(e)) => Err(e),
            Err(TryLockError::WouldBlock) => self.write_contended(),
        };
        self.holder.store(my_tid(), Ordering::Relaxed);
        r
    }

    #[cold]
    #[inline(never)]
    fn write_contended(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let at = &self.holder as *const AtomicU32 as usize;
        waited(self.site, at, self.holder.load(Ordering::Relaxed), || {
            self.inner.write()
        })
    }

    /// Attempts shared read access without blocking.
    #[inline]
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        self.inner.try_read()
    }

    /// Attempts exclusive write access without blocking.
    #[inline]
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        let r = self.inner.try_write();
        if !matches!(r, Err(TryLockError::WouldBlock)) {
            self.holder.store(my_tid(), Ordering::Relaxed);
        }
        r
    }

    /// Whether a thread panicked while holding the write lock.
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Clears the poisoned state.
    pub fn clear_poison(&self) {
        self.inner.clear_poison();
    }

    /// A mutable reference to the data (no locking: the borrow is unique).
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.inner.get_mut()
    }

    /// The `lock` label of this lock's waits.
    pub fn site(&self) -> Site {
        self.site
    }
}

impl<T: Default> Default for RwLock<T> {
    #[track_caller]
    fn default() -> Self {
        RwLock::new(T::default())
    }
}

impl<T> From<T> for RwLock<T> {
    #[track_caller]
    fn from(t: T) -> Self {
        RwLock::new(t)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock")
            .field("site", &self.site)
            .field("inner", &&self.inner)
            .finish()
    }
}
