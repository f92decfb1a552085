//! Thread dumps: a requester asks one thread, through `tgkill`, for its
//! current stack; that thread's own signal handler walks it into a
//! one-slot mailbox. The requester's side ([`thread_stack`]) and the
//! handler's ([`answer_dump`]) meet only through atomics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{ASK_SIGNAL, MAX_DEPTH, Shared, gettid, walk};

/// `si_code` of a signal sent with `tgkill`: a thread-dump request.
pub(super) const SI_TKILL: libc::c_int = -6;

const DUMP_IDLE: u32 = 0;
const DUMP_REQUESTED: u32 = 1;
const DUMP_WRITING: u32 = 2;
const DUMP_DONE: u32 = 3;

/// The one-slot mailbox between a thread-dump request and the signal
/// handler of the thread asked. `state` moves IDLE → REQUESTED (the
/// requester) → WRITING → DONE (the handler) → IDLE (the requester), or
/// REQUESTED → IDLE when the requester gives up; only the side that won
/// the transition touches `ips`.
struct DumpSlot {
    state: std::sync::atomic::AtomicU32,
    target: std::sync::atomic::AtomicU32,
    depth: AtomicUsize,
    truncated: AtomicBool,
    ips: std::cell::UnsafeCell<[u64; MAX_DEPTH]>,
}

// SAFETY: `ips` is written only by the handler that won REQUESTED →
// WRITING and read only by the requester after it saw DONE (Acquire), which
// that handler stored with Release; requests are serialised by DUMP_LOCK.
unsafe impl Sync for DumpSlot {}

static DUMP: DumpSlot = DumpSlot {
    state: std::sync::atomic::AtomicU32::new(DUMP_IDLE),
    target: std::sync::atomic::AtomicU32::new(0),
    depth: AtomicUsize::new(0),
    truncated: AtomicBool::new(false),
    ips: std::cell::UnsafeCell::new([0; MAX_DEPTH]),
};
static DUMP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Why a thread's stack could not be taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DumpError {
    /// The thread exited before the signal reached it.
    Exited,
    /// The thread did not answer in time (it blocks SIGVTALRM, or is stopped).
    NoAnswer,
    /// `tgkill` failed otherwise.
    Signal(String),
}

/// The current stack of thread `tid` of this process (leaf first, and
/// whether it was cut at the depth limit), taken by its own signal
/// handler: the thread is interrupted for the few microseconds of a
/// frame-pointer walk, wherever it is, blocked in a system call included
/// (which `SA_RESTART` then resumes). `_installed` proves the handler is
/// installed: without it the signal would kill the process.
pub fn thread_stack(
    _installed: &Shared,
    tid: u32,
    timeout: std::time::Duration,
) -> Result<(Vec<u64>, bool), DumpError> {
    if !super::ASK_OK.load(Ordering::Relaxed) {
        return Err(DumpError::Signal(
            "SIGVTALRM is the host's: threads are not asked for stacks".into(),
        ));
    }
    let _one_at_a_time = DUMP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    DUMP.target.store(tid, Ordering::Relaxed);
    DUMP.state.store(DUMP_REQUESTED, Ordering::Release);
    // SAFETY: tgkill takes plain integers; a thread id that is gone fails
    // with ESRCH and sends nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            tid as libc::c_long,
            ASK_SIGNAL,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        DUMP.state.store(DUMP_IDLE, Ordering::Release);
        return Err(if e.raw_os_error() == Some(libc::ESRCH) {
            DumpError::Exited
        } else {
            DumpError::Signal(e.to_string())
        });
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match DUMP.state.load(Ordering::Acquire) {
            DUMP_DONE => break,
            DUMP_REQUESTED
                if std::time::Instant::now() >= deadline
                    && DUMP
                        .state
                        .compare_exchange(
                            DUMP_REQUESTED,
                            DUMP_IDLE,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok() =>
            {
                return Err(DumpError::NoAnswer);
            }
            // Otherwise the handler is writing (it finishes in
            // microseconds) or has not run yet.
            _ => {}
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    let n = DUMP.depth.load(Ordering::Relaxed).min(MAX_DEPTH);
    // SAFETY: state is DONE, seen with Acquire after the handler's Release
    // store; no handler writes `ips` until the next REQUESTED, which only
    // this function (holding DUMP_LOCK) sets.
    let ips = unsafe { (&*DUMP.ips.get())[..n].to_vec() };
    let truncated = DUMP.truncated.load(Ordering::Relaxed);
    DUMP.state.store(DUMP_IDLE, Ordering::Release);
    Ok((ips, truncated))
}

/// The handler's side of a dump request: if one is pending for this
/// thread, walk into the slot.
pub(super) fn answer_dump(shared: &Shared, ip: u64, fp: u64, sp: u64) {
    if DUMP.state.load(Ordering::Acquire) != DUMP_REQUESTED
        || DUMP.target.load(Ordering::Relaxed) != gettid()
    {
        return;
    }
    if DUMP
        .state
        .compare_exchange(
            DUMP_REQUESTED,
            DUMP_WRITING,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return;
    }
    // SAFETY: this handler won REQUESTED → WRITING, so it alone touches
    // `ips` until it stores DONE.
    let out = unsafe { &mut *DUMP.ips.get() };
    let (n, truncated) = walk(shared, ip, fp, sp, MAX_DEPTH, out);
    DUMP.depth.store(n, Ordering::Relaxed);
    DUMP.truncated.store(truncated, Ordering::Relaxed);
    DUMP.state.store(DUMP_DONE, Ordering::Release);
}
