package main

// The service's loop: one goroutine that owns the connections and the
// accept goroutine, and carries out the handoff's requests (drain, seal,
// resume) as the library hands them over (Incumbent.StartLoop), across as
// many turns as they need, as kv-c's poll loop does. The connection
// goroutines tell it when a connection stops being live; the accept
// goroutine hands it the new ones.

import (
	"context"
	"net"
	"os"
	"syscall"
	"time"

	"libhandoff.dev/handoff"
)

// serve runs the loop until serving ends or a signal comes, and gives the
// exit status.
func (s *server) serve(requests <-chan *handoff.Request, signals <-chan os.Signal) int {
	for {
		var budget <-chan time.Time
		if s.drainBudget != nil {
			budget = s.drainBudget.C
		}
		select {
		case r, ok := <-requests:
			if !ok {
				return s.ended()
			}
			s.take(r)
		case nc := <-s.accepted:
			s.addConn(nc)
		case c := <-s.retired:
			delete(s.conns, c)
		case c := <-s.parked:
			s.parkedConn(c)
		case <-budget:
			s.drainOutOfTime()
		case sig := <-signals:
			say("signal %d: shutting down", sig.(syscall.Signal))
			s.shutDown()
			// Roll back a handoff in progress and stop the library's thread:
			// what it asked of us and we did not finish fails.
			if err := s.inc.Stop(); err != nil {
				say("error: %v", err)
			}
			s.letConnsRunOut()
			return 0
		}
		s.drainStep()
	}
}

func (s *server) take(r *handoff.Request) {
	switch r.Kind() {
	case handoff.RequestDrain:
		// By Moves, never by MoveLimit: a limit of 0 still moves, so that
		// the supervisor aborts naming the successor's limit instead of the
		// connections being closed.
		if r.Moves() {
			s.beginMovingDrain(r)
		} else {
			s.beginDrain(r)
		}
	case handoff.RequestSeal:
		s.seal(r)
	case handoff.RequestResume:
		s.resume(r)
	}
}

// complete completes r: done (failure "") or failed for that reason.
func complete(r *handoff.Request, failure string) {
	var err error
	if failure == "" {
		err = r.Complete()
	} else {
		err = r.Fail(failure)
	}
	if err != nil {
		say("error: completing the %v request: %v", r.Kind(), err)
	}
}

// beginDrain stops accepting and asks every connection to answer what it
// asked and close; drainStep completes the drain once none is left.
func (s *server) beginDrain(r *handoff.Request) {
	budget := r.TimeLeft()
	s.stopAccepting()
	say("draining %d connection(s)", len(s.conns))
	deadline := time.Now().Add(min(drainGrace, budget/2))
	s.drainDeadline.Store(&deadline)
	for c := range s.conns {
		// Wake the reader (the data stays queued) and bound the writes.
		c.nc.SetReadDeadline(time.Now())
		c.nc.SetWriteDeadline(deadline)
	}
	s.drain, s.drainBudget = r, time.NewTimer(budget)
}

// beginMovingDrain (protocol v2) stops accepting and wakes every
// connection, which stops between two requests, writes what its socket
// takes of the answers already durable and parks; moveParked moves them
// once all have. Nothing is fsynced here: the seal, which the library
// queues right behind this drain, makes the log durable, and no answer it
// covers leaves before that (the successor writes the carried answers
// only once it holds the lock, after the seal; after an abort, each
// connection waits for its answers to be durable before it writes them).
// The library and the supervisor pass the connections on during that
// fsync, as in kv-c.
//
// The connections are woken before the accept goroutine is stopped (a
// wait for that goroutine to run): they park meanwhile. One it accepts
// meanwhile is woken as it is added. Those waiting for a group commit are
// woken too: their answers move as they are (settle).
func (s *server) beginMovingDrain(r *handoff.Request) {
	s.drain, s.drainBudget = r, time.NewTimer(r.TimeLeft())
	s.moving.Store(true)
	for c := range s.conns {
		c.nc.SetDeadline(time.Now())
	}
	if l := s.currentLog(); l != nil {
		l.wakeWaiters() // those waiting for a group commit park too
	}
	s.stopAccepting()
}

