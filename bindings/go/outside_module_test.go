package handoff

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The way README.md documents for using the binding from a module of one's
// own: require libhandoff.dev/handoff, replace it with the path of
// bindings/go, build with cgo through handoff.pc.
const tinyGoMod = `module example.com/tiny

go 1.21

require libhandoff.dev/handoff v0.0.0

replace libhandoff.dev/handoff => %BINDING%
`

const tinyMain = `package main

import (
	"fmt"
	"os"

	"libhandoff.dev/handoff"
)

func main() {
	inherited, err := handoff.Detect()
	if err != nil {
		fmt.Fprintln(os.Stderr, "detect:", err)
		os.Exit(1)
	}
	defer inherited.Close()
	names, err := inherited.ListenerNames()
	if err != nil {
		fmt.Fprintln(os.Stderr, "listener names:", err)
		os.Exit(1)
	}
	fmt.Printf("version=%s successor=%t listeners=%v\n", handoff.Version(), inherited.IsSuccessor(), names)
}
`

// TestAModuleOutsideTheTree builds a tiny module in a temporary directory
// outside the tree against this binding, with the module proxy off (the
// binding needs nothing from it), and runs it twice: as a cold start, then
// with a listener handed over the systemd way, which it must name.
func TestAModuleOutsideTheTree(t *testing.T) {
	root := repoRoot(t)
	binding := filepath.Join(root, "bindings", "go")
	dir := shortTempDir(t)
	if strings.HasPrefix(dir, root+string(filepath.Separator)) {
		t.Fatalf("the temporary directory %s is inside the tree %s", dir, root)
	}
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", strings.Replace(tinyGoMod, "%BINDING%", binding, 1))
	write("main.go", tinyMain)

	pkgConfigPath := filepath.Join(root, "target", "pkgconfig")
	if old := os.Getenv("PKG_CONFIG_PATH"); old != "" {
		pkgConfigPath += string(filepath.ListSeparator) + old
	}
	build := exec.Command("go", "build", "-o", "tiny", ".")
	build.Dir = dir
	build.Env = append(os.Environ(),
		"GOFLAGS=-mod=mod -buildvcs=false", "GOTOOLCHAIN=local", "GOPROXY=off", "GOWORK=off",
		"CGO_ENABLED=1", "PKG_CONFIG_PATH="+pkgConfigPath)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build in %s: %v\n%s", dir, err, out)
	}
	tiny := filepath.Join(dir, "tiny")
	want := "version=" + Version()

	cold := exec.Command(tiny)
	cold.Env = withoutHandoffVariables(os.Environ())
	out, err := cold.CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != want+" successor=false listeners=[]" {
		t.Fatalf("cold start: %v, said %q", err, got)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	listener, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	// LISTEN_PID must be the program's own pid: sh's, which exec keeps.
	given := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0"`, tiny)
	given.Env = append(withoutHandoffVariables(os.Environ()), "LISTEN_FDS=1", "LISTEN_FDNAMES=kv")
	given.ExtraFiles = []*os.File{listener}
	out, err = given.CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != want+" successor=false listeners=[kv]" {
		t.Fatalf("with a listener handed over: %v, said %q", err, got)
	}
}

// withoutHandoffVariables drops what would make a child think it inherited
// something (the test may itself run under a supervisor).
func withoutHandoffVariables(env []string) []string {
	kept := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "HANDOFF_ROLE", "HANDOFF_SOCK_FD", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID",
			"HANDOFF_CONTROL_SOCKET":
			continue
		}
		kept = append(kept, kv)
	}
	return kept
}
