//! Tenants: by `X-Scope-OrgID` without authentication; with tokens in the
//! configuration, a token is its tenant and never reads or writes another.

use crate::Server;

const A: &str = "token-of-team-a-0001";
const B: &str = "token-of-team-b-0002";

fn body(service: &str) -> Vec<u8> {
    let p = kiln_profile::decode(b"main;work 5\n", &Default::default()).unwrap();
    kiln_profile::push::request_for(&p, &[("service_name".into(), service.into())]).to_bytes()
}

/// Status of a push with these headers.
fn push(s: &Server, service: &str, headers: &[(&str, &str)]) -> u16 {
    let mut r = s
        .client()
        .post(format!("{}{}", s.url, kiln_profile::push::PUSH_PATH))
        .header("content-type", "application/proto")
        .body(body(service));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().unwrap().status().as_u16()
}

/// Status and service names visible with these headers.
fn services(s: &Server, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut r = s
        .client()
        .get(format!("{}/pyroscope/label-values", s.url))
        .query(&[("label", "service_name")]);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or_default())
}

#[test]
fn tokens_are_tenants() {
    let s = Server::start_with(&format!(
        "[tenants.team-a]\ntokens = [\"{A}\"]\n[tenants.team-b]\ntokens = [\"{B}\"]\n"
    ));
    let bearer = |t: &str| format!("Bearer {t}");
    let (a, b) = (bearer(A), bearer(B));
    assert_eq!(push(&s, "svc-a", &[("authorization", &a)]), 200);
    assert_eq!(push(&s, "svc-b", &[("authorization", &b)]), 200);
    assert_eq!(push(&s, "svc-x", &[]), 401, "no token");
    assert_eq!(
        push(
            &s,
            "svc-x",
            &[("authorization", "Bearer token-of-team-a-0009")]
        ),
        401
    );
    // A's token cannot write as B.
    assert_eq!(
        push(
            &s,
            "svc-x",
            &[("authorization", &a), ("x-scope-orgid", "team-b")]
        ),
        403
    );
    assert_eq!(
        services(&s, &[("authorization", &a)]),
        (200, serde_json::json!(["svc-a"]))
    );
    assert_eq!(
        services(&s, &[("authorization", &b)]),
        (200, serde_json::json!(["svc-b"]))
    );
    assert_eq!(services(&s, &[]).0, 401);
    assert_eq!(
        services(&s, &[("authorization", &a), ("x-scope-orgid", "team-b")]).0,
        403
    );
    // Operations endpoints stay open for scrapers and probes.
    assert!(s.alive());
}

#[test]
fn org_id_separates_tenants_without_tokens() {
    let s = Server::start();
    assert_eq!(push(&s, "svc-x", &[("x-scope-orgid", "x")]), 200);
    assert_eq!(push(&s, "svc-y", &[("x-scope-orgid", "y")]), 200);
    assert_eq!(push(&s, "svc-anon", &[]), 200);
    assert_eq!(
        services(&s, &[("x-scope-orgid", "x")]).1,
        serde_json::json!(["svc-x"])
    );
    assert_eq!(
        services(&s, &[("x-scope-orgid", "y")]).1,
        serde_json::json!(["svc-y"])
    );
    assert_eq!(services(&s, &[]).1, serde_json::json!(["svc-anon"]));
}

#[test]
fn bad_configuration_is_refused() {
    for (text, word) in [
        ("dta_dir = \"x\"", "dta_dir"),
        ("[tenants.a]\ntokens = [\"short\"]", "16 characters"),
        (
            &format!("[tenants.a]\ntokens = [\"{A}\"]\n[tenants.b]\ntokens = [\"{A}\"]"),
            "twice",
        ),
        (
            &format!("[tenants.\"a/b\"]\ntokens = [\"{A}\"]"),
            "tenants.a/b",
        ),
        ("[limits]\nmax_body = -1", "max_body"),
        (
            "[storage]\nflush_every = \"10 minutes\"",
            "storage.flush_every",
        ),
        (
            &format!("[tenants.a]\ntokens = [\"{A}\"]\nretention = \"7y\""),
            "tenants.a.retention",
        ),
        ("[cluster]\npeers = [\"kiln-2:4040\"]", "cluster.peers"),
        ("[cluster]\ntoken = \"short\"", "cluster.token"),
        ("[storage]\nbucket = \"x\"", "bucket"),
    ] {
        let e = kiln_server::Config::new("x")
            .apply_toml(text)
            .expect_err(text)
            .to_string();
        assert!(e.contains(word), "{text}: {e}");
    }
}

#[test]
fn peers_and_operators_need_the_cluster_token() {
    let head = |s: &Server, token: Option<&str>| {
        let mut r = s
            .client()
            .post(format!("{}/api/v1/internal/head", s.url))
            .body(r#"{"tenant":"a","query":"process_cpu{}","from":0,"until":1,"known":[]}"#);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    let flush = |s: &Server, token: Option<&str>| {
        let mut r = s.client().post(format!("{}/api/v1/admin/flush", s.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    // /metrics sums every tenant's figures: an operator's, not a tenant's.
    let metrics = |s: &Server, token: Option<&str>| {
        let mut r = s.client().get(format!("{}/metrics", s.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    // Tenants have tokens and no cluster token is set: nobody, not even a
    // tenant's token.
    let s = Server::start_with(&format!("[tenants.a]\ntokens = [\"{A}\"]"));
    assert_eq!(head(&s, Some(A)), 403);
    assert_eq!(flush(&s, Some(A)), 403);
    assert_eq!(metrics(&s, Some(A)), 403);
    // With a cluster token: only it.
    let cluster = "cluster-secret-of-some-length";
    let s = Server::start_with(&format!(
        "[cluster]\ntoken = \"{cluster}\"\n[tenants.a]\ntokens = [\"{A}\"]"
    ));
    assert_eq!(head(&s, None), 401);
    assert_eq!(
        head(&s, Some(A)),
        401,
        "a tenant's token is not the cluster's"
    );
    assert_eq!(head(&s, Some(cluster)), 204, "nothing stored yet");
    assert_eq!(flush(&s, Some(A)), 401);
    assert_eq!(flush(&s, Some(cluster)), 200);
    assert_eq!(metrics(&s, None), 401);
    assert_eq!(metrics(&s, Some(A)), 401);
    assert_eq!(metrics(&s, Some(cluster)), 200);
}
