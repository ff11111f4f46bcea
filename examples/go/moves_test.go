package main

// kv-go with protocol v2 (examples/README.md, "Moving connections"): its
// client connections move to the successor with their state across real
// kv-go -> kv-go handoffs through the binding's supervisor, and stay open:
// no end of file, no reset, nothing resent, every answer right and in
// order; a successor that exits after adopting them rolls back with every
// connection still served by the incumbent, nothing lost or answered
// twice; and a successor that does not adopt (--no-moves, v1) gets them
// closed by the drain. The services are this test binary run as kv-go
// (TestMain), each generation's stderr in its own log.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"libhandoff.dev/handoff"
)

// asService makes the test binary run kv-go with its arguments instead of
// the tests.
const asService = "KV_GO_TEST_AS_SERVICE"

func TestMain(m *testing.M) {
	if os.Getenv(asService) != "" {
		o, code := parseArgs(os.Args[1:])
		if code >= 0 {
			os.Exit(code)
		}
		os.Exit(run(o))
	}
	os.Exit(m.Run())
}

// A bound on every wait for an answer, never an assertion about time.
const ioTimeout = 30 * time.Second

const bigKeys = 10

func bigValue(i int) string { return strconv.Itoa(i) + strings.Repeat("a", 255) }

// backlogSize is how many GETs of 256-byte values make twice what the
// kernel can hold for a client that reads nothing (the service's send
// buffer grows up to tcp_wmem's maximum): the incumbent is left with
// answers it could not write when the drain comes.
func backlogSize(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b))
	wmemMax, err := strconv.Atoi(fields[len(fields)-1])
	if err != nil {
		t.Fatal(err)
	}
	return 2 * wmemMax / len("VALUE "+bigValue(0)+"\n")
}

// kvCluster is kv-go generations under a supervisor of this process.
type kvCluster struct {
	t          *testing.T
	dir, data  string
	control    string
	addr       string
	sup        *handoff.Supervisor
	generation int // of the newest process started
	serving    *process
	processes  []*process
}

type process struct {
	p    *os.Process
	done chan struct{}
	err  error
	code int
}

func reap(p *os.Process) *process {
	pr := &process{p: p, done: make(chan struct{})}
	go func() {
		state, err := p.Wait()
		pr.err = err
		if state != nil {
			pr.code = state.ExitCode()
		}
		close(pr.done)
	}()
	return pr
}

// exitCode waits (a bounded while) for the process's exit status.
func (pr *process) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-pr.done:
	case <-time.After(ioTimeout):
		t.Fatalf("process %d did not exit", pr.p.Pid)
	}
	if pr.err != nil {
		t.Fatal(pr.err)
	}
	return pr.code
}

func newKVCluster(t *testing.T) *kvCluster {
	dir, err := os.MkdirTemp("", "kvgo")
	if err != nil {
		t.Fatal(err)
	}
	c := &kvCluster{t: t, dir: dir, data: filepath.Join(dir, "data"), control: filepath.Join(dir, "kv.ctl")}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	if c.sup, err = handoff.NewSupervisor(c.control); err != nil {
		t.Fatal(err)
	}
	check(t, c.sup.AddListener("kv", ln.(*net.TCPListener)))
	ln.Close() // the supervisor keeps its own copy
	check(t, c.sup.SetTimeouts(handoff.Timeouts{KillGrace: 2 * time.Second}))
	t.Cleanup(func() {
		for _, pr := range c.processes {
			pr.p.Signal(syscall.SIGTERM)
			select {
			case <-pr.done:
			case <-time.After(5 * time.Second):
				pr.p.Kill()
				<-pr.done
			}
		}
		c.sup.Close()
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("kept %s", dir)
		}
	})
	return c
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// spec runs the next generation, its stderr to gen-<n>.log.
func (c *kvCluster) spec(extra ...string) handoff.SpawnSpec {
	c.generation++
	log := filepath.Join(c.dir, fmt.Sprintf("gen-%d.log", c.generation))
	args := append([]string{"-c", `exec "$0" "$@" 2>>"$KV_LOG"`, os.Args[0],
		"--data-dir", c.data, "--control-socket", c.control}, extra...)
	return handoff.SpawnSpec{Binary: "/bin/sh", Args: args,
		Env:      []string{asService + "=1", "KV_LOG=" + log},
		Deadline: 60 * time.Second, DrainGrace: 20 * time.Second}
}

