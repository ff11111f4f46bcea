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
	"net"
	"os"
	"runtime"
)

// Successor is a successor's side of one handoff: Handshake, WaitForBegin,
// then take the listeners and the lock, open the state, and AnnounceReady.
// If anything fails before Ready, Close and exit: the supervisor rolls
// back.
type Successor struct {
	h object[*C.handoff_successor]
	// waiting is the WaitForBegin in progress, if any (under h.serial).
	waiting *readiness
}

// NewSuccessor starts the successor's side from what Detect found: the
// control socket and the listeners move into the Successor (take them
// after Begin); inherited keeps only their names and must still be closed.
// Not a successor: ErrWrongState.
func NewSuccessor(inherited *Inherited) (*Successor, error) {
	if inherited == nil {
		return nil, newError(StatusNullPointer, "no inherited listeners given")
	}
	var p *C.handoff_successor
	err := inherited.h.exclusive(func(ip *C.handoff_inherited) error {
		var cerr *C.handoff_error
		return check(C.handoff_successor_new(ip, &p, &cerr), cerr)
	})
	runtime.KeepAlive(inherited)
	if err != nil {
		return nil, err
	}
	s := &Successor{h: object[*C.handoff_successor]{p: p, what: "successor"}}
	runtime.SetFinalizer(s, (*Successor).Close)
	return s, nil
}

// Handshake sends Hello with buildID and waits for HelloAck, giving the
// handoff's id. The library bounds the wait (5 s); ctx is checked before
// it starts, since the exchange cannot be interrupted halfway.
func (s *Successor) Handshake(ctx context.Context, buildID []byte) (HandoffID, error) {
	var id HandoffID
	if err := ctx.Err(); err != nil {
		return id, err
	}
	err := s.h.exclusive(func(p *C.handoff_successor) error {
		var cerr *C.handoff_error
		var cid [16]C.uint8_t
		ptr, length := bytesArg(buildID)
		status := C.handoff_successor_handshake(p, ptr, length, &cid[0], &cerr)
		runtime.KeepAlive(buildID)
		if err := check(status, cerr); err != nil {
			return err
		}
		for k, b := range cid {
			id[k] = byte(b)
		}
		return nil
	})
	runtime.KeepAlive(s)
	return id, err
}

// WaitForBegin waits for Begin (the incumbent has sealed and released the
// lock) until ctx is done. ErrAborted or ErrPeerClosed: the handoff is
// over; exit without touching the data directory. When ctx ends first the
// error matches both ErrTimeout and ctx.Err(), at once: it waits on the
// control connection (handoff_successor_control_fd) in Go's netpoller and
// reads it with handoff_successor_poll_begin, as the library's own
// blocking wait does. Close ends a wait in progress.
func (s *Successor) WaitForBegin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return notBegun(err)
	}
	var watch *readiness
	// Under the handle's lock: the descriptor cannot be freed (and its
	// number reused) before it is duplicated.
	err := s.h.exclusive(func(p *C.handoff_successor) error {
		if s.waiting != nil {
			return newError(StatusWrongState, "another WaitForBegin is waiting")
		}
		var err error
		watch, err = watchReadable(int(C.handoff_successor_control_fd(p)), "control connection")
		s.waiting = watch
		return err
	})
	runtime.KeepAlive(s)
	if err != nil {
		return err
	}
	defer watch.close()
	defer s.doneWaiting()
	defer context.AfterFunc(ctx, watch.interrupt)()

	var begun bool
	var polled error
	err = watch.await(func() bool {
		begun, polled = s.pollBegin()
		return begun || polled != nil
	})
	switch {
	case polled != nil:
		return polled
	case begun:
		return nil
	case ctx.Err() != nil:
		return notBegun(ctx.Err())
	case errors.Is(err, errInterrupted):
		return closedError(s.h.what)
	}
	return newError(StatusIO, fmt.Sprintf("waiting for Begin: %v", err))
}

func notBegun(ctxErr error) error {
	return fmt.Errorf("%w: %w", newError(StatusTimeout, "no Begin before the context ended"), ctxErr)
}

func (s *Successor) doneWaiting() {
	s.h.serial.Lock()
	s.waiting = nil
	s.h.serial.Unlock()
}

