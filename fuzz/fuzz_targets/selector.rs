#![no_main]
//! Query selectors: parsing never panics, and what parses matches label
//! sets without panicking.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = kiln_store::selector::parse(s) {
        let _ = q.sample_type();
        let labels = vec![
            ("__name__".to_string(), q.profile_name().to_string()),
            ("service_name".to_string(), s.chars().take(8).collect()),
        ];
        let _ = q.matches(&labels);
    }
});
