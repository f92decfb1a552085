//! A hand-written protobuf reader for `profile.proto`, straight into the
//! model. Measured (bench/merge.sh): decoding through prost's generated
//! structs spent a third of a merge in malloc and free, one `Vec` per sample
//! for location ids, values and labels; this reader reuses three buffers
//! for every sample. Sub-messages are first located by field, then decoded
//! in dependency order (strings, mappings, functions, locations, samples),
//! since a writer may emit fields in any order.

use crate::error::Error;
use crate::ids::{FunctionId, LabelSetId, LocationId, MappingId, StackId, StringId};
use crate::model::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use crate::pprof::IdMap;

type R<T> = Result<T, Error>;

fn err<T>(msg: impl Into<String>) -> R<T> {
    Err(Error::Protobuf(msg.into()))
}

struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// One field: its number and value.
enum Val<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Wire { buf, pos: 0 }
    }

    fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return err(format!("truncated varint at byte {}", self.pos));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    /// The next field, or `None` at the end. Fixed-width fields come back
    /// as `Int`; groups (long deprecated) are refused.
    fn field(&mut self) -> R<Option<(u32, Val<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wt) = ((key >> 3) as u32, key & 7);
        if num == 0 {
            return err(format!("field number 0 at byte {}", self.pos));
        }
        let v = match wt {
            0 => Val::Int(self.varint()?),
            1 => Val::Int(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or([0; 8]),
            )),
            2 => {
                let n = self.varint()?;
                if n > (self.buf.len() - self.pos) as u64 {
                    return err(format!(
                        "field {num} claims {n} bytes, {} left",
                        self.buf.len() - self.pos
                    ));
                }
                Val::Bytes(self.take(n as usize)?)
            }
            5 => Val::Int(u64::from(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or([0; 4]),
            ))),
            _ => return err(format!("unsupported wire type {wt} for field {num}")),
        };
        Ok(Some((num, v)))
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return err(format!("truncated field at byte {}", self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}

/// Appends a repeated integer field, packed or not.
fn push_ints(v: Val<'_>, out: &mut Vec<u64>) -> R<()> {
    match v {
        Val::Int(i) => out.push(i),
        Val::Bytes(b) => {
            let mut w = Wire::new(b);
            while w.pos < b.len() {
                out.push(w.varint()?);
            }
        }
    }
    Ok(())
}

fn int(v: Val<'_>, field: &str) -> R<u64> {
    match v {
        Val::Int(i) => Ok(i),
        Val::Bytes(_) => err(format!("{field}: expected a number")),
    }
}

fn msg<'a>(v: Val<'a>, field: &str) -> R<&'a [u8]> {
    match v {
        Val::Bytes(b) => Ok(b),
        Val::Int(_) => err(format!("{field}: expected a message")),
    }
}

/// Decodes a message of integer fields into `out[field - 1]`; non-integer
/// fields are refused, unknown numbers skipped.
fn ints<const N: usize>(b: &[u8], what: &str) -> R<[u64; N]> {
    let mut out = [0u64; N];
    let mut w = Wire::new(b);
    while let Some((num, v)) = w.field()? {
        if let Some(slot) = out.get_mut(num as usize - 1) {
            *slot = int(v, what)?;
        }
    }
    Ok(out)
}

