//! One window of samples: the folded counts the sampler fills
//! ([`Window`]), and, once finished, its pprof profile: symbolize, build
//! locations and functions, label by thread and pool. It depends on
//! neither the sampler nor the flush thread, which both use it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_profile::intern::SliceTable;
use kiln_profile::{
    Function, Label, Line, Location, LocationId, Mapping, MappingId, Profile, thread_pool,
};

use crate::symbolize::Symbols;
use crate::sys::CodeMapping;
use crate::unwind::FrameAddress;

/// Marks a stack the walk cut at the depth limit.
pub const TRUNCATED: u64 = u64::MAX;

/// Marks, as a stack's last (outermost) entry, the task it was taken in:
/// `TASK_MARK | id`. Never a user-space address.
const TASK_MARK: u64 = 0xFFFF_FFFE_0000_0000;

/// The stack entry saying a sample was taken in task `id`.
pub fn task_mark(id: u32) -> u64 {
    TASK_MARK | u64::from(id)
}

/// Marks, before the task's mark, the root `tracing` span the sample was
/// taken in: `SPAN_MARK | number`.
const SPAN_MARK: u64 = 0xFFFF_FFFD_0000_0000;

/// The stack entry saying a sample was taken in root span `n`.
pub fn span_mark(n: u32) -> u64 {
    SPAN_MARK | u64::from(n)
}

/// The task a stack entry marks, if it is a task's mark.
fn marked_task(a: u64) -> Option<u32> {
    (a & 0xFFFF_FFFF_0000_0000 == TASK_MARK).then_some(a as u32)
}

/// The root span a stack entry marks, if it is a span's mark.
fn marked_span(a: u64) -> Option<u32> {
    (a & 0xFFFF_FFFF_0000_0000 == SPAN_MARK).then_some(a as u32)
}

/// Is stack entry `a` a mark (a task's or a span's), not a frame?
pub fn is_mark(a: u64) -> bool {
    marked_task(a).is_some() || marked_span(a).is_some()
}

/// A root span's number as its `span_id` label: 16 hex digits.
pub fn span_label(n: u32) -> String {
    format!("{:016x}", u64::from(n))
}

/// A lock sample's row: waiting thread id, stack index, `lock` label.
pub type LockKey = (u32, u32, Option<Arc<str>>);

/// One window's samples, folded.
pub struct Window {
    /// Wall-clock start.
    pub start: SystemTime,
    /// Wall-clock end.
    pub end: SystemTime,
    /// Stacks of raw addresses, leaf first; a trailing [`TRUNCATED`] marks a cut.
    pub stacks: SliceTable<u64>,
    /// Samples and CPU nanoseconds per (thread id, stack index).
    pub counts: HashMap<(u32, u32), (u64, u64)>,
    /// Names of the threads seen.
    pub names: HashMap<u32, String>,
    /// Sampled allocations during the window, weighted (objects, bytes),
    /// per (thread id, stack index).
    pub allocs: HashMap<(u32, u32), (f64, f64)>,
    /// Sampled blocks live at the window's end, weighted (objects,
    /// bytes), per (allocating thread id, stack index).
    pub inuse: HashMap<(u32, u32), (f64, f64)>,
    /// Sampled lock waits, weighted (contentions, nanoseconds), per
    /// (waiting thread id, stack index, `lock` label; `None`: the
    /// waiting function names it).
    pub locks: HashMap<LockKey, (f64, f64)>,
    /// Wall-clock samples (samples, nanoseconds) per (thread id, stack
    /// index, state).
    pub wall: HashMap<(u32, u32, crate::wall::State), (u64, u64)>,
    /// Every thread's counters over the window (`thread_stats`).
    pub threads: Vec<crate::threads::ThreadDelta>,
    /// Sampled stacks of task starts and I/O calls per (task id, I/O
    /// kind id or 0, stack index).
    pub sites: HashMap<(u32, u32, u32), u64>,
    /// Every task's figures over the window.
    pub tasks: Vec<kiln_profile::tasks::TaskRow>,
}

impl Window {
    /// An empty window starting at `start`.
    pub fn new(start: SystemTime) -> Self {
        Window {
            start,
            end: start,
            stacks: SliceTable::default(),
            counts: HashMap::new(),
            names: HashMap::new(),
            allocs: HashMap::new(),
            inuse: HashMap::new(),
            locks: HashMap::new(),
            wall: HashMap::new(),
            threads: Vec::new(),
            sites: HashMap::new(),
            tasks: Vec::new(),
        }
    }

