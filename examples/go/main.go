// kv-go: a key-value server over TCP that hands itself off with libhandoff,
// through the Go binding (bindings/go).
//
//	kv-go --data-dir DIR --control-socket PATH [--listen tcp://HOST:PORT]
//	      [--no-moves] [--exit-after-adopt] [--verbose]
//
// It implements the contract of examples/README.md (the line protocol, the
// log format, the lifecycle) like kv-c, so either can take over from the
// other. A goroutine per connection serves requests; writes are made
// durable by group commit before they are acknowledged. The service's loop
// (loop.go) owns the connections and does what the handoff asks of it
// (drain, seal, resume), which the library hands over on a channel
// (Incumbent.StartLoop).
//
// When both sides of a handoff speak protocol v2, the connections are not
// drained: each moves to the successor with its half-received line, its
// answers not yet written (made durable first) and its overlong-line
// state, and its client never sees a close (examples/README.md, "Moving
// connections"). --no-moves takes part as protocol v1 instead: the drain
// closes the connections and a successor adopts nothing.
// --exit-after-adopt (for tests) makes a successor exit after adopting
// what moved and before Ready, so the handoff rolls back after the
// descriptors moved.
//
// One difference from kv-c: Go's net package makes the listener
// non-blocking when this process takes it (after Begin in a successor), and
// that flag is shared with every generation. The other implementations
// poll before accepting and handle EAGAIN, so they work either way.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"libhandoff.dev/handoff"
)

const (
	buildID        = "kv-go"
	beginTimeout   = 60 * time.Second
	successorLock  = 5 * time.Second
	coldLockRetry  = 2 * time.Second
	lingerOnFinish = 2 * time.Second
)

var (
	pid     = os.Getpid()
	verbose bool
)

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kv-go[%d] %s\n", pid, fmt.Sprintf(format, args...))
}

// fatal: no answer may leave after a failed fsync; exit at once.
func fatal(format string, args ...any) {
	say("fatal: "+format, args...)
	exitNow(1)
}

func exitNow(code int) {
	os.Exit(code)
}

type options struct {
	dataDir, controlSocket, listen string
	noMoves, exitAfterAdopt        bool
}

func parseArgs(args []string) (options, int) {
	var o options
	fs := flag.NewFlagSet("kv-go", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.dataDir, "data-dir", "", "")
	fs.StringVar(&o.controlSocket, "control-socket", "", "")
	fs.StringVar(&o.listen, "listen", "", "")
	fs.BoolVar(&o.noMoves, "no-moves", false, "")
	fs.BoolVar(&o.exitAfterAdopt, "exit-after-adopt", false, "")
	fs.BoolVar(&verbose, "verbose", false, "")
	usage := "usage: kv-go --data-dir DIR --control-socket PATH [--listen tcp://HOST:PORT] " +
		"[--no-moves] [--exit-after-adopt] [--verbose]"
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Println(usage)
			return o, 0
		}
		fmt.Fprintf(os.Stderr, "kv-go: %v\n%s\n", err, usage)
		return o, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "kv-go: unknown argument %s\n%s\n", fs.Arg(0), usage)
		return o, 2
	}
	if o.dataDir == "" || o.controlSocket == "" {
		fmt.Fprintf(os.Stderr, "kv-go: --data-dir and --control-socket are required\n%s\n", usage)
		return o, 2
	}
	return o, -1
}

func main() {
	o, code := parseArgs(os.Args[1:])
	if code >= 0 {
		os.Exit(code)
	}
	os.Exit(run(o))
}