func (c *kvCluster) logOf(generation int) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("gen-%d.log", generation)))
	return string(b)
}

func (c *kvCluster) logs() string {
	var all []string
	for g := 1; g <= c.generation; g++ {
		all = append(all, fmt.Sprintf("--- gen-%d.log\n%s", g, c.logOf(g)))
	}
	return strings.Join(all, "\n")
}

func (c *kvCluster) spawnCold() int {
	c.t.Helper()
	p, err := c.sup.SpawnCold(c.spec())
	check(c.t, err)
	c.serving = reap(p)
	c.processes = append(c.processes, c.serving)
	// Served once a PING on a fresh connection is answered.
	for deadline := time.Now().Add(ioTimeout); ; time.Sleep(20 * time.Millisecond) {
		if answer, err := request(c.addr, "PING"); err == nil && strings.HasPrefix(answer, "PONG ") {
			return p.Pid
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the cold start never served\n%s", c.logs())
		}
	}
}

// handoff performs a handoff to a new generation; the successor is
// watched if there is one.
func (c *kvCluster) handoff(extra ...string) *handoff.Outcome {
	c.t.Helper()
	outcome, err := c.sup.PerformHandoff(c.spec(extra...))
	if err != nil {
		c.t.Fatalf("the handoff did not start: %v\n%s", err, c.logs())
	}
	if outcome.Successor != nil {
		c.processes = append(c.processes, reap(outcome.Successor))
	}
	return outcome
}

// commit performs a handoff that must commit, the old incumbent exiting
// 0; the successor's pid.
func (c *kvCluster) commit(extra ...string) int {
	c.t.Helper()
	old := c.serving
	outcome := c.handoff(extra...)
	if !outcome.Committed {
		c.t.Fatalf("rolled back: %s\n%s", outcome.AbortReason, c.logs())
	}
	if code := old.exitCode(c.t); code != 0 {
		c.t.Fatalf("the old incumbent exited %d\n%s", code, c.logs())
	}
	c.serving = c.processes[len(c.processes)-1]
	return outcome.Successor.Pid
}

// request sends one line on a fresh connection and gives the answer.
func request(addr, line string) (string, error) {
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := nc.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	answer, err := bufio.NewReader(nc).ReadString('\n')
	return strings.TrimSuffix(answer, "\n"), err
}

// kept is a client connection kept across handoffs: an end of file or a
// reset fails the test, and nothing is ever resent.
type kept struct {
	t      *testing.T
	nc     net.Conn
	reader *bufio.Reader
}

// dialKept connects; rcvbuf > 0 sets SO_RCVBUF before connecting, so that
// the window stays that small.
func dialKept(t *testing.T, addr string, rcvbuf int) *kept {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, raw syscall.RawConn) error {
			var serr error
			err := raw.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := d.Dial("tcp", addr)
	check(t, err)
	return &kept{t: t, nc: nc, reader: bufio.NewReader(nc)}
}

func (k *kept) send(data string) {
	k.t.Helper()
	k.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := k.nc.Write([]byte(data)); err != nil {
		k.t.Fatalf("a kept connection failed sending: %v", err)
	}
}

func (k *kept) line() string {
	k.t.Helper()
	k.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	answer, err := k.reader.ReadString('\n')
	if err != nil {
		k.t.Fatalf("a kept connection failed after %q: %v", answer, err)
	}
	return strings.TrimSuffix(answer, "\n")
}

func (k *kept) ask(line string) string {
	k.t.Helper()
	k.send(line + "\n")
	return k.line()
}

