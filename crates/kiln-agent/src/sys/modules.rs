//! The loaded objects of this process (the executable, its shared
//! libraries, the vDSO) as the dynamic loader lists them
//! (`dl_iterate_phdr`), and a copy of each one's `.eh_frame`, found
//! through its `PT_GNU_EH_FRAME` header in memory: no file is opened, so
//! a deleted or replaced binary and the vDSO are covered alike. Called off
//! the signal path, by the one table writer.

use std::ffi::CStr;

/// One loaded object's unwind section, copied out of its mapping.
pub struct EhFrame {
    /// Path (the executable's is empty in the loader's list: named from
    /// `/proc/self/exe`), or `[vdso]`.
    pub name: String,
    /// Runtime address where the section starts.
    pub addr: u64,
    /// The section's bytes, up to the end of the segment that holds it.
    pub bytes: Vec<u8>,
    /// The loader's base address of the object.
    pub base: u64,
}

/// The loader's counters of objects loaded and unloaded so far: when they
/// have not moved, the set of objects has not changed.
pub fn generation() -> (u64, u64) {
    let mut out = (0u64, 0u64);
    each_object(|info| {
        out = (info.dlpi_adds, info.dlpi_subs);
        false
    });
    out
}

/// Calls `f` with each loaded object, under the loader's lock (so its
/// headers and segments stay mapped during the call), until `f` answers
/// false. `f` must not unwind.
fn each_object<F: FnMut(&libc::dl_phdr_info) -> bool>(mut f: F) {
    extern "C" fn call<F: FnMut(&libc::dl_phdr_info) -> bool>(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid dl_phdr_info; `data` is the
        // `&mut F` given below, alive for the whole iteration.
        let (info, f) = unsafe { (&*info, &mut *(data as *mut F)) };
        if f(info) { 0 } else { 1 }
    }
    // SAFETY: the trampoline matches the callback's C signature and gets
    // back the closure it was given; a non-zero answer stops the loader.
    unsafe { libc::dl_iterate_phdr(Some(call::<F>), &mut f as *mut F as *mut libc::c_void) };
}

/// Every loaded object that has an `.eh_frame_hdr`, with its `.eh_frame`.
pub fn eh_frames() -> Vec<EhFrame> {
    let mut out = Vec::new();
    each_object(|info| {
        // SAFETY: inside each_object the loader holds its lock.
        out.extend(unsafe { one(info) });
        true
    });
    out
}

/// One executable segment of a loaded object, as a pprof mapping wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeMapping {
    /// First runtime address.
    pub start: u64,
    /// One past the last.
    pub limit: u64,
    /// Offset in the file of `start`.
    pub file_offset: u64,
    /// Path of the object (`[vdso]` for the vDSO).
    pub file: String,
    /// GNU build id, lowercase hex; empty if the object has none.
    pub build_id: String,
    /// The object's load bias: runtime address minus ELF virtual address.
    pub base: u64,
    /// Where to read the object from: `/proc/self/exe` for the executable
    /// (the file it started from, even if replaced on disk since), the path
    /// for libraries, empty for the vDSO (read from memory).
    pub source: String,
}

/// The executable segments of every loaded object, sorted by address.
pub fn code_mappings() -> Vec<CodeMapping> {
    let mut out = Vec::new();
    each_object(|info| {
        // SAFETY: inside each_object the loader holds its lock.
        unsafe { code_of(info, &mut out) };
        true
    });
    out.sort_by_key(|m| m.start);
    out
}

/// # Safety
/// As [`one`].
unsafe fn code_of(info: &libc::dl_phdr_info, out: &mut Vec<CodeMapping>) {
    if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
        return;
    }
    // SAFETY: the loader gives dlpi_phnum headers at dlpi_phdr.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let base = info.dlpi_addr;
    // SAFETY: as the caller's contract.
    let name = unsafe { object_name(info) };
    // SAFETY: a non-null dlpi_name is a NUL-terminated string.
    let unnamed = info.dlpi_name.is_null() || unsafe { *info.dlpi_name } == 0;
    let source = if unnamed {
        "/proc/self/exe".to_string()
    } else if name == "[vdso]" {
        String::new()
    } else {
        name.clone()
    };
    let mut build_id = String::new();
    for p in phdrs.iter().filter(|p| p.p_type == libc::PT_NOTE) {
        // SAFETY: a PT_NOTE segment lies inside a loaded, readable segment.
        let notes = unsafe {
            std::slice::from_raw_parts(
                base.wrapping_add(p.p_vaddr) as *const u8,
                p.p_memsz as usize,
            )
        };
        if let Some(id) = gnu_build_id(notes) {
            build_id = id.iter().map(|b| format!("{b:02x}")).collect();
            break;
        }
    }
    const PAGE: u64 = 4096;
    for p in phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
    {
        let start = base.wrapping_add(p.p_vaddr);
        let delta = start % PAGE;
        out.push(CodeMapping {
            start: start - delta,
            limit: start + p.p_memsz,
            file_offset: p.p_offset.saturating_sub(delta),
            file: name.clone(),
            build_id: build_id.clone(),
            base,
            source: source.clone(),
        });
    }
}

