//! Totals by label: the threads table's pools and threads, the lock
//! everyone waits on, the instance that burns the most. [`LabelGroup`] is
//! the one rule naming the group a label set falls in, so whoever else
//! groups rows by a label (the store, recording when each thread was
//! seen) groups them as [`group_by_label`] does.

use hashbrown::HashMap;

use crate::analysis::check_type;
use crate::error::Error;
use crate::ids::{LabelSetId, StringId};
use crate::model::{Profile, thread_pool};

/// The group a label set falls in by label `key`: the set's value of
/// `key`; for `thread_pool`, the pool of its `thread_name` when it carries
/// no `thread_pool`; `""` when it carries neither.
///
/// Made for one profile: it holds that profile's string ids.
#[derive(Clone, Copy, Debug)]
pub struct LabelGroup {
    direct: Option<StringId>,
    thread: Option<StringId>,
    pool: bool,
}

impl LabelGroup {
    /// The rule for label `key` over `p`'s strings.
    pub fn new(p: &Profile, key: &str) -> LabelGroup {
        LabelGroup {
            direct: p.strings.find(key),
            thread: p.strings.find("thread_name"),
            pool: key == "thread_pool",
        }
    }

    /// The group of label set `set` of `p`.
    pub fn of(&self, p: &Profile, set: LabelSetId) -> String {
        match self.direct.and_then(|k| p.label_str(set, k)) {
            Some(v) => v.to_string(),
            None if self.pool => self
                .thread
                .and_then(|k| p.label_str(set, k))
                .map(thread_pool)
                .unwrap_or_default(),
            None => String::new(),
        }
    }
}

/// Sum of sample type `ty` per value of label `key`, largest first, each
/// sample grouped by [`LabelGroup`]: `thread_pool` falls back to the pool
/// of `thread_name`, and samples without the label count under `""`.
pub fn group_by_label(p: &Profile, ty: usize, key: &str) -> Result<Vec<(String, i64)>, Error> {
    check_type(p, ty)?;
    let n = p.sample_types.len();
    let rule = LabelGroup::new(p, key);
    let mut per_set: HashMap<LabelSetId, i64> = HashMap::new();
    for (i, s) in p.samples.iter().enumerate() {
        *per_set.entry(s.labels).or_default() += p.values[i * n + ty];
    }
    let mut groups: HashMap<String, i64> = HashMap::new();
    for (set, v) in per_set {
        *groups.entry(rule.of(p, set)).or_default() += v;
    }
    let mut groups: Vec<(String, i64)> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folded::{FoldedOptions, decode};

    #[test]
    fn groups_by_thread_pool_from_thread_names() {
        let opts = FoldedOptions {
            thread_prefix: true,
            ..FoldedOptions::default()
        };
        let p = decode(b"worker-1;x 3\nworker-2;x 4\nmain;y 1\n", &opts).unwrap();
        let g = group_by_label(&p, 0, "thread_pool").unwrap();
        assert_eq!(
            g,
            vec![("worker-*".to_string(), 7), ("main".to_string(), 1)]
        );
        let by_name = group_by_label(&p, 0, "thread_name").unwrap();
        assert_eq!(by_name[0], ("worker-2".to_string(), 4));
        // A label no sample carries: everything under "".
        assert_eq!(
            group_by_label(&p, 0, "lock").unwrap(),
            vec![(String::new(), 8)]
        );
    }
}
