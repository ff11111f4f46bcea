// minimal-go DATA_DIR CONTROL_SOCKET: the smallest real service on the Go binding, to copy
// as a start; run by a supervisor that passes the TCP listener "counter". A durable counter:
// "INCR" appends the new value as a line to DATA_DIR/counter.log and fdatasyncs before
// answering it; "GET" answers the value (the log's whole lines); "PING" answers
// "PONG <pid> go". examples/minimal/ has it in every language.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
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
	dataDir  string
	ln       *net.TCPListener
	accepted chan struct{} // closed when the accept goroutine ends
	mu       sync.Mutex    // guards the rest: one request line at a time
	log      *os.File      // one line per INCR, fdatasynced before it is answered
	value    uint64
	conns    map[net.Conn]bool
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
		record := strconv.FormatUint(s.value+1, 10) + "\n" // the record is the answer
		if _, err := s.log.WriteString(record); err != nil {
			return "ERR write failed\n" // a torn record has no newline: it never counts
		}
		// What reached the disk is unknown after a failure: never answer.
		check(syscall.Fdatasync(int(s.log.Fd())))
		s.value++
		return record
	case "GET":
		return strconv.FormatUint(s.value, 10) + "\n"
	case "PING":
		return fmt.Sprintf("PONG %d go\n", os.Getpid())
	}
	return "ERR unknown command\n"
}

// serveConn answers c's lines until it closes, or a drain closes it.
func (s *service) serveConn(c net.Conn) {
	r := bufio.NewReaderSize(c, 64)
	for {
		text, err := r.ReadSlice('\n')
		skipping := false
		for errors.Is(err, bufio.ErrBufferFull) { // too long: skip to its newline, answered then
			skipping = true
			text, err = r.ReadSlice('\n')
		}
		s.mu.Lock()
		out := "ERR line too long\n"
		if err != nil || !s.conns[c] {
			out = ""
		} else if !skipping {
			out = s.answer(strings.TrimRight(string(text), "\r\n"))
		}
		c.SetWriteDeadline(time.Now().Add(time.Second)) // a client that lets answers pile up is dropped
		if _, werr := io.WriteString(c, out); werr != nil || err != nil || !s.conns[c] {
			c.Close()
			delete(s.conns, c)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

func (s *service) startAccepting() {
	s.ln.SetDeadline(time.Time{})
	s.accepted = make(chan struct{})
	go func(done chan<- struct{}) {
		defer close(done)
		for {
			c, err := s.ln.Accept() // Go polls the listener first (and sets the shared O_NONBLOCK)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return // the drain set a deadline in the past
			} else if err != nil {
				time.Sleep(100 * time.Millisecond) // out of descriptors: let one free up rather than spin
				continue
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			go s.serveConn(c)
		}
	}(s.accepted)
}

// serve is the service's own loop over the handoff's requests.
func (s *service) serve(inc *handoff.Incumbent, requests <-chan *handoff.Request) int {
	for r := range requests {
		switch r.Kind() {
		case handoff.RequestDrain: // stop accepting (clients wait in the kernel's queue); close
			s.ln.SetDeadline(time.Unix(1, 0))
			<-s.accepted
			s.mu.Lock() // no line is half answered now
			for c := range s.conns {
				c.Close()
				delete(s.conns, c)
			}
			s.mu.Unlock()
		case handoff.RequestSeal: // every record is synced already: close the log
			check(s.log.Close())
			s.log = nil
			check(r.PushRevision(s.value))
		case handoff.RequestResume: // rolled back: the library holds the lock again
			if s.log == nil {
				s.openLog()
			}
			s.startAccepting()
		}
		check(r.Complete())
	}
	// Serving ended: committed (the successor serves) or superseded.
	if outcome, _ := inc.Wait(context.Background()); outcome == handoff.ServeStopped {
		return 1
	}
	return 0
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: minimal-go DATA_DIR CONTROL_SOCKET")
		os.Exit(2)
	}
	s := &service{dataDir: os.Args[1], conns: map[net.Conn]bool{}}
	inherited := must(handoff.Detect()) // early: before other goroutines read the environment
	var successor *handoff.Successor
	var ln net.Listener
	if inherited.IsSuccessor() { // HANDOFF_ROLE=successor
		successor = must(handoff.NewSuccessor(inherited))
		must(successor.Handshake(context.Background(), []byte("minimal-go")))
		// The incumbent drains and seals meanwhile; until Begin, touch nothing.
		begin, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		check(successor.WaitForBegin(begin))
		cancel()
		check(successor.StartHeartbeats()) // a slow start is not a dead one
		ln = must(successor.Listener("counter", handoff.ListenerTCP))
	} else {
		ln = must(inherited.Listener("counter", handoff.ListenerTCP))
	}
	inherited.Close() // closes the listeners not taken
	s.ln = ln.(*net.TCPListener)
	wait, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	lock := must(handoff.AcquireLockWithRetry(wait, s.dataDir))
	cancel()
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
	s.startAccepting()
	status := s.serve(inc, requests)
	inc.Close() // the log was closed by the seal
	ln.Close()
	os.Exit(status)
}