func (s *server) drainStep() {
	if s.drain == nil || len(s.conns) > 0 {
		return
	}
	if s.moving.Load() {
		s.moveParked()
		return
	}
	if l := s.currentLog(); l != nil {
		l.waitDurable(l.end(), fatal)
	}
	complete(s.endDrain(), "") // the default report: nothing left open, accepting closed
}

// moveParked hands every parked connection to the successor with its
// partial line, its answers not yet written and whether it is inside an
// overlong line, and completes the drain. The connections stay parked,
// open, until the outcome (takeBack or closeMoved).
func (s *server) moveParked() {
	r := s.drain
	unwritten, unread := 0, 0
	for c := range s.moved {
		state := []byte{0}
		if c.discarding {
			state[0] = 1
		}
		if err := r.MoveConn("kv", c.nc.(syscall.Conn), c.in, c.out, state); err != nil {
			// Items leave only with a completed drain: nothing has moved.
			say("cannot move a connection: %v", err)
			s.takeBack()
			complete(s.endDrain(), "cannot move a connection: "+err.Error())
			return
		}
		unwritten += len(c.out)
		unread += len(c.in)
	}
	say("moving %d connection(s) to the successor: %d byte(s) unwritten, %d unread",
		len(s.moved), unwritten, unread)
	complete(s.endDrain(), "") // nothing left open, accepting closed
}

// parkedConn takes a connection that parked for a drain that moves it;
// one that parked as that drain ended (out of time) is served on.
func (s *server) parkedConn(c *conn) {
	if !s.moving.Load() {
		c.decision <- true
		return
	}
	delete(s.conns, c)
	s.moved[c] = struct{}{}
}

// drainOutOfTime fails a drain whose budget ran out: connections still
// open (v1), or not yet parked (v2: the parked ones are served on, as
// nothing moved).
func (s *server) drainOutOfTime() {
	if s.moving.Load() {
		s.takeBack()
	}
	complete(s.endDrain(), "connections still open at the end of the drain budget")
}

// takeBack: the parked connections are ours again (the library restored
// their file status flags) and served on from the state they kept. How
// many there were.
func (s *server) takeBack() int {
	s.moving.Store(false) // before they run: no connection parks again
	n := len(s.moved)
	for c := range s.moved {
		delete(s.moved, c)
		s.conns[c] = struct{}{}
		c.decision <- true
	}
	return n
}

// closeMoved closes our copies of the moved connections (the successor
// serves them): close, never shutdown.
func (s *server) closeMoved() {
	for c := range s.moved {
		delete(s.moved, c)
		c.decision <- false
	}
}

func (s *server) endDrain() *handoff.Request {
	r := s.drain
	s.drain = nil
	s.drainBudget.Stop()
	s.drainBudget = nil
	return r
}

// seal fsyncs the log and reports the revision. It keeps the file open,
// as sealed: no write goes to it any more, and a resume reopens the log in
// its descriptor slot (see server.sealed).
func (s *server) seal(r *handoff.Request) {
	s.mu.Lock()
	l := s.log
	s.log = nil
	s.mu.Unlock()
	if l == nil {
		complete(r, "the log is not open")
		return
	}
	s.sealed = l
	// Fatal, as in the group commit: the answers a moving drain carried
	// wait for this fsync, and none may leave after it failed (a later
	// fsync may report success for pages the kernel dropped).
	if err := l.f.Sync(); err != nil {
		fatal("seal: fsync %s: %v", l.path, err)
	}
	l.markSynced()
	if err := r.PushRevision(l.records); err != nil {
		say("error: %v", err)
		complete(r, "cannot report the revision")
		return
	}
	say("sealed at revision %d", l.records)
	complete(r, "")
}

