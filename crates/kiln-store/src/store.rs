//! The [`Store`] itself: its state, opening it (the log replayed, then
//! blocks listed, at once or in the background), ingest (log append, then
//! head), counters, and the periodic tick that drives cuts, compaction,
//! retention and refresh. Small helpers every part of the crate shares
//! live here too.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_profile::Profile;
use object_store::ObjectStore;

use crate::block::Level;
use crate::part::Part;
use crate::record::{decode_record, encode_record};
use crate::{BUCKET_MS, Error, Options, Stats, block, wal};

/// A part in storage (or on its way there).
pub(crate) struct Block {
    pub(crate) meta: block::Meta,
    /// As much of the block as [`Block::level`] says: the block cache
    /// (`cache.rs`) loads and drops the rest.
    pub(crate) part: RwLock<Part>,
    /// When this server flushed it (None: written by another server, or
    /// before this process started).
    pub(crate) flushed_at: Option<Instant>,
    /// How much of it is in memory ([`Level`] as a number) ...
    pub(crate) level: AtomicU8,
    /// ... and the bytes that takes beyond the index.
    pub(crate) bytes: AtomicU64,
    /// Queries reading it now: it is not dropped while any is.
    pub(crate) pins: AtomicUsize,
    /// When a query last read it ([`Store::clock`]): the least recently
    /// read are dropped first.
    pub(crate) used: AtomicU64,
    /// One load of it at a time.
    pub(crate) loading: tokio::sync::Mutex<()>,
    /// Per row group of its `samples.parquet`, the series it holds (read
    /// from the footer when first needed) ...
    pub(crate) ranges: std::sync::OnceLock<Vec<(u32, u32)>>,
    /// ... and which groups' rows are in `part` (all, at `Full`).
    pub(crate) groups: Mutex<Vec<bool>>,
}

impl Block {
    /// A block holding `part` at `level`.
    pub(crate) fn new(
        meta: block::Meta,
        part: Part,
        level: Level,
        flushed_at: Option<Instant>,
    ) -> Block {
        let bytes = if level > Level::Index {
            part.bytes()
        } else {
            0
        };
        Block {
            meta,
            part: RwLock::new(part),
            flushed_at,
            level: AtomicU8::new(level as u8),
            bytes: AtomicU64::new(bytes as u64),
            pins: AtomicUsize::new(0),
            used: AtomicU64::new(0),
            loading: tokio::sync::Mutex::new(()),
            ranges: std::sync::OnceLock::new(),
            groups: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Acquire))
    }

    pub(crate) fn overlaps(&self, tenant: &str, from_ms: i64, until_ms: i64) -> bool {
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        self.meta.tenant == tenant && self.meta.max_ms >= lo && self.meta.min_ms < until_ms
    }
}

/// The store.
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    pub(crate) server: String,
    pub(crate) storage: Arc<dyn ObjectStore>,
    pub(crate) wal: wal::Wal,
    /// Ingests hold it shared across log append and head add; a cut holds
    /// it alone, so every record below the cut is in the cut head.
    pub(crate) gate: tokio::sync::RwLock<()>,
    /// Tenant → its head part.
    pub(crate) head: RwLock<HashMap<String, Part>>,
    /// Cut heads being written (or waiting to be retried).
    pub(crate) frozen: RwLock<Vec<Arc<Block>>>,
    /// Blocks by id.
    pub(crate) blocks: RwLock<BTreeMap<String, Arc<Block>>>,
    /// One cut, compaction or refresh at a time.
    pub(crate) busy: tokio::sync::Mutex<()>,
    pub(crate) last_cut: Mutex<Instant>,
    pub(crate) last_refresh: Mutex<Option<Instant>>,
    pub(crate) seq: AtomicU64,
    pub(crate) profiles: AtomicU64,
    pub(crate) samples: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) flush_errors: AtomicU64,
    /// Head and pending bytes as of the last tick, plus what was ingested
    /// since: what ingest checks against its bound, without walking the
    /// head each time.
    pub(crate) held: AtomicU64,
    /// Ingests refused for memory.
    pub(crate) refused: AtomicU64,
    /// After a failed upload: when to try again, and the delay that led
    /// there (doubled at each failure, 1 s to 60 s).
    pub(crate) retry: Mutex<Option<(Instant, Duration)>>,
    pub(crate) compactions: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) hours_summed: AtomicU64,
    /// Day-sum blocks written.
    pub(crate) days_summed: AtomicU64,
    /// Peers' blocks found or forgotten.
    pub(crate) found: AtomicU64,
    /// Whether every block in storage at the start is known (see
    /// [`Store::load_blocks`]).
    pub(crate) loaded: AtomicBool,
    /// The log segment replay began at: this server's blocks naming a
    /// later cut that are not known yet were left by a cut that did not
    /// complete.
    pub(crate) replayed_from: u64,
    /// Ticks once per block read by a query: the cache's clock.
    pub(crate) clock: AtomicU64,
    /// Block reads served from memory, loads from storage, and drops.
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_loads: AtomicU64,
    pub(crate) cache_drops: AtomicU64,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The server id kept in `DIR/server-id`, made on first use.
