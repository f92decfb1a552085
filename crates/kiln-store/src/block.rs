//! Blocks: a part written to object storage as Parquet, immutable once its
//! `meta.json` is there. One block per tenant per flush; see
//! `docs/storage-format.md` for the layout, which this module is the only
//! writer and reader of.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int64Builder, ListBuilder, StringBuilder, UInt8Builder, UInt32Builder,
    UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type, UInt32Type, UInt64Type};
use arrow_array::{ArrayRef, RecordBatch};
use bytes::Bytes;
use kiln_profile::{
    Function, LabelSetId, Line, Location, LocationId, Mapping, MappingId, Profile, StackId,
    StringId,
};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::part::{At, Dict, Part, Rows};

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

fn batch(block: &str, cols: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, Error> {
    RecordBatch::try_from_iter(cols).map_err(|e| err(block, e))
}

/// A block's files: (name, bytes).
pub(crate) type Files = Vec<(String, Vec<u8>)>;

/// The files of `part` as Parquet, and the kinds its rows refer to.
pub(crate) fn encode(id: &str, part: &Part) -> Result<(Files, Vec<Kind>), Error> {
    let t = part.dict.tables();
    let s = |x: StringId| t.str(x);
    let mut files = Vec::new();

    // series
    let mut sid = UInt32Builder::new();
    let mut names = ListBuilder::new(StringBuilder::new());
    let mut values = ListBuilder::new(StringBuilder::new());
    for (i, se) in part.series.iter().enumerate() {
        sid.append_value(i as u32);
        for (k, v) in &se.labels {
            names.values().append_value(k);
            values.values().append_value(v);
        }
        names.append(true);
        values.append(true);
    }
    let b = batch(
        id,
        vec![
            ("series", Arc::new(sid.finish()) as ArrayRef),
            ("label_names", Arc::new(names.finish())),
            ("label_values", Arc::new(values.finish())),
        ],
    )?;
    files.push(("series.parquet".to_string(), parquet(id, &b)?));

    // samples: one row per (series, minute, kind, stack, label set)
    let mut series = UInt32Builder::new();
    let mut minute = Int64Builder::new();
    let mut kind = UInt32Builder::new();
    let mut start = Int64Builder::new();
    let mut end = Int64Builder::new();
    let mut stack = UInt32Builder::new();
    let mut labels = UInt32Builder::new();
    let mut vals = ListBuilder::new(Int64Builder::new());
    for (i, se) in part.series.iter().enumerate() {
        for (&m, groups) in &se.buckets.minutes {
            for g in groups {
                g.rows.for_each(|st, l, v| {
                    series.append_value(i as u32);
                    minute.append_value(m);
                    kind.append_value(g.header);
                    start.append_value(g.start_ns);
                    end.append_value(g.end_ns);
                    stack.append_value(st.0);
                    labels.append_value(l.0);
                    vals.values().append_slice(v);
                    vals.append(true);
                });
            }
        }
    }
    let b = batch(
        id,
        vec![
            ("series", Arc::new(series.finish()) as ArrayRef),
            ("minute_ms", Arc::new(minute.finish())),
            ("kind", Arc::new(kind.finish())),
            ("start_ns", Arc::new(start.finish())),
            ("end_ns", Arc::new(end.finish())),
            ("stack", Arc::new(stack.finish())),
            ("label_set", Arc::new(labels.finish())),
            ("values", Arc::new(vals.finish())),
        ],
    )?;
    files.push(("samples.parquet".to_string(), parquet(id, &b)?));

    // stacks
    let mut locs = ListBuilder::new(UInt32Builder::new());
    for st in t.stacks.iter() {
        locs.values()
            .append_slice(&st.iter().map(|l| l.0).collect::<Vec<_>>());
        locs.append(true);
    }
    let b = batch(id, vec![("locations", Arc::new(locs.finish()) as ArrayRef)])?;
    files.push(("stacks.parquet".to_string(), parquet(id, &b)?));

    // locations
    let mut mapping = UInt32Builder::new();
    let mut address = UInt64Builder::new();
    let mut folded = BooleanBuilder::new();
    let mut funcs = ListBuilder::new(UInt32Builder::new());
    let mut lines = ListBuilder::new(Int64Builder::new());
    let mut cols = ListBuilder::new(Int64Builder::new());
    for l in &t.locations {
        mapping.append_value(l.mapping.map_or(0, |m| m.0 + 1));
        address.append_value(l.address);
        folded.append_value(l.is_folded);
        for line in &l.lines {
            funcs.values().append_value(line.function.0);
            lines.values().append_value(line.line);
            cols.values().append_value(line.column);
        }
        funcs.append(true);
        lines.append(true);
        cols.append(true);
    }
    let b = batch(
        id,
        vec![
            ("mapping", Arc::new(mapping.finish()) as ArrayRef),
            ("address", Arc::new(address.finish())),
            ("folded", Arc::new(folded.finish())),
            ("line_function", Arc::new(funcs.finish())),
            ("line_number", Arc::new(lines.finish())),
            ("line_column", Arc::new(cols.finish())),
        ],
    )?;
    files.push(("locations.parquet".to_string(), parquet(id, &b)?));

    // functions
    let mut name = StringBuilder::new();
    let mut system = StringBuilder::new();
    let mut file = StringBuilder::new();
    let mut line = Int64Builder::new();
    for f in &t.functions {
        name.append_value(s(f.name));
        system.append_value(s(f.system_name));
        file.append_value(s(f.filename));
        line.append_value(f.start_line);
    }
    let b = batch(
        id,
        vec![
            ("name", Arc::new(name.finish()) as ArrayRef),
            ("system_name", Arc::new(system.finish())),
            ("filename", Arc::new(file.finish())),
            ("start_line", Arc::new(line.finish())),
        ],
    )?;
    files.push(("functions.parquet".to_string(), parquet(id, &b)?));

    // mappings
    let mut ms = UInt64Builder::new();
    let mut ml = UInt64Builder::new();
    let mut mo = UInt64Builder::new();
    let mut mf = StringBuilder::new();
    let mut mb = StringBuilder::new();
    let mut flags = UInt8Builder::new();
    for m in &t.mappings {
        ms.append_value(m.memory_start);
        ml.append_value(m.memory_limit);
        mo.append_value(m.file_offset);
        mf.append_value(s(m.filename));
        mb.append_value(s(m.build_id));
        flags.append_value(
            m.has_functions as u8
                | (m.has_filenames as u8) << 1
                | (m.has_line_numbers as u8) << 2
                | (m.has_inline_frames as u8) << 3,
        );
    }
    let b = batch(
        id,
        vec![
            ("memory_start", Arc::new(ms.finish()) as ArrayRef),
            ("memory_limit", Arc::new(ml.finish())),
            ("file_offset", Arc::new(mo.finish())),
            ("filename", Arc::new(mf.finish())),
            ("build_id", Arc::new(mb.finish())),
            ("flags", Arc::new(flags.finish())),
        ],
    )?;
    files.push(("mappings.parquet".to_string(), parquet(id, &b)?));

    // label sets
    let mut keys = ListBuilder::new(StringBuilder::new());
    let mut strs = ListBuilder::new(StringBuilder::new());
    let mut nums = ListBuilder::new(Int64Builder::new());
    let mut units = ListBuilder::new(StringBuilder::new());
    for set in t.label_sets.iter() {
        for l in set {
            keys.values().append_value(s(l.key));
            strs.values().append_value(s(l.str));
            nums.values().append_value(l.num);
            units.values().append_value(s(l.num_unit));
        }
        keys.append(true);
        strs.append(true);
        nums.append(true);
        units.append(true);
    }
    let b = batch(
        id,
        vec![
            ("key", Arc::new(keys.finish()) as ArrayRef),
            ("str", Arc::new(strs.finish())),
            ("num", Arc::new(nums.finish())),
            ("num_unit", Arc::new(units.finish())),
        ],
    )?;
    files.push(("label_sets.parquet".to_string(), parquet(id, &b)?));

    Ok((files, part.headers.iter().map(kind_of).collect()))
}

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

async fn batches(
    store: &dyn ObjectStore,
    meta: &Meta,
    file: &str,
) -> Result<Vec<RecordBatch>, Error> {
    let p = path(&meta.tenant, &meta.id, file);
    let name = p.to_string();
    let bytes: Bytes = store
        .get(&p)
        .await
        .map_err(|e| err(&name, e))?
        .bytes()
        .await
        .map_err(|e| err(&name, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| err(&name, e))?
        .with_batch_size(1 << 16)
        .build()
        .map_err(|e| err(&name, e))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&name, e))
}

