//! Several servers on one bucket. Each writes its own blocks and reads
//! everyone's (the store lists the bucket again when its view is stale);
//! what a peer holds but has not flushed, it is asked for over HTTP:
//! `POST /api/v1/internal/head` answers its head (and the blocks it flushed
//! lately that the asker does not know yet) for one query, as gzipped pprof
//! (or, for the threads table, when each thread was seen, as JSON).

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_profile::{Merger, Profile};
use kiln_store::{Detail, Observed, selector};

use crate::{ApiError, AppState};

/// The last few merged answers, keyed by (tenant, query, first minute,
/// end minute, store generation): the UI asks for a flame graph and a top
/// table of one selection at once, and both read one merge — the second
/// waits for the first rather than merging again.
#[derive(Default)]
pub(crate) struct Answers(std::sync::Mutex<Vec<(AnswerKey, Arc<AnswerCell>)>>);

type AnswerKey = (String, String, Detail, i64, i64, u64);
type AnswerCell = tokio::sync::OnceCell<Option<Arc<Profile>>>;

/// Answers kept.
const ANSWERS: usize = 4;

impl Answers {
    /// The cell of `key`, made (and the oldest dropped) if new.
    fn cell(&self, key: AnswerKey) -> Arc<AnswerCell> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = v.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        // An older generation can never be asked for again.
        v.retain(|(k, _)| k.5 == key.5);
        let c = Arc::new(AnswerCell::new());
        v.push((key, c.clone()));
        if v.len() > ANSWERS {
            v.remove(0);
        }
        c
    }
}

/// Path of the peer endpoint.
pub const HEAD_PATH: &str = "/api/v1/internal/head";

/// What a server asks a peer.
#[derive(serde::Serialize, serde::Deserialize)]
struct HeadRequest {
    tenant: String,
    query: String,
    from: i64,
    until: i64,
    /// Blocks of the peer's the asker already reads.
    known: Vec<String>,
    /// Per stack only, sample labels dropped ([`Detail::Stacks`]).
    #[serde(default)]
    stacks_only: bool,
    /// A sample label: answer when each of its groups was seen
    /// ([`kiln_store::Store::observed_head`], as JSON) instead of the
    /// profile.
    #[serde(default)]
    observe: Option<String>,
}

/// Labels the agent puts on samples, not on series: a matcher on one of
/// them keeps the samples that match (`{lock="sessions"}`,
/// `{thread_name="shop-worker-1"}`, `{task="open_board"}`) rather than
/// selecting series.
pub const SAMPLE_LABELS: [&str; 7] = [
    "thread_name",
    "thread_pool",
    "thread_id",
    "lock",
    "task",
    "span_id",
    "thread_state",
];

/// Every profile of `tenant` matching `q` over the range (see
/// [`select_series`]); matchers on [`SAMPLE_LABELS`] then keep the
/// samples whose labels match.
pub(crate) async fn select(
    st: &AppState,
    tenant: &str,
    q: &selector::Query,
    from: i64,
    until: i64,
    detail: Detail,
) -> Result<Option<Arc<Profile>>, ApiError> {
    let (series_q, on_samples) = split(q);
    if on_samples.is_empty() {
        return select_series(st, tenant, q, from, until, detail).await;
    }
    let Some(p) = select_series(st, tenant, &series_q, from, until, Detail::Labels).await? else {
        return Ok(None);
    };
    let kept = tokio::task::spawn_blocking(move || keep_samples(&p, &on_samples))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Some(Arc::new(kept)))
}

/// `q` with its matchers on series only, and its matchers on
/// [`SAMPLE_LABELS`].
fn split(q: &selector::Query) -> (selector::Query, Vec<selector::Matcher>) {
    let (on_samples, on_series): (Vec<_>, Vec<_>) = q
        .matchers
        .iter()
        .cloned()
        .partition(|m| SAMPLE_LABELS.contains(&m.name.as_str()));
    let series_q = selector::Query {
        profile_type: q.profile_type.clone(),
        matchers: on_series,
    };
    (series_q, on_samples)
}

