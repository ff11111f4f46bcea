package handoff

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// readiness waits for one of the library's descriptors (the incumbent's
// request descriptor, the successor's control connection) to become
// readable in Go's netpoller instead of in a blocking C poll: a waiting
// goroutine holds no OS thread, and a read deadline wakes it at once,
// which is how a context cancels and Stop interrupts. It watches a
// duplicate, closed when done; the library keeps its own descriptor.
type readiness struct {
	file *os.File
	raw  syscall.RawConn
}

func watchReadable(fd int, name string) (*readiness, error) {
	if fd < 0 {
		return nil, newError(StatusWrongState, "no "+name+" to wait on")
	}
	dup, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return nil, newError(StatusIO, fmt.Sprintf("duplicating the %s: %v", name, errno))
	}
	// os.NewFile hands only a non-blocking descriptor to the netpoller. The
	// library made this one non-blocking already (it reads it without
	// waiting), so this changes nothing for it.
	if err := syscall.SetNonblock(int(dup), true); err != nil {
		syscall.Close(int(dup))
		return nil, newError(StatusIO, fmt.Sprintf("the %s: %v", name, err))
	}
	file := os.NewFile(dup, name)
	raw, err := file.SyscallConn()
	if err == nil {
		err = file.SetReadDeadline(time.Time{}) // ErrNoDeadline: not in the netpoller
	}
	if err != nil {
		file.Close()
		return nil, newError(StatusIO, fmt.Sprintf("the %s cannot be waited on: %v", name, err))
	}
	return &readiness{file: file, raw: raw}, nil
}

// await calls done at once and then whenever the descriptor may have
// become readable, until it answers true (nil) or interrupt is called
// (errInterrupted). done must read what made the descriptor readable, as
// poll_begin and take_request do: the netpoller reports new readiness
// only.
func (r *readiness) await(done func() bool) error {
	err := r.raw.Read(func(uintptr) bool { return done() })
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errInterrupted
	}
	return err
}

var errInterrupted = errors.New("interrupted")

// interrupt ends the current await and every later one. From any goroutine.
func (r *readiness) interrupt() {
	_ = r.file.SetReadDeadline(time.Unix(1, 0))
}

func (r *readiness) close() {
	r.file.Close()
}
