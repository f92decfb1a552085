//! Folded ("collapsed") stacks: one line per stack, root first, frames
//! separated by `;`, then a space and a count: `main;run;parse 42`.
//!
//! Perf-style input from `inferno-collapse-perf --tid` or Brendan Gregg's
//! scripts may start each line with the thread, `java-1234/5678;main;…`;
//! with [`FoldedOptions::thread_prefix`] that first frame becomes the
//! sample's `thread_name` label (the `-PID/TID` suffix dropped).

use crate::error::Error;
use crate::ids::{FunctionId, LocationId, StringId};
use crate::model::{Function, Label, Line, Location, Profile};

/// How to read folded text.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FoldedOptions {
    /// Treat the first frame of each line as the thread name. Default: false.
    pub thread_prefix: bool,
    /// Sample type of the counts. Default: `samples`.
    pub sample_type: String,
    /// Unit of the counts. Default: `count`.
    pub unit: String,
}

impl Default for FoldedOptions {
    fn default() -> Self {
        Self {
            thread_prefix: false,
            sample_type: "samples".into(),
            unit: "count".into(),
        }
    }
}

/// True when `bytes` look like folded text: the first non-empty line is
/// UTF-8 ending in a space and a number.
pub fn looks_folded(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // The cut may split a character: accept a valid prefix.
        Err(e) if e.valid_up_to() > 0 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    match lines.next() {
        Some(line) => split_count(line).is_some(),
        None => false,
    }
}

fn split_count(line: &str) -> Option<(&str, i64)> {
    let (stack, count) = line.trim_end().rsplit_once(' ')?;
    // inferno's differential form "stack base new": take the last number.
    let count: i64 = count.parse().ok()?;
    Some((stack.trim_end(), count))
}

/// Strips a perf-style `-PID/TID` suffix from a thread frame. A bare `-N`
/// stays: it is as likely a pool's thread number (`worker-3`) as a pid.
fn thread_name(frame: &str) -> &str {
    let Some((name, suffix)) = frame.rsplit_once('-') else {
        return frame;
    };
    let Some((pid, tid)) = suffix.split_once('/') else {
        return frame;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // perf writes `?` for the pid when it did not record it.
    if !name.is_empty() && (digits(pid) || pid == "?") && digits(tid) {
        name
    } else {
        frame
    }
}

/// Reads folded text into a one-type profile. Identical stacks are summed;
/// every frame becomes a function with one location.
pub fn decode(text: &[u8], opts: &FoldedOptions) -> Result<Profile, Error> {
    let text = std::str::from_utf8(text).map_err(|e| Error::Folded {
        line: 1 + text[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        message: "not UTF-8".into(),
    })?;
    let mut p = Profile::with_sample_types(&[(&opts.sample_type, &opts.unit)]);
    let mut frame_locations: hashbrown::HashMap<StringId, LocationId> = hashbrown::HashMap::new();
    let mut sample_of: hashbrown::HashMap<(u32, u32), usize> = hashbrown::HashMap::new();
    let thread_key = p.strings.intern("thread_name");
    let mut stack = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (frames, count) = split_count(line).ok_or_else(|| Error::Folded {
            line: n + 1,
            message: "expected `frame;frame;… COUNT`".into(),
        })?;
        if count < 0 {
            return Err(Error::Folded {
                line: n + 1,
                message: "negative count".into(),
            });
        }
        let mut frames = frames.split(';');
        let mut labels = Vec::new();
        if opts.thread_prefix
            && let Some(thread) = frames.next()
        {
            labels.push(Label {
                key: thread_key,
                str: p.strings.intern(thread_name(thread)),
                ..Label::default()
            });
        }
        stack.clear();
        for frame in frames {
            if frame.is_empty() {
                continue;
            }
            let name = p.strings.intern(frame);
            let loc = *frame_locations.entry(name).or_insert_with(|| {
                let f = p.functions.len();
                p.functions.push(Function {
                    name,
                    system_name: name,
                    ..Function::default()
                });
                p.add_location(Location {
                    lines: vec![Line {
                        function: FunctionId::from_index(f),
                        line: 0,
                        column: 0,
                    }],
                    ..Location::default()
                })
            });
            stack.push(loc);
        }
        stack.reverse();
        let stack_id = p.stacks.intern(&stack);
        let labels_id = p.label_sets.intern(&labels);
        match sample_of.entry((stack_id, labels_id)) {
            hashbrown::hash_map::Entry::Occupied(e) => {
                let v = &mut p.values[*e.get()];
                *v = v.saturating_add(count);
            }
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(p.samples.len());
                p.samples.push(crate::model::Sample {
                    stack: crate::ids::StackId(stack_id),
                    labels: crate::ids::LabelSetId(labels_id),
                });
                p.values.push(count);
            }
        }
    }
    Ok(p)
}

/// Writes sample type `type_index` as folded text, root first, one line per
/// distinct stack (summed), sorted for stable output. Inlined frames are
/// expanded; with `thread_prefix` the `thread_name` label leads the line.
pub fn encode(p: &Profile, type_index: usize, thread_prefix: bool) -> String {
    let n = p.sample_types.len();
    let thread_key = p.strings.find("thread_name");
    let mut sums: hashbrown::HashMap<String, i64> = hashbrown::HashMap::new();
    let mut frames: Vec<String> = Vec::new();
    for (i, s) in p.samples.iter().enumerate() {
        let v = p.values[i * n + type_index];
        if v == 0 {
            continue;
        }
        frames.clear();
        for &loc in p.stack(s.stack) {
            p.frame_names(loc, |f| frames.push(f.to_string().replace(';', ":")));
        }
        if thread_prefix && let Some(t) = thread_key.and_then(|k| p.label_str(s.labels, k)) {
            frames.push(t.replace(';', ":"));
        }
        frames.reverse();
        let key = if frames.is_empty() {
            "[unknown]".to_string()
        } else {
            frames.join(";")
        };
        *sums.entry(key).or_default() += v;
    }
    let mut lines: Vec<(String, i64)> = sums.into_iter().collect();
    lines.sort();
    let mut out = String::new();
    for (stack, v) in lines {
        out.push_str(&stack);
        out.push(' ');
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sums_and_writes_back() {
        let text = b"main;a;b 3\nmain;a 2\nmain;a;b 4\n";
        let p = decode(text, &FoldedOptions::default()).unwrap();
        p.validate().unwrap();
        assert_eq!(p.samples.len(), 2);
        assert_eq!(p.total(0), 9);
        assert_eq!(encode(&p, 0, false), "main;a 2\nmain;a;b 7\n");
    }

    #[test]
    fn thread_prefix_becomes_a_label() {
        let opts = FoldedOptions {
            thread_prefix: true,
            ..FoldedOptions::default()
        };
        let p = decode(
            b"worker-1234/1240;main;spin 5\nworker-?/1241;main;spin 1\n",
            &opts,
        )
        .unwrap();
        let key = p.strings.find("thread_name").unwrap();
        assert_eq!(p.label_str(p.samples[0].labels, key), Some("worker"));
        assert_eq!(encode(&p, 0, true), "worker;main;spin 6\n");
    }

    #[test]
    fn bad_lines_name_their_number() {
        let err = decode(b"a;b 1\nnot a count\n", &FoldedOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Folded { line: 2, .. }), "{err}");
        assert!(looks_folded(b"a;b 1\n"));
        assert!(!looks_folded(b"\x00\x01binary"));
    }
}
