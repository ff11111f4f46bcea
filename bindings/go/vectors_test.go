package handoff

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The golden vectors of tests/vectors/README.md: the bytes of protocol v1
// as the reference implementation writes them.

var vectorID = HandoffID{0x5a, 0x1e, 0x00, 0xff, 0x10, 0x20, 0x40, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x01}

func vectorMessages() map[string]Message {
	fingerprint := [32]byte{}
	for i := range fingerprint {
		fingerprint[i] = 0xab
	}
	return map[string]Message{
		"00_hello.bin": &Hello{Role: SideSuccessor, PID: 4242, BuildID: []byte("build-7f3a"),
			ProtoMin: 1, ProtoMax: 1, CapabilitiesReserved: 0},
		"01_hello_ack.bin": &HelloAck{ProtoVersionChosen: 1, HandoffID: vectorID},
		"02_prepare_handoff.bin": &PrepareHandoff{HandoffID: vectorID, SuccessorPID: 70000,
			DeadlineMS: 300000, DrainGraceMS: 60000},
		"03_drained.bin":      &Drained{OpenConnsRemaining: 3, AcceptClosed: true},
		"04_seal_request.bin": &SealRequest{HandoffID: vectorID},
		"05_seal_progress.bin": &SealProgress{ShardsSealed: 2, ShardsTotal: 8,
			LastRevision: 1 << 40},
		"06_seal_complete.bin": &SealComplete{HandoffID: vectorID,
			LastRevisionPerShard: []uint64{0, 1, 300, 1<<64 - 1}, DataDirFingerprint: fingerprint},
		"07_seal_failed.bin": &SealFailed{HandoffID: vectorID, Error: "disk full: écrit", PartialState: ""},
		"08_begin.bin":       &Begin{HandoffID: vectorID},
		"09_ready.bin": &Ready{HandoffID: vectorID,
			ListeningOn: []string{"tcp://127.0.0.1:8080", "unix:/run/x.sock"}, HealthzOK: true,
			AdvertisedRevisionPerShard: []uint64{7, 8}},
		"10_commit.bin":             &Commit{HandoffID: vectorID},
		"11_abort.bin":              &Abort{HandoffID: vectorID, Reason: "successor timed out"},
		"12_resume_after_abort.bin": &ResumeAfterAbort{HandoffID: vectorID},
		"13_heartbeat.bin":          &Heartbeat{TsMS: 1764000000123},
	}
}

func vectorsDir(t *testing.T) string {
	return filepath.Join(repoRoot(t), "tests", "vectors")
}

func TestGoldenFrames(t *testing.T) {
	dir := filepath.Join(vectorsDir(t), "frames")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	messages := vectorMessages()
	if len(entries) != len(messages) || len(messages) != 14 {
		t.Fatalf("%d frame files for %d messages; want 14 of each", len(entries), len(messages))
	}
	for _, entry := range entries {
		name := entry.Name()
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			msg, ok := messages[name]
			if !ok {
				t.Fatalf("no message for %s", name)
			}
			got, err := Encode(msg)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Encode(%+v)\n got %x\nwant %x", msg, got, want)
			}
			// Decode leaves trailing bytes alone and reads every field back.
			frame, n, err := Decode(append(append([]byte{}, want...), 0xee, 0xee))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if n != len(want) || frame.Version != 1 {
				t.Errorf("Decode: consumed %d of %d, version %d", n, len(want), frame.Version)
			}
			if !reflect.DeepEqual(frame.Message, msg) {
				t.Errorf("Decode:\n got %#v\nwant %#v", frame.Message, msg)
			}
			if frame.Message.Kind().String() == "" || frame.Message.Kind() != msg.Kind() {
				t.Errorf("kind %v, want %v", frame.Message.Kind(), msg.Kind())
			}
			// A value encodes like a pointer.
			byValue, err := Encode(reflect.ValueOf(msg).Elem().Interface().(Message))
			if err != nil || !bytes.Equal(byValue, want) {
				t.Errorf("Encode by value: %x, %v", byValue, err)
			}
		})
	}
}

func TestGoldenJournals(t *testing.T) {
	dir := filepath.Join(vectorsDir(t), "journal")
	files := []string{"0_negotiating.bin", "1_draining.bin", "2_sealing.bin",
		"3_awaiting_ready.bin", "4_committed.bin", "5_resuming_after_abort.bin"}
	tmp := t.TempDir()
	for n, name := range files {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			journal := Journal{HandoffID: vectorID, Phase: Phase(n), IncumbentPID: 1234 + uint32(n),
				StartedAtUnixMS: 1700000000000}
			if n%2 == 0 {
				journal.HasSuccessorPID, journal.SuccessorPID = true, 5678
			}
			path := filepath.Join(tmp, "journal", name)
			if err := WriteJournal(path, journal); err != nil {
				t.Fatalf("WriteJournal: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("WriteJournal(%+v)\n got %x\nwant %x", journal, got, want)
			}
			read, found, err := ReadJournal(filepath.Join(dir, name))
			if err != nil || !found {
				t.Fatalf("ReadJournal: %v, found %v", err, found)
			}
			if read != journal {
				t.Errorf("ReadJournal:\n got %+v\nwant %+v", read, journal)
			}
			if read.Phase.String() == "" {
				t.Error("a phase without a name")
			}
		})
	}
}

