package main

// The server: an accept loop, a goroutine per connection, the table and
// the log, and the Drainable the library calls during a handoff.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"libhandoff.dev/handoff"
)

const (
	// A request line is at most maxLine bytes before its '\n'.
	maxLine = 1024
	// How long a draining incumbent waits for the first request of a
	// connection it accepted but has heard nothing from yet (capped by half
	// the drain budget).
	drainGrace = time.Second
	// How long a connection shut down for writing is read and discarded
	// before it is closed, so that a late request does not turn into a reset
	// that destroys answers the client has not read yet.
	lingerTime = 500 * time.Millisecond
)

type server struct {
	dataDir string
	inc     *handoff.Incumbent
	ln      net.Listener

	// mu guards the table and the log (nil while sealed).
	mu    sync.Mutex
	table map[string]string
	log   *kvLog

	// A successor's preload (nil: none), used up by the next openState.
	preload *logPreload

	// connsMu guards the connections, the accept loop and the drain.
	connsMu       sync.Mutex
	conns         map[*conn]struct{} // live: not yet lingering
	accepting     chan struct{}      // closed when the accept loop ends; nil when stopped
	draining      bool
	drainDeadline time.Time
	drained       chan struct{} // closed once a drain has no live connection left
	shuttingDown  bool

	// every connection goroutine, lingering ones included
	connWG sync.WaitGroup
}

func newServer(dataDir string) *server {
	return &server{dataDir: dataDir, table: map[string]string{}, conns: map[*conn]struct{}{}}
}

// openState opens and replays the log into a fresh table, or goes on from
// the preload if there is one (see openLog), then compacts it if the policy
// says so. generation is the lock generation this process holds now, which
// the compacted records carry. Only with the lock held, before serving.
func (s *server) openState(generation uint64) error {
	pre := s.preload
	s.preload = nil // used up: a later open (resume after abort) replays everything
	l, table, err := openLog(s.dataDir, pre)
	if err != nil {
		return err
	}
	if l.removedStale {
		say("removed %s, left by a compaction that did not finish", compactFile)
	}
	if pre != nil && l.keptPreload {
		say("kept %d preloaded record(s), replayed %d appended since", pre.records, l.records-pre.records)
	} else if pre != nil {
		say("the log changed under the preload: replayed all %d record(s)", l.records)
	}
	if l.truncated > 0 {
		say("truncated a torn tail of %d bytes from %s", l.truncated, l.path)
	}
	if shouldCompact(l.records, len(table)) {
		started, before := time.Now(), l.records
		err := compactLog(l, table, generation)
		var kept *compactKeptError
		switch {
		case errors.As(err, &kept):
			say("compaction failed (the log is kept as it is): %v", kept.err)
		case err != nil:
			l.close()
			return err
		default:
			say("compacted the log: %d record(s) -> %d in %d ms",
				before, l.records, time.Since(started).Milliseconds())
		}
	}
	s.mu.Lock()
	s.table, s.log = table, l
	s.mu.Unlock()
	return nil
}

// preloadState replays the incumbent's log read-only while it still
// serves, so that after the seal only the records appended since are left
// to replay: nobody is accepted between the drain and Ready, and this keeps
// that short. A successor does it before the handshake, because the
// supervisor drains the incumbent as soon as the successor's Hello arrives.
func (s *server) preloadState() error {
	started := time.Now()
	pre, err := preloadLog(s.dataDir)
	var unreadable *unreadableLogError
	if errors.As(err, &unreadable) {
		say("no preload (the whole log is replayed after the lock): %v", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("preloading the log: %w", err)
	}
	s.preload = pre
	records := uint64(0)
	if pre != nil {
		records = pre.records
	}
	say("preloaded %d record(s) in %d ms", records, time.Since(started).Milliseconds())
	return nil
}

func (s *server) records() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return 0
	}
	return s.log.records
}

// ---- accepting -------------------------------------------------------------

// startAccepting runs the accept loop. The listener is Go's (non-blocking,
// polled by the runtime before every accept), so EAGAIN never surfaces.
func (s *server) startAccepting() {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if s.accepting != nil || s.shuttingDown {
		return
	}
	// A deadline in the past stopped the previous loop; clear it.
	if d, ok := s.ln.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Time{})
	}
	done := make(chan struct{})
	s.accepting = done
	go s.acceptLoop(done)
}

// stopAccepting ends the accept loop and waits for it, without closing the
// listener: connections keep arriving in the kernel's queue (for a
// successor, or for this process again after a rollback).
func (s *server) stopAccepting() {
	s.connsMu.Lock()
	done := s.accepting
	s.accepting = nil
	s.connsMu.Unlock()
	if done == nil {
		return
	}
	if d, ok := s.ln.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Unix(1, 0))
	}
	<-done
}

func (s *server) acceptLoop(done chan struct{}) {
	defer close(done)
	failing := false // logged once per episode (EMFILE repeats until a descriptor frees)
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return // stopAccepting
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if !failing {
				say("accept: %v; retrying every 20 ms", err)
				failing = true
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if failing {
			say("accepting again")
			failing = false
		}
		s.addConn(nc)
	}
}

