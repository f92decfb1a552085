//! Gzip in and out, with a cap on what decompression may produce so that a
//! small hostile input cannot take unbounded memory.

use std::io::{Read, Write};

use crate::error::Error;

/// Default cap on decompressed size: 1 GiB.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 1 << 30;

/// True when `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Gunzips `bytes` (all concatenated members), failing with
/// [`Error::TooLarge`] once the output would pass `limit` bytes.
pub fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    // Read one byte past the limit so that "exactly at the limit" passes and
    // anything beyond is caught without buffering more.
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Gzip(e.to_string()))?;
    if out.len() > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok(out)
}

/// Gzips `bytes` at the fastest level, as Go's `runtime/pprof` writes
/// profiles: they are written far more often than they are stored for long.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_cap() {
        let data = vec![7u8; 10_000];
        let z = gzip(&data);
        assert!(is_gzip(&z));
        assert_eq!(gunzip(&z, 10_000).unwrap(), data);
        assert!(matches!(
            gunzip(&z, 9_999),
            Err(Error::TooLarge { limit: 9_999 })
        ));
        assert!(matches!(
            gunzip(&z[..z.len() / 2], 1 << 20),
            Err(Error::Gzip(_))
        ));
    }
}
