//! Writes N realistic gzipped pprof profiles drawn from a real capture.
//!
//! `make-profiles BASE.folded[.gz] OUT_DIR N [STACKS_PER_PROFILE] [SEED] [INSTANCES]`
//!
//! Each profile is one 10-second window of one of INSTANCES instances
//! (default 100): it draws
//! `STACKS_PER_PROFILE` samples (default 3000) from the capture's stacks,
//! weighted by their counts, over a subset that drifts with the instance, so
//! profiles overlap heavily but not fully, as a fleet's do. Functions get
//! addresses in a mapping with a build id, samples a `thread_name` label,
//! and values are `samples/count` and `cpu/nanoseconds` at 100 Hz, as Go and
//! the Kiln agent write them.

use anyhow::{Context, Result, bail};
use kiln_profile::{Function, Label, Line, Location, LocationId, Mapping, Profile};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!(
            "usage: make-profiles BASE.folded[.gz] OUT_DIR N [STACKS_PER_PROFILE] [SEED] [INSTANCES]"
        );
    }
    let bytes = std::fs::read(&args[1]).with_context(|| args[1].clone())?;
    let base = kiln_profile::decode(&bytes, &kiln_profile::DecodeOptions::default())?;
    let out = std::path::Path::new(&args[2]);
    let n: usize = args[3].parse().context("N")?;
    let per: usize = args
        .get(4)
        .map_or(Ok(3000), |s| s.parse())
        .context("STACKS_PER_PROFILE")?;
    let mut rng = Rng(args
        .get(5)
        .map_or(Ok(0x9e37_79b9_7f4a_7c15), |s| s.parse())
        .context("SEED")?);
    let instances: usize = args
        .get(6)
        .map_or(Ok(100), |s| s.parse())
        .context("INSTANCES")?;
    if instances == 0 {
        bail!("INSTANCES must be at least 1");
    }
    std::fs::create_dir_all(out)?;

    // Stack i of the base, as frame names leaf first, and its weight.
    let mut stacks: Vec<(Vec<String>, i64)> = Vec::new();
    for (i, s) in base.samples.iter().enumerate() {
        let mut frames = Vec::new();
        for &l in base.stack(s.stack) {
            base.frame_names(l, |f| frames.push(f.to_string()));
        }
        stacks.push((frames, base.sample_values(i)[0].max(1)));
    }
    // Cumulative weights for weighted draws.
    let mut cumulative = Vec::with_capacity(stacks.len());
    let mut acc = 0i64;
    for (_, w) in &stacks {
        acc += w;
        cumulative.push(acc);
    }
    // One binary: a function has the same address in every profile.
    let mut addresses: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (frames, _) in &stacks {
        for f in frames {
            let n = addresses.len();
            addresses.entry(f.clone()).or_insert(n);
        }
    }
    let threads = [
        "main", "worker-1", "worker-2", "worker-3", "worker-4", "io-1", "io-2", "gc",
    ];
    let period = 10_000_000i64;
    let t0 = 1_790_000_000_000_000_000i64;
    for i in 0..n {
        let instance = i % instances;
        let window = i / instances;
        let mut p = Profile::with_sample_types(&[("samples", "count"), ("cpu", "nanoseconds")]);
        p.period_type = Some(p.value_type("cpu", "nanoseconds"));
        p.period = period;
        p.time_nanos = t0 + window as i64 * 10_000_000_000;
        p.duration_nanos = 10_000_000_000;
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
        let mut locations: std::collections::HashMap<String, LocationId> =
            std::collections::HashMap::new();
        // Each instance sees a drifting window of the capture: 80% shared.
        let lo = acc / 10 * (instance as i64 % 3) / 2;
        for _ in 0..per {
            let pick = lo + (rng.next() % (acc - lo) as u64) as i64;
            let si = cumulative
                .partition_point(|&c| c <= pick)
                .min(stacks.len() - 1);
            let (frames, _) = &stacks[si];
            let mut stack = Vec::with_capacity(frames.len());
            for f in frames {
                let next = addresses[f];
                let loc = *locations.entry(f.clone()).or_insert_with(|| {
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
            let thread = p.strings.intern(threads[rng.below(threads.len())]);
            let count = 1 + rng.below(4) as i64;
            p.push_sample(
                &stack,
                &[Label {
                    key: thread_key,
                    str: thread,
                    ..Label::default()
                }],
                &[count, count * period],
            );
        }
        let p = kiln_profile::compact(&p);
        let path = out.join(format!("instance-{instance:03}-window-{window:04}.pb.gz"));
        std::fs::write(&path, kiln_profile::pprof::encode_gzip(&p))?;
    }
    Ok(())
}
