package handoff

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

// Incumbent serves the control socket on a thread of the library's,
// calling the service's Drainable. Its methods may be called from any
// goroutine, but not from within a Drainable method (Stop and Close wait
// for those to return).
type Incumbent struct {
	h         object[*C.handoff_incumbent]
	onFailure func(error)
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

// Start serves the control socket on a thread of the library's, calling
// svc. The incumbent stays reachable (it is not collected) until serving
// ends.
func (i *Incumbent) Start(svc Drainable) error {
	if svc == nil {
		return newError(StatusNullPointer, "no service given")
	}
	var box unsafe.Pointer
	err := i.h.exclusive(func(p *C.handoff_incumbent) error {
		box = newBox(&serving{svc: svc, incumbent: i, onFailure: i.onFailure})
		callbacks := serviceCallbacks()
		var cerr *C.handoff_error
		return check(C.handoff_incumbent_start(p, &callbacks, box, &cerr), cerr)
	})
	runtime.KeepAlive(i)
	if err != nil {
		freeBox(box) // the library calls destroy only after a successful start
	}
	return err
}

// Wait waits until serving ends, or ctx does, and says how it ended.
// Serving that ended with an error gives that error (with ServeStopped).
func (i *Incumbent) Wait(ctx context.Context) (ServeOutcome, error) {
	for {
		slice, err := sliceOf(ctx)
		if err != nil {
			return 0, err
		}
		var outcome C.uint32_t
		var status C.handoff_status
		err = i.h.exclusive(func(p *C.handoff_incumbent) error {
			var cerr *C.handoff_error
			status = C.handoff_incumbent_wait(p, C.int32_t(slice), &outcome, &cerr)
			return check(status, cerr)
		})
		runtime.KeepAlive(i)
		if status == C.HANDOFF_ERR_TIMEOUT {
			continue
		}
		if err != nil {
			return ServeStopped, err
		}
		return ServeOutcome(outcome), nil
	}
}

// Stop stops serving, rolling back a handoff in progress, and waits for the
// library's thread to end (and so for a running Drainable method).
func (i *Incumbent) Stop() error {
	err := i.h.exclusive(func(p *C.handoff_incumbent) error {
		var cerr *C.handoff_error
		return check(C.handoff_incumbent_stop(p, &cerr), cerr)
	})
	runtime.KeepAlive(i)
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
// served: the service, and the incumbent it keeps reachable.
type serving struct {
	svc       Drainable
	incumbent *Incumbent
	onFailure func(error)
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
