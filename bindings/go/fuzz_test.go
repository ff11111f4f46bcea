package handoff

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the binding's decoders (Decode and a
// FrameReader fed in two pieces): never a panic or a crash, errors carry a
// status, and whatever decodes encodes back canonically and decodes to the
// same bytes again. `go test` runs the seeds (the golden vectors); fuzz
// with
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 10m
//
// (see docs/reliability.md).
func FuzzDecode(f *testing.F) {
	dir := filepath.Join(repoRoot(f), "tests", "vectors", "frames")
	entries, err := os.ReadDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	var all []byte
	for _, entry := range entries {
		frame, err := os.ReadFile(filepath.Join(dir, entry.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
		f.Add(frame[:len(frame)-1])
		f.Add(append(append([]byte{}, frame...), 0, 0, 0, 0))
		all = append(all, frame...)
	}
	f.Add(all)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 0})
	f.Add([]byte{3, 0, 0, 0, 1, 0, 99})

	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		checkReader(t, data)
	})
}

// checkStatus fails on an error that is not one of the binding's, or that
// reports a panic inside the library.
func checkStatus(t *testing.T, err error) {
	t.Helper()
	var herr *Error
	if !errors.As(err, &herr) {
		t.Fatalf("an error that is not a *handoff.Error: %T %v", err, err)
	}
	if errors.Is(err, ErrPanic) || herr.Message == "" {
		t.Fatalf("bad error: %v", err)
	}
}

func checkDecode(t *testing.T, data []byte) {
	frame, n, err := Decode(data)
	if err != nil {
		checkStatus(t, err)
		if errors.Is(err, ErrIncomplete) {
			if n <= len(data) {
				t.Fatalf("incomplete with %d bytes, yet %d said to be enough", len(data), n)
			}
		} else if n != 0 {
			t.Fatalf("n = %d on failure %v", n, err)
		}
		return
	}
	if n < 6 || n > len(data) {
		t.Fatalf("decoded a frame of %d bytes out of %d", n, len(data))
	}
	encoded, err := EncodeFrame(frame)
	if err != nil {
		t.Fatalf("a decoded %v does not encode: %v", frame.Message.Kind(), err)
	}
	if len(encoded) > n {
		t.Fatalf("re-encoded %v is longer (%d) than its input (%d)", frame.Message.Kind(), len(encoded), n)
	}
	again, m, err := Decode(encoded)
	if err != nil || m != len(encoded) {
		t.Fatalf("a re-encoded frame does not decode: %v (%d of %d)", err, m, len(encoded))
	}
	twice, err := EncodeFrame(again)
	if err != nil || !bytes.Equal(twice, encoded) {
		t.Fatalf("encode(decode(x)) is not stable: %x vs %x (%v)", twice, encoded, err)
	}
}

// checkReader feeds data to a FrameReader in two pieces and checks that it
// gives the frames a sequential Decode finds, in order, up to the first
// error of either (the Rust fuzz targets check the reader against every
// cut and every error; this checks the binding's plumbing of it).
func checkReader(t *testing.T, data []byte) {
	r, err := NewFrameReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got [][]byte
	readerFailed := false
	half := len(data) / 2
feeding:
	for _, piece := range [][]byte{data[:half], data[half:]} {
		if err := r.Feed(piece); err != nil {
			t.Fatal(err)
		}
		// Each frame takes at least 6 bytes: no more frames than that.
		for i := 0; i <= len(data)/6; i++ {
			frame, ok, err := r.Next()
			if err != nil {
				checkStatus(t, err)
				readerFailed = true
				break feeding
			}
			if !ok {
				break
			}
			encoded, err := EncodeFrame(frame)
			if err != nil {
				t.Fatalf("a frame the reader gave does not encode: %v", err)
			}
			got = append(got, encoded)
		}
	}
	if r.Buffered() > len(data) {
		t.Fatalf("%d bytes buffered of %d fed", r.Buffered(), len(data))
	}
	var want [][]byte
	decodeFailed := false
	for rest := data; ; {
		frame, n, err := Decode(rest)
		if err != nil {
			decodeFailed = !errors.Is(err, ErrIncomplete)
			break
		}
		encoded, _ := EncodeFrame(frame)
		want = append(want, encoded)
		rest = rest[n:]
	}
	for i := 0; i < len(got) && i < len(want); i++ {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d: the reader gave %x, Decode %x", i, got[i], want[i])
		}
	}
	if !readerFailed && !decodeFailed && len(got) != len(want) {
		t.Fatalf("the reader gave %d frames, Decode %d", len(got), len(want))
	}
	if readerFailed != decodeFailed && len(got) != len(want) {
		t.Fatalf("the reader (failed: %v) gave %d frames, Decode (failed: %v) %d",
			readerFailed, len(got), decodeFailed, len(want))
	}
}
