// minimal-go: the smallest real service on the Go binding, to copy as a start.
//
//	minimal-go DATA_DIR CONTROL_SOCKET   (run by a supervisor that passes the TCP listener "counter")
//
// A durable counter: "INCR" appends the new value as a line to DATA_DIR/counter.log and
// fdatasyncs before answering it; "GET" answers the value (the log's whole lines);
// "PING" answers "PONG <pid> go". examples/minimal/ has it in every language.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"libhandoff.dev/handoff"
)

const maxLine = 64

// check ends the process on a failure: before Ready the supervisor rolls back.
func check(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "minimal-go[%d]: %s: %v\n", os.Getpid(), what, err)
		os.Exit(1)
	}
}

// counterLog is one line per INCR, each fdatasynced before it is answered.
type counterLog struct {
	dir   string
	f     *os.File
	value uint64
}

// open (cold start, successor, resume) opens the log and counts its whole lines.
func (l *counterLog) open() {
	f, err := os.OpenFile(filepath.Join(l.dir, "counter.log"), os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
	check(err, "opening the log")
	data, err := io.ReadAll(f)
	check(err, "reading the log")
	dir, err := os.Open(l.dir)
	check(err, "opening the data dir")
	check(dir.Sync(), "syncing the data dir") // a new file's name is durable too
	dir.Close()
	l.f, l.value = f, uint64(bytes.Count(data, []byte{'\n'}))
}

func (l *counterLog) incr() string {
	record := strconv.FormatUint(l.value+1, 10) + "\n" // the record is the answer
	if _, err := l.f.WriteString(record); err != nil {
		return "ERR write failed\n" // a torn record has no newline: it never counts
	}
	// What reached the disk is unknown after a failure: never answer.
	check(syscall.Fdatasync(int(l.f.Fd())), "fdatasync")
	l.value++
	return record
}

// line is a request line from a connection's reader, or the end of it.
type line struct {
	c               net.Conn
	text            string
	closed, tooLong bool
}

func readLines(c net.Conn, lines chan<- line) {
	r := bufio.NewReaderSize(c, maxLine)
	for {
		text, err := r.ReadSlice('\n')
		if err != nil {
			lines <- line{c: c, closed: true, tooLong: errors.Is(err, bufio.ErrBufferFull)}
			return
		}
		lines <- line{c: c, text: strings.TrimSuffix(strings.TrimSuffix(string(text), "\n"), "\r")}
	}
}

// service is the loop's state: only the loop's goroutine touches it.
type service struct {
	log       counterLog
	ln        *net.TCPListener
	conns     map[net.Conn]bool
	lines     chan line
	accepted  chan net.Conn
	acceptEnd chan struct{} // nil while not accepting
}

func (s *service) startAccepting() {
	s.ln.SetDeadline(time.Time{})
	s.acceptEnd = make(chan struct{})
	go func(done chan<- struct{}) {
		defer close(done)
		for {
			c, err := s.ln.Accept() // Go polls the listener first: its shared O_NONBLOCK is set
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
				return
			} else if err != nil {
				time.Sleep(100 * time.Millisecond) // out of descriptors: let one free up rather than spin
			} else {
				s.accepted <- c
			}
		}
	}(s.acceptEnd)
}

// stopAccepting ends the accept goroutine without closing the listener:
// new clients wait in the kernel's queue for the successor (or a resume).
func (s *service) stopAccepting() {
	s.ln.SetDeadline(time.Unix(1, 0))
	for s.acceptEnd != nil {
		select {
		case c := <-s.accepted:
			s.conns[c] = true
			go readLines(c, s.lines)
		case <-s.acceptEnd:
			s.acceptEnd = nil
		}
	}
}

