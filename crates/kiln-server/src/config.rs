//! How the server runs: [`Limits`] on what one request may make it do,
//! and [`Config`], with the TOML file that sets it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::valid_tenant;
use crate::{Error, time};

/// Limits on what one request may make the server do.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Request body, as sent. Default 16 MiB.
    pub max_body: usize,
    /// A body or profile after decompression. Default 128 MiB.
    pub max_decompressed: usize,
    /// Samples in one profile. Default 1,000,000.
    pub max_samples: usize,
    /// Labels per series. Default 30.
    pub max_labels: usize,
    /// Bytes in a label name or value. Default 1024.
    pub max_label_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 16 << 20,
            max_decompressed: 128 << 20,
            max_samples: 1_000_000,
            max_labels: 30,
            max_label_len: 1024,
        }
    }
}

/// How the server runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Where the store lives. Default `./kiln-data`.
    pub data_dir: PathBuf,
    /// Request limits. Default [`Limits::default`].
    pub limits: Limits,
    /// Bearer tokens and the tenant each one is. Empty (the default): no
    /// authentication, the tenant is `X-Scope-OrgID`. Otherwise every
    /// request but `/metrics` and `/ready` needs a token, and a token of
    /// tenant A never reads or writes tenant B.
    pub tokens: Vec<(String, String)>,
    /// Where blocks go: `s3://bucket/prefix` or `file:///path`; `None`
    /// (the default) is `DATA_DIR/blocks`.
    pub storage: Option<String>,
    /// The head is cut into blocks this often. Default 10 minutes.
    pub flush_every: Duration,
    /// ... or once it holds this many bytes. Default 512 MiB.
    pub head_max_bytes: usize,
    /// Bytes that cut heads waiting for object storage (while it fails)
    /// may hold; past head + this, pushes get 503 with `Retry-After`.
    /// Default 512 MiB.
    pub pending_max_bytes: usize,
    /// Bytes of block data (symbols, hour sums, rows) kept in memory
    /// (`[storage] cache`); the least recently read blocks are dropped back
    /// to their index past it. Default 512 MiB.
    pub cache_bytes: usize,
    /// A local directory caching block files read from object storage
    /// (`[storage] cache_dir`), so a restart or an evicted block reads
    /// them from disk; `None` (the default): none.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the disk cache may hold (`[storage] cache_dir_size`).
    /// Default 10 GiB.
    pub cache_dir_bytes: u64,
    /// How long blocks are kept, per tenant (`""`: every tenant not named).
    /// Default: no entry, kept forever.
    pub retention: HashMap<String, Duration>,
    /// This server's id in the blocks it writes; default: made once and
    /// kept in `DATA_DIR/server-id`.
    pub server_id: Option<String>,
    /// Other servers on the same bucket, asked for their unflushed head
    /// at each query (`http://host:port`).
    pub peers: Vec<String>,
    /// The token peers show each other (`cluster.token`).
    pub peer_token: Option<String>,
    /// The bucket is listed again for peers' blocks when a query finds the
    /// last look older than this. Default 10 s.
    pub refresh_every: Duration,
    /// `[alerting]` and the `[[alerts]]` rules (none by default).
    pub alerting: crate::alerts::rules::Alerting,
}

/// `[storage] cache_dir_size`'s default: 10 GiB.
pub const DEFAULT_CACHE_DIR_BYTES: u64 = 10 << 30;

