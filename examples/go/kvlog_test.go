package main

// Tests of the log: the successor's preload and open going on from it, and
// compaction, on real files. Records are encoded here independently of kvlog.go, from the
// format of examples/README.md.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// record encodes one SET record.
func record(generation uint64, key, value string) []byte {
	body := make([]byte, recBodyFixed, recBodyFixed+len(key)+len(value))
	body[0] = opSet
	binary.LittleEndian.PutUint64(body[1:], generation)
	binary.LittleEndian.PutUint16(body[9:], uint16(len(key)))
	binary.LittleEndian.PutUint16(body[11:], uint16(len(value)))
	body = append(append(body, key...), value...)
	rec := make([]byte, recHeader, recHeader+len(body))
	binary.LittleEndian.PutUint32(rec, uint32(len(body)))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	return append(rec, body...)
}

// kv is one SET.
type kv struct{ key, value string }

// sets makes n SETs named after tag, every third one overwriting an
// earlier key.
func sets(tag string, n int) []kv {
	out := make([]kv, n)
	for i := range out {
		k := i
		if i%3 == 2 {
			k = i / 2
		}
		out[i] = kv{fmt.Sprintf("%s-k%d", tag, k), fmt.Sprintf("%s-v%d", tag, i)}
	}
	return out
}

func encode(list []kv) []byte {
	var buf []byte
	for i, s := range list {
		buf = append(buf, record(uint64(i+1), s.key, s.value)...)
	}
	return buf
}

// want is the table a replay of every list in order ends with.
func want(lists ...[]kv) map[string]string {
	m := map[string]string{}
	for _, list := range lists {
		for _, s := range list {
			m[s.key] = s.value
		}
	}
	return m
}

func logPath(dir string) string { return filepath.Join(dir, logFile) }

