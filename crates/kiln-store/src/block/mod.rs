//! Blocks: a part written to object storage as Parquet, immutable once its
//! `meta.json` is there. One block per tenant per flush; see
//! `docs/storage-format.md` for the layout, which this module is the only
//! writer and reader of. Here: the meta, paths, kinds and uploads; the
//! encoding in `write`, reading back (to a [`Level`]) in `read`, ranged
//! reads of the rows in `ranged`.

use std::collections::BTreeMap;

use arrow_array::{ArrayRef, RecordBatch};
use kiln_profile::Profile;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::part::Part;

mod ranged;
mod read;
mod write;

pub(crate) use ranged::{group_ranges, read_groups};
pub(crate) use read::{Level, put_samples, read};
pub(crate) use write::encode;

/// The file of a block holding each service's hour sums (absent from
/// blocks written before it).
pub(crate) const ROLLUPS: &str = "rollups.parquet";

/// The file of a day-sum block holding each service's totals per hour and
/// kind (absent from day sums written before it).
pub(crate) const HOUR_TOTALS: &str = "hour_totals.parquet";

/// The file of a block holding each series' totals per minute and kind
/// (absent from blocks written before it).
pub(crate) const TOTALS: &str = "totals.parquet";

/// The block format version `meta.json` carries; readers refuse others.
pub const VERSION: u32 = 1;

/// Where every block lives within the storage.
pub const ROOT: &str = "blocks";

/// A kind of profile within a block: its sample types and period.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Kind {
    /// `[type, unit]` per value column.
    pub sample_types: Vec<(String, String)>,
    /// `[type, unit]` of the period, if any.
    pub period_type: Option<(String, String)>,
    /// The sampling period.
    pub period: i64,
    /// The sample type shown by default.
    pub default_type: String,
}

/// A block's `meta.json`: written last, so a block without it is
/// incomplete and ignored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The block's id (also its directory name).
    pub id: String,
    /// The tenant whose data it holds.
    pub tenant: String,
    /// The server that wrote it.
    pub server: String,
    /// When it was written, ms since the epoch.
    pub created_ms: i64,
    /// Earliest and latest profile time held, ms.
    pub min_ms: i64,
    /// See `min_ms`.
    pub max_ms: i64,
    /// 0 for a flushed head; one more than its highest source for a
    /// compacted block.
    pub level: u32,
    /// Blocks this one replaces (compaction); they are ignored once it
    /// exists.
    pub sources: Vec<String>,
    /// A sum block: the blocks (of its writer, each within its day or
    /// quarter of a day; a week sum's, its day sums) whose services' sums
    /// it holds, summed over its span (`sums_days`, `sums_hours`). It
    /// holds no series; a query of a service over a range holding them
    /// all reads it in place of them, when every one is known (see
    /// `docs/storage-format.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sums_of: Vec<String>,
    /// A sum block's span in days: 1 (or absent) for a day sum, whose
    /// `sums_of` are blocks; 7 for a week sum (weeks counted from the
    /// epoch), whose `sums_of` are the day sums of its days.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sums_days: u32,
    /// A sum block's span in hours when shorter than a day: 6 for a
    /// quarter-day sum (UTC quarters from 00:00), whose `sums_of` are
    /// blocks; absent for day and week sums.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sums_hours: u32,
    /// The writer's log segments below this number are all in its blocks.
    pub wal_cut: u64,
    /// Series, rows, profiles and samples held.
    pub series: u64,
    /// See `series`.
    pub rows: u64,
    /// See `series`.
    pub profiles: u64,
    /// See `series`.
    pub samples: u64,
    /// Kinds of profile; a row's `kind` indexes this.
    pub kinds: Vec<Kind>,
    /// Bytes of each file.
    pub files: BTreeMap<String, u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The first millisecond of the span of `days` days (counted from the
/// epoch) holding `ms`.
pub(crate) fn span_start(ms: i64, days: u32) -> i64 {
    let len = i64::from(days.max(1)) * crate::DAY_MS;
    ms.div_euclid(len) * len
}

impl Meta {
    /// A sum block's span: its first millisecond and length (a quarter
    /// of a day, a day, or a week counted from the epoch).
    pub(crate) fn sum_span(&self) -> (i64, i64) {
        if self.sums_hours > 0 {
            let len = i64::from(self.sums_hours) * crate::HOUR_MS;
            return (self.min_ms.div_euclid(len) * len, len);
        }
        let days = self.sums_days.max(1);
        (
            span_start(self.min_ms, days),
            i64::from(days) * crate::DAY_MS,
        )
    }
}

/// The directory of tenant `tenant`'s blocks.
pub fn tenant_dir(tenant: &str) -> String {
    // Tenant names are [A-Za-z0-9_.-] (checked by the server); the prefix
    // keeps the empty tenant a valid path segment.
    format!("{ROOT}/t-{tenant}")
}

/// The path of `file` in block `id` of `tenant`.
pub fn path(tenant: &str, id: &str, file: &str) -> ObjPath {
    ObjPath::from(format!("{}/{id}/{file}", tenant_dir(tenant)))
}

fn err(block: &str, reason: impl std::fmt::Display) -> Error {
    Error::Block {
        block: block.to_string(),
        reason: reason.to_string(),
    }
}

fn kind_of(h: &Profile) -> Kind {
    let pair = |t: &str, u: &str| (t.to_string(), u.to_string());
    Kind {
        sample_types: (0..h.sample_types.len())
            .map(|i| {
                let (t, u) = h.sample_type_names(i);
                pair(t, u)
            })
            .collect(),
        period_type: h.period_type.map(|v| pair(h.str(v.ty), h.str(v.unit))),
        period: h.period,
        default_type: h.str(h.default_sample_type).to_string(),
    }
}

fn header_of(k: &Kind) -> Profile {
    let types: Vec<(&str, &str)> = k
        .sample_types
        .iter()
        .map(|(t, u)| (t.as_str(), u.as_str()))
        .collect();
    let mut h = Profile::with_sample_types(&types);
    h.period_type = k.period_type.as_ref().map(|(t, u)| h.value_type(t, u));
    h.period = k.period;
    h.default_sample_type = h.strings.intern(&k.default_type);
    h
}

fn parquet(block: &str, batch: &RecordBatch) -> Result<Vec<u8>, Error> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(|e| err(block, e))?,
        ))
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut out = Vec::new();
    let mut w =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(|e| err(block, e))?;
    w.write(batch).map_err(|e| err(block, e))?;
    w.close().map_err(|e| err(block, e))?;
    Ok(out)
}

