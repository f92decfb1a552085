//! `kiln-store` keeps profiles for the server. An ingested profile is
//! appended to a write-ahead log (group commit: one sync for every request
//! waiting) before it is acknowledged, so nothing acknowledged is lost to
//! `kill -9`; it is then folded into the head, an in-memory index of series
//! by labels whose profiles are merged per series and minute, and queries
//! read it at once. On start the log is replayed into the head.
//!
//! Not here yet: immutable blocks on object storage, compaction, rollups
//! and retention — until they land the log is the durable store and the
//! head holds everything (see `docs/storage-format.md`).
//!
//! It depends on `kiln-profile` only, never on the agent or the server, and
//! chooses no HTTP status codes: its [`Error`] says what went wrong.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = kiln_store::Store::open(dir.path()).unwrap();
//! let p = kiln_profile::decode(b"main;work 7\n", &Default::default()).unwrap();
//! let labels = vec![
//!     ("__name__".to_string(), "process_cpu".to_string()),
//!     ("service_name".to_string(), "svc".to_string()),
//! ];
//! store.ingest("", labels, 1_000, p).await.unwrap();
//! let q = kiln_store::selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
//! let merged = store.select("", &q, 0, 2_000).unwrap().unwrap();
//! assert_eq!(merged.total(0), 7);
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod selector;
pub mod wal;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_profile::{Merger, Profile};

/// The label that names the profile (`process_cpu`, `memory`, …).
pub const NAME_LABEL: &str = "__name__";
/// Profiles of one series are merged per bucket of this many milliseconds.
pub const BUCKET_MS: i64 = 60_000;
/// Whole hours a query covers are read from one merged profile per hour.
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

/// Series id within the head.
type SeriesId = u32;

struct Series {
    tenant: String,
    labels: Vec<(String, String)>,
    /// Its profiles by time.
    buckets: Buckets,
}

/// Profiles by time: per minute (start ms) as they come — merged per set of
/// sample types, with up to [`FOLD_AT`] more not merged yet — and per hour,
/// merged from the minutes once a query reads the whole hour; an hour's
/// entry goes when a profile arrives for one of its minutes.
#[derive(Default)]
struct Buckets {
    minutes: BTreeMap<i64, Vec<Profile>>,
    hours: BTreeMap<i64, Vec<Profile>>,
}

/// The whole hours within `[lo, until)`: `[first, end)`, empty if none.
fn whole_hours(lo: i64, until: i64) -> (i64, i64) {
    let first = (lo + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    let end = until.div_euclid(HOUR_MS) * HOUR_MS;
    (first, end.max(first))
}

impl Buckets {
    fn add(&mut self, time_ms: i64, p: Profile) {
        let minute = time_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        fold_into(self.minutes.entry(minute).or_default(), p);
        self.hours.remove(&(minute.div_euclid(HOUR_MS) * HOUR_MS));
    }

    /// Readies `[lo, until)` for reading: folds its minutes, and merges
    /// each whole hour not merged yet.
    fn prepare(&mut self, lo: i64, until: i64) {
        for (_, v) in self.minutes.range_mut(lo..until) {
            if v.len() > 1 {
                collapse(v);
            }
        }
        let (first, end) = whole_hours(lo, until);
        let mut h = first;
        while h < end {
            if !self.hours.contains_key(&h) {
                let mut v: Vec<Profile> = self
                    .minutes
                    .range(h..h + HOUR_MS)
                    .flat_map(|(_, v)| v.iter().cloned())
                    .collect();
                if !v.is_empty() {
                    collapse(&mut v);
                    self.hours.insert(h, v);
                }
            }
            h += HOUR_MS;
        }
    }

    /// The profiles that cover `[lo, until)`: merged hours where there are
    /// any, minutes elsewhere.
    fn read<'a>(&'a self, lo: i64, until: i64, out: &mut Vec<&'a Profile>) {
        let (first, end) = whole_hours(lo, until);
        if first >= end {
            out.extend(self.minutes.range(lo..until).flat_map(|(_, v)| v.iter()));
            return;
        }
        out.extend(self.minutes.range(lo..first).flat_map(|(_, v)| v.iter()));
        let mut h = first;
        while h < end {
            match self.hours.get(&h) {
                Some(v) => out.extend(v.iter()),
                None => out.extend(
                    self.minutes
                        .range(h..h + HOUR_MS)
                        .flat_map(|(_, v)| v.iter()),
                ),
            }
            h += HOUR_MS;
        }
        out.extend(self.minutes.range(end..until).flat_map(|(_, v)| v.iter()));
    }
}

/// A service's profiles of one kind, all instances merged, per minute:
/// what a query naming just the service reads instead of every series.
type RollupKey = (String, String, String);

