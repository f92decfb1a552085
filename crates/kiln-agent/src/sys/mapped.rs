//! Read-only views of object files for the symbolizer: a file mapped into
//! memory whose pages can be handed back after each batch (so the DWARF
//! read for a window does not stay in the host's RSS), and the vDSO's
//! image, which has no file.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A whole file mapped read-only and private. Reading it touches pages of
/// the page cache, which count in the process's RSS until [`release`]
/// hands them back; the mapping itself costs only address space.
///
/// [`release`]: Mapped::release
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
    file: File,
}

// SAFETY: the mapping is read-only and owned; sharing `&[u8]` views of it
// across threads is as safe as sharing any immutable slice.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `path`. An empty file maps to an empty view.
    pub fn open(path: &str) -> io::Result<Mapped> {
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::other("file too large to map"))?;
        if len == 0 {
            return Ok(Mapped {
                ptr: std::ptr::null_mut(),
                len: 0,
                file,
            });
        }
        // SAFETY: a fresh private read-only mapping of an open file; the
        // result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Reads jump around (a unit here, its strings there): no
        // read-ahead and no fault-around, so a read maps only its page.
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(ptr, len, libc::MADV_RANDOM) };
        Ok(Mapped { ptr, len, file })
    }

    /// Whether the file still has the length it was mapped with. A file
    /// truncated in place would fault (SIGBUS) where the mapping reaches
    /// past its new end; callers check this before each batch of reads.
    pub fn intact(&self) -> bool {
        self.file
            .metadata()
            .is_ok_and(|m| m.len() == self.len as u64)
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }

    /// Drops the pages read so far from this process (they stay in the
    /// page cache): the next read faults them back in cheaply.
    pub fn release(&self) {
        if self.len > 0 {
            // SAFETY: advice on our own mapping; MADV_DONTNEED on a private
            // read-only file mapping only drops page-table entries.
            unsafe { libc::madvise(self.ptr, self.len, libc::MADV_DONTNEED) };
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping what `open` mapped, once.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

/// The vDSO's ELF image, as the kernel mapped it (it has no file). Its
/// section headers sit at the end of the image, so the image's length is
/// where they end.
pub fn vdso_image() -> Option<&'static [u8]> {
    // SAFETY: getauxval has no preconditions.
    let at = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if at == 0 {
        return None;
    }
    // SAFETY: the kernel maps the whole vDSO image readable at `at` for
    // the life of the process; the ELF header is its first 64 bytes.
    let header = unsafe { std::slice::from_raw_parts(at as *const u8, 64) };
    if &header[..4] != b"\x7fELF" || header[4] != 2 {
        return None;
    }
    let word = |o: usize, n: usize| {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&header[o..o + n]);
        u64::from_le_bytes(v) as usize
    };
    let (shoff, shentsize, shnum) = (word(0x28, 8), word(0x3a, 2), word(0x3c, 2));
    let len = shoff.checked_add(shentsize.checked_mul(shnum)?)?;
    if len == 0 || len > 1 << 20 {
        return None;
    }
    // SAFETY: as above: the image spans its section headers' end.
    Some(unsafe { std::slice::from_raw_parts(at as *const u8, len) })
}