/// When each group of sample label `by` was seen in what `q` selects over
/// the range ([`kiln_store::Store::observed`]; matchers on
/// [`SAMPLE_LABELS`] keep the rows they match): this server's view of the
/// bucket and its head, and each peer's unflushed share, joined. A peer
/// that does not answer is logged and counted, and the answer is made of
/// the rest.
pub(crate) async fn observed(
    st: &AppState,
    tenant: &str,
    q: &selector::Query,
    from: i64,
    until: i64,
    by: &str,
) -> Result<Observed, ApiError> {
    if let Err(e) = st.store.refresh_if_stale().await {
        tracing::warn!(target: "kiln_server", "looking at storage: {e}");
    }
    let (series_q, keep) = split(q);
    let mut out = st
        .store
        .observed(tenant, &series_q, from, until, by, &keep)
        .await?;
    if st.config.peers.is_empty() {
        return Ok(out);
    }
    let ask = HeadRequest {
        tenant: tenant.to_string(),
        query: q.to_string(),
        from,
        until,
        known: st.store.peer_blocks().into_iter().collect(),
        stacks_only: false,
        observe: Some(by.to_string()),
    };
    let answers = futures_util::future::join_all(st.config.peers.iter().map(|peer| async {
        let (url, req) = head_request(st, peer, &ask);
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        match resp.status() {
            StatusCode::OK => resp
                .json::<Observed>()
                .await
                .map_err(|e| format!("{url}: {e}")),
            s => Err(format!(
                "{url}: {s}: {}",
                resp.text().await.unwrap_or_default()
            )),
        }
    }))
    .await;
    for a in answers {
        match a {
            Ok(o) => out.merge(o),
            Err(e) => {
                st.metrics.peer_errors.inc();
                tracing::warn!(target: "kiln_server", "peer head, observed: {e}");
            }
        }
    }
    Ok(out)
}

/// The request asking `peer` for its share of `ask`, and its URL.
fn head_request(st: &AppState, peer: &str, ask: &HeadRequest) -> (String, reqwest::RequestBuilder) {
    let url = format!("{}{HEAD_PATH}", peer.trim_end_matches('/'));
    let mut req = st.http.post(&url).json(ask);
    if let Some(t) = &st.config.peer_token {
        req = req.bearer_auth(t);
    }
    (url, req)
}

/// The samples of `p` whose labels match every matcher (a label a sample
/// lacks reads as empty, as for series), compacted.
fn keep_samples(p: &Profile, matchers: &[selector::Matcher]) -> Profile {
    let keys: Vec<Option<kiln_profile::StringId>> =
        matchers.iter().map(|m| p.strings.find(&m.name)).collect();
    let n = p.sample_types.len();
    let mut out = Profile {
        samples: Vec::new(),
        values: Vec::new(),
        ..p.clone()
    };
    for (i, s) in p.samples.iter().enumerate() {
        let keep = matchers.iter().zip(&keys).all(|(m, k)| {
            let v = k.and_then(|k| p.label_str(s.labels, k)).unwrap_or("");
            m.matches(v)
        });
        if keep {
            out.samples.push(*s);
            out.values.extend_from_slice(&p.values[i * n..(i + 1) * n]);
        }
    }
    kiln_profile::compact(&out)
}

/// Every profile of `tenant` whose series match `q` over the range: this
/// server's view of the bucket and its head, and each peer's unflushed
/// head, merged. A peer that does not answer is logged and counted, and
/// the answer is made of the rest.
async fn select_series(
    st: &AppState,
    tenant: &str,
    q: &selector::Query,
    from: i64,
    until: i64,
    detail: Detail,
) -> Result<Option<Arc<Profile>>, ApiError> {
    if let Err(e) = st.store.refresh_if_stale().await {
        tracing::warn!(target: "kiln_server", "looking at storage: {e}");
    }
    // Minutes are read whole: every `until` within one minute reads the
    // same buckets, so the key rounds it up (and `from` down) to minutes.
    let key = (
        tenant.to_string(),
        q.to_string(),
        detail,
        from.div_euclid(kiln_store::BUCKET_MS),
        (until + kiln_store::BUCKET_MS - 1).div_euclid(kiln_store::BUCKET_MS),
        st.store.generation(),
    );
    // Merging is CPU work: off the async threads, so other requests
    // (the UI's timeline, label lists) are not held behind it.
    // The store merges on blocking threads, so other requests (the UI's
    // timeline, label lists) are not held behind it.
    let merge = || async {
        st.store
            .select(tenant, q, from, until, detail)
            .await
            .map_err(ApiError::from)
    };
    if st.config.peers.is_empty() {
        let cell = st.answers.cell(key);
        let answer = cell
            .get_or_try_init(|| async {
                let p = merge().await?;
                let covered = covered_ms(st, tenant, q, from, until).await?;
                Ok::<_, ApiError>(p.map(|p| Arc::new(mean(p, from, until, covered))))
            })
            .await?;
        return Ok(answer.clone());
    }
    let local = merge().await?;
    let ask = HeadRequest {
        tenant: tenant.to_string(),
        query: q.to_string(),
        from,
        until,
        known: st.store.peer_blocks().into_iter().collect(),
        stacks_only: detail == Detail::Stacks,
        observe: None,
    };
    let answers = futures_util::future::join_all(st.config.peers.iter().map(|peer| async {
        let (url, req) = head_request(st, peer, &ask);
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => {
                let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
                // A peer's head may be larger than one pushed profile: the
                // decoder's own 1 GiB cap applies.
                kiln_profile::decode(&body, &kiln_profile::DecodeOptions::default())
                    .map(Some)
                    .map_err(|e| format!("{url}: {e}"))
            }
            s => Err(format!(
                "{url}: {s}: {}",
                resp.text().await.unwrap_or_default()
            )),
        }
    }))
    .await;
    let mut m = Merger::new();
    if let Some(p) = &local {
        m.add(p).map_err(|e| ApiError::bad(e.to_string()))?;
    }
    for a in answers {
        match a {
            Ok(Some(p)) => m.add(&p).map_err(|e| ApiError::bad(e.to_string()))?,
            Ok(None) => {}
            Err(e) => {
                st.metrics.peer_errors.inc();
                tracing::warn!(target: "kiln_server", "peer head: {e}");
            }
        }
    }
    let covered = covered_ms(st, tenant, q, from, until).await?;
    Ok((m.inputs() > 0).then(|| Arc::new(mean(m.finish(), from, until, covered))))
}