#[derive(Default)]
struct Head {
    series: Vec<Series>,
    /// (tenant, `__name__`, `service_name`) → bucket start → merged profiles.
    rollups: HashMap<RollupKey, Buckets>,
    by_key: HashMap<(String, Vec<(String, String)>), SeriesId>,
    /// tenant → label name → value → series.
    index: HashMap<String, BTreeMap<String, BTreeMap<String, BTreeSet<SeriesId>>>>,
    samples: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Stats {
    /// Series in the head.
    pub series: u64,
    /// Profiles ingested (since start, replay included).
    pub profiles: u64,
    /// Samples ingested.
    pub samples: u64,
    /// Buckets held.
    pub buckets: u64,
}

/// The store.
pub struct Store {
    wal: wal::Wal,
    head: RwLock<Head>,
    profiles: AtomicU64,
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

impl Store {
    /// Opens the store under `dir` (creating it), replaying the log.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let mut head = Head::default();
        let mut profiles = 0u64;
        let mut bad = 0u64;
        let wal = wal::open(&dir.join("wal"), |rec| {
            match decode_record(rec).and_then(|(t, l, time, bytes)| {
                // As received: pprof raw or gzipped; decoded by content.
                kiln_profile::decode(bytes, &kiln_profile::DecodeOptions::default())
                    .ok()
                    .map(|p| (t, l, time, p))
            }) {
                Some((tenant, labels, time, p)) => {
                    head.add(tenant, labels, time, p);
                    profiles += 1;
                }
                None => bad += 1,
            }
        })?;
        if bad > 0 {
            tracing::warn!(target: "kiln_store", "replay: {bad} unreadable records skipped");
        }
        Ok(Store {
            wal,
            head: RwLock::new(head),
            profiles: AtomicU64::new(profiles),
        })
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
        self.wal
            .append(encode_record(tenant, &labels, time_ms, pprof))
            .await?;
        self.head.write().unwrap_or_else(|e| e.into_inner()).add(
            tenant.to_string(),
            labels,
            time_ms,
            profile,
        );
        self.profiles.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Every profile of tenant `tenant` matching `q` within
    /// `[from_ms, until_ms)`, reduced to the query's sample type (when it
    /// names one) and merged; `None` when nothing matches.
    pub fn select(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Option<Profile>, Error> {
        // Fold what the range's buckets still hold unmerged, once, so this
        // and later queries read one profile per bucket.
        self.head
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .collapse(tenant, q, from_ms, until_ms);
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let ids = if head.rollup_for(tenant, q).is_some() {
            Vec::new()
        } else {
            head.matching(tenant, q)
        };
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let head = &*head;
        let rollup = head.rollup_for(tenant, q);
        let mut inputs: Vec<&Profile> = Vec::new();
        match rollup {
            Some(r) => r.read(lo, until_ms, &mut inputs),
            None => {
                for &id in &ids {
                    head.series[id as usize]
                        .buckets
                        .read(lo, until_ms, &mut inputs);
                }
            }
        }
        let buckets = || inputs.iter().copied();
        // Profiles of one kind share their sample types: merge them whole
        // and keep the asked-for type once, at the end.
        let mut m = Merger::new();
        let mut whole = true;
        for p in buckets() {
            if m.add(p).is_err() {
                whole = false;
                break;
            }
        }
        if whole {
            if m.inputs() == 0 {
                return Ok(None);
            }
            let merged = m.finish();
            return Ok(Some(
                match q.sample_type().and_then(|t| merged.sample_type_index(&t)) {
                    Some(i) if merged.sample_types.len() > 1 => {
                        kiln_profile::select_type(&merged, i)
                    }
                    _ => merged,
                },
            ));
        }
        // Mixed sample types: reduce each profile to the type first.
        let ty = q.sample_type();
        let mut m = Merger::new();
        for p in buckets() {
            let one = match &ty {
                Some(t) => match p.sample_type_index(t) {
                    Some(i) => kiln_profile::select_type(p, i),
                    None => continue,
                },
                None => p.clone(),
            };
            m.add(&one)?;
        }
        Ok((m.inputs() > 0).then(|| m.finish()))
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
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let ty = q.sample_type();
        let mut out: BTreeMap<String, BTreeMap<i64, i64>> = BTreeMap::new();
        for id in head.matching(tenant, q) {
            let s = &head.series[id as usize];
            let key = group_by
                .and_then(|g| s.labels.iter().find(|(k, _)| k == g))
                .map_or(String::new(), |(_, v)| v.clone());
            let line = out.entry(key).or_default();
            let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
            for (&t, profiles) in s.buckets.minutes.range(lo..until_ms) {
                for p in profiles {
                    let i = match &ty {
                        Some(t) => p.sample_type_index(t),
                        None => p.default_type_index(),
                    };
                    if let Some(i) = i {
                        *line.entry(t).or_default() += p.total(i);
                    }
                }
            }
        }
        out
    }

    /// Label names of tenant `tenant`'s series, sorted.
    pub fn label_names(&self, tenant: &str) -> Vec<String> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        head.index
            .get(tenant)
            .map(|ix| ix.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Values of label `name` among tenant `tenant`'s series (those matching
    /// `q`, when given), sorted.
    pub fn label_values(
        &self,
        tenant: &str,
        name: &str,
        q: Option<&selector::Query>,
    ) -> Vec<String> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let Some(values) = head.index.get(tenant).and_then(|ix| ix.get(name)) else {
            return Vec::new();
        };
        match q {
            None => values.keys().cloned().collect(),
            Some(q) => {
                let ok: BTreeSet<SeriesId> = head.matching(tenant, q).into_iter().collect();
                values
                    .iter()
                    .filter(|(_, ids)| ids.iter().any(|i| ok.contains(i)))
                    .map(|(v, _)| v.clone())
                    .collect()
            }
        }
    }

    /// The label sets of tenant `tenant`'s series matching `q`.
    pub fn series(&self, tenant: &str, q: &selector::Query) -> Vec<Vec<(String, String)>> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        head.matching(tenant, q)
            .into_iter()
            .map(|id| head.series[id as usize].labels.clone())
            .collect()
    }

