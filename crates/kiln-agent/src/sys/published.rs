//! Tables that signal handlers read while one writer replaces them: two
//! slots, one current; a reader pins the slot it reads with a count and
//! re-checks it is still current; the writer fills only the other slot,
//! once no reader holds it, then flips. Only the holder of the process's
//! one [`WriteToken`] can publish, so "one writer" is a type, not a
//! comment.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The right to publish handler tables. One exists per process, inside
/// [`super::Shared`] behind a mutex: the lock is on the writer's side;
/// handlers never take it.
pub struct WriteToken(());

impl WriteToken {
    /// The process's one token. Only [`super::shared`] calls this, once.
    pub(super) fn new() -> Self {
        WriteToken(())
    }
}

struct Slot<T> {
    value: UnsafeCell<Option<Box<T>>>,
    readers: AtomicUsize,
}

/// A value published to signal handlers.
pub struct Published<T> {
    slots: [Slot<T>; 2],
    current: AtomicUsize,
}

// SAFETY: a slot's value is replaced only by the token holder while the
// slot is not current and has no readers; readers pin a slot and re-check
// that it is current before touching it, so no read overlaps a write.
unsafe impl<T: Send + Sync> Sync for Published<T> {}

impl<T> Default for Published<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Published<T> {
    /// Nothing published yet.
    pub const fn new() -> Self {
        Published {
            slots: [
                Slot {
                    value: UnsafeCell::new(None),
                    readers: AtomicUsize::new(0),
                },
                Slot {
                    value: UnsafeCell::new(None),
                    readers: AtomicUsize::new(0),
                },
            ],
            current: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on the current value. Async-signal-safe: atomics only; `f`
    /// must be too.
    pub fn read<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        let b = self.current.load(Ordering::SeqCst);
        let slot = &self.slots[b];
        slot.readers.fetch_add(1, Ordering::SeqCst);
        let r = if self.current.load(Ordering::SeqCst) == b {
            // SAFETY: pinned and current, so the writer is not replacing it.
            f(unsafe { (*slot.value.get()).as_deref() })
        } else {
            f(None)
        };
        slot.readers.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// Makes `value` current; the value it replaces two publications ago is
    /// dropped here, on the writer's thread.
    pub fn publish(&self, _token: &mut WriteToken, value: T) {
        let next = 1 - self.current.load(Ordering::SeqCst);
        let slot = &self.slots[next];
        while slot.readers.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        // SAFETY: `next` is not current and has no readers; the token
        // makes this the only writer. A reader that pins it from now on
        // finds it not current and backs off.
        let old = unsafe { (*slot.value.get()).replace(Box::new(value)) };
        self.current.store(next, Ordering::SeqCst);
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_the_latest() {
        let p: Published<Vec<u32>> = Published::new();
        let mut t = WriteToken::new();
        assert_eq!(p.read(|v| v.cloned()), None);
        p.publish(&mut t, vec![1]);
        p.publish(&mut t, vec![2]);
        assert_eq!(p.read(|v| v.cloned()), Some(vec![2]));
        p.publish(&mut t, vec![3]);
        assert_eq!(p.read(|v| v.cloned()), Some(vec![3]));
    }
}
