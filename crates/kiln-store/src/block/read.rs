//! Reading a block back: the files a [`Level`] needs fetched from
//! storage (all at once), then decoded into a sealed part on a blocking
//! thread. `Index` is what plans a query (series, their labels and
//! kinds); `Totals` adds the series' minute totals (`totals.parquet`);
//! `Hours` the symbol tables and the services' hour sums
//! (`rollups.parquet`); `Full` every row.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type, UInt32Type, UInt64Type};
use arrow_array::{ArrayRef, RecordBatch};
use bytes::Bytes;
use kiln_profile::{
    Function, LabelSetId, Line, Location, LocationId, Mapping, MappingId, Profile, StackId,
};
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{HOUR_TOTALS, Meta, ROLLUPS, TOTALS, err, header_of, path};
use crate::Error;
use crate::part::{At, Dict, MinuteTotal, Part, Rows};

/// How much of a block is in memory. Ordered: each holds the one before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// Series labels, the label index and kinds: what plans a query.
    Index = 0,
    /// Also each series' minute totals: what a timeline reads.
    Totals = 1,
    /// Also the symbol tables and the hour sums of each service.
    Hours = 2,
    /// Also every row.
    Full = 3,
}

impl Level {
    pub(crate) fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Index,
            1 => Level::Totals,
            2 => Level::Hours,
            _ => Level::Full,
        }
    }

    /// The files of `meta` this level reads.
    fn files(self, meta: &Meta) -> Vec<&'static str> {
        const DICT: [&str; 5] = [
            "functions.parquet",
            "mappings.parquet",
            "locations.parquet",
            "stacks.parquet",
            "label_sets.parquet",
        ];
        let mut out = vec!["series.parquet"];
        if self >= Level::Totals && meta.files.contains_key(TOTALS) {
            out.push(TOTALS);
        }
        if self >= Level::Totals && meta.files.contains_key(HOUR_TOTALS) {
            out.push(HOUR_TOTALS);
        }
        if self >= Level::Hours {
            out.extend(DICT);
            if meta.files.contains_key(ROLLUPS) {
                out.push(ROLLUPS);
            }
        }
        if self == Level::Full {
            out.push("samples.parquet");
        }
        out
    }
}

/// Reads block `meta` back to `level`: a sealed part.
pub(crate) async fn read(
    store: &dyn ObjectStore,
    meta: &Meta,
    level: Level,
) -> Result<Part, Error> {
    let names = level.files(meta);
    let got = futures::future::join_all(names.iter().map(|&n| async move {
        let p = path(&meta.tenant, &meta.id, n);
        let bytes = store
            .get(&p)
            .await
            .map_err(|e| err(p.as_ref(), e))?
            .bytes()
            .await
            .map_err(|e| err(p.as_ref(), e))?;
        Ok::<_, Error>((n, bytes))
    }))
    .await;
    let files: HashMap<&'static str, Bytes> = got.into_iter().collect::<Result<_, _>>()?;
    let meta = meta.clone();
    tokio::task::spawn_blocking(move || decode(&meta, &files))
        .await
        .map_err(|e| err(&format!("decoding {}", level as u8), e))?
}

/// The record batches of file `name`, or none if it was not fetched.
fn batches(
    meta: &Meta,
    files: &HashMap<&'static str, Bytes>,
    name: &str,
) -> Result<Vec<RecordBatch>, Error> {
    let Some(bytes) = files.get(name) else {
        return Ok(Vec::new());
    };
    let name = format!("{}/{name}", meta.id);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .map_err(|e| err(&name, e))?
        .with_batch_size(1 << 16)
        .build()
        .map_err(|e| err(&name, e))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&name, e))
}

/// Where a run of hour-sum rows goes: its service's rollup, hour and kind.
struct HourAt {
    name: String,
    service: String,
    hour: i64,
    at: At,
}