    /// Profile type IDs (`name:sample:unit:period:unit`) of tenant `tenant`.
    pub fn profile_types(&self, tenant: &str) -> Vec<String> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeSet::new();
        for s in head.series.iter().filter(|s| s.tenant == tenant) {
            let name = s
                .labels
                .iter()
                .find(|(k, _)| k == NAME_LABEL)
                .map_or("", |(_, v)| v.as_str());
            if let Some(p) = s.buckets.minutes.values().next().and_then(|v| v.first()) {
                let (pt, pu) = p
                    .period_type
                    .map(|v| (p.str(v.ty), p.str(v.unit)))
                    .unwrap_or(("", ""));
                for i in 0..p.sample_types.len() {
                    let (t, u) = p.sample_type_names(i);
                    out.insert(format!("{name}:{t}:{u}:{pt}:{pu}"));
                }
            }
        }
        out.into_iter().collect()
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> Stats {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        Stats {
            series: head.series.len() as u64,
            profiles: self.profiles.load(Ordering::Relaxed),
            samples: head.samples,
            buckets: head
                .series
                .iter()
                .map(|s| s.buckets.minutes.len() as u64)
                .sum(),
        }
    }
}

/// Profiles a bucket holds before they are merged into one per kind: a
/// bucket takes each profile as it comes and merges a batch at a time, so
/// an ingest costs its own size, not the size of everything merged so far
/// (measured: re-merging on every ingest was 81% of the server's CPU).
pub const FOLD_AT: usize = 16;

/// Adds `p` to a bucket, merging the bucket's profiles (per set of sample
/// types) once there are more than [`FOLD_AT`].
fn fold_into(profiles: &mut Vec<Profile>, p: Profile) {
    profiles.push(p);
    if profiles.len() > FOLD_AT {
        collapse(profiles);
    }
}

/// Merges a bucket's profiles into one per set of sample types.
fn collapse(profiles: &mut Vec<Profile>) {
    let mut groups: Vec<(Vec<(String, String)>, Merger)> = Vec::new();
    let mut kept = Vec::new();
    for p in profiles.drain(..) {
        let sig: Vec<(String, String)> = (0..p.sample_types.len())
            .map(|i| {
                let (t, u) = p.sample_type_names(i);
                (t.to_string(), u.to_string())
            })
            .collect();
        let i = match groups.iter().position(|(s, _)| *s == sig) {
            Some(i) => i,
            None => {
                groups.push((sig, Merger::new()));
                groups.len() - 1
            }
        };
        if groups[i].1.add(&p).is_err() {
            // Inconsistent on its own: keep it apart rather than lose it.
            kept.push(p);
        }
    }
    profiles.extend(groups.into_iter().map(|(_, m)| m.finish()));
    profiles.extend(kept);
}

impl Head {
    fn add(&mut self, tenant: String, labels: Vec<(String, String)>, time_ms: i64, p: Profile) {
        self.samples += p.samples.len() as u64;
        let key = (tenant, labels);
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.series.len() as SeriesId;
                let ix = self.index.entry(key.0.clone()).or_default();
                for (k, v) in &key.1 {
                    ix.entry(k.clone())
                        .or_default()
                        .entry(v.clone())
                        .or_default()
                        .insert(id);
                }
                self.series.push(Series {
                    tenant: key.0.clone(),
                    labels: key.1.clone(),
                    buckets: Buckets::default(),
                });
                self.by_key.insert(key, id);
                id
            }
        };
        let get = |k: &str| {
            self.series[id as usize]
                .labels
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        if let (Some(name), Some(service)) = (get(NAME_LABEL), get("service_name")) {
            let key = (self.series[id as usize].tenant.clone(), name, service);
            self.rollups.entry(key).or_default().add(time_ms, p.clone());
        }
        self.series[id as usize].buckets.add(time_ms, p);
    }

