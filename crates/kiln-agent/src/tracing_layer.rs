//! Tasks from `tracing` spans, for async services: with [`layer`] in the
//! subscriber, every span is a task named by its metadata (the function
//! of `#[tracing::instrument]`). A span's latency runs from its creation
//! to its close; its CPU is counted per poll — each enter to exit on
//! whichever thread polls it — so a future that hops threads is
//! measured whole. While entered, a span is the thread's innermost task:
//! samples carry its `task` label and [`crate::task::io`] inside it
//! counts to it. Spans created while no agent runs are not timed.
//!
//! A root span (one without a parent) gets a number, unique in the
//! process: while it or any span inside it is entered, every sample
//! carries it as `span_id` (16 hex digits), so one request's flame graph
//! is a selector. [`span_id`] gives it to the code, to log beside a trace.
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//! tracing_subscriber::registry().with(kiln_agent::tracing::layer()).init();
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
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

/// The last root span's number.
static ROOTS: AtomicU32 = AtomicU32::new(0);

/// The `span_id` label the calling thread's samples carry now: its
/// entered root span's number, as 16 hex digits; `None` outside one.
pub fn span_id() -> Option<String> {
    match crate::task::current_span() {
        0 => None,
        n => Some(crate::window::span_label(n)),
    }
}

/// A span's running figures, kept in its extensions.
struct SpanTask {
    stats: &'static TaskStats,
    /// Its root span's number (its own, for a root).
    root: u32,
    /// The thread's root span before each open entry (restored at exit).
    outer_roots: Vec<u32>,
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
        let root = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanTask>().map(|t| t.root))
            .unwrap_or_else(|| {
                // Zero is "none": skipped when the count wraps.
                let n = ROOTS.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
                if n == 0 {
                    ROOTS.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    n
                }
            });
        span.extensions_mut().insert(SpanTask {
            stats,
            root,
            outer_roots: Vec::new(),
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
        // The span first, the task after (and the other way round at
        // exit): a sample taken between the two, in the task, still
        // names the span.
        let outer = crate::task::set_span(t.root);
        match push_frame(t.stats, 0, true) {
            Some(depth) => {
                t.entries.push((std::thread::current().id(), depth));
                t.outer_roots.push(outer);
            }
            None => {
                crate::task::set_span(outer);
            }
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
        if let Some(outer) = t.outer_roots.get(i).copied() {
            t.outer_roots.remove(i);
            crate::task::set_span(outer);
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
