//! The disk cache before object storage: after a restart, block files
//! are read from local disk — so they answer even when the bucket's files
//! have gone bad, which without the cache fails the query; a torn cache
//! file is a miss, read again from storage, never wrong data; and the
//! directory stays within its bound.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

use super::{canon, labels, profile};
use crate::disk_cache::{DiskCache, dir_bytes};
use crate::{Detail, HOUR_MS, Options, Store, selector};

fn files(d: &Path, ends: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(ends) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn blocks_read_from_disk_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (data, bucket, cache) = (
        dir.path().join("data"),
        dir.path().join("bucket"),
        dir.path().join("cache"),
    );
    std::fs::create_dir_all(&bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let fs: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&bucket).unwrap());
    let open = |limit: u64, cached: bool| {
        let c = Arc::new(DiskCache::open(fs.clone(), &cache, limit).unwrap());
        let storage: Arc<dyn ObjectStore> = if cached { c.clone() } else { fs.clone() };
        let opts = Options {
            storage: Some(storage),
            server_id: Some("a".into()),
            ..Options::default()
        };
        (c, opts)
    };
    let ask = |store: &Arc<Store>| {
        let (store, q) = (store.clone(), q.clone());
        async move { store.select("", &q, 0, 6 * HOUR_MS, Detail::Labels).await }
    };
    rt.block_on(async {
        let (_, opts) = open(64 << 20, true);
        let store = Store::open(&data, opts).await.unwrap();
        for i in 0..60i64 {
            let inst = ["a", "b", "c"][i as usize % 3];
            store
                .ingest("", labels("svc", inst), i * 5 * 60_000, profile(i))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
        let want = canon(&ask(&store).await.unwrap().unwrap());
        drop(store);

        // Restart: the blocks are read through the cache, which keeps them.
        let (c, opts) = open(64 << 20, true);
        let store = Store::open(&data, opts).await.unwrap();
        assert_eq!(canon(&ask(&store).await.unwrap().unwrap()), want);
        assert!(c.stats.misses.load(Ordering::Relaxed) > 0);
        assert!(
            c.bytes() > 0 && c.bytes() == dir_bytes(&cache),
            "{} vs {}",
            c.bytes(),
            dir_bytes(&cache)
        );
        drop(store);

        // Torn cache files: misses, read again from storage.
        for f in files(&cache, "") {
            let len = std::fs::metadata(&f).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&f)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
        let (c, opts) = open(64 << 20, true);
        let store = Store::open(&data, opts).await.unwrap();
        assert_eq!(
            canon(&ask(&store).await.unwrap().unwrap()),
            want,
            "torn files are not data"
        );
        assert!(
            c.stats.errors.load(Ordering::Relaxed) > 0,
            "torn files seen"
        );
        drop(store);

        // The bucket's block files go bad: through the cache the answer
        // holds, from disk alone; without it the query fails.
        for f in files(&bucket, ".parquet") {
            let len = std::fs::metadata(&f).unwrap().len() as usize;
            std::fs::write(&f, vec![0x5a; len]).unwrap();
        }
        let (c, opts) = open(64 << 20, true);
        let store = Store::open(&data, opts).await.unwrap();
        assert_eq!(
            canon(&ask(&store).await.unwrap().unwrap()),
            want,
            "served from disk"
        );
        assert!(c.stats.hits.load(Ordering::Relaxed) > 0);
        assert_eq!(
            c.stats.misses.load(Ordering::Relaxed),
            0,
            "nothing read from storage"
        );
        drop(store);
        let (_, opts) = open(64 << 20, false);
        // Without it the bad files fail the open (the series index) or
        // the query.
        if let Ok(store) = Store::open(&data, opts).await {
            assert!(ask(&store).await.is_err(), "bad files read");
        }

        // A bound smaller than what was kept: the oldest go at open.
        let limit = c.bytes() / 2;
        let (c, _) = open(limit, true);
        assert!(c.bytes() <= limit && dir_bytes(&cache) <= limit);
        assert!(c.stats.evicted.load(Ordering::Relaxed) > 0);
    });
}
