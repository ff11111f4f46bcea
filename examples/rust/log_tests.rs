//! kv.log's format and its cases (examples/README.md; the same as
//! examples/c/test_kvlog.c and examples/go/kvlog_test.go): real files in a
//! temporary directory.

use super::*;

fn record(generation: u64, key: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(&mut out, generation, key.as_bytes(), value.as_bytes());
    out
}

fn table_of(pairs: &[(&str, &str)]) -> Table {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn dir_with_log(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(LOG_FILE), bytes).unwrap();
    dir
}

fn open(dir: &Path, preload: Option<&Preload>, table: &mut Table) -> Opened {
    Log::open(dir, table, preload).unwrap()
}

fn log_len(dir: &Path) -> u64 {
    fs::metadata(dir.join(LOG_FILE)).unwrap().len()
}

fn append_raw(dir: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.join(LOG_FILE))
        .unwrap();
    file.write_all(bytes).unwrap();
}

/// `sets(tag, n)`: n records of distinct keys `tag0..`, generation 1.
fn sets(tag: &str, n: usize) -> (Vec<u8>, Table) {
    let mut bytes = Vec::new();
    let mut table = Table::default();
    for i in 0..n {
        let (key, value) = (format!("{tag}{i}"), format!("v{i}"));
        bytes.extend(record(1, &key, &value));
        table.insert(key.into_bytes(), value.into_bytes());
    }
    (bytes, table)
}

#[test]
fn the_crc_is_castagnoli() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
}

#[test]
fn records_are_the_worked_example_byte_for_byte() {
    let first = record(1, "foo", "bar");
    assert_eq!(
        first,
        [
            0x13, 0, 0, 0, 0x13, 0x7c, 0xe6, 0xda, 1, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 3, 0, b'f',
            b'o', b'o', b'b', b'a', b'r'
        ]
    );
    let second = record(2, "foo", "baz");
    assert_eq!(
        second,
        [
            0x13, 0, 0, 0, 0xa1, 0x22, 0x84, 0x41, 1, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 3, 0, b'f',
            b'o', b'o', b'b', b'a', b'z'
        ]
    );
}

#[test]
fn items_are_1_to_256_printable_bytes() {
    assert!(valid_item(b"a"));
    assert!(valid_item(&[b'~'; 256]));
    assert!(!valid_item(b""));
    assert!(!valid_item(&[b'a'; 257]));
    assert!(!valid_item(b"a b"));
    assert!(!valid_item(b"\x7f"));
}

#[test]
fn open_creates_the_log_and_appends_replay_later_ones_winning() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = Table::default();
    let mut opened = open(dir.path(), None, &mut table);
    assert_eq!((opened.log.records(), opened.truncated), (0, 0));
    assert!(dir.path().join(LOG_FILE).exists());
    opened.log.append(1, b"foo", b"bar").unwrap();
    opened.log.append(2, b"foo", b"baz").unwrap();
    opened.log.append(2, b"k", b"v").unwrap();
    opened.log.sync().unwrap();
    opened.log.close().unwrap();
    let mut expected = record(1, "foo", "bar");
    expected.extend(record(2, "foo", "baz"));
    expected.extend(record(2, "k", "v"));
    assert_eq!(fs::read(dir.path().join(LOG_FILE)).unwrap(), expected);

    let mut table = Table::default();
    let reopened = open(dir.path(), None, &mut table);
    assert_eq!(reopened.log.records(), 3);
    assert_eq!(table, table_of(&[("foo", "baz"), ("k", "v")]));
}

#[test]
fn a_torn_tail_is_cut_away() {
    let mut bytes = record(1, "foo", "bar");
    bytes.extend(record(2, "foo", "baz"));
    bytes.extend(&record(3, "foo", "qux")[..10]);
    let dir = dir_with_log(&bytes);
    let mut table = Table::default();
    let opened = open(dir.path(), None, &mut table);
    assert_eq!((opened.log.records(), opened.truncated), (2, 10));
    assert_eq!(table, table_of(&[("foo", "baz")]));
    assert_eq!(log_len(dir.path()), 54);
}