func writeLog(t *testing.T, dir string, data []byte) {
	t.Helper()
	if err := os.WriteFile(logPath(dir), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func appendLog(t *testing.T, dir string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(logPath(dir), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
}

func mustPreload(t *testing.T, dir string) *logPreload {
	t.Helper()
	pre, err := preloadLog(dir)
	if err != nil {
		t.Fatalf("preload: %v", err)
	}
	return pre
}

func mustOpen(t *testing.T, dir string, pre *logPreload) (*kvLog, map[string]string) {
	t.Helper()
	l, table, err := openLog(dir, pre)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { l.close() })
	return l, table
}

func checkTable(t *testing.T, got, expected map[string]string) {
	t.Helper()
	if !maps.Equal(got, expected) {
		t.Fatalf("table has %d keys, want %d; equal: false", len(got), len(expected))
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

// An incumbent (a kvLog of its own) appends before and after the preload;
// open keeps the preload and replays only what came after.
func TestPreloadThenAppendsThenOpenKeepsPreload(t *testing.T) {
	dir := t.TempDir()
	inc, _ := mustOpen(t, dir, nil)
	first, later := sets("a", 1000), sets("b", 300)
	later = append(later, first[:50]...) // overwrites of preloaded keys
	for _, s := range first {
		if _, err := inc.appendSet(1, []byte(s.key), []byte(s.value)); err != nil {
			t.Fatal(err)
		}
	}
	pre := mustPreload(t, dir)
	if pre == nil || pre.records != 1000 || pre.end != inc.end() {
		t.Fatalf("preload: %+v, log end %d", pre, inc.end())
	}
	checkTable(t, pre.table, want(first))
	for _, s := range later {
		if _, err := inc.appendSet(2, []byte(s.key), []byte(s.value)); err != nil {
			t.Fatal(err)
		}
	}
	if err := inc.close(); err != nil {
		t.Fatal(err)
	}

	l, table := mustOpen(t, dir, pre)
	if !l.keptPreload {
		t.Fatal("open did not keep the preload")
	}
	if l.records != 1350 || l.truncated != 0 || l.size != fileSize(t, logPath(dir)) {
		t.Fatalf("records %d, truncated %d, size %d", l.records, l.truncated, l.size)
	}
	checkTable(t, table, want(first, later))

	// The same as a replay from scratch.
	l2, table2 := mustOpen(t, dir, nil)
	if l2.keptPreload || l2.records != l.records {
		t.Fatalf("fresh replay: kept %v, records %d", l2.keptPreload, l2.records)
	}
	checkTable(t, table2, table)
}

// Another file renamed over kv.log between preload and open: replay it all,
// and nothing of the preload stays.
func TestPreloadFileReplaced(t *testing.T) {
	dir := t.TempDir()
	old, replacement := sets("old", 100), sets("new", 400)
	writeLog(t, dir, encode(old))
	pre := mustPreload(t, dir)
	if pre == nil || pre.records != 100 {
		t.Fatalf("preload: %+v", pre)
	}
	tmp := filepath.Join(dir, "kv.log.tmp")
	if err := os.WriteFile(tmp, encode(replacement), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, logPath(dir)); err != nil {
		t.Fatal(err)
	}
	if fileSize(t, logPath(dir)) < pre.end {
		t.Fatal("the replacement should be at least as long as the preload")
	}
	l, table := mustOpen(t, dir, pre)
	if l.keptPreload || l.records != 400 {
		t.Fatalf("kept %v, records %d", l.keptPreload, l.records)
	}
	checkTable(t, table, want(replacement))
}

// The same file, but shorter than what the preload read: replay it all.
func TestPreloadFileShorter(t *testing.T) {
	dir := t.TempDir()
	old, other := sets("old", 100), sets("other", 20)
	writeLog(t, dir, encode(old))
	pre := mustPreload(t, dir)
	if pre == nil || pre.records != 100 {
		t.Fatalf("preload: %+v", pre)
	}
	// In place (same inode): cut to 10 records, then write others after.
	keep := int64(len(encode(old[:10])))
	if err := os.Truncate(logPath(dir), keep); err != nil {
		t.Fatal(err)
	}
	appendLog(t, dir, encode(other))
	if fileSize(t, logPath(dir)) >= pre.end {
		t.Fatal("the file should be shorter than the preload")
	}
	l, table := mustOpen(t, dir, pre)
	if l.keptPreload || l.records != 30 {
		t.Fatalf("kept %v, records %d", l.keptPreload, l.records)
	}
	checkTable(t, table, want(old[:10], other))
}

// A record half written during the preload and completed before open is
// read at open; the preload cut nothing.
func TestPreloadTornTailCompletedBeforeOpen(t *testing.T) {
	dir := t.TempDir()
	list := sets("t", 50)
	whole := encode(list[:49])
	last := record(50, list[49].key, list[49].value)
	writeLog(t, dir, append(append([]byte{}, whole...), last[:10]...))
	pre := mustPreload(t, dir)
	if pre == nil || pre.records != 49 || pre.end != int64(len(whole)) {
		t.Fatalf("preload: %+v", pre)
	}
	if _, ok := pre.table[list[49].key]; ok {
		t.Fatal("the torn record was read")
	}
	if fileSize(t, logPath(dir)) != int64(len(whole)+10) {
		t.Fatal("the preload cut the torn tail")
	}
	appendLog(t, dir, last[10:])
	l, table := mustOpen(t, dir, pre)
	if !l.keptPreload || l.records != 50 || l.truncated != 0 {
		t.Fatalf("kept %v, records %d, truncated %d", l.keptPreload, l.records, l.truncated)
	}
	checkTable(t, table, want(list))
}

// A torn tail still there at open is cut by open (after the lock), not by
// the preload.
func TestPreloadTornTailStillTornAtOpen(t *testing.T) {
	dir := t.TempDir()
	list := sets("t", 20)
	whole := encode(list)
	writeLog(t, dir, append(append([]byte{}, whole...), record(9, "x", "y")[:15]...))
	pre := mustPreload(t, dir)
	l, table := mustOpen(t, dir, pre)
	if !l.keptPreload || l.records != 20 || l.truncated != 15 || l.size != int64(len(whole)) {
		t.Fatalf("kept %v, records %d, truncated %d, size %d", l.keptPreload, l.records, l.truncated, l.size)
	}
	if fileSize(t, logPath(dir)) != int64(len(whole)) {
		t.Fatal("open did not cut the torn tail")
	}
	checkTable(t, table, want(list))
}

// No log when the successor preloads: nothing preloaded, nothing created,
// and open works (on a log the incumbent created meanwhile, or none).
func TestPreloadNoLog(t *testing.T) {
	dir := t.TempDir()
	pre := mustPreload(t, dir)
	if pre != nil {
		t.Fatalf("preloaded %+v from nothing", pre)
	}
	if _, err := os.Stat(logPath(dir)); !os.IsNotExist(err) {
		t.Fatalf("the preload created the log: %v", err)
	}
	l, table := mustOpen(t, dir, pre)
	if l.keptPreload || l.records != 0 || len(table) != 0 {
		t.Fatalf("kept %v, records %d, %d keys", l.keptPreload, l.records, len(table))
	}

	dir = t.TempDir()
	pre = mustPreload(t, dir)
	list := sets("n", 10)
	writeLog(t, dir, encode(list))
	l, table = mustOpen(t, dir, pre)
	if l.records != 10 {
		t.Fatalf("records %d", l.records)
	}
	checkTable(t, table, want(list))
}

// A preload writes nothing: same bytes, same mtime, same directory.
func TestPreloadNeverWrites(t *testing.T) {
	dir := t.TempDir()
	data := append(encode(sets("w", 30)), 0xff, 0xff, 0, 0, 1, 2, 3) // and a bad tail
	writeLog(t, dir, data)
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(logPath(dir), past, past); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dir, past, past); err != nil {
		t.Fatal(err)
	}
	pre := mustPreload(t, dir)
	if pre == nil || pre.records != 30 {
		t.Fatalf("preload: %+v", pre)
	}
	got, err := os.ReadFile(logPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the preload changed the log")
	}
	for _, path := range []string{logPath(dir), dir} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if !info.ModTime().Equal(past) {
			t.Fatalf("the preload changed the mtime of %s", path)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory: %v, %v", entries, err)
	}

	// Without a log, nothing is created (nor the directory touched).
	empty := t.TempDir()
	if err := os.Chtimes(empty, past, past); err != nil {
		t.Fatal(err)
	}
	if pre := mustPreload(t, empty); pre != nil {
		t.Fatal("preloaded something from nothing")
	}
	entries, err = os.ReadDir(empty)
	if err != nil || len(entries) != 0 {
		t.Fatalf("directory: %v, %v", entries, err)
	}
	if info, err := os.Stat(empty); err != nil || !info.ModTime().Equal(past) {
		t.Fatal("the preload touched an empty data dir")
	}
}

// A record of another format is fatal, in the preload and in what open
// replays after it (the offset counts from the start of the file).
func TestPreloadOtherFormat(t *testing.T) {
	bad := record(1, "k", "v")
	bad[recHeader] = 2 // op 2
	binary.LittleEndian.PutUint32(bad[4:], crc32.Checksum(bad[recHeader:], castagnoli))

	dir := t.TempDir()
	good := encode(sets("f", 5))
	writeLog(t, dir, append(append([]byte{}, good...), bad...))
	if _, err := preloadLog(dir); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprintf("record at offset %d ", len(good))) {
		t.Fatalf("preload: %v", err)
	}

	dir = t.TempDir()
	writeLog(t, dir, good)
	pre := mustPreload(t, dir)
	appendLog(t, dir, bad)
	before, _ := os.ReadFile(logPath(dir))
	if _, _, err := openLog(dir, pre); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprintf("record at offset %d ", len(good))) {
		t.Fatalf("open: %v", err)
	}
	if after, _ := os.ReadFile(logPath(dir)); !bytes.Equal(before, after) {
		t.Fatal("open changed a log of another format")
	}
}

// The server: openState uses the preload up, so that a later open (resume
// after an aborted handoff) replays everything from scratch.
func TestOpenStateUsesPreloadUp(t *testing.T) {
	dir := t.TempDir()
	first := sets("s", 40)
	writeLog(t, dir, encode(first))
	s := newServer(dir)
	if err := s.preloadState(); err != nil {
		t.Fatal(err)
	}
	if err := s.openState(1); err != nil {
		t.Fatal(err)
	}
	if s.preload != nil || !s.log.keptPreload || s.records() != 40 {
		t.Fatalf("preload %v, kept %v, records %d", s.preload, s.log.keptPreload, s.records())
	}
	checkTable(t, s.table, want(first))
	s.closeLog()

	second := sets("r", 7)
	writeLog(t, dir, encode(second)) // rewritten in place, same inode
	if err := s.openState(1); err != nil {
		t.Fatal(err)
	}
	defer s.closeLog()
	if s.log.keptPreload || s.records() != 7 {
		t.Fatalf("kept %v, records %d", s.log.keptPreload, s.records())
	}
	checkTable(t, s.table, want(second))
}

// Replay keeps the last value of every key and sizes its table to the keys.
func TestReplayOverwrites(t *testing.T) {
	var list []kv
	for i := 0; i < 5000; i++ {
		list = append(list, kv{fmt.Sprintf("k%d", i%10), fmt.Sprintf("v%d", i)})
	}
	table, end, records, err := replay(encode(list), 0, nil)
	if err != nil || records != 5000 || end != int64(len(encode(list))) {
		t.Fatalf("records %d, end %d, %v", records, end, err)
	}
	checkTable(t, table, want(list))
}

// referenceReplay is replay as examples/README.md says it, written here
// independently and forward: the table (later records win), the length of
// the valid records and their count, or the offset of the first record of
// another format (-1: none).
func referenceReplay(data []byte, base int64) (map[string]string, int64, uint64, int64) {
	table := map[string]string{}
	off, records := 0, uint64(0)
	for len(data)-off >= 8 {
		bodyLen := int(binary.LittleEndian.Uint32(data[off:]))
		if bodyLen < 15 || bodyLen > 525 || len(data)-off-8 < bodyLen {
			break
		}
		body := data[off+8 : off+8+bodyLen]
		if crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)) != binary.LittleEndian.Uint32(data[off+4:]) {
			break
		}
		keyLen := int(binary.LittleEndian.Uint16(body[9:]))
		valueLen := int(binary.LittleEndian.Uint16(body[11:]))
		allowed := func(item []byte) bool {
			return len(item) >= 1 && len(item) <= 256 && !bytes.ContainsFunc(item, func(r rune) bool {
				return r < 0x21 || r > 0x7e
			})
		}
		if body[0] != 1 || bodyLen != 13+keyLen+valueLen ||
			!allowed(body[13:13+keyLen]) || !allowed(body[13+keyLen:]) {
			return nil, 0, 0, base + int64(off)
		}
		table[string(body[13:13+keyLen])] = string(body[13+keyLen:])
		records++
		off += 8 + bodyLen
	}
	return table, int64(off), records, -1
}

