//! A fleet of synthetic instances of one service, drawn from a real
//! capture: each profile is one window of one instance, sampling the
//! capture's stacks weighted by their counts over a subset that drifts with
//! the instance (80% shared), so profiles overlap heavily but not fully,
//! as a fleet's do. Functions get addresses in a mapping with a build id,
//! samples a `thread_name` label, and values are `samples/count` and
//! `cpu/nanoseconds` at 100 Hz, as Go and the Kiln agent write them.

use std::collections::HashMap;

use anyhow::{Context, Result};
use kiln_profile::{Function, Label, Line, Location, LocationId, Mapping, Profile};

/// A xorshift generator: reproducible draws from a seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next draw.
    pub fn draw(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A draw in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.draw() % n as u64) as usize
    }
}

/// The capture's stacks and what draws from them.
pub struct Fleet {
    /// Stack i of the capture, as frame names leaf first.
    stacks: Vec<Vec<String>>,
    /// Cumulative weights for weighted draws.
    cumulative: Vec<i64>,
    /// One binary: a function has the same address in every profile.
    addresses: HashMap<String, usize>,
    /// Samples drawn per profile.
    pub per: usize,
    rng: Rng,
}

const THREADS: [&str; 8] = [
    "main", "worker-1", "worker-2", "worker-3", "worker-4", "io-1", "io-2", "gc",
];

/// The sampling period of the profiles: 100 Hz.
pub const PERIOD_NS: i64 = 10_000_000;

impl Fleet {
    /// Reads the capture at `path` (folded, gzipped or not, or pprof).
    pub fn open(path: &str, per: usize, seed: u64) -> Result<Fleet> {
        let bytes = std::fs::read(path).with_context(|| path.to_string())?;
        let base = kiln_profile::decode(&bytes, &kiln_profile::DecodeOptions::default())?;
        let mut stacks = Vec::new();
        let mut cumulative = Vec::new();
        let mut acc = 0i64;
        for (i, s) in base.samples.iter().enumerate() {
            let mut frames = Vec::new();
            for &l in base.stack(s.stack) {
                base.frame_names(l, |f| frames.push(f.to_string()));
            }
            stacks.push(frames);
            acc += base.sample_values(i)[0].max(1);
            cumulative.push(acc);
        }
        let mut addresses = HashMap::new();
        for f in stacks.iter().flatten() {
            let n = addresses.len();
            addresses.entry(f.clone()).or_insert(n);
        }
        Ok(Fleet {
            stacks,
            cumulative,
            addresses,
            per,
            rng: Rng(seed),
        })
    }

    /// One profile of `instance` starting at `time_nanos`, lasting
    /// `duration_nanos`.
    pub fn profile(&mut self, instance: usize, time_nanos: i64, duration_nanos: i64) -> Profile {
        let mut p = Profile::with_sample_types(&[("samples", "count"), ("cpu", "nanoseconds")]);
        p.period_type = Some(p.value_type("cpu", "nanoseconds"));
        p.period = PERIOD_NS;
        p.time_nanos = time_nanos;
        p.duration_nanos = duration_nanos;
        let file = p.strings.intern("/usr/bin/service");
        let build_id = p
            .strings
            .intern(&format!("{:040x}", 0xab_cdefu64 + (instance % 3) as u64));
        let mapping = p.add_mapping(Mapping {
            memory_start: 0x40_0000,
            memory_limit: 0x4000_0000,
            filename: file,
            build_id,
            has_functions: true,
            ..Mapping::default()
        });
        let thread_key = p.strings.intern("thread_name");
        let mut locations: HashMap<&str, LocationId> = HashMap::new();
        let acc = *self.cumulative.last().unwrap_or(&1);
        // Each instance sees a drifting window of the capture: 80% shared.
        let lo = acc / 10 * (instance as i64 % 3) / 2;
        for _ in 0..self.per {
            let pick = lo + (self.rng.draw() % (acc - lo) as u64) as i64;
            let si = self
                .cumulative
                .partition_point(|&c| c <= pick)
                .min(self.stacks.len() - 1);
            let mut stack = Vec::with_capacity(self.stacks[si].len());
            for f in &self.stacks[si] {
                let next = self.addresses[f];
                let loc = *locations.entry(f).or_insert_with(|| {
                    let name = p.strings.intern(f);
                    let func = p.add_function(Function {
                        name,
                        system_name: name,
                        ..Function::default()
                    });
                    p.add_location(Location {
                        mapping: Some(mapping),
                        address: 0x40_1000 + 64 * next as u64,
                        lines: vec![Line {
                            function: func,
                            line: 1 + (next % 300) as i64,
                            column: 0,
                        }],
                        is_folded: false,
                    })
                });
                stack.push(loc);
            }
            let thread = p.strings.intern(THREADS[self.rng.below(THREADS.len())]);
            let count = 1 + self.rng.below(4) as i64;
            p.push_sample(
                &stack,
                &[Label {
                    key: thread_key,
                    str: thread,
                    ..Label::default()
                }],
                &[count, count * PERIOD_NS],
            );
        }
        kiln_profile::compact(&p)
    }
}
