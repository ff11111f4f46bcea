package main

// The server: a goroutine per connection, the table and the log. The
// service's loop (loop.go) owns the connections and does the handoff's
// requests.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
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

	// A successor's preload (nil: none), used up by the next openState.
	preload *logPreload

	// The loop's own.
	conns       map[*conn]struct{} // live: not yet lingering
	acceptEnded chan struct{}      // closed when the accept goroutine ends; nil when not accepting
	drain       *handoff.Request   // the drain in progress
	drainBudget *time.Timer        // its end

	// To the loop: a connection accepted, a connection no longer live.
	accepted chan net.Conn
	retired  chan *conn
	// From the loop to the connections: a drain's deadline, nil when none
	// runs.
	drainDeadline atomic.Pointer[time.Time]

	// every connection goroutine, lingering ones included
	connWG sync.WaitGroup
}

func newServer(dataDir string) *server {
	return &server{dataDir: dataDir, table: map[string]string{}, conns: map[*conn]struct{}{},
		accepted: make(chan net.Conn), retired: make(chan *conn)}
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

type conn struct {
	nc            net.Conn
	in            []byte // a partial line
	discarding    bool   // inside an overlong line: skip to its newline
	served        uint64 // lines answered
	drainAnswered uint64 // lines answered since the drain began
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
		deadline := s.drainDeadline.Load()
		if deadline == nil {
			if err != nil {
				c.nc.SetReadDeadline(time.Time{}) // woken by a drain since rolled back
			}
			continue
		}
		// Draining: answer what was asked and close, like HTTP's
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
