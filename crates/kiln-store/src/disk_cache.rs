//! `[storage] cache_dir`: a local disk cache in front of object storage
//! for the block files that never change once written (`*.parquet`). Each
//! read — a whole file, or one byte range of it, as the ranged Parquet
//! reads ask — is kept as one file under the directory, keyed by a hash of
//! path and range, with a header naming both (a hash collision or a torn
//! file is a miss, not wrong data). The cache is bounded in bytes and
//! evicts the least recently used; it is rebuilt from the directory at
//! start (recency from each file's time). Any disk error (a full disk, a
//! missing directory) is a miss, counted, never a failed query. Writes,
//! lists, deletes and every other read go straight through.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use serde::{Deserialize, Serialize};

/// What the cache did since start.
#[derive(Debug, Default)]
pub struct DiskCacheStats {
    /// Reads answered from disk.
    pub hits: AtomicU64,
    /// Reads that went to object storage.
    pub misses: AtomicU64,
    /// Disk errors (each made a miss or skipped a write).
    pub errors: AtomicU64,
    /// Entries evicted to stay within the bound.
    pub evicted: AtomicU64,
}

/// The header line of a cache file.
#[derive(Serialize, Deserialize)]
struct Header {
    path: String,
    /// The range asked for (`None`: the whole file).
    range: Option<(u64, u64)>,
    /// The range returned.
    got: (u64, u64),
    size: u64,
    /// Milliseconds since the epoch.
    last_modified: i64,
    e_tag: Option<String>,
    version: Option<String>,
    len: u64,
}

#[derive(Default)]
struct Index {
    /// Key → (bytes on disk, last use).
    entries: HashMap<String, (u64, u64)>,
    total: u64,
    tick: u64,
}

/// An [`ObjectStore`] that keeps immutable block files on local disk.
pub struct DiskCache {
    inner: Arc<dyn ObjectStore>,
    dir: PathBuf,
    limit: u64,
    index: Mutex<Index>,
    /// Counters, for `/metrics`.
    pub stats: Arc<DiskCacheStats>,
}

impl fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiskCache({}, {:?})", self.inner, self.dir)
    }
}

impl fmt::Display for DiskCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiskCache({} in {})", self.inner, self.dir.display())
    }
}

/// Whether reads of `p` may be cached: block data, written once.
fn cacheable(p: &Path) -> bool {
    p.as_ref().ends_with(".parquet")
}

/// Reads with no condition and a whole-file or bounded range.
fn plain(o: &GetOptions) -> Option<Option<Range<u64>>> {
    if o.if_match.is_some()
        || o.if_none_match.is_some()
        || o.if_modified_since.is_some()
        || o.if_unmodified_since.is_some()
        || o.version.is_some()
        || o.head
    {
        return None;
    }
    match &o.range {
        None => Some(None),
        Some(GetRange::Bounded(r)) => Some(Some(r.clone())),
        Some(_) => None,
    }
}

/// What a cached read came through: a `get_opts` (with the object's
/// metadata) or a `get_ranges` (bytes only); kept apart.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
enum Via {
    Get,
    Ranges,
}

fn key(p: &Path, range: &Option<Range<u64>>, via: Via) -> String {
    let h = |seed: u64| {
        let mut s = std::hash::DefaultHasher::new();
        seed.hash(&mut s);
        via.hash(&mut s);
        p.as_ref().hash(&mut s);
        range.as_ref().map(|r| (r.start, r.end)).hash(&mut s);
        s.finish()
    };
    format!("{:016x}{:016x}", h(1), h(2))
}

