//! Files on a local disk: the directory sink's writing, and the one rule
//! that turns a label value into a safe path or key component.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes `PREFIX/SERVICE/INSTANCE/PROFILE_NAME/START_MS-END_MS.pb.gz`.
#[derive(Clone, Debug)]
pub struct DirSink {
    root: PathBuf,
}

impl DirSink {
    /// A sink under `root`.
    pub fn new(root: PathBuf) -> Self {
        DirSink { root }
    }

    /// Writes one gzipped profile atomically (temp file, then rename) and
    /// returns its path.
    pub fn write(
        &self,
        service: &str,
        instance: &str,
        profile_name: &str,
        start: SystemTime,
        end: SystemTime,
        bytes: &[u8],
    ) -> std::io::Result<PathBuf> {
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let dir = self
            .root
            .join(safe(service))
            .join(safe(instance))
            .join(profile_name);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}-{}.pb.gz", ms(start), ms(end)));
        let tmp = dir.join(format!(".{}-{}.tmp", ms(start), std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}

/// A label value as one path component: no separators, no `..`.
pub fn safe(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "_".into()
    } else {
        s
    }
}
