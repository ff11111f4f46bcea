//! The key-value service of examples/README.md, as far as the comparison
//! benchmark needs it, for the services written on other handoff libraries
//! (bench-beyond-kv). Same line protocol (`SET`, `GET`, `PING`), same
//! durability (a write is answered `OK` only after the log is fsynced, by a
//! group commit; a value is visible to `GET` only once durable), same drain
//! (answer what was received, then close each connection gracefully).
//!
//! The log is kv.log of examples/README.md (the same records, CRC-32C, torn
//! tail cut away on open), so that every service in the comparison replays
//! the same bytes when it takes over, the same way as kv-c
//! (examples/c/kvlog.c): a successor preloads the log read-only before its
//! handshake ([`preload`]) and, once it holds the lock, replays only what
//! was appended since ([`Kv::open`]), and compacts it there when it is
//! mostly overwritten records; the CRC-32C uses the SSE4.2
//! instruction when the CPU has it; a table item (key and value) is one
//! allocation, hashed with FNV-1a. The generation written and answered is one more than the
//! highest one in the log when the process opened it.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "../../examples/rust/hashing.rs"]
mod hashing;
use hashing::{crc32c, Fnv};

const LOG_FILE: &str = "kv.log";
const COMPACT_FILE: &str = "kv.log.compact";
/// Compaction (examples/README.md): at open, once the log holds this many
/// records and at least twice as many as the table has keys.
const COMPACT_MIN_RECORDS: u64 = 65_536;
/// How long a draining incumbent waits for the first request of a
/// connection that has sent nothing yet (as the C service).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);
/// How long a gracefully closed connection is read and discarded.
const LINGER: Duration = Duration::from_millis(500);
const MAX_LINE: usize = 1024;

/// A log line to append, and where to send the outcome once it is durable.
struct Write1 {
    key: String,
    value: String,
    done: Sender<Result<(), String>>,
}

struct Gate {
    accepting: bool,
    draining: Option<Instant>,
    quit: bool,
    /// Connections still reading or answering requests (not lingering).
    active: usize,
}

/// The service: table, log writer, accept loop, connection threads.
pub struct Kv {
    program: &'static str,
    data_dir: PathBuf,
    map: RwLock<Table>,
    log: Mutex<Option<File>>,
    records: AtomicU64,
    generation: u64,
    writes: Mutex<Sender<Write1>>,
    gate: Mutex<Gate>,
    changed: Condvar,
}