// randomItem is 1 to 256 printable bytes, mostly short.
func randomItem(rng *rand.Rand, tag string, n int) string {
	s := fmt.Sprintf("%s%d", tag, n)
	if rng.Intn(20) == 0 {
		s += strings.Repeat("~", rng.Intn(257-len(s)))
	}
	return s
}

// withCRC recomputes the CRC of the record at data[off:].
func withCRC(data []byte, off int) {
	bodyLen := int(binary.LittleEndian.Uint32(data[off:]))
	binary.LittleEndian.PutUint32(data[off+4:], crc32.Checksum(data[off+8:off+8+bodyLen], castagnoli))
}

// Replay from empty (newest-first) gives what a forward replay gives: the
// same table, length and count, on random logs with overwrites and every
// way of ending: whole, torn header or body, zero-filled or bad length,
// a corrupt record in the middle (what follows it is not read, not even a
// record of another format), or a record of another format (the error,
// with its offset from the start of the file).
func TestReplayFromEmptyIsForwardReplay(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 400; round++ {
		n, keys := rng.Intn(300), 1+rng.Intn(40)
		var data []byte
		starts := []int{}
		for i := 0; i < n; i++ {
			starts = append(starts, len(data))
			data = append(data, record(uint64(i), randomItem(rng, "k", rng.Intn(keys)),
				randomItem(rng, "v", i))...)
		}
		ending := rng.Intn(8)
		switch {
		case ending == 1: // a torn record
			rec := record(1, "torn", "tail")
			data = append(data, rec[:rng.Intn(len(rec))]...)
		case ending == 2: // zeros
			data = append(data, make([]byte, 1+rng.Intn(40))...)
		case ending == 3: // a length out of bounds
			data = binary.LittleEndian.AppendUint32(data, uint32([]int{0, 14, 526, 1 << 31}[rng.Intn(4)]))
			data = append(data, make([]byte, 600)...)
		case ending == 4 && n > 0: // a corrupt record, then others (one of another format)
			at := starts[rng.Intn(n)]
			data[at+8+13] ^= 0x01 // the first byte of the key
			bad := record(7, "k", "v")
			bad[8] = 2
			withCRC(bad, 0)
			data = append(append(data, bad...), record(8, "k0", "after")...)
		case ending == 5 && n > 0: // another format, in the middle
			at := starts[rng.Intn(n)]
			switch rng.Intn(4) {
			case 0:
				data[at+8] = 0 // op
			case 1:
				data[at+8+9]++ // key_len: the lengths no longer add up
			case 2:
				data[at+8+13] = ' ' // a space in the key
			case 3:
				data[at+8+13] = 0x7f
			}
			withCRC(data, at)
		}
		base := int64(0)
		if rng.Intn(2) == 0 {
			base = int64(rng.Intn(1 << 20))
		}
		expected, valid, records, errAt := referenceReplay(data, base)

		for _, table := range []map[string]string{nil, {}} {
			got, gotValid, gotRecords, err := replay(data, base, table)
			what := fmt.Sprintf("round %d (%d records, %d keys, ending %d, from empty %v)",
				round, n, keys, ending, table == nil)
			if errAt >= 0 {
				if err == nil || got != nil ||
					!strings.Contains(err.Error(), fmt.Sprintf("record at offset %d has a valid checksum", errAt)) {
					t.Fatalf("%s: %v, want the record at %d to be of another format", what, err, errAt)
				}
				continue
			}
			if err != nil || gotValid != valid || gotRecords != records {
				t.Fatalf("%s: valid %d, records %d, %v; want %d, %d", what, gotValid, gotRecords, err, valid, records)
			}
			if !maps.Equal(got, expected) {
				t.Fatalf("%s: %d keys, want %d; equal: false", what, len(got), len(expected))
			}
		}
	}
}

