//! pprof decoding: never panics; what decodes is valid and round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = kiln_profile::pprof::decode(data) {
        p.validate().expect("decoded profile is valid");
        let again = kiln_profile::pprof::decode(&kiln_profile::pprof::encode(&p)).expect("re-decode");
        assert_eq!(again, p);
        let _ = kiln_profile::compact(&p);
    }
    // The fast reader and prost agree wherever both accept the input.
    if let (Ok(fast), Ok(reference)) = (
        kiln_profile::pprof::decode(data),
        kiln_profile::pprof::decode_with_prost(data),
    ) {
        assert_eq!(fast, reference);
    }
});
