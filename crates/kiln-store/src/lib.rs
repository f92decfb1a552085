//! `kiln-store` keeps profiles for the server: a write-ahead log so that
//! what is acknowledged survives `kill -9`, a queryable head of recent data,
//! immutable compressed blocks on object storage (a local directory by
//! default, S3-compatible with `--storage s3://…`), a series index by
//! labels, compaction, rollups and retention.
//!
//! Not built yet (issue #5): this crate exports nothing until then. It
//! depends on `kiln-profile` only, never on the agent or the server.
#![forbid(unsafe_code)]
