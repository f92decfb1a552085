//! Who a request is: tenant names, bearer tokens compared in constant
//! time, and the tenant each request acts for.

use axum::http::{HeaderMap, StatusCode};

use crate::{ApiError, AppState};

/// `t` as a tenant name: 1 to 150 characters of `A-Z a-z 0-9 _ - .`.
pub(crate) fn valid_tenant(t: &str) -> Result<(), ApiError> {
    if t.is_empty()
        || t.len() > 150
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(ApiError::bad(
            "X-Scope-OrgID: 1 to 150 characters of A-Z a-z 0-9 _ - .",
        ));
    }
    Ok(())
}

/// Equal in time whatever the inputs share.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

/// The tenant of a request. Without tokens configured: `X-Scope-OrgID`,
/// else the anonymous tenant. With tokens: the token's tenant (401 without
/// a known token), and an `X-Scope-OrgID` naming another tenant is 403.
pub(crate) fn tenant(st: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let org = match headers.get("x-scope-orgid") {
        None => None,
        Some(v) => {
            let t = v
                .to_str()
                .map_err(|_| ApiError::bad("X-Scope-OrgID: not ASCII"))?
                .trim();
            valid_tenant(t)?;
            Some(t.to_string())
        }
    };
    if st.config.tokens.is_empty() {
        return Ok(org.unwrap_or_default());
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim();
    // Compare with every token, so the time says nothing of which matched.
    let mut found = None;
    for (token, tenant) in &st.config.tokens {
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            found = Some(tenant);
        }
    }
    let Some(tenant) = found else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer TOKEN)",
        ));
    };
    match org {
        Some(o) if o != *tenant => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("X-Scope-OrgID {o:?}: this token is not of that tenant"),
        )),
        _ => Ok(tenant.clone()),
    }
}
