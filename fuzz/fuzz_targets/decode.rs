//! Format detection and decoding of anything, with a small decompression cap.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut opts = kiln_profile::DecodeOptions::default();
    opts.max_decompressed = 1 << 20;
    if let Ok(p) = kiln_profile::decode(data, &opts) {
        p.validate().expect("decoded profile is valid");
    }
});
