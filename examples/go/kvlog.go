package main

// The append-only log, in the format of examples/README.md (the same as
// kv-c's, so either can take over the other's data directory): one record
// per acknowledged SET, with its length and a CRC-32C, so that a torn last
// record is found and cut away on open.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

const (
	logFile       = "kv.log"
	recHeader     = 8  // body_len u32, crc u32
	recBodyFixed  = 13 // op u8, generation u64, key_len u16, value_len u16
	opSet         = 1
	maxItem       = 256
	minBodyLength = recBodyFixed + 2
	maxBodyLength = recBodyFixed + 2*maxItem
)

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

	sync    sync.Mutex
	synced  int64 // every byte before this is on disk
	syncing bool
	done    *sync.Cond
}

// openLog opens (creating) <dir>/kv.log, replays every valid record into
// table (later records win) and cuts a torn or corrupt tail away. A record
// with a good checksum but content this format does not allow is another
// format: an error, and nothing is changed.
func openLog(dir string, table map[string]string) (*kvLog, error) {
	path := filepath.Join(dir, logFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	created := false
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o644)
		created = err == nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	l := &kvLog{path: path, dir: dir, f: f, fd: int(f.Fd())}
	l.done = sync.NewCond(&l.sync)
	if err := l.load(created, table); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

func (l *kvLog) load(created bool, table map[string]string) error {
	if created {
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("cannot fsync new %s: %w", l.path, err)
		}
		if err := syncDir(l.dir); err != nil {
			return fmt.Errorf("cannot fsync %s: %w", l.dir, err)
		}
	}
	info, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("cannot stat %s: %w", l.path, err)
	}
	buf := make([]byte, info.Size())
	n, err := l.f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return fmt.Errorf("cannot read %s: %w", l.path, err)
	}
	buf = buf[:n] // shrank under us: parse what there is
	end, records, err := replay(buf, table)
	if err != nil {
		return err
	}
	if end < int64(info.Size()) {
		// A torn or corrupt tail: cut it away, durably.
		if err := l.f.Truncate(end); err != nil {
			return fmt.Errorf("cannot truncate the torn tail of %s: %w", l.path, err)
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("cannot truncate the torn tail of %s: %w", l.path, err)
		}
		l.truncated = info.Size() - end
	}
	l.size, l.synced, l.records = end, end, records
	return nil
}

// replay reads records until the first one that is not whole and valid,
// and says where the valid ones end.
func replay(buf []byte, table map[string]string) (end int64, records uint64, err error) {
	off := 0
	for {
		if len(buf)-off < recHeader {
			return int64(off), records, nil // the end, or a torn header
		}
		bodyLen := int(binary.LittleEndian.Uint32(buf[off:]))
		if bodyLen < minBodyLength || bodyLen > maxBodyLength {
			return int64(off), records, nil // a torn or zero-filled tail
		}
		if len(buf)-off-recHeader < bodyLen {
			return int64(off), records, nil // a torn body
		}
		body := buf[off+recHeader : off+recHeader+bodyLen]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(buf[off+4:]) {
			return int64(off), records, nil // corrupt: cut here
		}
		keyLen := int(binary.LittleEndian.Uint16(body[9:]))
		valueLen := int(binary.LittleEndian.Uint16(body[11:]))
		if body[0] != opSet || bodyLen != recBodyFixed+keyLen+valueLen ||
			!validItem(body[recBodyFixed:recBodyFixed+keyLen]) ||
			!validItem(body[recBodyFixed+keyLen:]) {
			return 0, 0, fmt.Errorf("record at offset %d has a valid checksum but is not a SET "+
				"record of this format (op %d, key %d bytes, value %d bytes): refusing to open",
				off, body[0], keyLen, valueLen)
		}
		key := string(body[recBodyFixed : recBodyFixed+keyLen])
		table[key] = string(body[recBodyFixed+keyLen:])
		records++
		off += recHeader + bodyLen
	}
}

// errCutBack: a failed append could not be cut back out of the log.
var errCutBack = errors.New("cannot cut a failed write out of the log")

// appendSet appends one SET record (not yet durable: see waitDurable) and
// gives the log's end after it. A failed append is cut back at once, so a
// torn record can only ever be the last one.
func (l *kvLog) appendSet(generation uint64, key, value []byte) (int64, error) {
	bodyLen := recBodyFixed + len(key) + len(value)
	rec := make([]byte, recHeader+bodyLen)
	body := rec[recHeader:]
	body[0] = opSet
	binary.LittleEndian.PutUint64(body[1:], generation)
	binary.LittleEndian.PutUint16(body[9:], uint16(len(key)))
	binary.LittleEndian.PutUint16(body[11:], uint16(len(value)))
	copy(body[recBodyFixed:], key)
	copy(body[recBodyFixed+len(key):], value)
	binary.LittleEndian.PutUint32(rec, uint32(bodyLen))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(body, castagnoli))
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
	l.sync.Lock()
	defer l.sync.Unlock()
	for l.synced < off {
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
}

// close fsyncs and closes the log (closed either way).
func (l *kvLog) close() error {
	err := l.f.Sync()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.sync.Lock()
	l.synced = l.size
	l.sync.Unlock()
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