impl Config {
    /// The defaults, storing under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        let store = kiln_store::Options::default();
        Config {
            data_dir: data_dir.into(),
            limits: Limits::default(),
            tokens: Vec::new(),
            storage: None,
            flush_every: store.flush_every,
            head_max_bytes: store.head_max_bytes,
            pending_max_bytes: store.pending_max_bytes,
            cache_bytes: store.cache_bytes,
            cache_dir: None,
            cache_dir_bytes: DEFAULT_CACHE_DIR_BYTES,
            retention: HashMap::new(),
            server_id: None,
            peers: Vec::new(),
            peer_token: None,
            refresh_every: store.refresh_every,
            alerting: Default::default(),
        }
    }

    /// Applies a configuration file (TOML) over `self`:
    ///
    /// ```toml
    /// data_dir = "/var/lib/kiln"
    /// [limits]
    /// max_body = 16777216
    /// max_decompressed = 134217728
    /// max_samples = 1000000
    /// max_labels = 30
    /// max_label_len = 1024
    /// [storage]
    /// url = "s3://bucket/prefix"     # default: DATA_DIR/blocks
    /// flush_every = "10m"
    /// head_max_bytes = "512MiB"       # or a number of bytes
    /// pending_max_bytes = "512MiB"    # cut heads waiting for storage
    /// cache = "512MiB"                # block data kept in memory
    /// cache_dir = "/var/cache/kiln"   # block files read from object storage, on local disk
    /// cache_dir_size = "10GiB"
    /// retention = "30d"              # tenants without their own
    /// refresh_every = "10s"
    /// [cluster]
    /// server_id = "kiln-1"
    /// peers = ["http://kiln-2:4040"]
    /// token = "a-long-shared-secret"
    /// [tenants.team-a]
    /// tokens = ["a-secret"]
    /// retention = "7d"
    /// [alerting]
    /// alertmanager = "http://127.0.0.1:9093"
    /// every = "15s"
    /// [[alerts]]
    /// name = "scan loop hot"
    /// kind = "share"
    /// query = 'process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="pool"}'
    /// function = "pool::scan_loop"
    /// above = 15
    /// for = "5m"
    /// ```
    ///
    /// Unknown keys are errors, so a typo does not silently do nothing.
    pub fn apply_toml(mut self, text: &str) -> Result<Config, Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            data_dir: Option<PathBuf>,
            #[serde(default)]
            limits: FileLimits,
            #[serde(default)]
            tenants: std::collections::BTreeMap<String, Tenant>,
            #[serde(default)]
            storage: Storage,
            #[serde(default)]
            cluster: Cluster,
            #[serde(default)]
            alerting: crate::alerts::rules::AlertingFile,
            #[serde(default)]
            alerts: Vec<crate::alerts::rules::RuleFile>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Storage {
            url: Option<String>,
            flush_every: Option<String>,
            head_max_bytes: Option<Size>,
            pending_max_bytes: Option<Size>,
            cache: Option<Size>,
            cache_dir: Option<PathBuf>,
            cache_dir_size: Option<Size>,
            retention: Option<String>,
            refresh_every: Option<String>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Cluster {
            server_id: Option<String>,
            #[serde(default)]
            peers: Vec<String>,
            token: Option<String>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct FileLimits {
            max_body: Option<usize>,
            max_decompressed: Option<usize>,
            max_samples: Option<usize>,
            max_labels: Option<usize>,
            max_label_len: Option<usize>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Tenant {
            #[serde(default)]
            tokens: Vec<String>,
            retention: Option<String>,
        }
        let span = |key: &str, v: &str| {
            time::duration(v).map_err(|e| Error::Config(format!("{key} = {v:?}: {e}")))
        };
        let f: File = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(d) = f.data_dir {
            self.data_dir = d;
        }
        let l = &mut self.limits;
        l.max_body = f.limits.max_body.unwrap_or(l.max_body);
        l.max_decompressed = f.limits.max_decompressed.unwrap_or(l.max_decompressed);
        l.max_samples = f.limits.max_samples.unwrap_or(l.max_samples);
        l.max_labels = f.limits.max_labels.unwrap_or(l.max_labels);
        l.max_label_len = f.limits.max_label_len.unwrap_or(l.max_label_len);
        let st = f.storage;
        if st.url.is_some() {
            self.storage = st.url;
        }
        if let Some(v) = &st.flush_every {
            self.flush_every = span("storage.flush_every", v)?;
        }
        let bytes = |key: &str, v: &Option<Size>, default: usize| match v {
            None => Ok(default),
            Some(v) => v
                .bytes()
                .map_err(|e| Error::Config(format!("storage.{key}: {e}"))),
        };
        self.head_max_bytes = bytes("head_max_bytes", &st.head_max_bytes, self.head_max_bytes)?;
        self.pending_max_bytes = bytes(
            "pending_max_bytes",
            &st.pending_max_bytes,
            self.pending_max_bytes,
        )?;
        self.cache_bytes = bytes("cache", &st.cache, self.cache_bytes)?;
        if st.cache_dir.is_some() {
            self.cache_dir = st.cache_dir;
        }
        self.cache_dir_bytes = bytes(
            "cache_dir_size",
            &st.cache_dir_size,
            self.cache_dir_bytes as usize,
        )? as u64;
        if let Some(v) = &st.retention {
            self.retention
                .insert(String::new(), span("storage.retention", v)?);
        }
        if let Some(v) = &st.refresh_every {
            self.refresh_every = span("storage.refresh_every", v)?;
        }
        if f.cluster.server_id.is_some() {
            self.server_id = f.cluster.server_id;
        }
        for p in &f.cluster.peers {
            if !(p.starts_with("http://") || p.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "cluster.peers: {p:?} is not an http:// or https:// URL"
                )));
            }
        }
        self.peers.extend(f.cluster.peers);
        self.alerting = crate::alerts::rules::parse(f.alerting, f.alerts).map_err(Error::Config)?;
        if let Some(t) = f.cluster.token {
            if t.len() < 16 {
                return Err(Error::Config(
                    "cluster.token: must be at least 16 characters".into(),
                ));
            }
            self.peer_token = Some(t);
        }
        for (tenant, t) in f.tenants {
            valid_tenant(&tenant)
                .map_err(|e| Error::Config(format!("tenants.{tenant}: {}", e.1)))?;
            if let Some(v) = &t.retention {
                self.retention.insert(
                    tenant.clone(),
                    span(&format!("tenants.{tenant}.retention"), v)?,
                );
            }
            for token in t.tokens {
                if token.len() < 16 {
                    return Err(Error::Config(format!(
                        "tenants.{tenant}: a token must be at least 16 characters"
                    )));
                }
                if self.tokens.iter().any(|(k, _)| *k == token) {
                    return Err(Error::Config(format!(
                        "tenants.{tenant}: a token is given twice"
                    )));
                }
                self.tokens.push((token, tenant.clone()));
            }
        }
        Ok(self)
    }
}

/// A size in a configuration file: a number of bytes, or a string such as
/// `"512MiB"`, `"2GiB"`, `"64KiB"`, `"100MB"` (units of 1024 with `i`,
/// 1000 without).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(usize),
    Text(String),
}

impl Size {
    fn bytes(&self) -> Result<usize, String> {
        let text = match self {
            Size::Bytes(n) => return Ok(*n),
            Size::Text(t) => t.trim(),
        };
        let at = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (num, unit) = text.split_at(at);
        let n: usize = num
            .parse()
            .map_err(|_| format!("{text:?}: expected a number of bytes such as \"512MiB\""))?;
        let scale: usize = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            u => {
                return Err(format!(
                    "{text:?}: unknown unit {u:?} (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
                ));
            }
        };
        n.checked_mul(scale)
            .ok_or_else(|| format!("{text:?}: too large"))
    }
}
