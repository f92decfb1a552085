//! The canonical in-memory profile: pprof's data model with dense typed ids,
//! interned strings, stacks and label sets, and values stored flat. Every
//! format decodes into it and every algorithm works on it.

use crate::error::Error;
use crate::ids::{FunctionId, LabelSetId, LocationId, MappingId, StackId, StringId};
use crate::intern::{SliceTable, StringTable};

/// A sample type or period type: what is measured and in which unit
/// (`cpu`/`nanoseconds`, `alloc_space`/`bytes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ValueType {
    /// What is measured.
    pub ty: StringId,
    /// Its unit.
    pub unit: StringId,
}

/// A binary mapped into the profiled process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// First address of the mapping.
    pub memory_start: u64,
    /// One past its last address.
    pub memory_limit: u64,
    /// Offset in the file at which the mapping starts.
    pub file_offset: u64,
    /// Path of the mapped file.
    pub filename: StringId,
    /// Build id of the mapped file (GNU build id, Go build id, …).
    pub build_id: StringId,
    /// The profile resolved function names for this mapping.
    pub has_functions: bool,
    /// The profile resolved file names for this mapping.
    pub has_filenames: bool,
    /// The profile resolved line numbers for this mapping.
    pub has_line_numbers: bool,
    /// The profile resolved inlined frames for this mapping.
    pub has_inline_frames: bool,
}

/// A function: the unit a top table ranks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Function {
    /// Human-readable (demangled) name.
    pub name: StringId,
    /// Name as the system knows it (mangled).
    pub system_name: StringId,
    /// Source file.
    pub filename: StringId,
    /// Line at which the function starts, 0 when unknown.
    pub start_line: i64,
}

/// One source line of a location.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Line {
    /// The function the line belongs to.
    pub function: FunctionId,
    /// Line number, 0 when unknown.
    pub line: i64,
    /// Column, 0 when unknown.
    pub column: i64,
}

/// A code address and the source lines it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Location {
    /// The mapping the address falls in, if known.
    pub mapping: Option<MappingId>,
    /// The instruction address; for a caller frame this is the return
    /// address, one past the call, as pprof records it.
    pub address: u64,
    /// Lines, innermost first: `lines[0]` is the inlined callee, the last
    /// is the function the address physically belongs to.
    pub lines: Vec<Line>,
    /// Several frames were folded into this one (recursion compressed).
    pub is_folded: bool,
}

/// A label on a sample: a string value, or a number with an optional unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// The label's name.
    pub key: StringId,
    /// The string value, or `StringId(0)` for a numeric label.
    pub str: StringId,
    /// The numeric value (0 for a string label).
    pub num: i64,
    /// The unit of `num` (`bytes`, `nanoseconds`), or `StringId(0)`.
    pub num_unit: StringId,
}

/// A sample: a stack and the labels it was taken with. Its values are in
/// [`Profile::values`], `sample_types.len()` of them per sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sample {
    /// The stack, leaf first.
    pub stack: StackId,
    /// The sample's labels.
    pub labels: LabelSetId,
}

/// The canonical profile. Build one with the `add_*` and `push_sample`
/// methods or decode one with [`crate::decode`]; check it with
/// [`Profile::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Every string the profile uses.
    pub strings: StringTable,
    /// What each of a sample's values measures.
    pub sample_types: Vec<ValueType>,
    /// Name of the sample type tools show by default, or `StringId(0)`.
    pub default_sample_type: StringId,
    /// What one sampling period measures, if known.
    pub period_type: Option<ValueType>,
    /// The sampling period, in `period_type` units.
    pub period: i64,
    /// When the profile started, nanoseconds since the Unix epoch (0 if unknown).
    pub time_nanos: i64,
    /// How long it covers, nanoseconds.
    pub duration_nanos: i64,
    /// pprof's `drop_frames` regex, or `StringId(0)`.
    pub drop_frames: StringId,
    /// pprof's `keep_frames` regex, or `StringId(0)`.
    pub keep_frames: StringId,
    /// Free-form comments.
    pub comments: Vec<StringId>,
    /// Where the profile type is documented, or `StringId(0)`.
    pub doc_url: StringId,
    /// Mapped binaries.
    pub mappings: Vec<Mapping>,
    /// Functions.
    pub functions: Vec<Function>,
    /// Locations.
    pub locations: Vec<Location>,
    /// Interned stacks, leaf first.
    pub stacks: SliceTable<LocationId>,
    /// Interned label sets; index 0 is the empty set.
    pub label_sets: SliceTable<Label>,
    /// Samples, in order.
    pub samples: Vec<Sample>,
    /// Sample values, flat: sample `i`'s values are
    /// `values[i * n .. (i + 1) * n]` with `n = sample_types.len()`.
    pub values: Vec<i64>,
}

