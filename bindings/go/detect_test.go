package handoff

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Role detection runs in a child process (the test binary in helper mode)
// whose descriptors and environment are arranged as a supervisor would.

type detectReport struct {
	Error          string // the status of a failed Detect
	Successor      bool
	Names          []string
	EnvLeft        []string // successor variables still in Go's environment
	Cloexec        []bool   // FD_CLOEXEC on fds 3.. after Detect
	NonblockBefore bool     // O_NONBLOCK of fd 3 after Detect, before taking
	WrongKind      string   // status of taking "web" as UDP
	Missing        string   // status of taking "nope"
	TakenTwice     string   // status of taking "web" again
	TCPAddr        string
	TCPNonblock    bool // O_NONBLOCK once Go's net package has the listener
	UDPAddr        string
	UnixAddr       string
	UDPAsListener  string // status of Listener("dns", ListenerUDP)
	Second         []string
	SecondIsSucc   bool
}

func statusOf(err error) string {
	var herr *Error
	if errors.As(err, &herr) {
		return herr.Status.String()
	}
	if err != nil {
		return "not a handoff error: " + err.Error()
	}
	return "OK"
}

// detectHelper: the child's side.
func detectHelper() int {
	var r detectReport
	out := json.NewEncoder(os.Stdout)
	inherited, err := Detect()
	for _, name := range successorVariables {
		if _, ok := os.LookupEnv(name); ok {
			r.EnvLeft = append(r.EnvLeft, name)
		}
	}
	if err != nil {
		r.Error = statusOf(err)
		out.Encode(r)
		return 0
	}
	defer inherited.Close()
	r.Successor = inherited.IsSuccessor()
	r.Names, _ = inherited.ListenerNames()
	for fd := 3; fd < 3+len(r.Names); fd++ {
		flags, err := fcntlGetfd(fd)
		r.Cloexec = append(r.Cloexec, err == nil && flags&syscall.FD_CLOEXEC != 0)
	}
	var tcp net.Listener
	if len(r.Names) == 3 {
		flags, _ := fcntlGetfl(3)
		r.NonblockBefore = flags&syscall.O_NONBLOCK != 0
		_, err = inherited.TakeFile("web", ListenerUDP)
		r.WrongKind = statusOf(err)
		_, err = inherited.TakeFile("nope", ListenerTCP)
		r.Missing = statusOf(err)
		_, err = inherited.Listener("dns", ListenerUDP)
		r.UDPAsListener = statusOf(err)
		if tcp, err = inherited.Listener("web", ListenerTCP); err == nil {
			r.TCPAddr = tcp.Addr().String()
			flags, _ := listenerFlags(tcp)
			r.TCPNonblock = flags&syscall.O_NONBLOCK != 0
			defer tcp.Close()
		}
		_, err = inherited.TakeFile("web", ListenerTCP)
		r.TakenTwice = statusOf(err)
		if udp, err := inherited.PacketConn("dns"); err == nil {
			r.UDPAddr = udp.LocalAddr().String()
			udp.Close()
		}
		if unix, err := inherited.Listener("admin", ListenerUnix); err == nil {
			r.UnixAddr = unix.Addr().String()
			unix.Close()
		}
	}
	second, err := Detect()
	if err == nil {
		r.SecondIsSucc = second.IsSuccessor()
		r.Second, _ = second.ListenerNames()
		second.Close()
	}
	out.Encode(r)
	if tcp != nil {
		// Prove the listener works: answer one connection with our pid.
		if c, err := tcp.Accept(); err == nil {
			fmt.Fprintf(c, "%d\n", os.Getpid())
			c.Close()
		}
	}
	return 0
}

// runDetect starts the helper with files at fds 3.. and env, and decodes
// its report; the process is left running (it may wait for a connection).
func runDetect(t *testing.T, mode string, files []*os.File, env ...string) (*exec.Cmd, detectReport, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(cleanEnv(), helperVariable+"="+mode, childGORACE)
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	out := bufio.NewReader(stdout)
	var r detectReport
	if err := json.NewDecoder(out).Decode(&r); err != nil {
		t.Fatalf("no report from the helper: %v", err)
	}
	return cmd, r, out
}

// cleanEnv is this process's environment without the successor variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, own := range successorVariables {
			keep = keep && name != own
		}
		if keep {
			env = append(env, kv)
		}
	}
	return env
}

