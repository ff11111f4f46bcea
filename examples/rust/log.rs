//! kv.log, the append-only log (examples/README.md, "Log format"): one
//! record per acknowledged SET with its length and a CRC-32C, so a torn
//! last record is found and cut away on open. Byte for byte the format of
//! kv-c (examples/c/kvlog.c), kv.py and kv-go.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasherDefault;
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use crate::hashing::crc32c;
use crate::hashing::Fnv;

pub const LOG_FILE: &str = "kv.log";
pub const COMPACT_FILE: &str = "kv.log.compact";
/// Keys and values: 1 to this many printable ASCII bytes (0x21..0x7e).
pub const MAX_ITEM: usize = 256;
/// Compaction is due at open once the log holds this many records and at
/// least twice as many as the table has keys.
pub const COMPACT_MIN_RECORDS: u64 = 65_536;

/// `body_len` and `crc`, both u32.
const HEADER: usize = 8;
/// op (u8), generation (u64), key_len and value_len (u16 each).
const BODY_FIXED: usize = 13;
const MIN_BODY: usize = BODY_FIXED + 2;
const MAX_BODY: usize = BODY_FIXED + 2 * MAX_ITEM;
const OP_SET: u8 = 1;

/// Key -> value, as replayed from the log.
pub type Table = HashMap<Vec<u8>, Vec<u8>, BuildHasherDefault<Fnv>>;

/// Whether `item` may be a key or a value.
pub fn valid_item(item: &[u8]) -> bool {
    (1..=MAX_ITEM).contains(&item.len()) && item.iter().all(|&b| (0x21..=0x7e).contains(&b))
}

/// Append one SET record to `out`. `key` and `value` are valid items.
pub fn encode_record(out: &mut Vec<u8>, generation: u64, key: &[u8], value: &[u8]) {
    let body_len = BODY_FIXED + key.len() + value.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, once the body is there
    out.push(OP_SET);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32c(&out[start + HEADER..]);
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Whether a log of `records` records holding `keys` keys is to be compacted.
pub fn compaction_due(records: u64, keys: usize) -> bool {
    records >= COMPACT_MIN_RECORDS && records / 2 >= keys as u64
}

fn u16_at(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The valid records at the start of `buf` (the log's bytes from offset
/// `base`) into `table`, later ones winning: (their length, their count).
/// A torn or corrupt record ends them; one whose CRC holds but whose
/// content this format does not allow is an error (another format).
fn replay(buf: &[u8], base: u64, table: &mut Table) -> Result<(usize, u64), String> {
    let (mut off, mut count) = (0usize, 0u64);
    while buf.len() - off >= HEADER {
        let body_len = u32_at(buf, off) as usize;
        if !(MIN_BODY..=MAX_BODY).contains(&body_len) || buf.len() - off - HEADER < body_len {
            break; // a torn or zero-filled tail
        }
        let body = &buf[off + HEADER..off + HEADER + body_len];
        if crc32c(body) != u32_at(buf, off + 4) {
            break; // corrupt: cut here
        }
        let (key_len, value_len) = (u16_at(body, 9), u16_at(body, 11));
        let key = body.get(BODY_FIXED..BODY_FIXED + key_len).unwrap_or(&[]);
        let value = body.get(BODY_FIXED + key_len..).unwrap_or(&[]);
        if body[0] != OP_SET
            || body_len != BODY_FIXED + key_len + value_len
            || !valid_item(key)
            || !valid_item(value)
        {
            return Err(format!(
                "record at offset {} has a valid checksum but is not a SET record of this \
                 format (op {}, key {key_len} bytes, value {value_len} bytes): refusing to open",
                base + off as u64,
                body[0]
            ));
        }
        match table.get_mut(key) {
            Some(old) => {
                old.clear();
                old.extend_from_slice(value);
            }
            None => {
                table.insert(key.to_vec(), value.to_vec());
            }
        }
        off += HEADER + body_len;
        count += 1;
    }
    Ok((off, count))
}

/// Why a file's records could not be replayed.
enum ReplayError {
    /// It could not be read (or stat'ed).
    Unreadable(String),
    /// A record of another format: never to be served or cut.
    OtherFormat(String),
}

/// What [`replay_file`] found.
struct Replayed {
    /// The file's size when read.
    size: u64,
    /// The end of the last valid record.
    valid_end: u64,
    records: u64,
}

/// Replay `file`'s records from byte `from` (the end of a valid record) to
/// its current end into `table`.
fn replay_file(
    file: &File,
    path: &Path,
    from: u64,
    table: &mut Table,
) -> Result<Replayed, ReplayError> {
    let unreadable = |what: &str, e: io::Error| {
        ReplayError::Unreadable(format!("cannot {what} {}: {e}", path.display()))
    };
    let size = file.metadata().map_err(|e| unreadable("stat", e))?.len();
    if size <= from {
        return Ok(Replayed {
            size,
            valid_end: from,
            records: 0,
        });
    }
    let mut buf = vec![0u8; (size - from) as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], from + got as u64) {
            Ok(0) => break, // it shrank under us: parse what was read
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(unreadable("read", e)),
        }
    }
    let (valid, records) = replay(&buf[..got], from, table).map_err(ReplayError::OtherFormat)?;
    Ok(Replayed {
        size,
        valid_end: from + valid as u64,
        records,
    })
}

/// What a successor's preload read, for [`Log::open`] to go on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preload {
    dev: u64,
    ino: u64,
    /// The end of the last valid record read.
    end: u64,
    pub records: u64,
}

