//! The stack walk and the CFI tables it reads. Each loaded object's
//! `.eh_frame` is evaluated once, outside any signal handler, into a
//! compact sorted table of rows ("from this address on, the caller's frame
//! starts at SP or FP plus N, and the caller's FP is saved at CFA plus M, or
//! unchanged"); the walk binary-searches it for every frame. Frames in code
//! that keeps no frame pointers — libc's `memcpy`, a syscall wrapper, the
//! vDSO, C built with `-fomit-frame-pointer`, a function's own prologue —
//! unwind by these rules, so their callers are kept; where no rule covers
//! an address (JIT code, a gap), the walk follows frame pointers.
//!
//! Nothing here reads memory: [`walk`] takes a `read` closure, which the
//! signal handler backs with reads bounded by the interrupted thread's
//! stack, and tests back with fake stacks. Only x86_64 has CFI rules for
//! now; elsewhere the tables are empty and the walk is frame pointers alone.

/// Where a frame's code address came from, and so how to look it up.
///
/// The trap: a caller's frame holds a *return* address, the instruction
/// after the call, which may already belong to the next line, the next
/// inlined function, or (after a `noreturn` call) the next function
/// altogether. Looking up one byte earlier lands inside the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameAddress {
    /// The interrupted instruction (the leaf): looked up as it is.
    Ip(u64),
    /// A return address (every caller): looked up one byte earlier.
    Return(u64),
}

impl FrameAddress {
    /// The frame at position `depth` of a walk (0 is the leaf).
    pub fn at(depth: usize, addr: u64) -> Self {
        if depth == 0 {
            FrameAddress::Ip(addr)
        } else {
            FrameAddress::Return(addr)
        }
    }

    /// The address to look up in symbol and unwind tables.
    pub fn lookup(self) -> u64 {
        match self {
            FrameAddress::Ip(a) => a,
            FrameAddress::Return(a) => a.saturating_sub(1),
        }
    }
}

/// Registers the walk starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    /// Instruction pointer.
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Frame pointer (`rbp`, `x29`).
    pub fp: u64,
}

/// How one row finds the caller's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The canonical frame address is a register plus an offset; the
    /// return address sits just below it.
    Cfa {
        /// CFA = FP + offset when set, else SP + offset.
        from_fp: bool,
        /// Added to the register.
        offset: i32,
        /// The caller's FP is saved at CFA + this; `None`: unchanged.
        fp_at: Option<i16>,
    },
    /// No CFI here: follow the frame-pointer chain.
    FramePointers,
    /// The outermost frame: the walk ends here.
    End,
    /// A PLT stub (16-byte entries that push once): CFA = SP + 8, plus 8
    /// once the address within its entry reaches `pushed_at`.
    Plt {
        /// Offset within an entry from which the stub has pushed.
        pushed_at: u8,
    },
}

const KIND_SP: u8 = 0;
const KIND_FP: u8 = 1;
const KIND_NONE: u8 = 2;
/// The return address is undefined: the outermost frame (`_start`, a
/// thread's start routine).
const KIND_END: u8 = 3;
/// A PLT stub: CFA = SP + 8, plus 8 from byte `cfa_off` of each 16-byte
/// entry on (after its `push`), the one DWARF expression linkers emit.
const KIND_PLT: u8 = 4;

/// One row, 12 bytes: from `pc` (relative to the module's first address)
/// up to the next row's `pc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    pc: u32,
    cfa_off: i32,
    /// 0: the caller's FP is unchanged (no saved FP is ever at CFA + 0,
    /// where the caller's own frame begins).
    fp_off: i16,
    kind: u8,
}

impl Row {
    fn rule(&self) -> Rule {
        match self.kind {
            KIND_SP | KIND_FP => Rule::Cfa {
                from_fp: self.kind == KIND_FP,
                offset: self.cfa_off,
                fp_at: (self.fp_off != 0).then_some(self.fp_off),
            },
            KIND_END => Rule::End,
            KIND_PLT => Rule::Plt {
                pushed_at: self.cfa_off as u8,
            },
            _ => Rule::FramePointers,
        }
    }

    fn same_rule(&self, other: &Row) -> bool {
        (self.kind, self.cfa_off, self.fp_off) == (other.kind, other.cfa_off, other.fp_off)
    }
}

/// The rows of one loaded object.
#[derive(Debug)]
pub struct ModuleTable {
    /// Path of the object (or `[vdso]`), for debugging and tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub name: String,
    start: u64,
    end: u64,
    rows: Box<[Row]>,
    /// FDEs whose rules the walk cannot follow (DWARF expressions,
    /// return address elsewhere than just below the CFA); their ranges
    /// fall back to frame pointers.
    pub unsupported: u64,
}