// pid is who answers PING on this connection.
func (k *kept) pid() int {
	k.t.Helper()
	words := strings.Fields(k.ask("PING"))
	if len(words) != 3 || words[0] != "PONG" || words[2] != "go" {
		k.t.Fatalf("PING answered %q", words)
	}
	pid, _ := strconv.Atoi(words[1])
	return pid
}

// atEOF: the server closed the connection, cleanly (a reset is not).
func (k *kept) atEOF() error {
	k.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := k.reader.ReadByte()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("read %q, not an end of file", b)
}

// clients is one connection of each kind, all kept open across handoffs.
type clients struct {
	t                                          *testing.T
	idle, pipelining, half, overlong, backlogd *kept
	backlog                                    int
	written                                    map[string]string
	generation                                 int
}

func newClients(t *testing.T, addr string) *clients {
	for i := 0; i < bigKeys; i++ {
		if answer, err := request(addr, fmt.Sprintf("SET big%d %s", i, bigValue(i))); err != nil || !strings.HasPrefix(answer, "OK ") {
			t.Fatalf("SET big%d: %q, %v", i, answer, err)
		}
	}
	c := &clients{t: t, idle: dialKept(t, addr, 0), pipelining: dialKept(t, addr, 0),
		half: dialKept(t, addr, 0), overlong: dialKept(t, addr, 0),
		// Reads nothing until after the handoff: the incumbent has answers
		// it could not write when the drain comes (they move unwritten),
		// and requests it did not read (they move in the socket).
		backlogd: dialKept(t, addr, 4096),
		backlog:  backlogSize(t), written: map[string]string{}}
	t.Cleanup(func() {
		for _, k := range c.all() {
			k.nc.Close()
		}
	})
	return c
}

func (c *clients) all() []*kept {
	return []*kept{c.idle, c.pipelining, c.half, c.overlong, c.backlogd}
}

func (c *clients) pids() []int {
	var pids []int
	for _, k := range c.all() {
		pids = append(pids, k.pid())
	}
	return pids
}

func same(pids []int, pid int) bool {
	for _, p := range pids {
		if p != pid {
			return false
		}
	}
	return true
}

// beforeHandoff sends requests in flight and half-sent lines; the SETs'
// keys.
func (c *clients) beforeHandoff(generation int) []string {
	c.generation = generation
	var keys []string
	var batch strings.Builder
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("g%d-%d", generation, i)
		keys = append(keys, key)
		fmt.Fprintf(&batch, "SET %s v%s\n", key, key)
	}
	c.pipelining.send(batch.String())
	c.half.send(fmt.Sprintf("GET g%d", generation)) // completed after the handoff
	c.overlong.send(strings.Repeat("x", 1100))      // inside an overlong line
	var gets strings.Builder
	for i := 0; i < c.backlog; i++ {
		fmt.Fprintf(&gets, "GET big%d\n", i%bigKeys)
	}
	gets.WriteString("PING\n")
	c.backlogd.send(gets.String())
	// Something is answered: the incumbent has begun on the backlog.
	if got := c.backlogd.line(); got != "VALUE "+bigValue(0) {
		c.t.Fatalf("the backlog's first answer: %q", got)
	}
	return keys
}

// afterHandoff reads every answer to what was in flight, in order, and
// gives the generations the SETs were acknowledged with.
func (c *clients) afterHandoff(keys []string, server int) []int {
	t := c.t
	var acked []int
	for _, key := range keys {
		answer := c.pipelining.line()
		var g int
		if _, err := fmt.Sscanf(answer, "OK %d", &g); err != nil {
			t.Fatalf("SET %s: %q", key, answer)
		}
		acked = append(acked, g)
		c.written[key] = "v" + key
	}
	c.half.send("-0\n")
	if got, want := c.half.line(), fmt.Sprintf("VALUE vg%d-0", c.generation); got != want {
		t.Errorf("the half line: %q, want %q", got, want)
	}
	c.overlong.send("x\nPING\n")
	if got := c.overlong.line(); got != "ERR line too long (at most 1024 bytes)" {
		t.Errorf("the overlong line: %q", got)
	}
	if got := c.overlong.line(); !strings.HasPrefix(got, fmt.Sprintf("PONG %d ", server)) {
		t.Errorf("after the overlong line: %q, want a PONG from %d", got, server)
	}
	for i := 1; i < c.backlog; i++ {
		if got := c.backlogd.line(); got != "VALUE "+bigValue(i%bigKeys) {
			t.Fatalf("backlog answer %d: %.20q", i, got)
		}
	}
	if got := c.backlogd.line(); !strings.HasPrefix(got, fmt.Sprintf("PONG %d ", server)) {
		t.Errorf("the backlog's PING: %q, want a PONG from %d", got, server)
	}
	return acked
}