// Through openLog and preloadLog too: the table from empty is the forward
// one, a corrupt record in the middle is where open cuts the log, and a
// record of another format after it is never looked at.
func TestOpenFromEmptyCutsAtCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	data := overwriteLog(5000)
	starts := 0
	for i := 0; i < 3000; i++ {
		starts += 8 + int(binary.LittleEndian.Uint32(data[starts:]))
	}
	corrupt := append([]byte{}, data...)
	corrupt[starts+4] ^= 0xff // the CRC of record 3,000
	bad := record(1, "k", "v")
	bad[8] = 2
	withCRC(bad, 0)
	corrupt = append(corrupt, bad...)
	writeLog(t, dir, corrupt)
	expected, valid, records, errAt := referenceReplay(corrupt, 0)
	if errAt >= 0 || valid != int64(starts) || records != 3000 {
		t.Fatalf("reference: %d, %d, %d", valid, records, errAt)
	}
	pre := mustPreload(t, dir)
	if pre.records != 3000 || pre.end != int64(starts) {
		t.Fatalf("preload: %d records, end %d", pre.records, pre.end)
	}
	checkTable(t, pre.table, expected)
	l, table := mustOpen(t, dir, nil)
	if l.records != 3000 || l.size != int64(starts) || l.truncated != int64(len(corrupt)-starts) {
		t.Fatalf("open: records %d, size %d, truncated %d", l.records, l.size, l.truncated)
	}
	checkTable(t, table, expected)
}

