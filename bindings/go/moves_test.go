package handoff

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Protocol v2 through the binding: an incumbent in this process moves a
// TCP connection and a memfd (a named descriptor) to a successor child
// (the test binary as the "adopting" helper, moveshelper_test.go), handed
// off by a Supervisor also in this process; what a successor that fails
// after adopting leaves behind; a successor that does not adopt (v1).

const movedTable = "k1 v1\nk2 v2\n"

// moveSetup is an incumbent in this process, started with StartLoop, and
// a supervisor for it.
type moveSetup struct {
	t                  *testing.T
	dir, data, control string
	report, elsewhere  string
	inc                *Incumbent
	requests           <-chan *Request
	sup                *Supervisor
	server             *net.TCPListener // the in-process service's clients connect here
	children           []*child
}

func newMoveSetup(t *testing.T) *moveSetup {
	m := &moveSetup{t: t, dir: shortTempDir(t)}
	m.data = filepath.Join(m.dir, "data")
	m.control = filepath.Join(m.dir, "ctl")
	m.report = filepath.Join(m.dir, "report.json")
	m.elsewhere = filepath.Join(m.dir, "elsewhere")
	lock, err := AcquireLock(m.data)
	must(t, err)
	m.inc, err = Bind(m.control, lock)
	lock.Close()
	must(t, err)
	must(t, m.inc.SetMovesDescriptors(true))
	listener, _ := blockingTCPListener(t)
	m.sup, err = NewSupervisor(m.control)
	must(t, err)
	must(t, m.sup.AddListener("kv", listener))
	must(t, m.sup.SetTimeouts(Timeouts{KillGrace: time.Second}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	m.server = ln.(*net.TCPListener)
	t.Cleanup(m.close)
	m.requests, err = m.inc.StartLoop()
	must(t, err)
	return m
}

func (m *moveSetup) close() {
	for _, ch := range m.children {
		ch.stop()
	}
	m.inc.Close()
	m.sup.Close()
	m.server.Close()
}

func (m *moveSetup) spec(mode string) SpawnSpec {
	return SpawnSpec{Binary: os.Args[0], Env: []string{helperVariable + "=adopting", childGORACE,
		"HELPER_ADOPT=" + mode, "HELPER_REPORT=" + m.report, "HELPER_DATA=" + m.data,
		"HELPER_CONTROL=" + m.control, "HELPER_ELSEWHERE=" + m.elsewhere},
		Deadline: 30 * time.Second, DrainGrace: 5 * time.Second}
}

// connection is a TCP connection: the client's end, the service's end.
func (m *moveSetup) connection() (*net.TCPConn, *net.TCPConn) {
	m.t.Helper()
	client, err := net.DialTimeout("tcp", m.server.Addr().String(), ioTimeout)
	must(m.t, err)
	conn, err := m.server.AcceptTCP()
	must(m.t, err)
	client.SetDeadline(time.Now().Add(ioTimeout))
	return client.(*net.TCPConn), conn
}

type handoffResult struct {
	outcome *Outcome
	err     error
}

// perform runs a handoff to a helper in mode on another goroutine, so that
// this one can play the service.
func (m *moveSetup) perform(mode string) <-chan handoffResult {
	done := make(chan handoffResult, 1)
	go func() {
		o, err := m.sup.PerformHandoff(m.spec(mode))
		done <- handoffResult{o, err}
	}()
	return done
}

// finished is the handoff's outcome; its successor is stopped at the end.
func (m *moveSetup) finished(done <-chan handoffResult) *Outcome {
	m.t.Helper()
	r := <-done
	if r.err != nil {
		m.t.Fatalf("the handoff did not start: %v", r.err)
	}
	if r.outcome.Successor != nil {
		m.children = append(m.children, watch(r.outcome.Successor, "adopting"))
	}
	return r.outcome
}

// next is the incumbent's next request; nil once the channel closed.
func (m *moveSetup) next() *Request {
	m.t.Helper()
	select {
	case r := <-m.requests:
		return r
	case <-time.After(time.Minute):
		m.t.Fatal("no request from the library within a minute")
		return nil
	}
}

func (m *moveSetup) nextOf(kind RequestKind) *Request {
	m.t.Helper()
	r := m.next()
	if r == nil || r.Kind() != kind {
		m.t.Fatalf("request %v, want %v", r, kind)
	}
	return r
}

func (m *moveSetup) seal() {
	m.t.Helper()
	seal := m.nextOf(RequestSeal)
	if seal.Moves() || seal.MoveLimit() != 0 {
		m.t.Errorf("a seal moves: %v, limit %d", seal.Moves(), seal.MoveLimit())
	}
	must(m.t, seal.PushRevision(1))
	must(m.t, seal.Complete())
}

func (m *moveSetup) readReport() adoptReport {
	m.t.Helper()
	var r adoptReport
	for deadline := time.Now().Add(ioTimeout); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(m.report)
		if err == nil {
			must(m.t, json.Unmarshal(b, &r))
			return r
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("no report from the successor: %v", err)
		}
	}
}

func flagsOf(t *testing.T, c syscall.Conn) int {
	t.Helper()
	flags, err := fcntlOf(c, syscall.F_GETFL)
	must(t, err)
	return flags
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("the connection failed after %q: %v", line, err)
	}
	return line
}

