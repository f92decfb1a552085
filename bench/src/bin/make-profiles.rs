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
use kiln_bench::fleet::Fleet;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!(
            "usage: make-profiles BASE.folded[.gz] OUT_DIR N [STACKS_PER_PROFILE] [SEED] [INSTANCES]"
        );
    }
    let out = std::path::Path::new(&args[2]);
    let n: usize = args[3].parse().context("N")?;
    let per: usize = args
        .get(4)
        .map_or(Ok(3000), |s| s.parse())
        .context("STACKS_PER_PROFILE")?;
    let seed: u64 = args
        .get(5)
        .map_or(Ok(0x9e37_79b9_7f4a_7c15), |s| s.parse())
        .context("SEED")?;
    let instances: usize = args
        .get(6)
        .map_or(Ok(100), |s| s.parse())
        .context("INSTANCES")?;
    if instances == 0 {
        bail!("INSTANCES must be at least 1");
    }
    let mut fleet = Fleet::open(&args[1], per, seed)?;
    std::fs::create_dir_all(out)?;
    let t0 = 1_790_000_000_000_000_000i64;
    for i in 0..n {
        let instance = i % instances;
        let window = i / instances;
        let p = fleet.profile(
            instance,
            t0 + window as i64 * 10_000_000_000,
            10_000_000_000,
        );
        let path = out.join(format!("instance-{instance:03}-window-{window:04}.pb.gz"));
        std::fs::write(&path, kiln_profile::pprof::encode_gzip(&p))?;
    }
    Ok(())
}
