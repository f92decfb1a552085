//! The write-ahead log's record of one ingested profile: tenant, time,
//! labels and the profile as received, length-prefixed.

/// The WAL record of one ingested profile.
pub(crate) fn encode_record(
    tenant: &str,
    labels: &[(String, String)],
    time_ms: i64,
    pprof: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(pprof.len() + 64 * labels.len() + 32);
    let mut put = |s: &[u8]| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    };
    put(tenant.as_bytes());
    put(&time_ms.to_le_bytes());
    put(&(labels.len() as u32).to_le_bytes());
    for (k, v) in labels {
        put(k.as_bytes());
        put(v.as_bytes());
    }
    put(pprof);
    out
}

/// The fields of a record, or `None` if it is malformed.
#[allow(clippy::type_complexity)]
pub(crate) fn decode_record(mut b: &[u8]) -> Option<(String, Vec<(String, String)>, i64, &[u8])> {
    let mut take = || -> Option<&[u8]> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let s = b.get(4..4 + n)?;
        b = &b[4 + n..];
        Some(s)
    };
    let tenant = String::from_utf8(take()?.to_vec()).ok()?;
    let time = i64::from_le_bytes(take()?.try_into().ok()?);
    let n = u32::from_le_bytes(take()?.try_into().ok()?) as usize;
    let mut labels = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        let k = String::from_utf8(take()?.to_vec()).ok()?;
        let v = String::from_utf8(take()?.to_vec()).ok()?;
        labels.push((k, v));
    }
    let pprof = take()?;
    Some((tenant, labels, time, pprof))
}
