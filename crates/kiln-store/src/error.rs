//! What can go wrong ([`Error`]), how the store runs ([`Options`]) and what
//! it counts ([`Stats`]). Plain data: nothing here touches storage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

/// What can go wrong storing or reading profiles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The write-ahead log could not take a record.
    #[error("write-ahead log: {0}")]
    Wal(String),
    /// Something is larger than allowed.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A query does not parse.
    #[error("query {query:?} at offset {offset}: {reason}")]
    Query {
        /// The query.
        query: String,
        /// Byte offset of the problem.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A block could not be written or read.
    #[error("block {block}: {reason}")]
    Block {
        /// The block (its path).
        block: String,
        /// What is wrong.
        reason: String,
    },
    /// A profile could not be used.
    #[error(transparent)]
    Profile(#[from] kiln_profile::Error),
    /// Not taking profiles now: object storage has been failing and the
    /// heads waiting for it hold all the memory allowed. Nothing was
    /// stored; try again after `retry_after`.
    #[error("{reason}; retry in {}s", retry_after.as_secs().max(1))]
    Unavailable {
        /// Why.
        reason: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the store runs; [`Options::default`] suits one server on local disk.
#[derive(Clone)]
pub struct Options {
    /// Where blocks go; `None` means `DIR/blocks` on local disk.
    pub storage: Option<Arc<dyn ObjectStore>>,
    /// This server's name in block ids; `None` reads (or creates) one in
    /// `DIR/server-id`. Servers sharing a bucket need distinct ids.
    pub server_id: Option<String>,
    /// The head is cut into blocks this often.
    pub flush_every: Duration,
    /// ... or as soon as it holds this many bytes.
    pub head_max_bytes: usize,
    /// Bytes that heads already cut but not yet in storage (object storage
    /// failing) may hold. While they wait, the head is not cut again; once
    /// the head and they together hold `head_max_bytes +
    /// pending_max_bytes`, ingest is refused with [`Error::Unavailable`]
    /// until uploads, retried with backoff (1 s doubling to 60 s), succeed.
    pub pending_max_bytes: usize,
    /// Blocks older than this are deleted, per tenant; `""` is the default
    /// for tenants not named. No entry: kept forever.
    pub retention: HashMap<String, Duration>,
    /// Other servers' blocks are looked for when a query finds the view of
    /// the bucket older than this.
    pub refresh_every: Duration,
    /// Blocks this server flushed stay in its answers to peers' head
    /// queries this long (unless the peer says it has them), so a peer
    /// that has not listed them yet still counts them once.
    pub peer_grace: Duration,
    /// A whole hour of the head is summed ahead of queries
    /// ([`Store::sum_an_hour`]) once no rows arrived for it this long.
    pub quiet_before_sum: Duration,
    /// Bytes of block data (symbols, hour sums, rows) kept in memory;
    /// past it the least recently read blocks are dropped back to their
    /// index. A query reading more holds at most 12 blocks beyond it.
    pub cache_bytes: usize,
    /// How long a query waits for the list of blocks at start before it
    /// is answered [`Error::Unavailable`].
    pub load_wait: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            storage: None,
            server_id: None,
            flush_every: Duration::from_secs(600),
            head_max_bytes: 512 << 20,
            pending_max_bytes: 512 << 20,
            retention: HashMap::new(),
            refresh_every: Duration::from_secs(10),
            peer_grace: Duration::from_secs(120),
            quiet_before_sum: Duration::from_secs(60),
            cache_bytes: 512 << 20,
            load_wait: Duration::from_secs(10),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Stats {
    /// Series in the head.
    pub series: u64,
    /// Profiles ingested (since start, replay included).
    pub profiles: u64,
    /// Samples ingested (since start, replay included).
    pub samples: u64,
    /// Minute buckets in the head.
    pub buckets: u64,
    /// Rows (stack × label set × minute) in the head.
    pub head_rows: u64,
    /// Approximate bytes of memory the head holds.
    pub head_bytes: u64,
    /// Blocks known (this server's and its peers').
    pub blocks: u64,
    /// Bytes of those blocks in storage.
    pub block_bytes: u64,
    /// Rows in those blocks.
    pub block_rows: u64,
    /// Bytes of write-ahead log on disk.
    pub wal_bytes: u64,
    /// Cuts of the head into blocks that completed.
    pub flushes: u64,
    /// Cuts that failed (retried at the next one).
    pub flush_errors: u64,
    /// Approximate bytes of memory held by cut heads waiting for storage.
    pub pending_bytes: u64,
    /// Ingests refused because storage is failing and memory is full.
    pub refused: u64,
    /// Compactions done.
    pub compactions: u64,
    /// Blocks deleted for retention.
    pub expired: u64,
    /// Whole hours summed ahead of queries ([`Store::sum_an_hour`]).
    pub hours_summed: u64,
    /// Day- and week-sum blocks written ([`Store::sum_a_day`]).
    pub days_summed: u64,
    /// Bytes of block data in memory (the cache, `cache_bytes` at most
    /// between queries).
    pub cache_bytes: u64,
    /// Block reads answered from memory, blocks loaded from storage, and
    /// blocks dropped from memory.
    pub cache_hits: u64,
    /// See `cache_hits`.
    pub cache_loads: u64,
    /// See `cache_hits`.
    pub cache_drops: u64,
    /// Whether the blocks in storage at the start are all known yet.
    pub loaded: bool,
}