func run(o options) int {
	if err := handoff.SetLogger(libraryLog); err != nil {
		say("error: %v", err)
		return 1
	}
	defer handoff.SetLogger(nil)

	s := newServer(o.dataDir)
	s.moves, s.exitAfterAdopt = !o.noMoves, o.exitAfterAdopt
	inherited, err := handoff.Detect()
	if err != nil {
		say("error: %v", err)
		return 1
	}
	successor := inherited.IsSuccessor()
	if successor {
		err = s.startSuccessor(inherited, o)
	} else {
		err = s.startCold(inherited, o)
	}
	if err != nil {
		say("error: %v", err)
		s.closeAdopted()
		s.closeLog()
		if s.inc != nil {
			s.inc.Close()
		}
		return 1
	}
	defer s.inc.Close()

	if err := s.inc.SetBuildID([]byte(buildID)); err != nil {
		say("error: %v", err)
		return 1
	}
	if err := s.inc.SetMovesDescriptors(s.moves); err != nil {
		say("error: %v", err)
		return 1
	}
	// From Ready on: each adopted connection writes its carried output
	// first, then reads (serveConn). Before the library's loop starts (a
	// thread of its own): nothing here needs it, and its start is in the
	// blackout. The accept goroutine first, and run at once: queued behind
	// the adopted connections (their writes, their fsyncs) and the signal
	// set-up, the first accept came 0.35 to 0.6 ms after Ready (timestamps,
	// under load); now 0.05 ms.
	s.startAccepting()
	runtime.Gosched()
	for _, c := range s.adopted {
		s.serve1(c)
	}
	s.adopted = nil

	// From here on SIGTERM and SIGINT stop the service cleanly (before, the
	// default action is right: a successor killed before Ready leaves
	// nothing behind). On a goroutine of its own: enabling a signal waits
	// for the runtime's signal thread to answer (0.45 to 0.65 ms measured
	// under load). A successor is in the handoff's blackout here, with its
	// connections and its accept to start, so its loop does not wait for
	// it: a stop signal in that time has its default action, as one just
	// before Ready does. A cold start serves once they are caught.
	signals := make(chan os.Signal, 1)
	notified := make(chan struct{})
	go func() {
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		close(notified)
	}()
	requests, err := s.inc.StartLoop()
	if err != nil {
		say("error: %v", err)
		return 1
	}
	if !successor {
		<-notified
	}
	code := s.serve(requests, signals)
	// The log is closed (fsynced) before the lock goes with the incumbent.
	s.closeLog()
	say("exiting with status %d", code)
	return code
}

func libraryLog(level handoff.LogLevel, message string) {
	if level > handoff.LogInfo && !verbose {
		return
	}
	fmt.Fprintf(os.Stderr, "kv-go[%d] handoff %v: %s\n", pid, level, message)
}

// ---- start-up ------------------------------------------------------------------

// startCold: listener, lock, log, control socket.
func (s *server) startCold(inherited *handoff.Inherited, o options) error {
	defer inherited.Close()
	ln, err := coldListener(inherited, o.listen)
	if err != nil {
		return err
	}
	s.ln = ln
	lock, err := handoff.AcquireLock(o.dataDir)
	if errors.Is(err, handoff.ErrLockHeld) {
		say("data dir %s is locked (%v); retrying for %d ms", o.dataDir, err, coldLockRetry.Milliseconds())
		ctx, cancel := context.WithTimeout(context.Background(), coldLockRetry)
		lock, err = handoff.AcquireLockWithRetry(ctx, o.dataDir)
		cancel()
	}
	if err != nil {
		return fmt.Errorf("cannot lock the data dir: %w", err)
	}
	defer lock.Close() // empty once it moved into the incumbent
	// Until Bind moves it, the lock says which generation this process holds.
	if err := s.openState(lock.Generation()); err != nil {
		return err
	}
	if s.inc, err = handoff.Bind(o.controlSocket, lock); err != nil {
		return err
	}
	say("cold start on %s: generation %d, %d record(s)", listenURL(ln), s.inc.Generation(), s.records())
	return nil
}

// coldListener is the listener named kv from the supervisor, else --listen.
func coldListener(inherited *handoff.Inherited, listen string) (net.Listener, error) {
	names, err := inherited.ListenerNames()
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if name == "kv" {
			return inherited.Listener("kv", handoff.ListenerTCP)
		}
	}
	if listen == "" {
		return nil, errors.New("no listener named kv was inherited and --listen was not given")
	}
	address, ok := strings.CutPrefix(listen, "tcp://")
	if !ok {
		return nil, fmt.Errorf("--listen %s: expected tcp://HOST:PORT", listen)
	}
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", listen, err)
	}
	return ln, nil
}

