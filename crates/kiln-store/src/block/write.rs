//! Encoding a part as a block's Parquet files: series, rows, minute
//! totals, hour sums and the symbol tables.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{
    BooleanBuilder, Int64Builder, ListBuilder, StringBuilder, UInt8Builder, UInt32Builder,
    UInt64Builder,
};
use kiln_profile::StringId;

use super::{Files, HOUR_TOTALS, Kind, ROLLUPS, TOTALS, batch, kind_of, parquet, parquet_groups};
use crate::Error;
use crate::part::Part;

/// The files of `part` as Parquet, and the kinds its rows refer to.
pub(crate) fn encode(id: &str, part: &Part) -> Result<(Files, Vec<Kind>), Error> {
    let t = part.dict.tables();
    let s = |x: StringId| t.str(x);
    let mut files = Vec::new();

    // series
    let mut sid = UInt32Builder::new();
    let mut names = ListBuilder::new(StringBuilder::new());
    let mut values = ListBuilder::new(StringBuilder::new());
    let mut kinds = ListBuilder::new(UInt32Builder::new());
    for (i, se) in part.series.iter().enumerate() {
        sid.append_value(i as u32);
        for (k, v) in &se.labels {
            names.values().append_value(k);
            values.values().append_value(v);
        }
        names.append(true);
        values.append(true);
        kinds.values().append_slice(&se.kinds_held());
        kinds.append(true);
    }
    let b = batch(
        id,
        vec![
            ("series", Arc::new(sid.finish()) as ArrayRef),
            ("label_names", Arc::new(names.finish())),
            ("label_values", Arc::new(values.finish())),
            ("kinds", Arc::new(kinds.finish())),
        ],
    )?;
    files.push(("series.parquet".to_string(), parquet(id, &b)?));

    // samples: one row per (series, minute, kind, stack, label set), in
    // row groups of whole series (a series larger than a group spans
    // several), so a query of a few series reads only their groups.
    let mut batches = Vec::new();
    let mut b = SampleCols::default();
    for (i, se) in part.series.iter().enumerate() {
        let n: usize = se
            .buckets
            .minutes
            .values()
            .flatten()
            .map(|g| g.rows.len())
            .sum();
        if b.rows > 0 && b.rows + n > GROUP_ROWS {
            batches.push(b.finish(id)?);
            b = SampleCols::default();
        }
        for (&m, groups) in &se.buckets.minutes {
            for g in groups {
                g.rows
                    .for_each(|st, l, v| b.push(i as u32, m, g, st.0, l.0, v));
            }
        }
    }
    if b.rows > 0 || batches.is_empty() {
        batches.push(b.finish(id)?);
    }
    files.push(("samples.parquet".to_string(), parquet_groups(id, &batches)?));

    // minute totals: one row per (series, minute, kind), each sample
    // type's total: what a timeline reads without the rows.
    let mut series = UInt32Builder::new();
    let mut minute = Int64Builder::new();
    let mut kind = UInt32Builder::new();
    let mut totals = ListBuilder::new(Int64Builder::new());
    for (i, se) in part.series.iter().enumerate() {
        for (&m, groups) in &se.buckets.minutes {
            for g in groups {
                series.append_value(i as u32);
                minute.append_value(m);
                kind.append_value(g.header);
                for c in 0..g.rows.width {
                    totals.values().append_value(g.rows.total(c));
                }
                totals.append(true);
            }
        }
    }
    let b = batch(
        id,
        vec![
            ("series", Arc::new(series.finish()) as ArrayRef),
            ("minute_ms", Arc::new(minute.finish())),
            ("kind", Arc::new(kind.finish())),
            ("totals", Arc::new(totals.finish())),
        ],
    )?;
    files.push((TOTALS.to_string(), parquet(id, &b)?));

    // hour sums: one row per (service, hour, kind, stack, label set)
    let mut keys: Vec<_> = part.rollups.keys().collect();
    keys.sort();
    if part.rollups.values().any(|r| !r.hours.is_empty()) {
        let mut at = ServiceHour::default();
        let mut start = Int64Builder::new();
        let mut end = Int64Builder::new();
        let mut stack = UInt32Builder::new();
        let mut labels = UInt32Builder::new();
        let mut vals = ListBuilder::new(Int64Builder::new());
        for &key in &keys {
            for (&h, groups) in &part.rollups[key].hours {
                for g in groups {
                    g.rows.for_each(|st, l, v| {
                        at.push(key, h, g.header);
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
        let mut cols = at.finish();
        cols.extend([
            ("start_ns", Arc::new(start.finish()) as ArrayRef),
            ("end_ns", Arc::new(end.finish())),
            ("stack", Arc::new(stack.finish())),
            ("label_set", Arc::new(labels.finish())),
            ("values", Arc::new(vals.finish())),
        ]);
        files.push((ROLLUPS.to_string(), parquet(id, &batch(id, cols)?)?));
    }

    // a day sum's hour totals: one row per (service, hour, kind)
    if part.rollups.values().any(|r| !r.hour_totals.is_empty()) {
        let mut at = ServiceHour::default();
        let mut totals = ListBuilder::new(Int64Builder::new());
        for &key in &keys {
            for (&h, line) in &part.rollups[key].hour_totals {
                for (k, v) in line {
                    at.push(key, h, *k);
                    totals.values().append_slice(v);
                    totals.append(true);
                }
            }
        }
        let mut cols = at.finish();
        cols.push(("totals", Arc::new(totals.finish()) as ArrayRef));
        files.push((HOUR_TOTALS.to_string(), parquet(id, &batch(id, cols)?)?));
    }

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

/// Rows of `samples.parquet` per row group, at most (a series with more
/// fills groups of its own).
pub(crate) const GROUP_ROWS: usize = if cfg!(test) { 8 } else { 1 << 18 };

/// The columns of one row group of `samples.parquet`.
#[derive(Default)]
struct SampleCols {
    rows: usize,
    series: UInt32Builder,
    minute: Int64Builder,
    kind: UInt32Builder,
    start: Int64Builder,
    end: Int64Builder,
    stack: UInt32Builder,
    labels: UInt32Builder,
    vals: ListBuilder<Int64Builder>,
}

impl SampleCols {
    fn push(
        &mut self,
        series: u32,
        minute: i64,
        g: &crate::part::Group,
        stack: u32,
        labels: u32,
        v: &[i64],
    ) {
        self.rows += 1;
        self.series.append_value(series);
        self.minute.append_value(minute);
        self.kind.append_value(g.header);
        self.start.append_value(g.start_ns);
        self.end.append_value(g.end_ns);
        self.stack.append_value(stack);
        self.labels.append_value(labels);
        self.vals.values().append_slice(v);
        self.vals.append(true);
    }

    fn finish(mut self, id: &str) -> Result<arrow_array::RecordBatch, Error> {
        batch(
            id,
            vec![
                ("series", Arc::new(self.series.finish()) as ArrayRef),
                ("minute_ms", Arc::new(self.minute.finish())),
                ("kind", Arc::new(self.kind.finish())),
                ("start_ns", Arc::new(self.start.finish())),
                ("end_ns", Arc::new(self.end.finish())),
                ("stack", Arc::new(self.stack.finish())),
                ("label_set", Arc::new(self.labels.finish())),
                ("values", Arc::new(self.vals.finish())),
            ],
        )
    }
}

/// The leading columns of the rollup files: each row's service (its
/// `__name__` and `service_name`), hour and kind.
#[derive(Default)]
struct ServiceHour {
    name: StringBuilder,
    service: StringBuilder,
    hour: Int64Builder,
    kind: UInt32Builder,
}

impl ServiceHour {
    fn push(&mut self, key: &(String, String), hour: i64, kind: u32) {
        self.name.append_value(&key.0);
        self.service.append_value(&key.1);
        self.hour.append_value(hour);
        self.kind.append_value(kind);
    }

    fn finish(mut self) -> Vec<(&'static str, ArrayRef)> {
        vec![
            ("name", Arc::new(self.name.finish()) as ArrayRef),
            ("service", Arc::new(self.service.finish())),
            ("hour_ms", Arc::new(self.hour.finish())),
            ("kind", Arc::new(self.kind.finish())),
        ]
    }
}
