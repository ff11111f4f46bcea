package main

// Tests of the log: the successor's preload and open going on from it, on
// real files. Records are encoded here independently of kvlog.go, from the
// format of examples/README.md.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"strings"
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
	if err := s.openState(); err != nil {
		t.Fatal(err)
	}
	if s.preload != nil || !s.log.keptPreload || s.records() != 40 {
		t.Fatalf("preload %v, kept %v, records %d", s.preload, s.log.keptPreload, s.records())
	}
	checkTable(t, s.table, want(first))
	s.closeLog()

	second := sets("r", 7)
	writeLog(t, dir, encode(second)) // rewritten in place, same inode
	if err := s.openState(); err != nil {
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

// BenchmarkReplay100k: open (replaying everything) a log of 100,000
// records, as a cold start or a successor without a preload does.
func BenchmarkReplay100k(b *testing.B) {
	dir, data := b.TempDir(), benchLog(100000)
	if err := os.WriteFile(logPath(dir), data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, table, err := openLog(dir, nil)
		if err != nil || l.records != 100000 || len(table) != 100000 {
			b.Fatalf("%v", err)
		}
		l.f.Close()
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
