//! Addresses to functions, files and lines, inlined frames included, by
//! Kiln's own symbolizer: ELF symbols for each physical function, DWARF
//! line programs and inlined-call entries read in place from the mapped
//! object ([`elf`], [`dwarf`]). Each address is resolved once for the
//! agent's life; the cache is capped at [`MAX_CACHED`] addresses, and
//! names and files are shared between addresses. Between batches the
//! symbolizer holds its cache and one [`dwarf::UnitIndex`] per object —
//! the pages of DWARF a batch read are handed back to the kernel.

mod dwarf;
mod elf;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::sys::CodeMapping;

/// Addresses kept resolved; past it the cache starts again (each address
/// costs about 100 bytes and its share of names).
pub const MAX_CACHED: usize = 1 << 15;

/// One frame of a symbolized address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Demangled function name, with its path.
    pub name: Arc<str>,
    /// Source file, if known.
    pub file: Arc<str>,
    /// Line, 0 if unknown.
    pub line: u32,
}

/// What an address resolved to: frames innermost first, or nothing.
pub type Frames = Arc<[Frame]>;

/// The symbolizer with its cache.
#[derive(Default)]
pub struct Symbols {
    cache: HashMap<u64, Frames>,
    strings: HashSet<Arc<str>>,
    /// Opened objects by (source, load bias); `None`: could not be opened.
    objects: HashMap<(String, u64), Option<elf::Object>>,
    /// Addresses that could not be symbolized.
    pub unknown: u64,
    /// The newest error of the symbolizer as a whole.
    pub last_error: Option<String>,
}

impl Symbols {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held between batches, roughly: the cache, the names and the
    /// objects' unit indexes.
    pub fn resident_bytes(&self) -> usize {
        let frames: usize = self.cache.values().map(|f| 16 + f.len() * 40).sum();
        let strings: usize = self.strings.iter().map(|s| 32 + s.len()).sum();
        let objects: usize = self
            .objects
            .values()
            .flatten()
            .map(elf::Object::resident_bytes)
            .sum();
        self.cache.capacity() * 24 + frames + strings + objects
    }

