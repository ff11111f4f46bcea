package main

// The append-only log, in the format of examples/README.md (the same as
// kv-c's, so either can take over the other's data directory): one record
// per acknowledged SET, with its length and a CRC-32C, so that a torn last
// record is found and cut away on open. A log mostly made of overwrites is
// compacted on open (compactLog), so that replaying it stays short.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"io"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

const (
	logFile       = "kv.log"
	compactFile   = "kv.log.compact"
	recHeader     = 8  // body_len u32, crc u32
	recBodyFixed  = 13 // op u8, generation u64, key_len u16, value_len u16
	opSet         = 1
	maxItem       = 256
	minBodyLength = recBodyFixed + 2
	maxBodyLength = recBodyFixed + 2*maxItem
)

// The compaction policy of examples/README.md: a log is rewritten on open
// once it is long enough for its replay to matter and at least half of its
// records are overwritten ones.
const (
	compactMinRecords       = 65536
	compactMinRecordsPerKey = 2
)

// shouldCompact applies the policy to a log of records records whose
// replay left keys keys.
func shouldCompact(records uint64, keys int) bool {
	return records >= compactMinRecords && records >= compactMinRecordsPerKey*uint64(keys)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// validItem: a key or value is 1 to 256 printable ASCII bytes, no space.
func validItem(item []byte) bool {
	if len(item) < 1 || len(item) > maxItem {
		return false
	}
	for _, c := range item {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// kvLog is an open log. Appends are serialised by the caller (the
// server's table lock); durability waits may come from any goroutine and
// are served by group commit: one fdatasync covers every append made
// before it started.
type kvLog struct {
	path, dir string
	f         *os.File
	fd        int
	size      int64  // end of the last whole record
	records   uint64 // whole records: the revision
	truncated int64  // torn tail cut away by open
	// keptPreload: open went on from a preload (replaying only what was
	// appended after it) instead of replaying everything.
	keptPreload bool
	// removedStale: open removed a kv.log.compact left by a process that
	// died mid-compaction.
	removedStale bool

	sync    sync.Mutex
	synced  int64 // every byte before this is on disk
	syncing bool
	done    *sync.Cond
}

// logPreload is what preloadLog read, for openLog to go on from.
type logPreload struct {
	dev, ino uint64            // the file read
	end      int64             // end of the last valid record read
	records  uint64            // records replayed
	table    map[string]string // what they set
}

// preloadLog is a successor's warm-up, before the handoff begins: it
// replays the valid records of <dir>/kv.log as they are now, read-only and
// without the lock (the incumbent still appends; nothing is created or
// cut: a torn or corrupt record just ends the preload). No log yet is
// nothing to preload: nil, nil. A record with a good checksum but content
// this format does not allow is an error, as on open.
func preloadLog(dir string) (*logPreload, error) {
	path := filepath.Join(dir, logFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &unreadableLogError{fmt.Errorf("cannot open %s: %w", path, err)}
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, &unreadableLogError{fmt.Errorf("cannot stat %s: %w", path, err)}
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("cannot stat %s: no device and inode", path)
	}
	table, end, records, err := replayFrom(f, path, 0, info.Size(), nil)
	if err != nil {
		return nil, err
	}
	return &logPreload{
		dev: uint64(st.Dev), ino: uint64(st.Ino),
		end: end, records: records, table: table,
	}, nil
}

// openLog opens (creating) <dir>/kv.log, replays every valid record into a
// table (later records win) and cuts a torn or corrupt tail away. A record
// with a good checksum but content this format does not allow is another
// format: an error, and nothing is changed.
//
// Given a preload (nil: none), it goes on from it if the file is the one
// preloaded (same device and inode) and still holds every byte it read (at
// least pre.end long): the preload's table is kept and only the records
// after pre.end are replayed into it. The log is only ever appended to, and
// an append is only ever cut back to the end of a whole record, so the bytes
// before pre.end cannot have changed. Otherwise everything is replayed into
// a fresh table. Either way the preload is used up.
//
// Before anything else it removes a kv.log.compact left by a process that
// died mid-compaction: it was never renamed, so kv.log is whole. Whether to
// compact is the caller's decision (shouldCompact, compactLog).
func openLog(dir string, pre *logPreload) (*kvLog, map[string]string, error) {
	removedStale, err := removeStaleCompaction(dir)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, logFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	created := false
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o644)
		created = err == nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	l := &kvLog{path: path, dir: dir, f: f, fd: int(f.Fd()), removedStale: removedStale}
	l.done = sync.NewCond(&l.sync)
	table, err := l.load(created, pre)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return l, table, nil
}

func (l *kvLog) load(created bool, pre *logPreload) (map[string]string, error) {
	if created {
		if err := l.f.Sync(); err != nil {
			return nil, fmt.Errorf("cannot fsync new %s: %w", l.path, err)
		}
		if err := syncDir(l.dir); err != nil {
			return nil, fmt.Errorf("cannot fsync %s: %w", l.dir, err)
		}
	}
	info, err := l.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot stat %s: %w", l.path, err)
	}
	size := info.Size()
	var table map[string]string // nil: replay everything into a fresh one
	from := int64(0)
	if pre != nil {
		st, ok := info.Sys().(*syscall.Stat_t)
		if ok && uint64(st.Dev) == pre.dev && uint64(st.Ino) == pre.ino && size >= pre.end {
			table, from = pre.table, pre.end
			l.records, l.keptPreload = pre.records, true
		}
		pre.table = nil // kept, or garbage
	}
	table, end, records, err := replayFrom(l.f, l.path, from, size, table)
	if err != nil {
		return nil, err
	}
	if end < size {
		// A torn or corrupt tail: cut it away, durably.
		if err := l.f.Truncate(end); err != nil {
			return nil, fmt.Errorf("cannot truncate the torn tail of %s: %w", l.path, err)
		}
		if err := l.f.Sync(); err != nil {
			return nil, fmt.Errorf("cannot truncate the torn tail of %s: %w", l.path, err)
		}
		l.truncated = size - end
	}
	l.records += records
	l.size, l.synced = end, end
	return table, nil
}

// replayFrom replays f's records from offset from (the end of a valid
// record) up to size into table (nil: a fresh one), and says where the
// valid ones end and how many there were. The file is read in one go; if
// it shrank under us, what there is is parsed.
func replayFrom(f *os.File, path string, from, size int64, table map[string]string) (
	map[string]string, int64, uint64, error) {
	if size <= from {
		if table == nil {
			table = map[string]string{}
		}
		return table, from, 0, nil
	}
	buf := make([]byte, size-from)
	n, err := f.ReadAt(buf, from)
	if err != nil && err != io.EOF {
		return nil, 0, 0, &unreadableLogError{fmt.Errorf("cannot read %s: %w", path, err)}
	}
	table, valid, records, err := replay(buf[:n], from, table)
	if err != nil {
		return nil, 0, 0, err
	}
	return table, from + valid, records, nil
}

// checkRecord looks at the record at buf[off:], the log's bytes from offset
// base: the length of its body if it is whole and valid, 0 if it is torn
// or corrupt (the valid records end there), an error if its checksum is
// good but this format does not allow its content.
func checkRecord(buf []byte, off int, base int64) (int, error) {
	if len(buf)-off < recHeader {
		return 0, nil // the end, or a torn header
	}
	bodyLen := int(binary.LittleEndian.Uint32(buf[off:]))
	if bodyLen < minBodyLength || bodyLen > maxBodyLength {
		return 0, nil // a torn or zero-filled tail
	}
	if len(buf)-off-recHeader < bodyLen {
		return 0, nil // a torn body
	}
	body := buf[off+recHeader : off+recHeader+bodyLen]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(buf[off+4:]) {
		return 0, nil // corrupt: cut here
	}
	keyLen := int(binary.LittleEndian.Uint16(body[9:]))
	valueLen := int(binary.LittleEndian.Uint16(body[11:]))
	if body[0] != opSet || bodyLen != recBodyFixed+keyLen+valueLen ||
		!validItem(body[recBodyFixed:recBodyFixed+keyLen]) ||
		!validItem(body[recBodyFixed+keyLen:]) {
		return 0, fmt.Errorf("record at offset %d has a valid checksum but is not a SET "+
			"record of this format (op %d, key %d bytes, value %d bytes): refusing to open",
			base+int64(off), body[0], keyLen, valueLen)
	}
	return bodyLen, nil
}

// setItem sets the key and value of a valid record's body in table, both
// in one allocation.
func setItem(table map[string]string, body []byte) {
	keyLen := int(binary.LittleEndian.Uint16(body[9:]))
	item := string(body[recBodyFixed:]) // key then value
	table[item[:keyLen]] = item[keyLen:]
}

// replay reads the records in buf, the log's bytes from offset base, until
// the first one that is not whole and valid, into table (nil: a fresh one),
// and says how long the valid ones are and how many there were.
//
// Into a fresh table it goes newest-first (replayNewestFirst): most records
// of a long log are overwritten later, and that way they cost a lookup, not
// an insertion and an allocation. Into a table given (the tail appended
// after a preload) it goes forward.
func replay(buf []byte, base int64, table map[string]string) (map[string]string, int64, uint64, error) {
	if table == nil {
		return replayNewestFirst(buf, base)
	}
	records := uint64(0)
	end, err := eachRecord(buf, base, func(body []byte) {
		setItem(table, body)
		records++
	})
	if err != nil {
		return nil, 0, 0, err
	}
	return table, int64(end), records, nil
}

// eachRecord calls each with the body of every whole and valid record at
// the start of buf (the log's bytes from offset base), in order, and gives
// where they end; a record of another format is an error (see checkRecord).
func eachRecord(buf []byte, base int64, each func(body []byte)) (int, error) {
	off := 0
	for {
		bodyLen, err := checkRecord(buf, off, base)
		if err != nil || bodyLen == 0 {
			return off, err
		}
		each(buf[off+recHeader : off+recHeader+bodyLen])
		off += recHeader + bodyLen
	}
}

// replayNewestFirst is replay into a fresh table, with the same result:
// one pass forward finds the valid records (a record of another format is
// an error before anything is set), one backward sets each key from its
// last record only, later ones being a lookup each. The forward pass keeps
// each body's length (at most 525: two bytes), enough to walk back from
// the end, and estimates the number of keys so that the table is made the
// right size at once: sized for the records it would be mostly empty when
// they overwrite each other, unsized it grows step by step when they do
// not (measured: either costs a third more).
func replayNewestFirst(buf []byte, base int64) (map[string]string, int64, uint64, error) {
	most := len(buf) / (recHeader + minBodyLength)
	lengths := make([]uint16, 0, most)
	keys := newKeyCounter(most)
	off, err := eachRecord(buf, base, func(body []byte) {
		keys.add(body[recBodyFixed : recBodyFixed+binary.LittleEndian.Uint16(body[9:])])
		lengths = append(lengths, uint16(len(body)))
	})
	if err != nil {
		return nil, 0, 0, err
	}
	table := make(map[string]string, min(keys.estimate(), len(lengths)))
	end := off
	for i := len(lengths) - 1; i >= 0; i-- {
		body := buf[end-int(lengths[i]) : end]
		end -= recHeader + int(lengths[i])
		key := body[recBodyFixed : recBodyFixed+binary.LittleEndian.Uint16(body[9:])]
		if _, ok := table[string(key)]; !ok { // the conversion does not allocate
			setItem(table, body)
		}
	}
	return table, int64(off), uint64(len(lengths)), nil
}

// keyCounter estimates how many distinct keys it was given by linear
// counting (one bit per hash, the share of bits left clear says how many
// collided): with 8 bits or more per key, within a fraction of a percent.
type keyCounter struct {
	seed maphash.Seed
	set  []uint64
}

func newKeyCounter(most int) keyCounter {
	return keyCounter{maphash.MakeSeed(), make([]uint64, most/8+1)}
}

func (c *keyCounter) add(key []byte) {
	h := maphash.Bytes(c.seed, key) % uint64(len(c.set)*64)
	c.set[h/64] |= 1 << (h % 64)
}

func (c *keyCounter) estimate() int {
	zeros := 0
	for _, w := range c.set {
		zeros += 64 - bits.OnesCount64(w)
	}
	m := float64(len(c.set) * 64)
	return int(math.Ceil(-m * math.Log(float64(zeros)/m)))
}

// errCutBack: a failed append could not be cut back out of the log.
// unreadableLogError: the log could not be opened, stat'ed or read (as
// opposed to a record of another format). A preload that meets one just
// does not happen; opening after the lock decides whether it matters.
type unreadableLogError struct{ err error }

func (e *unreadableLogError) Error() string { return e.err.Error() }
func (e *unreadableLogError) Unwrap() error { return e.err }

var errCutBack = errors.New("cannot cut a failed write out of the log")

// appendRecord appends one encoded SET record to dst.
func appendRecord[T string | []byte](dst []byte, generation uint64, key, value T) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(recBodyFixed+len(key)+len(value)))
	dst = append(dst, 0, 0, 0, 0) // the CRC, once the body is there
	dst = append(dst, opSet)
	dst = binary.LittleEndian.AppendUint64(dst, generation)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(key)))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(value)))
	dst = append(dst, key...)
	dst = append(dst, value...)
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(dst[start+recHeader:], castagnoli))
	return dst
}

