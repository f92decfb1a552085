//! Ingest, as Pyroscope clients speak it: Connect push
//! (`/push.v1.PusherService/Push`, protobuf or JSON, gzip) and the legacy
//! `POST /ingest?name=app.cpu{k=v}&from=&until=&format=&sampleRate=`
//! (pprof, JFR, folded, lines; raw or multipart). Every limit is checked
//! before the work it bounds, and a refusal says which limit and why.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kiln_profile::push::{NAME_LABEL, PushRequest, profile_name};
use kiln_profile::{DecodeOptions, Profile};

use crate::{ApiError, AppState, tenant};

/// One profile of a series, checked and ready to store; `raw` is the
/// pprof it was decoded from, when it was pprof, so the log keeps it as
/// received.
pub(crate) struct Checked {
    labels: Vec<(String, String)>,
    time_ms: i64,
    p: Profile,
    raw: Option<Vec<u8>>,
}

/// Runs decoding and checking (CPU work: inflating, parsing, splitting)
/// on a blocking thread, so that the async threads stay free for small
/// requests while a large push is decoded.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("decoding failed: {e}"),
        )
    })?
}

/// Stores a request's profiles once every one of them passed [`check`]:
/// a request refused for any of its parts stores none of them, so the
/// client's retry of a corrected request duplicates nothing.
pub(crate) async fn store_all(
    st: &AppState,
    tenant: &str,
    items: Vec<Checked>,
) -> Result<(), ApiError> {
    // One admission for the whole push: refused whole, or stored whole.
    st.store.admit()?;
    for c in items {
        st.metrics.ingested_samples.inc_by(c.p.samples.len() as u64);
        let raw = match c.raw {
            Some(raw) => raw,
            None => kiln_profile::pprof::encode(&c.p),
        };
        let stored = st
            .store
            .ingest_admitted(tenant, c.labels, c.time_ms, c.p, &raw)
            .await;
        stored.map_err(ApiError::from)?;
        st.metrics.ingested_profiles.inc();
    }
    Ok(())
}

/// Checks one profile of a series against the limits and completes its
/// labels; nothing is stored.
pub(crate) fn check(
    st: &AppState,
    mut labels: Vec<(String, String)>,
    p: Profile,
    fallback_ms: i64,
    raw: Option<Vec<u8>>,
) -> Result<Checked, ApiError> {
    let lim = &st.config.limits;
    if labels.len() > lim.max_labels {
        return Err(ApiError::bad(format!(
            "{} labels: at most {} per series",
            labels.len(),
            lim.max_labels
        )));
    }
    for (k, v) in &labels {
        if k.is_empty() || k.len() > lim.max_label_len || v.len() > lim.max_label_len {
            return Err(ApiError::bad(format!(
                "label {k:?}: names must be non-empty and names and values at most {} bytes",
                lim.max_label_len
            )));
        }
    }
    if p.samples.len() > lim.max_samples {
        return Err(ApiError::too_large(format!(
            "{} samples in one profile: at most {}",
            p.samples.len(),
            lim.max_samples
        )));
    }
    if p.sample_types.is_empty() {
        return Err(ApiError::bad("the profile has no sample types"));
    }
    if !labels.iter().any(|(k, _)| k == "service_name") {
        return Err(ApiError::bad("service_name label missing"));
    }
    if !labels.iter().any(|(k, _)| k == NAME_LABEL) {
        let (ty, _) = p.sample_type_names(p.default_type_index().unwrap_or(0));
        labels.push((NAME_LABEL.into(), profile_name(ty).to_string()));
    }
    let time_ms = if p.time_nanos > 0 {
        p.time_nanos / 1_000_000
    } else {
        fallback_ms
    };
    Ok(Checked {
        labels,
        time_ms,
        p,
        raw,
    })
}