// The table is sized for the keys: the estimate is close to their number,
// whether records overwrite each other or not.
func TestKeyCounterEstimate(t *testing.T) {
	for _, c := range []struct{ records, keys int }{{0, 0}, {1, 1}, {65000, 4096}, {100000, 100000}, {20000, 10}} {
		counter := newKeyCounter(c.records)
		for i := 0; i < c.records; i++ {
			counter.add([]byte(fmt.Sprintf("key-%d", i%max(c.keys, 1))))
		}
		if got := counter.estimate(); got < c.keys-c.keys/50 || got > c.keys+c.keys/50+2 {
			t.Errorf("%d records over %d keys: estimate %d", c.records, c.keys, got)
		}
	}
}

// benchLog is a log of n records like the benchmark's load (each client
// SETs keys of its own, each once).
func benchLog(n int) []byte {
	var buf []byte
	for i := 1; i <= n; i++ {
		buf = append(buf, record(uint64(1+i/1000), fmt.Sprintf("c%d-%d", i%8, i),
			fmt.Sprintf("v%d-%d", i, (i*7919)%100000))...)
	}
	return buf
}

// benchDir is a data directory whose kv.log is data, for a benchmark that
// reads it b.N times: bytes per operation and allocations reported, the
// timer started afresh.
func benchDir(b *testing.B, data []byte) string {
	dir := b.TempDir()
	if err := os.WriteFile(logPath(dir), data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	return dir
}

// BenchmarkReplay100k: open (replaying everything) a log of 100,000
// records, as a cold start or a successor without a preload does.
func BenchmarkReplay100k(b *testing.B) {
	dir := benchDir(b, benchLog(100000))
	for i := 0; i < b.N; i++ {
		l, table, err := openLog(dir, nil)
		if err != nil || l.records != 100000 || len(table) != 100000 {
			b.Fatalf("%v", err)
		}
		l.f.Close()
	}
}

// overwriteLog is a log like the comparison benchmark's before compaction:
// 16 clients taking turns, each SETting its 256 keys over and over (4,096
// keys in all), values "v<n>".
func overwriteLog(n int) []byte {
	var buf []byte
	for i := 0; i < n; i++ {
		client, round := i%16, i/16
		buf = append(buf, record(uint64(1+i/1000), fmt.Sprintf("runk%d-%d", client, round%256),
			fmt.Sprintf("v%d", round))...)
	}
	return buf
}

// BenchmarkPreloadOverwrites65k: a successor's preload of 65,000 records
// over 4,096 keys, the longest log the benchmark's services replay.
func BenchmarkPreloadOverwrites65k(b *testing.B) {
	dir := benchDir(b, overwriteLog(65000))
	for i := 0; i < b.N; i++ {
		pre, err := preloadLog(dir)
		if err != nil || pre.records != 65000 || len(pre.table) != 4096 {
			b.Fatalf("%v", err)
		}
	}
}

// BenchmarkOpenAfterPreload100k: what a successor replays after Begin when
// 1,000 records were appended since its preload of 100,000.
func BenchmarkOpenAfterPreload100k(b *testing.B) {
	data, tail := benchLog(100000), encode(sets("tail", 1000))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir, err := os.MkdirTemp(b.TempDir(), "")
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(logPath(dir), data, 0o644); err != nil {
			b.Fatal(err)
		}
		pre, err := preloadLog(dir)
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.OpenFile(logPath(dir), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(tail); err != nil {
			b.Fatal(err)
		}
		f.Close()
		b.StartTimer()
		l, _, err := openLog(dir, pre)
		if err != nil || !l.keptPreload || l.records != 101000 {
			b.Fatalf("%v", err)
		}
		l.f.Close()
	}
}

// A log that cannot be read (here a directory in its place) is no preload,
// not a failure: opening after the lock decides.
func TestPreloadOfAnUnreadableLogIsNotAFormatError(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, logFile), 0o755); err != nil {
		t.Fatal(err)
	}
	pre, err := preloadLog(dir)
	var unreadable *unreadableLogError
	if pre != nil || !errors.As(err, &unreadable) {
		t.Fatalf("preload of a directory: %v, %v; want an unreadableLogError", pre, err)
	}
}

// ---- compaction ------------------------------------------------------------------

// parsed is one record as the test reads it, independently of kvlog.go.
type parsed struct {
	generation uint64
	key, value string
}