func TestDetectAdoptsASuccessorsListeners(t *testing.T) {
	dir := shortTempDir(t)
	tcp, tcpAddr := blockingTCPListener(t)
	udp, udpAddr := blockingUDPSocket(t)
	unix, unixPath := blockingUnixListener(t, dir)
	_, control := socketPair(t)
	cmd, r, _ := runDetect(t, "detect", []*os.File{tcp, udp, unix, control},
		"HANDOFF_ROLE=successor", "HANDOFF_SOCK_FD=6", "LISTEN_FDS=3", "LISTEN_FDNAMES=web:dns:admin")

	if r.Error != "" {
		t.Fatalf("Detect failed: %s", r.Error)
	}
	if !r.Successor || !reflect.DeepEqual(r.Names, []string{"web", "dns", "admin"}) {
		t.Errorf("successor %v, names %v", r.Successor, r.Names)
	}
	if len(r.EnvLeft) > 0 {
		t.Errorf("variables left in Go's environment: %v", r.EnvLeft)
	}
	if !reflect.DeepEqual(r.Cloexec, []bool{true, true, true}) {
		t.Errorf("close-on-exec after Detect: %v", r.Cloexec)
	}
	if r.NonblockBefore {
		t.Error("Detect changed the shared O_NONBLOCK flag")
	}
	if r.WrongKind != "HANDOFF_ERR_LISTENER" || r.Missing != "HANDOFF_ERR_LISTENER" ||
		r.TakenTwice != "HANDOFF_ERR_LISTENER" || r.UDPAsListener != "HANDOFF_ERR_INVALID_ARGUMENT" {
		t.Errorf("wrong kind %s, missing %s, taken twice %s, UDP as a listener %s",
			r.WrongKind, r.Missing, r.TakenTwice, r.UDPAsListener)
	}
	if r.TCPAddr != tcpAddr || r.UDPAddr != udpAddr || r.UnixAddr != unixPath {
		t.Errorf("addresses %s %s %s, want %s %s %s", r.TCPAddr, r.UDPAddr, r.UnixAddr, tcpAddr, udpAddr, unixPath)
	}
	if r.SecondIsSucc || len(r.Second) != 0 {
		t.Errorf("a second Detect: successor %v, names %v", r.SecondIsSucc, r.Second)
	}
	// Go's net package made the shared description non-blocking, as the
	// binding documents: this process sees it on its own copy.
	if !r.TCPNonblock || !nonBlocking(t, tcp) {
		t.Errorf("the listener taken by Go is not non-blocking (child %v, shared %v)", r.TCPNonblock, nonBlocking(t, tcp))
	}
	// The taken listener serves.
	c, err := net.DialTimeout("tcp", tcpAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != fmt.Sprint(cmd.Process.Pid) {
		t.Errorf("answer %q, %v; want the child's pid %d", line, err, cmd.Process.Pid)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("helper: %v", err)
	}
}

func TestDetectColdStarts(t *testing.T) {
	tcp, _ := blockingTCPListener(t)
	cases := []struct {
		name  string
		files []*os.File
		env   []string
		want  detectReport
	}{
		{"no variables", nil, nil, detectReport{}},
		{"listeners of a cold start", []*os.File{tcp}, []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=kv"},
			detectReport{Names: []string{"kv"}, Cloexec: []bool{true}}},
		{"unnamed listener", []*os.File{tcp}, []string{"LISTEN_FDS=1"},
			detectReport{Names: []string{"unknown"}, Cloexec: []bool{true}}},
		{"LISTEN_PID of another process", []*os.File{tcp},
			[]string{"LISTEN_FDS=1", "LISTEN_FDNAMES=kv", "LISTEN_PID=1", "HANDOFF_ROLE=successor", "HANDOFF_SOCK_FD=4"},
			detectReport{}},
		{"malformed LISTEN_FDS", nil, []string{"LISTEN_FDS=many"},
			detectReport{Error: "HANDOFF_ERR_ENVIRONMENT"}},
		{"unknown role", nil, []string{"HANDOFF_ROLE=predecessor"},
			detectReport{Error: "HANDOFF_ERR_ENVIRONMENT"}},
		{"successor without a control socket", nil, []string{"HANDOFF_ROLE=successor"},
			detectReport{Error: "HANDOFF_ERR_ENVIRONMENT"}},
		{"a listener that is not a socket", []*os.File{os.Stdin}, []string{"LISTEN_FDS=1"},
			detectReport{Error: "HANDOFF_ERR_LISTENER"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd, got, _ := runDetect(t, "detect", c.files, c.env...)
			cmd.Wait()
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}
