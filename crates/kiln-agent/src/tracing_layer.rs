//! Tasks from `tracing` spans, for async services: with [`layer`] in the
//! subscriber, every span is a task named by its metadata (the function
//! of `#[tracing::instrument]`). A span's latency runs from its creation
//! to its close; its CPU is counted per poll — each enter to exit on
//! whichever thread polls it — so a future that hops threads is
//! measured whole. While entered, a span is the thread's innermost task:
//! samples carry its `task` label and [`crate::task::io`] inside it
//! counts to it. Spans created while no agent runs are not timed.
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//! tracing_subscriber::registry().with(kiln_agent::tracing::layer()).init();
//! ```

use std::time::Instant;

use tracing_core::Subscriber;
use tracing_core::span::{Attributes, Id};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::task::{TaskStats, pop_frame, push_frame, stats_of};

/// The layer; add it to a `tracing_subscriber::registry()`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Layer {
    _private: (),
}

/// Every span a task (see the module).
pub fn layer() -> Layer {
    Layer::default()
}

/// A span's running figures, kept in its extensions.
struct SpanTask {
    stats: &'static TaskStats,
    created: Instant,
    deadline_ns: u64,
    cpu: u64,
    io_ns: u64,
    /// Depth of each entry now open, per thread that entered it.
    entries: Vec<(std::thread::ThreadId, usize)>,
}

impl<S> tracing_subscriber::Layer<S> for Layer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !crate::task::on() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let stats = stats_of(attrs.metadata().name());
        crate::task::maybe_site(stats, 0, &stats.started);
        span.extensions_mut().insert(SpanTask {
            stats,
            created: Instant::now(),
            deadline_ns: crate::task::default_deadline_ns(),
            cpu: 0,
            io_ns: 0,
            entries: Vec::new(),
        });
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(t) = ext.get_mut::<SpanTask>() else {
            return;
        };
        if let Some(depth) = push_frame(t.stats, 0, true) {
            t.entries.push((std::thread::current().id(), depth));
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(t) = ext.get_mut::<SpanTask>() else {
            return;
        };
        let me = std::thread::current().id();
        let Some(i) = t.entries.iter().rposition(|(th, _)| *th == me) else {
            return;
        };
        let (_, depth) = t.entries.remove(i);
        if let Some(e) = pop_frame(depth) {
            t.cpu += e.cpu;
            t.io_ns += e.io_ns;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(t) = span.extensions_mut().remove::<SpanTask>() else {
            return;
        };
        if crate::task::on() {
            let elapsed = t.created.elapsed().as_nanos() as u64;
            let stuck = t.deadline_ns > 0 && elapsed > t.deadline_ns;
            t.stats.record(elapsed, t.cpu, t.io_ns, stuck);
        }
    }
}
