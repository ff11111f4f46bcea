// minimal-go DATA_DIR CONTROL_SOCKET: the smallest real service on the Go binding, to copy as a
// start: a durable counter on the supervisor's TCP listener "counter" (see README.md).
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"libhandoff.dev/handoff"
)

// check ends the process on a failure: before Ready the supervisor rolls back, after it restarts it.
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
	serving sync.WaitGroup // the accept loop and its connections, which a drain waits out
	mu      sync.Mutex     // one request line at a time
	log     *os.File       // one line per INCR, fdatasynced before it is answered
	value   uint64
}

// openLog (cold start, successor, resume) opens the log and counts its whole lines.
func (s *service) openLog() {
	s.log = must(os.OpenFile(s.dataDir+"/counter.log", os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644))
	s.value = uint64(strings.Count(string(must(os.ReadFile(s.log.Name()))), "\n"))
	dir := must(os.Open(s.dataDir))
	check(dir.Sync()) // a new file's name is durable too
	dir.Close()
}

func (s *service) answer(line string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch line {
	case "INCR":
		s.value++
		must(fmt.Fprintf(s.log, "%d\n", s.value)) // the record is the answer, GET's
		check(syscall.Fdatasync(int(s.log.Fd()))) // failed: what reached the disk is unknown
		fallthrough
	case "GET":
		return fmt.Sprintf("%d\n", s.value)
	case "PING":
		return fmt.Sprintf("PONG %d go\n", os.Getpid())
	}
	return "ERR unknown command\n"
}

// serveConn answers c's lines until it closes, sends one of 64 bytes or more, or a drain ends ctx.
func (s *service) serveConn(ctx context.Context, c net.Conn) {
	defer s.serving.Done()
	defer c.Close()
	// The drain stops the reads only: the answer under way is finished, no line half answered.
	defer context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })()
	r := bufio.NewReaderSize(c, 64)
	for text, err := r.ReadSlice('\n'); err == nil; text, err = r.ReadSlice('\n') {
		c.SetWriteDeadline(time.Now().Add(time.Second)) // a client that lets answers pile up is dropped
		if _, err := fmt.Fprint(c, s.answer(strings.TrimRight(string(text), "\r\n"))); err != nil {
			return
		}
	}
}

// accept serves each connection in a goroutine of its own, until the drain it returns.
func (s *service) accept() context.CancelFunc {
	ctx, drain := context.WithCancel(context.Background())
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		for ctx.Err() == nil {
			c, err := s.ln.Accept() // Go polls the listener first (and sets the shared O_NONBLOCK)
			if err == nil {         // else the drain's deadline, or skipped (kv-go backs off on EMFILE)
				s.serving.Add(1)
				go s.serveConn(ctx, c)
			}
		}
	}()
	return drain
}

// serve is the service's own loop over the handoff's requests, until serving ends.
func (s *service) serve(requests <-chan *handoff.Request) {
	drain := s.accept()
	for r := range requests {
		switch r.Kind() {
		case handoff.RequestDrain: // stop accepting (clients wait in the kernel's queue); close
			drain()
			s.ln.SetDeadline(time.Unix(1, 0)) // wakes Accept
			s.serving.Wait()
		case handoff.RequestSeal: // every record is synced already
			check(s.log.Close())
		case handoff.RequestResume: // rolled back: the library holds the lock again
			s.log.Close() // unless the seal did
			s.openLog()
			s.ln.SetDeadline(time.Time{})
			drain = s.accept()
		}
		check(r.Complete())
	}
}

func main() {
	if len(os.Args) != 3 {
		check(fmt.Errorf("usage: minimal-go DATA_DIR CONTROL_SOCKET"))
	}
	start, cancel := context.WithTimeout(context.Background(), time.Minute) // Begin included
	defer cancel()
	inherited := must(handoff.Detect()) // early: before other goroutines read the environment
	takeListener, becomeIncumbent := inherited.Listener, handoff.Bind
	if inherited.IsSuccessor() { // HANDOFF_ROLE=successor
		successor := must(handoff.NewSuccessor(inherited))
		must(successor.Handshake(start, []byte("minimal-go")))
		check(successor.StartHeartbeats())   // Begin to Ready: a slow start is not a dead one
		check(successor.WaitForBegin(start)) // meanwhile the incumbent drains and seals
		takeListener = successor.Listener
		becomeIncumbent = func(control string, lock *handoff.Lock) (*handoff.Incumbent, error) {
			defer successor.Close()
			return successor.AnnounceReady(nil, control, lock)
		}
	}
	s := &service{dataDir: os.Args[1], ln: must(takeListener("counter", handoff.ListenerTCP)).(*net.TCPListener)}
	inherited.Close() // closes the listeners not taken
	lock := must(handoff.AcquireLockWithRetry(start, s.dataDir))
	s.openLog()
	inc := must(becomeIncumbent(os.Args[2], lock))
	lock.Close() // empty: the lock moved into the incumbent
	s.serve(must(inc.StartLoop()))
	outcome, _ := inc.Wait(context.Background()) // committed (the successor serves) or superseded
	inc.Close()                                  // the log was closed by the seal
	s.ln.Close()
	if outcome == handoff.ServeStopped {
		os.Exit(1)
	}
}
