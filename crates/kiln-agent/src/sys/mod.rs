//! Everything `unsafe` in Kiln: the SIGPROF handler and its stack walk, the
//! three timer engines (perf events, per-thread CPU timers, `setitimer`),
//! and the table of readable memory the walk checks every read against.
//! Each piece is wrapped in a safe type; the rest of the agent never
//! touches raw pointers or syscalls.
//!
//! The handler is async-signal-safe: it allocates nothing, takes no lock,
//! calls no `std::thread` function; it reads registers from the signal
//! context, walks frame pointers within the interrupted thread's stack
//! mapping, writes into a preallocated [`ring::Ring`] slot, re-arms a perf
//! event with one `ioctl`, and restores `errno`.

pub mod engine;
pub mod regions;
pub mod ring;

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use regions::Regions;
use ring::{MAX_DEPTH, RawSample, Ring};

/// State the signal handler reads. Created once per process and never
/// freed, so a signal arriving late can never touch freed memory.
pub struct Shared {
    /// Samples from handlers to the aggregation thread.
    pub ring: Ring,
    /// Readable memory, for bounds checks.
    pub regions: Regions,
    /// The handler records samples only while this is set.
    pub active: AtomicBool,
    /// Deepest walk, at most [`MAX_DEPTH`].
    pub max_depth: AtomicUsize,
    /// Samples whose stack pointer lay in no known mapping (thread newer
    /// than the last scan): kept with the leaf frame only.
    pub leaf_only: AtomicU64,
    /// Signals that arrived while inactive or in a forked child.
    pub ignored: AtomicU64,
    /// The perf engine's mean sampling period in ns (0: not perf). Each
    /// overflow re-arms with a period drawn within ±12.5% of it, so a
    /// workload whose loop is a multiple of the period cannot alias with it.
    pub perf_period: AtomicU64,
    /// Overflow counter that seeds the jitter.
    pub jitter: AtomicU64,
}

static SHARED: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());
static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Slots in the sample buffer: a second of samples at 1000 Hz on 4 busy
/// threads, drained every 20 ms.
pub const RING_SLOTS: usize = 4096;

/// The process-wide shared state, created (and the handler installed) on
/// first use.
pub fn shared() -> Result<&'static Shared, std::io::Error> {
    let p = SHARED.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: a non-null SHARED points to a leaked Box, alive forever.
        return Ok(unsafe { &*p });
    }
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let p = SHARED.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: as above.
        return Ok(unsafe { &*p });
    }
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        ring: Ring::new(RING_SLOTS),
        regions: Regions::new(),
        active: AtomicBool::new(false),
        max_depth: AtomicUsize::new(MAX_DEPTH),
        leaf_only: AtomicU64::new(0),
        ignored: AtomicU64::new(0),
        perf_period: AtomicU64::new(0),
        jitter: AtomicU64::new(0),
    }));
    SHARED.store(shared as *const Shared as *mut Shared, Ordering::Release);
    install_handler()?;
    Ok(shared)
}

/// The signal all engines deliver.
pub const SIGNAL: libc::c_int = libc::SIGPROF;

/// Set in a forked child (by a `pthread_atfork` handler), where the
/// handler must record nothing: cheaper than a `getpid` per signal.
static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn in_forked_child() {
    FORKED.store(true, Ordering::Relaxed);
}