// Every bad move is refused before anything is recorded.
func refusedMoves(t *testing.T, drain *Request, conn *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	closed := ln.(*net.TCPListener)
	closed.Close()
	cases := []struct {
		what string
		err  error
		want error
	}{
		{"a closed connection", drain.MoveConn("kv", closed, nil, nil, nil), ErrInvalidArgument},
		{"no connection", drain.MoveConn("kv", nil, nil, nil, nil), ErrInvalidArgument},
		{"a name of 256 bytes", drain.MoveConn(strings.Repeat("x", 256), conn, nil, nil, nil), ErrInvalidArgument},
		{"a name with NUL", drain.MoveConn("k\x00v", conn, nil, nil, nil), ErrInvalidArgument},
		{"kind 7", drain.Move(7, "kv", 0, nil, nil, nil), ErrInvalidArgument},
		{"too much state", drain.MoveConn("kv", conn, nil, nil, make([]byte, 1_048_001)), ErrInvalidArgument},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("moving %s: %v, want %v", c.what, c.err, c.want)
		}
	}
}

// A connection (with unread input, unwritten output and state) and a memfd
// move to a Go successor, which gets a non-blocking, close-on-exec
// net.Conn, writes the carried output, answers the carried input on the
// same connection (which never closed) and reads the memfd.
func TestAConnectionAndAMemfdMoveToTheSuccessor(t *testing.T) {
	m := newMoveSetup(t)
	if err := m.inc.SetMovesDescriptors(false); !errors.Is(err, ErrWrongState) {
		t.Errorf("SetMovesDescriptors while serving: %v, want ErrWrongState", err)
	}
	client, conn := m.connection()
	table, err := memfd("table", movedTable)
	must(t, err)
	defer table.Close()
	before := flagsOf(t, conn)
	done := m.perform("serve")

	drain := m.nextOf(RequestDrain)
	if !drain.Moves() || drain.MoveLimit() == 0 {
		t.Fatalf("both sides speak v2, but the drain moves %v, limit %d", drain.Moves(), drain.MoveLimit())
	}
	refusedMoves(t, drain, conn)
	must(t, drain.MoveFile("table", table, []byte{2}))
	must(t, drain.MoveConn("kv", conn, []byte("GET k"), []byte("carried\n"), []byte{1}))
	// Lent, not taken: our net.Conn is untouched, still non-blocking.
	if after := flagsOf(t, conn); after != before || after&syscall.O_NONBLOCK == 0 {
		t.Errorf("moving changed the file status flags: %#x, were %#x", after, before)
	}
	must(t, drain.Complete())
	if err := drain.MoveConn("kv", conn, nil, nil, nil); !errors.Is(err, ErrWrongState) {
		t.Errorf("a move after the drain completed: %v, want ErrWrongState", err)
	}
	m.seal()
	if r := m.next(); r != nil {
		t.Fatalf("a request after the seal: %v", r.Kind())
	}
	if outcome, err := m.inc.Wait(context.Background()); outcome != ServeCommitted || err != nil {
		t.Fatalf("serving ended %v, %v; want committed", outcome, err)
	}
	outcome := m.finished(done)
	if !outcome.Committed {
		t.Fatalf("rolled back: %s", outcome.AbortReason)
	}
	// Committed: our copies are closed, never shut down.
	conn.Close()
	table.Close()

	reader := bufio.NewReader(client)
	if line, err := reader.ReadString('\n'); line != "carried\n" || err != nil {
		t.Fatalf("the carried output: %q, %v", line, err)
	}
	_, err = client.Write([]byte("0\n"))
	must(t, err)
	want := "got GET k0 from " + strconv.Itoa(outcome.Successor.Pid) + "\n"
	if line, err := reader.ReadString('\n'); line != want || err != nil {
		t.Errorf("the carried input answered: %q, %v; want %q", line, err, want)
	}
	client.Close()

	r := m.readReport()
	wantItems := []Item{
		{ItemKind: ItemDescriptor, Name: "table", State: []byte{2}},
		{ItemKind: ItemConnection, Name: "kv", Unread: []byte("GET k"), Unwritten: []byte("carried\n"), State: []byte{1}},
	}
	if !jsonEqual(r.Items, wantItems) {
		t.Errorf("items: %+v, want %+v", r.Items, wantItems)
	}
	if r.Table != movedTable || !r.TableCloseOnExec {
		t.Errorf("the table: %q, close-on-exec %v", r.Table, r.TableCloseOnExec)
	}
	wantConn := adoptedConnReport{Network: "tcp", NonBlocking: true, CloseOnExec: true, Again: "HANDOFF_ERR_WRONG_STATE"}
	if len(r.Conns) != 1 || r.Conns[0] != wantConn {
		t.Errorf("the adopted connection: %+v, want %+v", r.Conns, wantConn)
	}
	for what, got := range map[string]string{
		"Conn of a descriptor":             r.ConnOfADescriptor,
		"SetAdoptsDescriptors after Hello": r.SetAdoptsAfterHandshake,
		"Adopt before Begin":               r.AdoptBeforeBegin,
		"a second Adopt":                   r.AdoptTwice,
	} {
		if got != "HANDOFF_ERR_WRONG_STATE" {
			t.Errorf("%s: %s, want HANDOFF_ERR_WRONG_STATE", what, got)
		}
	}
	if r.AdoptNil != "HANDOFF_ERR_NULL_POINTER" {
		t.Errorf("Adopt(nil): %s", r.AdoptNil)
	}
}

