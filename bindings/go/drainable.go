package handoff

// The callback form of serving: the library calls the service's Drainable
// on a thread of its own (handoff_incumbent_start). Services with an event
// loop of their own use StartLoop instead.

/*
#include <stdlib.h>
#include <handoff.h>
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"
)

// Drainable is the service's side of a handoff. The library calls its
// methods one at a time, on a thread of its own, while the service goes on
// serving on its goroutines.
type Drainable interface {
	// Drain stops accepting (connections wait in the kernel's queue for
	// the successor), finishes or hands back in-flight work and makes
	// every acknowledged write durable, keeping reads going on open
	// connections. ctx ends at the drain budget. The report defaults to 0
	// connections left and accepting closed; see Hook.SetDrained.
	Drain(ctx context.Context) error
	// Seal flushes and closes the writers and fsyncs. The library releases
	// the data-dir lock right after a nil return. On an error (or a panic)
	// the incumbent keeps the lock, ResumeAfterAbort is called, and the
	// supervisor sees the error's text in SealFailed.
	Seal(ctx context.Context) (SealReport, error)
	// ResumeAfterAbort undoes a drain or a seal after a rolled-back
	// handoff: the library has taken the lock back (under a new
	// generation); reopen the writers and accept again.
	ResumeAfterAbort() error
}

// SealReport is what Seal tells the supervisor (SealComplete).
type SealReport struct {
	LastRevisionPerShard []uint64
	DataDirFingerprint   [32]byte
}

// PanicError is a panic recovered in a Drainable method. The hook fails
// with its text (a failed seal rolls the handoff back) and the process
// goes on.
type PanicError struct {
	Hook  string // "drain", "seal" or "resume_after_abort"
	Value any    // what was passed to panic
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("%s panicked: %v", e.Hook, e.Value)
}

// Unwrap gives the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// HookError is an error a Drainable method returned.
type HookError struct {
	Hook string
	Err  error
}

func (e *HookError) Error() string { return fmt.Sprintf("%s failed: %v", e.Hook, e.Err) }
func (e *HookError) Unwrap() error { return e.Err }

// OnHookFailure sets what is done with a hook's failure, on the library's
// thread: f receives a *PanicError for a panic and a *HookError for an
// error. By default panics (with their stack) and ResumeAfterAbort errors
// go to stderr; Drain and Seal errors are already in the library's log and
// the supervisor's abort reason. Before Start.
func (i *Incumbent) OnHookFailure(f func(error)) {
	i.h.serial.Lock()
	i.onFailure = f
	i.h.serial.Unlock()
}

// Start serves the control socket on a thread of the library's, calling
// svc. The incumbent stays reachable (it is not collected) until serving
// ends.
func (i *Incumbent) Start(svc Drainable) error {
	if svc == nil {
		return newError(StatusNullPointer, "no service given")
	}
	var box unsafe.Pointer
	err := i.h.exclusive(func(p *C.handoff_incumbent) error {
		s := &serving{svc: svc, incumbent: i, onFailure: i.onFailure, ended: make(chan struct{})}
		box = newBox(s)
		callbacks := serviceCallbacks()
		var cerr *C.handoff_error
		if err := check(C.handoff_incumbent_start(p, &callbacks, box, &cerr), cerr); err != nil {
			return err
		}
		// The serve thread joins right after destroy: no need to wait more.
		i.serving = &servingEnd{done: s.ended, waitMS: -1}
		return nil
	})
	runtime.KeepAlive(i)
	if err != nil {
		freeBox(box) // the library calls destroy only after a successful start
	}
	return err
}

// ---- the hooks ----------------------------------------------------------

type hookKind int

const (
	hookDrain hookKind = iota
	hookSeal
	hookResume
)

func (k hookKind) String() string {
	return [...]string{"drain", "seal", "resume_after_abort"}[k]
}

// serving is what the library's userdata stands for while a service is
// served: the service, and the incumbent it keeps reachable. ended is
// closed by destroy, which the library calls once serving has ended.
type serving struct {
	svc       Drainable
	incumbent *Incumbent
	onFailure func(error)
	ended     chan struct{}
}

// call runs one hook for the library and answers its status. Nothing
// escapes: errors and panics become a failed status with a reason.
func (s *serving) call(which hookKind, cctx *C.handoff_hook_context) (status C.int32_t) {
	hook := &Hook{p: cctx, name: which.String()}
	defer hook.invalidate()
	defer func() {
		if r := recover(); r != nil {
			perr := &PanicError{Hook: which.String(), Value: r, Stack: debug.Stack()}
			hook.fail(perr.Error())
			s.report(perr)
			status = C.HANDOFF_ERR_HOOK_FAILED
		}
	}()
	var err error
	switch which {
	case hookDrain:
		ctx, cancel := hook.context()
		defer cancel()
		err = s.svc.Drain(ctx)
	case hookSeal:
		ctx, cancel := hook.context()
		defer cancel()
		var report SealReport
		report, err = s.svc.Seal(ctx)
		if err == nil {
			err = hook.sealed(report)
		}
	case hookResume:
		err = s.svc.ResumeAfterAbort()
	}
	if err != nil {
		hook.fail(err.Error())
		s.report(&HookError{Hook: which.String(), Err: err})
		return C.HANDOFF_ERR_HOOK_FAILED
	}
	return C.HANDOFF_OK
}

// report hands a hook's failure to the service's handler, or to stderr.
func (s *serving) report(err error) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "handoff: the hook failure handler panicked: %v\n", r)
		}
	}()
	if s.onFailure != nil {
		s.onFailure(err)
		return
	}
	var perr *PanicError
	var herr *HookError
	switch {
	case errors.As(err, &perr):
		fmt.Fprintf(os.Stderr, "handoff[%d]: %v\n%s", os.Getpid(), perr, perr.Stack)
	case errors.As(err, &herr) && herr.Hook == hookResume.String():
		fmt.Fprintf(os.Stderr, "handoff[%d]: %v\n", os.Getpid(), herr)
	}
}

// Hook is a Drainable method's view of the running handoff, valid only
// until the method returns (its methods then answer ErrWrongState). Get it
// with HookFromContext; it may be used from other goroutines meanwhile.
type Hook struct {
	mu   sync.Mutex
	p    *C.handoff_hook_context // nil for resume_after_abort and once invalid
	name string
}

type hookKey struct{}

// HookFromContext is the hook of the ctx a Drain or Seal received; nil
// for any other context.
func HookFromContext(ctx context.Context) *Hook {
	h, _ := ctx.Value(hookKey{}).(*Hook)
	return h
}

func (h *Hook) with(f func(p *C.handoff_hook_context) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.p == nil {
		return newError(StatusWrongState, "the "+h.name+" hook has returned")
	}
	return f(h.p)
}

func (h *Hook) invalidate() {
	h.mu.Lock()
	h.p = nil
	h.mu.Unlock()
}

// TimeLeft is the time left before the hook's deadline (0 when past it).
func (h *Hook) TimeLeft() time.Duration {
	var left time.Duration
	_ = h.with(func(p *C.handoff_hook_context) error {
		left = time.Duration(C.handoff_hook_time_left_ms(p)) * time.Millisecond
		return nil
	})
	return left
}

// SetDrained is Drain's report when it differs from the default (0
// connections left, accepting closed).
func (h *Hook) SetDrained(openConnsRemaining uint32, acceptClosed bool) error {
	return h.with(func(p *C.handoff_hook_context) error {
		var cerr *C.handoff_error
		return check(C.handoff_hook_set_drained(p, C.uint32_t(openConnsRemaining), C.bool(acceptClosed), &cerr), cerr)
	})
}

// SealProgress reports the progress of a long seal to the supervisor.
func (h *Hook) SealProgress(shardsSealed, shardsTotal uint32, lastRevision uint64) error {
	return h.with(func(p *C.handoff_hook_context) error {
		var cerr *C.handoff_error
		status := C.handoff_hook_seal_progress(p, C.uint32_t(shardsSealed), C.uint32_t(shardsTotal), C.uint64_t(lastRevision), &cerr)
		return check(status, cerr)
	})
}

// context is the ctx given to Drain and Seal: the hook, and the deadline.
func (h *Hook) context() (context.Context, context.CancelFunc) {
	ctx := context.WithValue(context.Background(), hookKey{}, h)
	return context.WithTimeout(ctx, h.TimeLeft())
}

func (h *Hook) sealed(report SealReport) error {
	return h.with(func(p *C.handoff_hook_context) error {
		var cerr *C.handoff_error
		for _, revision := range report.LastRevisionPerShard {
			if err := check(C.handoff_hook_push_revision(p, C.uint64_t(revision), &cerr), cerr); err != nil {
				return err
			}
		}
		fp := report.DataDirFingerprint
		ptr, length := bytesArg(fp[:])
		status := C.handoff_hook_set_fingerprint(p, ptr, length, &cerr)
		runtime.KeepAlive(&fp)
		return check(status, cerr)
	})
}

// fail gives the library the reason of the failure about to be returned
// (resume_after_abort has no context to carry one).
func (h *Hook) fail(reason string) {
	_ = h.with(func(p *C.handoff_hook_context) error {
		creason, err := cString(reason, "reason")
		if err != nil {
			creason = C.CString("(a reason with a NUL byte)")
		}
		defer freeCString(creason)
		return check(C.handoff_hook_fail(p, creason, nil), nil)
	})
}