func (c *clients) allWrittenReadBack() {
	keys := make([]string, 0, len(c.written))
	for key := range c.written {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if got := c.pipelining.ask("GET " + key); got != "VALUE "+c.written[key] {
			c.t.Errorf("GET %s: %q, want VALUE %s", key, got, c.written[key])
		}
	}
}

var movedLine = regexp.MustCompile(`moving 5 connection\(s\) to the successor: (\d+) byte\(s\) unwritten`)

// The connections survive three kv-go -> kv-go handoffs: none sees an end
// of file or a reset; every answer comes once, in order; PING's pid
// changes each generation; every acknowledged write reads back.
func TestConnectionsSurviveHandoffs(t *testing.T) {
	c := newKVCluster(t)
	pid := c.spawnCold()
	cl := newClients(t, c.addr)
	if pids := cl.pids(); !same(pids, pid) {
		t.Fatalf("served by %v, want %d", pids, pid)
	}
	for generation := 1; generation <= 3; generation++ {
		keys := cl.beforeHandoff(generation)
		next := c.commit()
		if next == pid {
			t.Fatal("the successor has the incumbent's pid")
		}
		acked := cl.afterHandoff(keys, next)
		// Acknowledged by the incumbent (generation g) or, for what it had
		// not read yet, by the successor (g + 1), in that order.
		if !sort.IntsAreSorted(acked) || acked[0] < generation || acked[len(acked)-1] > generation+1 {
			t.Errorf("handoff %d: SETs acknowledged with generations %v", generation, acked)
		}
		if pids := cl.pids(); !same(pids, next) {
			t.Errorf("handoff %d: served by %v, want %d", generation, pids, next)
		}
		moved := movedLine.FindStringSubmatch(c.logOf(generation))
		if moved == nil {
			t.Fatalf("handoff %d: no move in the incumbent's log\n%s", generation, c.logs())
		}
		// How much of the backlog's answers moved unwritten is the
		// kernel's to decide (the park writes what the socket takes, and a
		// send buffer may grow meanwhile): reported, not asserted. That
		// every answer arrived once and in order is.
		t.Logf("handoff %d: %s", generation, moved[0])
		if !strings.Contains(c.logOf(generation+1), "adopted 5 connection(s)") {
			t.Errorf("handoff %d: the successor adopted no 5 connections\n%s", generation, c.logs())
		}
		pid = next
	}
	cl.allWrittenReadBack()
	if answer, err := request(c.addr, "PING"); err != nil || !strings.HasPrefix(answer, fmt.Sprintf("PONG %d ", pid)) {
		t.Errorf("a fresh PING: %q, %v", answer, err)
	}
}

// A successor that exits after adopting (--exit-after-adopt): rolled back;
// the incumbent takes the connections back and answers everything exactly
// once (the next answer on each is the PING's); the next handoff moves
// them.
func TestASuccessorThatExitsAfterAdoptingRollsBack(t *testing.T) {
	c := newKVCluster(t)
	first := c.spawnCold()
	cl := newClients(t, c.addr)
	keys := cl.beforeHandoff(1)
	outcome := c.handoff("--exit-after-adopt")
	if outcome.Committed || outcome.AbortParty != handoff.PartySuccessor {
		t.Fatalf("outcome %+v, want a rollback by the successor\n%s", outcome, c.logs())
	}
	for _, want := range []string{"adopted 5 connection(s)", "exiting after adopting, as asked"} {
		if !strings.Contains(c.logOf(2), want) {
			t.Errorf("the successor's log lacks %q\n%s", want, c.logOf(2))
		}
	}
	cl.afterHandoff(keys, first)
	if pids := cl.pids(); !same(pids, first) {
		t.Errorf("after the rollback served by %v, want %d", pids, first)
	}
	if !strings.Contains(c.logOf(1), "5 moved connection(s) taken back") {
		t.Errorf("the incumbent did not take them back\n%s", c.logOf(1))
	}
	keys = cl.beforeHandoff(2)
	next := c.commit()
	cl.afterHandoff(keys, next)
	if pids := cl.pids(); !same(pids, next) {
		t.Errorf("after the second handoff served by %v, want %d", pids, next)
	}
	cl.allWrittenReadBack()
}

