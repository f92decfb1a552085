//! The write-ahead log: what the server acknowledged is on disk first.
//! Appends from every request go to one writer thread, which writes what
//! has gathered and syncs once for all of it (group commit), then tells
//! each waiting request. A write or sync that fails (a full disk, an I/O
//! error) is rolled back before anything else is written: the segment is
//! cut back to its last acknowledged byte, or, if it cannot be cut, the
//! log goes on in a new segment — so no acknowledged record ever follows
//! torn bytes. Records carry a length and a CRC: on replay a torn tail of
//! the last segment (a crash mid-write) is cut off, and a corrupt record
//! anywhere else is skipped to the next record that checks, every good
//! record kept and what was skipped reported.
//!
//! Segment files `wal/NNNNNNNN.wal`; a record is
//! `[len: u32 LE][crc32 of payload: u32 LE][payload]`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use crate::Error;

/// A segment is closed and a new one begun past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record accepted (and read back).
pub const MAX_RECORD: usize = 256 << 20;
/// Appends waiting for the writer, at most; more wait for room.
const QUEUE: usize = 1024;
/// Bytes a replay checksums at most while looking for the next good record
/// after a corrupt one.
const RESYNC_BUDGET: usize = 256 << 20;
/// Bytes one group commit gathers at most before it syncs.
const GROUP_BYTES: usize = 32 << 20;

type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

enum Msg {
    Append(Vec<u8>, Ack),
    /// Begin a new segment; answers its number.
    Rotate(tokio::sync::oneshot::Sender<Result<u64, String>>),
}

/// The log's append side.
pub struct Wal {
    tx: SyncSender<Msg>,
    dir: PathBuf,
    replayed: Replayed,
}

/// What a replay found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records replayed.
    pub records: u64,
    /// Bytes of corrupt records skipped inside segments (kept on disk).
    pub skipped_bytes: u64,
    /// Bytes of a torn tail cut from the last segment.
    pub cut_bytes: u64,
}

/// Opens (creating) the log under `dir`, replays every intact record to
/// `replay` in order, cuts a torn tail, and starts the writer thread.
pub fn open(dir: &Path, replay: impl FnMut(&[u8])) -> Result<Wal, Error> {
    open_from(dir, 0, replay)
}

/// As [`open`], but segments numbered below `first` — whose records are
/// all in blocks already — are removed rather than replayed.
pub fn open_from(dir: &Path, first: u64, mut replay: impl FnMut(&[u8])) -> Result<Wal, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    remove_below(dir, first)?;
    let mut segments = segments(dir)?;
    let mut replayed = Replayed::default();
    let last = segments.len().saturating_sub(1);
    for (i, (_, path)) in segments.iter().enumerate() {
        replay_segment(path, i == last, &mut replay, &mut replayed)?;
    }
    let next = segments.last().map_or(0, |(n, _)| *n);
    let (n, path) = match segments.pop() {
        Some(last) => last,
        None => (next, segment_path(dir, next)),
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    let (tx, rx) = sync_channel(QUEUE);
    let writer = Writer {
        dir: dir.to_path_buf(),
        file,
        seq: n,
        size,
        torn: false,
    };
    std::thread::Builder::new()
        .name("kiln-wal".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| Error::io(dir, e))?;
    Ok(Wal {
        tx,
        dir: dir.to_path_buf(),
        replayed,
    })
}

