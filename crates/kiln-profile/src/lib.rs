//! `kiln-profile` is Kiln's shared vocabulary: the canonical profile model
//! and its formats (pprof read and write, folded stacks read and write, JFR
//! read) and the algorithms every tool needs (merge, compact, filter, top,
//! flame-graph tree, diff, group by label).
//!
//! It is pure: it works on byte slices and structs, starts no threads and
//! touches no files or sockets. Reading files, serving HTTP and sampling
//! live processes happen in the crates above it.
//!
//! ```
//! use kiln_profile::{decode, DecodeOptions, top};
//!
//! let profile = decode(b"main;parse;lex 30\nmain;render 70\n", &DecodeOptions::default())?;
//! let table = top(&profile, profile.default_type_index().unwrap())?;
//! assert_eq!(table.rows[0].name, "render");
//! assert_eq!(table.total, 100);
//! // Back to gzipped pprof, which `go tool pprof` reads.
//! let bytes = kiln_profile::pprof::encode_gzip(&profile);
//! assert_eq!(decode(&bytes, &DecodeOptions::default())?.total(0), 100);
//! # Ok::<(), kiln_profile::Error>(())
//! ```
#![forbid(unsafe_code)]

mod analysis;
pub mod compress;
mod error;
pub mod folded;
pub mod gauge;
mod groups;
mod ids;
pub mod intern;
pub mod jfr;
mod merge;
mod model;
pub mod pprof;
mod pprof_wire;
pub mod push;
pub mod tasks;

pub use analysis::{
    Diff, DiffRow, Filter, FlameNode, FlameTree, OTHER, PARETO_SHARE, StackDiff, Top, TopRow, diff,
    filter, flame_tree, top, type_list,
};
pub use error::Error;
pub use groups::{LabelGroup, group_by_label};
pub use ids::{FunctionId, LabelSetId, LocationId, MappingId, StackId, StringId};
pub use merge::{
    Interner, Merger, Remapper, RowSink, compact, header, merge, scale, select_type, select_types,
    view_type,
};
pub use model::{
    FrameName, Function, Label, Line, Location, Mapping, Profile, Sample, ValueType, thread_pool,
};

/// A format Kiln reads, as recognised from content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// pprof protobuf (after any gzip is removed).
    Pprof,
    /// Java Flight Recorder.
    Jfr,
    /// Folded stacks text.
    Folded,
}

/// How to decode input of any format.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// Cap on decompressed size in bytes. Default:
    /// [`compress::DEFAULT_MAX_DECOMPRESSED`] (1 GiB).
    pub max_decompressed: usize,
    /// Options for folded text. Default: [`folded::FoldedOptions::default`].
    pub folded: folded::FoldedOptions,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_decompressed: compress::DEFAULT_MAX_DECOMPRESSED,
            folded: folded::FoldedOptions::default(),
        }
    }
}

/// Recognises the format of (already decompressed) `bytes`.
pub fn detect(bytes: &[u8]) -> Option<Format> {
    if jfr::is_jfr(bytes) {
        Some(Format::Jfr)
    } else if folded::looks_folded(bytes) {
        Some(Format::Folded)
    } else if looks_like_pprof(bytes) {
        Some(Format::Pprof)
    } else {
        None
    }
}

/// A pprof profile starts with a field of `Profile`: tag 1..=15, a valid
/// wire type for it. An empty input is an empty profile.
fn looks_like_pprof(bytes: &[u8]) -> bool {
    let Some(&first) = bytes.first() else {
        return true;
    };
    let (field, wire) = (first >> 3, first & 7);
    (1..=15).contains(&field) && matches!(wire, 0 | 2)
}

/// Decodes gzip-or-plain pprof, JFR or folded text, recognised by content.
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<Profile, Error> {
    let owned;
    let bytes = if compress::is_gzip(bytes) {
        owned = compress::gunzip(bytes, opts.max_decompressed)?;
        &owned[..]
    } else {
        bytes
    };
    match detect(bytes) {
        Some(Format::Jfr) => jfr::decode(bytes),
        Some(Format::Folded) => folded::decode(bytes, &opts.folded),
        Some(Format::Pprof) => pprof::decode(bytes),
        None => Err(Error::UnknownFormat),
    }
}
