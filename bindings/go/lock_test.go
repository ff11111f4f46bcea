package handoff

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLockGenerationAndHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if held, pid, err := LockHolder(dir); err != nil || held || pid != 0 {
		t.Fatalf("a missing dir: held %v pid %d, %v", held, pid, err)
	}
	lock, err := AcquireLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if g := lock.Generation(); g != 1 {
		t.Errorf("first generation %d, want 1", g)
	}
	if held, pid, err := LockHolder(dir); err != nil || !held || int(pid) != os.Getpid() {
		t.Errorf("holder: held %v pid %d, %v", held, pid, err)
	}
	// Held by this very process: refused, naming the holder.
	_, err = AcquireLock(dir)
	if !errors.Is(err, ErrLockHeld) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Errorf("a second acquire: %v, want ErrLockHeld naming pid %d", err, os.Getpid())
	}
	if err := lock.Release(); err != nil {
		t.Fatal(err)
	}
	if err := lock.Release(); !errors.Is(err, ErrWrongState) {
		t.Errorf("a second Release: %v, want ErrWrongState", err)
	}
	lock.Close()
	if held, _, _ := LockHolder(dir); held {
		t.Error("still held after Release")
	}
	// Every acquire since is one more.
	for want := uint64(2); want <= 4; want++ {
		lock, err := AcquireLock(dir)
		if err != nil {
			t.Fatal(err)
		}
		if g := lock.Generation(); g != want {
			t.Errorf("generation %d, want %d", g, want)
		}
		lock.Close() // releases
		lock.Close()
		if lock.Generation() != 0 {
			t.Error("a closed lock has a generation")
		}
	}
}

func TestAcquireLockWithRetryHonoursTheContext(t *testing.T) {
	dir := t.TempDir()
	lock, err := AcquireLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = AcquireLockWithRetry(ctx, dir)
	if !errors.Is(err, ErrLockHeld) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want ErrLockHeld and DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("gave up after %v", elapsed)
	}
	// Cancelling ends the wait too.
	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(150 * time.Millisecond); cancel() }()
	if _, err := AcquireLockWithRetry(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// A lock released meanwhile is taken.
	go func() { time.Sleep(150 * time.Millisecond); lock.Release() }()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	second, err := AcquireLockWithRetry(ctx, dir)
	if err != nil {
		t.Fatalf("after the release: %v", err)
	}
	if second.Generation() != 2 {
		t.Errorf("generation %d, want 2", second.Generation())
	}
	second.Close()
}

// A lock nobody closes is released by its finalizer.
func TestLockFinalizerReleases(t *testing.T) {
	dir := t.TempDir()
	func() {
		lock, err := AcquireLock(dir)
		if err != nil {
			t.Fatal(err)
		}
		if lock.Generation() != 1 {
			t.Fatal("generation")
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		collect()
		if held, _, err := LockHolder(dir); err == nil && !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an unreachable lock is still held: no finalizer ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Handles used from many goroutines while one closes them: no call sees a
// freed object (the race detector and a gcstress build watch this).
func TestHandlesAreSafeAcrossGoroutines(t *testing.T) {
	dir := t.TempDir()
	lock, err := AcquireLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := NewFrameReader()
	if err != nil {
		t.Fatal(err)
	}
	frame, _ := Encode(Heartbeat{TsMS: 1})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if gen := lock.Generation(); gen != 1 && gen != 0 {
					t.Errorf("generation %d", gen)
					return
				}
				if err := reader.Feed(frame); err != nil && !errors.Is(err, ErrWrongState) {
					t.Error(err)
					return
				}
				if _, _, err := reader.Next(); err != nil && !errors.Is(err, ErrWrongState) {
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	lock.Close()
	reader.Close()
	wg.Wait()
}
