//! Folded-stacks decoding: never panics; what decodes is valid and survives
//! the analyses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut opts = kiln_profile::folded::FoldedOptions::default();
    opts.thread_prefix = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok(p) = kiln_profile::folded::decode(data, &opts) {
        p.validate().expect("decoded profile is valid");
        let _ = kiln_profile::top(&p, 0);
        let _ = kiln_profile::flame_tree(&p, 0, 16);
        let _ = kiln_profile::folded::encode(&p, 0, opts.thread_prefix);
    }
});
