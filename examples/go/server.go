package main

// The server: a goroutine per connection, the table and the log. The
// service's loop (loop.go) owns the connections and does the handoff's
// requests.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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

	// mu guards the table and the log (nil while sealed), which the
	// connection goroutines share.
	mu    sync.Mutex
	table map[string]string
	log   *kvLog
	// The log the seal fsynced, kept open (the loop's): a resume closes it
	// and opens the log again by its path, in the same descriptor slot, so
	// that a resume at the descriptor limit still can (a successor may have
	// replaced the file meanwhile).
	sealed *kvLog

	// Protocol v2 (examples/README.md, "Moving connections"): whether
	// handoffs move the connections (not --no-moves), and, for tests,
	// whether a successor exits once it adopted them (--exit-after-adopt).
	moves, exitAfterAdopt bool
	// A successor's adopted connections, served from Ready on.
	adopted []*conn

	// A successor's preload (nil: none), used up by the next openState.
	preload *logPreload

	// The loop's own.
	conns       map[*conn]struct{} // live: not yet lingering, not moved
	moved       map[*conn]struct{} // parked, handed to the successor: untouched until the outcome
	acceptEnded chan struct{}      // closed when the accept goroutine ends; nil when not accepting
	drain       *handoff.Request   // the drain in progress
	drainBudget *time.Timer        // its end

	// To the loop: a connection accepted, a connection no longer live, one
	// parked for a drain that moves it.
	accepted chan net.Conn
	retired  chan *conn
	parked   chan *conn
	// From the loop to the connections: a drain's deadline, nil when none
	// runs (protocol v1); whether a drain that moves them runs (v2).
	drainDeadline atomic.Pointer[time.Time]
	moving        atomic.Bool

	// every connection goroutine, lingering ones included
	connWG sync.WaitGroup
}

func newServer(dataDir string) *server {
	return &server{dataDir: dataDir, table: map[string]string{}, conns: map[*conn]struct{}{},
		moved: map[*conn]struct{}{}, accepted: make(chan net.Conn), retired: make(chan *conn),
		parked: make(chan *conn)}
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

// ---- connections -------------------------------------------------------------

// acceptLoop accepts until stopAccepting's deadline and hands each
// connection to the loop.
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
		s.accepted <- nc
	}
}

// conn is one client connection, served by its own goroutine, which alone
// touches these fields while it runs (the loop reads them only while the
// goroutine is parked).
type conn struct {
	nc  net.Conn
	in  []byte // a partial line
	out []byte // answers produced and not yet written
	// What out's answers wait for: owed durable up to owedAt (nil: nothing).
	// Kept across a drain that moves c, whose seal makes it durable.
	owed          *kvLog
	owedAt        int64
	discarding    bool   // inside an overlong line: skip to its newline
	eof           bool   // the client closed its side
	served        uint64 // lines answered
	drainAnswered uint64 // lines answered since the drain began
	// decision, while parked for a drain that moves: true to serve on (a
	// rollback), false to close (the successor has it).
	decision chan bool
}

// serveConn serves c until it closes, is drained (protocol v1) or ends
// parked (moved, protocol v2). Each turn writes what is owed, then reads
// and answers what arrived; a drain wakes it with a deadline.
func (s *server) serveConn(c *conn) {
	defer s.connWG.Done()
	buf := make([]byte, 4096)
	for {
		err := s.flushOut(c)
		if err == nil && c.eof && len(c.out) == 0 {
			break // answered to the end; the client closed
		}
		writing := err != nil
		if err == nil {
			err = s.readSome(c, buf)
		}
		if err != nil && !isTimeout(err) {
			break // a broken connection
		}
		if s.moving.Load() {
			if !s.park(c) {
				return
			}
			continue
		}
		deadline := s.drainDeadline.Load()
		if deadline == nil {
			if err != nil {
				s.clearDeadlines(c) // woken by a drain since rolled back
			}
			continue
		}
		if writing {
			break // draining (v1): out of time to write the answers
		}
		// Draining (v1): answer what was asked and close, like HTTP's
		// Connection: close. A connection that has not sent a whole request
		// yet gets until the deadline.
		idle := c.served > 0 && len(c.in) == 0 && !c.discarding
		if c.drainAnswered > 0 || idle || !time.Now().Before(*deadline) {
			s.retired <- c
			linger(c.nc)
			return
		}
		c.nc.SetReadDeadline(*deadline)
	}
	s.retired <- c
	c.nc.Close()
}