// parseLog reads every record of data, failing on anything but whole,
// valid SET records.
func parseLog(t *testing.T, data []byte) []parsed {
	t.Helper()
	var out []parsed
	table := crc32.MakeTable(crc32.Castagnoli)
	for off := 0; off < len(data); {
		if len(data)-off < 8 {
			t.Fatalf("torn header at offset %d", off)
		}
		bodyLen := int(binary.LittleEndian.Uint32(data[off:]))
		if bodyLen < 15 || bodyLen > 525 || len(data)-off-8 < bodyLen {
			t.Fatalf("bad length %d at offset %d", bodyLen, off)
		}
		body := data[off+8 : off+8+bodyLen]
		if crc32.Checksum(body, table) != binary.LittleEndian.Uint32(data[off+4:]) {
			t.Fatalf("bad CRC at offset %d", off)
		}
		keyLen := int(binary.LittleEndian.Uint16(body[9:]))
		valueLen := int(binary.LittleEndian.Uint16(body[11:]))
		if body[0] != 1 || bodyLen != 13+keyLen+valueLen {
			t.Fatalf("not a SET record at offset %d", off)
		}
		out = append(out, parsed{binary.LittleEndian.Uint64(body[1:]),
			string(body[13 : 13+keyLen]), string(body[13+keyLen:])})
		off += 8 + bodyLen
	}
	return out
}

// checkCompacted: the file at path holds exactly one record per key of
// expected, each with the given generation.
func checkCompacted(t *testing.T, path string, expected map[string]string, generation uint64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	records := parseLog(t, data)
	got := map[string]string{}
	for _, r := range records {
		if r.generation != generation {
			t.Fatalf("record of %s has generation %d, want %d", r.key, r.generation, generation)
		}
		if _, dup := got[r.key]; dup {
			t.Fatalf("two records of %s", r.key)
		}
		got[r.key] = r.value
	}
	checkTable(t, got, expected)
}

func inode(t *testing.T, info os.FileInfo) uint64 {
	t.Helper()
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatal("no inode")
	}
	return uint64(st.Ino)
}

func fileInode(t *testing.T, path string) uint64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return inode(t, info)
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: %v, want it gone", path, err)
	}
}

// overwrites makes records SETs over keys keys, cycling through them, with
// generations going up every 1000 records. Raw bytes, no fsync: fast.
func overwrites(records, keys int) ([]byte, map[string]string) {
	buf := make([]byte, 0, records*32)
	table := map[string]string{}
	for i := 0; i < records; i++ {
		key, value := fmt.Sprintf("key%d", i%keys), fmt.Sprintf("v%d", i)
		buf = append(buf, record(uint64(1+i/1000), key, value)...)
		table[key] = value
	}
	return buf, table
}

// The policy: at least 65,536 records and at least twice as many records
// as keys, both bounds included.
func TestCompactionPolicy(t *testing.T) {
	if compactMinRecords != 65536 || compactMinRecordsPerKey != 2 {
		t.Fatalf("policy %d records, %d per key; the contract says 65,536 and 2",
			compactMinRecords, compactMinRecordsPerKey)
	}
	cases := []struct {
		records uint64
		keys    int
		want    bool
	}{
		{0, 0, false},
		{65535, 1, false},      // too short, however many overwrites
		{65536, 1, true},       // long enough
		{65536, 32768, true},   // exactly twice as many records as keys
		{65536, 32769, false},  // a little less than twice
		{65536, 65536, false},  // no overwrites at all
		{131072, 65536, true},  // twice
		{131071, 65536, false}, // one short of twice
		{1 << 40, 1 << 20, true},
	}
	for _, c := range cases {
		if got := shouldCompact(c.records, c.keys); got != c.want {
			t.Errorf("shouldCompact(%d records, %d keys) = %v, want %v", c.records, c.keys, got, c.want)
		}
	}
}