    /// Resolves every address of `addrs` not yet cached (in one batch),
    /// finding each in the `code` mappings (sorted by start). Addresses
    /// are lookup addresses: callers pass a return address minus one, so
    /// that it falls inside the call instruction.
    pub fn resolve(&mut self, addrs: &[u64], code: &[CodeMapping]) {
        let mut todo: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.cache.contains_key(a))
            .collect();
        todo.sort_unstable();
        todo.dedup();
        if todo.is_empty() {
            return;
        }
        if self.cache.len() + todo.len() > MAX_CACHED {
            self.cache.clear();
            self.strings.clear();
        }
        // Objects whose file changed under them are opened again.
        self.objects
            .retain(|_, o| o.as_ref().is_none_or(elf::Object::intact));
        let mut i = 0;
        while i < todo.len() {
            let addr = todo[i];
            let at = code.partition_point(|m| m.start <= addr);
            let Some(m) = at
                .checked_sub(1)
                .map(|k| &code[k])
                .filter(|m| addr < m.limit)
            else {
                self.unknown += 1;
                self.cache.insert(addr, Arc::from(Vec::new()));
                i += 1;
                continue;
            };
            // Every address of this object (its segments are adjacent).
            let mut j = i + 1;
            while j < todo.len() {
                let k = code.partition_point(|c| c.start <= todo[j]);
                match k.checked_sub(1).map(|k| &code[k]) {
                    Some(c) if todo[j] < c.limit && c.source == m.source && c.base == m.base => {
                        j += 1
                    }
                    _ => break,
                }
            }
            self.resolve_in(m, &todo[i..j]);
            i = j;
        }
    }

    fn resolve_in(&mut self, m: &CodeMapping, addrs: &[u64]) {
        let key = (m.source.clone(), m.base);
        let obj = self.objects.entry(key).or_insert_with(|| {
            match elf::Object::open(&m.source, &m.build_id) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::debug!(target: "kiln_agent", "symbols of {}: {e}", m.file);
                    None
                }
            }
        });
        let Some(obj) = obj.as_ref() else {
            self.last_error = Some(format!("cannot open {}", m.file));
            for &a in addrs {
                self.unknown += 1;
                self.cache.insert(a, Arc::from(Vec::new()));
            }
            return;
        };
        if let Some(e) = &obj.dwarf_error {
            self.last_error = Some(e.clone());
        }
        let svmas: Vec<u64> = addrs.iter().map(|a| a.wrapping_sub(m.base)).collect();
        let (names, raw) = obj.resolve(&svmas);
        let object = m.file.rsplit('/').next().unwrap_or_default().to_string();
        for (k, &addr) in addrs.iter().enumerate() {
            let mut frames = self.frames(names[k].as_deref(), &raw[k]);
            if frames.is_empty() {
                // Code no symbol covers (a library's internal functions
                // when it ships only `.dynsym`): name the place, stable
                // across processes, rather than an address.
                self.unknown += 1;
                frames = Arc::from(vec![Frame {
                    name: self.intern(&format!("{object}+0x{:x}", svmas[k])),
                    file: self.intern(""),
                    line: 0,
                }]);
            }
            self.cache.insert(addr, frames);
        }
    }

    /// The frames of one address from its symbol's name and its DWARF
    /// frames: names get their path (the symbol's full name for the
    /// physical function, the file's module for bare inlined names).
    fn frames(&mut self, symbol: Option<&str>, raw: &[dwarf::RawFrame]) -> Frames {
        let mut out = Vec::with_capacity(raw.len().max(1));
        let last = raw.len().saturating_sub(1);
        for (k, f) in raw.iter().enumerate() {
            let name = match (&f.name, symbol) {
                // The physical function: DWARF built with
                // `line-tables-only` names it bare (`spin`), the symbol
                // table in full (`app::spin`).
                (Some(n), Some(full))
                    if k == last && !f.qualified && full.ends_with(n.as_str()) =>
                {
                    full.to_string()
                }
                (Some(n), _) if f.qualified => n.clone(),
                (Some(n), _) => qualify(strip_hash(n), &f.file),
                (None, Some(full)) if k == last => full.to_string(),
                (None, _) => "??".to_string(),
            };
            out.push(Frame {
                name: self.intern(&name),
                file: self.intern(&f.file),
                line: f.line,
            });
        }
        if out.is_empty()
            && let Some(full) = symbol
        {
            out.push(Frame {
                name: self.intern(full),
                file: self.intern(""),
                line: 0,
            });
        }
        out.into()
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// The frames of a resolved address (empty if unknown or unresolved).
    pub fn get(&self, addr: u64) -> Frames {
        self.cache
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }
}

/// A symbol's name demangled without its hash (`_ZN3app4spin17h…E` →
/// `app::spin`); names that are not Rust's are kept as they are.
pub fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_string(),
    }
}

/// A bare function name (what DWARF built with `line-tables-only` gives
/// inlined functions: `lt`, `black_box<u64>`) prefixed with the module
/// its source file is: `…/library/core/src/cmp.rs` → `core::cmp::lt`,
/// `…/registry/src/…/gimli-0.34.0/src/read/cfi.rs` → `gimli::read::cfi::…`,
/// `…/crates/kiln-agent/src/unwind.rs` → `kiln_agent::unwind::…`. A name
/// that already has a path, or a file with no `src/` directory, is kept.
/// (A function in an inline `mod` or an `impl` gets its file's module: a
/// place a reader can find, if not the whole path.)
pub fn qualify(name: &str, file: &str) -> String {
    let generic = name.find('<').unwrap_or(name.len());
    if name.is_empty() || name[..generic].contains("::") || name.starts_with('<') {
        return name.to_string();
    }
    let Some((root, rel)) = file.rsplit_once("/src/") else {
        return name.to_string();
    };
    let krate = root.rsplit('/').next().unwrap_or_default();
    // `gimli-0.34.0` → `gimli`: the registry's directories carry versions.
    let krate = match krate.rsplit_once('-') {
        Some((head, v)) if v.starts_with(|c: char| c.is_ascii_digit()) => head,
        _ => krate,
    };
    if krate.is_empty()
        || !krate
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return name.to_string();
    }
    let mut path = krate.replace('-', "_");
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    for part in rel.split('/') {
        if matches!(part, "lib" | "main" | "mod") || part.is_empty() {
            continue;
        }
        if !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return name.to_string();
        }
        path.push_str("::");
        path.push_str(part);
    }
    format!("{path}::{name}")
}

