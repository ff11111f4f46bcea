// Command tableflip-kv is the key-value service of examples/README.md (line
// protocol SET/GET/PING, fsync before OK, drain by closing connections once
// answered) upgraded with cloudflare/tableflip v1.2.3, for benches/compare.
//
//	tableflip-kv --listen HOST:PORT --data-dir DIR
//
// SIGHUP upgrades: tableflip starts the same binary again with the listener
// inherited. The state is handed over through a flock on DIR/.lock, the
// Ready/Exit semantics of tableflip:
//
//  1. the new process takes the inherited listener, preloads the log
//     read-only while the old one still serves (as kv-c's successor does
//     before its handshake: examples/README.md, "Lifecycle > Successor"),
//     and calls Ready, which lets the old process's Upgrade return (the
//     listener's accept queue never closes, so connections arriving from
//     now on wait in it);
//  2. the old process, its Exit channel closed, stops accepting, answers
//     what its connections had sent and closes them, fsyncs and closes the
//     log, and only then releases the flock;
//  3. the new process blocks on the flock, so it opens the log and replays
//     what was appended since its preload (all of it if the log is not the
//     file it preloaded) only after everything the old one acknowledged is
//     on disk, and only then accepts.
//
// So no acknowledged write is lost and no two processes ever write the log.
// The log is kv.log of examples/README.md (the same records, CRC-32C, torn
// tail cut away on open, compacted on open under the flock as its
// "Compaction" says: a stale kv.log.compact removed first, then, once the
// log holds at least 65,536 records and twice as many as keys, one record
// per key written to kv.log.compact, fsynced, renamed over kv.log and the
// directory fsynced), so every service in the comparison replays the same
// bytes, the same way (into an empty table newest-first, each key set from
// its last record only; a table item, key and value, is one allocation).
// PONG answers carry the tag "tableflip"; OK answers carry the generation:
// one more than the highest one in the log when it was opened (the
// generation compacted records carry too).
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"io"
	"math"
	"math/bits"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

const (
	logFile           = "kv.log"
	compactFile       = "kv.log.compact"
	firstRequestGrace = time.Second
	lingerFor         = 500 * time.Millisecond
	drainBudget       = 25 * time.Second
	maxLine           = 1024
)

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tableflip[%d] %s\n", os.Getpid(), fmt.Sprintf(format, args...))
}

func fatal(format string, args ...any) {
	say("fatal: "+format, args...)
	os.Exit(1)
}

type writeReq struct {
	key, value string
	done       chan error
}

type server struct {
	mu         sync.Mutex
	draining   bool
	drainStart time.Time
	active     int
	conns      map[net.Conn]struct{}

	tableMu    sync.RWMutex
	table      map[string]string
	records    int64
	generation uint64

	logMu sync.Mutex
	log   *os.File

	writes  chan writeReq
	lingers sync.WaitGroup
}

func main() {
	listen := flag.String("listen", "", "HOST:PORT to listen on (or inherited)")
	dataDir := flag.String("data-dir", "", "data directory")
	flag.Parse()
	if *listen == "" || *dataDir == "" {
		fmt.Fprintln(os.Stderr, "usage: tableflip-kv --listen HOST:PORT --data-dir DIR")
		os.Exit(2)
	}

	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: 30 * time.Second})
	if err != nil {
		fatal("tableflip: %v", err)
	}
	defer upg.Stop()

	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
		for sig := range signals {
			if sig != syscall.SIGHUP {
				say("signal %v: shutting down", sig)
				upg.Stop()
				return
			}
			say("upgrade requested")
			if err := upg.Upgrade(); err != nil {
				say("upgrade failed: %v", err)
			}
		}
	}()

	ln, err := upg.Listen("tcp", *listen)
	if err != nil {
		fatal("listen %s: %v", *listen, err)
	}
	successor := upg.HasParent()
	var pre *preload
	if successor {
		// Before Ready, which lets the old process start draining: it
		// still serves meanwhile, and only what it appends from now on is
		// left to replay once we hold the flock.
		pre = preloadLog(*dataDir)
	}
	if err := upg.Ready(); err != nil {
		fatal("ready: %v", err)
	}
	if successor {
		say("ready: waiting for the data dir")
	}

	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		fatal("data dir: %v", err)
	}
	lock, err := os.OpenFile(filepath.Join(*dataDir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		fatal("lock file: %v", err)
	}
	// Blocks until the previous generation has sealed the log.
	for {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		fatal("flock: %v", err)
	}

	s := &server{conns: map[net.Conn]struct{}{}, writes: make(chan writeReq, 1024)}
	if err := s.openLog(*dataDir, pre); err != nil {
		fatal("log: %v", err)
	}
	go s.writer()
	accepted := make(chan struct{})
	go s.acceptLoop(ln, accepted)
	if successor {
		say("took over on tcp://%s: %d record(s)", ln.Addr(), s.records)
	} else {
		say("cold start on tcp://%s: %d record(s)", ln.Addr(), s.records)
	}

	<-upg.Exit()

	// Stop accepting: once the accept loop has returned, no connection
	// can be taken by this process any more.
	_ = ln.Close()
	<-accepted
	s.drain()
	records, err := s.seal()
	if err != nil {
		fatal("seal: %v", err)
	}
	say("sealed at revision %d", records)
	_ = lock.Close() // releases the flock: the successor may open the log
	s.lingers.Wait()
	say("exiting with status 0")
}

