//! Merging profiles of one type, and [`compact`] (a merge of one profile).
//!
//! The [`Merger`] streams: add one profile at a time and drop it, so merging
//! ten thousand files holds one input at a time plus the merged tables.
//! Dictionaries are remapped lazily, entry by entry as samples reach them,
//! so what no sample uses is dropped and the output's order depends only on
//! the order of samples: that makes `compact` idempotent. Per sample the
//! merge does hash look-ups in preallocated tables and allocates nothing.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::{HashMap, HashTable};

use crate::error::Error;
use crate::ids::{FunctionId, LabelSetId, LocationId, MappingId, StackId, StringId};
use crate::model::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

const UNMAPPED: u32 = u32::MAX;

/// Merges profiles into one; see the module docs.
pub struct Merger {
    out: Profile,
    functions: HashMap<Function, FunctionId>,
    mappings: HashMap<(u64, u64, StringId, StringId), MappingId>,
    locations: HashTable<LocationId>,
    samples: HashMap<(StackId, LabelSetId), u32>,
    start: i64,
    end: i64,
    inputs: usize,
    // Per-input scratch, kept to reuse its allocations.
    str_map: Vec<u32>,
    mapping_map: Vec<u32>,
    function_map: Vec<u32>,
    location_map: Vec<u32>,
    stack_map: Vec<u32>,
    label_map: Vec<u32>,
    stack_buf: Vec<LocationId>,
    label_buf: Vec<Label>,
    line_buf: Vec<Line>,
}

fn hasher() -> FixedState {
    FixedState::with_seed(0x6d65_7267)
}

fn location_hash(mapping: Option<MappingId>, address: u64, lines: &[Line], folded: bool) -> u64 {
    hasher().hash_one((mapping, address, lines, folded))
}

impl Default for Merger {
    fn default() -> Self {
        Self::new()
    }
}

impl Merger {
    /// An empty merger; the first profile added sets the sample types.
    pub fn new() -> Self {
        Self {
            out: Profile::default(),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashTable::new(),
            samples: HashMap::new(),
            start: i64::MAX,
            end: i64::MIN,
            inputs: 0,
            str_map: Vec::new(),
            mapping_map: Vec::new(),
            function_map: Vec::new(),
            location_map: Vec::new(),
            stack_map: Vec::new(),
            label_map: Vec::new(),
            stack_buf: Vec::new(),
            label_buf: Vec::new(),
            line_buf: Vec::new(),
        }
    }

    /// How many profiles were added.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Adds `p`. Its sample types must equal the first profile's.
    pub fn add(&mut self, p: &Profile) -> Result<(), Error> {
        let n = p.sample_types.len();
        if p.values.len() != p.samples.len() * n {
            return Err(Error::Invalid("values do not match samples".into()));
        }
        self.begin(p)?;
        self.begin_tables(p);
        for (i, s) in p.samples.iter().enumerate() {
            self.push_row(p, s.stack, s.labels, &p.values[i * n..(i + 1) * n])?;
        }
        Ok(())
    }

    /// Adds samples given as rows over the tables (strings, functions,
    /// locations, mappings, stacks, label sets) of `tables`, whose own
    /// samples are ignored; `header` gives the sample types, period and
    /// time (its tables are not read). How a store that keeps one symbol
    /// table for many profiles hands them to a merge.
    pub fn add_rows<'a>(
        &mut self,
        header: &Profile,
        tables: &Profile,
        rows: impl IntoIterator<Item = (StackId, LabelSetId, &'a [i64])>,
    ) -> Result<(), Error> {
        let n = header.sample_types.len();
        self.begin(header)?;
        self.begin_tables(tables);
        for (stack, labels, values) in rows {
            if values.len() != n {
                return Err(Error::Invalid(
                    "a row's values do not match its sample types".into(),
                ));
            }
            self.push_row(tables, stack, labels, values)?;
        }
        Ok(())
    }

