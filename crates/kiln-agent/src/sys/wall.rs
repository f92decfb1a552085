//! The wall-clock sampler's signal: the sampler thread asks one thread
//! for its stack with `rt_tgsigqueueinfo` (`si_code` `SI_QUEUE`, a tag in
//! `si_value`), and that thread's handler walks it into the wall ring,
//! as a CPU sample goes into the CPU ring. Nothing waits: the sampler
//! signals every thread that ran since its last sample, then folds the
//! answers at its next drain.

use std::sync::atomic::Ordering;

use super::ring::RawSample;
use super::{ASK_SIGNAL, Shared, gettid, push_walk};

/// `si_code` of a signal sent with `sigqueue`-like calls.
pub(super) const SI_QUEUE: libc::c_int = -1;
/// The `si_value` of a wall-clock request ("kilnwall").
const WALL_TAG: u64 = 0x6b69_6c6e_7761_6c6c;
/// Where `si_value` sits in a `siginfo_t` (after signo, errno, code and
/// padding, `si_pid` and `si_uid`), on 64-bit Linux.
const SI_VALUE_OFFSET: usize = 24;
/// Where `si_pid` and `si_uid` sit.
const SI_PID_OFFSET: usize = 16;
const SI_UID_OFFSET: usize = 20;

/// Asks thread `tid` of this process for its stack (answered into
/// [`Shared::wall`] by its handler). `ESRCH`: the thread exited.
pub fn request(tid: u32) -> std::io::Result<()> {
    if !super::ASK_OK.load(Ordering::Relaxed) {
        return Err(std::io::Error::other(
            "SIGVTALRM is the host's: threads are not asked for stacks",
        ));
    }
    // SAFETY: a zeroed siginfo_t is a valid value; the fields written
    // below lie inside it, at the offsets of the `_rt` layout.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let base = &mut info as *mut libc::siginfo_t as *mut u8;
    // SAFETY: every write is inside `info` and aligned for its type.
    unsafe {
        info.si_signo = ASK_SIGNAL;
        info.si_code = SI_QUEUE;
        *(base.add(SI_PID_OFFSET) as *mut libc::pid_t) = libc::getpid();
        *(base.add(SI_UID_OFFSET) as *mut libc::uid_t) = libc::getuid();
        *(base.add(SI_VALUE_OFFSET) as *mut u64) = WALL_TAG;
    }
    // SAFETY: rt_tgsigqueueinfo reads `info` and signals one thread of
    // this process; the handler installed for ASK_SIGNAL answers it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            tid as libc::pid_t,
            ASK_SIGNAL,
            &info as *const libc::siginfo_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether a signal is a wall-clock request.
///
/// # Safety
/// `info` must be the siginfo the kernel passed to the handler, whose
/// `si_code` is [`SI_QUEUE`].
pub(super) unsafe fn is_request(info: *const libc::siginfo_t) -> bool {
    // SAFETY: for SI_QUEUE the kernel fills the `_rt` fields, `si_value`
    // among them, inside the siginfo.
    unsafe { *((info as *const u8).add(SI_VALUE_OFFSET) as *const u64) == WALL_TAG }
}

/// The handler's answer: this thread's stack into the wall ring.
pub(super) fn answer(shared: &Shared, ip: u64, fp: u64, sp: u64) {
    push_walk(
        shared,
        &shared.wall,
        gettid(),
        (ip, fp, sp),
        |s: &mut RawSample| {
            s.kind = 0;
            s.weight = 1;
        },
    );
}

/// The process's soft limit on open descriptors.
pub fn fd_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `r`, a live local.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    ok.then_some(r.rlim_cur)
}
