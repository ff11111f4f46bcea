package handoff

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A service under a Supervisor of this package: its listener, its
// processes (stopped at the end, on failure too) and a way to talk to it.

const ioTimeout = 15 * time.Second

// child is a process of the service, reaped in the background.
type child struct {
	process *os.Process
	tag     string // what it answers in PONG
	done    chan struct{}
	state   *os.ProcessState
	err     error
}

func watch(p *os.Process, tag string) *child {
	c := &child{process: p, tag: tag, done: make(chan struct{})}
	go func() {
		c.state, c.err = p.Wait()
		close(c.done)
	}()
	return c
}

// exited waits up to limit for the child's exit and describes a non-zero
// one ("" for status 0).
func (c *child) exited(limit time.Duration) (bool, string) {
	select {
	case <-c.done:
	case <-time.After(limit):
		return false, ""
	}
	if c.err != nil {
		return true, c.err.Error()
	}
	if !c.state.Success() {
		return true, c.state.String()
	}
	return true, ""
}

// stop sends SIGTERM, then SIGKILL after a grace, and describes the exit.
func (c *child) stop() string {
	c.process.Signal(syscall.SIGTERM)
	if ok, status := c.exited(5 * time.Second); ok {
		return status
	}
	c.process.Kill()
	<-c.done
	return "killed after SIGTERM was ignored"
}

type cluster struct {
	t         *testing.T
	dir       string
	data      string
	control   string
	journal   string
	addr      string
	listener  *os.File // the supervisor's copy is a dup of it
	sup       *Supervisor
	incumbent *child
	children  []*child
}

// newCluster binds a blocking TCP listener on 127.0.0.1 and a supervisor
// that hands it to every generation as `name`.
func newCluster(t *testing.T, name string) *cluster {
	c := &cluster{t: t, dir: shortTempDir(t)}
	c.data = filepath.Join(c.dir, "data")
	c.control = filepath.Join(c.dir, "kv.ctl")
	c.journal = filepath.Join(c.dir, "journal", "state.bin")
	c.listener, c.addr = blockingTCPListener(t)
	sup, err := NewSupervisor(c.control)
	if err != nil {
		t.Fatal(err)
	}
	c.sup = sup
	must(t, sup.AddListener(name, c.listener))
	must(t, sup.SetJournal(c.journal))
	must(t, sup.SetTimeouts(Timeouts{KillGrace: 2 * time.Second}))
	t.Cleanup(func() {
		for _, ch := range c.children {
			select {
			case <-ch.done:
			default:
				ch.process.Kill()
				<-ch.done
			}
		}
		sup.Close()
	})
	return c
}

func (c *cluster) start(spec SpawnSpec, tag string) {
	c.t.Helper()
	p, err := c.sup.SpawnCold(spec)
	if err != nil {
		c.t.Fatalf("cold start: %v", err)
	}
	c.incumbent = watch(p, tag)
	c.children = append(c.children, c.incumbent)
	c.waitForPing(c.incumbent)
}

// handOff performs one handoff that must commit: the old incumbent exits
// 0 and the successor answers PING.
func (c *cluster) handOff(spec SpawnSpec, tag string) *Outcome {
	c.t.Helper()
	outcome, err := c.sup.PerformHandoff(spec)
	return c.committed(outcome, err, tag)
}

// committed checks a handoff that must have committed (see handOff) and
// makes its successor the incumbent.
func (c *cluster) committed(outcome *Outcome, err error, tag string) *Outcome {
	c.t.Helper()
	if err != nil {
		c.t.Fatalf("the handoff did not start: %v", err)
	}
	if !outcome.Committed || outcome.Successor == nil {
		c.t.Fatalf("the handoff rolled back: %s", outcome.AbortReason)
	}
	if outcome.IncumbentPID != c.incumbent.process.Pid || outcome.AbortReason != "" {
		c.t.Errorf("outcome: incumbent %d (want %d), reason %q", outcome.IncumbentPID,
			c.incumbent.process.Pid, outcome.AbortReason)
	}
	successor := watch(outcome.Successor, tag)
	c.children = append(c.children, successor)
	tm := outcome.Timings
	c.t.Logf("handoff %s: %s %d -> %s %d in %v (spawn %v, drain %v, seal %v, ready %v)",
		outcome.HandoffID, c.incumbent.tag, c.incumbent.process.Pid, tag, successor.process.Pid,
		tm.Total, tm.Spawn, tm.Drain, tm.Seal, tm.Ready)
	if tm.Total <= 0 || tm.Total < tm.Drain+tm.Seal+tm.Ready {
		c.t.Errorf("timings do not add up: %+v", tm)
	}
	if _, err := os.Stat(c.journal); !errors.Is(err, os.ErrNotExist) {
		c.t.Errorf("the journal was not cleared: %v", err)
	}
	ok, status := c.incumbent.exited(10 * time.Second)
	if !ok {
		c.t.Fatalf("the old incumbent %d did not exit", c.incumbent.process.Pid)
	}
	if status != "" {
		c.t.Errorf("the old incumbent %d: %s", c.incumbent.process.Pid, status)
	}
	c.incumbent = successor
	c.waitForPing(successor)
	return outcome
}

