package handoff

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type nopService struct{}

func (nopService) Drain(context.Context) error              { return nil }
func (nopService) Seal(context.Context) (SealReport, error) { return SealReport{}, nil }
func (nopService) ResumeAfterAbort() error                  { return nil }

func bindIncumbent(t *testing.T) (*Incumbent, string) {
	dir := shortTempDir(t)
	lock, err := AcquireLock(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	control := filepath.Join(dir, "ctl")
	inc, err := Bind(control, lock)
	if err != nil {
		t.Fatal(err)
	}
	if lock.Generation() != 0 || inc.Generation() != 1 {
		t.Errorf("generations: lock %d (moved: 0), incumbent %d", lock.Generation(), inc.Generation())
	}
	if _, err := Bind(control+"2", lock); !errors.Is(err, ErrWrongState) {
		t.Errorf("binding with an empty lock handle: %v, want ErrWrongState", err)
	}
	return inc, control
}

func TestIncumbentLifecycleInProcess(t *testing.T) {
	inc, control := bindIncumbent(t)
	if info, err := os.Stat(control); err != nil || info.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket: %v", err)
	}
	if err := inc.SetLivenessTimeout(0); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("a zero liveness timeout: %v", err)
	}
	must(t, inc.SetLivenessTimeout(3*time.Second))
	must(t, inc.SetBuildID([]byte("unit")))
	if err := inc.Start(nil); !errors.Is(err, ErrNullPointer) {
		t.Errorf("Start(nil): %v", err)
	}
	must(t, inc.Start(nopService{}))
	if err := inc.Start(nopService{}); !errors.Is(err, ErrWrongState) {
		t.Errorf("a second Start: %v, want ErrWrongState", err)
	}
	if err := inc.SetBuildID(nil); !errors.Is(err, ErrWrongState) {
		t.Errorf("SetBuildID while serving: %v, want ErrWrongState", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := inc.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with a short context: %v", err)
	}
	// Stop from another goroutine ends a Wait.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(100 * time.Millisecond)
		if err := inc.Stop(); err != nil {
			t.Error(err)
		}
	}()
	outcome, err := inc.Wait(context.Background())
	wg.Wait()
	if err != nil || outcome != ServeStopped {
		t.Errorf("after Stop: %v, %v", outcome, err)
	}
	if outcome.String() != "stopped" {
		t.Errorf("outcome name %q", outcome)
	}
	must(t, inc.Close())
	must(t, inc.Close())
	if inc.Generation() != 0 {
		t.Error("a closed incumbent has a generation")
	}
	if _, err := inc.Wait(context.Background()); !errors.Is(err, ErrWrongState) {
		t.Errorf("Wait after Close: %v", err)
	}
}

func TestLoggerReceivesTheLibrarysEvents(t *testing.T) {
	var mu sync.Mutex
	var events []string
	must(t, SetLogger(func(level LogLevel, message string) {
		mu.Lock()
		events = append(events, level.String()+": "+message)
		mu.Unlock()
	}))
	defer SetLogger(nil)
	inc, control := bindIncumbent(t)
	inc.Close()
	mu.Lock()
	got := strings.Join(events, "\n")
	mu.Unlock()
	if !strings.Contains(got, "info: incumbent") || !strings.Contains(got, control) {
		t.Errorf("no event about the control socket %s in:\n%s", control, got)
	}
	// A panicking logger is contained; replacing loggers while events flow
	// is safe.
	must(t, SetLogger(func(LogLevel, string) { panic("logger bug") }))
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				inc, _ := bindIncumbent(t)
				inc.Close()
			}
		}()
	}
	for i := 0; i < 20; i++ {
		must(t, SetLogger(func(LogLevel, string) {}))
	}
	wg.Wait()
	must(t, SetLogger(nil))
	if LogDebug.String() != "debug" || LogLevel(9).String() != "LogLevel(9)" {
		t.Error("level names")
	}
}

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(entries)
}

// Handles nobody closes are freed by their finalizers: the descriptors the
// library held for them are closed.
func TestFinalizersFreeWhatIsLeft(t *testing.T) {
	listener, _ := blockingTCPListener(t)
	dir := shortTempDir(t)
	collect()
	before := openFDs(t)
	func() {
		for i := 0; i < 10; i++ {
			sup, err := NewSupervisor(filepath.Join(dir, "ctl"))
			must(t, err)
			must(t, sup.AddListener("kv", listener)) // a duplicate the supervisor holds
			reader, err := NewFrameReader()
			must(t, err)
			must(t, reader.Feed([]byte{1, 2}))
			inherited, err := Detect()
			must(t, err)
			_ = inherited.IsSuccessor()
			lock, err := AcquireLock(filepath.Join(dir, "data"))
			must(t, err)
			inc, err := Bind(filepath.Join(dir, "inc.ctl"), lock) // a control socket
			must(t, err)
			_ = inc.Generation()
			inc.Close() // the lock goes with it; the empty lock handle is left
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		collect()
		after := openFDs(t)
		if after <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open before, %d after the handles became unreachable", before, after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
