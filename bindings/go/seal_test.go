package handoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A minimal Go service built on this package (the test binary in helper
// mode), whose Seal fails the first time it is called, by returning an
// error or by panicking (HELPER_SEAL). It answers "PING" with
// "PONG <pid> helper" and writes what the binding reports about its hooks
// to HELPER_REPORT.

type pingService struct {
	ln       net.Listener
	seal     string
	report   *os.File
	inc      *Incumbent
	mu       sync.Mutex
	sealed   int
	stale    *Hook
	accepted chan struct{} // closed when the accept loop ends; nil when stopped
	conns    sync.WaitGroup
}

func (s *pingService) note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.report, format+"\n", args...)
}

func (s *pingService) startAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ln.(*net.TCPListener).SetDeadline(time.Time{})
	done := make(chan struct{})
	s.accepted = done
	go func() {
		defer close(done)
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer s.conns.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && line == "PING\n" {
					fmt.Fprintf(c, "PONG %d helper\n", os.Getpid())
				}
			}()
		}
	}()
}

func (s *pingService) Drain(ctx context.Context) error {
	hook := HookFromContext(ctx)
	if hook == nil || hook.TimeLeft() <= 0 {
		s.note("drain: no hook in the context, or no time left")
	}
	if _, ok := ctx.Deadline(); !ok {
		s.note("drain: no deadline")
	}
	s.mu.Lock()
	done := s.accepted
	s.mu.Unlock()
	s.ln.(*net.TCPListener).SetDeadline(time.Unix(1, 0))
	<-done
	s.conns.Wait()
	return hook.SetDrained(0, true)
}

func (s *pingService) Seal(ctx context.Context) (SealReport, error) {
	s.mu.Lock()
	s.sealed++
	first := s.sealed == 1
	s.stale = HookFromContext(ctx)
	s.mu.Unlock()
	if first && s.seal == "error" {
		return SealReport{}, errors.New("disk on fire")
	}
	if first && s.seal == "panic" {
		panic("seal exploded")
	}
	if err := HookFromContext(ctx).SealProgress(1, 1, 7); err != nil {
		s.note("seal progress: %v", err)
	}
	return SealReport{LastRevisionPerShard: []uint64{7}}, nil
}

func (s *pingService) ResumeAfterAbort() error {
	// The seal's hook has returned: using it now is refused, not a crash.
	s.mu.Lock()
	stale := s.stale
	s.mu.Unlock()
	if stale != nil {
		s.note("stale hook: %s", statusOf(stale.SealProgress(0, 1, 0)))
	}
	s.note("resumed at generation %d", s.inc.Generation())
	s.startAccepting()
	return nil
}

func serviceHelper() int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "helper[%d]: %v\n", os.Getpid(), err)
		return 1
	}
	report, err := os.OpenFile(os.Getenv("HELPER_REPORT"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fail(err)
	}
	defer report.Close()
	s := &pingService{seal: os.Getenv("HELPER_SEAL"), report: report}
	data, control := os.Getenv("HELPER_DATA"), os.Getenv("HELPER_CONTROL")
	inherited, err := Detect()
	if err != nil {
		return fail(err)
	}
	if inherited.IsSuccessor() {
		successor, err := NewSuccessor(inherited)
		inherited.Close()
		if err != nil {
			return fail(err)
		}
		defer successor.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := successor.Handshake(ctx, []byte("helper")); err != nil {
			return fail(err)
		}
		if err := successor.WaitForBegin(ctx); err != nil {
			return fail(err)
		}
		if s.ln, err = successor.Listener("ping", ListenerTCP); err != nil {
			return fail(err)
		}
		lock, err := AcquireLockWithRetry(ctx, data)
		if err != nil {
			return fail(err)
		}
		defer lock.Close()
		if s.inc, err = successor.AnnounceReady(nil, control, lock); err != nil {
			return fail(err)
		}
	} else {
		s.ln, err = inherited.Listener("ping", ListenerTCP)
		inherited.Close()
		if err != nil {
			return fail(err)
		}
		lock, err := AcquireLock(data)
		if err != nil {
			return fail(err)
		}
		defer lock.Close()
		if s.inc, err = Bind(control, lock); err != nil {
			return fail(err)
		}
	}
	defer s.inc.Close()
	s.inc.OnHookFailure(func(err error) {
		var perr *PanicError
		if errors.As(err, &perr) {
			s.note("hook failure %T: %v\n%s", err, err, perr.Stack)
		} else {
			s.note("hook failure %T: %v", err, err)
		}
	})
	if err := s.inc.Start(s); err != nil {
		return fail(err)
	}
	s.startAccepting()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM)
	go func() {
		<-signals
		s.inc.Stop()
	}()
	outcome, err := s.inc.Wait(context.Background())
	if err != nil || outcome == ServeSuperseded {
		return fail(fmt.Errorf("serving ended: %v, %v", outcome, err))
	}
	s.conns.Wait()
	return 0
}