// pollBegin reads what the control connection holds, without waiting.
func (s *Successor) pollBegin() (bool, error) {
	var begun C.bool
	err := s.h.exclusive(func(p *C.handoff_successor) error {
		var cerr *C.handoff_error
		return check(C.handoff_successor_poll_begin(p, &begun, &cerr), cerr)
	})
	runtime.KeepAlive(s)
	return bool(begun), err
}

// StartHeartbeats sends heartbeats every 2 s from Begin until Ready, so that
// a slow start-up between Begin and Ready is not taken for a dead successor.
// Call it before WaitForBegin: its thread is then not started in the
// blackout.
func (s *Successor) StartHeartbeats() error {
	err := s.h.exclusive(func(p *C.handoff_successor) error {
		var cerr *C.handoff_error
		return check(C.handoff_successor_start_heartbeats(p, &cerr), cerr)
	})
	runtime.KeepAlive(s)
	return err
}

// TakeFile takes listener name as kind after Begin, as Inherited.TakeFile
// does. Before Begin it is ErrWrongState: the listeners still serve the
// incumbent.
func (s *Successor) TakeFile(name string, kind ListenerKind) (*os.File, error) {
	cname, err := cString(name, "listener name")
	if err != nil {
		return nil, err
	}
	defer freeCString(cname)
	var fd C.int
	err = s.h.exclusive(func(p *C.handoff_successor) error {
		var cerr *C.handoff_error
		return check(C.handoff_successor_take_listener(p, cname, C.uint32_t(kind), &fd, &cerr), cerr)
	})
	runtime.KeepAlive(s)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Listener takes listener name (ListenerTCP or ListenerUnix) after Begin
// as a net.Listener, which makes the shared socket non-blocking (see
// Inherited.Listener): after Begin this process owns it.
func (s *Successor) Listener(name string, kind ListenerKind) (net.Listener, error) {
	if kind != ListenerTCP && kind != ListenerUnix {
		return nil, newError(StatusInvalidArgument, fmt.Sprintf("a %s socket is not a net.Listener: use PacketConn", kind))
	}
	f, err := s.TakeFile(name, kind)
	if err != nil {
		return nil, err
	}
	return fileListener(f)
}

// PacketConn takes the UDP socket name after Begin as a net.PacketConn.
func (s *Successor) PacketConn(name string) (net.PacketConn, error) {
	f, err := s.TakeFile(name, ListenerUDP)
	if err != nil {
		return nil, err
	}
	return filePacketConn(f)
}

// AnnounceReady sends Ready (nil: healthy, nothing else to say; otherwise
// its ListeningOn, HealthzOK and AdvertisedRevisionPerShard), then binds
// the control socket at controlPath as the new incumbent, replacing the
// old one's atomically, holding lock (which moves into the incumbent; the
// Lock handle is left empty). Once Ready is sent this process is
// authoritative; the Successor is spent either way.
func (s *Successor) AnnounceReady(ready *Ready, controlPath string, lock *Lock) (*Incumbent, error) {
	cpath, err := cString(controlPath, "control socket path")
	if err != nil {
		return nil, err
	}
	defer freeCString(cpath)
	if lock == nil {
		return nil, newError(StatusNullPointer, "no lock given")
	}
	var msg *C.handoff_message
	if ready != nil {
		if msg, err = toCMessage(Frame{Message: *ready}); err != nil {
			return nil, err
		}
		defer C.handoff_message_free(msg)
	}
	var p *C.handoff_incumbent
	err = s.h.exclusive(func(sp *C.handoff_successor) error {
		return lock.h.alone(func(lp *C.handoff_lock) error {
			var cerr *C.handoff_error
			return check(C.handoff_successor_announce_ready(sp, msg, cpath, lp, &p, &cerr), cerr)
		})
	})
	runtime.KeepAlive(s)
	runtime.KeepAlive(lock)
	if err != nil {
		return nil, err
	}
	return newIncumbent(p), nil
}

// Close frees the successor, closing its control socket and the listeners
// not taken. Idempotent.
func (s *Successor) Close() error {
	runtime.SetFinalizer(s, nil)
	s.h.serial.Lock()
	if s.waiting != nil {
		s.waiting.interrupt()
	}
	s.h.serial.Unlock()
	C.handoff_successor_free(s.h.take())
	return nil
}