// Compaction leaves one record per key, stamped with the given generation,
// in a new file that a reopen replays to the same table; appends go on in
// the new file and survive a reopen.
func TestCompactLogOneRecordPerKey(t *testing.T) {
	dir := t.TempDir()
	first, again := sets("c", 3000), sets("c", 1500) // again: overwrites of first's keys
	writeLog(t, dir, append(encode(first), encode(again)...))
	oldInode := fileInode(t, logPath(dir))
	l, table := mustOpen(t, dir, nil)
	expected := want(first, again)
	checkTable(t, table, expected)
	if l.records != 4500 {
		t.Fatalf("records %d", l.records)
	}

	if err := compactLog(l, table, 7); err != nil {
		t.Fatalf("compaction: %v", err)
	}
	if l.records != uint64(len(expected)) || l.size != fileSize(t, logPath(dir)) {
		t.Fatalf("after compaction: records %d (%d keys), size %d", l.records, len(expected), l.size)
	}
	mustNotExist(t, filepath.Join(dir, compactFile))
	if fileInode(t, logPath(dir)) == oldInode {
		t.Fatal("kv.log is still the old file")
	}
	checkCompacted(t, logPath(dir), expected, 7)

	// A reopen replays the same table from the compacted file.
	l2, table2 := mustOpen(t, dir, nil)
	if l2.records != uint64(len(expected)) {
		t.Fatalf("reopen: records %d", l2.records)
	}
	checkTable(t, table2, expected)
	l2.close()

	// Appends after the compaction land in the new file (the one kv.log
	// names) and are there on reopen.
	compacted := l.size
	end, err := l.appendSet(8, []byte("after"), []byte("compaction"))
	if err != nil {
		t.Fatal(err)
	}
	l.waitDurable(end, func(format string, args ...any) { t.Fatalf(format, args...) })
	info, err := l.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if inode(t, info) != fileInode(t, logPath(dir)) {
		t.Fatal("the log appends to a file kv.log no longer names")
	}
	if want := compacted + int64(len(record(8, "after", "compaction"))); fileSize(t, logPath(dir)) != want || end != want {
		t.Fatalf("size %d, end %d, want %d", fileSize(t, logPath(dir)), end, want)
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	l3, table3 := mustOpen(t, dir, nil)
	expected["after"] = "compaction"
	if l3.records != uint64(len(expected)) {
		t.Fatalf("reopen after append: records %d", l3.records)
	}
	checkTable(t, table3, expected)
}

// A kv.log.compact left by a process that died mid-compaction is removed
// on open, and kv.log is replayed as it is, unchanged.
func TestOpenRemovesStaleCompaction(t *testing.T) {
	dir := t.TempDir()
	list := sets("s", 200)
	data := encode(list)
	writeLog(t, dir, data)
	stale := filepath.Join(dir, compactFile)
	half := encode(sets("other", 50))
	if err := os.WriteFile(stale, half[:len(half)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	l, table := mustOpen(t, dir, nil)
	if !l.removedStale || l.records != 200 {
		t.Fatalf("removed %v, records %d", l.removedStale, l.records)
	}
	mustNotExist(t, stale)
	checkTable(t, table, want(list))
	if got, err := os.ReadFile(logPath(dir)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("kv.log changed: %v", err)
	}
	l.close()

	// Even before the log exists (a first open), and the next open has
	// nothing to remove.
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, compactFile), half, 0o644); err != nil {
		t.Fatal(err)
	}
	l, table = mustOpen(t, dir, nil)
	if !l.removedStale || l.records != 0 || len(table) != 0 {
		t.Fatalf("removed %v, records %d, %d keys", l.removedStale, l.records, len(table))
	}
	mustNotExist(t, filepath.Join(dir, compactFile))
	l.close()
	if l, _ = mustOpen(t, dir, nil); l.removedStale {
		t.Fatal("removed a stale compaction twice")
	}
}

// openState (every open of the service: cold start, successor, resume)
// compacts a log of at least 65,536 records holding few keys, and leaves
// alone one a record too short or with too many keys.
func TestOpenStateCompacts(t *testing.T) {
	dir := t.TempDir()
	data, expected := overwrites(compactMinRecords, 100)
	writeLog(t, dir, data)
	s := newServer(dir)
	if err := s.openState(5); err != nil {
		t.Fatal(err)
	}
	if s.records() != 100 {
		t.Fatalf("records %d, want 100", s.records())
	}
	checkTable(t, s.table, expected)
	s.closeLog()
	checkCompacted(t, logPath(dir), expected, 5)

	// Short by one record: nothing happens.
	dir = t.TempDir()
	data, expected = overwrites(compactMinRecords-1, 100)
	writeLog(t, dir, data)
	s = newServer(dir)
	if err := s.openState(5); err != nil {
		t.Fatal(err)
	}
	if s.records() != compactMinRecords-1 {
		t.Fatalf("records %d", s.records())
	}
	checkTable(t, s.table, expected)
	s.closeLog()
	if got, _ := os.ReadFile(logPath(dir)); !bytes.Equal(got, data) {
		t.Fatal("a log under the threshold was rewritten")
	}

	// Long enough, but more than half of the records are for distinct keys.
	dir = t.TempDir()
	data, expected = overwrites(compactMinRecords, compactMinRecords/2+1)
	writeLog(t, dir, data)
	s = newServer(dir)
	if err := s.openState(5); err != nil {
		t.Fatal(err)
	}
	if s.records() != compactMinRecords {
		t.Fatalf("records %d", s.records())
	}
	checkTable(t, s.table, expected)
	s.closeLog()
	if got, _ := os.ReadFile(logPath(dir)); !bytes.Equal(got, data) {
		t.Fatal("a log with few overwrites was rewritten")
	}
}

// A successor goes on from its preload and then compacts: the table is the
// whole log's, and a later preload of the compacted file works.
func TestOpenStateCompactsAfterPreload(t *testing.T) {
	dir := t.TempDir()
	data, expected := overwrites(compactMinRecords, 300)
	writeLog(t, dir, data)
	s := newServer(dir)
	if err := s.preloadState(); err != nil {
		t.Fatal(err)
	}
	tail := sets("tail", 30)
	appendLog(t, dir, encode(tail))
	if err := s.openState(9); err != nil {
		t.Fatal(err)
	}
	maps.Copy(expected, want(tail))
	if !s.log.keptPreload || s.records() != uint64(len(expected)) {
		t.Fatalf("kept %v, records %d, %d keys", s.log.keptPreload, s.records(), len(expected))
	}
	checkTable(t, s.table, expected)
	s.closeLog()
	checkCompacted(t, logPath(dir), expected, 9)
	pre := mustPreload(t, dir)
	if pre == nil || pre.records != uint64(len(expected)) {
		t.Fatalf("preload of the compacted log: %+v", pre)
	}
	checkTable(t, pre.table, expected)
}

// limitFileSize makes writes past limit bytes of any regular file fail
// with EFBIG (RLIMIT_FSIZE binds root too; Go ignores SIGXFSZ), until the
// returned function is called. Nothing else may write files meanwhile.
func limitFileSize(t *testing.T, limit uint64) func() {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lowered := syscall.Rlimit{Cur: min(limit, old.Cur), Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lowered); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatalf("restoring RLIMIT_FSIZE: %v", err)
		}
	}
	t.Cleanup(restore)
	return restore
}