/// The GNU build id in a run of ELF notes, if there is one.
fn gnu_build_id(notes: &[u8]) -> Option<&[u8]> {
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(notes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let align = |n: usize| n.div_ceil(4) * 4;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (namesz, descsz, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name = notes.get(at + 12..at + 12 + namesz)?;
        let desc_at = at + 12 + align(namesz);
        let desc = notes.get(desc_at..desc_at + descsz)?;
        // NT_GNU_BUILD_ID = 3, owner "GNU\0".
        if kind == 3 && name == b"GNU\0" {
            return Some(desc);
        }
        at = desc_at + align(descsz);
    }
    None
}

/// The object's path: the loader's name, the executable's from
/// `/proc/self/exe`, `[vdso]` for the vDSO.
///
/// # Safety
/// `info.dlpi_name` must be null or a NUL-terminated string.
unsafe fn object_name(info: &libc::dl_phdr_info) -> String {
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    match name.as_str() {
        "" => std::fs::read_link("/proc/self/exe")
            .map(|p| {
                let p = p.display().to_string();
                // A binary replaced on disk since it started.
                p.strip_suffix(" (deleted)")
                    .map_or(p.clone(), str::to_string)
            })
            .unwrap_or_default(),
        n if n.starts_with("linux-vdso") || n.starts_with("linux-gate") => "[vdso]".to_string(),
        _ => name,
    }
}

/// # Safety
/// `info` must describe an object that stays loaded for the call (the
/// loader's lock held, as inside `dl_iterate_phdr`).
unsafe fn one(info: &libc::dl_phdr_info) -> Option<EhFrame> {
    if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
        return None;
    }
    // SAFETY: the loader gives dlpi_phnum headers at dlpi_phdr.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let base = info.dlpi_addr;
    let hdr = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME)?;
    let hdr_addr = base.wrapping_add(hdr.p_vaddr);
    let hdr_len = hdr.p_memsz as usize;
    if hdr_addr == 0 || hdr_len < 4 {
        return None;
    }
    // SAFETY: PT_GNU_EH_FRAME lies inside a loaded, readable segment.
    let hdr_bytes = unsafe { std::slice::from_raw_parts(hdr_addr as *const u8, hdr_len) };
    let bases = gimli::BaseAddresses::default().set_eh_frame_hdr(hdr_addr);
    let parsed = gimli::EhFrameHdr::new(hdr_bytes, gimli::LittleEndian)
        .parse(&bases, std::mem::size_of::<usize>() as u8)
        .ok()?;
    let gimli::Pointer::Direct(eh_addr) = parsed.eh_frame_ptr() else {
        return None;
    };
    // The section runs to its zero terminator; bound it by the end of the
    // readable segment that holds it.
    let seg_end = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_R != 0)
        .map(|p| (base.wrapping_add(p.p_vaddr), p.p_memsz))
        .find(|&(start, len)| eh_addr >= start && eh_addr < start + len)
        .map(|(start, len)| start + len)?;
    let len = (seg_end - eh_addr) as usize;
    // SAFETY: [eh_addr, seg_end) is inside a loaded PT_LOAD segment with
    // read permission, mapped while the loader's lock is held.
    let segment = unsafe { std::slice::from_raw_parts(eh_addr as *const u8, len) };
    let bytes = segment[..section_len(segment)].to_vec();
    // SAFETY: as this function's contract.
    let name = unsafe { object_name(info) };
    Some(EhFrame {
        name,
        addr: eh_addr,
        bytes,
        base,
    })
}

/// Length of an `.eh_frame` section at the start of `bytes`: its entries
/// up to and with the zero terminator (or all of `bytes`).
fn section_len(bytes: &[u8]) -> usize {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let mut at = 0usize;
    while let Some(len) = word(at) {
        let next = match len {
            0 => return at + 4,
            0xffff_ffff => {
                let Some(lo) = word(at + 4) else { break };
                let Some(hi) = word(at + 8) else { break };
                let long = (u64::from(hi) << 32) | u64::from(lo);
                usize::try_from(long)
                    .ok()
                    .and_then(|l| (at + 12).checked_add(l))
            }
            l => (at + 4).checked_add(l as usize),
        };
        match next {
            Some(n) if n <= bytes.len() => at = n,
            _ => break,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn section_ends_at_its_terminator() {
        let mut s = Vec::new();
        s.extend_from_slice(&8u32.to_le_bytes());
        s.extend_from_slice(&[1; 8]);
        s.extend_from_slice(&0u32.to_le_bytes());
        s.extend_from_slice(&[9; 100]);
        assert_eq!(super::section_len(&s), 16);
        assert_eq!(super::section_len(&s[..10]), 10);
    }
}