pub(crate) fn server_id(dir: &Path) -> Result<String, Error> {
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
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), Error> {
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
pub(crate) fn flushed_upto(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("flushed"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Store {
    /// Opens the store under `dir` (creating it): replays the log written
    /// since the last cut and lists every block in storage
    /// ([`Store::open_lazy`] then [`Store::load_blocks`]).
    pub async fn open(dir: &Path, opts: Options) -> Result<Arc<Store>, Error> {
        let store = Store::open_lazy(dir, opts)?;
        store.load_blocks().await?;
        Ok(store)
    }

    /// Opens the store under `dir` (creating it) and replays the log
    /// written since the last cut: it takes profiles at once. Queries wait
    /// (up to `load_wait`, then [`Error::Unavailable`]) until
    /// [`Store::load_blocks`] has listed the blocks in storage.
    pub fn open_lazy(dir: &Path, opts: Options) -> Result<Arc<Store>, Error> {
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
        Ok(Arc::new(Store {
            dir: dir.to_path_buf(),
            opts,
            server,
            storage,
            wal,
            gate: tokio::sync::RwLock::new(()),
            head: RwLock::new(head),
            frozen: RwLock::new(Vec::new()),
            blocks: RwLock::new(BTreeMap::new()),
            busy: tokio::sync::Mutex::new(()),
            last_cut: Mutex::new(Instant::now()),
            last_refresh: Mutex::new(Some(Instant::now())),
            seq: AtomicU64::new(0),
            profiles: AtomicU64::new(profiles),
            samples: AtomicU64::new(samples),
            flushes: AtomicU64::new(0),
            flush_errors: AtomicU64::new(0),
            held: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            retry: Mutex::new(None),
            compactions: AtomicU64::new(0),
            hours_summed: AtomicU64::new(0),
            days_summed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            found: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            replayed_from: upto,
            clock: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_loads: AtomicU64::new(0),
            cache_drops: AtomicU64::new(0),
        }))
    }

    /// A number that changes whenever what a query could read changes
    /// (ingest, cut, compaction, expiry, peers' blocks found): a cache of
    /// answers keyed on it is never stale.
    pub fn generation(&self) -> u64 {
        self.profiles.load(Ordering::Relaxed)
            + self.flushes.load(Ordering::Relaxed)
            + self.compactions.load(Ordering::Relaxed)
            + self.days_summed.load(Ordering::Relaxed)
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
        labels: Vec<(String, String)>,
        time_ms: i64,
        profile: Profile,
        pprof: &[u8],
    ) -> Result<(), Error> {
        self.admit()?;
        self.ingest_admitted(tenant, labels, time_ms, profile, pprof)
            .await
    }

    /// Whether the store takes profiles now: refused with
    /// [`Error::Unavailable`] while object storage fails and the head and
    /// the cut heads waiting for it hold `head_max_bytes +
    /// pending_max_bytes`. A caller storing several profiles as one (a
    /// push of many series) asks once, then calls [`Store::ingest_admitted`].
    pub fn admit(&self) -> Result<(), Error> {
        let limit = (self.opts.head_max_bytes + self.opts.pending_max_bytes) as u64;
        if self.held.load(Ordering::Relaxed) >= limit {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Unavailable {
                reason: "object storage is failing and the heads waiting for it are full".into(),
                retry_after: self.retry_in().max(Duration::from_secs(1)),
            });
        }
        Ok(())
    }

    /// As [`Store::ingest_encoded`] without asking [`Store::admit`]: for
    /// the rest of a push whose first part was admitted.
    pub async fn ingest_admitted(
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
        // Until the next tick measures the head: what was logged.
        self.held.fetch_add(pprof.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// How long until the next upload attempt (zero: none is waiting).
    pub(crate) fn retry_in(&self) -> Duration {
        let retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        retry.map_or(Duration::ZERO, |(at, _)| {
            at.saturating_duration_since(Instant::now())
        })
    }

    /// Bytes held by the head and by cut heads waiting for storage.
    pub(crate) fn measure_held(&self) -> (u64, u64) {
        let head: usize = read(&self.head).values().map(Part::bytes).sum();
        let pending: usize = read(&self.frozen)
            .iter()
            .map(|b| read(&b.part).bytes())
            .sum();
        (head as u64, pending as u64)
    }

    /// Counters for `/metrics`. Takes one lock at a time and none twice:
    /// a second read of a lock a writer waits for would wait forever.
    pub fn stats(&self) -> Stats {
        let (series, buckets, head_rows, head_bytes) = {
            let head = read(&self.head);
            (
                head.values().map(|p| p.series.len() as u64).sum(),
                head.values().map(Part::buckets).sum(),
                head.values().map(Part::rows).sum(),
                head.values().map(|p| p.bytes() as u64).sum(),
            )
        };
        let (blocks, block_bytes, block_rows, cache_bytes) = {
            let blocks = read(&self.blocks);
            (
                blocks.len() as u64,
                blocks
                    .values()
                    .map(|b| b.meta.files.values().sum::<u64>())
                    .sum(),
                blocks.values().map(|b| b.meta.rows).sum(),
                blocks
                    .values()
                    .map(|b| b.bytes.load(Ordering::Relaxed))
                    .sum(),
            )
        };
        let frozen: Vec<Arc<Block>> = read(&self.frozen).clone();
        Stats {
            series,
            profiles: self.profiles.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
            buckets,
            head_rows,
            head_bytes,
            blocks,
            block_bytes,
            block_rows,
            wal_bytes: self.wal.bytes(),
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_errors: self.flush_errors.load(Ordering::Relaxed),
            pending_bytes: frozen.iter().map(|b| read(&b.part).bytes() as u64).sum(),
            refused: self.refused.load(Ordering::Relaxed),
            compactions: self.compactions.load(Ordering::Relaxed),
            hours_summed: self.hours_summed.load(Ordering::Relaxed),
            days_summed: self.days_summed.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            cache_bytes,
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_loads: self.cache_loads.load(Ordering::Relaxed),
            cache_drops: self.cache_drops.load(Ordering::Relaxed),
            loaded: self.loaded.load(Ordering::Acquire),
        }
    }

    /// One round of upkeep: cut the head if it is due or too large (or,
    /// while cut heads wait for storage, retry their upload once its
    /// backoff has passed), then compact, expire and refresh. A server
    /// calls this every second.
    pub async fn tick(&self) -> Result<(), Error> {
        let (head, pending) = self.measure_held();
        self.held.store(head + pending, Ordering::Relaxed);
        let due = self
            .last_cut
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            >= self.opts.flush_every;
        let big = head >= self.opts.head_max_bytes as u64;
        let waiting = !read(&self.frozen).is_empty();
        if (due || big || waiting) && self.retry_in().is_zero() {
            self.flush().await?;
        }
        if !self.loaded.load(Ordering::Acquire) {
            // Compaction, expiry and the peers' blocks wait for the view
            // of storage.
            return Ok(());
        }
        self.compact().await?;
        self.sum_a_day().await?;
        self.expire().await?;
        self.refresh_if_stale().await
    }
}