// ---- connections -------------------------------------------------------------

type conn struct {
	nc            net.Conn
	in            []byte // a partial line
	discarding    bool   // inside an overlong line: skip to its newline
	served        uint64 // lines answered
	drainAnswered uint64 // lines answered since the drain began
}

func (s *server) addConn(nc net.Conn) {
	c := &conn{nc: nc}
	s.connsMu.Lock()
	s.conns[c] = struct{}{}
	s.connsMu.Unlock()
	s.connWG.Add(1)
	go s.serveConn(c)
}

// retire takes c out of the live connections (a drain waits for none to be
// left); lingering ones are no longer live.
func (s *server) retire(c *conn) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if s.draining && len(s.conns) == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// drainState says whether a drain is running, and its deadline.
func (s *server) drainState() (bool, time.Time) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return s.draining, s.drainDeadline
}

func (s *server) serveConn(c *conn) {
	defer s.connWG.Done()
	buf := make([]byte, 4096)
	var out []byte
	for {
		n, err := c.nc.Read(buf)
		if n > 0 {
			var durableAt int64
			out = s.process(c, buf[:n], out[:0], &durableAt)
			if len(out) > 0 {
				// Group commit: nothing leaves before what it reports is on disk.
				if l := s.currentLog(); l != nil && durableAt > 0 {
					l.waitDurable(durableAt, fatal)
				}
				if _, werr := c.nc.Write(out); werr != nil {
					break
				}
			}
		}
		if err != nil && !isTimeout(err) {
			break // EOF or a broken connection
		}
		draining, deadline := s.drainState()
		if !draining {
			if err != nil {
				c.nc.SetReadDeadline(time.Time{}) // woken by a drain since rolled back
			}
			continue
		}
		// Draining: answer what was asked and close, like HTTP's
		// Connection: close. A connection that has not sent a whole request
		// yet gets until the deadline.
		idle := c.served > 0 && len(c.in) == 0 && !c.discarding
		if c.drainAnswered > 0 || idle || !time.Now().Before(deadline) {
			s.retire(c)
			linger(c.nc)
			return
		}
		c.nc.SetReadDeadline(deadline)
	}
	s.retire(c)
	c.nc.Close()
}

// linger closes gracefully: FIN after the answers sent, then whatever
// still arrives is read and discarded for a while before the close.
func linger(nc net.Conn) {
	defer nc.Close()
	tcp, ok := nc.(*net.TCPConn)
	if !ok || tcp.CloseWrite() != nil {
		return
	}
	nc.SetReadDeadline(time.Now().Add(lingerTime))
	buf := make([]byte, 4096)
	for {
		if _, err := nc.Read(buf); err != nil {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *server) currentLog() *kvLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log
}

// process handles every whole line of data (the rest waits in c.in) and
// appends the answers to out. *durableAt is how much of the log must be on
// disk before they are sent.
func (s *server) process(c *conn, data []byte, out []byte, durableAt *int64) []byte {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		segment := data
		if i >= 0 {
			segment = data[:i]
		}
		if !c.discarding {
			if len(c.in)+len(segment) > maxLine {
				c.discarding = true
				c.in = c.in[:0]
			} else {
				c.in = append(c.in, segment...)
			}
		}
		if i < 0 {
			break
		}
		data = data[i+1:]
		if c.discarding {
			c.discarding = false
			out = s.answered(c, append(out, "ERR line too long (at most 1024 bytes)\n"...))
		} else {
			out = s.handle(c, c.in, out, durableAt)
			c.in = c.in[:0]
		}
	}
	return out
}

// answered counts one more answer.
func (s *server) answered(c *conn, out []byte) []byte {
	c.served++
	if draining, _ := s.drainState(); draining {
		c.drainAnswered++
	}
	return out
}

