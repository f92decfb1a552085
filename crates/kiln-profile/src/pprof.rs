//! pprof's `profile.proto`, every field, read and written losslessly.
//!
//! Ids in the file are arbitrary non-zero numbers; in the model they are
//! dense indexes, so decoding remaps them and encoding writes `index + 1`.

use prost::Message;

use crate::error::Error;
use crate::ids::{FunctionId, LabelSetId, LocationId, MappingId, StackId, StringId};
use crate::model::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// The wire messages of `profile.proto`, for code that wants them raw.
#[allow(missing_docs)]
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
        #[prost(int64, tag = "15")]
        pub doc_url: i64,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// Maps the file's arbitrary ids to dense indexes: a vector when the ids are
/// small (the usual 1..=n), a hash map otherwise.
pub(crate) struct IdMap {
    dense: Vec<u32>,
    sparse: hashbrown::HashMap<u64, u32>,
}

impl IdMap {
    pub(crate) fn build(
        ids: impl ExactSizeIterator<Item = u64>,
        what: &str,
    ) -> Result<Self, Error> {
        let n = ids.len();
        let mut map = IdMap {
            dense: Vec::new(),
            sparse: hashbrown::HashMap::new(),
        };
        for (index, id) in ids.enumerate() {
            if id == 0 {
                return Err(Error::Pprof(format!("{what} {index} has id 0")));
            }
            let duplicate = if id <= (4 * n as u64).max(16) {
                let i = id as usize;
                if map.dense.len() <= i {
                    map.dense.resize(i + 1, u32::MAX);
                }
                std::mem::replace(&mut map.dense[i], index as u32) != u32::MAX
            } else {
                map.sparse.insert(id, index as u32).is_some()
            };
            if duplicate {
                return Err(Error::Pprof(format!("duplicate {what} id {id}")));
            }
        }
        Ok(map)
    }

    #[inline]
    pub(crate) fn get(&self, id: u64) -> Option<u32> {
        match self.dense.get(id as usize) {
            Some(&i) if i != u32::MAX => Some(i),
            _ => self.sparse.get(&id).copied(),
        }
    }
}

/// Decodes an uncompressed pprof protobuf into a [`Profile`], with the
/// allocation-lean reader of `pprof_wire`.
pub fn decode(bytes: &[u8]) -> Result<Profile, Error> {
    crate::pprof_wire::decode(bytes)
}

/// Decodes through prost's generated structs: slower, kept as the
/// reference the fast reader is tested against.
pub fn decode_with_prost(bytes: &[u8]) -> Result<Profile, Error> {
    let raw = proto::Profile::decode(bytes).map_err(|e| Error::Protobuf(e.to_string()))?;
    from_proto(raw)
}

/// Converts the wire message into the model, remapping ids and checking
/// every reference.
pub fn from_proto(raw: proto::Profile) -> Result<Profile, Error> {
    if raw.location.len() >= u32::MAX as usize || raw.function.len() >= u32::MAX as usize {
        return Err(Error::Pprof("too many locations or functions".into()));
    }
    let mut p = Profile::default();
    // The file's string table may repeat strings; map every file index to
    // the interned id.
    if raw.string_table.first().is_some_and(|s| !s.is_empty()) {
        return Err(Error::Pprof(
            "string_table[0] must be the empty string".into(),
        ));
    }
    let str_map: Vec<StringId> = raw
        .string_table
        .iter()
        .map(|s| p.strings.intern(s))
        .collect();
    let s = |i: i64, field: &str| -> Result<StringId, Error> {
        if raw.string_table.is_empty() && i == 0 {
            return Ok(StringId(0));
        }
        usize::try_from(i)
            .ok()
            .and_then(|i| str_map.get(i).copied())
            .ok_or_else(|| Error::Pprof(format!("{field} names string {i}, out of range")))
    };
    let vt = |v: &proto::ValueType, field: &str| -> Result<ValueType, Error> {
        Ok(ValueType {
            ty: s(v.r#type, field)?,
            unit: s(v.unit, field)?,
        })
    };
    for v in &raw.sample_type {
        p.sample_types.push(vt(v, "sample_type")?);
    }
    p.period_type = raw
        .period_type
        .as_ref()
        .map(|v| vt(v, "period_type"))
        .transpose()?;
    p.period = raw.period;
    p.time_nanos = raw.time_nanos;
    p.duration_nanos = raw.duration_nanos;
    p.drop_frames = s(raw.drop_frames, "drop_frames")?;
    p.keep_frames = s(raw.keep_frames, "keep_frames")?;
    p.default_sample_type = s(raw.default_sample_type, "default_sample_type")?;
    p.doc_url = s(raw.doc_url, "doc_url")?;
    for &c in &raw.comment {
        p.comments.push(s(c, "comment")?);
    }

    let mapping_ids = IdMap::build(raw.mapping.iter().map(|m| m.id), "mapping")?;
    for m in &raw.mapping {
        p.mappings.push(Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename: s(m.filename, "mapping.filename")?,
            build_id: s(m.build_id, "mapping.build_id")?,
            has_functions: m.has_functions,
            has_filenames: m.has_filenames,
            has_line_numbers: m.has_line_numbers,
            has_inline_frames: m.has_inline_frames,
        });
    }
    let function_ids = IdMap::build(raw.function.iter().map(|f| f.id), "function")?;
    for f in &raw.function {
        p.functions.push(Function {
            name: s(f.name, "function.name")?,
            system_name: s(f.system_name, "function.system_name")?,
            filename: s(f.filename, "function.filename")?,
            start_line: f.start_line,
        });
    }
    let location_ids = IdMap::build(raw.location.iter().map(|l| l.id), "location")?;
    for l in &raw.location {
        let mapping = match l.mapping_id {
            0 => None,
            id => Some(MappingId(mapping_ids.get(id).ok_or_else(|| {
                Error::Pprof(format!("location {} names unknown mapping {id}", l.id))
            })?)),
        };
        let mut lines = Vec::with_capacity(l.line.len());
        for line in &l.line {
            let f = function_ids.get(line.function_id).ok_or_else(|| {
                Error::Pprof(format!(
                    "location {} names unknown function {}",
                    l.id, line.function_id
                ))
            })?;
            lines.push(Line {
                function: FunctionId(f),
                line: line.line,
                column: line.column,
            });
        }
        p.locations.push(Location {
            mapping,
            address: l.address,
            lines,
            is_folded: l.is_folded,
        });
    }

    let n = p.sample_types.len();
    p.samples.reserve(raw.sample.len());
    p.values.reserve(raw.sample.len() * n);
    let frames: usize = raw.sample.iter().map(|s| s.location_id.len()).sum();
    p.stacks.reserve(raw.sample.len(), frames);
    let mut stack = Vec::new();
    let mut labels = Vec::new();
    for (i, sample) in raw.sample.iter().enumerate() {
        if sample.value.len() != n {
            return Err(Error::Pprof(format!(
                "sample {i} has {} values for {n} sample types",
                sample.value.len()
            )));
        }
        stack.clear();
        for &id in &sample.location_id {
            let l = location_ids
                .get(id)
                .ok_or_else(|| Error::Pprof(format!("sample {i} names unknown location {id}")))?;
            stack.push(LocationId(l));
        }
        labels.clear();
        for l in &sample.label {
            labels.push(Label {
                key: s(l.key, "label.key")?,
                str: s(l.str, "label.str")?,
                num: l.num,
                num_unit: s(l.num_unit, "label.num_unit")?,
            });
        }
        let stack = StackId(p.stacks.intern(&stack));
        let labels = LabelSetId(p.label_sets.intern(&labels));
        p.samples.push(Sample { stack, labels });
        p.values.extend_from_slice(&sample.value);
    }
    Ok(p)
}

