//! When each group of a sample label was seen in a part: per series (never
//! a service's rollup, whose minutes blend its instances, so an instance
//! that started late counts from its own first profile), the span of every
//! minute — or summed hour — whose rows carry the group.

use std::collections::HashMap;

use kiln_profile::{LabelGroup, LabelSetId, StringId};

use super::Part;
use crate::{BUCKET_MS, Observed, selector};

/// What [`Part::observed`] looks at: the series `q` selects over the
/// range, the label `by` grouped as the threads table groups it, and the
/// sample matchers `keep` the rows must pass.
pub(crate) struct Look<'a> {
    pub q: &'a selector::Query,
    pub from_ms: i64,
    pub until_ms: i64,
    pub by: &'a str,
    pub keep: &'a [selector::Matcher],
}

/// The values a row's kind is judged by.
#[derive(Clone, Copy)]
enum Column {
    /// The query's sample type, at this index.
    One(usize),
    /// The query names no type: any value.
    Any,
}

impl Part {
    /// Adds to `out`, per group of `at.by`, the time spans of the groups
    /// (series and minute) holding a row with that group and a nonzero
    /// value of the query's sample type. A group's span is its profiles'
    /// earliest start to latest end, or its whole bucket when they carried
    /// no time.
    pub fn observed(&self, at: &Look, out: &mut Observed) {
        let tables = self.dict.tables();
        let rule = LabelGroup::new(tables, at.by);
        let keep: Vec<(Option<StringId>, &selector::Matcher)> = at
            .keep
            .iter()
            .map(|m| (tables.strings.find(&m.name), m))
            .collect();
        let ty = at.q.sample_type();
        let columns: Vec<Option<Column>> = self
            .headers
            .iter()
            .map(|h| match &ty {
                Some(t) => h.sample_type_index(t).map(Column::One),
                None => Some(Column::Any),
            })
            .collect();
        // Per label set: the index of its group in `names`, or `None` when
        // `keep` leaves it out.
        let mut set_group: HashMap<LabelSetId, Option<usize>> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut seen: Vec<bool> = Vec::new();
        let mut touched: Vec<usize> = Vec::new();
        let lo = at.from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let mut groups = Vec::new();
        for id in self.matching(at.q) {
            groups.clear();
            self.series[id as usize]
                .buckets
                .finest(lo, at.until_ms, &mut groups);
            for &(bucket_ms, len_ms, g) in &groups {
                let Some(column) = columns.get(g.header as usize).copied().flatten() else {
                    continue;
                };
                g.rows.for_each(|_, set, v| {
                    let counts = match column {
                        Column::One(i) if v.len() > 1 => v.get(i).is_some_and(|&x| x != 0),
                        _ => v.iter().any(|&x| x != 0),
                    };
                    if !counts {
                        return;
                    }
                    let group = *set_group.entry(set).or_insert_with(|| {
                        let kept = keep.iter().all(|(k, m)| {
                            m.matches(k.and_then(|k| tables.label_str(set, k)).unwrap_or(""))
                        });
                        kept.then(|| {
                            let name = rule.of(tables, set);
                            *by_name.entry(name).or_insert_with_key(|name| {
                                names.push(name.clone());
                                seen.push(false);
                                names.len() - 1
                            })
                        })
                    });
                    if let Some(i) = group.filter(|&i| !seen[i]) {
                        seen[i] = true;
                        touched.push(i);
                    }
                });
                let (start, end) = if g.start_ns != 0 {
                    (g.start_ns, g.end_ns)
                } else {
                    (bucket_ms * 1_000_000, (bucket_ms + len_ms) * 1_000_000)
                };
                for i in touched.drain(..) {
                    seen[i] = false;
                    out.add(&names[i], start, end);
                }
            }
        }
    }
}