// resume reopens the log if a seal took it (the library has already
// taken the lock back), takes back the connections that moved, and
// accepts again. The log first: a connection served on may write.
func (s *server) resume(r *handoff.Request) {
	s.drainDeadline.Store(nil)
	if s.currentLog() == nil {
		s.closeSealed()
		// The library took the lock back under a new generation: the one
		// a compaction stamps.
		if err := s.openState(s.inc.Generation()); err != nil {
			say("cannot reopen the log to resume: %v", err)
			complete(r, err.Error())
			exitNow(1)
		}
	}
	taken := s.takeBack()
	s.startAccepting()
	say("resumed after an aborted handoff (generation %d), %d moved connection(s) taken back",
		s.inc.Generation(), taken)
	complete(r, "")
}

// closeSealed closes the log the seal kept open (already fsynced).
func (s *server) closeSealed() {
	if s.sealed != nil {
		s.sealed.f.Close()
		s.sealed = nil
	}
}

// ended: the library has stopped serving; say how and step down.
func (s *server) ended() int {
	outcome, err := s.inc.Wait(context.Background()) // at once, now
	// Our copies of the moved connections are closed there: the successor
	// serves them (or, serving stopped, nobody will).
	s.shutDown()
	code := 0
	switch {
	case err != nil:
		say("error: serving ended: %v", err)
		code = 1
	case outcome == handoff.ServeCommitted:
		say("handoff committed: stepping down")
	case outcome == handoff.ServeSuperseded:
		say("superseded by another holder of the data dir: stepping down without writing")
	default:
		say("serving stopped (%v)", outcome)
		code = 1
	}
	// Everything was drained: let lingering connections run out.
	s.letConnsRunOut()
	return code
}

// ---- accepting -------------------------------------------------------------

// startAccepting runs the accept goroutine. The listener is Go's
// (non-blocking, polled by the runtime before every accept), so EAGAIN
// never surfaces.
func (s *server) startAccepting() {
	if s.acceptEnded != nil {
		return
	}
	// A deadline in the past stopped the previous one; clear it.
	if d, ok := s.ln.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Time{})
	}
	done := make(chan struct{})
	s.acceptEnded = done
	go s.acceptLoop(done)
}

// stopAccepting ends the accept goroutine without closing the listener:
// connections keep arriving in the kernel's queue (for a successor, or for
// this process again after a rollback). Those it accepted meanwhile are
// served like the others.
func (s *server) stopAccepting() {
	if s.acceptEnded == nil {
		return
	}
	if d, ok := s.ln.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Unix(1, 0))
	}
	for {
		select {
		case nc := <-s.accepted:
			s.addConn(nc)
		case <-s.acceptEnded:
			s.acceptEnded = nil
			return
		}
	}
}

func (s *server) addConn(nc net.Conn) {
	if s.moving.Load() {
		nc.SetDeadline(time.Now()) // accepted as a drain that moves began: it parks at once
	}
	s.serve1(&conn{nc: nc})
}

// serve1 makes c live and serves it on a goroutine of its own.
func (s *server) serve1(c *conn) {
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	go s.serveConn(c)
}

// ---- stepping down ----------------------------------------------------------------

// shutDown stops accepting and closes every live connection at once, and
// our copies of the moved ones.
func (s *server) shutDown() {
	s.stopAccepting()
	s.moving.Store(false)
	for c := range s.conns {
		c.nc.Close()
	}
	s.closeMoved()
}

// letConnsRunOut waits (a while) for every connection to end, lingering
// ones included.
func (s *server) letConnsRunOut() {
	timeout := time.After(lingerOnFinish)
	for len(s.conns) > 0 {
		select {
		case c := <-s.retired:
			delete(s.conns, c)
		case c := <-s.parked: // it parked as serving ended: close it
			delete(s.conns, c)
			c.decision <- false
		case <-timeout:
			return
		}
	}
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-timeout:
	}
}