func (s *service) answer(l line) {
	if !s.conns[l.c] {
		return // closed by a drain
	}
	var out string
	switch {
	case l.tooLong:
		out = "ERR line too long\n"
	case l.closed:
	case l.text == "INCR":
		out = s.log.incr()
	case l.text == "GET":
		out = strconv.FormatUint(s.log.value, 10) + "\n"
	case l.text == "PING":
		out = fmt.Sprintf("PONG %d go\n", os.Getpid())
	default:
		out = "ERR unknown command\n"
	}
	l.c.SetWriteDeadline(time.Now().Add(time.Second)) // a client that lets answers pile up is dropped
	if _, err := io.WriteString(l.c, out); err != nil || l.closed {
		l.c.Close()
		delete(s.conns, l.c)
	}
}

// serve is the service's own loop: the handoff's requests, new connections, request lines.
func (s *service) serve(inc *handoff.Incumbent, requests <-chan *handoff.Request) int {
	for {
		select {
		case c := <-s.accepted:
			s.conns[c] = true
			go readLines(c, s.lines)
		case l := <-s.lines:
			s.answer(l)
		case r, ok := <-requests:
			if !ok { // serving ended: committed (the successor serves) or superseded
				if outcome, _ := inc.Wait(context.Background()); outcome == handoff.ServeStopped {
					return 1
				}
				return 0
			}
			switch r.Kind() {
			case handoff.RequestDrain: // stop accepting; answer what came; close
				s.stopAccepting()
				for len(s.lines) > 0 {
					s.answer(<-s.lines)
				}
				for c := range s.conns {
					c.Close()
					delete(s.conns, c)
				}
			case handoff.RequestSeal: // every record is synced already: close the log
				check(s.log.f.Close(), "closing the log")
				s.log.f = nil
				check(r.PushRevision(s.log.value), "seal")
			case handoff.RequestResume: // rolled back: the library holds the lock again
				if s.log.f == nil {
					s.log.open()
				}
				s.startAccepting()
			}
			check(r.Complete(), "completing a request")
		}
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: minimal-go DATA_DIR CONTROL_SOCKET")
		os.Exit(2)
	}
	dataDir, control := os.Args[1], os.Args[2]
	inherited, err := handoff.Detect() // early: before other goroutines read the environment
	check(err, "detecting the role")
	var successor *handoff.Successor
	var ln net.Listener
	lockWait := 2 * time.Second
	if inherited.IsSuccessor() { // HANDOFF_ROLE=successor
		lockWait = 5 * time.Second
		successor, err = handoff.NewSuccessor(inherited)
		check(err, "successor")
		_, err = successor.Handshake(context.Background(), []byte("minimal-go"))
		check(err, "handshake")
		// The incumbent drains and seals meanwhile; until Begin, touch nothing.
		begin, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		check(successor.WaitForBegin(begin), "waiting for Begin")
		cancel()
		check(successor.StartHeartbeats(), "heartbeats") // a slow start is not a dead one
		ln, err = successor.Listener("counter", handoff.ListenerTCP)
	} else {
		ln, err = inherited.Listener("counter", handoff.ListenerTCP)
	}
	check(err, "listener counter (run me under a supervisor)")
	inherited.Close() // closes the listeners not taken
	wait, cancel := context.WithTimeout(context.Background(), lockWait)
	lock, err := handoff.AcquireLockWithRetry(wait, dataDir)
	cancel()
	check(err, "data-dir lock")
	s := &service{log: counterLog{dir: dataDir}, ln: ln.(*net.TCPListener), conns: map[net.Conn]bool{},
		lines: make(chan line, 64), accepted: make(chan net.Conn)}
	s.log.open()
	var inc *handoff.Incumbent
	if successor != nil {
		inc, err = successor.AnnounceReady(nil, control, lock)
		successor.Close()
	} else {
		inc, err = handoff.Bind(control, lock)
	}
	check(err, "becoming the incumbent")
	lock.Close() // empty: the lock moved into the incumbent
	check(inc.SetBuildID([]byte("minimal-go")), "build id")
	requests, err := inc.StartLoop()
	check(err, "serving the control socket")
	s.startAccepting()
	status := s.serve(inc, requests)
	inc.Close() // the log was closed by the seal
	ln.Close()
	os.Exit(status)
}
