// Package handoff is the Go binding of libhandoff: zero-downtime handoff of
// stateful services. It is a thin layer over the library's C ABI
// (include/handoff.h); the protocol itself lives in the library.
//
// A service takes part in handoffs in one of two ways, decided by Detect:
//
//   - cold start: take its listeners from Detect (or bind its own), lock its
//     data directory (AcquireLock), open its state, Bind the control socket
//     and serve it: StartLoop hands the handoff's work to the service's own
//     loop as Requests on a channel, Start calls a Drainable instead;
//   - successor: NewSuccessor, Handshake, WaitForBegin, and only then take
//     the listeners, lock the data directory, open the state and
//     AnnounceReady, which makes the process the new Incumbent.
//
// A supervisor (NewSupervisor) keeps the listeners for the whole life of the
// service and performs handoffs.
//
// Every handle (Lock, Inherited, Successor, Incumbent, Supervisor,
// FrameReader) has an idempotent Close and a finalizer, and is safe for use
// by several goroutines. Errors are *Error values that match the exported
// sentinels with errors.Is.
//
// Linking: the package finds libhandoff with pkg-config (handoff.pc; for the
// source tree, PKG_CONFIG_PATH=<tree>/target/pkgconfig). Without pkg-config,
// build with -tags handoff_nopkgconfig and give CGO_CFLAGS=-I<includedir>
// and CGO_LDFLAGS="-L<libdir> -Wl,-rpath,<libdir> -lhandoff".
package handoff

/*
#include <stdlib.h>
#include <string.h>
#include <handoff.h>
*/
import "C"

import (
	"strings"
	"sync"
	"unsafe"
)

// Version is the library's version, e.g. "0.1.0".
func Version() string {
	return C.GoString(C.handoff_version())
}

// cString copies s into C memory (free it with C.free). A NUL byte cannot
// cross into C: it would silently cut the string short.
func cString(s, what string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, newError(StatusInvalidArgument, what+" contains a NUL byte")
	}
	return C.CString(s), nil
}

func freeCString(p *C.char) {
	C.free(unsafe.Pointer(p))
}

// bytesArg passes b to C for the duration of one call: Go memory without Go
// pointers, so cgo allows it. An empty slice is NULL with length 0.
func bytesArg(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

// goBytes copies n bytes the library lent out (nil for none).
func goBytes(p *C.uint8_t, n C.size_t) []byte {
	if n == 0 {
		return nil
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

// check turns a status and its error object into a Go error, freeing the
// object.
func check(status C.handoff_status, cerr *C.handoff_error) error {
	gcPoint() // between every C call and the next, in a gcstress build
	if status == C.HANDOFF_OK {
		C.handoff_error_free(cerr) // NULL, unless the library broke its rule
		return nil
	}
	message := ""
	if cerr != nil {
		// The error object carries the same status as the return value.
		status = C.handoff_error_status(cerr)
		message = C.GoString(C.handoff_error_message(cerr))
		C.handoff_error_free(cerr)
	}
	return newError(Status(status), message)
}

// object is the C pointer behind a handle (P is *C.handoff_lock and the
// like). Every call holds `life` for reading, so Close (which takes it for
// writing) never frees the pointer under a running call; `serial`
// additionally makes one call at a time for the objects the header says
// are not synchronised.
type object[P comparable] struct {
	life   sync.RWMutex
	serial sync.Mutex
	p      P
	what   string
}

// shared runs f with the live pointer, concurrently with other shared calls.
func (o *object[P]) shared(f func(P) error) error {
	o.life.RLock()
	defer o.life.RUnlock()
	var none P
	if o.p == none {
		return closedError(o.what)
	}
	gcPoint()
	return f(o.p)
}

// exclusive runs f with the live pointer, one call at a time.
func (o *object[P]) exclusive(f func(P) error) error {
	o.life.RLock()
	defer o.life.RUnlock()
	o.serial.Lock()
	defer o.serial.Unlock()
	var none P
	if o.p == none {
		return closedError(o.what)
	}
	gcPoint()
	return f(o.p)
}

// alone runs f with the live pointer while no other call runs: for the
// calls that change what concurrent shared calls read (configuring a
// supervisor, moving a lock into an incumbent).
func (o *object[P]) alone(f func(P) error) error {
	o.life.Lock()
	defer o.life.Unlock()
	var none P
	if o.p == none {
		return closedError(o.what)
	}
	gcPoint()
	return f(o.p)
}

// take empties the handle once no call runs and gives the pointer (nil if
// already taken) to the caller, who frees it outside the lock: freeing may
// wait for a library thread that calls back into Go, and that callback may
// use this handle (and must then find it closed, not deadlock).
func (o *object[P]) take() P {
	o.life.Lock()
	defer o.life.Unlock()
	p := o.p
	var none P
	o.p = none
	return p
}

func closedError(what string) error {
	return newError(StatusWrongState, what+" is closed")
}