#[test]
fn a_zero_filled_or_corrupt_tail_is_cut_away() {
    for tail in [vec![0u8; 40], {
        let mut bad = record(2, "k", "v");
        let last = bad.len() - 1;
        bad[last] ^= 1; // the CRC no longer matches
        bad
    }] {
        let mut bytes = record(1, "foo", "bar");
        bytes.extend(&tail);
        let dir = dir_with_log(&bytes);
        let mut table = Table::default();
        let opened = open(dir.path(), None, &mut table);
        assert_eq!(opened.log.records(), 1);
        assert_eq!(opened.truncated, tail.len() as u64);
        assert_eq!(log_len(dir.path()), 27);
        assert_eq!(table, table_of(&[("foo", "bar")]));
    }
}

/// A record whose CRC holds but whose op is not SET.
fn other_format_record() -> Vec<u8> {
    let mut bytes = record(1, "foo", "bar");
    bytes[8] = 2;
    let crc = crc32c(&bytes[8..]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn a_record_of_another_format_is_refused_and_nothing_changes() {
    let mut bytes = record(1, "a", "b");
    bytes.extend(other_format_record());
    bytes.extend(&[1, 2, 3]);
    let dir = dir_with_log(&bytes);
    let mut table = Table::default();
    let refused = Log::open(dir.path(), &mut table, None).err().unwrap();
    assert!(refused.contains("offset 23"), "{refused}");
    assert!(refused.contains("refusing to open"), "{refused}");
    assert_eq!(fs::read(dir.path().join(LOG_FILE)).unwrap(), bytes);
    let mut table = Table::default();
    assert!(matches!(
        preload(dir.path(), &mut table),
        Err(PreloadError::OtherFormat(_))
    ));
    assert!(table.is_empty());
}

#[test]
fn preload_then_appends_then_open_keeps_the_preload() {
    let (first, mut expected) = sets("a", 50);
    let dir = dir_with_log(&first);
    let mut table = Table::default();
    let preloaded = preload(dir.path(), &mut table).unwrap().unwrap();
    assert_eq!(preloaded.records, 50);
    assert_eq!(table, expected);
    let (more, more_table) = sets("b", 7);
    append_raw(dir.path(), &more);
    expected.extend(more_table);
    let opened = open(dir.path(), Some(&preloaded), &mut table);
    assert_eq!(opened.kept_preload, Some(50));
    assert_eq!(opened.log.records(), 57);
    assert_eq!(table, expected);
}

#[test]
fn a_preload_of_a_replaced_or_shorter_file_is_replayed_from_the_start() {
    let (first, _) = sets("a", 20);
    for replace in [true, false] {
        let dir = dir_with_log(&first);
        let mut table = Table::default();
        let preloaded = preload(dir.path(), &mut table).unwrap().unwrap();
        let (second, expected) = sets("z", 3);
        if replace {
            // A compaction's rename: a new inode.
            let tmp = dir.path().join("new");
            fs::write(&tmp, &second).unwrap();
            fs::rename(&tmp, dir.path().join(LOG_FILE)).unwrap();
        } else {
            // Same inode, shorter than what the preload read.
            let file = OpenOptions::new()
                .write(true)
                .open(dir.path().join(LOG_FILE))
                .unwrap();
            file.set_len(0).unwrap();
            file.write_all_at(&second, 0).unwrap();
        }
        let opened = open(dir.path(), Some(&preloaded), &mut table);
        assert_eq!(opened.kept_preload, None);
        assert_eq!(opened.log.records(), 3);
        assert_eq!(table, expected, "replace: {replace}");
    }
}

#[test]
fn a_preloaded_torn_tail_completed_before_open_is_replayed() {
    let mut bytes = record(1, "a", "1");
    let whole = record(1, "b", "2");
    bytes.extend(&whole[..9]);
    let dir = dir_with_log(&bytes);
    let mut table = Table::default();
    let preloaded = preload(dir.path(), &mut table).unwrap().unwrap();
    assert_eq!(preloaded.records, 1);
    // Nothing was cut: the incumbent may be writing that record.
    assert_eq!(log_len(dir.path()), bytes.len() as u64);
    append_raw(dir.path(), &whole[9..]);
    let opened = open(dir.path(), Some(&preloaded), &mut table);
    assert_eq!((opened.kept_preload, opened.log.records()), (Some(1), 2));
    assert_eq!(opened.truncated, 0);
    assert_eq!(table, table_of(&[("a", "1"), ("b", "2")]));
}

#[test]
fn a_preload_without_a_log_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = Table::default();
    assert_eq!(preload(dir.path(), &mut table).unwrap(), None);
    assert!(!dir.path().join(LOG_FILE).exists());
    let missing = dir.path().join("not-made");
    assert_eq!(preload(&missing, &mut table).unwrap(), None);
    assert!(!missing.exists());
}

#[test]
fn a_preload_of_an_unreadable_log_is_not_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(LOG_FILE)).unwrap(); // read(2): EISDIR
    let mut table = Table::default();
    assert!(matches!(
        preload(dir.path(), &mut table),
        Err(PreloadError::Unreadable(_))
    ));
}

