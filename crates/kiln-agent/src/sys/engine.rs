//! The three ways to get a SIGPROF per sampling period: a perf `cpu-clock`
//! event per thread, a POSIX CPU-time timer per thread, or the process-wide
//! `setitimer(ITIMER_PROF)`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::SIGNAL;

/// `_IO('$', 2)`: re-enable a perf event for N more overflows.
pub const PERF_EVENT_IOC_REFRESH: libc::c_ulong = 0x2402;
const PERF_EVENT_IOC_RESET: libc::c_ulong = 0x2403;
/// `_IOW('$', 4, u64)`: set the sampling period.
pub const PERF_EVENT_IOC_PERIOD: libc::c_ulong = 0x4008_2404;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const ATTR_DISABLED: u64 = 1 << 0;
const ATTR_EXCLUDE_KERNEL: u64 = 1 << 5;
const ATTR_EXCLUDE_HV: u64 = 1 << 6;
// fcntl commands and struct of <fcntl.h> that the libc crate does not
// export for glibc targets (values from the kernel's asm-generic/fcntl.h).
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// `struct perf_event_attr` as of `PERF_ATTR_SIZE_VER5` (112 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    ty: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 112);

/// A perf event counting one thread's CPU clock, signalling that thread.
pub struct PerfEvent(OwnedFd);

impl PerfEvent {
    /// Opens the event for thread `tid`, overflowing every `period_ns`.
    /// With `user_only`, kernel time is excluded (needed when
    /// `perf_event_paranoid` is 2 or more).
    pub fn open(tid: u32, period_ns: u64, user_only: bool) -> io::Result<Self> {
        let attr = PerfEventAttr {
            ty: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_CPU_CLOCK,
            sample_period: period_ns.max(1),
            flags: ATTR_DISABLED
                | if user_only {
                    ATTR_EXCLUDE_KERNEL | ATTR_EXCLUDE_HV
                } else {
                    0
                },
            wakeup_events: 1,
            ..PerfEventAttr::default()
        };
        // SAFETY: `attr` is a valid perf_event_attr of the size it declares;
        // the kernel only reads it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                tid as libc::pid_t,
                -1 as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let raw = fd.as_raw_fd();
        let owner = FOwnerEx {
            kind: F_OWNER_TID,
            pid: tid as libc::pid_t,
        };
        // SAFETY: plain fcntl/ioctl calls on an fd we own, with valid arguments.
        let ok = unsafe {
            let fl = libc::fcntl(raw, libc::F_GETFL);
            libc::fcntl(raw, libc::F_SETFL, fl | libc::O_ASYNC) == 0
                && libc::fcntl(raw, F_SETSIG, SIGNAL) == 0
                && libc::fcntl(raw, F_SETOWN_EX, &owner as *const FOwnerEx) == 0
                && libc::ioctl(raw, PERF_EVENT_IOC_RESET, 0) == 0
                && libc::ioctl(raw, PERF_EVENT_IOC_REFRESH, 1) == 0
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
        Ok(PerfEvent(fd))
    }
}

impl Drop for PerfEvent {
    fn drop(&mut self) {
        // SAFETY: ioctl on an fd we own; the OwnedFd closes it afterwards.
        unsafe { libc::ioctl(self.0.as_raw_fd(), PERF_EVENT_IOC_DISABLE, 0) };
    }
}

/// A POSIX timer on one thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID` of
/// that thread), signalling that thread (`SIGEV_THREAD_ID`).
pub struct ThreadTimer(libc::timer_t);

// SAFETY: a timer_t is a kernel handle usable from any thread.
unsafe impl Send for ThreadTimer {}

impl ThreadTimer {
    /// Creates and arms the timer for thread `tid`: first expiry after
    /// `first_ns` of the thread's CPU time, then every `period_ns` (the
    /// handler re-arms each expiry with a random interval).
    pub fn create(tid: u32, period_ns: u64, first_ns: u64) -> io::Result<Self> {
        // MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED): the clock of another
        // thread, as glibc's pthread_getcpuclockid builds it.
        let clock: libc::clockid_t = ((!(tid as libc::clockid_t)) << 3) | 6;
        // SAFETY: zeroed sigevent is valid; the fields we need are set next.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = SIGNAL;
        sev.sigev_notify_thread_id = tid as libc::c_int;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers to a sigevent and a timer_t out-parameter.
        if unsafe { libc::timer_create(clock, &mut sev, &mut timer) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let t = ThreadTimer(timer);
        let spec = libc::itimerspec {
            it_interval: timespec(period_ns),
            it_value: timespec(first_ns.max(1)),
        };
        // SAFETY: `timer` was just created; `spec` is a valid itimerspec.
        if unsafe { libc::timer_settime(t.0, 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(t)
    }
}

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        // SAFETY: the timer was created by us and is deleted once.
        unsafe { libc::timer_delete(self.0) };
    }
}

/// `ns` as a timespec.
pub fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// `ns` as a timeval (microseconds; at least 1 µs unless `ns` is 0, which
/// disarms).
pub fn timeval(ns: u64) -> libc::timeval {
    let us = if ns == 0 { 0 } else { (ns / 1000).max(1) };
    libc::timeval {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_usec: (us % 1_000_000) as libc::suseconds_t,
    }
}

/// Starts (or, with 0, stops) the process-wide profiling timer.
pub fn set_itimer(period_ns: u64) -> io::Result<()> {
    let it = libc::itimerval {
        it_interval: timeval(period_ns),
        it_value: timeval(period_ns),
    };
    // SAFETY: valid itimerval; the old value is not requested.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
