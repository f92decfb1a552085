//! The one error type of `kiln-profile`.

/// What went wrong reading, checking or combining profiles. Each variant
/// carries what a user needs to find the fault in their input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a valid protobuf `Profile`.
    #[error("not a valid pprof profile: {0}")]
    Protobuf(String),
    /// A pprof profile is well-formed protobuf but breaks pprof's rules.
    #[error("invalid pprof profile: {0}")]
    Pprof(String),
    /// Gzip data is corrupt.
    #[error("corrupt gzip data: {0}")]
    Gzip(String),
    /// Decompressed data grew past the configured cap.
    #[error("decompressed size exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// A folded-stacks line could not be read.
    #[error("folded stacks, line {line}: {message}")]
    Folded {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A JFR file could not be read.
    #[error("JFR chunk {chunk} at byte {offset}: {message}")]
    Jfr {
        /// 0-based index of the chunk.
        chunk: usize,
        /// Byte offset in the file where reading failed.
        offset: usize,
        /// What is wrong, naming the event type or pool when known.
        message: String,
    },
    /// The content matches no format Kiln reads.
    #[error("unrecognised format: not gzip, pprof, JFR or folded stacks")]
    UnknownFormat,
    /// Profiles that cannot be combined (different sample types).
    #[error("profiles do not match: {0}")]
    Mismatch(String),
    /// A profile breaks the model's invariants.
    #[error("invalid profile: {0}")]
    Invalid(String),
    /// No sample type of that name.
    #[error("no sample type {wanted:?}; the profile has {available}")]
    NoSuchType {
        /// The requested type.
        wanted: String,
        /// The types the profile has, comma separated.
        available: String,
    },
    /// A focus, ignore or other regular expression does not compile.
    #[error("bad regular expression {pattern:?}: {message}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// The compiler's complaint.
        message: String,
    },
}
