//! One loaded object as the symbolizer reads it: its file mapped (or the
//! vDSO's image), its function symbols, and its DWARF — in the object
//! itself or in a separate debug file found by build id under
//! `/usr/lib/debug/.build-id`. Between batches it holds only the
//! [`UnitIndex`] and the mappings, whose pages it hands back.

use object::read::elf::{ElfFile64, FileHeader, Sym};
use object::{Endianness, Object as _, ObjectSection as _};

use super::dwarf::{Batch, R, RawFrame, UnitIndex};
use crate::sys::mapped::{Mapped, vdso_image};

/// Where an object's bytes are.
enum Bytes {
    File(Mapped),
    Memory(&'static [u8]),
}

impl Bytes {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::File(m) => m.bytes(),
            Bytes::Memory(b) => b,
        }
    }

    fn release(&self) {
        if let Bytes::File(m) = self {
            m.release();
        }
    }

    fn intact(&self) -> bool {
        match self {
            Bytes::File(m) => m.intact(),
            Bytes::Memory(_) => true,
        }
    }
}

/// A loaded object, opened for symbolization.
pub struct Object {
    bytes: Bytes,
    /// The separate debug file, if the object's DWARF is there.
    debug: Option<Mapped>,
    /// The object itself carries DWARF.
    own_dwarf: bool,
    /// Which unit covers which address; `None` without DWARF.
    index: Option<UnitIndex>,
    /// Why the DWARF could not be read, if it could not.
    pub dwarf_error: Option<String>,
}

impl Object {
    /// Opens `source` (a path, or empty for the vDSO) with GNU build id
    /// `build_id` (hex, may be empty).
    pub fn open(source: &str, build_id: &str) -> std::io::Result<Object> {
        let bytes = if source.is_empty() {
            Bytes::Memory(vdso_image().ok_or_else(|| std::io::Error::other("no vDSO image"))?)
        } else {
            Bytes::File(Mapped::open(source)?)
        };
        ElfFile64::<Endianness>::parse(bytes.get())
            .map_err(|e| std::io::Error::other(format!("{source}: {e}")))?;
        let own_dwarf = has_dwarf(bytes.get());
        let mut obj = Object {
            bytes,
            debug: None,
            own_dwarf,
            index: None,
            dwarf_error: None,
        };
        if !own_dwarf && build_id.len() > 2 {
            let path = format!(
                "/usr/lib/debug/.build-id/{}/{}.debug",
                &build_id[..2],
                &build_id[2..]
            );
            obj.debug = Mapped::open(&path).ok().filter(|m| has_dwarf(m.bytes()));
        }
        let index = match obj.dwarf_bytes().map(load_dwarf) {
            Some(Ok(dwarf)) => {
                UnitIndex::build(&dwarf, || obj.release()).map_err(|e| e.to_string())
            }
            Some(Err(e)) => Err(e),
            None => Ok(UnitIndex::empty()),
        };
        match index {
            Ok(i) => obj.index = Some(i),
            Err(e) => obj.dwarf_error = Some(format!("{source}: {e}")),
        }
        obj.release();
        Ok(obj)
    }

    /// Bytes held between batches (the index; mapped pages are handed
    /// back).
    pub fn resident_bytes(&self) -> usize {
        self.index.as_ref().map_or(0, UnitIndex::bytes)
    }

    /// Whether the files are still what was mapped.
    pub fn intact(&self) -> bool {
        self.bytes.intact() && self.debug.as_ref().is_none_or(Mapped::intact)
    }

    fn dwarf_bytes(&self) -> Option<&[u8]> {
        match &self.debug {
            Some(d) => Some(d.bytes()),
            None if self.own_dwarf => Some(self.bytes.get()),
            None => None,
        }
    }