impl ModuleTable {
    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Bytes of memory the rows take.
    pub fn bytes(&self) -> usize {
        self.rows.len() * std::mem::size_of::<Row>()
    }

    /// The first and one-past-last address covered.
    #[cfg(test)]
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    fn find(&self, pc: u64) -> Option<Rule> {
        if pc < self.start || pc >= self.end {
            return None;
        }
        let rel = (pc - self.start) as u32;
        let i = self.rows.partition_point(|r| r.pc <= rel);
        (i > 0).then(|| self.rows[i - 1].rule())
    }
}

/// Every loaded object's rows, sorted by address. Immutable once built:
/// a new set of objects is a new `UnwindTables`.
#[derive(Debug, Default)]
pub struct UnwindTables {
    modules: Vec<std::sync::Arc<ModuleTable>>,
}

impl UnwindTables {
    /// Tables over `modules` (any order; overlapping ones are dropped).
    pub fn new(mut modules: Vec<std::sync::Arc<ModuleTable>>) -> Self {
        modules.sort_by_key(|m| m.start);
        let mut out: Vec<std::sync::Arc<ModuleTable>> = Vec::with_capacity(modules.len());
        for m in modules {
            if out.last().is_none_or(|l| l.end <= m.start) {
                out.push(m);
            }
        }
        UnwindTables { modules: out }
    }

    /// The modules, by address.
    pub fn modules(&self) -> &[std::sync::Arc<ModuleTable>] {
        &self.modules
    }

    /// The rule for code address `pc` (already a lookup address), if any
    /// module covers it. Async-signal-safe: two binary searches.
    pub fn find(&self, pc: u64) -> Option<Rule> {
        let i = self.modules.partition_point(|m| m.start <= pc);
        if i == 0 {
            return None;
        }
        self.modules[i - 1].find(pc)
    }
}

/// Walks from `regs` into `out` (leaf first), at most `max` frames (and
/// `out.len()`); returns the frames written and whether the walk was cut
/// at `max`. `read(addr)` returns the aligned word at `addr`, or `None`
/// when `addr` is not on the interrupted thread's stack; it is the only
/// way the walk touches memory. Every step moves the stack pointer up, so
/// the walk ends on any input: a cycle, a garbage pointer, a frame off the
/// stack.
pub fn walk(
    tables: Option<&UnwindTables>,
    regs: Regs,
    max: usize,
    out: &mut [u64],
    mut read: impl FnMut(u64) -> Option<u64>,
) -> (usize, bool) {
    let max = max.min(out.len());
    if max == 0 {
        return (0, false);
    }
    out[0] = regs.ip;
    let mut n = 1;
    let mut r = regs;
    while n < max {
        let pc = FrameAddress::at(n - 1, r.ip).lookup();
        let rule = tables
            .and_then(|t| t.find(pc))
            .unwrap_or(Rule::FramePointers);
        let (cfa, ra, fp) = match rule {
            Rule::Cfa {
                from_fp,
                offset,
                fp_at,
            } => {
                let base = if from_fp { r.fp } else { r.sp };
                let Some(cfa) = base.checked_add_signed(i64::from(offset)) else {
                    break;
                };
                if cfa <= r.sp {
                    break;
                }
                let Some(ra) = read(cfa - 8) else { break };
                let fp = match fp_at.and_then(|off| cfa.checked_add_signed(i64::from(off))) {
                    // Compilers emit no rule for the `pop rbp` of an
                    // epilogue: a slot below SP was popped already, and
                    // the register holds the caller's value again.
                    Some(at) if at < r.sp => r.fp,
                    Some(at) => match read(at) {
                        Some(fp) => fp,
                        None => break,
                    },
                    None => r.fp,
                };
                (cfa, ra, fp)
            }
            Rule::End => break,
            Rule::Plt { pushed_at } => {
                let pushed = if pc & 15 >= u64::from(pushed_at) {
                    8
                } else {
                    0
                };
                let cfa = r.sp + 8 + pushed;
                let Some(ra) = read(cfa - 8) else { break };
                (cfa, ra, r.fp)
            }
            Rule::FramePointers => {
                if r.fp < r.sp {
                    break;
                }
                let (Some(next), Some(ra)) = (read(r.fp), r.fp.checked_add(8).and_then(&mut read))
                else {
                    break;
                };
                (r.fp + 16, ra, next)
            }
        };
        if ra == 0 {
            break;
        }
        out[n] = ra;
        n += 1;
        r = Regs {
            ip: ra,
            sp: cfa,
            fp,
        };
    }
    (n, n == max)
}