func TestJournalLifecycle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "deep", "state.bin")
	if _, found, err := ReadJournal(path); err != nil || found {
		t.Fatalf("a missing journal: found %v, %v", found, err)
	}
	if err := DeleteJournal(path); err != nil {
		t.Fatalf("deleting a missing journal: %v", err)
	}
	journal := Journal{HandoffID: vectorID, Phase: PhaseSealing, IncumbentPID: 7}
	if err := WriteJournal(path, journal); err != nil {
		t.Fatal(err)
	}
	// A phase out of range writes nothing and leaves the old one intact.
	bad := journal
	bad.Phase = 6
	if err := WriteJournal(path, bad); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("phase 6: %v, want ErrInvalidArgument", err)
	}
	if got, found, err := ReadJournal(path); err != nil || !found || got != journal {
		t.Errorf("after a refused write: %+v %v %v", got, found, err)
	}
	if err := DeleteJournal(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the journal is still there: %v", err)
	}
	// A corrupt journal is an error naming the file.
	if err := os.WriteFile(path, []byte{0x10, 0x01}, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := ReadJournal(path)
	if !errors.Is(err, ErrJournalCorrupt) {
		t.Fatalf("a truncated journal: %v, want ErrJournalCorrupt", err)
	}
	var herr *Error
	if !errors.As(err, &herr) || !bytes.Contains([]byte(herr.Message), []byte(path)) {
		t.Errorf("the error does not name %s: %v", path, err)
	}
	if err := WriteJournal("with\x00nul", journal); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("a path with NUL: %v", err)
	}
}

// The messages of protocol v2, from the same README ("Protocol v2"), each
// in a frame of version 2.
func vectorMessagesV2() map[string]Message {
	return map[string]Message{
		"14_capacity.bin": &Capacity{Descriptors: 10000},
		"15_transfer.bin": &Transfer{HandoffID: vectorID, ItemsMax: 65535},
		"16_moving.bin":   &Moving{HandoffID: vectorID, Items: 300},
		"17_item_connection.bin": &Item{Seq: 7, ItemKind: ItemConnection, Name: "kv",
			Unread: []byte("GET k"), Unwritten: []byte("VALUE v\n"), State: []byte{0x01, 0x00, 0xff}},
		"17_item_descriptor.bin": &Item{Seq: 0, ItemKind: ItemDescriptor, Name: "snapshot",
			State: []byte("memfd:table")},
		"18_adopted.bin": &Adopted{HandoffID: vectorID, Items: 300},
	}
}

// Every message kind has a golden frame, v1's in frames/ and v2's in v2/.
func TestEveryKindHasAGoldenVector(t *testing.T) {
	kinds := map[MessageKind]bool{}
	for _, set := range []map[string]Message{vectorMessages(), vectorMessagesV2()} {
		for _, m := range set {
			kinds[m.Kind()] = true
		}
	}
	for kind := KindHello; kind <= KindAdopted; kind++ {
		if !kinds[kind] {
			t.Errorf("no golden vector for %v", kind)
		}
	}
	if len(kinds) != 19 {
		t.Errorf("%d kinds with a vector, want 19", len(kinds))
	}
	files, err := filepath.Glob(filepath.Join(vectorsDir(t), "v2", "*.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(vectorMessagesV2()) {
		t.Errorf("%d files in v2/ for %d messages", len(files), len(vectorMessagesV2()))
	}
}

func TestGoldenFramesV2(t *testing.T) {
	for name, msg := range vectorMessagesV2() {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(vectorsDir(t), "v2", name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Encode(msg)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Encode(%+v)\n got %x\nwant %x", msg, got, want)
			}
			frame, n, err := Decode(append(append([]byte{}, want...), 0xee))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if n != len(want) || frame.Version != 2 {
				t.Errorf("Decode: consumed %d of %d, version %d", n, len(want), frame.Version)
			}
			if !reflect.DeepEqual(frame.Message, msg) {
				t.Errorf("Decode:\n got %#v\nwant %#v", frame.Message, msg)
			}
			again, err := Encode(frame.Message)
			if err != nil || !bytes.Equal(again, want) {
				t.Errorf("re-encoding the decoded message: %x, %v", again, err)
			}
			// A v2 message does not exist in a v1 frame: read as unknown,
			// and never written into one.
			v1 := append(append(append([]byte{}, want[:4]...), 0x01, 0x00), want[6:]...)
			if _, _, err := Decode(v1); !errors.Is(err, ErrUnknownMessage) {
				t.Errorf("the same bytes in a v1 frame: %v, want ErrUnknownMessage", err)
			}
			if _, err := EncodeFrame(Frame{Version: 1, Message: msg}); !errors.Is(err, ErrEncode) {
				t.Errorf("encoding it in a v1 frame: %v, want ErrEncode", err)
			}
			if frame.Message.Kind() != msg.Kind() || frame.Message.Kind().String() == "" {
				t.Errorf("kind %v, want %v", frame.Message.Kind(), msg.Kind())
			}
		})
	}
}