func helperSpec(c *cluster, seal, report string) SpawnSpec {
	return SpawnSpec{Binary: os.Args[0], Env: []string{helperVariable + "=service", childGORACE,
		"HELPER_SEAL=" + seal, "HELPER_REPORT=" + report, "HELPER_DATA=" + c.data, "HELPER_CONTROL=" + c.control},
		Deadline: 20 * time.Second, DrainGrace: 5 * time.Second}
}

// A Seal that fails, by an error or by a panic, rolls the handoff back:
// the incumbent keeps its lock (same generation), answers as before, and
// reports the failure on the Go side; its next handoff commits.
func TestFailedSealRollsBack(t *testing.T) {
	for _, mode := range []string{"error", "panic"} {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t, "ping")
			report := filepath.Join(c.dir, "report")
			c.start(helperSpec(c, mode, report), "helper")
			before, _, err := LockHolder(c.data)
			if !before || err != nil {
				t.Fatalf("the incumbent does not hold its lock: %v", err)
			}

			outcome, err := c.sup.PerformHandoff(helperSpec(c, "ok", report))
			if err != nil {
				t.Fatalf("the handoff did not start: %v", err)
			}
			wantReason := map[string]string{"error": "seal failed: disk on fire",
				"panic": "seal failed: seal panicked: seal exploded"}[mode]
			if outcome.Committed || outcome.Successor != nil || outcome.AbortReason != wantReason {
				t.Fatalf("outcome %+v, want a rollback because %q", outcome, wantReason)
			}
			if pid, _, err := ping(c.addr); err != nil || pid != c.incumbent.process.Pid {
				t.Fatalf("after the rollback PING answered by %d (%v), want the incumbent %d",
					pid, err, c.incumbent.process.Pid)
			}
			if held, pid, _ := LockHolder(c.data); !held || int(pid) != c.incumbent.process.Pid {
				t.Errorf("the lock is held by %d (held %v), want the incumbent", pid, held)
			}

			// The next handoff commits: the incumbent resumed fully.
			c.handOff(helperSpec(c, "ok", report), "helper")

			b, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			text := string(b)
			wantFailure := map[string]string{"error": "hook failure *handoff.HookError: seal failed: disk on fire",
				"panic": "hook failure *handoff.PanicError: seal panicked: seal exploded"}[mode]
			if !strings.Contains(text, wantFailure) {
				t.Errorf("the Go side did not report %q; report:\n%s", wantFailure, text)
			}
			if mode == "panic" && !strings.Contains(text, "(*pingService).Seal") {
				t.Errorf("no stack of the panic in the report:\n%s", text)
			}
			// The seal failed before the lock was released: resumed in the
			// same tenure.
			if !strings.Contains(text, "resumed at generation 1") {
				t.Errorf("no resume in the first tenure; report:\n%s", text)
			}
			if !strings.Contains(text, "stale hook: HANDOFF_ERR_WRONG_STATE") {
				t.Errorf("a hook used after its method returned was not refused; report:\n%s", text)
			}
			for _, line := range strings.Split(text, "\n") {
				if strings.HasPrefix(line, "drain:") || strings.HasPrefix(line, "seal progress:") {
					t.Errorf("report: %s", line)
				}
			}
			c.stop()
		})
	}
}