// startSuccessor: preload, handshake, Begin, then (and only then)
// listener, lock, the rest of the log, Ready. A handoff that ends before
// Begin leaves the data dir alone (the preload only reads it).
func (s *server) startSuccessor(inherited *handoff.Inherited, o options) error {
	successor, err := handoff.NewSuccessor(inherited)
	inherited.Close()
	if err != nil {
		return err
	}
	defer successor.Close()
	if err := s.preloadState(); err != nil {
		return err
	}
	if err := successor.SetAdoptsDescriptors(s.moves); err != nil {
		return err
	}
	if _, err := successor.Handshake(context.Background(), []byte(buildID)); err != nil {
		return fmt.Errorf("handshake with the supervisor: %w", err)
	}
	// Before Begin, so that its thread is not started in the blackout; it
	// beats from Begin to Ready.
	if err := successor.StartHeartbeats(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), beginTimeout)
	err = successor.WaitForBegin(ctx)
	cancel()
	if err != nil {
		return fmt.Errorf("the handoff did not begin: %w", err)
	}
	if s.ln, err = successor.Listener("kv", handoff.ListenerTCP); err != nil {
		return fmt.Errorf("taking the listener kv: %w", err)
	}
	// Invariant 5: nothing is written before the lock is held.
	ctx, cancel = context.WithTimeout(context.Background(), successorLock)
	lock, err := handoff.AcquireLockWithRetry(ctx, o.dataDir)
	cancel()
	if err != nil {
		return fmt.Errorf("cannot lock the data dir: %w", err)
	}
	defer lock.Close()
	// Until AnnounceReady moves it, the lock says which generation this is.
	if err := s.openState(lock.Generation()); err != nil {
		return err
	}
	if s.moves {
		if err := s.adoptConns(successor, lock); err != nil {
			return err
		}
	}
	if s.exitAfterAdopt {
		return errors.New("exiting after adopting, as asked (--exit-after-adopt)")
	}
	url := listenURL(s.ln)
	ready := &handoff.Ready{
		ListeningOn:                []string{url},
		HealthzOK:                  true,
		AdvertisedRevisionPerShard: []uint64{s.records()},
	}
	if s.inc, err = successor.AnnounceReady(ready, o.controlSocket, lock); err != nil {
		return err
	}
	say("took over on %s: generation %d, %d record(s)", url, s.inc.Generation(), s.records())
	return nil
}

// adoptConns takes what the incumbent moved, with the lock held and the
// log open; the connections are served from Ready on (run). Anything this
// service cannot take fails the start-up, and the handoff rolls back.
func (s *server) adoptConns(successor *handoff.Successor, lock *handoff.Lock) error {
	items, err := successor.Adopt(lock)
	if err != nil {
		return fmt.Errorf("adopting what the incumbent moved: %w", err)
	}
	for i := range items {
		c, err := adoptedConn(&items[i])
		if err != nil {
			for j := range items {
				items[j].Close() // close, never shutdown: they go back
			}
			return err
		}
		s.adopted = append(s.adopted, c)
	}
	if len(items) > 0 {
		say("adopted %d connection(s)", len(items))
	}
	return nil
}

// adoptedConn is a moved connection as ours: its partial line, its answers
// not yet written and whether it is inside an overlong line (state: one
// byte, examples/README.md). Non-blocking, as Go's net package has it.
func adoptedConn(item *handoff.AdoptedItem) (*conn, error) {
	if item.Kind != handoff.ItemConnection || len(item.Unread) > maxLine+1 {
		return nil, fmt.Errorf("moved item %q (kind %d, %d bytes unread) is not a connection this service can take",
			item.Name, item.Kind, len(item.Unread))
	}
	nc, err := item.Conn()
	if err != nil {
		return nil, err
	}
	return &conn{
		nc:         nc,
		in:         append([]byte{}, item.Unread...),
		out:        append([]byte{}, item.Unwritten...),
		discarding: len(item.State) > 0 && item.State[0] != 0,
	}, nil
}

// closeAdopted closes the adopted connections of a start-up that failed
// (close, never shutdown: the incumbent takes them back).
func (s *server) closeAdopted() {
	for _, c := range s.adopted {
		c.nc.Close()
	}
	s.adopted = nil
}

// listenURL is tcp://HOST:PORT, with [v6] for IPv6.
func listenURL(ln net.Listener) string {
	if addr, ok := ln.Addr().(*net.TCPAddr); ok {
		return "tcp://" + net.JoinHostPort(addr.IP.String(), fmt.Sprint(addr.Port))
	}
	return "tcp://" + ln.Addr().String()
}