    /// As [`Merger::add_rows`], for rows that are pushed rather than
    /// iterated (decoded into a buffer one at a time, say): push each with
    /// [`RowSink::push`].
    pub fn rows<'a>(
        &'a mut self,
        header: &Profile,
        tables: &'a Profile,
    ) -> Result<RowSink<'a>, Error> {
        self.begin(header)?;
        self.begin_tables(tables);
        Ok(RowSink {
            width: header.sample_types.len(),
            m: self,
            tables,
        })
    }

    /// Takes `p`'s header: sample types, period, comments, time.
    fn begin(&mut self, p: &Profile) -> Result<(), Error> {
        self.str_map.clear();
        self.str_map.resize(p.strings.len(), UNMAPPED);
        if self.inputs == 0 {
            self.adopt_header(p);
        } else {
            self.check_compatible(p)?;
            self.out.period = self.out.period.max(p.period);
            for &c in &p.comments {
                let c = self.string(p, c);
                if !self.out.comments.contains(&c) {
                    self.out.comments.push(c);
                }
            }
        }
        self.inputs += 1;
        if p.time_nanos != 0 {
            self.start = self.start.min(p.time_nanos);
            self.end = self.end.max(p.time_nanos.saturating_add(p.duration_nanos));
        }
        Ok(())
    }

    /// Readies the remapping of `p`'s tables.
    fn begin_tables(&mut self, p: &Profile) {
        reset(&mut self.str_map, p.strings.len());
        reset(&mut self.mapping_map, p.mappings.len());
        reset(&mut self.function_map, p.functions.len());
        reset(&mut self.location_map, p.locations.len());
        reset(&mut self.stack_map, p.stacks.len());
        reset(&mut self.label_map, p.label_sets.len());
        // Inputs of one service share most of their stacks: room for as
        // many as the largest input holds, so the table is not rehashed
        // at every doubling.
        let more = p.stacks.len().saturating_sub(self.out.stacks.len());
        if more > 0 {
            self.out.stacks.reserve(more, 0);
        }
    }

    #[inline]
    fn push_row(
        &mut self,
        p: &Profile,
        stack: StackId,
        labels: LabelSetId,
        values: &[i64],
    ) -> Result<(), Error> {
        if values.iter().all(|&v| v == 0) {
            return Ok(());
        }
        let stack = self.stack(p, stack)?;
        let labels = self.label_set(p, labels)?;
        let out_n = self.out.sample_types.len();
        match self.samples.entry((stack, labels)) {
            hashbrown::hash_map::Entry::Occupied(e) => {
                let at = *e.get() as usize * out_n;
                for (o, &v) in self.out.values[at..at + out_n].iter_mut().zip(values) {
                    *o = o.saturating_add(v);
                }
            }
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(self.out.samples.len() as u32);
                self.out.samples.push(Sample { stack, labels });
                self.out.values.extend_from_slice(values);
            }
        }
        Ok(())
    }

    /// The merged profile.
    pub fn finish(mut self) -> Profile {
        if self.start <= self.end && self.start != i64::MAX {
            self.out.time_nanos = self.start;
            self.out.duration_nanos = self.end - self.start;
        }
        self.out
    }

    fn adopt_header(&mut self, p: &Profile) {
        for vt in &p.sample_types {
            let vt = self.value_type(p, *vt);
            self.out.sample_types.push(vt);
        }
        self.out.period_type = p.period_type.map(|vt| self.value_type(p, vt));
        self.out.period = p.period;
        self.out.default_sample_type = self.string(p, p.default_sample_type);
        self.out.drop_frames = self.string(p, p.drop_frames);
        self.out.keep_frames = self.string(p, p.keep_frames);
        self.out.doc_url = self.string(p, p.doc_url);
        for &c in &p.comments {
            let c = self.string(p, c);
            self.out.comments.push(c);
        }
    }

    fn check_compatible(&self, p: &Profile) -> Result<(), Error> {
        let same = p.sample_types.len() == self.out.sample_types.len()
            && p.sample_types
                .iter()
                .zip(&self.out.sample_types)
                .all(|(a, b)| {
                    p.str(a.ty) == self.out.str(b.ty) && p.str(a.unit) == self.out.str(b.unit)
                });
        if same {
            return Ok(());
        }
        let names = |q: &Profile| {
            q.sample_types
                .iter()
                .map(|vt| format!("{}/{}", q.str(vt.ty), q.str(vt.unit)))
                .collect::<Vec<_>>()
                .join(",")
        };
        Err(Error::Mismatch(format!(
            "sample types [{}] differ from [{}]",
            names(p),
            names(&self.out)
        )))
    }

    fn value_type(&mut self, p: &Profile, vt: ValueType) -> ValueType {
        ValueType {
            ty: self.string(p, vt.ty),
            unit: self.string(p, vt.unit),
        }
    }

    #[inline]
    fn string(&mut self, p: &Profile, s: StringId) -> StringId {
        let slot = &mut self.str_map[s.index()];
        if *slot == UNMAPPED {
            *slot = self.out.strings.intern(p.str(s)).0;
        }
        StringId(*slot)
    }

    fn mapping(&mut self, p: &Profile, m: MappingId) -> MappingId {
        if self.mapping_map[m.index()] != UNMAPPED {
            return MappingId(self.mapping_map[m.index()]);
        }
        let src = &p.mappings[m.index()];
        let filename = self.string(p, src.filename);
        let build_id = self.string(p, src.build_id);
        let size = src.memory_limit.wrapping_sub(src.memory_start);
        // pprof's rule: the build id names the file when there is one (a
        // binary replaced on disk reads `/path (deleted)`, same build).
        let by_name = if p.str(src.build_id).is_empty() {
            filename
        } else {
            StringId(0)
        };
        let key = (size, src.file_offset, by_name, build_id);
        let out = &mut self.out;
        let id = *self.mappings.entry(key).or_insert_with(|| {
            out.add_mapping(Mapping {
                filename,
                build_id,
                ..src.clone()
            })
        });
        self.mapping_map[m.index()] = id.0;
        id
    }

    fn function(&mut self, p: &Profile, f: FunctionId) -> FunctionId {
        if self.function_map[f.index()] != UNMAPPED {
            return FunctionId(self.function_map[f.index()]);
        }
        let src = p.functions[f.index()];
        let key = Function {
            name: self.string(p, src.name),
            system_name: self.string(p, src.system_name),
            filename: self.string(p, src.filename),
            start_line: src.start_line,
        };
        let out = &mut self.out;
        let id = *self
            .functions
            .entry(key)
            .or_insert_with(|| out.add_function(key));
        self.function_map[f.index()] = id.0;
        id
    }

    fn location(&mut self, p: &Profile, l: LocationId) -> LocationId {
        if self.location_map[l.index()] != UNMAPPED {
            return LocationId(self.location_map[l.index()]);
        }
        let src = &p.locations[l.index()];
        let mapping = src.mapping.map(|m| self.mapping(p, m));
        // Mappings merge by (file, build id, offset, size), whatever their
        // load address: an address inside one is moved into the merged
        // mapping's address range, so one binary's code at another ASLR
        // base (another process, another restart) is the same location.
        let address = match (src.mapping, mapping) {
            (Some(from), Some(to)) => {
                let from = &p.mappings[from.index()];
                let to = &self.out.mappings[to.index()];
                if (from.memory_start..from.memory_limit).contains(&src.address) {
                    src.address - from.memory_start + to.memory_start
                } else {
                    src.address
                }
            }
            _ => src.address,
        };
        let mut lines = std::mem::take(&mut self.line_buf);
        lines.clear();
        for line in &src.lines {
            lines.push(Line {
                function: self.function(p, line.function),
                ..*line
            });
        }
        let h = location_hash(mapping, address, &lines, src.is_folded);
        let locations = &self.out.locations;
        let found = self.locations.find(h, |&id| {
            let o = &locations[id.index()];
            o.mapping == mapping
                && o.address == address
                && o.is_folded == src.is_folded
                && o.lines == lines
        });
        let id = match found {
            Some(&id) => id,
            None => {
                let id = self.out.add_location(Location {
                    mapping,
                    address,
                    lines: lines.clone(),
                    is_folded: src.is_folded,
                });
                let locations = &self.out.locations;
                self.locations.insert_unique(h, id, |&id| {
                    let o = &locations[id.index()];
                    location_hash(o.mapping, o.address, &o.lines, o.is_folded)
                });
                id
            }
        };
        self.line_buf = lines;
        self.location_map[l.index()] = id.0;
        id
    }

    fn stack(&mut self, p: &Profile, s: StackId) -> Result<StackId, Error> {
        let slot = *self
            .stack_map
            .get(s.index())
            .ok_or_else(|| Error::Invalid("stack out of range".into()))?;
        if slot != UNMAPPED {
            return Ok(StackId(slot));
        }
        let mut buf = std::mem::take(&mut self.stack_buf);
        buf.clear();
        for &l in p.stack(s) {
            if l.index() >= p.locations.len() {
                return Err(Error::Invalid("stack names a location out of range".into()));
            }
            buf.push(self.location(p, l));
        }
        let id = self.out.stacks.intern(&buf);
        self.stack_buf = buf;
        self.stack_map[s.index()] = id;
        Ok(StackId(id))
    }

    fn label_set(&mut self, p: &Profile, set: LabelSetId) -> Result<LabelSetId, Error> {
        let slot = *self
            .label_map
            .get(set.index())
            .ok_or_else(|| Error::Invalid("label set out of range".into()))?;
        if slot != UNMAPPED {
            return Ok(LabelSetId(slot));
        }
        let mut buf = std::mem::take(&mut self.label_buf);
        buf.clear();
        buf.extend_from_slice(p.labels(set));
        // Labels are a set: one order, by content rather than by id, so that
        // {a,b} and {b,a} merge and a second compaction interns in the
        // same order as the first.
        buf.sort_unstable_by(|a, b| {
            (p.str(a.key), p.str(a.str), a.num, p.str(a.num_unit)).cmp(&(
                p.str(b.key),
                p.str(b.str),
                b.num,
                p.str(b.num_unit),
            ))
        });
        buf.dedup();
        for l in buf.iter_mut() {
            *l = Label {
                key: self.string(p, l.key),
                str: self.string(p, l.str),
                num: l.num,
                num_unit: self.string(p, l.num_unit),
            };
        }
        let id = self.out.label_sets.intern(&buf);
        self.label_buf = buf;
        self.label_map[set.index()] = id;
        Ok(LabelSetId(id))
    }
}