/// Why a preload read nothing.
#[derive(Debug)]
pub enum PreloadError {
    /// The log could not be opened or read: the open after the lock decides.
    Unreadable(String),
    /// A record of another format: fatal, as on open.
    OtherFormat(String),
}

/// A successor's warm-up before the handoff begins: replay `dir`'s log as
/// it is now into `table`, read-only and without the lock (the incumbent
/// still appends; nothing is created or cut). None when there is no log
/// yet. On an error `table` is emptied.
pub fn preload(dir: &Path, table: &mut Table) -> Result<Option<Preload>, PreloadError> {
    let path = dir.join(LOG_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PreloadError::Unreadable(format!(
                "cannot open {}: {e}",
                path.display()
            )))
        }
    };
    let identity = file.metadata().map(|m| (m.dev(), m.ino()));
    let replayed = identity
        .map_err(|e| ReplayError::Unreadable(format!("cannot stat {}: {e}", path.display())))
        .and_then(|identity| Ok((identity, replay_file(&file, &path, 0, table)?)));
    match replayed {
        Ok(((dev, ino), replayed)) => Ok(Some(Preload {
            dev,
            ino,
            end: replayed.valid_end,
            records: replayed.records,
        })),
        Err(e) => {
            table.clear();
            Err(match e {
                ReplayError::Unreadable(reason) => PreloadError::Unreadable(reason),
                ReplayError::OtherFormat(reason) => PreloadError::OtherFormat(reason),
            })
        }
    }
}

/// Why an append failed.
#[derive(Debug)]
pub enum AppendError {
    /// Nothing was written (a partial record was cut back).
    Failed(io::Error),
    /// A partial record could not be cut back: the process must exit.
    CannotCutBack(io::Error),
}

/// Why a compaction failed.
#[derive(Debug)]
pub enum CompactError {
    /// Before the rename: kv.log is as it was, the temporary file removed.
    Kept(String),
    /// The directory fsync after the rename: the caller must not serve.
    Fatal(String),
}

/// An open log, appended to only while the data-dir lock is held.
pub struct Log {
    file: File,
    dir: PathBuf,
    path: PathBuf,
    /// Bytes of valid records.
    size: u64,
    /// Valid records: the revision announced to the supervisor.
    records: u64,
    /// Appended since the last sync.
    dirty: bool,
}

