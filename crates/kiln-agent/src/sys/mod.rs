//! Everything `unsafe` in Kiln: the SIGPROF handler and its stack walk, the
//! three timer engines (perf events, per-thread CPU timers, `setitimer`),
//! and the table of readable memory the walk checks every read against.
//! Each piece is wrapped in a safe type; the rest of the agent never
//! touches raw pointers or syscalls.
//!
//! The handler is async-signal-safe: it allocates nothing, takes no lock,
//! calls no `std::thread` function; it reads registers from the signal
//! context, walks the stack (CFI rules where the code has them, frame
//! pointers elsewhere: [`crate::unwind`]) reading only the interrupted
//! thread's own stack mapping, writes into a preallocated [`ring::Ring`]
//! slot, re-arms its timer with a fresh random interval (one syscall),
//! and restores `errno`. The tables it reads (stack mappings, unwind rows)
//! are [`published::Published`]: one writer, the holder of the token in
//! [`Shared::writer`]. Rooms: `dump` (the thread dump's mailbox), `regs`
//! (register reads), `heap` (the allocation sampler's hot path),
//! `contention` (the lock profiler's recording path), `wall` (the
//! wall-clock sampler's signal), `engine`
//! (timers and perf events), `ring`, `regions`, `published`, `modules`,
//! `mapped`.

pub mod contention;
mod dump;
pub mod engine;
pub mod heap;
pub mod mapped;
mod modules;
pub mod published;
pub mod regions;
mod regs;
pub mod ring;
pub mod wall;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};

pub use dump::{DumpError, thread_stack};
use dump::{SI_TKILL, answer_dump};
pub use modules::{CodeMapping, code_mappings, generation as modules_generation};
use published::{Published, WriteToken};
use regions::Regions;
use regs::registers;
pub use regs::{current_frame, current_pc};
use ring::{MAX_DEPTH, RawSample, Ring};

use crate::unwind::{ModuleTable, Regs, UnwindTables};

/// State the signal handler reads. Created once per process and never
/// freed, so a signal arriving late can never touch freed memory.
pub struct Shared {
    /// Samples from handlers to the aggregation thread.
    pub ring: Ring,
    /// Sampled allocations and frees of sampled blocks, from the
    /// allocator to the aggregation thread.
    pub heap: Ring,
    /// Sampled lock waits, from contended acquisitions to the
    /// aggregation thread.
    pub locks: Ring,
    /// Stacks of threads the wall-clock sampler asked for.
    pub wall: Ring,
    /// Stacks of every Nth operation of a task or I/O call, for its site.
    pub sites: Ring,
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
    /// overflow re-arms with a period drawn uniformly from [period/2,
    /// 3·period/2), so a workload whose loop is a multiple of the period
    /// cannot alias with it.
    pub perf_period: AtomicU64,
    /// Overflow counter that seeds the jitter.
    pub jitter: AtomicU64,
    /// The CPU-timer engines' mean period in ns (0: not a timer engine).
    /// Each signal re-arms the timer with an interval drawn uniformly from
    /// [period/2, 3·period/2): the mean stays the period (so a sample still
    /// stands for one period of CPU), but no workload can keep its phase.
    pub timer_period: AtomicU64,
    /// Which timer the period applies to: [`TIMER_CTIMER`] or [`TIMER_ITIMER`].
    pub timer_kind: AtomicU8,
    /// The itimer engine's next schedule point, in the process's CPU
    /// nanoseconds (0: none yet).
    pub itimer_next: AtomicU64,
    /// CFI rows of every loaded object.
    pub unwind: Published<UnwindTables>,
    /// The one writer of the tables above, with what it has built.
    pub writer: std::sync::Mutex<Writer>,
}

/// [`Shared::timer_kind`] for per-thread CPU timers.
pub const TIMER_CTIMER: u8 = 1;
/// [`Shared::timer_kind`] for `setitimer`.
pub const TIMER_ITIMER: u8 = 2;

/// The writer side of the handler's tables: the token, and each loaded
/// object's rows, kept while the object stays loaded.
pub struct Writer {
    token: WriteToken,
    modules: HashMap<ModuleKey, Arc<ModuleTable>>,
    generation: Option<(u64, u64)>,
    /// Objects whose CFI failed to parse, with why.
    pub unwind_errors: Vec<String>,
}