fn decode(st: &AppState, bytes: &[u8], what: &str) -> Result<Profile, ApiError> {
    let mut opts = DecodeOptions::default();
    opts.max_decompressed = st.config.limits.max_decompressed;
    kiln_profile::decode(bytes, &opts).map_err(|e| match e {
        kiln_profile::Error::TooLarge { limit } => {
            ApiError::too_large(format!("{what}: decompresses past {limit} bytes"))
        }
        e => ApiError::bad(format!("{what}: {e}")),
    })
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `POST /push.v1.PusherService/Push`.
pub async fn push(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let result = push_inner(&st, &headers, body).await;
    if result.is_err() {
        st.metrics.ingest_errors.inc();
    }
    result
}

async fn push_inner(st: &AppState, headers: &HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let tenant = tenant(st, headers)?;
    let gz = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let st2 = st.clone();
    let checked = blocking(move || parse_push(&st2, body, gz, json)).await?;
    store_all(st, &tenant, checked).await?;
    Ok(if json {
        ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/proto")],
            Vec::<u8>::new(),
        )
            .into_response()
    })
}

/// A request body, gunzipped (when it says so or starts like gzip) within
/// the decompression limit.
pub(crate) fn inflate(st: &AppState, body: Bytes, gz: bool) -> Result<Bytes, ApiError> {
    if !(gz || kiln_profile::compress::is_gzip(&body)) {
        return Ok(body);
    }
    kiln_profile::compress::gunzip(&body, st.config.limits.max_decompressed)
        .map(Bytes::from)
        .map_err(|e| match e {
            kiln_profile::Error::TooLarge { limit } => {
                ApiError::too_large(format!("request body decompresses past {limit} bytes"))
            }
            e => ApiError::bad(format!("request body: {e}")),
        })
}

/// A push request's body, inflated, parsed, and every profile in it
/// decoded and checked (on a blocking thread: see [`blocking`]).
fn parse_push(st: &AppState, body: Bytes, gz: bool, json: bool) -> Result<Vec<Checked>, ApiError> {
    let body = inflate(st, body, gz)?;
    let req = if json {
        from_json(&body)?
    } else {
        PushRequest::from_bytes(&body).map_err(|e| ApiError::bad(format!("push request: {e}")))?
    };
    let now = now_ms();
    // Every series is decoded and checked before any is stored.
    let mut checked = Vec::new();
    for (i, s) in req.series.into_iter().enumerate() {
        let labels: Vec<(String, String)> =
            s.labels.into_iter().map(|l| (l.name, l.value)).collect();
        for raw in s.samples {
            let p = decode(st, &raw.raw_profile, &format!("series {i}"))?;
            let bytes = looks_like_pprof(&raw.raw_profile).then_some(raw.raw_profile);
            checked.push(check(st, labels.clone(), p, now, bytes)?);
        }
    }
    Ok(checked)
}

/// Raw bytes the log can keep as they are: gzip (of pprof, since it
/// decoded) or a protobuf, not JFR or folded text that would have to be
/// parsed differently on replay.
fn looks_like_pprof(b: &[u8]) -> bool {
    kiln_profile::compress::is_gzip(b)
        || matches!(kiln_profile::detect(b), Some(kiln_profile::Format::Pprof))
}

/// The Connect JSON form of a push request (protobuf's JSON mapping:
/// `rawProfile` is base64).
fn from_json(body: &[u8]) -> Result<PushRequest, ApiError> {
    #[derive(serde::Deserialize)]
    struct Req {
        #[serde(default)]
        series: Vec<Series>,
    }
    #[derive(serde::Deserialize)]
    struct Series {
        #[serde(default)]
        labels: Vec<Label>,
        #[serde(default)]
        samples: Vec<Sample>,
    }
    #[derive(serde::Deserialize)]
    struct Label {
        name: String,
        value: String,
    }
    #[derive(serde::Deserialize)]
    struct Sample {
        #[serde(rename = "rawProfile", alias = "raw_profile")]
        raw_profile: String,
        #[serde(default, rename = "ID", alias = "id")]
        id: String,
    }
    let r: Req = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("push request (JSON): {e}")))?;
    let mut out = PushRequest { series: Vec::new() };
    for s in r.series {
        let mut samples = Vec::new();
        for x in s.samples {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(x.raw_profile.as_bytes())
                .map_err(|e| ApiError::bad(format!("rawProfile: {e}")))?;
            samples.push(kiln_profile::push::RawSample {
                raw_profile: raw,
                id: x.id,
            });
        }
        out.series.push(kiln_profile::push::RawProfileSeries {
            labels: s
                .labels
                .into_iter()
                .map(|l| kiln_profile::push::LabelPair {
                    name: l.name,
                    value: l.value,
                })
                .collect(),
            samples,
        });
    }
    Ok(out)
}

