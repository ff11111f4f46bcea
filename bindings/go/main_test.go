package handoff

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// helperVariable makes the test binary run as a helper process (a service
// for the handoff tests, a probe for the detection tests) instead of the
// tests: the test binary is the simplest Go program built on this package.
const helperVariable = "HANDOFF_GO_TEST_HELPER"

// childGORACE: a race-enabled child (a helper, kv-go) exits without the
// race runtime's default 1 s pause; a race it found still fails its exit
// status.
const childGORACE = "GORACE=atexit_sleep_ms=50"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperVariable); mode != "" {
		os.Exit(runHelper(mode))
	}
	code := m.Run()
	cleanupBuilds()
	os.Exit(code)
}

func runHelper(mode string) int {
	switch mode {
	case "detect":
		return detectHelper()
	case "successor-steps":
		return successorStepsHelper()
	case "service":
		return serviceHelper()
	case "loop-service":
		return loopServiceHelper()
	case "adopting":
		return adoptingHelper()
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

// repoRoot is the top of the source tree (the tests run in bindings/go).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "include", "handoff.h")); err != nil {
		t.Fatalf("not in the libhandoff tree (no include/handoff.h above %s)", root)
	}
	return root
}

// shortTempDir is a temporary directory with a short path: Unix socket
// paths are limited to 108 bytes, and t.TempDir's include the test's name.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hgo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// collect runs the garbage collector until finalizers had their chance.
func collect() {
	for i := 0; i < 3; i++ {
		runtime.GC()
		runtime.Gosched()
	}
}
