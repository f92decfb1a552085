//! The block storage a URL names: `s3://bucket/prefix` (an S3 or
//! S3-compatible server, with bounded request retries) or `file:///path`,
//! optionally behind a local disk cache of block files (`cache_dir`).

use std::sync::Arc;

use kiln_store::object_store::{self, ObjectStore};

use crate::Error;

/// Block storage for `url`: `s3://bucket[/prefix]` (credentials, region
/// and endpoint from the `AWS_*` variables, as the AWS tools read them;
/// `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for an S3-compatible server)
/// or `file:///path`.
pub fn storage(url: &str) -> Result<Arc<dyn ObjectStore>, Error> {
    let bad = |why: String| Error::Config(format!("--storage {url}: {why}"));
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket named".into()));
        }
        // A request gives up after 30 s (not object_store's 3 min): the
        // store keeps what failed and retries it with its own backoff, and
        // a flush that fails says so promptly.
        let retry = object_store::RetryConfig {
            max_retries: 4,
            retry_timeout: std::time::Duration::from_secs(30),
            ..Default::default()
        };
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry);
        if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
            b = b.with_endpoint(e);
        }
        let s3: Arc<dyn ObjectStore> = Arc::new(b.build().map_err(|e| bad(e.to_string()))?);
        let prefix = prefix.trim_matches('/');
        return Ok(if prefix.is_empty() {
            s3
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path).map_err(|e| bad(e.to_string()))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| bad(e.to_string()))?;
        return Ok(Arc::new(fs));
    }
    Err(bad("expected s3://bucket/prefix or file:///path".into()))
}

/// `store` behind a disk cache of at most `bytes` in `dir`, when one is
/// configured.
pub fn cached(
    store: Arc<dyn ObjectStore>,
    dir: Option<&std::path::Path>,
    bytes: u64,
) -> Result<Arc<dyn ObjectStore>, Error> {
    let Some(dir) = dir else { return Ok(store) };
    let c = kiln_store::disk_cache::DiskCache::open(store, dir, bytes)
        .map_err(|e| Error::Config(format!("storage.cache_dir {}: {e}", dir.display())))?;
    Ok(Arc::new(c))
}