// appendSet appends one SET record (not yet durable: see waitDurable) and
// gives the log's end after it. A failed append is cut back at once, so a
// torn record can only ever be the last one.
func (l *kvLog) appendSet(generation uint64, key, value []byte) (int64, error) {
	rec := appendRecord(make([]byte, 0, recHeader+recBodyFixed+len(key)+len(value)), generation, key, value)
	n, err := l.f.Write(rec)
	if err != nil {
		if n > 0 {
			if terr := l.f.Truncate(l.size); terr != nil {
				return 0, fmt.Errorf("%w %s: %v", errCutBack, l.path, terr)
			}
		}
		return 0, err
	}
	l.sync.Lock()
	l.size += int64(len(rec))
	l.records++
	end := l.size
	l.sync.Unlock()
	return end, nil
}

// end is the log's end now.
func (l *kvLog) end() int64 {
	l.sync.Lock()
	defer l.sync.Unlock()
	return l.size
}

// waitDurable returns once every byte before off is on disk, syncing if no
// one else is. An fdatasync failure is fatal: nothing more may be answered.
func (l *kvLog) waitDurable(off int64, fatal func(string, ...any)) {
	l.waitDurableUnless(off, fatal, nil)
}

// waitDurableUnless is waitDurable that gives up, without syncing, once
// carry is set (woken by wakeWaiters): then it says false. A drain that
// moves the connections carries their answers as they are, and its seal
// makes them durable; waiting for a group commit, or starting one, would
// only hold the drain up (0.26 ms seen, an fdatasync begun after it).
func (l *kvLog) waitDurableUnless(off int64, fatal func(string, ...any), carry *atomic.Bool) bool {
	l.sync.Lock()
	defer l.sync.Unlock()
	for l.synced < off {
		if carry != nil && carry.Load() {
			return false
		}
		if l.syncing {
			l.done.Wait()
			continue
		}
		l.syncing = true
		target := l.size
		l.sync.Unlock()
		err := syscall.Fdatasync(l.fd)
		l.sync.Lock()
		l.syncing = false
		if err != nil {
			fatal("fsync %s: %v", l.path, err)
		}
		if target > l.synced {
			l.synced = target
		}
		l.done.Broadcast()
	}
	return true
}

