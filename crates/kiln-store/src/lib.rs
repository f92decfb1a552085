//! `kiln-store` keeps profiles for the server. An ingested profile is
//! appended to a write-ahead log (group commit: one sync for every request
//! waiting) before it is acknowledged, so nothing acknowledged is lost to
//! `kill -9`; it is then added to the head, where queries read it at once.
//!
//! The head keeps, per tenant, one symbol table and rows over it per series
//! and minute (see `part`). Every `flush_every`, or sooner when the head
//! grows past `head_max_bytes`, the head is cut: the log begins a new
//! segment, the old head is written as one immutable Parquet block per
//! tenant to object storage (a local directory, or S3), and the log
//! segments it covered are removed. A restart replays only the log
//! written since the last cut and takes profiles at once; the blocks'
//! indexes (series and labels) are listed meanwhile, and their symbols,
//! hour sums and rows are loaded when a query needs them, into a cache of
//! `cache_bytes` (least recently read dropped first). Blocks of one hour
//! are compacted into one, with each service's hour sums written in;
//! blocks past a tenant's retention are deleted.
//!
//! Several servers can share one bucket: each writes its own blocks
//! (named by its server id) and reads everyone's, listing the bucket again
//! when its view is older than `refresh_every`; what a peer has not
//! flushed yet it answers for through [`Store::select_head`].
//!
//! It depends on `kiln-profile` only, never on the agent or the server, and
//! chooses no HTTP status codes: its [`Error`] says what went wrong.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = kiln_store::Store::open(dir.path(), Default::default()).await.unwrap();
//! let p = kiln_profile::decode(b"main;work 7\n", &Default::default()).unwrap();
//! let labels = vec![
//!     ("__name__".to_string(), "process_cpu".to_string()),
//!     ("service_name".to_string(), "svc".to_string()),
//! ];
//! store.ingest("", labels, 1_000, p).await.unwrap();
//! let q = kiln_store::selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
//! let merged = store.select("", &q, 0, 2_000, kiln_store::Detail::Stacks).await.unwrap().unwrap();
//! assert_eq!(merged.total(0), 7);
//! // Written as a block and read back from it: the same answer.
//! store.flush().await.unwrap();
//! let again = store.select("", &q, 0, 2_000, kiln_store::Detail::Stacks).await.unwrap();
//! assert_eq!(again.unwrap().total(0), 7);
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod block;
mod cache;
mod catalog;
mod compact;
mod cut;
mod days;
pub mod disk_cache;
mod error;
mod observed;
mod part;
mod query;
mod record;
mod retention;
mod rollup;
mod store;
#[cfg(test)]
mod tests;

/// The `object_store` this crate writes blocks with, for callers that
/// build a storage to hand it.
pub use object_store;

/// What a merged answer keeps of its samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Detail {
    /// Per stack and label set: for thread tables, pprof downloads and
    /// peers' questions.
    Labels,
    /// Per stack, sample labels dropped: all a flame graph, a top table or
    /// a diff reads, and cheaper to merge (rows sum by stack before the
    /// merge sees them).
    Stacks,
}

/// One read of a part: the query, its range and the detail kept.
pub(crate) struct Read<'a> {
    pub q: &'a selector::Query,
    pub from_ms: i64,
    pub until_ms: i64,
    pub detail: Detail,
}
pub mod selector;
pub mod wal;

pub use error::{Error, Options, Stats};
pub use observed::Observed;
pub use store::Store;

/// The label that names the profile (`process_cpu`, `memory`, …).
pub const NAME_LABEL: &str = "__name__";
/// Rows of one series are kept per bucket of this many milliseconds.
pub const BUCKET_MS: i64 = 60_000;
/// Whole hours a query covers are read from one sum per hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Whole days (UTC) a query of one service covers are read from one sum
/// per day, once the day is over.
pub const DAY_MS: i64 = 24 * HOUR_MS;