// A successor that exits after adopting (and after making the connection
// blocking): the handoff rolls back; the incumbent's connection is its own
// again, its flags as before, nothing written on it by the successor, and
// it answers on it.
func TestASuccessorThatExitsAfterAdoptingRollsBack(t *testing.T) {
	m := newMoveSetup(t)
	client, conn := m.connection()
	before := flagsOf(t, conn)
	done := m.perform("exit")
	drain := m.nextOf(RequestDrain)
	must(t, drain.MoveConn("kv", conn, nil, []byte("never sent\n"), nil))
	must(t, drain.Complete())
	m.seal()
	resume := m.nextOf(RequestResume)
	must(t, resume.Complete())
	outcome := m.finished(done)
	if outcome.Committed || outcome.AbortParty != PartySuccessor {
		t.Fatalf("outcome %+v, want a rollback by the successor", outcome)
	}
	if r := m.readReport(); r.Adopt != "" || len(r.Conns) != 1 || !r.Conns[0].NonBlocking {
		t.Errorf("the successor did not adopt the connection: %+v", r)
	}
	// Ours again: the library restored the flags the successor changed.
	if after := flagsOf(t, conn); after != before {
		t.Errorf("file status flags after the rollback %#x, were %#x", after, before)
	}
	_, err := conn.Write([]byte("still ours\n"))
	must(t, err)
	if line := readLine(t, client); line != "still ours\n" {
		t.Errorf("the client read %q first, want what the incumbent wrote", line)
	}
	_, err = client.Write([]byte("and back\n"))
	must(t, err)
	conn.SetDeadline(time.Now().Add(ioTimeout))
	if line := readLine(t, conn); line != "and back\n" {
		t.Errorf("the incumbent read %q", line)
	}
	client.Close()
	conn.Close()
}