// stop: the incumbent stops cleanly on SIGTERM.
func (c *cluster) stop() {
	if status := c.incumbent.stop(); status != "" {
		c.t.Errorf("the last incumbent %d on SIGTERM: %s", c.incumbent.process.Pid, status)
	}
}

// request sends one line on a fresh connection and gives the answer.
func request(addr, line string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := conn.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	answer, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no whole answer (got %q): %w", answer, err)
	}
	return strings.TrimSuffix(answer, "\n"), nil
}

// ping is the pid and tag in a PONG.
func ping(addr string) (int, string, error) {
	answer, err := request(addr, "PING")
	if err != nil {
		return 0, "", err
	}
	f := strings.Split(answer, " ")
	if len(f) != 3 || f[0] != "PONG" {
		return 0, "", fmt.Errorf("bad PONG %q", answer)
	}
	pid, err := strconv.Atoi(f[1])
	return pid, f[2], err
}

// waitForPing waits until ch answers on the listener, with its tag.
func (c *cluster) waitForPing(ch *child) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		pid, tag, err := ping(c.addr)
		if err == nil && pid == ch.process.Pid {
			if tag != ch.tag {
				c.t.Fatalf("pid %d answers PONG with tag %q, want %q", pid, tag, ch.tag)
			}
			return
		}
		last = fmt.Sprintf("pid %d, %v", pid, err)
		select {
		case <-ch.done:
			c.t.Fatalf("pid %d exited before answering: %v", ch.process.Pid, ch.state)
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.t.Fatalf("pid %d never answered PING; last: %s", ch.process.Pid, last)
}

// ---- client load ------------------------------------------------------------------

// ack is an acknowledged write.
type ack struct {
	key, value string
	generation uint64
}

type tally struct {
	sync.Mutex
	acks               []ack
	freshFailures      []string // refused, reset, closed unanswered, answered wrong
	freshRequests      int
	persistentFailures []string // anything but a close between requests
	persistentRequests int
	resends            int
}

// load runs fresh-connection writers and persistent-connection
// writer/readers against addr until stopped.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup
	t    *tally
}

func startLoad(addr string) *load {
	l := &load{stop: make(chan struct{}), t: &tally{}}
	for w := 0; w < 4; w++ {
		l.wg.Add(1)
		go l.fresh(addr, w)
	}
	for w := 0; w < 2; w++ {
		l.wg.Add(1)
		go l.persistent(addr, w)
	}
	return l
}

func (l *load) finish() *tally {
	close(l.stop)
	l.wg.Wait()
	return l.t
}