/// What the unwind tables hold now.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct UnwindStatus {
    /// Objects covered.
    pub modules: usize,
    /// Rows over all of them.
    pub rows: usize,
    /// Bytes the rows take.
    pub bytes: usize,
    /// Frame descriptions whose rules the walk cannot follow (their code
    /// falls back to frame pointers).
    pub unsupported: u64,
}

impl Writer {
    /// Re-reads `/proc/self/maps` into the table of stack mappings.
    pub fn refresh_regions(&mut self, shared: &Shared) {
        if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
            shared
                .regions
                .publish(&mut self.token, &regions::parse_maps(&maps));
        }
    }

    /// Rebuilds the unwind tables if objects were loaded or unloaded since
    /// the last call (objects already seen keep their rows).
    pub fn refresh_unwind(&mut self, shared: &Shared) -> UnwindStatus {
        let generation = modules::generation();
        if self.generation != Some(generation) {
            self.generation = Some(generation);
            let (tables, errors) = build_tables(&mut self.modules);
            self.unwind_errors = errors;
            shared.unwind.publish(&mut self.token, tables);
        }
        shared.unwind.read(|t| {
            t.map_or_else(UnwindStatus::default, |t| UnwindStatus {
                modules: t.modules().len(),
                rows: t.modules().iter().map(|m| m.rows()).sum(),
                bytes: t.modules().iter().map(|m| m.bytes()).sum(),
                unsupported: t.modules().iter().map(|m| m.unsupported).sum(),
            })
        })
    }
}

/// What identifies a loaded object's rows: path, load base, and where and
/// how long its `.eh_frame` is (a library rebuilt and loaded again at the
/// same base gets new rows).
type ModuleKey = (String, u64, u64, usize);

/// Tables over every object loaded now, reusing `cache` for objects seen
/// before (and forgetting those gone).
fn build_tables(cache: &mut HashMap<ModuleKey, Arc<ModuleTable>>) -> (UnwindTables, Vec<String>) {
    let mut errors = Vec::new();
    let mut keep = HashMap::new();
    for f in modules::eh_frames() {
        let key = (f.name.clone(), f.base, f.addr, f.bytes.len());
        let table = match cache.remove(&key) {
            Some(t) => t,
            None => match crate::unwind::build_module(&f.name, &f.bytes, f.addr) {
                Ok(t) => Arc::new(t),
                Err(e) => {
                    errors.push(format!("{}: {e}", f.name));
                    continue;
                }
            },
        };
        keep.insert(key, table);
    }
    let tables = UnwindTables::new(keep.values().cloned().collect());
    *cache = keep;
    (tables, errors)
}

/// The unwind tables of every object loaded now, built afresh (for tests;
/// the agent keeps its own in [`Shared::unwind`]).
#[cfg(test)]
pub fn unwind_tables_now() -> UnwindTables {
    build_tables(&mut HashMap::new()).0
}

static SHARED: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());
static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Slots in the sample buffer: a second of samples at 1000 Hz on 4 busy
/// threads, drained every 20 ms.
pub const RING_SLOTS: usize = 4096;
/// Slots of the heap ring (~1 KiB each). The sampler drains it every
/// 10 ms: 1,024 slots hold 100,000 samples a second, ~50 GB/s of
/// allocation at the default mean of 512 KiB.
pub const HEAP_RING_SLOTS: usize = 1024;
/// Slots of the lock ring (a sample per mean wait between samples, so
/// few; a burst beyond it is dropped and counted).
pub const LOCK_RING_SLOTS: usize = 256;
/// Slots of the wall ring: one answer per thread that ran since the last
/// wall sample, drained every 10 ms.
pub const WALL_RING_SLOTS: usize = 1024;
/// Slots of the site ring: one stack per `task_stack_every` operations,
/// drained every 10 ms.
pub const SITE_RING_SLOTS: usize = 512;