/// A column of `b` by name, or an error naming it.
fn col<'a>(block: &str, b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, Error> {
    b.column_by_name(name)
        .ok_or_else(|| err(block, format!("column {name} is missing")))
}

/// Checks that a column has the expected type before a cast helper would
/// panic on it.
macro_rules! typed {
    ($block:expr, $b:expr, $name:expr, $as:ident $(::<$t:ty>)?) => {{
        let c = col($block, $b, $name)?;
        c.$as$(::<$t>)?()
    }};
}

fn check(
    block: &str,
    b: &RecordBatch,
    name: &str,
    ty: &arrow_schema::DataType,
) -> Result<(), Error> {
    let c = col(block, b, name)?;
    if c.data_type() != ty {
        return Err(err(
            block,
            format!("column {name} is {} where {ty} was expected", c.data_type()),
        ));
    }
    Ok(())
}

/// Reads block `meta` back into a sealed part.
pub(crate) async fn read(store: &dyn ObjectStore, meta: &Meta) -> Result<Part, Error> {
    use arrow_schema::{DataType as D, Field};
    let list = |t: D| D::List(Arc::new(Field::new_list_field(t, true)));
    let id = meta.id.as_str();
    let mut t = Profile::default();

    for b in batches(store, meta, "functions.parquet").await? {
        for n in ["name", "system_name", "filename"] {
            check(id, &b, n, &D::Utf8)?;
        }
        check(id, &b, "start_line", &D::Int64)?;
        let name = typed!(id, &b, "name", as_string::<i32>);
        let system = typed!(id, &b, "system_name", as_string::<i32>);
        let file = typed!(id, &b, "filename", as_string::<i32>);
        let line = typed!(id, &b, "start_line", as_primitive::<Int64Type>);
        for i in 0..b.num_rows() {
            let f = Function {
                name: t.strings.intern(name.value(i)),
                system_name: t.strings.intern(system.value(i)),
                filename: t.strings.intern(file.value(i)),
                start_line: line.value(i),
            };
            t.add_function(f);
        }
    }
    for b in batches(store, meta, "mappings.parquet").await? {
        for n in ["memory_start", "memory_limit", "file_offset"] {
            check(id, &b, n, &D::UInt64)?;
        }
        check(id, &b, "filename", &D::Utf8)?;
        check(id, &b, "build_id", &D::Utf8)?;
        check(id, &b, "flags", &D::UInt8)?;
        let ms = typed!(id, &b, "memory_start", as_primitive::<UInt64Type>);
        let ml = typed!(id, &b, "memory_limit", as_primitive::<UInt64Type>);
        let mo = typed!(id, &b, "file_offset", as_primitive::<UInt64Type>);
        let mf = typed!(id, &b, "filename", as_string::<i32>);
        let mb = typed!(id, &b, "build_id", as_string::<i32>);
        let fl = typed!(id, &b, "flags", as_primitive::<UInt8Type>);
        for i in 0..b.num_rows() {
            let f = fl.value(i);
            let m = Mapping {
                memory_start: ms.value(i),
                memory_limit: ml.value(i),
                file_offset: mo.value(i),
                filename: t.strings.intern(mf.value(i)),
                build_id: t.strings.intern(mb.value(i)),
                has_functions: f & 1 != 0,
                has_filenames: f & 2 != 0,
                has_line_numbers: f & 4 != 0,
                has_inline_frames: f & 8 != 0,
            };
            t.add_mapping(m);
        }
    }
    for b in batches(store, meta, "locations.parquet").await? {
        check(id, &b, "mapping", &D::UInt32)?;
        check(id, &b, "address", &D::UInt64)?;
        check(id, &b, "folded", &D::Boolean)?;
        check(id, &b, "line_function", &list(D::UInt32))?;
        check(id, &b, "line_number", &list(D::Int64))?;
        check(id, &b, "line_column", &list(D::Int64))?;
        let mapping = typed!(id, &b, "mapping", as_primitive::<UInt32Type>);
        let address = typed!(id, &b, "address", as_primitive::<UInt64Type>);
        let folded = typed!(id, &b, "folded", as_boolean);
        let funcs = typed!(id, &b, "line_function", as_list::<i32>);
        let lines = typed!(id, &b, "line_number", as_list::<i32>);
        let cols = typed!(id, &b, "line_column", as_list::<i32>);
        let fv = funcs.values().as_primitive::<UInt32Type>();
        let lv = lines.values().as_primitive::<Int64Type>();
        let cv = cols.values().as_primitive::<Int64Type>();
        let off = funcs.value_offsets();
        if lines.value_offsets() != off || cols.value_offsets() != off {
            return Err(err(id, "location line lists differ in length"));
        }
        for i in 0..b.num_rows() {
            let mut ls = Vec::new();
            for j in off[i] as usize..off[i + 1] as usize {
                let f = fv.value(j);
                if f as usize >= t.functions.len() {
                    return Err(err(id, "a location names a function out of range"));
                }
                ls.push(Line {
                    function: kiln_profile::FunctionId(f),
                    line: lv.value(j),
                    column: cv.value(j),
                });
            }
            let m = mapping.value(i);
            if m as usize > t.mappings.len() {
                return Err(err(id, "a location names a mapping out of range"));
            }
            t.add_location(Location {
                mapping: m.checked_sub(1).map(MappingId),
                address: address.value(i),
                lines: ls,
                is_folded: folded.value(i),
            });
        }
    }
    for b in batches(store, meta, "stacks.parquet").await? {
        check(id, &b, "locations", &list(D::UInt32))?;
        let locs = typed!(id, &b, "locations", as_list::<i32>);
        let v = locs.values().as_primitive::<UInt32Type>();
        let off = locs.value_offsets();
        let mut buf = Vec::new();
        for i in 0..b.num_rows() {
            buf.clear();
            for j in off[i] as usize..off[i + 1] as usize {
                let l = v.value(j);
                if l as usize >= t.locations.len() {
                    return Err(err(id, "a stack names a location out of range"));
                }
                buf.push(LocationId(l));
            }
            t.stacks.intern(&buf);
        }
    }
    for b in batches(store, meta, "label_sets.parquet").await? {
        for n in ["key", "str", "num_unit"] {
            check(id, &b, n, &list(D::Utf8))?;
        }
        check(id, &b, "num", &list(D::Int64))?;
        let keys = typed!(id, &b, "key", as_list::<i32>);
        let strs = typed!(id, &b, "str", as_list::<i32>);
        let nums = typed!(id, &b, "num", as_list::<i32>);
        let units = typed!(id, &b, "num_unit", as_list::<i32>);
        let off = keys.value_offsets();
        if strs.value_offsets() != off
            || nums.value_offsets() != off
            || units.value_offsets() != off
        {
            return Err(err(id, "label set lists differ in length"));
        }
        let (kv, sv, nv, uv) = (
            keys.values().as_string::<i32>(),
            strs.values().as_string::<i32>(),
            nums.values().as_primitive::<Int64Type>(),
            units.values().as_string::<i32>(),
        );
        let mut buf = Vec::new();
        for i in 0..b.num_rows() {
            buf.clear();
            for j in off[i] as usize..off[i + 1] as usize {
                buf.push(kiln_profile::Label {
                    key: t.strings.intern(kv.value(j)),
                    str: t.strings.intern(sv.value(j)),
                    num: nv.value(j),
                    num_unit: t.strings.intern(uv.value(j)),
                });
            }
            t.label_sets.intern(&buf);
        }
    }

    let mut part = Part::default();
    part.headers = meta.kinds.iter().map(header_of).collect();
    for b in batches(store, meta, "series.parquet").await? {
        check(id, &b, "label_names", &list(D::Utf8))?;
        check(id, &b, "label_values", &list(D::Utf8))?;
        let names = typed!(id, &b, "label_names", as_list::<i32>);
        let values = typed!(id, &b, "label_values", as_list::<i32>);
        let off = names.value_offsets();
        if values.value_offsets() != off {
            return Err(err(id, "label name and value lists differ in length"));
        }
        let (nv, vv) = (
            names.values().as_string::<i32>(),
            values.values().as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            let labels: Vec<(String, String)> = (off[i] as usize..off[i + 1] as usize)
                .map(|j| (nv.value(j).to_string(), vv.value(j).to_string()))
                .collect();
            part.series_for(&labels);
        }
    }
    let rollups: Vec<Option<(String, String)>> = part
        .series
        .iter()
        .map(|s| Part::rollup_key(&s.labels))
        .collect();
    let stacks = t.stacks.len() as u32;
    let sets = t.label_sets.len() as u32;
    // Rows come sorted by series, minute and kind: each run of one
    // (series, minute, kind, span) goes into the part at once.
    let mut run: Option<(u32, At, Rows)> = None;
    for b in batches(store, meta, "samples.parquet").await? {
        for n in ["series", "kind", "stack", "label_set"] {
            check(id, &b, n, &D::UInt32)?;
        }
        for n in ["minute_ms", "start_ns", "end_ns"] {
            check(id, &b, n, &D::Int64)?;
        }
        check(id, &b, "values", &list(D::Int64))?;
        let series = typed!(id, &b, "series", as_primitive::<UInt32Type>);
        let minute = typed!(id, &b, "minute_ms", as_primitive::<Int64Type>);
        let kind = typed!(id, &b, "kind", as_primitive::<UInt32Type>);
        let start = typed!(id, &b, "start_ns", as_primitive::<Int64Type>);
        let end = typed!(id, &b, "end_ns", as_primitive::<Int64Type>);
        let stack = typed!(id, &b, "stack", as_primitive::<UInt32Type>);
        let labels = typed!(id, &b, "label_set", as_primitive::<UInt32Type>);
        let vals = typed!(id, &b, "values", as_list::<i32>);
        let vv = vals.values().as_primitive::<Int64Type>();
        let off = vals.value_offsets();
        for i in 0..b.num_rows() {
            let (s, k) = (series.value(i) as usize, kind.value(i) as usize);
            if s >= part.series.len() || k >= part.headers.len() {
                return Err(err(id, "a row names a series or kind out of range"));
            }
            if stack.value(i) >= stacks || labels.value(i) >= sets {
                return Err(err(id, "a row names a stack or label set out of range"));
            }
            let v = &vv.values()[off[i] as usize..off[i + 1] as usize];
            let width = part.headers[k].sample_types.len();
            if v.len() != width {
                return Err(err(id, "a row's values do not match its kind"));
            }
            let at = At {
                minute: minute.value(i),
                header: k as u32,
                span: (start.value(i), end.value(i)),
            };
            let same = run
                .as_ref()
                .is_some_and(|(rs, ra, _)| *rs == s as u32 && *ra == at);
            if !same {
                if let Some((rs, ra, rows)) = run.take() {
                    part.put_rows(rs, rollups[rs as usize].as_ref(), ra, &rows);
                }
                run = Some((s as u32, at, Rows::new(width)));
            }
            if let Some((_, _, rows)) = &mut run {
                rows.push(StackId(stack.value(i)), LabelSetId(labels.value(i)), v);
            }
        }
    }
    if let Some((rs, ra, rows)) = run.take() {
        part.put_rows(rs, rollups[rs as usize].as_ref(), ra, &rows);
    }
    part.dict = Dict::Fixed(Box::new(t));
    part.min_ms = meta.min_ms;
    part.max_ms = meta.max_ms;
    part.profiles = meta.profiles;
    part.samples = meta.samples;
    part.seal();
    Ok(part)
}