impl HourAt {
    fn is(&self, name: &str, service: &str, hour: i64, at: &At) -> bool {
        self.hour == hour && self.at == *at && self.name == name && self.service == service
    }
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

/// Decodes the files of block `meta` that were fetched.
fn decode(meta: &Meta, files: &HashMap<&'static str, Bytes>) -> Result<Part, Error> {
    use arrow_schema::{DataType as D, Field};
    let list = |t: D| D::List(Arc::new(Field::new_list_field(t, true)));
    let id = meta.id.as_str();
    let mut t = Profile::default();

    for b in batches(meta, files, "functions.parquet")? {
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
    for b in batches(meta, files, "mappings.parquet")? {
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
    for b in batches(meta, files, "locations.parquet")? {
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
    for b in batches(meta, files, "stacks.parquet")? {
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
            // Ids are row numbers: pushed, not interned (a duplicate row
            // keeps its own id).
            t.stacks.push(&buf);
        }
    }
    let mut fresh_sets = false;
    for b in batches(meta, files, "label_sets.parquet")? {
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
        if b.num_rows() > 0 && !fresh_sets {
            // Row 0 is the empty set the default table starts with.
            t.label_sets = Default::default();
            fresh_sets = true;
        }
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
            t.label_sets.push(&buf);
        }
    }

    let mut part = Part::default();
    part.headers = meta.kinds.iter().map(header_of).collect();
    for b in batches(meta, files, "series.parquet")? {
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
        // The kinds each series holds (blocks written before this column
        // say nothing: every kind of the block).
        let kinds = match b.column_by_name("kinds") {
            Some(_) => {
                check(id, &b, "kinds", &list(D::UInt32))?;
                Some(typed!(id, &b, "kinds", as_list::<i32>))
            }
            None => None,
        };
        for i in 0..b.num_rows() {
            let labels: Vec<(String, String)> = (off[i] as usize..off[i + 1] as usize)
                .map(|j| (nv.value(j).to_string(), vv.value(j).to_string()))
                .collect();
            let s = part.series_for(&labels) as usize;
            let held: Vec<u32> = match kinds {
                Some(k) => {
                    let v = k.value(i);
                    v.as_primitive::<UInt32Type>().values().to_vec()
                }
                None => (0..meta.kinds.len() as u32).collect(),
            };
            if held.iter().any(|&k| k as usize >= meta.kinds.len()) {
                return Err(err(id, "a series names a kind out of range"));
            }
            part.series[s].kinds = held;
        }
    }
    // Kept as read, in a cache that counts what it holds: no room spare.
    t.shrink_to_fit();
    part.dict = Dict::Fixed(std::sync::Arc::new(t));
    // Blocks that carry hour sums keep no rollup minutes: their service
    // reads take whole hours from the sums and the edges from the series.
    part.rollup_minutes = !meta.files.contains_key(ROLLUPS);
    let samples = batches(meta, files, "samples.parquet")?;
    put_samples(id, &mut part, &samples)?;
    let (stacks, sets) = {
        let t = part.dict.tables();
        (t.stacks.len() as u32, t.label_sets.len() as u32)
    };
    for b in batches(meta, files, TOTALS)? {
        for n in ["series", "kind"] {
            check(id, &b, n, &D::UInt32)?;
        }
        check(id, &b, "minute_ms", &D::Int64)?;
        check(id, &b, "totals", &list(D::Int64))?;
        let series = typed!(id, &b, "series", as_primitive::<UInt32Type>);
        let minute = typed!(id, &b, "minute_ms", as_primitive::<Int64Type>);
        let kind = typed!(id, &b, "kind", as_primitive::<UInt32Type>);
        let totals = typed!(id, &b, "totals", as_list::<i32>);
        let tv = totals.values().as_primitive::<Int64Type>();
        let off = totals.value_offsets();
        for i in 0..b.num_rows() {
            let (s, k) = (series.value(i) as usize, kind.value(i) as usize);
            if s >= part.series.len() || k >= part.headers.len() {
                return Err(err(
                    id,
                    "a minute total names a series or kind out of range",
                ));
            }
            let v = &tv.values()[off[i] as usize..off[i + 1] as usize];
            if v.len() != part.headers[k].sample_types.len() {
                return Err(err(id, "a minute total's values do not match its kind"));
            }
            part.series[s].totals.push(MinuteTotal {
                minute: minute.value(i),
                header: k as u32,
                values: v.into(),
            });
        }
    }
    for b in batches(meta, files, HOUR_TOTALS)? {
        for n in ["name", "service"] {
            check(id, &b, n, &D::Utf8)?;
        }
        check(id, &b, "hour_ms", &D::Int64)?;
        check(id, &b, "kind", &D::UInt32)?;
        check(id, &b, "totals", &list(D::Int64))?;
        let name = typed!(id, &b, "name", as_string::<i32>);
        let service = typed!(id, &b, "service", as_string::<i32>);
        let hour = typed!(id, &b, "hour_ms", as_primitive::<Int64Type>);
        let kind = typed!(id, &b, "kind", as_primitive::<UInt32Type>);
        let totals = typed!(id, &b, "totals", as_list::<i32>);
        let tv = totals.values().as_primitive::<Int64Type>();
        let off = totals.value_offsets();
        for i in 0..b.num_rows() {
            let k = kind.value(i) as usize;
            let v = &tv.values()[off[i] as usize..off[i + 1] as usize];
            if k >= part.headers.len() || v.len() != part.headers[k].sample_types.len() {
                return Err(err(
                    id,
                    "an hour total names a kind out of range or its values do not match it",
                ));
            }
            let key = (name.value(i).to_string(), service.value(i).to_string());
            let r = part.rollups.entry(key).or_default();
            r.add_hour_totals(hour.value(i), k as u32, v);
        }
    }
    // After the rows: a row put into an hour drops that hour's sum.
    // A run of one group's rows goes in at once, across batches: putting
    // it in piece by piece would fold the group's rows again each time.
    let mut run: Option<(HourAt, Rows)> = None;
    for b in batches(meta, files, ROLLUPS)? {
        for n in ["name", "service"] {
            check(id, &b, n, &D::Utf8)?;
        }
        for n in ["kind", "stack", "label_set"] {
            check(id, &b, n, &D::UInt32)?;
        }
        for n in ["hour_ms", "start_ns", "end_ns"] {
            check(id, &b, n, &D::Int64)?;
        }
        check(id, &b, "values", &list(D::Int64))?;
        let name = typed!(id, &b, "name", as_string::<i32>);
        let service = typed!(id, &b, "service", as_string::<i32>);
        let hour = typed!(id, &b, "hour_ms", as_primitive::<Int64Type>);
        let kind = typed!(id, &b, "kind", as_primitive::<UInt32Type>);
        let start = typed!(id, &b, "start_ns", as_primitive::<Int64Type>);
        let end = typed!(id, &b, "end_ns", as_primitive::<Int64Type>);
        let stack = typed!(id, &b, "stack", as_primitive::<UInt32Type>);
        let labels = typed!(id, &b, "label_set", as_primitive::<UInt32Type>);
        let vals = typed!(id, &b, "values", as_list::<i32>);
        let vv = vals.values().as_primitive::<Int64Type>();
        let off = vals.value_offsets();
        for i in 0..b.num_rows() {
            let k = kind.value(i) as usize;
            if k >= part.headers.len() {
                return Err(err(id, "an hour sum names a kind out of range"));
            }
            if stack.value(i) >= stacks || labels.value(i) >= sets {
                return Err(err(
                    id,
                    "an hour sum names a stack or label set out of range",
                ));
            }
            let v = &vv.values()[off[i] as usize..off[i + 1] as usize];
            let width = part.headers[k].sample_types.len();
            if v.len() != width {
                return Err(err(id, "an hour sum's values do not match its kind"));
            }
            let at = At {
                minute: hour.value(i),
                header: k as u32,
                span: (start.value(i), end.value(i)),
            };
            let (n, svc, h) = (name.value(i), service.value(i), hour.value(i));
            if run.as_ref().is_none_or(|(r, _)| !r.is(n, svc, h, &at)) {
                if let Some((r, rows)) = run.take() {
                    part.put_hour_rows((r.name, r.service), r.at, rows);
                }
                let owned = HourAt {
                    name: n.into(),
                    service: svc.into(),
                    hour: h,
                    at,
                };
                run = Some((owned, Rows::new(width)));
            }
            if let Some((_, rows)) = &mut run {
                rows.push(StackId(stack.value(i)), LabelSetId(labels.value(i)), v);
            }
        }
    }
    if let Some((r, rows)) = run.take() {
        part.put_hour_rows((r.name, r.service), r.at, rows);
    }
    part.min_ms = meta.min_ms;
    part.max_ms = meta.max_ms;
    part.profiles = meta.profiles;
    part.samples = meta.samples;
    part.seal();
    Ok(part)
}

/// Puts rows of `samples.parquet` (whole row groups) into `part`, whose
/// symbol tables and series are read already: into the series' buckets,
/// and into their services' rollup minutes when the part keeps those.
pub(crate) fn put_samples(id: &str, part: &mut Part, samples: &[RecordBatch]) -> Result<(), Error> {
    use arrow_schema::{DataType as D, Field};
    let list = |t: D| D::List(Arc::new(Field::new_list_field(t, true)));
    let with_rollups = part.rollup_minutes;
    let rollups: Vec<Option<(String, String)>> = part
        .series
        .iter()
        .map(|s| Part::rollup_key(&s.labels).filter(|_| with_rollups))
        .collect();
    let (stacks, sets) = {
        let t = part.dict.tables();
        (t.stacks.len() as u32, t.label_sets.len() as u32)
    };
    // Rows come sorted by series, minute and kind: each run of one
    // (series, minute, kind, span) goes into the part at once.
    let mut run: Option<(u32, At, Rows)> = None;
    for b in samples {
        for n in ["series", "kind", "stack", "label_set"] {
            check(id, b, n, &D::UInt32)?;
        }
        for n in ["minute_ms", "start_ns", "end_ns"] {
            check(id, b, n, &D::Int64)?;
        }
        check(id, b, "values", &list(D::Int64))?;
        let series = typed!(id, b, "series", as_primitive::<UInt32Type>);
        let minute = typed!(id, b, "minute_ms", as_primitive::<Int64Type>);
        let kind = typed!(id, b, "kind", as_primitive::<UInt32Type>);
        let start = typed!(id, b, "start_ns", as_primitive::<Int64Type>);
        let end = typed!(id, b, "end_ns", as_primitive::<Int64Type>);
        let stack = typed!(id, b, "stack", as_primitive::<UInt32Type>);
        let labels = typed!(id, b, "label_set", as_primitive::<UInt32Type>);
        let vals = typed!(id, b, "values", as_list::<i32>);
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
    Ok(())
}
