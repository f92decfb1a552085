//! Integration tests of `kiln-profile`: golden files made by real tools,
//! properties of the algebra, and hostile input.

mod golden;
mod heap;
mod hostile;
mod props;

use std::path::PathBuf;

use kiln_profile::{DecodeOptions, Profile, Top};

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

/// Path of a file under `tests/data`.
pub fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// Reads a golden input; a missing one fails the test.
pub fn read(rel: &str) -> Vec<u8> {
    let path = data(rel);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("golden file {} is missing: {e}", path.display()))
}

/// Decodes a golden input.
pub fn load(rel: &str) -> Profile {
    let mut opts = DecodeOptions::default();
    opts.folded.thread_prefix = rel.contains("perf-");
    let p = kiln_profile::decode(&read(rel), &opts).unwrap_or_else(|e| panic!("{rel}: {e}"));
    p.validate().unwrap();
    p
}

/// The row of function `name` in a top table.
fn row<'a>(t: &'a Top, name: &str) -> &'a kiln_profile::TopRow {
    t.rows
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

/// The total of function `name` in a top table, as a share of the table's total.
pub fn total_share(t: &Top, name: &str) -> f64 {
    row(t, name).total as f64 / t.total as f64
}

/// The self of `name` as a share of the table's total.
pub fn self_share(t: &Top, name: &str) -> f64 {
    row(t, name).self_value as f64 / t.total as f64
}

/// Compares `actual` with the expected file `rel`; `KILN_BLESS=1` rewrites
/// it. A missing expected file fails unless blessing.
pub fn check_expected(rel: &str, actual: &str) {
    let path = data(rel);
    if std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "expected file {} is missing ({e}); run with KILN_BLESS=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        expected,
        actual,
        "{} differs; run with KILN_BLESS=1 if the change is intended",
        path.display()
    );
}
