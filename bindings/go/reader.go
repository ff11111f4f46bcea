package handoff

/*
#include <handoff.h>
*/
import "C"

import "runtime"

// FrameReader buffers a partly received frame between reads, for services
// that read the control socket themselves: Feed what was read, take whole
// messages with Next.
type FrameReader struct {
	h object[*C.handoff_frame_reader]
}

// NewFrameReader is an empty reader.
func NewFrameReader() (*FrameReader, error) {
	var p *C.handoff_frame_reader
	var cerr *C.handoff_error
	if err := check(C.handoff_frame_reader_new(&p, &cerr), cerr); err != nil {
		return nil, err
	}
	r := &FrameReader{h: object[*C.handoff_frame_reader]{p: p, what: "frame reader"}}
	runtime.SetFinalizer(r, (*FrameReader).Close)
	return r, nil
}

// Feed appends bytes read from the stream (copied).
func (r *FrameReader) Feed(data []byte) error {
	err := r.h.exclusive(func(p *C.handoff_frame_reader) error {
		var cerr *C.handoff_error
		ptr, length := bytesArg(data)
		status := C.handoff_frame_reader_feed(p, ptr, length, &cerr)
		runtime.KeepAlive(data)
		return check(status, cerr)
	})
	runtime.KeepAlive(r)
	return err
}

// Next takes the next whole message; ok is false when more bytes are
// needed. A frame whose body does not decode is dropped and reported (the
// next one can still be read); a bad length prefix is reported on every
// later call: the stream has lost its frame boundaries, close it.
func (r *FrameReader) Next() (f Frame, ok bool, err error) {
	err = r.h.exclusive(func(p *C.handoff_frame_reader) error {
		var out *C.handoff_message
		var got C.bool
		var cerr *C.handoff_error
		if err := check(C.handoff_frame_reader_next(p, &out, &got, &cerr), cerr); err != nil {
			return err
		}
		if !got {
			return nil
		}
		defer C.handoff_message_free(out)
		var err error
		f, err = fromCMessage(out)
		ok = err == nil
		return err
	})
	runtime.KeepAlive(r)
	return f, ok, err
}

// Buffered is the number of bytes fed but not yet taken as messages.
func (r *FrameReader) Buffered() int {
	n := 0
	_ = r.h.exclusive(func(p *C.handoff_frame_reader) error {
		n = int(C.handoff_frame_reader_buffered(p))
		return nil
	})
	runtime.KeepAlive(r)
	return n
}

// Close frees the reader. Idempotent.
func (r *FrameReader) Close() error {
	runtime.SetFinalizer(r, nil)
	C.handoff_frame_reader_free(r.h.take())
	return nil
}
