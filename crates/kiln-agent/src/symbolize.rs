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
                            name: f.name.to_string(),
                            file,
                            line,
                        });
                    }
                    let (file, line) = line_of(&sym.code_info.as_deref().cloned());
                    let name = match elf_names.get(i) {
                        Some(Some(full)) if full.ends_with(&*sym.name) => full.clone(),
                        _ => strip_hash(&sym.name).to_string(),
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