/// Removes the segments numbered below `seq`.
pub fn remove_below(dir: &Path, seq: u64) -> Result<(), Error> {
    for (n, path) in segments(dir)? {
        if n < seq {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

impl Wal {
    /// What the replay at open found.
    pub fn replayed(&self) -> Replayed {
        self.replayed
    }

    /// Appends one record; resolves once it is durable (or failed).
    pub async fn append(&self, payload: Vec<u8>) -> Result<(), Error> {
        if payload.len() > MAX_RECORD {
            return Err(Error::TooLarge {
                what: "WAL record",
                limit: MAX_RECORD,
            });
        }
        self.ask(|ack| Msg::Append(payload, ack)).await
    }

    /// Sends the writer the message `msg` makes around its answer's
    /// sender, and waits for the answer. The queue is bounded: when the
    /// disk falls behind, a request waits here (off the async threads)
    /// instead of memory growing.
    async fn ask<T: Send + 'static>(
        &self,
        msg: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, String>>) -> Msg + Send + 'static,
    ) -> Result<T, Error> {
        let (answer, done) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || tx.send(msg(answer)))
            .await
            .map_err(|e| Error::Wal(e.to_string()))?
            .map_err(|_| Error::Wal("the WAL writer stopped".into()))?;
        done.await
            .map_err(|_| Error::Wal("the WAL writer stopped".into()))?
            .map_err(Error::Wal)
    }
}

impl Wal {
    /// Closes the current segment (if it holds anything) and begins the
    /// next: every record appended before this call is in a segment
    /// numbered below the answer.
    pub async fn rotate(&self) -> Result<u64, Error> {
        self.ask(Msg::Rotate).await
    }

    /// Removes the segments numbered below `seq` (their records are in
    /// blocks).
    pub fn truncate_below(&self, seq: u64) -> Result<(), Error> {
        remove_below(&self.dir, seq)
    }