// flushOut writes c.out, once its answers are durable; what a deadline
// left unwritten stays in it, and all of it when a drain that moves c
// began before they were.
func (s *server) flushOut(c *conn) error {
	if !s.settle(c) || len(c.out) == 0 {
		return nil
	}
	n, err := c.nc.Write(c.out)
	if err == nil {
		c.out = c.out[:0]
		return nil
	}
	c.out = append(c.out[:0], c.out[n:]...)
	return err
}

// readSome reads what arrived and answers every whole line of it into
// c.out, durable before it returns (group commit: nothing leaves before
// what it reports is on disk), unless a drain that moves c has begun: then
// its answers move as they are and the seal, queued right behind the
// drain, makes them durable (as in kv-c). The client's end of file is
// c.eof, not an error.
func (s *server) readSome(c *conn, buf []byte) error {
	n, err := c.nc.Read(buf)
	if n > 0 {
		var durableAt int64
		c.out = s.process(c, buf[:n], c.out, &durableAt)
		if l := s.currentLog(); l != nil && durableAt > 0 {
			c.owed, c.owedAt = l, durableAt
		}
		if !s.moving.Load() {
			s.settle(c)
		}
	}
	if errors.Is(err, io.EOF) {
		c.eof = true
		return nil
	}
	return err
}

// settle waits until c.out's answers are durable (fsyncing if no one
// else is), and says they are; unless a drain that moves c begins first:
// they move as they are (park). The log they wait for may be one a seal
// since fsynced.
func (s *server) settle(c *conn) bool {
	if c.owed != nil {
		if !c.owed.waitDurableUnless(c.owedAt, fatal, &s.moving) {
			return false
		}
		c.owed = nil
	}
	return true
}

// clearDeadlines ends a rolled-back drain's deadlines on c. A drain that
// began meanwhile set its own, which this may have just cleared: then the
// next read is woken at once again, so the drain is seen.
func (s *server) clearDeadlines(c *conn) {
	c.nc.SetDeadline(time.Time{})
	if s.moving.Load() {
		c.nc.SetDeadline(time.Now())
	} else if deadline := s.drainDeadline.Load(); deadline != nil {
		c.nc.SetReadDeadline(time.Now())
		c.nc.SetWriteDeadline(*deadline)
	}
}

// park stops serving c between two requests for a drain that moves it
// (protocol v2): it writes what the socket takes at once of answers
// already durable, then hands c to
// the loop and waits for the outcome. True: the handoff rolled back and c
// is served on, from the state it kept. False: c is closed (or was given
// up): close, never shutdown, which would end it for the successor too.
func (s *server) park(c *conn) bool {
	c.nc.SetDeadline(time.Time{})
	var err error
	if c.owed == nil || c.owed.durable(c.owedAt) {
		c.owed = nil
		err = writeWhatFits(c) // else every answer moves, not yet durable
	}
	if err != nil || (c.eof && len(c.out) == 0) {
		// Broken, or closed by its client with nothing owed: not moved.
		s.retired <- c
		c.nc.Close()
		return false
	}
	c.decision = make(chan bool, 1)
	s.parked <- c
	if <-c.decision {
		return true
	}
	c.nc.Close()
	return false
}

// writeWhatFits writes as much of c.out as the socket takes without
// waiting: one write(2) after another on the (non-blocking) descriptor
// until EAGAIN. Through Control, which no deadline stops.
func writeWhatFits(c *conn) error {
	raw, err := c.nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	cerr := raw.Control(func(fd uintptr) {
		written := 0
		for written < len(c.out) {
			n, err := syscall.Write(int(fd), c.out[written:])
			if n > 0 {
				written += n
			}
			if err == syscall.EINTR {
				continue
			}
			if err == syscall.EAGAIN {
				break
			}
			if err != nil {
				werr = err
				break
			}
		}
		c.out = append(c.out[:0], c.out[written:]...)
	})
	if cerr != nil {
		return cerr
	}
	return werr
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
	if s.drainDeadline.Load() != nil {
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

// closeLog fsyncs and closes the log if it is open, and the sealed one.
func (s *server) closeLog() {
	s.mu.Lock()
	l := s.log
	s.log = nil
	s.mu.Unlock()
	for _, l := range []*kvLog{l, s.sealed} {
		if l != nil {
			if err := l.close(); err != nil {
				say("closing the log: %v", err)
			}
		}
	}
	s.sealed = nil
}