fn reset(map: &mut Vec<u32>, len: usize) {
    map.clear();
    map.resize(len, UNMAPPED);
}

/// One symbol table for many profiles: each profile added has its stacks
/// and label sets interned into the shared tables, and its samples handed
/// back as rows over them, unsummed. A store keeps rows per series and time
/// over one table instead of a table per profile; [`Merger::add_rows`]
/// turns rows back into a profile.
#[derive(Default)]
pub struct Interner {
    m: Merger,
}

impl Interner {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Interns `p`'s samples and calls `row` with each one's stack, label
    /// set and values in the shared tables; samples whose values are all
    /// zero are skipped.
    pub fn add(
        &mut self,
        p: &Profile,
        mut row: impl FnMut(StackId, LabelSetId, &[i64]),
    ) -> Result<(), Error> {
        let n = p.sample_types.len();
        if p.values.len() != p.samples.len() * n {
            return Err(Error::Invalid("values do not match samples".into()));
        }
        self.m.begin_tables(p);
        for (i, s) in p.samples.iter().enumerate() {
            let values = &p.values[i * n..(i + 1) * n];
            if values.iter().all(|&v| v == 0) {
                continue;
            }
            let stack = self.m.stack(p, s.stack)?;
            let labels = self.m.label_set(p, s.labels)?;
            row(stack, labels, values);
        }
        Ok(())
    }

