//! Truncated, corrupted and oversized input gets an error, never a panic.

use kiln_profile::{DecodeOptions, Error, decode};

use crate::read;

fn gunzipped(rel: &str) -> Vec<u8> {
    let bytes = read(rel);
    if kiln_profile::compress::is_gzip(&bytes) {
        kiln_profile::compress::gunzip(&bytes, 1 << 30).unwrap()
    } else {
        bytes
    }
}

/// Every prefix at a spread of cut points, and single-byte corruptions.
fn survives_damage(bytes: &[u8]) {
    let opts = DecodeOptions::default();
    let step = (bytes.len() / 300).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        let _ = decode(&bytes[..cut], &opts);
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..600 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut damaged = bytes.to_vec();
        let at = (state as usize) % damaged.len();
        damaged[at] ^= (state >> 32) as u8 | 1;
        if let Ok(p) = decode(&damaged, &opts) {
            p.validate().unwrap();
        }
    }
}

#[test]
fn truncated_or_corrupt_jfr_is_an_error() {
    let bytes = read("jfr/hot-jdk17.jfr");
    survives_damage(&bytes);
    let err = decode(&bytes[..bytes.len() / 2], &DecodeOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Jfr { chunk: 0, .. }), "{msg}");
    assert!(msg.contains("chunk 0"), "{msg}");
}

#[test]
fn truncated_or_corrupt_pprof_is_an_error() {
    survives_damage(&gunzipped("pprof/go-cpu.pb.gz"));
}

#[test]
fn gzip_bomb_is_refused_within_the_cap() {
    let zeros = vec![0u8; 64 << 20];
    let bomb = kiln_profile::compress::gzip(&zeros);
    assert!(bomb.len() < 1 << 20);
    let mut opts = DecodeOptions::default();
    opts.max_decompressed = 16 << 20;
    assert!(matches!(decode(&bomb, &opts), Err(Error::TooLarge { limit }) if limit == 16 << 20));
}

#[test]
fn unknown_content_is_named() {
    let err = decode(b"\xff\xfe\x00garbage", &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, Error::UnknownFormat), "{err}");
}

#[test]
fn pprof_with_dangling_ids_is_refused() {
    use kiln_profile::pprof::proto;
    use prost::Message as _;
    let raw = proto::Profile {
        sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
        string_table: vec!["".into(), "cpu".into(), "nanoseconds".into()],
        sample: vec![proto::Sample {
            location_id: vec![7],
            value: vec![1],
            label: vec![],
        }],
        ..Default::default()
    };
    let err = kiln_profile::pprof::decode(&raw.encode_to_vec()).unwrap_err();
    assert!(err.to_string().contains("unknown location 7"), "{err}");
    let raw = proto::Profile {
        string_table: vec!["x".into()],
        ..Default::default()
    };
    assert!(kiln_profile::pprof::decode(&raw.encode_to_vec()).is_err());
}

#[test]
fn fuzz_regressions_decode_without_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut seen = 0;
    for target in ["pprof", "folded", "jfr", "decode"] {
        let dir = root.join(target);
        assert!(dir.is_dir(), "{} is missing", dir.display());
        let before = seen;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".keep") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            if let Ok(p) = decode(&bytes, &DecodeOptions::default()) {
                p.validate().unwrap();
            }
            seen += 1;
        }
        assert!(
            seen > before,
            "{} holds no input: nothing replayed",
            dir.display()
        );
    }
    eprintln!("{seen} fuzz regression files decoded");
}