// The compaction policy of examples/README.md: rewrite the log on open
// once its replay is long enough to matter and at least half of its
// records are overwritten ones.
const (
	compactMinRecords       = 65536
	compactMinRecordsPerKey = 2
)

func shouldCompact(records int64, keys int) bool {
	return records >= compactMinRecords && records >= compactMinRecordsPerKey*int64(keys)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encode appends one SET record of kv.log.
func encode(out []byte, generation uint64, key, value string) []byte {
	body := make([]byte, 13, 13+len(key)+len(value))
	body[0] = 1
	binary.LittleEndian.PutUint64(body[1:9], generation)
	binary.LittleEndian.PutUint16(body[9:11], uint16(len(key)))
	binary.LittleEndian.PutUint16(body[11:13], uint16(len(value)))
	body = append(body, key...)
	body = append(body, value...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(body)))
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(body, castagnoli))
	return append(out, body...)
}

// otherFormat is a record with a good checksum but content this format
// does not allow: another format, not a torn write.
type otherFormat struct {
	offset           int64
	op               byte
	keyLen, valueLen int
}

func (e *otherFormat) Error() string {
	return fmt.Sprintf("record at offset %d has a valid checksum but is not a SET record of "+
		"this format (op %d, key %d bytes, value %d bytes)", e.offset, e.op, e.keyLen, e.valueLen)
}

// validItem says whether a key or value of a record is allowed: 1 to 256
// bytes, each printable ASCII other than space.
func validItem(item []byte) bool {
	if len(item) == 0 || len(item) > 256 {
		return false
	}
	for _, b := range item {
		if b < 0x21 || b > 0x7e {
			return false
		}
	}
	return true
}

// checkRecord looks at the record at data[at:], the log from offset base:
// the length of its body if it is whole and valid, 0 if it is torn or
// corrupt (the valid records end there), an error if its checksum is good
// but this format does not allow its content.
func checkRecord(data []byte, at int, base int64) (int, error) {
	if len(data)-at < 8 {
		return 0, nil // the end, or a torn header
	}
	size := int(binary.LittleEndian.Uint32(data[at:]))
	crc := binary.LittleEndian.Uint32(data[at+4:])
	if size < 15 || size > 525 || len(data)-at-8 < size {
		return 0, nil // a torn (or zero-filled) tail
	}
	body := data[at+8 : at+8+size]
	if crc32.Checksum(body, castagnoli) != crc {
		return 0, nil // a corrupt tail
	}
	keyLen := int(binary.LittleEndian.Uint16(body[9:11]))
	valueLen := int(binary.LittleEndian.Uint16(body[11:13]))
	if body[0] != 1 || 13+keyLen+valueLen != size ||
		!validItem(body[13:13+keyLen]) || !validItem(body[13+keyLen:]) {
		return 0, &otherFormat{base + int64(at), body[0], keyLen, valueLen}
	}
	return size, nil
}

// setItem sets the key and value of a valid record's body in table.
func setItem(table map[string]string, body []byte) {
	keyLen := int(binary.LittleEndian.Uint16(body[9:11]))
	item := string(body[13:]) // key then value: one allocation
	table[item[:keyLen]] = item[keyLen:]
}

// replay replays data, the log from offset base, into table (nil: a fresh
// one; later records win) up to the first record that is not whole and
// valid: the table, the length of the valid records at its start, their
// count and their highest generation.
//
// Into a fresh table it goes newest-first (replayNewestFirst), as the other
// services do: most records of a long log are overwritten later, and that
// way they cost a lookup, not an insertion and an allocation. Into a table
// given (the tail appended after a preload) it goes forward.
func replay(data []byte, base int64, table map[string]string) (map[string]string, int64, int64, uint64, error) {
	if table == nil {
		return replayNewestFirst(data, base)
	}
	records, generation := int64(0), uint64(0)
	end, err := eachRecord(data, base, func(body []byte) {
		setItem(table, body)
		records++
		generation = max(generation, binary.LittleEndian.Uint64(body[1:9]))
	})
	if err != nil {
		return nil, 0, 0, 0, err
	}
	return table, int64(end), records, generation, nil
}

