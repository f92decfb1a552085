//! Where profiles go: a directory, a Kiln or Pyroscope server (the Connect
//! push API), S3-compatible object storage. Each sink has its own bounded
//! queue and its own worker on the agent's shipping runtime, so a dead
//! server delays nothing but its own queue: when a queue is full the
//! oldest profile is dropped and counted, a failed send is retried with
//! exponential backoff and jitter, every request has a timeout, and no
//! application thread ever waits on any of it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
#[cfg(feature = "s3")]
use object_store::ObjectStoreExt;
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

#[cfg(feature = "push")]
use crate::push::PushClient;
use crate::sink::DirSink;
#[cfg(feature = "s3")]
use crate::sink::safe;
use crate::{Counters, Error};

/// Profiles a sink holds while its target is slow or down; one more drops
/// the oldest.
pub const QUEUE_CAPACITY: usize = 64;
/// Longest a single request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Sends of one profile before it is given up and counted as failed.
pub const MAX_ATTEMPTS: u32 = 8;
/// First retry delay; doubled each attempt (with ±50% jitter) up to
/// [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One profile on its way.
pub struct Shipment {
    /// `process_cpu`, …: the directory or object-key component and the
    /// push `__name__`.
    pub profile_name: &'static str,
    /// Window start.
    pub start: SystemTime,
    /// Window end.
    pub end: SystemTime,
    /// Gzipped pprof.
    pub pprof: Bytes,
    /// Told the outcome (sessions wait for it).
    pub done: Option<oneshot::Sender<Delivery>>,
}

/// Where one profile went, or why it did not.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Delivery {
    /// `dir`, `push` or `s3`.
    pub sink: &'static str,
    /// File path, push URL or object URL (`s3://bucket/key`).
    pub location: String,
    /// It arrived.
    pub ok: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sends tried.
    pub attempts: u32,
}

/// One sink's health, as [`crate::Status`] shows it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SinkStatus {
    /// `dir`, `push` or `s3`.
    pub sink: &'static str,
    /// Its target (directory, URL, `s3://bucket/prefix`).
    pub target: String,
    /// Profiles waiting.
    pub queued: u64,
    /// Profiles delivered.
    pub sent: u64,
    /// Profiles given up after every retry.
    pub failed: u64,
    /// Profiles dropped because the queue was full or the agent stopped.
    pub dropped: u64,
    /// Sends that failed (each retry counts).
    pub errors: u64,
    /// Failures since the last success: 0 is healthy.
    pub consecutive_failures: u64,
    /// The newest error.
    pub last_error: Option<String>,
    /// When the last delivery succeeded (Unix ms).
    pub last_ok_ms: Option<u64>,
}

enum Target {
    Dir(DirSink),
    #[cfg(feature = "push")]
    Push(PushClient),
    #[cfg(feature = "s3")]
    S3 {
        store: Arc<dyn object_store::ObjectStore>,
        bucket: String,
        prefix: String,
    },
}