/// Why a module's CFI could not be turned into rows.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The section does not parse.
    #[error("{0}")]
    Parse(#[from] gimli::Error),
    /// The module spans more than 4 GiB of code.
    #[error("code spans more than 4 GiB")]
    TooLarge,
}

/// Evaluates the `.eh_frame` section `eh_frame`, loaded at runtime address
/// `eh_frame_addr`, into rows over runtime addresses. An FDE whose rules
/// do not parse is skipped (its range falls back to frame pointers).
pub fn build_module(
    name: &str,
    eh_frame: &[u8],
    eh_frame_addr: u64,
) -> Result<ModuleTable, TableError> {
    use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindContext, UnwindSection};
    let section = EhFrame::new(eh_frame, LittleEndian);
    let bases = BaseAddresses::default().set_eh_frame(eh_frame_addr);
    let mut ctx = Box::new(UnwindContext::new());
    // (address, is a real row, row with an absolute pc kept aside).
    let mut raw: Vec<(u64, bool, Row)> = Vec::new();
    let mut unsupported = 0u64;
    let mut entries = section.entries(&bases);
    // An entry that does not parse ends the section (trailing bytes with
    // no terminator): the rows built so far are kept.
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
            unsupported += 1;
            continue;
        };
        let (begin, end) = (fde.initial_address(), fde.end_address());
        if begin == 0 || end <= begin {
            continue;
        }
        let Ok(mut table) = fde.rows(&section, &bases, &mut ctx) else {
            unsupported += 1;
            continue;
        };
        let mut any_unsupported = false;
        let mut covered = end;
        loop {
            match table.next_row() {
                Ok(Some(row)) => {
                    let r = convert(row, eh_frame);
                    any_unsupported |= r.kind == KIND_NONE;
                    raw.push((row.start_address(), true, r));
                    covered = row.end_address();
                }
                Ok(None) => {
                    covered = end;
                    break;
                }
                // The rest of the FDE falls back to frame pointers.
                Err(_) => {
                    any_unsupported = true;
                    break;
                }
            }
        }
        unsupported += u64::from(any_unsupported);
        raw.push((
            covered.min(end),
            false,
            Row {
                pc: 0,
                cfa_off: 0,
                fp_off: 0,
                kind: KIND_NONE,
            },
        ));
    }
    // A real row wins over another FDE's end marker at the same address.
    raw.sort_by_key(|&(pc, real, _)| (pc, real));
    let Some(start) = raw.first().map(|r| r.0) else {
        return Ok(ModuleTable {
            name: name.to_string(),
            start: 0,
            end: 0,
            rows: Box::new([]),
            unsupported,
        });
    };
    let end = raw.last().map_or(start, |r| r.0);
    if end - start > u64::from(u32::MAX) {
        return Err(TableError::TooLarge);
    }
    let mut rows: Vec<Row> = Vec::with_capacity(raw.len() / 2);
    let mut i = 0;
    while i < raw.len() {
        // The last entry at one address is the one in force.
        let mut j = i;
        while j + 1 < raw.len() && raw[j + 1].0 == raw[i].0 {
            j += 1;
        }
        let mut row = raw[j].2;
        row.pc = (raw[j].0 - start) as u32;
        if rows.last().is_none_or(|l| !l.same_rule(&row)) {
            rows.push(row);
        }
        i = j + 1;
    }
    rows.shrink_to_fit();
    Ok(ModuleTable {
        name: name.to_string(),
        start,
        end,
        rows: rows.into_boxed_slice(),
        unsupported,
    })
}

/// The CFA expression of x86_64 PLT entries, as GNU ld and lld write it:
/// `DW_OP_breg7 (rsp) 8; DW_OP_breg16 (rip) 0; DW_OP_lit15; DW_OP_and;
/// DW_OP_lit10|lit11; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus` —
/// CFA = RSP + 8, plus 8 once RIP & 15 reaches 10 or 11. Returns that
/// threshold.
fn plt_expression(b: &[u8]) -> Option<u8> {
    match b {
        [
            0x77,
            0x08,
            0x80,
            0x00,
            0x3f,
            0x1a,
            lit @ (0x3a | 0x3b),
            0x2a,
            0x33,
            0x24,
            0x22,
        ] => Some(lit - 0x30),
        _ => None,
    }
}