// eachRecord calls each with the body of every whole and valid record at
// the start of data (the log's bytes from offset base), in order, and gives
// where they end; a record of another format is an error (see checkRecord).
func eachRecord(data []byte, base int64, each func(body []byte)) (int, error) {
	at := 0
	for {
		size, err := checkRecord(data, at, base)
		if err != nil || size == 0 {
			return at, err
		}
		each(data[at+8 : at+8+size])
		at += 8 + size
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
// not (measured in examples/go: either costs a third more).
func replayNewestFirst(data []byte, base int64) (map[string]string, int64, int64, uint64, error) {
	most := len(data) / (8 + 15)
	sizes := make([]uint16, 0, most)
	keys := newKeyCounter(most)
	generation := uint64(0)
	at, err := eachRecord(data, base, func(body []byte) {
		keys.add(body[13 : 13+binary.LittleEndian.Uint16(body[9:11])])
		sizes = append(sizes, uint16(len(body)))
		generation = max(generation, binary.LittleEndian.Uint64(body[1:9]))
	})
	if err != nil {
		return nil, 0, 0, 0, err
	}
	table := make(map[string]string, min(keys.estimate(), len(sizes)))
	end := at
	for i := len(sizes) - 1; i >= 0; i-- {
		body := data[end-int(sizes[i]) : end]
		end -= 8 + int(sizes[i])
		key := body[13 : 13+binary.LittleEndian.Uint16(body[9:11])]
		if _, ok := table[string(key)]; !ok { // the conversion does not allocate
			setItem(table, body)
		}
	}
	return table, int64(at), int64(len(sizes)), generation, nil
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

// readFrom reads f from offset from to its size (as f.Stat said): what
// there is if it shrank meanwhile.
func readFrom(f *os.File, from, size int64) ([]byte, error) {
	if size <= from {
		return nil, nil
	}
	data := make([]byte, size-from)
	n, err := f.ReadAt(data, from)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return data[:n], nil
}

// preload is a successor's replay of the log made before Ready, for openLog
// to go on from: the file read (device, inode), the end of its last valid
// record, and what the records up to there hold.
type preload struct {
	dev, ino   uint64
	end        int64
	records    int64
	generation uint64
	table      map[string]string
}

// preloadLog is a successor's warm-up before Ready: it replays the log as
// it is now, read-only and without the flock, while the old process still
// serves and appends. Nothing is created or cut (a torn or corrupt record
// just ends the preload: it may be one being written). No log yet: nothing
// preloaded (nil). A log that cannot be read: no preload (nil), said, and
// openLog replays it all. A record of another format is fatal.
func preloadLog(dir string) *preload {
	started := time.Now()
	path := filepath.Join(dir, logFile)
	skip := func(err error) *preload {
		say("no preload (the whole log is replayed after the lock): %v", err)
		return nil
	}
	var pre *preload
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return skip(err)
	default:
		defer f.Close()
		info, err := f.Stat()
		if err != nil {
			return skip(err)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return skip(fmt.Errorf("stat %s: no device and inode", path))
		}
		data, err := readFrom(f, 0, info.Size())
		if err != nil {
			return skip(err)
		}
		pre = &preload{dev: uint64(st.Dev), ino: uint64(st.Ino)}
		pre.table, pre.end, pre.records, pre.generation, err = replay(data, 0, nil)
		if err != nil {
			fatal("preloading the log: %v", err)
		}
	}
	records := int64(0)
	if pre != nil {
		records = pre.records
	}
	say("preloaded %d record(s) in %d ms", records, time.Since(started).Milliseconds())
	return pre
}

// openLog opens (creating) and replays the log; a torn or corrupt tail is
// cut away and the file fsynced. Given a preload (nil: none), it goes on
// from it if the log is the file it read (same device and inode) and still
// holds every byte it read: the log is only ever appended to, and an
// append is only ever cut back to the end of a whole record, so the bytes
// up to its end cannot have changed. Otherwise everything is replayed.
// Then it compacts the log if the policy says so (compact). Before anything
// else it removes a kv.log.compact left by a process that died
// mid-compaction: it was never renamed, so kv.log is whole.
func (s *server) openLog(dir string, pre *preload) error {
	stale := filepath.Join(dir, compactFile)
	if err := os.Remove(stale); err == nil {
		say("removed %s, left by a compaction that did not finish", compactFile)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot remove the unfinished compaction %s: %w", stale, err)
	}
	path := filepath.Join(dir, logFile)
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if os.IsNotExist(statErr) {
		if err := f.Sync(); err != nil {
			return err
		}
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	info, err := f.Stat()
	if err != nil {
		return err
	}
	from, kept := int64(0), false
	var table map[string]string // nil: replay everything into a fresh one
	s.records, s.generation = 0, 0
	if pre != nil {
		st, ok := info.Sys().(*syscall.Stat_t)
		if ok && uint64(st.Dev) == pre.dev && uint64(st.Ino) == pre.ino && info.Size() >= pre.end {
			table, s.records, s.generation = pre.table, pre.records, pre.generation
			from, kept = pre.end, true
		}
		pre.table = nil // kept, or garbage
	}
	data, err := readFrom(f, from, info.Size())
	if err != nil {
		return err
	}
	table, valid, records, generation, err := replay(data, from, table)
	if err != nil {
		return err
	}
	s.table = table
	s.records += records
	s.generation = max(s.generation, generation)
	if valid < int64(len(data)) {
		if err := f.Truncate(from + valid); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if kept {
		say("kept %d preloaded record(s), replayed %d appended since", pre.records, records)
	} else if pre != nil {
		say("the log changed under the preload: replayed all %d record(s)", s.records)
	}
	s.generation++
	s.log = f
	if shouldCompact(s.records, len(s.table)) {
		started, before := time.Now(), s.records
		kept, err := s.compact(dir)
		switch {
		case kept:
			say("compaction failed (the log is kept as it is): %v", err)
		case err != nil:
			return err // after the rename: must not serve
		default:
			say("compacted the log: %d record(s) -> %d in %d ms",
				before, s.records, time.Since(started).Milliseconds())
		}
	}
	return nil
}

// compact rewrites the log as one SET record per key of the table, at the
// generation this process writes with: to kv.log.compact, fsynced, renamed
// over kv.log, then the directory fsynced; the log and the record count are
// the new file's from then on. A failure before the rename (kept) removes
// kv.log.compact and changes nothing else. A failure to fsync the directory
// after it is an error the caller must not serve after: a power cut could
// bring the old file back and lose what is appended to the new one.
func (s *server) compact(dir string) (kept bool, err error) {
	path := filepath.Join(dir, compactFile)
	f, err := writeCompaction(path, s.table, s.generation)
	if err == nil {
		if err = os.Rename(path, filepath.Join(dir, logFile)); err != nil {
			_ = f.Close()
		}
	}
	if err != nil {
		if rmErr := os.Remove(path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = fmt.Errorf("%w (and removing it: %v)", err, rmErr)
		}
		return true, err
	}
	// Renamed: the new file is the log now, whatever happens next.
	_ = s.log.Close()
	s.log, s.records = f, int64(len(s.table))
	if err := syncDir(dir); err != nil {
		return false, fmt.Errorf("compacted %s but cannot fsync %s after the rename: %w", logFile, dir, err)
	}
	return false, nil
}

// writeCompaction writes table to path (created, or truncated) as SET
// records at generation and fsyncs it: the file, open for appending.
func writeCompaction(path string, table map[string]string, generation uint64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	const chunk = 1 << 20 // a megabyte at a time: the table may be large
	var buf []byte
	for key, value := range table {
		buf = encode(buf, generation, key, value)
		if len(buf) >= chunk {
			if _, err = f.Write(buf); err != nil {
				break
			}
			buf = buf[:0]
		}
	}
	if err == nil {
		_, err = f.Write(buf)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// writer is the group commit: everything queued is written, fsynced once,
// made visible, then answered.
func (s *server) writer() {
	for first := range s.writes {
		batch := []writeReq{first}
	more:
		for {
			select {
			case w := <-s.writes:
				batch = append(batch, w)
			default:
				break more
			}
		}
		var text []byte
		for _, w := range batch {
			text = encode(text, s.generation, w.key, w.value)
		}
		var err error
		s.logMu.Lock()
		if s.log == nil {
			err = errors.New("the log is sealed")
		} else {
			var before int64
			if info, statErr := s.log.Stat(); statErr == nil {
				before = info.Size()
			}
			if _, err = s.log.Write(text); err != nil {
				// Cut a partial append back at once (nothing was written).
				if truncErr := s.log.Truncate(before); truncErr != nil {
					fatal("cannot cut back a failed append: %v", truncErr)
				}
			} else if syncErr := syscall.Fdatasync(int(s.log.Fd())); syncErr != nil {
				fatal("fsync: %v", syncErr)
			}
		}
		s.logMu.Unlock()
		if err == nil {
			s.tableMu.Lock()
			for _, w := range batch {
				s.table[w.key] = w.value
			}
			s.records += int64(len(batch))
			s.tableMu.Unlock()
		}
		for _, w := range batch {
			w.done <- err
		}
	}
}

func (s *server) seal() (int64, error) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if s.log != nil {
		if err := s.log.Sync(); err != nil {
			return 0, err
		}
		if err := s.log.Close(); err != nil {
			return 0, err
		}
		s.log = nil
	}
	s.tableMu.RLock()
	defer s.tableMu.RUnlock()
	return s.records, nil
}

func (s *server) acceptLoop(ln net.Listener, done chan<- struct{}) {
	defer close(done)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			say("accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		s.active++
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go s.serve(c)
	}
}

// drain lets every connection answer what it has received and close, then
// fsyncs.
func (s *server) drain() {
	s.mu.Lock()
	say("draining %d connection(s)", s.active)
	s.draining = true
	s.drainStart = time.Now()
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	}
	s.mu.Unlock()
	deadline := time.Now().Add(drainBudget)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		active := s.active
		s.mu.Unlock()
		if active == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	s.logMu.Lock()
	if s.log != nil {
		_ = s.log.Sync()
	}
	s.logMu.Unlock()
}

func (s *server) serve(c net.Conn) {
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetNoDelay(true)
	}
	linger := s.serveRequests(c)
	s.mu.Lock()
	s.active--
	delete(s.conns, c)
	s.mu.Unlock()
	if !linger {
		_ = c.Close()
		return
	}
	s.lingers.Add(1)
	go func() {
		defer s.lingers.Done()
		if tcp, ok := c.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(lingerFor))
		sink := make([]byte, 1024)
		for {
			if _, err := c.Read(sink); err != nil {
				break
			}
		}
		_ = c.Close()
	}()
}

// serveRequests answers until the client closes or a drain ends the
// connection; whether to close it gracefully.
func (s *server) serveRequests(c net.Conn) bool {
	buffer := make([]byte, 0, 4096)
	chunk := make([]byte, 4096)
	answered := 0
	for {
		var answers []byte
		for {
			end := bytes.IndexByte(buffer, '\n')
			if end < 0 {
				break
			}
			line := bytes.TrimSuffix(buffer[:end], []byte{'\r'})
			answers = append(answers, s.answer(string(line))...)
			answers = append(answers, '\n')
			buffer = buffer[end+1:]
			answered++
		}
		if len(buffer) > maxLine {
			buffer = buffer[:0]
			answers = append(answers, "ERR line too long (at most 1024 bytes)\n"...)
		}
		if len(answers) > 0 {
			if _, err := c.Write(answers); err != nil {
				return false
			}
		}
		s.mu.Lock()
		if s.draining {
			if answered > 0 || time.Since(s.drainStart) >= firstRequestGrace {
				s.mu.Unlock()
				return true
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		} else {
			_ = c.SetReadDeadline(time.Time{})
		}
		s.mu.Unlock()
		n, err := c.Read(chunk)
		if n > 0 {
			buffer = append(buffer, chunk[:n]...)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return false
		}
	}
}

func valid(field string) bool {
	if len(field) == 0 || len(field) > 256 {
		return false
	}
	for i := 0; i < len(field); i++ {
		if field[i] < 0x21 || field[i] > 0x7e {
			return false
		}
	}
	return true
}

func (s *server) answer(line string) string {
	fields := strings.Split(line, " ")
	switch {
	case line == "":
		return "ERR empty line"
	case len(fields) == 1 && fields[0] == "PING":
		return fmt.Sprintf("PONG %d tableflip", os.Getpid())
	case len(fields) == 2 && fields[0] == "GET" && valid(fields[1]):
		s.tableMu.RLock()
		value, ok := s.table[fields[1]]
		s.tableMu.RUnlock()
		if !ok {
			return "NOTFOUND"
		}
		return "VALUE " + value
	case len(fields) == 3 && fields[0] == "SET" && valid(fields[1]) && valid(fields[2]):
		done := make(chan error, 1)
		s.writes <- writeReq{fields[1], fields[2], done}
		if err := <-done; err != nil {
			return "ERR write failed: " + err.Error()
		}
		return fmt.Sprintf("OK %d", s.generation)
	case fields[0] == "GET" || fields[0] == "SET":
		return "ERR wrong number of arguments or invalid field"
	default:
		return "ERR unknown command"
	}
}

// syncDir fsyncs a directory, so that a file created or renamed in it
// survives a power cut.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
