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
	"runtime"
	"time"
)

// Lock is a held data-dir lock: <data_dir>/.handoff.lock under an exclusive
// flock, the holder's pid in <data_dir>/.handoff.pidfile. Give it back with
// Release (which reports errors) or Close. Bind and AnnounceReady move the
// lock into the incumbent: the handle is then empty (Generation 0) and
// Close only frees it. A process that exits loses its lock.
type Lock struct {
	h object[*C.handoff_lock]
}

func newLock(p *C.handoff_lock) *Lock {
	l := &Lock{h: object[*C.handoff_lock]{p: p, what: "lock"}}
	runtime.SetFinalizer(l, (*Lock).Close)
	return l
}

// AcquireLock takes the lock on dataDir (created if missing) without
// waiting. A live holder (this process included) is ErrLockHeld, with the
// holder's pid in the message; a pidfile left by a dead process does not
// stand in the way.
func AcquireLock(dataDir string) (*Lock, error) {
	cdir, err := cString(dataDir, "data dir")
	if err != nil {
		return nil, err
	}
	defer freeCString(cdir)
	var p *C.handoff_lock
	var cerr *C.handoff_error
	gcPoint()
	if err := check(C.handoff_lock_acquire(cdir, &p, &cerr), cerr); err != nil {
		return nil, err
	}
	return newLock(p), nil
}

// retrySlice bounds each blocking library wait, so that a cancelled
// context is noticed within it.
const retrySlice = 100 * time.Millisecond

// AcquireLockWithRetry is AcquireLock retried (every ~20 ms, by the
// library) while the lock is held, until ctx is done: for a dying process
// that may still hold it. When ctx ends first the error matches both
// ErrLockHeld (naming the holder) and ctx.Err().
func AcquireLockWithRetry(ctx context.Context, dataDir string) (*Lock, error) {
	cdir, err := cString(dataDir, "data dir")
	if err != nil {
		return nil, err
	}
	defer freeCString(cdir)
	var held error
	for {
		slice, err := sliceOf(ctx)
		if err != nil {
			if held != nil {
				return nil, fmt.Errorf("%w (%w)", held, err)
			}
			return nil, err
		}
		var p *C.handoff_lock
		var cerr *C.handoff_error
		gcPoint()
		err = check(C.handoff_lock_acquire_with_retry(cdir, slice, &p, &cerr), cerr)
		if err == nil {
			return newLock(p), nil
		}
		if !errors.Is(err, ErrLockHeld) {
			return nil, err
		}
		held = err
	}
}

// sliceOf is the next wait's length in milliseconds: up to retrySlice, and
// no further than ctx's deadline. ctx.Err() once ctx is done.
func sliceOf(ctx context.Context) (C.uint32_t, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	slice := retrySlice
	if deadline, ok := ctx.Deadline(); ok {
		if left := time.Until(deadline); left < slice {
			slice = left
		}
	}
	ms := slice.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return C.uint32_t(ms), nil
}

// Generation is the lock's fencing token: 1 on the first acquire ever of
// the data directory, one more on every acquire since. 0 once the lock has
// moved into an incumbent (ask Incumbent.Generation) or the handle is
// closed.
func (l *Lock) Generation() uint64 {
	var g uint64
	_ = l.h.shared(func(p *C.handoff_lock) error {
		g = uint64(C.handoff_lock_generation(p))
		return nil
	})
	runtime.KeepAlive(l)
	return g
}

// Release gives the lock back (clears the pidfile in place, drops the
// flock) and closes the handle, whatever the outcome. An empty
// handle (its lock moved into an incumbent) is ErrWrongState; a closed one
// too.
func (l *Lock) Release() error {
	runtime.SetFinalizer(l, nil)
	p := l.h.take()
	if p == nil {
		return closedError(l.h.what)
	}
	var cerr *C.handoff_error
	gcPoint()
	return check(C.handoff_lock_release(p, &cerr), cerr)
}

// Close releases the lock if it is still held (best effort; Release reports
// errors) and frees the handle. Idempotent.
func (l *Lock) Close() error {
	runtime.SetFinalizer(l, nil)
	C.handoff_lock_free(l.h.take())
	return nil
}

// LockHolder says who holds the lock on dataDir now, without taking it
// (beyond an instant) and without creating anything. pid is 0 when it is
// free, or when no live process is named in the pidfile.
func LockHolder(dataDir string) (held bool, pid uint32, err error) {
	cdir, err := cString(dataDir, "data dir")
	if err != nil {
		return false, 0, err
	}
	defer freeCString(cdir)
	var cheld C.bool
	var cpid C.uint32_t
	var cerr *C.handoff_error
	gcPoint()
	if err := check(C.handoff_lock_holder(cdir, &cheld, &cpid, &cerr), cerr); err != nil {
		return false, 0, err
	}
	return bool(cheld), uint32(cpid), nil
}