    /// Bytes of log on disk.
    pub fn bytes(&self) -> u64 {
        segments(&self.dir)
            .map(|v| {
                v.iter()
                    .filter_map(|(_, p)| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.wal"))
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(".wal"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((n, e.path()));
    }
    out.sort();
    Ok(out)
}

/// Replays one segment. A record that does not check (length past the
/// end, CRC mismatch) is skipped: the bytes after it are searched for the
/// next record that checks, and replay goes on from there. In the `last`
/// segment, a tail with no good record after it is a write torn by a
/// crash, and is cut off so that appends continue after the last good
/// record; in earlier segments nothing is cut.
fn replay_segment(
    path: &Path,
    last: bool,
    replay: &mut impl FnMut(&[u8]),
    out: &mut Replayed,
) -> Result<(), Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let len = bytes.len();
    let record_at = |at: usize| -> Option<&[u8]> {
        let head = bytes.get(at..at + 8)?;
        let n = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
        if n > MAX_RECORD {
            return None;
        }
        let payload = bytes.get(at + 8..at.checked_add(8 + n)?)?;
        (crc32fast::hash(payload) == crc).then_some(payload)
    };
    let mut at = 0usize;
    // End of the last good record.
    let mut good = 0usize;
    while at < len {
        if let Some(p) = record_at(at) {
            replay(p);
            out.records += 1;
            at += 8 + p.len();
            good = at;
            continue;
        }
        // Resynchronise: the next offset where a record checks, within a
        // bound on the bytes checksummed (each candidate offset reads a
        // length from garbage), so a corrupt segment costs bounded time.
        let mut budget = RESYNC_BUDGET;
        let next = (at + 1..len).find(|&i| {
            let Some(head) = bytes.get(i..i + 8) else {
                return false;
            };
            let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if n > len - i - 8 || budget == 0 {
                return false;
            }
            budget = budget.saturating_sub(n.max(1));
            record_at(i).is_some()
        });
        let Some(next) = next else {
            break;
        };
        tracing::warn!(
            target: "kiln_store",
            "{}: skipped {} bytes of a corrupt record at offset {at}",
            path.display(),
            next - at
        );
        out.skipped_bytes += (next - at) as u64;
        at = next;
    }
    if good < len {
        if last {
            tracing::warn!(
                target: "kiln_store",
                "{}: cutting {} bytes of a torn record at offset {good}",
                path.display(),
                len - good
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            f.set_len(good as u64).map_err(|e| Error::io(path, e))?;
            f.sync_all().map_err(|e| Error::io(path, e))?;
            out.cut_bytes += (len - good) as u64;
        } else {
            tracing::warn!(
                target: "kiln_store",
                "{}: {} bytes after the last good record skipped (kept on disk)",
                path.display(),
                len - good
            );
            out.skipped_bytes += (len - good) as u64;
        }
    }
    Ok(())
}

struct Writer {
    dir: PathBuf,
    file: File,
    seq: u64,
    /// Bytes of the segment that hold acknowledged records.
    size: u64,
    /// A failed write may have left bytes past `size` that could not be
    /// cut yet.
    torn: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch: Vec<(Vec<u8>, Ack)> = Vec::new();
        let mut out = Vec::new();
        let mut rotate = None;
        while let Ok(first) = rx.recv() {
            match first {
                Msg::Append(p, a) => batch.push((p, a)),
                Msg::Rotate(done) => rotate = Some(done),
            }
            let mut bytes = batch.first().map_or(0, |b| b.0.len());
            // Everything already waiting joins this commit; a rotation
            // waits for the appends before it.
            while bytes < GROUP_BYTES && rotate.is_none() {
                match rx.try_recv() {
                    Ok(Msg::Append(p, a)) => {
                        bytes += p.len();
                        batch.push((p, a));
                    }
                    Ok(Msg::Rotate(done)) => rotate = Some(done),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if batch.is_empty() {
                if let Some(done) = rotate.take() {
                    let _ = done.send(self.next_segment().map_err(|e| e.to_string()));
                }
                continue;
            }
            out.clear();
            for (payload, _) in &batch {
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
                out.extend_from_slice(payload);
            }
            let result = self.commit(&out).map_err(|e| e.to_string());
            if let Err(e) = &result {
                tracing::error!(target: "kiln_store", "WAL write failed: {e}");
            }
            for (_, ack) in batch.drain(..) {
                let _ = ack.send(result.clone());
            }
            if let Some(done) = rotate.take() {
                let _ = done.send(self.next_segment().map_err(|e| e.to_string()));
            }
        }
    }

    /// Begins the next segment unless the current one is empty; answers
    /// the number of the segment now being written.
    fn next_segment(&mut self) -> std::io::Result<u64> {
        if self.size > 0 {
            self.seq += 1;
            let path = segment_path(&self.dir, self.seq);
            self.file = OpenOptions::new().create(true).append(true).open(&path)?;
            File::open(&self.dir)?.sync_all()?;
            self.size = 0;
        }
        Ok(self.seq)
    }

    fn commit(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.torn {
            self.roll_back()?;
        }
        if self.size > 0 && self.size + bytes.len() as u64 > SEGMENT_BYTES {
            // The new file's directory entry is made durable too.
            self.next_segment()?;
        }
        match self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Part of the batch may be on disk: none of it was
                // acknowledged, and nothing may follow it.
                self.torn = true;
                if let Err(r) = self.roll_back() {
                    tracing::error!(target: "kiln_store", "WAL roll-back failed: {r}");
                }
                Err(e)
            }
        }
    }

    /// Cuts the segment back to its last acknowledged byte; if it cannot
    /// be cut, goes on in a new segment, leaving the torn bytes at the end
    /// of this one (where replay skips them).
    fn roll_back(&mut self) -> std::io::Result<()> {
        let cut = self
            .file
            .set_len(self.size)
            .and_then(|()| self.file.sync_data());
        if cut.is_err() {
            // next_segment starts a new file only after a non-empty one.
            self.size = self.size.max(1);
            self.next_segment()?;
        }
        self.torn = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn replays_in_order_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        {
            let wal = open(dir.path(), |_| panic!("empty log")).unwrap();
            rt.block_on(async {
                for i in 0..100u32 {
                    wal.append(i.to_le_bytes().repeat(i as usize + 1))
                        .await
                        .unwrap();
                }
            });
        }
        // A crash mid-record: half a header and garbage at the end.
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let mut seen = Vec::new();
        let wal = open(dir.path(), |r| seen.push(r.to_vec())).unwrap();
        assert_eq!(seen.len(), 100);
        for (i, r) in seen.iter().enumerate() {
            assert_eq!(r, &(i as u32).to_le_bytes().repeat(i + 1));
        }
        // Appending after the cut works and replays.
        rt.block_on(wal.append(b"after".to_vec())).unwrap();
        drop(wal);
        let mut last = None;
        open(dir.path(), |r| last = Some(r.to_vec())).unwrap();
        assert_eq!(last.as_deref(), Some(&b"after"[..]));
        // A flipped byte inside a record costs that record only.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[8 + 4 + 8 + 2] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let mut n = 0;
        let wal = open(dir.path(), |_| n += 1).unwrap();
        assert_eq!(n, 100, "every record but the corrupt one");
        assert_eq!(wal.replayed().skipped_bytes, 16);
    }

    /// Unmounts (lazily: the writer thread may still hold its file) on drop.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }

    /// A real full disk: the log on a 1 MiB tmpfs that a filler file has
    /// nearly filled. Appends fail with ENOSPC (the first one short, with
    /// part of its bytes on disk); once the filler is gone they succeed
    /// again; replay gives back exactly the acknowledged records, in
    /// order, and finds no torn bytes among them (each failure was rolled
    /// back before the next write).
    #[test]
    fn a_full_disk_loses_nothing_acknowledged() {
        let mnt = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(mnt.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "this test mounts a 1 MiB tmpfs to fill it for real: it needs root (CI runs as root)"
        );
        let _mounted = Mounted(mnt.path().to_path_buf());
        let filler = mnt.path().join("filler");
        std::fs::write(&filler, vec![0u8; 700 << 10]).unwrap();
        let dir = mnt.path().join("wal");
        let rt = runtime();
        let wal = open(&dir, |_| panic!("empty log")).unwrap();
        let (mut acked, mut failed) = (Vec::new(), 0);
        // ~32 records fit beside the filler; once it is gone, room for ~69
        // more: 90 in all fill the disk once.
        for i in 0..90u32 {
            // 10,006 bytes: never a multiple of the page, so a write that
            // meets the full disk is cut in the middle of a record.
            let rec = i.to_le_bytes().repeat(2500)[..9998].to_vec();
            match rt.block_on(wal.append(rec.clone())) {
                Ok(()) => acked.push(rec),
                Err(e) => {
                    assert!(e.to_string().contains("No space"), "{e}");
                    failed += 1;
                    if failed == 3 {
                        std::fs::remove_file(&filler).unwrap();
                    }
                }
            }
        }
        assert_eq!(failed, 3, "the disk filled, then had room again");
        assert!(acked.len() > 60, "{} acknowledged", acked.len());
        drop(wal);
        let mut seen = Vec::new();
        let wal = open(&dir, |r| seen.push(r.to_vec())).unwrap();
        assert_eq!(seen.len(), acked.len());
        assert!(seen == acked, "replay differs from what was acknowledged");
        assert_eq!(wal.replayed().skipped_bytes, 0, "{:?}", wal.replayed());
    }

    /// A corrupt record in an earlier segment costs only itself: the
    /// records after it, and the later segments, replay.
    #[test]
    fn a_corrupt_record_mid_segment_is_skipped_not_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        {
            let wal = open(dir.path(), |_| panic!("empty log")).unwrap();
            rt.block_on(async {
                for i in 0..10u32 {
                    wal.append(vec![i as u8; 100]).await.unwrap();
                }
                wal.rotate().await.unwrap();
                for i in 10..20u32 {
                    wal.append(vec![i as u8; 100]).await.unwrap();
                }
            });
        }
        // Flip a byte inside record 3 of the first segment.
        let seg = segment_path(dir.path(), 0);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[3 * 108 + 8 + 50] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let mut seen = Vec::new();
        let wal = open(dir.path(), |r| seen.push(r[0])).unwrap();
        let want: Vec<u8> = (0..20).filter(|&i| i != 3).collect();
        assert_eq!(seen, want);
        let r = wal.replayed();
        assert_eq!((r.records, r.skipped_bytes, r.cut_bytes), (19, 108, 0));
        // The first segment was left as it was.
        assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    }
}
