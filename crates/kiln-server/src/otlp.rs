//! OTLP profiles over HTTP: `POST /v1development/profiles`, the
//! `ExportProfilesServiceRequest` of OpenTelemetry's profiles signal
//! (protobuf, optionally gzipped), as the OpenTelemetry Collector and
//! eBPF profiler send it. Each profile becomes one of Kiln's (its one
//! sample type, period and stacks through the request's shared
//! dictionary), labelled by its resource's attributes (`service.name` is
//! `service_name`) and stored like a push: every profile of a request is
//! converted and checked before any is stored.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_profile::{Label, LocationId, Profile};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use prost::Message;

use crate::ingest::{Checked, blocking, check, inflate, now_ms, store_all};
use crate::{ApiError, AppState, tenant};

/// Where OTLP/HTTP exporters send profiles.
pub const OTLP_PATH: &str = "/v1development/profiles";

/// `POST /v1development/profiles`.
pub async fn export(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let result = export_inner(&st, &headers, body).await;
    if result.is_err() {
        st.metrics.ingest_errors.inc();
    }
    result
}

async fn export_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant(st, headers)?;
    let ty = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    if ty.starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "OTLP/JSON is not taken: send application/x-protobuf",
        ));
    }
    let gz = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let st2 = st.clone();
    let checked = blocking(move || parse(&st2, body, gz)).await?;
    store_all(st, &tenant, checked).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportProfilesServiceResponse::default().encode_to_vec(),
    )
        .into_response())
}

/// The request's profiles, converted and checked.
fn parse(st: &AppState, body: Bytes, gz: bool) -> Result<Vec<Checked>, ApiError> {
    let body = inflate(st, body, gz)?;
    let req = ExportProfilesServiceRequest::decode(&body[..])
        .map_err(|e| ApiError::bad(format!("ExportProfilesServiceRequest: {e}")))?;
    let dict = req.dictionary.unwrap_or_default();
    let now = now_ms();
    let mut out = Vec::new();
    for (ri, rp) in req.resource_profiles.iter().enumerate() {
        let attrs = rp.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let base = resource_labels(attrs, &dict.string_table);
        for (si, sp) in rp.scope_profiles.iter().enumerate() {
            for (pi, prof) in sp.profiles.iter().enumerate() {
                let at = format!("resource_profiles[{ri}].scope_profiles[{si}].profiles[{pi}]");
                let p = convert(&dict, prof).map_err(|e| ApiError::bad(format!("{at}: {e}")))?;
                let mut labels = base.clone();
                labels.push(("__name__".into(), profile_name(&p).into()));
                out.push(check(st, labels, p, now, None)?);
            }
        }
    }
    Ok(out)
}

/// A label name from an OpenTelemetry attribute key: `service.name` is
/// `service_name`, `thread.name` is `thread_name`; characters a
/// Prometheus label name cannot hold become `_`.
fn label_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// An attribute's value as label text, if it has one (`strings`: the
/// dictionary's, for values given by index).
fn text(v: Option<&AnyValue>, strings: &[String]) -> Option<String> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::StringValueStrindex(i) => strings.get(usize::try_from(*i).ok()?).cloned(),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// The series labels of a resource: every scalar attribute, and a
/// `service_name` (`unknown_service` when the resource names none, as
/// OpenTelemetry's SDKs default it).
fn resource_labels(attrs: &[KeyValue], strings: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = attrs
        .iter()
        .filter_map(|kv| {
            let key = if kv.key.is_empty() {
                strings.get(usize::try_from(kv.key_strindex).ok()?)?
            } else {
                &kv.key
            };
            Some((label_name(key), text(kv.value.as_ref(), strings)?))
        })
        .filter(|(k, v)| !k.is_empty() && !v.is_empty() && k != "__name__")
        .collect();
    if !out.iter().any(|(k, _)| k == "service_name") {
        out.push(("service_name".into(), "unknown_service".into()));
    }
    out
}

/// The `__name__` of a converted profile, by what it measures (as
/// Pyroscope names them): CPU, memory, locks, wall clock; else its sample
/// type.
fn profile_name(p: &Profile) -> &'static str {
    let (ty, unit) = p.sample_type_names(0);
    let period = p.period_type.map(|v| p.str(v.ty)).unwrap_or("");
    if ty == "cpu" || period == "cpu" || (ty == "samples" && unit == "count" && period.is_empty()) {
        "process_cpu"
    } else if ty.starts_with("alloc") || ty.starts_with("inuse") {
        "memory"
    } else if ty.contains("contention") || ty == "delay" || ty == "lock_time" {
        "mutex"
    } else if ty == "wall" || period == "wall" {
        "wall"
    } else {
        "otlp"
    }
}

