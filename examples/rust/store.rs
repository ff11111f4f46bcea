//! The table and its log: answering requests, opening (going on from a
//! preload) and compacting.

use std::path::PathBuf;
use std::time::Instant;

use crate::log::{compaction_due, AppendError, CompactError, Log, Preload, Table};
use crate::protocol::{parse, Command};
use crate::{fatal, say};

pub struct Store {
    pub data_dir: PathBuf,
    pub table: Table,
    /// None before the first open, and after a resume that could not reopen it.
    pub log: Option<Log>,
    /// What a successor's preload read, until the open after the lock.
    pub preload: Option<Preload>,
    /// The lock generation writes are stamped with (the fencing token).
    pub generation: u64,
}

impl Store {
    pub fn new(data_dir: PathBuf) -> Store {
        Store {
            data_dir,
            table: Table::default(),
            log: None,
            preload: None,
            generation: 0,
        }
    }

    pub fn records(&self) -> u64 {
        self.log.as_ref().map_or(0, Log::records)
    }

    /// The answer to one request line, without its `\n`. A SET is appended,
    /// not yet durable: the loop's group commit syncs before it is sent.
    pub fn answer(&mut self, line: &[u8]) -> Vec<u8> {
        match parse(line) {
            Err(reason) => reason.as_bytes().to_vec(),
            Ok(Command::Ping) => format!("PONG {} rust", std::process::id()).into_bytes(),
            Ok(Command::Get(key)) => match self.table.get(key) {
                Some(value) => [b"VALUE ".as_slice(), value].concat(),
                None => b"NOTFOUND".to_vec(),
            },
            Ok(Command::Set(key, value)) => {
                let Some(log) = self.log.as_mut() else {
                    return b"ERR write failed: the log is closed".to_vec();
                };
                match log.append(self.generation, key, value) {
                    Ok(()) => {}
                    Err(AppendError::Failed(e)) => {
                        return format!("ERR write failed: {e}").into_bytes()
                    }
                    Err(AppendError::CannotCutBack(e)) => fatal(&format!(
                        "cannot cut a failed write out of {}: {e}",
                        log.path().display()
                    )),
                }
                self.table.insert(key.to_vec(), value.to_vec());
                format!("OK {}", self.generation).into_bytes()
            }
        }
    }

    /// Make every write so far durable; a failed fsync ends the process at
    /// once, before any answer leaves.
    pub fn sync(&mut self) {
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.sync() {
                fatal(&format!("fsync {}: {e}", log.path().display()));
            }
        }
    }

    /// Open the log (going on from a preload) and compact it when due,
    /// stamping compacted records with `generation`, the one now held.
    pub fn open(&mut self, generation: u64) -> Result<(), String> {
        self.generation = generation;
        let preload = self.preload.take();
        let opened = Log::open(&self.data_dir, &mut self.table, preload.as_ref())?;
        let mut log = opened.log;
        match (preload, opened.kept_preload) {
            (Some(_), Some(kept)) => say(&format!(
                "kept {kept} preloaded record(s), replayed {} appended since",
                log.records() - kept
            )),
            (Some(_), None) => say(&format!(
                "the log changed under the preload: replayed all {} record(s)",
                log.records()
            )),
            (None, _) => {}
        }
        if opened.truncated > 0 {
            say(&format!(
                "truncated a torn tail of {} bytes from {}",
                opened.truncated,
                log.path().display()
            ));
        }
        if compaction_due(log.records(), self.table.len()) {
            let (before, started) = (log.records(), Instant::now());
            match log.compact(&self.table, generation) {
                Ok(()) => say(&format!(
                    "compacted the log: {before} record(s) -> {} in {} ms",
                    log.records(),
                    started.elapsed().as_millis()
                )),
                Err(CompactError::Kept(reason)) => say(&format!(
                    "compaction failed (the log is kept as it is): {reason}"
                )),
                Err(CompactError::Fatal(reason)) => return Err(reason),
            }
        }
        self.log = Some(log);
        Ok(())
    }

    /// fsync and close the log, if open.
    pub fn close(&mut self) {
        if let Some(log) = self.log.take() {
            if let Err(e) = log.close() {
                say(&format!("closing the log: {e}"));
            }
        }
    }
}
