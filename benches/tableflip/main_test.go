package main

// The replay: from empty (newest-first) it must give what a forward replay
// gives, as in examples/go (whose tests cover the format in more detail).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math/rand"
	"testing"
)

// Random logs with overwrites, ending whole, torn, corrupt in the middle
// (what follows is not read, not even a record of another format) or at a
// record of another format: the same table, length, count and generation
// from empty as going forward into an empty table given, or the same
// error at the same offset.
func TestReplayFromEmptyIsForwardReplay(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 400; round++ {
		n, keys := rng.Intn(300), 1+rng.Intn(40)
		var data []byte
		var starts []int
		for i := 0; i < n; i++ {
			starts = append(starts, len(data))
			data = encode(data, uint64(rng.Intn(1000)), fmt.Sprintf("k%d", rng.Intn(keys)), fmt.Sprintf("v%d", i))
		}
		ending := rng.Intn(5)
		switch {
		case ending == 1:
			rec := encode(nil, 1, "torn", "tail")
			data = append(data, rec[:rng.Intn(len(rec))]...)
		case ending == 2 && n > 0: // a corrupt record, then one of another format
			data[starts[rng.Intn(n)]+8+13] ^= 1
			bad := encode(nil, 1, "k", "v")
			bad[8] = 2
			binary.LittleEndian.PutUint32(bad[4:], crc(bad[8:]))
			data = append(data, bad...)
		case ending == 3 && n > 0: // another format in the middle
			at := starts[rng.Intn(n)]
			data[at+8] = 0
			size := int(binary.LittleEndian.Uint32(data[at:]))
			binary.LittleEndian.PutUint32(data[at+4:], crc(data[at+8:at+8+size]))
		}
		base := int64(rng.Intn(1 << 20))
		table, valid, records, generation, err := replay(data, base, map[string]string{})
		got, gotValid, gotRecords, gotGeneration, gotErr := replay(data, base, nil)
		what := fmt.Sprintf("round %d (%d records, %d keys, ending %d)", round, n, keys, ending)
		var want, have *otherFormat
		if errors.As(err, &want) != errors.As(gotErr, &have) || (want != nil && *want != *have) ||
			(ending == 3 && n > 0 && want == nil) {
			t.Fatalf("%s: error %v from empty, %v forward", what, gotErr, err)
		}
		if gotValid != valid || gotRecords != records || gotGeneration != generation || !maps.Equal(got, table) {
			t.Fatalf("%s: from empty %d bytes, %d records, generation %d, %d keys; "+
				"forward %d, %d, %d, %d", what, gotValid, gotRecords, gotGeneration, len(got),
				valid, records, generation, len(table))
		}
		if err == nil && (ending == 0 && records != int64(n) || valid > int64(len(data))) {
			t.Fatalf("%s: %d records, %d bytes valid of %d", what, records, valid, len(data))
		}
	}
}

func crc(body []byte) uint32 { return crc32.Checksum(body, castagnoli) }

// BenchmarkPreloadOverwrites65k: the replay of a preload of 65,000 records
// over 4,096 keys (16 clients taking turns over 256 keys each), the longest
// log of the comparison benchmark.
func BenchmarkPreloadOverwrites65k(b *testing.B) {
	var data []byte
	for i := 0; i < 65000; i++ {
		data = encode(data, uint64(1+i/1000), fmt.Sprintf("runk%d-%d", i%16, i/16%256), fmt.Sprintf("v%d", i/16))
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if table, _, records, _, err := replay(data, 0, nil); err != nil || records != 65000 || len(table) != 4096 {
			b.Fatalf("%d records, %d keys, %v", records, len(table), err)
		}
	}
}