impl Default for Profile {
    fn default() -> Self {
        let mut label_sets = SliceTable::default();
        label_sets.intern(&[]);
        Self {
            strings: StringTable::default(),
            sample_types: Vec::new(),
            default_sample_type: StringId(0),
            period_type: None,
            period: 0,
            time_nanos: 0,
            duration_nanos: 0,
            drop_frames: StringId(0),
            keep_frames: StringId(0),
            comments: Vec::new(),
            doc_url: StringId(0),
            mappings: Vec::new(),
            functions: Vec::new(),
            locations: Vec::new(),
            stacks: SliceTable::default(),
            label_sets,
            samples: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl Profile {
    /// An empty profile with the given sample types (`(type, unit)` pairs).
    pub fn with_sample_types(types: &[(&str, &str)]) -> Self {
        let mut p = Self::default();
        for (ty, unit) in types {
            let vt = p.value_type(ty, unit);
            p.sample_types.push(vt);
        }
        p
    }

    /// Interns `ty` and `unit` as a [`ValueType`].
    pub fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            ty: self.strings.intern(ty),
            unit: self.strings.intern(unit),
        }
    }

    /// The string behind `id`.
    #[inline]
    pub fn str(&self, id: StringId) -> &str {
        self.strings.get(id)
    }

    /// The heap bytes the profile asks of the allocator: every table and
    /// vector by its capacity, each location's lines included. What a
    /// cache of decoded profiles counts against its bound.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.strings.heap_bytes()
            + self.sample_types.capacity() * size_of::<ValueType>()
            + self.comments.capacity() * size_of::<StringId>()
            + self.mappings.capacity() * size_of::<Mapping>()
            + self.functions.capacity() * size_of::<Function>()
            + self.locations.capacity() * size_of::<Location>()
            + self
                .locations
                .iter()
                .map(|l| l.lines.capacity() * size_of::<Line>())
                .sum::<usize>()
            + self.stacks.heap_bytes()
            + self.label_sets.heap_bytes()
            + self.samples.capacity() * size_of::<Sample>()
            + self.values.capacity() * size_of::<i64>()
    }

    /// Gives back the room every table and vector reserved beyond what it
    /// holds: for a profile that will not grow (a table read back, kept in
    /// a cache).
    pub fn shrink_to_fit(&mut self) {
        self.strings.shrink_to_fit();
        self.sample_types.shrink_to_fit();
        self.comments.shrink_to_fit();
        self.mappings.shrink_to_fit();
        self.functions.shrink_to_fit();
        self.locations.shrink_to_fit();
        for l in &mut self.locations {
            l.lines.shrink_to_fit();
        }
        self.stacks.shrink_to_fit();
        self.label_sets.shrink_to_fit();
        self.samples.shrink_to_fit();
        self.values.shrink_to_fit();
    }

    /// Adds a function and returns its id (no deduplication: see
    /// [`crate::compact`]).
    pub fn add_function(&mut self, f: Function) -> FunctionId {
        self.functions.push(f);
        FunctionId::from_index(self.functions.len() - 1)
    }

    /// Adds a location and returns its id.
    pub fn add_location(&mut self, l: Location) -> LocationId {
        self.locations.push(l);
        LocationId::from_index(self.locations.len() - 1)
    }

    /// Adds a location of one function called `name`, with no address,
    /// file or line (a thread's name, a task's, a captured frame's text),
    /// and returns its id.
    pub fn add_named_location(&mut self, name: &str) -> LocationId {
        let n = self.strings.intern(name);
        let function = self.add_function(Function {
            name: n,
            system_name: n,
            ..Function::default()
        });
        self.add_location(Location {
            lines: vec![Line {
                function,
                line: 0,
                column: 0,
            }],
            ..Location::default()
        })
    }

    /// Adds a mapping and returns its id.
    pub fn add_mapping(&mut self, m: Mapping) -> MappingId {
        self.mappings.push(m);
        MappingId::from_index(self.mappings.len() - 1)
    }