    /// Re-interns rows over another table `tables` into this one: call
    /// [`Remapper::row`] for each.
    pub fn remapper<'a>(&'a mut self, tables: &'a Profile) -> Remapper<'a> {
        self.m.begin_tables(tables);
        Remapper {
            m: &mut self.m,
            tables,
        }
    }

    /// The shared tables (a profile without samples).
    pub fn tables(&self) -> &Profile {
        &self.m.out
    }

    /// The shared tables, taken.
    pub fn into_tables(self) -> Profile {
        self.m.out
    }
}

/// Rows going into a [`Merger`]; see [`Merger::rows`].
pub struct RowSink<'a> {
    m: &'a mut Merger,
    tables: &'a Profile,
    width: usize,
}

impl RowSink<'_> {
    /// Adds one row over the tables given to [`Merger::rows`].
    pub fn push(
        &mut self,
        stack: StackId,
        labels: LabelSetId,
        values: &[i64],
    ) -> Result<(), Error> {
        if values.len() != self.width {
            return Err(Error::Invalid(
                "a row's values do not match its sample types".into(),
            ));
        }
        self.m.push_row(self.tables, stack, labels, values)
    }
}

/// Moves rows from one table into an [`Interner`]'s; see
/// [`Interner::remapper`].
pub struct Remapper<'a> {
    m: &'a mut Merger,
    tables: &'a Profile,
}

