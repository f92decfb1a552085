//! Java Flight Recorder files (JDK 11+ format 2.x, as written by the JDK
//! and by async-profiler), read into a profile.
//!
//! A JFR file is a sequence of chunks; each chunk carries its own metadata
//! (the classes and their fields), constant pools (threads, stack traces,
//! methods, classes, symbols, strings, keyed by class and index) and events.
//! This reader parses the metadata, every constant pool, and the events
//! Kiln turns into samples; it skips any other event by its size without
//! looking inside. Events map to sample types as:
//!
//! | event | sample types |
//! |---|---|
//! | `jdk.ExecutionSample` | `cpu`/`nanoseconds` (one sampling period each) |
//! | `jdk.NativeMethodSample`, async-profiler's `profiler.WallClockSample` | `wall`/`nanoseconds` (one period each) |
//! | `jdk.ObjectAllocationSample`, else `jdk.ObjectAllocationInNewTLAB` and `…OutsideTLAB` | `alloc_objects`/`count`, `alloc_space`/`bytes` |
//! | `jdk.JavaMonitorEnter`, `jdk.ThreadPark` | `contentions`/`count`, `delay`/`nanoseconds` |
//!
//! Only the types that occur are present. Every sample carries the
//! `thread_name` label. Hostile input cannot panic the reader, allocate
//! more than the input justifies, or recurse without bound.

use hashbrown::HashMap;

use crate::error::Error;
use crate::ids::{FunctionId, LocationId, StringId};
use crate::model::{Function, Label, Line, Location, Profile};

const MAGIC: &[u8; 4] = b"FLR\0";
const HEADER_LEN: usize = 68;
const MAX_DEPTH: usize = 32;
/// Sampling periods used when the recording does not say (`profile.jfc`).
const DEFAULT_CPU_PERIOD_NS: i64 = 10_000_000;
const DEFAULT_WALL_PERIOD_NS: i64 = 20_000_000;

