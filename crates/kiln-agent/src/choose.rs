//! Which CPU engine runs, and why: perf events (with kernel time, then
//! user-only), else a per-thread CPU timer, else `setitimer`, each probed
//! on the calling thread, and the reason each better one was refused.

use crate::{Engine, Error, sys};

pub(crate) struct EngineChoice {
    pub(crate) engine: Engine,
    pub(crate) perf_user_only: bool,
    pub(crate) reason: String,
}

fn perf_refusal(e: &std::io::Error) -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|s| s.trim().to_string());
    let errno = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM".to_string(),
        Some(libc::EACCES) => "EACCES".to_string(),
        Some(libc::ENOSYS) => "ENOSYS".to_string(),
        Some(libc::ENOENT) => "ENOENT".to_string(),
        _ => e.to_string(),
    };
    match paranoid {
        Ok(p) => format!("perf_event_open: {errno} (perf_event_paranoid={p})"),
        Err(_) => format!("perf_event_open: {errno}"),
    }
}

pub(crate) fn choose_engine(wanted: Engine) -> Result<EngineChoice, Error> {
    let tid = sys::gettid();
    let probe_perf = || -> Result<bool, String> {
        match sys::engine::PerfEvent::open(tid, 1_000_000_000, false) {
            Ok(_) => Ok(false),
            Err(e) => match sys::engine::PerfEvent::open(tid, 1_000_000_000, true) {
                Ok(_) => Ok(true),
                Err(_) => Err(perf_refusal(&e)),
            },
        }
    };
    let probe_ctimer = || -> Result<(), String> {
        sys::engine::ThreadTimer::create(tid, 1_000_000_000, 1_000_000_000)
            .map(drop)
            .map_err(|e| format!("timer_create(thread CPU clock): {e}"))
    };
    match wanted {
        Engine::Perf => probe_perf()
            .map(|user_only| EngineChoice {
                engine: Engine::Perf,
                perf_user_only: user_only,
                reason: if user_only {
                    "requested; kernel time excluded (perf_event_paranoid)".into()
                } else {
                    "requested".into()
                },
            })
            .map_err(Error::NoEngine),
        Engine::Ctimer => probe_ctimer()
            .map(|()| EngineChoice {
                engine: Engine::Ctimer,
                perf_user_only: false,
                reason: "requested".into(),
            })
            .map_err(Error::NoEngine),
        Engine::Itimer => Ok(EngineChoice {
            engine: Engine::Itimer,
            perf_user_only: false,
            reason: "requested".into(),
        }),
        Engine::Auto => match probe_perf() {
            Ok(user_only) => Ok(EngineChoice {
                engine: Engine::Perf,
                perf_user_only: user_only,
                reason: if user_only {
                    "auto: perf events open (kernel time excluded: perf_event_paranoid)".into()
                } else {
                    "auto: perf events open".into()
                },
            }),
            Err(perf) => match probe_ctimer() {
                Ok(()) => Ok(EngineChoice {
                    engine: Engine::Ctimer,
                    perf_user_only: false,
                    reason: format!("auto: {perf}"),
                }),
                Err(ct) => Ok(EngineChoice {
                    engine: Engine::Itimer,
                    perf_user_only: false,
                    reason: format!("auto: {perf}; {ct}"),
                }),
            },
        },
    }
}