#[test]
fn compaction_is_due_at_65536_records_and_twice_the_keys() {
    assert!(!compaction_due(COMPACT_MIN_RECORDS - 1, 1));
    assert!(compaction_due(COMPACT_MIN_RECORDS, 1));
    assert!(compaction_due(COMPACT_MIN_RECORDS, 32_768));
    assert!(!compaction_due(COMPACT_MIN_RECORDS, 32_769));
}

#[test]
fn compaction_writes_one_record_per_key_to_a_new_file() {
    let mut bytes = Vec::new();
    for i in 0..1000 {
        bytes.extend(record(1, &format!("k{}", i % 10), &format!("v{i}")));
    }
    let dir = dir_with_log(&bytes);
    let inode = fs::metadata(dir.path().join(LOG_FILE)).unwrap().ino();
    let mut table = Table::default();
    let mut log = open(dir.path(), None, &mut table).log;
    log.compact(&table, 7).unwrap();
    assert_eq!(log.records(), 10);
    assert!(!dir.path().join(COMPACT_FILE).exists());
    assert_ne!(
        fs::metadata(dir.path().join(LOG_FILE)).unwrap().ino(),
        inode
    );
    // Appends go to the new file.
    log.append(8, b"new", b"one").unwrap();
    log.sync().unwrap();
    let compacted = fs::read(dir.path().join(LOG_FILE)).unwrap();
    let mut replayed = Table::default();
    let (valid, count) = replay(&compacted, 0, &mut replayed).unwrap();
    assert_eq!((valid, count), (compacted.len(), 11));
    let mut expected = table.clone();
    expected.insert(b"new".to_vec(), b"one".to_vec());
    assert_eq!(replayed, expected);
    assert_eq!(table[b"k3".as_slice()], b"v993");
    // Every compacted record carries the compacting generation.
    let first_generation = u64::from_le_bytes(compacted[9..17].try_into().unwrap());
    assert_eq!(first_generation, 7);
}

#[test]
fn a_failed_compaction_keeps_the_log_as_it_was() {
    let (bytes, expected) = sets("a", 5);
    let dir = dir_with_log(&bytes);
    let mut table = Table::default();
    let mut log = open(dir.path(), None, &mut table).log;
    // kv.log.compact cannot be opened for writing.
    fs::create_dir(dir.path().join(COMPACT_FILE)).unwrap();
    assert!(matches!(log.compact(&table, 2), Err(CompactError::Kept(_))));
    assert_eq!(log.records(), 5);
    assert_eq!(fs::read(dir.path().join(LOG_FILE)).unwrap(), bytes);
    log.append(2, b"after", b"it").unwrap();
    log.sync().unwrap();
    fs::remove_dir(dir.path().join(COMPACT_FILE)).unwrap();
    let mut reopened = Table::default();
    assert_eq!(open(dir.path(), None, &mut reopened).log.records(), 6);
    assert_eq!(reopened.len(), expected.len() + 1);
}

#[test]
fn open_removes_a_stale_compaction() {
    let (bytes, expected) = sets("a", 3);
    let dir = dir_with_log(&bytes);
    fs::write(dir.path().join(COMPACT_FILE), record(9, "x", "y")).unwrap();
    let mut table = Table::default();
    let opened = open(dir.path(), None, &mut table);
    assert_eq!(opened.log.records(), 3);
    assert_eq!(table, expected);
    assert!(!dir.path().join(COMPACT_FILE).exists());
}