/// True when `bytes` start with the JFR magic.
pub fn is_jfr(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

#[derive(Clone, Debug)]
enum Value {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
    /// A string in the `java.lang.String` pool.
    StrRef(i64),
    /// A constant-pool reference: (class id, key).
    Ref(i64, i64),
    /// An inline object: (class id, field values in metadata order).
    Obj(i64, Vec<Value>),
    Array(Vec<Value>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prim {
    Boolean,
    Byte,
    Short,
    Char,
    Int,
    Long,
    Float,
    Double,
    String,
}

#[derive(Debug, Default)]
struct Field {
    name: String,
    class: i64,
    constant_pool: bool,
    array: bool,
}

#[derive(Debug, Default)]
struct Class {
    name: String,
    fields: Vec<Field>,
    prim: Option<Prim>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    compressed: bool,
    chunk: usize,
    /// Offset of `buf` in the whole file, for error messages.
    base: usize,
}

type R<T> = Result<T, Error>;

impl<'a> Cursor<'a> {
    fn err<T>(&self, message: impl Into<String>) -> R<T> {
        Err(Error::Jfr {
            chunk: self.chunk,
            offset: self.base + self.pos,
            message: message.into(),
        })
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize) -> R<&'a [u8]> {
        if n > self.remaining() {
            return self.err(format!("unexpected end of data reading {n} bytes"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn fixed<const N: usize>(&mut self) -> R<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn varint(&mut self) -> R<i64> {
        let mut v: u64 = 0;
        for i in 0..8 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v as i64);
            }
        }
        Ok((v | u64::from(self.u8()?) << 56) as i64)
    }

    fn int(&mut self) -> R<i64> {
        if self.compressed {
            self.varint()
        } else {
            Ok(i64::from(i32::from_be_bytes(self.fixed()?)))
        }
    }

    fn long(&mut self) -> R<i64> {
        if self.compressed {
            self.varint()
        } else {
            Ok(i64::from_be_bytes(self.fixed()?))
        }
    }

    fn short(&mut self) -> R<i64> {
        if self.compressed {
            self.varint()
        } else {
            Ok(i64::from(i16::from_be_bytes(self.fixed()?)))
        }
    }

    /// A count, bounded by what the remaining bytes could hold at
    /// `min_size` bytes per item, so a corrupt count cannot allocate.
    fn count(&mut self, min_size: usize, what: &str) -> R<usize> {
        let n = self.int()?;
        if n < 0 || n as u64 > (self.remaining() / min_size.max(1)) as u64 {
            return self.err(format!("{what} count {n} exceeds the data"));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> R<Value> {
        match self.u8()? {
            0 => Ok(Value::Null),
            1 => Ok(Value::Str(String::new())),
            2 => Ok(Value::StrRef(self.long()?)),
            3 | 5 => {
                let latin1 = self.buf.get(self.pos.wrapping_sub(1)) == Some(&5);
                let n = self.count(1, "string byte")?;
                let b = self.bytes(n)?;
                Ok(Value::Str(if latin1 {
                    b.iter().map(|&c| c as char).collect()
                } else {
                    String::from_utf8_lossy(b).into_owned()
                }))
            }
            4 => {
                let n = self.count(1, "string char")?;
                let mut s = String::new();
                for _ in 0..n {
                    let c = self.varint()?;
                    s.push(
                        u32::try_from(c)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or('\u{fffd}'),
                    );
                }
                Ok(Value::Str(s))
            }
            t => self.err(format!("unknown string encoding {t}")),
        }
    }
}

struct Chunk {
    classes: HashMap<i64, Class>,
    pools: HashMap<(i64, i64), Value>,
    string_class: Option<i64>,
}

impl Chunk {
    fn class_name(&self, id: i64) -> &str {
        self.classes.get(&id).map_or("?", |c| c.name.as_str())
    }

    fn read_value(&self, c: &mut Cursor<'_>, class: i64, depth: usize) -> R<Value> {
        if depth > MAX_DEPTH {
            return c.err(format!(
                "values nested deeper than {MAX_DEPTH} in {}",
                self.class_name(class)
            ));
        }
        let Some(cls) = self.classes.get(&class) else {
            return c.err(format!("value of unknown class id {class}"));
        };
        if let Some(p) = cls.prim {
            return Ok(match p {
                Prim::Boolean | Prim::Byte => Value::Int(i64::from(c.u8()? as i8)),
                Prim::Short | Prim::Char => Value::Int(c.short()?),
                Prim::Int => Value::Int(c.int()?),
                Prim::Long => Value::Int(c.long()?),
                Prim::Float => Value::Float(f64::from(f32::from_be_bytes(c.fixed()?))),
                Prim::Double => Value::Float(f64::from_be_bytes(c.fixed()?)),
                Prim::String => c.string()?,
            });
        }
        let mut values = Vec::with_capacity(cls.fields.len().min(64));
        for f in &cls.fields {
            values.push(self.read_field(c, f, depth + 1)?);
        }
        Ok(Value::Obj(class, values))
    }

    fn read_field(&self, c: &mut Cursor<'_>, f: &Field, depth: usize) -> R<Value> {
        if f.array {
            let n = c.count(1, "array element")?;
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(self.read_single(c, f, depth)?);
            }
            Ok(Value::Array(items))
        } else {
            self.read_single(c, f, depth)
        }
    }

    fn read_single(&self, c: &mut Cursor<'_>, f: &Field, depth: usize) -> R<Value> {
        if f.constant_pool {
            Ok(Value::Ref(f.class, c.long()?))
        } else {
            self.read_value(c, f.class, depth)
        }
    }

    /// Follows a constant-pool reference (and a pooled string); other
    /// values come back as they are.
    fn deref<'v>(&'v self, v: &'v Value) -> &'v Value {
        match v {
            Value::Ref(class, key) => self.pools.get(&(*class, *key)).unwrap_or(&Value::Null),
            Value::StrRef(key) => match self.string_class {
                Some(sc) => self.pools.get(&(sc, *key)).unwrap_or(&Value::Null),
                None => &Value::Null,
            },
            v => v,
        }
    }

    /// Field `name` of object `v` (after deref).
    fn field<'v>(&'v self, v: &'v Value, name: &str) -> &'v Value {
        if let Value::Obj(class, values) = self.deref(v)
            && let Some(cls) = self.classes.get(class)
            && let Some(i) = cls.fields.iter().position(|f| f.name == name)
            && let Some(v) = values.get(i)
        {
            return self.deref(v);
        }
        &Value::Null
    }

    fn str<'v>(&'v self, v: &'v Value) -> &'v str {
        match self.deref(v) {
            Value::Str(s) => s,
            _ => "",
        }
    }

    fn int(&self, v: &Value) -> i64 {
        match self.deref(v) {
            Value::Int(i) => *i,
            Value::Float(f) => *f as i64,
            _ => 0,
        }
    }
}

fn prim(name: &str) -> Option<Prim> {
    Some(match name {
        "boolean" => Prim::Boolean,
        "byte" => Prim::Byte,
        "short" => Prim::Short,
        "char" => Prim::Char,
        "int" => Prim::Int,
        "long" => Prim::Long,
        "float" => Prim::Float,
        "double" => Prim::Double,
        "java.lang.String" => Prim::String,
        _ => return None,
    })
}

struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
}

impl Element {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn read_element(c: &mut Cursor<'_>, strings: &[String], depth: usize) -> R<Element> {
    if depth > MAX_DEPTH {
        return c.err("metadata elements nested too deep");
    }
    let s = |c: &Cursor<'_>, i: i64| -> R<String> {
        match usize::try_from(i).ok().and_then(|i| strings.get(i)) {
            Some(s) => Ok(s.clone()),
            None => c.err(format!("metadata names string {i} of {}", strings.len())),
        }
    };
    let name_index = c.int()?;
    let name = s(c, name_index)?;
    let n = c.count(2, "metadata attribute")?;
    let mut attrs = Vec::new();
    for _ in 0..n {
        let k = c.int()?;
        let v = c.int()?;
        attrs.push((s(c, k)?, s(c, v)?));
    }
    let n = c.count(3, "metadata element")?;
    let mut children = Vec::new();
    for _ in 0..n {
        children.push(read_element(c, strings, depth + 1)?);
    }
    Ok(Element {
        name,
        attrs,
        children,
    })
}

fn read_metadata(c: &mut Cursor<'_>) -> R<HashMap<i64, Class>> {
    let _size = c.int()?;
    let ty = c.long()?;
    if ty != 0 {
        return c.err(format!("metadata event has type {ty}, expected 0"));
    }
    let _start = c.long()?;
    let _duration = c.long()?;
    let _id = c.long()?;
    let n = c.count(1, "metadata string")?;
    let mut strings = Vec::new();
    for _ in 0..n {
        strings.push(match c.string()? {
            Value::Str(s) => s,
            _ => String::new(),
        });
    }
    let root = read_element(c, &strings, 0)?;
    let mut classes = HashMap::new();
    for meta in root.children.iter().filter(|e| e.name == "metadata") {
        for class in meta.children.iter().filter(|e| e.name == "class") {
            let Some(id) = class.attr("id").and_then(|s| s.parse::<i64>().ok()) else {
                return c.err("metadata class without a numeric id");
            };
            let name = class.attr("name").unwrap_or("").to_string();
            let fields = class
                .children
                .iter()
                .filter(|e| e.name == "field")
                .map(|f| Field {
                    name: f.attr("name").unwrap_or("").to_string(),
                    class: f.attr("class").and_then(|s| s.parse().ok()).unwrap_or(-1),
                    constant_pool: f.attr("constantPool") == Some("true"),
                    array: f.attr("dimension").is_some_and(|d| d != "0"),
                })
                .collect();
            classes.insert(
                id,
                Class {
                    prim: prim(&name),
                    name,
                    fields,
                },
            );
        }
    }
    Ok(classes)
}

/// The events this reader looks inside; any other is skipped by its size.
const WANTED_EVENTS: [&str; 9] = [
    "jdk.ExecutionSample",
    "jdk.NativeMethodSample",
    "profiler.WallClockSample",
    "jdk.ObjectAllocationSample",
    "jdk.ObjectAllocationInNewTLAB",
    "jdk.ObjectAllocationOutsideTLAB",
    "jdk.JavaMonitorEnter",
    "jdk.ThreadPark",
    "jdk.ActiveSetting",
];

/// The sample types a JFR recording can produce, in column order; a raw
/// sample's `values` use the same order.
const KINDS: [(&str, &str); 6] = [
    ("cpu", "nanoseconds"),
    ("wall", "nanoseconds"),
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("contentions", "count"),
    ("delay", "nanoseconds"),
];

struct RawSample {
    stack: Vec<LocationId>,
    thread: StringId,
    values: [i64; 6],
}

/// Builds the profile as events arrive, deduplicating functions and
/// locations across chunks by name and line.
struct Builder {
    p: Profile,
    functions: HashMap<StringId, FunctionId>,
    locations: HashMap<(FunctionId, i64), LocationId>,
    samples: Vec<RawSample>,
    used: [bool; 6],
    thread_key: StringId,
    start_ns: i64,
    end_ns: i64,
    cpu_period: Option<i64>,
    wall_period: Option<i64>,
}

/// Parses a JFR setting such as `10 ms`, `20ms` or `1 s` into nanoseconds.
fn parse_period(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: i64 = s[..split].parse().ok()?;
    let mult = match s[split..].trim() {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
}

/// Decodes a whole JFR file.
pub fn decode(bytes: &[u8]) -> Result<Profile, Error> {
    let mut b = Builder {
        p: Profile::default(),
        functions: HashMap::new(),
        locations: HashMap::new(),
        samples: Vec::new(),
        used: [false; 6],
        thread_key: StringId(0),
        start_ns: i64::MAX,
        end_ns: i64::MIN,
        cpu_period: None,
        wall_period: None,
    };
    b.thread_key = b.p.strings.intern("thread_name");
    let mut offset = 0;
    let mut chunk = 0;
    while offset < bytes.len() {
        offset += read_chunk(&bytes[offset..], offset, chunk, &mut b)?;
        chunk += 1;
    }
    finish(b)
}

/// Reads one chunk; returns its size.
fn read_chunk(bytes: &[u8], base: usize, chunk: usize, b: &mut Builder) -> R<usize> {
    let mut c = Cursor {
        buf: bytes,
        pos: 0,
        compressed: false,
        chunk,
        base,
    };
    if bytes.len() < HEADER_LEN || !bytes.starts_with(MAGIC) {
        return c.err("not a JFR chunk header (expected `FLR\\0` and 68 header bytes)");
    }
    c.pos = 4;
    let major = u16::from_be_bytes(c.fixed()?);
    let _minor = u16::from_be_bytes(c.fixed()?);
    if major != 2 && major != 1 {
        return c.err(format!("unsupported JFR version {major}"));
    }
    let size = i64::from_be_bytes(c.fixed()?);
    let _cp_offset = i64::from_be_bytes(c.fixed()?);
    let meta_offset = i64::from_be_bytes(c.fixed()?);
    let start_nanos = i64::from_be_bytes(c.fixed()?);
    let duration_nanos = i64::from_be_bytes(c.fixed()?);
    let _start_ticks = i64::from_be_bytes(c.fixed()?);
    let ticks_per_second = i64::from_be_bytes(c.fixed()?);
    let features = i32::from_be_bytes(c.fixed()?);
    // A chunk still being written has size 0 in some tools: read to the end.
    let size = if size == 0 { bytes.len() as i64 } else { size };
    if size < HEADER_LEN as i64 || size as u64 > bytes.len() as u64 {
        c.pos = 8;
        return c.err(format!(
            "chunk size {size} does not fit the {} bytes left",
            bytes.len()
        ));
    }
    let size = size as usize;
    let in_chunk = |o: i64| o >= HEADER_LEN as i64 && (o as u64) < size as u64;
    if !in_chunk(meta_offset) {
        c.pos = 24;
        return c.err(format!("metadata offset {meta_offset} outside the chunk"));
    }
    let mut c = Cursor {
        buf: &bytes[..size],
        pos: meta_offset as usize,
        compressed: features & 1 != 0,
        chunk,
        base,
    };
    let classes = read_metadata(&mut c)?;
    let string_class = classes
        .iter()
        .find(|(_, cl)| cl.name == "java.lang.String")
        .map(|(&id, _)| id);
    let mut ch = Chunk {
        classes,
        pools: HashMap::new(),
        string_class,
    };

    let tps = if ticks_per_second > 0 {
        ticks_per_second
    } else {
        1_000_000_000
    };
    let to_ns = |ticks: i64| -> i64 { ((ticks as i128) * 1_000_000_000 / tps as i128) as i64 };
    b.start_ns = b.start_ns.min(start_nanos);
    b.end_ns = b.end_ns.max(start_nanos.saturating_add(duration_nanos));

    // Pass 1: constant pools (anywhere in the chunk) and the offsets of the
    // events we want; pass 2 reads those events with every pool known.
    let mut wanted = Vec::new();
    c.pos = HEADER_LEN;
    let names: HashMap<i64, String> = ch
        .classes
        .iter()
        .map(|(&id, cl)| (id, cl.name.clone()))
        .collect();
    while c.pos < size {
        let at = c.pos;
        let ev_size = c.int()?;
        if ev_size <= 0 || ev_size as u64 > (size - at) as u64 {
            c.pos = at;
            return c.err(format!("event size {ev_size} does not fit the chunk"));
        }
        let end = at + ev_size as usize;
        let ty = c.long()?;
        match ty {
            0 => {}
            1 => {
                let mut ec = Cursor {
                    buf: &bytes[..end],
                    pos: c.pos,
                    compressed: c.compressed,
                    chunk,
                    base,
                };
                read_pools(&mut ec, &mut ch)?;
            }
            _ => {
                if let Some(name) = names
                    .get(&ty)
                    .map(String::as_str)
                    .filter(|n| WANTED_EVENTS.contains(n))
                {
                    wanted.push((ty, name, c.pos, end));
                }
            }
        }
        c.pos = end;
    }
    let event_types: HashMap<&str, i64> = names.iter().map(|(&id, n)| (n.as_str(), id)).collect();
    let has_alloc_sample = wanted.iter().any(|w| w.1 == "jdk.ObjectAllocationSample");
    let mut stack_cache: HashMap<i64, Vec<LocationId>> = HashMap::new();
    for &(ty, name, pos, end) in &wanted {
        let mut ec = Cursor {
            buf: &bytes[..end],
            pos,
            compressed: c.compressed,
            chunk,
            base,
        };
        let ev = match ch.read_value(&mut ec, ty, 0) {
            Ok(v) => v,
            Err(Error::Jfr {
                offset, message, ..
            }) => {
                return Err(Error::Jfr {
                    chunk,
                    offset,
                    message: format!("event {name}: {message}"),
                });
            }
            Err(e) => return Err(e),
        };
        if name == "jdk.ActiveSetting" {
            let id = ch.int(ch.field(&ev, "id"));
            if ch.str(ch.field(&ev, "name")) == "period" {
                let period = parse_period(ch.str(ch.field(&ev, "value")));
                if Some(&id) == event_types.get("jdk.ExecutionSample") {
                    b.cpu_period = period.or(b.cpu_period);
                } else if Some(&id) == event_types.get("jdk.NativeMethodSample") {
                    b.wall_period = period.or(b.wall_period);
                }
            }
            continue;
        }
        let mut values = [0i64; 6];
        // Periods are filled in by `finish`, once the settings are known.
        let thread_field = match name {
            "jdk.ExecutionSample" | "jdk.NativeMethodSample" | "profiler.WallClockSample" => {
                "sampledThread"
            }
            _ => "eventThread",
        };
        match name {
            "jdk.ExecutionSample" => values[0] = 1,
            "jdk.NativeMethodSample" => values[1] = 1,
            // async-profiler's wall-clock mode; one event may stand for
            // several samples of an idle thread.
            "profiler.WallClockSample" => {
                values[1] = match ch.field(&ev, "samples") {
                    Value::Null => 1,
                    v => ch.int(v).max(1),
                };
            }
            "jdk.ObjectAllocationSample" => {
                values[2] = 1;
                values[3] = ch.int(ch.field(&ev, "weight"));
            }
            "jdk.ObjectAllocationInNewTLAB" | "jdk.ObjectAllocationOutsideTLAB" => {
                if has_alloc_sample {
                    continue;
                }
                values[2] = 1;
                values[3] = match ch.field(&ev, "tlabSize") {
                    Value::Null => ch.int(ch.field(&ev, "allocationSize")),
                    v => ch.int(v),
                };
            }
            _ => {
                values[4] = 1;
                values[5] = to_ns(ch.int(ch.field(&ev, "duration")));
            }
        }
        let thread_v = ch.field(&ev, thread_field);
        let mut thread = ch.str(ch.field(thread_v, "javaName"));
        if thread.is_empty() {
            thread = ch.str(ch.field(thread_v, "osName"));
        }
        let thread = b.p.strings.intern(thread);
        let stack = match ch.field(&ev, "stackTrace") {
            Value::Null => Vec::new(),
            _ => {
                let key = match find_field(&ch, &ev, "stackTrace") {
                    Some(Value::Ref(_, k)) => Some(*k),
                    _ => None,
                };
                match key.and_then(|k| stack_cache.get(&k)) {
                    Some(s) => s.clone(),
                    None => {
                        let s = stack_of(&ch, ch.field(&ev, "stackTrace"), b);
                        if let Some(k) = key {
                            stack_cache.insert(k, s.clone());
                        }
                        s
                    }
                }
            }
        };
        for (i, v) in values.iter().enumerate() {
            if *v != 0 {
                b.used[i] = true;
            }
        }
        b.samples.push(RawSample {
            stack,
            thread,
            values,
        });
    }
    Ok(size)
}

fn find_field<'v>(ch: &'v Chunk, v: &'v Value, name: &str) -> Option<&'v Value> {
    if let Value::Obj(class, values) = v
        && let Some(cls) = ch.classes.get(class)
        && let Some(i) = cls.fields.iter().position(|f| f.name == name)
    {
        return values.get(i);
    }
    None
}

fn stack_of(ch: &Chunk, trace: &Value, b: &mut Builder) -> Vec<LocationId> {
    let Value::Array(frames) = ch.field(trace, "frames") else {
        return Vec::new();
    };
    let mut stack = Vec::with_capacity(frames.len());
    for frame in frames {
        let method = ch.field(frame, "method");
        let class = ch.str(ch.field(ch.field(ch.field(method, "type"), "name"), "string"));
        let mname = ch.str(ch.field(ch.field(method, "name"), "string"));
        let name = match (class.is_empty(), mname.is_empty()) {
            (true, true) => "[unknown]".to_string(),
            (true, false) => mname.to_string(),
            (false, true) => class.replace('/', "."),
            (false, false) => format!("{}.{mname}", class.replace('/', ".")),
        };
        let line = ch.int(ch.field(frame, "lineNumber")).max(0);
        let name_id = b.p.strings.intern(&name);
        let p = &mut b.p;
        let f = *b.functions.entry(name_id).or_insert_with(|| {
            p.add_function(Function {
                name: name_id,
                system_name: name_id,
                ..Function::default()
            })
        });
        let loc = *b.locations.entry((f, line)).or_insert_with(|| {
            p.add_location(Location {
                lines: vec![Line {
                    function: f,
                    line,
                    column: 0,
                }],
                ..Location::default()
            })
        });
        stack.push(loc);
    }
    stack
}

fn read_pools(c: &mut Cursor<'_>, ch: &mut Chunk) -> R<()> {
    let _start = c.long()?;
    let _duration = c.long()?;
    let _delta = c.long()?;
    let _flush = c.u8()?;
    let pools = c.count(2, "constant pool")?;
    for _ in 0..pools {
        let class = c.long()?;
        let n = c.count(1, "constant")?;
        for _ in 0..n {
            let key = c.long()?;
            let v = match ch.read_value(c, class, 0) {
                Ok(v) => v,
                Err(Error::Jfr {
                    chunk,
                    offset,
                    message,
                }) => {
                    return Err(Error::Jfr {
                        chunk,
                        offset,
                        message: format!("constant pool {}: {message}", ch.class_name(class)),
                    });
                }
                Err(e) => return Err(e),
            };
            ch.pools.insert((class, key), v);
        }
    }
    Ok(())
}

fn finish(mut b: Builder) -> R<Profile> {
    let cpu_period = b.cpu_period.unwrap_or(DEFAULT_CPU_PERIOD_NS);
    let wall_period = b.wall_period.unwrap_or(DEFAULT_WALL_PERIOD_NS);
    let columns: Vec<usize> = (0..6).filter(|&i| b.used[i]).collect();
    for &i in &columns {
        let (ty, unit) = KINDS[i];
        let vt = b.p.value_type(ty, unit);
        b.p.sample_types.push(vt);
    }
    if b.used[0] {
        b.p.period_type = Some(b.p.value_type("cpu", "nanoseconds"));
        b.p.period = cpu_period;
        // Tools that open on the default type (go tool pprof) then show
        // what `kiln top` does: CPU first.
        b.p.default_sample_type = b.p.strings.intern("cpu");
    } else if b.used[1] {
        b.p.period_type = Some(b.p.value_type("wall", "nanoseconds"));
        b.p.period = wall_period;
    }
    let mut row = Vec::with_capacity(columns.len());
    let mut sample_of: HashMap<(u32, StringId), usize> = HashMap::new();
    let n = columns.len();
    for s in std::mem::take(&mut b.samples) {
        row.clear();
        for &i in &columns {
            row.push(match i {
                0 => s.values[0] * cpu_period,
                1 => s.values[1] * wall_period,
                _ => s.values[i],
            });
        }
        let stack = b.p.stacks.intern(&s.stack);
        // Sum equal (stack, thread) samples: a JFR holds one event per sample.
        match sample_of.get(&(stack, s.thread)) {
            Some(&at) => {
                for (o, v) in b.p.values[at * n..(at + 1) * n].iter_mut().zip(&row) {
                    *o = o.saturating_add(*v);
                }
            }
            None => {
                sample_of.insert((stack, s.thread), b.p.samples.len());
                let labels = [Label {
                    key: b.thread_key,
                    str: s.thread,
                    ..Label::default()
                }];
                let labels = if s.thread == StringId(0) {
                    &labels[..0]
                } else {
                    &labels[..]
                };
                b.p.push_sample(&s.stack, labels, &row);
            }
        }
    }
    if b.start_ns != i64::MAX {
        b.p.time_nanos = b.start_ns;
        b.p.duration_nanos = b.end_ns.saturating_sub(b.start_ns).max(0);
    }
    Ok(b.p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse() {
        assert_eq!(parse_period("10 ms"), Some(10_000_000));
        assert_eq!(parse_period("20ms"), Some(20_000_000));
        assert_eq!(parse_period("1 s"), Some(1_000_000_000));
        assert_eq!(parse_period("off"), None);
    }

    #[test]
    fn garbage_is_an_error_naming_the_chunk() {
        let mut bytes = b"FLR\0\x00\x02\x00\x00".to_vec();
        bytes.extend_from_slice(&[0xff; 80]);
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, Error::Jfr { chunk: 0, .. }), "{err}");
        assert!(decode(b"FLR\0").is_err());
    }
}