/// One line on stderr, written with one write(2): the generations of a
/// handoff share the pipe that benches/compare reads, and `eprintln!`
/// writes a line in pieces that theirs could come between.
pub fn say(program: &str, message: std::fmt::Arguments<'_>) {
    let line = format!("{program}[{}] {message}\n", std::process::id());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn fail(program: &str, what: &str, error: impl std::fmt::Display) -> ! {
    say(program, format_args!("fatal: {what}: {error}"));
    std::process::exit(1)
}

impl Kv {
    /// Open and replay the log in `data_dir` (the caller holds the lock),
    /// going on from `preload` (a successor's, see [`preload`]) if the log
    /// is still the file it read.
    pub fn open(
        program: &'static str,
        data_dir: &Path,
        preload: Option<Preload>,
    ) -> std::io::Result<Arc<Kv>> {
        let (log, replayed) = open_log(program, data_dir, preload)?;
        let (sender, receiver) = channel();
        let kv = Arc::new(Kv {
            program,
            data_dir: data_dir.to_path_buf(),
            map: RwLock::new(replayed.map),
            log: Mutex::new(Some(log)),
            records: AtomicU64::new(replayed.records),
            generation: replayed.generation + 1,
            writes: Mutex::new(sender),
            gate: Mutex::new(Gate {
                accepting: true,
                draining: None,
                quit: false,
                active: 0,
            }),
            changed: Condvar::new(),
        });
        let writer = Arc::clone(&kv);
        std::thread::spawn(move || writer.write_loop(receiver));
        Ok(kv)
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::SeqCst)
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The drain hook: stop accepting, let every connection answer what it
    /// has received and close, then fsync. Returns the connections left.
    pub fn drain(&self, budget: Duration) -> u32 {
        let deadline = Instant::now() + budget;
        let mut gate = self.gate();
        say(
            self.program,
            format_args!("draining {} connection(s)", gate.active),
        );
        gate.accepting = false;
        gate.draining = Some(Instant::now());
        self.changed.notify_all();
        while gate.active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            gate = self
                .changed
                .wait_timeout(gate, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let left = gate.active as u32;
        drop(gate);
        if let Some(log) = self.log.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = log.sync_all();
        }
        left
    }

    /// The seal hook: fsync and close the log; the revision.
    pub fn seal(&self) -> std::io::Result<u64> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = log.take() {
            file.sync_all()?;
        }
        let records = self.records();
        say(self.program, format_args!("sealed at revision {records}"));
        Ok(records)
    }

    /// The resume hook: reopen the log if sealed, accept again.
    pub fn resume(&self) -> std::io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.is_none() {
            *log = Some(
                OpenOptions::new()
                    .append(true)
                    .open(self.data_dir.join(LOG_FILE))?,
            );
        }
        drop(log);
        let mut gate = self.gate();
        gate.accepting = true;
        gate.draining = None;
        self.changed.notify_all();
        say(
            self.program,
            format_args!("resumed after an aborted handoff"),
        );
        Ok(())
    }

    /// Stop for good: end the accept loop.
    pub fn quit(&self) {
        let mut gate = self.gate();
        gate.quit = true;
        gate.accepting = false;
        self.changed.notify_all();
    }

    /// Run the accept loop on its own thread until `quit`.
    pub fn spawn_accept_loop(self: &Arc<Self>, listener: TcpListener) -> JoinHandle<()> {
        let kv = Arc::clone(self);
        std::thread::spawn(move || kv.accept_loop(&listener))
    }

    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        let fd = listener.as_raw_fd();
        // The listener's file status flags are shared with the other
        // generations (and the reference successor clears O_NONBLOCK), so a
        // blocking accept is bounded by a receive timeout instead: accept(2)
        // honours SO_RCVTIMEO.
        set_rcvtimeo(fd, Duration::from_millis(20));
        loop {
            {
                let mut gate = self.gate();
                while !gate.accepting && !gate.quit {
                    gate = self.changed.wait(gate).unwrap_or_else(|p| p.into_inner());
                }
                if gate.quit {
                    return;
                }
            }
            if !readable(fd, 20) {
                continue;
            }
            let mut gate = self.gate();
            if gate.quit {
                return;
            }
            if !gate.accepting {
                continue;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    gate.active += 1;
                    drop(gate);
                    let kv = Arc::clone(self);
                    std::thread::spawn(move || kv.serve_connection(stream));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock
                            | ErrorKind::TimedOut
                            | ErrorKind::Interrupted
                            | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    drop(gate);
                    say(self.program, format_args!("accept: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn serve_connection(&self, stream: TcpStream) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let lingering = self.serve_requests(&stream);
        {
            let mut gate = self.gate();
            gate.active -= 1;
            self.changed.notify_all();
        }
        if lingering {
            linger(&stream);
        }
    }

    /// Answer requests until the client closes or a drain ends the
    /// connection; whether to close it gracefully (linger).
    fn serve_requests(&self, stream: &TcpStream) -> bool {
        let fd = stream.as_raw_fd();
        let mut buffer: Vec<u8> = Vec::with_capacity(4096);
        let mut answered = 0u64;
        let mut chunk = [0u8; 4096];
        loop {
            // Every whole line received gets its answer, in order.
            let mut answers = String::new();
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                answers.push_str(&self.answer(line));
                answers.push('\n');
                answered += 1;
            }
            if buffer.len() > MAX_LINE {
                buffer.clear();
                answers.push_str("ERR line too long (at most 1024 bytes)\n");
            }
            if !answers.is_empty() && (&*stream).write_all(answers.as_bytes()).is_err() {
                return false;
            }
            let draining = self.gate().draining;
            if let Some(since) = draining {
                // Drained: done once answered; a connection that has sent
                // nothing whole yet gets the grace for its first request.
                if answered > 0 || since.elapsed() >= FIRST_REQUEST_GRACE {
                    return true;
                }
            }
            if !readable(fd, 10) {
                continue;
            }
            match (&*stream).read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    fn answer(&self, line: &[u8]) -> String {
        let Ok(line) = std::str::from_utf8(line) else {
            return "ERR invalid bytes".into();
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let valid = |s: &str| {
            !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
        };
        match fields.as_slice() {
            [""] => "ERR empty line".into(),
            ["PING"] => format!("PONG {} {}", std::process::id(), self.program),
            ["GET", key] if valid(key) => {
                match self.map.read().unwrap_or_else(|p| p.into_inner()).get(*key) {
                    Some(item) => format!("VALUE {}", item.value()),
                    None => "NOTFOUND".into(),
                }
            }
            ["SET", key, value] if valid(key) && valid(value) => {
                let (done, outcome) = channel();
                let sent = self
                    .writes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .send(Write1 {
                        key: key.to_string(),
                        value: value.to_string(),
                        done,
                    });
                if sent.is_err() {
                    return "ERR write failed: writer gone".into();
                }
                match outcome.recv() {
                    Ok(Ok(())) => format!("OK {}", self.generation),
                    Ok(Err(e)) => format!("ERR write failed: {e}"),
                    Err(_) => "ERR write failed: writer gone".into(),
                }
            }
            ["GET" | "SET", ..] => "ERR wrong number of arguments or invalid field".into(),
            _ => "ERR unknown command".into(),
        }
    }

    /// Group commit: everything queued is written, fsynced once, made
    /// visible, then answered.
    fn write_loop(&self, receiver: Receiver<Write1>) {
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            while let Ok(more) = receiver.try_recv() {
                batch.push(more);
            }
            let mut text = Vec::new();
            for w in &batch {
                encode(&mut text, self.generation, &w.key, &w.value);
            }
            let outcome = {
                let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                match log.as_mut() {
                    None => Err("the log is sealed".to_string()),
                    Some(file) => {
                        let before = file.metadata().map(|m| m.len()).unwrap_or(0);
                        match file.write_all(&text) {
                            Ok(()) => match file.sync_data() {
                                Ok(()) => Ok(()),
                                // A failed fsync: the writes may be lost; stop.
                                Err(e) => fail(self.program, "fsync", e),
                            },
                            Err(e) => {
                                // Cut a partial append back at once.
                                if let Err(cut) = file.set_len(before) {
                                    fail(self.program, "cutting back a failed append", cut);
                                }
                                Err(e.to_string())
                            }
                        }
                    }
                }
            };
            if outcome.is_ok() {
                let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
                for w in &batch {
                    map.replace(Item::new(&w.key, &w.value));
                }
                self.records.fetch_add(batch.len() as u64, Ordering::SeqCst);
            }
            for w in batch {
                let _ = w.done.send(outcome.clone());
            }
        }
    }
}

/// One entry of the table: key and value in one allocation (as kv-c's
/// items), hashed and compared by the key, so that the table (a set of
/// items) is looked up with a `&str` key.
struct Item {
    bytes: Box<str>,
    key_len: usize,
}

impl Item {
    fn new(key: &str, value: &str) -> Item {
        let mut bytes = String::with_capacity(key.len() + value.len());
        bytes.push_str(key);
        bytes.push_str(value);
        Item {
            bytes: bytes.into_boxed_str(),
            key_len: key.len(),
        }
    }

    fn key(&self) -> &str {
        &self.bytes[..self.key_len]
    }

    fn value(&self) -> &str {
        &self.bytes[self.key_len..]
    }
}

impl Hash for Item {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Item) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Item {}

impl Borrow<str> for Item {
    fn borrow(&self) -> &str {
        self.key()
    }
}

/// The table: key to value; `replace` sets, `get(key)` reads.
type Table = HashSet<Item, BuildHasherDefault<Fnv>>;

/// One SET record of kv.log (examples/README.md): header (body length,
/// CRC-32C of the body), then op 1, generation, key and value lengths, key,
/// value.
fn encode(out: &mut Vec<u8>, generation: u64, key: &str, value: &str) {
    let mut body = Vec::with_capacity(13 + key.len() + value.len());
    body.push(1u8);
    body.extend_from_slice(&generation.to_le_bytes());
    body.extend_from_slice(&(key.len() as u16).to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// What the log holds: the table, the record count, the highest generation.
#[derive(Default)]
struct Replayed {
    map: Table,
    records: u64,
    generation: u64,
}

/// Whether a key or value of a record is allowed: 1 to 256 bytes, each
/// printable ASCII other than space.
fn valid_item(item: &[u8]) -> bool {
    (1..=256).contains(&item.len()) && item.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Replay `bytes`, the log from offset `base`, into `into` (later records
/// win) up to the first record that is not whole and valid: the length of
/// the valid records at its start. A record with a good CRC but content
/// this format does not allow is an error (another format, not a torn
/// write).
fn replay(bytes: &[u8], base: u64, into: &mut Replayed) -> std::io::Result<u64> {
    // Into an empty table, newest first and each key once (as kv-c): most
    // records of a long log are overwritten again by later ones, and a
    // lookup costs less than an allocation and a free.
    let newest_first = into.map.is_empty();
    let mut valid = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        if !(15..=525).contains(&len) || bytes.len() - at - 8 < len {
            break; // a torn (or zero-filled) tail
        }
        let body = &bytes[at + 8..at + 8 + len];
        if crc32c(body) != crc {
            break; // a corrupt tail
        }
        let generation = u64::from_le_bytes(body[1..9].try_into().unwrap());
        let key_len = u16::from_le_bytes(body[9..11].try_into().unwrap()) as usize;
        let value_len = u16::from_le_bytes(body[11..13].try_into().unwrap()) as usize;
        let item = &body[13..];
        if body[0] != 1
            || 13 + key_len + value_len != len
            || !valid_item(&item[..key_len])
            || !valid_item(&item[key_len..])
        {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "record at offset {} has a valid checksum but is not a SET record of \
                     this format (op {}, key {key_len} bytes, value {value_len} bytes)",
                    base + at as u64,
                    body[0]
                ),
            ));
        }
        // Printable ASCII (checked just above), so valid UTF-8.
        let item = std::str::from_utf8(item)
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
        if newest_first {
            valid.push((item, key_len));
        } else {
            into.map.replace(Item {
                bytes: item.into(),
                key_len,
            });
        }
        into.records += 1;
        into.generation = into.generation.max(generation);
        at += 8 + len;
    }
    for &(item, key_len) in valid.iter().rev() {
        if !into.map.contains(&item[..key_len]) {
            into.map.insert(Item {
                bytes: item.into(),
                key_len,
            });
        }
    }
    Ok(at as u64)
}

/// A successor's replay of the log made before its handshake, for
/// [`Kv::open`] to go on from: the file read (device, inode), the end of
/// its last valid record, and what the records up to there hold.
pub struct Preload {
    dev: u64,
    ino: u64,
    end: u64,
    replayed: Replayed,
}

/// A successor's warm-up before its handshake (examples/README.md,
/// "Lifecycle > Successor", step 1): replay the log as it is now, read-only
/// and without the lock, while the incumbent still serves and appends.
/// Nothing is created or cut (a torn or corrupt record just ends the
/// preload: it may be one being written). No log yet: nothing preloaded.
/// A log that cannot be read: no preload, said, and `Kv::open` replays it
/// all. A record of another format is fatal (exit 1, before the handshake).
pub fn preload(program: &str, data_dir: &Path) -> Option<Preload> {
    let started = Instant::now();
    let path = data_dir.join(LOG_FILE);
    let skip = |what: &str, e: std::io::Error| {
        say(
            program,
            format_args!(
                "no preload (the whole log is replayed after the lock): {what} {}: {e}",
                path.display()
            ),
        );
        None
    };
    let preload = match File::open(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return skip("cannot open", e),
        Ok(mut file) => {
            let metadata = match file.metadata() {
                Ok(metadata) => metadata,
                Err(e) => return skip("cannot stat", e),
            };
            let mut bytes = Vec::with_capacity(metadata.len() as usize);
            if let Err(e) = file.read_to_end(&mut bytes) {
                return skip("cannot read", e);
            }
            let mut replayed = Replayed::default();
            let end = replay(&bytes, 0, &mut replayed)
                .unwrap_or_else(|e| fail(program, "preloading the log", e));
            Some(Preload {
                dev: metadata.dev(),
                ino: metadata.ino(),
                end,
                replayed,
            })
        }
    };
    let records = preload.as_ref().map_or(0, |p| p.replayed.records);
    say(
        program,
        format_args!(
            "preloaded {records} record(s) in {} ms",
            started.elapsed().as_millis()
        ),
    );
    preload
}

/// Open (create) and replay the log: the file for appending and what it
/// holds. A torn or corrupt tail is cut away and the file fsynced. Given a
/// preload, goes on from it if the log is the file it read (same device
/// and inode) and still holds every byte it read: the log is only ever
/// appended to, and an append is only ever cut back to the end of a whole
/// record, so the bytes up to its end cannot have changed. Otherwise
/// everything is replayed.
fn open_log(
    program: &str,
    data_dir: &Path,
    preload: Option<Preload>,
) -> std::io::Result<(File, Replayed)> {
    std::fs::create_dir_all(data_dir)?;
    // A compaction that died before its rename: kv.log is whole without it.
    match std::fs::remove_file(data_dir.join(COMPACT_FILE)) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let path = data_dir.join(LOG_FILE);
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    if created {
        file.sync_all()?;
        sync_dir(data_dir)?;
    }
    let metadata = file.metadata()?;
    let preloaded = preload.is_some();
    let (mut replayed, from, kept) = match preload {
        Some(p)
            if p.dev == metadata.dev() && p.ino == metadata.ino() && metadata.len() >= p.end =>
        {
            let kept = p.replayed.records;
            (p.replayed, p.end, Some(kept))
        }
        _ => (Replayed::default(), 0, None),
    };
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(metadata.len().saturating_sub(from) as usize);
    file.read_to_end(&mut bytes)?;
    let end = from + replay(&bytes, from, &mut replayed)?;
    if end < from + bytes.len() as u64 {
        file.set_len(end)?;
        file.sync_all()?;
    }
    match kept {
        Some(kept) => say(
            program,
            format_args!(
                "kept {kept} preloaded record(s), replayed {} appended since",
                replayed.records - kept
            ),
        ),
        None if preloaded => say(
            program,
            format_args!(
                "the log changed under the preload: replayed all {} record(s)",
                replayed.records
            ),
        ),
        None => {}
    }
    if replayed.records >= COMPACT_MIN_RECORDS && replayed.records / 2 >= replayed.map.len() as u64
    {
        let started = Instant::now();
        let before = replayed.records;
        match compact(data_dir, &replayed.map, replayed.generation + 1) {
            Ok(compacted) => {
                file = compacted?;
                replayed.records = replayed.map.len() as u64;
                say(
                    program,
                    format_args!(
                        "compacted the log: {before} record(s) -> {} in {} ms",
                        replayed.records,
                        started.elapsed().as_millis()
                    ),
                );
            }
            Err(e) => say(
                program,
                format_args!("compaction failed (the log is kept as it is): {e}"),
            ),
        }
    }
    Ok((file, replayed))
}

/// fsync a directory, so that a file created or renamed in it survives a
/// power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Rewrite the log as one record per item of `map`: kv.log.compact,
/// fsync, rename over kv.log. Err: it failed before the rename (kv.log is
/// as it was, the temporary file removed). Ok(Err): the directory fsync
/// after the rename failed, which must stop the service (a power cut could
/// bring the old file back under appends made to the new one).
fn compact(
    data_dir: &Path,
    map: &Table,
    generation: u64,
) -> std::io::Result<std::io::Result<File>> {
    let temporary = data_dir.join(COMPACT_FILE);
    let written = (|| {
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&temporary)?;
        let mut bytes = Vec::with_capacity(1 << 16);
        for item in map {
            encode(&mut bytes, generation, item.key(), item.value());
            if bytes.len() >= 1 << 16 {
                file.write_all(&bytes)?;
                bytes.clear();
            }
        }
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, data_dir.join(LOG_FILE))?;
        Ok(file)
    })();
    match written {
        Ok(file) => Ok(sync_dir(data_dir).map(|()| file)),
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            Err(e)
        }
    }
}

/// Close gracefully: no more writes, read and discard what still arrives
/// for a while, then close (a request racing the close never turns into a
/// reset that destroys answers already sent).
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 1024];
    while Instant::now() < deadline {
        if !readable(stream.as_raw_fd(), 10) {
            continue;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn set_rcvtimeo(fd: RawFd, timeout: Duration) {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid timeval of the size passed, on a descriptor we hold.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// Whether `fd` is readable, waiting up to `timeout_ms`.
fn readable(fd: RawFd, timeout_ms: libc::c_int) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the count passed.
    let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    ready > 0 && pollfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}
