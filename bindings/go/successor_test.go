package handoff

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The successor's steps against a supervisor played by the test itself,
// speaking the protocol through this package's messages.

type successorReport struct {
	BeforeBegin   string // taking the listener before Begin
	HandoffID     string
	FirstWait     string // a wait for Begin whose context ends first
	FirstWaitCtx  bool   // ... matches context.DeadlineExceeded
	Wait          string
	Generation    uint64
	LockAfter     uint64 // the Lock handle's generation once moved
	ListenerAfter string // taking the listener a second time
}

func successorStepsHelper() int {
	var r successorReport
	out := json.NewEncoder(os.Stdout)
	defer out.Encode(&r)
	inherited, err := Detect()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	successor, err := NewSuccessor(inherited)
	inherited.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer successor.Close()
	_, err = successor.Listener("kv", ListenerTCP)
	r.BeforeBegin = statusOf(err)
	id, err := successor.Handshake(context.Background(), []byte("helper-build"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r.HandoffID = id.String()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = successor.WaitForBegin(ctx)
	cancel()
	r.FirstWait, r.FirstWaitCtx = statusOf(err), errors.Is(err, context.DeadlineExceeded)
	// Tell the test the first wait is over (it sends nothing until then).
	if err := os.WriteFile(os.Getenv("HELPER_FIRST_WAIT_DONE"), nil, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	err = successor.WaitForBegin(ctx)
	cancel()
	if r.Wait = statusOf(err); err != nil {
		return 1 // before Begin: the data dir stays untouched
	}
	if err := successor.StartHeartbeats(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := successor.Listener("kv", ListenerTCP)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ln.Close()
	_, err = successor.Listener("kv", ListenerTCP)
	r.ListenerAfter = statusOf(err)
	lock, err := AcquireLock(os.Getenv("HELPER_DATA"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer lock.Close()
	ready := &Ready{ListeningOn: []string{"tcp://" + ln.Addr().String()}, HealthzOK: true,
		AdvertisedRevisionPerShard: []uint64{42}}
	inc, err := successor.AnnounceReady(ready, os.Getenv("HELPER_CONTROL"), lock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer inc.Close()
	r.Generation, r.LockAfter = inc.Generation(), lock.Generation()
	return 0
}

// fakeSupervisor is the supervisor's end of a successor's control socket.
type fakeSupervisor struct {
	t      *testing.T
	conn   *os.File
	reader *FrameReader
	// firstWaitDone appears once the successor's first WaitForBegin gave up.
	firstWaitDone string
}

func (s *fakeSupervisor) send(m Message) {
	b, err := Encode(m)
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.conn.Write(b); err != nil {
		s.t.Fatal(err)
	}
}

// recv is the next message, heartbeats skipped.
func (s *fakeSupervisor) recv() Message {
	buf := make([]byte, 512)
	for {
		f, ok, err := s.reader.Next()
		if err != nil {
			s.t.Fatal(err)
		}
		if ok {
			if _, beat := f.Message.(*Heartbeat); beat {
				continue
			}
			if f.Version != 1 {
				s.t.Errorf("a frame of version %d", f.Version)
			}
			return f.Message
		}
		s.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		n, err := s.conn.Read(buf)
		if err != nil {
			s.t.Fatalf("reading from the successor: %v", err)
		}
		if err := s.reader.Feed(buf[:n]); err != nil {
			s.t.Fatal(err)
		}
	}
}

func startSuccessorSteps(t *testing.T) (*exec.Cmd, *fakeSupervisor, io.Reader, string, string) {
	dir := shortTempDir(t)
	data, control := filepath.Join(dir, "data"), filepath.Join(dir, "ctl")
	listener, _ := blockingTCPListener(t)
	ours, theirs := socketPair(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(cleanEnv(), helperVariable+"=successor-steps", childGORACE,
		"HANDOFF_ROLE=successor", "HANDOFF_SOCK_FD=4", "LISTEN_FDS=1", "LISTEN_FDNAMES=kv",
		"HELPER_DATA="+data, "HELPER_CONTROL="+control,
		"HELPER_FIRST_WAIT_DONE="+filepath.Join(dir, "first-wait-done"))
	cmd.ExtraFiles = []*os.File{listener, theirs}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	theirs.Close()
	reader, err := NewFrameReader()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	sup := &fakeSupervisor{t: t, conn: ours, reader: reader, firstWaitDone: filepath.Join(dir, "first-wait-done")}
	return cmd, sup, stdout, data, control
}

// handshake answers the successor's Hello and checks it.
func (s *fakeSupervisor) handshake(pid int, id HandoffID) {
	hello, ok := s.recv().(*Hello)
	want := &Hello{Role: SideSuccessor, PID: uint32(pid), BuildID: []byte("helper-build"), ProtoMin: 1, ProtoMax: 1}
	if !ok || !reflect.DeepEqual(hello, want) {
		s.t.Fatalf("Hello: got %#v, want %#v", hello, want)
	}
	s.send(HelloAck{ProtoVersionChosen: 1, HandoffID: id})
	// The successor's first wait for Begin gives up (its context ends)
	// before anything more is sent; the handoff goes on.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(s.firstWaitDone); err == nil {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatal("the successor's first WaitForBegin never ended")
		}
	}
	s.send(Heartbeat{TsMS: uint64(time.Now().UnixMilli())})
}

func readReport(t *testing.T, stdout io.Reader) successorReport {
	var r successorReport
	if err := json.NewDecoder(bufio.NewReader(stdout)).Decode(&r); err != nil {
		t.Fatalf("no report from the successor: %v", err)
	}
	return r
}

func TestSuccessorStepsThroughBeginAndReady(t *testing.T) {
	cmd, sup, stdout, _, control := startSuccessorSteps(t)
	id := HandoffID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	sup.handshake(cmd.Process.Pid, id)
	sup.send(Begin{HandoffID: id})
	ready, ok := sup.recv().(*Ready)
	if !ok || ready.HandoffID != id || !ready.HealthzOK ||
		!reflect.DeepEqual(ready.AdvertisedRevisionPerShard, []uint64{42}) || len(ready.ListeningOn) != 1 {
		t.Fatalf("Ready: %#v", ready)
	}
	r := readReport(t, stdout)
	if err := cmd.Wait(); err != nil {
		t.Errorf("successor: %v", err)
	}
	want := successorReport{BeforeBegin: "HANDOFF_ERR_WRONG_STATE", HandoffID: id.String(),
		FirstWait: "HANDOFF_ERR_TIMEOUT", FirstWaitCtx: true, Wait: "OK", Generation: 1, LockAfter: 0,
		ListenerAfter: "HANDOFF_ERR_LISTENER"}
	if r != want {
		t.Errorf("got  %+v\nwant %+v", r, want)
	}
	if ready.ListeningOn[0] == "" {
		t.Error("no address in Ready")
	}
	// The successor became the incumbent: it bound the control socket.
	info, err := os.Lstat(control)
	if err != nil || info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v, %v", info, err)
	}
}

func TestSuccessorLeavesTheDataDirAloneWithoutBegin(t *testing.T) {
	for _, scenario := range []string{"abort", "supervisor gone"} {
		t.Run(scenario, func(t *testing.T) {
			cmd, sup, stdout, data, _ := startSuccessorSteps(t)
			id := HandoffID{9}
			sup.handshake(cmd.Process.Pid, id)
			want := "HANDOFF_ERR_ABORTED"
			if scenario == "abort" {
				sup.send(Abort{HandoffID: id, Reason: "test"})
			} else {
				sup.conn.Close()
				want = "HANDOFF_ERR_PEER_CLOSED"
			}
			r := readReport(t, stdout)
			if r.Wait != want {
				t.Errorf("WaitForBegin: %s, want %s", r.Wait, want)
			}
			if err := cmd.Wait(); err == nil {
				t.Error("the successor exited 0")
			}
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the data dir was touched: %v", err)
			}
		})
	}
}