// A compaction that fails before its rename (here kv.log.compact cannot
// grow past 4 KiB: a real EFBIG from the kernel, as a full disk would give
// ENOSPC) removes kv.log.compact and leaves the old log as it was, still
// appended to.
func TestCompactionFailureKeepsTheLog(t *testing.T) {
	dir := t.TempDir()
	list := append(sets("f", 3000), sets("f", 1000)...)
	data := encode(list)
	writeLog(t, dir, data)
	oldInode := fileInode(t, logPath(dir))
	l, table := mustOpen(t, dir, nil)
	size := l.size

	restore := limitFileSize(t, 4096)
	err := compactLog(l, table, 3)
	restore()
	var kept *compactKeptError
	if !errors.As(err, &kept) || !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("compaction: %v; want a compactKeptError of EFBIG", err)
	}
	mustNotExist(t, filepath.Join(dir, compactFile))
	if got, err := os.ReadFile(logPath(dir)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("kv.log changed: %v", err)
	}
	if fileInode(t, logPath(dir)) != oldInode || l.records != 4000 || l.size != size {
		t.Fatalf("records %d, size %d (was %d)", l.records, l.size, size)
	}

	// The old log goes on.
	if _, err := l.appendSet(4, []byte("still"), []byte("here")); err != nil {
		t.Fatal(err)
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	l2, table2 := mustOpen(t, dir, nil)
	expected := want(list)
	expected["still"] = "here"
	if l2.records != 4001 {
		t.Fatalf("reopen: records %d", l2.records)
	}
	checkTable(t, table2, expected)
}

// The service goes on with the old log when its compaction fails: openState
// succeeds with every record counted and the file untouched.
func TestOpenStateGoesOnWhenCompactionFails(t *testing.T) {
	dir := t.TempDir()
	data, expected := overwrites(compactMinRecords, 1000)
	writeLog(t, dir, data)
	s := newServer(dir)
	restore := limitFileSize(t, 1024)
	err := s.openState(2)
	restore()
	if err != nil {
		t.Fatalf("openState: %v", err)
	}
	defer s.closeLog()
	if s.records() != compactMinRecords {
		t.Fatalf("records %d", s.records())
	}
	checkTable(t, s.table, expected)
	mustNotExist(t, filepath.Join(dir, compactFile))
	if got, _ := os.ReadFile(logPath(dir)); !bytes.Equal(got, data) {
		t.Fatal("kv.log changed")
	}
}

// A wait for durability that a drain which moves the connections cuts
// short: with carry set it neither syncs nor waits for a group commit in
// flight (woken by wakeWaiters), and says the bytes are not durable.
func TestWaitDurableUnlessCarryGivesUp(t *testing.T) {
	l, _ := mustOpen(t, t.TempDir(), nil)
	fail := func(format string, args ...any) { t.Errorf(format, args...) }
	end, err := l.appendSet(1, []byte("k"), []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	var carry atomic.Bool
	carry.Store(true)
	if l.waitDurableUnless(end, fail, &carry) || l.durable(end) {
		t.Fatal("a wait with carry set synced")
	}

	// A group commit in flight (syncing, as another connection's): the
	// waiter waits until wakeWaiters, once carry is set.
	carry.Store(false)
	l.sync.Lock()
	l.syncing = true
	l.sync.Unlock()
	gave := make(chan bool)
	go func() { gave <- l.waitDurableUnless(end, fail, &carry) }()
	select {
	case <-gave:
		t.Fatal("the waiter did not wait for the group commit in flight")
	case <-time.After(50 * time.Millisecond):
	}
	carry.Store(true)
	l.wakeWaiters()
	if <-gave {
		t.Fatal("the woken waiter says the bytes are durable")
	}
	l.sync.Lock()
	l.syncing = false
	l.sync.Unlock()

	// Without carry it syncs, as waitDurable does.
	carry.Store(false)
	if !l.waitDurableUnless(end, fail, &carry) || !l.durable(end) {
		t.Fatal("the wait without carry did not make the bytes durable")
	}
}
