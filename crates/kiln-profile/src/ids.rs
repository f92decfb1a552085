//! Typed, dense ids into a [`Profile`](crate::Profile)'s tables. Each is an index
//! into its table (0-based); none of them is valid across two profiles.

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            /// The index into the owning table.
            #[inline]
            pub fn index(self) -> usize {
                self.0 as usize
            }

            /// The id of the entry at `index`.
            ///
            /// Tables hold fewer than `u32::MAX` entries; decoders check this
            /// before building ids, so the truncation cannot happen on valid tables.
            #[inline]
            pub fn from_index(index: usize) -> Self {
                debug_assert!(index < u32::MAX as usize);
                Self(index as u32)
            }
        }
    };
}

id!(
    /// An interned string. `StringId(0)` is always the empty string.
    StringId
);
id!(
    /// A function in [`Profile::functions`](crate::Profile::functions).
    FunctionId
);
id!(
    /// A location in [`Profile::locations`](crate::Profile::locations).
    LocationId
);
id!(
    /// A mapping in [`Profile::mappings`](crate::Profile::mappings).
    MappingId
);
id!(
    /// An interned stack (leaf first) in [`Profile::stacks`](crate::Profile::stacks).
    StackId
);
id!(
    /// An interned set of labels in [`Profile::label_sets`](crate::Profile::label_sets).
    /// `LabelSetId(0)` is always the empty set.
    LabelSetId
);