// A successor that does not adopt (--no-moves: protocol v1): the drain
// closes the connections, cleanly, as in v1.
func TestASuccessorThatDoesNotAdoptGetsThemClosed(t *testing.T) {
	c := newKVCluster(t)
	first := c.spawnCold()
	idle := dialKept(t, c.addr, 0)
	defer idle.nc.Close()
	answered := dialKept(t, c.addr, 0)
	defer answered.nc.Close()
	if pid := idle.pid(); pid != first {
		t.Fatalf("PING answered by %d, want %d", pid, first)
	}
	if got := answered.ask("SET k v"); got != "OK 1" {
		t.Fatalf("SET k v: %q", got)
	}
	next := c.commit("--no-moves")
	for what, k := range map[string]*kept{"the idle connection": idle, "the answered one": answered} {
		if err := k.atEOF(); err != nil {
			t.Errorf("%s was not closed cleanly by the drain: %v", what, err)
		}
	}
	if log := c.logOf(1); !strings.Contains(log, "draining ") || strings.Contains(log, "moving") {
		t.Errorf("the incumbent's log:\n%s", log)
	}
	if strings.Contains(c.logOf(2), "adopted") {
		t.Errorf("the successor adopted something:\n%s", c.logOf(2))
	}
	for line, want := range map[string]string{"PING": fmt.Sprintf("PONG %d go", next), "GET k": "VALUE v"} {
		if got, err := request(c.addr, line); got != want || err != nil {
			t.Errorf("%s: %q, %v; want %q", line, got, err, want)
		}
	}
}

// A client that sent a backlog and closed its side (half-closed) without
// reading: its connection moves with the answers owed, and the successor
// writes every one of them, in order, then closes it (an end of file, no
// reset).
func TestAHalfClosedConnectionMovesWithItsAnswers(t *testing.T) {
	c := newKVCluster(t)
	c.spawnCold()
	cl := newClients(t, c.addr) // the big values
	k := dialKept(t, c.addr, 4096)
	defer k.nc.Close()
	var gets strings.Builder
	for i := 0; i < cl.backlog; i++ {
		fmt.Fprintf(&gets, "GET big%d\n", i%bigKeys)
	}
	k.send(gets.String())
	check(t, k.nc.(*net.TCPConn).CloseWrite())
	if got := k.line(); got != "VALUE "+bigValue(0) {
		t.Fatalf("the first answer: %q", got)
	}
	c.commit()
	if !strings.Contains(c.logOf(1), "moving 6 connection(s) to the successor") {
		t.Errorf("the half-closed connection did not move\n%s", c.logOf(1))
	}
	for i := 1; i < cl.backlog; i++ {
		if got := k.line(); got != "VALUE "+bigValue(i%bigKeys) {
			t.Fatalf("answer %d: %.20q", i, got)
		}
	}
	if err := k.atEOF(); err != nil {
		t.Errorf("after its answers: %v, want an end of file", err)
	}
}

// inProcessIncumbent is an incumbent in this process (no service of its
// own), under c's supervisor, that moves what the test gives it.
func (c *kvCluster) inProcessIncumbent() (*handoff.Incumbent, <-chan *handoff.Request) {
	c.t.Helper()
	lock, err := handoff.AcquireLock(c.data)
	check(c.t, err)
	inc, err := handoff.Bind(c.control, lock)
	lock.Close()
	check(c.t, err)
	c.t.Cleanup(func() { inc.Close() })
	check(c.t, inc.SetMovesDescriptors(true))
	requests, err := inc.StartLoop()
	check(c.t, err)
	return inc, requests
}

