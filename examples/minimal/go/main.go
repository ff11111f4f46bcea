// minimal-go DATA_DIR CONTROL_SOCKET: the smallest real service on the Go binding, to copy
// as a start; run by a supervisor that passes the TCP listener "counter". A durable counter:
// "INCR" appends the new value as a line to DATA_DIR/counter.log and fdatasyncs before
// answering it; "GET" answers the value (the log's whole lines); "PING" answers
// "PONG <pid> go".
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"libhandoff.dev/handoff"
)

// check ends the process on a failure: before Ready the supervisor rolls back.
func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "minimal-go[%d]: %v\n", os.Getpid(), err)
		os.Exit(1)
	}
}

func must[T any](v T, err error) T {
	check(err)
	return v
}

type service struct {
	dataDir string
	ln      *net.TCPListener
	gate    sync.RWMutex // accept holds it shared while it accepts
	mu      sync.Mutex   // guards the rest: one request line at a time
	log     *os.File     // one line per INCR, fdatasynced before it is answered
	value   uint64
	conns   map[net.Conn]bool
}

// openLog (cold start, successor, resume) opens the log and counts its whole lines.
func (s *service) openLog() {
	s.log = must(os.OpenFile(s.dataDir+"/counter.log", os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644))
	s.value = uint64(strings.Count(string(must(io.ReadAll(s.log))), "\n"))
	dir := must(os.Open(s.dataDir))
	check(dir.Sync()) // a new file's name is durable too
	dir.Close()
}

func (s *service) answer(line string) string {
	switch line {
	case "INCR":
		record := fmt.Sprintf("%d\n", s.value+1) // the record is the answer
		if _, err := s.log.WriteString(record); err != nil {
			return "ERR write failed\n" // a torn record has no newline: it never counts
		}
		check(syscall.Fdatasync(int(s.log.Fd()))) // failed: what reached the disk is unknown
		s.value++
		return record
	case "GET":
		return fmt.Sprintf("%d\n", s.value)
	case "PING":
		return fmt.Sprintf("PONG %d go\n", os.Getpid())
	}
	return "ERR unknown command\n"
}

// serveConn answers c's lines until it closes, sends an overlong one, or a drain closes it.
func (s *service) serveConn(c net.Conn) {
	r := bufio.NewReaderSize(c, 64)
	for {
		text, err := r.ReadSlice('\n')
		s.mu.Lock()
		out := ""
		if err == nil && s.conns[c] {
			out = s.answer(strings.TrimRight(string(text), "\r\n"))
		} else if err == bufio.ErrBufferFull {
			out = "ERR line too long\n" // then close (kv-go skips the line)
		}
		c.SetWriteDeadline(time.Now().Add(time.Second)) // a client that lets answers pile up is dropped
		_, werr := io.WriteString(c, out)
		if err != nil || werr != nil || !s.conns[c] {
			c.Close()
			delete(s.conns, c)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// accept takes connections, but not while a drain holds the gate shut.
func (s *service) accept() {
	for {
		s.gate.RLock()
		c, err := s.ln.Accept() // Go polls the listener first (and sets the shared O_NONBLOCK)
		if err == nil {         // else a drain's deadline, or skipped (kv-go backs off on EMFILE)
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			go s.serveConn(c)
		}
		s.gate.RUnlock()
	}
}

// serve is the service's own loop over the handoff's requests, until serving ends.
func (s *service) serve(requests <-chan *handoff.Request) {
	for r := range requests {
		switch r.Kind() {
		case handoff.RequestDrain: // stop accepting (clients wait in the kernel's queue); close
			s.ln.SetDeadline(time.Unix(1, 0)) // wakes accept, which then waits at the gate
			s.gate.Lock()
			s.mu.Lock() // no line is half answered now
			for c := range s.conns {
				c.Close()
			}
			clear(s.conns)
			s.mu.Unlock()
		case handoff.RequestSeal: // every record is synced already: close the log
			check(s.log.Close())
			s.log = nil
		case handoff.RequestResume: // rolled back: the library holds the lock again
			if s.log == nil {
				s.openLog()
			}
			s.ln.SetDeadline(time.Time{})
			s.gate.Unlock()
		}
		check(r.Complete())
	}
}

func main() {
	if len(os.Args) != 3 {
		check(fmt.Errorf("usage: minimal-go DATA_DIR CONTROL_SOCKET"))
	}
	s := &service{dataDir: os.Args[1], conns: map[net.Conn]bool{}}
	// Start-up has a minute, Begin included (the supervisor's deadline is its own).
	start, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inherited := must(handoff.Detect()) // early: before other goroutines read the environment
	var successor *handoff.Successor
	takeListener := inherited.Listener
	if inherited.IsSuccessor() { // HANDOFF_ROLE=successor
		successor = must(handoff.NewSuccessor(inherited))
		must(successor.Handshake(start, []byte("minimal-go")))
		check(successor.WaitForBegin(start)) // meanwhile the incumbent drains and seals
		check(successor.StartHeartbeats())   // until Ready: a slow start is not a dead one
		takeListener = successor.Listener
	}
	s.ln = must(takeListener("counter", handoff.ListenerTCP)).(*net.TCPListener)
	inherited.Close() // closes the listeners not taken
	lock := must(handoff.AcquireLockWithRetry(start, s.dataDir))
	s.openLog()
	var inc *handoff.Incumbent
	if successor != nil {
		inc = must(successor.AnnounceReady(nil, os.Args[2], lock))
		successor.Close()
	} else {
		inc = must(handoff.Bind(os.Args[2], lock))
	}
	lock.Close() // empty: the lock moved into the incumbent
	requests := must(inc.StartLoop())
	go s.accept()
	s.serve(requests)
	outcome, _ := inc.Wait(context.Background()) // committed (the successor serves) or superseded
	inc.Close()                                  // the log was closed by the seal
	s.ln.Close()
	if outcome == handoff.ServeStopped {
		os.Exit(1)
	}
}