// waitAcked blocks until n more writes are acknowledged than when called,
// so that each phase of a test is known to have served some (not a time).
func (l *load) waitAcked(t *testing.T, n int) {
	t.Helper()
	l.t.Lock()
	target := len(l.t.acks) + n
	l.t.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l.t.Lock()
		got := len(l.t.acks)
		l.t.Unlock()
		if got >= target {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d writes acknowledged in 30 s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func parseOK(answer string) (uint64, bool) {
	g, ok := strings.CutPrefix(answer, "OK ")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(g, 10, 64)
	return n, err == nil
}

// fresh: SET on a new connection per request. Such a connection must never
// be refused or reset during a handoff.
func (l *load) fresh(addr string, worker int) {
	defer l.wg.Done()
	for i := 1; !l.stopped(); i++ {
		key, value := fmt.Sprintf("f%d_%d", worker, i), fmt.Sprintf("v%d_%d", worker, i)
		answer, err := request(addr, "SET "+key+" "+value)
		l.t.Lock()
		l.t.freshRequests++
		if err != nil {
			l.t.freshFailures = append(l.t.freshFailures, fmt.Sprintf("SET %s: %v", key, err))
		} else if g, ok := parseOK(answer); ok {
			l.t.acks = append(l.t.acks, ack{key, value, g})
		} else {
			l.t.freshFailures = append(l.t.freshFailures, fmt.Sprintf("SET %s: answer %q", key, answer))
		}
		l.t.Unlock()
		time.Sleep(2 * time.Millisecond) // keeps TIME_WAIT ports in check
	}
}

// persistentConn is a connection kept across requests, reconnecting and
// resending when the server closed it between requests (as a drain does).
type persistentConn struct {
	addr   string
	conn   net.Conn
	reader *bufio.Reader
}

func (p *persistentConn) call(line string, resends *int) (string, error) {
	for attempt := 0; attempt < 50; attempt++ {
		if p.conn == nil {
			conn, err := net.DialTimeout("tcp", p.addr, ioTimeout)
			if err != nil {
				return "", fmt.Errorf("reconnect refused: %w", err)
			}
			p.conn, p.reader = conn, bufio.NewReader(conn)
		}
		p.conn.SetDeadline(time.Now().Add(ioTimeout))
		_, err := p.conn.Write([]byte(line + "\n"))
		answer := ""
		if err == nil {
			answer, err = p.reader.ReadString('\n')
		}
		switch {
		case err == nil:
			return strings.TrimSuffix(answer, "\n"), nil
		case answer != "":
			return "", fmt.Errorf("%s: closed mid-answer %q", line, answer)
		case isClosedBeforeAnswer(err):
			// Not answered: send it again, on a new connection.
			p.conn.Close()
			p.conn = nil
			*resends++
		default:
			return "", fmt.Errorf("%s: %w", line, err)
		}
	}
	return "", fmt.Errorf("%s: closed 50 times in a row", line)
}

func isClosedBeforeAnswer(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, io.EOF)
}

// persistent: SET then GET of the same key on one connection.
func (l *load) persistent(addr string, worker int) {
	defer l.wg.Done()
	p := &persistentConn{addr: addr}
	defer func() {
		if p.conn != nil {
			p.conn.Close()
		}
	}()
	for i := 1; !l.stopped(); i++ {
		key, value := fmt.Sprintf("p%d_%d", worker, i), fmt.Sprintf("w%d_%d", worker, i)
		resends := 0
		set, err := p.call("SET "+key+" "+value, &resends)
		var get string
		var getErr error
		g, acked := parseOK(set)
		if err == nil && acked {
			get, getErr = p.call("GET "+key, &resends)
		}
		l.t.Lock()
		l.t.persistentRequests++
		l.t.resends += resends
		switch {
		case err != nil:
			l.t.persistentFailures = append(l.t.persistentFailures, err.Error())
		case !acked:
			l.t.persistentFailures = append(l.t.persistentFailures, fmt.Sprintf("SET %s: answer %q", key, set))
		default:
			l.t.acks = append(l.t.acks, ack{key, value, g})
			l.t.persistentRequests++
			if getErr != nil {
				l.t.persistentFailures = append(l.t.persistentFailures, getErr.Error())
			} else if get != "VALUE "+value {
				l.t.persistentFailures = append(l.t.persistentFailures,
					fmt.Sprintf("GET %s right after its acknowledged SET: %q", key, get))
			}
		}
		l.t.Unlock()
		time.Sleep(time.Millisecond)
	}
}

// check: nothing refused or lost on the way, enough load to mean something,
// and every acknowledgement names a generation that held the lock.
func (tl *tally) check(t *testing.T, generations []uint64) {
	t.Helper()
	t.Logf("load: %d fresh-connection SETs, %d persistent-connection requests (%d resent after a close), "+
		"%d acknowledged writes; generations %v",
		tl.freshRequests, tl.persistentRequests, tl.resends, len(tl.acks), generations)
	if n := len(tl.freshFailures); n > 0 {
		t.Errorf("%d of %d fresh connections failed, first ones: %q", n, tl.freshRequests, tl.freshFailures[:min(n, 10)])
	}
	if n := len(tl.persistentFailures); n > 0 {
		t.Errorf("persistent connections failed: %q", tl.persistentFailures[:min(n, 10)])
	}
	if len(tl.acks) < 100 {
		t.Errorf("too little load to mean anything: %d acknowledged writes", len(tl.acks))
	}
	known := map[uint64]bool{}
	for _, g := range generations {
		known[g] = true
	}
	for _, a := range tl.acks {
		if !known[a.generation] {
			t.Errorf("%+v names a generation outside %v", a, generations)
			break
		}
	}
}

// checkReads: every acknowledged write reads back from the incumbent.
func (c *cluster) checkReads(acks []ack) {
	c.t.Helper()
	conn, err := net.DialTimeout("tcp", c.addr, ioTimeout)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(4 * ioTimeout))
	reader, writer := bufio.NewReader(conn), bufio.NewWriter(conn)
	lost := 0
	for start := 0; start < len(acks); start += 200 {
		batch := acks[start:min(start+200, len(acks))]
		for _, a := range batch {
			fmt.Fprintf(writer, "GET %s\n", a.key)
		}
		if err := writer.Flush(); err != nil {
			c.t.Fatal(err)
		}
		for _, a := range batch {
			answer, err := reader.ReadString('\n')
			if err != nil {
				c.t.Fatalf("reading back: %v", err)
			}
			if answer != "VALUE "+a.value+"\n" {
				if lost < 10 {
					c.t.Errorf("acknowledged write lost: %+v, read %q", a, answer)
				}
				lost++
			}
		}
	}
	if lost > 0 {
		c.t.Errorf("%d of %d acknowledged writes lost", lost, len(acks))
	}
	if pid, _, err := ping(c.addr); err != nil || pid != c.incumbent.process.Pid {
		c.t.Errorf("PING answered by %d (%v), want %d", pid, err, c.incumbent.process.Pid)
	}
}

// probe: a SET on a fresh connection; the generation it was acknowledged with.
func (c *cluster) probe(n int) uint64 {
	c.t.Helper()
	answer, err := request(c.addr, fmt.Sprintf("SET probe_%d x", n))
	if err != nil {
		c.t.Fatalf("probe SET: %v", err)
	}
	g, ok := parseOK(answer)
	if !ok {
		c.t.Fatalf("probe SET answered %q", answer)
	}
	return g
}