/// `app::f::h0123456789abcdef` → `app::f`: the legacy mangling's hash
/// says nothing to a reader and splits one function across builds.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker() -> u64 {
        std::hint::black_box(7)
    }

    #[inline(always)]
    fn inlined_leaf(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(3)
    }

    #[inline(never)]
    fn calls_inlined() -> u64 {
        inlined_leaf(std::hint::black_box(5))
    }

    /// The address of the first call instruction inside `f`'s first
    /// `len` bytes that DWARF places in an inlined frame.
    fn inlined_address(s: &mut Symbols, f: u64, len: u64) -> Option<(u64, Frames)> {
        let code = crate::sys::code_mappings();
        let addrs: Vec<u64> = (f..f + len).collect();
        s.resolve(&addrs, &code);
        addrs
            .into_iter()
            .map(|a| (a, s.get(a)))
            .find(|(_, fr)| fr.len() >= 2)
    }

    #[test]
    fn inlined_calls_are_frames_innermost_first() {
        let mut s = Symbols::new();
        let f = calls_inlined as *const () as u64;
        assert_eq!(calls_inlined(), 15);
        let (_, frames) =
            inlined_address(&mut s, f, 64).expect("an inlined frame in calls_inlined");
        let names: Vec<&str> = frames.iter().map(|f| &*f.name).collect();
        let inner = names
            .iter()
            .position(|n| n.ends_with("inlined_leaf") || n.contains("black_box"))
            .unwrap_or_else(|| panic!("{names:?}"));
        let outer = names.len() - 1;
        assert!(inner < outer, "{names:?}");
        assert_eq!(
            names[outer], "kiln_agent::symbolize::tests::calls_inlined",
            "{frames:?}"
        );
        // The caller's line is where the inlined call sits in it.
        assert!(frames[outer].line > 0, "{frames:?}");
    }

    #[test]
    fn libc_and_the_vdso_are_named_from_their_symbols() {
        let code = crate::sys::code_mappings();
        let mut s = Symbols::new();
        let getpid = libc::getpid as *const () as u64;
        s.resolve(&[getpid], &code);
        let frames = s.get(getpid);
        assert!(
            frames.iter().any(|f| f.name.contains("getpid")),
            "{frames:?} {:?}",
            s.last_error
        );
        // Debian's libc ships only `.dynsym`: its internal functions (the
        // thread start, memcpy's variants) are named from the debug file
        // found by build id (libc6-dbg) when there is one, else by object
        // and offset.
        let libc_text = code
            .iter()
            .find(|m| m.file.contains("libc.so") && m.start <= getpid && getpid < m.limit)
            .expect("libc's text");
        let addrs: Vec<u64> = (libc_text.start..libc_text.limit).step_by(256).collect();
        s.resolve(&addrs, &code);
        let names: Vec<Arc<str>> = addrs.iter().map(|&a| s.get(a)[0].name.clone()).collect();
        let id = &libc_text.build_id;
        let debug_file = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
        if std::path::Path::new(&debug_file).exists() {
            assert!(
                names.iter().any(|n| n.starts_with("__memcpy_")),
                "{debug_file} names no memcpy variant"
            );
        } else {
            assert!(
                names.iter().any(|n| n.starts_with("libc.so.6+0x")),
                "no address of libc is outside its symbols"
            );
        }
        let vdso = code.iter().find(|m| m.file == "[vdso]").expect("a vDSO");
        let addrs: Vec<u64> = (vdso.start..vdso.limit).step_by(16).collect();
        s.resolve(&addrs, &code);
        let named: Vec<String> = addrs
            .iter()
            .flat_map(|&a| {
                s.get(a)
                    .iter()
                    .map(|f| f.name.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            named.iter().any(|n| n.contains("clock_gettime")),
            "{named:?}"
        );
    }

    #[test]
    fn addresses_outside_any_object_are_unknown_and_cached() {
        let code = crate::sys::code_mappings();
        let mut s = Symbols::new();
        s.resolve(&[8, 16], &code);
        assert!(s.get(8).is_empty() && s.get(16).is_empty());
        assert_eq!(s.unknown, 2);
        s.resolve(&[8], &code);
        assert_eq!(s.unknown, 2, "resolved once");
    }

    #[test]
    fn the_cache_is_capped() {
        let code = crate::sys::code_mappings();
        let mut s = Symbols::new();
        let f = marker as *const () as u64;
        let many: Vec<u64> = (1..=MAX_CACHED as u64).collect();
        s.resolve(&many, &code);
        assert_eq!(s.cache.len(), MAX_CACHED);
        s.resolve(&[f], &code);
        assert!(s.cache.len() <= MAX_CACHED, "{}", s.cache.len());
        assert_eq!(&*s.get(f)[0].name, "kiln_agent::symbolize::tests::marker");
    }

    /// A copy of this test binary with bytes of its debug sections
    /// scrambled, and one cut short: opening and resolving must neither
    /// panic nor hang, and whatever is resolved is still well-formed.
    #[test]
    fn hostile_objects_cost_their_own_frames_only() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Scramble one byte in 256 of each DWARF section, and nothing
        // else, so the object still opens and its DWARF is read.
        use object::{Object as _, ObjectSection as _};
        let file = object::File::parse(&*exe).unwrap();
        let mut scrambled = exe.clone();
        for name in [
            ".debug_info",
            ".debug_abbrev",
            ".debug_line",
            ".debug_aranges",
            ".debug_str",
            ".debug_ranges",
            ".debug_rnglists",
        ] {
            let Some((at, len)) = file.section_by_name(name).and_then(|s| s.file_range()) else {
                continue;
            };
            for _ in 0..len / 256 {
                let i = (at + next() % len) as usize;
                scrambled[i] = next() as u8;
            }
        }
        let cut = exe[..exe.len() / 2].to_vec();
        let f = marker as *const () as u64;
        let code = crate::sys::code_mappings();
        let me = code.iter().find(|m| m.start <= f && f < m.limit).unwrap();
        let addrs: Vec<u64> = (0..2000u64).map(|i| me.start - me.base + i * 97).collect();
        for (name, bytes) in [("scrambled", scrambled), ("cut", cut)] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let obj = match elf::Object::open(path.to_str().unwrap(), "") {
                Ok(o) => o,
                Err(e) if name == "cut" => {
                    eprintln!("cut: {e}");
                    continue;
                }
                Err(e) => panic!("{name}: {e}"),
            };
            let (names, frames) = obj.resolve(&addrs);
            assert_eq!((names.len(), frames.len()), (addrs.len(), addrs.len()));
        }
    }

    #[test]
    fn bare_names_get_their_file_s_module() {
        let cases = [
            ("lt", "/rustc/abc/library/core/src/cmp.rs", "core::cmp::lt"),
            (
                "black_box<u64>",
                "/rustc/abc/library/core/src/hint.rs",
                "core::hint::black_box<u64>",
            ),
            (
                "next<u8>",
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gimli-0.34.0/src/read/cfi.rs",
                "gimli::read::cfi::next<u8>",
            ),
            (
                "walk",
                "/work/main/crates/kiln-agent/src/unwind.rs",
                "kiln_agent::unwind::walk",
            ),
            (
                "from",
                "/rustc/abc/library/core/src/num/mod.rs",
                "core::num::from",
            ),
            ("main", "/x/app/src/main.rs", "app::main"),
            // Kept: already a path, no src/ directory, a trait impl.
            (
                "core::cmp::lt",
                "/rustc/abc/library/core/src/cmp.rs",
                "core::cmp::lt",
            ),
            ("spin", "/x/examples/spin.rs", "spin"),
            ("<T as Foo>::f", "/x/app/src/a.rs", "<T as Foo>::f"),
        ];
        for (name, file, want) in cases {
            assert_eq!(qualify(name, file), want, "{name} in {file}");
        }
    }

    #[test]
    fn resolves_own_functions_with_lines() {
        let mut s = Symbols::new();
        let addr = marker as *const () as u64;
        s.resolve(&[addr], &crate::sys::code_mappings());
        let frames = s.get(addr);
        assert!(
            !frames.is_empty(),
            "unknown={} err={:?}",
            s.unknown,
            s.last_error
        );
        assert_eq!(
            &*frames[0].name, "kiln_agent::symbolize::tests::marker",
            "{frames:?}"
        );
        assert!(
            frames[0].file.ends_with("symbolize/mod.rs") && frames[0].line > 0,
            "{frames:?}"
        );
    }
}