/// One OTLP profile (over the request's dictionary) as a Kiln profile.
fn convert(d: &otlp::ProfilesDictionary, prof: &otlp::Profile) -> Result<Profile, String> {
    let s = |i: i32| -> Result<&str, String> {
        usize::try_from(i)
            .ok()
            .and_then(|i| d.string_table.get(i))
            .map(String::as_str)
            .ok_or_else(|| format!("string index {i} out of range"))
    };
    let st = prof.sample_type.ok_or("no sample_type")?;
    let mut p = Profile::with_sample_types(&[(s(st.type_strindex)?, s(st.unit_strindex)?)]);
    if let Some(pt) = prof.period_type {
        p.period_type = Some(p.value_type(s(pt.type_strindex)?, s(pt.unit_strindex)?));
    }
    p.period = prof.period;
    p.time_nanos = i64::try_from(prof.time_unix_nano).map_err(|_| "time_unix_nano out of range")?;
    p.duration_nanos =
        i64::try_from(prof.duration_nano).map_err(|_| "duration_nano out of range")?;
    let get = |what: &str, i: i32, len: usize| -> Result<usize, String> {
        usize::try_from(i)
            .ok()
            .filter(|&i| i < len)
            .ok_or_else(|| format!("{what} index {i} out of range"))
    };
    // Each dictionary entry is added once, when a sample first needs it.
    let mut functions = vec![None; d.function_table.len()];
    let mut mappings = vec![None; d.mapping_table.len()];
    let mut locations: Vec<Option<LocationId>> = vec![None; d.location_table.len()];
    let mut stack = Vec::new();
    let mut labels = Vec::new();
    for (n, sample) in prof.samples.iter().enumerate() {
        let value: i64 = if sample.values.is_empty() {
            sample.timestamps_unix_nano.len() as i64
        } else {
            sample.values.iter().fold(0i64, |a, v| a.saturating_add(*v))
        };
        if value == 0 {
            continue;
        }
        let si = get("stack", sample.stack_index, d.stack_table.len())
            .map_err(|e| format!("samples[{n}]: {e}"))?;
        stack.clear();
        for &li in &d.stack_table[si].location_indices {
            let li = get("location", li, d.location_table.len())?;
            if let Some(id) = locations[li] {
                stack.push(id);
                continue;
            }
            let loc = &d.location_table[li];
            // mapping_table[0] is the empty mapping: none.
            let mapping = match get("mapping", loc.mapping_index, d.mapping_table.len())? {
                0 => None,
                mi => Some(match mappings[mi] {
                    Some(id) => id,
                    None => {
                        let m = &d.mapping_table[mi];
                        let build_id = m
                            .attribute_indices
                            .iter()
                            .filter_map(|&a| d.attribute_table.get(usize::try_from(a).ok()?))
                            .find(|kv| s(kv.key_strindex).is_ok_and(|k| k.contains("build_id")))
                            .and_then(|kv| text(kv.value.as_ref(), &d.string_table))
                            .unwrap_or_default();
                        let filename = p.strings.intern(s(m.filename_strindex)?);
                        let build_id = p.strings.intern(&build_id);
                        let id = p.add_mapping(kiln_profile::Mapping {
                            memory_start: m.memory_start,
                            memory_limit: m.memory_limit,
                            file_offset: m.file_offset,
                            filename,
                            build_id,
                            ..Default::default()
                        });
                        mappings[mi] = Some(id);
                        id
                    }
                }),
            };
            let mut lines = Vec::with_capacity(loc.lines.len());
            for line in &loc.lines {
                let fi = get("function", line.function_index, d.function_table.len())?;
                let function = match functions[fi] {
                    Some(id) => id,
                    None => {
                        let f = &d.function_table[fi];
                        let f = kiln_profile::Function {
                            name: p.strings.intern(s(f.name_strindex)?),
                            system_name: p.strings.intern(s(f.system_name_strindex)?),
                            filename: p.strings.intern(s(f.filename_strindex)?),
                            start_line: f.start_line,
                        };
                        let id = p.add_function(f);
                        functions[fi] = Some(id);
                        id
                    }
                };
                lines.push(kiln_profile::Line {
                    function,
                    line: line.line,
                    column: line.column,
                });
            }
            let id = p.add_location(kiln_profile::Location {
                mapping,
                address: loc.address,
                lines,
                is_folded: false,
            });
            locations[li] = Some(id);
            stack.push(id);
        }
        labels.clear();
        for &ai in &sample.attribute_indices {
            let kv = &d.attribute_table[get("attribute", ai, d.attribute_table.len())?];
            let key = p.strings.intern(&label_name(s(kv.key_strindex)?));
            let unit = p.strings.intern(s(kv.unit_strindex)?);
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::IntValue(i)) => labels.push(Label {
                    key,
                    str: kiln_profile::StringId(0),
                    num: *i,
                    num_unit: unit,
                }),
                v => {
                    if let Some(t) = v.and_then(|_| text(kv.value.as_ref(), &d.string_table)) {
                        labels.push(Label {
                            key,
                            str: p.strings.intern(&t),
                            num: 0,
                            num_unit: kiln_profile::StringId(0),
                        });
                    }
                }
            }
        }
        p.push_sample(&stack, &labels, &[value]);
    }
    Ok(p)
}
