//! A day's sums: the hour sums of every service in several parts (the
//! blocks of one day, or an earlier sum of that day and the blocks added
//! since), re-interned into one part and summed into one group per kind
//! keyed by the day's first millisecond, beside each hour's totals (what a
//! timeline over days reads) — the part of a day-sum block, which holds no
//! series.

use super::buckets::group_of;
use super::{Dict, Part, remapped};
use crate::Error;

impl Part {
    /// Adds every hour sum `other` holds within `[start, start + len)` (a
    /// day, or a week) to this part's sum of that span, per service and
    /// kind. `other` may itself be a sum (of part of that day, or of a day
    /// of that week): its hour totals are taken as they are, since its one
    /// group holds many hours.
    pub(crate) fn absorb_sums(&mut self, other: &Part, start: i64, len: i64) -> Result<(), Error> {
        let headers = self.headers_of(other);
        let Dict::Live(dict) = &mut self.dict else {
            return Err(Error::Block {
                block: String::new(),
                reason: "a block takes no sums".into(),
            });
        };
        let mut remap = dict.remapper(other.dict.tables());
        for (key, b) in &other.rollups {
            let summed = !b.hour_totals.is_empty();
            if summed {
                let into = self.rollups.entry(key.clone()).or_default();
                for (&h, line) in b.hour_totals.range(start..start + len) {
                    for (header, totals) in line {
                        into.add_hour_totals(h, headers[*header as usize], totals);
                    }
                }
            }
            for (&h, groups) in b.hours.range(start..start + len) {
                for g in groups {
                    let rows = remapped(&mut remap, &g.rows)?;
                    let into = self.rollups.entry(key.clone()).or_default();
                    let header = headers[g.header as usize];
                    if !summed {
                        let totals: Vec<i64> = (0..g.rows.width).map(|c| g.rows.total(c)).collect();
                        into.add_hour_totals(h, header, &totals);
                    }
                    let sum = group_of(into.hours.entry(start).or_default(), header, g.rows.width);
                    sum.rows.extend(&rows);
                    sum.rows.maybe_fold();
                    sum.widen(g.start_ns, g.end_ns);
                }
            }
        }
        self.min_ms = self.min_ms.min(other.min_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
        self.profiles += other.profiles;
        self.samples += other.samples;
        // Written as a block: no minutes, whole days only.
        self.rollup_minutes = false;
        Ok(())
    }

    /// Folds and packs the day sums: what a block holds.
    pub(crate) fn pack_sums(&mut self) {
        for r in self.rollups.values_mut() {
            for g in r.hours.values_mut().flatten() {
                g.rows.fold();
                g.rows.pack();
            }
        }
    }
}