// The supervisor refuses a second handoff while one runs, and one with no
// incumbent; resuming from a journal that names a dead successor leaves
// the incumbent serving and clears the journal.
func TestSupervisorRefusalsAndRecovery(t *testing.T) {
	c := newCluster(t, "ping")
	report := filepath.Join(c.dir, "report")
	// The supervisor waits up to the hello timeout for an incumbent to
	// answer; with none at all it gives up then.
	must(t, c.sup.SetTimeouts(Timeouts{Hello: time.Second}))
	if _, err := c.sup.PerformHandoff(helperSpec(c, "ok", report)); !errors.Is(err, ErrIO) {
		t.Errorf("a handoff with no incumbent: %v, want ErrIO", err)
	}
	if recovered, committed, err := c.sup.ResumeFromJournal(); err != nil || recovered || committed {
		t.Errorf("no journal: recovered %v committed %v, %v", recovered, committed, err)
	}
	c.start(helperSpec(c, "ok", report), "helper")

	// A slow successor keeps the first handoff running while a second is
	// asked for.
	slow := helperSpec(c, "ok", report)
	started := filepath.Join(c.dir, "slow-started")
	slow.Binary = "/bin/sh"
	slow.Args = []string{"-c", "touch '" + started + "'; sleep 2"}
	slow.Deadline = 1500 * time.Millisecond
	done := make(chan *Outcome)
	go func() {
		o, err := c.sup.PerformHandoff(slow)
		if err != nil {
			t.Errorf("the slow handoff: %v", err)
		}
		done <- o
	}()
	// The first handoff runs once its successor has started.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow successor never started")
		}
	}
	if _, err := c.sup.PerformHandoff(helperSpec(c, "ok", report)); !errors.Is(err, ErrHandoffInProgress) {
		t.Errorf("a second handoff: %v, want ErrHandoffInProgress", err)
	}
	if o := <-done; o == nil || o.Committed || o.AbortReason == "" {
		t.Errorf("a successor that never says Hello: %+v", o)
	}
	if pid, _, err := ping(c.addr); err != nil || pid != c.incumbent.process.Pid {
		t.Errorf("PING answered by %d (%v)", pid, err)
	}

	// A journal left by a supervisor that died awaiting Ready from a
	// successor that is gone.
	must(t, WriteJournal(c.journal, Journal{HandoffID: HandoffID{7}, Phase: PhaseAwaitingReady,
		IncumbentPID: uint32(c.incumbent.process.Pid), HasSuccessorPID: true, SuccessorPID: 1 << 22,
		StartedAtUnixMS: uint64(time.Now().UnixMilli())}))
	recovered, committed, err := c.sup.ResumeFromJournal()
	if err != nil || !recovered || committed {
		t.Errorf("recovery: recovered %v committed %v, %v", recovered, committed, err)
	}
	if _, found, _ := ReadJournal(c.journal); found {
		t.Error("the journal was not cleared")
	}
	if pid, _, err := ping(c.addr); err != nil || pid != c.incumbent.process.Pid {
		t.Errorf("after recovery PING answered by %d (%v)", pid, err)
	}
	if _, err := c.sup.SpawnCold(SpawnSpec{Binary: "/nonexistent/kv"}); !errors.Is(err, ErrIO) {
		t.Errorf("spawning a missing binary: %v, want ErrIO", err)
	}
	if _, err := c.sup.PerformHandoff(SpawnSpec{Binary: "x", Env: []string{"NOEQUALS"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("a bad environment entry: %v", err)
	}
	c.stop()
	c.sup.Close()
	c.sup.Close()
	if _, err := c.sup.PerformHandoff(helperSpec(c, "ok", report)); !errors.Is(err, ErrWrongState) {
		t.Errorf("a closed supervisor: %v, want ErrWrongState", err)
	}
}
