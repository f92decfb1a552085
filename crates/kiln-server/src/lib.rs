//! `kiln-server` is the Kiln server: Pyroscope-compatible ingest, the query
//! API (`/pyroscope/render`, `/api/v1/…`), tenants, alerts, `/metrics` and the
//! embedded web UI. It wires `kiln-store` to `kiln-profile`.
//!
//! Not built yet (issues #5 and #6): this crate exports nothing until then.
#![forbid(unsafe_code)]
