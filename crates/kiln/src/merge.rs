//! `kiln merge`: decode files on several threads, merge on one. Decoding
//! (gunzip and protobuf) is most of the work; the merge itself is hash
//! look-ups. At most `2 × jobs` decoded profiles wait in memory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;

use anyhow::{Context, Result};
use kiln_profile::{Merger, Profile};

use crate::cli::{choose_type, read_file};

/// Merges `files` in order of arrival (merge is commutative). With `ty`,
/// only that sample type of each file is kept.
pub fn merge_files(files: &[PathBuf], ty: Option<&str>, jobs: usize) -> Result<Profile> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = sync_channel::<Result<Profile>>(2 * jobs.max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let p = read_file(path, false).and_then(|p| match ty {
                        Some(t) => Ok(kiln_profile::select_type(
                            &p,
                            choose_type(&p, path, Some(t))?,
                        )),
                        None => Ok(p),
                    });
                    let failed = p.is_err();
                    if tx.send(p).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut merger = Merger::new();
        for p in rx {
            let p = p?;
            merger
                .add(&p)
                .context("merging (use --type to merge files whose sample types differ)")?;
        }
        Ok(merger.finish())
    })
}