func nextRequest(t *testing.T, requests <-chan *handoff.Request, kind handoff.RequestKind) *handoff.Request {
	t.Helper()
	select {
	case r := <-requests:
		if r == nil || r.Kind() != kind {
			t.Fatalf("request %v, want %v", r, kind)
		}
		return r
	case <-time.After(time.Minute):
		t.Fatalf("no %v request within a minute", kind)
		return nil
	}
}

// kv-go as a successor takes each moved connection's state as the
// contract says: it writes the carried output first, then completes the
// carried input (a partial line) and answers it, and skips an overlong
// line to its end; a moved item it cannot take (not a connection) fails
// its start-up, and the handoff rolls back.
func TestKvGoServesWhatMovedWithItsState(t *testing.T) {
	c := newKVCluster(t)
	_, requests := c.inProcessIncumbent()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(t, err)
	defer ln.Close()
	pair := func() (*kept, net.Conn) {
		k := dialKept(t, ln.Addr().String(), 0)
		conn, err := ln.Accept()
		check(t, err)
		t.Cleanup(func() { conn.Close(); k.nc.Close() })
		return k, conn
	}

	// First a successor that is given a memfd-like item it cannot take.
	f, err := os.CreateTemp(c.dir, "table")
	check(t, err)
	defer f.Close()
	done := make(chan *handoff.Outcome, 1)
	go func() { done <- c.handoff() }()
	drain := nextRequest(t, requests, handoff.RequestDrain)
	check(t, drain.MoveFile("table", f, nil))
	check(t, drain.Complete())
	seal := nextRequest(t, requests, handoff.RequestSeal)
	check(t, seal.PushRevision(0))
	check(t, seal.Complete())
	check(t, nextRequest(t, requests, handoff.RequestResume).Complete())
	if o := <-done; o.Committed || o.AbortParty != handoff.PartySuccessor {
		t.Fatalf("a successor given a non-connection: %+v", o)
	}
	if !strings.Contains(c.logOf(1), `moved item "table" (kind 1, 0 bytes unread) is not a connection this service can take`) {
		t.Errorf("the successor's log:\n%s", c.logOf(1))
	}

	// Then connections with state.
	half, halfConn := pair()
	long, longConn := pair()
	go func() { done <- c.handoff() }()
	drain = nextRequest(t, requests, handoff.RequestDrain)
	check(t, drain.MoveConn("kv", halfConn.(*net.TCPConn), []byte("GET ke"), []byte("VALUE carried\n"), []byte{0}))
	check(t, drain.MoveConn("kv", longConn.(*net.TCPConn), nil, nil, []byte{1}))
	check(t, drain.Complete())
	seal = nextRequest(t, requests, handoff.RequestSeal)
	check(t, seal.PushRevision(0))
	check(t, seal.Complete())
	o := <-done
	if !o.Committed {
		t.Fatalf("rolled back: %s\n%s", o.AbortReason, c.logs())
	}
	halfConn.Close() // committed: our copies are closed, never shut down
	longConn.Close()
	if got := half.line(); got != "VALUE carried" {
		t.Errorf("the carried output: %q", got)
	}
	half.send("y\n")
	if got := half.line(); got != "NOTFOUND" {
		t.Errorf("GET key, from the carried input: %q", got)
	}
	long.send("still too long\n")
	if got := long.line(); got != "ERR line too long (at most 1024 bytes)" {
		t.Errorf("the carried overlong line: %q", got)
	}
	if pid := long.pid(); pid != o.Successor.Pid {
		t.Errorf("PING answered by %d, want the successor %d", pid, o.Successor.Pid)
	}
	if !strings.Contains(c.logOf(2), "adopted 2 connection(s)") {
		t.Errorf("the successor's log:\n%s", c.logOf(2))
	}
}