// handle answers one request line (without its '\n').
func (s *server) handle(c *conn, line []byte, out []byte, durableAt *int64) []byte {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	out = s.answered(c, out)
	if len(line) == 0 {
		return append(out, "ERR empty line\n"...)
	}
	fields := bytes.Split(line, []byte{' '})
	want := 0
	switch string(fields[0]) {
	case "PING":
		want = 1
	case "GET":
		want = 2
	case "SET":
		want = 3
	default:
		return append(out, "ERR unknown command\n"...)
	}
	for _, f := range fields {
		if len(f) == 0 {
			return append(out, "ERR fields are separated by exactly one space\n"...)
		}
	}
	if len(fields) != want {
		return append(out, "ERR wrong number of arguments\n"...)
	}
	if want >= 2 && !validItem(fields[1]) {
		return append(out, "ERR invalid key (1 to 256 printable ASCII bytes, no spaces)\n"...)
	}
	if want == 3 && !validItem(fields[2]) {
		return append(out, "ERR invalid value (1 to 256 printable ASCII bytes, no spaces)\n"...)
	}
	switch want {
	case 1:
		return append(out, "PONG "+strconv.Itoa(os.Getpid())+" go\n"...)
	case 2:
		s.mu.Lock()
		value, ok := s.table[string(fields[1])]
		if s.log != nil {
			// A read waits for what it saw to be durable, like a write.
			*durableAt = max(*durableAt, s.log.end())
		}
		s.mu.Unlock()
		if !ok {
			return append(out, "NOTFOUND\n"...)
		}
		return append(out, "VALUE "+value+"\n"...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return append(out, "ERR write failed: the log is closed\n"...)
	}
	generation := s.inc.Generation()
	end, err := s.log.appendSet(generation, fields[1], fields[2])
	if errors.Is(err, errCutBack) {
		fatal("%v", err)
	}
	if err != nil {
		return append(out, "ERR write failed: "+causeOf(err)+"\n"...)
	}
	s.table[string(fields[1])] = string(fields[2])
	*durableAt = max(*durableAt, end)
	return append(out, "OK "+strconv.FormatUint(generation, 10)+"\n"...)
}

// causeOf is an error's innermost text ("no space left on device").
func causeOf(err error) string {
	for {
		inner := errors.Unwrap(err)
		if inner == nil {
			return err.Error()
		}
		err = inner
	}
}

// ---- the handoff: handoff.Drainable ---------------------------------------------

// Drain stops accepting, answers what every connection asked and closes
// it, waits for none to be left, and fsyncs.
func (s *server) Drain(ctx context.Context) error {
	grace := drainGrace
	if hook := handoff.HookFromContext(ctx); hook != nil {
		grace = min(grace, hook.TimeLeft()/2)
	}
	s.stopAccepting()
	s.connsMu.Lock()
	if s.shuttingDown {
		s.connsMu.Unlock()
		return errors.New("the service is shutting down")
	}
	say("draining %d connection(s)", len(s.conns))
	deadline := time.Now().Add(grace)
	s.draining, s.drainDeadline = true, deadline
	drained := make(chan struct{})
	if len(s.conns) == 0 {
		close(drained)
	} else {
		s.drained = drained
	}
	for c := range s.conns {
		// Wake the reader (the data stays queued) and bound the writes.
		c.nc.SetReadDeadline(time.Now())
		c.nc.SetWriteDeadline(deadline)
	}
	s.connsMu.Unlock()

	select {
	case <-drained:
	case <-ctx.Done():
		return fmt.Errorf("connections still open at the end of the drain budget")
	}
	s.connsMu.Lock()
	shutting := s.shuttingDown
	s.connsMu.Unlock()
	if shutting {
		return errors.New("the service is shutting down")
	}
	if l := s.currentLog(); l != nil {
		l.waitDurable(l.end(), fatal)
	}
	return nil
}

// Seal fsyncs and closes the log, and reports the revision.
func (s *server) Seal(ctx context.Context) (handoff.SealReport, error) {
	s.mu.Lock()
	l := s.log
	s.log = nil
	s.mu.Unlock()
	if l == nil {
		return handoff.SealReport{}, errors.New("the log is not open")
	}
	if err := l.close(); err != nil {
		reason := fmt.Sprintf("fsync/close %s: %v", l.path, err)
		say("seal failed: %s", reason)
		return handoff.SealReport{}, errors.New(reason)
	}
	say("sealed at revision %d", l.records)
	return handoff.SealReport{LastRevisionPerShard: []uint64{l.records}}, nil
}

// ResumeAfterAbort reopens the log if the seal closed it (the library has
// already taken the lock back) and accepts again.
func (s *server) ResumeAfterAbort() error {
	s.connsMu.Lock()
	shutting := s.shuttingDown
	s.draining = false
	s.drained = nil
	s.connsMu.Unlock()
	if shutting {
		return errors.New("the service is shutting down")
	}
	if s.currentLog() == nil {
		// The library took the lock back under a new generation: the one
		// a compaction stamps.
		if err := s.openState(s.inc.Generation()); err != nil {
			say("cannot reopen the log to resume: %v", err)
			exitNow(1)
		}
	}
	s.startAccepting()
	say("resumed after an aborted handoff (generation %d)", s.inc.Generation())
	return nil
}

// ---- stepping down ----------------------------------------------------------------

// shutDown stops accepting and closes every connection at once; a hook
// that runs or comes later fails.
func (s *server) shutDown() {
	s.connsMu.Lock()
	s.shuttingDown = true
	drained := s.drained
	s.drained = nil
	for c := range s.conns {
		c.nc.Close()
	}
	s.connsMu.Unlock()
	if drained != nil {
		close(drained) // a drain in progress ends now
	}
	s.stopAccepting()
}

// waitConns waits (a while) for every connection goroutine to end.
func (s *server) waitConns(limit time.Duration) {
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(limit):
	}
}

// closeLog fsyncs and closes the log if it is open.
func (s *server) closeLog() {
	s.mu.Lock()
	l := s.log
	s.log = nil
	s.mu.Unlock()
	if l != nil {
		if err := l.close(); err != nil {
			say("closing the log: %v", err)
		}
	}
}
