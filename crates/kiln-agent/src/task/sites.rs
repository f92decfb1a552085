//! Call sites: a sampled stack of a task's start or of one of its I/O
//! calls, reduced to the key `module::function:line` of its innermost
//! frame in the service's own code. Own code is decided from each
//! frame's source path: frames of the standard library and toolchain
//! (`/rustc/…`, `library/std`, `.rustup`), of crates from a registry or
//! git (`.cargo/registry`, `.cargo/git`), of the agent itself, and frames
//! with no source file (libc, stripped code) are passed over. Runs on the
//! flush thread, after symbolization.

use std::collections::{BTreeMap, HashMap};

use crate::symbolize::Symbols;
use crate::sys::CodeMapping;
use crate::unwind::FrameAddress;
use crate::window::Window;

/// Whether a frame of function `name` in source file `file` is the
/// service's own code.
pub fn own_code(name: &str, file: &str) -> bool {
    if file.is_empty() || name.is_empty() {
        return false;
    }
    const NOT_OWN: [&str; 8] = [
        "/rustc/",
        "/.rustup/",
        "/library/std/",
        "/library/core/",
        "/library/alloc/",
        "/.cargo/registry/",
        "/.cargo/git/",
        "/cargo/registry/",
    ];
    if NOT_OWN.iter().any(|p| file.contains(p)) {
        return false;
    }
    let bare = name.trim_start_matches('<');
    !(bare.starts_with("kiln_agent::") || bare.starts_with("std::") || bare.starts_with("core::"))
}

/// `name` without closure and generic noise: `a::b::{{closure}}` → `a::b`.
fn site_function(name: &str) -> &str {
    let mut n = name;
    while let Some(s) = n.strip_suffix("::{{closure}}") {
        n = s;
    }
    n
}

/// The window's sampled stacks as site counts per task id (each an I/O
/// kind's call or a task's start); a stack with no frame of own code
/// counts under `"(no own frame)"`.
pub fn sites(
    w: &Window,
    symbols: &mut Symbols,
    code: &[CodeMapping],
) -> HashMap<u32, BTreeMap<String, u64>> {
    let mut out: HashMap<u32, BTreeMap<String, u64>> = HashMap::new();
    if w.sites.is_empty() {
        return out;
    }
    let mut addrs = Vec::new();
    for &(_, _, stack) in w.sites.keys() {
        for (i, &a) in w.stacks.get(stack).iter().enumerate() {
            addrs.push(FrameAddress::at(i, a).lookup());
        }
    }
    symbols.resolve(&addrs, code);
    let mut keys: HashMap<u32, String> = HashMap::new();
    for (&(task, _kind, stack), &n) in &w.sites {
        let key = keys.entry(stack).or_insert_with(|| {
            w.stacks
                .get(stack)
                .iter()
                .enumerate()
                .find_map(|(i, &a)| {
                    let frames = symbols.get(FrameAddress::at(i, a).lookup());
                    frames
                        .iter()
                        .find(|f| own_code(&f.name, &f.file))
                        .map(|f| format!("{}:{}", site_function(&f.name), f.line))
                })
                .unwrap_or_else(|| "(no own frame)".to_string())
        });
        *out.entry(task).or_default().entry(key.clone()).or_default() += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_code_by_source_path() {
        assert!(own_code("shop::board::open", "/src/shop/src/board.rs"));
        assert!(!own_code(
            "tokio::runtime::park",
            "/home/u/.cargo/registry/src/index.crates.io-1/tokio-1.0/src/park.rs"
        ));
        assert!(!own_code(
            "std::thread::spawn",
            "/rustc/abc/library/std/src/thread/mod.rs"
        ));
        assert!(!own_code(
            "kiln_agent::task::io",
            "/w/crates/kiln-agent/src/task/mod.rs"
        ));
        assert!(!own_code("memcpy", ""));
        assert_eq!(site_function("a::b::{{closure}}::{{closure}}"), "a::b");
    }
}
