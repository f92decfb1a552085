//! A CPU engine whose signal is lost is armed again. A standard signal is
//! pending at most once: a SIGPROF the host raised while it had SIGPROF
//! blocked swallows the perf overflow (or the one-shot timer's expiry)
//! that comes meanwhile, and that thread's event is re-armed only by its
//! handler — without the sampler's check, the thread would never be
//! sampled again. Here a spinner loses its signal that way, then spins:
//! the profile must still hold most of its CPU, under perf (whose
//! overflow is lost, and re-armed) and under the per-thread CPU timers
//! (whose expiry the kernel keeps on the timer).

use std::time::{Duration, Instant};

use kiln_agent::Engine;

mod common;

fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

#[inline(never)]
fn spin_for(d: Duration) {
    let t0 = Instant::now();
    let mut x = 0u64;
    while t0.elapsed() < d {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Blocks SIGPROF, raises one, spins while it is pending (the engine's
/// own signal is dropped), then takes it; then spins `d`, timing its
/// own CPU.
#[inline(never)]
fn lose_the_signal_then_spin(d: Duration) -> Duration {
    // SAFETY: a sigset on the stack, filled and passed to the calls that
    // block and unblock SIGPROF for this thread; tgkill signals this
    // thread, whose handler (the agent's) ignores an unrequested dump.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::syscall(libc::SYS_gettid),
            libc::SIGPROF,
        );
        spin_for(Duration::from_millis(200));
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    let cpu0 = thread_cpu();
    spin_for(d);
    thread_cpu() - cpu0
}

#[test]
fn a_thread_whose_engine_signal_was_lost_is_sampled_again() {
    for engine in [Engine::Perf, Engine::Ctimer] {
        let dir = tempfile::tempdir().unwrap();
        let agent = match kiln_agent::Agent::builder()
            .service("rearm")
            .engine(engine)
            .cpu_hz(199)
            .alloc_sample_bytes(0)
            .window(Duration::from_secs(600))
            .write_to_dir(dir.path())
            .start()
        {
            Ok(a) => a,
            // Not every machine lets perf_event_open through; the timers
            // always work.
            Err(e) if engine == Engine::Perf => {
                eprintln!("perf is not available here ({e}); checking ctimer only");
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let h = std::thread::Builder::new()
            .name("loser".into())
            .spawn(|| {
                // Armed before it loses the signal.
                std::thread::sleep(Duration::from_millis(300));
                lose_the_signal_then_spin(Duration::from_secs(4))
            })
            .unwrap();
        let own = h.join().unwrap();
        let st = agent.status();
        agent.stop().unwrap();
        let p = &common::profiles(dir.path(), "process_cpu")[0];
        let sampled = common::labelled(p, "cpu", "thread_name", "loser");
        let own_ns = own.as_nanos() as i64;
        eprintln!(
            "TRUTH {engine:?}: {sampled} ns sampled of {own_ns}, rearmed {}",
            st.rearmed
        );
        // A perf overflow is a standard signal and is lost; a POSIX
        // timer's expiry is queued on the timer itself and survives.
        if engine == Engine::Perf {
            assert!(st.rearmed >= 1, "{engine:?}: nothing re-armed: {st:?}");
        }
        // The check runs every second: at most ~2 s of the 4 go unseen.
        assert!(
            sampled * 2 >= own_ns,
            "{engine:?}: {sampled} ns of the loser's {own_ns} ns CPU sampled"
        );
    }
}
