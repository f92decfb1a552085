//! OTLP profiles pushed with the proto's published Rust types
//! (`opentelemetry-proto`, `profiles` feature) as the client: CPU
//! profiles of two instances, one gzipped, with values and with
//! timestamps-only samples, thread attributes and a mapping's build id,
//! read back exactly; a request with one bad profile stores none of it.

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::Server;

fn string(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

/// A request of one CPU profile per instance over a shared dictionary:
/// `main;serve;parse` (values 30 + 20) and `main;serve` (5 timestamps),
/// on threads `worker-1` and `worker-2`.
fn request(instances: &[&str], bad_stack_in_last: bool) -> ExportProfilesServiceRequest {
    let strings: Vec<String> = [
        "",
        "cpu",
        "nanoseconds",
        "samples",
        "count",
        "main",
        "serve",
        "parse",
        "/srv/shop",
        "shop.rs",
        "thread.name",
        "worker-1",
        "worker-2",
        "process.executable.build_id.gnu",
        "service.instance.id",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let idx = |s: &str| strings.iter().position(|x| x == s).unwrap() as i32;
    let func = |name: &str| otlp::Function {
        name_strindex: idx(name),
        system_name_strindex: idx(name),
        filename_strindex: idx("shop.rs"),
        start_line: 1,
    };
    let loc = |f: i32, line: i64| otlp::Location {
        mapping_index: 1,
        address: 0x1000 + line as u64,
        lines: vec![otlp::Line {
            function_index: f,
            line,
            column: 0,
        }],
        attribute_indices: vec![],
    };
    let dict = otlp::ProfilesDictionary {
        mapping_table: vec![
            otlp::Mapping::default(),
            otlp::Mapping {
                memory_start: 0x1000,
                memory_limit: 0x9000,
                file_offset: 0,
                filename_strindex: idx("/srv/shop"),
                attribute_indices: vec![2],
            },
        ],
        location_table: vec![
            otlp::Location::default(),
            loc(1, 10),
            loc(2, 20),
            loc(3, 30),
        ],
        function_table: vec![
            otlp::Function::default(),
            func("main"),
            func("serve"),
            func("parse"),
        ],
        link_table: vec![otlp::Link::default()],
        attribute_table: vec![
            otlp::KeyValueAndUnit {
                key_strindex: idx("thread.name"),
                value: string("worker-1"),
                unit_strindex: 0,
            },
            otlp::KeyValueAndUnit {
                key_strindex: idx("thread.name"),
                value: string("worker-2"),
                unit_strindex: 0,
            },
            otlp::KeyValueAndUnit {
                key_strindex: idx("process.executable.build_id.gnu"),
                value: string("abc123"),
                unit_strindex: 0,
            },
        ],
        // Leaf first.
        stack_table: vec![
            otlp::Stack::default(),
            otlp::Stack {
                location_indices: vec![3, 2, 1],
            },
            otlp::Stack {
                location_indices: vec![2, 1],
            },
        ],
        string_table: strings.clone(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let profile = |bad: bool| otlp::Profile {
        sample_type: Some(otlp::ValueType {
            type_strindex: idx("cpu"),
            unit_strindex: idx("nanoseconds"),
        }),
        period_type: Some(otlp::ValueType {
            type_strindex: idx("cpu"),
            unit_strindex: idx("nanoseconds"),
        }),
        period: 10_000_000,
        time_unix_nano: now - 10_000_000_000,
        duration_nano: 10_000_000_000,
        samples: vec![
            otlp::Sample {
                stack_index: if bad { 99 } else { 1 },
                attribute_indices: vec![0],
                link_index: 0,
                values: vec![30, 20],
                timestamps_unix_nano: vec![now - 2, now - 1],
            },
            otlp::Sample {
                stack_index: 2,
                attribute_indices: vec![1],
                link_index: 0,
                values: vec![],
                timestamps_unix_nano: (0..5).map(|i| now - 100 + i).collect(),
            },
        ],
        ..Default::default()
    };
    ExportProfilesServiceRequest {
        resource_profiles: instances
            .iter()
            .enumerate()
            .map(|(i, inst)| otlp::ResourceProfiles {
                resource: Some(Resource {
                    attributes: vec![
                        KeyValue {
                            key: "service.name".into(),
                            value: string("otel-shop"),
                            key_strindex: 0,
                        },
                        // A key by its index in the dictionary.
                        KeyValue {
                            key: String::new(),
                            value: string(inst),
                            key_strindex: idx("service.instance.id"),
                        },
                    ],
                    ..Default::default()
                }),
                scope_profiles: vec![otlp::ScopeProfiles {
                    profiles: vec![profile(bad_stack_in_last && i + 1 == instances.len())],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        dictionary: Some(dict),
    }
}

fn post(server: &Server, body: Vec<u8>, gzip: bool, ty: &str) -> (u16, String) {
    let mut req = server
        .client()
        .post(format!("{}/v1development/profiles", server.url))
        .header("content-type", ty);
    let body = if gzip {
        req = req.header("content-encoding", "gzip");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &body).unwrap();
        enc.finish().unwrap()
    } else {
        body
    };
    let r = req.body(body).send().unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

#[test]
fn otlp_profiles_are_taken_and_read_back_exactly() {
    let server = Server::start();
    let proto = "application/x-protobuf";
    let (code, body) = post(
        &server,
        request(&["a"], false).encode_to_vec(),
        false,
        proto,
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(&server, request(&["b"], false).encode_to_vec(), true, proto);
    assert_eq!(code, 200, "{body}");

    let (_, services) = server.get("/api/v1/label-values", &[("name", "service_name")]);
    assert_eq!(services, serde_json::json!(["otel-shop"]));
    let (_, inst) = server.get("/api/v1/label-values", &[("name", "service_instance_id")]);
    assert_eq!(inst, serde_json::json!(["a", "b"]));
    let p = server
        .pprof(r#"process_cpu{service_name="otel-shop"}"#)
        .expect("the pushed profiles read back");
    let ty = p.default_type_index().unwrap();
    let folded = kiln_profile::folded::encode(&p, ty, false);
    let mut lines: Vec<&str> = folded.lines().collect();
    lines.sort();
    // Two instances: (30 + 20) and 5 timestamps each.
    assert_eq!(lines, ["main;serve 10", "main;serve;parse 100"], "{folded}");
    // Sample attributes are sample labels; the mapping keeps its build id.
    let threads: std::collections::BTreeSet<String> = p
        .samples
        .iter()
        .flat_map(|s| p.labels(s.labels).iter())
        .filter(|l| p.str(l.key) == "thread_name")
        .map(|l| p.str(l.str).to_string())
        .collect();
    assert_eq!(threads, ["worker-1", "worker-2"].map(String::from).into());
    assert!(p.mappings.iter().any(|m| p.str(m.build_id) == "abc123"));

    // One bad profile: 400 naming it, and nothing of the request stored.
    let (code, body) = post(
        &server,
        request(&["c", "d"], true).encode_to_vec(),
        false,
        proto,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("resource_profiles[1]") && body.contains("stack"),
        "{body}"
    );
    let (_, inst) = server.get("/api/v1/label-values", &[("name", "service_instance_id")]);
    assert_eq!(inst, serde_json::json!(["a", "b"]), "instance c was stored");
    // Garbage and JSON are refused with a reason.
    let (code, _) = post(&server, b"\xff\xff\xff garbage".to_vec(), false, proto);
    assert_eq!(code, 400);
    let (code, body) = post(&server, b"{}".to_vec(), false, "application/json");
    assert_eq!(code, 415, "{body}");
    assert!(server.alive());
}
