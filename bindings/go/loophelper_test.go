package handoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// A PING service driven by its own loop (StartLoop): the test binary in
// helper mode "loop-service". It answers "PING" with "PONG <pid> loop" and
// appends what it does to HELPER_REPORT, each line prefixed with its pid.
//
//	HELPER_SEAL=error      the first seal fails
//	HELPER_HOLD=PATH       a drain is held, loop turn after loop turn,
//	                       until PATH exists
//	HELPER_BEGIN=cancel    as a successor, SIGUSR1 cancels WaitForBegin's
//	                       context (which has no deadline)
//	HELPER_BEGIN=exit      as a successor, exit 1 right after Begin

type loopService struct {
	ln        *net.TCPListener
	report    *os.File
	inc       *Incumbent
	seal      string
	hold      string
	seals     int
	accepting chan struct{} // closed when the accept goroutine ends; nil when not accepting
	drain     *Request      // held across loop turns
	turns     int           // loop turns the drain has been held
	sealed    *Request      // the last seal, completed
}

func (s *loopService) note(format string, args ...any) {
	fmt.Fprintf(s.report, "%d %s\n", os.Getpid(), fmt.Sprintf(format, args...))
}

func (s *loopService) startAccepting() {
	s.ln.SetDeadline(time.Time{})
	done := make(chan struct{})
	s.accepting = done
	go func() {
		defer close(done)
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return // stopAccepting's deadline
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && line == "PING\n" {
					fmt.Fprintf(c, "PONG %d loop\n", os.Getpid())
				}
			}()
		}
	}()
}

func (s *loopService) stopAccepting() {
	s.ln.SetDeadline(time.Unix(1, 0))
	<-s.accepting
	s.accepting = nil
}

// serve is the service's loop: requests, ticks, SIGTERM.
func (s *loopService) serve(requests <-chan *Request) int {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-requests:
			if !ok {
				return s.ended()
			}
			s.take(r)
		case <-tick.C:
		case <-signals:
			s.note("stopping")
			if err := s.inc.Stop(); err != nil {
				s.note("stop: %v", err)
			}
		}
		if s.drain != nil {
			s.turns++
			s.drainStep()
		}
	}
}

func (s *loopService) take(r *Request) {
	s.note("request %s", r.Kind())
	switch r.Kind() {
	case RequestDrain:
		if r.TimeLeft() <= 0 {
			s.note("drain: no time left")
		}
		s.stopAccepting()
		s.drain, s.turns = r, 0
	case RequestSeal:
		s.seals++
		if s.seals == 1 && s.seal == "error" {
			s.check("fail", r.Fail("disk on fire"))
			return
		}
		s.check("seal progress", r.SealProgress(1, 1, 7))
		s.check("push revision", r.PushRevision(7))
		s.check("complete", r.Complete())
		s.note("second completion: %s", statusOf(r.Complete()))
		s.sealed = r
	case RequestResume:
		if s.sealed != nil {
			s.note("completed seal used again: %s", statusOf(s.sealed.PushRevision(8)))
		}
		s.startAccepting()
		s.note("resumed at generation %d", s.inc.Generation())
		s.check("complete", r.Complete())
	}
}

// drainStep completes the drain once it is released.
func (s *loopService) drainStep() {
	if s.hold != "" {
		if _, err := os.Stat(s.hold); err != nil {
			return
		}
	}
	s.note("drain held across %d loop turns", s.turns)
	s.check("complete", s.drain.Complete())
	s.drain = nil
}

func (s *loopService) check(what string, err error) {
	if err != nil {
		s.note("%s: %v", what, err)
	}
}

// ended: the requests channel is closed; Wait answers at once, even with
// a context that is already done.
func (s *loopService) ended() int {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	outcome, err := s.inc.Wait(done)
	s.note("requests closed: serving ended %v (%v)", outcome, err)
	if err != nil || outcome == ServeSuperseded {
		return 1
	}
	return 0
}

func loopServiceHelper() int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "loop helper[%d]: %v\n", os.Getpid(), err)
		return 1
	}
	report, err := os.OpenFile(os.Getenv("HELPER_REPORT"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fail(err)
	}
	defer report.Close()
	s := &loopService{report: report, seal: os.Getenv("HELPER_SEAL"), hold: os.Getenv("HELPER_HOLD")}
	inherited, err := Detect()
	if err != nil {
		return fail(err)
	}
	if inherited.IsSuccessor() {
		err = s.takeOver(inherited)
	} else {
		err = s.coldStart(inherited)
	}
	if err != nil {
		return fail(err)
	}
	defer s.inc.Close()
	requests, err := s.inc.StartLoop()
	if err != nil {
		return fail(err)
	}
	s.startAccepting()
	return s.serve(requests)
}

func (s *loopService) coldStart(inherited *Inherited) error {
	ln, err := inherited.Listener("ping", ListenerTCP)
	inherited.Close()
	if err != nil {
		return err
	}
	s.ln = ln.(*net.TCPListener)
	lock, err := AcquireLock(os.Getenv("HELPER_DATA"))
	if err != nil {
		return err
	}
	defer lock.Close()
	s.inc, err = Bind(os.Getenv("HELPER_CONTROL"), lock)
	return err
}

func (s *loopService) takeOver(inherited *Inherited) error {
	successor, err := NewSuccessor(inherited)
	inherited.Close()
	if err != nil {
		return err
	}
	defer successor.Close()
	if _, err := successor.Handshake(context.Background(), []byte("loop-helper")); err != nil {
		return err
	}
	ctx := context.Background()
	if os.Getenv("HELPER_BEGIN") == "cancel" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			<-usr1
			cancel()
		}()
	}
	s.note("waiting for Begin")
	if err := successor.WaitForBegin(ctx); err != nil {
		s.note("WaitForBegin: %s, context canceled: %v", statusOf(err), errors.Is(err, context.Canceled))
		return err
	}
	if os.Getenv("HELPER_BEGIN") == "exit" {
		return errors.New("exiting after Begin, as asked")
	}
	if err := successor.StartHeartbeats(); err != nil {
		return err
	}
	ln, err := successor.Listener("ping", ListenerTCP)
	if err != nil {
		return err
	}
	s.ln = ln.(*net.TCPListener)
	lock, err := AcquireLockWithRetry(ctx, os.Getenv("HELPER_DATA"))
	if err != nil {
		return err
	}
	defer lock.Close()
	s.inc, err = successor.AnnounceReady(nil, os.Getenv("HELPER_CONTROL"), lock)
	if err == nil {
		s.note("took over at generation %d", s.inc.Generation())
	}
	return err
}
