//! Registers: the interrupted context's instruction, frame and stack
//! pointers (for the signal handler), and the calling thread's own (for
//! walks taken outside a signal: allocation samples, tests).

/// Instruction pointer, frame pointer and stack pointer of the interrupted
/// context.
///
/// # Safety
/// `ctx` must point to the `ucontext_t` the kernel passed to the handler.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn registers(ctx: *mut libc::c_void) -> (u64, u64, u64) {
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
pub(super) unsafe fn registers(ctx: *mut libc::c_void) -> (u64, u64, u64) {
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

/// The address of the instruction reading it: a walk from here with the
/// frame and stack pointers read beside it follows this function's own
/// CFI rows.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn current_pc() -> u64 {
    let pc: u64;
    // SAFETY: computes an address into a local; no memory is touched.
    unsafe {
        std::arch::asm!("lea {}, [rip]", out(reg) pc, options(nomem, nostack, preserves_flags))
    };
    pc
}

/// See the x86_64 version.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub fn current_pc() -> u64 {
    let pc: u64;
    // SAFETY: computes an address into a local; no memory is touched.
    unsafe { std::arch::asm!("adr {}, .", out(reg) pc, options(nomem, nostack, preserves_flags)) };
    pc
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