fn install_handler() -> Result<(), std::io::Error> {
    // SAFETY: registers a plain extern "C" function that only stores an
    // atomic; it stays valid for the life of the process.
    if unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) } != 0 {
        return Err(std::io::Error::other("pthread_atfork failed"));
    }
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
    // we then set the handler, flags and mask before passing it on.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_signal as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    // SAFETY: sa_mask is a valid sigset_t inside `sa`.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: `sa` is fully initialised; the handler is an `extern "C"`
    // function with the SA_SIGINFO signature and lives forever.
    if unsafe { libc::sigaction(SIGNAL, &sa, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Re-reads `/proc/self/maps` into the table the stack walk checks reads
/// against (the sampler thread does this every scan).
pub fn refresh_regions(shared: &Shared) {
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        shared.regions.publish(&regions::parse_maps(&maps));
    }
}

/// Installs a seccomp filter on the calling thread (inherited by threads it
/// creates later) that fails `perf_event_open` with `EPERM`, as Docker's
/// default profile does. For tests and demos of the engine fallback; it
/// cannot be undone.
pub fn deny_perf_event_open() -> std::io::Result<()> {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_KILL: u32 = 0;
    // seccomp_data: nr at offset 0, arch at offset 4.
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        stmt(ld, 4),
        jeq(AUDIT_ARCH, 1, 0),
        stmt(ret, RET_KILL),
        stmt(ld, 0),
        jeq(libc::SYS_perf_event_open as u32, 0, 1),
        stmt(ret, RET_ERRNO | libc::EPERM as u32),
        stmt(ret, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `prog` points to a valid BPF program that outlives the call;
    // the kernel copies it.
    if unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's kernel thread id.
pub fn gettid() -> u32 {
    // SAFETY: SYS_gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// `si_code` values of a signal raised by `F_SETSIG` on a perf event fd.
const POLL_IN: libc::c_int = 1;
const POLL_HUP: libc::c_int = 6;

extern "C" fn on_signal(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; reading and restoring it is what
    // keeps the interrupted code's errno intact.
    let saved_errno = unsafe { *libc::__errno_location() };
    let p = SHARED.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: SHARED, once set, points to a leaked Box alive forever.
        let shared = unsafe { &*p };
        // SAFETY: the kernel passes a valid siginfo and ucontext to an
        // SA_SIGINFO handler.
        unsafe { handle(shared, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// # Safety
/// `info` and `ctx` must be the pointers the kernel passed to the handler.
unsafe fn handle(shared: &Shared, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: `info` is valid per the contract.
    let code = unsafe { (*info).si_code };
    if code == POLL_IN || code == POLL_HUP {
        // A perf event fired and disabled itself: re-arm it for one more
        // overflow. `si_fd` sits after `si_band` in the SIGPOLL layout.
        // SAFETY: for F_SETSIG signals the kernel fills the SIGPOLL fields.
        let fd = unsafe {
            *((info as *const u8).add(2 * std::mem::size_of::<libc::c_long>() + 8)
                as *const libc::c_int)
        };
        let base = shared.perf_period.load(Ordering::Relaxed);
        let draw = shared.jitter.fetch_add(1, Ordering::Relaxed);
        // A new period every fourth overflow is enough to break phase
        // locking with a periodic workload, at a quarter of the syscalls.
        if base >= 8 && draw.is_multiple_of(4) {
            let mut x = draw.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            let period: u64 = base - base / 8 + x % (base / 4 + 1);
            // SAFETY: PERF_EVENT_IOC_PERIOD reads one u64 through the
            // pointer, which points to a live local.
            unsafe { libc::ioctl(fd, engine::PERF_EVENT_IOC_PERIOD, &period as *const u64) };
        }
        // SAFETY: ioctl on an fd is async-signal-safe; a stale fd fails harmlessly.
        unsafe { libc::ioctl(fd, engine::PERF_EVENT_IOC_REFRESH, 1) };
    }
    if code == SI_TKILL {
        if !FORKED.load(Ordering::Relaxed) {
            // SAFETY: `ctx` is the ucontext_t of the interrupted thread.
            let (ip, fp, sp) = unsafe { registers(ctx) };
            answer_dump(shared, ip, fp, sp);
        }
        return;
    }
    if !shared.active.load(Ordering::Relaxed) || FORKED.load(Ordering::Relaxed) {
        shared.ignored.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let weight = if code == SI_TIMER {
        // SAFETY: for timer signals the kernel fills the _timer fields;
        // si_overrun is the int after si_timerid, 20 bytes in.
        let overrun = unsafe { *((info as *const u8).add(20) as *const libc::c_int) };
        1 + overrun.clamp(0, 1000) as u32
    } else {
        1
    };
    // SAFETY: `ctx` is the ucontext_t of the interrupted thread.
    let (ip, fp, sp) = unsafe { registers(ctx) };
    record(shared, gettid(), ip, fp, sp, weight);
}

/// `si_code` of a signal from a POSIX timer.
const SI_TIMER: libc::c_int = -2;

/// Walks and stores one sample. The whole signal path after the register
/// read, public so a test can run it under a counting allocator.
pub fn record(shared: &Shared, tid: u32, ip: u64, fp: u64, sp: u64, weight: u32) {
    let max = shared.max_depth.load(Ordering::Relaxed).clamp(1, MAX_DEPTH);
    shared.ring.push(|s: &mut RawSample| {
        s.tid = tid;
        s.weight = weight;
        let (n, truncated) = walk(shared, ip, fp, sp, max, &mut s.ips);
        s.depth = n as u16;
        s.truncated = truncated;
    });
}

/// Walks frame pointers from `(ip, fp, sp)` into `out` (leaf first), at
/// most `max` frames; returns the frames written and whether the walk was
/// cut at `max`. Every read is checked against the mapping that holds the
/// thread's stack; a thread whose stack is not mapped yet keeps the leaf.
fn walk(
    shared: &Shared,
    ip: u64,
    fp: u64,
    sp: u64,
    max: usize,
    out: &mut [u64; MAX_DEPTH],
) -> (usize, bool) {
    out[0] = ip;
    let mut n = 1;
    match shared.regions.find(sp) {
        Some((lo, hi)) => {
            let mut fp = fp;
            while n < max {
                // Both words of the frame record must lie inside the
                // mapping that holds this thread's stack, above sp.
                if fp < sp
                    || fp < lo
                    || !fp.is_multiple_of(8)
                    || fp.checked_add(16).is_none_or(|end| end > hi)
                {
                    break;
                }
                // SAFETY: [fp, fp + 16) lies inside a readable mapping
                // that contains the running thread's stack pointer, so
                // it is mapped while this thread runs its handler.
                let (next, ret) = unsafe {
                    (
                        std::ptr::read_volatile(fp as *const u64),
                        std::ptr::read_volatile((fp + 8) as *const u64),
                    )
                };
                if ret == 0 {
                    break;
                }
                out[n] = ret;
                n += 1;
                if next <= fp {
                    break;
                }
                fp = next;
            }
            (n, n == max)
        }
        None => {
            shared.leaf_only.fetch_add(1, Ordering::Relaxed);
            (n, false)
        }
    }
}

/// `si_code` of a signal sent with `tgkill`: a thread-dump request.
const SI_TKILL: libc::c_int = -6;

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
    /// The thread did not answer in time (it blocks SIGPROF, or is stopped).
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
            SIGNAL,
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
fn answer_dump(shared: &Shared, ip: u64, fp: u64, sp: u64) {
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

/// Instruction pointer, frame pointer and stack pointer of the interrupted
/// context.
///
/// # Safety
/// `ctx` must point to the `ucontext_t` the kernel passed to the handler.
#[cfg(target_arch = "x86_64")]
unsafe fn registers(ctx: *mut libc::c_void) -> (u64, u64, u64) {
    // SAFETY: per the contract, `ctx` is a valid ucontext_t.
    let g = unsafe { &(*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs };
    (
        g[libc::REG_RIP as usize] as u64,
        g[libc::REG_RBP as usize] as u64,
        g[libc::REG_RSP as usize] as u64,
    )
}

/// # Safety
/// `ctx` must point to the `ucontext_t` the kernel passed to the handler.
#[cfg(target_arch = "aarch64")]
unsafe fn registers(ctx: *mut libc::c_void) -> (u64, u64, u64) {
    // SAFETY: per the contract, `ctx` is a valid ucontext_t.
    let m = unsafe { &(*(ctx as *const libc::ucontext_t)).uc_mcontext };
    (m.pc, m.regs[29], m.sp)
}

/// The current frame pointer and stack pointer of the calling thread, for
/// tests of [`record`] outside a signal.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn current_frame() -> (u64, u64) {
    let (fp, sp): (u64, u64);
    // SAFETY: reads two registers into locals; no memory is touched.
    unsafe {
        std::arch::asm!("mov {}, rbp", "mov {}, rsp", out(reg) fp, out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    (fp, sp)
}

/// See the x86_64 version.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub fn current_frame() -> (u64, u64) {
    let (fp, sp): (u64, u64);
    // SAFETY: reads two registers into locals; no memory is touched.
    unsafe {
        std::arch::asm!("mov {}, x29", "mov {}, sp", out(reg) fp, out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    (fp, sp)
}