/// Is the query's sample type a gauge (the live heap)?
pub(crate) fn gauge_query(q: &selector::Query) -> bool {
    q.sample_type()
        .is_some_and(|t| kiln_profile::gauge::is_gauge(t.split(':').next().unwrap_or("")))
}

/// For a gauge query, how long data came over the range, in ms (`None`
/// for counters, or when none is known here — a peer's head alone).
async fn covered_ms(
    st: &AppState,
    tenant: &str,
    q: &selector::Query,
    from: i64,
    until: i64,
) -> Result<Option<i64>, ApiError> {
    if !gauge_query(q) {
        return Ok(None);
    }
    let ns: i64 = st
        .store
        .coverage(tenant, q, from, until)
        .await?
        .values()
        .sum();
    Ok((ns > 0).then_some(ns / 1_000_000))
}

/// A merged profile's gauges (the live heap), stored as integrals over
/// time, as their means over the time its data covers: what the range
/// held, not the sum of its windows (`kiln_profile::gauge`).
fn mean(mut p: Profile, from_ms: i64, until_ms: i64, covered_ms: Option<i64>) -> Profile {
    kiln_profile::gauge::to_mean(
        &mut p,
        from_ms.saturating_mul(1_000_000),
        until_ms.saturating_mul(1_000_000),
        covered_ms.map(|c| c.saturating_mul(1_000_000)),
    );
    p
}

/// Admits a peer or an operator: with `cluster.token` set, only a request
/// bearing it; with tenant tokens but no cluster token, none; with neither
/// (an open server), anyone.
pub(crate) fn operator(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim();
    match &st.config.peer_token {
        Some(t) if !crate::constant_time_eq(given.as_bytes(), t.as_bytes()) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the cluster token is required",
        )),
        None if !st.config.tokens.is_empty() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tenants have tokens: set cluster.token to allow this",
        )),
        _ => Ok(()),
    }
}

/// `POST /api/v1/internal/head`: this server's share of a peer's query
/// (see [`operator`] for who may ask).
pub(crate) async fn head(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    operator(&st, &headers)?;
    let ask: HeadRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("body: {e}")))?;
    if !ask.tenant.is_empty() {
        crate::valid_tenant(&ask.tenant)?;
    }
    let q = selector::parse(&ask.query).map_err(|e| ApiError::bad(format!("query: {e}")))?;
    let known: HashSet<String> = ask.known.into_iter().collect();
    if let Some(by) = &ask.observe {
        let (series_q, keep) = split(&q);
        let seen = st
            .store
            .observed_head(
                &ask.tenant,
                &series_q,
                ask.from,
                ask.until,
                by,
                &keep,
                &known,
            )
            .await?;
        return Ok(axum::Json(seen).into_response());
    }
    let detail = if ask.stacks_only {
        Detail::Stacks
    } else {
        Detail::Labels
    };
    match st
        .store
        .select_head(&ask.tenant, &q, ask.from, ask.until, detail, &known)
        .await?
    {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(p) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            kiln_profile::pprof::encode_gzip(&p),
        )
            .into_response()),
    }
}