/// A sink with its queue and counters.
pub struct Sink {
    target: Target,
    display: String,
    queue: Mutex<VecDeque<Shipment>>,
    notify: Notify,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    consecutive: AtomicU64,
    last_ok_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What every sink's worker shares: who we are (labels, key layout) and
/// whether the agent is closing.
pub struct Ship {
    /// The sinks, in the order configured.
    pub sinks: Vec<Arc<Sink>>,
    service: String,
    instance: String,
    #[cfg_attr(not(feature = "push"), allow(dead_code))]
    labels: Vec<(String, String)>,
    closing: AtomicBool,
    deadline: Mutex<Option<Instant>>,
    wake: Notify,
    seq: AtomicU64,
    counters: Arc<Counters>,
}

impl Sink {
    fn new(target: Target, display: String) -> Arc<Sink> {
        Arc::new(Sink {
            target,
            display,
            queue: Mutex::new(VecDeque::with_capacity(QUEUE_CAPACITY)),
            notify: Notify::new(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            consecutive: AtomicU64::new(0),
            last_ok_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    fn kind(&self) -> &'static str {
        match self.target {
            Target::Dir(_) => "dir",
            #[cfg(feature = "push")]
            Target::Push(_) => "push",
            #[cfg(feature = "s3")]
            Target::S3 { .. } => "s3",
        }
    }

    /// Queues `s` without waiting; a full queue drops its oldest profile.
    pub fn enqueue(&self, s: Shipment) {
        let evicted = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let evicted = if q.len() >= QUEUE_CAPACITY {
                q.pop_front()
            } else {
                None
            };
            q.push_back(s);
            evicted
        };
        if let Some(old) = evicted {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.tell(
                old.done,
                false,
                String::new(),
                Some("dropped: queue full".into()),
                0,
            );
        }
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Shipment> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn tell(
        &self,
        done: Option<oneshot::Sender<Delivery>>,
        ok: bool,
        location: String,
        error: Option<String>,
        attempts: u32,
    ) {
        if let Some(d) = done {
            let _ = d.send(Delivery {
                sink: self.kind(),
                location,
                ok,
                error,
                attempts,
            });
        }
    }

    fn set_error(&self, e: String) {
        tracing::warn!(target: "kiln_agent", sink = self.kind(), "{e}");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    /// This sink's health.
    pub fn status(&self) -> SinkStatus {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last_ok = load(&self.last_ok_ms);
        SinkStatus {
            sink: self.kind(),
            target: self.display.clone(),
            queued: self.queue.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
            sent: load(&self.sent),
            failed: load(&self.failed),
            dropped: load(&self.dropped),
            errors: load(&self.errors),
            consecutive_failures: load(&self.consecutive),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            last_ok_ms: (last_ok > 0).then_some(last_ok),
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An error is worth retrying unless the target said the request itself
/// is wrong (a 4xx other than 408 and 429).
struct SendError {
    message: String,
    retry: bool,
}

/// Where windows go: the builder's sinks.
#[derive(Clone, Debug, Default)]
#[cfg_attr(not(feature = "push"), allow(dead_code))]
pub struct Targets {
    /// Directories.
    pub dirs: Vec<PathBuf>,
    /// Kiln or Pyroscope servers.
    pub push: Vec<String>,
    /// `s3://bucket/prefix` URLs.
    pub s3: Vec<String>,
    /// Bearer token sent with every push.
    pub push_token: Option<String>,
    /// `X-Scope-OrgID` sent with every push.
    pub tenant: Option<String>,
}

impl Ship {
    /// The sinks of a configuration; S3 URLs and push URLs are checked here
    /// so that `start()` fails on a bad one.
    pub fn new(
        targets: &Targets,
        service: String,
        instance: String,
        labels: Vec<(String, String)>,
        counters: Arc<Counters>,
    ) -> Result<Ship, Error> {
        let mut sinks = Vec::new();
        for d in &targets.dirs {
            sinks.push(Sink::new(
                Target::Dir(DirSink::new(d.clone())),
                d.display().to_string(),
            ));
        }
        #[cfg(feature = "push")]
        for u in &targets.push {
            sinks.push(Sink::new(
                Target::Push(
                    PushClient::new(u, REQUEST_TIMEOUT)?
                        .token(targets.push_token.clone())
                        .tenant(targets.tenant.clone()),
                ),
                u.clone(),
            ));
        }
        #[cfg(not(feature = "push"))]
        if let Some(u) = targets.push.first() {
            return Err(Error::Config(format!(
                "push to {u}: kiln-agent was built without its `push` feature"
            )));
        }
        #[cfg(feature = "s3")]
        for u in &targets.s3 {
            let rest = u
                .strip_prefix("s3://")
                .ok_or_else(|| Error::Config(format!("s3 {u:?}: expected s3://bucket/prefix")))?;
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!("s3 {u:?}: no bucket")));
            }
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_timeout(REQUEST_TIMEOUT)
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_allow_http(std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| {
                            matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true")
                        })),
                )
                .with_retry(object_store::RetryConfig {
                    // Retries are this module's: one policy for every sink.
                    max_retries: 0,
                    ..Default::default()
                })
                .build()
                .map_err(|e| Error::Config(format!("s3 {u:?}: {e}")))?;
            sinks.push(Sink::new(
                Target::S3 {
                    store: Arc::new(store),
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                },
                u.clone(),
            ));
        }
        #[cfg(not(feature = "s3"))]
        if let Some(u) = targets.s3.first() {
            return Err(Error::Config(format!(
                "s3 {u}: kiln-agent was built without its `s3` feature"
            )));
        }
        Ok(Ship {
            sinks,
            service,
            instance,
            labels,
            closing: AtomicBool::new(false),
            deadline: Mutex::new(None),
            wake: Notify::new(),
            seq: AtomicU64::new(0),
            counters,
        })
    }

    /// Every sink's health.
    pub fn status(&self) -> Vec<SinkStatus> {
        self.sinks.iter().map(|s| s.status()).collect()
    }

    /// Queues one profile on every sink; returns a receiver per sink for
    /// the outcome when `track` is set.
    pub fn enqueue(
        &self,
        profile_name: &'static str,
        start: SystemTime,
        end: SystemTime,
        pprof: Bytes,
        track: bool,
    ) -> Vec<oneshot::Receiver<Delivery>> {
        let mut outcomes = Vec::new();
        for s in &self.sinks {
            let done = track.then(|| {
                let (tx, rx) = oneshot::channel();
                outcomes.push(rx);
                tx
            });
            s.enqueue(Shipment {
                profile_name,
                start,
                end,
                pprof: pprof.clone(),
                done,
            });
        }
        outcomes
    }

    /// From now on, each queued profile gets one more try, and none after
    /// `deadline`; workers end when their queue is empty.
    pub fn close(&self, deadline: Instant) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        self.closing.store(true, Ordering::Release);
        self.wake.notify_waiters();
        for s in &self.sinks {
            s.notify.notify_one();
        }
    }

    fn closing_deadline(&self) -> Option<Instant> {
        if self.closing.load(Ordering::Acquire) {
            *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            None
        }
    }

    /// The worker of sink `i`: runs until the agent closes and the queue is
    /// empty.
    pub async fn run(self: Arc<Self>, i: usize) {
        let sink = self.sinks[i].clone();
        loop {
            let item = loop {
                // Register interest before looking, so a notify between the
                // look and the wait is not lost.
                let notified = sink.notify.notified();
                if let Some(item) = sink.pop() {
                    break item;
                }
                if self.closing.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            };
            self.deliver(&sink, item).await;
        }
    }

    async fn deliver(&self, sink: &Sink, item: Shipment) {
        let mut attempt = 0u32;
        loop {
            let timeout = match self.closing_deadline() {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        sink.dropped.fetch_add(1, Ordering::Relaxed);
                        sink.tell(
                            item.done,
                            false,
                            String::new(),
                            Some("dropped: agent stopped".into()),
                            attempt,
                        );
                        return;
                    }
                    left.min(REQUEST_TIMEOUT)
                }
                None => REQUEST_TIMEOUT,
            };
            attempt += 1;
            let result = match tokio::time::timeout(timeout, self.send(sink, &item)).await {
                Ok(r) => r,
                Err(_) => Err(SendError {
                    message: format!("timed out after {timeout:?}"),
                    retry: true,
                }),
            };
            match result {
                Ok(location) => {
                    sink.sent.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .windows_written
                        .fetch_add(1, Ordering::Relaxed);
                    if matches!(sink.target, Target::Dir(_)) {
                        *self
                            .counters
                            .last_file
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(PathBuf::from(&location));
                    }
                    sink.consecutive.store(0, Ordering::Relaxed);
                    sink.last_ok_ms
                        .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
                    sink.tell(item.done, true, location, None, attempt);
                    return;
                }
                Err(e) => {
                    sink.errors.fetch_add(1, Ordering::Relaxed);
                    sink.consecutive.fetch_add(1, Ordering::Relaxed);
                    let msg = format!("{} ({}): {}", sink.kind(), sink.display, e.message);
                    sink.set_error(msg.clone());
                    if !e.retry || attempt >= MAX_ATTEMPTS || self.closing.load(Ordering::Acquire) {
                        sink.failed.fetch_add(1, Ordering::Relaxed);
                        sink.tell(item.done, false, String::new(), Some(msg), attempt);
                        return;
                    }
                    let wait = backoff(attempt, self.seq.fetch_add(1, Ordering::Relaxed));
                    // Closing cuts the wait short: one last try follows.
                    let woken = self.wake.notified();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = woken => {}
                    }
                }
            }
        }
    }

    #[cfg(feature = "s3")]
    fn key(&self, item: &Shipment) -> String {
        format!(
            "{}/{}/{}/{}-{}.pb.gz",
            safe(&self.service),
            safe(&self.instance),
            item.profile_name,
            unix_ms(item.start),
            unix_ms(item.end)
        )
    }

    async fn send(&self, sink: &Sink, item: &Shipment) -> Result<String, SendError> {
        match &sink.target {
            Target::Dir(dir) => {
                let dir = dir.clone();
                let (service, instance) = (self.service.clone(), self.instance.clone());
                let (name, start, end, bytes) =
                    (item.profile_name, item.start, item.end, item.pprof.clone());
                tokio::task::spawn_blocking(move || {
                    dir.write(&service, &instance, name, start, end, &bytes)
                })
                .await
                .map_err(|e| SendError {
                    message: e.to_string(),
                    retry: true,
                })?
                .map(|p| p.display().to_string())
                .map_err(|e| SendError {
                    message: e.to_string(),
                    retry: true,
                })
            }
            #[cfg(feature = "push")]
            Target::Push(client) => {
                let mut labels = Vec::with_capacity(self.labels.len() + 2);
                labels.push(("service_name".to_string(), self.service.clone()));
                labels.push(("instance".to_string(), self.instance.clone()));
                labels.extend(self.labels.iter().cloned());
                let id = format!(
                    "{}-{}-{}",
                    self.instance,
                    unix_ms(item.start),
                    self.seq.fetch_add(1, Ordering::Relaxed)
                );
                let req = kiln_profile::push::PushRequest::single(
                    item.profile_name,
                    &labels,
                    item.pprof.to_vec(),
                    id,
                );
                client
                    .push(&req)
                    .await
                    .map(|()| client.endpoint().to_string())
                    .map_err(|e| SendError {
                        message: e.message,
                        retry: e.retryable,
                    })
            }
            #[cfg(feature = "s3")]
            Target::S3 {
                store,
                bucket,
                prefix,
            } => {
                let key = if prefix.is_empty() {
                    self.key(item)
                } else {
                    format!("{prefix}/{}", self.key(item))
                };
                let path = object_store::path::Path::from(key.as_str());
                store
                    .put(&path, item.pprof.clone().into())
                    .await
                    .map(|_| format!("s3://{bucket}/{key}"))
                    .map_err(|e| SendError {
                        message: error_chain(&e),
                        retry: true,
                    })
            }
        }
    }
}

