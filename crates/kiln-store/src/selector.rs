//! Queries as Pyroscope and Prometheus write them:
//! `process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="checkout", region=~"eu-.*", version!="1.2"}`.
//! A query names a profile type and selects series by label matchers.

use regex::Regex;

use crate::Error;

/// How a matcher compares a label's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (the whole value matches)
    Re,
    /// `!~`
    NotRe,
}

/// One `name op "value"`.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: Op,
    /// The value as written.
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    /// Does a series whose label `name` is `value` (empty when absent) match?
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            Op::Eq => value == self.value,
            Op::Ne => value != self.value,
            Op::Re => self.re.as_ref().is_some_and(|r| r.is_match(value)),
            Op::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }
}

/// A parsed query: the profile type and the matchers.
#[derive(Clone, Debug)]
pub struct Query {
    /// The profile type as written (`process_cpu:cpu:nanoseconds:cpu:nanoseconds`,
    /// or a shorter `process_cpu`), empty when the query has only a selector.
    pub profile_type: String,
    /// The matchers, all of which must hold.
    pub matchers: Vec<Matcher>,
}

/// Written back as a query that parses to the same thing.
impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{{", self.profile_type)?;
        for (i, m) in self.matchers.iter().enumerate() {
            let op = match m.op {
                Op::Eq => "=",
                Op::Ne => "!=",
                Op::Re => "=~",
                Op::NotRe => "!~",
            };
            let v = m.value.replace('\\', "\\\\").replace('"', "\\\"");
            write!(f, "{}{}{op}\"{v}\"", if i > 0 { "," } else { "" }, m.name)?;
        }
        write!(f, "}}")
    }
}

impl Query {
    /// The profile name (`__name__`) the type names: its first field.
    pub fn profile_name(&self) -> &str {
        self.profile_type.split(':').next().unwrap_or("")
    }

    /// The sample type part (`cpu:nanoseconds`), if the type has one.
    pub fn sample_type(&self) -> Option<String> {
        let parts: Vec<&str> = self.profile_type.split(':').collect();
        match parts.as_slice() {
            [_, ty, unit, ..] => Some(format!("{ty}:{unit}")),
            [_, ty] => Some((*ty).to_string()),
            _ => None,
        }
    }

    /// Do these labels match every matcher (and the profile name)?
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let get = |k: &str| {
            labels
                .iter()
                .find(|(n, _)| n == k)
                .map_or("", |(_, v)| v.as_str())
        };
        let name = self.profile_name();
        (name.is_empty() || get(crate::NAME_LABEL) == name)
            && self.matchers.iter().all(|m| m.matches(get(&m.name)))
    }
}

fn err(q: &str, at: usize, why: &str) -> Error {
    Error::Query {
        query: q.to_string(),
        offset: at,
        reason: why.to_string(),
    }
}

