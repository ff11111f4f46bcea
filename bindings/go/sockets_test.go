package handoff

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Sockets made with syscalls, so that Go's net package does not make them
// non-blocking: the tests check who changes that flag.

// blockingTCPListener is a listening socket on 127.0.0.1 in blocking mode.
func blockingTCPListener(t testing.TB) (*os.File, string) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	must(t, syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1))
	must(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	must(t, syscall.Listen(fd, 1024))
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "tcp listener")
	t.Cleanup(func() { f.Close() })
	return f, fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

func blockingUDPSocket(t testing.TB) (*os.File, string) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	must(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "udp socket")
	t.Cleanup(func() { f.Close() })
	return f, fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

func blockingUnixListener(t testing.TB, dir string) (*os.File, string) {
	t.Helper()
	path := filepath.Join(dir, "admin.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	must(t, syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}))
	must(t, syscall.Listen(fd, 16))
	f := os.NewFile(uintptr(fd), "unix listener")
	t.Cleanup(func() { f.Close() })
	return f, path
}

// socketPair is a connected pair of Unix stream sockets.
func socketPair(t testing.TB) (ours *os.File, theirs *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Our end non-blocking, so that os.File deadlines work on it.
	must(t, syscall.SetNonblock(fds[0], true))
	ours, theirs = os.NewFile(uintptr(fds[0]), "supervisor end"), os.NewFile(uintptr(fds[1]), "successor end")
	t.Cleanup(func() { ours.Close(); theirs.Close() })
	return ours, theirs
}

// nonBlocking reports the O_NONBLOCK flag of f's open file description,
// which every process holding a copy shares.
func nonBlocking(t testing.TB, f *os.File) bool {
	t.Helper()
	raw, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	must(t, raw.Control(func(fd uintptr) { flags, ferr = fcntlGetfl(int(fd)) }))
	must(t, ferr)
	return flags&syscall.O_NONBLOCK != 0
}

func fcntlGetfl(fd int) (int, error) {
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(flags), nil
}

func fcntlGetfd(fd int) (int, error) {
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(flags), nil
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// listenerFD is the descriptor under a net.Listener, for flag checks.
func listenerFlags(l net.Listener) (int, error) {
	sc, ok := l.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("%T has no descriptor", l)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var flags int
	var ferr error
	if err := raw.Control(func(fd uintptr) { flags, ferr = fcntlGetfl(int(fd)) }); err != nil {
		return 0, err
	}
	return flags, ferr
}