    /// Readies every bucket a query of `q` over the range would read (see
    /// [`Buckets::prepare`]).
    fn collapse(&mut self, tenant: &str, q: &selector::Query, from_ms: i64, until_ms: i64) {
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        if self.rollup_for(tenant, q).is_some() {
            let key = (
                tenant.to_string(),
                q.profile_name().to_string(),
                q.matchers[0].value.clone(),
            );
            if let Some(r) = self.rollups.get_mut(&key) {
                r.prepare(lo, until_ms);
            }
            return;
        }
        for id in self.matching(tenant, q) {
            self.series[id as usize].buckets.prepare(lo, until_ms);
        }
    }

    /// The rollup that answers `q` exactly, if there is one: `q` names a
    /// profile and selects by `service_name="…"` alone.
    fn rollup_for(&self, tenant: &str, q: &selector::Query) -> Option<&Buckets> {
        match q.matchers.as_slice() {
            [m] if m.name == "service_name"
                && m.op == selector::Op::Eq
                && !q.profile_name().is_empty() =>
            {
                self.rollups.get(&(
                    tenant.to_string(),
                    q.profile_name().to_string(),
                    m.value.clone(),
                ))
            }
            _ => None,
        }
    }

    /// Series of `tenant` matching `q`: equality matchers narrow through
    /// the index, the rest are checked on each candidate.
    fn matching(&self, tenant: &str, q: &selector::Query) -> Vec<SeriesId> {
        let Some(ix) = self.index.get(tenant) else {
            return Vec::new();
        };
        let mut candidates: Option<BTreeSet<SeriesId>> = None;
        let mut narrow = |name: &str, value: &str| {
            let set = ix
                .get(name)
                .and_then(|v| v.get(value))
                .cloned()
                .unwrap_or_default();
            candidates = Some(match candidates.take() {
                Some(c) => c.intersection(&set).copied().collect(),
                None => set,
            });
        };
        if !q.profile_name().is_empty() {
            narrow(NAME_LABEL, q.profile_name());
        }
        for m in &q.matchers {
            if m.op == selector::Op::Eq && !m.value.is_empty() {
                narrow(&m.name, &m.value);
            }
        }
        let all: Box<dyn Iterator<Item = SeriesId>> = match candidates {
            Some(c) => Box::new(c.into_iter()),
            None => Box::new(
                (0..self.series.len() as SeriesId)
                    .filter(|&i| self.series[i as usize].tenant == tenant),
            ),
        };
        all.filter(|&i| q.matches(&self.series[i as usize].labels))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a temporary directory (kept alive by the first element)
    /// and a runtime to ingest with.
    fn fresh() -> (tempfile::TempDir, Store, tokio::runtime::Runtime) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
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
        assert!(head.rollup_for("", &rolled).is_some());
        assert!(head.rollup_for("", &per_series).is_none());
        drop(head);
        for (from, until) in [(0, 3 * BUCKET_MS), (BUCKET_MS, 2 * BUCKET_MS)] {
            let a = store.select("", &rolled, from, until).unwrap().unwrap();
            let b = store.select("", &per_series, from, until).unwrap().unwrap();
            let top = |p: &Profile| kiln_profile::top(p, 0).unwrap().rows;
            assert_eq!(top(&a), top(&b), "{from}..{until}");
        }
        let all = store
            .select("", &rolled, 0, 3 * BUCKET_MS)
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
                .select("", &q, from * BUCKET_MS, until * BUCKET_MS)
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
        let r = head.rollup_for("", &q).unwrap();
        assert_eq!(r.hours.len(), 3, "every whole hour was merged once asked");
        drop(head);
        // A late profile for minute 70 drops hour 1's merge; nothing is lost.
        put(70, 1000);
        assert!(
            !store
                .head
                .read()
                .unwrap()
                .rollup_for("", &q)
                .unwrap()
                .hours
                .contains_key(&HOUR_MS)
        );
        assert_eq!(total(0, 180), sum(0, 180) + 1000);
        assert_eq!(total(60, 120), sum(60, 120) + 1000);
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
