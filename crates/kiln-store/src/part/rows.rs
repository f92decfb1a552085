//! Rows: (stack, label set, values) packed as varints, appended as
//! profiles arrive and folded (sorted and summed) in place.

use kiln_profile::{LabelSetId, StackId};

/// Rows are folded (sorted and summed) once this many more arrived since
/// the last fold, and at least as many as it left.
const FOLD_ROWS: usize = 4096;

/// Rows over a shared table: keys and their values, `width` per row.
/// New rows are appended to a tail as they come; [`Rows::fold`] sorts and
/// sums equal keys. Once their minute is over, rows are packed
/// ([`Rows::pack`]): sorted by key, each row is the varint of its stack id
/// minus the previous row's, the varint of its label set, and its values
/// as zigzag varints — 8 to 10 bytes where the tail takes 24.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rows {
    pub(super) packed: Vec<u8>,
    pub(super) packed_rows: usize,
    pub(super) keys: Vec<(StackId, LabelSetId)>,
    pub(super) values: Vec<i64>,
    pub width: usize,
    pub(super) folded: usize,
    /// Each value column summed over every row: a timeline reads these
    /// instead of decoding the rows.
    pub(super) sums: Vec<i64>,
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `*at`, advancing it. Packed bytes are only ever written
/// by [`put_varint`], so they are well formed.
pub(super) fn get_varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&byte) = b.get(*at) {
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
        shift += 7;
    }
    v
}

impl Rows {
    pub fn new(width: usize) -> Rows {
        Rows {
            width,
            sums: vec![0; width],
            ..Rows::default()
        }
    }

    pub fn len(&self) -> usize {
        self.packed_rows + self.keys.len()
    }

    pub fn push(&mut self, stack: StackId, labels: LabelSetId, values: &[i64]) {
        // Rows that come in key order (read back from a block) stay
        // folded: packing them sorts nothing.
        if self.folded == self.keys.len()
            && self.packed_rows == 0
            && self.keys.last().is_none_or(|&last| last < (stack, labels))
        {
            self.folded += 1;
        }
        self.keys.push((stack, labels));
        self.values.extend_from_slice(values);
        for (t, &v) in self.sums.iter_mut().zip(values) {
            *t = t.saturating_add(v);
        }
    }

    /// Folds when enough has arrived since the last fold, so an append
    /// costs its own size on average: the tail may grow to twice what the
    /// last fold left (sorted or packed) before it is folded again.
    pub fn maybe_fold(&mut self) {
        if self.keys.len() > 2 * self.folded.max(self.packed_rows) + FOLD_ROWS {
            self.fold();
        }
    }

    /// Sorts by key and sums the values of equal keys; packed rows that
    /// late rows joined are packed again.
    pub fn fold(&mut self) {
        if self.folded == self.keys.len() && (self.packed_rows == 0 || self.keys.is_empty()) {
            return;
        }
        let repack = self.packed_rows > 0;
        if repack {
            self.unpack();
        }
        let w = self.width;
        // Sorted as (key, index) pairs side by side: comparing in place is
        // several times faster than sorting indices by looking keys up.
        let mut order: Vec<(u64, u32)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, &(s, l))| ((u64::from(s.0) << 32) | u64::from(l.0), i as u32))
            .collect();
        order.sort_unstable_by_key(|&(k, _)| k);
        let mut keys = Vec::with_capacity(order.len());
        let mut values: Vec<i64> = Vec::with_capacity(self.values.len());
        for (_, i) in order {
            let i = i as usize;
            let v = &self.values[i * w..(i + 1) * w];
            if keys.last() == Some(&self.keys[i]) {
                let at = values.len() - w;
                for (o, &x) in values[at..].iter_mut().zip(v) {
                    *o = o.saturating_add(x);
                }
            } else {
                keys.push(self.keys[i]);
                values.extend_from_slice(v);
            }
        }
        keys.shrink_to_fit();
        values.shrink_to_fit();
        self.keys = keys;
        self.values = values;
        self.folded = self.keys.len();
        if repack {
            self.pack();
        }
    }

    /// Folds, then packs every row (see the type's docs).
    pub fn pack(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        if self.packed_rows > 0 || self.folded != self.keys.len() {
            // fold() unpacks, merges and comes back here with none packed.
            self.fold();
            if self.packed_rows > 0 {
                return;
            }
        }
        let mut out = Vec::with_capacity(self.keys.len() * (3 + 3 * self.width));
        let mut prev = 0u32;
        for (i, &(s, l)) in self.keys.iter().enumerate() {
            put_varint(&mut out, u64::from(s.0 - prev));
            prev = s.0;
            put_varint(&mut out, u64::from(l.0));
            for &v in &self.values[i * self.width..(i + 1) * self.width] {
                put_varint(&mut out, ((v << 1) ^ (v >> 63)) as u64);
            }
        }
        out.shrink_to_fit();
        self.packed = out;
        self.packed_rows = self.keys.len();
        self.keys = Vec::new();
        self.values = Vec::new();
        self.folded = 0;
    }

    /// Moves the packed rows back into the tail, before the rows there.
    pub(super) fn unpack(&mut self) {
        let mut keys = Vec::with_capacity(self.len());
        let mut values = Vec::with_capacity(self.len() * self.width);
        self.for_each_packed(|s, l, v| {
            keys.push((s, l));
            values.extend_from_slice(v);
        });
        keys.extend_from_slice(&self.keys);
        values.extend_from_slice(&self.values);
        self.keys = keys;
        self.values = values;
        self.packed = Vec::new();
        self.packed_rows = 0;
        self.folded = 0;
    }

    pub(super) fn for_each_packed(&self, mut f: impl FnMut(StackId, LabelSetId, &[i64])) {
        let b = &self.packed;
        let mut at = 0;
        let mut stack = 0u32;
        let mut v = vec![0i64; self.width];
        for _ in 0..self.packed_rows {
            stack += get_varint(b, &mut at) as u32;
            let labels = get_varint(b, &mut at) as u32;
            for x in v.iter_mut() {
                let z = get_varint(b, &mut at);
                *x = (z >> 1) as i64 ^ -((z & 1) as i64);
            }
            f(StackId(stack), LabelSetId(labels), &v);
        }
    }

    /// Calls `f` with every row: packed ones first, then the tail.
    pub fn for_each(&self, mut f: impl FnMut(StackId, LabelSetId, &[i64])) {
        self.for_each_packed(&mut f);
        for (&(s, l), v) in self.keys.iter().zip(self.values.chunks(self.width.max(1))) {
            f(s, l, v);
        }
    }

    pub fn extend(&mut self, other: &Rows) {
        other.for_each(|s, l, v| self.push(s, l, v));
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.packed.capacity()
            + self.keys.capacity() * 8
            + (self.values.capacity() + self.sums.capacity()) * 8
    }

    /// The total of value column `i`.
    pub fn total(&self, i: usize) -> i64 {
        self.sums.get(i).copied().unwrap_or(0)
    }
}
