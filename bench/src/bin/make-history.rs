//! Writes DAYS of a fleet's history straight into a Kiln data directory,
//! as a server that ran that long leaves it: one block per hour (the
//! hour's cut, with its hour sums), ending at the current hour.
//!
//! `make-history BASE.folded[.gz] DATA_DIR DAYS [INSTANCES] [PER_HOUR] [STACKS_PER_PROFILE]`
//!
//! Each of INSTANCES instances (default 100) of service `bench` sends
//! PER_HOUR profiles an hour (default 1: the sums a long query reads do
//! not depend on how finely an hour was cut; `samples.parquet` does) of
//! STACKS_PER_PROFILE samples (default 3000) drawn by
//! [`kiln_bench::fleet`]. Then every finished day is summed
//! (`Store::sum_days`), as the server's upkeep does once a day is over.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use kiln_bench::fleet::Fleet;

const HOUR_MS: i64 = 3_600_000;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!(
            "usage: make-history BASE.folded[.gz] DATA_DIR DAYS [INSTANCES] [PER_HOUR] [STACKS_PER_PROFILE]"
        );
    }
    let arg = |i: usize, default: usize, what: &str| -> Result<usize> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse().context(what.to_string()))
    };
    let days = arg(3, 0, "DAYS")?;
    let instances = arg(4, 100, "INSTANCES")?.max(1);
    let per_hour = arg(5, 1, "PER_HOUR")?.max(1);
    let per = arg(6, 3000, "STACKS_PER_PROFILE")?;
    let mut fleet = Fleet::open(&args[1], per, 0x9e37_79b9_7f4a_7c15)?;
    let opts = kiln_store::Options {
        flush_every: Duration::from_secs(864_000),
        head_max_bytes: usize::MAX / 4,
        ..Default::default()
    };
    let store = kiln_store::Store::open(std::path::Path::new(&args[2]), opts).await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let end = now_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let hours = days as i64 * 24;
    let step_ms = HOUR_MS / per_hour as i64;
    for h in 0..hours {
        let hour = end - (hours - h) * HOUR_MS;
        for k in 0..per_hour as i64 {
            let at = hour + k * step_ms;
            // The instances push at once, as a fleet does: one log sync
            // for all of them (group commit).
            let pushes = (0..instances).map(|i| {
                let p = fleet.profile(i, at * 1_000_000, step_ms * 1_000_000);
                let labels = vec![
                    ("__name__".to_string(), "process_cpu".to_string()),
                    ("service_name".to_string(), "bench".to_string()),
                    ("instance".to_string(), format!("{i:03}")),
                ];
                let store = store.clone();
                tokio::spawn(async move { store.ingest("", labels, at, p).await })
            });
            let pushes: Vec<_> = pushes.collect();
            for p in pushes {
                p.await??;
            }
        }
        store.flush().await?;
        if h % 24 == 23 {
            eprintln!("day {} of {days} written", h / 24 + 1);
        }
    }
    let summed = store.sum_days().await?;
    eprintln!("{} day sums written", summed.len());
    Ok(())
}