/// Converts the model into the wire message; ids are `index + 1`.
pub fn to_proto(p: &Profile) -> proto::Profile {
    let vt = |v: &ValueType| proto::ValueType {
        r#type: v.ty.0 as i64,
        unit: v.unit.0 as i64,
    };
    let n = p.sample_types.len();
    proto::Profile {
        sample_type: p.sample_types.iter().map(vt).collect(),
        sample: p
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| proto::Sample {
                location_id: p.stack(s.stack).iter().map(|l| l.0 as u64 + 1).collect(),
                value: p.values[i * n..(i + 1) * n].to_vec(),
                label: p
                    .labels(s.labels)
                    .iter()
                    .map(|l| proto::Label {
                        key: l.key.0 as i64,
                        str: l.str.0 as i64,
                        num: l.num,
                        num_unit: l.num_unit.0 as i64,
                    })
                    .collect(),
            })
            .collect(),
        mapping: p
            .mappings
            .iter()
            .enumerate()
            .map(|(i, m)| proto::Mapping {
                id: i as u64 + 1,
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename: m.filename.0 as i64,
                build_id: m.build_id.0 as i64,
                has_functions: m.has_functions,
                has_filenames: m.has_filenames,
                has_line_numbers: m.has_line_numbers,
                has_inline_frames: m.has_inline_frames,
            })
            .collect(),
        location: p
            .locations
            .iter()
            .enumerate()
            .map(|(i, l)| proto::Location {
                id: i as u64 + 1,
                mapping_id: l.mapping.map_or(0, |m| m.0 as u64 + 1),
                address: l.address,
                line: l
                    .lines
                    .iter()
                    .map(|line| proto::Line {
                        function_id: line.function.0 as u64 + 1,
                        line: line.line,
                        column: line.column,
                    })
                    .collect(),
                is_folded: l.is_folded,
            })
            .collect(),
        function: p
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| proto::Function {
                id: i as u64 + 1,
                name: f.name.0 as i64,
                system_name: f.system_name.0 as i64,
                filename: f.filename.0 as i64,
                start_line: f.start_line,
            })
            .collect(),
        string_table: p.strings.iter().map(str::to_owned).collect(),
        drop_frames: p.drop_frames.0 as i64,
        keep_frames: p.keep_frames.0 as i64,
        time_nanos: p.time_nanos,
        duration_nanos: p.duration_nanos,
        period_type: p.period_type.as_ref().map(vt),
        period: p.period,
        comment: p.comments.iter().map(|c| c.0 as i64).collect(),
        default_sample_type: p.default_sample_type.0 as i64,
        doc_url: p.doc_url.0 as i64,
    }
}

/// Encodes a profile as uncompressed pprof protobuf.
pub fn encode(p: &Profile) -> Vec<u8> {
    to_proto(p).encode_to_vec()
}

/// Encodes a profile as gzipped pprof, the form `go tool pprof` and
/// Pyroscope expect on the wire and on disk.
pub fn encode_gzip(p: &Profile) -> Vec<u8> {
    crate::compress::gzip(&encode(p))
}