/// The error and its causes on one line: reqwest's and object_store's
/// top-level messages alone ("error sending request") hide the reason.
#[cfg_attr(not(any(feature = "push", feature = "s3")), allow(dead_code))]
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

/// The delay before retry `attempt` (1-based): doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`], scaled by a factor in
/// [0.5, 1.5) drawn from `seed`, so agents that lost the same server do
/// not come back in step.
pub fn backoff(attempt: u32, seed: u64) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let mut x = seed
        .wrapping_add(u64::from(std::process::id()) << 32)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    let unit = (x % 1000) as f64 / 1000.0;
    base.mul_f64(0.5 + unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for seed in 0..200 {
            let b1 = backoff(1, seed);
            assert!(
                b1 >= FIRST_BACKOFF / 2 && b1 < FIRST_BACKOFF * 3 / 2,
                "{b1:?}"
            );
            let b3 = backoff(3, seed);
            assert!(b3 >= FIRST_BACKOFF * 2 && b3 < FIRST_BACKOFF * 6, "{b3:?}");
            let b20 = backoff(20, seed);
            assert!(b20 < MAX_BACKOFF * 3 / 2, "{b20:?}");
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|s| backoff(2, s)).collect();
        assert!(spread.len() > 10, "jitter spreads retries");
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let ship = Ship::new(
            &Targets {
                dirs: vec![PathBuf::from("/nonexistent")],
                ..Targets::default()
            },
            "s".into(),
            "i".into(),
            vec![],
            Arc::default(),
        )
        .unwrap();
        let sink = &ship.sinks[0];
        let mut first = None;
        for n in 0..QUEUE_CAPACITY + 5 {
            let (tx, rx) = oneshot::channel();
            if n == 0 {
                first = Some(rx);
            }
            sink.enqueue(Shipment {
                profile_name: "process_cpu",
                start: UNIX_EPOCH + Duration::from_secs(n as u64),
                end: UNIX_EPOCH,
                pprof: Bytes::new(),
                done: Some(tx),
            });
        }
        let st = sink.status();
        assert_eq!(st.queued, QUEUE_CAPACITY as u64);
        assert_eq!(st.dropped, 5);
        let d = first.unwrap().try_recv().unwrap();
        assert!(!d.ok && d.error.unwrap().contains("queue full"));
        // The oldest left is the sixth enqueued.
        assert_eq!(
            sink.pop().unwrap().start,
            UNIX_EPOCH + Duration::from_secs(5)
        );
    }
}
