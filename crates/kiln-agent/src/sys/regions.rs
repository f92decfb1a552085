//! The memory a stack walk may read: every anonymous read-write mapping
//! of `/proc/self/maps` (thread stacks are such mappings, the main
//! thread's is `[stack]`), each kept whole and apart (never merged with
//! its neighbours), published to signal handlers through [`Published`].
//! The walk reads only inside the one mapping that holds the interrupted
//! thread's stack pointer, from that pointer up.

use super::published::{Published, WriteToken};

/// Most regions a snapshot keeps (busy JVMs have ~10k mappings; Rust
/// services a few hundred).
pub const MAX_REGIONS: usize = 16384;

/// The published table.
#[derive(Default)]
pub struct Regions {
    table: Published<Box<[(u64, u64)]>>,
}

impl Regions {
    /// An empty table.
    pub fn new() -> Self {
        Regions {
            table: Published::new(),
        }
    }

    /// The stack-like region holding `addr`, as `[start, end)`.
    /// Async-signal-safe: atomics and a binary search.
    pub fn find(&self, addr: u64) -> Option<(u64, u64)> {
        self.table.read(|t| {
            let regions = t?;
            let i = regions.partition_point(|&(start, _)| start <= addr);
            (i > 0 && addr < regions[i - 1].1).then(|| regions[i - 1])
        })
    }

    /// Publishes `regions` (sorted, non-overlapping).
    pub fn publish(&self, token: &mut WriteToken, regions: &[(u64, u64)]) {
        let n = regions.len().min(MAX_REGIONS);
        self.table.publish(token, regions[..n].into());
    }
}

/// Parses `/proc/self/maps` text into the sorted anonymous read-write
/// regions (and `[stack]`), each mapping on its own.
pub fn parse_maps(text: &str) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        let path = parts.nth(3);
        if !perms.starts_with("rw") || path.is_some_and(|p| p != "[stack]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        out.push((a, b));
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_merges_and_finds() {
        let maps = "1000-2000 r-xp 0 0:0 0 /bin/x\n2000-3000 rw-p 0 0:0 0\n3000-4000 rw-p 0 0:0 0\n4000-5000 rw-p 0 0:0 7 /lib/x.so\n5000-6000 ---p 0 0:0 0\n7000-8000 rw-p 0 0:0 0 [stack]\n";
        let r = parse_maps(maps);
        assert_eq!(
            r,
            vec![(0x2000, 0x3000), (0x3000, 0x4000), (0x7000, 0x8000)]
        );
        let t = Regions::new();
        let mut token = crate::sys::published::WriteToken::new();
        t.publish(&mut token, &r);
        assert_eq!(t.find(0x2500), Some((0x2000, 0x3000)));
        assert_eq!(t.find(0x1500), None);
        assert_eq!(t.find(0x4500), None);
        assert_eq!(t.find(0x5500), None);
        assert_eq!(t.find(0x7fff), Some((0x7000, 0x8000)));
        assert_eq!(t.find(0x8000), None);
        t.publish(&mut token, &[(0x9000, 0xa000)]);
        assert_eq!(t.find(0x2500), None);
        assert_eq!(t.find(0x9001), Some((0x9000, 0xa000)));
    }
}