/// A log just opened, and what opening it did.
pub struct Opened {
    pub log: Log,
    /// Bytes of torn or corrupt tail cut away.
    pub truncated: u64,
    /// The preloaded records kept (None: there was no preload, or the file
    /// changed under it and everything was replayed).
    pub kept_preload: Option<u64>,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_all(file: &mut File, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match file.write(bytes) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "wrote nothing")),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Log {
    /// Open (creating) `dir`'s log and replay every valid record into
    /// `table` (later records win), going on from `preload` when the file
    /// is the one preloaded and still holds every byte it read; otherwise
    /// `table` is emptied and everything replayed. A torn or corrupt tail
    /// is cut away and the cut fsynced.
    pub fn open(
        dir: &Path,
        table: &mut Table,
        preload: Option<&Preload>,
    ) -> Result<Opened, String> {
        // A compaction that died before its rename: kv.log is whole without it.
        let stale = dir.join(COMPACT_FILE);
        match fs::remove_file(&stale) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(format!("cannot remove a stale {}: {e}", stale.display()))
            }
            _ => {}
        }
        let path = dir.join(LOG_FILE);
        let opened = OpenOptions::new().read(true).append(true).open(&path);
        let (file, created) = match opened {
            Ok(file) => (file, false),
            Err(e) if e.kind() == ErrorKind::NotFound => OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
                .map(|file| (file, true))
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        if created {
            file.sync_all()
                .and_then(|()| sync_dir(dir))
                .map_err(|e| format!("cannot fsync new {}: {e}", path.display()))?;
        }
        // The writer only appends and only ever cuts an incomplete record,
        // so the bytes up to the preload's end are unchanged.
        let kept = preload.filter(|p| {
            file.metadata()
                .is_ok_and(|m| m.dev() == p.dev && m.ino() == p.ino && m.len() >= p.end)
        });
        let (from, mut records) = match kept {
            Some(p) => (p.end, p.records),
            None => {
                table.clear();
                (0, 0)
            }
        };
        let replayed = replay_file(&file, &path, from, table).map_err(|e| match e {
            ReplayError::Unreadable(reason) | ReplayError::OtherFormat(reason) => reason,
        })?;
        records += replayed.records;
        let truncated = replayed.size - replayed.valid_end;
        if truncated > 0 {
            file.set_len(replayed.valid_end)
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot truncate the torn tail of {}: {e}", path.display()))?;
        }
        Ok(Opened {
            log: Log {
                file,
                dir: dir.to_owned(),
                path,
                size: replayed.valid_end,
                records,
                dirty: false,
            },
            truncated,
            kept_preload: kept.map(|p| p.records),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Append one SET record; durable only after [`sync`](Log::sync).
    pub fn append(&mut self, generation: u64, key: &[u8], value: &[u8]) -> Result<(), AppendError> {
        let mut record = Vec::with_capacity(HEADER + MAX_BODY);
        encode_record(&mut record, generation, key, value);
        if let Err(e) = write_all(&mut self.file, &record) {
            // Never leave a partial record mid-log: the next open would cut
            // every later record away with it.
            return match self.file.set_len(self.size) {
                Ok(()) => Err(AppendError::Failed(e)),
                Err(cut) => Err(AppendError::CannotCutBack(cut)),
            };
        }
        self.size += record.len() as u64;
        self.records += 1;
        self.dirty = true;
        Ok(())
    }

    /// fdatasync if anything was appended since the last sync.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// fsync and close.
    pub fn close(self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Rewrite the log as one record per key of `table` (the table it was
    /// replayed into) stamped with `generation`: kv.log.compact, fsync,
    /// rename over kv.log, fsync the directory. Appends then go to the new
    /// file.
    pub fn compact(&mut self, table: &Table, generation: u64) -> Result<(), CompactError> {
        let tmp = self.dir.join(COMPACT_FILE);
        let written = write_compaction(&tmp, table, generation)
            .and_then(|(file, size)| fs::rename(&tmp, &self.path).map(|()| (file, size)));
        let (file, size) = written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CompactError::Kept(format!("{}: {e}", tmp.display()))
        })?;
        self.file = file;
        self.size = size;
        self.records = table.len() as u64;
        self.dirty = false;
        sync_dir(&self.dir).map_err(|e| {
            CompactError::Fatal(format!(
                "cannot fsync {} after renaming the compacted log: {e}",
                self.dir.display()
            ))
        })
    }
}

/// Write `table` to `path` as records and fsync it: the file, its size.
fn write_compaction(path: &Path, table: &Table, generation: u64) -> io::Result<(File, u64)> {
    const CHUNK: usize = 1 << 16;
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        // std refuses O_APPEND with O_TRUNC: cut a leftover by hand.
        .truncate(false)
        .mode(0o644)
        .open(path)?;
    file.set_len(0)?;
    let (mut buf, mut size) = (Vec::with_capacity(CHUNK + HEADER + MAX_BODY), 0u64);
    for (key, value) in table {
        encode_record(&mut buf, generation, key, value);
        if buf.len() >= CHUNK {
            write_all(&mut file, &buf)?;
            size += buf.len() as u64;
            buf.clear();
        }
    }
    write_all(&mut file, &buf)?;
    size += buf.len() as u64;
    file.sync_all()?;
    Ok((file, size))
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
