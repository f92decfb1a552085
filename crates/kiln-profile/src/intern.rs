//! Interners for strings and for slices (stacks, label sets): each value is
//! stored once, in insertion order, and found again by hash without allocating.

use std::hash::{BuildHasher, Hash};

use foldhash::fast::FixedState;
use hashbrown::HashTable;

use crate::ids::StringId;

fn hasher() -> FixedState {
    FixedState::with_seed(0x6b69_6c6e)
}

/// The hash of slice `i` of a [`SliceTable`]'s `items` and `offsets`.
fn slice_hash<T: Hash>(items: &[T], offsets: &[u32], i: u32) -> u64 {
    hasher().hash_one(&items[offsets[i as usize] as usize..offsets[i as usize + 1] as usize])
}

/// The string table: every distinct string once; `StringId(0)` is `""`.
#[derive(Clone, Debug)]
pub struct StringTable {
    strings: Vec<Box<str>>,
    index: HashTable<StringId>,
}

impl Default for StringTable {
    fn default() -> Self {
        let mut table = Self {
            strings: Vec::new(),
            index: HashTable::new(),
        };
        table.intern("");
        table
    }
}

impl PartialEq for StringTable {
    fn eq(&self, other: &Self) -> bool {
        self.strings == other.strings
    }
}

impl StringTable {
    /// The id of `s`, adding it if it is new.
    pub fn intern(&mut self, s: &str) -> StringId {
        let h = hasher().hash_one(s);
        let strings = &self.strings;
        if let Some(&id) = self.index.find(h, |&id| &*strings[id.index()] == s) {
            return id;
        }
        let id = StringId::from_index(self.strings.len());
        self.strings.push(s.into());
        let strings = &self.strings;
        self.index
            .insert_unique(h, id, |&id| hasher().hash_one(&*strings[id.index()]));
        id
    }

    /// The id of `s` if it is in the table.
    pub fn find(&self, s: &str) -> Option<StringId> {
        let h = hasher().hash_one(s);
        self.index
            .find(h, |&id| &*self.strings[id.index()] == s)
            .copied()
    }

    /// The string behind `id`; `""` for an id out of range.
    pub fn get(&self, id: StringId) -> &str {
        self.strings.get(id.index()).map_or("", |s| s)
    }

    /// How many strings, `""` included.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Never true: the table always holds `""`.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Every string, in id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> {
        self.strings.iter().map(|s| &**s)
    }

    /// The heap bytes the table asks of the allocator: each string, the
    /// vector of them and the index.
    pub fn heap_bytes(&self) -> usize {
        self.strings.iter().map(|s| s.len()).sum::<usize>()
            + self.strings.capacity() * std::mem::size_of::<Box<str>>()
            + self.index.capacity() * (std::mem::size_of::<StringId>() + 1)
    }

    /// Gives back the room reserved beyond what the table holds.
    pub fn shrink_to_fit(&mut self) {
        self.strings.shrink_to_fit();
        let strings = &self.strings;
        self.index
            .shrink_to(0, |&id| hasher().hash_one(&*strings[id.index()]));
    }
}

/// Interns slices of `T` stored back to back in one buffer, so that a million
/// stacks cost one allocation per growth, not one per stack. Slices added
/// with [`SliceTable::push`] (a table read back whose entries are distinct
/// already) are indexed only when something is next interned.
#[derive(Clone, Debug)]
pub struct SliceTable<T> {
    items: Vec<T>,
    /// `offsets[i]..offsets[i + 1]` is slice `i`; starts with 0.
    offsets: Vec<u32>,
    index: HashTable<u32>,
    /// Slices `0..indexed` are in `index`.
    indexed: u32,
}

impl<T> Default for SliceTable<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            offsets: vec![0],
            index: HashTable::new(),
            indexed: 0,
        }
    }
}

impl<T: PartialEq> PartialEq for SliceTable<T> {
    fn eq(&self, other: &Self) -> bool {
        self.items == other.items && self.offsets == other.offsets
    }
}

impl<T: Copy + Hash + Eq> SliceTable<T> {
    /// The index of `slice`, adding it if it is new.
    pub fn intern(&mut self, slice: &[T]) -> u32 {
        if self.indexed as usize != self.len() {
            self.index_pushed();
        }
        let h = hasher().hash_one(slice);
        let (items, offsets) = (&self.items, &self.offsets);
        let get = |i: u32| &items[offsets[i as usize] as usize..offsets[i as usize + 1] as usize];
        if let Some(&i) = self.index.find(h, |&i| get(i) == slice) {
            return i;
        }
        let i = (self.offsets.len() - 1) as u32;
        self.items.extend_from_slice(slice);
        self.offsets.push(self.items.len() as u32);
        let (items, offsets) = (&self.items, &self.offsets);
        self.index
            .insert_unique(h, i, |&i| slice_hash(items, offsets, i));
        self.indexed = i + 1;
        i
    }