/// Parses `TYPE{matchers}`, `TYPE` or `{matchers}`.
pub fn parse(q: &str) -> Result<Query, Error> {
    let s = q.trim();
    let (ty, rest, base) = match s.find('{') {
        Some(i) => (&s[..i], &s[i..], i),
        None => (s, "", s.len()),
    };
    let ty = ty.trim();
    if let Some(bad) = ty
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-')))
    {
        return Err(err(q, bad.0, "unexpected character in the profile type"));
    }
    let mut matchers = Vec::new();
    if !rest.is_empty() {
        let b = rest.as_bytes();
        if b[b.len() - 1] != b'}' {
            return Err(err(q, base + rest.len(), "expected } at the end"));
        }
        let mut i = 1;
        let end = b.len() - 1;
        loop {
            while i < end && (b[i] == b' ' || b[i] == b',') {
                i += 1;
            }
            if i >= end {
                break;
            }
            let start = i;
            while i < end && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            if start == i {
                return Err(err(q, base + i, "expected a label name"));
            }
            let name = rest[start..i].to_string();
            while i < end && b[i] == b' ' {
                i += 1;
            }
            let op = match (b.get(i), b.get(i + 1)) {
                (Some(b'='), Some(b'~')) => Op::Re,
                (Some(b'!'), Some(b'=')) => Op::Ne,
                (Some(b'!'), Some(b'~')) => Op::NotRe,
                (Some(b'='), _) => Op::Eq,
                _ => return Err(err(q, base + i, "expected =, !=, =~ or !~")),
            };
            i += if op == Op::Eq { 1 } else { 2 };
            while i < end && b[i] == b' ' {
                i += 1;
            }
            if i >= end || b[i] != b'"' {
                return Err(err(q, base + i, "expected a quoted value"));
            }
            i += 1;
            let mut value = String::new();
            let mut closed = false;
            let mut chars = rest[i..end].char_indices();
            while let Some((k, c)) = chars.next() {
                match c {
                    '"' => {
                        i += k + 1;
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) => value.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        }),
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(err(q, base + i, "unterminated quoted value"));
            }
            let re = match op {
                Op::Re | Op::NotRe => Some(
                    Regex::new(&format!("^(?:{value})$"))
                        .map_err(|e| err(q, base + i, &format!("bad regex: {e}")))?,
                ),
                _ => None,
            };
            matchers.push(Matcher {
                name,
                op,
                value,
                re,
            });
        }
    }
    if ty.is_empty() && matchers.is_empty() {
        return Err(err(q, 0, "empty query"));
    }
    Ok(Query {
        profile_type: ty.to_string(),
        matchers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn writes_back_what_parses_the_same() {
        for text in [
            r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="a\"b\\c", region=~"eu-.*",v!="x"}"#,
            r#"{host!~"canary.*"}"#,
            "memory{}",
        ] {
            let q = parse(text).unwrap();
            let again = parse(&q.to_string()).unwrap();
            assert_eq!(again.to_string(), q.to_string());
            assert_eq!(again.profile_type, q.profile_type);
            let mv = |q: &Query| -> Vec<(String, String)> {
                q.matchers
                    .iter()
                    .map(|m| (m.name.clone(), m.value.clone()))
                    .collect()
            };
            assert_eq!(mv(&again), mv(&q), "{text}");
        }
    }

    #[test]
    fn parses_and_matches() {
        let q = parse(
            r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="checkout", region=~"eu-.*",version!="1.2", host!~"canary.*"}"#,
        )
        .unwrap();
        assert_eq!(q.profile_name(), "process_cpu");
        assert_eq!(q.sample_type().as_deref(), Some("cpu:nanoseconds"));
        assert_eq!(q.matchers.len(), 4);
        let mut l = labels(&[
            ("__name__", "process_cpu"),
            ("service_name", "checkout"),
            ("region", "eu-west-1"),
            ("version", "1.3"),
            ("host", "a1"),
        ]);
        assert!(q.matches(&l));
        l[2].1 = "us-east-1".into();
        assert!(!q.matches(&l));
        l[2].1 = "eu-west-1".into();
        l[4].1 = "canary-3".into();
        assert!(!q.matches(&l));
        l[4].1 = "a1".into();
        l[0].1 = "memory".into();
        assert!(!q.matches(&l));
        // A regex matches the whole value.
        let q = parse(r#"{region=~"eu"}"#).unwrap();
        assert!(!q.matches(&labels(&[("region", "eu-west-1")])));
        // Absent labels compare as empty.
        let q = parse(r#"{team=""}"#).unwrap();
        assert!(q.matches(&labels(&[("region", "eu")])));
        let q = parse(r#"process_cpu{a="x\"y"}"#).unwrap();
        assert_eq!(q.matchers[0].value, "x\"y");
        assert!(parse("memory").unwrap().matchers.is_empty());
    }

    #[test]
    fn errors_say_where() {
        for bad in [
            "",
            "{}",
            "cpu{",
            r#"cpu{a}"#,
            r#"cpu{a=b}"#,
            r#"cpu{a="b}"#,
            r#"cpu{a=~"("}"#,
            r#"cpu{="b"}"#,
            "cpu type{}",
            r#"cpu{a=="b"}"#,
        ] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.contains("offset"), "{bad}: {e}");
        }
    }
}
