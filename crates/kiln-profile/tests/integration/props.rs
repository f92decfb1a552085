//! The algebra, by property: pprof encode→decode is identity, merge is
//! associative and commutative and keeps totals, compact is idempotent.

use std::collections::BTreeMap;

use kiln_profile::{
    Function, Label, Line, Location, LocationId, Mapping, Profile, compact, merge, pprof,
};
use proptest::prelude::*;

const NAMES: [&str; 6] = ["main", "serve", "parse", "lex", "alloc", "park"];
const KEYS: [&str; 3] = ["thread_name", "span", "bytes"];

/// A sample to build: location indexes, (label key, value) indexes, values.
type SampleSpec = (Vec<usize>, Vec<(usize, usize)>, Vec<i64>);

#[derive(Clone, Debug)]
struct Spec {
    samples: Vec<SampleSpec>,
    time: i64,
    duration: i64,
    period: i64,
}

fn spec(types: usize) -> impl Strategy<Value = Spec> {
    let sample = (
        prop::collection::vec(0usize..8, 0..6),
        prop::collection::vec((0usize..3, 0usize..3), 0..3),
        prop::collection::vec(0i64..1000, types),
    );
    (
        prop::collection::vec(sample, 0..25),
        0i64..1 << 40,
        0i64..1 << 34,
        0i64..1 << 24,
    )
        .prop_map(|(samples, time, duration, period)| Spec {
            samples,
            time,
            duration,
            period,
        })
}

fn build(s: &Spec, types: usize) -> Profile {
    let all = [("samples", "count"), ("cpu", "nanoseconds")];
    let mut p = Profile::with_sample_types(&all[..types]);
    p.period_type = Some(p.value_type("cpu", "nanoseconds"));
    p.period = s.period;
    p.time_nanos = s.time;
    p.duration_nanos = s.duration;
    let c = p.strings.intern("made by proptest");
    p.comments.push(c);
    let file = p.strings.intern("/usr/bin/app");
    let build_id = p.strings.intern("abc123");
    let m = p.add_mapping(Mapping {
        memory_start: 0x1000,
        memory_limit: 0x9000,
        file_offset: 0,
        filename: file,
        build_id,
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
    });
    let funcs: Vec<_> = NAMES
        .iter()
        .map(|n| {
            let name = p.strings.intern(n);
            let src = p.strings.intern(&format!("src/{n}.rs"));
            p.add_function(Function {
                name,
                system_name: name,
                filename: src,
                start_line: 10,
            })
        })
        .collect();
    let locs: Vec<LocationId> = (0..8)
        .map(|k| {
            let mut lines = vec![Line {
                function: funcs[k % 6],
                line: k as i64 + 1,
                column: 0,
            }];
            if k % 3 == 0 {
                lines.push(Line {
                    function: funcs[(k + 1) % 6],
                    line: 40,
                    column: 7,
                });
            }
            p.add_location(Location {
                mapping: (k % 2 == 1).then_some(m),
                address: 0x1000 + 16 * k as u64,
                lines,
                is_folded: k == 7,
            })
        })
        .collect();
    for (stack, labels, values) in &s.samples {
        let stack: Vec<LocationId> = stack.iter().map(|&i| locs[i]).collect();
        let labels: Vec<Label> = labels
            .iter()
            .map(|&(k, v)| {
                let key = p.strings.intern(KEYS[k]);
                if KEYS[k] == "bytes" {
                    let unit = p.strings.intern("bytes");
                    Label {
                        key,
                        num: v as i64 * 512,
                        num_unit: unit,
                        ..Label::default()
                    }
                } else {
                    let str = p.strings.intern(&format!("{}-{v}", KEYS[k]));
                    Label {
                        key,
                        str,
                        ..Label::default()
                    }
                }
            })
            .collect();
        p.push_sample(&stack, &labels, values);
    }
    p
}

type Frame = (
    Option<(u64, u64, String, String)>,
    u64,
    Vec<(String, String, i64, i64, i64)>,
    bool,
);
type Key = (Vec<Frame>, Vec<(String, String, i64, String)>);

