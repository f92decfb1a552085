//! The write-ahead log: what the server acknowledged is on disk first.
//! Appends from every request go to one writer thread, which writes what
//! has gathered and syncs once for all of it (group commit), then tells
//! each waiting request. Records carry a length and a CRC, so a record
//! torn by a crash is found on replay, cut off, and everything before it
//! kept.
//!
//! Segment files `wal/NNNNNNNN.wal`; a record is
//! `[len: u32 LE][crc32 of payload: u32 LE][payload]`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use crate::Error;

/// A segment is closed and a new one begun past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record accepted (and read back).
pub const MAX_RECORD: usize = 256 << 20;
/// Appends waiting for the writer, at most; more wait for room.
const QUEUE: usize = 1024;
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
    for (_, path) in &segments {
        replay_segment(path, &mut replay)?;
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
    };
    std::thread::Builder::new()
        .name("kiln-wal".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| Error::io(dir, e))?;
    Ok(Wal {
        tx,
        dir: dir.to_path_buf(),
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

/// Replays one segment; a torn or corrupt tail is cut off (logged) and the
/// records before it kept.
fn replay_segment(path: &Path, replay: &mut impl FnMut(&[u8])) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut good = 0u64;
    let mut head = [0u8; 8];
    let mut buf = Vec::new();
    loop {
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(Error::io(path, e)),
        }
        let n = u32::from_le_bytes(head[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().unwrap_or_default());
        if n > MAX_RECORD || good + 8 + n as u64 > len {
            break;
        }
        buf.resize(n, 0);
        if r.read_exact(&mut buf).is_err() || crc32fast::hash(&buf) != crc {
            break;
        }
        replay(&buf);
        good += 8 + n as u64;
    }
    if good < len {
        tracing::warn!(
            target: "kiln_store",
            "{}: cutting {} bytes of a torn or corrupt record at offset {good}",
            path.display(),
            len - good
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        f.set_len(good).map_err(|e| Error::io(path, e))?;
        f.sync_all().map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

struct Writer {
    dir: PathBuf,
    file: File,
    seq: u64,
    size: u64,
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
        if self.size > 0 && self.size + bytes.len() as u64 > SEGMENT_BYTES {
            // The new file's directory entry is made durable too.
            self.next_segment()?;
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.size += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_in_order_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
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
        // A flipped byte inside a record stops the replay there.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[8 + 4 + 8 + 2] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let mut n = 0;
        open(dir.path(), |_| n += 1).unwrap();
        assert_eq!(n, 1, "only the record before the corrupt one");
    }
}