/// One CFI row in the form the walk follows, or `KIND_NONE`; `eh_frame`
/// is the section, where CFA expressions are read from.
fn convert<T: gimli::ReaderOffset, S: gimli::UnwindContextStorage<T>>(
    row: &gimli::UnwindTableRow<T, S>,
    eh_frame: &[u8],
) -> Row {
    let none = Row {
        pc: 0,
        cfa_off: 0,
        fp_off: 0,
        kind: KIND_NONE,
    };
    if !cfg!(target_arch = "x86_64") {
        return none;
    }
    use gimli::{CfaRule, RegisterRule, X86_64};
    let (kind, offset) = match *row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RSP => {
            (KIND_SP, offset)
        }
        CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RBP => {
            (KIND_FP, offset)
        }
        CfaRule::Expression(e) => {
            let at = e.offset.into_u64() as usize;
            let len = e.length.into_u64() as usize;
            return match eh_frame
                .get(at..at.saturating_add(len))
                .and_then(plt_expression)
            {
                Some(pushed_at) => Row {
                    cfa_off: i32::from(pushed_at),
                    kind: KIND_PLT,
                    ..none
                },
                None => none,
            };
        }
        _ => return none,
    };
    let Ok(cfa_off) = i32::try_from(offset) else {
        return none;
    };
    // The return address is pushed by `call`, just below the CFA.
    match row.register(X86_64::RA) {
        Some(RegisterRule::Offset(-8)) | None => {}
        Some(RegisterRule::Undefined) => {
            return Row {
                kind: KIND_END,
                ..none
            };
        }
        Some(_) => return none,
    }
    let fp_off = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => 0,
        Some(RegisterRule::Offset(o)) => match i16::try_from(o) {
            Ok(o) if o != 0 => o,
            _ => return none,
        },
        Some(_) => return none,
    };
    Row {
        pc: 0,
        cfa_off,
        fp_off,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn table(rows: &[(u64, Rule)], end: u64) -> UnwindTables {
        let start = rows[0].0;
        let mut out: Vec<Row> = rows
            .iter()
            .map(|&(pc, rule)| {
                let pc = (pc - start) as u32;
                match rule {
                    Rule::Cfa {
                        from_fp,
                        offset,
                        fp_at,
                    } => Row {
                        pc,
                        cfa_off: offset,
                        fp_off: fp_at.unwrap_or(0),
                        kind: if from_fp { KIND_FP } else { KIND_SP },
                    },
                    Rule::FramePointers => Row {
                        pc,
                        cfa_off: 0,
                        fp_off: 0,
                        kind: KIND_NONE,
                    },
                    Rule::End => Row {
                        pc,
                        cfa_off: 0,
                        fp_off: 0,
                        kind: KIND_END,
                    },
                    Rule::Plt { pushed_at } => Row {
                        pc,
                        cfa_off: i32::from(pushed_at),
                        fp_off: 0,
                        kind: KIND_PLT,
                    },
                }
            })
            .collect();
        out.push(Row {
            pc: (end - start) as u32,
            cfa_off: 0,
            fp_off: 0,
            kind: KIND_NONE,
        });
        UnwindTables::new(vec![Arc::new(ModuleTable {
            name: "test".into(),
            start,
            end,
            rows: out.into_boxed_slice(),
            unsupported: 0,
        })])
    }

    const LEAF: Rule = Rule::Cfa {
        from_fp: false,
        offset: 8,
        fp_at: None,
    };
    const FRAMED: Rule = Rule::Cfa {
        from_fp: true,
        offset: 16,
        fp_at: Some(-16),
    };

    #[test]
    fn frameless_leaf_keeps_its_caller() {
        // libc's memcpy at 0x1000 (no frame), called from 0x2000 (framed),
        // called from 0x3000 (framed), called from main at 0x4000.
        let t = table(
            &[(0x1000, LEAF), (0x2000, FRAMED), (0x3000, FRAMED)],
            0x4000,
        );
        let mut mem: HashMap<u64, u64> = HashMap::new();
        let sp = 0x7000;
        mem.insert(sp, 0x2010); // memcpy's return address, at its SP
        // Frame of 0x2000: rbp = 0x7010 → [saved rbp 0x7030, ret 0x3010]
        mem.insert(0x7010, 0x7030);
        mem.insert(0x7018, 0x3010);
        mem.insert(0x7030, 0x7050);
        mem.insert(0x7038, 0x4010);
        mem.insert(0x7050, 0);
        mem.insert(0x7058, 0);
        let mut out = [0u64; 16];
        let regs = Regs {
            ip: 0x1004,
            sp,
            fp: 0x7010,
        };
        let (n, cut) = walk(Some(&t), regs, 16, &mut out, |a| mem.get(&a).copied());
        assert_eq!(&out[..n], &[0x1004, 0x2010, 0x3010, 0x4010]);
        assert!(!cut);
        // The frame-pointer walk alone skips 0x2010: the bug this fixes.
        let (n, _) = walk(None, regs, 16, &mut out, |a| mem.get(&a).copied());
        assert_eq!(&out[..n], &[0x1004, 0x3010, 0x4010]);
    }

    #[test]
    fn epilogue_after_pop_rbp_keeps_the_callers() {
        // At the `ret` of a framed function: rbp already popped (it holds
        // the caller's frame again), the row still says "saved at CFA-16".
        let at_ret = Rule::Cfa {
            from_fp: false,
            offset: 8,
            fp_at: Some(-16),
        };
        let t = table(&[(0x1000, at_ret), (0x2000, FRAMED)], 0x3000);
        let mut mem: HashMap<u64, u64> = HashMap::new();
        mem.insert(0x7000, 0x2010); // the return address, at SP
        mem.insert(0x7030, 0x7050); // the caller's frame record
        mem.insert(0x7038, 0x4010);
        let mut out = [0u64; 8];
        let regs = Regs {
            ip: 0x1000,
            sp: 0x7000,
            fp: 0x7030,
        };
        let (n, _) = walk(Some(&t), regs, 8, &mut out, |a| mem.get(&a).copied());
        assert_eq!(&out[..n], &[0x1000, 0x2010, 0x4010]);
    }

    #[test]
    fn plt_stubs_keep_their_caller() {
        assert_eq!(
            plt_expression(&[
                0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22
            ]),
            Some(11)
        );
        assert_eq!(plt_expression(&[0x77, 0x08]), None);
        // PLT at 0x1000 (entries of 16 bytes), called from 0x2000 (framed).
        let t = table(
            &[(0x1000, Rule::Plt { pushed_at: 11 }), (0x2000, FRAMED)],
            0x3000,
        );
        let mut mem: HashMap<u64, u64> = HashMap::new();
        mem.insert(0x7000, 0x2010); // the return address
        mem.insert(0x7030, 0);
        mem.insert(0x7038, 0x4010);
        let mut out = [0u64; 8];
        // At the entry's jmp (nothing pushed) and after its push.
        for (ip, sp) in [(0x1020, 0x7000), (0x102b, 0x6ff8)] {
            let regs = Regs { ip, sp, fp: 0x7030 };
            let (n, _) = walk(Some(&t), regs, 8, &mut out, |a| mem.get(&a).copied());
            assert_eq!(&out[..n], &[ip, 0x2010, 0x4010], "at 0x{ip:x}");
        }
    }

    #[test]
    fn hostile_stacks_end() {
        // Cycles, pointers down the stack, garbage: the walk always ends
        // within the bound and never reads outside what `read` allows.
        let t = table(&[(0x1000, LEAF), (0x2000, FRAMED)], 0x3000);
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let lo = 0x10_0000u64;
            let words: Vec<u64> = (0..64)
                .map(|_| match next() % 4 {
                    0 => lo + (next() % 64) * 8,
                    1 => 0x1000 + next() % 0x2000,
                    2 => next(),
                    _ => 0,
                })
                .collect();
            let read = |a: u64| {
                (a >= lo && a < lo + 512 && a.is_multiple_of(8))
                    .then(|| words[((a - lo) / 8) as usize])
            };
            let mut out = [0u64; 128];
            let regs = Regs {
                ip: 0x1000 + next() % 0x2000,
                sp: lo + (next() % 32) * 8,
                fp: words[(next() % 64) as usize],
            };
            let (n, _) = walk(Some(&t), regs, 128, &mut out, read);
            assert!((1..=128).contains(&n));
        }
    }

    #[test]
    fn builds_rows_from_this_binary() {
        let tables = crate::sys::unwind_tables_now();
        let here = builds_rows_from_this_binary as *const () as u64;
        assert!(
            matches!(tables.find(here), Some(Rule::Cfa { .. })),
            "no CFI row for this test's own code: {:?}",
            tables
                .modules()
                .iter()
                .map(|m| (&m.name, m.range(), m.rows()))
                .collect::<Vec<_>>()
        );
        // libc is covered too: memcpy keeps no frame pointer.
        let memcpy = libc::memcpy as *const () as u64;
        assert!(tables.find(memcpy).is_some(), "no CFI row for memcpy");
        // Some object's PLT (libc's own has one) is read as a PLT rule.
        let plt: usize = tables
            .modules()
            .iter()
            .map(|m| m.rows.iter().filter(|r| r.kind == KIND_PLT).count())
            .sum();
        assert!(plt > 0, "no PLT rows in any loaded object");
    }
}