    /// Appends a sample with stack `stack` (leaf first), `labels` and one
    /// value per sample type.
    ///
    /// # Panics
    /// If `values.len()` differs from the number of sample types: that is a
    /// programming error in the caller, not bad input.
    pub fn push_sample(&mut self, stack: &[LocationId], labels: &[Label], values: &[i64]) {
        assert_eq!(
            values.len(),
            self.sample_types.len(),
            "one value per sample type"
        );
        let stack = StackId(self.stacks.intern(stack));
        let labels = LabelSetId(self.label_sets.intern(labels));
        self.samples.push(Sample { stack, labels });
        self.values.extend_from_slice(values);
    }

    /// The values of sample `i`.
    #[inline]
    pub fn sample_values(&self, i: usize) -> &[i64] {
        let n = self.sample_types.len();
        &self.values[i * n..(i + 1) * n]
    }

    /// The locations of `stack`, leaf first.
    #[inline]
    pub fn stack(&self, stack: StackId) -> &[LocationId] {
        self.stacks.get(stack.0)
    }

    /// The labels of a label set.
    #[inline]
    pub fn labels(&self, set: LabelSetId) -> &[Label] {
        self.label_sets.get(set.0)
    }

    /// The string value of label `key` on `set`, if any.
    pub fn label_str(&self, set: LabelSetId, key: StringId) -> Option<&str> {
        self.labels(set)
            .iter()
            .find(|l| l.key == key && l.str != StringId(0))
            .map(|l| self.str(l.str))
    }

    /// The index of the sample type called `name` (`cpu`, `alloc_space`), or
    /// written `type:unit`, or as a Pyroscope profile type ID
    /// (`process_cpu:cpu:nanoseconds:cpu:nanoseconds`).
    pub fn sample_type_index(&self, name: &str) -> Option<usize> {
        let parts: Vec<&str> = name.split(':').collect();
        let (ty, unit) = match parts.as_slice() {
            [ty] => (*ty, None),
            [ty, unit] => (*ty, Some(*unit)),
            [_, ty, unit, ..] => (*ty, Some(*unit)),
            [] => return None,
        };
        self.sample_types
            .iter()
            .position(|vt| self.str(vt.ty) == ty && unit.is_none_or(|u| self.str(vt.unit) == u))
    }

    /// The sample type a command uses when none is asked for: the CPU type if
    /// there is one, else pprof's rule (`default_sample_type`, else the last).
    pub fn default_type_index(&self) -> Option<usize> {
        if self.sample_types.is_empty() {
            return None;
        }
        if let Some(i) = self.sample_type_index("cpu") {
            return Some(i);
        }
        let default = self.str(self.default_sample_type);
        if !default.is_empty()
            && let Some(i) = self.sample_type_index(default)
        {
            return Some(i);
        }
        Some(self.sample_types.len() - 1)
    }

    /// `type` and `unit` of sample type `i`, as strings.
    pub fn sample_type_names(&self, i: usize) -> (&str, &str) {
        let vt = self.sample_types[i];
        (self.str(vt.ty), self.str(vt.unit))
    }

    /// Sum of sample type `i` over all samples.
    pub fn total(&self, i: usize) -> i64 {
        let n = self.sample_types.len();
        self.values
            .iter()
            .skip(i)
            .step_by(n.max(1))
            .fold(0i64, |a, &v| a.saturating_add(v))
    }