/// `batches` as one Parquet file, each batch its own row group (cut
/// further at [`write::GROUP_ROWS`] rows).
fn parquet_groups(block: &str, batches: &[RecordBatch]) -> Result<Vec<u8>, Error> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(|e| err(block, e))?,
        ))
        .set_max_row_group_row_count(Some(write::GROUP_ROWS))
        .build();
    let mut out = Vec::new();
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| err(block, "no batch"))?;
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).map_err(|e| err(block, e))?;
    for b in batches {
        w.write(b).map_err(|e| err(block, e))?;
        w.flush().map_err(|e| err(block, e))?;
    }
    w.close().map_err(|e| err(block, e))?;
    Ok(out)
}

fn batch(block: &str, cols: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, Error> {
    RecordBatch::try_from_iter(cols).map_err(|e| err(block, e))
}

/// A block's files: (name, bytes).
pub(crate) type Files = Vec<(String, Vec<u8>)>;

/// Fills in `meta`'s counts, kinds and file sizes for `part` encoded as
/// `files`.
pub(crate) fn fill_meta(
    meta: &mut Meta,
    part: &Part,
    kinds: Vec<Kind>,
    files: &[(String, Vec<u8>)],
) {
    meta.kinds = kinds;
    meta.series = part.series.len() as u64;
    meta.rows = part.rows();
    meta.profiles = part.profiles;
    meta.samples = part.samples;
    meta.min_ms = part.min_ms;
    meta.max_ms = part.max_ms;
    meta.files = files
        .iter()
        .map(|(n, b)| (n.clone(), b.len() as u64))
        .collect();
}

/// Puts block `meta.id`'s files, then its `meta.json`, which makes it
/// complete.
pub(crate) async fn upload(
    store: &dyn ObjectStore,
    meta: &Meta,
    files: Files,
) -> Result<(), Error> {
    let id = meta.id.as_str();
    for (name, bytes) in files {
        store
            .put(&path(&meta.tenant, id, &name), bytes.into())
            .await
            .map_err(|e| err(id, e))?;
    }
    let json = serde_json::to_vec_pretty(meta).map_err(|e| err(id, e))?;
    store
        .put(&path(&meta.tenant, id, "meta.json"), json.into())
        .await
        .map_err(|e| err(id, e))?;
    Ok(())
}

/// Reads a block's `meta.json`.
pub async fn read_meta(store: &dyn ObjectStore, at: &ObjPath) -> Result<Meta, Error> {
    let name = at.to_string();
    let bytes = store
        .get(at)
        .await
        .map_err(|e| err(&name, e))?
        .bytes()
        .await
        .map_err(|e| err(&name, e))?;
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| err(&name, e))?;
    if meta.version != VERSION {
        return Err(err(
            &name,
            format!(
                "format version {} (this server reads {VERSION})",
                meta.version
            ),
        ));
    }
    Ok(meta)
}