impl DiskCache {
    /// A cache of at most `limit` bytes in `dir` (created if missing)
    /// before `inner`; what an earlier run left there is kept, half-written
    /// files removed.
    pub fn open(
        inner: Arc<dyn ObjectStore>,
        dir: impl Into<PathBuf>,
        limit: u64,
    ) -> std::io::Result<DiskCache> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let mut found = Vec::new();
        for sub in std::fs::read_dir(&dir)?.flatten() {
            let sp = sub.path();
            if !sp.is_dir() {
                let _ = std::fs::remove_file(&sp);
                continue;
            }
            for e in std::fs::read_dir(&sp)?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(m) = e.metadata() else { continue };
                if name.starts_with("tmp-") || name.len() != 32 {
                    let _ = std::fs::remove_file(e.path());
                    continue;
                }
                let when = m.modified().ok().and_then(|t| t.elapsed().ok());
                found.push((when.unwrap_or_default(), name, m.len()));
            }
        }
        // Oldest first, so the newest get the highest ticks.
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut index = Index::default();
        for (_, name, len) in found {
            index.tick += 1;
            index.total += len;
            index.entries.insert(name, (len, index.tick));
        }
        let c = DiskCache {
            inner,
            dir,
            limit,
            index: Mutex::new(index),
            stats: Arc::default(),
        };
        c.evict();
        Ok(c)
    }

    fn file(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(key)
    }

    /// Bytes the cache holds on disk.
    pub fn bytes(&self) -> u64 {
        self.index.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    fn evict(&self) {
        let mut ix = self.index.lock().unwrap_or_else(|e| e.into_inner());
        while ix.total > self.limit {
            let Some((k, (len, _))) = ix
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, v)| (k.clone(), *v))
            else {
                break;
            };
            ix.entries.remove(&k);
            ix.total -= len;
            let _ = std::fs::remove_file(self.file(&k));
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The cached read of `p` over `range`, if held and whole.
    async fn lookup(
        &self,
        p: &Path,
        range: &Option<Range<u64>>,
        via: Via,
    ) -> Option<(Bytes, ObjectMeta, Range<u64>)> {
        let k = key(p, range, via);
        {
            let mut ix = self.index.lock().unwrap_or_else(|e| e.into_inner());
            ix.tick += 1;
            let tick = ix.tick;
            ix.entries.get_mut(&k)?.1 = tick;
        }
        let file = self.file(&k);
        let read = tokio::task::spawn_blocking(move || std::fs::read(file)).await;
        let parsed = match read {
            Ok(Ok(raw)) => parse(&raw, p, range),
            _ => None,
        };
        if parsed.is_none() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.forget(&k);
        }
        parsed
    }

    fn forget(&self, k: &str) {
        let mut ix = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((len, _)) = ix.entries.remove(k) {
            ix.total -= len;
        }
        let _ = std::fs::remove_file(self.file(k));
    }

    /// Keeps a read on disk (skipped when bigger than an eighth of the
    /// bound, or when the disk refuses).
    async fn keep(
        &self,
        at: (&Path, &Option<Range<u64>>, Via),
        bytes: &Bytes,
        meta: &ObjectMeta,
        got: Range<u64>,
    ) {
        let (p, range, via) = at;
        if bytes.len() as u64 > self.limit / 8 {
            return;
        }
        let k = key(p, range, via);
        let header = Header {
            path: p.to_string(),
            range: range.as_ref().map(|r| (r.start, r.end)),
            got: (got.start, got.end),
            size: meta.size,
            last_modified: meta.last_modified.timestamp_millis(),
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
            len: bytes.len() as u64,
        };
        let Ok(mut raw) = serde_json::to_vec(&header) else {
            return;
        };
        raw.push(b'\n');
        raw.extend_from_slice(bytes);
        let len = raw.len() as u64;
        let file = self.file(&k);
        let tmp = file.with_file_name(format!("tmp-{k}-{}", std::process::id()));
        let wrote = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(d) = file.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(&tmp, &raw)
                .and_then(|()| std::fs::rename(&tmp, &file))
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
        })
        .await;
        if !matches!(wrote, Ok(Ok(()))) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        {
            let mut ix = self.index.lock().unwrap_or_else(|e| e.into_inner());
            ix.tick += 1;
            let tick = ix.tick;
            if let Some((old, _)) = ix.entries.insert(k, (len, tick)) {
                ix.total -= old;
            }
            ix.total += len;
        }
        self.evict();
    }
}

/// A cache file's payload, if its header says it is the read of `p` over
/// `range` and the payload is whole.
fn parse(
    raw: &[u8],
    p: &Path,
    range: &Option<Range<u64>>,
) -> Option<(Bytes, ObjectMeta, Range<u64>)> {
    let nl = raw.iter().position(|&b| b == b'\n')?;
    let h: Header = serde_json::from_slice(&raw[..nl]).ok()?;
    let body = &raw[nl + 1..];
    if h.path != p.as_ref()
        || h.range != range.as_ref().map(|r| (r.start, r.end))
        || h.len != body.len() as u64
    {
        return None;
    }
    let meta = ObjectMeta {
        location: p.clone(),
        last_modified: chrono::DateTime::from_timestamp_millis(h.last_modified).unwrap_or_default(),
        size: h.size,
        e_tag: h.e_tag,
        version: h.version,
    };
    Some((Bytes::copy_from_slice(body), meta, h.got.0..h.got.1))
}

fn result(bytes: Bytes, meta: ObjectMeta, range: Range<u64>) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(Box::pin(futures::stream::once(
            async move { Ok(bytes) },
        ))),
        meta,
        range,
        attributes: Default::default(),
        extensions: Default::default(),
    }
}

#[async_trait]
impl ObjectStore for DiskCache {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let Some(range) = plain(&options).filter(|_| cacheable(location)) else {
            return self.inner.get_opts(location, options).await;
        };
        if let Some((bytes, meta, got)) = self.lookup(location, &range, Via::Get).await {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(result(bytes, meta, got));
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.get_opts(location, options).await?;
        let (meta, got) = (r.meta.clone(), r.range.clone());
        let bytes = r.bytes().await?;
        self.keep((location, &range, Via::Get), &bytes, &meta, got.clone())
            .await;
        Ok(result(bytes, meta, got))
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if !cacheable(location) {
            return self.inner.get_ranges(location, ranges).await;
        }
        let mut out: Vec<Option<Bytes>> = Vec::with_capacity(ranges.len());
        let mut missing = Vec::new();
        for r in ranges {
            let hit = self.lookup(location, &Some(r.clone()), Via::Ranges).await;
            if hit.is_none() {
                missing.push(r.clone());
            }
            out.push(hit.map(|(b, _, _)| b));
        }
        self.stats
            .hits
            .fetch_add((ranges.len() - missing.len()) as u64, Ordering::Relaxed);
        if !missing.is_empty() {
            self.stats
                .misses
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            let got = self.inner.get_ranges(location, &missing).await?;
            let meta = ObjectMeta {
                location: location.clone(),
                last_modified: chrono::DateTime::<chrono::Utc>::MIN_UTC,
                size: 0,
                e_tag: None,
                version: None,
            };
            let mut got = got.into_iter();
            for (slot, r) in out.iter_mut().zip(ranges) {
                if slot.is_none() {
                    let b = got.next().unwrap_or_default();
                    let at = (location, &Some(r.clone()), Via::Ranges);
                    self.keep(at, &b, &meta, r.clone()).await;
                    *slot = Some(b);
                }
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// The directory's size in bytes, for tests and checks.
pub fn dir_bytes(dir: &FsPath) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
