package handoff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func TestNewMessageHasTheLibrarysDefaults(t *testing.T) {
	m, err := NewMessage(KindHello)
	if err != nil {
		t.Fatal(err)
	}
	hello, ok := m.(*Hello)
	if !ok || hello.ProtoMin != 1 || hello.ProtoMax != 1 || hello.PID != 0 {
		t.Errorf("a new Hello: %#v", m)
	}
	m, err = NewMessage(KindHelloAck)
	if err != nil || m.(*HelloAck).ProtoVersionChosen != 1 {
		t.Errorf("a new HelloAck: %#v, %v", m, err)
	}
	for kind := KindHello; kind <= KindAdopted; kind++ {
		m, err := NewMessage(kind)
		if err != nil || m.Kind() != kind {
			t.Errorf("NewMessage(%v): %#v, %v", kind, m, err)
		}
	}
	if _, err := NewMessage(19); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("NewMessage(19): %v, want ErrInvalidArgument", err)
	}
	if KindSealComplete.String() != "SealComplete" || MessageKind(99).String() != "MessageKind(99)" {
		t.Errorf("kind names: %q %q", KindSealComplete, MessageKind(99))
	}
}

func TestHandoffIDFormatsAsUUID(t *testing.T) {
	if got := vectorID.String(); got != "5a1e00ff-1020-4080-90a0-b0c0d0e0f001" {
		t.Errorf("got %s", got)
	}
}

func TestEncodeRefusesWhatTheLibraryRefuses(t *testing.T) {
	cases := []struct {
		msg  Message
		want error
	}{
		{Hello{Role: 7}, ErrInvalidArgument},                                 // not a Side
		{SealFailed{Error: string([]byte{0xff, 0xfe})}, ErrInvalidUTF8},      // not UTF-8
		{Ready{ListeningOn: []string{string([]byte{0xc3})}}, ErrInvalidUTF8}, // in a list
		{nil, ErrInvalidArgument},
	}
	for _, c := range cases {
		if _, err := Encode(c.msg); !errors.Is(err, c.want) {
			t.Errorf("Encode(%#v): %v, want %v", c.msg, err, c.want)
		}
	}
	// A frame version is carried through.
	frame, err := EncodeFrame(Frame{Version: 7, Message: Heartbeat{TsMS: 5}})
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint16(frame[4:]) != 7 {
		t.Errorf("version not encoded: %x", frame)
	}
	decoded, _, err := Decode(frame)
	if err != nil || decoded.Version != 7 || !reflect.DeepEqual(decoded.Message, &Heartbeat{TsMS: 5}) {
		t.Errorf("Decode: %#v, %v", decoded, err)
	}
}

func TestDecodeReportsWhatIsMissingOrWrong(t *testing.T) {
	frame, err := Encode(&Ready{HandoffID: vectorID, ListeningOn: []string{"tcp://[::1]:1"}, HealthzOK: true})
	if err != nil {
		t.Fatal(err)
	}
	for cut := 0; cut < len(frame); cut++ {
		_, n, err := Decode(frame[:cut])
		if !errors.Is(err, ErrIncomplete) {
			t.Fatalf("%d of %d bytes: %v, want ErrIncomplete", cut, len(frame), err)
		}
		if cut >= 4 && n != len(frame) {
			t.Fatalf("%d of %d bytes: needs %d", cut, len(frame), n)
		}
	}
	tooLarge := binary.LittleEndian.AppendUint32(nil, 1<<20+1)
	if _, _, err := Decode(append(tooLarge, 1, 0)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("a 1 MiB+1 frame: %v, want ErrFrameTooLarge", err)
	}
	unknown := []byte{3, 0, 0, 0, 1, 0, 14}
	if _, _, err := Decode(unknown); !errors.Is(err, ErrUnknownMessage) {
		t.Errorf("message 14: %v, want ErrUnknownMessage", err)
	}
	trailing := append(append([]byte{}, frame...), 0)
	binary.LittleEndian.PutUint32(trailing, uint32(len(frame)-4+1))
	if _, _, err := Decode(trailing); !errors.Is(err, ErrDecode) {
		t.Errorf("a body with a trailing byte: %v, want ErrDecode", err)
	}
}

func TestFrameReaderKeepsPartialFrames(t *testing.T) {
	r, err := NewFrameReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var stream []byte
	var want []Message
	for _, m := range vectorMessages() {
		b, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, b...)
		want = append(want, m)
	}
	_ = want
	var got []Message
	for i := 0; i < len(stream); i += 7 { // 7 bytes at a time
		end := min(i+7, len(stream))
		if err := r.Feed(stream[i:end]); err != nil {
			t.Fatal(err)
		}
		for {
			f, ok, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			got = append(got, f.Message)
		}
	}
	if len(got) != 14 || r.Buffered() != 0 {
		t.Fatalf("%d messages, %d bytes left", len(got), r.Buffered())
	}
	var again []byte
	for _, m := range got {
		b, _ := Encode(m)
		again = append(again, b...)
	}
	if !bytes.Equal(again, stream) {
		t.Error("the messages read do not encode back to the stream")
	}
	// A bad length prefix is reported on every later call.
	if err := r.Feed([]byte{1, 0, 0, 0, 1, 0}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, _, err := r.Next(); !errors.Is(err, ErrFrameMalformed) {
			t.Errorf("call %d after a bad prefix: %v", i, err)
		}
	}
	r.Close()
	r.Close()
	if err := r.Feed([]byte{1}); !errors.Is(err, ErrWrongState) {
		t.Errorf("Feed after Close: %v, want ErrWrongState", err)
	}
}