// A successor that cannot take what moved (a memfd moved as a connection:
// the library refuses it as it arrives, before Begin) leaks nothing: both moved
// descriptors are closed in it; the handoff rolls back and the memfd is
// the incumbent's, as it was.
func TestASuccessorThatFailsToAdoptLeaksNothing(t *testing.T) {
	m := newMoveSetup(t)
	client, conn := m.connection()
	table, err := memfd("table", movedTable)
	must(t, err)
	defer table.Close()
	done := m.perform("serve")
	drain := m.nextOf(RequestDrain)
	must(t, drain.MoveConn("kv", conn, nil, []byte("never sent\n"), nil))
	must(t, drain.moveRaw(ItemConnection, "kv", table, nil, nil, nil))
	must(t, drain.Complete())
	next := m.next()
	if next != nil && next.Kind() == RequestSeal { // unless the rollback came first
		must(t, next.PushRevision(1))
		must(t, next.Complete())
		next = m.next()
	}
	if next == nil || next.Kind() != RequestResume {
		t.Fatalf("request %v, want a resume", next)
	}
	must(t, next.Complete())
	outcome := m.finished(done)
	if outcome.Committed || outcome.AbortParty != PartySuccessor {
		t.Fatalf("outcome %+v, want a rollback by the successor", outcome)
	}
	r := m.readReport()
	if !strings.Contains(r.Begin, `moved item "kv" is a connection, but its descriptor is not a socket`) {
		t.Errorf("WaitForBegin failed with %q", r.Begin)
	}
	if !reflect.DeepEqual(r.FdsAfter, r.FdsBefore) {
		t.Errorf("descriptors before the moved ones arrived %v, after they were refused %v: want the same",
			r.FdsBefore, r.FdsAfter)
	}
	b := make([]byte, 64)
	n, err := table.ReadAt(b, 0)
	if string(b[:n]) != movedTable {
		t.Errorf("the memfd holds %q (%v)", b[:n], err)
	}
	_, err = conn.Write([]byte("still ours\n"))
	must(t, err)
	if line := readLine(t, client); line != "still ours\n" {
		t.Errorf("the client read %q", line)
	}
	client.Close()
	conn.Close()
}

// A successor that does not adopt (protocol v1): the drain moves nothing
// (Moves false, MoveLimit 0, a move refused) and the handoff commits.
func TestAV1SuccessorMovesNothing(t *testing.T) {
	m := newMoveSetup(t)
	client, conn := m.connection()
	defer client.Close()
	defer conn.Close()
	done := m.perform("v1")
	drain := m.nextOf(RequestDrain)
	if drain.Moves() || drain.MoveLimit() != 0 {
		t.Errorf("a v1 successor, but the drain moves %v, limit %d", drain.Moves(), drain.MoveLimit())
	}
	if err := drain.MoveConn("kv", conn, nil, nil, nil); !errors.Is(err, ErrWrongState) {
		t.Errorf("a move in a drain that moves nothing: %v, want ErrWrongState", err)
	}
	must(t, drain.Complete())
	m.seal()
	if r := m.next(); r != nil {
		t.Fatalf("a request after the seal: %v", r.Kind())
	}
	if outcome := m.finished(done); !outcome.Committed {
		t.Fatalf("rolled back: %s", outcome.AbortReason)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