    /// Whether the window holds allocation samples or live blocks.
    pub fn has_memory(&self) -> bool {
        !self.allocs.is_empty() || !self.inuse.is_empty()
    }

    /// Samples in the window.
    pub fn samples(&self) -> u64 {
        self.counts.values().map(|&(n, _)| n).sum()
    }
}

/// The pprof profile of `w`, whose nominal sampling period is `period_ns`
/// (each sample carries its own CPU time, taken at the rate then in force).
/// Each location points to the executable mapping that holds it (file,
/// offset, build id), so that many processes of one binary merge into one
/// set of locations whatever their load addresses.
/// A sample's labels: `thread_name` and `thread_pool` for thread
/// `name`, and `task` when stack `stack` of `w` was taken inside one.
fn labels_of(p: &mut Profile, w: &Window, name: &str, stack: u32) -> Vec<Label> {
    let mut labels = vec![
        Label {
            key: p.strings.intern("thread_name"),
            str: p.strings.intern(name),
            ..Label::default()
        },
        Label {
            key: p.strings.intern("thread_pool"),
            str: p.strings.intern(&thread_pool(name)),
            ..Label::default()
        },
    ];
    // The marks are the stack's last entries: the span's, then the task's.
    let tail = w.stacks.get(stack).iter().rev().take(2);
    let task = tail
        .clone()
        .find_map(|&a| marked_task(a))
        .and_then(crate::task::stats::task_name);
    if let Some(task) = task {
        labels.push(Label {
            key: p.strings.intern(kiln_profile::tasks::TASK_LABEL),
            str: p.strings.intern(task),
            ..Label::default()
        });
    }
    if let Some(n) = tail.clone().find_map(|&a| marked_span(a)) {
        labels.push(Label {
            key: p.strings.intern("span_id"),
            str: p.strings.intern(&span_label(n)),
            ..Label::default()
        });
    }
    labels
}

/// The window's start and length on `p`.
fn stamp(p: &mut Profile, w: &Window) {
    let ns = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
    };
    p.time_nanos = ns(w.start);
    p.duration_nanos = (ns(w.end) - ns(w.start)).max(0);
}

/// Symbolizes the window's stacks into `p`: per stack index, its
/// locations, leaf first.
fn locate(
    p: &mut Profile,
    w: &Window,
    symbols: &mut Symbols,
    code: &[CodeMapping],
) -> Vec<Vec<LocationId>> {
    let lookup = |stack_pos: usize, addr: u64| FrameAddress::at(stack_pos, addr).lookup();
    let mut addrs = Vec::new();
    for stack in w.stacks.iter() {
        for (i, &a) in stack.iter().enumerate() {
            if a != TRUNCATED && !is_mark(a) {
                addrs.push(lookup(i, a));
            }
        }
    }
    symbols.resolve(&addrs, code);

    let mut mappings: HashMap<usize, MappingId> = HashMap::new();
    let mut mapping_of = |p: &mut Profile, addr: u64| -> Option<MappingId> {
        let i = code.partition_point(|m| m.start <= addr).checked_sub(1)?;
        let m = &code[i];
        if addr >= m.limit {
            return None;
        }
        Some(*mappings.entry(i).or_insert_with(|| {
            let filename = p.strings.intern(&m.file);
            let build_id = p.strings.intern(&m.build_id);
            p.add_mapping(Mapping {
                memory_start: m.start,
                memory_limit: m.limit,
                file_offset: m.file_offset,
                filename,
                build_id,
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
            })
        }))
    };
    let mut functions: HashMap<(Arc<str>, Arc<str>), kiln_profile::FunctionId> = HashMap::new();
    let mut locations: HashMap<u64, LocationId> = HashMap::new();
    let mut truncated_loc = None;
    let mut stack_locs: Vec<Vec<LocationId>> = Vec::with_capacity(w.stacks.len());
    for stack in w.stacks.iter() {
        let mut locs = Vec::with_capacity(stack.len());
        for (i, &a) in stack.iter().enumerate() {
            if is_mark(a) {
                continue;
            }
            if a == TRUNCATED {
                let loc = *truncated_loc.get_or_insert_with(|| p.add_named_location("[truncated]"));
                locs.push(loc);
                continue;
            }
            let addr = lookup(i, a);
            let loc = match locations.get(&addr) {
                Some(&l) => l,
                None => {
                    let frames = symbols.get(addr);
                    let mut lines = Vec::with_capacity(frames.len());
                    for fr in frames.iter() {
                        let key = (fr.name.clone(), fr.file.clone());
                        let f = match functions.get(&key) {
                            Some(&f) => f,
                            None => {
                                let name = p.strings.intern(&fr.name);
                                let filename = p.strings.intern(&fr.file);
                                let f = p.add_function(Function {
                                    name,
                                    system_name: name,
                                    filename,
                                    start_line: 0,
                                });
                                functions.insert(key, f);
                                f
                            }
                        };
                        lines.push(Line {
                            function: f,
                            line: i64::from(fr.line),
                            column: 0,
                        });
                    }
                    let mapping = mapping_of(p, addr);
                    let l = p.add_location(Location {
                        mapping,
                        address: addr,
                        lines,
                        ..Location::default()
                    });
                    locations.insert(addr, l);
                    l
                }
            };
            locs.push(loc);
        }
        stack_locs.push(locs);
    }

    stack_locs
}