    /// The display name of each frame of `location`, innermost (leaf) first:
    /// one per line, or the address when the location has no lines.
    pub fn frame_names(&self, location: LocationId, mut f: impl FnMut(FrameName<'_>)) {
        let loc = &self.locations[location.index()];
        if loc.lines.is_empty() {
            f(FrameName::Address(loc.address));
            return;
        }
        for line in &loc.lines {
            let func = &self.functions[line.function.index()];
            let name = self.str(func.name);
            if name.is_empty() {
                f(FrameName::Named(self.str(func.system_name)))
            } else {
                f(FrameName::Named(name))
            }
        }
    }

    /// Checks the invariants every algorithm relies on: ids in range, one
    /// value per sample type per sample, `""` first in the string table.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::Invalid(what));
        if self.strings.is_empty() || !self.strings.get(StringId(0)).is_empty() {
            return bad("string 0 is not the empty string".into());
        }
        let ns = self.strings.len();
        let s_ok = |s: StringId| s.index() < ns;
        for vt in self.sample_types.iter().chain(self.period_type.iter()) {
            if !s_ok(vt.ty) || !s_ok(vt.unit) {
                return bad("value type names a string out of range".into());
            }
        }
        if self.values.len() != self.samples.len() * self.sample_types.len() {
            return bad(format!(
                "{} values for {} samples of {} types",
                self.values.len(),
                self.samples.len(),
                self.sample_types.len()
            ));
        }
        for (i, f) in self.functions.iter().enumerate() {
            if ![f.name, f.system_name, f.filename].into_iter().all(s_ok) {
                return bad(format!("function {i} names a string out of range"));
            }
        }
        for (i, m) in self.mappings.iter().enumerate() {
            if !s_ok(m.filename) || !s_ok(m.build_id) {
                return bad(format!("mapping {i} names a string out of range"));
            }
        }
        for (i, l) in self.locations.iter().enumerate() {
            if l.mapping.is_some_and(|m| m.index() >= self.mappings.len()) {
                return bad(format!("location {i} names a mapping out of range"));
            }
            if l.lines
                .iter()
                .any(|line| line.function.index() >= self.functions.len())
            {
                return bad(format!("location {i} names a function out of range"));
            }
        }
        for stack in self.stacks.iter() {
            if stack.iter().any(|l| l.index() >= self.locations.len()) {
                return bad("a stack names a location out of range".into());
            }
        }
        for set in self.label_sets.iter() {
            if set
                .iter()
                .any(|l| !s_ok(l.key) || !s_ok(l.str) || !s_ok(l.num_unit))
            {
                return bad("a label names a string out of range".into());
            }
        }
        for (i, s) in self.samples.iter().enumerate() {
            if s.stack.index() >= self.stacks.len() || s.labels.index() >= self.label_sets.len() {
                return bad(format!(
                    "sample {i} names a stack or label set out of range"
                ));
            }
        }
        if self.label_sets.get(0) != [] as [Label; 0] {
            return bad("label set 0 is not the empty set".into());
        }
        Ok(())
    }
}

/// How a frame is shown: its function name, or its address when unsymbolized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameName<'a> {
    /// A symbolized frame.
    Named(&'a str),
    /// An unsymbolized frame.
    Address(u64),
}

impl std::fmt::Display for FrameName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameName::Named(n) => f.write_str(n),
            FrameName::Address(a) => write!(f, "0x{a:x}"),
        }
    }
}

/// The pool a thread belongs to: its name with a trailing number folded to
/// `*` (`worker-12` → `worker-*`, `tokio-runtime-worker` stays).
pub fn thread_pool(thread_name: &str) -> String {
    let trimmed = thread_name.trim_end_matches(|c: char| c.is_ascii_digit());
    if trimmed.len() == thread_name.len() || trimmed.is_empty() {
        thread_name.to_string()
    } else {
        format!("{trimmed}*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_fold_trailing_numbers() {
        assert_eq!(thread_pool("worker-12"), "worker-*");
        assert_eq!(thread_pool("pool-1-thread-3"), "pool-1-thread-*");
        assert_eq!(thread_pool("main"), "main");
        assert_eq!(thread_pool("42"), "42");
    }

    #[test]
    fn default_type_prefers_cpu_then_default_then_last() {
        let mut p = Profile::with_sample_types(&[("samples", "count"), ("cpu", "nanoseconds")]);
        assert_eq!(p.default_type_index(), Some(1));
        p = Profile::with_sample_types(&[("alloc_space", "bytes"), ("inuse_space", "bytes")]);
        assert_eq!(p.default_type_index(), Some(1));
        p.default_sample_type = p.strings.intern("alloc_space");
        assert_eq!(p.default_type_index(), Some(0));
        assert_eq!(
            p.sample_type_index("memory:inuse_space:bytes:space:bytes"),
            Some(1)
        );
    }

    #[test]
    fn validate_catches_dangling_ids() {
        let mut p = Profile::with_sample_types(&[("cpu", "nanoseconds")]);
        let f = p.add_function(Function::default());
        let l = p.add_location(Location {
            lines: vec![Line {
                function: f,
                line: 1,
                column: 0,
            }],
            ..Location::default()
        });
        p.push_sample(&[l], &[], &[1]);
        p.validate().unwrap();
        p.locations[0].lines[0].function = FunctionId(9);
        assert!(p.validate().is_err());
    }
}
