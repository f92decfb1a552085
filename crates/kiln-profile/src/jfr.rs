//! JFR.
use crate::{Error, Profile};
/// x
pub fn is_jfr(b: &[u8]) -> bool { b.starts_with(b"FLR\0") }
/// x
pub fn decode(_b: &[u8]) -> Result<Profile, Error> { Err(Error::UnknownFormat) }