impl Remapper<'_> {
    /// The stack and label set in the interner's table for a row over the
    /// other table.
    pub fn row(
        &mut self,
        stack: StackId,
        labels: LabelSetId,
    ) -> Result<(StackId, LabelSetId), Error> {
        Ok((
            self.m.stack(self.tables, stack)?,
            self.m.label_set(self.tables, labels)?,
        ))
    }
}

/// `p`'s header alone — sample types, period, default type, time, comments
/// — with only the strings they use: what rows over a shared table need
/// beside it to become a profile again (see [`Merger::add_rows`]).
pub fn header(p: &Profile) -> Profile {
    let mut out = Profile::default();
    let st = |out: &mut Profile, id: StringId| out.strings.intern(p.str(id));
    out.sample_types = p
        .sample_types
        .iter()
        .map(|vt| ValueType {
            ty: st(&mut out, vt.ty),
            unit: st(&mut out, vt.unit),
        })
        .collect();
    out.period_type = p.period_type.map(|vt| ValueType {
        ty: st(&mut out, vt.ty),
        unit: st(&mut out, vt.unit),
    });
    out.period = p.period;
    out.default_sample_type = st(&mut out, p.default_sample_type);
    out.time_nanos = p.time_nanos;
    out.duration_nanos = p.duration_nanos;
    out.comments = p.comments.iter().map(|&c| st(&mut out, c)).collect();
    out.doc_url = st(&mut out, p.doc_url);
    out
}

/// Merges `profiles`, which must share sample types.
pub fn merge<'a>(profiles: impl IntoIterator<Item = &'a Profile>) -> Result<Profile, Error> {
    let mut m = Merger::new();
    for p in profiles {
        m.add(p)?;
    }
    Ok(m.finish())
}

/// Rewrites `p` without duplicates or unused entries: identical functions,
/// locations, mappings and samples become one; samples whose values are all
/// zero are dropped. Idempotent.
pub fn compact(p: &Profile) -> Profile {
    let mut m = Merger::new();
    match m.add(p) {
        Ok(()) => m.finish(),
        // Only an inconsistent profile fails; hand it back unchanged.
        Err(_) => p.clone(),
    }
}

/// A one-type view of `p`: only sample type `index`, compacted. Used to
/// combine files whose type lists differ (a JFR and a Go pprof).
pub fn select_type(p: &Profile, index: usize) -> Profile {
    select_types(p, &[index])
}

/// A view of `p` with only the sample types at `indices` (in that order),
/// compacted: samples whose kept values are all zero go. The default type
/// stays if kept, else becomes the first kept. Used to split a JFR into
/// one profile per kind (CPU, memory, locks) for Pyroscope's push API.
pub fn select_types(p: &Profile, indices: &[usize]) -> Profile {
    let mut some = Profile {
        sample_types: indices.iter().map(|&i| p.sample_types[i]).collect(),
        ..p.clone()
    };
    let n = p.sample_types.len().max(1);
    some.values = p
        .values
        .chunks(n)
        .flat_map(|row| indices.iter().map(move |&i| row[i]))
        .collect();
    if !some
        .sample_types
        .iter()
        .any(|t| t.ty == p.default_sample_type)
    {
        some.default_sample_type = some
            .sample_types
            .first()
            .map_or(p.default_sample_type, |t| t.ty);
    }
    compact(&some)
}

/// Sample type `index` of `p` alone, without compacting: samples whose value
/// is zero go, the dictionaries stay as they are (some entries may be
/// unused). A fraction of [`select_type`]'s cost, for a result that is read
/// (top, flame graph) and not kept.
pub fn view_type(p: &Profile, index: usize) -> Profile {
    let n = p.sample_types.len().max(1);
    let mut out = Profile {
        sample_types: vec![p.sample_types[index]],
        samples: Vec::with_capacity(p.samples.len()),
        values: Vec::with_capacity(p.samples.len()),
        ..p.clone()
    };
    for (i, s) in p.samples.iter().enumerate() {
        let v = p.values[i * n + index];
        if v != 0 {
            out.samples.push(*s);
            out.values.push(v);
        }
    }
    out.default_sample_type = p.sample_types[index].ty;
    out
}

