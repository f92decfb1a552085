//! Pyroscope's push API (`push.v1.PusherService/Push`), the wire contract
//! between anything that ships profiles (the agent, `kiln push`) and
//! anything that takes them (a Kiln or a Grafana Pyroscope server). A
//! request carries series; a series is a label set (with `__name__`, the
//! profile name such as `process_cpu`) and one or more raw pprof profiles,
//! gzipped or not. Only the messages live here: no HTTP.

use prost::Message;

use crate::{Error, Profile};

/// The Connect path of the push call.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";

/// The label that names the profile (`process_cpu`, `memory`, `mutex`, …).
pub const NAME_LABEL: &str = "__name__";

/// `push.v1.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    /// The series pushed.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.PushResponse` (empty).
#[derive(Clone, PartialEq, Message)]
pub struct PushResponse {}

/// `common.v1.LabelPair`.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct LabelPair {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `push.v1.RawProfileSeries`: one label set and its profiles.
#[derive(Clone, PartialEq, Message)]
pub struct RawProfileSeries {
    /// The labels, `__name__` and `service_name` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    /// The profiles.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `push.v1.RawSample`: one pprof profile, raw or gzipped.
#[derive(Clone, PartialEq, Message)]
pub struct RawSample {
    /// The pprof bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// A unique id of the profile (may be empty).
    #[prost(string, tag = "2")]
    pub id: String,
}

impl PushRequest {
    /// One series of one profile, labelled `__name__=name` and `labels`.
    pub fn single(name: &str, labels: &[(String, String)], pprof: Vec<u8>, id: String) -> Self {
        let mut pairs = Vec::with_capacity(labels.len() + 1);
        pairs.push(LabelPair {
            name: NAME_LABEL.into(),
            value: name.into(),
        });
        pairs.extend(labels.iter().map(|(k, v)| LabelPair {
            name: k.clone(),
            value: v.clone(),
        }));
        PushRequest {
            series: vec![RawProfileSeries {
                labels: pairs,
                samples: vec![RawSample {
                    raw_profile: pprof,
                    id,
                }],
            }],
        }
    }

    /// The protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes a (decompressed) request body.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        PushRequest::decode(bytes).map_err(|e| Error::Protobuf(e.to_string()))
    }
}

/// `p` split by kind: one profile per profile name its sample types map to
/// ([`profile_name`]), each holding just those types (the whole of `p`
/// when it is of one kind). A JFR with CPU, allocation and lock events
/// becomes `process_cpu`, `memory` and `mutex`.
pub fn split_by_kind(p: &Profile) -> Vec<(String, Profile)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for i in 0..p.sample_types.len() {
        let name = profile_name(p.sample_type_names(i).0);
        match groups.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(i),
            None => groups.push((name.to_string(), vec![i])),
        }
    }
    let whole = groups.len() == 1;
    groups
        .into_iter()
        .map(|(name, indices)| {
            let part = if whole {
                p.clone()
            } else {
                crate::select_types(p, &indices)
            };
            (name, part)
        })
        .collect()
}

/// A request carrying `p` with `labels`: one series per kind
/// ([`split_by_kind`]), each the gzipped pprof of that kind.
pub fn request_for(p: &Profile, labels: &[(String, String)]) -> PushRequest {
    let mut req = PushRequest { series: Vec::new() };
    for (name, part) in split_by_kind(p) {
        let bytes = crate::pprof::encode_gzip(&part);
        req.series
            .extend(PushRequest::single(&name, labels, bytes, String::new()).series);
    }
    req
}

/// The profile name Pyroscope files a sample type under: `cpu` →
/// `process_cpu`, `wall` → `wall`, allocation and in-use types →
/// `memory`, contentions and delay → `mutex`; anything else keeps its own.
pub fn profile_name(sample_type: &str) -> &str {
    match sample_type {
        "cpu" | "samples" => "process_cpu",
        "wall" => "wall",
        "alloc_objects" | "alloc_space" | "inuse_objects" | "inuse_space" => "memory",
        "contentions" | "delay" | "lock_count" | "lock_time" => "mutex",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names() {
        let r = PushRequest::single(
            "process_cpu",
            &[("service_name".into(), "svc".into())],
            vec![1, 2, 3],
            "id".into(),
        );
        let back = PushRequest::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.series[0].labels[0].name, NAME_LABEL);
        assert!(PushRequest::from_bytes(&[0xff, 0xff]).is_err());
        assert_eq!(profile_name("alloc_space"), "memory");
        assert_eq!(profile_name("delay"), "mutex");
        assert_eq!(profile_name("cpu"), "process_cpu");
    }
}
