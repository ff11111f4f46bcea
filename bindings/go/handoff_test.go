package handoff

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The example services handed off under client load by this package's
// Supervisor: Go to Go, Go to C and back, Go to Python and back, and a
// rolled-back handoff of the Go one.
//
// kv-go is built by the test (with -race and the gcstress tag when the
// test binary has them), kv-c with make, kv.py is run with python3.

var builds struct {
	once  sync.Once
	dir   string
	kvGo  string
	error string
}

func cleanupBuilds() {
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
}

func goTool() string {
	if path, err := exec.LookPath("go"); err == nil {
		return path
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// kvGoBinary builds examples/go once per test run.
func kvGoBinary(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	builds.once.Do(func() {
		dir, err := os.MkdirTemp("", "hgo-build")
		if err != nil {
			builds.error = err.Error()
			return
		}
		builds.dir = dir
		args := []string{"build", "-o", filepath.Join(dir, "kv-go")}
		if raceEnabled {
			args = append(args, "-race")
		}
		if gcstressEnabled {
			args = append(args, "-tags", "handoff_gcstress")
		}
		cmd := exec.Command(goTool(), append(args, ".")...)
		cmd.Dir = filepath.Join(root, "examples", "go")
		if out, err := cmd.CombinedOutput(); err != nil {
			builds.error = "building examples/go: " + err.Error() + "\n" + string(out)
			return
		}
		builds.kvGo = filepath.Join(dir, "kv-go")
	})
	if builds.error != "" {
		t.Fatal(builds.error)
	}
	return builds.kvGo
}

// kvCBinary builds examples/c (incrementally) as the top-level make does.
func kvCBinary(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	cmd := exec.Command("make", "-C", filepath.Join(root, "examples", "c"), "--no-print-directory")
	if os.Getenv("PKG_CONFIG_PATH") == "" {
		cmd.Env = append(os.Environ(), "PKG_CONFIG_PATH="+filepath.Join(root, "target", "pkgconfig"))
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building examples/c: %v\n%s", err, out)
	}
	return filepath.Join(root, "examples", "c", "build", "kv-c")
}

// kvPython is how to run examples/python/kv.py, or a skip when that
// example or the Python package it needs is not there.
func kvPython(t *testing.T) (python, script string, env []string) {
	t.Helper()
	root := repoRoot(t)
	script = filepath.Join(root, "examples", "python", "kv.py")
	if _, err := os.Stat(script); err != nil {
		t.Skipf("SKIPPED: examples/python/kv.py is missing (%v): the Go→Python handoff is not tested", err)
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("SKIPPED: no python3 (%v): the Go→Python handoff is not tested", err)
	}
	env = []string{
		"PYTHONPATH=" + filepath.Join(root, "bindings", "python", "src"),
		"HANDOFF_LIBRARY=" + filepath.Join(root, "target", "release", "libhandoff.so"),
	}
	check := exec.Command(python, "-c", "import libhandoff")
	check.Env = append(os.Environ(), env...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Skipf("SKIPPED: the Python package libhandoff (bindings/python) cannot be imported (%v: %s): "+
			"the Go→Python handoff is not tested", err, strings.TrimSpace(string(out)))
	}
	return python, script, env
}

func (c *cluster) kvArgs() []string {
	return []string{"--data-dir", c.data, "--control-socket", c.control}
}

func (c *cluster) kvGo(t *testing.T) SpawnSpec {
	return SpawnSpec{Binary: kvGoBinary(t), Args: c.kvArgs(), Env: []string{childGORACE},
		Deadline: 30 * time.Second, DrainGrace: 10 * time.Second}
}

func (c *cluster) kvC(t *testing.T) SpawnSpec {
	return SpawnSpec{Binary: kvCBinary(t), Args: c.kvArgs(), Deadline: 30 * time.Second, DrainGrace: 10 * time.Second}
}

func (c *cluster) kvPy(t *testing.T) SpawnSpec {
	python, script, env := kvPython(t)
	return SpawnSpec{Binary: python, Args: append([]string{script}, c.kvArgs()...), Env: env,
		Deadline: 30 * time.Second, DrainGrace: 10 * time.Second}
}

// newer checks that the successor writes under a newer fencing generation.
func (c *cluster) newer(generations *[]uint64, n int) {
	c.t.Helper()
	g := c.probe(n)
	last := (*generations)[len(*generations)-1]
	if g <= last {
		c.t.Errorf("handoff %d: generation %d after %v", n, g, *generations)
	}
	*generations = append(*generations, g)
}

func TestGoToGoHandoffsUnderLoad(t *testing.T) {
	c := newCluster(t, "kv")
	c.start(c.kvGo(t), "go")
	generations := []uint64{c.probe(0)}
	l := startLoad(c.addr)
	l.waitAcked(t, 40)
	for n := 1; n <= 3; n++ {
		c.handOff(c.kvGo(t), "go")
		c.newer(&generations, n)
		l.waitAcked(t, 40)
	}
	tl := l.finish()
	tl.check(t, generations)
	c.checkReads(tl.acks)
	c.stop()
}

// A successor in another language takes over from the Go service, and a Go
// one takes it back. The listener was made blocking; the Go incumbent's net
// package made it non-blocking for everyone (which the binding documents):
// the C and Python services poll before accepting, so that does not stop
// them.
func testGoToOtherAndBack(t *testing.T, other func(*cluster) SpawnSpec, tag string) {
	c := newCluster(t, "kv")
	otherSpec := other(c) // may skip
	if nonBlocking(t, c.listener) {
		t.Fatal("the listener should start blocking")
	}
	c.start(c.kvGo(t), "go")
	if !nonBlocking(t, c.listener) {
		t.Error("kv-go took the listener with Go's net package, which should have made it non-blocking")
	}
	generations := []uint64{c.probe(0)}
	l := startLoad(c.addr)
	l.waitAcked(t, 40)
	c.handOff(otherSpec, tag)
	c.newer(&generations, 1)
	l.waitAcked(t, 40)
	c.handOff(c.kvGo(t), "go")
	c.newer(&generations, 2)
	l.waitAcked(t, 40)
	tl := l.finish()
	tl.check(t, generations)
	c.checkReads(tl.acks)
	c.stop()
}

func TestGoToCHandoffUnderLoad(t *testing.T) {
	testGoToOtherAndBack(t, func(c *cluster) SpawnSpec { return c.kvC(t) }, "c")
}

func TestGoToPythonHandoffUnderLoad(t *testing.T) {
	testGoToOtherAndBack(t, func(c *cluster) SpawnSpec { return c.kvPy(t) }, "python")
}

// A successor that fails after Begin (it cannot create its data dir) makes
// the supervisor roll back: kv-go takes its lock back under a new
// generation, reopens its log, accepts again and loses nothing; the next
// handoff commits.
func TestGoIncumbentRollsBackAnAbortedHandoff(t *testing.T) {
	c := newCluster(t, "kv")
	c.start(c.kvGo(t), "go")
	generations := []uint64{c.probe(0)}
	l := startLoad(c.addr)
	l.waitAcked(t, 40)

	blocker := filepath.Join(c.dir, "not-a-dir")
	must(t, os.WriteFile(blocker, nil, 0o600))
	broken := c.kvGo(t)
	broken.Args = []string{"--data-dir", filepath.Join(blocker, "data"), "--control-socket", c.control}
	outcome, err := c.sup.PerformHandoff(broken)
	if err != nil {
		t.Fatalf("the handoff did not start: %v", err)
	}
	if outcome.Committed || outcome.Successor != nil || outcome.AbortReason == "" {
		t.Fatalf("a successor without its data dir: %+v", outcome)
	}
	t.Logf("rolled back in %v: %s", outcome.Timings.Total, outcome.AbortReason)
	if _, err := os.Stat(c.journal); !os.IsNotExist(err) {
		t.Errorf("the journal was not cleared: %v", err)
	}
	if pid, _, err := ping(c.addr); err != nil || pid != c.incumbent.process.Pid {
		t.Fatalf("after the rollback PING answered by %d (%v), want %d", pid, err, c.incumbent.process.Pid)
	}
	c.newer(&generations, 1) // the lock was taken back: a new tenure
	l.waitAcked(t, 40)

	c.handOff(c.kvGo(t), "go")
	c.newer(&generations, 2)
	l.waitAcked(t, 40)
	tl := l.finish()
	tl.check(t, generations)
	c.checkReads(tl.acks)
	c.stop()
}