    /// For each of `addrs` (sorted ELF virtual addresses): the demangled
    /// name of the function symbol that contains it, and its frames from
    /// DWARF (innermost first; empty where DWARF has nothing).
    pub fn resolve(&self, addrs: &[u64]) -> (Vec<Option<String>>, Vec<Vec<RawFrame>>) {
        // A separate debug file has the full `.symtab` (a library's
        // internal functions, which `.dynsym` leaves out).
        let mut names = match &self.debug {
            Some(d) => symbol_names(d.bytes(), addrs),
            None => vec![None; addrs.len()],
        };
        if names.iter().any(Option::is_none) {
            for (n, own) in names.iter_mut().zip(symbol_names(self.bytes.get(), addrs)) {
                if n.is_none() {
                    *n = own;
                }
            }
        }
        let mut frames = vec![Vec::new(); addrs.len()];
        if let (Some(index), Some(Ok(dwarf))) = (&self.index, self.dwarf_bytes().map(load_dwarf)) {
            Batch::new(&dwarf, index).resolve(addrs, &mut frames, || self.release());
        }
        self.release();
        (names, frames)
    }

    /// Hands the pages read back to the kernel.
    fn release(&self) {
        self.bytes.release();
        if let Some(d) = &self.debug {
            d.release();
        }
    }
}

fn has_dwarf(bytes: &[u8]) -> bool {
    ElfFile64::<Endianness>::parse(bytes)
        .ok()
        .and_then(|f| f.section_by_name(".debug_info").map(|s| s.size() > 0))
        .unwrap_or(false)
}

/// The object's DWARF sections as slices of its bytes. Compressed
/// sections are refused: decompressing them would hold them in memory.
fn load_dwarf(bytes: &[u8]) -> Result<gimli::Dwarf<R<'_>>, String> {
    let file = ElfFile64::<Endianness>::parse(bytes).map_err(|e| e.to_string())?;
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    gimli::Dwarf::load(|id| -> Result<R<'_>, String> {
        let data = match file.section_by_name(id.name()) {
            Some(s) => {
                let c = s.compressed_file_range().map_err(|e| e.to_string())?;
                if c.format != object::CompressionFormat::None {
                    return Err(format!("{} is compressed", id.name()));
                }
                s.data().map_err(|e| e.to_string())?
            }
            None => &[],
        };
        Ok(gimli::EndianSlice::new(data, endian))
    })
}

/// For each of `addrs` (sorted), the demangled name of the sized function
/// symbol (`.symtab`, else `.dynsym`) containing it. One pass over the
/// symbols, nothing kept.
fn symbol_names(bytes: &[u8], addrs: &[u64]) -> Vec<Option<String>> {
    let mut best: Vec<Option<(u64, &[u8])>> = vec![None; addrs.len()];
    let Ok(file) = ElfFile64::<Endianness>::parse(bytes) else {
        return vec![None; addrs.len()];
    };
    let endian = file.endian();
    let sections = match file.elf_header().sections(endian, bytes) {
        Ok(s) => s,
        Err(_) => return vec![None; addrs.len()],
    };
    for kind in [object::elf::SHT_SYMTAB, object::elf::SHT_DYNSYM] {
        let Ok(table) = sections.symbols(endian, bytes, kind) else {
            continue;
        };
        for sym in table.symbols() {
            if sym.st_type() != object::elf::STT_FUNC && sym.st_type() != object::elf::STT_GNU_IFUNC
            {
                continue;
            }
            let (start, size) = (sym.st_value(endian), sym.st_size(endian));
            if size == 0 || start == 0 {
                continue;
            }
            let lo = addrs.partition_point(|&a| a < start);
            let hi = addrs.partition_point(|&a| a < start.saturating_add(size));
            if lo == hi {
                continue;
            }
            let Ok(name) = table.symbol_name(endian, sym) else {
                continue;
            };
            for b in &mut best[lo..hi] {
                // The smallest symbol containing the address wins (an
                // alias of the same size keeps the first seen).
                if b.is_none_or(|(s, _)| size < s) {
                    *b = Some((size, name));
                }
            }
        }
        if best.iter().all(Option::is_some) {
            break;
        }
    }
    best.into_iter()
        .map(|b| b.map(|(_, n)| super::demangle(&String::from_utf8_lossy(n))))
        .collect()
}
