package handoff

// The loop form of serving (DESIGN §9): the library serves the control
// socket on its own thread and hands the service's loop each piece of work
// as a Request on a channel, to be done across as many turns of the loop
// as it needs and completed once. Heartbeats go on meanwhile.

/*
#include <stdlib.h>
#include <handoff.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// RequestKind is what a Request asks of the service (HANDOFF_REQUEST_*).
type RequestKind uint32

const (
	// RequestDrain: stop accepting (connections wait in the kernel's queue
	// for the successor), finish in-flight work, make every acknowledged
	// write durable, by TimeLeft. Report with SetDrained if the default (0
	// connections left, accepting closed) is not right.
	RequestDrain = RequestKind(C.HANDOFF_REQUEST_DRAIN)
	// RequestSeal: flush and close the writers and fsync; report with
	// PushRevision (and SetFingerprint). The library releases the data-dir
	// lock once it is completed; a failed seal rolls the handoff back.
	RequestSeal = RequestKind(C.HANDOFF_REQUEST_SEAL)
	// RequestResume: a handoff was rolled back after a drain or a seal; the
	// library has taken the lock back (under a new generation). Reopen the
	// writers and accept again.
	RequestResume = RequestKind(C.HANDOFF_REQUEST_RESUME)
)

func (k RequestKind) String() string {
	switch k {
	case RequestDrain:
		return "drain"
	case RequestSeal:
		return "seal"
	case RequestResume:
		return "resume"
	}
	return fmt.Sprintf("RequestKind(%d)", uint32(k))
}

// Request is one piece of work for the service's loop. Fill in the report
// and then Complete it, or Fail it, exactly once (a second time is
// ErrWrongState), from any goroutine. Until then the handoff waits, with
// heartbeats, up to the deadline of a drain or a seal.
type Request struct {
	inc  *Incumbent
	kind RequestKind
	ctx  *C.handoff_hook_context // nil once completed (under inc.h.serial)
}

// Kind is what the request asks for.
func (r *Request) Kind() RequestKind { return r.kind }

func (r *Request) with(f func(*C.handoff_hook_context) error) error {
	err := r.inc.h.exclusive(func(*C.handoff_incumbent) error {
		if r.ctx == nil {
			return newError(StatusWrongState, "the "+r.kind.String()+" request was already completed")
		}
		return f(r.ctx)
	})
	runtime.KeepAlive(r.inc)
	return err
}

// TimeLeft is the time left before a drain's or a seal's deadline (0 when
// past it, for a resume, and once completed).
func (r *Request) TimeLeft() time.Duration {
	var left time.Duration
	_ = r.with(func(ctx *C.handoff_hook_context) error {
		left = time.Duration(C.handoff_hook_time_left_ms(ctx)) * time.Millisecond
		return nil
	})
	return left
}

// SetDrained is a drain's report when it differs from the default (0
// connections left open, accepting closed).
func (r *Request) SetDrained(openConnsRemaining uint32, acceptClosed bool) error {
	return r.with(func(ctx *C.handoff_hook_context) error {
		var cerr *C.handoff_error
		return check(C.handoff_hook_set_drained(ctx, C.uint32_t(openConnsRemaining), C.bool(acceptClosed), &cerr), cerr)
	})
}

// PushRevision appends a seal's last revision of the next shard.
func (r *Request) PushRevision(revision uint64) error {
	return r.with(func(ctx *C.handoff_hook_context) error {
		var cerr *C.handoff_error
		return check(C.handoff_hook_push_revision(ctx, C.uint64_t(revision), &cerr), cerr)
	})
}

// SetFingerprint is a seal's fingerprint of the sealed data directory.
func (r *Request) SetFingerprint(fingerprint [32]byte) error {
	return r.with(func(ctx *C.handoff_hook_context) error {
		var cerr *C.handoff_error
		ptr, length := bytesArg(fingerprint[:])
		status := C.handoff_hook_set_fingerprint(ctx, ptr, length, &cerr)
		runtime.KeepAlive(&fingerprint)
		return check(status, cerr)
	})
}

// SealProgress reports a long seal's progress to the supervisor at once.
func (r *Request) SealProgress(shardsSealed, shardsTotal uint32, lastRevision uint64) error {
	return r.with(func(ctx *C.handoff_hook_context) error {
		var cerr *C.handoff_error
		status := C.handoff_hook_seal_progress(ctx, C.uint32_t(shardsSealed), C.uint32_t(shardsTotal), C.uint64_t(lastRevision), &cerr)
		return check(status, cerr)
	})
}

// Complete reports the request done, with what was filled in.
func (r *Request) Complete() error {
	return r.complete(C.HANDOFF_OK, "")
}

// Fail reports the request failed because of reason, which the supervisor
// sees (SealFailed, or the abort reason). A failed seal or drain rolls the
// handoff back; the incumbent keeps its lock and serves on.
func (r *Request) Fail(reason string) error {
	return r.complete(C.HANDOFF_ERR_HOOK_FAILED, reason)
}

func (r *Request) complete(status C.int32_t, reason string) error {
	return r.with(func(ctx *C.handoff_hook_context) error {
		r.ctx = nil // completed or refused: either way not ours any more
		var cerr *C.handoff_error
		if status != C.HANDOFF_OK {
			creason, err := cString(reason, "reason")
			if err != nil {
				creason = C.CString("(a reason with a NUL byte)")
			}
			err = check(C.handoff_hook_fail(ctx, creason, &cerr), cerr)
			freeCString(creason)
			if err != nil {
				return err
			}
		}
		return check(C.handoff_hook_complete(ctx, status, &cerr), cerr)
	})
}

// StartLoop serves the control socket on a thread of the library's and
// gives the service's loop the handoff's work on the channel it returns,
// one Request at a time. The channel is closed once serving has ended (Wait
// then says how, at once) and when Stop returns. The incumbent stays
// reachable (it is not collected) until serving ends.
func (i *Incumbent) StartLoop() (<-chan *Request, error) {
	var pump *requestPump
	err := i.h.exclusive(func(p *C.handoff_incumbent) error {
		var cerr *C.handoff_error
		if err := check(C.handoff_incumbent_start_loop(p, &cerr), cerr); err != nil {
			return err
		}
		watch, err := watchReadable(int(C.handoff_incumbent_request_fd(p)), "request descriptor")
		if err != nil {
			stopNow(p) // serving with nobody to take its requests would hang every handoff
			return err
		}
		pump = newRequestPump(i, watch)
		i.pump = pump
		i.serving = &servingEnd{done: pump.ended, waitMS: 0} // after ENDED, wait answers at once
		return nil
	})
	runtime.KeepAlive(i)
	if err != nil {
		return nil, err
	}
	go pump.run()
	return pump.requests, nil
}

func stopNow(p *C.handoff_incumbent) {
	C.handoff_incumbent_stop(p, nil)
}

// requestPump takes the library's requests as the request descriptor
// becomes readable and delivers them on the channel. It waits in Go's
// netpoller (see readiness), so no OS thread is parked per incumbent.
type requestPump struct {
	inc      *Incumbent
	watch    *readiness
	requests chan *Request
	ended    chan struct{} // closed when serving is over, before requests
	exited   chan struct{} // closed when run has returned
	halting  chan struct{} // closed by halt: deliver nothing more
	haltOnce sync.Once

	// Under inc.h.serial:
	stopped bool // Stop took the end of serving from the library
	// The Request handed out for each of the library's contexts: the
	// library reuses a context for the next request of its kind, and a
	// Request it dropped must not write into its successor's.
	handed map[*C.handoff_hook_context]*Request
}

func newRequestPump(i *Incumbent, watch *readiness) *requestPump {
	return &requestPump{
		inc:      i,
		watch:    watch,
		requests: make(chan *Request),
		ended:    make(chan struct{}),
		exited:   make(chan struct{}),
		halting:  make(chan struct{}),
		handed:   map[*C.handoff_hook_context]*Request{},
	}
}

func (p *requestPump) run() {
	defer close(p.exited)
	defer p.watch.close()
	defer close(p.requests)
	defer close(p.ended) // first: a loop that sees the channel closed can Wait at once
	for {
		var next *Request
		ended := false
		err := p.watch.await(func() bool {
			next, ended = p.take()
			return next != nil || ended
		})
		if err != nil {
			// halt interrupted the wait: take finds serving stopped.
			if next, ended = p.take(); next == nil && !ended {
				p.fail(err)
				return
			}
		}
		if ended {
			return
		}
		select {
		case p.requests <- next:
		case <-p.halting:
			return // Stop failed it already
		}
	}
}

// take takes the next request from the library without waiting; ended
// once serving is over.
func (p *requestPump) take() (next *Request, ended bool) {
	err := p.inc.h.exclusive(func(ip *C.handoff_incumbent) error {
		if p.stopped {
			ended = true
			return nil
		}
		var ctx *C.handoff_hook_context
		var kind C.uint32_t
		var cerr *C.handoff_error
		if err := check(C.handoff_incumbent_take_request(ip, &ctx, &kind, &cerr), cerr); err != nil {
			return err
		}
		switch kind {
		case C.HANDOFF_REQUEST_NONE:
		case C.HANDOFF_REQUEST_ENDED:
			ended = true
		case C.HANDOFF_REQUEST_DRAIN, C.HANDOFF_REQUEST_SEAL, C.HANDOFF_REQUEST_RESUME:
			if old := p.handed[ctx]; old != nil {
				old.ctx = nil
			}
			next = &Request{inc: p.inc, kind: RequestKind(kind), ctx: ctx}
			p.handed[ctx] = next
		default:
			// A newer library's request this binding cannot do: refuse it
			// rather than leave the handoff waiting.
			reason := C.CString(fmt.Sprintf("the Go binding does not know request kind %d", kind))
			C.handoff_hook_fail(ctx, reason, nil)
			C.free(unsafe.Pointer(reason))
			C.handoff_hook_complete(ctx, C.HANDOFF_ERR_HOOK_FAILED, nil)
		}
		return nil
	})
	if err != nil {
		p.fail(err)
		return nil, true
	}
	return next, ended
}

// fail: the requests can no longer be taken (the library refused, or the
// netpoller failed). Serving stops, so that a handoff rolls back instead of
// waiting for a service that never hears of it, and Wait gives err.
func (p *requestPump) fail(err error) {
	_ = p.inc.h.exclusive(func(ip *C.handoff_incumbent) error {
		stopNow(ip)
		p.inc.serving.result = &servedResult{ServeStopped, fmt.Errorf("taking the incumbent's requests: %w", err)}
		return nil
	})
}

// halt makes run return and waits for it.
func (p *requestPump) halt() {
	p.haltOnce.Do(func() {
		close(p.halting)
		p.watch.interrupt()
	})
	<-p.exited
}