/// The process-wide shared state, created (and the handler installed) on
/// first use.
pub fn shared() -> Result<&'static Shared, std::io::Error> {
    if let Some(shared) = installed() {
        return Ok(shared);
    }
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = installed() {
        return Ok(shared);
    }
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        ring: Ring::new(RING_SLOTS),
        heap: Ring::new(HEAP_RING_SLOTS),
        locks: Ring::new(LOCK_RING_SLOTS),
        wall: Ring::new(WALL_RING_SLOTS),
        sites: Ring::new(SITE_RING_SLOTS),
        regions: Regions::new(),
        active: AtomicBool::new(false),
        max_depth: AtomicUsize::new(MAX_DEPTH),
        leaf_only: AtomicU64::new(0),
        ignored: AtomicU64::new(0),
        perf_period: AtomicU64::new(0),
        jitter: AtomicU64::new(0),
        timer_period: AtomicU64::new(0),
        timer_kind: AtomicU8::new(0),
        itimer_next: AtomicU64::new(0),
        unwind: Published::new(),
        writer: std::sync::Mutex::new(Writer {
            token: WriteToken::new(),
            modules: HashMap::new(),
            generation: None,
            unwind_errors: Vec::new(),
        }),
    }));
    // Installed before it is published: a process whose handler could
    // not be installed has no shared state, so nothing ever signals it.
    install_handler()?;
    SHARED.store(shared as *const Shared as *mut Shared, Ordering::Release);
    Ok(shared)
}

/// The signal all engines deliver.
pub const SIGNAL: libc::c_int = libc::SIGPROF;
/// The signal that asks one thread for its stack (wall-clock samples,
/// thread dumps). Not [`SIGNAL`]: a standard signal is pending at most
/// once, so a request pending when a perf overflow or a one-shot timer
/// fires would swallow it, and that thread's CPU sampling would stop
/// (its event is re-armed by the handler). Each handler blocks the
/// other's signal, so they never nest, and neither can be lost to the
/// other. A wall request and a dump pending at once are merged by the
/// kernel; the handler answers both.
pub const ASK_SIGNAL: libc::c_int = libc::SIGVTALRM;

