//! `kiln-store` keeps profiles for the server. An ingested profile is
//! appended to a write-ahead log (group commit: one sync for every request
//! waiting) before it is acknowledged, so nothing acknowledged is lost to
//! `kill -9`; it is then added to the head, where queries read it at once.
//!
//! The head keeps, per tenant, one symbol table and rows over it per series
//! and minute (see `part`). Every `flush_every`, or sooner when the head
//! grows past `head_max_bytes`, the head is cut: the log begins a new
//! segment, the old head is written as one immutable Parquet block per
//! tenant to object storage (a local directory, or S3), and the log
//! segments it covered are removed. A restart loads the blocks — series
//! index, symbols and rows, no profile decoding — and replays only the log
//! written since the last cut. Blocks of one hour are compacted into one;
//! blocks past a tenant's retention are deleted.
//!
//! Several servers can share one bucket: each writes its own blocks
//! (named by its server id) and reads everyone's, listing the bucket again
//! when its view is older than `refresh_every`; what a peer has not
//! flushed yet it answers for through [`Store::select_head`].
//!
//! It depends on `kiln-profile` only, never on the agent or the server, and
//! chooses no HTTP status codes: its [`Error`] says what went wrong.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = kiln_store::Store::open(dir.path(), Default::default()).await.unwrap();
//! let p = kiln_profile::decode(b"main;work 7\n", &Default::default()).unwrap();
//! let labels = vec![
//!     ("__name__".to_string(), "process_cpu".to_string()),
//!     ("service_name".to_string(), "svc".to_string()),
//! ];
//! store.ingest("", labels, 1_000, p).await.unwrap();
//! let q = kiln_store::selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
//! let merged = store.select("", &q, 0, 2_000, kiln_store::Detail::Stacks).unwrap().unwrap();
//! assert_eq!(merged.total(0), 7);
//! // Written as a block and read back from it: the same answer.
//! store.flush().await.unwrap();
//! assert_eq!(store.select("", &q, 0, 2_000, kiln_store::Detail::Stacks).unwrap().unwrap().total(0), 7);
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod block;
mod part;

/// The `object_store` this crate writes blocks with, for callers that
/// build a storage to hand it.
pub use object_store;

/// What a merged answer keeps of its samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Detail {
    /// Per stack and label set: for thread tables, pprof downloads and
    /// peers' questions.
    Labels,
    /// Per stack, sample labels dropped: all a flame graph, a top table or
    /// a diff reads, and cheaper to merge (rows sum by stack before the
    /// merge sees them).
    Stacks,
}

/// One read of a part: the query, its range and the detail kept.
pub(crate) struct Read<'a> {
    pub q: &'a selector::Query,
    pub from_ms: i64,
    pub until_ms: i64,
    pub detail: Detail,
}
pub mod selector;
pub mod wal;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use kiln_profile::{Merger, Profile};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::part::Part;

/// The label that names the profile (`process_cpu`, `memory`, …).
pub const NAME_LABEL: &str = "__name__";
/// Rows of one series are kept per bucket of this many milliseconds.
pub const BUCKET_MS: i64 = 60_000;
/// Whole hours a query covers are read from one sum per hour.
pub const HOUR_MS: i64 = 3_600_000;

