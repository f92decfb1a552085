//! The allocation benchmark (`bench/alloc.py`) on the system allocator
//! wrapped in `kiln_agent::alloc::Profiled`, with an agent sampling
//! allocations at the default rate (CPU sampling off, one window written
//! to a temporary directory at the end, as a user pays for it).

#[path = "../alloc/work.rs"]
mod work;

#[global_allocator]
static ALLOC: kiln_agent::alloc::Profiled<std::alloc::System> =
    kiln_agent::alloc::Profiled::new(std::alloc::System);

fn main() -> anyhow::Result<()> {
    let (rounds, pairs) = work::args();
    let dir = std::env::temp_dir().join(format!("kiln-alloc-bench-{}", std::process::id()));
    let agent = kiln_agent::Agent::builder()
        .service("alloc-bench")
        .cpu_hz(0)
        .window(std::time::Duration::from_secs(3600))
        .write_to_dir(&dir)
        .start()?;
    work::run(rounds, pairs);
    let st = agent.status();
    eprintln!("kiln: {:?}", st.alloc);
    agent.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
