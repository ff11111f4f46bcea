package handoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The loop form of serving (StartLoop, Request) and WaitForBegin's
// context, through real handoffs by this package's Supervisor of the loop
// helper service (loophelper_test.go).

func loopSpec(c *cluster, report string, env ...string) SpawnSpec {
	return SpawnSpec{Binary: os.Args[0], Env: append([]string{helperVariable + "=loop-service", childGORACE,
		"HELPER_REPORT=" + report, "HELPER_DATA=" + c.data, "HELPER_CONTROL=" + c.control}, env...),
		Deadline: 60 * time.Second, DrainGrace: 40 * time.Second}
}

type reportLine struct {
	pid  int
	text string
}

func readReportLines(t *testing.T, path string) []reportLine {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []reportLine
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		pid, text, _ := strings.Cut(scanner.Text(), " ")
		n, err := strconv.Atoi(pid)
		if err != nil {
			t.Fatalf("report line without a pid: %q", scanner.Text())
		}
		lines = append(lines, reportLine{n, text})
	}
	return lines
}

// linesOf is what process pid reported.
func linesOf(t *testing.T, path string, pid int) []string {
	t.Helper()
	var texts []string
	for _, l := range readReportLines(t, path) {
		if l.pid == pid {
			texts = append(texts, l.text)
		}
	}
	return texts
}

// waitForLine waits for a report line that match accepts.
func waitForLine(t *testing.T, path string, match func(reportLine) bool) reportLine {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, l := range readReportLines(t, path) {
			if match(l) {
				return l
			}
		}
	}
	t.Fatalf("no such line in the report:\n%v", readReportLines(t, path))
	return reportLine{}
}

func hasLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// noFailures: the helper notes every refused call as "<what>: <error>".
func noFailures(t *testing.T, pid int, lines []string) {
	t.Helper()
	for _, l := range lines {
		for _, what := range []string{"drain: ", "seal progress: ", "push revision: ", "complete: ", "fail: ", "stop: "} {
			if strings.HasPrefix(l, what) {
				t.Errorf("pid %d reported %q", pid, l)
			}
		}
	}
}

