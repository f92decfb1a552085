#![no_main]
//! Push requests as the server reads them: the protobuf never panics, and
//! every raw profile inside goes through the capped decoder.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = kiln_profile::push::PushRequest::from_bytes(data) {
        let mut opts = kiln_profile::DecodeOptions::default();
        opts.max_decompressed = 1 << 20;
        for s in &req.series {
            for raw in &s.samples {
                if let Ok(p) = kiln_profile::decode(&raw.raw_profile, &opts) {
                    let _ = kiln_profile::push::split_by_kind(&p);
                }
            }
        }
        let _ = req.to_bytes();
    }
});
