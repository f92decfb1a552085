//! JFR decoding: never panics, never recurses without bound; what decodes
//! is valid.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = kiln_profile::jfr::decode(data) {
        p.validate().expect("decoded profile is valid");
        if let Some(t) = p.default_type_index() {
            let _ = kiln_profile::top(&p, t);
        }
    }
});