/// What can go wrong storing or reading profiles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The write-ahead log could not take a record.
    #[error("write-ahead log: {0}")]
    Wal(String),
    /// Something is larger than allowed.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A query does not parse.
    #[error("query {query:?} at offset {offset}: {reason}")]
    Query {
        /// The query.
        query: String,
        /// Byte offset of the problem.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A block could not be written or read.
    #[error("block {block}: {reason}")]
    Block {
        /// The block (its path).
        block: String,
        /// What is wrong.
        reason: String,
    },
    /// A profile could not be used.
    #[error(transparent)]
    Profile(#[from] kiln_profile::Error),
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the store runs; [`Options::default`] suits one server on local disk.
#[derive(Clone)]
pub struct Options {
    /// Where blocks go; `None` means `DIR/blocks` on local disk.
    pub storage: Option<Arc<dyn ObjectStore>>,
    /// This server's name in block ids; `None` reads (or creates) one in
    /// `DIR/server-id`. Servers sharing a bucket need distinct ids.
    pub server_id: Option<String>,
    /// The head is cut into blocks this often.
    pub flush_every: Duration,
    /// ... or as soon as it holds this many bytes.
    pub head_max_bytes: usize,
    /// Blocks older than this are deleted, per tenant; `""` is the default
    /// for tenants not named. No entry: kept forever.
    pub retention: HashMap<String, Duration>,
    /// Other servers' blocks are looked for when a query finds the view of
    /// the bucket older than this.
    pub refresh_every: Duration,
    /// Blocks this server flushed stay in its answers to peers' head
    /// queries this long (unless the peer says it has them), so a peer
    /// that has not listed them yet still counts them once.
    pub peer_grace: Duration,
    /// A whole hour of the head is summed ahead of queries
    /// ([`Store::sum_an_hour`]) once no rows arrived for it this long.
    pub quiet_before_sum: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            storage: None,
            server_id: None,
            flush_every: Duration::from_secs(600),
            head_max_bytes: 512 << 20,
            retention: HashMap::new(),
            refresh_every: Duration::from_secs(10),
            peer_grace: Duration::from_secs(120),
            quiet_before_sum: Duration::from_secs(60),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Stats {
    /// Series in the head.
    pub series: u64,
    /// Profiles ingested (since start, replay included).
    pub profiles: u64,
    /// Samples ingested (since start, replay included).
    pub samples: u64,
    /// Minute buckets in the head.
    pub buckets: u64,
    /// Rows (stack × label set × minute) in the head.
    pub head_rows: u64,
    /// Approximate bytes of memory the head holds.
    pub head_bytes: u64,
    /// Blocks known (this server's and its peers').
    pub blocks: u64,
    /// Bytes of those blocks in storage.
    pub block_bytes: u64,
    /// Rows in those blocks.
    pub block_rows: u64,
    /// Bytes of write-ahead log on disk.
    pub wal_bytes: u64,
    /// Cuts of the head into blocks that completed.
    pub flushes: u64,
    /// Cuts that failed (retried at the next one).
    pub flush_errors: u64,
    /// Compactions done.
    pub compactions: u64,
    /// Blocks deleted for retention.
    pub expired: u64,
    /// Whole hours summed ahead of queries ([`Store::sum_an_hour`]).
    pub hours_summed: u64,
}

/// A part in storage (or on its way there).
struct Block {
    meta: block::Meta,
    part: RwLock<Part>,
    /// When this server flushed it (None: written by another server, or
    /// before this process started).
    flushed_at: Option<Instant>,
}

impl Block {
    fn overlaps(&self, tenant: &str, from_ms: i64, until_ms: i64) -> bool {
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        self.meta.tenant == tenant && self.meta.max_ms >= lo && self.meta.min_ms < until_ms
    }
}

/// The store.
pub struct Store {
    dir: PathBuf,
    opts: Options,
    server: String,
    storage: Arc<dyn ObjectStore>,
    wal: wal::Wal,
    /// Ingests hold it shared across log append and head add; a cut holds
    /// it alone, so every record below the cut is in the cut head.
    gate: tokio::sync::RwLock<()>,
    /// Tenant → its head part.
    head: RwLock<HashMap<String, Part>>,
    /// Cut heads being written (or waiting to be retried).
    frozen: RwLock<Vec<Arc<Block>>>,
    /// Blocks by id.
    blocks: RwLock<BTreeMap<String, Arc<Block>>>,
    /// One cut, compaction or refresh at a time.
    busy: tokio::sync::Mutex<()>,
    last_cut: Mutex<Instant>,
    last_refresh: Mutex<Option<Instant>>,
    seq: AtomicU64,
    profiles: AtomicU64,
    samples: AtomicU64,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
    compactions: AtomicU64,
    expired: AtomicU64,
    hours_summed: AtomicU64,
    /// Peers' blocks found or forgotten.
    found: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The server id kept in `DIR/server-id`, made on first use.
fn server_id(dir: &Path) -> Result<String, Error> {
    let path = dir.join("server-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let seed = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ (u64::from(std::process::id()) << 40);
            let id = format!("{:012x}", seed & 0xffff_ffff_ffff);
            write_durably(&path, id.as_bytes())?;
            Ok(id)
        }
    }
}

/// Writes `bytes` to `path` atomically and durably.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(d, e))?;
    }
    Ok(())
}

/// The log segment below which every record is in a block, as the last
/// completed cut left it in `DIR/flushed`.
fn flushed_upto(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("flushed"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Every complete block's meta in `storage`, those replaced by a
/// compaction left out.
async fn list_metas(storage: &dyn ObjectStore) -> Result<Vec<block::Meta>, Error> {
    let root = ObjPath::from(block::ROOT);
    let objects: Vec<_> =
        storage
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| Error::Block {
                block: block::ROOT.into(),
                reason: e.to_string(),
            })?;
    let mut metas = Vec::new();
    for o in objects {
        if o.location.filename() == Some("meta.json") {
            match block::read_meta(storage, &o.location).await {
                Ok(m) => metas.push(m),
                Err(e) => tracing::warn!(target: "kiln_store", "skipping a block: {e}"),
            }
        }
    }
    let replaced: HashSet<String> = metas.iter().flat_map(|m| m.sources.clone()).collect();
    metas.retain(|m| !replaced.contains(&m.id));
    Ok(metas)
}

/// Deletes every object of block `id` of `tenant`.
async fn delete_block(storage: &dyn ObjectStore, tenant: &str, id: &str) -> Result<(), Error> {
    let prefix = ObjPath::from(format!("{}/{id}", block::tenant_dir(tenant)));
    let objects: Vec<_> = storage
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| Error::Block {
            block: id.into(),
            reason: e.to_string(),
        })?;
    // meta.json first: a half-deleted block is then an incomplete one.
    let mut paths: Vec<ObjPath> = objects.into_iter().map(|o| o.location).collect();
    paths.sort_by_key(|p| p.filename() != Some("meta.json"));
    for p in paths {
        storage.delete(&p).await.map_err(|e| Error::Block {
            block: id.into(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

impl Store {
    /// Opens the store under `dir` (creating it): loads every block in
    /// storage and replays the log written since the last cut.
    pub async fn open(dir: &Path, opts: Options) -> Result<Store, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let storage: Arc<dyn ObjectStore> = match &opts.storage {
            Some(s) => s.clone(),
            None => Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                    Error::Block {
                        block: dir.display().to_string(),
                        reason: e.to_string(),
                    }
                })?,
            ),
        };
        let server = match &opts.server_id {
            Some(s) => s.clone(),
            None => server_id(dir)?,
        };
        let upto = flushed_upto(dir);
        let mut blocks = BTreeMap::new();
        for meta in list_metas(&*storage).await? {
            if meta.server == server && meta.wal_cut > upto {
                // Written by a cut that did not complete: the log still
                // holds its records and is replayed below.
                tracing::info!(target: "kiln_store", "removing unfinished block {}", meta.id);
                delete_block(&*storage, &meta.tenant, &meta.id).await?;
                continue;
            }
            let part = block::read(&*storage, &meta).await?;
            blocks.insert(
                meta.id.clone(),
                Arc::new(Block {
                    meta,
                    part: RwLock::new(part),
                    flushed_at: None,
                }),
            );
        }
        let mut head: HashMap<String, Part> = HashMap::new();
        let mut profiles = 0u64;
        let mut samples = 0u64;
        let mut bad = 0u64;
        let wal = wal::open_from(&dir.join("wal"), upto, |rec| {
            let ok = decode_record(rec).and_then(|(t, l, time, bytes)| {
                // As received: pprof raw or gzipped; decoded by content.
                let p =
                    kiln_profile::decode(bytes, &kiln_profile::DecodeOptions::default()).ok()?;
                head.entry(t).or_default().add(&l, time, &p).ok()?;
                Some(p.samples.len() as u64)
            });
            match ok {
                Some(n) => {
                    profiles += 1;
                    samples += n;
                }
                None => bad += 1,
            }
        })?;
        let replayed = wal.replayed();
        if replayed.skipped_bytes > 0 || replayed.cut_bytes > 0 {
            tracing::warn!(
                target: "kiln_store",
                "replay: {} records; {} bytes of corrupt records skipped, {} bytes of a torn tail cut",
                replayed.records,
                replayed.skipped_bytes,
                replayed.cut_bytes
            );
        }
        if bad > 0 {
            tracing::warn!(target: "kiln_store", "replay: {bad} unreadable records skipped");
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            opts,
            server,
            storage,
            wal,
            gate: tokio::sync::RwLock::new(()),
            head: RwLock::new(head),
            frozen: RwLock::new(Vec::new()),
            blocks: RwLock::new(blocks),
            busy: tokio::sync::Mutex::new(()),
            last_cut: Mutex::new(Instant::now()),
            last_refresh: Mutex::new(Some(Instant::now())),
            seq: AtomicU64::new(0),
            profiles: AtomicU64::new(profiles),
            samples: AtomicU64::new(samples),
            flushes: AtomicU64::new(0),
            flush_errors: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            hours_summed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            found: AtomicU64::new(0),
        })
    }

    /// A number that changes whenever what a query could read changes
    /// (ingest, cut, compaction, expiry, peers' blocks found): a cache of
    /// answers keyed on it is never stale.
    pub fn generation(&self) -> u64 {
        self.profiles.load(Ordering::Relaxed)
            + self.flushes.load(Ordering::Relaxed)
            + self.compactions.load(Ordering::Relaxed)
            + self.expired.load(Ordering::Relaxed)
            + self.found.load(Ordering::Relaxed)
    }

    /// This server's id (in the names of the blocks it writes).
    pub fn server_id(&self) -> &str {
        &self.server
    }

    /// Stores one profile of the series `labels` (sorted here) at `time_ms`:
    /// durable in the log when this returns, queryable at once.
    pub async fn ingest(
        &self,
        tenant: &str,
        labels: Vec<(String, String)>,
        time_ms: i64,
        profile: Profile,
    ) -> Result<(), Error> {
        let bytes = kiln_profile::pprof::encode(&profile);
        self.ingest_encoded(tenant, labels, time_ms, profile, &bytes)
            .await
    }

    /// As [`Store::ingest`], logging `pprof` — the bytes `profile` was
    /// decoded from (pprof, raw or gzipped) — rather than encoding it again.
    pub async fn ingest_encoded(
        &self,
        tenant: &str,
        mut labels: Vec<(String, String)>,
        time_ms: i64,
        profile: Profile,
        pprof: &[u8],
    ) -> Result<(), Error> {
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        let _gate = self.gate.read().await;
        self.wal
            .append(encode_record(tenant, &labels, time_ms, pprof))
            .await?;
        write(&self.head)
            .entry(tenant.to_string())
            .or_default()
            .add(&labels, time_ms, &profile)?;
        self.profiles.fetch_add(1, Ordering::Relaxed);
        self.samples
            .fetch_add(profile.samples.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The blocks and cut heads of `tenant` over the range.
    fn stored_parts(&self, tenant: &str, from_ms: i64, until_ms: i64) -> Vec<Arc<Block>> {
        let mut out: Vec<Arc<Block>> = read(&self.frozen)
            .iter()
            .filter(|b| b.meta.tenant == tenant)
            .cloned()
            .collect();
        out.extend(
            read(&self.blocks)
                .values()
                .filter(|b| b.overlaps(tenant, from_ms, until_ms))
                .cloned(),
        );
        out
    }

    /// Every profile of tenant `tenant` matching `q` within
    /// `[from_ms, until_ms)`, reduced to the query's sample type (when it
    /// names one) and merged, keeping `detail`; `None` when nothing
    /// matches.
    pub fn select(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
    ) -> Result<Option<Profile>, Error> {
        let mut m = Merger::new();
        let at = Read {
            q,
            from_ms,
            until_ms,
            detail,
        };
        self.head_into(tenant, &at, &mut m)?;
        for b in self.stored_parts(tenant, from_ms, until_ms) {
            read_part(&b.part, &at, &mut m)?;
        }
        Ok((m.inputs() > 0).then(|| m.finish()))
    }

    fn head_into(&self, tenant: &str, at: &Read, m: &mut Merger) -> Result<(), Error> {
        // Fold what the range's buckets still hold unfolded, once, so this
        // and later queries read one sorted run per bucket.
        if let Some(p) = write(&self.head).get_mut(tenant) {
            p.prepare(at.q, at.from_ms, at.until_ms);
        }
        if let Some(p) = read(&self.head).get(tenant) {
            p.read_into(at, m)?;
        }
        Ok(())
    }

    /// What only this server holds — its head, heads being cut, and blocks
    /// it flushed within `peer_grace` whose ids are not in `known` — of
    /// `q` over the range, merged: the answer to a peer's query.
    pub fn select_head(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
        known: &HashSet<String>,
    ) -> Result<Option<Profile>, Error> {
        let mut m = Merger::new();
        let at = Read {
            q,
            from_ms,
            until_ms,
            detail,
        };
        self.head_into(tenant, &at, &mut m)?;
        let recent: Vec<Arc<Block>> = read(&self.frozen)
            .iter()
            .filter(|b| b.meta.tenant == tenant && !known.contains(&b.meta.id))
            .cloned()
            .chain(
                read(&self.blocks)
                    .values()
                    .filter(|b| {
                        b.overlaps(tenant, from_ms, until_ms)
                            && !known.contains(&b.meta.id)
                            && b.flushed_at
                                .is_some_and(|t| t.elapsed() < self.opts.peer_grace)
                    })
                    .cloned(),
            )
            .collect();
        for b in recent {
            read_part(&b.part, &at, &mut m)?;
        }
        Ok((m.inputs() > 0).then(|| m.finish()))
    }

    /// Sums one whole hour of a service's rollup that is over and not
    /// summed yet, in a block or in the head (there once no rows arrived
    /// for it for `quiet_before_sum`): what a query over that hour would
    /// otherwise do first, for seconds. The minutes are copied under the
    /// lock and summed without it, so ingest and queries go on meanwhile.
    /// Returns whether there was one. The server calls it from its
    /// upkeep, off the async threads.
    pub fn sum_an_hour(&self) -> bool {
        let before = now_ms();
        let blocks: Vec<Arc<Block>> = read(&self.blocks).values().cloned().collect();
        for b in blocks {
            let job = read(&b.part).unsummed_hour(before, Duration::ZERO);
            if let Some(job) = job {
                let sum = job.sum();
                if write(&b.part).put_hour(job, sum) {
                    self.hours_summed.fetch_add(1, Ordering::Relaxed);
                }
                return true;
            }
        }
        let tenants: Vec<String> = read(&self.head).keys().cloned().collect();
        for t in tenants {
            let job = read(&self.head)
                .get(&t)
                .and_then(|p| p.unsummed_hour(before, self.opts.quiet_before_sum));
            if let Some(job) = job {
                let sum = job.sum();
                if let Some(p) = write(&self.head).get_mut(&t)
                    && p.put_hour(job, sum)
                {
                    self.hours_summed.fetch_add(1, Ordering::Relaxed);
                }
                return true;
            }
        }
        false
    }

    /// Ids of the blocks this server knows that another server wrote.
    pub fn peer_blocks(&self) -> HashSet<String> {
        read(&self.blocks)
            .values()
            .filter(|b| b.meta.server != self.server)
            .map(|b| b.meta.id.clone())
            .collect()
    }

    /// Per bucket (start ms) within the range, the total of the query's
    /// sample type, for each value of `group_by` (or one line, `""`).
    pub fn series_totals(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        group_by: Option<&str>,
    ) -> BTreeMap<String, BTreeMap<i64, i64>> {
        let mut out = BTreeMap::new();
        if let Some(p) = read(&self.head).get(tenant) {
            p.totals(q, from_ms, until_ms, group_by, &mut out);
        }
        for b in self.stored_parts(tenant, from_ms, until_ms) {
            read(&b.part).totals(q, from_ms, until_ms, group_by, &mut out);
        }
        out
    }

    /// Calls `f` with every part of `tenant`: head, cut heads, blocks.
    fn each_part(&self, tenant: &str, mut f: impl FnMut(&Part)) {
        if let Some(p) = read(&self.head).get(tenant) {
            f(p);
        }
        for b in self.stored_parts(tenant, i64::MIN / 2, i64::MAX / 2) {
            f(&read(&b.part));
        }
    }

    /// Label names of tenant `tenant`'s series, sorted.
    pub fn label_names(&self, tenant: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.each_part(tenant, |p| out.extend(p.index.keys().cloned()));
        out.into_iter().collect()
    }

    /// Values of label `name` among tenant `tenant`'s series (those matching
    /// `q`, when given), sorted.
    pub fn label_values(
        &self,
        tenant: &str,
        name: &str,
        q: Option<&selector::Query>,
    ) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.each_part(tenant, |p| {
            let Some(values) = p.index.get(name) else {
                return;
            };
            match q {
                None => out.extend(values.keys().cloned()),
                Some(q) => {
                    let ok: BTreeSet<u32> = p.matching(q).into_iter().collect();
                    out.extend(
                        values
                            .iter()
                            .filter(|(_, ids)| ids.iter().any(|i| ok.contains(i)))
                            .map(|(v, _)| v.clone()),
                    );
                }
            }
        });
        out.into_iter().collect()
    }

    /// The label sets of tenant `tenant`'s series matching `q`.
    pub fn series(&self, tenant: &str, q: &selector::Query) -> Vec<Vec<(String, String)>> {
        let mut out = BTreeSet::new();
        self.each_part(tenant, |p| {
            out.extend(
                p.matching(q)
                    .into_iter()
                    .map(|id| p.series[id as usize].labels.clone()),
            )
        });
        out.into_iter().collect()
    }

    /// Profile type IDs (`name:sample:unit:period:unit`) of tenant `tenant`.
    pub fn profile_types(&self, tenant: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.each_part(tenant, |p| p.profile_types(&mut out));
        out.into_iter().collect()
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> Stats {
        let head = read(&self.head);
        let blocks = read(&self.blocks);
        Stats {
            series: head.values().map(|p| p.series.len() as u64).sum(),
            profiles: self.profiles.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
            buckets: head.values().map(Part::buckets).sum(),
            head_rows: head.values().map(Part::rows).sum(),
            head_bytes: head.values().map(|p| p.bytes() as u64).sum(),
            blocks: blocks.len() as u64,
            block_bytes: blocks
                .values()
                .map(|b| b.meta.files.values().sum::<u64>())
                .sum(),
            block_rows: blocks.values().map(|b| b.meta.rows).sum(),
            wal_bytes: self.wal.bytes(),
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_errors: self.flush_errors.load(Ordering::Relaxed),
            compactions: self.compactions.load(Ordering::Relaxed),
            hours_summed: self.hours_summed.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
        }
    }

    /// The meta of a level-0 block `id` of this server holding `part`;
    /// counts, kinds and files are filled in when it is encoded.
    fn meta(&self, id: String, tenant: String, part: &Part, wal_cut: u64) -> block::Meta {
        block::Meta {
            version: block::VERSION,
            id,
            tenant,
            server: self.server.clone(),
            created_ms: now_ms(),
            min_ms: part.min_ms,
            max_ms: part.max_ms,
            level: 0,
            sources: Vec::new(),
            wal_cut,
            series: 0,
            rows: 0,
            profiles: 0,
            samples: 0,
            kinds: Vec::new(),
            files: BTreeMap::new(),
        }
    }

    fn block_id(&self, min_ms: i64) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{:013}-{}-{:013}-{n}", min_ms.max(0), self.server, now_ms())
    }

    /// Cuts the head: writes it as one block per tenant, then removes the
    /// log it covered. Returns the ids written. A failed write leaves the
    /// cut head queryable and in the log, and is retried at the next cut.
    pub async fn flush(&self) -> Result<Vec<String>, Error> {
        let _busy = self.busy.lock().await;
        let (parts, cut) = {
            let _gate = self.gate.write().await;
            let cut = self.wal.rotate().await?;
            (std::mem::take(&mut *write(&self.head)), cut)
        };
        *self.last_cut.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        for (tenant, part) in parts {
            if part.profiles == 0 {
                continue;
            }
            let id = self.block_id(part.min_ms);
            let meta = self.meta(id, tenant, &part, cut);
            write(&self.frozen).push(Arc::new(Block {
                meta,
                part: RwLock::new(part),
                flushed_at: None,
            }));
        }
        let pending: Vec<Arc<Block>> = read(&self.frozen).clone();
        let mut done = Vec::new();
        for b in &pending {
            write(&b.part).seal();
            let mut meta = b.meta.clone();
            let encoded = block::encode(&meta.id, &read(&b.part));
            let result = match encoded {
                Ok((files, kinds)) => {
                    block::fill_meta(&mut meta, &read(&b.part), kinds, &files);
                    block::upload(&*self.storage, &meta, files).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                self.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target: "kiln_store", "writing block {}: {e}", meta.id);
                return Err(e);
            }
            done.push((b.clone(), meta));
        }
        // Every cut head is in storage: the log below the cut can go.
        write_durably(&self.dir.join("flushed"), cut.to_string().as_bytes())?;
        {
            let mut blocks = write(&self.blocks);
            let mut frozen = write(&self.frozen);
            for (b, meta) in &done {
                let part = std::mem::take(&mut *write(&b.part));
                blocks.insert(
                    meta.id.clone(),
                    Arc::new(Block {
                        meta: meta.clone(),
                        part: RwLock::new(part),
                        flushed_at: Some(Instant::now()),
                    }),
                );
                frozen.retain(|f| !Arc::ptr_eq(f, b));
            }
        }
        self.wal.truncate_below(cut)?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(done.into_iter().map(|(_, m)| m.id).collect())
    }

    /// Looks at storage again: loads blocks other servers wrote since,
    /// forgets theirs that are gone (and those a compaction replaced).
    pub async fn refresh(&self) -> Result<(), Error> {
        let _busy = self.busy.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<(), Error> {
        let metas = list_metas(&*self.storage).await?;
        let present: HashSet<String> = metas.iter().map(|m| m.id.clone()).collect();
        let known: HashSet<String> = read(&self.blocks).keys().cloned().collect();
        for meta in metas {
            if known.contains(&meta.id) || meta.server == self.server {
                continue;
            }
            let part = block::read(&*self.storage, &meta).await?;
            self.found.fetch_add(1, Ordering::Relaxed);
            write(&self.blocks).insert(
                meta.id.clone(),
                Arc::new(Block {
                    meta,
                    part: RwLock::new(part),
                    flushed_at: None,
                }),
            );
        }
        write(&self.blocks).retain(|id, b| {
            let keep = b.meta.server == self.server || present.contains(id);
            if !keep {
                self.found.fetch_add(1, Ordering::Relaxed);
            }
            keep
        });
        *self.last_refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// [`Store::refresh`] if the last look is older than `refresh_every`.
    pub async fn refresh_if_stale(&self) -> Result<(), Error> {
        let stale = self
            .last_refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|t| t.elapsed() >= self.opts.refresh_every);
        if stale { self.refresh().await } else { Ok(()) }
    }

    /// Compacts this server's level-0 blocks of each tenant and hour that
    /// is over into one block per tenant and hour. Returns the new ids.
    pub async fn compact(&self) -> Result<Vec<String>, Error> {
        let _busy = self.busy.lock().await;
        let hour_over =
            (now_ms() - self.opts.flush_every.as_millis() as i64).div_euclid(HOUR_MS) * HOUR_MS;
        let mut groups: BTreeMap<(String, i64), Vec<Arc<Block>>> = BTreeMap::new();
        for b in read(&self.blocks).values() {
            let m = &b.meta;
            let hour = m.min_ms.div_euclid(HOUR_MS) * HOUR_MS;
            if m.server == self.server
                && m.level == 0
                && m.max_ms < hour + HOUR_MS
                && hour + HOUR_MS <= hour_over
            {
                groups
                    .entry((m.tenant.clone(), hour))
                    .or_default()
                    .push(b.clone());
            }
        }
        let mut out = Vec::new();
        for ((tenant, hour), sources) in groups {
            if sources.len() < 2 {
                continue;
            }
            let mut part = Part::default();
            for s in &sources {
                part.absorb(&read(&s.part))?;
            }
            part.seal();
            let mut meta = self.meta(
                self.block_id(hour),
                tenant.clone(),
                &part,
                sources.iter().map(|s| s.meta.wal_cut).max().unwrap_or(0),
            );
            meta.level = sources.iter().map(|s| s.meta.level).max().unwrap_or(0) + 1;
            meta.sources = sources.iter().map(|s| s.meta.id.clone()).collect();
            let (files, kinds) = block::encode(&meta.id, &part)?;
            block::fill_meta(&mut meta, &part, kinds, &files);
            block::upload(&*self.storage, &meta, files).await?;
            {
                let mut blocks = write(&self.blocks);
                for s in &sources {
                    blocks.remove(&s.meta.id);
                }
                blocks.insert(
                    meta.id.clone(),
                    Arc::new(Block {
                        meta: meta.clone(),
                        part: RwLock::new(part),
                        flushed_at: Some(Instant::now()),
                    }),
                );
            }
            // The new block names its sources, so readers skip them even
            // if deleting them fails here.
            for s in &sources {
                if let Err(e) = delete_block(&*self.storage, &s.meta.tenant, &s.meta.id).await {
                    tracing::warn!(target: "kiln_store", "deleting compacted block: {e}");
                }
            }
            self.compactions.fetch_add(1, Ordering::Relaxed);
            out.push(meta.id);
        }
        Ok(out)
    }

    /// Deletes this server's blocks whose newest data is older than their
    /// tenant's retention. Returns how many went.
    pub async fn expire(&self) -> Result<usize, Error> {
        let _busy = self.busy.lock().await;
        let now = now_ms();
        let keep = |tenant: &str| {
            self.opts
                .retention
                .get(tenant)
                .or_else(|| self.opts.retention.get(""))
                .map(|d| d.as_millis() as i64)
        };
        let old: Vec<Arc<Block>> = read(&self.blocks)
            .values()
            .filter(|b| {
                b.meta.server == self.server
                    && keep(&b.meta.tenant).is_some_and(|k| b.meta.max_ms < now - k)
            })
            .cloned()
            .collect();
        for b in &old {
            delete_block(&*self.storage, &b.meta.tenant, &b.meta.id).await?;
            write(&self.blocks).remove(&b.meta.id);
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        Ok(old.len())
    }

    /// One round of upkeep: cut the head if it is due or too large, then
    /// compact, expire and refresh. A server calls this every second.
    pub async fn tick(&self) -> Result<(), Error> {
        let due = self
            .last_cut
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= self.opts.flush_every;
        let big =
            read(&self.head).values().map(Part::bytes).sum::<usize>() >= self.opts.head_max_bytes;
        if due || big {
            self.flush().await?;
        }
        self.compact().await?;
        self.expire().await?;
        self.refresh_if_stale().await
    }
}

/// Adds what `q` selects of one stored part to `m`.
fn read_part(part: &RwLock<Part>, at: &Read, m: &mut Merger) -> Result<(), Error> {
    write(part).prepare(at.q, at.from_ms, at.until_ms);
    read(part).read_into(at, m)
}

/// The WAL record of one ingested profile.
fn encode_record(tenant: &str, labels: &[(String, String)], time_ms: i64, pprof: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pprof.len() + 64 * labels.len() + 32);
    let mut put = |s: &[u8]| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    };
    put(tenant.as_bytes());
    put(&time_ms.to_le_bytes());
    put(&(labels.len() as u32).to_le_bytes());
    for (k, v) in labels {
        put(k.as_bytes());
        put(v.as_bytes());
    }
    put(pprof);
    out
}

/// The fields of a record, or `None` if it is malformed.
#[allow(clippy::type_complexity)]
fn decode_record(mut b: &[u8]) -> Option<(String, Vec<(String, String)>, i64, &[u8])> {
    let mut take = || -> Option<&[u8]> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let s = b.get(4..4 + n)?;
        b = &b[4 + n..];
        Some(s)
    };
    let tenant = String::from_utf8(take()?.to_vec()).ok()?;
    let time = i64::from_le_bytes(take()?.try_into().ok()?);
    let n = u32::from_le_bytes(take()?.try_into().ok()?) as usize;
    let mut labels = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        let k = String::from_utf8(take()?.to_vec()).ok()?;
        let v = String::from_utf8(take()?.to_vec()).ok()?;
        labels.push((k, v));
    }
    let pprof = take()?;
    Some((tenant, labels, time, pprof))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a temporary directory (kept alive by the first element)
    /// and a runtime to ingest with.
    fn fresh() -> (tempfile::TempDir, Store, tokio::runtime::Runtime) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt
            .block_on(Store::open(dir.path(), Options::default()))
            .unwrap();
        (dir, store, rt)
    }

    #[test]
    fn service_rollup_answers_like_the_series_it_merges() {
        let (_dir, store, rt) = fresh();
        let l = |svc: &str, inst: &str| {
            vec![
                (NAME_LABEL.to_string(), "process_cpu".to_string()),
                ("service_name".to_string(), svc.to_string()),
                ("instance".to_string(), inst.to_string()),
            ]
        };
        rt.block_on(async {
            for (i, inst) in ["a", "b", "c"].iter().enumerate() {
                for minute in 0..3i64 {
                    let text = format!("main;work {}\nmain;io {}\n", 10 + i, minute + 1);
                    let p = kiln_profile::decode(text.as_bytes(), &Default::default()).unwrap();
                    store
                        .ingest("", l("svc", inst), minute * BUCKET_MS + 5, p)
                        .await
                        .unwrap();
                }
            }
            let p = kiln_profile::decode(b"other 99\n", &Default::default()).unwrap();
            store.ingest("", l("other", "a"), 5, p).await.unwrap();
        });
        let rolled = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
        let per_series =
            selector::parse(r#"process_cpu{service_name="svc", instance=~".*"}"#).unwrap();
        let head = store.head.read().unwrap();
        assert!(head[""].uses_rollup(&rolled));
        assert!(!head[""].uses_rollup(&per_series));
        drop(head);
        for (from, until) in [(0, 3 * BUCKET_MS), (BUCKET_MS, 2 * BUCKET_MS)] {
            let a = store
                .select("", &rolled, from, until, Detail::Labels)
                .unwrap()
                .unwrap();
            let b = store
                .select("", &per_series, from, until, Detail::Labels)
                .unwrap()
                .unwrap();
            let top = |p: &Profile| kiln_profile::top(p, 0).unwrap().rows;
            assert_eq!(top(&a), top(&b), "{from}..{until}");
        }
        let all = store
            .select("", &rolled, 0, 3 * BUCKET_MS, Detail::Labels)
            .unwrap()
            .unwrap();
        assert_eq!(all.total(0), 3 * (10 + 11 + 12) + 3 * (1 + 2 + 3));
    }

    #[test]
    fn whole_hours_read_merged_and_late_data_invalidates_them() {
        let (_dir, store, rt) = fresh();
        let labels = vec![
            (NAME_LABEL.to_string(), "process_cpu".to_string()),
            ("service_name".to_string(), "svc".to_string()),
        ];
        let put = |minute: i64, n: i64| {
            let text = format!("main;m{} {n}\n", minute % 7);
            let p = kiln_profile::decode(text.as_bytes(), &Default::default()).unwrap();
            rt.block_on(store.ingest("", labels.clone(), minute * BUCKET_MS + 1, p))
                .unwrap();
        };
        // Three hours, one profile a minute, value = minute + 1.
        for minute in 0..180 {
            put(minute, minute + 1);
        }
        let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
        let sum = |a: i64, b: i64| (a..b).map(|m| m + 1).sum::<i64>();
        let total = |from: i64, until: i64| {
            store
                .select("", &q, from * BUCKET_MS, until * BUCKET_MS, Detail::Labels)
                .unwrap()
                .map_or(0, |p| p.total(0))
        };
        for (from, until) in [(0, 180), (30, 150), (60, 120), (59, 61), (0, 60)] {
            // Twice: the second read uses the merged hours.
            assert_eq!(total(from, until), sum(from, until), "{from}..{until}");
            assert_eq!(
                total(from, until),
                sum(from, until),
                "{from}..{until} again"
            );
        }
        let head = store.head.read().unwrap();
        assert_eq!(
            head[""].rollup_hours(&q).len(),
            3,
            "every whole hour was summed once asked"
        );
        drop(head);
        // A late profile for minute 70 drops hour 1's merge; nothing is lost.
        put(70, 1000);
        assert!(
            !store.head.read().unwrap()[""]
                .rollup_hours(&q)
                .contains(&HOUR_MS)
        );
        assert_eq!(total(0, 180), sum(0, 180) + 1000);
        assert_eq!(total(60, 120), sum(60, 120) + 1000);
    }

    #[test]
    fn hours_that_are_over_are_summed_ahead_of_queries() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let opts = || Options {
            quiet_before_sum: Duration::ZERO,
            ..Options::default()
        };
        let store = rt.block_on(Store::open(dir.path(), opts())).unwrap();
        let labels = vec![
            (NAME_LABEL.to_string(), "process_cpu".to_string()),
            ("service_name".to_string(), "svc".to_string()),
        ];
        let put = |minute: i64, n: i64| {
            let text = format!("main;m{} {n}\n", minute % 5);
            let p = kiln_profile::decode(text.as_bytes(), &Default::default()).unwrap();
            rt.block_on(store.ingest("", labels.clone(), minute * BUCKET_MS + 1, p))
                .unwrap();
        };
        for minute in 0..120 {
            put(minute, minute + 1);
        }
        let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
        let hours = || store.head.read().unwrap()[""].rollup_hours(&q);
        assert!(hours().is_empty(), "no query asked yet");
        let mut summed = 0;
        while store.sum_an_hour() {
            summed += 1;
            assert!(summed <= 2, "each hour once");
        }
        assert_eq!(hours(), [0, HOUR_MS], "both hours summed, unasked");
        assert_eq!(store.stats().hours_summed, 2);
        let total = || {
            store
                .select("", &q, 0, 2 * HOUR_MS, Detail::Stacks)
                .unwrap()
                .map_or(0, |p| p.total(0))
        };
        assert_eq!(total(), (1..=120).sum::<i64>());
        // A sum taken before a late profile arrived is not kept.
        let job = store.head.read().unwrap()[""].unsummed_hour(i64::MAX, Duration::ZERO);
        assert!(job.is_none());
        put(10, 1000);
        assert_eq!(hours(), [HOUR_MS], "the late profile dropped hour 0's sum");
        let job = store.head.read().unwrap()[""]
            .unsummed_hour(i64::MAX, Duration::ZERO)
            .unwrap();
        let sum = job.sum();
        put(11, 100);
        let kept = store
            .head
            .write()
            .unwrap()
            .get_mut("")
            .unwrap()
            .put_hour(job, sum);
        assert!(!kept);
        assert_eq!(hours(), [HOUR_MS], "rows arrived meanwhile: not kept");
        assert!(store.sum_an_hour());
        assert_eq!(hours(), [0, HOUR_MS]);
        assert_eq!(total(), (1..=120).sum::<i64>() + 1100);
        // Blocks too: read back after a restart, nothing is summed until
        // the upkeep sums it.
        rt.block_on(store.flush()).unwrap();
        drop(store);
        let store = rt.block_on(Store::open(dir.path(), opts())).unwrap();
        let blocks: Vec<Arc<Block>> = store.blocks.read().unwrap().values().cloned().collect();
        assert_eq!(blocks.len(), 1);
        let block_hours = || blocks[0].part.read().unwrap().rollup_hours(&q);
        assert!(block_hours().is_empty());
        while store.sum_an_hour() {}
        assert_eq!(block_hours(), [0, HOUR_MS]);
        let p = store
            .select("", &q, 0, 2 * HOUR_MS, Detail::Stacks)
            .unwrap();
        assert_eq!(p.unwrap().total(0), (1..=120).sum::<i64>() + 1100);
    }

    /// A profile as a comparable map: (frames root first, sample labels)
    /// → values; independent of table order.
    type Canon = BTreeMap<(Vec<String>, Vec<(String, String)>), Vec<i64>>;

    fn canon(p: &Profile) -> Canon {
        let mut out = BTreeMap::new();
        let n = p.sample_types.len();
        for (i, s) in p.samples.iter().enumerate() {
            let mut frames = Vec::new();
            for &l in p.stack(s.stack).iter().rev() {
                p.frame_names(l, |f| frames.push(format!("{f:?}")));
            }
            let labels = p
                .labels(s.labels)
                .iter()
                .map(|l| (p.str(l.key).to_string(), p.str(l.str).to_string()))
                .collect();
            let v: &mut Vec<i64> = out.entry((frames, labels)).or_insert_with(|| vec![0; n]);
            for (o, x) in v.iter_mut().zip(&p.values[i * n..(i + 1) * n]) {
                *o += x;
            }
        }
        out
    }

    /// `c` with sample labels dropped: what [`Detail::Stacks`] answers.
    fn unlabelled(c: &Canon) -> Canon {
        let mut out = Canon::new();
        for ((frames, _), v) in c {
            let e = out
                .entry((frames.clone(), Vec::new()))
                .or_insert_with(|| vec![0; v.len()]);
            for (o, x) in e.iter_mut().zip(v) {
                *o += x;
            }
        }
        out
    }

    /// Asserts that `q` answers per stack what it answers per label set,
    /// labels dropped.
    fn stacks_agree(store: &Store, q: &selector::Query) {
        let full = store
            .select("", q, 0, 3_600_000, Detail::Labels)
            .unwrap()
            .unwrap();
        let stacks = store
            .select("", q, 0, 3_600_000, Detail::Stacks)
            .unwrap()
            .unwrap();
        assert_eq!(canon(&stacks), unlabelled(&canon(&full)), "{q}");
        assert!(
            canon(&full).len() > canon(&stacks).len(),
            "labels were there"
        );
    }

    fn labels(svc: &str, inst: &str) -> Vec<(String, String)> {
        vec![
            (NAME_LABEL.to_string(), "process_cpu".to_string()),
            ("service_name".to_string(), svc.to_string()),
            ("instance".to_string(), inst.to_string()),
        ]
    }

    /// A two-type profile with thread labels, different per `seed`.
    fn profile(seed: i64) -> Profile {
        let mut p = Profile::with_sample_types(&[("samples", "count"), ("cpu", "nanoseconds")]);
        p.period_type = Some(p.value_type("cpu", "nanoseconds"));
        p.period = 10_000_000;
        let mut locs = Vec::new();
        for name in ["main", "serve", "parse", "hash"] {
            let name = p.strings.intern(name);
            let f = p.add_function(kiln_profile::Function {
                name,
                ..Default::default()
            });
            locs.push(p.add_location(kiln_profile::Location {
                address: 0x1000 + locs.len() as u64,
                lines: vec![kiln_profile::Line {
                    function: f,
                    line: 7,
                    column: 0,
                }],
                ..Default::default()
            }));
        }
        let key = p.strings.intern("thread_name");
        for (i, t) in ["worker-1", "worker-2"].iter().enumerate() {
            let t = p.strings.intern(t);
            let label = [kiln_profile::Label {
                key,
                str: t,
                ..Default::default()
            }];
            let leaf = 2 + (seed as usize + i) % 2;
            let stack = [locs[leaf], locs[1], locs[0]];
            p.push_sample(
                &stack,
                &label,
                &[seed + i as i64, (seed + i as i64) * 10_000_000],
            );
        }
        p
    }

    #[test]
    fn blocks_answer_like_the_head_and_restart_replays_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
        let by_inst = selector::parse(r#"process_cpu{instance="b"}"#).unwrap();
        let (before, tail) = rt.block_on(async {
            let store = Store::open(dir.path(), Options::default()).await.unwrap();
            for i in 0..40i64 {
                let inst = ["a", "b"][i as usize % 2];
                store
                    .ingest("", labels("svc", inst), i * 20_000, profile(i))
                    .await
                    .unwrap();
            }
            store
                .ingest("t2", labels("svc", "a"), 5, profile(99))
                .await
                .unwrap();
            let before = store
                .select("", &q, 0, 3_600_000, Detail::Labels)
                .unwrap()
                .unwrap();
            let before_b = store
                .select("", &by_inst, 0, 3_600_000, Detail::Labels)
                .unwrap()
                .unwrap();
            stacks_agree(&store, &q);
            let ids = store.flush().await.unwrap();
            assert_eq!(ids.len(), 2, "one block per tenant");
            let st = store.stats();
            assert_eq!((st.blocks, st.head_rows, st.flushes), (2, 0, 1));
            assert_eq!(st.wal_bytes, 0, "the log the blocks hold is gone");
            let after = store
                .select("", &q, 0, 3_600_000, Detail::Labels)
                .unwrap()
                .unwrap();
            assert_eq!(canon(&after), canon(&before));
            let after_b = store
                .select("", &by_inst, 0, 3_600_000, Detail::Labels)
                .unwrap()
                .unwrap();
            assert_eq!(canon(&after_b), canon(&before_b));
            assert_eq!(store.label_values("", "instance", None), ["a", "b"]);
            assert_eq!(
                store.profile_types(""),
                [
                    "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
                    "process_cpu:samples:count:cpu:nanoseconds"
                ]
            );
            // Tenants stay apart in blocks too.
            let t2 = store
                .select("t2", &q, 0, 3_600_000, Detail::Labels)
                .unwrap()
                .unwrap();
            assert_eq!(t2.total(0), 99 + 100);
            // The tail, after the cut, lives in the log only.
            store
                .ingest("", labels("svc", "c"), 1_000, profile(7))
                .await
                .unwrap();
            (before, profile(7))
        });
        let store = rt
            .block_on(Store::open(dir.path(), Options::default()))
            .unwrap();
        let st = store.stats();
        assert_eq!(
            (st.blocks, st.profiles),
            (2, 1),
            "blocks loaded, one record replayed"
        );
        let now = store
            .select("", &q, 0, 3_600_000, Detail::Labels)
            .unwrap()
            .unwrap();
        let mut want = canon(&before);
        for (k, v) in canon(&tail) {
            let e = want.entry(k).or_insert_with(|| vec![0; v.len()]);
            for (o, x) in e.iter_mut().zip(v) {
                *o += x;
            }
        }
        assert_eq!(canon(&now), want);
        // A typed query reads one column from blocks and head alike.
        let cpu =
            selector::parse(r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="svc"}"#)
                .unwrap();
        let p = store
            .select("", &cpu, 0, 3_600_000, Detail::Labels)
            .unwrap()
            .unwrap();
        assert_eq!(p.sample_types.len(), 1);
        assert_eq!(p.total(0), now.total(1));
        // Per stack, from blocks and head together, whole and typed.
        stacks_agree(&store, &q);
        stacks_agree(&store, &cpu);
    }

    #[test]
    fn a_cut_that_did_not_finish_is_replayed_once() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
        let backup = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let store = Store::open(dir.path(), Options::default()).await.unwrap();
            for i in 0..10 {
                store
                    .ingest("", labels("svc", "a"), i * 1000, profile(i))
                    .await
                    .unwrap();
            }
            for e in std::fs::read_dir(dir.path().join("wal")).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), backup.path().join(e.file_name())).unwrap();
            }
            store.flush().await.unwrap();
        });
        // As if the server died after writing the block and before noting
        // the cut: the log is all there and the note says nothing.
        for e in std::fs::read_dir(backup.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join("wal").join(e.file_name())).unwrap();
        }
        std::fs::remove_file(dir.path().join("flushed")).unwrap();
        let store = rt
            .block_on(Store::open(dir.path(), Options::default()))
            .unwrap();
        assert_eq!(store.stats().blocks, 0, "the unfinished block is removed");
        let p = store
            .select("", &q, 0, 60_000, Detail::Labels)
            .unwrap()
            .unwrap();
        assert_eq!(p.total(0), (0..10).map(|i| 2 * i + 1).sum::<i64>());
    }

    #[test]
    fn compaction_merges_an_hour_and_retention_deletes_old_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
        let old = (now_ms() / HOUR_MS - 3) * HOUR_MS;
        let mut opts = Options::default();
        opts.retention
            .insert(String::new(), Duration::from_secs(2 * 3600));
        opts.retention
            .insert("keep".into(), Duration::from_secs(10 * 3600));
        rt.block_on(async {
            let store = Store::open(dir.path(), opts.clone()).await.unwrap();
            for round in 0..3 {
                for i in 0..5 {
                    let t = old + (round * 5 + i) * 60_000;
                    store
                        .ingest("", labels("svc", "a"), t, profile(i))
                        .await
                        .unwrap();
                    store
                        .ingest("keep", labels("svc", "a"), t, profile(i))
                        .await
                        .unwrap();
                }
                store.flush().await.unwrap();
            }
            let total = |s: &Store| {
                s.select("", &q, old, old + HOUR_MS, Detail::Labels)
                    .unwrap()
                    .unwrap()
                    .total(0)
            };
            let before = total(&store);
            assert_eq!(store.stats().blocks, 6);
            let made = store.compact().await.unwrap();
            assert_eq!(made.len(), 2, "one per tenant for the hour");
            assert_eq!(store.stats().blocks, 2);
            assert_eq!(total(&store), before);
            drop(store);
            // Sources are gone from storage; a restart sees the compacted
            // blocks alone and the same totals.
            let store = Store::open(dir.path(), opts.clone()).await.unwrap();
            assert_eq!(store.stats().blocks, 2);
            assert_eq!(total(&store), before);
            assert_eq!(
                store.expire().await.unwrap(),
                1,
                "the default tenant's hour is past 2 h"
            );
            assert!(
                store
                    .select("", &q, old, old + HOUR_MS, Detail::Labels)
                    .unwrap()
                    .is_none()
            );
            assert!(
                store
                    .select("keep", &q, old, old + HOUR_MS, Detail::Labels)
                    .unwrap()
                    .is_some()
            );
        });
        let left: Vec<_> = walk(&dir.path().join("blocks"));
        assert!(left.iter().all(|p| p.contains("/t-keep/")), "{left:?}");
    }

    fn walk(d: &Path) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.extend(walk(&p));
                } else {
                    out.push(p.display().to_string());
                }
            }
        }
        out
    }

    #[test]
    fn two_servers_on_one_bucket_answer_alike() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let bucket: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        rt.block_on(async {
            let opts = |id: &str| Options {
                storage: Some(bucket.clone()),
                server_id: Some(id.into()),
                refresh_every: Duration::ZERO,
                ..Options::default()
            };
            let a = Store::open(da.path(), opts("a")).await.unwrap();
            let b = Store::open(db.path(), opts("b")).await.unwrap();
            // What a server answers: its own view plus each peer's head.
            let answer = |me: &Store, peer: &Store| {
                let mut m = Merger::new();
                for p in [
                    me.select("", &q, 0, HOUR_MS, Detail::Labels).unwrap(),
                    peer.select_head("", &q, 0, HOUR_MS, Detail::Labels, &me.peer_blocks())
                        .unwrap(),
                ]
                .into_iter()
                .flatten()
                {
                    m.add(&p).unwrap();
                }
                canon(&m.finish())
            };
            for i in 0..6 {
                a.ingest("", labels("svc", "a"), i * 1000, profile(i))
                    .await
                    .unwrap();
                b.ingest("", labels("svc", "b"), i * 1000, profile(i + 10))
                    .await
                    .unwrap();
            }
            let heads = answer(&a, &b);
            assert_eq!(answer(&b, &a), heads);
            a.flush().await.unwrap();
            // b has not looked at the bucket yet: a still answers for its
            // new block.
            assert_eq!(answer(&b, &a), heads);
            assert_eq!(answer(&a, &b), heads);
            b.refresh().await.unwrap();
            assert_eq!(b.stats().blocks, 1);
            assert_eq!(
                answer(&b, &a),
                heads,
                "counted once after b found the block"
            );
            b.flush().await.unwrap();
            a.refresh().await.unwrap();
            assert_eq!(answer(&a, &b), heads);
            assert_eq!(answer(&b, &a), heads);
        });
    }

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let labels = vec![("a".to_string(), "1".to_string())];
        let r = encode_record("t", &labels, -5, b"xyz");
        let (t, l, time, p) = decode_record(&r).unwrap();
        assert_eq!((t.as_str(), l, time, p), ("t", labels, -5, &b"xyz"[..]));
        for cut in 0..r.len() {
            assert!(decode_record(&r[..cut]).is_none());
        }
    }
}