// wakeWaiters wakes every waitDurableUnless, to look at its carry again.
func (l *kvLog) wakeWaiters() {
	l.sync.Lock()
	l.done.Broadcast()
	l.sync.Unlock()
}

// durable says whether every byte before off is on disk, without waiting.
func (l *kvLog) durable(off int64) bool {
	l.sync.Lock()
	defer l.sync.Unlock()
	return l.synced >= off
}

// markSynced records that everything written is on disk (after an fsync).
func (l *kvLog) markSynced() {
	l.sync.Lock()
	l.synced = l.size
	l.sync.Unlock()
}

// close fsyncs and closes the log (closed either way).
func (l *kvLog) close() error {
	err := l.f.Sync()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		l.markSynced()
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeStaleCompaction removes <dir>/kv.log.compact if it is there, and
// says whether it was.
func removeStaleCompaction(dir string) (bool, error) {
	err := os.Remove(filepath.Join(dir, compactFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot remove the unfinished compaction %s: %w",
			filepath.Join(dir, compactFile), err)
	}
	return true, nil
}

// compactKeptError: a compaction failed before its rename, so kv.log and
// the kvLog are as they were (and kv.log.compact is removed, if it could
// be). The service goes on with the old log.
type compactKeptError struct{ err error }

func (e *compactKeptError) Error() string { return e.err.Error() }
func (e *compactKeptError) Unwrap() error { return e.err }

// compactLog rewrites the log as one SET record per key of table (what a
// replay of it gives), stamped with generation, the opener's lock
// generation: written to kv.log.compact and fsynced, renamed over kv.log,
// then the directory fsynced. l then appends to the new file and counts
// len(table) records. Only for an opener holding the lock, before it
// serves: a successor's preload relies on the log only ever growing while
// someone serves.
//
// A failure before the rename is a *compactKeptError and changes nothing
// that matters. Any other error (the directory fsync after the rename) must
// stop the service before it serves: a power cut could bring the old file
// back and lose what is appended to the new one.
func compactLog(l *kvLog, table map[string]string, generation uint64) error {
	path := filepath.Join(l.dir, compactFile)
	f, size, err := writeCompaction(path, table, generation)
	if err == nil {
		if err = os.Rename(path, l.path); err != nil {
			f.Close()
		}
	}
	if err != nil {
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("%w (and removing it: %v)", err, rerr)
		}
		return &compactKeptError{err}
	}
	// The rename is done: from here on the new file is the log, whatever
	// happens (the old inode is gone once its descriptor closes).
	old := l.f
	l.sync.Lock()
	l.f, l.fd = f, int(f.Fd())
	l.size, l.synced, l.records = size, size, uint64(len(table))
	l.sync.Unlock()
	old.Close()
	if err := syncDir(l.dir); err != nil {
		return fmt.Errorf("compacted %s but cannot fsync %s after the rename: %w", l.path, l.dir, err)
	}
	return nil
}

// writeCompaction writes table to path (created, or truncated) as SET
// records and fsyncs it: the file, open for appending, and its size.
func writeCompaction(path string, table map[string]string, generation uint64) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot create %s: %w", path, err)
	}
	// Written a megabyte or so at a time: the table may be large.
	const chunk = 1 << 20
	buf := make([]byte, 0, chunk+recHeader+maxBodyLength)
	size := int64(0)
	flush := func() error {
		_, err := f.Write(buf)
		size += int64(len(buf))
		buf = buf[:0]
		return err
	}
	for key, value := range table {
		buf = appendRecord(buf, generation, key, value)
		if len(buf) >= chunk {
			if err := flush(); err != nil {
				f.Close()
				return nil, 0, err
			}
		}
	}
	if err := flush(); err != nil {
		f.Close()
		return nil, 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("cannot fsync %s: %w", path, err)
	}
	return f, size, nil
}