/// Suffixes of legacy application names and the profile they name.
const SUFFIXES: &[(&str, &str, &str)] = &[
    (".cpu", "cpu", "nanoseconds"),
    (".itimer", "cpu", "nanoseconds"),
    (".wall", "wall", "nanoseconds"),
    (".alloc_objects", "alloc_objects", "count"),
    (".alloc_space", "alloc_space", "bytes"),
    (".inuse_objects", "inuse_objects", "count"),
    (".inuse_space", "inuse_space", "bytes"),
    (".mutex_count", "contentions", "count"),
    (".mutex_duration", "delay", "nanoseconds"),
    (".block_count", "contentions", "count"),
    (".block_duration", "delay", "nanoseconds"),
];

/// A legacy application name taken apart.
pub struct LegacyName {
    /// The service (the name without its suffix).
    pub service: String,
    /// Sample type and unit the suffix names (`.cpu` → cpu, nanoseconds).
    pub kind: Option<(&'static str, &'static str)>,
    /// The labels in braces.
    pub labels: Vec<(String, String)>,
}

/// `app.cpu{k=v,k2=v2}` taken apart.
pub fn parse_name(name: &str) -> Result<LegacyName, ApiError> {
    let (app, rest) = match name.find('{') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    let mut labels = Vec::new();
    if !rest.is_empty() {
        let inner = rest
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| ApiError::bad(format!("name={name:?}: expected app{{k=v,...}}")))?;
        for pair in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ApiError::bad(format!("name={name:?}: label {pair:?} is not k=v"))
            })?;
            labels.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        }
    }
    let app = app.trim();
    if app.is_empty() {
        return Err(ApiError::bad("name: the application name is empty"));
    }
    for &(suffix, ty, unit) in SUFFIXES {
        if let Some(base) = app.strip_suffix(suffix) {
            return Ok(LegacyName {
                service: base.to_string(),
                kind: Some((ty, unit)),
                labels,
            });
        }
    }
    Ok(LegacyName {
        service: app.to_string(),
        kind: None,
        labels,
    })
}