    /// Appends `slice` as the next index without looking for it (nor
    /// indexing it until the next [`SliceTable::intern`]): for tables read
    /// back in order, whose ids are their positions. Returns its index.
    pub fn push(&mut self, slice: &[T]) -> u32 {
        let i = (self.offsets.len() - 1) as u32;
        self.items.extend_from_slice(slice);
        self.offsets.push(self.items.len() as u32);
        i
    }

    /// Indexes the slices pushed since the last intern (a duplicate among
    /// them is found as its first copy).
    fn index_pushed(&mut self) {
        let (items, offsets) = (&self.items, &self.offsets);
        let get = |i: u32| &items[offsets[i as usize] as usize..offsets[i as usize + 1] as usize];
        let n = self.offsets.len() as u32 - 1;
        self.index.reserve((n - self.indexed) as usize, |&i| {
            slice_hash(items, offsets, i)
        });
        for i in self.indexed..n {
            let h = slice_hash(items, offsets, i);
            if self.index.find(h, |&j| get(j) == get(i)).is_none() {
                self.index
                    .insert_unique(h, i, |&j| slice_hash(items, offsets, j));
            }
        }
        self.indexed = n;
    }

    /// The heap bytes the table asks of the allocator, index included.
    pub fn heap_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<T>()
            + self.offsets.capacity() * 4
            + self.index.capacity() * 5
    }

    /// Gives back the room reserved beyond what the table holds.
    pub fn shrink_to_fit(&mut self) {
        self.items.shrink_to_fit();
        self.offsets.shrink_to_fit();
        let (items, offsets) = (&self.items, &self.offsets);
        self.index.shrink_to(0, |&i| slice_hash(items, offsets, i));
    }

    /// Makes room for `slices` more slices holding `items` elements together.
    pub fn reserve(&mut self, slices: usize, items: usize) {
        self.items.reserve(items);
        self.offsets.reserve(slices);
        let (items, offsets) = (&self.items, &self.offsets);
        self.index
            .reserve(slices, |&i| slice_hash(items, offsets, i));
    }

    /// Slice `i`; empty for an index out of range.
    #[inline]
    pub fn get(&self, i: u32) -> &[T] {
        let i = i as usize;
        if i + 1 >= self.offsets.len() {
            return &[];
        }
        &self.items[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// How many distinct slices.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True when no slice was interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every slice, in index order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[T]> {
        self.offsets
            .windows(2)
            .map(|w| &self.items[w[0] as usize..w[1] as usize])
    }

    /// How many elements all slices hold together.
    pub fn total_items(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_dedupe_and_keep_empty_first() {
        let mut t = StringTable::default();
        assert_eq!(t.get(StringId(0)), "");
        let a = t.intern("a");
        assert_eq!(t.intern("b").0, 2);
        assert_eq!(t.intern("a"), a);
        assert_eq!(t.find("b"), Some(StringId(2)));
        assert_eq!(t.find("c"), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn pushed_slices_keep_their_places_and_are_found_by_a_later_intern() {
        let mut t = SliceTable::<u32>::default();
        assert_eq!(t.push(&[1, 2]), 0);
        assert_eq!(t.push(&[3]), 1);
        assert_eq!(t.push(&[1, 2]), 2, "a push never deduplicates");
        assert_eq!(t.get(2), &[1, 2]);
        assert_eq!(t.intern(&[3]), 1, "found after the pushes");
        assert_eq!(t.intern(&[1, 2]), 0, "the first copy");
        assert_eq!(t.intern(&[4]), 3);
        assert_eq!(t.push(&[5]), 4);
        assert_eq!(t.intern(&[5]), 4);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn slices_dedupe_and_empty_is_a_slice() {
        let mut t = SliceTable::<u32>::default();
        assert_eq!(t.intern(&[]), 0);
        assert_eq!(t.intern(&[1, 2, 3]), 1);
        assert_eq!(t.intern(&[1, 2]), 2);
        assert_eq!(t.intern(&[1, 2, 3]), 1);
        assert_eq!(t.get(1), &[1, 2, 3]);
        assert_eq!(t.get(0), &[] as &[u32]);
        assert_eq!(t.get(99), &[] as &[u32]);
        assert_eq!(t.len(), 3);
    }
}
