//! When each group of a sample label was seen: the time a thread was
//! profiled, which the threads table divides its CPU time by (a thread
//! that started a minute ago is not spread over the hour asked for).
//! [`Store::observed`](crate::Store::observed) fills it from the same rows
//! a merge reads; [`Observed::merge`] adds a peer's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Spans kept per group before they are sorted and joined again, beyond
/// twice what the last join left.
const JOIN_EVERY: usize = 64;

/// Per group (a label's value), the time spans (ns, `[start, end)`) of
/// the stored profiles that carry it. Spans of one group may overlap
/// (instances side by side, a profile across a minute's edge): they are
/// joined as they come, so what is held grows with the gaps between
/// them, not with the minutes read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    spans: BTreeMap<String, Spans>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Spans {
    /// Sorted and disjoint up to `joined`, appended after.
    all: Vec<(i64, i64)>,
    joined: usize,
}

impl Spans {
    fn push(&mut self, start: i64, end: i64) {
        self.all.push((start, end));
        if self.all.len() > 2 * self.joined + JOIN_EVERY {
            self.join();
        }
    }

    /// Sorts the spans and joins those that overlap or touch.
    fn join(&mut self) {
        self.all.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(self.all.len());
        for &(s, e) in &self.all {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        self.joined = out.len();
        self.all = out;
    }

    fn covered(&self) -> i64 {
        let mut j = self.clone();
        j.join();
        j.all.iter().map(|&(s, e)| e - s).sum()
    }
}

impl Observed {
    /// Records that `group` was seen from `start_ns` to `end_ns`; an empty
    /// or reversed span is ignored.
    pub fn add(&mut self, group: &str, start_ns: i64, end_ns: i64) {
        if end_ns <= start_ns {
            return;
        }
        match self.spans.get_mut(group) {
            Some(s) => s.push(start_ns, end_ns),
            None => {
                let mut s = Spans::default();
                s.push(start_ns, end_ns);
                self.spans.insert(group.to_string(), s);
            }
        }
    }

    /// Adds every span of `other`.
    pub fn merge(&mut self, other: Observed) {
        for (group, spans) in other.spans {
            for (s, e) in spans.all {
                self.add(&group, s, e);
            }
        }
    }

    /// How long `group` was seen, ns: the length of the union of its
    /// spans; 0 when it never was.
    pub fn covered_ns(&self, group: &str) -> i64 {
        self.spans.get(group).map_or(0, Spans::covered)
    }

    /// The groups seen, sorted.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.spans.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_time_is_the_union_of_spans() {
        let mut o = Observed::default();
        o.add("a", 0, 10);
        o.add("a", 5, 20);
        o.add("a", 30, 40);
        o.add("a", 20, 25);
        o.add("b", 7, 7);
        assert_eq!(o.covered_ns("a"), 35);
        assert_eq!(o.covered_ns("b"), 0);
        assert_eq!(o.covered_ns("never"), 0);
        assert_eq!(o.groups().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn many_touching_spans_are_joined_as_they_come() {
        let mut o = Observed::default();
        // A day of one-minute spans from two instances side by side.
        for m in 0..1440i64 {
            o.add("t", m * 60, (m + 1) * 60);
            o.add("t", m * 60 + 30, (m + 1) * 60 + 30);
        }
        assert!(o.spans["t"].all.len() <= 2 * JOIN_EVERY + 2);
        assert_eq!(o.covered_ns("t"), 1440 * 60 + 30);
        let mut other = Observed::default();
        other.add("t", 1_000_000, 1_000_010);
        other.add("u", 1, 2);
        o.merge(other);
        assert_eq!(o.covered_ns("t"), 1440 * 60 + 30 + 10);
        assert_eq!(o.covered_ns("u"), 1);
    }
}