/// Every field of a multipart body by name, or `None` if the body is not
/// multipart.
async fn multipart_fields(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Option<HashMap<String, Bytes>>, ApiError> {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("multipart/form-data"))
    else {
        return Ok(None);
    };
    let boundary =
        multer::parse_boundary(ct).map_err(|e| ApiError::bad(format!("multipart body: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut out = HashMap::new();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| ApiError::bad(format!("multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::bad(format!("multipart field {name:?}: {e}")))?;
        out.insert(name, bytes);
    }
    Ok(Some(out))
}

/// `POST /ingest`.
pub async fn ingest(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let result = ingest_inner(&st, &q, &headers, body).await;
    if result.is_err() {
        st.metrics.ingest_errors.inc();
    }
    result
}

async fn ingest_inner(
    st: &AppState,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant(st, headers)?;
    let name = q
        .get("name")
        .ok_or_else(|| ApiError::bad("name: missing (app.cpu{k=v})"))?;
    let LegacyName {
        service,
        kind: suffix,
        mut labels,
    } = parse_name(name)?;
    labels.retain(|(k, _)| k != "service_name");
    labels.push(("service_name".into(), service));
    let from_ms = match q.get("from") {
        Some(v) => crate::time::parse(v, now_ms())
            .map_err(|e| ApiError::bad(format!("from={v:?}: {e}")))?,
        None => now_ms(),
    };
    let format = q.get("format").map_or("folded", String::as_str);
    let sample_rate: u64 = match q.get("sampleRate") {
        None => 100,
        Some(v) => v
            .parse()
            .ok()
            .filter(|&r| r > 0 && r <= 1_000_000)
            .ok_or_else(|| ApiError::bad(format!("sampleRate={v:?}: expected 1 to 1000000")))?,
    };
    let fields = multipart_fields(headers, body.clone()).await?;
    let field = |names: &[&str]| -> Result<Bytes, ApiError> {
        match &fields {
            None => Ok(body.clone()),
            Some(f) => names
                .iter()
                .find_map(|n| f.get(*n).cloned())
                .ok_or_else(|| ApiError::bad(format!("multipart body: no {:?} field", names[0]))),
        }
    };
    match format {
        "pprof" | "jfr" => {
            let bytes = field(&[if format == "jfr" { "jfr" } else { "profile" }])?;
            let (st2, labels) = (st.clone(), labels.clone());
            let what = format.to_string();
            let checked = blocking(move || {
                let p = decode(&st2, &bytes, &what)?;
                split_checked(&st2, &labels, p, from_ms)
            })
            .await?;
            store_all(st, &tenant, checked).await?;
        }
        "folded" | "lines" | "trie" | "tree" => {
            if matches!(format, "trie" | "tree") {
                return Err(ApiError::bad(format!(
                    "format={format}: not supported; send pprof, jfr, folded or lines"
                )));
            }
            let text = field(&["profile"])?;
            let text = if format == "lines" {
                // One stack per line, each seen once.
                let s =
                    std::str::from_utf8(&text).map_err(|_| ApiError::bad("lines: not UTF-8"))?;
                let mut out = String::with_capacity(s.len() + s.len() / 8);
                for l in s.lines().filter(|l| !l.trim().is_empty()) {
                    out.push_str(l.trim_end());
                    out.push_str(" 1\n");
                }
                Bytes::from(out)
            } else {
                text
            };
            let (ty, unit) = suffix.unwrap_or(("cpu", "nanoseconds"));
            let mut p = {
                let (st2, what) = (st.clone(), format.to_string());
                blocking(move || decode(&st2, &text, &what)).await?
            };
            if p.sample_types.is_empty() {
                return Err(ApiError::bad(format!(
                    "format={format}: the body holds no samples"
                )));
            }
            if unit == "nanoseconds" && ty != "delay" {
                // Folded CPU and wall profiles count samples.
                let period = 1_000_000_000 / sample_rate;
                kiln_profile::scale(&mut p, period as f64);
                let t = p.strings.intern(ty);
                let u = p.strings.intern(unit);
                p.sample_types[0].ty = t;
                p.sample_types[0].unit = u;
                p.default_sample_type = t;
                p.period_type = Some(p.sample_types[0]);
                p.period = period as i64;
            } else {
                let t = p.strings.intern(ty);
                let u = p.strings.intern(unit);
                p.sample_types[0].ty = t;
                p.sample_types[0].unit = u;
                p.default_sample_type = t;
            }
            let mut labels = labels.clone();
            labels.push((NAME_LABEL.into(), profile_name(ty).to_string()));
            let checked = check(st, labels, p, from_ms, None)?;
            store_all(st, &tenant, vec![checked]).await?;
        }
        other => {
            return Err(ApiError::bad(format!(
                "format={other:?}: expected pprof, jfr, folded or lines"
            )));
        }
    }
    Ok(StatusCode::OK.into_response())
}

/// `p` split by kind and checked, as `kiln push` sends it: a JFR with CPU,
/// allocation and lock events becomes `process_cpu`, `memory` and `mutex`.
fn split_checked(
    st: &AppState,
    labels: &[(String, String)],
    p: Profile,
    from_ms: i64,
) -> Result<Vec<Checked>, ApiError> {
    let parts = kiln_profile::push::split_by_kind(&p);
    if parts.is_empty() {
        return Err(ApiError::bad("the profile has no sample types"));
    }
    let mut checked = Vec::with_capacity(parts.len());
    for (name, part) in parts {
        let mut l = labels.to_vec();
        l.push((NAME_LABEL.into(), name));
        checked.push(check(st, l, part, from_ms, None)?);
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::parse_name;

    #[test]
    fn legacy_names() {
        let n = parse_name("checkout.cpu{region=eu,host=a1}").unwrap();
        assert_eq!(n.service, "checkout");
        assert_eq!(n.kind, Some(("cpu", "nanoseconds")));
        assert_eq!(n.labels.len(), 2);
        let n = parse_name("checkout").unwrap();
        assert_eq!((n.service.as_str(), n.kind), ("checkout", None));
        assert!(parse_name("x{a}").is_err());
        assert!(parse_name("{a=b}").is_err());
        assert!(parse_name("x{a=b").is_err());
    }
}