// A loop-driven incumbent holds its drain across many turns of its loop,
// for twice the supervisor's liveness timeout: the library's heartbeats
// keep the handoff alive meanwhile (without them the supervisor would roll
// back, the incumbent being silent), and it commits. The old incumbent's
// requests channel closes with ServeCommitted, the new one's with
// ServeStopped on SIGTERM.
func TestLoopServiceHoldsItsDrainWhileHeartbeatsFlow(t *testing.T) {
	c := newCluster(t, "ping")
	const liveness = 3 * time.Second // the library's heartbeats: every 2 s
	must(t, c.sup.SetTimeouts(Timeouts{Liveness: liveness, KillGrace: 2 * time.Second}))
	report, release := filepath.Join(c.dir, "report"), filepath.Join(c.dir, "release")
	c.start(loopSpec(c, report, "HELPER_HOLD="+release), "loop")
	old := c.incumbent.process.Pid

	type result struct {
		outcome *Outcome
		err     error
	}
	done := make(chan result, 1)
	go func() {
		outcome, err := c.sup.PerformHandoff(loopSpec(c, report))
		done <- result{outcome, err}
	}()
	waitForLine(t, report, func(l reportLine) bool { return l.pid == old && l.text == "request drain" })
	time.Sleep(2 * liveness)
	must(t, os.WriteFile(release, nil, 0o600))
	r := <-done
	outcome := c.committed(r.outcome, r.err, "loop")
	if outcome.Timings.Drain < 2*liveness {
		t.Errorf("the drain took %v: it was not held past the liveness timeout", outcome.Timings.Drain)
	}

	lines := linesOf(t, report, old)
	noFailures(t, old, lines)
	turns := -1
	for _, l := range lines {
		fmt.Sscanf(l, "drain held across %d loop turns", &turns)
	}
	if turns < 3 {
		t.Errorf("the drain was held across %d loop turns, want several; report:\n%s", turns, strings.Join(lines, "\n"))
	}
	for _, want := range []string{"request seal", "second completion: HANDOFF_ERR_WRONG_STATE",
		"requests closed: serving ended committed (<nil>)"} {
		if !hasLine(lines, want) {
			t.Errorf("the old incumbent did not report %q; report:\n%s", want, strings.Join(lines, "\n"))
		}
	}

	successor := c.incumbent.process.Pid
	c.stop()
	lines = linesOf(t, report, successor)
	noFailures(t, successor, lines)
	for _, want := range []string{"took over at generation 2", "stopping", "requests closed: serving ended stopped (<nil>)"} {
		if !hasLine(lines, want) {
			t.Errorf("the new incumbent did not report %q; report:\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

// A loop-driven incumbent resumes after two rolled-back handoffs: its own
// failed seal (it kept the lock: generation 1), then a successor that
// exits after Begin (the lock is taken back: generation 2). It answers in
// between, a completed request stays completed, and the third handoff
// commits.
func TestLoopServiceResumesAfterRollbacks(t *testing.T) {
	c := newCluster(t, "ping")
	report := filepath.Join(c.dir, "report")
	c.start(loopSpec(c, report, "HELPER_SEAL=error"), "loop")
	old := c.incumbent.process.Pid

	rolledBack := func(spec SpawnSpec, want func(*Outcome) bool) {
		t.Helper()
		outcome, err := c.sup.PerformHandoff(spec)
		if err != nil {
			t.Fatalf("the handoff did not start: %v", err)
		}
		if !want(outcome) {
			t.Fatalf("outcome %+v", outcome)
		}
		if pid, _, err := ping(c.addr); err != nil || pid != old {
			t.Fatalf("after the rollback PING answered by %d (%v), want the incumbent %d", pid, err, old)
		}
	}
	rolledBack(loopSpec(c, report), func(o *Outcome) bool {
		return !o.Committed && o.AbortCause == CauseSealFailed && o.AbortReason == "seal failed: disk on fire"
	})
	rolledBack(loopSpec(c, report, "HELPER_BEGIN=exit"), func(o *Outcome) bool {
		return !o.Committed && o.AbortParty == PartySuccessor
	})
	c.handOff(loopSpec(c, report), "loop")

	lines := linesOf(t, report, old)
	noFailures(t, old, lines)
	for _, want := range []string{"resumed at generation 1", "resumed at generation 2",
		"completed seal used again: HANDOFF_ERR_WRONG_STATE", "requests closed: serving ended committed (<nil>)"} {
		if !hasLine(lines, want) {
			t.Errorf("the incumbent did not report %q; report:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	c.stop()
}

// A successor's WaitForBegin, with a context that has no deadline, ends
// when that context is cancelled (here by SIGUSR1, while the incumbent
// holds its drain, so that Begin cannot come first): the error says so,
// the successor exits without Begin, the handoff rolls back because of it
// and the incumbent resumes.
func TestWaitForBeginEndsWhenItsContextIsCancelled(t *testing.T) {
	c := newCluster(t, "ping")
	report, release := filepath.Join(c.dir, "report"), filepath.Join(c.dir, "release")
	c.start(loopSpec(c, report, "HELPER_HOLD="+release), "loop")
	old := c.incumbent.process.Pid

	done := make(chan *Outcome, 1)
	go func() {
		outcome, err := c.sup.PerformHandoff(loopSpec(c, report, "HELPER_BEGIN=cancel"))
		if err != nil {
			t.Errorf("the handoff did not start: %v", err)
		}
		done <- outcome
	}()
	waiting := waitForLine(t, report, func(l reportLine) bool { return l.pid != old && l.text == "waiting for Begin" })
	waitForLine(t, report, func(l reportLine) bool { return l.pid == old && l.text == "request drain" })
	must(t, syscall.Kill(waiting.pid, syscall.SIGUSR1))
	ended := waitForLine(t, report, func(l reportLine) bool {
		return l.pid == waiting.pid && strings.HasPrefix(l.text, "WaitForBegin: ")
	})
	if want := "WaitForBegin: HANDOFF_ERR_TIMEOUT, context canceled: true"; ended.text != want {
		t.Errorf("the successor reported %q, want %q", ended.text, want)
	}
	must(t, os.WriteFile(release, nil, 0o600))

	outcome := <-done
	if outcome == nil || outcome.Committed || outcome.AbortParty != PartySuccessor ||
		(outcome.AbortCause != CauseExited && outcome.AbortCause != CauseClosed) {
		t.Fatalf("outcome %+v, want a rollback because the successor went away", outcome)
	}
	if pid, _, err := ping(c.addr); err != nil || pid != old {
		t.Fatalf("after the rollback PING answered by %d (%v), want the incumbent %d", pid, err, old)
	}
	c.stop()
	lines := linesOf(t, report, old)
	noFailures(t, old, lines)
	for _, want := range []string{"resumed at generation 1", "requests closed: serving ended stopped (<nil>)"} {
		if !hasLine(lines, want) {
			t.Errorf("the incumbent did not report %q; report:\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

// In process: StartLoop once; Wait ends with its context; Stop closes the
// requests channel and Wait then says stopped; Close leaves no descriptor
// and no goroutine behind.
func TestStartLoopStopsCleanly(t *testing.T) {
	before := openFDs(t)
	inc, _ := bindIncumbent(t)
	requests, err := inc.StartLoop()
	must(t, err)
	if _, err := inc.StartLoop(); !errors.Is(err, ErrWrongState) {
		t.Errorf("a second StartLoop: %v, want ErrWrongState", err)
	}
	if err := inc.Start(nopService{}); !errors.Is(err, ErrWrongState) {
		t.Errorf("Start after StartLoop: %v, want ErrWrongState", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := inc.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait while serving, with a short context: %v", err)
	}
	select {
	case r := <-requests:
		t.Fatalf("a request with no supervisor: %v", r)
	default:
	}
	must(t, inc.Stop())
	if r, ok := <-requests; ok {
		t.Fatalf("the requests channel is open after Stop (it gave %v)", r)
	}
	if outcome, err := inc.Wait(context.Background()); outcome != ServeStopped || err != nil {
		t.Errorf("Wait after Stop: %v, %v", outcome, err)
	}
	must(t, inc.Close())
	if after := openFDs(t); after > before {
		t.Errorf("%d descriptors open before, %d after Close", before, after)
	}
	// A pump left behind would keep this loop going until the suite's timeout.
	for pumping() {
		time.Sleep(time.Millisecond)
	}
}

// pumping: a request pump's goroutine is alive.
func pumping() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*requestPump).run")
}
