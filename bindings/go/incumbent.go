package handoff

/*
#include <stdlib.h>
#include <handoff.h>
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// ServeOutcome is how serving ended (HANDOFF_SERVE_*).
type ServeOutcome uint32

const (
	// ServeCommitted: a successor took over; finish the remaining reads
	// and exit 0.
	ServeCommitted = ServeOutcome(C.HANDOFF_SERVE_COMMITTED)
	// ServeSuperseded: another process holds the lock; exit without writing.
	ServeSuperseded = ServeOutcome(C.HANDOFF_SERVE_SUPERSEDED)
	// ServeStopped: Stop was called.
	ServeStopped = ServeOutcome(C.HANDOFF_SERVE_STOPPED)
)

func (o ServeOutcome) String() string {
	switch o {
	case ServeCommitted:
		return "committed"
	case ServeSuperseded:
		return "superseded"
	case ServeStopped:
		return "stopped"
	}
	return fmt.Sprintf("ServeOutcome(%d)", uint32(o))
}

// Incumbent serves the control socket on a thread of the library's and
// hands the handoff's work to the service: to its own loop as Requests
// (StartLoop), or to its Drainable (Start). Its methods may be called from
// any goroutine, but not from within a Drainable method (Stop and Close
// wait for those to return).
type Incumbent struct {
	h         object[*C.handoff_incumbent]
	onFailure func(error)
	// Set when serving starts, under h.serial.
	serving *servingEnd
	pump    *requestPump // StartLoop only
}

// servingEnd is how Wait learns that serving ended and how.
type servingEnd struct {
	done   <-chan struct{} // closed once serving has ended
	waitMS C.int32_t       // the handoff_incumbent_wait timeout that then answers at once
	result *servedResult   // once asked
}

type servedResult struct {
	outcome ServeOutcome
	err     error
}

func newIncumbent(p *C.handoff_incumbent) *Incumbent {
	i := &Incumbent{h: object[*C.handoff_incumbent]{p: p, what: "incumbent"}}
	runtime.SetFinalizer(i, (*Incumbent).Close)
	return i
}

// Bind binds the control socket at controlPath (mode 0600, replacing a
// stale one) for a cold start holding lock. On success the lock moves into
// the incumbent (the Lock handle is left empty; still Close it); on
// failure the caller keeps it.
func Bind(controlPath string, lock *Lock) (*Incumbent, error) {
	cpath, err := cString(controlPath, "control socket path")
	if err != nil {
		return nil, err
	}
	defer freeCString(cpath)
	if lock == nil {
		return nil, newError(StatusNullPointer, "no lock given")
	}
	var p *C.handoff_incumbent
	// Alone: the lock moves out of the handle, which Generation reads.
	err = lock.h.alone(func(lp *C.handoff_lock) error {
		var cerr *C.handoff_error
		return check(C.handoff_incumbent_bind(cpath, lp, &p, &cerr), cerr)
	})
	runtime.KeepAlive(lock)
	if err != nil {
		return nil, err
	}
	return newIncumbent(p), nil
}

// SetBuildID sets the build id announced in Hello. Before Start.
func (i *Incumbent) SetBuildID(buildID []byte) error {
	err := i.h.exclusive(func(p *C.handoff_incumbent) error {
		var cerr *C.handoff_error
		ptr, length := bytesArg(buildID)
		status := C.handoff_incumbent_set_build_id(p, ptr, length, &cerr)
		runtime.KeepAlive(buildID)
		return check(status, cerr)
	})
	runtime.KeepAlive(i)
	return err
}

// SetLivenessTimeout sets how long the supervisor may stay silent before
// the incumbent takes it for dead and rolls back (default 10 s). Before
// Start.
func (i *Incumbent) SetLivenessTimeout(d time.Duration) error {
	ms, err := millis32(d, "liveness timeout")
	if err != nil {
		return err
	}
	err = i.h.exclusive(func(p *C.handoff_incumbent) error {
		var cerr *C.handoff_error
		return check(C.handoff_incumbent_set_liveness_timeout(p, ms, &cerr), cerr)
	})
	runtime.KeepAlive(i)
	return err
}

// Generation is the lock generation of the current tenure, the fencing
// token to stamp writes with; it changes when the lock is taken back after
// an aborted handoff. 0 once closed.
func (i *Incumbent) Generation() uint64 {
	var g uint64
	_ = i.h.shared(func(p *C.handoff_incumbent) error {
		g = uint64(C.handoff_incumbent_generation(p))
		return nil
	})
	runtime.KeepAlive(i)
	return g
}

// Wait waits until serving ends, or ctx does (ctx.Err() then, at once),
// and says how it ended. Serving that ended with an error gives that error
// (with ServeStopped). Once the requests channel of StartLoop is closed it
// answers without waiting.
func (i *Incumbent) Wait(ctx context.Context) (ServeOutcome, error) {
	var end *servingEnd
	err := i.h.exclusive(func(*C.handoff_incumbent) error {
		end = i.serving
		return nil
	})
	if err != nil {
		return ServeStopped, err
	}
	if end != nil && !isClosed(end.done) {
		select {
		case <-end.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return i.outcome()
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// outcome asks the library how serving ended (once: it answers with the
// error only the first time). Not serving: the library's ErrWrongState.
func (i *Incumbent) outcome() (ServeOutcome, error) {
	var result servedResult
	err := i.h.exclusive(func(p *C.handoff_incumbent) error {
		end := i.serving
		if end != nil && end.result != nil {
			result = *end.result
			return nil
		}
		timeout := C.int32_t(0)
		if end != nil {
			timeout = end.waitMS
		}
		var outcome C.uint32_t
		var cerr *C.handoff_error
		err := check(C.handoff_incumbent_wait(p, timeout, &outcome, &cerr), cerr)
		if end == nil {
			return err
		}
		result = servedResult{ServeOutcome(outcome), err}
		if err != nil {
			result.outcome = ServeStopped
		}
		end.result = &result
		return nil
	})
	runtime.KeepAlive(i)
	if err != nil {
		return ServeStopped, err
	}
	return result.outcome, result.err
}

// Stop stops serving, rolling back a handoff in progress, and waits for the
// library's thread to end (and so for a running Drainable method). After
// StartLoop, the requests the loop holds or has not received fail, and the
// requests channel is closed when Stop returns.
func (i *Incumbent) Stop() error {
	var pump *requestPump
	err := i.h.exclusive(func(p *C.handoff_incumbent) error {
		var cerr *C.handoff_error
		err := check(C.handoff_incumbent_stop(p, &cerr), cerr)
		if pump = i.pump; pump != nil {
			pump.stopped = true // the library took Ended: the pump never will
		}
		return err
	})
	runtime.KeepAlive(i)
	if pump != nil {
		pump.halt()
	}
	return err
}

// Close stops serving if needed, closes the control socket and frees the
// incumbent. Idempotent.
func (i *Incumbent) Close() error {
	runtime.SetFinalizer(i, nil)
	// Stop first, outside the handle's write lock: a running hook may still
	// call Generation, which must not wait behind Close.
	_ = i.Stop()
	C.handoff_incumbent_free(i.h.take())
	return nil
}

// millis32 converts a positive duration to whole milliseconds for the C
// ABI (rounding up, so a short but positive duration is not 0).
func millis32(d time.Duration, what string) (C.uint32_t, error) {
	if d <= 0 {
		return 0, newError(StatusInvalidArgument, what+" must be positive")
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > 1<<32-1 {
		return 0, newError(StatusInvalidArgument, what+" is too long")
	}
	return C.uint32_t(ms), nil
}