/// Decodes an uncompressed pprof protobuf into a [`Profile`].
pub fn decode(bytes: &[u8]) -> R<Profile> {
    let mut sample_types = Vec::new();
    let mut samples = Vec::new();
    let mut mappings = Vec::new();
    let mut locations = Vec::new();
    let mut functions = Vec::new();
    let mut strings: Vec<&[u8]> = Vec::new();
    let mut scalars = [0u64; 16];
    let mut period_type: Option<&[u8]> = None;
    let mut comments = Vec::new();
    let mut w = Wire::new(bytes);
    while let Some((num, v)) = w.field()? {
        match num {
            1 => sample_types.push(msg(v, "sample_type")?),
            2 => samples.push(msg(v, "sample")?),
            3 => mappings.push(msg(v, "mapping")?),
            4 => locations.push(msg(v, "location")?),
            5 => functions.push(msg(v, "function")?),
            6 => strings.push(msg(v, "string_table")?),
            11 => period_type = Some(msg(v, "period_type")?),
            13 => push_ints(v, &mut comments)?,
            7..=10 | 12 | 14 | 15 => scalars[num as usize] = int(v, "profile field")?,
            _ => {}
        }
    }
    if locations.len() >= u32::MAX as usize || functions.len() >= u32::MAX as usize {
        return Err(Error::Pprof("too many locations or functions".into()));
    }
    if strings.first().is_some_and(|s| !s.is_empty()) {
        return Err(Error::Pprof(
            "string_table[0] must be the empty string".into(),
        ));
    }
    let mut p = Profile::default();
    let mut str_map = Vec::with_capacity(strings.len());
    for (i, s) in strings.iter().enumerate() {
        let Ok(s) = std::str::from_utf8(s) else {
            return err(format!("string_table[{i}] is not UTF-8"));
        };
        str_map.push(p.strings.intern(s));
    }
    let s = |i: u64, field: &str| -> R<StringId> {
        if str_map.is_empty() && i == 0 {
            return Ok(StringId(0));
        }
        usize::try_from(i)
            .ok()
            .and_then(|i| str_map.get(i).copied())
            .ok_or_else(|| Error::Pprof(format!("{field} names string {}, out of range", i as i64)))
    };
    let vt = |b: &[u8], field: &str| -> R<ValueType> {
        let [ty, unit] = ints::<2>(b, field)?;
        Ok(ValueType {
            ty: s(ty, field)?,
            unit: s(unit, field)?,
        })
    };
    for b in &sample_types {
        p.sample_types.push(vt(b, "sample_type")?);
    }
    p.period_type = period_type.map(|b| vt(b, "period_type")).transpose()?;
    p.drop_frames = s(scalars[7], "drop_frames")?;
    p.keep_frames = s(scalars[8], "keep_frames")?;
    p.time_nanos = scalars[9] as i64;
    p.duration_nanos = scalars[10] as i64;
    p.period = scalars[12] as i64;
    p.default_sample_type = s(scalars[14], "default_sample_type")?;
    p.doc_url = s(scalars[15], "doc_url")?;
    for &c in &comments {
        p.comments.push(s(c, "comment")?);
    }

    let mut ids = Vec::with_capacity(mappings.len());
    for b in &mappings {
        let f = ints::<10>(b, "mapping")?;
        ids.push(f[0]);
        p.mappings.push(Mapping {
            memory_start: f[1],
            memory_limit: f[2],
            file_offset: f[3],
            filename: s(f[4], "mapping.filename")?,
            build_id: s(f[5], "mapping.build_id")?,
            has_functions: f[6] != 0,
            has_filenames: f[7] != 0,
            has_line_numbers: f[8] != 0,
            has_inline_frames: f[9] != 0,
        });
    }
    let mapping_ids = IdMap::build(ids.drain(..), "mapping")?;
    for b in &functions {
        let f = ints::<5>(b, "function")?;
        ids.push(f[0]);
        p.functions.push(Function {
            name: s(f[1], "function.name")?,
            system_name: s(f[2], "function.system_name")?,
            filename: s(f[3], "function.filename")?,
            start_line: f[4] as i64,
        });
    }
    let function_ids = IdMap::build(ids.drain(..), "function")?;
    for b in &locations {
        let mut w = Wire::new(b);
        let (mut id, mut mapping_id, mut address, mut folded) = (0, 0, 0, false);
        let mut lines = Vec::new();
        while let Some((num, v)) = w.field()? {
            match num {
                1 => id = int(v, "location.id")?,
                2 => mapping_id = int(v, "location.mapping_id")?,
                3 => address = int(v, "location.address")?,
                4 => {
                    let [f, line, column] = ints::<3>(msg(v, "location.line")?, "line")?;
                    let function = function_ids.get(f).ok_or_else(|| {
                        Error::Pprof(format!("location {id} names unknown function {f}"))
                    })?;
                    lines.push(Line {
                        function: FunctionId(function),
                        line: line as i64,
                        column: column as i64,
                    });
                }
                5 => folded = int(v, "location.is_folded")? != 0,
                _ => {}
            }
        }
        let mapping = match mapping_id {
            0 => None,
            m => Some(MappingId(mapping_ids.get(m).ok_or_else(|| {
                Error::Pprof(format!("location {id} names unknown mapping {m}"))
            })?)),
        };
        ids.push(id);
        p.locations.push(Location {
            mapping,
            address,
            lines,
            is_folded: folded,
        });
    }
    let location_ids = IdMap::build(ids.drain(..), "location")?;

    let n = p.sample_types.len();
    p.samples.reserve(samples.len());
    p.values.reserve(samples.len() * n);
    p.stacks.reserve(samples.len(), samples.len() * 16);
    let (mut locs, mut values, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut stack = Vec::new();
    for (i, b) in samples.iter().enumerate() {
        locs.clear();
        values.clear();
        labels.clear();
        let mut w = Wire::new(b);
        while let Some((num, v)) = w.field()? {
            match num {
                1 => push_ints(v, &mut locs)?,
                2 => push_ints(v, &mut values)?,
                3 => {
                    let [key, str, num, unit] = ints::<4>(msg(v, "sample.label")?, "label")?;
                    labels.push(Label {
                        key: s(key, "label.key")?,
                        str: s(str, "label.str")?,
                        num: num as i64,
                        num_unit: s(unit, "label.num_unit")?,
                    });
                }
                _ => {}
            }
        }
        if values.len() != n {
            return Err(Error::Pprof(format!(
                "sample {i} has {} values for {n} sample types",
                values.len()
            )));
        }
        stack.clear();
        for &id in &locs {
            let l = location_ids
                .get(id)
                .ok_or_else(|| Error::Pprof(format!("sample {i} names unknown location {id}")))?;
            stack.push(LocationId(l));
        }
        let stack = StackId(p.stacks.intern(&stack));
        let labels = LabelSetId(p.label_sets.intern(&labels));
        p.samples.push(Sample { stack, labels });
        p.values.extend(values.iter().map(|&v| v as i64));
    }
    Ok(p)
}
