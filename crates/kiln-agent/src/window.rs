//! A finished window of samples to a pprof profile: symbolize, build
//! locations and functions, label by thread and pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use kiln_profile::{
    Function, Label, Line, Location, LocationId, Mapping, MappingId, Profile, thread_pool,
};

use crate::sampler::{TRUNCATED, Window};
use crate::symbolize::Symbols;
use crate::sys::CodeMapping;
use crate::unwind::FrameAddress;

/// The pprof profile of `w`, whose nominal sampling period is `period_ns`
/// (each sample carries its own CPU time, taken at the rate then in force).
/// Each location points to the executable mapping that holds it (file,
/// offset, build id), so that many processes of one binary merge into one
/// set of locations whatever their load addresses.
pub fn build(w: &Window, period_ns: u64, symbols: &mut Symbols, code: &[CodeMapping]) -> Profile {
    let lookup = |stack_pos: usize, addr: u64| FrameAddress::at(stack_pos, addr).lookup();
    let mut addrs = Vec::new();
    for stack in w.stacks.iter() {
        for (i, &a) in stack.iter().enumerate() {
            if a != TRUNCATED {
                addrs.push(lookup(i, a));
            }
        }
    }
    symbols.resolve(&addrs, code);

    let mut p = Profile::with_sample_types(&[("samples", "count"), ("cpu", "nanoseconds")]);
    p.period_type = Some(p.value_type("cpu", "nanoseconds"));
    p.period = period_ns as i64;
    let ns = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
    };
    p.time_nanos = ns(w.start);
    p.duration_nanos = (ns(w.end) - ns(w.start)).max(0);
    let thread_key = p.strings.intern("thread_name");
    let pool_key = p.strings.intern("thread_pool");

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
            if a == TRUNCATED {
                let loc = *truncated_loc.get_or_insert_with(|| {
                    let name = p.strings.intern("[truncated]");
                    let f = p.add_function(Function {
                        name,
                        system_name: name,
                        ..Function::default()
                    });
                    p.add_location(Location {
                        lines: vec![Line {
                            function: f,
                            line: 0,
                            column: 0,
                        }],
                        ..Location::default()
                    })
                });
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
                    let mapping = mapping_of(&mut p, addr);
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

    let mut entries: Vec<_> = w.counts.iter().collect();
    entries.sort_unstable();
    for (&(tid, stack), &(count, ns)) in entries {
        let name = w.names.get(&tid).map_or("", String::as_str);
        let labels = [
            Label {
                key: thread_key,
                str: p.strings.intern(name),
                ..Label::default()
            },
            Label {
                key: pool_key,
                str: p.strings.intern(&thread_pool(name)),
                ..Label::default()
            },
        ];
        p.push_sample(
            &stack_locs[stack as usize],
            &labels,
            &[count as i64, ns as i64],
        );
    }
    p
}