/// Whether [`ASK_SIGNAL`] is the agent's (false: the host handles
/// SIGVTALRM itself, and nothing is asked of threads).
pub static ASK_OK: AtomicBool = AtomicBool::new(false);

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
    // The host's own SIGVTALRM handler (ITIMER_VIRTUAL) is left alone:
    // wall-clock samples and thread dumps are then off.
    // SAFETY: reads the current disposition into a zeroed sigaction.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above; a null new action only reads.
    unsafe { libc::sigaction(ASK_SIGNAL, std::ptr::null(), &mut old) };
    let host_owns = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
    ASK_OK.store(!host_owns, Ordering::Relaxed);
    for (sig, other) in [(SIGNAL, ASK_SIGNAL), (ASK_SIGNAL, SIGNAL)] {
        if sig == ASK_SIGNAL && host_owns {
            continue;
        }
        // SAFETY: sa_mask is a valid sigset_t inside `sa`.
        unsafe {
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaddset(&mut sa.sa_mask, other);
        }
        // SAFETY: `sa` is fully initialised; the handler is an `extern
        // "C"` function with the SA_SIGINFO signature and lives forever.
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Re-reads `/proc/self/maps` into the table of stack mappings and, if
/// objects were loaded since, the unwind tables (the sampler does this as
/// threads appear; the thread dump before it signals every thread).
pub fn refresh_tables(shared: &Shared) -> UnwindStatus {
    let mut w = shared.writer.lock().unwrap_or_else(|e| e.into_inner());
    w.refresh_regions(shared);
    w.refresh_unwind(shared)
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

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; reading and restoring it is what
    // keeps the interrupted code's errno intact.
    let saved_errno = unsafe { *libc::__errno_location() };
    if let Some(shared) = installed() {
        // SAFETY: the kernel passes a valid siginfo and ucontext to an
        // SA_SIGINFO handler.
        unsafe { handle(shared, sig, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// # Safety
/// `info` and `ctx` must be the pointers the kernel passed to the handler.
unsafe fn handle(
    shared: &Shared,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // SAFETY: `info` is valid per the contract.
    let code = unsafe { (*info).si_code };
    if sig == ASK_SIGNAL && code != wall::SI_QUEUE && code != SI_TKILL {
        // Not a request of ours (an ITIMER_VIRTUAL of the host's): no
        // CPU sample, and nothing to re-arm.
        return;
    }
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
        // A new period at every overflow, as wide as the timers' (±12.5%
        // every fourth overflow still kept a phase with 10 ms rounds).
        if base >= 8 {
            let period: u64 = base / 2 + mix(draw) % base;
            // SAFETY: PERF_EVENT_IOC_PERIOD reads one u64 through the
            // pointer, which points to a live local.
            unsafe { libc::ioctl(fd, engine::PERF_EVENT_IOC_PERIOD, &period as *const u64) };
        }
        // SAFETY: ioctl on an fd is async-signal-safe; a stale fd fails harmlessly.
        unsafe { libc::ioctl(fd, engine::PERF_EVENT_IOC_REFRESH, 1) };
    }
    let weight = if code == SI_TIMER || code == SI_KERNEL {
        // SAFETY: `info` is the kernel's siginfo, per the contract.
        unsafe { rearm_timer(shared, info, code) }
    } else {
        1
    };
    if code == wall::SI_QUEUE {
        // SAFETY: `info` is the kernel's siginfo with SI_QUEUE.
        if unsafe { wall::is_request(info) }
            && shared.active.load(Ordering::Relaxed)
            && !FORKED.load(Ordering::Relaxed)
        {
            // SAFETY: `ctx` is the ucontext_t of the interrupted thread.
            let (ip, fp, sp) = unsafe { registers(ctx) };
            wall::answer(shared, ip, fp, sp);
            // A dump request sent while this one was pending was merged
            // into it (a standard signal is pending once): answer it too.
            answer_dump(shared, ip, fp, sp);
        }
        return;
    }
    if code == SI_TKILL {
        if !FORKED.load(Ordering::Relaxed) {
            // SAFETY: `ctx` is the ucontext_t of the interrupted thread.
            let (ip, fp, sp) = unsafe { registers(ctx) };
            answer_dump(shared, ip, fp, sp);
            // Likewise a wall request merged into this one (an answer no
            // one asked for is ignored by the sampler).
            if sig == ASK_SIGNAL && shared.active.load(Ordering::Relaxed) {
                wall::answer(shared, ip, fp, sp);
            }
        }
        return;
    }
    if !shared.active.load(Ordering::Relaxed) || FORKED.load(Ordering::Relaxed) {
        shared.ignored.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if weight == 0 {
        return;
    }
    // SAFETY: `ctx` is the ucontext_t of the interrupted thread.
    let (ip, fp, sp) = unsafe { registers(ctx) };
    record(shared, gettid(), ip, fp, sp, weight);
}

/// `si_code` of a signal from a POSIX timer.
const SI_TIMER: libc::c_int = -2;
/// `si_code` of a signal the kernel sent itself (`setitimer` expiries).
const SI_KERNEL: libc::c_int = 0x80;

/// A well-mixed 64-bit value from a counter (splitmix64's finaliser).
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The next interval of a timer engine: uniform in [period/2, 3·period/2).
pub fn next_interval(shared: &Shared) -> u64 {
    let base = shared.timer_period.load(Ordering::Relaxed);
    base / 2 + mix(shared.jitter.fetch_add(1, Ordering::Relaxed)) % base.max(1)
}

/// Most schedule points one signal may stand for.
const MAX_WEIGHT: u32 = 1000;

/// Re-arms the timer that sent this signal and returns the sampling
/// periods the signal stands for.
///
/// The timer engines sample at the points of a random schedule in the
/// thread's (or process's) CPU time, each gap drawn by [`next_interval`]:
/// the mean gap is the period, so each point stands for one period of
/// CPU, and no workload can keep a phase with it. CPU timers are checked
/// at scheduler ticks, so a signal arrives some time `late` after its
/// point; the next point is set from the point, not from the signal
/// (`value = gap - late`), so lateness never accumulates, and every point
/// the signal arrived late for counts in its weight. `late` is read from
/// the timer itself: its repeating interval (the period) re-armed it
/// `1 + overrun` periods after the point, and `timer_gettime` says how
/// much of that is left. `timer_settime`, `timer_gettime`, `getitimer`
/// and `setitimer` are plain syscalls, safe in a handler.
///
/// # Safety
/// `info` must be the siginfo the kernel passed to the handler.
unsafe fn rearm_timer(shared: &Shared, info: *mut libc::siginfo_t, code: libc::c_int) -> u32 {
    let base = shared.timer_period.load(Ordering::Relaxed);
    let kind = shared.timer_kind.load(Ordering::Relaxed);
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if code == SI_TIMER {
        // SAFETY: for timer signals the kernel fills the _timer fields:
        // si_timerid (the kernel's timer id) 16 bytes in, si_overrun after it.
        let (timerid, overrun) = unsafe {
            (
                *((info as *const u8).add(16) as *const libc::c_int),
                *((info as *const u8).add(20) as *const libc::c_int),
            )
        };
        let overrun = overrun.clamp(0, MAX_WEIGHT as libc::c_int) as u64;
        if base < 2 || kind != TIMER_CTIMER {
            return 1 + overrun as u32;
        }
        let mut now = libc::itimerspec {
            it_interval: zero,
            it_value: zero,
        };
        // SAFETY: the kernel timer id and a pointer to a live itimerspec;
        // a stale id fails with EINVAL and writes nothing.
        let got = unsafe {
            libc::syscall(
                libc::SYS_timer_gettime,
                timerid,
                &mut now as *mut libc::itimerspec,
            )
        };
        let left = if got == 0 { ns_of(&now.it_value) } else { base };
        let late = ((1 + overrun) * base).saturating_sub(left);
        let (weight, value) = schedule(shared, late);
        let spec = libc::itimerspec {
            it_interval: engine::timespec(base),
            it_value: engine::timespec(value),
        };
        // SAFETY: as above, with a pointer to a live itimerspec.
        unsafe {
            libc::syscall(
                libc::SYS_timer_settime,
                timerid,
                0,
                &spec as *const libc::itimerspec,
                std::ptr::null_mut::<libc::itimerspec>(),
            )
        };
        weight
    } else if kind == TIMER_ITIMER && base >= 2 {
        // ITIMER_PROF re-arms once per expiry and reports no overrun, and
        // handlers on several threads may run at once: the schedule is kept
        // as the next point in the process's CPU time, moved forward with
        // a compare-and-swap so that each point is counted once.
        let mut ts = zero;
        // SAFETY: clock_gettime is async-signal-safe; `ts` is a live local.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
            return 1;
        }
        let now = ns_of(&ts);
        let (weight, next) = loop {
            let old = shared.itimer_next.load(Ordering::Acquire);
            let mut next = if old == 0 { now } else { old };
            let mut weight = 0u32;
            while next <= now && weight < MAX_WEIGHT {
                next += next_interval(shared);
                weight += 1;
            }
            if next <= now {
                next = now + next_interval(shared);
            }
            if shared
                .itimer_next
                .compare_exchange(old, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break (weight, next);
            }
        };
        let it = libc::itimerval {
            it_interval: engine::timeval(base),
            it_value: engine::timeval((next - now).max(1000)),
        };
        // SAFETY: valid itimerval; the old value is not requested.
        unsafe { libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()) };
        // 0: another thread's handler already counted these points.
        weight
    } else if code == SI_KERNEL && kind != TIMER_ITIMER {
        // A handler that read the period just before the engine stopped
        // re-armed the process timer after it was disarmed: disarm it.
        let off = libc::itimerval {
            it_interval: engine::timeval(0),
            it_value: engine::timeval(0),
        };
        // SAFETY: valid itimerval; the old value is not requested.
        unsafe { libc::setitimer(libc::ITIMER_PROF, &off, std::ptr::null_mut()) };
        1
    } else {
        1
    }
}

/// Given how `late` the signal is after its schedule point: how many
/// points it stands for, and how long until the next one.
fn schedule(shared: &Shared, mut late: u64) -> (u32, u64) {
    let mut weight = 1;
    let mut gap = next_interval(shared);
    while late >= gap && weight < MAX_WEIGHT {
        late -= gap;
        weight += 1;
        gap = next_interval(shared);
    }
    (weight, gap.saturating_sub(late).max(1))
}

fn ns_of(t: &libc::timespec) -> u64 {
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Walks and stores one sample. The whole signal path after the register
/// read, public so a test can run it under a counting allocator.
pub fn record(shared: &Shared, tid: u32, ip: u64, fp: u64, sp: u64, weight: u32) {
    push_walk(shared, &shared.ring, tid, (ip, fp, sp), |s| {
        s.weight = weight
    });
}

/// Writes into a slot of `ring` the walk from `(ip, fp, sp)` of thread
/// `tid`, after `fill` set the slot's other fields (every field a reader
/// of that ring looks at: slots are reused). False when the ring was full
/// (the sample is dropped and counted). What every recording path — the
/// CPU handler, the allocator, a contended lock, a wall request — does.
fn push_walk(
    shared: &Shared,
    ring: &Ring,
    tid: u32,
    (ip, fp, sp): (u64, u64, u64),
    fill: impl FnOnce(&mut RawSample),
) -> bool {
    let max = shared.max_depth.load(Ordering::Relaxed).clamp(1, MAX_DEPTH);
    ring.push(|s: &mut RawSample| {
        fill(s);
        s.tid = tid;
        // The running thread's own: every path records its own stack.
        s.task = crate::task::current_id();
        s.span = crate::task::current_span();
        let (n, truncated) = walk(shared, ip, fp, sp, max, &mut s.ips);
        s.depth = n as u16;
        s.truncated = truncated;
    })
}

/// [`push_walk`] of the calling thread from where it is now (outside a
/// signal handler: the allocator, a contended lock).
#[inline(always)]
fn push_here(shared: &Shared, ring: &Ring, fill: impl FnOnce(&mut RawSample)) -> bool {
    let (fp, sp) = current_frame();
    let ip = current_pc();
    push_walk(shared, ring, gettid(), (ip, fp, sp), fill)
}

/// Records the calling thread's stack as a site of task `task` (`kind`:
/// 0 for the task's start, else the I/O kind's id), when an agent is
/// installed and the ring has room (a full ring drops and counts it).
#[inline(never)]
pub fn record_site(task: u32, kind: u32) {
    if let Some(shared) = installed()
        && shared.active.load(Ordering::Relaxed)
    {
        push_here(shared, &shared.sites, |s| {
            s.kind = 0;
            s.weight = 1;
            s.size = u64::from(kind);
            s.addr = u64::from(task);
            s.rate = 0;
        });
    }
}

/// `CLOCK_MONOTONIC` now, ns.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec the call writes.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    ns_of(&t)
}

/// The calling thread's CPU time so far, ns (`CLOCK_THREAD_CPUTIME_ID`);
/// 0 if the clock cannot be read.
pub fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec the call writes.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    ns_of(&t)
}

/// The shared state, once an agent created it (the handler installed).
fn installed() -> Option<&'static Shared> {
    let p = SHARED.load(Ordering::Acquire);
    // SAFETY: a non-null SHARED points to a leaked Box, alive forever.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Walks from `(ip, fp, sp)` into `out` (leaf first), at most `max`
/// frames; returns the frames written and whether the walk was cut at
/// `max`. Reads only inside the mapping that holds `sp` (the thread's own
/// stack), from `sp` up; a thread whose stack is not mapped yet keeps the
/// leaf.
fn walk(
    shared: &Shared,
    ip: u64,
    fp: u64,
    sp: u64,
    max: usize,
    out: &mut [u64; MAX_DEPTH],
) -> (usize, bool) {
    let Some((_, hi)) = shared.regions.find(sp) else {
        out[0] = ip;
        shared.leaf_only.fetch_add(1, Ordering::Relaxed);
        return (1, false);
    };
    let read = |a: u64| -> Option<u64> {
        if a < sp || !a.is_multiple_of(8) || a.checked_add(8)? > hi {
            return None;
        }
        // SAFETY: [a, a + 8) lies between the interrupted thread's stack
        // pointer and the end of the mapping that holds it, which stays
        // mapped while this thread runs its handler.
        Some(unsafe { std::ptr::read_volatile(a as *const u64) })
    };
    shared
        .unwind
        .read(|tables| crate::unwind::walk(tables, Regs { ip, sp, fp }, max, out, read))
}
