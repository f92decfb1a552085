//! Addresses to functions, files and lines (inlined frames included) with
//! `blazesym`, each address once: the cache lives as long as the agent.

use std::collections::HashMap;
use std::sync::Arc;

use blazesym::Pid;
use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

/// One frame of a symbolized address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Demangled function name.
    pub name: String,
    /// Source file, if known.
    pub file: String,
    /// Line, 0 if unknown.
    pub line: u32,
}

/// What an address resolved to: frames innermost first, or nothing.
pub type Frames = Arc<[Frame]>;

/// The symbolizer with its cache.
pub struct Symbols {
    symbolizer: Symbolizer,
    cache: HashMap<u64, Frames>,
    /// Addresses that could not be symbolized.
    pub unknown: u64,
    /// The newest error of the symbolizer as a whole.
    pub last_error: Option<String>,
}

impl Default for Symbols {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbols {
    /// An empty cache.
    pub fn new() -> Self {
        Symbols {
            symbolizer: Symbolizer::new(),
            cache: HashMap::new(),
            unknown: 0,
            last_error: None,
        }
    }

    /// Resolves every address of `addrs` not yet cached (in one batch).
    /// Addresses are lookup addresses: callers pass a return address
    /// minus one, so that it falls inside the call instruction.
    pub fn resolve(&mut self, addrs: &[u64]) {
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
        let src = Source::Process(Process::new(Pid::Slf));
        // Binaries built with `debug = "line-tables-only"` name functions
        // in DWARF without their path (`spin`, not `app::spin`); the ELF
        // symbol table has the full name of each physical function.
        let mut elf_only = Process::new(Pid::Slf);
        elf_only.debug_syms = false;
        let elf_names: Vec<Option<String>> = self
            .symbolizer
            .symbolize(&Source::Process(elf_only), Input::AbsAddr(&todo))
            .map(|r| {
                r.iter()
                    .map(|s| s.as_sym().map(|s| strip_hash(&s.name).to_string()))
                    .collect()
            })
            .unwrap_or_default();
        // One unreadable module fails a whole batch: then go address by
        // address, so it costs only its own frames.
        let results = match self.symbolizer.symbolize(&src, Input::AbsAddr(&todo)) {
            Ok(r) => r,
            Err(e) => {
                self.last_error = Some(e.to_string());
                todo.iter()
                    .map(|a| {
                        self.symbolizer
                            .symbolize_single(&src, Input::AbsAddr(*a))
                            .unwrap_or(Symbolized::Unknown(
                                blazesym::symbolize::Reason::IgnoredError,
                            ))
                    })
                    .collect()
            }
        };
        for (i, &addr) in todo.iter().enumerate() {
            let frames: Frames = match results.get(i) {
                Some(Symbolized::Sym(sym)) => {
                    let line_of = |ci: &Option<blazesym::symbolize::CodeInfo<'_>>| {
                        ci.as_ref().map_or((String::new(), 0), |c| {
                            let file = match &c.dir {
                                Some(d) => d.join(&c.file).to_string_lossy().into_owned(),
                                None => c.file.to_string_lossy().into_owned(),
                            };
                            (file, c.line.unwrap_or(0))
                        })
                    };
                    // blazesym lists the physical function first, then the
                    // inlined calls outermost to innermost, each with the
                    // line inside that function; pprof wants innermost first.
                    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
                    for f in sym.inlined.iter().rev() {
                        let (file, line) = line_of(&f.code_info);
                        frames.push(Frame {
                            name: qualify(&f.name, &file),
                            file,
                            line,
                        });
                    }
                    let (file, line) = line_of(&sym.code_info.as_deref().cloned());
                    let name = match elf_names.get(i) {
                        Some(Some(full)) if full.ends_with(&*sym.name) => full.clone(),
                        _ => qualify(strip_hash(&sym.name), &file),
                    };
                    frames.push(Frame { name, file, line });
                    frames.into()
                }
                other => {
                    if let Some(Symbolized::Unknown(reason)) = other {
                        tracing::debug!(target: "kiln_agent", "0x{addr:x}: {reason}");
                    }
                    self.unknown += 1;
                    Arc::from(Vec::new())
                }
            };
            self.cache.insert(addr, frames);
        }
    }

    /// The frames of a resolved address (empty if unknown or unresolved).
    pub fn get(&self, addr: u64) -> Frames {
        self.cache
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
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
        s.resolve(&[addr]);
        let frames = s.get(addr);
        assert!(
            !frames.is_empty(),
            "unknown={} err={:?}",
            s.unknown,
            s.last_error
        );
        assert_eq!(
            frames[0].name, "kiln_agent::symbolize::tests::marker",
            "{frames:?}"
        );
        assert!(
            frames[0].file.ends_with("symbolize.rs") && frames[0].line > 0,
            "{frames:?}"
        );
    }
}