pub fn build(w: &Window, period_ns: u64, symbols: &mut Symbols, code: &[CodeMapping]) -> Profile {
    let mut p = Profile::with_sample_types(&[("samples", "count"), ("cpu", "nanoseconds")]);
    p.period_type = Some(p.value_type("cpu", "nanoseconds"));
    p.period = period_ns as i64;
    stamp(&mut p, w);
    let stack_locs = locate(&mut p, w, symbols, code);
    let mut entries: Vec<_> = w.counts.iter().collect();
    entries.sort_unstable();
    for (&(tid, stack), &(count, ns)) in entries {
        let name = w.names.get(&tid).map_or("", String::as_str);
        let labels = labels_of(&mut p, w, name, stack);
        p.push_sample(
            &stack_locs[stack as usize],
            &labels,
            &[count as i64, ns as i64],
        );
    }
    p
}

/// Frames of the allocation path itself at the top of a sampled stack:
/// the agent's recording, `Profiled`'s `GlobalAlloc` and the allocator
/// shims Rust calls through.
fn allocator_frame(name: &str) -> bool {
    name.starts_with("kiln_agent::")
        || name.starts_with("<kiln_agent::")
        || name.starts_with("__rust_")
        || name.starts_with("__rg_")
        || name.starts_with("__rdl_")
        || name.starts_with("alloc::alloc::")
        || name.starts_with("std::alloc::")
        || name.starts_with("core::alloc::")
}

/// The wall-clock profile of `w`: every thread, on or off a CPU, each
/// sample weighted by the real time it stands for and labelled
/// `thread_state`; `period_ns` is the nominal period (1 / `wall_hz`).
pub fn build_wall(
    w: &Window,
    period_ns: u64,
    symbols: &mut Symbols,
    code: &[CodeMapping],
) -> Profile {
    let mut p = Profile::with_sample_types(&[("samples", "count"), ("wall", "nanoseconds")]);
    p.period_type = Some(p.value_type("wall", "nanoseconds"));
    p.period = period_ns as i64;
    p.default_sample_type = p.strings.intern("wall");
    stamp(&mut p, w);
    let stack_locs = locate(&mut p, w, symbols, code);
    let mut entries: Vec<_> = w.wall.iter().collect();
    entries.sort_unstable_by_key(|(k, _)| **k);
    for (&(tid, stack, state), &(count, ns)) in entries {
        let name = w.names.get(&tid).map_or("", String::as_str);
        let mut labels = labels_of(&mut p, w, name, stack);
        labels.push(Label {
            key: p.strings.intern("thread_state"),
            str: p.strings.intern(state.label()),
            ..Label::default()
        });
        p.push_sample(
            &stack_locs[stack as usize],
            &labels,
            &[count as i64, ns as i64],
        );
    }
    p
}