/// What a profile means, independent of ids and sample order.
fn canonical(p: &Profile) -> BTreeMap<Key, Vec<i64>> {
    let mut out: BTreeMap<Key, Vec<i64>> = BTreeMap::new();
    for (i, s) in p.samples.iter().enumerate() {
        let values = p.sample_values(i);
        if values.iter().all(|&v| v == 0) {
            continue;
        }
        let stack = p
            .stack(s.stack)
            .iter()
            .map(|&l| {
                let loc = &p.locations[l.index()];
                let mapping = loc.mapping.map(|m| {
                    let m = &p.mappings[m.index()];
                    (
                        m.memory_limit - m.memory_start,
                        m.file_offset,
                        p.str(m.filename).to_string(),
                        p.str(m.build_id).to_string(),
                    )
                });
                let lines = loc
                    .lines
                    .iter()
                    .map(|line| {
                        let f = &p.functions[line.function.index()];
                        (
                            p.str(f.name).to_string(),
                            p.str(f.filename).to_string(),
                            f.start_line,
                            line.line,
                            line.column,
                        )
                    })
                    .collect();
                (mapping, loc.address, lines, loc.is_folded)
            })
            .collect();
        let mut labels: Vec<_> = p
            .labels(s.labels)
            .iter()
            .map(|l| {
                (
                    p.str(l.key).to_string(),
                    p.str(l.str).to_string(),
                    l.num,
                    p.str(l.num_unit).to_string(),
                )
            })
            .collect();
        labels.sort();
        labels.dedup();
        let sum = out
            .entry((stack, labels))
            .or_insert_with(|| vec![0; values.len()]);
        for (a, b) in sum.iter_mut().zip(values) {
            *a += b;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn pprof_write_then_read_is_identity(s in spec(2), types in 1usize..=2) {
        let p = build(&s, 2);
        let p = if types == 1 { kiln_profile::select_type(&p, 1) } else { p };
        p.validate().unwrap();
        let back = pprof::decode(&pprof::encode(&p)).unwrap();
        prop_assert_eq!(&back, &p);
        prop_assert_eq!(&pprof::decode_with_prost(&pprof::encode(&p)).unwrap(), &p);
        let back = kiln_profile::decode(&pprof::encode_gzip(&p), &Default::default()).unwrap();
        prop_assert_eq!(&back, &p);
    }

    #[test]
    fn merge_is_associative(a in spec(2), b in spec(2), c in spec(2)) {
        let (a, b, c) = (build(&a, 2), build(&b, 2), build(&c, 2));
        let left = merge([&merge([&a, &b]).unwrap(), &c]).unwrap();
        let right = merge([&a, &merge([&b, &c]).unwrap()]).unwrap();
        left.validate().unwrap();
        prop_assert_eq!(canonical(&left), canonical(&right));
        let all = merge([&a, &b, &c]).unwrap();
        prop_assert_eq!(canonical(&all), canonical(&left));
        for t in 0..2 {
            prop_assert_eq!(all.total(t), a.total(t) + b.total(t) + c.total(t));
        }
    }

    #[test]
    fn merge_is_commutative(a in spec(2), b in spec(2)) {
        let (a, b) = (build(&a, 2), build(&b, 2));
        prop_assert_eq!(canonical(&merge([&a, &b]).unwrap()), canonical(&merge([&b, &a]).unwrap()));
    }

    #[test]
    fn compact_is_idempotent_and_keeps_meaning(s in spec(2)) {
        let p = build(&s, 2);
        let once = compact(&p);
        once.validate().unwrap();
        prop_assert_eq!(&compact(&once), &once);
        prop_assert_eq!(canonical(&once), canonical(&p));
        prop_assert!(once.functions.len() <= p.functions.len());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), prefix in 0usize..3) {
        let mut input = [&b""[..], b"FLR\0\x00\x02\x00\x00", b"\x1f\x8b"][prefix].to_vec();
        input.extend_from_slice(&bytes);
        if let Ok(p) = kiln_profile::decode(&input, &Default::default()) {
            p.validate().unwrap();
        }
    }
}