/// Multiplies every value of `p` by `factor` (rounding), as pprof's
/// `-normalize` and diff normalisation do.
pub fn scale(p: &mut Profile, factor: f64) {
    for v in &mut p.values {
        *v = (*v as f64 * factor).round() as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folded::{FoldedOptions, decode};

    fn folded(text: &str) -> Profile {
        decode(text.as_bytes(), &FoldedOptions::default()).unwrap()
    }

    #[test]
    fn select_types_keeps_the_chosen_columns_and_drops_empty_samples() {
        let mut p = Profile::with_sample_types(&[
            ("cpu", "nanoseconds"),
            ("alloc_space", "bytes"),
            ("alloc_objects", "count"),
        ]);
        p.push_sample(&[], &[], &[10, 0, 0]);
        p.push_sample(&[], &[], &[0, 64, 2]);
        let mem = select_types(&p, &[1, 2]);
        mem.validate().unwrap();
        assert_eq!(mem.sample_types.len(), 2);
        assert_eq!(mem.sample_type_names(0), ("alloc_space", "bytes"));
        assert_eq!((mem.total(0), mem.total(1)), (64, 2));
        assert_eq!(mem.samples.len(), 1, "the CPU-only sample is gone");
        let cpu = select_type(&p, 0);
        assert_eq!((cpu.total(0), cpu.samples.len()), (10, 1));
        let view = view_type(&p, 1);
        view.validate().unwrap();
        assert_eq!((view.total(0), view.samples.len()), (64, 1));
        assert_eq!(cpu.default_type_index(), Some(0));
    }

    #[test]
    fn rows_over_one_interner_merge_like_the_profiles() {
        let a = folded("main;a 1\nmain;b 2\n");
        let b = folded("main;b 3\nmain;c 4\nmain;z 0\n");
        let mut dict = Interner::new();
        let mut rows: Vec<(StackId, LabelSetId, Vec<i64>)> = Vec::new();
        for p in [&a, &b] {
            dict.add(p, |s, l, v| rows.push((s, l, v.to_vec())))
                .unwrap();
        }
        assert_eq!(rows.len(), 4, "the zero sample is skipped");
        assert_eq!(dict.tables().stacks.len(), 3, "main;b is interned once");
        let mut m = Merger::new();
        let h = header(&a);
        assert!(h.functions.is_empty() && h.samples.is_empty());
        m.add_rows(
            &h,
            dict.tables(),
            rows.iter().map(|(s, l, v)| (*s, *l, &v[..])),
        )
        .unwrap();
        let out = m.finish();
        out.validate().unwrap();
        assert_eq!(out, merge([&a, &b]).unwrap());
        let mut bad = Merger::new();
        let wide = Profile::with_sample_types(&[("a", "b"), ("c", "d")]);
        let short: &[i64] = &[1];
        assert!(
            bad.add_rows(&wide, dict.tables(), [(rows[0].0, rows[0].1, short)])
                .is_err()
        );
    }

    #[test]
    fn merge_sums_equal_stacks() {
        let a = folded("main;a 1\nmain;b 2\n");
        let b = folded("main;b 3\nmain;c 4\n");
        let m = merge([&a, &b]).unwrap();
        m.validate().unwrap();
        assert_eq!(
            crate::folded::encode(&m, 0, false),
            "main;a 1\nmain;b 5\nmain;c 4\n"
        );
        assert_eq!(m.functions.len(), 4);
    }

    #[test]
    fn mismatched_types_are_refused() {
        let a = folded("main 1\n");
        let b = Profile::with_sample_types(&[("cpu", "nanoseconds")]);
        assert!(matches!(merge([&a, &b]), Err(Error::Mismatch(_))));
    }

    #[test]
    fn select_type_keeps_one_column() {
        let mut p = Profile::with_sample_types(&[("samples", "count"), ("cpu", "nanoseconds")]);
        let f = p.add_function(Function::default());
        let l = p.add_location(Location {
            lines: vec![Line {
                function: f,
                line: 0,
                column: 0,
            }],
            ..Location::default()
        });
        p.push_sample(&[l], &[], &[2, 20]);
        p.push_sample(&[l], &[], &[0, 0]);
        let one = select_type(&p, 1);
        assert_eq!(one.sample_types.len(), 1);
        assert_eq!(one.values, vec![20]);
        assert_eq!(one.str(one.sample_types[0].ty), "cpu");
    }
}