/// Drops from the top of each stack the frames `glue` says belong to the
/// recording path (every function of a location, inlined ones too),
/// keeping at least one frame; then, from the location left on top, the
/// glue inlined into it (its innermost lines), keeping its own.
fn trim(p: &mut Profile, stack_locs: &mut [Vec<LocationId>], glue: fn(&str) -> bool) {
    let name = |p: &Profile, ln: &Line| p.str(p.functions[ln.function.0 as usize].name).to_string();
    let mut tops = std::collections::HashSet::new();
    for locs in stack_locs.iter_mut() {
        let own = locs
            .iter()
            .take_while(|&&l| {
                let lines = &p.locations[l.0 as usize].lines;
                !lines.is_empty() && lines.iter().all(|ln| glue(&name(p, ln)))
            })
            .count();
        locs.drain(..own.min(locs.len().saturating_sub(1)));
        if let Some(&top) = locs.first() {
            tops.insert(top);
        }
    }
    // A location on top of a recorded stack is where the recording was
    // called from (the allocation or the wait), whatever stack holds it:
    // its inlined glue can go from the location itself.
    for top in tops {
        let lines = &p.locations[top.0 as usize].lines;
        let glue_lines = lines.iter().take_while(|ln| glue(&name(p, ln))).count();
        if glue_lines > 0 && glue_lines < lines.len() {
            p.locations[top.0 as usize].lines.drain(..glue_lines);
        }
    }
}

/// Frames of a lock's wait at the top of a sampled stack: the agent's
/// timing and recording, the lock itself (std's, `lock_api`'s,
/// parking_lot's).
fn lock_frame(name: &str) -> bool {
    let name = name.strip_prefix('<').unwrap_or(name);
    [
        "kiln_agent::",
        "std::sync::",
        "std::sys::",
        "lock_api::",
        "parking_lot::",
        "parking_lot_core::",
        "core::ops::function::",
    ]
    .iter()
    .any(|g| name.starts_with(g))
}

/// The lock profile of `w`, as Go's mutex profile: contentions and
/// nanoseconds waited, each sample weighted to estimate every wait, per
/// waiting stack and `lock`. A lock with no name or site (a `lock_api`
/// raw mutex) is labelled by the function that waited.
pub fn build_mutex(w: &Window, symbols: &mut Symbols, code: &[CodeMapping]) -> Profile {
    let mut p = Profile::with_sample_types(&[("contentions", "count"), ("delay", "nanoseconds")]);
    p.period_type = Some(p.value_type("contentions", "count"));
    p.period = 1;
    p.default_sample_type = p.strings.intern("delay");
    stamp(&mut p, w);
    let mut stack_locs = locate(&mut p, w, symbols, code);
    trim(&mut p, &mut stack_locs, lock_frame);
    let mut entries: Vec<_> = w.locks.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for ((tid, stack, lock), &(count, ns)) in entries {
        let locs = &stack_locs[*stack as usize];
        let lock = match lock {
            Some(l) => l.to_string(),
            None => locs
                .first()
                .and_then(|l| {
                    p.locations[l.0 as usize]
                        .lines
                        .iter()
                        .map(|ln| p.str(p.functions[ln.function.0 as usize].name))
                        .find(|n| !lock_frame(n))
                })
                .unwrap_or("unknown")
                .to_string(),
        };
        let name = w.names.get(tid).map_or("", String::as_str);
        let mut labels = labels_of(&mut p, w, name, *stack);
        labels.push(Label {
            key: p.strings.intern("lock"),
            str: p.strings.intern(&lock),
            ..Label::default()
        });
        let locs = &stack_locs[*stack as usize];
        p.push_sample(locs, &labels, &[count.round() as i64, ns.round() as i64]);
    }
    p
}

/// The memory profile of `w` (Go's four heap sample types: allocated
/// during the window, live at its end), sampled at a mean of `rate`
/// bytes.
pub fn build_memory(w: &Window, rate: u64, symbols: &mut Symbols, code: &[CodeMapping]) -> Profile {
    let mut p = Profile::with_sample_types(&[
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ]);
    p.period_type = Some(p.value_type("space", "bytes"));
    p.period = rate as i64;
    p.default_sample_type = p.strings.intern("inuse_space");
    stamp(&mut p, w);
    let mut stack_locs = locate(&mut p, w, symbols, code);
    trim(&mut p, &mut stack_locs, allocator_frame);
    let mut rows: HashMap<(u32, u32), [f64; 4]> = HashMap::new();
    for (&k, &(o, b)) in &w.allocs {
        let r = rows.entry(k).or_default();
        r[0] += o;
        r[1] += b;
    }
    for (&k, &(o, b)) in &w.inuse {
        let r = rows.entry(k).or_default();
        r[2] += o;
        r[3] += b;
    }
    let mut entries: Vec<_> = rows.into_iter().collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    for ((tid, stack), v) in entries {
        let name = w.names.get(&tid).map_or("", String::as_str);
        let labels = labels_of(&mut p, w, name, stack);
        let values = v.map(|x| x.round() as i64);
        p.push_sample(&stack_locs[stack as usize], &labels, &values);
    }
    p
}
